"""``lamina ps``, ``mount``, ``umount``, ``rm``, ``rename``, ``diff``, ``export``, ``commit``,
``inspect`` and ``container prune``: Docker's flags and columns over the Engine's container
methods. ``ps``, ``inspect`` and ``rm`` are hot paths: this module imports nothing at the top but
the CLI's common helpers (``create``, whose flags are run's, lives with ``run`` in lamina.cli.run)."""

import sys

from ..errors import LaminaError
from .common import FORMAT_HELP, confirm, each, json_lines, open_engine, print_documents, reclaimed

ARGS: dict[str, tuple] = {}  # verb -> its flags and positionals (see common.Parser)

ARGS["ps"] = (
    ("-a --all", "bool", "Show all containers (default shows just running)"),
    ("-f --filter", "list", "Filter output based on conditions provided (status=, health=, ...)"),
    ("--format", "string", FORMAT_HELP),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only display container IDs"),
    ("-s --size", "bool", "Display total file sizes"),
)


def cmd_ps(opts, a):
    from .. import humanize

    filters = {}
    if a.filter:
        from . import filters as container_filters

        filters = container_filters.parse(a.filter)
    rows = open_engine(opts).containers(all=a.all or "status" in filters or "exited" in filters,
                                        size=a.size and not a.quiet)
    if filters:
        rows = container_filters.select(rows, filters)
    if a.quiet:
        if rows:
            print("\n".join(r["ID"] if a.no_trunc else r["ID"][:12] for r in rows))
        return

    def size(r):
        return f"{humanize.size(r['SizeRw'])} (virtual {humanize.size(r['SizeRootFs'])})"

    def command(r):
        cmd = r["Command"]
        if not a.no_trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        return f'"{cmd}"'

    if a.format:
        out = []
        for r in rows:
            item = {"Command": command(r), "CreatedAt": r["Created"], "ID": r["ID"][:12],
                    "Image": r["Image"], "Names": r["Names"], "State": r["State"],
                    "Status": humanize.status(r), "RunningFor": humanize.ago(r["Created"]),
                    "Ports": _ports(r)}
            if a.size:
                item.update(Size=size(r), SizeRw=r["SizeRw"], SizeRootFs=r["SizeRootFs"])
            out.append(item)
        json_lines(out, a.format)
        return
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    if a.size:
        headers.append("SIZE")
    table = []
    for r in rows:
        row = [r["ID"] if a.no_trunc else r["ID"][:12], r["Image"], command(r),
               humanize.ago(r["Created"]), humanize.status(r), _ports(r), r["Names"]]
        if a.size:
            row.append(size(r))
        table.append(row)
    print(humanize.table(headers, table))



def _ports(row) -> str:
    """The PORTS column as Docker prints it: ``127.0.0.1:8080->80/tcp, 0.0.0.0:53->53/udp``."""
    return ", ".join(f"{p['HostIp']}:{p['HostPort']}->{p['ContainerPort']}/{p['Protocol']}"
                     for p in row.get("Ports") or ())

ARGS["mount"] = (("container", None, "CONTAINER"),)


def cmd_mount(opts, a):
    print(open_engine(opts).mount(a.container))

ARGS["umount"] = (("container", None, "CONTAINER"),)


def cmd_umount(opts, a):
    open_engine(opts).umount(a.container)

ARGS["rm"] = (
    ("containers", "+", "CONTAINER [CONTAINER...]"),
    ("-f --force", "bool", "Stop a running container; wait for a command using it (cp, commit...)"),
    ("-v --volumes", "bool", "Remove anonymous volumes associated with the container"),
)


def cmd_rm(opts, a):
    engine = open_engine(opts)
    each(a.containers, lambda name: (engine.rm(name, force=a.force, volumes=a.volumes),
                                     print(name)))

ARGS["rename"] = (("container", None, "CONTAINER"), ("new_name", None, "NEW_NAME"))


def cmd_rename(opts, a):
    open_engine(opts).container_store.rename(a.container, a.new_name)

ARGS["diff"] = (("container", None, "CONTAINER"), ("--format", "string", FORMAT_HELP))


def cmd_diff(opts, a):
    changes = open_engine(opts).diff(a.container)
    if a.format:
        json_lines(({"Kind": c.kind, "Path": c.path} for c in changes), a.format)
        return
    for c in changes:
        print(f"{c.kind} {c.path}")

ARGS["export"] = (
    ("container", None, "CONTAINER"),
    ("-o --output", "string", "Write to a file, instead of STDOUT"),
)


def cmd_export(opts, a):
    engine = open_engine(opts)
    if a.output:
        from ..fsutil import output_file

        with output_file(a.output) as out:
            engine.export(a.container, out)
    else:
        if sys.stdout.isatty():
            raise LaminaError("cowardly refusing to write a tar to a terminal: use -o FILE")
        engine.export(a.container, sys.stdout.buffer)

ARGS["commit"] = (
    ("container", None, "CONTAINER"),
    ("reference", "?", "[REPOSITORY[:TAG]]"),
    ("-a --author", "string", 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")', ""),
    ("-m --message", "string", "Commit message", ""),
)


def cmd_commit(opts, a):
    print(open_engine(opts).commit(a.container, a.reference, message=a.message, author=a.author))

ARGS["inspect"] = (
    ("names", "+", "NAME|ID [NAME|ID...]"),
    ("-s --size", "bool", "Display total file sizes if the type is container"),
    ("-f --format", "string", "Format the output using the given Go template"),
    ("--type", ("image", "container"), "Only look for this type of object"),
)


def cmd_inspect(opts, a):
    from ..errors import NotFound

    engine = open_engine(opts)
    docs = []
    missing = []
    for name in a.names:
        try:
            if a.type != "image":
                try:
                    docs.append(engine.inspect_container(name, size=a.size))
                    continue
                except NotFound:
                    if a.type == "container":
                        raise
            docs.append(engine.inspect_image(name))
        except NotFound:
            missing.append(name)
    print_documents(docs, a.format)
    if missing:
        for name in missing:
            print(f"Error: No such object: {name}", file=sys.stderr)
        sys.exit(1)

ARGS["container prune"] = (("-f --force", "bool", "Do not prompt for confirmation"),)


def cmd_container_prune(opts, a):
    engine = open_engine(opts)
    if not confirm(a.force, "  - all stopped containers"):
        return
    ids, size = engine.prune_containers()
    if ids:
        print("Deleted Containers:\n" + "\n".join(ids) + "\n")
    reclaimed(size)
