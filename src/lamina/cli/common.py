"""What every verb module of the CLI shares: the argument parser, the store's Engine, output
helpers, and the way out (no traceback, Docker's exit codes). Imports nothing heavy: every
command loads this module."""

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


class Namespace:
    """What a :class:`Parser` fills in."""


class Parser:
    """The small part of argparse that lamina's commands use, without argparse's start-up cost
    (it imports re, gettext and shutil and formats help on every run).

    ``arguments`` is a tuple of ``(names, kind, help[, default])`` tuples:

    * a flag: ``names`` are its spellings (``"-a --all"``); ``kind`` is ``"bool"`` (no value),
      ``"list"`` (a value, repeatable: the attribute is a list), a tuple of the values it accepts,
      or any other word (a value; the word names it in the help: ``"string"``, ``"int"``...);
      ``default`` is the value when the flag is not given (None; False for bool unless given,
      as ``--sig-proxy``'s True; [] for list).
    * a positional: ``names`` is its attribute; ``kind`` is None (exactly one), ``"?"`` (optional),
      ``"+"`` (one or more: a list), ``"*"`` (zero or more: a list) or ``"..."`` (everything that follows it, verbatim: a list);
      ``help`` is how the usage line shows it.

    Flags may come before, between and after positionals, as ``--flag value``, ``--flag=value``,
    ``-f value``, ``-f=value`` or grouped short booleans (``-as``); ``--`` ends them; a ``"..."``
    positional takes all that follows it verbatim (a container's command). ``-h``/``--help``
    prints :meth:`help` and exits 0 before anything else is done. The namespace's ``given`` is
    the set of flag attributes the command line set (a flag given with its default value counts).
    """

    def __init__(self, prog: str, arguments: tuple = (), summary: str = "",
                 path: str | None = None, aliases: tuple = ()):
        self.prog = prog  # as invoked: "ps", "container ls"
        self.path = prog if path is None else path  # the verb's name in the table: "ps"
        self.summary = summary
        self.aliases = aliases  # the verb's other names, for the help: ("container ls", ...)
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
                self.defaults[dest] = ([] if kind == "list" else
                                       argument[3] if len(argument) > 3 else
                                       False if boolean else None)
            else:
                self.positionals.append((names, kind))
                self.defaults[names] = [] if kind in ("+", "*", "...") else None

    def help(self) -> str:
        """``lamina VERB --help``: usage, what the verb does, its other names, its options."""
        usage = f"Usage:  lamina {self.prog}" + (" [OPTIONS]" if self.flags else "")
        usage += "".join(f" {a[2]}" for a in self.arguments if not a[0].startswith("-"))
        out = [usage]
        if self.summary:
            out += ["", self.summary]
        aliases = [f"lamina {name}" for name in self.aliases if name != self.prog]
        if aliases:
            out += ["", "Aliases:", "  " + ", ".join(aliases)]
        options = option_lines(self.arguments)
        if options:
            out += ["", "Options:", *options]
        return "\n".join(out)

    def _fail(self, message: str):
        raise UsageError(f"{message} (see 'lamina {self.prog + ' ' if self.prog else ''}--help')")

    def parse_args(self, args: list[str]) -> Namespace:
        ns = Namespace()
        ns.__dict__.update(self.defaults)
        ns.__dict__.update({k: list(v) for k, v in self.defaults.items() if isinstance(v, list)})
        ns.given = given = set()
        values: list[str] = []
        rest_at = next((i for i, (_, n) in enumerate(self.positionals) if n == "..."), None)
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if rest_at is not None and len(values) >= rest_at and (values or rest_at):
                values.append(arg)
            elif arg == "--":
                values.extend(args[i:])
                break
            elif arg == "--help" or (arg == "-h" and "-h" not in self.flags):  # run -h: hostname
                print(self.help())
                raise SystemExit(0)
            elif arg.startswith("--") or (arg[:1] == "-" and (len(arg) == 2 or arg[2:3] == "=")):
                name, eq, value = arg.partition("=")
                if name not in self.flags:
                    self._fail(f"unknown flag: {name}")
                dest, boolean, choices = self.flags[name]
                given.add(dest)
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
                    given.add(spec[0])
            else:
                values.append(arg)
        for name, nargs in self.positionals:
            if nargs == "...":
                setattr(ns, name, values)
                values = []
            elif nargs in ("+", "*"):
                if not values and nargs == "+":
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
    from .. import cjson

    if template in ("json", "{{json .}}"):
        for row in rows:
            print(cjson.dumps(row, separators=(",", ":")))
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
            return cjson.dumps(value) if m.group(1) or isinstance(value, (dict, list)) else str(value)

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


