""".dockerignore: which paths of a build context are left out, by Docker's matching rules.

These are not gitignore's rules. A pattern is matched against the whole path relative to the
context root, so ``*.pyc`` matches ``a.pyc`` but not ``sub/a.pyc`` (write ``**/*.pyc`` for that).

- ``*`` is any run of characters but ``/``, ``?`` one character but ``/``, ``[a-z]`` a class,
  ``\\`` escapes; ``**`` matches any number of directories, including none.
- Patterns are cleaned like paths: a leading ``/`` or ``./`` and ``..`` are resolved away.
- A pattern that matches a directory excludes everything below it.
- ``!pattern`` re-includes what it matches; the last matching pattern wins.
- Lines starting with ``#`` are comments; blank lines are ignored.
"""

from __future__ import annotations

import posixpath
import re

from lamina.errors import InvalidArgument

__all__ = ["Matcher", "read_patterns"]

_REGEX_SPECIAL = frozenset(".+()|{}$^")


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):  # POSIX keeps a leading "//"; Go's Clean does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned, exceptions keeping their ``!``."""
    patterns = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _translate(pattern: str) -> str:
    """A cleaned pattern as an anchored regular expression."""
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i == n else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch == "[":
            out.append("[^" if i < n and pattern[i] in "!^" else "[")
            if i < n and pattern[i] in "!^":
                i += 1
        else:
            out.append(ch)
    out.append("$")
    return "".join(out)


class _Pattern:
    def __init__(self, text: str) -> None:
        self.exclusion = text.startswith("!")
        self.text = text[1:] if self.exclusion else text
        try:
            self.regex = re.compile(_translate(self.text), re.DOTALL)
        except re.error as error:
            raise InvalidArgument(f"invalid .dockerignore pattern {text!r}: {error}") from None
        self.segments = [_Pattern._segment(part) for part in self.text.split("/")]

    @staticmethod
    def _segment(part: str) -> re.Pattern[str] | None:
        """One path component's matcher, None for a component containing ``**``."""
        if "**" in part:
            return None
        try:
            return re.compile(_translate(part), re.DOTALL)
        except re.error:
            return None

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None

    def may_match_below(self, directory: list[str]) -> bool:
        """Whether some path inside *directory* (its components) could match this pattern."""
        for index, component in enumerate(directory):
            if index >= len(self.segments):
                return True  # the pattern stops at an ancestor: order decides, stay safe
            segment = self.segments[index]
            if segment is None:
                return True
            if not segment.match(component):
                return False
        return True


class Matcher:
    """Decides whether a context path is excluded by a list of .dockerignore patterns."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [_Pattern(p) for p in patterns if p not in ("", "!")]
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    @staticmethod
    def _normalize(relpath: str) -> str:
        path = _clean(relpath)
        while path.startswith("./"):
            path = path[2:]
        return path.lstrip("/") or "."

    def matches(self, relpath: str) -> bool:
        """True when *relpath* (relative to the context root) is excluded from the context."""
        path = self._normalize(relpath)
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a pattern that could change the verdict is tried
            hit = pattern.matches(path)
            if not hit:
                for depth in range(1, len(parents) + 1):
                    if pattern.matches("/".join(parents[:depth])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def excluded_dir_may_contain_included(self, relpath: str) -> bool:
        """For an excluded directory: could an ``!`` exception re-include something inside it?

        When False, a walk of the context can skip the directory without looking inside.
        """
        if not self.has_exclusions:
            return False
        components = self._normalize(relpath).split("/")
        return any(p.may_match_below(components) for p in self.patterns if p.exclusion)
