"""Dockerfile parsing, faithful to BuildKit's parser, and validation of the parsed instructions.

:func:`parse` turns the text into :class:`Instruction` values, one per instruction, exactly as
BuildKit's parser splits them (:func:`dump_ast` prints BuildKit's AST format to prove it):

1. Parser directives (``# escape=``, ``# syntax=``, ``# check=``) are read only from the leading
   comment lines; the first line that is not a known directive ends them.
2. Lines are joined on the escape character (``\\`` or the ``escape`` directive's backtick) at
   the end of a line; comment lines and empty lines inside a continuation are skipped.
3. The first word is the instruction; leading ``--name=value`` words are its flags.
4. The arguments are split by the instruction's own rule: JSON exec form (falling back to the
   shell form when the text is not a JSON array), whitespace-separated words, ``key=value``
   pairs, or the rest of the line as one string.
5. RUN, COPY and ADD (also under ONBUILD) in shell form may name heredocs (``<<EOF``, ``<<-EOF``,
   ``<<"EOF"``); their bodies follow the instruction's line.

Nothing is expanded here: variables are substituted by :mod:`lamina.builder.plan`, which knows the
build arguments and the stages. :func:`check_instruction` (and :func:`lamina.builder.plan.check`,
which also plans) adds the checks BuildKit makes when it turns the
AST into instructions (unknown instructions, argument counts, flags, HEALTHCHECK options).
"""

from __future__ import annotations

import json as _json
import re
from dataclasses import dataclass, field

from lamina import humanize
from lamina.errors import InvalidArgument

__all__ = [
    "Dockerfile",
    "DockerfileError",
    "Heredoc",
    "Instruction",
    "check_instruction",
    "dump_ast",
    "parse",
    "parse_flags",
]


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be parsed or built; the message names the line."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.reason = message
        first = message.splitlines()[0] if message else "invalid Dockerfile"
        super().__init__(f"Dockerfile:{line}: {first}")


