"""Read-only lookups in an image's merged file system, straight from its layer directories.

COPY and ADD need a few facts about the tree they write into (does the destination exist, is it a
directory, where do its symlinks lead, who owns its parent directories, what ``/etc/passwd``
says) but not a mount: :class:`LayerTree` answers them from the layer directories, newest first,
by overlayfs's rules (a 0/0 character device hides a name, an opaque directory hides what lies
below it, a non-directory hides everything below its name). For a ``plain`` store (vfs) the top
layer is the whole tree and the same code applies with one layer.

Symlinks are followed *in scope*: ``/`` and ``..`` never leave the image's root, as in a chroot,
which is how Docker resolves COPY destinations.
"""

from __future__ import annotations

import os
import stat

from lamina.errors import InvalidArgument

__all__ = ["Entry", "LayerTree"]

_MAX_LINKS = 255
_OPAQUE_XATTR = "trusted.overlay.opaque"


class Entry:
    """One merged entry: its path in the image and the ``lstat`` of the layer file that shows."""

    __slots__ = ("host", "path", "st")

    def __init__(self, path: str, st: os.stat_result, host: str) -> None:
        self.path = path
        self.st = st
        self.host = host  # the file in the layer directory that provides it

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LayerTree:
    """The merged view of ``layers`` (data directories, newest first) in ``fmt`` ("overlay" or
    "plain")."""

    def __init__(self, layers: list[str], fmt: str) -> None:
        self.layers = list(layers) if fmt == "overlay" else list(layers[:1])
        self.overlay = fmt == "overlay"

    def _child(self, sources: list[str], name: str) -> tuple[os.stat_result, str, list[str]] | None:
        """Look ``name`` up in a merged directory made of ``sources`` (newest first)."""
        for index, directory in enumerate(sources):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if self.overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None  # whiteout
            below: list[str] = []
            if stat.S_ISDIR(st.st_mode):
                below = [path]
                if not (self.overlay and _opaque(path)):
                    for lower in sources[index + 1:]:
                        candidate = os.path.join(lower, name)
                        try:
                            lst = os.lstat(candidate)
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        if not stat.S_ISDIR(lst.st_mode):
                            break  # a whiteout or a file ends the merge
                        below.append(candidate)
                        if self.overlay and _opaque(candidate):
                            break
            return st, path, below
        return None

    def resolve(self, path: str, follow_last: bool = True) -> tuple[str, Entry | None]:
        """The in-scope resolution of the absolute ``path``: (resolved path, its entry or None).

        Intermediate symlinks are always followed; the last one only if ``follow_last``. A
        missing entry (or parent) gives the resolved path and None; a non-directory in the
        middle raises InvalidArgument.
        """
        parts = [p for p in path.split("/") if p and p != "."]
        hops = 0
        while True:
            current: list[str] = []
            sources = list(self.layers)
            entry: Entry | None = Entry("/", os.lstat(self.layers[0]) if self.layers else
                                        os.stat_result((0o40755, 0, 0, 0, 0, 0, 0, 0, 0, 0)), "")
            restart = None
            for index, part in enumerate(parts):
                if part == "..":
                    current = current[:-1]
                    # re-walk from the root: the merged sources of the parent are recomputed
                    restart = current + parts[index + 1:]
                    break
                if entry is None:  # below a missing name: nothing exists, nothing to follow
                    current.append(part)
                    continue
                if not entry.is_dir:
                    raise InvalidArgument(f"/{'/'.join(current)} is not a directory")
                found = self._child(sources, part)
                current.append(part)
                if found is None:
                    entry = None
                    sources = []
                    continue
                st, host, below = found
                last = index == len(parts) - 1
                if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                    hops += 1
                    if hops > _MAX_LINKS:
                        raise InvalidArgument(f"too many levels of symbolic links in {path}")
                    target = os.readlink(host)
                    base = [] if target.startswith("/") else current[:-1]
                    restart = base + [p for p in target.split("/") if p and p != "."] + \
                        parts[index + 1:]
                    break
                entry = Entry("/" + "/".join(current), st, host)
                sources = below
            if restart is None:
                return "/" + "/".join(current), entry
            parts = restart

    def lookup(self, path: str) -> Entry | None:
        """The entry at ``path`` (symlinks followed), or None."""
        try:
            return self.resolve(path)[1]
        except InvalidArgument:
            return None

    def read(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The first ``limit`` bytes of the regular file at ``path`` (symlinks followed), or None."""
        entry = self.lookup(path)
        if entry is None or not stat.S_ISREG(entry.st.st_mode):
            return None
        with open(entry.host, "rb") as f:
            return f.read(limit)
