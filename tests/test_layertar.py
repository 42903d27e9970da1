"""layertar: round trips through real tar files, whiteouts in both formats, hostile tars."""

import gzip
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import threading

import pytest

from lamina.changes import tree_changes
from lamina.errors import InvalidArgument
from lamina.layertar import (
    apply_tar,
    open_layer_stream,
    write_changes_tar,
    write_overlay_tar,
    write_tree_tar,
)

# security.capability v2 blob: cap_net_raw permitted + effective
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
MTIME_NS = 1_600_000_000_123_456_789


# ----------------------------------------------------------------------------- helpers


def write(path, data=b"", mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def snapshot(root, mtimes=True):
    """Everything observable about a tree, keyed by relative byte path, plus hard-link groups."""
    root = os.fsencode(root)
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    payload = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                payload = st.st_rdev
            else:
                payload = None
            xattrs = {
                key: os.getxattr(path, key, follow_symlinks=False)
                for key in os.listxattr(path, follow_symlinks=False)
            }
            mtime = None
            if mtimes and not stat.S_ISDIR(st.st_mode):
                mtime = st.st_mtime_ns
            entries[rel] = (
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                payload,
                xattrs,
                mtime,
            )
            if not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, set()).add(rel)
    links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return entries, links


def outside_state(tmp_path, root):
    """Every path under tmp_path that is not inside root, with its lstat mode and mtime."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        if os.path.abspath(dirpath).startswith(os.path.abspath(root)):
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.abspath(path) == os.path.abspath(root):
                continue
            st = os.lstat(path)
            state[path] = (st.st_mode, st.st_mtime_ns, st.st_size, st.st_uid)
    return state


def make_tar(members, fmt=tarfile.PAX_FORMAT):
    """members: (name, kind, extra) with kind in file/dir/symlink/link/raw-info."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                data = extra or b""
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = extra if extra is not None else 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
            tf.addfile(info)
    return buf.getvalue()


def tar_names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return [member.name for member in tf]


