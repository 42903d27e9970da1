"""Costs that must not grow with the store (issue 14): images as deep as the kernel stacks,
commands on one container in a store of many. Behaviour only; the timings are bench/scale.py's."""

import hashlib
import io
import json
import os
import tarfile

import pytest

from lamina import Engine
from lamina.errors import NotFound
from lamina.mount import lowers_one_by_one

from .conftest import REPO
from .test_engine import make_tar, read

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")


def _tar(entries) -> bytes:
    """A layer tar of (name, bytes | None for a directory)."""
    return make_tar([(name, data, 0o755 if data is None else 0o644) for name, data in entries])


def deep_archive(path: str, layers: list[bytes], reference: str) -> None:
    """A Docker archive (``docker save``'s format) of one image made of ``layers``."""
    with tarfile.open(path, "w") as out:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

        names, diff_ids = [], []
        for data in layers:
            digest = hashlib.sha256(data).hexdigest()
            if f"sha256:{digest}" not in diff_ids:
                add(f"{digest}/layer.tar", data)
            names.append(f"{digest}/layer.tar")
            diff_ids.append(f"sha256:{digest}")
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids},
                             "history": [{"created_by": f"layer {i}"}
                                         for i in range(len(layers))]}).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        add(config_name, config)
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [reference],
                                          "Layers": names}]).encode())


def _layers(count: int) -> list[bytes]:
    """Layer 0 has /etc/hosts with content and /d; layer i adds d/fi and rewrites /top."""
    first = _tar([("etc", None), ("etc/hosts", b"127.0.0.1 image\n"), ("d", None),
                  ("d/f0", b"0"), ("top", b"0")])
    return [first] + [_tar([("d", None), (f"d/f{i}", str(i).encode()), ("top", str(i).encode())])
                      for i in range(1, count)]


@pytest.mark.skipif(not lowers_one_by_one(), reason="needs Linux 6.5 (fsconfig lowerdir+)")
def test_a_container_on_an_image_of_500_layers(store_root, tmp_path):
    """500 layers: past the page of classic mount options (fsconfig, one lower at a time) and at
    the kernel's stack limit, where the init layer takes the top layer's place."""
    archive = str(tmp_path / "deep.tar")
    deep_archive(archive, _layers(500), "deep:500")
    engine = Engine(root=store_root, driver="overlay2")
    try:
        engine.load(archive)
        top = engine.image_store.row(engine.image_store.resolve("deep:500"))["top_layer"]
        top_hosts = os.path.join(engine.snaps.dir(top), "etc", "hosts")
        assert not os.path.exists(top_hosts)  # /etc/hosts is layer 0's
        cid = engine.create("deep:500")
        root = engine.mount(cid)
        try:
            assert sorted(os.listdir(os.path.join(root, "d"))) == sorted(
                f"f{i}" for i in range(500))
            assert all(read(os.path.join(root, "d", f"f{i}")) == str(i)
                       for i in (0, 1, 128, 250, 499))
            assert read(os.path.join(root, "top")) == "499"
            assert read(os.path.join(root, "etc", "hosts")) == ""  # the init placeholder
            with open(os.path.join(root, "new"), "w") as f:
                f.write("written")
            os.unlink(os.path.join(root, "d", "f3"))
            assert root in [line.split()[4] for line in read("/proc/self/mountinfo").splitlines()]
        finally:
            engine.umount(cid)
        assert [(c.kind, c.path) for c in engine.diff(cid)] == [
            ("C", "/d"), ("D", "/d/f3"), ("A", "/new")]
        # the image's layers are untouched: a second container sees them as they were
        other = engine.create("deep:500")
        root = engine.mount(other)
        try:
            assert read(os.path.join(root, "d", "f3")) == "3"
            assert not os.path.exists(os.path.join(root, "new"))
        finally:
            engine.umount(other)
        assert read(os.path.join(engine.snaps.dir(top), "top")) == "499"
        engine.rm(cid)
        engine.rm(other)
        engine.rmi(["deep:500"])
        assert engine.db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 0
    finally:
        engine.close()


