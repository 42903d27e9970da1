"""The union driver past the conformance suite: the cases known to break union filesystems, each
through the Python API ("union") and the FUSE mount ("union-fuse"), compared with flat references;
and lamina.union's own rules (lookup, readdir, copy_up) on hand-made branches."""

import errno
import os
import subprocess

import pytest

from lamina.fsutil import copy_file
from lamina.union import MAX_NAME, UnionView

from .conformance.conftest import open_store
from .conformance.treeutil import assert_same_tree, snapshot_tree

FACES = ["union", "union-fuse"]


@pytest.fixture(params=FACES)
def store(request):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with open_store(request.param) as s:
        yield s


def _round_trip(store, parent: str, key: str, steps) -> None:
    """``key``'s layer tar applied on ``parent`` gives the same tree (and the reference)."""
    tar = store.diff(key)
    applied = key + "-applied"
    store.prepare(applied + "-active", parent)
    store.apply(applied + "-active", tar)
    store.commit(applied, applied + "-active")
    store.view(applied + "-view", applied)
    store.assert_view(applied + "-view", steps)
    assert store.diff(applied) == tar


def test_opaque_dir_under_whited_out_parent(store):
    s1 = store.layer("L1", None, [("mkdir", "a"), ("mkdir", "a/b"), ("write", "a/b/c", b"c"),
                                  ("write", "a/x", b"x"), ("mkdir", "other"),
                                  ("write", "other/b", b"same name elsewhere")])
    s2 = store.layer("L2", "L1", [("rmtree", "a"), ("mkdir", "a"), ("mkdir", "a/b"),
                                  ("write", "a/b/new", b"n")])
    s3 = store.layer("L3", "L2", [("rmtree", "a/b"), ("mkdir", "a/b", 0o700),
                                  ("write", "a/b/z", b"z")])
    for i, steps in enumerate(([s1], [s1, s2], [s1, s2, s3]), 1):
        store.view(f"V{i}", f"L{i}")
        store.assert_view(f"V{i}", steps)
    tree = store.tree("V3")
    assert "/a/x" not in tree and "/a/b/c" not in tree and "/a/b/new" not in tree
    assert tree["/other/b"].type == "file"  # a whiteout of a/b hides nothing in other/
    _round_trip(store, "L2", "L3", [s1, s2, s3])


def test_delete_then_recreate_at_every_depth(store):
    base = [("mkdir", "d1"), ("mkdir", "d1/d2"), ("mkdir", "d1/d2/d3"),
            ("write", "f0", b"0"), ("write", "d1/f1", b"1"), ("write", "d1/d2/f2", b"2"),
            ("write", "d1/d2/d3/f3", b"3")]
    steps = [store.layer("base", None, base)]
    parent = "base"
    for depth, (directory, name) in enumerate([("", "f0"), ("d1", "f1"), ("d1/d2", "f2"),
                                                ("d1/d2/d3", "f3")]):
        path = f"{directory}/{name}".lstrip("/")
        key = f"file{depth}"
        steps.append(store.layer(key, parent, [("unlink", path), ("write", path, b"again")]))
        parent = key
    for depth, directory in enumerate(["d1/d2/d3", "d1/d2", "d1"]):
        key = f"dir{depth}"
        steps.append(store.layer(key, parent, [("rmtree", directory), ("mkdir", directory),
                                               ("write", directory + "/fresh", b"f")]))
        parent = key
    store.prepare("top", parent)
    steps.append(store.edit("top", [("unlink", "d1/fresh"), ("write", "d1/fresh", b"x"),
                                    ("rmtree", "d1"), ("write", "d1", b"now a file")]))
    store.assert_view("top", steps)
    store.commit("top-done", "top")
    _round_trip(store, parent, "top-done", steps)


def test_rename_of_lower_dir(store):
    store.layer("base", None, [("mkdir", "dir"), ("write", "dir/f", b"f"),
                               ("mkdir", "dir/sub"), ("write", "dir/sub/g", b"g")])
    store.prepare("c", "base")
    if store.face == "api":
        view = store.snaps.union_view("c")
        with pytest.raises(OSError) as info:
            view.rename("/dir", "/moved")
        assert info.value.errno == errno.EXDEV
        view.mkdir("/fresh")
        view.write_file("/fresh/h", b"h")
        view.rename("/fresh", "/renamed")  # a directory of this layer moves freely
        assert view.read_file("/renamed/h") == b"h"
        assert "fresh" not in view.listdir("/")
        return
    with store.merged("c") as path:
        subprocess.run(["mv", os.path.join(path, "dir"), os.path.join(path, "moved")], check=True)
    tree = store.tree("c")  # mv fell back to copy + delete after EXDEV
    assert "/dir" not in tree and tree["/moved/sub/g"] == store.tree("base")["/dir/sub/g"]


