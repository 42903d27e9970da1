"""The build context: a directory, minus what ``.dockerignore`` excludes, that COPY and ADD read.

Nothing outside the context is ever read: a source whose cleaned path starts with ``..``, or that
reaches outside through a symlink, is refused with a one-line error. Symlinks *inside* a copied
directory are copied as symlinks (their targets are not read), as Docker does.

Source patterns use Go's ``filepath.Match`` rules per path component (``*``, ``?``, ``[a-z]``,
``[^a-z]``, ``\\`` escapes); excluded paths are invisible to them.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat

from lamina.builder.dockerignore import Matcher, read_patterns
from lamina.errors import InvalidArgument, NotFound

__all__ = ["Context", "has_magic"]

_MAGIC = re.compile(r"[*?\[\\]")


def has_magic(pattern: str) -> bool:
    return _MAGIC.search(pattern) is not None


def _component_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1 if pattern[i:i + 1] in ("^", "!") else i)
            if end < 0:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i:end]
            i = end + 1
            negate = body[:1] in ("^", "!")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class Context:
    """A build context directory and its ``.dockerignore`` rules."""

    def __init__(self, root: str, ignore_text: str | None = None) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotFound(f"unable to prepare context: path {root!r} not found")
        if ignore_text is None:
            try:
                with open(os.path.join(self.root, ".dockerignore"), encoding="utf-8") as f:
                    ignore_text = f.read()
            except FileNotFoundError:
                ignore_text = ""
        patterns = read_patterns(ignore_text)
        self.matcher = Matcher(patterns) if patterns else None

    # -- paths ---------------------------------------------------------------------------------
    def excluded(self, rel: str) -> bool:
        return self.matcher is not None and rel not in ("", ".") and self.matcher.matches(rel)

    def host(self, rel: str) -> str:
        return self.root if rel in ("", ".") else os.path.join(self.root, rel)

    def _clean(self, source: str, what: str) -> str:
        cleaned = posixpath.normpath("/" + source).lstrip("/")
        raw = posixpath.normpath(source)
        if raw == ".." or raw.startswith("../"):
            raise InvalidArgument(f"{what} failed: forbidden path outside the build context: "
                                  f"{source}")
        return cleaned or "."

    def _check_inside(self, rel: str, source: str, what: str) -> None:
        """Refuse a path that symlinks lead out of the context (resolved by the host's rules)."""
        real = os.path.realpath(self.host(rel))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise InvalidArgument(f"{what} failed: forbidden path outside the build context: "
                                  f"{source} -> {real}")
        inner = os.path.relpath(real, self.root)
        if inner != "." and self.excluded(inner) and inner != rel:
            raise NotFound(f"{what} failed: {source} leads to {inner}, which is excluded by "
                           ".dockerignore")

    def sources(self, source: str, what: str = "COPY") -> list[str]:
        """Context-relative paths that ``source`` (a path or pattern) names, in sorted order."""
        rel = self._clean(source, what)
        if not has_magic(rel):
            path = self.host(rel)
            if not os.path.lexists(path) or self.excluded(rel):
                raise NotFound(f"{what} failed: file not found in build context or excluded by "
                               f".dockerignore: stat {source}: file does not exist")
            self._check_inside(rel, source, what)
            return [rel]
        matches = [""]
        for part in rel.split("/"):
            if not has_magic(part):
                matches = [posixpath.join(m, part) if m else part for m in matches
                           if os.path.lexists(self.host(posixpath.join(m, part) if m else part))]
                continue
            regex = _component_regex(part)
            found = []
            for m in matches:
                directory = self.host(m)
                if not os.path.isdir(directory):
                    continue
                for name in sorted(os.listdir(directory)):
                    if regex.match(name):
                        found.append(posixpath.join(m, name) if m else name)
            matches = found
        matches = [m for m in matches if not self.excluded(m)]
        if not matches:
            raise NotFound(f"{what} failed: no source files were specified"
                           if source.strip() in ("*", "") else
                           f"{what} failed: no files match {source} in the build context")
        for m in matches:
            self._check_inside(m, source, what)
        return matches

    def walk(self, rel: str):
        """(relative path below ``rel``, host path, lstat) of every entry of the directory
        ``rel`` that is not excluded, parents first, names sorted; symlinks are not followed."""
        top = self.host(rel)
        prefix = "" if rel in ("", ".") else rel + "/"
        matcher = self.matcher

        def visit(directory: str, inner: str):
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                below = inner + entry.name
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if matcher is not None and matcher.matches(prefix + below):
                    if is_dir and matcher.excluded_dir_may_contain_included(prefix + below):
                        yield from visit(entry.path, below + "/")
                    continue
                yield below, entry.path, st
                if is_dir:
                    yield from visit(entry.path, below + "/")

        yield from visit(top, "")
