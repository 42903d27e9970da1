"""Graph-driver conformance (the cases of moby's graphtest, written from their descriptions).

Each case runs against every driver: edits go through the snapshot's mount and into a flat
reference directory, and the merged views must equal the references.
"""

import pytest

from lamina.errors import InvalidArgument
from lamina.mount import PAGE_LIMIT
from lamina.snapshots import ACTIVE, COMMITTED, MAX_DEPTH, VIEW

from .treeutil import RICH_BASE, assert_same_tree, snapshot_tree

pytestmark = pytest.mark.mount

CHILD = [
    ("write", "etc/hostname", b"child\n"),  # a lower file, rewritten
    ("write", "etc/motd", b"welcome\n"),  # a new file in a lower dir
    ("unlink", "bin/ls"),  # one name of a hard-linked pair
    ("rmtree", "home/user"),  # a lower dir with children
    ("chmod", "tmp", 0o1770),
    ("mkdir", "srv/www", 0o750),
    ("write", "srv/www/index.html", b"<html>" * 1000, 0o640),
    ("symlink", "srv/www/host", "../../etc/hostname"),
    ("rename", "etc/shadow", "etc/shadow-"),
    ("setxattr", "var/zero", "user.note", b"child"),
]


def test_create_empty(store):
    store.prepare("empty-active")
    assert store.tree("empty-active") == {}
    assert store.snaps.usage("empty-active") == (0, 0)
    store.commit("empty", "empty-active")
    store.view("empty-view", "empty")
    assert store.tree("empty") == {}
    assert store.tree("empty-view") == {}
    assert store.snaps.stat("empty").kind == COMMITTED
    assert store.snaps.stat("empty-view").kind == VIEW


def test_create_base(store):
    steps = [store.layer("base", None, RICH_BASE)]
    store.view("base-view", "base")
    store.assert_view("base", steps)
    store.assert_view("base-view", steps)
    tree = store.tree("base-view")
    assert tree["/bin/su"].mode == 0o4755
    assert tree["/bin/wall"].mode == 0o2755 and tree["/bin/wall"].gid == 5
    assert tree["/tmp"].mode == 0o1777
    assert tree["/bin/ls"].links == ("/bin/busybox", "/bin/ls")
    assert dict(tree["/bin/ping"].xattrs)["security.capability"][:4] == b"\x01\x00\x00\x02"


def test_create_snap(store):
    base = store.layer("base", None, RICH_BASE)
    store.prepare("child-active", "base")
    child = store.edit("child-active", CHILD)
    store.assert_view("child-active", [base, child])
    store.commit("child", "child-active")
    store.view("child-view", "child")
    store.assert_view("child-view", [base, child])
    store.view("base-view", "base")
    store.assert_view("base-view", [base], "the parent after its child was written")


def _deep_chain(store, layers: int) -> list:
    """``layers`` committed layers L000..: each adds a file and rewrites one of the layer below."""
    steps = [store.layer("L000", None, [("mkdir", "d"), ("write", "d/f000", b"0"),
                                         ("write", "counter", b"0")])]
    for i in range(1, layers):
        edits = [("write", f"d/f{i:03}", str(i).encode() * i),
                 ("append", f"d/f{i - 1:03}", b"+"),
                 ("write", "counter", str(i).encode())]
        steps.append(store.layer(f"L{i:03}", f"L{i - 1:03}", edits))
    return steps


