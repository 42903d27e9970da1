"""Crash harness: SIGKILL a lamina command at a random moment, then check the store.

For each command (import, commit, rm, rmi, load, pull, system prune, build when it exists) a
trial sets up what the command needs, fingerprints the store (crashkit.fingerprint: every blob's
bytes and every snapshot's full tree), starts the command and kills it after a random delay drawn
from [0, duration of an unkilled run]. Then:

* the next command (``lamina images``) works, and ``system check`` finds nothing;
* everything committed before the kill is intact byte for byte, or (for the objects the command
  was removing) entirely gone;
* a container can still be created on the base image, and a new image the command committed
  before it died can be used (create + diff).

Short mode (default): each command once unkilled (calibration) and once killed, on overlay2.
Long mode (``LAMINA_LONG=1``): ``LAMINA_CRASH_TRIALS`` (default 10) killed trials per command,
on overlay2 and vfs. The seed is printed so that a failure can be replayed with
``LAMINA_CRASH_SEED``.
"""

import os
import random
import shutil
import time

import pytest

from ..conftest import needs_root
from . import crashkit as ck

pytestmark = needs_root

TRIALS = int(os.environ.get("LAMINA_CRASH_TRIALS", "10" if ck.LONG else "1"))
DRIVERS = ["overlay2", "vfs"] if ck.LONG else ["overlay2"]
FILES = 1500 if ck.LONG else 600  # files per big layer: each command takes a second or so


class Scenario:
    """Set up one trial of a command; returns (args, may_go(key), stdin path or None)."""

    files = FILES  # files per big layer, container or volume (test_crash_points uses fewer)

    def __init__(self, root, driver, tmp, rnd):
        self.root, self.driver, self.tmp, self.rnd = root, driver, tmp, rnd
        self.n = 0

    def lamina(self, *args, **kw):
        return ck.run(self.root, self.driver, *args, **kw)

    def image_id(self, name: str) -> str | None:
        import json

        proc = self.lamina("inspect", name, check=False)
        return json.loads(proc.stdout)[0]["Id"] if proc.returncode == 0 else None

    def ensure_base(self):
        if self.image_id("base") is None:
            self.lamina("import", self.base_tar, "base")

    def big_tar(self, tag: str) -> str:
        path = os.path.join(self.tmp, f"{tag.replace(':', '_')}.tar")
        return ck.make_tree_tar(path, self.files, 2048, seed=1, extra=f"{tag} {time.time()}".encode())

    def container_with_files(self, name: str) -> str:
        cid = self.lamina("create", "--name", name, "base", "sh").stdout.decode().strip()
        path = self.lamina("mount", name).stdout.decode().strip()
        ck.write_files(path, self.files, 2048, seed=self.n)
        self.lamina("umount", name)
        return cid


def setup_import(s: Scenario):
    return ["import", s.big_tar(f"imp{s.n}"), f"imp:{s.n}"], lambda key: False, None


def setup_commit(s: Scenario):
    s.container_with_files(f"com{s.n}")
    return ["commit", f"com{s.n}", f"com:{s.n}"], lambda key: False, None


def setup_rm(s: Scenario):
    cid = s.container_with_files(f"rm{s.n}")
    return ["rm", f"rm{s.n}"], lambda key: key == ("container", cid), None


def setup_rmi(s: Scenario):
    s.lamina("import", s.big_tar(f"rmi{s.n}"), f"rmi:{s.n}")
    image = s.image_id(f"rmi:{s.n}")
    chain = ck.fingerprint(s.root)[("image", image)][3]
    goes = {("tag", f"docker.io/library/rmi:{s.n}"), ("tag", f"rmi:{s.n}"), ("image", image)}
    goes |= {("layer", c) for c in chain}
    return ["rmi", f"rmi:{s.n}"], lambda key: key in goes or (
        key[0] == "tag" and key[1].endswith(f"rmi:{s.n}")), None


def setup_prune(s: Scenario):
    s.lamina("import", s.big_tar(f"pr{s.n}"), f"pr:{s.n}")
    s.container_with_files(f"pr{s.n}")
    # everything here is stopped or unused: prune -a may take any of it, but all or nothing
    return ["system", "prune", "-a", "-f"], lambda key: True, None


