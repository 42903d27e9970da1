"""Snapshotter conformance (containerd's snapshot test suite, written from its descriptions) and
the copy-on-write semantics every driver must keep."""

import errno
import os
import shutil
import stat
import subprocess

import pytest

from lamina.errors import AlreadyExists, FailedPrecondition, NotFound
from lamina.snapshots import ACTIVE, COMMITTED, VIEW
from lamina.whiteouts import overlay_xattr_prefix

from .conftest import copy_up_keeps_hard_links, rename_lower_dir_errno
from .treeutil import CAPABILITY, RICH_BASE, assert_same_tree, snapshot_tree

pytestmark = pytest.mark.mount

SMALL_BASE = [
    ("mkdir", "dir"),
    ("write", "dir/target", b"t" * 65536),
    ("write", "dir/other", b"other"),
    ("mkdir", "dir/sub"),
    ("write", "dir/sub/deep", b"deep"),
    ("write", "top", b"top"),
    ("symlink", "link", "dir/target"),
]


def _upper_paths(store, key: str) -> list[str]:
    """Every path in ``key``'s own data directory (overlay2: the upper dir), sorted."""
    root = store.snaps.dir(key)
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


# ------------------------------------------------------------------------------ containerd suite


def test_basic(store):
    store.prepare("base-active")
    base = store.edit("base-active", SMALL_BASE)
    store.commit("base", "base-active")
    with pytest.raises(NotFound):
        store.snaps.stat("base-active")
    store.view("base-view", "base")
    store.assert_view("base-view", [base])
    store.prepare("child-active", "base")
    child = store.edit("child-active", [("write", "dir/target", b"new"), ("write", "added", b"a")])
    store.assert_view("child-active", [base, child])
    store.commit("child", "child-active")
    store.view("child-view", "child")
    store.assert_view("child-view", [base, child])
    assert store.snaps.mounts("child-view")[0].readonly
    assert store.snaps.mounts("base-view")[0].upper() is None


def test_stat(store):
    def record(key):
        info = store.snaps.stat(key)
        return info.key, info.parent, info.kind

    store.layer("base", None, SMALL_BASE)
    store.prepare("active", "base")
    store.view("view", "base")
    assert record("base") == ("base", None, COMMITTED)
    assert record("active") == ("active", "base", ACTIVE)
    assert record("view") == ("view", "base", VIEW)
    with pytest.raises(NotFound):
        store.snaps.stat("missing")
    with pytest.raises(NotFound):
        store.prepare("orphan", "missing")
    with pytest.raises(FailedPrecondition):
        store.prepare("on-active", "active")  # a parent must be committed
    with pytest.raises(FailedPrecondition):
        store.commit("committed-view", "view")
    with pytest.raises(FailedPrecondition):
        store.commit("again", "base")
    store.commit("child", "active")
    assert record("child") == ("child", "base", COMMITTED)


def test_transitivity(store):
    a = store.layer("A", None, [("write", "a", b"a"), ("mkdir", "shared")])
    b = store.layer("B", "A", [("write", "b", b"b"), ("write", "shared/b", b"b")])
    c = store.layer("C", "B", [("write", "c", b"c"), ("write", "a", b"a from C")])
    store.view("C-view", "C")
    store.assert_view("C-view", [a, b, c])
    tree = store.tree("C-view")
    assert {"/a", "/b", "/c", "/shared/b"} <= tree.keys()


def test_key_reuse(store):
    store.layer("base", None, SMALL_BASE)
    store.prepare("active", "base")
    with pytest.raises(AlreadyExists):
        store.prepare("active", "base")
    with pytest.raises(AlreadyExists):
        store.view("active", "base")
    with pytest.raises(AlreadyExists):
        store.prepare("base")
    store.prepare("other")
    with pytest.raises(AlreadyExists):
        store.commit("base", "other")
    assert store.snaps.stat("other").kind == ACTIVE  # the failed commit changed nothing
    store.edit("active", [("write", "scribble", b"x")])
    store.remove("active")
    store.prepare("active", "base")  # reused after removal, and fresh
    assert "/scribble" not in store.tree("active")
    store.commit("active-done", "active")
    store.prepare("active")  # a committed key's old active name is free again
    assert store.tree("active") == {}


