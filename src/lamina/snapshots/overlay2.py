"""overlay2: kernel overlayfs, one directory per layer, many lowers per mount.

Layout under ``<store>/overlay2`` (Docker's idea, lamina's code)::

    <id>/diff     the snapshot's own changes (overlay format: whiteouts are 0/0 char devices,
                  opaque directories carry trusted.overlay.opaque=y)
    <id>/work     overlayfs' work dir, for active snapshots
    l/<LINK>      a 26-character symlink to ../<id>/diff

Mount options name lowers by their short links, relative to ``<store>/overlay2``, so 128 lowers fit
the kernel's one-page option limit; past that page :func:`lamina.mount.mount_all` gives the kernel
one lower at a time (Linux 6.5), up to its own limit of 500.
"""

import os

from ..mount import Mount, overlay_stack_limit
from .base import ACTIVE, DiffDirs


class Overlay2(DiffDirs):
    """The overlay2 driver."""

    name = "overlay2"
    fmt = "overlay"
    max_depth = property(lambda self: overlay_stack_limit())

    def _create(self, row_id, parent_row, kind):
        base = os.path.join(self.root, row_id)
        os.mkdir(base, 0o700)
        link = os.urandom(13).hex()[:26].upper()
        lower = self._lower_of(parent_row) if parent_row is not None else ""
        if kind == ACTIVE or parent_row is None:
            os.mkdir(os.path.join(base, "diff"), 0o755)
            os.symlink(f"../{row_id}/diff", os.path.join(self.root, "l", link))
        else:
            link = ""  # a view owns no data
        return link, lower

    @staticmethod
    def _lower_of(parent_row) -> str:
        """The ``lower`` column of a child of ``parent_row``: short links, newest first."""
        parent_lower = parent_row["lower"]
        return f"l/{parent_row['link']}" + (":" + parent_lower if parent_lower else "")

    def _mounts(self, row):
        """Mounts of a snapshot. The overlay work dir is made by mount_all when first mounted, so
        snapshots that are never mounted (init layers, extraction) cost one mkdir less."""
        lower = row["lower"]
        own = f"{row['id']}/diff"
        if row["kind"] == ACTIVE:
            if not lower:
                return [Mount("bind", os.path.join(self.root, own), ("rw", "rbind"))]
            return [Mount("overlay", "overlay",
                          (f"lowerdir={lower}", f"upperdir={own}", f"workdir={row['id']}/work"),
                          cwd=self.root)]
        if row["link"]:  # committed: its own diff on top of its lowers
            lower = f"l/{row['link']}" + (":" + lower if lower else "")
        layers = lower.split(":") if lower else []
        if len(layers) == 0:
            return []
        if len(layers) == 1:
            return [Mount("bind", os.path.join(self.root, layers[0]), ("ro", "rbind"))]
        return [Mount("overlay", "overlay", (f"lowerdir={lower}", "ro"), cwd=self.root)]
