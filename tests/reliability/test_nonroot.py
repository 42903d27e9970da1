"""lamina as an unprivileged user without subordinate ids (uid 65534 through ``setpriv``, no
capabilities; tests/test_rootless.py has a user with them): a store in the user's XDG data
directory, in a user namespace of one id (a warning says so, as Podman's), overlay2 in it,
import/create/mount (inside ``lamina unshare``)/diff/commit/export/run working, and what even the
root of a user namespace cannot do (a device node) refused up front with a message that says so.

The interpreter is Debian's /usr/bin/python3 (the test runner's may live under /root, which the
user cannot read) with a copy of the source tree on PYTHONPATH (the checkout, too, may be in a
directory the user cannot enter); plain tars need neither isal nor zstandard. With both in place
nothing but lamina itself can stop ``lamina version`` as the user: its failing is a bug.
"""

import json
import os
import shutil
import subprocess

import pytest

from ..conftest import REPO, needs_root, store_files
from . import corpus

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("setpriv") is None,
                                             reason="setpriv (util-linux) is needed")]
PYTHON = "/usr/bin/python3"
USER = 65534


@pytest.fixture
def home(busybox_tar):
    """A home directory the user owns, on /var/tmp (pytest's tmp dirs are private to root), and
    beside it a copy of src/lamina that the user can read (``source(home)``)."""
    import tempfile

    base = tempfile.mkdtemp(prefix="lamina-nonroot-", dir="/var/tmp")
    os.chmod(base, 0o755)
    shutil.copytree(os.path.join(REPO, "src", "lamina"), os.path.join(base, "src", "lamina"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for directory, _, files in os.walk(os.path.join(base, "src")):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    home = os.path.join(base, "home")
    os.mkdir(home)
    shutil.copy(busybox_tar, os.path.join(home, "busybox.tar"))
    for path in (home, os.path.join(home, "busybox.tar")):
        os.chown(path, USER, USER)
    yield home
    shutil.rmtree(base, ignore_errors=True)


def source(home) -> str:
    """The user-readable copy of the source tree that the ``home`` fixture made."""
    return os.path.join(os.path.dirname(home), "src")


def as_user(home, *args, env=None, input=None):
    environment = {"HOME": home, "PATH": "/usr/sbin:/usr/bin:/bin",
                   "PYTHONPATH": source(home), **(env or {})}
    cmd = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "env", "-i"]
    cmd += [f"{k}={v}" for k, v in environment.items()]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, input=input,
                          timeout=120, check=False)


def lamina(home, *args, env=None):
    return as_user(home, PYTHON, "-m", "lamina", *map(str, args), env=env)


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def assert_lamina_runs(home):
    """Debian's python3 (python3-minimal, on every Debian 12) runs the readable copy of lamina as
    the user: anything else that fails here is lamina's own doing."""
    assert os.access(PYTHON, os.X_OK), f"{PYTHON} (Debian's python3) is missing"
    proc = lamina(home, "version")
    assert proc.returncode == 0, f"lamina version as uid {USER}: {proc.stderr}"


def one_line_refusal(proc, *words):
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_unprivileged_user_gets_a_working_store(home):
    assert_lamina_runs(home)
    first = lamina(home, "info")
    info = json.loads(ok(first))
    # no range in /etc/subuid for this user: one id mapped, and the user is told (once a store)
    assert "single-id mapping" in first.stderr and first.stderr.count("\n") == 1, first.stderr
    assert info["Root"] == os.path.join(home, ".local", "share", "lamina")
    assert info["Driver"] == "overlay2"  # kernel overlayfs in the store's user namespace
    ok(lamina(home, "import", os.path.join(home, "busybox.tar"), "busybox"))
    ok(lamina(home, "create", "--name", "c1", "busybox", "sh"))
    # the mount lives in the store's namespace: reached through `lamina unshare`, as Podman's
    edit = (f'r=$({PYTHON} -m lamina mount c1) && case "$r" in {info["Root"]}/*) ;; *) exit 9;; '
            'esac && echo hi > "$r/hello" && rm "$r/bin/vi"')
    ok(lamina(home, "unshare", "sh", "-c", edit))
    assert ok(lamina(home, "diff", "c1")).split("\n")[:3] == ["C /bin", "D /bin/vi", "A /hello"]
    ok(lamina(home, "commit", "c1", "busybox:hello"))
    ok(lamina(home, "create", "--name", "c2", "busybox:hello", "sh"))
    exported = os.path.join(home, "c2.tar")
    ok(lamina(home, "export", "c2", "-o", exported))
    import tarfile

    with tarfile.open(exported) as tar:
        names = tar.getnames()
    assert "hello" in names and "bin/vi" not in names and "bin/busybox" in names
    assert "No problems found" in ok(lamina(home, "system", "check"))
    # XDG_DATA_HOME picks another store
    other = os.path.join(home, "xdg")
    info = json.loads(ok(lamina(home, "info", env={"XDG_DATA_HOME": other})))
    assert info["Root"] == os.path.join(other, "lamina")


def test_what_a_user_namespace_cannot_do_says_so(home):
    assert_lamina_runs(home)
    # a layer with a device node cannot go into a rootless store: refused, store unchanged
    ok(lamina(home, "import", os.path.join(home, "busybox.tar"), "busybox"))
    store = os.path.join(home, ".local", "share", "lamina")
    before = store_files(store)
    bad = os.path.join(home, "dev.tar")
    with open(bad, "wb") as f:
        f.write(corpus.tar(("dev", "dir", None), ("dev/null", "char", None)))
    os.chown(bad, USER, USER)
    one_line_refusal(lamina(home, "import", bad, "devices"), "device node", "root")
    assert store_files(store) == before
    # a fifo is fine
    fifo = os.path.join(home, "fifo.tar")
    with open(fifo, "wb") as f:
        f.write(corpus.tar(("pipe", "fifo", None)))
    os.chown(fifo, USER, USER)
    ok(lamina(home, "import", fifo, "fifo"))
    # what needed root before the user namespace now works in it
    assert ok(lamina(home, "run", "--rm", "--network", "none", "busybox", "echo", "hi")) == "hi\n"
    ok(lamina(home, "--root", os.path.join(home, "ov"), "--driver", "overlay2", "images"))