def test_deep_layer_read_to_the_limit(store):
    """As deep as the driver stacks: 128 lowers (Docker's limit, one page of short-link options),
    500 with overlay2 where the kernel takes lowers one by one (Linux 6.5: past the page)."""
    limit = store.snaps.max_depth
    steps = _deep_chain(store, limit)
    top = f"L{limit - 1:03}"
    store.view("top-view", top)
    store.assert_view("top-view", steps)  # every lower in one read-only mount
    store.prepare("top-rw", top)  # all of them + an upper
    options = len(",".join(store.snaps.mounts("top-rw")[0].options))
    assert options <= PAGE_LIMIT or limit > MAX_DEPTH  # past the page: fsconfig, not truncated
    step = store.edit("top-rw", [("write", "d/f000", b"rewritten"), ("write", "new", b"new")])
    store.assert_view("top-rw", steps + [step])
    middle = f"L{limit // 2:03}"
    store.view("middle-view", middle)
    store.assert_view("middle-view", steps[: limit // 2 + 1])
    # One more layer is past what a mount may stack: refused up front, not silently truncated.
    store.commit(f"L{limit:03}", "top-rw")
    with pytest.raises(InvalidArgument):
        store.prepare("too-deep", f"L{limit:03}")
    with pytest.raises(InvalidArgument):
        store.view("too-deep", f"L{limit:03}")
    assert store.snaps.stat(f"L{limit:03}").kind == COMMITTED


def test_overlay2_stacks_past_one_page_of_options():
    """overlay2 stacks the kernel's 500 lowers where it takes them one by one, else Docker's 128."""
    from lamina.mount import lowers_one_by_one
    from lamina.snapshots.overlay2 import Overlay2

    assert Overlay2.max_depth.fget(None) == (500 if lowers_one_by_one() else MAX_DEPTH)


def test_diff_apply(store):
    base = store.layer("base", None, RICH_BASE)
    child = store.layer("child", "base", CHILD)
    tar = store.diff("child")
    store.prepare("applied-active", "base")
    stats = store.apply("applied-active", tar)
    store.commit("applied", "applied-active")
    assert stats.tar_size == len(tar)
    assert_same_tree(store.tree("applied"), store.tree("child"), "applied diff and original child")
    store.assert_view("applied", [base, child])
    assert store.changes("applied") == store.changes("child")




def test_diff_apply_reproducible(store, request):
    """Re-exporting an applied layer gives the same bytes (the same diff_id) as the original."""
    store.layer("base", None, RICH_BASE)
    store.layer("child", "base", CHILD)
    tar = store.diff("child")
    store.prepare("applied-active", "base")
    store.apply("applied-active", tar)
    store.commit("applied", "applied-active")
    assert store.diff("applied") == tar


def test_diff_apply_base_layer(store):
    base = store.layer("base", None, RICH_BASE)
    tar = store.diff("base")
    store.prepare("applied-active")
    store.apply("applied-active", tar)
    store.commit("applied", "applied-active")
    store.assert_view("applied", [base])


CHANGES_BASE = [
    ("mkdir", "a"), ("write", "a/f1", b"1"), ("write", "a/f2", b"2"),
    ("mkdir", "b"), ("write", "b/g", b"g"),
    ("mkdir", "c"), ("mkdir", "c/sub"), ("write", "c/sub/h", b"h"), ("write", "c/top", b"t"),
    ("mkdir", "d"), ("write", "d/x", b"x"),
    ("write", "keep", b"keep"),
]
CHANGES_CHILD = [
    ("write", "a/f1", b"one"),
    ("unlink", "a/f2"),
    ("rmtree", "b"),
    ("rmtree", "c"), ("mkdir", "c"), ("write", "c/new", b"n"),
    ("chmod", "d", 0o700),
    ("mkdir", "e"), ("write", "e/y", b"y"),
    ("write", "new", b"new"),
]
CHANGES_EXPECTED = [
    ("C", "/a"), ("C", "/a/f1"), ("D", "/a/f2"),
    ("D", "/b"),
    ("C", "/c"), ("A", "/c/new"), ("D", "/c/sub"), ("D", "/c/top"),
    ("C", "/d"),
    ("A", "/e"), ("A", "/e/y"),
    ("A", "/new"),
]


def test_changes(store):
    store.layer("base", None, CHANGES_BASE)
    assert store.changes("base") == [
        ("A", "/a"), ("A", "/a/f1"), ("A", "/a/f2"), ("A", "/b"), ("A", "/b/g"), ("A", "/c"),
        ("A", "/c/sub"), ("A", "/c/sub/h"), ("A", "/c/top"), ("A", "/d"), ("A", "/d/x"),
        ("A", "/keep"),
    ]
    store.prepare("child-active", "base")
    store.edit("child-active", CHANGES_CHILD)
    assert store.changes("child-active") == CHANGES_EXPECTED
    store.commit("child", "child-active")
    assert store.changes("child") == CHANGES_EXPECTED
    assert store.snaps.stat("child").kind == COMMITTED
    store.prepare("empty-child", "child")
    assert store.changes("empty-child") == []
    assert store.snaps.stat("empty-child").kind == ACTIVE


def test_same_tree_helper_reports_differences(tmp_path):
    """The comparison itself: a changed byte, mode or link target is reported by path."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x")
    (tmp_path / "b" / "f").write_bytes(b"y")
    with pytest.raises(AssertionError, match="/f"):
        assert_same_tree(snapshot_tree(str(tmp_path / "a")), snapshot_tree(str(tmp_path / "b")))
