"""`system check` sees every kind of damage it knows, `--repair` rebuilds what it can, and what it
cannot rebuild is named with what depends on it; `repaired, 0 left` only when the next check is
clean."""

import json
import os
import re
import sqlite3

import pytest

from lamina import Engine

from .conftest import needs_root
from .test_gc import populated

pytestmark = needs_root


def chains(engine, name):
    return [r["chain_id"] for r in engine.image_store.layer_rows(engine.image_store.resolve(name))]


def flip_byte(path, offset=100):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_every_repairable_damage_is_found_and_repaired(store_root, driver, busybox_tar):
    engine = populated(Engine(root=store_root, driver=driver), busybox_tar)
    assert engine.check() == []
    root = engine.root
    # staging and deletions left by dead processes, partial blobs
    with engine.store.tx():
        engine.store.snaps.prepare("extract-999999999-dead", None)
    doomed = os.path.join(root, "containers", "gone-dir")
    os.makedirs(doomed)
    with engine.store.tx():
        engine.db.execute("INSERT INTO trash VALUES (?, 999999999)", (doomed,))
    with open(os.path.join(root, "ingest", "999999999-partial"), "wb") as f:
        f.write(b"half")
    # orphans
    os.makedirs(os.path.join(root, driver, "dir" if driver == "vfs" else "", "deadbeef" * 4))
    if driver == "overlay2":
        os.symlink("../nowhere/diff", os.path.join(root, "overlay2", "l", "ORPHANLINK"))
    engine.content.put(b"nobody references me")
    os.makedirs(os.path.join(root, "mounts", "0" * 64))
    os.makedirs(os.path.join(root, "containers", "f" * 64))
    os.makedirs(os.path.join(root, "volumes", "no-such-volume"))
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": []}, f)
    # records: the committed layer (lamina wrote its tar) loses its record; a kept blob is gone
    top = chains(engine, "derived")[-1]
    with engine.store.tx():
        engine.db.execute("DELETE FROM tar_split WHERE chain_id = ?", (top,))
        engine.db.execute("INSERT INTO kept_blobs VALUES (?)", ("sha256:" + "ab" * 32,))
    kinds = {f.kind for f in engine.check()}
    want = {"staged layer of a dead process", "unfinished deletion", "partial blob",
            "orphan layer directory", "unreferenced blob", "stale mount",
            "orphan container directory", "orphan volume directory",
            "index.json does not match the tags", "layer without tar-split record",
            "missing blob"} | ({"orphan layer link"} if driver == "overlay2" else set())
    assert kinds == want
    findings = engine.check(repair=True)
    assert all(f.fixed for f in findings), [str(f) for f in findings if not f.fixed]
    assert engine.check() == []
    out = str(os.path.join(store_root, "o.tar"))
    engine.save(["derived"], out)  # the rebuilt record gives the layer's tar back
    engine.close()


def test_corrupt_record_is_rebuilt_from_an_intact_snapshot(engine, busybox_tar):
    populated(engine, busybox_tar)
    top = chains(engine, "derived")[-1]
    with engine.store.tx():
        engine.db.execute("UPDATE tar_split SET record = X'00' WHERE chain_id = ?", (top,))
    assert [f.kind for f in engine.check()] == ["corrupt tar-split record"]
    assert all(f.fixed for f in engine.check(repair=True))
    assert engine.check() == []


def test_a_flipped_byte_in_a_layer_is_seen_and_quick_skips_the_content_pass(
        lamina, busybox_tar):
    lamina("import", busybox_tar, "busybox")
    assert lamina("system", "check").stdout.strip() == "No problems found"
    engine = Engine(root=lamina.root, driver=lamina.driver)
    layer_dir = engine.store.snaps.dir(chains(engine, "busybox")[0])
    engine.close()
    flip_byte(os.path.join(layer_dir, "bin", "busybox"))
    assert lamina("system", "check", "--quick").returncode == 0
    bad = lamina("system", "check", check=False)
    assert bad.returncode == 1
    assert "damaged layer files (do not match their record)" in bad.stdout
    assert "/bin/busybox" in bad.stdout
    # save refuses to give the damaged layer's tar out
    failed = lamina("save", "-o", os.path.join(lamina.root, "x.tar"), "busybox", check=False)
    assert failed.returncode != 0 and "/bin/busybox" in failed.stderr


def test_a_damaged_layer_is_rebuilt_from_its_kept_blob(store_root, busybox_tar):
    engine = Engine(root=store_root, driver="overlay2")
    engine.import_image(busybox_tar, "busybox")
    chain = chains(engine, "busybox")[0]
    layers = engine.image_store.layers
    with engine.content.writer() as writer:  # the tar kept as a pull cache keeps it
        layers.write_tar(chain, writer)
        digest, _ = writer.commit()
    layers.keep_blobs([digest])
    engine.content.release_claims()
    assert engine.check() == []
    layer_file = os.path.join(engine.store.snaps.dir(chain), "bin", "busybox")
    flip_byte(layer_file)
    findings = engine.check(repair=True)
    assert [(f.kind, f.fixed) for f in findings] == [
        ("damaged layer files (do not match their record)", True)]
    assert engine.check() == []
    engine.close()


