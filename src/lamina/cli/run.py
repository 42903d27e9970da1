"""``lamina create``, ``run``, ``start``, ``stop``, ``kill``, ``wait``, ``logs``, ``exec`` and
``volume``: Docker's flags and output over the Engine's running methods (imported only for these
commands; ``create`` is here for the container flags it shares with ``run``)."""

import os
import sys

from ..errors import LaminaError
from . import life
from .common import FORMAT_HELP, UsageError, each, exit_now, inspect_each, json_lines, open_engine
from .limits import LIMIT_ARGS, limit_fields

# The flags of a container's configuration, run's and create's (Docker's create takes them all).
CONTAINER_FLAGS = (
    ("--name", "string", "Assign a name to the container"),
    ("--add-host", "list", "Add a custom host-to-IP mapping (host:ip)"),
    ("--entrypoint", "string", "Overwrite the default ENTRYPOINT of the image"),
    ("-e --env", "list", "Set environment variables (K=V; K alone: from this environment)"),
    ("-h --hostname", "string", "Container host name"),
    ("-i --interactive", "bool", "Keep STDIN open even if not attached"),
    ("--ip", "string", "IPv4 address (e.g., 172.30.100.104)"),
    ("-l --label", "list", "Set meta data on a container (KEY=VALUE)"),
    ("--network --net", "string", "Connect a container to a network (or host, none)",
     "bridge"),
    ("--network-alias", "list", "Add network-scoped alias for the container"),
    ("-p --publish", "list", "Publish a port to the host: [IP:][HOST:]CONTAINER[/udp]"),
    ("-P --publish-all", "bool", "Publish all exposed ports to random ports"),
    ("--read-only", "bool", "Mount the container's root filesystem as read only"),
    ("--rm", "bool", "Automatically remove the container when it exits"),
    ("--runtime", "string", "OCI runtime binary to use (default $LAMINA_RUNTIME, else runc)"),
    ("-t --tty", "bool", "Allocate a pseudo-TTY"),
    ("-u --user", "string", "Username or UID (format: <name|uid>[:<group|gid>])"),
    ("-v --volume", "list", ("Bind mount a volume (SRC:DST[:OPTS]; SRC a path or a volume name; "
     "OPTS ro, rw, z, Z and a bind's propagation: rshared, shared, rslave, slave, rprivate, "
     "private)")),
    ("--mount", "list", ("Attach a filesystem mount to the container (type=bind|volume,"
     "source=SRC,target=DST[,readonly][,bind-propagation=MODE])")),
    ("-w --workdir", "string", "Working directory inside the container"),
) + LIMIT_ARGS + life.FLAGS

ARGS = {
    "run": (
        ("image", None, "IMAGE"),
        ("command", "...", "[COMMAND] [ARG...]"),
        ("-d --detach", "bool", "Run container in background and print container ID"),
    ) + CONTAINER_FLAGS,
    "start": (
        ("containers", "+", "CONTAINER [CONTAINER...]"),
        ("-a --attach", "bool", "Attach STDOUT/STDERR and forward signals"),
        ("-i --interactive", "bool", "Attach container's STDIN"),
    ),
    "attach": (
        ("container", None, "CONTAINER"),
        ("--detach-keys", "string", "Override the key sequence for detaching a container"),
        ("--no-stdin", "bool", "Do not attach STDIN"),
        ("--sig-proxy", "bool", "Proxy all received signals to the process", True),
    ),
    "stop": (
        ("containers", "+", "CONTAINER [CONTAINER...]"),
        ("-t --time", "seconds", "Seconds to wait before killing the container", "10"),
    ),
    "kill": (
        ("containers", "+", "CONTAINER [CONTAINER...]"),
        ("-s --signal", "string", "Signal to send to the container", "KILL"),
    ),
    "wait": (("containers", "+", "CONTAINER [CONTAINER...]"),),
    "logs": (
        ("container", None, "CONTAINER"),
        ("-f --follow", "bool", "Follow log output"),
        ("-n --tail", "string", "Number of lines to show from the end of the logs", "all"),
        ("-t --timestamps", "bool", "Show timestamps"),
    ),
    "exec": (
        ("container", None, "CONTAINER"),
        ("command", "...", "COMMAND [ARG...]"),
        ("-d --detach", "bool", "Detached mode: run command in the background"),
        ("-e --env", "list", "Set environment variables (K=V; K alone: from this environment)"),
    ("-h --hostname", "string", "Container host name"),
        ("-i --interactive", "bool", "Keep STDIN open even if not attached"),
        ("-t --tty", "bool", "Allocate a pseudo-TTY"),
        ("-u --user", "string", "Username or UID (format: <name|uid>[:<group|gid>])"),
        ("-w --workdir", "string", "Working directory inside the container"),
    ),
    "volume create": (("name", "?", "[VOLUME]"),),
    "volume ls": (
        ("--format", "string", FORMAT_HELP),
        ("-q --quiet", "bool", "Only display volume names"),
    ),
    "volume inspect": (
        ("names", "+", "VOLUME [VOLUME...]"),
        ("-f --format", "string", "Format the output using the given Go template"),
    ),
    "volume rm": (
        ("names", "+", "VOLUME [VOLUME...]"),
        ("-f --force", "bool", "Accepted for Docker's scripts (a volume in use is never removed)"),
    ),
    "volume prune": (
        ("-a --all", "bool", "Remove all unused volumes (they all are: kept for Docker's scripts)"),
        ("-f --force", "bool", "Do not prompt for confirmation (there is no prompt)"),
    ),
}


