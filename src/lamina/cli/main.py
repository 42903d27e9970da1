"""The ``lamina`` command: Docker's verbs, flags and columns over :class:`lamina.Engine`.

Start-up is a feature: only the parser of the command being run is built, and each command imports
what it uses, so ``lamina create`` pays for sqlite3, json and the driver, nothing more.
"""

import os
import sys

from ..errors import LaminaError

USAGE = """Usage: lamina [--root DIR] [--driver overlay2|vfs] COMMAND [ARGS...]

A daemonless container image and storage engine.

Images:
  import FILE|- [NAME[:TAG]]   Make a one-layer image from a rootfs tarball
  images                       List images
  history IMAGE                Show the history of an image
  tag SOURCE TARGET            Give an image another name
  rmi IMAGE...                 Remove images
  commit CONTAINER [NAME[:TAG]] Make an image from a container's changes

Containers:
  create [--name N] IMAGE [CMD...]  Create a container
  ps [-a] [-s] [-q]            List containers
  mount CONTAINER              Mount a container's root, print its path
  umount CONTAINER             Undo mount
  diff CONTAINER               Show a container's changes (A/C/D)
  export CONTAINER -o FILE     Write a container's root as a tar
  rm [-f] CONTAINER...         Remove containers

Both:
  inspect [--size] NAME...     Docker-shaped JSON of images or containers
  system df [-v]               Disk use: images, containers, shared and reclaimable bytes
  info                         Store, driver and counts

Global options: --root DIR (or LAMINA_ROOT), --driver NAME (or LAMINA_DRIVER).
Every listing takes --format json."""


def _engine(opts):
    from ..engine import Engine

    return Engine(root=opts.root, driver=opts.driver)


class UsageError(LaminaError):
    """Bad flags or arguments: exit 125, as Docker's CLI does."""

    exit_code = 125


class _Namespace:
    pass


class _Parser:
    """The small part of argparse that lamina's commands use, without argparse's start-up cost
    (it imports re, gettext and shutil and formats help on every run).

    Flags may come before, between and after positionals, as ``--flag value``, ``--flag=value`` or
    grouped short booleans (``-as``); ``--`` ends them; a ``nargs="..."`` positional takes all that
    follows it verbatim (a container's command).
    """

    def __init__(self, prog: str):
        self.prog = prog
        self.flags: dict[str, tuple] = {}
        self.positionals: list[tuple] = []
        self.defaults: dict = {}

    def add_argument(self, *names, action=None, default=None, nargs=None, choices=None):
        if names[0].startswith("-"):
            dest = max(names, key=len).lstrip("-").replace("-", "_")
            boolean = action == "store_true"
            for name in names:
                self.flags[name] = (dest, boolean, choices)
            self.defaults[dest] = [] if action == "append" else False if boolean else default
        else:
            self.positionals.append((names[0], nargs))
            self.defaults[names[0]] = [] if nargs in ("+", "...") else None

    def usage(self) -> str:
        parts = [f"Usage: lamina {self.prog}"]
        if self.flags:
            parts.append("[OPTIONS]")
        for name, nargs in self.positionals:
            label = name.upper()
            parts.append({None: label, "?": f"[{label}]", "+": f"{label}...",
                          "...": f"[{label}...]"}[nargs])
        flags = sorted({f"  {', '.join(n for n in self.flags if self.flags[n][0] == d)}"
                        for d, _, _ in self.flags.values()})
        return " ".join(parts) + ("\n\nOptions:\n" + "\n".join(flags) if flags else "")

    def _fail(self, message: str):
        raise UsageError(f"{message} (see 'lamina {self.prog} --help')")

    def parse_args(self, args: list[str]) -> _Namespace:
        ns = _Namespace()
        ns.__dict__.update(self.defaults)
        ns.__dict__.update({k: list(v) for k, v in self.defaults.items() if isinstance(v, list)})
        values: list[str] = []
        rest_at = next((i for i, (_, n) in enumerate(self.positionals) if n == "..."), None)
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if rest_at is not None and len(values) >= rest_at:
                values.append(arg)
            elif arg == "--":
                values.extend(args[i:])
                break
            elif arg in ("-h", "--help"):
                print(self.usage())
                raise SystemExit(0)
            elif arg.startswith("--") or (arg.startswith("-") and len(arg) == 2):
                name, eq, value = arg.partition("=")
                if name not in self.flags:
                    self._fail(f"unknown flag: {name}")
                dest, boolean, choices = self.flags[name]
                if boolean:
                    if eq and value not in ("true", "false"):
                        self._fail(f"flag {name} takes no value")
                    setattr(ns, dest, value != "false")
                    continue
                if not eq:
                    if i >= len(args):
                        self._fail(f"flag needs an argument: {name}")
                    value = args[i]
                    i += 1
                if choices and value not in choices:
                    self._fail(f"invalid value {value!r} for {name} (choose from {', '.join(choices)})")
                if isinstance(getattr(ns, dest), list):  # action="append": repeatable
                    getattr(ns, dest).append(value)
                else:
                    setattr(ns, dest, value)
            elif arg.startswith("-") and len(arg) > 2:
                for letter in arg[1:]:
                    spec = self.flags.get("-" + letter)
                    if spec is None or not spec[1]:
                        self._fail(f"unknown shorthand flag: {letter!r} in {arg}")
                    setattr(ns, spec[0], True)
            else:
                values.append(arg)
        for name, nargs in self.positionals:
            if nargs == "...":
                setattr(ns, name, values)
                values = []
            elif nargs == "+":
                if not values:
                    self._fail(f"requires at least one {name} argument")
                setattr(ns, name, values)
                values = []
            elif nargs == "?":
                if values:
                    setattr(ns, name, values.pop(0))
            else:
                if not values:
                    self._fail(f"requires a {name} argument")
                setattr(ns, name, values.pop(0))
        if values:
            self._fail(f"unexpected argument: {values[0]}")
        return ns