@dataclass(frozen=True)
class Heredoc:
    """A here-document: *content* is the body as written (``chomp``: strip leading tabs later,
    ``expand``: the delimiter was unquoted, so variables in the body are to be expanded)."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


@dataclass(frozen=True)
class Instruction:
    """One instruction as BuildKit's parser sees it.

    ``args`` are the AST values: for ENV and LABEL triples ``key, value, "="|""`` (the second
    form is the legacy ``ENV key value``), for ONBUILD the trigger's text (parsed in ``sub``).
    ``original`` is the joined source line (followed by any heredoc bodies).
    """

    cmd: str
    original: str
    flags: list[str]
    args: list[str]
    json: bool
    heredocs: list[Heredoc]
    start_line: int
    end_line: int
    sub: Instruction | None = None


@dataclass(frozen=True)
class Dockerfile:
    directives: dict[str, str]
    instructions: list[Instruction]
    escape: str = "\\"
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Lines and directives

_DIRECTIVE = re.compile(r"#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*")
_KNOWN_DIRECTIVES = ("escape", "syntax", "check")
_SPLIT_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_WORD = re.compile(r"(\d*)<<(-?)([^<]*)", re.DOTALL)


class _Directives:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.done = False
        self.escape = "\\"
        self.continuation = _continuation_regex("\\")

    def consider(self, token: str, line: int) -> None:
        if self.done:
            return
        match = _DIRECTIVE.fullmatch(token)
        if match is None or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            self.done = True
            return
        key, value = match.group(1).lower(), match.group(2)
        if key in self.values:
            raise DockerfileError(line, f"only one {key} parser directive can be used")
        if key == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(
                    line, f"invalid escape token '{value}' does not match ` or \\"
                )
            self.escape = value
            self.continuation = _continuation_regex(value)
        self.values[key] = value


def _continuation_regex(escape: str) -> re.Pattern[str]:
    # The escape character at the end of a line continues it, unless it is itself escaped.
    e = re.escape(escape)
    return re.compile(rf"(?:^|(?<=[^{e}])){e}[ \t]*$")


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _trim_newline(line).lstrip().startswith("#")


def _trim_continuation(line: str, directives: _Directives) -> tuple[str, bool]:
    match = directives.continuation.search(line)
    if match is None:
        return line, True
    return line[: match.start()], False


# --------------------------------------------------------------------------------------------
# Argument rules (one per instruction)


class _StringArrayError(Exception):
    pass


def _reject_constant(_name: str) -> None:
    raise ValueError("not JSON")  # Go's decoder has no NaN/Infinity


def _parse_json(rest: str) -> list[str]:
    rest = rest.lstrip()
    if not rest.startswith("["):
        raise ValueError("not a JSON array")
    # Like Go's json.Decoder, only the first value counts: text after the array is ignored.
    value, _end = _json.JSONDecoder(parse_constant=_reject_constant).raw_decode(rest)
    if not isinstance(value, list):
        raise ValueError("not a JSON array")  # noqa: TRY004 (means: fall back to shell form)
    if not all(isinstance(item, str) for item in value):
        raise _StringArrayError()
    return value


def _maybe_json(rest: str, whitespace_list: bool) -> tuple[list[str], bool]:
    """Exec form when *rest* is a JSON array of strings, else the shell form."""
    if not rest and not whitespace_list:
        return [], False
    try:
        return _parse_json(rest), True
    except _StringArrayError:
        raise
    except ValueError:
        pass
    if whitespace_list:
        return _whitespace_words(rest), False
    return [rest], False


def _whitespace_words(rest: str) -> list[str]:
    return _SPLIT_WHITESPACE.split(rest) if rest else []


def _quoted_words(text: str, escape: str) -> list[str]:
    """Words separated by whitespace, keeping quotes and escapes in them."""
    words: list[str] = []
    word = ""
    blank_ok = False
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if not quote:
            if ch.isspace():
                if blank_ok or word:
                    words.append(word)
                word, blank_ok, in_word = "", False, False
                i += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
            elif ch == escape:
                if i + 1 == len(text):
                    i += 1
                    continue
                word += ch
                i += 1
                ch = text[i]
            word += ch
            i += 1
            continue
        # inside quotes
        if ch == quote:
            quote = ""
        elif ch == escape and quote != "'":
            if i + 1 == len(text):
                quote = ""
                i += 1
                continue
            word += ch
            i += 1
            ch = text[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _name_values(rest: str, key: str, escape: str) -> list[str]:
    words = _quoted_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _SPLIT_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(
                f"Syntax error - can't find = in {_go_quote(word)}. "
                "Must be of the form: name=value"
            )
        name, _, value = word.partition("=")
        out += [name, value, "="]
    return out


def _health(rest: str) -> tuple[list[str], bool]:
    sep = 0
    while sep < len(rest) and not rest[sep].isspace():
        sep += 1
    if sep == 0:
        return [], False
    following = sep
    while following < len(rest) and rest[following].isspace():
        following += 1
    command, is_json = _maybe_json(rest[following:], whitespace_list=False)
    return [rest[:sep], *command], is_json


def _extract_flags(line: str) -> tuple[list[str], str]:
    """Leading ``--flag`` words (quotes and backslashes processed) and the rest of the line."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    in_word = False
    i = 0
    n = len(line)
    while i <= n:
        ch = line[i] if i < n else ""
        if not in_word:
            if i == n:
                break
            if ch.isspace():
                i += 1
                continue
            if ch != "-" or i + 1 == n or line[i + 1] != "-":
                return words, line[i:]
            in_word = True
        if i == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if not quote:
            if ch.isspace():
                if word == "--":
                    return words, line[i:]
                if blank_ok or word:
                    words.append(word)
                word, blank_ok, in_word = "", False, False
                i += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok = ch, True
                i += 1
                continue
            if ch == "\\":
                if i + 1 == n:
                    i += 1
                    continue
                i += 1
                ch = line[i]
            word += ch
            i += 1
            continue
        if ch == quote:
            quote = ""
            i += 1
            continue
        if ch == "\\":
            if i + 1 == n:
                quote = ""
                i += 1
                continue
            i += 1
            ch = line[i]
        word += ch
        i += 1
    return words, ""


_LIST_FORM = {"add", "copy", "volume"}
_SHELL_OR_JSON = {"cmd", "entrypoint", "run", "shell"}
_ONE_STRING = {"maintainer", "stopsignal", "user", "workdir"}
_WHITESPACE = {"expose", "from"}
KNOWN_INSTRUCTIONS = frozenset(
    {"add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
     "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir"}
)


