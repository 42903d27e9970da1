"""Variable expansion and word splitting by the rules of a Dockerfile (BuildKit's shell lexer).

A Dockerfile is not a shell script: only a small, fixed part of POSIX word expansion applies.

- ``$NAME`` and ``${NAME}``; a name is letters, digits and ``_``; ``$1``.. (all digits are read),
  and the special parameters ``@ * # ? - $ ! 0`` are names that are never set.
- ``${NAME:-word}`` ``${NAME-word}`` (default), ``${NAME:+word}`` ``${NAME+word}`` (alternative),
  ``${NAME:?msg}`` ``${NAME?msg}`` (error if empty/unset), ``${NAME#glob}`` ``${NAME##glob}``,
  ``${NAME%glob}`` ``${NAME%%glob}`` (prefix/suffix removal), ``${NAME/glob/repl}`` and
  ``${NAME//glob/repl}`` (replacement). The word part is itself expanded.
- Single quotes keep everything literally; double quotes allow ``$`` and escape only ``"``, ``$``
  and the escape character; outside quotes the escape character makes the next one literal.
  A lone escape character at the end of the input is dropped.

:func:`expand` returns one string (BuildKit's ``ProcessWord``); :func:`expand_words` also splits
unquoted whitespace, including whitespace that came out of an unquoted variable (``ProcessWords``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lamina.errors import InvalidArgument

__all__ = ["Lexer", "ShellWordError", "expand", "expand_words"]

_SPECIAL_PARAMETERS = frozenset("@*#?-$!0")
_EOF = ""


class ShellWordError(InvalidArgument):
    """A word cannot be expanded: unbalanced quotes or braces, bad substitution, ``${X?}``."""


class _Words:
    """Collects the result of :class:`Lexer` as whitespace-separated words."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class Lexer:
    """One expansion pass over *word*; the options mirror the variants BuildKit uses internally.

    ``skip_unset`` leaves references to unset variables as written, ``raw_quotes`` and
    ``raw_escapes`` keep quote and escape characters in the output, ``process_quotes=False`` treats
    quotes as ordinary characters (used for heredoc bodies).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        escape: str = "\\",
        *,
        skip_unset: bool = False,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        process_quotes: bool = True,
    ) -> None:
        self.env = env
        self.escape = escape
        self.skip_unset = skip_unset
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.process_quotes = process_quotes
        self._text = ""
        self._pos = 0

    # -- scanner ---------------------------------------------------------------------------
    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else _EOF

    def _next(self) -> str:
        if self._pos >= len(self._text):
            return _EOF
        ch = self._text[self._pos]
        self._pos += 1
        return ch

    # -- entry point -----------------------------------------------------------------------
    def run(self, word: str) -> tuple[str, list[str]]:
        self._text = word
        self._pos = 0
        try:
            return self._until(_EOF)
        except ShellWordError as error:
            raise ShellWordError(f"failed to process {word!r}: {error}") from None

    def _until(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self._peek() != _EOF:
            ch = self._peek()
            if stop and ch == stop:
                self._next()
                return "".join(result), words.result()
            if ch == "$":
                text = self._dollar()
                result.append(text)
                words.add_string(text)
            elif self.process_quotes and ch == "'":
                text = self._single_quoted()
                result.append(text)
                words.add_raw_string(text)
            elif self.process_quotes and ch == '"':
                text = self._double_quoted()
                result.append(text)
                words.add_raw_string(text)
            else:
                ch = self._next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self._next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ShellWordError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def _single_quoted(self) -> str:
        quote = self._next()
        out = [quote] if self.raw_quotes else []
        while True:
            ch = self._next()
            if ch == _EOF:
                raise ShellWordError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quoted(self) -> str:
        quote = self._next()
        out = [quote] if self.raw_quotes else []
        while True:
            ch = self._peek()
            if ch == _EOF:
                raise ShellWordError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self._next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self._next()
            if ch == self.escape:
                following = self._peek()
                if following == _EOF:
                    continue  # an escape right before the end is dropped (then: error, no quote)
                if following in ('"', "$", self.escape):
                    if self.raw_escapes:
                        out.append(ch)
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        first = self._peek()
        if first == _EOF:
            return ""
        if first.isdigit():
            name = []
            while self._peek() != _EOF and self._peek().isdigit():
                name.append(self._next())
            return "".join(name)
        if first in _SPECIAL_PARAMETERS:
            return self._next()
        name = []
        while self._peek() != _EOF and (self._peek().isalnum() or self._peek() == "_"):
            name.append(self._next())
        return "".join(name)

    def _lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def _dollar(self) -> str:
        self._next()  # the "$"
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value = self._lookup(name)
            if value is None:
                return "$" + name if self.skip_unset else ""
            return value
        self._next()  # the "{"
        ch = self._peek()
        if ch == _EOF:
            raise ShellWordError("syntax error: missing '}'")
        if ch in "{}:":
            raise ShellWordError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        value = self._lookup(name)
        if ch == "}":
            if value is None and self.skip_unset:
                return "${" + name + "}"
            return value or ""
        if ch == _EOF:
            raise ShellWordError("syntax error: missing '}'")
        if ch == ":":
            modifier = self._next()
            if modifier not in ("-", "+", "?"):
                raise ShellWordError(f"unsupported modifier ({modifier}) in substitution")
            word = self._word_in_braces()
            if value is None and self.skip_unset:
                return "${" + name + ":" + modifier + word + "}"
            if modifier == "-":
                return value if value else word
            if modifier == "+":
                return word if value else ""
            if value is None:
                raise ShellWordError(f"{name}: {word or 'is not allowed to be unset'}")
            if value == "":
                raise ShellWordError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in "-+?":
            word = self._word_in_braces()
            if value is None and self.skip_unset:
                return "${" + name + ch + word + "}"
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return "" if value is None else word
            if value is None:
                raise ShellWordError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in "#%":
            longest = self._peek() == ch
            if longest:
                self._next()
            pattern = self._word_in_braces()
            if value is None and self.skip_unset:
                return "${" + name + ch * (2 if longest else 1) + pattern + "}"
            return _trim(value or "", pattern, prefix=ch == "#", longest=longest)
        if ch == "/":
            every = self._peek() == "/"
            if every:
                self._next()
            has_replacement = _ends_with_slash(self._text, self._pos, self.escape)
            pattern = self._word_in_braces("/" if has_replacement else "}")
            replacement = self._word_in_braces() if has_replacement else ""
            if value is None and self.skip_unset:
                return "${" + name + ("//" if every else "/") + pattern + "/" + replacement + "}"
            return _replace(value or "", pattern, replacement, every=every)
        raise ShellWordError(f"unsupported modifier ({ch}) in substitution")

    def _word_in_braces(self, stop: str = "}") -> str:
        try:
            word, _ = self._until(stop)
        except ShellWordError:
            if self._peek() == _EOF:
                raise ShellWordError("syntax error: missing '}'") from None
            raise
        return word


def _ends_with_slash(text: str, start: int, escape: str) -> bool:
    """Whether the ``${V/pattern`` starting at *start* is ended by ``/`` rather than ``}``."""
    depth = 0
    pos = start
    while pos < len(text):
        ch = text[pos]
        if ch == escape:
            pos += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return False
            depth -= 1
        elif ch == "/" and depth == 0:
            return True
        pos += 1
    return False


def _glob_regex(pattern: str) -> str:
    """A shell glob (``*``, ``?``, ``[...]``, ``\\x``) as a regular expression fragment."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    regex = re.compile(_glob_regex(pattern), re.DOTALL)
    cuts = range(len(value), -1, -1) if longest else range(len(value) + 1)
    for cut in cuts:
        if prefix and regex.fullmatch(value, 0, cut):
            return value[cut:]
        if not prefix and regex.fullmatch(value, len(value) - cut):
            return value[: len(value) - cut]
    return value


def _replace(value: str, pattern: str, replacement: str, *, every: bool) -> str:
    if not pattern:
        return value
    # Greedy ".*" gives the longest match at each position, as the shell does.
    regex = re.compile(_glob_regex(pattern), re.DOTALL)
    return regex.sub(lambda _m: replacement, value, count=0 if every else 1)


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand variables in *word* and remove its quotes and escapes, without splitting."""
    return Lexer(env, escape).run(word)[0]


def expand_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Expand *word* like :func:`expand`, then split it where unquoted whitespace is."""
    return Lexer(env, escape).run(word)[1]
