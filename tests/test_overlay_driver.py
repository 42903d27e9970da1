"""The first-generation overlay driver: full trees of hard links, one lower per mount."""

import os

import pytest

from .conformance.conftest import open_store

pytestmark = pytest.mark.mount


@pytest.fixture
def store():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with open_store("overlay") as s:
        yield s


def _inodes(path: str) -> set:
    found = set()
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            found.add((st.st_dev, st.st_ino))
    return found


def test_layer_tree_is_hard_links_to_its_parent(store):
    base = store.layer("base", None, [("mkdir", "bin"), ("write", "bin/sh", b"sh"),
                                      ("hardlink", "bin/ls", "bin/sh"), ("mkdir", "etc"),
                                      ("write", "etc/a", b"a"), ("write", "etc/b", b"b")])
    child = store.layer("child", "base", [("write", "etc/a", b"A"), ("unlink", "etc/b"),
                                          ("mkdir", "new")])

    def root(key):
        return os.path.join(store.snaps.root, store.snaps.stat(key).id, "root")

    parent_tree, child_tree = root("base"), root("child")
    sh = os.lstat(os.path.join(child_tree, "bin/sh"))
    assert sh.st_ino == os.lstat(os.path.join(parent_tree, "bin/sh")).st_ino  # shared, not copied
    assert sh.st_ino == os.lstat(os.path.join(child_tree, "bin/ls")).st_ino
    assert not os.path.lexists(os.path.join(child_tree, "etc/b"))
    with open(os.path.join(child_tree, "etc/a"), "rb") as f:
        assert f.read() == b"A"
    # the child's new inodes: its directories (every one of the image) and its own changes only
    new = _inodes(child_tree) - _inodes(parent_tree)
    assert len(new) == 3 + 1  # bin, etc, new + etc/a
    store.view("v", "child")
    store.assert_view("v", [base, child])
    store.prepare("c", "child")
    mounts = store.snaps.mounts("c")
    assert len(mounts) == 1 and mounts[0].lowers() == [child_tree]  # one lower, however deep
    assert not os.path.exists(os.path.join(store.snaps.root, store.snaps.stat("child").id, "work"))