def _node_from_line(line: str, escape: str, start: int, end: int) -> Instruction:
    parts = _SPLIT_WHITESPACE.split(line.strip(), maxsplit=1)
    cmd = parts[0].lower()
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        flags, rest = _extract_flags(parts[1])
    rest = rest.strip()
    is_json = False
    sub = None
    try:
        if cmd in _LIST_FORM:
            args, is_json = _maybe_json(rest, whitespace_list=True)
        elif cmd in _SHELL_OR_JSON:
            args, is_json = _maybe_json(rest, whitespace_list=False)
        elif cmd in _ONE_STRING:
            args = [rest] if rest else []
        elif cmd in _WHITESPACE:
            args = _whitespace_words(rest)
        elif cmd in ("env", "label"):
            args = _name_values(rest, cmd.upper(), escape)
        elif cmd == "arg":
            args = _quoted_words(rest, escape)
        elif cmd == "healthcheck":
            args, is_json = _health(rest)
        elif cmd == "onbuild":
            args = [rest] if rest else []
            sub = _node_from_line(rest, escape, start, end) if rest else None
        else:
            args = []
    except _StringArrayError:
        raise DockerfileError(
            start, "when using JSON array syntax, arrays must be comprised of strings only"
        ) from None
    except ValueError as error:
        raise DockerfileError(start, str(error)) from None
    return Instruction(cmd, line, flags, args, is_json, [], start, end, sub)


# --------------------------------------------------------------------------------------------
# Heredocs


def _heredoc_target(node: Instruction) -> Instruction | None:
    target = node.sub if node.cmd == "onbuild" and node.sub is not None else node
    if target.cmd in ("add", "copy", "run") and not target.json:
        return target
    return None