def test_remove(store):
    store.layer("base", None, SMALL_BASE)
    store.prepare("child", "base")
    store.view("view", "base")
    with pytest.raises(FailedPrecondition):
        store.remove("base")
    data = store.snaps.dir("child")
    assert os.path.isdir(data)
    store.remove("child")
    assert not os.path.exists(data)
    with pytest.raises(NotFound):
        store.snaps.stat("child")
    with pytest.raises(NotFound):
        store.remove("child")
    with pytest.raises(FailedPrecondition):
        store.remove("base")  # the view is a child too
    store.remove("view")
    base_data = store.snaps.dir("base")
    store.remove("base")
    assert not os.path.exists(base_data)
    assert store.snaps.walk() == []
    if store.driver == "overlay2":
        assert os.listdir(os.path.join(store.snaps.root, "l")) == []  # no dangling short links


def test_walk(store):
    store.layer("base", None, SMALL_BASE)
    store.prepare("active", "base")
    store.view("view", "base")
    kinds = {info.key: (info.kind, info.parent) for info in store.snaps.walk()}
    assert kinds == {"base": (COMMITTED, None), "active": (ACTIVE, "base"),
                     "view": (VIEW, "base")}
    seen = []
    assert store.snaps.walk(seen.append) is None
    assert sorted(info.key for info in seen) == ["active", "base", "view"]


def test_layer_file_update(store):
    steps = [store.layer("L1", None, [("mkdir", "etc"), ("write", "etc/f", b"1")])]
    steps.append(store.layer("L2", "L1", [("write", "etc/f", b"version two")]))
    steps.append(store.layer("L3", "L2", [("write", "etc/f", b"3")]))
    steps.append(store.layer("L4", "L3", [("append", "etc/f", b" and four")]))
    for i in range(4):
        store.view(f"V{i + 1}", f"L{i + 1}")
    for i in range(4):
        store.assert_view(f"V{i + 1}", steps[: i + 1])
    with store.merged("V4") as path, open(os.path.join(path, "etc/f"), "rb") as f:
        assert f.read() == b"3 and four"


def test_remove_directory_in_lower_layer(store):
    steps = [store.layer("L1", None, [
        ("mkdir", "lib"), ("write", "lib/a", b"a"), ("mkdir", "lib/sub"),
        ("write", "lib/sub/b", b"b"), ("mkdir", "lib/sub/deeper"), ("write", "other", b"o"),
    ])]
    steps.append(store.layer("L2", "L1", [
        ("rmtree", "lib"), ("mkdir", "lib", 0o750), ("write", "lib/new", b"n"),
    ]))
    steps.append(store.layer("L3", "L2", [("write", "unrelated", b"u")]))
    steps.append(store.layer("L4", "L3", [("mkdir", "lib/sub"), ("write", "lib/sub/c", b"c")]))
    steps.append(store.layer("L5", "L4", [("write", "lib/more", b"m")]))
    for i in range(1, 6):
        store.view(f"V{i}", f"L{i}")
        store.assert_view(f"V{i}", steps[:i])
    top = store.tree("V5")
    assert "/lib/a" not in top and "/lib/sub/b" not in top and "/lib/sub/deeper" not in top
    assert "/lib/sub/c" in top


def test_chown(store):
    base = store.layer("base", None, SMALL_BASE)
    store.prepare("c", "base")
    step = store.edit("c", [("chown", "dir/other", 1000, 2000), ("chown", "link", 3, 4)])
    store.assert_view("c", [base, step])
    if store.driver == "overlay2":
        upper = _upper_paths(store, "c")
        assert upper == ["dir", "dir/other", "link"]
        st = os.lstat(os.path.join(store.snaps.dir("c"), "dir/other"))
        assert (st.st_uid, st.st_gid) == (1000, 2000)
    store.view("base-view", "base")
    store.assert_view("base-view", [base])


