"""A full disk: a store on a small tmpfs, filled by import, load, commit and build. Each must fail
with a one-line error and a non-zero exit, store nothing half-made (the store's files and
fingerprint are what they were), and leave a store that works and checks clean afterwards."""

import os
import subprocess

import pytest

from ..conftest import needs_root, store_files
from . import crashkit as ck

pytestmark = needs_root

SIZE_MB = 24


@pytest.fixture
def small_store(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield str(mnt / "store")
    finally:
        script = f"grep -o ' {mnt}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
        subprocess.run(["sh", "-c", script], check=False)


def _full_disk_refusal(root, driver, args, before):
    proc = ck.run(root, driver, *args, check=False)
    err = proc.stderr.decode(errors="replace")
    print(f"{driver} {args[0]}: {err.strip()}")
    assert proc.returncode != 0, f"lamina {args[0]} did not notice the full disk"
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("Error: "), err
    assert "No space left on device" in err or "space" in err.lower(), err
    ck.run(root, driver, "images")  # the next command works (and recovers)
    assert store_files(root) == before[0]
    assert ck.fingerprint(root) == before[1]
    ck.check_clean(root, driver)


@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_full_disk(small_store, driver, busybox_tar, tmp_path):
    root = small_store
    ck.run(root, driver, "import", busybox_tar, "base")
    ck.run(root, driver, "create", "--name", "c1", "base", "sh")
    before = store_files(root), ck.fingerprint(root)
    # import: a layer of 40 MB of incompressible files does not fit in what is left
    big = ck.make_tree_tar(str(tmp_path / "big.tar"), 400, 100_000, seed=7)
    _full_disk_refusal(root, driver, ["import", big, "big"], before)
    # load: the same layer inside an image archive (saved from a roomy store)
    side = str(tmp_path / "side")
    ck.run(side, "vfs", "import", big, "big:1")
    ck.run(side, "vfs", "save", "-o", tmp_path / "big-image.tar", "big:1")
    _full_disk_refusal(root, driver, ["load", "-i", tmp_path / "big-image.tar"], before)
    # commit: a container that wrote 12 MB commits to a layer (blob + tree) that does not fit
    mounted = ck.run(root, driver, "mount", "c1").stdout.decode().strip()
    ck.write_files(mounted, 120, 100_000, seed=3)
    ck.run(root, driver, "umount", "c1")
    before = store_files(root), ck.fingerprint(root)
    _full_disk_refusal(root, driver, ["commit", "c1", "committed"], before)
    # build: COPY of 40 MB
    if ck.run(root, driver, "build", "--help", check=False).returncode == 0:
        context = tmp_path / "ctx"
        ck.write_files(str(context), 400, 100_000, seed=5)
        (context / "Dockerfile").write_text("FROM base\nCOPY data /data\n")
        _full_disk_refusal(root, driver, ["build", "-q", "-t", "built", context], before)
    # and the store still takes what fits
    ck.run(root, driver, "rm", "c1")
    small = ck.make_tree_tar(str(tmp_path / "small.tar"), 10, 1000, seed=1)
    ck.run(root, driver, "import", small, "small")
    ck.check_clean(root, driver)
    assert os.listdir(os.path.join(root, "ingest")) == []
