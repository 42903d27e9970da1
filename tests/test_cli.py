"""The ``lamina`` command as a user runs it: Docker's columns, JSON listings, one-line errors."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from .conftest import REPO, Lamina, needs_root, store_files

pytestmark = needs_root


def test_demo_flow_and_docker_columns(lamina, busybox_tar):
    image_id = lamina("import", busybox_tar, "busybox").stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    cid = lamina("create", "--name", "web", "busybox", "sh").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    lamina("create", "busybox")
    root = lamina("mount", "web").stdout.strip()
    with open(os.path.join(root, "hello.txt"), "w") as f:
        f.write("hello world\n")  # 12 bytes
    lamina("umount", "web")
    assert lamina("diff", "web").stdout.splitlines() == ["A /hello.txt"]
    out = lamina("ps", "-a", "-s").stdout.splitlines()
    assert re.split(r"\s{3,}", out[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                          "PORTS", "NAMES", "SIZE"]
    web = next(line for line in out if "web" in line)
    assert web.startswith(cid[:12]) and '"sh"' in web and "Created" in web
    assert web.endswith("12B (virtual 1.98MB)")
    rows = [json.loads(line) for line in lamina("ps", "-a", "-s", "--format", "json").stdout.splitlines()]
    web_row = next(r for r in rows if r["Names"] == "web")
    assert web_row["SizeRw"] == 12 and web_row["Size"].startswith("12B (virtual ")
    images = lamina("images").stdout.splitlines()
    assert re.split(r"\s{3,}", images[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert images[1].startswith("busybox") and image_id[7:19] in images[1]
    doc = json.loads(lamina("inspect", "--size", "web").stdout)[0]
    assert doc["SizeRw"] == 12 and doc["Name"] == "/web"
    df = [json.loads(line) for line in lamina("system", "df", "--format", "json").stdout.splitlines()]
    containers = next(d for d in df if d["Type"] == "Containers")
    assert containers["SizeBytes"] == 12 and containers["ReclaimableBytes"] == 12
    assert containers["TotalCount"] == "2"
    table = lamina("system", "df").stdout.splitlines()
    assert re.split(r"\s{3,}", table[0]) == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert re.split(r"\s{3,}", table[2]) == ["Containers", "2", "0", "12B", "12B (100%)"]
    history = lamina("history", "busybox").stdout.splitlines()
    assert len(history) == 2 and image_id[7:19] in history[1]


def test_errors_are_one_line_without_traceback(lamina, busybox_tar):
    for args, message in [
        (["create", "nope"], "Error: No such image: nope"),
        (["rm", "nope"], "Error: No such container: nope"),
        (["mount", "nope"], "Error: No such container: nope"),
        (["import", "/nonexistent.tar", "x"], "Error: cannot open /nonexistent.tar"),
        (["import", busybox_tar, "Bad Name"], "Error: invalid reference format"),
        (["frobnicate"], "'frobnicate' is not a lamina command."),
    ]:
        proc = lamina(*args, check=False)
        assert proc.returncode != 0, args
        assert proc.stderr.startswith(message), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") <= 2


def test_driver_mismatch_is_a_clear_error(store_root, busybox_tar):
    from .conftest import Lamina

    Lamina(store_root, "vfs")("import", busybox_tar, "busybox")
    proc = Lamina(store_root, "overlay2")("images", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: store {store_root} uses the vfs driver, not overlay2: "
                                   "use another --root or --driver vfs")


def test_import_from_stdin(lamina, busybox_tar):
    with open(busybox_tar, "rb") as f:
        proc = subprocess.run(
            ["python3", "-m", "lamina", "--root", lamina.root, "--driver", lamina.driver, "import", "-",
             "fromstdin:1"], stdin=f, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "fromstdin" in lamina("images").stdout


def test_export_to_file(lamina, busybox_tar, tmp_path):
    lamina("import", busybox_tar, "busybox")
    lamina("create", "--name", "ctr", "busybox")
    out = tmp_path / "c.tar"
    lamina("export", "ctr", "-o", out)
    with tarfile.open(out) as tar:
        assert "bin/busybox" in tar.getnames()


def test_export_to_a_file_a_pipe_and_python_gives_the_same_bytes(lamina, busybox_tar, tmp_path):
    """export -o FILE, export to a pipe and Engine.export into Python give the same tar, its
    files' contents as the image has them (the export is not hashed: nothing checks it)."""
    import subprocess
    import sys

    from lamina import Engine

    lamina("import", busybox_tar, "busybox")
    lamina("create", "--name", "ctr", "busybox")
    out = tmp_path / "c.tar"
    lamina("export", "ctr", "-o", out)
    piped = subprocess.run([sys.executable, "-m", "lamina", "--root", lamina.root, "--driver",
                            lamina.driver, "export", "ctr"], capture_output=True, check=True).stdout
    engine = Engine(root=lamina.root, driver=lamina.driver)
    buf = io.BytesIO()
    engine.export("ctr", buf)
    engine.close()
    assert out.read_bytes() == piped == buf.getvalue()
    with tarfile.open(out) as tar, tarfile.open(busybox_tar) as original:
        source = next(m for m in original if m.name.lstrip("./") == "bin/busybox")
        assert tar.extractfile("bin/busybox").read() == original.extractfile(source).read()


