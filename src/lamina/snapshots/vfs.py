"""vfs: every snapshot is a full copy of its parent's tree. No mounts; works on any filesystem.

File data is copied with reflinks where the filesystem has them (XFS, btrfs), else copy_file_range,
so on those filesystems a copy shares blocks. Usage is what a snapshot adds over its parent, found
by comparing the two trees.
"""

import os

from ..fsutil import copy_tree
from ..mount import Mount
from .base import ACTIVE, Snapshotter


class Vfs(Snapshotter):
    """The vfs driver."""

    name = "vfs"
    fmt = "plain"

    def __init__(self, root, db):
        super().__init__(root, db)
        os.makedirs(os.path.join(root, "dir"), exist_ok=True)

    def _data_dir(self, row_id: str) -> str:
        return os.path.join(self.root, "dir", row_id)

    def _create(self, row_id, parent_row, kind):
        path = self._data_dir(row_id)
        os.mkdir(path, 0o755)
        if parent_row is not None:
            copy_tree(self._data_dir(parent_row["id"]), path)
        return "", ""

    def _mounts(self, row):
        mode = "rw" if row["kind"] == ACTIVE else "ro"
        return [Mount("bind", self._data_dir(row["id"]), (mode, "rbind"))]

    def _usage(self, row):
        from ..changes import tree_changes

        parent_dir = self._data_dir(self._row(row["parent"])["id"]) if row["parent"] else None
        own = self._data_dir(row["id"])
        size = 0
        seen = set()
        for change in tree_changes(parent_dir, own):
            if change.kind == "D":
                continue
            st = os.lstat(own + change.path)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            if not os.path.isdir(own + change.path) or os.path.islink(own + change.path):
                size += st.st_size
        return size, len(seen)

    def _paths(self, row):
        return [self._data_dir(row["id"])]