def test_directory_permission_on_commit(store):
    base = store.layer("base", None, [
        ("mkdir", "private", 0o700), ("mkdir", "group", 0o750), ("chown", "group", 1000, 2000),
        ("mkdir", "sticky", 0o1777), ("mkdir", "setgid", 0o2775), ("mkdir", "traverse", 0o711),
        ("mkdir", "private/inner", 0o500),
    ])
    child = store.layer("child", "base", [
        ("chmod", "group", 0o770), ("mkdir", "sticky/mine", 0o700),
        ("chown", "sticky/mine", 1000, 1000), ("chmod", "traverse", 0o755),
    ])
    store.view("base-view", "base")
    store.view("child-view", "child")
    store.assert_view("base-view", [base])
    store.assert_view("child-view", [base, child])
    tree = store.tree("child-view")
    assert tree["/private"].mode == 0o700 and tree["/private/inner"].mode == 0o500
    assert tree["/sticky"].mode == 0o1777 and tree["/setgid"].mode == 0o2775
    assert (tree["/group"].mode, tree["/group"].uid, tree["/group"].gid) == (0o770, 1000, 2000)


def test_remove_intermediate_snapshot(store):
    store.layer("base", None, SMALL_BASE)
    store.layer("mid", "base", [("write", "mid", b"m")])
    store.prepare("top", "mid")
    for key in ("mid", "base"):
        with pytest.raises(FailedPrecondition):
            store.remove(key)
    assert store.tree("top")["/mid"].type == "file"  # refused removals changed nothing
    for key in ("top", "mid", "base"):
        store.remove(key)
    assert store.snaps.walk() == []


def test_deleted_files_in_child_snapshot(store):
    base = store.layer("base", None, [
        ("mkdir", "foo"), ("write", "foo/bar", b"bar"), ("write", "foo/keep", b"k"),
        ("mkdir", "baz"), ("write", "baz/x", b"x"),
    ])
    store.prepare("child-active", "base")
    child = store.edit("child-active", [("unlink", "foo/bar"), ("rmtree", "baz")])
    store.assert_view("child-active", [base, child])
    store.commit("child", "child-active")
    store.view("child-view", "child")
    store.view("base-view", "base")
    child_tree, base_tree = store.tree("child-view"), store.tree("base-view")
    assert "/foo/bar" not in child_tree and "/baz" not in child_tree
    assert "/foo/bar" in base_tree and "/baz/x" in base_tree
    store.assert_view("child-view", [base, child])
    store.assert_view("base-view", [base])


def test_move_file_from_lower_layer(store):
    base = store.layer("base", None, [
        ("mkdir", "a"), ("write", "a/file1", b"one"), ("write", "a/file2", b"two"),
        ("mkdir", "b"),
    ])
    child = store.layer("child", "base", [
        ("rename", "a/file1", "a/file1.moved"), ("rename", "a/file2", "b/file2"),
    ])
    store.view("child-view", "child")
    store.assert_view("child-view", [base, child])
    assert store.changes("child") == [
        ("C", "/a"), ("D", "/a/file1"), ("A", "/a/file1.moved"), ("D", "/a/file2"),
        ("C", "/b"), ("A", "/b/file2"),
    ]


def _expect_readonly_error(action) -> None:
    with pytest.raises(OSError) as info:
        action()
    assert info.value.errno in (errno.EROFS, errno.EPERM), info.value


def test_view_readonly(store):
    base = store.layer("base", None, SMALL_BASE)
    child = store.layer("child", "base", [("write", "child", b"c")])
    for key, parent, steps in (("v1", "base", [base]), ("v2", "child", [base, child])):
        store.view(key, parent)
        with store.merged(key, force_mount=True) as path:
            before = snapshot_tree(path)
            _expect_readonly_error(lambda: os.open(os.path.join(path, "new"), os.O_WRONLY | os.O_CREAT))
            _expect_readonly_error(lambda: os.open(os.path.join(path, "top"), os.O_RDWR))
            _expect_readonly_error(lambda: os.unlink(os.path.join(path, "top")))
            _expect_readonly_error(lambda: os.chmod(os.path.join(path, "dir"), 0o700))
            _expect_readonly_error(lambda: os.mkdir(os.path.join(path, "d")))
            assert_same_tree(before, snapshot_tree(path), "a view before and after failed writes")
        store.assert_view(key, steps)
        if store.driver == "vfs":  # a plain directory underneath: it must not have changed
            assert_same_tree(snapshot_tree(store.snaps.dir(key)),
                             snapshot_tree(store.reference(steps)), "the vfs view's directory")
    store.view("base-view", "base")
    store.assert_view("base-view", [base])


