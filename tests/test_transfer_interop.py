"""Interop with the real tools: Docker Engine 20.10 (a private dockerd, as bench/peers.py runs
it), Podman 4.3 (private --root/--runroot, runc + cgroupfs) and skopeo, through archives and
through a docker-registry on loopback. Image IDs (config digests) must survive every trip."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lamina import Engine

from .conftest import REPO
from .test_registry import start_registry, stop

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("dockerd", "podman", "skopeo", "docker-registry")),
    reason="docker.io, podman, skopeo and docker-registry are installed by scripts/setup")

sys.path.insert(0, os.path.join(REPO, "bench"))
import peers  # noqa: E402  (bench/peers.py: private dockerd and podman stores)


@pytest.fixture(scope="module")
def base():
    path = Path(tempfile.mkdtemp(prefix="lamina-interop-", dir="/var/tmp"))
    yield path
    peers.remove_tree(path)


@pytest.fixture(scope="module")
def docker(base):
    d = peers.Docker(base)
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    yield d
    d.cleanup()


@pytest.fixture(scope="module")
def podman(base):
    p = peers.Podman(base)
    try:
        p.start()
    except BaseException:
        p.cleanup()
        raise
    yield p
    p.cleanup()


@pytest.fixture(scope="module")
def registry(base):
    work = base / "registry"
    work.mkdir()
    host, proc = start_registry(str(work))
    yield host
    stop(proc)


@pytest.fixture(scope="module")
def store(base, busybox_tar):
    eng = Engine(root=str(base / "lamina"), driver="vfs")
    eng.import_image(busybox_tar, "busybox:1")
    eng.create("busybox:1", name="ctr")
    with open(os.path.join(eng.mount("ctr"), "hello"), "w") as f:
        f.write("hello\n")
    eng.commit("ctr", "app:2")
    yield eng
    eng.close()


def run(cmd, env=None):
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
    return proc.stdout


def fresh(base, name) -> Engine:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    return Engine(root=str(path), driver="vfs")


def test_docker_loads_our_archive_and_we_load_docker_save(store, docker, base):
    want = store.inspect_image("app:2")["Id"]
    store.save(["app:2"], base / "to-docker.tar", "docker-archive")
    out = run(docker.cli("load", "-i", base / "to-docker.tar"), docker.env)
    assert "Loaded image: app:2" in out
    assert run(docker.cli("image", "inspect", "-f", "{{.Id}}", "app:2"), docker.env).strip() == want
    run(docker.cli("run", "--rm", "--network=none", "app:2", "cat", "/hello"), docker.env)
    run(docker.cli("tag", "app:2", "fromdocker:3"), docker.env)
    run(docker.cli("save", "-o", base / "from-docker.tar", "fromdocker:3"), docker.env)
    eng = fresh(base, "from-docker")
    assert eng.load(base / "from-docker.tar") == ["Loaded image: fromdocker:3"]
    assert eng.inspect_image("fromdocker:3")["Id"] == want


def test_podman_both_ways(store, podman, base):
    want = store.inspect_image("app:2")["Id"]
    for fmt in ("oci-archive", "docker-archive"):
        store.save(["app:2"], base / f"to-podman-{fmt}", fmt, "gzip")
        run(podman.cli("load", "-i", base / f"to-podman-{fmt}"), podman.env)
        ident = run(podman.cli("image", "inspect", "-f", "{{.Id}}", "app:2"), podman.env).strip()
        assert "sha256:" + ident.removeprefix("sha256:") == want
        run(podman.cli("rmi", "-f", "app:2"), podman.env)
    run(podman.cli("load", "-i", base / "to-podman-oci-archive"), podman.env)
    for fmt in ("docker-archive", "oci-archive", "oci-dir", "docker-dir"):
        out = base / f"from-podman-{fmt}"
        run(podman.cli("save", "--format", fmt, "-o", out, "app:2"), podman.env)
        eng = fresh(base, f"from-podman-{fmt}-store")
        eng.load(out)
        assert eng.inspect_image(want)["Id"] == want, fmt
        eng.close()


def test_registry_with_podman_skopeo_and_docker(store, podman, docker, registry, base):
    want = store.inspect_image("app:2")["Id"]
    store.push("app:2", f"{registry}/interop/app:2")
    run(podman.cli("pull", "--tls-verify=false", f"{registry}/interop/app:2"), podman.env)
    ident = run(podman.cli("image", "inspect", "-f", "{{.Id}}", f"{registry}/interop/app:2"),
                podman.env).strip()
    assert ident.removeprefix("sha256:") == want.removeprefix("sha256:")
    run(docker.cli("pull", f"{registry}/interop/app:2"), docker.env)
    assert run(docker.cli("image", "inspect", "-f", "{{.Id}}", f"{registry}/interop/app:2"),
               docker.env).strip() == want
    # the other way: podman and skopeo push, lamina pulls
    run(podman.cli("push", "--tls-verify=false", f"{registry}/interop/app:2",
                   f"{registry}/bypodman/app:2"), podman.env)
    store.save(["app:2"], f"{base}/saved-layout", "oci-dir")  # the store keeps no layer tars
    run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base}/saved-layout:app:2",
         f"docker://{registry}/byskopeo/app:2"])
    run(docker.cli("tag", f"{registry}/interop/app:2", f"{registry}/bydocker/app:2"), docker.env)
    run(docker.cli("push", f"{registry}/bydocker/app:2"), docker.env)
    eng = fresh(base, "pulled")
    for name in ("bypodman", "byskopeo", "bydocker"):
        assert eng.pull(f"{registry}/{name}/app:2") == want, name
    root = eng.mount(eng.create(f"{registry}/bydocker/app:2"))
    with open(os.path.join(root, "hello")) as f:
        assert f.read() == "hello\n"
    # skopeo reads what lamina pushed, and copies it from the registry into an OCI layout
    run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry}/interop/app:2",
         f"oci:{base}/skopeo-layout:app"])