# ---------------------------------------------------------------------------------- bad input
def _tar(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


BAD_TARS = {
    "dotdot": lambda: _tar(_file("ok"), _file("../escaped")),
    "absolute": lambda: _tar(_file("/abs-escaped")),
    "symlink-then-write": lambda: _tar(_link("evil", "/var/tmp"), _file("evil/escaped")),
    "symlink-relative-out": lambda: _tar(_link("evil", "../../.."), _file("evil/escaped")),
    "hardlink-outside": lambda: _tar(_link("pw", "/etc/passwd", tarfile.LNKTYPE)),
    "hardlink-dotdot": lambda: _tar(_link("pw", "../../etc/passwd", tarfile.LNKTYPE)),
    "whiteout-empty": lambda: _tar(_file(".wh.", b"")),
    "whiteout-dotdot": lambda: _tar(_file("dir/.wh..", b"")),
    "truncated": lambda: _tar(_file("big", b"y" * 100_000))[:20_000],
    "garbage": lambda: os.urandom(5000),
    "empty": lambda: b"",
    "truncated-gzip": lambda: __import__("gzip").compress(_tar(_file("a", os.urandom(50_000))))[:3000],
}


@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_bad_tar_changes_nothing(lamina, busybox_tar, case, tmp_path):
    lamina("import", busybox_tar, "busybox")
    before = store_files(lamina.root)
    images_before = lamina("images", "-q").stdout
    bad = tmp_path / "bad.tar"
    bad.write_bytes(BAD_TARS[case]())
    sentinel_dir = tmp_path
    sentinel_before = sorted(os.listdir(sentinel_dir))
    proc = lamina("import", bad, "bad", check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert store_files(lamina.root) == before
    assert lamina("images", "-q").stdout == images_before
    assert sorted(os.listdir(sentinel_dir)) == sentinel_before
    assert not os.path.exists("/abs-escaped") and not os.path.exists("/var/tmp/escaped")
    snaps = json.loads(lamina("info").stdout)
    assert snaps["Layers"] == 1 and snaps["Images"] == 1


# ---------------------------------------------------------------------------------- interop
@pytest.mark.skipif(shutil.which("skopeo") is None or shutil.which("umoci") is None,
                    reason="skopeo and umoci are installed by scripts/setup")
def test_skopeo_reads_the_store_and_umoci_what_it_saves(lamina, busybox_tar, tmp_path):
    lamina("import", busybox_tar, "busybox:1.0")
    lamina("create", "--name", "ctr", "busybox:1.0")
    root = lamina("mount", "ctr").stdout.strip()
    with open(os.path.join(root, "added"), "w") as f:
        f.write("added\n")
    os.unlink(os.path.join(root, "bin", "vi"))
    lamina("umount", "ctr")
    lamina("commit", "ctr", "derived:2")
    doc = json.loads(lamina("inspect", "derived:2").stdout)[0]
    out = subprocess.run(["skopeo", "inspect", f"oci:{lamina.root}:derived:2"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["Layers"] == [
        json.loads(lamina("inspect", "busybox:1.0").stdout)[0]["RootFS"]["Layers"][0],
        doc["RootFS"]["Layers"][1]]  # uncompressed blobs: the blob digest is the diff_id
    # the layers themselves are kept unpacked (their tars come back from tar-split records):
    # umoci unpacks the layout lamina saves
    lamina("save", "--format", "oci-dir", "-o", tmp_path / "layout", "derived:2")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path}/layout:derived:2",
                    str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs" / "added").read_text() == "added\n"
    assert not (bundle / "rootfs" / "bin" / "vi").exists()
    assert (bundle / "rootfs" / "bin" / "busybox").exists()


def test_format_templates(lamina, busybox_tar):
    lamina("import", busybox_tar, "busybox:1")
    cid = lamina("create", "--name", "web", "busybox:1").stdout.strip()
    assert lamina("ps", "-a", "--format", "{{.ID}} {{.Names}}").stdout == f"{cid[:12]} web\n"
    table = lamina("images", "--format", "table {{.Repository}}\\t{{.Tag}}").stdout.splitlines()
    assert [line.split() for line in table] == [["REPOSITORY", "TAG"], ["busybox", "1"]]
    assert lamina("images", "--format", "{{json .Tag}}").stdout == '"1"\n'
    bad = lamina("ps", "-a", "--format", "{{.Nope}}", check=False)
    assert bad.returncode == 125 and bad.stderr.startswith("Error: template: no field 'Nope'")


# what only running a container uses: its monitor and process handling, terminals (socket,
# tempfile), signals
RUN_ONLY = {"lamina.runtime.lifecycle", "lamina.runtime.monitor", "lamina.runtime.process",
            "lamina.runtime.console", "signal", "socket", "tempfile", "subprocess"}


def test_create_with_run_flags_imports_nothing_only_running_uses(store_root, busybox_tar):
    """Start-up: ``create`` with run's flags (the path that records a run config) makes the
    container without importing what only starting one uses; the modules it loaded are listed
    as the command leaves (lamina ends with os._exit, past any atexit hook)."""
    Lamina(store_root, None)("import", busybox_tar, "busybox")
    code = ("import os, sys\n"
            "from lamina.cli.main import main\n"
            "leave = os._exit\n"
            "def report(status):\n"
            "    sys.stderr.write(' '.join(sorted(sys.modules)))\n"
            "    leave(status)\n"
            "os._exit = report\n"
            "main()\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    proc = subprocess.run([sys.executable, "-S", "-c", code, "--root", store_root, "create",
                           "--network", "none", "-e", "A=1", "--name", "ctr", "busybox", "true"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stderr.split())
    assert "lamina.runtime.creation" in loaded and re.fullmatch(r"[0-9a-f]{64}\n", proc.stdout)
    assert loaded & RUN_ONLY == set()
    config = json.loads(Lamina(store_root, None)("inspect", "ctr").stdout)[0]["Config"]
    assert "A=1" in config["Env"] and config["Cmd"] == ["true"]

