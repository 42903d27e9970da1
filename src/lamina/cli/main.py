"""The ``lamina`` command: Docker's verbs, flags and columns over :class:`lamina.Engine`.

Start-up is a feature: only the parser of the command being run is built, and each command imports
what it uses, so ``lamina create`` pays for sqlite3, json and the driver, nothing more.

One table describes the commands, as plain strings and tuples: :data:`VERBS` names every verb and
every subcommand of the management groups, with its line in ``lamina --help`` and the module that
defines it. That module's ``ARGS[path]`` lists the verb's flags and positionals (see
:class:`lamina.cli.common.Parser`) and its ``cmd_<path>(opts, a)`` does the work with what they parsed to. Both
``lamina --help`` and ``lamina VERB --help`` are printed from these tuples, so what the help says
is what is parsed.
"""

import os
import sys

from ..errors import LaminaError
from .common import Namespace, Parser, UsageError, exit_now, fail, one_line, option_lines

# ---------------------------------------------------------------------------------- the table
COMMON, MANAGEMENT, OTHER = "Common Commands", "Management Commands", "Commands"
SECTIONS = (COMMON, MANAGEMENT, OTHER)

# Every verb of ``lamina``, in the order ``lamina --help`` lists it: name -> (section, what it does,
# where). ``where`` is the module of lamina.cli that defines ``ARGS[name]`` and ``cmd_<name>``,
# imported only when the verb runs; or, for a management group, its subcommands:
# name -> (what it does, module), defining ``ARGS["group name"]`` and ``cmd_group_name``, or the
# verb it is another name for ("images", "volume ls").
VERBS = {
    "run": (COMMON, "Create and run a new container from an image", "run"),
    "exec": (COMMON, "Execute a command in a running container", "run"),
    "ps": (COMMON, "List containers", "containers"),
    "build": (COMMON, "Build an image from a Dockerfile", "build"),
    "pull": (COMMON, "Download an image from a registry", "transfer"),
    "push": (COMMON, "Upload an image to a registry", "transfer"),
    "images": (COMMON, "List images", "images"),
    "login": (COMMON, "Log in to a registry", "transfer"),
    "logout": (COMMON, "Log out from a registry", "transfer"),
    "version": (COMMON, "Show the lamina version", "system"),
    "info": (COMMON, "Display the store's directory, driver and counts", "system"),
    "serve": (COMMON, "Serve the Docker Engine API on a socket", "serve"),

    "builder": (MANAGEMENT, "Manage builds", {
        "prune": ("Remove build cache", "build")}),
    "container": (MANAGEMENT, "Manage containers", {
        "attach": "attach", "commit": "commit", "create": "create", "diff": "diff", "export": "export",
        "inspect": "inspect", "ls": "ps", "list": "ps", "ps": "ps", "mount": "mount",
        "pause": "pause", "prune": ("Remove all stopped containers", "containers"),
        "rename": "rename", "rm": "rm",
        "stats": "stats", "umount": "umount", "unpause": "unpause", "update": "update"}),
    "image": (MANAGEMENT, "Manage images", {
        "analyze": ("Show each layer's changes and the space wasted in an image", "images"),
        "history": "history", "import": "import", "inspect": "inspect", "ls": "images",
        "list": "images", "prune": ("Remove unused images", "images"), "rm": "rmi", "tag": "tag"}),
    "system": (MANAGEMENT, "Manage the store", {
        "check": ("Find inconsistencies in the store, and repair them", "system"),
        "config": ("Show or set the store's options (keep-pulled-blobs)", "system"),
        "dedup": ("Share the data blocks of identical files across layers (XFS, btrfs)",
                  "system"),
        "df": ("Show disk usage", "system"), "info": "info",
        "prune": ("Remove unused data", "system")}),
    "network": (MANAGEMENT, "Manage networks", {
        "connect": ("Connect a container to a network", "network"),
        "create": ("Create a network", "network"),
        "disconnect": ("Disconnect a container from a network", "network"),
        "inspect": ("Display detailed information on one or more networks", "network"),
        "ls": ("List networks", "network"), "list": "network ls",
        "prune": ("Remove all unused networks", "network"),
        "rm": ("Remove one or more networks", "network"), "remove": "network rm"}),
    "volume": (MANAGEMENT, "Manage volumes", {
        "create": ("Create a volume", "run"),
        "inspect": ("Display detailed information on one or more volumes", "run"),
        "ls": ("List volumes", "run"), "list": "volume ls",
        "prune": ("Remove unused volumes", "run"),
        "rm": ("Remove one or more volumes", "run"), "remove": "volume rm"}),

    "attach": (OTHER, ("Attach local standard input, output, and error streams to a running "
               "container"), "run"),
    "commit": (OTHER, "Create a new image from a container's changes", "containers"),
    "cp": (OTHER, "Copy files/folders between a container and the local filesystem", "cp"),
    "create": (OTHER, "Create a new container", "run"),
    "diff": (OTHER, "Inspect changes to files or directories on a container's filesystem", "containers"),
    "export": (OTHER, "Export a container's filesystem as a tar archive", "containers"),
    "history": (OTHER, "Show the history of an image", "images"),
    "import": (OTHER, "Import the contents from a tarball to create a filesystem image", "images"),
    "inspect": (OTHER, "Return low-level information on images and containers", "containers"),
    "kill": (OTHER, "Kill one or more running containers", "run"),
    "load": (OTHER, "Load an image from a tar archive or STDIN", "transfer"),
    "logs": (OTHER, "Fetch the logs of a container", "run"),
    "mount": (OTHER, "Mount a container's root filesystem and print its path", "containers"),
    "pause": (OTHER, "Pause all processes within one or more containers", "limits"),
    "port": (OTHER, "List port mappings or a specific mapping for the container", "network"),
    "rename": (OTHER, "Rename a container", "containers"),
    "rm": (OTHER, "Remove one or more containers", "containers"),
    "rmi": (OTHER, "Remove one or more images", "images"),
    "save": (OTHER, "Save one or more images to a tar archive (streamed to STDOUT by default)",
             "transfer"),
    "start": (OTHER, "Start one or more stopped containers", "run"),
    "stats": (OTHER, "Display a live stream of container(s) resource usage statistics", "limits"),
    "stop": (OTHER, "Stop one or more running containers", "run"),
    "tag": (OTHER, "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", "images"),
    "umount": (OTHER, "Unmount a container's root filesystem", "containers"),
    "unpause": (OTHER, "Unpause all processes within one or more containers", "limits"),
    "unshare": (OTHER, "Run a command in the user namespace of a user's store", "system"),
    "update": (OTHER, "Update configuration of one or more containers", "limits"),
    "wait": (OTHER, "Block until one or more containers stop, then print their exit codes", "run"),
}

