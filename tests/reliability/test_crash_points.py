"""Crash trials at chosen points: a command SIGKILLs itself at a named fault point
(:mod:`lamina.faults`, ``LAMINA_FAULT=NAME[:N]``), not after a random delay.

Each trial sets up what the command needs (the scenarios of test_crash.py, with smaller layers,
plus ``tag``, ``container prune`` and ``rm`` of a container that ran), fingerprints the store,
runs the command with the fault and requires that it died by SIGKILL (returncode -9: a point the
command never reaches fails the trial instead of passing it). Then:

* the next command (``lamina images``) works; where the trial names a second point, that
  command is itself killed there while it recovers, and the one after it works;
* ``system check`` exits 0 with "No problems found", and nothing is left that it does not look
  for (crashkit.leftovers: ``ingest/`` files, temporary files, directories of containers and
  volumes that are gone);
* everything committed before the kill is intact byte for byte, or, for what the command was
  removing, entirely gone (crashkit.compare);
* the command run again succeeds, or, for a removal whose kill came after its commit point,
  fails with a one-line "No such ..." because the object is gone; ``system check`` is clean
  again and nothing committed before is lost.

The store is shared by the trials of one driver (fewer set-ups; what earlier trials committed
must survive the later ones) and replaced after a failed trial. Short mode (default): the pairs
in ``PAIRS`` on vfs and overlay2 (a pair's N says which hit: when a command gains a transaction
the comment beside it may go stale, and the long mode still covers every hit). Long mode
(``LAMINA_LONG=1``): every command runs once with ``LAMINA_FAULT_LOG`` to list the points it
passes, then is killed at the 1st, 2nd, ... hit of each (up to ``LAMINA_POINTS_MAX_HITS``,
default 8; ``extract.mid`` at its 1st and 60th) until a run finishes without reaching the next
hit (that run is checked the same way), on both drivers.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from ..conftest import needs_root, remove_bridges
from . import crashkit as ck
from . import test_crash as tc

pytestmark = needs_root

DRIVERS = ["vfs", "overlay2"]


class Scenario(tc.Scenario):
    files = 120  # files per layer: more than extract.mid's hits below, a short command


def setup_tag(s):
    return ["tag", "base", f"tagged:{s.n}"], lambda key: False, None


def setup_rm_exited(s):
    s.lamina("run", "--name", f"ran{s.n}", "base", "true")
    cid = s.image_id(f"ran{s.n}")  # (inspect's Id: a container's too)
    return ["rm", f"ran{s.n}"], lambda key: key == ("container", cid), None


def setup_container_prune(s):
    s.container_with_files(f"cp{s.n}a")
    if shutil.which("runc"):
        s.lamina("run", "--name", f"cp{s.n}b", "base", "true")
    return ["container", "prune", "-f"], lambda key: key[0] == "container", None


def setup_system_prune(s):
    s.lamina("import", s.big_tar(f"sp{s.n}"), f"sp:{s.n}")
    s.container_with_files(f"sp{s.n}")
    s.lamina("volume", "create", f"spv{s.n}")
    return ["system", "prune", "-a", "-f", "--volumes"], lambda key: True, None


SCENARIOS = {
    "import": tc.setup_import, "commit": tc.setup_commit, "build": tc.setup_build,
    "rm": tc.setup_rm, "rm-exited": setup_rm_exited, "rmi": tc.setup_rmi, "tag": setup_tag,
    "load": tc.setup_load, "system-prune": setup_system_prune,
    "container-prune": setup_container_prune, "volume-create": tc.setup_volume_create,
    "volume-rm": tc.setup_volume_rm, "volume-prune": tc.setup_volume_prune,
    "save": tc.setup_save, "pull": tc.setup_pull, "push": tc.setup_push,
}

# What a removal's second run may answer when the first one's kill came after its commit.
GONE = ("No such container", "No such image", "no such volume")

# (command, point[:N], point to kill the next command at while it recovers, or None).
# N counts the hits in one run (see LAMINA_FAULT_LOG); the comments say what the hit is.
PAIRS = [
    ("import", "extract.mid:1", None),  # the layer's first file (no blob: kept unpacked)
    ("import", "tx.after-commit:1", None),  # the staging snapshot committed, nothing else
    ("import", "snapshot.staged", None),  # the extraction's directory, no row
    ("import", "extract.mid:60", None),  # half the layer extracted
    ("import", "tx.before-commit:2", None),  # layer + image + tag, about to commit
    ("import", "index.written:1", None),  # index.json.tmp written inside that transaction
    ("import", "tx.after-commit:2", None),  # committed; index.json not yet rewritten after it
    ("commit", "snapshot.staged:1", None),  # the new layer's snapshot, its tar not yet written
    ("commit", "extract.mid:60", None),
    ("commit", "tx.before-commit:3", None),  # (1: its use of the container, 2: the staging)
    ("build", "extract.mid:1", None),  # COPY's layer, extracted as its tar is written
    ("build", "tx.after-commit:3", None),  # the first COPY's state committed
    ("build", "index.written:1", None),  # the final tag
    ("rm", "tx.after-commit:1", None),  # the removal is this process's (lamina.uses), no more
    ("rm", "trash.filed", None),  # row deleted, paths filed, not committed
    ("rm", "tx.after-commit:2", "purge.mid:1"),  # committed, data not purged; recovery killed
    ("rm", "purge.mid:1", None),  # the writable layer's data gone, its trash row not
    ("rm-exited", "tx.after-commit:2", None),  # a container that ran: its bundle directory
    ("rmi", "index.written:1", None),
    ("rmi", "trash.filed:1", None),
    ("rmi", "tx.after-commit:1", "blob.aside:1"),  # recovery killed with a blob renamed aside
    ("rmi", "purge.mid:1", None),
    ("rmi", "blob.aside:1", None),  # a trashed blob renamed aside, not deleted
    ("tag", "index.written:1", None),
    ("tag", "tx.after-commit:1", None),
    ("tag", "index.written:2", None),  # the rewrite after the commit
    ("load", "blob.renamed:1", None),
    ("load", "extract.mid:60", None),
    ("load", "tx.before-commit:3", None),
    ("system-prune", "gc.sweep:1", None),  # the stopped containers removed, images not yet
    ("system-prune", "purge.mid:2", None),
    ("container-prune", "gc.sweep:1", None),
    ("volume-create", "tx.before-commit:2", None),  # its directory made, its row not committed
    ("volume-rm", "tx.after-commit:1", "volume.set-aside:1"),
    ("volume-rm", "volume.set-aside:1", None),  # renamed aside, transaction not committed
    ("volume-rm", "purge.mid:1", None),
    ("volume-prune", "gc.sweep:1", None),
    ("save", "save.member:1", None),  # a layer written into the output, which is not named yet
    ("pull", "snapshot.staged:1", None),  # the layer's parentless staging snapshot, no row
    ("pull", "blob.renamed:2", None),  # the layer blob named (1: the config), not referenced
    ("pull", "extract.mid:60", None),  # the layer half extracted while it downloads
    ("pull", "tx.before-commit:3", None),  # the layer's commit (1: the config, 2: the staging)
    ("push", "tx.before-commit:1", None),  # the pushed manifest, about to be recorded
]


class Store:
    """One store per driver shared by its trials; ``dirty`` until a trial has passed in it."""

    def __init__(self, driver: str, busybox_tar: str, tmp: str):
        base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
        self.root = tempfile.mkdtemp(prefix="lamina-points-", dir=base)
        self.tmp = tempfile.mkdtemp(dir=tmp)
        self.s = Scenario(self.root, driver, self.tmp, None)
        self.s.base_tar = busybox_tar
        self.s.lamina("import", busybox_tar, "base")
        self.s.container_with_files("keeper")
        self.dirty = False

    def close(self) -> None:
        proc = getattr(self.s, "registry_proc", None)  # (the pull and push trials start one)
        if proc is not None:
            from ..test_registry import stop

            stop(proc)
        for point in sorted(ck.store_mounts(self.root), reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        remove_bridges(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def stores(busybox_tar, tmp_path_factory):
    made: dict[str, Store] = {}

    def get(driver: str) -> Store:
        store = made.get(driver)
        if store is None or store.dirty:
            if store is not None:
                store.close()
            store = made[driver] = Store(driver, busybox_tar, str(tmp_path_factory.mktemp(driver)))
        return store

    yield get
    for store in made.values():
        store.close()


def _available(command: str) -> bool:
    if command in ("rm-exited",) and shutil.which("runc") is None:
        return False
    return tc._available(command)


def _faulty(s, args, fault: str, log: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LAMINA_FAULT", None)
    env.pop("LAMINA_FAULT_LOG", None)
    if fault:
        env["LAMINA_FAULT"] = fault
    if log:
        env["LAMINA_FAULT_LOG"] = log
    return ck.run(s.root, s.driver, *args, check=False, env=env)


def trial(s, command: str, fault: str, recovery_fault: str | None = None,
          must_die: bool = True) -> bool:
    """Set up ``command``, kill it at ``fault``, check the store (see the module docstring).
    Returns whether it was killed; one that finished (allowed with ``must_die=False``: the
    long mode's way of learning that a point has no more hits) is checked the same way."""
    s.n += 1
    s.ensure_base()
    s.verify, s.volatile = None, set()
    args, may_go, _ = SCENARIOS[command](s)
    before = {key: value for key, value in ck.fingerprint(s.root).items()
              if key not in s.volatile}
    where = f"{command} at {fault} ({s.driver}, trial {s.n})"
    proc = _faulty(s, args, fault)
    killed = proc.returncode == -9
    assert killed or (proc.returncode == 0 and not must_die), (
        f"{where}: not killed at the point (exit {proc.returncode}): "
        f"{proc.stderr.decode(errors='replace')}")
    if recovery_fault:
        proc = _faulty(s, ["images"], recovery_fault)
        assert proc.returncode == -9, (
            f"{where}: the next command's recovery did not reach {recovery_fault} "
            f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace')}")
    s.lamina("images")  # the next command works (and recovers)
    after = ck.fingerprint(s.root)
    problems = ck.compare(before, after, may_go)
    assert not problems, f"{where}: {problems}"
    ck.check_clean(s.root, s.driver)
    assert not ck.leftovers(s.root), f"{where}: left {ck.leftovers(s.root)}"
    if s.verify is not None:
        s.verify(killed)
    if not killed:
        return False
    again = ck.run(s.root, s.driver, *args, check=False)
    err = again.stderr.decode(errors="replace")
    if again.returncode != 0:  # only a removal whose object went with the killed run
        assert any(err.startswith(f"Error: {gone}") for gone in GONE) and \
            len(err.strip().splitlines()) == 1, f"{where}: the command again failed: {err}"
    ck.check_clean(s.root, s.driver)
    assert not ck.leftovers(s.root), f"{where}: after the second run: {ck.leftovers(s.root)}"
    problems = ck.compare(before, ck.fingerprint(s.root), may_go)
    assert not problems, f"{where}, after the second run: {problems}"
    return True


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("command,fault,recovery_fault", PAIRS,
                         ids=[f"{c}@{f}" + (f"+{r}" if r else "") for c, f, r in PAIRS])
def test_kill_at_point(command, fault, recovery_fault, driver, stores):
    if ck.LONG:
        pytest.skip("the long mode kills at every point (test_kill_at_every_point)")
    if not _available(command):
        pytest.skip(f"lamina {command} is not available here")
    store = stores(driver)
    store.dirty = True
    trial(store.s, command, fault, recovery_fault)
    store.dirty = False


def _points(s, command: str) -> list[str]:
    """The fault points one unkilled run of ``command`` passes (LAMINA_FAULT_LOG), sorted."""
    s.n += 1
    s.ensure_base()
    s.verify, s.volatile = None, set()
    args, _, _ = SCENARIOS[command](s)
    log = os.path.join(s.tmp, f"points-{s.n}.log")
    proc = _faulty(s, args, "", log)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    with open(log) as f:
        return sorted(set(f.read().split()))


MAX_HITS = int(os.environ.get("LAMINA_POINTS_MAX_HITS", "8"))
HITS = {"extract.mid": (1, 60)}  # of a layer's 120-odd members: the first and a middle one


@pytest.mark.skipif(not ck.LONG, reason="long mode only (LAMINA_LONG=1)")
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("command", sorted(SCENARIOS))
def test_kill_at_every_point(command, driver, stores):
    """Every point the command passes, at its 1st, 2nd, ... hit (up to LAMINA_POINTS_MAX_HITS)
    until a run finishes without reaching the next one; the first hit must be reached."""
    if not _available(command):
        pytest.skip(f"lamina {command} is not available here")
    store = stores(driver)
    store.dirty = True
    killed = []
    for name in _points(store.s, command):
        for nth in HITS.get(name, range(1, MAX_HITS + 1)):
            if not trial(store.s, command, f"{name}:{nth}", must_die=nth == 1):
                break
            killed.append(f"{name}:{nth}")
    store.dirty = False
    print(f"{command}/{driver}: killed at {len(killed)} points: {' '.join(killed)}")


def test_fault_point_semantics(tmp_path):
    """``LAMINA_FAULT=NAME:N`` kills at the N-th hit of NAME and no other; ``LAMINA_FAULT_LOG``
    lists the hits; with neither, ``point`` does nothing."""
    import sys

    script = "from lamina.faults import point\nfor name in 'abab': point(name)\n"
    log = tmp_path / "log"

    def run(**env):
        return subprocess.run([sys.executable, "-c", script], env={**os.environ, **env},
                              check=False).returncode

    assert run(LAMINA_FAULT="b:2") == -9 and run(LAMINA_FAULT="b") == -9
    assert run(LAMINA_FAULT="b:3") == 0 and run(LAMINA_FAULT="c") == 0
    assert run(LAMINA_FAULT="a:2", LAMINA_FAULT_LOG=str(log)) == -9
    assert log.read_text().split() == ["a", "b", "a"]
    assert run() == 0
    from lamina import faults

    if not os.environ.get("LAMINA_FAULT") and not os.environ.get("LAMINA_FAULT_LOG"):
        assert faults.point is faults._off


def test_check_finds_a_bundle_directory_without_a_container(tmp_path):
    """A directory under containers/ whose container is gone (an ``rm`` killed after its commit
    used to leave it: found at tx.after-commit) is reported, and --repair removes it."""
    root = str(tmp_path / "store")
    ck.run(root, "vfs", "images")
    os.makedirs(os.path.join(root, "containers", "f" * 64))
    proc = ck.run(root, None, "system", "check", check=False)
    assert proc.returncode != 0
    assert f"orphan container directory: containers/{'f' * 64}".encode() in proc.stdout
    ck.run(root, None, "system", "check", "--repair", check=False)
    assert os.listdir(os.path.join(root, "containers")) == []
    ck.check_clean(root, None)