def _env(values: list[str]) -> tuple[str, ...]:
    """``-e K=V`` as given; ``-e K`` takes K from this environment (dropped when unset)."""
    out = []
    for item in values:
        if "=" in item:
            if item.startswith("="):
                raise UsageError(f"invalid environment variable: {item}")
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return tuple(out)


def _publish(values: list[str]) -> tuple:
    """``-p`` values; parsed only when given (run without -p imports nothing more)."""
    if not values:
        return ()
    from ..networks import parse_publish

    return tuple(parse_publish(v) for v in values)


class NotATerminal(LaminaError):
    """``-it`` with a standard input that is not a terminal (Docker's exit status 1)."""


def _check_input_tty(a) -> None:
    if a.tty and a.interactive and not a.detach and not os.isatty(0):
        raise NotATerminal("the input device is not a TTY")


def _as_run_error(e: LaminaError) -> LaminaError:
    """Docker's run exits 125 when lamina itself failed (126/127 are the runtime's)."""
    if e.exit_code == 1 and not isinstance(e, NotATerminal):
        e.exit_code = 125
    return e


def run_config(a):
    """The RunConfig of :data:`CONTAINER_FLAGS` as given in ``a`` (run's and create's)."""
    from ..runtime.oci import RunConfig, parse_extra_host
    from ..volumes import cli_volume_fields

    if a.tty:  # as docker run -t sends it
        from ..runtime.console import terminal_size

        console_size = terminal_size(0, 1)
    else:
        console_size = ()
    return RunConfig(env=_env(a.env), workdir=a.workdir, user=a.user,
                     extra_hosts=tuple(parse_extra_host(h) for h in a.add_host),
                     hostname=a.hostname or None, labels=_labels(a.label),
                     **cli_volume_fields(a.volume, a.mount), read_only=a.read_only,
                     network=a.network, auto_remove=a.rm, runtime=a.runtime, tty=a.tty,
                     open_stdin=a.interactive, ip=a.ip or "", ports=_publish(a.publish),
                     publish_all=a.publish_all, network_aliases=tuple(a.network_alias),
                     console_size=console_size,
                     **limit_fields(a), **life.options(a))