def _parser(prog: str) -> _Parser:
    return _Parser(prog)


def _json_lines(rows, template: str = "json") -> None:
    """Print listing rows: ``json`` (one object per line, as Docker) or a Go-template subset:
    ``{{.Field}}``, ``{{json .Field}}``, ``{{json .}}``, a ``table`` prefix and ``\\t`` escapes."""
    import json

    if template in ("json", "{{json .}}"):
        for row in rows:
            print(json.dumps(row, separators=(",", ":")))
        return
    import re

    table = template.startswith("table")
    if table:
        template = template[5:].lstrip()
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    pattern = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_]*)\s*\}\}")

    def render(row, header=False):
        def field(m):
            if header:
                return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", m.group(2)).upper()
            if m.group(2) and m.group(2) not in row:
                raise UsageError(f"template: no field {m.group(2)!r} (fields: {', '.join(row)})")
            value = row if not m.group(2) else row[m.group(2)]
            return json.dumps(value) if m.group(1) or isinstance(value, (dict, list)) else str(value)

        return pattern.sub(field, template)

    rows = list(rows)
    lines = [render(rows[0] if rows else {}, header=True)] if table else []
    lines += [render(row) for row in rows]
    if table:
        cells = [line.split("\t") for line in lines]
        widths = [max(len(c[i]) if i < len(c) else 0 for c in cells) for i in range(max(map(len, cells)))]
        lines = ["   ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells]
    for line in lines:
        print(line)


def _each(names: list[str], action) -> None:
    """Docker's way with several names: act on each, report each failure on its own line, and
    exit 1 at the end if any failed."""
    failed = False
    for name in names:
        try:
            action(name)
        except LaminaError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = True
    if failed:
        sys.exit(1)


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


# ---------------------------------------------------------------------------------- images
def cmd_import(opts, args):
    p = _parser("import")
    p.add_argument("file")
    p.add_argument("reference", nargs="?")
    p.add_argument("-m", "--message", default="")
    a = p.parse_args(args)
    print(_engine(opts).import_image(a.file, a.reference, message=a.message))


def cmd_images(opts, args):
    from .. import humanize

    p = _parser("images")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    a = p.parse_args(args)
    from ..image import parse_rfc3339

    rows = _engine(opts).images(all=a.all)
    if a.quiet:
        seen = []
        for r in rows:
            ident = r["ID"] if a.no_trunc else _short(r["ID"])
            if ident not in seen:
                seen.append(ident)
        print("\n".join(seen)) if seen else None
        return
    if a.format:
        _json_lines(({"Containers": "N/A", "CreatedAt": r["CreatedAt"],
                     "CreatedSince": humanize.ago(parse_rfc3339(r["CreatedAt"])),
                     "Digest": "<none>", "ID": _short(r["ID"]), "Repository": r["Repository"],
                     "Size": humanize.size(r["Size"]), "SizeBytes": r["Size"], "Tag": r["Tag"]}
                    for r in rows), a.format)
        return
    print(humanize.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        [[r["Repository"], r["Tag"], r["ID"] if a.no_trunc else _short(r["ID"]),
          humanize.ago(parse_rfc3339(r["CreatedAt"])), humanize.size(r["Size"])] for r in rows]))


