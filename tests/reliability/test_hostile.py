"""Hostile and broken input through the real command: one-line error, non-zero exit, nothing
written outside the store or target, the store unchanged (its files and its fingerprint: every
tag, image, layer tree, container tree and blob byte)."""

import os

import pytest

from ..conftest import needs_root, store_files
from . import corpus
from . import crashkit as ck

pytestmark = needs_root

ESCAPES = ("/etc/escaped", "/tmp/escaped", "/var/tmp/escaped", "/escaped")


@pytest.fixture(scope="module")
def store(tmp_path_factory, busybox_tar):
    root = str(tmp_path_factory.mktemp("hostile-store"))
    ck.run(root, "overlay2", "import", busybox_tar, "base")
    ck.run(root, "overlay2", "create", "--name", "c1", "base", "sh")
    yield root
    import subprocess

    script = f"grep -o ' {root}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
    subprocess.run(["sh", "-c", script], check=False)


def assert_build_available(root):
    """``lamina build`` is a command of lamina: its --help failing is a bug, not a reason to skip
    (the Dockerfile cases below would then pass or fail for the wrong reason)."""
    proc = ck.run(root, "overlay2", "build", "--help", check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def state(root):
    return store_files(root), ck.fingerprint(root)


def refused(root, *args, input=None, prefixes=("Error: ",)):
    """Run lamina; check the refusal is clean and changed nothing. Returns stderr."""
    before = state(root)
    proc = ck.run(root, "overlay2", *args, check=False, input=input)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"lamina {args[0]} accepted it: {proc.stdout!r}"
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith(prefixes), repr(err)
    assert state(root) == before, "the store changed"
    for path in ESCAPES:
        assert not os.path.lexists(path), f"{path} was written"
    return err


@pytest.mark.parametrize("case", sorted(corpus.TARS))
def test_hostile_tar(store, case, tmp_path):
    path = tmp_path / "bad.tar"
    path.write_bytes(corpus.TARS[case]())
    sentinel = sorted(os.listdir(tmp_path))
    refused(store, "import", path, "bad:1")
    refused(store, "import", "-", "bad:2", input=path.read_bytes())
    assert sorted(os.listdir(tmp_path)) == sentinel


def test_compression_ratio_limit_is_configurable(store, tmp_path):
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(corpus.gzip_bomb(4 << 20))  # ~1000:1, within the default limit
    env = dict(os.environ, LAMINA_MAX_COMPRESSION_RATIO="50")
    before = state(store)
    proc = ck.run(store, "overlay2", "import", path, "bomb:1", check=False, env=env)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "50:1" in err, err
    assert state(store) == before
    env["LAMINA_MAX_COMPRESSION_RATIO"] = "0"  # off: the same layer imports
    ck.run(store, "overlay2", "import", path, "bomb:1", env=env)
    ck.run(store, "overlay2", "rmi", "bomb:1")
    env["LAMINA_MAX_COMPRESSION_RATIO"] = "lots"
    proc = ck.run(store, "overlay2", "import", path, "bomb:1", check=False, env=env)
    assert proc.returncode == 1 and "not a whole number" in proc.stderr.decode()
    assert state(store) == before


@pytest.mark.parametrize("case", sorted(corpus.DUPLICATES))
def test_duplicate_entries_last_wins(case, tmp_path, store_root):
    data, expect = corpus.DUPLICATES[case]
    path = tmp_path / "dup.tar"
    path.write_bytes(data)
    ck.run(store_root, "vfs", "import", path, "dup")
    cid = ck.run(store_root, "vfs", "create", "dup", "sh").stdout.decode().strip()
    root = ck.run(store_root, "vfs", "mount", cid).stdout.decode().strip()
    for name, content in expect.items():
        assert not os.path.islink(os.path.join(root, name))
        with open(os.path.join(root, name), "rb") as f:
            assert f.read() == content
    with open("/etc/passwd", "rb") as f:
        assert f.read() != b"mine"
    ck.check_clean(store_root, "vfs")


@pytest.mark.parametrize("case", sorted(corpus.ARCHIVES))
def test_broken_archive(store, case, tmp_path):
    path = tmp_path / "bad-archive.tar"
    path.write_bytes(corpus.ARCHIVES[case])
    refused(store, "load", "-i", path)


@pytest.mark.parametrize("reference", corpus.BAD_REFERENCES)
def test_bad_reference(store, reference, busybox_tar):
    refused(store, "tag", "base", reference)
    refused(store, "import", busybox_tar, reference)
    refused(store, "commit", "c1", reference)
    refused(store, "pull", reference)


@pytest.mark.parametrize("name", corpus.BAD_NAMES)
def test_bad_container_and_volume_name(store, name):
    if name not in corpus.CONTAINER_NAMES:
        refused(store, "create", "--name", name, "base", "sh")
    if ck.run(store, "overlay2", "volume", "ls", check=False).returncode == 0:
        refused(store, "volume", "create", name)


@pytest.mark.parametrize("case", sorted(corpus.DOCKERFILES))
def test_broken_dockerfile(store, case, tmp_path):
    assert_build_available(store)
    text = corpus.DOCKERFILES[case]
    (tmp_path / "Dockerfile").write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(store, "build", "--check", tmp_path, prefixes=("Error: ", "Dockerfile:"))
    refused(store, "build", "-t", "broken:1", tmp_path, prefixes=("Error: ", "Dockerfile:"))


@pytest.mark.parametrize("case", sorted(corpus.ODD_DOCKERFILES))
def test_odd_dockerfile_fails_cleanly(store, case, tmp_path):
    assert_build_available(store)
    text = corpus.ODD_DOCKERFILES[case]
    (tmp_path / "Dockerfile").write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(store, "build", "-q", "-t", "odd:1", tmp_path, prefixes=("Error: ", "Dockerfile:"))