def _parse_heredoc_word(word: str) -> Heredoc | None:
    from lamina.builder.shellwords import Lexer

    match = _HEREDOC_WORD.fullmatch(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    words = Lexer({}, skip_unset=True).run(rest)[1]
    if len(words) != 1:
        return None
    raw_words = Lexer({}, skip_unset=True, raw_quotes=True).run(rest)[1]
    name, raw = words[0], raw_words[0]
    expand = name.count("'") + name.count('"') == raw.count("'") + raw.count('"')
    return Heredoc(
        name=name,
        content="",
        expand=expand,
        chomp=match.group(2) == "-",
        file_descriptor=int(match.group(1) or 0),
    )


def _heredocs_in_line(line: str) -> list[Heredoc]:
    from lamina.builder.shellwords import Lexer, ShellWordError

    try:
        words = Lexer({}, skip_unset=True, raw_quotes=True, raw_escapes=True).run(line)[1]
    except ShellWordError:
        return []
    docs = []
    for word in words:
        try:
            heredoc = _parse_heredoc_word(word)
        except ShellWordError:
            heredoc = None
        if heredoc is not None:
            docs.append(heredoc)
    return docs


# --------------------------------------------------------------------------------------------
# The parser


def parse(text: str | bytes) -> Dockerfile:
    """Parse a Dockerfile into instructions; raises :class:`DockerfileError` naming the line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    directives = _Directives()
    instructions: list[Instruction] = []
    warnings: list[str] = []
    current = 0
    total = len(lines)

    def process(raw: str, strip_left: bool, number: int) -> str:
        token = _trim_newline(raw)
        if strip_left:
            token = token.lstrip()
        directives.consider(token, number)
        return "" if token.startswith("#") else token

    while current < total:
        token = process(lines[current], True, current + 1)
        current += 1
        start = current
        line, end_of_line = _trim_continuation(token, directives)
        if end_of_line and line == "":
            continue
        empty_continuation = False
        while not end_of_line and current < total:
            raw = lines[current]
            token = process(raw, False, current + 1)
            current += 1
            if _is_comment(raw):
                continue
            if not token.strip():
                empty_continuation = True
                continue
            continued, end_of_line = _trim_continuation(token, directives)
            line += continued
        if empty_continuation:
            warnings.append(f"Dockerfile:{start}: empty continuation line")
        node = _node_from_line(line, directives.escape, start, current)
        target = _heredoc_target(node)
        heredocs: list[Heredoc] = []
        original = line
        if target is not None:
            for heredoc in _heredocs_in_line(line):
                body: list[str] = []
                terminated = False
                while current < total:
                    raw = lines[current]
                    current += 1
                    candidate = _trim_newline(raw)
                    if heredoc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == heredoc.name:
                        terminated = True
                        break
                    body.append(raw + "\n")
                if not terminated:
                    raise DockerfileError(start, "unterminated heredoc")
                heredocs.append(
                    Heredoc(heredoc.name, "".join(body), heredoc.expand, heredoc.chomp,
                            heredoc.file_descriptor)
                )
        if heredocs and target is node:
            original = line + "\n" + "".join(h.content + h.name + "\n" for h in heredocs)
            node = _replace(node, original=original, heredocs=heredocs, end_line=current)
        elif heredocs:
            sub = _replace(node.sub, heredocs=heredocs, end_line=current)
            node = _replace(node, sub=sub, end_line=current)
        else:
            node = _replace(node, end_line=current)
        instructions.append(node)
    if not instructions:
        raise DockerfileError(max(current, 1), "file with no instructions")
    return Dockerfile(dict(directives.values), instructions, directives.escape, warnings)


def _replace(node: Instruction, **changes) -> Instruction:
    from dataclasses import replace

    return replace(node, **changes)


# --------------------------------------------------------------------------------------------
# BuildKit's AST dump


def _go_quote(text: str) -> str:
    """``strconv.Quote``: Go's double-quoted string literal."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v"}


def _dump_node(node: Instruction) -> str:
    text = node.cmd
    if node.flags:
        text += " [" + " ".join(_go_quote(flag) for flag in node.flags) + "]"
    if node.cmd == "onbuild":
        if node.sub is not None:
            text += " (" + _dump_node(node.sub) + ")"
    else:
        for arg in node.args:
            text += " " + _go_quote(arg)
    return text.strip()


def dump_ast(df: Dockerfile) -> str:
    """The AST in BuildKit's test format: one s-expression per instruction."""
    return "".join(f"({_dump_node(node)})\n" for node in df.instructions)


# --------------------------------------------------------------------------------------------
# Flags and validation

_STRING, _BOOL, _LIST = "string", "bool", "list"
FLAG_SPECS: dict[str, dict[str, str]] = {
    "from": {"platform": _STRING},
    "run": {"mount": _LIST, "network": _STRING, "security": _STRING},
    "copy": {"from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL,
             "parents": _BOOL, "exclude": _LIST},
    "add": {"chown": _STRING, "chmod": _STRING, "link": _BOOL, "keep-git-dir": _BOOL,
            "checksum": _STRING, "exclude": _LIST, "unpack": _BOOL},
    "healthcheck": {"interval": _STRING, "timeout": _STRING, "start-period": _STRING,
                    "start-interval": _STRING, "retries": _STRING},
}


def parse_flags(node: Instruction) -> dict[str, str | list[str]]:
    """The instruction's flags by name, checked against what the instruction accepts.

    Boolean flags are ``"true"``/``"false"``; repeatable flags (``--mount``, ``--exclude``) are
    lists in order.
    """
    spec = FLAG_SPECS.get(node.cmd, {})
    values: dict[str, str | list[str]] = {}
    for flag in node.flags:
        if not flag.startswith("--"):
            raise DockerfileError(node.start_line, f"Arg {_go_quote(flag)} must start with '--'")
        name, has_value, value = flag[2:].partition("=")
        kind = spec.get(name)
        if kind is None:
            raise DockerfileError(node.start_line, f"Unknown flag: {name}")
        if kind == _LIST:
            if not has_value:
                raise DockerfileError(node.start_line, f"Missing a value on flag: {name}")
            values.setdefault(name, [])
            values[name].append(value)  # type: ignore[union-attr]
            continue
        if name in values:
            raise DockerfileError(node.start_line, f"Duplicate flag specified: {name}")
        if kind == _BOOL:
            if has_value and value.lower() not in ("true", "false", ""):
                raise DockerfileError(
                    node.start_line, f"expecting boolean value for flag {name}, not: {value}"
                )
            values[name] = "false" if value.lower() == "false" else "true"
        else:
            if not has_value:
                raise DockerfileError(node.start_line, f"Missing a value on flag: {name}")
            values[name] = value
    return values


# Octal modes, or symbolic ones (u+x,g-w) as BuildKit's --chmod also accepts.
_CHMOD = re.compile(r"[0-7]{3,4}|[ugoa]*[-+=][rwxXst]*(?:,[ugoa]*[-+=][rwxXst]*)*")
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
parse_duration = humanize.parse_duration  # a Go duration in seconds (also for api/)


def _check_healthcheck(node: Instruction, flags: dict) -> None:
    line = node.start_line
    if not node.args:
        raise DockerfileError(line, "HEALTHCHECK requires at least one argument")
    kind = node.args[0].upper()
    if kind == "NONE":
        if len(node.args) > 1:
            raise DockerfileError(line, "HEALTHCHECK NONE takes no arguments")
        return
    if kind != "CMD":
        raise DockerfileError(line, f"Unknown type {_go_quote(node.args[0])} in HEALTHCHECK "
                                    "(try CMD)")
    if len(node.args) < 2 or (not node.json and not node.args[1].strip()):
        raise DockerfileError(line, "Missing command after HEALTHCHECK CMD")
    labels = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
              "start-interval": "StartInterval"}
    for name, label in labels.items():
        if name not in flags:
            continue
        try:
            seconds = parse_duration(flags[name])
        except ValueError as error:
            raise DockerfileError(line, str(error)) from None
        if seconds != 0 and seconds < 0.001:
            raise DockerfileError(line, f"{label} {_go_quote(flags[name])} cannot be less "
                                        "than 1ms")
    if "retries" in flags:
        try:
            retries = int(flags["retries"])
        except ValueError:
            raise DockerfileError(
                line, f"invalid --retries value {_go_quote(flags['retries'])}"
            ) from None
        if retries < 0:
            raise DockerfileError(line, f"--retries cannot be negative ({retries})")


