"""changes: A/C/D lists from overlay-format layer dirs and from full trees, on real files."""

import os
import shutil
import stat

from lamina.changes import Change, overlay_changes, tree_changes


def write(path, data=b"", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def opaque(path):
    os.makedirs(path, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def as_pairs(changes):
    return [(change.kind, change.path) for change in changes]


# ----------------------------------------------------------------------------- overlay format


def test_overlay_added_changed_deleted_with_parents(tmp_path):
    lower = tmp_path / "lower"
    write(lower / "etc/hosts", b"old")
    write(lower / "etc/passwd", b"root")
    write(lower / "usr/bin/tool", b"tool")
    upper = tmp_path / "upper"
    write(upper / "etc/hosts", b"new")
    write(upper / "etc/new.conf", b"added")
    whiteout(upper / "etc/passwd")
    write(upper / "srv/data/file", b"added in a new dir")
    changes = overlay_changes(str(upper), [str(lower)])
    assert as_pairs(changes) == [
        ("C", "/etc"),
        ("C", "/etc/hosts"),
        ("A", "/etc/new.conf"),
        ("D", "/etc/passwd"),
        ("A", "/srv"),
        ("A", "/srv/data"),
        ("A", "/srv/data/file"),
    ]
    assert all(isinstance(change, Change) for change in changes)


def test_overlay_no_lowers_everything_is_added(tmp_path):
    upper = tmp_path / "upper"
    write(upper / "a/b", b"x")
    os.symlink("a/b", upper / "link")
    assert as_pairs(overlay_changes(str(upper), [])) == [("A", "/a"), ("A", "/a/b"), ("A", "/link")]


def test_overlay_unchanged_copied_up_dir_is_not_reported(tmp_path):
    lower = tmp_path / "lower"
    write(lower / "keep/f", b"x")
    write(lower / "meta/f", b"x")
    upper = tmp_path / "upper"
    os.makedirs(upper / "keep")  # left behind by a file created and removed again
    os.makedirs(upper / "meta")
    os.chmod(upper / "meta", 0o700)  # chmod on the directory itself
    assert as_pairs(overlay_changes(str(upper), [str(lower)])) == [("C", "/meta")]


def test_overlay_readding_file_hidden_by_newer_lower_whiteout_is_added(tmp_path):
    old = tmp_path / "old"
    write(old / "etc/motd", b"hello")
    write(old / "var/cache/x", b"cached")
    newer = tmp_path / "newer"
    whiteout(newer / "etc/motd")
    whiteout(newer / "var/cache")  # a whiteout of an ancestor hides the whole subtree
    upper = tmp_path / "upper"
    write(upper / "etc/motd", b"again")
    write(upper / "var/cache/x", b"again")
    changes = overlay_changes(str(upper), [str(newer), str(old)])
    assert as_pairs(changes) == [
        ("C", "/etc"),
        ("A", "/etc/motd"),
        ("C", "/var"),
        ("A", "/var/cache"),
        ("A", "/var/cache/x"),
    ]
    # without the newer lower the same paths existed
    assert ("C", "/etc/motd") in as_pairs(overlay_changes(str(upper), [str(old)]))


def test_overlay_opaque_dir_in_newer_lower_hides_older_content(tmp_path):
    old = tmp_path / "old"
    write(old / "app/old.txt", b"old")
    write(old / "app/both.txt", b"old")
    newer = tmp_path / "newer"
    opaque(newer / "app")
    write(newer / "app/both.txt", b"newer")
    upper = tmp_path / "upper"
    write(upper / "app/old.txt", b"back")
    write(upper / "app/both.txt", b"changed")
    changes = overlay_changes(str(upper), [str(newer), str(old)])
    assert as_pairs(changes) == [("C", "/app"), ("C", "/app/both.txt"), ("A", "/app/old.txt")]


def test_overlay_non_directory_in_newer_lower_hides_older_dir(tmp_path):
    old = tmp_path / "old"
    write(old / "thing/inner", b"x")
    newer = tmp_path / "newer"
    write(newer / "thing", b"now a file")
    upper = tmp_path / "upper"
    write(upper / "thing/inner", b"y")  # replaced the file by a directory again
    changes = overlay_changes(str(upper), [str(newer), str(old)])
    assert as_pairs(changes) == [("C", "/thing"), ("A", "/thing/inner")]


def test_overlay_opaque_upper_dir_deletes_hidden_lower_entries(tmp_path):
    lower = tmp_path / "lower"
    write(lower / "data/a", b"a")
    write(lower / "data/b", b"b")
    os.makedirs(lower / "data/sub/deep")
    upper = tmp_path / "upper"
    opaque(upper / "data")  # rm -rf /data && mkdir /data && echo > /data/b
    write(upper / "data/b", b"recreated")
    changes = overlay_changes(str(upper), [str(lower)])
    assert as_pairs(changes) == [
        ("C", "/data"),
        ("D", "/data/a"),
        ("C", "/data/b"),
        ("D", "/data/sub"),
    ]


def test_overlay_whiteout_of_directory_is_one_delete(tmp_path):
    lower = tmp_path / "lower"
    write(lower / "big/tree/of/files", b"x")
    upper = tmp_path / "upper"
    whiteout(upper / "big")
    assert as_pairs(overlay_changes(str(upper), [str(lower)])) == [("D", "/big")]


# ----------------------------------------------------------------------------- full trees


def make_parent(parent):
    write(parent / "etc/hosts", b"127.0.0.1")
    write(parent / "etc/os-release", b"ID=debian")
    write(parent / "usr/lib/a/b/c", b"deep")
    write(parent / "usr/lib/keep", b"keep")
    write(parent / "bin/sh", b"sh", 0o755)
    os.symlink("sh", parent / "bin/link")
    os.makedirs(parent / "home/user")
    os.makedirs(parent / "quiet/dir")
    write(parent / "swap/thing/inner", b"dir becomes file")


def clone(parent, child):
    shutil.copytree(parent, child, symlinks=True)  # keeps mtime_ns


def test_tree_parent_none_is_all_added(tmp_path):
    child = tmp_path / "child"
    write(child / "a/b", b"x")
    os.makedirs(child / "empty")
    assert as_pairs(tree_changes(None, str(child))) == [("A", "/a"), ("A", "/a/b"), ("A", "/empty")]


def test_tree_identical_trees_have_no_changes(tmp_path):
    parent = tmp_path / "parent"
    make_parent(parent)
    child = tmp_path / "child"
    clone(parent, child)
    assert tree_changes(str(parent), str(child)) == []


def test_tree_add_change_delete(tmp_path):
    parent = tmp_path / "parent"
    make_parent(parent)
    child = tmp_path / "child"
    clone(parent, child)
    write(child / "etc/hosts", b"changed content")
    write(child / "etc/new", b"new")
    shutil.rmtree(child / "usr/lib/a")
    os.remove(child / "bin/link")
    os.symlink("xx", child / "bin/link")  # same length as "sh": only the target differs
    os.chmod(child / "home/user", 0o700)
    shutil.rmtree(child / "swap/thing")
    write(child / "swap/thing", b"now a file")
    os.makedirs(child / "new/sub")
    changes = tree_changes(str(parent), str(child))
    assert as_pairs(changes) == [
        ("C", "/bin"),
        ("C", "/bin/link"),
        ("C", "/etc"),
        ("C", "/etc/hosts"),
        ("A", "/etc/new"),
        ("C", "/home"),
        ("C", "/home/user"),
        ("A", "/new"),
        ("A", "/new/sub"),
        ("C", "/swap"),
        ("C", "/swap/thing"),
        ("C", "/usr"),
        ("C", "/usr/lib"),
        ("D", "/usr/lib/a"),
    ]


def test_tree_metadata_only_changes(tmp_path):
    parent = tmp_path / "parent"
    make_parent(parent)
    child = tmp_path / "child"
    clone(parent, child)
    os.chown(child / "etc/hosts", 1234, 1234)
    os.setxattr(child / "etc/os-release", "user.tag", b"v1")
    os.setxattr(child / "quiet", "user.tag", b"dir xattr")
    st = os.lstat(child / "bin/sh")
    os.utime(child / "bin/sh", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    changes = tree_changes(str(parent), str(child))
    assert as_pairs(changes) == [
        ("C", "/bin"),
        ("C", "/bin/sh"),
        ("C", "/etc"),
        ("C", "/etc/hosts"),
        ("C", "/etc/os-release"),
        ("C", "/quiet"),
    ]


def test_tree_directory_mtime_alone_is_not_a_change(tmp_path):
    parent = tmp_path / "parent"
    make_parent(parent)
    child = tmp_path / "child"
    clone(parent, child)
    os.utime(child / "quiet/dir", ns=(1, 1))
    assert tree_changes(str(parent), str(child)) == []


def test_tree_file_replaced_by_directory(tmp_path):
    parent = tmp_path / "parent"
    write(parent / "x", b"file")
    child = tmp_path / "child"
    write(child / "x/inside", b"now a dir")
    assert as_pairs(tree_changes(str(parent), str(child))) == [("C", "/x"), ("A", "/x/inside")]


def test_tree_special_files(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    os.mknod(parent / "dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(parent / "fifo")
    child = tmp_path / "child"
    child.mkdir()
    os.mknod(child / "dev", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.mkfifo(child / "fifo")
    st = os.lstat(parent / "fifo")
    os.utime(child / "fifo", ns=(st.st_atime_ns, st.st_mtime_ns))
    st = os.lstat(parent / "dev")
    os.utime(child / "dev", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert as_pairs(tree_changes(str(parent), str(child))) == [("C", "/dev")]