# The options before the verb ("{drivers}": the storage drivers lamina has).
GLOBAL_ARGS = (
    ("--root", "string", ("Store directory (default $LAMINA_ROOT; else /var/lib/lamina for "
                          "root, ~/.local/share/lamina for others)")),
    ("--driver", "string", ("Storage driver of a new store: {drivers} (default $LAMINA_DRIVER; "
                            "else overlay2 where it works, vfs)")),
    ("-D --debug", "bool", "Show Python tracebacks, not one-line errors (or set LAMINA_DEBUG)"),
    ("-h --help", "bool", "Print usage"),
    ("-v --version", "bool", "Print version information and quit"),
    ("command", "?", "COMMAND"),
    ("args", "...", "[ARG...]"),
)


def invocations() -> list[str]:
    """Every way to name a verb on the command line: ``ps``, ``container ls``, ``volume rm``..."""
    out = []
    for name, (_, _, where) in VERBS.items():
        if isinstance(where, dict):
            out += [f"{name} {sub}" for sub in where]
        else:
            out.append(name)
    return out


def canonical(invocation: str) -> str:
    """The verb an invocation names, other names followed: ``container ls`` -> ``ps``."""
    group, _, sub = invocation.partition(" ")
    if sub:
        target = VERBS[group][2][sub]
        if isinstance(target, str):
            return canonical(target)
    return invocation


def _entry(path: str) -> tuple[str, str | None]:
    """(what it does, module) of a verb as :func:`canonical` names it."""
    group, _, sub = path.partition(" ")
    _, summary, where = VERBS[group]
    return where[sub] if sub else (summary, where)


def _module(name: str):
    # __import__, not importlib.import_module: importlib's package imports warnings (start-up)
    return __import__(f"{__package__}.{name}", fromlist=["ARGS"])


def _verb(invocation: str):
    """(parser, function) of a verb as invoked (``ps``, ``container ls``, ``volume create``),
    importing the verb's module if it lives elsewhere."""
    path = canonical(invocation)
    summary, name = _entry(path)
    module = _module(name)
    aliases = tuple(name for name in invocations() if canonical(name) == path)
    return (Parser(invocation, module.ARGS[path], summary, path, aliases),
            getattr(module, "cmd_" + path.replace(" ", "_")))