def cmd_history(opts, args):
    from .. import humanize

    p = _parser("history")
    p.add_argument("image")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-H", "--human", default="true")
    p.add_argument("--format")
    a = p.parse_args(args)
    rows = _engine(opts).history(a.image)
    if a.quiet:
        print("\n".join(r["ID"] if a.no_trunc or r["ID"] == "<missing>" else _short(r["ID"])
                        for r in rows))
        return
    if a.format:
        _json_lines(({"Comment": r["Comment"], "CreatedAt": r["CreatedAt"],
                     "CreatedBy": r["CreatedBy"], "CreatedSince": humanize.ago(r["Created"]),
                     "ID": r["ID"] if r["ID"] == "<missing>" else _short(r["ID"]),
                     "Size": humanize.size(r["Size"]), "SizeBytes": r["Size"]} for r in rows),
                    a.format)
        return

    def by(text):
        text = " ".join(text.split()) if not a.no_trunc else text
        return text if a.no_trunc or len(text) <= 45 else text[:44] + "…"

    print(humanize.table(
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        [[r["ID"] if r["ID"] == "<missing>" or a.no_trunc else _short(r["ID"]),
          humanize.ago(r["Created"]), by(r["CreatedBy"]),
          humanize.size(r["Size"]) if a.human != "false" else str(r["Size"]), r["Comment"]]
         for r in rows]))


def cmd_tag(opts, args):
    p = _parser("tag")
    p.add_argument("source")
    p.add_argument("target")
    a = p.parse_args(args)
    _engine(opts).tag(a.source, a.target)


def cmd_rmi(opts, args):
    p = _parser("rmi")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    _each(a.images, lambda name: print("\n".join(engine.rmi([name], force=a.force))))


def cmd_commit(opts, args):
    p = _parser("commit")
    p.add_argument("container")
    p.add_argument("reference", nargs="?")
    p.add_argument("-m", "--message", default="")
    p.add_argument("-a", "--author", default="")
    a = p.parse_args(args)
    print(_engine(opts).commit(a.container, a.reference, message=a.message, author=a.author))


# ---------------------------------------------------------------------------------- containers
def cmd_create(opts, args):
    p = _parser("create")
    p.add_argument("--name")
    p.add_argument("image")
    p.add_argument("command", nargs="...")
    a = p.parse_args(args)
    print(_engine(opts).create(a.image, name=a.name, command=a.command or None))


def cmd_ps(opts, args):
    from .. import humanize

    p = _parser("ps")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format")
    a = p.parse_args(args)
    rows = _engine(opts).containers(all=a.all, size=a.size and not a.quiet)
    if a.quiet:
        if rows:
            print("\n".join(r["ID"] if a.no_trunc else r["ID"][:12] for r in rows))
        return

    def status(r):
        if r["State"] == "created":
            return "Created"
        if r["State"] == "exited":
            return f"Exited ({r['ExitCode']}) {humanize.ago(r.get('FinishedAt') or r['Created'])}"
        if r["State"] == "running":
            return f"Up {humanize.duration(humanize.time.time() - r['StartedAt'])}"
        return r["State"].capitalize()

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
                    "Status": status(r), "RunningFor": humanize.ago(r["Created"])}
            if a.size:
                item.update(Size=size(r), SizeRw=r["SizeRw"], SizeRootFs=r["SizeRootFs"])
            out.append(item)
        _json_lines(out, a.format)
        return
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    if a.size:
        headers.append("SIZE")
    table = []
    for r in rows:
        row = [r["ID"] if a.no_trunc else r["ID"][:12], r["Image"], command(r),
               humanize.ago(r["Created"]), status(r), "", r["Names"]]
        if a.size:
            row.append(size(r))
        table.append(row)
    print(humanize.table(headers, table))


