"""Snapshotters: the storage drivers behind one small interface.

A snapshotter knows trees and their parents, nothing of images, tars or digests. Keys are opaque
strings chosen by the caller. The whole protocol, as a tutorial:

Import a layer::

    mounts = snaps.prepare("extract-1", parent=None)   # an empty, writable snapshot
    ...write the layer's files through ``mounts`` (see lamina.differ.apply)...
    snaps.commit("layer-A", "extract-1")               # now read-only, usable as a parent

Stack a second layer on it the same way with ``parent="layer-A"``.

Run a container::

    mounts = snaps.prepare("container-1", parent="layer-B")
    lamina.mount.mount_all(mounts, "/some/dir")         # the merged root, read-write
    ...the container writes; the layers below never change...
    snaps.usage("container-1")                          # bytes this snapshot adds
    snaps.remove("container-1")                          # its writes are gone, the layers stay

``view(key, parent)`` is a read-only prepare. ``stat``, ``walk`` and ``usage`` inspect. A snapshot with
children cannot be removed; a committed snapshot never changes again.

Snapshot records live in the store's SQLite database (table ``snapshots``); the methods do not commit
the transaction: the caller does, so that a snapshot and the record that uses it land together.
``remove`` deletes no data itself: it files the snapshot's paths in the ``trash`` table in the same
transaction, and ``purge()`` deletes them once that transaction has committed. A crash at any point
leaves either the snapshot whole or its paths in ``trash``, which the next ``purge()`` finishes.
"""

import os

from ..errors import InvalidArgument
from .base import ACTIVE, COMMITTED, MAX_DEPTH, VIEW, DiffDirs, Info, Snapshotter

__all__ = ["ACTIVE", "COMMITTED", "DRIVERS", "MAX_DEPTH", "VIEW", "DiffDirs", "Info", "Snapshotter",
           "open_snapshotter", "overlay_supported"]

DRIVERS = ("overlay2", "vfs", "union", "overlay")


def open_snapshotter(name: str, root: str, db) -> Snapshotter:
    """The driver called ``name``, keeping its data under ``root``/``name``."""
    if name == "overlay2":
        from .overlay2 import Overlay2

        return Overlay2(os.path.join(root, name), db)
    if name == "vfs":
        from .vfs import Vfs

        return Vfs(os.path.join(root, name), db)
    if name == "union":
        from .union import Union

        return Union(os.path.join(root, name), db)
    if name == "overlay":
        from .overlay import Overlay

        return Overlay(os.path.join(root, name), db)
    raise InvalidArgument(f"unknown storage driver {name!r} (choose from {', '.join(DRIVERS)})")


def overlay_supported(scratch: str) -> bool:
    """Whether a kernel overlay mount works here: try one under ``scratch`` and undo it."""
    from ..errors import LaminaError
    from ..fsutil import remove_tree
    from ..mount import Mount, mount_all, unmount

    base = os.path.join(scratch, f"overlay-probe-{os.getpid()}")
    try:
        for sub in ("lower", "upper", "work", "merged"):
            os.makedirs(os.path.join(base, sub))
        m = Mount("overlay", "overlay", ("lowerdir=lower", "upperdir=upper", "workdir=work"), cwd=base)
        mount_all([m], os.path.join(base, "merged"))
        unmount(os.path.join(base, "merged"))
        return True
    except (OSError, LaminaError):
        return False
    finally:
        remove_tree(base)