def inspect_each(names: list[str], lookup, template: str | None = None) -> None:
    """Docker's ``inspect`` of volumes, networks...: the documents ``lookup(name)`` gives as one
    indented JSON array (or each through ``template``: :func:`print_documents`), an ``Error:``
    line for each name that fails, and exit 1 if any did."""
    docs, failed = [], False
    for name in names:
        try:
            docs.append(lookup(name))
        except LaminaError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = True
    print_documents(docs, template)
    if failed:
        exit_now(1)


def print_documents(docs: list, template: str | None) -> None:
    """``inspect``'s output: an indented JSON array, or with ``--format`` each document through
    a Go-template subset, one line each: ``{{.A.B}}``, ``{{json .A}}``, ``{{index .A "key"}}``,
    ``{{.A}}`` of a map or list in Go's own print form (``map[k:v]``, ``[a b]``), plain text
    between them, ``\\t``/``\\n`` escapes."""
    from .. import cjson

    if not template:
        print(cjson.dumps(docs, indent=4))
        return
    for doc in docs:
        print(go_template(template, doc))


_ACTION = None


def go_template(template: str, doc) -> str:
    """One document through the subset of Go templates :func:`print_documents` names."""
    import re

    from .. import cjson

    global _ACTION
    if _ACTION is None:
        _ACTION = re.compile(r'\{\{-?\s*(json\s+|index\s+)?(\.[A-Za-z0-9_.]*)((?:\s+"[^"]*")*)'
                             r'\s*-?\}\}')

    def lookup(path: str):
        value = doc
        for key in [k for k in path.split(".") if k]:
            if not isinstance(value, dict) or key not in value:
                if isinstance(value, dict) or value is None:
                    return None  # Go: a missing map key is the zero value, <no value>/<nil>
                raise UsageError(f'template: executing "" at <{path}>: can\'t evaluate field '
                                 f"{key} in type {type(value).__name__}")
            value = value[key]
        return value

    def action(m):
        verb, path, keys = (m.group(1) or "").strip(), m.group(2), m.group(3)
        value = lookup(path)
        if verb == "index":
            for key in re.findall(r'"([^"]*)"', keys):
                value = value.get(key) if isinstance(value, dict) else None
        if verb == "json":
            return cjson.dumps(value, separators=(",", ":"))
        return _go_print(value)

    text = template.replace("\\t", "\t").replace("\\n", "\n")
    out = _ACTION.sub(action, text)
    if "{{" in out:
        raise UsageError(f"template: {template!r}: lamina reads {{{{.Field.Sub}}}}, "
                         "{{json .Field}} and {{index .Field \"key\"}} only")
    return out


def _go_print(value) -> str:
    """A value as Go's fmt prints it in a template (``%v``)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    return str(value)


def short_id(image_id: str) -> str:
    """The 12 hex digits Docker shows of an ID."""
    return image_id.split(":", 1)[-1][:12]


def confirm(force: bool, warning: str) -> bool:
    """Docker's prompt before a prune; ``-f`` skips it. An empty or closed stdin means no."""
    if force:
        return True
    print(f"WARNING! This will remove:\n{warning}\nAre you sure you want to continue? [y/N] ",
          end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def reclaimed(size: int) -> None:
    from .. import humanize

    print(f"Total reclaimed space: {humanize.size(size)}")


# A user's error is one line on stderr, whatever it quotes (a name given with a newline in it
# is named with the newline escaped, as Python's repr would show it).
_ONE_LINE = {i: f"\\x{i:02x}" for i in range(32) if i != 9} | {10: "\\n", 13: "\\r"}


def one_line(text: str) -> str:
    """``text`` with its control characters (but tabs) escaped."""
    return text.translate(_ONE_LINE)


def fail(message: str, code: int) -> None:
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
