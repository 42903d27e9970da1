"""Fixtures of the conformance suite: one store per driver, merged views, flat references.

The suite mounts for real, so it needs root and a private mount namespace::

    unshare --mount --propagation private python3 -m pytest tests/conformance

Every snapshotter call that changes state runs inside ``lamina.metadata.Transaction``, as the engine
does. Stores live under /var/tmp (fast ext4, see MACHINE.md) and are removed afterwards.
"""

import contextlib
import errno
import functools
import io
import os
import shutil
import tempfile

import pytest

from lamina import differ, metadata
from lamina.mount import mount_all, unmount
from lamina.snapshots import DRIVERS, open_snapshotter, overlay_supported

from .treeutil import DEFAULT_MTIME, apply_edits, assert_same_tree, build_reference, snapshot_tree

SCRATCH = "/var/tmp"

# The union driver has two faces on one logic: its Python API (the default: edits and trees go
# through lamina.union.UnionView, mounting only where a test needs a real path) and its FUSE
# mount ("union-fuse": everything through the mount).
FACES = (*DRIVERS, "union-fuse")


def _overlay_parameter(name: str) -> bool:
    try:
        with open(f"/sys/module/overlay/parameters/{name}") as f:
            return f.read().strip() in ("Y", "on", "follow")
    except OSError:
        return False


def rename_lower_dir_errno(driver: str) -> int | None:
    """What renaming a directory that lives in a lower layer gives: None (it works) or an errno.

    overlay2 mounts without ``redirect_dir``, so the kernel default applies: with it off (as on the
    machines in MACHINE.md) rename(2) of a merged or lower directory fails with EXDEV and tools
    like ``mv`` fall back to copy + delete. vfs has plain directories.
    """
    if driver in ("overlay2", "overlay") and not _overlay_parameter("redirect_dir"):
        return errno.EXDEV
    if driver == "union":  # lamina.union keeps overlayfs' default (no redirect_dir)
        return errno.EXDEV
    return None


def copy_up_keeps_hard_links(driver: str) -> bool:
    """Whether writing one name of a lower hard-linked file changes the other names too.

    Without overlayfs' ``index`` feature a copy-up breaks the link (Docker's overlay2 behaves the
    same); vfs copies trees with their hard links.
    """
    if driver == "union":  # lamina.union's copy_up is overlayfs' without index
        return False
    return driver not in ("overlay2", "overlay") or _overlay_parameter("index")


@functools.cache
def skip_reason(driver: str) -> str | None:
    if os.geteuid() != 0:
        return "the conformance suite mounts: run it as root"
    try:
        if os.readlink("/proc/self/ns/mnt") == os.readlink("/proc/1/ns/mnt"):
            return ("run in a private mount namespace: "
                    "unshare --mount --propagation private python3 -m pytest tests/conformance")
    except OSError:
        pass
    if driver in ("overlay2", "overlay") and not overlay_supported(SCRATCH):
        return "kernel overlayfs mounts do not work here"
    if driver.startswith("union"):
        if not os.path.exists("/dev/fuse"):
            return "the union driver's mount needs /dev/fuse"
        try:
            import mfusepy  # noqa: F401  (loads libfuse3: the fuse3 package)
        except (ImportError, OSError) as error:
            return f"the union driver's mount needs mfusepy and libfuse3: {error}"
    return None


@contextlib.contextmanager
def merged(snaps, key: str, scratch: str = SCRATCH, force_mount: bool = False):
    """A directory showing ``key``'s merged view.

    A single bind mount is used through its source directly unless ``force_mount`` (needed to get
    the read-only bind of a view); anything else is mounted on a temporary dir and unmounted after.
    """
    mounts = snaps.mounts(key)
    if not force_mount and len(mounts) == 1 and mounts[0].type == "bind":
        yield mounts[0].source
        return
    target = tempfile.mkdtemp(prefix="mnt-", dir=scratch)
    try:
        if mounts:
            mount_all(mounts, target)
        try:
            yield target
        finally:
            unmount(target)
    finally:
        os.rmdir(target)


