"""The ``lamina`` command: Docker's verbs, flags and columns over :class:`lamina.Engine`.

Start-up is a feature: only the parser of the command being run is built, and each command imports
what it uses, so ``lamina create`` pays for sqlite3, json and the driver, nothing more.

One table describes the commands, as plain strings and tuples: :data:`VERBS` names every verb and
every subcommand of the management groups, with its line in ``lamina --help`` and the module that
defines it. That module's ``ARGS[path]`` lists the verb's flags and positionals (see
:class:`Parser`) and its ``cmd_<path>(opts, a)`` does the work with what they parsed to. Both
``lamina --help`` and ``lamina VERB --help`` are printed from these tuples, so what the help says
is what is parsed.
"""

import os
import sys

from ..errors import LaminaError

FORMAT_HELP = "Format the output: 'json' (one object a line) or a Go template"


def open_engine(opts):
    """The Engine of the store the global options (``--root``, ``--driver``) name."""
    from ..engine import Engine

    return Engine(root=opts.root, driver=opts.driver)


class UsageError(LaminaError):
    """Bad flags or arguments: exit 125, as Docker's CLI does."""

    exit_code = 125


class _Namespace:
    pass


class Parser:
    """The small part of argparse that lamina's commands use, without argparse's start-up cost
    (it imports re, gettext and shutil and formats help on every run).

    ``arguments`` is a tuple of ``(names, kind, help[, default])`` tuples:

    * a flag: ``names`` are its spellings (``"-a --all"``); ``kind`` is ``"bool"`` (no value),
      ``"list"`` (a value, repeatable: the attribute is a list), a tuple of the values it accepts,
      or any other word (a value; the word names it in the help: ``"string"``, ``"int"``...);
      ``default`` is the value when the flag is not given (None; False for bool, [] for list).
    * a positional: ``names`` is its attribute; ``kind`` is None (exactly one), ``"?"`` (optional),
      ``"+"`` (one or more: a list) or ``"..."`` (everything that follows it, verbatim: a list);
      ``help`` is how the usage line shows it.

    Flags may come before, between and after positionals, as ``--flag value``, ``--flag=value``,
    ``-f value``, ``-f=value`` or grouped short booleans (``-as``); ``--`` ends them; a ``"..."``
    positional takes all that follows it verbatim (a container's command). ``-h``/``--help``
    prints :meth:`help` and exits 0 before anything else is done.
    """

    def __init__(self, prog: str, arguments: tuple = (), summary: str = "",
                 path: str | None = None):
        self.prog = prog  # as invoked: "ps", "container ls"
        self.path = prog if path is None else path  # the verb's name in the table: "ps"
        self.summary = summary
        self.arguments = arguments
        self.flags: dict[str, tuple] = {}  # name -> (dest, boolean, choices)
        self.positionals: list[tuple] = []  # (dest, nargs)
        self.defaults: dict = {}
        for argument in arguments:
            names, kind = argument[0], argument[1]
            if names.startswith("-"):
                names = names.split()
                dest = max(names, key=len).lstrip("-").replace("-", "_")
                boolean = kind == "bool"
                choices = kind if isinstance(kind, tuple) else None
                for name in names:
                    self.flags[name] = (dest, boolean, choices)
                self.defaults[dest] = ([] if kind == "list" else False if boolean else
                                       argument[3] if len(argument) > 3 else None)
            else:
                self.positionals.append((names, kind))
                self.defaults[names] = [] if kind in ("+", "...") else None

    def help(self) -> str:
        """``lamina VERB --help``: usage, what the verb does, its other names, its options."""
        usage = f"Usage:  lamina {self.prog}" + (" [OPTIONS]" if self.flags else "")
        usage += "".join(f" {a[2]}" for a in self.arguments if not a[0].startswith("-"))
        out = [usage]
        if self.summary:
            out += ["", self.summary]
        aliases = [f"lamina {name}" for name in invocations() if name != self.prog
                   and canonical(name) == self.path]
        if aliases:
            out += ["", "Aliases:", "  " + ", ".join(aliases)]
        options = option_lines(self.arguments)
        if options:
            out += ["", "Options:", *options]
        return "\n".join(out)

    def _fail(self, message: str):
        raise UsageError(f"{message} (see 'lamina {self.prog + ' ' if self.prog else ''}--help')")

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
                print(self.help())
                raise SystemExit(0)
            elif arg.startswith("--") or (arg[:1] == "-" and (len(arg) == 2 or arg[2:3] == "=")):
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
                if isinstance(getattr(ns, dest), list):  # kind "list": repeatable
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


