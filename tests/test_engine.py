"""The engine end to end, on every driver: images, containers, copy-on-write, sizes, commit."""

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from lamina import Engine
from lamina.errors import FailedPrecondition, InvalidArgument, NotFound
from lamina.fsutil import tree_usage

from .conftest import needs_root, store_files

pytestmark = needs_root


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def make_tar(entries) -> bytes:
    """entries: (name, bytes | None for a dir, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1_600_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_import_records_diff_id_chain_and_sizes(engine, busybox_tar):
    image_id = engine.import_image(busybox_tar, "busybox")
    doc = engine.inspect_image("busybox")
    with open(busybox_tar, "rb") as f:
        data = f.read()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    assert doc["Id"] == image_id
    assert doc["RootFS"]["Layers"] == [diff_id]
    assert doc["RepoTags"] == ["busybox:latest"]
    # the image id is the digest of the stored config bytes
    assert "sha256:" + hashlib.sha256(engine.content.read(image_id)).hexdigest() == image_id
    with tarfile.open(busybox_tar) as tar:
        expected = sum(m.size for m in tar if m.isfile()) + sum(
            len(m.linkname) for m in tar if m.issym())
    assert doc["Size"] == expected
    layer = engine.db.execute("SELECT * FROM layers").fetchone()
    assert layer["chain_id"] == diff_id and layer["parent"] is None
    with tarfile.open(busybox_tar) as tar:
        assert layer["inodes"] == len([m for m in tar if m.name not in (".", "./")])


def test_import_gzip_and_same_tree_dedupes_layer(engine, busybox_tar):
    with open(busybox_tar, "rb") as f:
        data = f.read()
    first = engine.import_image(io.BytesIO(data), "one")
    second = engine.import_image(io.BytesIO(gzip.compress(data, 1)), "two")
    assert first != second  # different configs (created, comment), same layer
    assert engine.inspect_image("one")["RootFS"] == engine.inspect_image("two")["RootFS"]
    assert engine.db.execute("SELECT count(*) FROM layers").fetchone()[0] == 1
    assert len([s for s in engine.snaps.walk() if s.kind == "committed"]) == 1


def test_new_container_has_size_zero_and_shares_the_image(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    image_size = engine.inspect_image("busybox")["Size"]
    before = tree_usage(os.path.join(engine.root, engine.driver))[0]
    cids = [engine.create("busybox") for _ in range(3)]
    after = tree_usage(os.path.join(engine.root, engine.driver))[0]
    for cid in cids:
        doc = engine.inspect_container(cid, size=True)
        assert doc["SizeRw"] == 0
        assert doc["SizeRootFs"] == image_size
    if engine.driver == "overlay2":
        # N containers add no image bytes: one shared init layer of empty placeholders and
        # the symlink /etc/mtab -> /proc/mounts, and, per snapshot (1 init + 3 writable), one
        # short-link symlink "../<32 hex>/diff" of 40 bytes
        assert after - before == (1 + 3) * len("../" + "0" * 32 + "/diff") + len("/proc/mounts")
        inits = [s for s in engine.snaps.walk() if s.key.endswith("-init")]
        assert len(inits) == 1 and {engine.snaps.stat(c).parent for c in cids} == {inits[0].key}
    rows = engine.containers(size=True)
    assert [r["SizeRw"] for r in rows] == [0, 0, 0]


def test_write_through_mount_counts_in_size_rw(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    cid = engine.create("busybox", name="c1")
    other = engine.create("busybox", name="c2")
    root = engine.mount("c1")
    with open(os.path.join(root, "twelve.txt"), "wb") as f:
        f.write(b"hello world\n")
    os.link(os.path.join(root, "twelve.txt"), os.path.join(root, "link.txt"))
    with open(os.path.join(root, "etc", "passwd"), "ab") as f:
        f.write(b"x\n")
    passwd_size = os.path.getsize(os.path.join(root, "etc", "passwd"))
    os.unlink(os.path.join(root, "bin", "vi"))
    engine.umount("c1")
    rw = engine.inspect_container(cid, size=True)["SizeRw"]
    assert rw == 12 + passwd_size  # the hard link counts once; a whiteout counts 0
    assert engine.inspect_container(other, size=True)["SizeRw"] == 0
    changes = [(c.kind, c.path) for c in engine.diff("c1")]
    assert ("A", "/twelve.txt") in changes and ("A", "/link.txt") in changes
    assert ("C", "/etc/passwd") in changes and ("D", "/bin/vi") in changes
    assert not any(p.startswith("/etc/hosts") or p == "/etc/hostname" for _, p in changes)
    # the other container and the image are untouched
    root2 = engine.mount("c2")
    assert os.path.exists(os.path.join(root2, "bin", "vi"))
    assert not os.path.exists(os.path.join(root2, "twelve.txt"))
    engine.umount("c2")


def test_commit_makes_a_layer_on_the_image(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="ctr")
    root = engine.mount("ctr")
    with open(os.path.join(root, "hello"), "w") as f:
        f.write("hi\n")
    os.unlink(os.path.join(root, "bin", "vi"))
    engine.umount("ctr")
    new = engine.commit("ctr", "mine:v1", message="added hello")
    doc = engine.inspect_image("mine:v1")
    base = engine.inspect_image("busybox")
    assert doc["Id"] == new
    assert doc["RootFS"]["Layers"][:1] == base["RootFS"]["Layers"]
    assert len(doc["RootFS"]["Layers"]) == 2
    assert doc["Size"] == base["Size"] + 3
    history = engine.history("mine:v1")
    assert len(history) == 2 and history[0]["Size"] == 3 and history[0]["Comment"] == "added hello"
    cid = engine.create("mine:v1")
    root = engine.mount(cid)
    assert read(os.path.join(root, "hello")) == "hi\n"
    assert not os.path.lexists(os.path.join(root, "bin", "vi"))
    engine.umount(cid)
    # system df: the base layer is shared by both images and counted once
    df = engine.system_df()
    images = {i["ID"]: i for i in df["Images"]}
    assert images[new]["SharedSize"] == base["Size"]
    assert images[new]["UniqueSize"] == 3
    summary = {s["Type"]: s for s in df["Summary"]}
    assert summary["Images"]["Size"] == base["Size"] + 3
    assert summary["Images"]["Reclaimable"] == 0  # both images have containers


def test_rmi_refuses_in_use_and_keeps_shared_layers(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="ctr")
    root = engine.mount("ctr")
    open(os.path.join(root, "f"), "w").close()
    engine.umount("ctr")
    engine.commit("ctr", "child")
    with pytest.raises(FailedPrecondition):
        engine.rmi(["busybox"])
    engine.rm("ctr")
    lines = engine.rmi(["busybox"])
    assert lines[0] == "Untagged: busybox:latest" and lines[1].startswith("Deleted: sha256:")
    assert len(lines) == 2  # the layer stays: the child image uses it
    cid = engine.create("child")
    root = engine.mount(cid)
    assert os.path.exists(os.path.join(root, "bin", "busybox"))
    engine.umount(cid)
    engine.rm(cid)
    engine.rmi(["child"])
    assert engine.db.execute("SELECT count(*) FROM layers").fetchone()[0] == 0
    assert engine.snaps.walk() == []
    assert os.listdir(engine.content.blobs) == []
    leftover = {p for p in store_files(engine.root)
                if not p.startswith(("ingest", "mounts")) and p not in (
                    "blobs", "blobs/sha256", "index.json", "oci-layout", engine.driver,
                    f"{engine.driver}/l", f"{engine.driver}/dir", "events.log")}
    assert leftover == set()  # events.log: the event journal (lamina.events)


def test_rm_deletes_only_the_writable_layer(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox")  # makes the image's shared init layer, which outlives containers
    snaps_before = {s.key for s in engine.snaps.walk()}
    cid = engine.create("busybox")
    engine.mount(cid)
    engine.rm(cid)
    assert {s.key for s in engine.snaps.walk()} == snaps_before
    assert not os.path.exists(os.path.join(engine.root, "mounts", cid))
    with pytest.raises(NotFound, match="No such container"):
        engine.inspect_container(cid)


def test_export_flattens_the_root(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="ctr")
    root = engine.mount("ctr")
    with open(os.path.join(root, "new"), "w") as f:
        f.write("n")
    os.unlink(os.path.join(root, "bin", "vi"))
    engine.umount("ctr")
    out = io.BytesIO()
    engine.export("ctr", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = set(tar.getnames())
    assert "new" in names and "bin/busybox" in names
    assert "bin/vi" not in names and not any(".wh." in n for n in names)


def test_store_remembers_its_driver(store_root, busybox_tar):
    Engine(root=store_root, driver="vfs").close()
    with pytest.raises(FailedPrecondition, match="uses the vfs driver"):
        Engine(root=store_root, driver="overlay2")
    assert Engine(root=store_root).driver == "vfs"


def test_more_than_500_layers_is_refused_when_made(engine):
    from lamina.image import make_config

    with pytest.raises(InvalidArgument, match="at most 500 layers"):
        make_config(["sha256:" + "0" * 64] * 501, [])


@pytest.mark.parametrize("driver", ["overlay2"])
def test_commit_past_the_layer_limit_is_refused(engine, monkeypatch):
    import lamina.image

    layer = make_tar([("f", b"0", 0o644)])
    engine.import_image(io.BytesIO(layer), "deep:0")
    ref = "deep:0"
    for i in range(1, 4):
        cid = engine.create(ref)
        with open(os.path.join(engine.snaps.dir(cid), f"f{i}"), "w") as f:
            f.write(str(i))
        ref = f"deep:{i}"
        engine.commit(cid, ref)
        engine.rm(cid)
    assert len(engine.inspect_image(ref)["RootFS"]["Layers"]) == 4
    cid = engine.create(ref)
    root = engine.mount(cid)
    assert read(os.path.join(root, "f3")) == "3"
    assert read(os.path.join(root, "f1")) == "1"
    engine.umount(cid)
    images_before = engine.db.execute("SELECT count(*) FROM images").fetchone()[0]
    monkeypatch.setattr(lamina.image, "MAX_LAYERS", 4)  # the check, without 500 commits
    with pytest.raises(InvalidArgument, match="at most 4 layers"):
        engine.commit(cid, "deep:5")
    assert engine.db.execute("SELECT count(*) FROM images").fetchone()[0] == images_before


def test_unknown_names(engine):
    with pytest.raises(NotFound, match="No such image: nope"):
        engine.create("nope")
    with pytest.raises(NotFound, match="No such container: nope"):
        engine.rm("nope")


def test_bad_references_are_refused(engine, busybox_tar):
    for ref in ["UPPER", "a b", "x/../y", "name:tag:extra", "-lead", "a\nb"]:
        with pytest.raises(InvalidArgument):
            engine.import_image(busybox_tar, ref)
    assert engine.db.execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_rfc3339_is_read_as_the_calendar_reads_it():
    """image.parse_rfc3339 reads timestamps without re or calendar; the reading they gave (the
    pattern below and calendar.timegm) is the reference, except where datetime raised (year 0,
    month 13), which is now "unparsable" (0) as any other bad text."""
    import calendar
    import random
    import re

    from lamina.image import parse_reference, parse_rfc3339, rfc3339

    def reference(value):
        m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$",
                     value or "")
        if not m:
            return 0.0
        try:
            secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
        except ValueError:
            return 0.0
        if m.group(8) != "Z":
            sign = 1 if m.group(8)[0] == "+" else -1
            secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
        return secs + float(m.group(7) or 0)

    rng = random.Random(14)
    texts = ["", None, "2024-02-29T23:59:60Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
             "9999-12-31T23:59:59.999999999Z", "2000-03-01T00:00:00+05:30", "1900-03-01T00:00:00-12:00",
             "2021-06-01T12:00:00.Z", "2021-06-01T12:00:00.5", "2021-06-01 12:00:00Z",
             "2021-06-01T12:00:00z", "2021-06-01T12:00:00Z\n", "2021-06-01T12:00:00Z\n\n",
             "2021-06-01T12:00:00+0530", "2021-6-01T12:00:00Z", "0000-01-01T00:00:00Z",
             "2021-13-01T00:00:00Z", "2021-00-10T00:00:00Z", "2021-02-31T99:99:99Z",
             "2021-06-01T12:00:00.1234567890123+00:00 ",
             "2021-06-01T12:00:00.5Z".translate({ord(d): 0x660 + int(d) for d in "0123456789"})]
    for _ in range(3000):
        texts.append(rfc3339(rng.uniform(-6e10, 2.5e11)))
        texts.append(rfc3339(rng.randrange(0, 4_000_000_000)).replace("Z", rng.choice(["+01:00", "-09:45"])))
    for text in texts:
        assert parse_rfc3339(text) == reference(text), text
        assert repr(parse_rfc3339(text)) == repr(reference(text)), text
    # references are still checked by their patterns
    assert parse_reference("registry.local:5000/a/b-c__d:v1.0") == ("registry.local:5000/a/b-c__d", "v1.0")
    for bad in ["UPPER", "a..b", "a:-tag", "a/", "x:" + "t" * 129]:
        with pytest.raises(InvalidArgument):
            parse_reference(bad)


def test_inspect_and_listing_shapes(engine, busybox_tar):
    image_id = engine.import_image(busybox_tar, "busybox:1")
    engine.tag("busybox:1", "other")
    rows = engine.images()
    assert {(r["Repository"], r["Tag"]) for r in rows} == {("busybox", "1"), ("other", "latest")}
    assert engine.rmi(["other"]) == ["Untagged: other:latest"]
    assert engine.image_store.resolve(image_id[7:19]) == image_id
    index = json.loads(read(os.path.join(engine.root, "index.json")))
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "busybox:1"]


def test_tree_usage_does_not_fail_on_what_is_deleted_while_it_walks(tmp_path, monkeypatch):
    """ps -s and system df measure trees that a concurrent rm or prune may be deleting: what
    vanishes during the walk (a directory before it is listed, an entry before its stat) is not
    counted, and no FileNotFoundError reaches the caller."""
    import shutil

    from lamina import fsutil

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"x" * 100)
    (tmp_path / "top").write_bytes(b"y" * 7)
    assert fsutil.tree_usage(str(tmp_path)) == (207, 5)
    real = os.scandir

    def deleting(path):  # the walk lists the root, then "a" and "b" go before they are read
        listing = real(path)
        if path == str(tmp_path):
            shutil.rmtree(tmp_path / "a")
            shutil.rmtree(tmp_path / "b")
        return listing

    monkeypatch.setattr(fsutil.os, "scandir", deleting)
    assert fsutil.tree_usage(str(tmp_path)) == (7, 1)
    assert fsutil.tree_usage(str(tmp_path / "gone")) == (0, 0)