def setup_load(s: Scenario):
    if not hasattr(s, "archive"):
        side = os.path.join(s.tmp, "side")
        ck.run(side, "vfs", "import", s.big_tar("load-src"), "loaded:1")
        s.archive = os.path.join(s.tmp, "loaded.tar")
        ck.run(side, "vfs", "save", "-o", s.archive, "loaded:1")
        shutil.rmtree(side)
    s.lamina("rmi", "-f", "loaded:1", check=False)
    return ["load", "-i", s.archive], lambda key: False, None


def _registry(s: Scenario) -> str:
    """The scenario's registry (one for its pull and push trials), started on first use."""
    if not hasattr(s, "registry"):
        from ..test_registry import start_registry

        workdir = os.path.join(s.tmp, "registry")
        os.makedirs(workdir)
        s.registry, s.registry_proc = start_registry(workdir)
    return s.registry


def setup_pull(s: Scenario):
    if not hasattr(s, "pulled_source"):  # two layers of their own: extracted at once, stacked
        _registry(s)
        s.pulled_source = True
        s.lamina("import", s.big_tar("pull-src"), "pullsrc:1")
        s.lamina("create", "--name", "pullsrc", "pullsrc:1", "sh")
        path = s.lamina("mount", "pullsrc").stdout.decode().strip()
        ck.write_files(os.path.join(path, "second"), s.files, 2048, seed=3000)
        s.lamina("umount", "pullsrc")
        s.lamina("commit", "pullsrc", "pullsrc:2")
        s.lamina("push", "pullsrc:2", f"{s.registry}/crash/pulled:1")
        s.lamina("rm", "pullsrc")
        s.lamina("rmi", "pullsrc:2", "pullsrc:1")
    s.lamina("rmi", "-f", f"{s.registry}/crash/pulled:1", check=False)
    return ["pull", "-q", f"{s.registry}/crash/pulled:1"], lambda key: False, None


def setup_build(s: Scenario):
    context = os.path.join(s.tmp, f"ctx{s.n}")
    ck.write_files(context, s.files, 2048, seed=1000 + s.n)
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write(f"FROM base\nCOPY data /data\nENV TRIAL={s.n}\nCOPY data /data2\n")
    return ["build", "-q", "-t", f"built:{s.n}", context], lambda key: False, None


def _state(s: Scenario, name: str) -> str:
    import json

    return json.loads(s.lamina("inspect", name).stdout)[0]["State"]["Status"]


def _settle_container(s: Scenario, name: str, killed: bool) -> None:
    """After a killed run/start/stop/cp: the container shows a sane state, ``rm -f`` removes it,
    and nothing of it stays mounted."""
    state = _state(s, name)
    assert state in ("created", "running", "exited"), f"{name}: state {state!r}"
    s.lamina("rm", "-f", name)
    assert s.image_id(name) is None
    left = ck.store_mounts(s.root)
    assert not left, f"mounts left after rm -f {name} (killed={killed}): {left}"


def setup_run(s: Scenario):
    name = f"run{s.n}"
    s.volatile = {("volume", f"rv{s.n}")}

    def verify(killed):
        proc = s.lamina("inspect", name, check=False)
        if proc.returncode == 0:  # killed before the container was stored: nothing to see
            _settle_container(s, name, killed)
        assert not ck.store_mounts(s.root), ck.store_mounts(s.root)
        s.lamina("volume", "rm", f"rv{s.n}", check=False)
        assert not ck.orphan_volume_dirs(s.root), ck.orphan_volume_dirs(s.root)
    s.verify = verify
    return ["run", "--name", name, "-v", f"rv{s.n}:/data", "base", "sh", "-c",
            "echo hi > /data/x; cat /etc/passwd > /dev/null"], lambda key: False, None


def setup_start(s: Scenario):
    name = f"start{s.n}"
    cid = s.lamina("create", "--name", name, "base", "sleep", "1000").stdout.decode().strip()
    s.volatile = {("container", cid)}
    s.verify = lambda killed: _settle_container(s, name, killed)
    return ["start", name], lambda key: False, None