def cmd_mount(opts, args):
    p = _parser("mount")
    p.add_argument("container")
    a = p.parse_args(args)
    print(_engine(opts).mount(a.container))


def cmd_umount(opts, args):
    p = _parser("umount")
    p.add_argument("container")
    a = p.parse_args(args)
    _engine(opts).umount(a.container)


def cmd_rm(opts, args):
    p = _parser("rm")
    p.add_argument("containers", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    _each(a.containers, lambda name: (engine.rm(name, force=a.force), print(name)))


def cmd_diff(opts, args):
    p = _parser("diff")
    p.add_argument("container")
    p.add_argument("--format")
    a = p.parse_args(args)
    changes = _engine(opts).diff(a.container)
    if a.format:
        _json_lines(({"Kind": c.kind, "Path": c.path} for c in changes), a.format)
        return
    for c in changes:
        print(f"{c.kind} {c.path}")


def cmd_export(opts, args):
    p = _parser("export")
    p.add_argument("container")
    p.add_argument("-o", "--output")
    a = p.parse_args(args)
    engine = _engine(opts)
    if a.output:
        from ..fsutil import output_file

        with output_file(a.output) as out:
            engine.export(a.container, out)
    else:
        if sys.stdout.isatty():
            raise LaminaError("cowardly refusing to write a tar to a terminal: use -o FILE")
        engine.export(a.container, sys.stdout.buffer)


# ---------------------------------------------------------------------------------- both
def cmd_inspect(opts, args):
    import json

    from ..errors import NotFound

    p = _parser("inspect")
    p.add_argument("names", nargs="+")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("--type", choices=["image", "container"])
    a = p.parse_args(args)
    engine = _engine(opts)
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
    print(json.dumps(docs, indent=4))
    if missing:
        for name in missing:
            print(f"Error: No such object: {name}", file=sys.stderr)
        sys.exit(1)


def cmd_image(opts, args):
    return _sub(opts, args, {"ls": cmd_images, "list": cmd_images, "rm": cmd_rmi, "import": cmd_import,
                             "history": cmd_history, "tag": cmd_tag, "inspect": cmd_inspect,
                             "prune": cmd_image_prune}, "image")


def cmd_container(opts, args):
    return _sub(opts, args, {"ls": cmd_ps, "list": cmd_ps, "ps": cmd_ps, "rm": cmd_rm,
                             "create": cmd_create, "diff": cmd_diff, "export": cmd_export,
                             "commit": cmd_commit, "mount": cmd_mount, "umount": cmd_umount,
                             "inspect": cmd_inspect, "prune": cmd_container_prune}, "container")


def cmd_system(opts, args):
    return _sub(opts, args, {"df": cmd_df, "info": cmd_info, "prune": cmd_system_prune,
                             "check": cmd_system_check}, "system")


def _confirm(force: bool, warning: str) -> bool:
    """Docker's prompt before a prune; ``-f`` skips it. An empty or closed stdin means no."""
    if force:
        return True
    print(f"WARNING! This will remove:\n{warning}\nAre you sure you want to continue? [y/N] ",
          end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _reclaimed(size: int) -> None:
    from .. import humanize

    print(f"Total reclaimed space: {humanize.size(size)}")


def cmd_container_prune(opts, args):
    p = _parser("container prune")
    p.add_argument("-f", "--force", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    if not _confirm(a.force, "  - all stopped containers"):
        return
    ids, size = engine.prune_containers()
    if ids:
        print("Deleted Containers:\n" + "\n".join(ids) + "\n")
    _reclaimed(size)


def cmd_image_prune(opts, args):
    p = _parser("image prune")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    what = "  - all images without at least one container associated to them" if a.all else \
        "  - all dangling images"
    if not _confirm(a.force, what):
        return
    lines, size = engine.prune_images(all=a.all)
    if lines:
        print("Deleted Images:\n" + "\n".join(lines) + "\n")
    _reclaimed(size)


def cmd_system_prune(opts, args):
    p = _parser("system prune")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--volumes", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    what = ["  - all stopped containers"]
    if a.volumes:
        what.append("  - all volumes not used by at least one container")
    what.append("  - all images without at least one container associated to them" if a.all
                else "  - all dangling images")
    if not _confirm(a.force, "\n".join(what)):
        return
    result = engine.prune_system(all=a.all, volumes=a.volumes)
    if result["Containers"]:
        print("Deleted Containers:\n" + "\n".join(result["Containers"]) + "\n")
    if result["Volumes"]:
        print("Deleted Volumes:\n" + "\n".join(result["Volumes"]) + "\n")
    if result["Images"]:
        print("Deleted Images:\n" + "\n".join(result["Images"]) + "\n")
    _reclaimed(result["Reclaimed"])


def cmd_system_check(opts, args):
    p = _parser("system check")
    p.add_argument("--repair", action="store_true")
    a = p.parse_args(args)
    findings = _engine(opts).check(repair=a.repair)
    for item in findings:
        print(item)
    unfixed = [f for f in findings if not f.fixed]
    if not findings:
        print("No problems found")
    elif a.repair:
        print(f"{len(findings) - len(unfixed)} problem(s) repaired, {len(unfixed)} left")
    else:
        print(f"{len(findings)} problem(s) found; `lamina system check --repair` fixes what it can")
    if unfixed:
        sys.exit(1)


def _sub(opts, args, table, group):
    if not args or args[0] not in table:
        raise LaminaError(f"usage: lamina {group} {'|'.join(table)} ...")
    if group == "container" and args[0] in ("ls", "list"):
        return table[args[0]](opts, ["-a"] + args[1:]) if "-a" in args else table[args[0]](opts, args[1:])
    return table[args[0]](opts, args[1:])


def cmd_df(opts, args):
    from .. import humanize

    p = _parser("system df")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--format")
    a = p.parse_args(args)
    df = _engine(opts).system_df()

    def reclaim(s):
        pct = f" ({s['Reclaimable'] * 100 // s['Size']}%)" if s["Size"] and s["Type"] != "Build Cache" else ""
        return humanize.size(s["Reclaimable"]) + pct

    if a.format:
        _json_lines(({"Active": str(s["Active"]), "Reclaimable": reclaim(s),
                     "ReclaimableBytes": s["Reclaimable"], "Size": humanize.size(s["Size"]),
                     "SizeBytes": s["Size"], "TotalCount": str(s["TotalCount"]), "Type": s["Type"]}
                    for s in df["Summary"]), a.format)
        return
    if not a.verbose:
        print(humanize.table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                             [[s["Type"], str(s["TotalCount"]), str(s["Active"]),
                               humanize.size(s["Size"]), reclaim(s)] for s in df["Summary"]]))
        return
    print("Images space usage:\n")
    print(humanize.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
        [[i["Repository"], i["Tag"], _short(i["ID"]), i["CreatedAt"][:19].replace("T", " "),
          humanize.size(i["Size"]), humanize.size(i["SharedSize"]), humanize.size(i["UniqueSize"]),
          str(i["Containers"])] for i in df["Images"]]))
    print("\nContainers space usage:\n")
    print(humanize.table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
        [[c["ID"][:12], c["Image"], f'"{c["Command"]}"', "0", humanize.size(c["SizeRw"]),
          humanize.ago(c["Created"]), c["State"].capitalize(), c["Names"]] for c in df["Containers"]]))
    print("\nLocal Volumes space usage:\n")
    print(humanize.table(["VOLUME NAME", "LINKS", "SIZE"],
                         [[v["Name"], str(v["Links"]), humanize.size(v["Size"])]
                          for v in df.get("Volumes", [])]))
    print("\nBuild cache usage: 0B")


