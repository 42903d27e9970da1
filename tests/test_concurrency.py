"""Verbs on one container from several processes (lamina.uses): a command working on a container
(``cp``, ``commit``, ``run --rm`` until its removal) keeps ``container prune`` and ``rm`` off it;
a command that comes while another removes it is told "No such container". Each race is run
deterministically: the other process's command runs in the middle of this one's steps.

Found by the stress test with ``container prune`` in the mix (tests/reliability/test_stress.py):
"snapshot ... not found" from an ``rm``, ``commit`` or ``cp`` that lost to a prune,
"Device or resource busy" from a prune unmounting a container ``cp`` had mounted, "No such file
or directory" from a prune measuring a container another ``rm`` was deleting.
"""

import os
import shutil
import subprocess
import sys

import pytest

from .conftest import Lamina, needs_root

pytestmark = needs_root


@pytest.fixture
def setup(engine, store_root, driver, busybox_tar):
    engine.import_image(busybox_tar, "base")
    engine.create("base", name="c1")
    return engine, Lamina(store_root, driver)


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_prune_and_rm_leave_a_container_another_command_uses(setup):
    engine, other = setup
    cid = engine.container_store.get("c1")["id"]
    with engine.container_store.using("c1"):
        assert cid not in other("container", "prune", "-f").stdout
        line = _one_line(other("rm", "c1", check=False))
        assert line.startswith("Error: conflict: container c1 is in use by another command")
        assert engine.container_store.get("c1")["id"] == cid
    assert cid in other("container", "prune", "-f").stdout
    assert engine.containers() == [] and [str(f) for f in engine.check()] == []