def option_lines(arguments: tuple) -> list[str]:
    """The flags of ``arguments`` (see :class:`Parser`) as Docker's help lists them: sorted by
    long name, ``-a, --all``, the kind of value, the help, the choices and the default."""
    rows = []
    for argument in arguments:
        names, kind, text = argument[:3]
        if not names.startswith("-"):
            continue
        short = [n for n in names.split() if not n.startswith("--")]
        long = [n for n in names.split() if n.startswith("--")]
        label = ", ".join(short + long) if short else "    " + ", ".join(long)
        if isinstance(kind, tuple):
            label += " string"
            text += f" ({'|'.join(kind)})"
        elif kind != "bool":
            label += f" {kind}"
        if len(argument) > 3 and argument[3] not in (None, ""):
            text += f" (default {argument[3]})"
        rows.append(((long or short)[0].lstrip("-"), label, text))
    width = max((len(label) for _, label, _ in rows), default=0)
    return [f"  {label.ljust(width)}   {text}" for _, label, text in sorted(rows)]


def json_lines(rows, template: str = "json") -> None:
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


def each(names: list[str], action) -> None:
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
ARGS: dict[str, tuple] = {}  # verb -> its flags and positionals (see Parser)

ARGS["import"] = (
    ("file", None, "FILE|-"),
    ("reference", "?", "[REPOSITORY[:TAG]]"),
    ("-m --message", "string", "Set the commit message of the imported image", ""),
)


def cmd_import(opts, a):
    print(open_engine(opts).import_image(a.file, a.reference, message=a.message))


ARGS["images"] = (
    ("-a --all", "bool", "Show all images (default hides intermediate images)"),
    ("--format", "string", FORMAT_HELP),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only show image IDs"),
)


def cmd_images(opts, a):
    from .. import humanize
    from ..image import parse_rfc3339

    rows = open_engine(opts).images(all=a.all)
    if a.quiet:
        seen = []
        for r in rows:
            ident = r["ID"] if a.no_trunc else _short(r["ID"])
            if ident not in seen:
                seen.append(ident)
        print("\n".join(seen)) if seen else None
        return
    if a.format:
        json_lines(({"Containers": "N/A", "CreatedAt": r["CreatedAt"],
                    "CreatedSince": humanize.ago(parse_rfc3339(r["CreatedAt"])),
                    "Digest": "<none>", "ID": _short(r["ID"]), "Repository": r["Repository"],
                    "Size": humanize.size(r["Size"]), "SizeBytes": r["Size"], "Tag": r["Tag"]}
                   for r in rows), a.format)
        return
    print(humanize.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        [[r["Repository"], r["Tag"], r["ID"] if a.no_trunc else _short(r["ID"]),
          humanize.ago(parse_rfc3339(r["CreatedAt"])), humanize.size(r["Size"])] for r in rows]))


ARGS["history"] = (
    ("image", None, "IMAGE"),
    ("--format", "string", FORMAT_HELP),
    ("-H --human", "string", "Print sizes in human readable format ('false': in bytes)", "true"),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only show image IDs"),
)