def build_tree(root):
    os.makedirs(root)
    os.mkdir(f"{root}/etc")
    write(f"{root}/etc/hosts", b"127.0.0.1 localhost\n")
    write(f"{root}/etc/empty")
    write(f"{root}/big", os.urandom(3 * 1024 * 1024 + 7))  # crosses the 1 MiB read chunks
    write(f"{root}/setuid", b"#!/bin/sh\n", 0o4755)
    write(f"{root}/setgid", b"x", 0o2711)
    os.mkdir(f"{root}/tmp")
    os.chmod(f"{root}/tmp", 0o1777)
    os.makedirs(f"{root}/empty/deeper")
    os.mkdir(f"{root}/owned")
    os.chown(f"{root}/owned", 1234, 1234)
    write(f"{root}/owned/file", b"mine", 0o640)
    os.chown(f"{root}/owned/file", 1234, 1234)
    os.symlink("../etc/hosts", f"{root}/owned/link")
    os.chown(f"{root}/owned/link", 1234, 1234, follow_symlinks=False)
    os.symlink("/does/not/exist", f"{root}/dangling")
    os.symlink("/etc/passwd", f"{root}/absolute-link")
    write(f"{root}/hard1", b"shared inode")
    os.link(f"{root}/hard1", f"{root}/etc/hard2")
    os.link(f"{root}/hard1", f"{root}/owned/hard3")
    os.mkfifo(f"{root}/fifo", 0o620)
    os.mknod(f"{root}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(f"{root}/loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    write(f"{root}/ping", b"\x7fELF")
    os.setxattr(f"{root}/ping", "security.capability", CAPABILITY)
    os.setxattr(f"{root}/ping", "user.binary", bytes(range(256)))
    os.setxattr(f"{root}/etc", "user.dir", b"on a dir")
    write(f"{root}/ünïcødé-名前", b"unicode")
    write(f"{root}/" + "n" * 255, b"long name")
    os.makedirs(f"{root}/" + "/".join(["d" * 100] * 3))  # path longer than the ustar fields
    write(os.fsencode(root) + b"/latin1-\xe9", b"not utf-8")
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
        os.utime(dirpath, ns=(MTIME_NS, MTIME_NS))


def whole_seconds(entries):
    """The writer stores whole seconds (as Docker does)."""
    fixed = {}
    for rel, (kind, mode, uid, gid, payload, xattrs, mtime) in entries.items():
        if mtime is not None:
            mtime -= mtime % 1_000_000_000
        fixed[rel] = (kind, mode, uid, gid, payload, xattrs, mtime)
    return fixed


def tar_of(function, *args):
    buf = io.BytesIO()
    stats = function(buf, *args)
    return buf.getvalue(), stats


# ----------------------------------------------------------------------------- round trips


def test_tree_round_trip_reproduces_everything(tmp_path):
    src = tmp_path / "src"
    build_tree(str(src))
    data, written = tar_of(write_tree_tar, str(src))
    dest = tmp_path / "dest"
    dest.mkdir()
    applied = apply_tar(io.BytesIO(data), str(dest), "plain")

    want_entries, want_links = snapshot(src)
    got_entries, got_links = snapshot(dest)
    assert got_entries == whole_seconds(want_entries)
    assert got_links == want_links
    assert os.getxattr(dest / "ping", "security.capability") == CAPABILITY
    assert stat.S_IMODE(os.lstat(dest / "setuid").st_mode) == 0o4755
    assert os.stat(dest / "etc").st_mtime_ns == MTIME_NS - MTIME_NS % 1_000_000_000

    assert written.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert written.tar_size == len(data)
    assert applied.diff_id == written.diff_id and applied.tar_size == written.tar_size
    assert applied.inodes == written.inodes == len(want_entries)
    # content bytes: regular files once per inode plus symlink targets
    assert written.size == applied.size


def test_written_tar_shape(tmp_path):
    src = tmp_path / "src"
    build_tree(str(src))
    data, _ = tar_of(write_tree_tar, str(src))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        members = {m.name: m for m in tf}
        names = list(members)
    assert names.index("etc") < names.index("etc/hosts")
    assert not any(name.startswith(("./", "/")) for name in names)
    assert members["owned/file"].uid == 1234 and members["owned/file"].uname == ""
    assert members["setuid"].mode == 0o4755
    # hard links point at the first path written for the inode ("etc/" sorts before "hard1")
    assert members["etc/hard2"].isreg()
    assert members["hard1"].islnk() and members["hard1"].linkname == "etc/hard2"
    assert members["owned/hard3"].islnk() and members["owned/hard3"].linkname == "etc/hard2"
    assert members["null"].ischr()
    assert (members["null"].devmajor, members["null"].devminor) == (1, 3)
    cap = members["ping"].pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == CAPABILITY
    assert b"SCHILY.xattr.security.capability=" + CAPABILITY + b"\n" in data
    assert data.endswith(b"\0" * 1024)


def test_socket_skipped_and_pipe_input(tmp_path):
    import socket

    src = tmp_path / "src"
    src.mkdir()
    write(src / "a", b"a" * 5000)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    data, _ = tar_of(write_tree_tar, str(src))
    sock.close()
    assert tar_names(data) == ["a"]

    read_fd, write_fd = os.pipe()

    def feed():
        with open(write_fd, "wb") as pipe:
            pipe.write(gzip.compress(data, compresslevel=1))

    thread = threading.Thread(target=feed)
    thread.start()
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(read_fd, "rb", buffering=0) as pipe:
        stats = apply_tar(open_layer_stream(pipe), str(dest), "plain")
    thread.join()
    assert (dest / "a").read_bytes() == b"a" * 5000
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_open_layer_stream_detects_compression(tmp_path, compression):
    src = tmp_path / "src"
    src.mkdir()
    write(src / "f", b"payload")
    data, written = tar_of(write_tree_tar, str(src))
    if compression == "gzip":
        blob = gzip.compress(data)
    elif compression == "zstd":
        zstandard = pytest.importorskip("zstandard")
        blob = zstandard.ZstdCompressor().compress(data)
    else:
        blob = data
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = apply_tar(open_layer_stream(io.BytesIO(blob)), str(dest), "overlay")
    assert (dest / "f").read_bytes() == b"payload"
    assert stats.diff_id == written.diff_id


def test_diff_id_covers_bytes_after_end_of_archive(tmp_path):
    data = make_tar([("f", "file", b"x")])  # tarfile pads to a 10 KiB record
    padded = data + b"\0" * 4096
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = apply_tar(io.BytesIO(padded), str(dest), "plain")
    assert stats.diff_id == "sha256:" + hashlib.sha256(padded).hexdigest()
    assert stats.tar_size == len(padded)
    assert (stats.size, stats.inodes) == (1, 1)


def test_pax_mtime_nanoseconds_restored(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.mtime = 1_700_000_000
        info.pax_headers = {"mtime": "1700000000.123456789"}
        tf.addfile(info, io.BytesIO(b""))
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_tar(io.BytesIO(buf.getvalue()), str(dest), "plain")
    assert os.lstat(dest / "f").st_mtime_ns == 1_700_000_000_123_456_789


def test_entries_replace_existing_ones(tmp_path):
    root = tmp_path / "root"
    os.makedirs(root / "was-dir/sub")
    write(root / "was-dir/sub/f", b"old")
    write(root / "was-file", b"old")
    os.mkdir(root / "stays-dir")
    write(root / "stays-dir/keep", b"keep")
    os.symlink("elsewhere", root / "was-link")
    data = make_tar(
        [
            ("was-dir", "file", b"now a file"),
            ("was-file", "dir", 0o700),
            ("stays-dir", "dir", 0o711),
            ("was-link", "file", b"now a file too"),
        ]
    )
    apply_tar(io.BytesIO(data), str(root), "plain")
    assert (root / "was-dir").read_bytes() == b"now a file"
    assert stat.S_IMODE(os.lstat(root / "was-file").st_mode) == 0o700
    assert (root / "stays-dir/keep").read_bytes() == b"keep"
    assert stat.S_IMODE(os.lstat(root / "stays-dir").st_mode) == 0o711
    assert not os.path.islink(root / "was-link")


# ----------------------------------------------------------------------------- whiteouts


def build_overlay_upper(upper):
    os.makedirs(upper / "etc")
    write(upper / "etc/hosts", b"changed")
    whiteout(upper / "etc/gone")
    whiteout(upper / "gone-dir")
    os.mkdir(upper / "opq")
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    write(upper / "opq/new", b"new")
    os.makedirs(upper / "opq/sub")
    write(upper / "opq/sub/inner", b"inner")


def build_parent(parent):
    os.makedirs(parent / "etc")
    write(parent / "etc/hosts", b"original")
    write(parent / "etc/gone", b"deleted by the layer")
    write(parent / "etc/kept", b"kept")
    os.makedirs(parent / "gone-dir/deep")
    write(parent / "gone-dir/deep/f", b"f")
    os.makedirs(parent / "opq/sub")
    write(parent / "opq/old", b"hidden by opaque")
    write(parent / "opq/sub/old-inner", b"hidden too")


def test_overlay_tar_round_trip(tmp_path):
    upper = tmp_path / "upper"
    build_overlay_upper(upper)
    data, written = tar_of(write_overlay_tar, str(upper))
    names = tar_names(data)
    assert "etc/.wh.gone" in names and ".wh.gone-dir" in names
    assert names.index("opq") + 1 == names.index("opq/.wh..wh..opq")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        assert all("trusted.overlay" not in key for m in tf for key in m.pax_headers)

    layer = tmp_path / "layer"
    layer.mkdir()
    applied = apply_tar(io.BytesIO(data), str(layer), "overlay")
    assert snapshot(layer, mtimes=False) == snapshot(upper, mtimes=False)
    assert os.getxattr(layer / "opq", "trusted.overlay.opaque") == b"y"
    assert os.lstat(layer / "etc/gone").st_rdev == 0
    assert applied.diff_id == written.diff_id
    assert applied.inodes == written.inodes


def test_overlay_tar_applied_plain_gives_merged_tree(tmp_path):
    upper = tmp_path / "upper"
    build_overlay_upper(upper)
    data, _ = tar_of(write_overlay_tar, str(upper))
    root = tmp_path / "root"
    build_parent(root)
    apply_tar(io.BytesIO(data), str(root), "plain")
    files = sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in dirs + names
    )
    assert files == [
        "etc",
        "etc/hosts",
        "etc/kept",
        "opq",
        "opq/new",
        "opq/sub",
        "opq/sub/inner",
    ]
    assert (root / "etc/hosts").read_bytes() == b"changed"
    assert "trusted.overlay.opaque" not in os.listxattr(root / "opq")


def test_plain_opaque_marker_after_children(tmp_path):
    root = tmp_path / "root"
    os.makedirs(root / "d/keepdir")
    write(root / "d/old", b"old")
    write(root / "d/keepdir/old", b"old")
    data = make_tar(
        [
            ("d/keepdir/new", "file", b"new"),  # implicit parent that existed below
            ("d/a-new", "file", b"a"),
            ("d/.wh..wh..opq", "file", b""),
            ("d/z-new", "file", b"z"),
        ]
    )
    apply_tar(io.BytesIO(data), str(root), "plain")
    assert sorted(os.listdir(root / "d")) == ["a-new", "keepdir", "z-new"]
    assert os.listdir(root / "d/keepdir") == ["new"]


def test_plain_whiteout_does_not_hide_its_own_layer(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    data = make_tar([("f", "file", b"mine"), (".wh.f", "file", b""), (".wh.absent", "file", b"")])
    apply_tar(io.BytesIO(data), str(root), "plain")
    assert (root / "f").read_bytes() == b"mine"


def test_changes_tar_rebuilds_child_tree(tmp_path):
    parent = tmp_path / "parent"
    build_parent(parent)
    child = tmp_path / "child"
    shutil.copytree(parent, child, symlinks=True)
    write(child / "etc/hosts", b"changed")
    os.remove(child / "etc/gone")
    shutil.rmtree(child / "gone-dir")
    os.makedirs(child / "new/dir")
    write(child / "new/dir/file", b"new")
    os.link(child / "new/dir/file", child / "new/link")
    os.chmod(child / "opq", 0o700)
    changes = tree_changes(str(parent), str(child))
    data, stats = tar_of(write_changes_tar, str(child), changes)
    names = tar_names(data)
    assert "etc/.wh.gone" in names and ".wh.gone-dir" in names
    assert "gone-dir/deep/f" not in names and "etc/kept" not in names
    assert stats.size == len(b"changed") + len(b"new")

    apply_tar(io.BytesIO(data), str(parent), "plain")
    got, links = snapshot(parent, mtimes=False)
    want, want_links = snapshot(child, mtimes=False)
    assert got == want and links == want_links
    changed_ns = os.lstat(child / "etc/hosts").st_mtime_ns
    assert os.lstat(parent / "etc/hosts").st_mtime_ns == changed_ns - changed_ns % 10**9
    assert os.lstat(parent / "etc/kept").st_mtime_ns == os.lstat(child / "etc/kept").st_mtime_ns


# ----------------------------------------------------------------------------- hostile tars


@pytest.fixture
def arena(tmp_path):
    """A root to extract into and a sentinel sibling that must stay untouched."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "keep", b"sentinel")
    return root, outside


def assert_rejected(tmp_path, root, data, fmt="plain"):
    before = outside_state(tmp_path, root)
    with pytest.raises(InvalidArgument) as info:
        apply_tar(open_layer_stream(io.BytesIO(data)), str(root), fmt)
    assert "\n" not in str(info.value)
    assert outside_state(tmp_path, root) == before
    assert (tmp_path / "outside/keep").read_bytes() == b"sentinel"
    assert sorted(os.listdir(tmp_path / "outside")) == ["keep"]
    return str(info.value)


def test_rejects_dotdot_member(tmp_path, arena):
    root, _ = arena
    message = assert_rejected(tmp_path, root, make_tar([("../outside/evil", "file", b"x")]))
    assert "../outside/evil" in message


def test_rejects_nested_dotdot_member(tmp_path, arena):
    root, _ = arena
    assert_rejected(tmp_path, root, make_tar([("a/../../outside/evil", "file", b"x")]))


def test_rejects_absolute_member(tmp_path, arena):
    root, outside = arena
    assert_rejected(tmp_path, root, make_tar([(f"{outside}/evil", "file", b"x")]))
    assert_rejected(tmp_path, root, make_tar([("/abs", "file", b"x")]))


def test_rejects_write_through_symlink_to_parent(tmp_path, arena):
    root, _ = arena
    data = make_tar([("up", "symlink", ".."), ("up/outside/evil", "file", b"x")])
    assert_rejected(tmp_path, root, data)


def test_rejects_file_under_symlink_to_outside_dir(tmp_path, arena):
    root, outside = arena
    data = make_tar([("escape", "symlink", str(outside)), ("escape/evil", "file", b"x")])
    message = assert_rejected(tmp_path, root, data, fmt="overlay")
    assert "symlink" in message


def test_rejects_overwrite_through_symlink_to_outside_file(tmp_path, arena):
    root, outside = arena
    data = make_tar([("escape", "symlink", str(outside)), ("escape/keep", "file", b"pwned")])
    assert_rejected(tmp_path, root, data)


def test_rejects_dir_replaced_by_symlink_then_write(tmp_path, arena):
    root, outside = arena
    data = make_tar([("d", "dir", 0o755), ("d", "symlink", str(outside)), ("d/evil", "file", b"x")])
    assert_rejected(tmp_path, root, data)


def test_rejects_symlink_in_existing_tree(tmp_path, arena):
    root, outside = arena
    os.symlink(str(outside), root / "lib")
    assert_rejected(tmp_path, root, make_tar([("lib/evil", "file", b"x")]))


def test_rejects_plain_whiteout_through_symlink(tmp_path, arena):
    root, outside = arena
    data = make_tar([("escape", "symlink", str(outside)), ("escape/.wh.keep", "file", b"")])
    assert_rejected(tmp_path, root, data)


def test_rejects_opaque_through_symlink(tmp_path, arena):
    root, outside = arena
    os.symlink(str(outside), root / "escape")
    assert_rejected(tmp_path, root, make_tar([("escape/.wh..wh..opq", "file", b"")]))


def test_rejects_hardlink_to_absolute_path(tmp_path, arena):
    root, _ = arena
    message = assert_rejected(tmp_path, root, make_tar([("passwd", "link", "/etc/passwd")]))
    assert "passwd" in message
    assert not os.path.exists(root / "passwd")


def test_rejects_hardlink_with_dotdot(tmp_path, arena):
    root, _ = arena
    assert_rejected(tmp_path, root, make_tar([("keep", "link", "../outside/keep")]))


def test_rejects_hardlink_through_symlink(tmp_path, arena):
    root, outside = arena
    data = make_tar([("escape", "symlink", str(outside)), ("stolen", "link", "escape/keep")])
    assert_rejected(tmp_path, root, data)
    assert os.lstat(outside / "keep").st_nlink == 1


def test_rejects_hardlink_to_missing_target(tmp_path, arena):
    root, _ = arena
    assert_rejected(tmp_path, root, make_tar([("l", "link", "nowhere")]))


@pytest.mark.parametrize("name", [".wh.", "d/.wh..", "d/.wh...", ".wh..wh.foo", ".wh..wh."])
def test_rejects_invalid_whiteout_names(tmp_path, arena, name):
    root, _ = arena
    for fmt in ("plain", "overlay"):
        message = assert_rejected(tmp_path, root, make_tar([(name, "file", b"")]), fmt)
        assert ".wh." in message


def test_rejects_truncated_tar(tmp_path, arena):
    root, _ = arena
    data = make_tar([("big", "file", b"x" * 100_000)])
    message = assert_rejected(tmp_path, root, data[:50_000])
    assert "truncated" in message


def test_rejects_huge_declared_size(tmp_path, arena):
    root, _ = arena
    info = tarfile.TarInfo("huge")
    info.size = 10 << 30
    header = info.tobuf(tarfile.PAX_FORMAT)
    assert_rejected(tmp_path, root, header + b"x" * 4096)


def test_rejects_garbage(tmp_path, arena):
    root, _ = arena
    assert_rejected(tmp_path, root, os.urandom(5000))
    assert_rejected(tmp_path, root, b"")
    assert_rejected(tmp_path, root, b"not a tar at all" * 100)


def test_rejects_truncated_gzip(tmp_path, arena):
    root, _ = arena
    blob = gzip.compress(make_tar([("f", "file", os.urandom(200_000))]))
    message = assert_rejected(tmp_path, root, blob[: len(blob) // 2])
    assert message.startswith("invalid layer tar")


def test_rejects_corrupt_gzip(tmp_path, arena):
    root, _ = arena
    blob = bytearray(gzip.compress(make_tar([("f", "file", b"y" * 100_000)])))
    blob[40:60] = b"\xff" * 20
    assert_rejected(tmp_path, root, bytes(blob))


def test_deferred_dir_metadata_never_follows_a_replacing_symlink(tmp_path, arena):
    root, outside = arena
    mode = stat.S_IMODE(os.lstat(outside).st_mode)
    data = make_tar([("d", "dir", 0o777), ("d", "symlink", str(outside))])
    apply_tar(io.BytesIO(data), str(root), "plain")
    assert os.readlink(root / "d") == str(outside)
    assert stat.S_IMODE(os.lstat(outside).st_mode) == mode


def test_overlay_xattrs_from_tar_are_not_restored(tmp_path, arena):
    root, _ = arena
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
        tf.addfile(info)
    apply_tar(io.BytesIO(buf.getvalue()), str(root), "overlay")
    assert os.listxattr(root / "d") == []


def test_gnu_long_names_and_gnu_tar_output(tmp_path):
    long_name = "x" * 120 + "/" + "y" * 200
    data = make_tar([(long_name, "file", b"gnu"), ("l", "symlink", "t" * 150)], tarfile.GNU_FORMAT)
    root = tmp_path / "root"
    root.mkdir()
    apply_tar(io.BytesIO(data), str(root), "plain")
    assert (root / long_name).read_bytes() == b"gnu"
    assert os.readlink(root / "l") == "t" * 150

    src = tmp_path / "src"
    build_tree(str(src))
    gnu = tmp_path / "gnu.tar"
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-cf", gnu, "-C", src, "."],
        check=True,
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(gnu, "rb") as f:
        apply_tar(f, str(dest), "plain")
    got, got_links = snapshot(dest)
    want, want_links = snapshot(src)
    assert got == want  # GNU tar keeps nanosecond mtimes in PAX records
    assert got_links == want_links


def test_existing_directory_is_not_counted_as_created(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    stats = apply_tar(
        io.BytesIO(make_tar([("d", "dir", 0o750), ("d/f", "file", b"")])), str(root), "plain"
    )
    assert stats.inodes == 1
    assert stat.S_IMODE(os.lstat(root / "d").st_mode) == 0o750


def test_rejects_negative_pax_size(tmp_path, arena):
    root, _ = arena
    info = tarfile.TarInfo("f")
    info.pax_headers = {"size": "-5"}
    assert_rejected(tmp_path, root, info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))


def test_rejects_out_of_range_mtime(tmp_path, arena):
    root, _ = arena
    info = tarfile.TarInfo("f")
    info.pax_headers = {"mtime": "1" + "0" * 40}
    assert_rejected(tmp_path, root, info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))


def test_rejects_member_after_single_zero_block(tmp_path, arena):
    root, _ = arena
    first = make_tar([("a", "file", b"")])
    hidden = tarfile.TarInfo("b").tobuf(tarfile.PAX_FORMAT)
    data = first[:512] + bytes(512) + hidden + bytes(1024)  # header, one zero block, header
    assert_rejected(tmp_path, root, data)


def test_regular_file_replacing_hard_link_leaves_other_name_alone(tmp_path, arena):
    root, outside = arena
    os.link(outside / "keep", root / "shared")  # e.g. a root made with cp -al
    apply_tar(io.BytesIO(make_tar([("shared", "file", b"new")])), str(root), "plain")
    assert (root / "shared").read_bytes() == b"new"
    assert (outside / "keep").read_bytes() == b"sentinel"
