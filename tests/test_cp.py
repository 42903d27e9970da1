"""``lamina cp`` on every driver: Docker's rules, both directions, never outside the container."""

import io
import os
import stat
import tarfile

import pytest

from lamina import Engine
from lamina.errors import InvalidArgument, LaminaError, NotFound
from lamina.snapshots import DRIVERS

from .conftest import needs_root

pytestmark = [needs_root, pytest.mark.mount]


def _image_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, len(data), link, 1_600_000_000
            info.uid = info.gid = uid
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
        add("etc/app", tarfile.DIRTYPE, mode=0o750)
        add("etc/app/conf", data=b"key=value\n", mode=0o600, uid=1000)
        add("etc/app/hard", tarfile.LNKTYPE, link="etc/app/conf")
        add("etc/app/sub", tarfile.DIRTYPE, mode=0o755)
        add("etc/app/sub/deep", data=b"deep")
        add("tmp", tarfile.DIRTYPE, mode=0o1777)
        add("escape", tarfile.SYMTYPE, link="/")
        add("up", tarfile.SYMTYPE, link="../../../../../tmp")
        add("etclink", tarfile.SYMTYPE, link="/etc/app")
    return out.getvalue()


@pytest.fixture(params=DRIVERS)
def container(request, store_root, tmp_path):
    from tests.conformance.conftest import skip_reason

    reason = skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    engine = Engine(root=store_root, driver=request.param)
    engine.import_image(io.BytesIO(_image_tar()), "cp-test:latest")
    engine.create("cp-test", name="c1")
    yield engine, tmp_path
    engine.close()


def _read(engine, path: str, host_dir) -> bytes:
    out = host_dir / "readback"
    if out.exists():
        out.unlink()
    engine.cp("c1:" + path, str(out))
    return out.read_bytes()


def test_container_to_host(container):
    engine, host = container
    engine.cp("c1:/etc/passwd", str(host / "passwd"))  # file to a new name
    assert (host / "passwd").read_bytes().startswith(b"root:")
    (host / "dir").mkdir()
    engine.cp("c1:/etc/passwd", str(host / "dir"))  # file into an existing directory
    assert (host / "dir" / "passwd").is_file()
    engine.cp("c1:/etc/app", str(host / "newapp"))  # directory to a new path: its contents
    assert (host / "newapp" / "sub" / "deep").read_bytes() == b"deep"
    conf = (host / "newapp" / "conf").stat()
    assert stat.S_IMODE(conf.st_mode) == 0o600 and conf.st_uid == 1000
    assert conf.st_ino == (host / "newapp" / "hard").stat().st_ino  # hard links kept
    assert stat.S_IMODE((host / "newapp").stat().st_mode) == 0o750
    engine.cp("c1:/etc/app", str(host / "dir"))  # directory into an existing directory
    assert (host / "dir" / "app" / "conf").is_file()
    (host / "contents").mkdir()
    engine.cp("c1:/etc/app/.", str(host / "contents"))  # dir/. : only its contents
    assert sorted(os.listdir(host / "contents")) == ["conf", "hard", "sub"]
    engine.cp("c1:/etclink", str(host / "link"))  # a symlink is copied as a symlink
    assert os.readlink(host / "link") == "/etc/app"
    engine.cp("c1:/etclink/conf", str(host / "through"))  # ...but followed in the middle, inside
    assert (host / "through").read_bytes() == b"key=value\n"


def test_docker_errors(container):
    engine, host = container
    with pytest.raises(NotFound):
        engine.cp("c1:/nope", str(host / "x"))
    with pytest.raises(NotFound):
        engine.cp("c1:/etc/passwd", str(host / "missing" / "x"))  # missing parent
    (host / "file").write_bytes(b"f")
    with pytest.raises(InvalidArgument):
        engine.cp("c1:/etc/app", str(host / "file"))  # a directory onto a file
    with pytest.raises(InvalidArgument):
        engine.cp("c1:/etc/passwd/", str(host / "y"))  # trailing slash on a file
    with pytest.raises(InvalidArgument):
        engine.cp("c1:/etc/passwd", str(host / "nodir") + "/")  # DEST/ must be a directory
    with pytest.raises(InvalidArgument):
        engine.cp(str(host / "file"), str(host / "other"))  # no container side
    with pytest.raises(NotFound):
        engine.cp(str(host / "file"), "c1:/nowhere/x")


def test_host_to_container(container):
    engine, host = container
    src = host / "src"
    (src / "inner").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "inner" / "b.txt").write_bytes(b"b")
    os.chmod(src / "a.txt", 0o640)
    os.chown(src / "a.txt", 1234, 1234)
    engine.cp(str(src), "c1:/srv")  # a directory to a new path
    engine.cp(str(src / "a.txt"), "c1:/etc/passwd")  # a file over a lower file
    engine.cp(str(src), "c1:/etc")  # a directory into an existing directory
    engine.cp(str(src) + "/.", "c1:/tmp")  # contents only
    assert _read(engine, "/srv/inner/b.txt", host) == b"b"
    assert _read(engine, "/etc/passwd", host) == b"a"
    assert _read(engine, "/etc/src/a.txt", host) == b"a"
    assert _read(engine, "/tmp/a.txt", host) == b"a"
    engine.cp("c1:/srv/a.txt", str(host / "owned"))
    assert (os.stat(host / "owned").st_uid, stat.S_IMODE(os.stat(host / "owned").st_mode)) == (0, 0o640)
    changes = {(c.kind, c.path) for c in engine.diff("c1")}
    assert {("A", "/srv"), ("A", "/srv/inner/b.txt"), ("C", "/etc/passwd"), ("A", "/etc/src"),
            ("A", "/tmp/a.txt")} <= changes
    assert ("C", "/etc/app") not in changes  # nothing else was copied up
    engine.cp(str(src / "a.txt"), "c1:/srv/kept", archive=True)
    engine.cp("c1:/srv/kept", str(host / "kept"))
    assert os.stat(host / "kept").st_uid == 1234


def test_symlinks_stay_inside_the_container(container, tmp_path):
    engine, host = container
    (host / "payload").write_bytes(b"payload")
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    # /escape -> "/" and /up -> ../../../../../tmp resolve inside the container's root
    engine.cp(str(host / "payload"), "c1:/escape/landed")
    engine.cp(str(host / "payload"), "c1:/up/landed2")
    with pytest.raises(NotFound):  # a host directory's path means the container's: not there
        engine.cp(str(host / "payload"), f"c1:/escape{victim}/x")
    assert not os.path.exists("/landed") and not os.path.exists("/tmp/landed2")
    assert os.listdir(victim) == []
    assert _read(engine, "/landed", host) == b"payload"
    assert _read(engine, "/tmp/landed2", host) == b"payload"
    with pytest.raises(LaminaError):
        engine.cp("c1:/up/../../../../etc/shadow-does-not-exist", str(host / "z"))