def cmd_info(opts, args):
    import json

    _parser("info").parse_args(args)
    engine = _engine(opts)
    db = engine.db
    info = {"Root": engine.root, "Driver": engine.driver,
            "Images": db.execute("SELECT count(*) FROM images").fetchone()[0],
            "Containers": db.execute("SELECT count(*) FROM containers").fetchone()[0],
            "Layers": db.execute("SELECT count(*) FROM layers").fetchone()[0]}
    print(json.dumps(info, indent=2))


def cmd_version(opts, args):
    from .. import __version__

    print(f"lamina {__version__}")


COMMANDS = {
    "import": cmd_import, "images": cmd_images, "history": cmd_history, "tag": cmd_tag,
    "rmi": cmd_rmi, "commit": cmd_commit, "create": cmd_create, "ps": cmd_ps, "mount": cmd_mount,
    "umount": cmd_umount, "rm": cmd_rm, "diff": cmd_diff, "export": cmd_export,
    "inspect": cmd_inspect, "image": cmd_image, "container": cmd_container, "system": cmd_system,
    "info": cmd_info, "version": cmd_version,
}


# Commands that live in their own modules (imported only when run): name -> module, which
# defines ``cmd_<name>(opts, args)`` (dashes become underscores).
LAZY_COMMANDS = {
    "run": "lamina.cli.run", "start": "lamina.cli.run", "stop": "lamina.cli.run",
    "kill": "lamina.cli.run", "wait": "lamina.cli.run", "logs": "lamina.cli.run",
    "exec": "lamina.cli.run", "volume": "lamina.cli.run",
    "build": "lamina.cli.build",
    "save": "lamina.cli.transfer", "load": "lamina.cli.transfer", "pull": "lamina.cli.transfer",
    "push": "lamina.cli.transfer", "login": "lamina.cli.transfer", "logout": "lamina.cli.transfer",
    "cp": "lamina.cli.cp",
}


