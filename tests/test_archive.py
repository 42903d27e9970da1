"""save/load: every format and compression round-trips, digests are stable, skopeo and umoci
accept what lamina writes, lamina loads what skopeo writes, and bad archives change nothing."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from lamina import Engine
from lamina.errors import InvalidArgument, LaminaError

from .conftest import Lamina, store_files

needs_tools = pytest.mark.skipif(shutil.which("skopeo") is None or shutil.which("umoci") is None,
                                 reason="skopeo and umoci are installed by scripts/setup")


@pytest.fixture
def source(store_root, busybox_tar):
    """A vfs store with a two-layer image tagged twice and a one-layer base."""
    eng = Engine(root=store_root, driver="vfs")
    eng.import_image(busybox_tar, "busybox:1")
    eng.create("busybox:1", name="ctr")
    root = eng.mount("ctr")
    with open(os.path.join(root, "hello"), "w") as f:
        f.write("hello\n")
    os.unlink(os.path.join(root, "bin", "vi"))
    eng.umount("ctr")
    eng.commit("ctr", "app:2")
    eng.tag("app:2", "registry.example:5000/team/app:v2")
    yield eng
    eng.close()


@pytest.fixture
def target(tmp_path):
    path = "/var/tmp/" + os.path.basename(str(tmp_path)) + "-target"
    eng = Engine(root=path, driver="vfs")
    yield eng
    eng.close()
    shutil.rmtree(path, ignore_errors=True)


def _layer_ids(eng, name):
    return eng.inspect_image(name)["RootFS"]["Layers"]


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive", "oci-dir"])
@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_round_trip(source, target, tmp_path, fmt, compression):
    out = tmp_path / "out"
    source.save(["app:2", "registry.example:5000/team/app:v2", "busybox:1"], out, fmt, compression)
    lines = target.load(out)
    assert sorted(lines) == ["Loaded image: app:2", "Loaded image: busybox:1",
                             "Loaded image: registry.example:5000/team/app:v2"]
    for name in ("app:2", "busybox:1", "registry.example:5000/team/app:v2"):
        assert target.inspect_image(name)["Id"] == source.inspect_image(name)["Id"]
        assert _layer_ids(target, name) == _layer_ids(source, name)
    cid = target.create("app:2", name="xx")
    root = target.mount(cid)
    with open(os.path.join(root, "hello")) as f:
        assert f.read() == "hello\n"
    assert not os.path.exists(os.path.join(root, "bin", "vi"))
    # only the blobs the images use are left in the target
    from lamina.gc import referenced_blobs

    assert set(target.content.digests()) == referenced_blobs(target.store)


def test_manifest_bytes_are_kept(source, target, tmp_path):
    """An image loaded from an OCI layout keeps the very manifest bytes it had."""
    source.save(["app:2"], tmp_path / "a.tar", "oci-archive")
    target.load(tmp_path / "a.tar")
    assert target.image_store.row(target.image_store.resolve("app:2"))["manifest_digest"] == \
        source.image_store.row(source.image_store.resolve("app:2"))["manifest_digest"]


def test_compressed_output_is_stable(source, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for i in range(2):
        out = tmp_path / f"s{i}.tar"
        source.save(["app:2"], out, "oci-archive", "gzip")
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    with tarfile.open(tmp_path / "s0.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert all(d["mediaType"].endswith("+gzip") for d in manifest["layers"])


def test_cli_save_load_and_stdin(source, tmp_path, busybox_tar):
    lam = Lamina(source.root, "vfs")
    lam("save", "-o", tmp_path / "a.tar", "app:2", "busybox:1")
    other = Lamina(str(tmp_path / "other"), "vfs")
    with open(tmp_path / "a.tar", "rb") as f:
        proc = subprocess.run(["python3", "-m", "lamina", "--root", other.root, "--driver", "vfs",
                               "load"], stdin=f, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Loaded image: app:2", "Loaded image: busybox:1"]
    # save to a pipe, load from the pipe
    third = str(tmp_path / "third")
    pipe = subprocess.run(f"python3 -m lamina --root {source.root} save --format oci-archive "
                          f"--compression zstd app:2 | python3 -m lamina --root {third} "
                          "--driver vfs load -q", shell=True, capture_output=True, text=True,
                          check=False)
    assert pipe.returncode == 0, pipe.stderr
    assert Lamina(third, "vfs")("images", "--format", "{{.Repository}}:{{.Tag}}").stdout == "app:2\n"
    # a terminal is refused, a missing image is one line
    bad = lam("save", "nosuch:1", "-o", tmp_path / "x.tar", check=False)
    assert bad.returncode == 1 and bad.stderr == "Error: No such image: nosuch:1\n"
    assert not (tmp_path / "x.tar").exists()


def _docker_archive(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(files: dict) -> bytes:
    return _docker_archive(files)


def _bad_archives():
    layer = _layer({"a": b"a" * 1000})
    good_diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    wrong_diff = "sha256:" + "0" * 64
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [wrong_diff]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["bad:1"],
                            "Layers": ["l.tar"]}]).encode()
    ok_config = json.dumps({"architecture": "amd64", "os": "linux",
                            "rootfs": {"type": "layers", "diff_ids": [good_diff]}}).encode()
    good = _docker_archive({"manifest.json": manifest, "c.json": ok_config, "l.tar": layer})
    return {
        "wrong-diff-id": _docker_archive({"manifest.json": manifest, "c.json": config,
                                          "l.tar": layer}),
        "missing-layer": _docker_archive({"manifest.json": manifest, "c.json": ok_config}),
        "truncated": good[: len(good) // 2],
        "not-a-tar": os.urandom(3000),
        "no-manifest": _docker_archive({"l.tar": layer}),
        "bad-oci-digest": _docker_archive({
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": b'{"schemaVersion":2,"manifests":[]}',
            "blobs/sha256/" + "1" * 64: b"not what the name says"}),
    }


@pytest.mark.parametrize("case", sorted(_bad_archives()))
def test_bad_archive_changes_nothing(source, tmp_path, case):
    path = tmp_path / "bad.tar"
    path.write_bytes(_bad_archives()[case])
    before = store_files(source.root)
    images = source.images()
    with pytest.raises(LaminaError):
        source.load(path)
    assert store_files(source.root) == before
    assert source.images() == images
    proc = Lamina(source.root, "vfs")("load", "-i", path, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert store_files(source.root) == before


def test_good_hand_made_archive_loads(source, tmp_path):
    """The control case of the bad archives: a correct docker-archive made by hand loads."""
    layer = _layer({"a": b"a" * 1000})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    (tmp_path / "ok.tar").write_bytes(_docker_archive({
        "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["ok:1"],
                                      "Layers": ["l.tar"]}]).encode(),
        "c.json": config, "l.tar": layer}))
    assert source.load(tmp_path / "ok.tar") == ["Loaded image: ok:1"]
    with pytest.raises(InvalidArgument):
        source.save(["ok:1"], tmp_path / "x", "tarball")


@needs_tools
def test_skopeo_and_umoci_accept_saved_images(source, tmp_path):
    source.save(["app:2"], tmp_path / "o.tar", "oci-archive", "gzip")
    source.save(["app:2"], tmp_path / "d.tar", "docker-archive")
    source.save(["app:2", "busybox:1"], tmp_path / "dir", "oci-dir", "zstd")
    want = _layer_ids(source, "app:2")
    for transport in (f"oci-archive:{tmp_path}/o.tar", f"docker-archive:{tmp_path}/d.tar"):
        out = subprocess.run(["skopeo", "inspect", "--config", transport], capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["rootfs"]["diff_ids"] == want
    copy = subprocess.run(["skopeo", "copy", f"oci-archive:{tmp_path}/o.tar",
                           f"oci:{tmp_path}/copied:app"], capture_output=True, text=True,
                          check=False)
    assert copy.returncode == 0, copy.stderr
    source.save(["app:2"], tmp_path / "plain", "oci-dir", "gzip")
    unpack = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path}/plain:app:2",
                             str(tmp_path / "bundle")], capture_output=True, text=True, check=False)
    assert unpack.returncode == 0, unpack.stderr
    assert (tmp_path / "bundle" / "rootfs" / "hello").read_text() == "hello\n"


@needs_tools
def test_load_what_skopeo_writes(source, target, tmp_path):
    want = source.inspect_image("app:2")["Id"]
    # the store keeps layers unpacked (their tars are rebuilt from tar-split records), so
    # skopeo reads the image from a layout lamina saves, not from the store's own directory
    source.save(["app:2"], tmp_path / "layout", "oci-dir")
    for transport, extra in ((f"docker-archive:{tmp_path}/s.tar:app:2", []),
                             (f"oci-archive:{tmp_path}/s-oci.tar:app:2", []),
                             (f"dir:{tmp_path}/sdir", ["--dest-compress"])):
        proc = subprocess.run(["skopeo", "copy", *extra, f"oci:{tmp_path}/layout:app:2",
                               transport],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    target.load(tmp_path / "s.tar")
    assert target.inspect_image("app:2")["Id"] == want
    target.rmi(["app:2"])
    target.load(tmp_path / "s-oci.tar")
    assert target.inspect_image("app:2")["Id"] == want
    target.rmi(["app:2"])
    assert target.load(tmp_path / "sdir") == [f"Loaded image ID: {want}"]


def _tar(entries: list) -> bytes:
    """A layer tar from (name, data or None for a directory) entries, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _stacked_archive(path, layers: list[bytes], diff_ids=None) -> None:
    diff_ids = diff_ids or ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members = {"c.json": config, "manifest.json": json.dumps([{
        "Config": "c.json", "RepoTags": ["stack:1"],
        "Layers": [f"{i}.tar" for i in range(len(layers))]}]).encode()}
    members.update({f"{i}.tar": layer for i, layer in enumerate(layers)})
    path.write_bytes(_docker_archive(members))