def cmd_history(opts, a):
    from .. import humanize

    rows = open_engine(opts).history(a.image)
    if a.quiet:
        print("\n".join(r["ID"] if a.no_trunc or r["ID"] == "<missing>" else _short(r["ID"])
                        for r in rows))
        return
    if a.format:
        json_lines(({"Comment": r["Comment"], "CreatedAt": r["CreatedAt"],
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


ARGS["tag"] = (("source", None, "SOURCE_IMAGE[:TAG]"), ("target", None, "TARGET_IMAGE[:TAG]"))


def cmd_tag(opts, a):
    open_engine(opts).tag(a.source, a.target)


ARGS["rmi"] = (
    ("images", "+", "IMAGE [IMAGE...]"),
    ("-f --force", "bool", "Force removal of the image (of its tag; of an image containers use)"),
)


def cmd_rmi(opts, a):
    engine = open_engine(opts)
    each(a.images, lambda name: print("\n".join(engine.rmi([name], force=a.force))))


ARGS["commit"] = (
    ("container", None, "CONTAINER"),
    ("reference", "?", "[REPOSITORY[:TAG]]"),
    ("-a --author", "string", 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")', ""),
    ("-m --message", "string", "Commit message", ""),
)


def cmd_commit(opts, a):
    print(open_engine(opts).commit(a.container, a.reference, message=a.message, author=a.author))


# ---------------------------------------------------------------------------------- containers
ARGS["create"] = (
    ("--name", "string", "Assign a name to the container"),
    ("image", None, "IMAGE"),
    ("command", "...", "[COMMAND] [ARG...]"),
)


def cmd_create(opts, a):
    print(open_engine(opts).create(a.image, name=a.name, command=a.command or None))


ARGS["ps"] = (
    ("-a --all", "bool", "Show all containers (default shows just running)"),
    ("--format", "string", FORMAT_HELP),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only display container IDs"),
    ("-s --size", "bool", "Display total file sizes"),
)


def cmd_ps(opts, a):
    from .. import humanize

    rows = open_engine(opts).containers(all=a.all, size=a.size and not a.quiet)
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
        json_lines(out, a.format)
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


ARGS["mount"] = (("container", None, "CONTAINER"),)


def cmd_mount(opts, a):
    print(open_engine(opts).mount(a.container))


ARGS["umount"] = (("container", None, "CONTAINER"),)


def cmd_umount(opts, a):
    open_engine(opts).umount(a.container)


ARGS["rm"] = (
    ("containers", "+", "CONTAINER [CONTAINER...]"),
    ("-f --force", "bool", "Stop a running container; wait for a command using it (cp, commit...)"),
)


def cmd_rm(opts, a):
    engine = open_engine(opts)
    each(a.containers, lambda name: (engine.rm(name, force=a.force), print(name)))


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


# ---------------------------------------------------------------------------------- both
ARGS["inspect"] = (
    ("names", "+", "NAME|ID [NAME|ID...]"),
    ("-s --size", "bool", "Display total file sizes if the type is container"),
    ("--type", ("image", "container"), "Only look for this type of object"),
)


def cmd_inspect(opts, a):
    import json

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
    print(json.dumps(docs, indent=4))
    if missing:
        for name in missing:
            print(f"Error: No such object: {name}", file=sys.stderr)
        sys.exit(1)


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


ARGS["container prune"] = (("-f --force", "bool", "Do not prompt for confirmation"),)


def cmd_container_prune(opts, a):
    engine = open_engine(opts)
    if not _confirm(a.force, "  - all stopped containers"):
        return
    ids, size = engine.prune_containers()
    if ids:
        print("Deleted Containers:\n" + "\n".join(ids) + "\n")
    _reclaimed(size)


ARGS["image prune"] = (
    ("-a --all", "bool", "Remove all unused images, not just dangling ones"),
    ("-f --force", "bool", "Do not prompt for confirmation"),
)


def cmd_image_prune(opts, a):
    engine = open_engine(opts)
    what = "  - all images without at least one container associated to them" if a.all else \
        "  - all dangling images"
    if not _confirm(a.force, what):
        return
    lines, size = engine.prune_images(all=a.all)
    if lines:
        print("Deleted Images:\n" + "\n".join(lines) + "\n")
    _reclaimed(size)


ARGS["system prune"] = (
    ("-a --all", "bool", "Remove all unused images, not just dangling ones"),
    ("-f --force", "bool", "Do not prompt for confirmation"),
    ("--volumes", "bool", "Also remove the volumes no container uses"),
)


def cmd_system_prune(opts, a):
    engine = open_engine(opts)
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


ARGS["system check"] = (("--repair", "bool", "Repair what can be repaired"),)


def cmd_system_check(opts, a):
    findings = open_engine(opts).check(repair=a.repair)
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


ARGS["system df"] = (
    ("--format", "string", FORMAT_HELP),
    ("-v --verbose", "bool", "Show detailed information on space usage"),
)


def cmd_system_df(opts, a):
    from .. import humanize

    df = open_engine(opts).system_df()

    def reclaim(s):
        pct = f" ({s['Reclaimable'] * 100 // s['Size']}%)" if s["Size"] and s["Type"] != "Build Cache" else ""
        return humanize.size(s["Reclaimable"]) + pct

    if a.format:
        json_lines(({"Active": str(s["Active"]), "Reclaimable": reclaim(s),
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


ARGS["info"] = ()


def cmd_info(opts, a):
    import json

    engine = open_engine(opts)
    info = {"Root": engine.root, "Driver": engine.driver, **engine.counts()}
    print(json.dumps(info, indent=2))


ARGS["version"] = ()


def cmd_version(opts, a):
    from .. import __version__

    print(f"lamina {__version__}")


# ---------------------------------------------------------------------------------- the table
COMMON, MANAGEMENT, OTHER = "Common Commands", "Management Commands", "Commands"
SECTIONS = (COMMON, MANAGEMENT, OTHER)

# Every verb of ``lamina``, in the order ``lamina --help`` lists it: name -> (section, what it does,
# where). ``where`` is the module of lamina.cli that defines ``ARGS[name]`` and ``cmd_<name>``
# (None: this one), imported only when the verb runs; or, for a management group, its subcommands:
# name -> (what it does, module), defining ``ARGS["group name"]`` and ``cmd_group_name``, or the
# verb it is another name for ("images", "volume ls").
VERBS = {
    "run": (COMMON, "Create and run a new container from an image", "run"),
    "exec": (COMMON, "Execute a command in a running container", "run"),
    "ps": (COMMON, "List containers", None),
    "build": (COMMON, "Build an image from a Dockerfile", "build"),
    "pull": (COMMON, "Download an image from a registry", "transfer"),
    "push": (COMMON, "Upload an image to a registry", "transfer"),
    "images": (COMMON, "List images", None),
    "login": (COMMON, "Log in to a registry", "transfer"),
    "logout": (COMMON, "Log out from a registry", "transfer"),
    "version": (COMMON, "Show the lamina version", None),
    "info": (COMMON, "Display the store's directory, driver and counts", None),

    "container": (MANAGEMENT, "Manage containers", {
        "commit": "commit", "create": "create", "diff": "diff", "export": "export",
        "inspect": "inspect", "ls": "ps", "list": "ps", "ps": "ps", "mount": "mount",
        "prune": ("Remove all stopped containers", None), "rm": "rm", "umount": "umount"}),
    "image": (MANAGEMENT, "Manage images", {
        "history": "history", "import": "import", "inspect": "inspect", "ls": "images",
        "list": "images", "prune": ("Remove unused images", None), "rm": "rmi", "tag": "tag"}),
    "system": (MANAGEMENT, "Manage the store", {
        "check": ("Find inconsistencies in the store, and repair them", None),
        "df": ("Show disk usage", None), "info": "info",
        "prune": ("Remove unused data", None)}),
    "volume": (MANAGEMENT, "Manage volumes", {
        "create": ("Create a volume", "run"),
        "inspect": ("Display detailed information on one or more volumes", "run"),
        "ls": ("List volumes", "run"), "list": "volume ls",
        "prune": ("Remove unused volumes", "run"),
        "rm": ("Remove one or more volumes", "run"), "remove": "volume rm"}),

    "commit": (OTHER, "Create a new image from a container's changes", None),
    "cp": (OTHER, "Copy files/folders between a container and the local filesystem", "cp"),
    "create": (OTHER, "Create a new container", None),
    "diff": (OTHER, "Inspect changes to files or directories on a container's filesystem", None),
    "export": (OTHER, "Export a container's filesystem as a tar archive", None),
    "history": (OTHER, "Show the history of an image", None),
    "import": (OTHER, "Import the contents from a tarball to create a filesystem image", None),
    "inspect": (OTHER, "Return low-level information on images and containers", None),
    "kill": (OTHER, "Kill one or more running containers", "run"),
    "load": (OTHER, "Load an image from a tar archive or STDIN", "transfer"),
    "logs": (OTHER, "Fetch the logs of a container", "run"),
    "mount": (OTHER, "Mount a container's root filesystem and print its path", None),
    "rm": (OTHER, "Remove one or more containers", None),
    "rmi": (OTHER, "Remove one or more images", None),
    "save": (OTHER, "Save one or more images to a tar archive (streamed to STDOUT by default)",
             "transfer"),
    "start": (OTHER, "Start one or more stopped containers", "run"),
    "stop": (OTHER, "Stop one or more running containers", "run"),
    "tag": (OTHER, "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", None),
    "umount": (OTHER, "Unmount a container's root filesystem", None),
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


def _module(name: str | None):
    if name is None:
        return sys.modules[__name__]
    import importlib

    return importlib.import_module(f".{name}", __package__)


def _verb(invocation: str):
    """(parser, function) of a verb as invoked (``ps``, ``container ls``, ``volume create``),
    importing the verb's module if it lives elsewhere."""
    path = canonical(invocation)
    summary, name = _entry(path)
    module = _module(name)
    return (Parser(invocation, module.ARGS[path], summary, path),
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
    opts = _Namespace()
    opts.debug = bool(os.environ.get("LAMINA_DEBUG"))
    try:
        _run(opts, argv)
        exit_now(0)
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


def _run(opts, argv: list[str]) -> None:
    """Parse the global options, find the verb (importing its module) and run it."""
    top = Parser("", GLOBAL_ARGS)
    top.help = usage
    g = top.parse_args(argv)
    opts.root, opts.driver, opts.debug = g.root, g.driver, opts.debug or g.debug
    if g.version:
        return cmd_version(opts, g)
    if g.command is None:
        print(usage())
        return
    invocation, args = g.command, g.args
    if invocation not in VERBS:
        _fail(f"'{invocation}' is not a lamina command.\nSee 'lamina --help'.", 125)
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
        _fail(f"'{invocation}' is not a lamina command.\nSee 'lamina --help'.", 125)
    command(opts, parser.parse_args(args))


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    exit_now(code)


def exit_now(code: int) -> None:
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