def setup_stop(s: Scenario):
    name = f"stop{s.n}"
    cid = s.lamina("run", "-d", "--name", name, "base", "sleep", "1000").stdout.decode().strip()
    s.volatile = {("container", cid)}
    s.verify = lambda killed: _settle_container(s, name, killed)
    return ["stop", "-t", "1", name], lambda key: False, None


def setup_cp(s: Scenario):
    name = f"cp{s.n}"
    cid = s.lamina("create", "--name", name, "base", "sh").stdout.decode().strip()
    source = os.path.join(s.tmp, f"cpsrc{s.n}")
    ck.write_files(source, s.files, 2048, seed=2000 + s.n)
    s.volatile = {("container", cid)}
    s.verify = lambda killed: _settle_container(s, name, killed)
    return ["cp", source, f"{name}:/copied"], lambda key: False, None


def setup_save(s: Scenario):
    if s.image_id("saved:1") is None:
        s.lamina("import", s.big_tar("saved"), "saved:1")
    out = os.path.join(s.tmp, f"saved{s.n}.tar")

    def verify(killed):
        leftovers = [n for n in os.listdir(s.tmp) if n.startswith(f"saved{s.n}.tar.")]
        assert not leftovers, f"save left {leftovers} (killed={killed})"
        if not os.path.exists(out):
            assert killed, "an unkilled save wrote nothing"
            return
        side = os.path.join(s.tmp, f"side{s.n}")  # complete: it loads, the same image
        ck.run(side, "vfs", "load", "-i", out)
        assert ck.run(side, "vfs", "inspect", "saved:1").returncode == 0
        shutil.rmtree(side)
    s.verify = verify
    return ["save", "-o", out, "saved:1"], lambda key: False, None


def setup_push(s: Scenario):
    _registry(s)
    if s.image_id("pushsrc:1") is None:
        s.lamina("import", s.big_tar("push-src"), "pushsrc:1")
    target = f"{s.registry}/crash/pushed:{s.n}"
    import json

    def verify(killed):  # the registry takes the push again; what it serves is the image
        s.lamina("push", "pushsrc:1", target)
        side = os.path.join(s.tmp, f"side{s.n}")
        ck.run(side, "vfs", "pull", "-q", target)
        image = json.loads(ck.run(side, "vfs", "inspect", target).stdout)[0]["Id"]
        assert image == s.image_id("pushsrc:1")
        shutil.rmtree(side)
    s.verify = verify
    return ["push", "pushsrc:1", target], lambda key: False, None


def _fill_volume(s: Scenario, name: str) -> None:
    import json

    s.lamina("volume", "create", name)
    path = json.loads(s.lamina("volume", "inspect", name).stdout)[0]["Mountpoint"]
    ck.write_files(path, s.files, 2048, seed=3000 + s.n)


def _volume_verify(s: Scenario, names: list[str]):
    def verify(killed):
        assert not ck.orphan_volume_dirs(s.root), ck.orphan_volume_dirs(s.root)
        for name in names:  # a volume made again under a removed one's name starts empty
            if ("volume", name) not in ck.fingerprint(s.root):
                s.lamina("volume", "create", name)
                path = os.path.join(s.root, "volumes", name, "_data")
                assert os.listdir(path) == [], f"volume {name} made again holds old data"
            s.lamina("volume", "rm", name)
    return verify


def setup_volume_create(s: Scenario):
    s.verify = _volume_verify(s, [f"vc{s.n}"])
    return ["volume", "create", f"vc{s.n}"], lambda key: False, None


def setup_volume_rm(s: Scenario):
    _fill_volume(s, f"vr{s.n}")
    s.verify = _volume_verify(s, [f"vr{s.n}"])
    return ["volume", "rm", f"vr{s.n}"], lambda key: key == ("volume", f"vr{s.n}"), None


def setup_volume_prune(s: Scenario):
    _fill_volume(s, f"vp{s.n}a")
    _fill_volume(s, f"vp{s.n}b")
    s.verify = _volume_verify(s, [f"vp{s.n}a", f"vp{s.n}b"])
    return ["volume", "prune", "-f"], lambda key: key[0] == "volume", None