_STACK = [
    _tar([("a", None), ("a/x", b"x0"), ("a/y", b"y0"), ("d", None), ("d/old", b"old"),
          ("top", b"t0")]),
    _tar([("a", None), ("a/.wh.x", b""), ("b", b"b1"), ("top", b"t1")]),
    _tar([("d", None), ("d/.wh..wh..opq", b""), ("d/new", b"new"), ("a", None),
          ("a/y", b"y2")]),
]


@pytest.mark.parametrize("driver", ["vfs", "overlay", "overlay2", "union"])
def test_layers_stack_the_same_on_every_driver(tmp_path, driver):
    """A three-layer image (a whiteout, an opaque directory, files replaced) loads into each
    driver, layers in order (vfs, overlay) or all at once (overlay2, union), and every container
    of it sees the same tree."""
    archive = tmp_path / "stack.tar"
    _stacked_archive(archive, _STACK)
    eng = Engine(root=str(tmp_path / driver), driver=driver)
    try:
        assert eng.load(archive) == ["Loaded image: stack:1"]
        eng.create("stack:1", name="ctr", command=["true"])
        out = io.BytesIO()
        eng.export("ctr", out)
        out.seek(0)
        with tarfile.open(fileobj=out) as tar:
            files = {m.name.strip("./"): tar.extractfile(m).read()
                     for m in tar.getmembers() if m.isfile()}
        for placeholder in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):  # the init layer's
            assert files.pop(placeholder) == b""
        assert files == {"a/y": b"y2", "b": b"b1", "d/new": b"new", "top": b"t1"}
        assert eng.inspect_image("stack:1")["RootFS"]["Layers"] == [
            "sha256:" + hashlib.sha256(layer).hexdigest() for layer in _STACK]
        assert eng.check() == []
    finally:
        eng.close()