class Store:
    """A snapshotter on a throw-away store, with helpers for references and diffs."""

    def __init__(self, driver: str, root: str):
        self.face = "api" if driver == "union" else None  # see FACES
        driver = driver.removesuffix("-fuse")
        self.driver = driver
        self.root = root
        self.db = metadata.connect(os.path.join(root, "metadata.db"))
        self.snaps = open_snapshotter(driver, os.path.join(root, "store"), self.db)
        self._clock = DEFAULT_MTIME

    # -- snapshotter calls, each in its own transaction ---------------------------------------
    def prepare(self, key: str, parent: str | None = None) -> list:
        with metadata.Transaction(self.db):
            return self.snaps.prepare(key, parent)

    def view(self, key: str, parent: str | None = None) -> list:
        with metadata.Transaction(self.db):
            return self.snaps.view(key, parent)

    def commit(self, name: str, key: str) -> None:
        with metadata.Transaction(self.db):
            self.snaps.commit(name, key)

    def remove(self, key: str) -> None:
        with metadata.Transaction(self.db, after=self.snaps.purge):
            self.snaps.remove(key)

    # -- trees -------------------------------------------------------------------------------
    def tick(self) -> int:
        """A fresh whole-second mtime for the next step."""
        self._clock += 1
        return self._clock

    def merged(self, key: str, force_mount: bool = False):
        return merged(self.snaps, key, self.root, force_mount)

    def edit(self, key: str, edits, mtime: int | None = None) -> tuple:
        """Apply ``edits`` through ``key``'s read-write mount; returns the (edits, mtime) step."""
        mtime = self.tick() if mtime is None else mtime
        if self.face == "api":
            apply_edits("/", edits, mtime, fs=self.snaps.union_view(key))
            return (edits, mtime)
        with self.merged(key) as path:
            apply_edits(path, edits, mtime)
        return (edits, mtime)

    def layer(self, name: str, parent: str | None, edits) -> tuple:
        """prepare + edit + commit ``name`` on ``parent``; returns the step."""
        self.prepare(name + "-active", parent)
        step = self.edit(name + "-active", edits)
        self.commit(name, name + "-active")
        return step

    def tree(self, key: str) -> dict:
        if self.face == "api":
            return snapshot_tree("/", fs=self.snaps.union_view(key))
        with self.merged(key) as path:
            return snapshot_tree(path)

    def reference(self, steps) -> str:
        """A flat directory with ``steps`` applied."""
        return build_reference(tempfile.mkdtemp(prefix="ref-", dir=self.root), steps)

    def assert_view(self, key: str, steps, what: str | None = None) -> None:
        """``key``'s merged view equals a flat tree that had the same steps applied."""
        assert_same_tree(self.tree(key), snapshot_tree(self.reference(steps)),
                         what or f"{self.driver} snapshot {key} and its reference")

    # -- differ ------------------------------------------------------------------------------
    def diff(self, key: str) -> bytes:
        out = io.BytesIO()
        differ.write_diff(self.snaps, key, out)
        return out.getvalue()

    def apply(self, key: str, data: bytes):
        return differ.apply(self.snaps, key, io.BytesIO(data))

    def changes(self, key: str) -> list[tuple[str, str]]:
        return [(change.kind, change.path) for change in differ.changes(self.snaps, key)]

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def open_store(driver: str):
    """A fresh store for ``driver`` under /var/tmp (skips the test if this machine cannot run it)."""
    reason = skip_reason(driver)
    if reason:
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix=f"lamina-conformance-{driver}-", dir=SCRATCH)
    store = Store(driver, root)
    try:
        yield store
    finally:
        store.close()
        _unmount_below(root)
        shutil.rmtree(root)


def _unmount_below(root: str) -> None:
    """Lazily unmount whatever a failed test left mounted under ``root`` before deleting it."""
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in sorted(targets, key=len, reverse=True):
        if target == root or target.startswith(root + "/"):
            unmount(target, detach=True)


@pytest.fixture(params=FACES)
def store(request):
    """A Store for each driver in lamina.snapshots.DRIVERS (and the union driver's FUSE face)."""
    with open_store(request.param) as s:
        yield s