def test_rename(store):
    base = store.layer("base", None, [
        ("write", "f", b"f"), ("mkdir", "lowerdir"), ("write", "lowerdir/x", b"x"),
        ("mkdir", "d"), ("write", "d/file", b"file"),
    ])
    store.prepare("c", "base")
    steps = [base, store.edit("c", [
        ("rename", "f", "f2"),  # a lower file
        ("rename", "d/file", "moved"),  # a lower file, to another directory
        ("mkdir", "newdir"), ("write", "newdir/y", b"y"),
        ("rename", "newdir", "newdir2"),  # a directory that exists only in this snapshot
    ])]
    expected = rename_lower_dir_errno(store.driver)
    if expected is None:
        steps.append(store.edit("c", [("rename", "lowerdir", "lowerdir2")]))
    else:
        with pytest.raises(OSError) as info:
            store.edit("c", [("rename", "lowerdir", "lowerdir2")])
        assert info.value.errno == expected
        # What mv does after EXDEV: copy, then delete.
        steps.append(store.edit("c", [("mkdir", "lowerdir2"), ("write", "lowerdir2/x", b"x"),
                                      ("rmtree", "lowerdir")]))
    store.assert_view("c", steps)
    store.commit("c-done", "c")
    store.view("c-view", "c-done")
    store.assert_view("c-view", steps)


# ------------------------------------------------------------------------------ copy-on-write


def test_reading_copies_nothing(store):
    base = store.layer("base", None, RICH_BASE)
    store.prepare("c", "base")
    with store.merged("c") as path:
        snapshot_tree(path)  # reads every file, lists every dir and xattr
        for directory, _, files in os.walk(path):
            for name in files:
                if stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode):
                    with open(os.path.join(directory, name), "rb") as f:
                        f.read()
    assert store.snaps.usage("c") == (0, 0)
    assert store.changes("c") == []
    if store.driver == "overlay2":
        assert _upper_paths(store, "c") == []
    store.assert_view("c", [base])


COPY_UP_EDITS = {
    "write": ("write", "dir/target", b"rewritten"),
    "append": ("append", "dir/target", b"!"),
    "truncate": ("truncate", "dir/target", 10),
    "chmod": ("chmod", "dir/target", 0o600),
    "chown": ("chown", "dir/target", 1000, 1000),
    "utime": ("utime", "dir/target", 1_234_567_890),
    "setxattr": ("setxattr", "dir/target", "user.tag", b"v"),
}


@pytest.mark.parametrize("operation", sorted(COPY_UP_EDITS))
def test_first_change_copies_up_only_that_file(store, operation):
    base = store.layer("base", None, SMALL_BASE)
    store.prepare("c1", "base")
    store.prepare("c2", "base")
    step = store.edit("c1", [COPY_UP_EDITS[operation]])
    assert store.changes("c1") == [("C", "/dir"), ("C", "/dir/target")]
    if store.driver == "overlay2":
        assert _upper_paths(store, "c1") == ["dir", "dir/target"]
        copied = os.path.join(store.snaps.dir("c1"), "dir/target")
        expected_size = {"write": 9, "append": 65537, "truncate": 10}.get(operation, 65536)
        assert os.lstat(copied).st_size == expected_size  # the whole file, not a sparse stub
    store.assert_view("c1", [base, step])
    store.assert_view("c2", [base], "another container on the same parent")
    store.view("image", "base")
    store.assert_view("image", [base], "the image layer")


def test_delete_leaves_whiteout(store):
    base = store.layer("base", None, SMALL_BASE)
    store.prepare("c", "base")
    step = store.edit("c", [("unlink", "dir/other"), ("unlink", "link")])
    assert store.changes("c") == [("C", "/dir"), ("D", "/dir/other"), ("D", "/link")]
    if store.driver == "overlay2":
        for rel in ("dir/other", "link"):
            st = os.lstat(os.path.join(store.snaps.dir("c"), rel))
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    store.assert_view("c", [base, step])
    store.view("image", "base")
    store.assert_view("image", [base])


