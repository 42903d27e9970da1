"""Volumes: named (seeded from the image), anonymous, host directories; data outside the
container's layers (survives rm, not in its size, no copy-up); ls/inspect/rm/prune; system df."""

import json
import os
import re

import pytest

from . import test_run

pytestmark = test_run.pytestmark  # root and runc
store = test_run.store  # the fixture: busybox and app images, teardown checks


@pytest.fixture
def seeded(store):
    """``seeded``: busybox plus /data/seed.txt (6 bytes, mode 0640, owned 1000:1000)."""
    cid = store("create", "busybox", "true").stdout.strip()
    root = store("mount", cid).stdout.strip()
    os.makedirs(os.path.join(root, "data"))
    os.chown(os.path.join(root, "data"), 1000, 1000)
    path = os.path.join(root, "data", "seed.txt")
    with open(path, "w") as f:
        f.write("seed!\n")
    os.chmod(path, 0o640)
    os.chown(path, 1000, 1000)
    store("umount", cid)
    store("commit", cid, "seeded")
    store("rm", cid)
    return store


def inspect(store, name: str) -> dict:
    return json.loads(store("inspect", "--size", name).stdout)[0]


def volume(store, name: str) -> dict:
    return json.loads(store("volume", "inspect", name).stdout)[0]


def test_named_volume_is_seeded_from_the_image_and_bypasses_copy_on_write(store, seeded):
    out = store("run", "--name", "ww", "-v", "vol:/data", "seeded", "sh", "-c",
                "cat /data/seed.txt; stat -c '%u:%g %a' /data /data/seed.txt;"
                " echo more >> /data/seed.txt; echo own > /own.txt").stdout
    assert out == "seed!\n1000:1000 755\n1000:1000 640\n"
    data = volume(store, "vol")["Mountpoint"]
    with open(os.path.join(data, "seed.txt")) as f:
        assert f.read() == "seed!\nmore\n"  # written in the volume ...
    doc = inspect(store, "ww")
    upper = doc["GraphDriver"]["Data"]["UpperDir"]
    assert sorted(os.listdir(upper)) == ["own.txt"]  # ... not copied up into the container's layer
    assert doc["SizeRw"] == 4  # own.txt only: the volume is not part of the container's size
    assert [line.split() for line in store("diff", "ww").stdout.splitlines()] == [["A", "/own.txt"]]
    assert store("run", "seeded", "cat", "/data/seed.txt").stdout == "seed!\n"  # image unchanged
    # the data survives rm, and a non-empty volume is not seeded again
    store("rm", "ww")
    assert store("run", "--rm", "-v", "vol:/data", "seeded", "cat",
                 "/data/seed.txt").stdout == "seed!\nmore\n"
    assert volume(store, "vol")["UsageData"]["Size"] == 11


def test_volume_for_a_path_missing_in_the_image(store):
    assert store("run", "--rm", "-v", "fresh:/new/dir", "busybox", "sh", "-c",
                 "ls -A /new/dir; echo x > /new/dir/f").stdout == ""
    assert store("run", "--rm", "-v", "fresh:/elsewhere:ro", "busybox", "cat",
                 "/elsewhere/f").stdout == "x\n"
    proc = store("run", "--rm", "-v", "fresh:/elsewhere:ro", "busybox", "touch", "/elsewhere/g",
                 check=False)
    assert proc.returncode == 1 and "Read-only file system" in proc.stderr