def verb_parser(invocation: str) -> Parser:
    """The parser of a verb as invoked, as the command would parse its arguments."""
    return _verb(invocation)[0]


def usage() -> str:
    """``lamina --help``: every verb of :data:`VERBS` in its section, and the global options."""
    from ..snapshots import DRIVERS

    out = ["Usage:  lamina [OPTIONS] COMMAND [ARG...]", "",
           "A daemonless container image and storage engine.", ""]
    width = max(map(len, VERBS)) + 2
    for section in SECTIONS:
        out.append(f"{section}:")
        out += [f"  {name.ljust(width)}{summary}" for name, (where, summary, _) in VERBS.items()
                if where == section]
        out.append("")
    out.append("Global Options:")
    out += [line.replace("{drivers}", ", ".join(DRIVERS)) for line in option_lines(GLOBAL_ARGS)]
    out += ["", "Run 'lamina COMMAND --help' for more information on a command."]
    return "\n".join(out)


def group_usage(group: str) -> str:
    """``lamina GROUP --help``: the group's subcommands (each once, by its first name)."""
    _, summary, table = VERBS[group]
    rows, seen = [], set()
    for sub in table:
        path = canonical(f"{group} {sub}")
        if path not in seen:
            seen.add(path)
            rows.append((sub, _entry(path)[0]))
    width = max(len(sub) for sub, _ in rows) + 2
    return "\n".join([f"Usage:  lamina {group} COMMAND", "", summary, "", "Commands:",
                      *(f"  {sub.ljust(width)}{text}" for sub, text in sorted(rows)), "",
                      f"Run 'lamina {group} COMMAND --help' for more information on a command."])


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lamina`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = Namespace()
    opts.debug = bool(os.environ.get("LAMINA_DEBUG"))
    try:
        _run(opts, argv)
        exit_now(0)
    except LaminaError as e:
        if opts.debug:
            raise
        fail(f"Error: {one_line(str(e))}", e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
    except OSError as e:
        if opts.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        fail(one_line(f"Error: {e.strerror or e}{where}"), 1)


def _run(opts, argv: list[str]) -> None:
    """Parse the global options, find the verb (importing its module) and run it."""
    top = Parser("", GLOBAL_ARGS)
    top.help = usage
    g = top.parse_args(argv)
    opts.root, opts.driver, opts.debug = g.root, g.driver, opts.debug or g.debug
    if g.version:
        return _module("system").cmd_version(opts, g)
    if g.command is None:
        print(usage())
        return
    invocation, args = g.command, g.args
    if invocation not in VERBS:
        fail(f"'{invocation}' is not a lamina command.\nSee 'lamina --help'.", 125)
    table = VERBS[invocation][2]
    if isinstance(table, dict):  # a management group: its subcommand is the verb
        if not args or args[0] in ("-h", "--help"):
            print(group_usage(invocation))
            return
        if args[0] not in table:
            raise UsageError(f"'{args[0]}' is not a lamina {invocation} command "
                             f"(see 'lamina {invocation} --help')")
        invocation, args = f"{invocation} {args[0]}", args[1:]
    try:
        parser, command = _verb(invocation)
    except ModuleNotFoundError as e:  # a verb whose module this installation leaves out
        if e.name != f"{__package__}.{_entry(canonical(invocation))[1]}":
            raise
        fail(f"'{invocation}' is not a lamina command.\nSee 'lamina --help'.", 125)
    parsed = parser.parse_args(args)
    if os.geteuid() != 0 and canonical(invocation) not in OUTSIDE_NAMESPACE:
        enter_namespace(opts)
    command(opts, parsed)


# Verbs that run as the user, outside the store's user namespace: they touch no store.
OUTSIDE_NAMESPACE = ("version", "login", "logout")


def enter_namespace(opts) -> None:
    """A user's command runs in the user namespace of its store (lamina.userns), as root there:
    the store is checked to be the user's own first, so another user's store, or root's, is
    refused with one line and nothing is made."""
    from ..store import default_root, guard
    from ..userns import enter

    opts.root = os.path.abspath(opts.root or os.environ.get("LAMINA_ROOT") or default_root())
    guard(opts.root)
    warning = enter(opts.root)
    if warning:
        print(f"WARN[0000] {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