SCENARIOS = {"build": setup_build, "import": setup_import, "commit": setup_commit, "rm": setup_rm, "rmi": setup_rmi,
             "prune": setup_prune, "load": setup_load, "pull": setup_pull, "push": setup_push,
             "save": setup_save, "run": setup_run, "start": setup_start, "stop": setup_stop,
             "cp": setup_cp, "volume-create": setup_volume_create, "volume-rm": setup_volume_rm,
             "volume-prune": setup_volume_prune}


KNOWN_BROKEN: dict[str, str] = {}  # command -> why its trials are expected to fail


def _available(command: str) -> bool:
    import importlib.util

    module = {"load": "lamina.cli.transfer", "pull": "lamina.cli.transfer",
              "push": "lamina.cli.transfer", "save": "lamina.cli.transfer",
              "build": "lamina.cli.build"}.get(command)
    if command in ("pull", "push") and shutil.which("docker-registry") is None:
        return False
    if command in ("run", "start", "stop") and shutil.which("runc") is None:
        return False
    return module is None or importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("command", sorted(SCENARIOS))
def test_sigkill_leaves_store_consistent(command, driver, store_root, busybox_tar, tmp_path):
    if not _available(command):
        pytest.skip(f"lamina {command} is not available here")
    if command in KNOWN_BROKEN:
        pytest.xfail(KNOWN_BROKEN[command])
    seed = int(os.environ.get("LAMINA_CRASH_SEED", random.randrange(1 << 30)))
    print(f"LAMINA_CRASH_SEED={seed}")
    rnd = random.Random(seed)
    s = Scenario(store_root, driver, str(tmp_path), rnd)
    s.base_tar = busybox_tar
    s.lamina("import", busybox_tar, "base")
    s.lamina("create", "--name", "keeper", "base", "sh")
    keeper = s.lamina("mount", "keeper").stdout.decode().strip()
    ck.write_files(keeper, 20, 100, seed=99)
    s.lamina("umount", "keeper")
    duration = None
    killed_runs = 0
    try:
        for trial in range(TRIALS + 1):
            s.n = trial
            s.ensure_base()
            s.verify, s.volatile = None, set()
            args, may_go, _ = SCENARIOS[command](s)
            before = {key: value for key, value in ck.fingerprint(store_root).items()
                      if key not in s.volatile}  # what the command may change in place
            if duration is None:  # calibration: one whole run
                started = time.monotonic()
                s.lamina(*args)
                duration = time.monotonic() - started
                killed = False
            else:
                delay = rnd.uniform(min(0.05, duration * 0.3), duration * 0.9)
                started = time.monotonic()
                killed, _ = ck.run_and_kill(store_root, driver, args, delay)
                killed_runs += killed
                if not killed:  # the first run was slow (cold caches): aim at the faster one
                    duration = min(duration, time.monotonic() - started)
            s.lamina("images")  # the next command works (and recovers)
            after = ck.fingerprint(store_root)
            problems = ck.compare(before, after, may_go)
            assert not problems, f"trial {trial} (killed={killed}, seed {seed}): {problems}"
            if s.verify is not None:  # first: a container whose owner was killed keeps its
                s.verify(killed)      # network (namespace, address), which system check
            ck.check_clean(store_root, driver)  # reports, until a command settles it (rm -f)
            for key in after.keys() - before.keys():  # what got committed is usable
                if key[0] == "image":
                    cid = s.lamina("create", key[1], "sh").stdout.decode().strip()
                    s.lamina("diff", cid)
                    s.lamina("rm", cid)
            s.ensure_base()  # prune may have taken it
            cid = s.lamina("create", "base", "sh").stdout.decode().strip()
            s.lamina("rm", cid)
            ck.check_clean(store_root, driver)
    finally:
        proc = getattr(s, "registry_proc", None)
        if proc is not None:
            from ..test_registry import stop

            stop(proc)
    print(f"{command}/{driver}: {TRIALS} trials, {killed_runs} killed mid-run, "
          f"calibrated duration {duration:.2f}s")