def test_host_directories_read_write_and_read_only(store, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    assert store("run", "--rm", "-v", f"{host}:/h", "busybox", "sh", "-c",
                 "cat /h/in.txt; echo from container > /h/out.txt").stdout == "from host\n"
    assert (host / "out.txt").read_text() == "from container\n"
    proc = store("run", "--rm", "-v", f"{host}:/h:ro", "busybox", "sh", "-c",
                 "cat /h/out.txt; touch /h/nope", check=False)
    assert proc.returncode == 1 and proc.stdout == "from container\n"
    assert "Read-only file system" in proc.stderr and not (host / "nope").exists()
    missing = tmp_path / "made" / "by" / "run"
    store("run", "--rm", "-v", f"{missing}:/m", "busybox", "true")
    assert missing.is_dir()  # as docker run -v makes a missing host directory
    assert store("volume", "ls", "-q").stdout == ""  # host directories are not volumes


def test_ls_inspect_rm_and_prune_spare_volumes_in_use(store):
    assert store("volume", "create", "unused").stdout == "unused\n"
    assert store("volume", "create", "unused").stdout == "unused\n"  # idempotent, as Docker's
    store("create", "--name", "holder", "busybox", "true")
    store("run", "--name", "user", "-v", "used:/u", "busybox", "sh", "-c", "echo 123 > /u/f")
    store("run", "-v", "/anon", "busybox", "true")  # an anonymous volume, kept by its container
    names = store("volume", "ls", "-q").stdout.split()
    assert "unused" in names and "used" in names and len(names) == 3
    table = store("volume", "ls").stdout.splitlines()
    assert re.split(r"\s{3,}", table[0]) == ["DRIVER", "VOLUME NAME"]
    doc = volume(store, "used")
    assert doc["Driver"] == "local" and doc["Name"] == "used" and doc["Scope"] == "local"
    assert doc["Mountpoint"] == os.path.join(store.root, "volumes", "used", "_data")
    assert doc["UsageData"] == {"RefCount": 1, "Size": 4}
    proc = store("volume", "rm", "used", check=False)
    assert proc.returncode == 1 and "volume is in use" in proc.stderr
    out = store("volume", "prune", "-f").stdout
    assert out.startswith("Deleted Volumes:\nunused\n") and "Total reclaimed space: 0B" in out
    left = store("volume", "ls", "-q").stdout.split()
    assert "used" in left and len(left) == 2  # the anonymous one is in use too
    store("rm", "user")
    assert store("volume", "rm", "used").stdout == "used\n"
    proc = store("volume", "inspect", "used", check=False)
    assert proc.returncode == 1 and "no such volume: used" in proc.stderr


def test_system_df_counts_volumes(store):
    store("run", "--name", "aa", "-v", "one:/v", "busybox", "sh", "-c", "head -c 1000 /dev/zero > /v/f")
    store("volume", "create", "two")
    store("run", "--rm", "-v", "two:/v", "busybox", "sh", "-c", "head -c 500 /dev/zero > /v/f")
    rows = {r["Type"]: r for r in map(json.loads, store("system", "df", "--format", "json").stdout.split("\n")[:-1])}
    volumes = rows["Local Volumes"]
    assert (volumes["TotalCount"], volumes["Active"], volumes["SizeBytes"],
            volumes["ReclaimableBytes"]) == ("2", "1", 1500, 500)
    table = store("system", "df").stdout.splitlines()
    assert re.split(r"\s{3,}", table[3]) == ["Local Volumes", "2", "1", "1.5kB", "500B (33%)"]
    verbose = store("system", "df", "-v").stdout
    assert re.search(r"one\s+1\s+1kB", verbose) and re.search(r"two\s+0\s+500B", verbose)
    assert inspect(store, "aa")["SizeRw"] == 0


def test_bind_propagation_shared_and_slave_see_host_mounts_made_after_start(store, tmp_path):
    """``-v SRC:DST:rshared`` and ``--mount ...,bind-propagation=rslave``: a mount made on the host
    under SRC after the container started shows inside it; a default (rprivate) bind does not.
    Docker's check first: a shared bind's source must be on a shared mount. The test runs in a
    private mount namespace (scripts/test), so nothing reaches the machine's own mounts."""
    import subprocess

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    proc = store("run", "--rm", "--network", "none", "-v", f"{src}:/mnt:rshared", "busybox",
                 "true", check=False)
    assert proc.returncode == 125
    assert re.fullmatch(f"Error: path {src} is mounted on /\\S* but it is not a shared mount\n",
                        proc.stderr), proc.stderr
    proc = store("run", "--rm", "-v", f"{src}:/mnt:rslave", "busybox", "true", check=False)
    assert proc.returncode == 125 and "is not a shared or slave mount" in proc.stderr
    for bad, words in (("vol:/mnt:rshared", "field BindOptions must not be specified"),
                       (f"{src}:/mnt:rshared,slave", "invalid mode")):
        proc = store("run", "--rm", "-v", bad, "busybox", "true", check=False)
        assert proc.returncode == 125 and words in proc.stderr, proc.stderr
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        run = ("run", "-d", "--network", "none")
        shared = store(*run, "-v", f"{src}:/mnt:ro,rshared", "busybox", "sleep", "60").stdout.strip()
        private = store(*run, "-v", f"{src}:/mnt", "busybox", "sleep", "60").stdout.strip()
        slave = store(*run, "--mount", f"type=bind,src={src},dst=/mnt,bind-propagation=rslave",
                      "busybox", "sleep", "60").stdout.strip()
        subprocess.run(["mount", "-t", "tmpfs", "late", str(src / "sub")], check=True)
        try:
            (src / "sub" / "file").write_text("mounted after start\n")
            for cid in (shared, slave):
                assert store("exec", cid, "cat", "/mnt/sub/file").stdout == "mounted after start\n"
            assert store("exec", private, "ls", "-A", "/mnt/sub").stdout == ""
            mounts = {cid: inspect(store, cid)["Mounts"][0] for cid in (shared, private, slave)}
            # a --mount bind has no Mode (Docker shows "" for it: tests/test_api_vs_docker.py)
            assert [(m["Mode"], m["RW"], m["Propagation"]) for m in mounts.values()] == [
                ("ro,rshared", False, "rshared"), ("", True, "rprivate"), ("", True, "rslave")]
            assert inspect(store, shared)["HostConfig"]["Binds"] == [f"{src}:/mnt:ro,rshared"]
            store("rm", "-f", shared, private, slave)
        finally:
            subprocess.run(["umount", str(src / "sub")], check=True)
    finally:
        subprocess.run(["umount", "-R", str(src)], check=True)


def test_rm_v_removes_the_container_s_anonymous_volumes_only(store):
    """``rm -v`` as Docker's: the anonymous volumes go, a named one stays, and so does an
    anonymous one that another container mounts by its name; plain ``rm`` keeps them all."""
    store("create", "--name", "ctr", "-v", "/a1", "-v", "/a2", "-v", "named:/n", "busybox", "true")
    anonymous = [v for v in store("volume", "ls", "-q").stdout.split() if v != "named"]
    assert len(anonymous) == 2
    kept, shared = anonymous
    store("create", "--name", "sharer", "-v", f"{shared}:/s", "busybox", "true")
    store("create", "--name", "plain", "-v", "/a3", "busybox", "true")
    assert store("rm", "-v", "ctr").stdout == "ctr\n"
    left = store("volume", "ls", "-q").stdout.split()
    assert kept not in left and shared in left and "named" in left and len(left) == 3
    assert store("rm", "plain").stdout == "plain\n"  # without -v: its volume stays
    assert len(store("volume", "ls", "-q").stdout.split()) == 3
    assert store("rm", "--volumes", "sharer").stdout == "sharer\n"  # not its anonymous volume
    assert shared in store("volume", "ls", "-q").stdout.split()
    proc = store("rm", "-v", "nosuch", check=False)
    assert (proc.returncode, proc.stderr) == (1, "Error: No such container: nosuch\n")
