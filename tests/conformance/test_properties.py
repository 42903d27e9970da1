"""Property: a layer tar reproduces its snapshot, whatever the tree and the edits.

For a random base tree (files with random bytes, directories, symlinks, modes) and random edits on
a child, ``differ.write_diff`` of the child applied with ``differ.apply`` onto a fresh prepare of
the same parent gives the child's merged view, and both equal a flat reference with the same edits.
"""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.snapshots import DRIVERS

from .conftest import SCRATCH, open_store, skip_reason
from .treeutil import apply_edits, assert_same_tree, snapshot_tree

pytestmark = pytest.mark.mount

NAMES = st.sampled_from(["a", "b", "c", "dd", "e.txt", "f-long-name"])
FILE_MODES = st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o640])
DIR_MODES = st.sampled_from([0o755, 0o700, 0o1777, 0o2775, 0o750])
OWNERS = st.sampled_from([(0, 0), (1000, 1000), (0, 50), (65534, 65534)])
CONTENT = st.binary(max_size=2048)
BASE_MTIME, CHILD_MTIME = 1_600_000_100, 1_600_000_200


def _paths(ref: str, *kinds: str) -> list[str]:
    return sorted(path.lstrip("/") for path, entry in snapshot_tree(ref).items()
                  if entry.type in kinds)


def _new_path(data, ref: str):
    """A path that does not exist yet, in an existing directory (None if the draw collides)."""
    parent = data.draw(st.sampled_from([""] + _paths(ref, "dir")))
    path = (parent + "/" if parent else "") + data.draw(NAMES)
    return None if os.path.lexists(os.path.join(ref, path)) else path


def _draw(data, ref: str, mtime: int, choose) -> list:
    """Draw edits with ``choose(data, ref)`` and apply each to ``ref`` as it comes."""
    edits = []
    for _ in range(data.draw(st.integers(1, 15))):
        edit = choose(data, ref)
        if edit is not None:
            apply_edits(ref, [edit], mtime)
            edits.append(edit)
    return edits


def _base_edit(data, ref: str):
    path = _new_path(data, ref)
    if path is None:
        return None
    kind = data.draw(st.sampled_from(["file", "file", "dir", "symlink"]))
    if kind == "file":
        return ("write", path, data.draw(CONTENT), data.draw(FILE_MODES))
    if kind == "dir":
        return ("mkdir", path, data.draw(DIR_MODES))
    return ("symlink", path, data.draw(st.sampled_from(["a", "../b", "/etc/passwd", "dd/e.txt"])))


def _child_edit(data, ref: str, new_files: set):
    op = data.draw(st.sampled_from(["write", "write-new", "append", "truncate", "chmod", "chown",
                                    "rmtree", "mkdir", "symlink", "rename", "setxattr",
                                    "hardlink"]))
    files = _paths(ref, "file")
    if op in ("write-new", "mkdir", "symlink"):
        path = _new_path(data, ref)
        if path is None:
            return None
        if op == "mkdir":
            return ("mkdir", path, data.draw(DIR_MODES))
        if op == "symlink":
            return ("symlink", path, data.draw(NAMES))
        new_files.add(path)
        return ("write", path, data.draw(CONTENT), data.draw(FILE_MODES))
    if op == "hardlink":  # to a file of this layer only: a copy-up would split a lower inode
        candidates = sorted(new_files & set(files))
        path = _new_path(data, ref)
        if not candidates or path is None:
            return None
        new_files.add(path)
        return ("hardlink", path, data.draw(st.sampled_from(candidates)))
    if op == "rename":  # files and symlinks: renaming a lower directory is driver-specific
        sources = _paths(ref, "file", "symlink")
        target = _new_path(data, ref)
        if not sources or target is None:
            return None
        source = data.draw(st.sampled_from(sources))
        if source in new_files:
            new_files.discard(source)
            new_files.add(target)
        return ("rename", source, target)
    if op in ("write", "append", "truncate"):
        if not files:
            return None
        path = data.draw(st.sampled_from(files))
        if op == "write":
            return ("write", path, data.draw(CONTENT))
        if op == "append":
            return ("append", path, data.draw(st.binary(min_size=1, max_size=64)))
        return ("truncate", path, data.draw(st.integers(0, 4096)))
    if op in ("chmod", "setxattr"):
        targets = _paths(ref, "file", "dir")
        if not targets:
            return None
        path = data.draw(st.sampled_from(targets))
        if op == "setxattr":
            return ("setxattr", path, "user." + data.draw(NAMES), data.draw(st.binary(max_size=32)))
        is_dir = os.path.isdir(os.path.join(ref, path))
        return ("chmod", path, data.draw(DIR_MODES if is_dir else FILE_MODES))
    everything = _paths(ref, "file", "dir", "symlink")
    if not everything:
        return None
    path = data.draw(st.sampled_from(everything))
    if op == "chown":
        return ("chown", path, *data.draw(OWNERS))
    for new in list(new_files):  # rmtree
        if new == path or new.startswith(path + "/"):
            new_files.discard(new)
    return ("rmtree", path)


def _check(driver: str, data) -> None:
    scratch = tempfile.mkdtemp(prefix="lamina-property-ref-", dir=SCRATCH)
    try:
        ref = os.path.join(scratch, "ref")
        os.mkdir(ref, 0o755)
        os.chmod(ref, 0o755)
        base_edits = _draw(data, ref, BASE_MTIME, _base_edit)
        new_files: set = set()
        child_edits = _draw(data, ref, CHILD_MTIME,
                            lambda d, r: _child_edit(d, r, new_files))
        with open_store(driver) as store:
            store.prepare("base-active")
            store.edit("base-active", base_edits, BASE_MTIME)
            store.commit("base", "base-active")
            store.prepare("child-active", "base")
            store.edit("child-active", child_edits, CHILD_MTIME)
            store.commit("child", "child-active")
            child = store.tree("child")
            assert_same_tree(child, snapshot_tree(ref), f"{driver} child and its reference")
            tar = store.diff("child")
            store.prepare("applied-active", "base")
            store.apply("applied-active", tar)
            store.commit("applied", "applied-active")
            assert_same_tree(store.tree("applied"), child,
                             f"{driver}: the child's diff applied on its parent, and the child")
    finally:
        shutil.rmtree(scratch)


@pytest.mark.parametrize("driver", DRIVERS)
def test_diff_apply_reproduces_child(driver):
    reason = skip_reason(driver)
    if reason:
        pytest.skip(reason)
    examples = int(os.environ.get("LAMINA_PROPERTY_EXAMPLES", "25"))  # raise it for a soak run
    check = settings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])(
        given(data=st.data())(lambda data: _check(driver, data)))
    check()