def test_rmdir_then_mkdir_is_opaque(store):
    base = store.layer("base", None, SMALL_BASE)
    store.prepare("c", "base")
    step = store.edit("c", [("rmtree", "dir"), ("mkdir", "dir", 0o700), ("write", "dir/z", b"z")])
    tree = store.tree("c")
    assert sorted(path for path in tree if path.startswith("/dir/")) == ["/dir/z"]
    assert store.changes("c") == [("C", "/dir"), ("D", "/dir/other"), ("D", "/dir/sub"),
                                  ("D", "/dir/target"), ("A", "/dir/z")]
    if store.driver == "overlay2":
        upper = os.path.join(store.snaps.dir("c"), "dir")
        # trusted.overlay.opaque as root, user.overlay.opaque in a rootless store's namespace
        assert os.getxattr(upper, overlay_xattr_prefix() + "opaque") == b"y"
    store.assert_view("c", [base, step])
    store.commit("child", "c")
    store.prepare("grandchild", "child")  # the lower children stay hidden one layer further up
    store.assert_view("grandchild", [base, step])


# Touch every non-hard-linked entry of RICH_BASE without changing it: the copy-up alone must keep
# owner, mode bits, xattrs (file capabilities included) and times.
COPY_UP_EVERYTHING = [
    ("chmod", "bin/su", 0o4755), ("chmod", "bin/wall", 0o2755), ("chmod", "bin/ping", 0o755),
    ("chmod", "etc/hostname", 0o644), ("chmod", "etc/shadow", 0o640),
    ("chmod", "tmp", 0o1777), ("chmod", "tmp/fifo", 0o620), ("chmod", "srv", 0o2775),
    ("chmod", "home/user/.profile", 0o600), ("chmod", "var/empty", 0o711),
    ("chmod", "var/zero", 0o644), ("chmod", "empty", 0o755),
]


def test_metadata_survives_layering(store):
    base = store.layer("base", None, RICH_BASE)
    child = store.layer("child", "base", [("write", "unrelated", b"u")])
    store.prepare("c", "child")
    step = store.edit("c", COPY_UP_EVERYTHING)
    steps = [base, child, step]
    store.assert_view("c", steps)
    if store.driver == "overlay2":
        assert "bin/ping" in _upper_paths(store, "c")  # really copied up
    with store.merged("c") as path:
        ping = os.path.join(path, "bin/ping")
        assert os.getxattr(ping, "security.capability") == CAPABILITY
        if shutil.which("getcap"):
            out = subprocess.run(["getcap", ping], capture_output=True, text=True, check=True)
            assert "cap_net_bind_service" in out.stdout
    store.commit("c-done", "c")
    store.view("c-view", "c-done")
    store.assert_view("c-view", steps)
    tar = store.diff("c-done")  # and through a layer tar
    store.prepare("applied", "child")
    store.apply("applied", tar)
    store.assert_view("applied", steps)


def test_hard_links_on_copy_up(store):
    base = store.layer("base", None, [("write", "a", b"old"), ("hardlink", "b", "a")])
    store.prepare("c", "base")
    step = store.edit("c", [("write", "a", b"new")])
    if copy_up_keeps_hard_links(store.driver):
        store.assert_view("c", [base, step])
    else:  # overlayfs without index: the copy-up gives "a" an inode of its own
        tree = store.tree("c")
        assert tree["/a"].links is None and tree["/b"].links is None
        with store.merged("c") as path, open(os.path.join(path, "b"), "rb") as f:
            assert f.read() == b"old"
    store.view("image", "base")
    store.assert_view("image", [base])




def test_hard_link_to_lower_file_in_diff(store, request):
    """A new name for a lower file: the layer tar must carry both names as one inode."""
    base = store.layer("base", None, [("write", "a", b"data")])
    child = store.layer("child", "base", [("hardlink", "b", "a")])
    store.view("child-view", "child")
    store.assert_view("child-view", [base, child])
    tar = store.diff("child")
    store.prepare("applied", "base")
    store.apply("applied", tar)
    store.assert_view("applied", [base, child])


def test_usage(store):
    store.layer("base", None, SMALL_BASE)
    store.prepare("c", "base")
    assert store.snaps.usage("c") == (0, 0)
    store.edit("c", [("write", "big", b"z" * 12345)])
    assert store.snaps.usage("c") == (12345, 1)
    store.edit("c", [("hardlink", "big-link", "big")])
    assert store.snaps.usage("c") == (12345, 1)  # a hard link counts once
    store.edit("c", [("write", "dir/small", b"abc")])
    assert store.snaps.usage("c") == (12348, 3)  # + the file + its (copied-up) directory
    store.commit("done", "c")
    assert store.snaps.usage("done") == (12348, 3)
    store.view("v", "done")
    assert store.snaps.usage("v") == (0, 0)
