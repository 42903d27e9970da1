"""overlay: first-generation kernel overlayfs, one lower directory per mount.

Layout under ``<store>/overlay``::

    <id>/diff     the snapshot's own changes, in overlay format (what layer tars are made from)
    <id>/root     a committed snapshot's full tree: its parent's tree as hard links, plus ``diff``
                  applied (its files hard-linked in, whiteouts and opaque directories resolved)
    <id>/work     overlayfs' work dir, for active snapshots with a parent

A container is one overlay mount: ``lowerdir`` = the image layer's ``root``, ``upperdir`` = its own
``diff``. No stacking limit applies and lookups cost one lower, but every layer pays one inode per
directory of the whole image (files are hard links, so they cost nothing); ``bench/union.py``
reports that cost next to overlay2's.
"""

import os
import stat

from ..fsutil import copy_metadata, remove_tree, tree_usage
from ..mount import Mount
from ..whiteouts import is_overlay_opaque, is_overlay_whiteout
from .base import ACTIVE, Snapshotter


def _entries(path: str | None) -> dict:
    if path is None:
        return {}
    with os.scandir(path) as it:
        return {entry.name: entry for entry in it}


def materialise(parent: str | None, diff: str | None, target: str) -> None:
    """Fill the empty directory ``target`` with the tree ``parent`` (a full tree, or None) with
    the overlay-format layer ``diff`` applied. Non-directories become hard links into ``parent``
    and ``diff``; directories are new, with their metadata copied after their children."""
    dirs = []
    stack = [(parent, diff, target)]
    while stack:
        lower, upper, out = stack.pop()
        own = _entries(upper)
        below = {} if upper is not None and is_overlay_opaque(upper) else _entries(lower)
        for name, entry in below.items():
            if name in own:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(os.path.join(out, name), 0o700)
                dirs.append((entry.path, os.path.join(out, name), st))
                stack.append((entry.path, None, os.path.join(out, name)))
            else:
                os.link(entry.path, os.path.join(out, name), follow_symlinks=False)
        for name, entry in own.items():
            st = entry.stat(follow_symlinks=False)
            if is_overlay_whiteout(st):
                continue  # the parent's entry was not linked above
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(os.path.join(out, name), 0o700)
                dirs.append((entry.path, os.path.join(out, name), st))
                old = below.get(name)
                merge = old.path if old is not None and old.is_dir(follow_symlinks=False) else None
                stack.append((merge, entry.path, os.path.join(out, name)))
            else:
                os.link(entry.path, os.path.join(out, name), follow_symlinks=False)
    for source, out, st in reversed(dirs):
        copy_metadata(st, source, out)


class Overlay(Snapshotter):
    """The overlay driver."""

    name = "overlay"
    fmt = "overlay"

    def _data_dir(self, row_id: str) -> str:
        return os.path.join(self.root, row_id, "diff")

    def _tree(self, row_id: str) -> str:
        return os.path.join(self.root, row_id, "root")

    def _create(self, row_id, parent_row, kind):
        base = os.path.join(self.root, row_id)
        os.mkdir(base, 0o700)
        if kind == ACTIVE:
            os.mkdir(os.path.join(base, "diff"), 0o755)
            return "own", ""
        return "", ""  # a view shows its parent's tree and owns nothing

    def commit(self, name: str, key: str) -> None:
        """Commit as the base class does, after materialising the snapshot's full tree."""
        row = self._row(key)
        if row["kind"] == ACTIVE:
            tree = self._tree(row["id"])
            if not os.path.isdir(tree):
                parent = self._tree(self._row(row["parent"])["id"]) if row["parent"] else None
                partial = tree + ".partial"
                remove_tree(partial)
                os.mkdir(partial, 0o755)
                materialise(parent, self._data_dir(row["id"]), partial)
                os.rename(partial, tree)
        super().commit(name, key)
        remove_tree(os.path.join(self.root, row["id"], "work"))

    def _mounts(self, row):
        base = os.path.join(self.root, row["id"])
        parent = self._row(row["parent"]) if row["parent"] else None
        if row["kind"] == ACTIVE:
            if parent is None:
                return [Mount("bind", os.path.join(base, "diff"), ("rw", "rbind"))]
            return [Mount("overlay", "overlay",
                          (f"lowerdir={self._tree(parent['id'])}", f"upperdir={base}/diff",
                           f"workdir={base}/work"))]
        source = self._tree(row["id"]) if row["kind"] != "view" else self._tree(parent["id"])
        return [Mount("bind", source, ("ro", "rbind"))]

    def _usage(self, row):
        if not row["link"]:
            return 0, 0
        return tree_usage(self._data_dir(row["id"]))

    def _paths(self, row):
        return [os.path.join(self.root, row["id"])]
