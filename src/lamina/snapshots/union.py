"""union: lamina's own union filesystem with AUFS's on-disk format (see lamina.union).

Layout under ``<store>/union``::

    <id>/diff     the snapshot's branch: its own changes, whiteouts as ``.wh.NAME`` files and
                  opaque directories marked by ``.wh..wh..opq``, exactly as in a layer tar

No kernel support is needed: the merged tree is served by :class:`lamina.union.UnionView` in
the calling process (``lamina cp``, ``diff``, ``export``) or by a FUSE daemon (``lamina mount``),
so the driver works without root where ``/dev/fuse`` is usable.
"""

import os

from ..mount import Mount
from .base import ACTIVE, DiffDirs


class Union(DiffDirs):
    """The union driver."""

    name = "union"
    fmt = "aufs"

    def _create(self, row_id, parent_row, kind):
        base = os.path.join(self.root, row_id)
        os.mkdir(base, 0o700)
        lower = self._lower_of(parent_row) if parent_row is not None else ""
        if kind == ACTIVE or parent_row is None:
            os.mkdir(os.path.join(base, "diff"), 0o755)
            link = os.urandom(5).hex().upper()  # l/LINK: 128 branches fit one page of options
            os.symlink(f"../{row_id}/diff", os.path.join(self.root, "l", link))
            return link, lower
        return "", lower  # a view owns no data

    @staticmethod
    def _lower_of(parent_row) -> str:
        """The ``lower`` column of a child of ``parent_row``: branch row ids, newest first."""
        return parent_row["id"] + (":" + parent_row["lower"] if parent_row["lower"] else "")

    def _branch_ids(self, row) -> tuple[list[str], bool]:
        ids = row["lower"].split(":") if row["lower"] else []
        if row["kind"] != ACTIVE and row["link"]:
            ids.insert(0, row["id"])
        return ids, row["kind"] == ACTIVE

    def _branches(self, row) -> tuple[list[str], str | None]:
        """(lower branches newest first, upper branch or None) of a snapshot."""
        ids, active = self._branch_ids(row)
        lowers = [self._data_dir(i) for i in ids]
        return lowers, self._data_dir(row["id"]) if active else None

    def _mounts(self, row):
        """One "union" mount (lamina.unionfs), its branches named by short links under the
        store so that the options of 128 branches stay within a page, as overlay2's do."""
        ids, active = self._branch_ids(row)
        if not ids and not active:
            return []
        links = dict(self.db.execute(
            f"SELECT id, link FROM snapshots WHERE id IN ({','.join('?' * len(ids))})", ids))
        options = ["lowerdir=" + ":".join(f"l/{links[i]}" for i in ids)]
        if active:
            options.append(f"upperdir=l/{row['link']}")
        else:
            options.append("ro")
        return [Mount("union", "lamina-union", tuple(options), cwd=self.root)]

    def union_view(self, key: str):
        """A :class:`lamina.union.UnionView` of ``key``: writable for an active snapshot."""
        from ..union import UnionView

        lowers, upper = self._branches(self._row(key))
        return UnionView(lowers, upper)