def _break(engine, how):
    """Damage that no repair can undo; returns the images it takes with it."""
    db = sqlite3.connect(os.path.join(engine.root, "lamina.db"))
    busybox = engine.image_store.resolve("busybox")
    derived = engine.image_store.resolve("derived")
    base = chains(engine, "busybox")[0]
    if how == "damaged layer files":
        flip_byte(os.path.join(engine.store.snaps.dir(base), "bin", "busybox"))
        lost = {busybox, derived}
    elif how == "corrupt blob":
        flip_byte(engine.content.path(derived), 5)  # the config of `derived`
        lost = {derived}
    elif how == "missing blob":
        os.unlink(engine.content.path(engine.image_store.row(derived)["manifest_digest"]))
        lost = {derived}
    elif how == "layer without tar-split record":  # an imported tar: not lamina's layout
        db.execute("DELETE FROM tar_split WHERE chain_id = ?", (base,))
        lost = {busybox, derived}
    elif how == "snapshot without data":
        import shutil

        shutil.rmtree(engine.store.snaps.dir(base))
        lost = {busybox, derived}
    db.commit()
    db.close()
    return lost


@pytest.mark.parametrize("how", ["damaged layer files", "corrupt blob", "missing blob",
                                 "layer without tar-split record", "snapshot without data"])
def test_what_cannot_be_repaired_is_named_with_the_command_that_removes_it(
        lamina, busybox_tar, how):
    engine = populated(Engine(root=lamina.root, driver=lamina.driver), busybox_tar)
    lost = _break(engine, how)
    engine.close()
    repaired = lamina("system", "check", "--repair", check=False)
    assert repaired.returncode == 1
    assert how in repaired.stdout and "(cannot repair)" in repaired.stdout
    assert ", 0 left" not in repaired.stdout
    for image_id in lost:
        assert image_id[7:19] in repaired.stdout
    assert lamina("system", "check", check=False).returncode == 1  # still there: not hidden
    command = re.search(r"Remove them with: (.*)", repaired.stdout).group(1)
    for part in command.split(" && "):
        argv = part.split()
        assert argv[0] == "lamina"
        lamina(*argv[1:])
    after = lamina("system", "check", "--repair", check=False)
    if after.returncode != 0:  # what the removal left behind (orphans) is repaired, no more
        assert ", 0 left" in after.stdout, after.stdout
    assert lamina("system", "check").stdout.strip() == "No problems found"
    assert not ({i[7:19] for i in lost} & set(lamina("images", "-q").stdout.split()))


def test_check_cli_exit_codes(lamina, busybox_tar):
    lamina("import", busybox_tar, "busybox")
    ok = lamina("system", "check")
    assert ok.stdout.strip() == "No problems found"
    os.makedirs(os.path.join(lamina.root, "mounts", "f" * 64))
    bad = lamina("system", "check", check=False)
    assert bad.returncode == 1 and "stale mount" in bad.stdout
    fixed = lamina("system", "check", "--repair")
    assert "1 problem(s) repaired, 0 left" in fixed.stdout
    assert lamina("system", "check").returncode == 0


def test_a_layer_listing_that_does_not_match_its_layer_is_found_and_removed(
        engine, busybox_tar):
    """image analyze keeps each layer's listing; one that cannot be read, or (unless quick)
    that another layer's tar gave, is a finding that repair removes; the next analysis makes
    it again, and the report is the one the layers give."""
    from lamina.analyze import analyze

    populated(engine, busybox_tar)
    report = analyze(engine.image_store, "derived")
    base, top = chains(engine, "derived")[0], chains(engine, "derived")[-1]
    assert engine.check() == []
    db = engine.db
    with engine.store.tx():
        db.execute("UPDATE layer_listings SET listing = (SELECT listing FROM layer_listings"
                   " WHERE chain_id = ?) WHERE chain_id = ?", (base, top))
    assert engine.check(quick=True) == []  # it reads as a listing: only the full check compares
    assert [(f.kind, f.where) for f in engine.check()] == [
        ("layer listing that does not match its layer", top)]
    with engine.store.tx():
        db.execute("UPDATE layer_listings SET listing = X'00' WHERE chain_id = ?", (top,))
    assert [f.kind for f in engine.check(quick=True)] == [
        "layer listing that does not match its layer"]
    assert all(f.fixed for f in engine.check(repair=True))
    assert engine.check() == []
    assert db.execute("SELECT count(*) FROM layer_listings WHERE chain_id = ?",
                      (top,)).fetchone()[0] == 0
    assert analyze(engine.image_store, "derived") == report
    assert db.execute("SELECT count(*) FROM layer_listings WHERE chain_id = ?",
                      (top,)).fetchone()[0] == 1