def _lookup(name: str):
    """The function for command ``name``, importing its module if it lives elsewhere."""
    command = COMMANDS.get(name)
    if command is None and name in LAZY_COMMANDS:
        import importlib

        try:
            module = importlib.import_module(LAZY_COMMANDS[name])
        except ModuleNotFoundError as e:
            if e.name != LAZY_COMMANDS[name]:
                raise
            return None
        command = getattr(module, "cmd_" + name.replace("-", "_"), None)
    return command


class _Options:
    root = None
    driver = None
    debug = False


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lamina`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = _Options()
    opts.debug = bool(os.environ.get("LAMINA_DEBUG"))
    while argv and argv[0].startswith("-"):
        flag = argv.pop(0)
        name, eq, value = flag.partition("=")
        if name in ("--root", "--driver"):
            if not eq:
                if not argv:
                    _fail(f"flag needs an argument: {name}", 125)
                value = argv.pop(0)
            setattr(opts, name[2:], value)
        elif name in ("-D", "--debug"):
            opts.debug = True
        elif name in ("-h", "--help"):
            print(USAGE)
            return
        elif name in ("-v", "--version"):
            return cmd_version(opts, [])
        else:
            _fail(f"unknown flag: {flag}\nSee 'lamina --help'.", 125)
    if not argv:
        print(USAGE)
        return
    command = _lookup(argv[0])
    if command is None:
        _fail(f"'{argv[0]}' is not a lamina command.\nSee 'lamina --help'.", 125)
    try:
        command(opts, argv[1:])
        _exit(0)
    except LaminaError as e:
        if opts.debug:
            raise
        _fail(f"Error: {e}", e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
    except OSError as e:
        if opts.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        _fail(f"Error: {e.strerror or e}{where}", 1)


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    _exit(code)


def _exit(code: int) -> None:
    """Flush and leave without interpreter teardown. Closing the last SQLite connection would
    checkpoint the WAL with fsyncs on every command; leaving it open is safe (committed
    transactions are in the WAL, which the next open reads) and SQLite checkpoints by itself."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 141
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
