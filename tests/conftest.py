"""Shared fixtures: a busybox rootfs tar built from Debian's busybox-static, fresh stores, and a
runner for the real ``lamina`` command (a subprocess, so exit codes and stderr are the user's)."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chown, mknod)")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> str:
    """A rootfs tar of busybox-static (about 2 MB), built once per session."""
    out = str(tmp_path_factory.mktemp("rootfs") / "busybox.tar")
    subprocess.run([os.path.join(REPO, "examples", "busybox-rootfs.sh"), out], check=True)
    return out


@pytest.fixture
def store_root():
    """An empty store directory on /var/tmp (ext4), removed afterwards with anything mounted in it."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    import tempfile

    path = tempfile.mkdtemp(prefix="lamina-test-", dir=base)
    yield path
    unmount_all = f"grep -o ' {path}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
    subprocess.run(["sh", "-c", unmount_all], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["overlay2", "vfs"])
def driver(request) -> str:
    return request.param


@pytest.fixture
def engine(store_root, driver):
    from lamina import Engine

    eng = Engine(root=store_root, driver=driver)
    yield eng
    eng.close()


class Lamina:
    """Runs ``python -m lamina --root ROOT ...`` and returns the CompletedProcess."""

    def __init__(self, root: str, driver: str | None):
        self.root = root
        self.driver = driver

    def __call__(self, *args, check=True, input=None):
        cmd = [sys.executable, "-m", "lamina", "--root", self.root]
        if self.driver:
            cmd += ["--driver", self.driver]
        proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, input=input,
                              text=input is None or isinstance(input, str), check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"lamina {' '.join(map(str, args))} failed ({proc.returncode}): "
                                 f"{proc.stderr}")
        return proc


@pytest.fixture
def lamina(store_root, driver):
    return Lamina(store_root, driver)


def store_files(root: str) -> set[str]:
    """Every path under a store (for 'nothing left behind' checks), minus the database files."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if not rel.startswith("lamina.db"):
                out.add(rel)
    return out