def test_dead_claims_are_resolved(store_root, busybox_tar):
    """A blob named by a process that died before referencing it is deleted by the next command;
    one that is referenced, or claimed by a live process, stays (lamina.claims)."""
    import subprocess

    from lamina import Engine

    engine = Engine(root=store_root, driver="vfs")
    engine.import_image(busybox_tar, "base")
    used = engine.inspect_image("base")["Id"]
    orphan = engine.content.put(b"written, then the writer was killed")
    shared = engine.content.put(b"written by a dead process, claimed by a live one")
    engine.content.release_claims()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ingest = os.path.join(store_root, "ingest")
    for digest in (used, orphan, shared):
        open(os.path.join(ingest, f"{dead.pid}-claim-{digest[7:]}"), "w").close()
    open(os.path.join(ingest, f"{os.getpid()}-claim-{shared[7:]}"), "w").close()
    engine.close()
    engine = Engine(root=store_root)
    assert sorted(os.listdir(ingest)) == [f"{os.getpid()}-claim-{shared[7:]}"]
    assert not engine.content.exists(orphan)
    assert engine.content.exists(used) and engine.content.exists(shared)
    os.unlink(os.path.join(ingest, f"{os.getpid()}-claim-{shared[7:]}"))
    engine.content.release_claims()
    findings = [str(f) for f in engine.check()]
    assert findings == [f"unreferenced blob: {shared}"]


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_uncommitted_snapshot_data_is_removed(store_root, driver):
    """A snapshot's directory is made before its record commits: a rolled-back transaction
    removes it at once, a killed process's is removed by the next command (Snapshotter.settle)."""
    import subprocess

    from lamina import Engine

    engine = Engine(root=store_root, driver=driver)
    data = os.path.join(store_root, driver) if driver == "overlay2" else os.path.join(
        store_root, driver, "dir")
    before = sorted(os.listdir(data))
    with pytest.raises(RuntimeError), engine.store.tx():
        engine.snaps.prepare("rolled-back", None)
        raise RuntimeError("abort")
    assert sorted(os.listdir(data)) == before
    # a dead process: its marker and its data, no record
    dead = subprocess.Popen(["true"])
    dead.wait()
    row_id = "ab" * 16
    engine.snaps._create(row_id, None, "active")
    marker = os.path.join(store_root, "ingest", f"{dead.pid}-snapshot-{row_id}")
    open(marker, "w").close()
    engine.close()
    engine = Engine(root=store_root)
    assert sorted(os.listdir(data)) == before and not os.path.exists(marker)
    assert [str(f) for f in engine.check()] == []


def test_index_of_a_dead_process_is_rewritten(store_root, busybox_tar):
    """index.json is written inside the transaction that changes the tags; if the process dies
    before the commit, the next command rewrites it from the committed tags."""
    import json
    import subprocess

    from lamina import Engine

    engine = Engine(root=store_root, driver="vfs")
    engine.import_image(busybox_tar, "base")
    assert not [n for n in os.listdir(os.path.join(store_root, "ingest")) if "index" in n]
    with open(os.path.join(store_root, "index.json"), "w") as f:
        f.write('{"schemaVersion":2,"manifests":[]}')  # as if an rmi wrote it, then died
    dead = subprocess.Popen(["true"])
    dead.wait()
    open(os.path.join(store_root, "ingest", f"{dead.pid}-index"), "w").close()
    engine.close()
    engine = Engine(root=store_root)
    with open(os.path.join(store_root, "index.json")) as f:
        names = [m["annotations"]["org.opencontainers.image.ref.name"]
                 for m in json.load(f)["manifests"]]
    assert names == ["docker.io/library/base:latest"] or names == ["base:latest"], names
    assert os.listdir(os.path.join(store_root, "ingest")) == []
    assert [str(f) for f in engine.check()] == []


