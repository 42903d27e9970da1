"""Read-only lookups in an image's merged file system, straight from its layer directories.

COPY and ADD need a few facts about the tree they write into (does the destination exist, is it a
directory, where do its symlinks lead, who owns its parent directories, what ``/etc/passwd``
says) but not a mount: :class:`LayerTree` answers them from the layer directories, newest first,
by overlayfs's rules (a 0/0 character device hides a name, an opaque directory hides what lies
below it, a non-directory hides everything below its name). For a ``plain`` store (vfs) the top
layer is the whole tree and the same code applies with one layer.

Symlinks are followed *in scope*: ``/`` and ``..`` never leave the image's root, as in a chroot,
which is how Docker resolves COPY destinations (by :func:`lamina.rootpath.walk`, over the merged
layers instead of one directory).
"""

from __future__ import annotations

import errno
import os
import stat

from lamina.errors import InvalidArgument
from lamina.rootpath import walk
from lamina.whiteouts import is_overlay_opaque, is_overlay_whiteout

__all__ = ["Entry", "LayerTree"]


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
            if self.overlay and is_overlay_whiteout(st):
                return None
            below: list[str] = []
            if stat.S_ISDIR(st.st_mode):
                below = [path]
                if not (self.overlay and is_overlay_opaque(path)):
                    for lower in sources[index + 1:]:
                        candidate = os.path.join(lower, name)
                        try:
                            lst = os.lstat(candidate)
                        except (FileNotFoundError, NotADirectoryError):
                            continue
                        if not stat.S_ISDIR(lst.st_mode):
                            break  # a whiteout or a file ends the merge
                        below.append(candidate)
                        if self.overlay and is_overlay_opaque(candidate):
                            break
            return st, path, below
        return None

    def resolve(self, path: str, follow_last: bool = True) -> tuple[str, Entry | None]:
        """The in-scope resolution of the absolute ``path``: (resolved path, its entry or None).

        Intermediate symlinks are always followed; the last one only if ``follow_last``. A
        missing entry (or parent) gives the resolved path and None; a non-directory in the
        middle, or a symlink loop, raises InvalidArgument.
        """
        root_st = os.lstat(self.layers[0]) if self.layers else \
            os.stat_result((0o40755, 0, 0, 0, 0, 0, 0, 0, 0, 0))

        def lookup(state, name):
            found = self._child(state[2], name)
            return None if found is None else (found, found[0].st_mode)

        try:
            names, state = walk(path, (root_st, "", self.layers), lookup,
                                lambda state: os.readlink(state[1]), follow_last)
        except OSError as error:
            if error.errno == errno.ENOTDIR:
                raise InvalidArgument(f"{error.filename2} is not a directory") from None
            raise InvalidArgument(f"too many levels of symbolic links in {path}") from None
        resolved = "/" + "/".join(names)
        return resolved, None if state is None else Entry(resolved, state[0], state[1])

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