def test_hard_link_to_lower_file_then_write(store):
    base = store.layer("base", None, [("write", "a", b"old")])
    store.prepare("c", "base")
    step = store.edit("c", [("hardlink", "b", "a"), ("append", "b", b"+new")])
    store.assert_view("c", [base, step])
    tree = store.tree("c")
    assert tree["/a"].links == ("/a", "/b")
    store.view("image", "base")
    store.assert_view("image", [base])  # the lower file never changed


def test_chmod_only_copy_up_of_large_sparse_file(store):
    store.layer("base", None, [("write", "small", b"s")])
    store.prepare("fill", "base")
    view_path = store.snaps.dir("fill")
    with open(os.path.join(view_path, "big"), "wb") as f:  # 256 MiB, 2 data extents
        f.write(b"head")
        f.seek(128 << 20)
        f.write(b"middle")
        f.truncate(256 << 20)
    store.commit("big", "fill")
    store.prepare("c", "big")
    store.edit("c", [("chmod", "big", 0o600)])
    upper = os.path.join(store.snaps.dir("c"), "big")
    st = os.stat(upper)
    assert st.st_size == 256 << 20 and st.st_mode & 0o777 == 0o600
    assert st.st_blocks * 512 < 1 << 20  # still sparse
    with open(upper, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(128 << 20)
        assert f.read(6) == b"middle"


def test_file_replaced_by_directory_and_back(store):
    s1 = store.layer("L1", None, [("write", "f", b"file"), ("mkdir", "d"), ("write", "d/x", b"x")])
    s2 = store.layer("L2", "L1", [("unlink", "f"), ("mkdir", "f"), ("write", "f/inner", b"i"),
                                  ("rmtree", "d"), ("write", "d", b"d is a file")])
    s3 = store.layer("L3", "L2", [("rmtree", "f"), ("write", "f", b"file again"),
                                  ("unlink", "d"), ("mkdir", "d"), ("write", "d/y", b"y")])
    for i, steps in enumerate(([s1], [s1, s2], [s1, s2, s3]), 1):
        store.view(f"V{i}", f"L{i}")
        store.assert_view(f"V{i}", steps)
    assert "/d/x" not in store.tree("V3")
    _round_trip(store, "L2", "L3", [s1, s2, s3])


def test_unicode_and_long_names(store):
    long_name = "n" * MAX_NAME
    names = ["naïve-ü", "日本語のファイル", "emoji-\U0001F600", "tab\tand newline\n", long_name]
    base = store.layer("base", None, [("mkdir", "dir")] + [("write", "dir/" + n, n.encode())
                                                           for n in names])
    store.prepare("c", "base")
    step = store.edit("c", [("unlink", "dir/" + long_name), ("unlink", "dir/naïve-ü"),
                            ("write", "dir/日本語のファイル", b"changed"),
                            ("mkdir", "dir/" + "d" * MAX_NAME)])
    store.assert_view("c", [base, step])
    store.commit("done", "c")
    _round_trip(store, "base", "done", [base, step])
    store.prepare("c2", "done")
    with pytest.raises(OSError) as info:  # no room for a whiteout: refused up front
        store.edit("c2", [("write", "x" * (MAX_NAME + 1), b"")])
    assert info.value.errno == errno.ENAMETOOLONG


def test_128_layers_with_whiteouts(store):
    steps = [store.layer("L000", None, [("mkdir", "d"), ("write", "d/gone", b"0"),
                                        ("write", "keep", b"0")])]
    for i in range(1, 128):
        edits = [("write", f"d/f{i:03}", b"x")]
        if i == 64:
            edits += [("unlink", "d/gone"), ("unlink", "keep"), ("write", "keep", b"64")]
        steps.append(store.layer(f"L{i:03}", f"L{i - 1:03}", edits))
    store.prepare("top", "L127")
    steps.append(store.edit("top", [("write", "d/f001", b"top")]))
    store.assert_view("top", steps)
    tree = store.tree("top")
    assert "/d/gone" not in tree and len([p for p in tree if p.startswith("/d/")]) == 127


# ---------------------------------------------------------------------------- lamina.union


def _branches(tmp_path, *layers):
    """Real branch dirs from dicts of path -> bytes (None: a directory), newest first."""
    dirs = []
    for i, files in enumerate(layers):
        root = tmp_path / f"b{i}"
        root.mkdir()
        for path, data in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                target.mkdir(exist_ok=True)
            else:
                target.write_bytes(data)
        dirs.append(str(root))
    return dirs


def test_lookup_rules(tmp_path):
    new, old = _branches(tmp_path,
                         {"a/.wh.x": b"", "b/.wh..wh..opq": b"", "b/mine": b"m", "c": b"file"},
                         {"a/x": b"x", "a/y": b"y", "x": b"top x", "b/old": b"o", "c/inner": b"i"})
    view = UnionView([new, old])
    assert sorted(view.listdir("/")) == ["a", "b", "c", "x"]
    assert view.read_file("/x") == b"top x"  # the whiteout a/.wh.x hides only a/x
    assert view.listdir("/a") == ["y"]
    assert view.listdir("/b") == ["mine"]  # opaque
    assert not view.lexists("/c/inner")  # a file hides the directory below
    assert not view.lexists("/a/.wh.x") and not view.lexists("/b/.wh..wh..opq")
    with pytest.raises(OSError) as info:
        view.mkdir("/d")
    assert info.value.errno == errno.EROFS


def test_symlinks_resolve_as_the_kernel_does(tmp_path):
    """lamina.rootpath's rules in the view: ``..`` after a symlink is its target's parent,
    absolute links and ``..`` stay inside the view, loops are ELOOP."""
    (lower,) = _branches(tmp_path, {"d/e/f": b"f", "etc/passwd": b"p"})
    os.symlink("d/e", os.path.join(lower, "link"))
    os.symlink("../../..", os.path.join(lower, "up"))
    os.symlink("/etc/passwd", os.path.join(lower, "d/pw"))
    os.symlink("loop", os.path.join(lower, "loop"))
    view = UnionView([lower])
    assert view.realpath("/link/..") == "/d"
    assert view.realpath("/up/etc/passwd") == "/etc/passwd"
    assert view.read_file("/d/pw") == b"p"
    with pytest.raises(OSError) as info:
        view.stat("/loop")
    assert info.value.errno == errno.ELOOP


def test_copy_up_keeps_metadata_and_leaves_lowers(tmp_path):
    (lower,) = _branches(tmp_path, {"dir/f": b"data"})
    os.chmod(os.path.join(lower, "dir"), 0o750)
    os.chown(os.path.join(lower, "dir/f"), 1000, 1001)
    os.setxattr(os.path.join(lower, "dir/f"), "user.k", b"v")
    os.utime(os.path.join(lower, "dir/f"), ns=(1, 2_000_000_007))
    upper = tmp_path / "upper"
    upper.mkdir()
    view = UnionView([lower], str(upper))
    before = snapshot_tree(lower)
    view.chmod("/dir/f", 0o640)
    st = os.lstat(upper / "dir" / "f")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_mtime_ns) == (1000, 1001, 0o640,
                                                                          2_000_000_007)
    assert os.getxattr(upper / "dir" / "f", "user.k") == b"v"
    assert os.lstat(upper / "dir").st_mode & 0o777 == 0o750  # the parent, with its metadata
    assert_same_tree(before, snapshot_tree(lower), "the lower branch")
    assert copy_file(os.path.join(lower, "dir/f"), str(tmp_path / "copy"), 4) in ("reflink", "range")