def check_instruction(node: Instruction, in_onbuild: bool = False) -> None:
    line = node.start_line
    cmd = node.cmd
    name = cmd.upper()
    if cmd not in KNOWN_INSTRUCTIONS:
        raise DockerfileError(line, f"unknown instruction: {name or '(blank)'}")
    flags = parse_flags(node)
    args = node.args
    if cmd == "from":
        if len(args) not in (1, 3):
            raise DockerfileError(line, "FROM requires either one or three arguments")
        if len(args) == 3:
            if args[1].lower() != "as":
                raise DockerfileError(
                    line, 'When using FROM with 3 arguments, the second argument must be "AS"'
                )
            if not _STAGE_NAME.fullmatch(args[2].lower()):
                raise DockerfileError(
                    line, f"invalid name for build stage: {_go_quote(args[2])}, name can't "
                          "start with a number or contain symbols"
                )
    elif cmd in ("env", "label", "arg", "expose", "volume", "shell"):
        if not args:
            raise DockerfileError(line, f"{name} requires at least one argument")
        if cmd in ("env", "label") and any(not key for key in args[0::3]):
            raise DockerfileError(line, f"{name} names can not be blank")
        if cmd == "arg" and any(not word.partition("=")[0] for word in args):
            raise DockerfileError(line, "ARG names can not be blank")
        if cmd == "volume" and any(not path.strip() for path in args):
            raise DockerfileError(line, "VOLUME specified can not be an empty string")
        if cmd == "shell" and not node.json:
            raise DockerfileError(line, "SHELL requires the arguments to be in JSON form")
    elif cmd in ("add", "copy"):
        if len(args) < 2:
            raise DockerfileError(line, f"{name} requires at least two arguments, but only one "
                                        "was provided. Destination could not be determined")
        chmod = flags.get("chmod")
        if isinstance(chmod, str) and chmod and not _CHMOD.fullmatch(chmod):
            raise DockerfileError(line, f"invalid chmod parameter {chmod!s}")
    elif cmd in _ONE_STRING:
        if len(args) != 1:
            raise DockerfileError(line, f"{name} requires exactly one argument")
    elif cmd == "run":
        network = flags.get("network")
        if network is not None and network not in ("default", "none", "host"):
            raise DockerfileError(line, f"unsupported network mode: {network}")
    elif cmd == "healthcheck":
        _check_healthcheck(node, flags)
    elif cmd == "onbuild":
        if node.sub is None:
            raise DockerfileError(line, "ONBUILD requires at least one argument")
        trigger = node.sub.cmd
        if trigger == "onbuild":
            raise DockerfileError(line, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("from", "maintainer"):
            raise DockerfileError(line, f"{trigger.upper()} isn't allowed as an ONBUILD trigger")
        check_instruction(node.sub, in_onbuild=True)