def test_a_shared_top_layer_file_is_never_written_by_the_init_layer(store_root, tmp_path):
    """On an image at the stack limit the init layer hard-links the top layer's files: the
    placeholder for a /etc/hosts of the top layer replaces the link, the layer keeps its bytes."""
    archive = str(tmp_path / "deep.tar")
    engine = Engine(root=store_root, driver="overlay2")
    try:
        limit = engine.snaps.max_depth
        layers = _layers(limit)
        layers[-1] = _tar([("etc", None), ("etc/hosts", b"127.0.0.1 top\n"), ("top", b"last")])
        deep_archive(archive, layers, "deep:max")
        engine.load(archive)
        top = engine.image_store.row(engine.image_store.resolve("deep:max"))["top_layer"]
        cid = engine.create("deep:max")
        root = engine.mount(cid)
        try:
            assert read(os.path.join(root, "etc", "hosts")) == ""
            assert read(os.path.join(root, "top")) == "last"
        finally:
            engine.umount(cid)
        assert read(os.path.join(engine.snaps.dir(top), "etc", "hosts")) == "127.0.0.1 top\n"
    finally:
        engine.close()


def _full_scans(engine, action) -> list[tuple[str, str]]:
    """(table scanned whole, statement) for each statement ``action`` runs on the store's
    database that reads a table row by row instead of through an index."""
    statements = []
    engine.db.set_trace_callback(statements.append)
    try:
        action()
    finally:
        engine.db.set_trace_callback(None)
    scans = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
            continue
        for row in engine.db.execute("EXPLAIN QUERY PLAN " + sql):
            words = row[3].split()
            # trash: only the deletions in flight, which purge takes whole
            if words[0] == "SCAN" and words[1] not in ("CONSTANT", "trash"):
                scans.append((words[1], sql))
    return scans


@pytest.mark.parametrize("driver", ["overlay2"])
def test_one_container_commands_read_no_table_whole(engine, busybox_tar):
    """create, inspect, rm (by name, ID or short ID prefix) and images find their rows through
    indexes: their cost does not grow with the containers and images in the store."""
    engine.import_image(busybox_tar, "busybox:1")
    for _ in range(3):
        engine.create("busybox:1")
    made = []
    assert _full_scans(engine, lambda: made.append(engine.create("busybox:1", name="one"))) == []
    cid = made[0]
    for ref in ("one", cid, cid[:12]):
        assert _full_scans(engine, lambda r=ref: engine.inspect_container(r)) == []
    assert engine.inspect_container(cid[:12])["Id"] == cid
    assert _full_scans(engine, lambda: engine.image_store.resolve(
        engine.image_store.resolve("busybox:1")[7:19])) == []
    assert _full_scans(engine, lambda: engine.rm(cid[:12])) == []
    with pytest.raises(NotFound):
        engine.inspect_container(cid[:12])


