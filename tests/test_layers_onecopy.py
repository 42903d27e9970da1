"""Every layer kept once: unpacked in its snapshot, with a tar-split record from which its exact
tar (same bytes, same diff_id) comes back for save and push; no layer tar kept beside it. An
older store (layer tars kept as blobs) is migrated on first open, one layer per transaction,
surviving a SIGKILL between two."""

import hashlib
import io
import json
import os
import sqlite3
import tarfile

import pytest

from lamina import Engine

from .conftest import needs_root
from .reliability import crashkit as ck

pytestmark = needs_root


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def saved_layers(engine, name) -> dict:
    """{member name: bytes} of the layer tars a docker-archive save of ``name`` holds."""
    buf = io.BytesIO()
    engine.save([name], buf, "docker-archive")
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return {n: tar.extractfile(n).read() for n in manifest[0]["Layers"]}


def layer_dirs_bytes(engine) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in
               os.walk(os.path.join(engine.root, "blobs")) for f in files)


def test_import_commit_and_build_keep_no_tar_and_give_the_exact_tar_back(engine, busybox_tar,
                                                                        tmp_path):
    with open(busybox_tar, "rb") as f:
        original = f.read()
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="ctr")
    root = engine.mount("ctr")
    with open(os.path.join(root, "hello"), "w") as f:
        f.write("hello\n")
    os.unlink(os.path.join(root, "bin", "vi"))
    engine.umount("ctr")
    engine.commit("ctr", "app")
    assert layer_dirs_bytes(engine) < 16 << 10  # configs and manifests only
    diff_ids = engine.inspect_image("app")["RootFS"]["Layers"]
    layers = saved_layers(engine, "app")
    assert [sha256(data) for data in layers.values()] == diff_ids
    assert next(iter(layers.values())) == original  # the imported tar, byte for byte
    assert saved_layers(engine, "app") == layers  # and the same every time
    # loaded elsewhere: the same image ID
    archive = str(tmp_path / "app.tar")
    engine.save(["app"], archive)
    other = Engine(root=str(tmp_path / "other"), driver=engine.driver)
    assert other.load(archive) == ["Loaded image: app:latest"]
    assert other.inspect_image("app")["Id"] == engine.inspect_image("app")["Id"]
    assert saved_layers(other, "app") == layers
    other.close()
    assert engine.check() == []


def test_a_tar_that_writes_a_path_twice_keeps_its_blob(engine, tmp_path):
    """Its first copy of the path is gone from the snapshot: no record could give the tar
    back, so the layer keeps its tar as a blob (and saves it as it came)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for data in (b"first\n", b"second, longer\n"):
            info = tarfile.TarInfo("etc/motd")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "twice.tar"
    path.write_bytes(buf.getvalue())
    engine.import_image(str(path), "twice")
    chain = engine.image_store.layer_rows(engine.image_store.resolve("twice"))[0]["chain_id"]
    assert engine.image_store.layers.record(chain) is None
    assert list(saved_layers(engine, "twice").values()) == [buf.getvalue()]
    assert engine.check() == []


def make_legacy(root: str, driver: str) -> list[str]:
    """Turn a store into what an older lamina left: each layer's tar as a blob beside its
    snapshot, no records, the store not marked as migrated. Returns the layers' blobs."""
    engine = Engine(root=root, driver=driver)
    blobs = []
    for row in engine.db.execute("SELECT chain_id, diff_id FROM layers").fetchall():
        with engine.content.writer() as writer:
            engine.image_store.layers.write_tar(row[0], writer)
            blobs.append(writer.commit(row[1])[0])
    engine.content.release_claims()
    engine.close()
    db = sqlite3.connect(os.path.join(root, "lamina.db"))
    db.execute("DELETE FROM tar_split")
    db.execute("DELETE FROM settings WHERE key = 'layers'")
    db.commit()
    db.close()
    return blobs


def test_an_older_store_is_migrated_on_first_open(store_root, driver, busybox_tar):
    engine = Engine(root=store_root, driver=driver)
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="ctr")
    with open(os.path.join(engine.mount("ctr"), "hello"), "w") as f:
        f.write("hello\n")
    engine.umount("ctr")
    engine.commit("ctr", "app")
    before = saved_layers(engine, "app")
    engine.close()
    blobs = make_legacy(store_root, driver)
    assert all(os.path.exists(os.path.join(store_root, "blobs", "sha256", b[7:])) for b in blobs)
    # a SIGKILL after the first layer's migration committed: the next command carries on
    env = dict(os.environ, LAMINA_FAULT="layer.migrated:1")
    assert ck.run(store_root, driver, "images", check=False, env=env).returncode == -9
    ck.run(store_root, driver, "images")
    engine = Engine(root=store_root, driver=driver)
    assert engine.db.execute("SELECT count(*) FROM tar_split WHERE record IS NOT NULL"
                             ).fetchone()[0] == 2
    assert not any(os.path.exists(os.path.join(store_root, "blobs", "sha256", b[7:]))
                   for b in blobs)
    assert saved_layers(engine, "app") == before
    assert engine.check() == []
    engine.close()


