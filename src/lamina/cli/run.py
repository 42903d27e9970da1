"""``lamina run``, ``start``, ``stop``, ``kill``, ``wait``, ``logs``, ``exec`` and ``volume``:
Docker's flags and output over the Engine's running methods (imported only for these commands)."""

import os
import sys

from .main import UsageError, _engine, _exit, _json_lines, _parser
from ..errors import LaminaError


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


def cmd_run(opts, args):
    from ..runtime.oci import NETWORKS, RunConfig
    from ..volumes import parse_volume

    p = _parser("run")
    p.add_argument("--rm", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-v", "--volume", action="append")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--entrypoint")
    p.add_argument("--network", "--net", default="none", choices=list(NETWORKS))
    p.add_argument("--runtime")
    p.add_argument("image")
    p.add_argument("command", nargs="...")
    try:
        a = p.parse_args(args)
        _check_input_tty(a)
        config = RunConfig(env=_env(a.env), workdir=a.workdir, user=a.user,
                           volumes=tuple(parse_volume(v) for v in a.volume),
                           read_only=a.read_only, network=a.network, auto_remove=a.rm,
                           runtime=a.runtime, tty=a.tty)
        entrypoint = None if a.entrypoint is None else ([a.entrypoint] if a.entrypoint else [])
        cid, code = _engine(opts).run(
            a.image, a.command or None, name=a.name, entrypoint=entrypoint, config=config,
            detach=a.detach, stdin=0 if a.interactive else None)
    except LaminaError as e:
        raise _as_run_error(e) from None
    if a.detach:
        print(cid)
        return
    _exit(code)


def cmd_start(opts, args):
    p = _parser("start")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("containers", nargs="+")
    a = p.parse_args(args)
    engine = _engine(opts)
    if a.attach or a.interactive:
        if len(a.containers) > 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        _, code = engine.start(a.containers[0], attach=True, stdin=0 if a.interactive else None)
        _exit(code)
    _each(engine.start, a.containers, lambda name, result: name)


def _each(action, names, line) -> None:
    """Run ``action`` on each name, printing ``line(name, result)`` (see cli._each)."""
    from .main import _each as each

    each(names, lambda name: print(line(name, action(name))))


def cmd_stop(opts, args):
    p = _parser("stop")
    p.add_argument("-t", "--time", default="10")
    p.add_argument("containers", nargs="+")
    a = p.parse_args(args)
    try:
        timeout = float(a.time)
    except ValueError:
        raise UsageError(f"invalid value {a.time!r} for -t: a number of seconds") from None
    engine = _engine(opts)
    _each(lambda n: engine.stop(n, timeout), a.containers, lambda name, _: name)


def cmd_kill(opts, args):
    p = _parser("kill")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    a = p.parse_args(args)
    engine = _engine(opts)
    _each(lambda n: engine.kill(n, a.signal), a.containers, lambda name, _: name)


def cmd_wait(opts, args):
    p = _parser("wait")
    p.add_argument("containers", nargs="+")
    a = p.parse_args(args)
    engine = _engine(opts)
    _each(engine.wait, a.containers, lambda name, code: str(code))


def cmd_logs(opts, args):
    p = _parser("logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("container")
    a = p.parse_args(args)
    if a.tail != "all" and not a.tail.isdigit():
        raise UsageError(f"invalid value {a.tail!r} for --tail: a number or 'all'")
    sys.stdout.flush()
    _engine(opts).logs(a.container, follow=a.follow, timestamps=a.timestamps,
                       tail=None if a.tail == "all" else int(a.tail))


def cmd_exec(opts, args):
    p = _parser("exec")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("container")
    p.add_argument("command", nargs="...")
    a = p.parse_args(args)
    if not a.command:
        raise UsageError("exec requires at least 2 arguments: CONTAINER COMMAND [ARG...]")
    _check_input_tty(a)
    try:
        code = _engine(opts).exec(a.container, a.command, env=_env(a.env), workdir=a.workdir,
                                  user=a.user, stdin=0 if a.interactive else None,
                                  detach=a.detach, tty=a.tty)
    except LaminaError as e:
        raise _as_run_error(e) from None
    _exit(code)


# ---------------------------------------------------------------------------------- volumes
def cmd_volume(opts, args):
    table = {"create": _volume_create, "ls": _volume_ls, "list": _volume_ls,
             "inspect": _volume_inspect, "rm": _volume_rm, "remove": _volume_rm,
             "prune": _volume_prune}
    if not args or args[0] not in table:
        raise UsageError("usage: lamina volume create|ls|inspect|rm|prune ...")
    table[args[0]](opts, args[1:])


def _volume_create(opts, args):
    p = _parser("volume create")
    p.add_argument("name", nargs="?")
    a = p.parse_args(args)
    print(_engine(opts).volume_create(a.name))


def _volume_ls(opts, args):
    from .. import humanize

    p = _parser("volume ls")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format")
    a = p.parse_args(args)
    rows = _engine(opts).volumes()
    if a.quiet:
        for r in rows:
            print(r["Name"])
    elif a.format:
        _json_lines(({"Driver": r["Driver"], "Labels": "", "Mountpoint": r["Mountpoint"],
                      "Name": r["Name"], "Scope": "local"} for r in rows), a.format)
    else:
        print(humanize.table(["DRIVER", "VOLUME NAME"], [[r["Driver"], r["Name"]] for r in rows]))


def _volume_inspect(opts, args):
    import json

    p = _parser("volume inspect")
    p.add_argument("names", nargs="+")
    a = p.parse_args(args)
    engine = _engine(opts)
    docs, failed = [], False
    for name in a.names:
        try:
            docs.append(engine.volume_inspect(name))
        except LaminaError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = True
    print(json.dumps(docs, indent=4))
    if failed:
        _exit(1)


def _volume_rm(opts, args):
    p = _parser("volume rm")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+")
    a = p.parse_args(args)
    engine = _engine(opts)
    _each(lambda n: engine.volume_rm(n, force=a.force), a.names, lambda name, _: name)


def _volume_prune(opts, args):
    from .. import humanize

    p = _parser("volume prune")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.parse_args(args)  # -f: there is no prompt to skip; -a: every unused volume goes anyway
    names, reclaimed = _engine(opts).volume_prune()
    if names:
        print("Deleted Volumes:")
        for name in names:
            print(name)
        print()
    print(f"Total reclaimed space: {humanize.size(reclaimed)}")