@pytest.mark.parametrize("driver", ["vfs", "overlay2"])
def test_a_wrong_diff_id_in_the_middle_leaves_nothing(tmp_path, driver):
    """The middle layer's diff_id lies: the load fails, and nothing it extracted (the layers
    extracted at once with it, too) stays behind."""
    good = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in _STACK]
    archive = tmp_path / "bad.tar"
    _stacked_archive(archive, _STACK, [good[0], "sha256:" + "0" * 64, good[2]])
    root = str(tmp_path / driver)
    eng = Engine(root=root, driver=driver)
    assert eng.content.digests() == []  # the layout exists: compare blobs, not its creation
    eng.close()
    before = store_files(root)
    proc = Lamina(root, driver)("load", "-i", archive, check=False)
    assert proc.returncode == 1 and "diff_id" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert store_files(root) == before
    _stacked_archive(archive, _STACK)
    assert "Loaded image: stack:1" in Lamina(root, driver)("load", "-i", archive).stdout


def test_output_file_appears_complete_or_not_at_all(tmp_path):
    """save -o / export -o: the output gets its name only when complete; a failure leaves the
    old file as it was and no staged name beside it; a directory is refused before the work."""
    from lamina.fsutil import output_file

    target = tmp_path / "out.tar"
    with output_file(str(target)) as f:
        f.write(b"first")
        assert not target.exists() and os.listdir(tmp_path) == []  # unnamed while written
    assert target.read_bytes() == b"first"
    with output_file(str(target)) as f:  # replacing an existing output
        f.write(b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError), output_file(str(target)) as f:
        f.write(b"half")
        raise RuntimeError("the work failed")
    assert target.read_bytes() == b"second" and os.listdir(tmp_path) == ["out.tar"]
    with pytest.raises(IsADirectoryError) as info, output_file(str(tmp_path)):
        pytest.fail("the body ran for a directory")
    assert info.value.filename == str(tmp_path)