def test_fuse_mount_is_gone_after_umount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from lamina.mount import Mount, mount_all, unmount

    (lower,) = _branches(tmp_path, {"f": b"f"})
    upper, target = tmp_path / "upper", tmp_path / "mnt"
    upper.mkdir()
    target.mkdir()
    mount_all([Mount("union", "lamina-union", (f"lowerdir={lower}", f"upperdir={upper}"))],
              str(target))
    assert (target / "f").read_bytes() == b"f"
    (target / "g").write_bytes(b"g")
    unmount(str(target))
    assert not os.path.ismount(target) and (upper / "g").read_bytes() == b"g"
    out = subprocess.run(["pgrep", "-f", f"lamina.unionfs.*{target}"], capture_output=True,
                         text=True, check=False)
    for _ in range(50):
        if not out.stdout.strip():
            break
        import time

        time.sleep(0.05)
        out = subprocess.run(["pgrep", "-f", f"lamina.unionfs.*{target}"], capture_output=True,
                             text=True, check=False)
    assert out.stdout.strip() == ""  # the daemon ended with its mount


def test_fuse_listings_attributes_and_cached_lower_reads(tmp_path):
    """The mount's fast paths keep the view's answers: long listings (many readdirplus requests,
    resumed at offsets, two directories read in turns) give the view's names and attributes, and
    a lower file whose page cache the mount keeps shows a change made through the API."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from lamina.mount import Mount, mount_all, unmount

    names = [f"{i:04}-" + "n" * 200 for i in range(1500)]
    new, old = _branches(tmp_path,
                         {f"d/{n}": b"new" for n in names[::2]} | {"d/.wh." + names[1]: b""},
                         {f"d/{n}": n.encode() for n in names} | {f"e/{n}": b"" for n in names}
                         | {"big": b"b" * 300_000})
    upper, target = tmp_path / "upper", tmp_path / "mnt"
    upper.mkdir()
    target.mkdir()
    mount_all([Mount("union", "lamina-union", (f"lowerdir={new}:{old}", f"upperdir={upper}"))],
              str(target))
    try:
        view = UnionView([new, old], str(upper))
        with os.scandir(target / "d") as first, os.scandir(target / "e") as second:
            listed, other = [], []
            for entry in first:  # the two handles' listings must not mix
                listed.append(entry.name)
                other.extend(e.name for e in [next(second, None)] if e is not None)
            other.extend(e.name for e in second)
        assert sorted(listed) == sorted(view.listdir("/d"))
        assert names[1] not in listed and len(listed) == len(names) - 1
        assert sorted(other) == names
        for name in names[:40] + names[-40:]:
            if name == names[1]:
                continue
            got, want = os.lstat(target / "d" / name), view.lstat("/d/" + name)
            assert (got.st_mode, got.st_size, got.st_ino, got.st_mtime_ns, got.st_nlink) == (
                want.st_mode, want.st_size, want.st_ino, want.st_mtime_ns, want.st_nlink)
        assert (target / "big").read_bytes() == b"b" * 300_000
        assert (target / "big").read_bytes() == b"b" * 300_000  # from the kept page cache
        fd = view.open("/big", os.O_WRONLY)  # copied up and changed behind the mount's back
        os.pwrite(fd, b"c" * 1000, 0)
        os.close(fd)
        assert (target / "big").read_bytes() == b"c" * 1000 + b"b" * 299_000
        with open(target / "big", "r+b") as f:  # and through the mount itself
            f.write(b"d")
        assert (target / "big").read_bytes()[:2] == b"dc"
    finally:
        unmount(str(target))


def test_export_through_the_api_equals_the_mounts_tar(tmp_path):
    """write_view_tar (``lamina export`` on the union driver, no mount) writes the bytes that
    write_tree_tar writes from the FUSE mount: whiteouts, opaque dirs, hard links, symlinks,
    xattrs, unicode names, a copied-up file."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    import io

    from lamina.layertar import write_tree_tar
    from lamina.mount import Mount, mount_all, unmount
    from lamina.union import write_view_tar

    new, old = _branches(tmp_path,
                         {"a/.wh.gone": b"", "o/.wh..wh..opq": b"", "o/mine": b"m", "é/ü": b"u"},
                         {"a/gone": b"g", "a/kept": b"k", "o/hidden": b"h", "z": b"z" * 5000,
                          "b/c/d": b"deep"})
    os.link(os.path.join(old, "z"), os.path.join(old, "z-link"))
    os.symlink("../z", os.path.join(old, "a", "to-z"))
    os.setxattr(os.path.join(old, "b", "c", "d"), "user.k", b"v")
    upper, target = tmp_path / "upper", tmp_path / "mnt"
    upper.mkdir()
    target.mkdir()
    view = UnionView([new, old], str(upper))
    view.write_file("/a/kept", b"changed")
    view.mkdir("/new")
    mount_all([Mount("union", "lamina-union", (f"lowerdir={new}:{old}", f"upperdir={upper}"))],
              str(target))
    try:
        through_mount = io.BytesIO()
        write_tree_tar(through_mount, str(target))
    finally:
        unmount(str(target))
    through_api = io.BytesIO()
    write_view_tar(through_api, view)
    assert through_api.getvalue() == through_mount.getvalue()
    assert b"a/gone" not in through_api.getvalue() and b"o/hidden" not in through_api.getvalue()