@pytest.mark.parametrize("driver", ["overlay2"])
def test_migration_keeps_the_blob_of_a_layer_that_does_not_match_it(store_root, driver,
                                                                    busybox_tar):
    engine = Engine(root=store_root, driver=driver)
    engine.import_image(busybox_tar, "busybox")
    chain = engine.db.execute("SELECT chain_id FROM layers").fetchone()[0]
    layer_file = os.path.join(engine.store.snaps.dir(chain), "bin", "busybox")
    engine.close()
    make_legacy(store_root, driver)
    with open(layer_file, "r+b") as f:  # damaged since the blob was written
        f.write(b"\x00")
    engine = Engine(root=store_root, driver=driver)  # migrates: the blob stays (kept)
    findings = engine.check(repair=True)
    assert [(f.kind, f.fixed) for f in findings] == [
        ("damaged layer files (do not match their record)", True)]
    assert engine.check() == []
    engine.close()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_records_give_back_every_byte_of_odd_tars(tmp_path, fmt):
    """Long names (PAX and GNU), hard links, symlinks, empty files, a directory, and what a tar
    writer leaves after its end (blocking-factor zeros): the record holds every byte that is not
    file content, the directory the rest; split_tar makes the same record without extracting."""
    from lamina import tarsplit
    from lamina.layertar import apply_tar, split_tar

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name, data=None, **kw):
            info = tarfile.TarInfo(name)
            for key, value in kw.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        add("d", type=tarfile.DIRTYPE, mode=0o755)
        add("d/" + "n" * (90 if fmt == tarfile.USTAR_FORMAT else 180), os.urandom(70_000))
        add("d/empty", b"")
        add("d/link", type=tarfile.SYMTYPE, linkname="empty")
        add("d/hard", type=tarfile.LNKTYPE, linkname="d/empty")
        add("d/last", b"x" * 513)
    data = buf.getvalue() + bytes(5120)  # trailing zeros after the end blocks
    root = tmp_path / "layer"
    root.mkdir()
    stats = apply_tar(io.BytesIO(data), str(root), "plain", record=True)
    assert stats.diff_id == sha256(data) and stats.record is not None
    out = io.BytesIO()
    assert tarsplit.write_tar(stats.record, str(root), out) == len(data)
    assert out.getvalue() == data
    assert split_tar(io.BytesIO(data)) == (stats.record, stats.diff_id, len(data))
    assert len(stats.record) < len(data) // 20
    assert tarsplit.verify(stats.record, str(root)) == []
    (root / "d" / "last").write_bytes(b"y" * 513)
    assert tarsplit.verify(stats.record, str(root)) == ["/d/last"]
    with pytest.raises(tarsplit.DamagedLayer):
        tarsplit.write_tar(stats.record, str(root), io.BytesIO())


def test_save_copies_unchanged_files_in_the_kernel_and_checks_changed_ones(engine, busybox_tar,
                                                                         tmp_path):
    """A layer file not written since its layer was stored goes to a file or pipe by
    copy_file_range/sendfile, without a CRC (its ctime says it is as recorded): the tar is the
    same bytes; a file written since is read and checked, and a changed one fails the save."""
    import time

    from lamina.tarsplit import DamagedLayer, write_tar

    engine.import_image(busybox_tar, "busybox")
    row = engine.image_store.layer_rows(engine.image_store.resolve("busybox"))[0]
    record = engine.layer_store.record(row["chain_id"])
    root = engine.store.snaps.dir(row["chain_id"])
    checked = io.BytesIO()  # no descriptor: every file read and checked
    write_tar(record, root, checked)
    assert sha256(checked.getvalue()) == row["diff_id"]
    out = tmp_path / "kernel.tar"
    with open(out, "wb") as f:  # every file older than "a minute from now": all in the kernel
        write_tar(record, root, f, unchanged_before=time.time() + 60)
    assert out.read_bytes() == checked.getvalue()
    with open(out, "wb") as f:  # the store's own rule: the layer's time less a second
        engine.layer_store.write_tar(row["chain_id"], f)
    assert out.read_bytes() == checked.getvalue()
    path = os.path.join(root, "bin", "busybox")
    with open(path, "r+b") as f:  # a byte changed after the layer was stored: its ctime moves
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with open(out, "wb") as f, pytest.raises(DamagedLayer, match="/bin/busybox"):
        engine.layer_store.write_tar(row["chain_id"], f)