def test_trashed_blob_wanted_again_is_kept(store_root, busybox_tar):
    """A blob filed for deletion (an rmi) that another process then claims or references again
    (it imported the same bytes meanwhile) is not deleted by the purge (lamina.claims.gate)."""
    from lamina import Engine
    from lamina.metadata import Transaction

    engine = Engine(root=store_root, driver="vfs")
    image = engine.import_image(busybox_tar, "base")
    blob = engine.content.put(b"a blob the rmi dropped and a concurrent load wants")
    engine.content.release_claims()
    path = engine.content.path(blob)
    with Transaction(engine.db):  # filed by a dead rmi
        engine.db.execute("INSERT INTO trash(path, pid) VALUES (?, ?)", (path, 1 << 22))
    claim = os.path.join(store_root, "ingest", f"{os.getpid()}-claim-{blob[7:]}")
    open(claim, "w").close()  # ...and claimed by a live process
    engine.snaps.purge()
    assert os.path.exists(path)
    assert engine.db.execute("SELECT count(*) FROM trash").fetchone()[0] == 1
    os.unlink(claim)
    engine.snaps.purge()  # nobody wants it now: gone
    assert not os.path.exists(path)
    assert engine.db.execute("SELECT count(*) FROM trash").fetchone()[0] == 0
    config = engine.content.path(image)  # referenced: the row goes, the file stays
    with Transaction(engine.db):
        engine.db.execute("INSERT INTO trash(path, pid) VALUES (?, ?)", (config, 1 << 22))
    engine.snaps.purge()
    assert os.path.exists(config)
    assert [str(f) for f in engine.check()] == []


def test_blob_filed_again_while_its_row_was_purged_is_deleted(store_root, busybox_tar):
    """A purge finds a trashed blob referenced again (a build stored a pruned state again) and
    drops its trash row; right after its lock is let go, another process removes the image
    again and files the blob anew. That new row must survive (the gate drops the row in the
    transaction that decided), so the other process's purge deletes the blob: no unreferenced
    blob is left (test_prunes_racing_builds_never_fail_them hit this about once in three runs)."""
    from lamina import Engine
    from lamina.claims import gate
    from lamina.metadata import Transaction

    engine = Engine(root=store_root, driver="vfs")
    other = Engine(root=store_root, driver="vfs")  # the other process's connection
    image = engine.import_image(busybox_tar, "base")
    config = engine.content.path(image)
    with Transaction(engine.db):  # filed by a prune that died, then stored again by a build
        engine.db.execute("INSERT INTO trash(path, pid) VALUES (?, ?)", (config, 1 << 22))
    filed_again = []

    def decide_then_race(path):
        handled = gate(engine.store, path)
        if path == config and not filed_again:  # the other prune commits; its purge comes later
            with Transaction(other.db):
                other.image_store.delete(image)
            filed_again.append(path)
        return handled

    engine.snaps.blob_gate = decide_then_race
    engine.snaps.purge()
    assert filed_again and os.path.exists(config)
    with other.store.tx():  # the other prune's end: index.json, then its purge
        pass
    assert not os.path.exists(config)
    assert [str(f) for f in engine.check()] == []
    other.close()
    engine.close()


def test_failed_commit_leaves_no_blob(store_root, busybox_tar):
    """A commit whose image cannot be stored (its base image went meanwhile, say) takes back the
    layer blob it wrote (lamina.claims.abandon): system check finds no unreferenced blob."""
    from lamina import Engine
    from lamina.errors import LaminaError

    engine = Engine(root=store_root, driver="vfs")
    engine.import_image(busybox_tar, "base")
    engine.create("base", name="c1")
    with open(os.path.join(engine.mount("c1"), "new-file"), "w") as f:
        f.write("data")
    blobs = sorted(os.listdir(os.path.join(store_root, "blobs", "sha256")))
    with pytest.raises(LaminaError):
        engine.commit("c1", "Bad:Reference")  # refused before anything is written
    original = engine.image_store.add

    def vanished(*args, **kwargs):
        raise LaminaError("No such image: removed meanwhile")

    engine.image_store.add = vanished
    with pytest.raises(LaminaError):
        engine.commit("c1", "derived")
    engine.image_store.add = original
    assert sorted(os.listdir(os.path.join(store_root, "blobs", "sha256"))) == blobs
    assert os.listdir(os.path.join(store_root, "ingest")) == []
    assert [str(f) for f in engine.check()] == []


