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

Short mode (default): each command once unkilled (calibration) and twice killed, on overlay2.
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

TRIALS = int(os.environ.get("LAMINA_CRASH_TRIALS", "10" if ck.LONG else "2"))
DRIVERS = ["overlay2", "vfs"] if ck.LONG else ["overlay2"]
FILES = 1500  # files per big layer: enough to make each command take a second or so


class Scenario:
    """Set up one trial of a command; returns (args, may_go(key), stdin path or None)."""

    def __init__(self, root, driver, tmp, rnd):
        self.root, self.driver, self.tmp, self.rnd = root, driver, tmp, rnd
        self.n = 0

    def lamina(self, *args, **kw):
        return ck.run(self.root, self.driver, *args, **kw)

    def ensure_base(self):
        if self.lamina("images", "-q", "base", check=False).stdout.strip() == b"":
            self.lamina("import", self.base_tar, "base")

    def big_tar(self, tag: str) -> str:
        path = os.path.join(self.tmp, f"{tag.replace(':', '_')}.tar")
        return ck.make_tree_tar(path, FILES, 2048, seed=1, extra=f"{tag} {time.time()}".encode())

    def container_with_files(self, name: str) -> str:
        cid = self.lamina("create", "--name", name, "base", "sh").stdout.decode().strip()
        path = self.lamina("mount", name).stdout.decode().strip()
        ck.write_files(path, FILES, 2048, seed=self.n)
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
    image = s.lamina("images", "-q", "--no-trunc", f"rmi:{s.n}").stdout.decode().strip()
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


def setup_pull(s: Scenario):
    if not hasattr(s, "registry"):
        from ..test_registry import start_registry

        workdir = os.path.join(s.tmp, "registry")
        os.makedirs(workdir)
        s.registry, s.registry_proc = start_registry(workdir)
        s.lamina("import", s.big_tar("pull-src"), "pullsrc:1")
        s.lamina("push", "pullsrc:1", f"{s.registry}/crash/pulled:1")
        s.lamina("rmi", "pullsrc:1")
    s.lamina("rmi", "-f", f"{s.registry}/crash/pulled:1", check=False)
    return ["pull", "-q", f"{s.registry}/crash/pulled:1"], lambda key: False, None


SCENARIOS = {"import": setup_import, "commit": setup_commit, "rm": setup_rm, "rmi": setup_rmi,
             "prune": setup_prune, "load": setup_load, "pull": setup_pull}


KNOWN_BROKEN = {
    "load": "blobs written before the commit are left unreferenced by a kill",
    "pull": "blobs written before the commit are left unreferenced by a kill",
}


def _available(command: str) -> bool:
    import importlib.util

    module = {"load": "lamina.cli_transfer", "pull": "lamina.cli_transfer",
              "build": "lamina.cli_build"}.get(command)
    if command == "pull" and shutil.which("docker-registry") is None:
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
            args, may_go, stdin = SCENARIOS[command](s)
            before = ck.fingerprint(store_root)
            if duration is None:  # calibration: one whole run
                started = time.monotonic()
                s.lamina(*args)
                duration = time.monotonic() - started
                killed = False
            else:
                delay = rnd.uniform(0.05, duration * 1.05)
                killed, _ = ck.run_and_kill(store_root, driver, args, delay)
                killed_runs += killed
            s.lamina("images")  # the next command works (and recovers)
            after = ck.fingerprint(store_root)
            problems = ck.compare(before, after, may_go)
            assert not problems, f"trial {trial} (killed={killed}, seed {seed}): {problems}"
            ck.check_clean(store_root, driver)
            for key in after.keys() - before.keys():  # what got committed is usable
                if key[0] == "image":
                    cid = s.lamina("create", key[1], "sh").stdout.decode().strip()
                    s.lamina("diff", cid)
                    s.lamina("rm", cid)
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