def _labels(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``--label KEY=VALUE`` (a bare KEY: an empty value, as Docker's), sorted as the API keeps
    them."""
    return tuple(sorted((key, value) for key, _, value in (v.partition("=") for v in values)))


def entrypoint_of(a) -> list[str] | None:
    """``--entrypoint``: None when not given, [] for ``--entrypoint ""`` (reset)."""
    return None if a.entrypoint is None else ([a.entrypoint] if a.entrypoint else [])


ARGS["create"] = (
    ("image", None, "IMAGE"),
    ("command", "...", "[COMMAND] [ARG...]"),
) + CONTAINER_FLAGS


def cmd_create(opts, a):
    # no flag but --name: the lean path (nothing to keep beyond the image's config)
    if a.given <= {"name"}:
        print(open_engine(opts).create(a.image, name=a.name, command=a.command or None))
        return
    from ..runtime.creation import create

    try:
        print(create(open_engine(opts).container_store, a.image, a.command or None,
                     name=a.name, entrypoint=entrypoint_of(a), config=run_config(a)))
    except LaminaError as e:
        if e.exit_code == 1:
            e.exit_code = 125  # Docker's create exits 125 when it refuses
        raise


def cmd_run(opts, a):
    try:
        _check_input_tty(a)
        config = run_config(a)
        entrypoint = entrypoint_of(a)
        cid, code = open_engine(opts).run(
            a.image, a.command or None, name=a.name, entrypoint=entrypoint, config=config,
            detach=a.detach, stdin=0 if a.interactive else None)
    except LaminaError as e:
        raise _as_run_error(e) from None
    if a.detach:
        print(cid)
        return
    exit_now(code)


def cmd_start(opts, a):
    engine = open_engine(opts)
    if a.attach or a.interactive:
        if len(a.containers) > 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        _, code = engine.start(a.containers[0], attach=True, stdin=0 if a.interactive else None)
        exit_now(code)
    _each(engine.start, a.containers, lambda name, result: name)


def cmd_attach(opts, a):
    import sys

    from ..runtime.attach import Detached

    try:
        code = open_engine(opts).attach(a.container, stdin=None if a.no_stdin else 0,
                                        keys=a.detach_keys, sig_proxy=a.sig_proxy)
    except Detached as e:
        sys.stderr.write(f"{e}\n")  # Docker's words, without "Error:"
        exit_now(1)
    exit_now(code)


def _each(action, names, line) -> None:
    """Run ``action`` on each name, printing ``line(name, result)`` (see common.each)."""
    each(names, lambda name: print(line(name, action(name))))


def cmd_stop(opts, a):
    try:
        timeout = float(a.time)
    except ValueError:
        raise UsageError(f"invalid value {a.time!r} for -t: a number of seconds") from None
    engine = open_engine(opts)
    _each(lambda n: engine.stop(n, timeout), a.containers, lambda name, _: name)


def cmd_kill(opts, a):
    engine = open_engine(opts)
    _each(lambda n: engine.kill(n, a.signal), a.containers, lambda name, _: name)


def cmd_wait(opts, a):
    engine = open_engine(opts)
    _each(engine.wait, a.containers, lambda name, code: str(code))


def cmd_logs(opts, a):
    if a.tail != "all" and not a.tail.isdigit():
        raise UsageError(f"invalid value {a.tail!r} for --tail: a number or 'all'")
    sys.stdout.flush()
    open_engine(opts).logs(a.container, follow=a.follow, timestamps=a.timestamps,
                           tail=None if a.tail == "all" else int(a.tail))


def cmd_exec(opts, a):
    if not a.command:
        raise UsageError("exec requires at least 2 arguments: CONTAINER COMMAND [ARG...]")
    _check_input_tty(a)
    try:
        code = open_engine(opts).exec(a.container, a.command, env=_env(a.env), workdir=a.workdir,
                                      user=a.user, stdin=0 if a.interactive else None,
                                      detach=a.detach, tty=a.tty)
    except LaminaError as e:
        raise _as_run_error(e) from None
    exit_now(code)


# ---------------------------------------------------------------------------------- volumes
def cmd_volume_create(opts, a):
    print(open_engine(opts).volume_create(a.name))


def cmd_volume_ls(opts, a):
    from .. import humanize

    rows = open_engine(opts).volumes()
    if a.quiet:
        for r in rows:
            print(r["Name"])
    elif a.format:
        json_lines(({"Driver": r["Driver"], "Labels": "", "Mountpoint": r["Mountpoint"],
                     "Name": r["Name"], "Scope": "local"} for r in rows), a.format)
    else:
        print(humanize.table(["DRIVER", "VOLUME NAME"], [[r["Driver"], r["Name"]] for r in rows]))


def cmd_volume_inspect(opts, a):
    inspect_each(a.names, open_engine(opts).volume_inspect, a.format)


def cmd_volume_rm(opts, a):
    engine = open_engine(opts)
    _each(lambda n: engine.volume_rm(n, force=a.force), a.names, lambda name, _: name)


def cmd_volume_prune(opts, a):
    from .. import humanize

    names, reclaimed = open_engine(opts).volume_prune()
    if names:
        print("Deleted Volumes:")
        for name in names:
            print(name)
        print()
    print(f"Total reclaimed space: {humanize.size(reclaimed)}")