def test_writers_queue_on_a_lock_file_held_for_the_transaction_only(tmp_path):
    """A write transaction holds an flock of ``<database>-writer`` (so waiting writers get in
    as soon as it ends, not after SQLite's sleeps), and lets it go when it ends, even on error."""
    import fcntl

    from lamina import metadata

    db = metadata.connect(str(tmp_path / "lamina.db"))

    def held() -> bool:
        fd = os.open(str(tmp_path / "lamina.db-writer"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: another holder
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    with metadata.Transaction(db):
        db.execute("INSERT INTO settings VALUES ('a', '1')")
        assert held()
    assert not held()
    with pytest.raises(RuntimeError), metadata.Transaction(db):
        db.execute("INSERT INTO settings VALUES ('b', '2')")
        raise RuntimeError("undone")
    assert not held()
    assert [tuple(r) for r in db.execute("SELECT * FROM settings")] == [("a", "1")]
    db.close()


# What no short command imports: json's Python modules, re and enum (lamina.cjson reads and
# writes JSON through _json; timestamps, digests and names are read without re), calendar,
# datetime and locale (ages are arithmetic), contextlib, hashlib (libcrypto: the interpreter's
# own sha256 does for a network's ID), ipaddress (nothing is parsed), shutil, bz2 and lzma (a
# tree removal is lamina's own), tempfile and socket (a console socket's, made only for -t),
# signal (its enums: lamina's runtime uses _signal), subprocess and threading.
NOT_IMPORTED = {"json", "json.decoder", "json.encoder", "re", "enum", "calendar", "datetime",
                "locale", "contextlib", "hashlib", "_hashlib", "ipaddress", "shutil", "bz2",
                "lzma", "tempfile", "socket", "signal", "subprocess", "threading"}


@pytest.mark.parametrize("driver", ["overlay2"])
def test_short_commands_import_no_module_they_do_not_use(engine, store_root, busybox_tar):
    """``images``, ``inspect`` of a container and of an image, ``ps -a -s``, ``system df``,
    ``create`` (plain, and with options that take the runtime's path), ``start`` of a stopped
    container and ``rm`` are mostly the interpreter's start: none imports :data:`NOT_IMPORTED`."""
    import subprocess
    import sys

    engine.import_image(busybox_tar, "busybox:1")
    cids = [engine.create("busybox:1", command=["true"]) for _ in range(2)]
    src = os.path.join(REPO, "src")
    lamina = os.path.join(REPO, "bin", "lamina")
    made = []

    def imports(*args) -> set[str]:
        proc = subprocess.run([sys.executable, "-S", "-X", "importtime", lamina, "--root",
                               store_root, "--driver", "overlay2", *args],
                              check=False, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": src})
        assert proc.returncode == 0, proc.stderr
        if args[0] == "create":
            made.append(proc.stdout.split()[-1])
        return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}

    for args in (["images"], ["inspect", cids[0][:12]], ["image", "inspect", "busybox:1"],
                 ["ps", "-a", "-s"], ["system", "df"], ["create", "busybox:1", "true"],
                 ["create", "--network", "none", "--name", "named", "-e", "A=1", "busybox:1",
                  "true"], ["start", "named"], ["rm", cids.pop()[:12]]):
        imported = imports(*args)
        assert "lamina.engine" in imported and "_sqlite3" in imported, args  # it did its work
        assert imported & NOT_IMPORTED == set(), args
        if args[0] == "start":
            assert "lamina.runtime.lifecycle" in imported, args  # the runtime's path
        elif "--network" in args:
            assert "lamina.runtime.creation" in imported, args
    assert engine.db.execute("SELECT count(*) FROM containers").fetchone()[0] == 3  # rm did
    assert len(made) == 2 and all(len(cid) == 64 for cid in made)


def test_remove_tree_removes_everything_under_it_and_nothing_its_symlinks_name(tmp_path):
    from lamina.fsutil import remove_tree

    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "a" / "b" / "c" / "f").write_text("f")
    (tree / "a" / "file").write_text("x")
    os.symlink(outside, tree / "a" / "to-dir")
    os.symlink(outside / "sub" / "keep", tree / "to-file")
    os.symlink("nowhere", tree / "dangling")
    os.mkfifo(tree / "fifo")
    os.mknod(tree / "a" / "whiteout", 0o20000 | 0o644, os.makedev(0, 0))
    (tree / "ro").mkdir()
    (tree / "ro" / "inside").write_text("i")
    os.chmod(tree / "ro", 0o555)
    remove_tree(str(tree))
    assert not os.path.lexists(tree)
    assert (outside / "sub" / "keep").read_text() == "keep"
    link = tmp_path / "link"
    os.symlink(outside, link)
    remove_tree(str(link))  # a symlink to a directory: the link goes, not the directory
    assert not os.path.lexists(link) and (outside / "sub" / "keep").exists()
    (tmp_path / "plain").write_text("p")
    remove_tree(str(tmp_path / "plain"))
    assert not (tmp_path / "plain").exists()
    remove_tree(str(tmp_path / "never-was"))  # nothing there: no error