def test_cp_with_a_prune_and_an_rm_in_the_middle(setup, tmp_path, monkeypatch):
    """A prune and an ``rm`` in the middle of a ``cp`` into the container (mounted on overlay2):
    the prune leaves it, the ``rm`` is refused as a conflict, the copy is complete."""
    from lamina import copy

    engine, other = setup
    (tmp_path / "f").write_bytes(b"data")
    seen = {}
    real = copy.copy

    def others_meanwhile(*args, **kwargs):
        seen["prune"] = other("container", "prune", "-f")
        seen["rm"] = other("rm", "c1", check=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(copy, "copy", others_meanwhile)
    engine.cp(str(tmp_path / "f"), "c1:/f")
    monkeypatch.setattr(copy, "copy", real)
    assert "Total reclaimed space: 0B" in seen["prune"].stdout
    assert "is in use by another command" in _one_line(seen["rm"])
    engine.cp("c1:/f", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"data"
    assert not _store_mounts(engine.root)
    engine.rm("c1")
    assert [str(f) for f in engine.check()] == []


def test_commit_with_a_prune_in_the_middle(setup, monkeypatch):
    """It was "snapshot ... not found" from the commit."""
    from lamina import differ

    engine, other = setup
    root = engine.mount("c1")
    with open(os.path.join(root, "new"), "wb") as f:
        f.write(b"x" * 100)
    engine.umount("c1")
    seen = {}
    real = differ.diff_writer

    def prune_meanwhile(*args, **kwargs):
        seen["prune"] = other("container", "prune", "-f")
        return real(*args, **kwargs)

    monkeypatch.setattr(differ, "diff_writer", prune_meanwhile)
    image = engine.commit("c1", "committed")
    monkeypatch.setattr(differ, "diff_writer", real)
    assert "Total reclaimed space: 0B" in seen["prune"].stdout
    assert engine.container_store.get("c1") and engine.inspect_image("committed")["Id"] == image
    engine.create("committed", name="c2")
    assert engine.diff("c2") == []
    assert [str(f) for f in engine.check()] == []


def test_commands_that_come_while_another_removes_it_say_no_such_container(setup, tmp_path,
                                                                           monkeypatch):
    """An ``rm``, a prune, a ``cp``, a ``commit`` and a ``start`` in the middle of an ``rm`` (once it
    has made the removal its own): "No such container" for all but the prune, which skips it."""
    engine, other = setup
    (tmp_path / "f").write_bytes(b"data")
    seen = {}
    real = engine.container_store.umount

    def others_meanwhile(name):
        if not seen:
            seen["rm"] = other("rm", "c1", check=False)
            seen["rm -f"] = other("rm", "-f", "c1", check=False)
            seen["cp"] = other("cp", str(tmp_path / "f"), "c1:/f", check=False)
            seen["commit"] = other("commit", "c1", "img", check=False)
            seen["start"] = other("start", "c1", check=False)
            seen["prune"] = other("container", "prune", "-f")
        return real(name)

    monkeypatch.setattr(engine.container_store, "umount", others_meanwhile)
    cid = engine.rm("c1")
    for verb in ("rm", "rm -f", "cp", "commit", "start"):
        assert _one_line(seen[verb]) == "Error: No such container: c1", verb
    assert cid not in seen["prune"].stdout
    assert engine.containers() == [] and [str(f) for f in engine.check()] == []


def test_rm_force_waits_for_a_use_to_end(setup):
    """``rm -f`` of a container another command uses waits for it (a ``cp`` or ``commit`` is
    short), then removes it; a use of a process that died counts for nothing."""
    engine, other = setup
    script = ("import sys, time; from lamina import Engine, uses\n"
              "e = Engine(root=sys.argv[1])\nwith e.container_store.using('c1'):\n"
              "    print('held', flush=True); time.sleep(1)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, engine.root],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert "is in use" in _one_line(other("rm", "c1", check=False))
        other("rm", "-f", "c1")
        assert holder.wait(10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert engine.containers() == []
    engine.create("base", name="c2")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c2 = engine.container_store.get("c2")["id"]
    with engine.store.tx():
        engine.db.execute("INSERT INTO container_uses VALUES (?, ?, 0)", (c2, dead.pid))
    assert c2 in other("container", "prune", "-f").stdout
    assert engine.containers() == [] and [str(f) for f in engine.check()] == []


def test_a_volume_removed_while_it_is_attached_is_made_again(setup, monkeypatch):
    """``run -v vol:/data``: a ``volume rm`` between the volume's creation and the record that the
    container uses it was an IntegrityError traceback. The volume is made again and used."""
    from lamina import volumes

    engine, other = setup
    cid = engine.container_store.get("c1")["id"]
    real = volumes.create
    removed = []

    def removed_meanwhile(engine, name=None, anonymous=False):
        made = real(engine, name, anonymous)
        if not removed:
            removed.append(other("volume", "rm", made))
        return made

    monkeypatch.setattr(volumes, "create", removed_meanwhile)
    rootfs = engine.mount("c1")
    try:
        specs = volumes.attach(engine.store, cid, (("vol", "/etc", False),), rootfs)
    finally:
        engine.umount("c1")
    assert removed[0].stdout.strip() == "vol" and specs == (("vol", "/etc", False),)
    assert _one_line(other("volume", "rm", "vol", check=False)).startswith("Error: ")
    assert os.path.isdir(volumes.data_dir(engine.store, "vol"))
    engine.rm("c1")
    other("volume", "rm", "vol")
    assert [str(f) for f in engine.check()] == []


@pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc")
def test_run_rm_with_a_prune_after_its_exit_removes_its_anonymous_volume(setup, monkeypatch):
    """``run --rm -v /data``: a prune between the process's exit and the removal used to take the
    container first, leaving its anonymous volume behind. The run uses its container until it
    has removed it: the prune leaves it, the volume goes with it."""
    from lamina.runtime import lifecycle
    from lamina.runtime.oci import RunConfig

    engine, other = setup
    engine.rm("c1")
    seen = {}
    real = lifecycle.remove_after_run

    def prune_first(engine, name):
        seen["prune"] = other("container", "prune", "-f")
        return real(engine, name)

    monkeypatch.setattr(lifecycle, "remove_after_run", prune_first)
    with open(os.devnull, "wb") as null:
        cid, code = lifecycle.run(engine.container_store, "base", ["true"], stdout=null.fileno(),
                                  config=RunConfig(volumes=(("", "/data", False),),
                                                   auto_remove=True))
    assert code == 0 and cid not in seen["prune"].stdout
    assert engine.containers() == [] and engine.volumes() == []
    assert [str(f) for f in engine.check()] == []


def _store_mounts(root: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f" {root}/" in line]


def test_reads_in_one_block_see_one_state_of_the_store(engine, store_root, driver, busybox_tar):
    """Store.reading(): the queries of a block (the API's image list and inspect) see the store
    as it was when the block began, while another process tags; after it, the new tag shows.
    Nested blocks and a write transaction after one work as before."""
    engine.import_image(busybox_tar, "base")
    image_id = engine.image_store.resolve("base")
    with engine.store.reading():
        assert engine.image_store.tags(image_id) == ["base:latest"]
        Lamina(store_root, driver)("tag", "base", "other:1")  # another process commits
        with engine.store.reading():  # nested: part of the outer block
            assert engine.image_store.tags(image_id) == ["base:latest"]
        assert engine.db.in_transaction
    assert not engine.db.in_transaction
    assert sorted(engine.image_store.tags(image_id)) == ["base:latest", "other:1"]
    engine.tag("base", "third:1")  # a write transaction after the block
    assert "third:1" in engine.image_store.tags(image_id)


def test_layer_writers_in_helper_threads_leave_the_database_alone(setup):
    """``commit`` (as a build's RUN step) writes its layer tar in a helper thread while this
    thread stores the layer, and a layer's tar read as a stream is written in one: neither
    helper may query the store's database. A query in flight there turns this thread's
    ``BEGIN IMMEDIATE`` into the upgrade of a read transaction, which SQLite refuses at once
    ("cannot write the store's database: database is locked") when another process wrote
    meanwhile: one of 8 concurrent builds of bench/scale.py's parallel curve failed so."""
    import threading

    engine, _ = setup
    cid = engine.container_store.get("c1")["id"]
    with open(os.path.join(engine.snaps.dir(cid), "new"), "w") as f:
        f.write("data\n")
    others = []

    def trace(sql):
        if threading.current_thread() is not threading.main_thread():
            others.append((threading.current_thread().name, sql))

    engine.db.set_trace_callback(trace)
    try:
        image = engine.commit("c1", "committed")
        chain = engine.image_store.layer_rows(image)[-1]["chain_id"]
        with engine.image_store.layers.tar_reader(chain) as stream:
            tar = b"".join(iter(lambda: stream.read(1 << 16), b""))
    finally:
        engine.db.set_trace_callback(None)
    assert b"data\n" in tar
    assert others == []