def test_cp_into_a_stopped_container_unmounts_it(store_root, busybox_tar, tmp_path):
    """cp mounts a stopped container for the copy and unmounts it afterwards: the copy's
    descriptor of the container's root is closed first (it kept the mount busy: EBUSY, the mount
    left behind). Found by the cp crash trial's calibration run."""
    source = tmp_path / "file"
    source.write_text("data")
    ck.run(store_root, "overlay2", "import", busybox_tar, "base")
    ck.run(store_root, "overlay2", "create", "--name", "c1", "base", "sh")
    ck.run(store_root, "overlay2", "cp", str(source), "c1:/file")
    ck.run(store_root, "overlay2", "cp", "c1:/file", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "data"
    assert not ck.store_mounts(store_root), ck.store_mounts(store_root)
    assert ck.run(store_root, "overlay2", "diff", "c1").stdout.decode().split() == ["A", "/file"]


@pytest.mark.parametrize("then", ["ls", "create"])
def test_volume_rm_killed_midway_is_finished_by_the_next_command(store_root, then):
    """``volume rm`` commits the removal, then deletes the data through the trash: if it is
    killed halfway, the next command finishes the deletion (``system check`` clean, no directory
    without a volume), and a volume made again under the name starts empty. It used to leave the
    half-deleted directory, which a new volume of that name then inherited."""
    import subprocess
    import sys

    ck.run(store_root, "vfs", "volume", "create", "v1")
    ck.write_files(os.path.join(store_root, "volumes", "v1", "_data"), 50, 100, seed=1)
    script = ("import os, sys\nimport lamina.fsutil\n"
              "def die(path, *args, **kwargs):\n"
              "    os.unlink(next(os.scandir(os.path.join(path, '_data', 'data'))).path)\n"
              "    os._exit(9)\n"
              "lamina.fsutil.remove_tree = die\n"
              "from lamina import Engine\nEngine(root=sys.argv[1]).volume_rm('v1')\n")
    assert subprocess.run([sys.executable, "-c", script, store_root], check=False).returncode == 9
    if then == "create":  # straight away: it must not inherit the old data
        ck.run(store_root, None, "volume", "create", "v1")
        assert os.listdir(os.path.join(store_root, "volumes", "v1", "_data")) == []
    else:
        ck.run(store_root, None, "volume", "ls")
    assert not ck.orphan_volume_dirs(store_root), ck.orphan_volume_dirs(store_root)
    ck.check_clean(store_root, None)
    ck.run(store_root, None, "volume", "create", "v1")
    assert os.listdir(os.path.join(store_root, "volumes", "v1", "_data")) == []
    ck.check_clean(store_root, None)


def test_check_finds_a_volume_directory_without_a_volume(store_root):
    """A directory under volumes/ that no volume owns is reported, and --repair removes it."""
    ck.run(store_root, "vfs", "volume", "create", "v1")
    os.makedirs(os.path.join(store_root, "volumes", "stray", "_data"))
    proc = ck.run(store_root, None, "system", "check", check=False)
    assert proc.returncode != 0 and b"orphan volume directory: volumes/stray" in proc.stdout
    ck.run(store_root, None, "system", "check", "--repair", check=False)
    assert sorted(os.listdir(os.path.join(store_root, "volumes"))) == ["v1"]
    ck.check_clean(store_root, None)


@pytest.mark.parametrize("kind", ["save", "push"])
def test_staging_directory_of_a_killed_save_or_push_is_removed(store_root, busybox_tar, kind):
    """save and push stage files in a directory ``ingest/<pid>-save-*`` / ``-push-*``; killed,
    they left it, and every later command failed ("Is a directory"): the next command's
    recovery removes it. Found by the save and push crash trials."""
    import subprocess

    ck.run(store_root, "vfs", "import", busybox_tar, "base")
    dead = subprocess.Popen(["true"])
    dead.wait()
    staging = os.path.join(store_root, "ingest", f"{dead.pid}-{kind}-abc123")
    os.makedirs(os.path.join(staging, "blobs"))
    with open(os.path.join(staging, "blobs", "layer"), "wb") as f:
        f.write(b"half a layer")
    ck.run(store_root, None, "images")
    assert os.listdir(os.path.join(store_root, "ingest")) == []
    ck.check_clean(store_root, None)
