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


def test_symlink_to_etc_writes_inside_the_root(container):
    """A container symlink to /etc, written through: the container's /etc, never the host's."""
    engine, host = container
    marker = f"lamina-cp-marker-{os.getpid()}"
    host_passwd = open("/etc/passwd", "rb").read()  # noqa: SIM115
    (host / "etclink").symlink_to("/etc")
    engine.cp(str(host / "etclink"), "c1:/hostetc")  # the symlink itself, into the container
    (host / "payload").write_bytes(b"inside")
    engine.cp(str(host / "payload"), f"c1:/hostetc/{marker}")
    engine.cp(str(host / "payload"), "c1:/hostetc/passwd")  # an existing file, overwritten
    assert not os.path.lexists(f"/etc/{marker}")
    assert open("/etc/passwd", "rb").read() == host_passwd  # noqa: SIM115
    assert _read(engine, f"/etc/{marker}", host) == b"inside"
    assert _read(engine, "/etc/passwd", host) == b"inside"


KERNEL_DRIVERS = [d for d in DRIVERS if d in ("overlay2", "overlay", "vfs")]


@pytest.mark.parametrize("driver", KERNEL_DRIVERS)
def test_swapping_a_directory_for_a_symlink_never_escapes(driver, store_root, tmp_path):
    """A running container swaps /d between a directory and a symlink to /etc while cp writes
    into /d in a loop (2 s): every write lands in the container's root (openat2
    RESOLVE_IN_ROOT), and the host's /etc is never touched."""
    import ctypes
    import threading
    import time

    from lamina.rootpath import openat2_available
    from tests.conformance.conftest import skip_reason

    if skip_reason(driver):
        pytest.skip(skip_reason(driver))
    if not openat2_available():
        pytest.skip("no openat2 on this kernel: the path fallback can race")
    engine = Engine(root=store_root, driver=driver)
    engine.import_image(io.BytesIO(_image_tar()), "cp-test:latest")
    engine.create("cp-test", name="c1")
    root = engine.mount("c1")  # stays mounted: cp uses this mount, as a running container's
    marker = f"lamina-cp-race-{os.getpid()}"
    (tmp_path / "payload").write_bytes(b"raced")
    d = os.path.join(root, "d")
    stop = threading.Event()

    os.mkdir(d)
    os.symlink("/etc", d + ".link")
    libc = ctypes.CDLL(None, use_errno=True)

    def swap():  # renameat2(RENAME_EXCHANGE): /d is always there, a dir or a symlink by turns
        while not stop.is_set():
            libc.renameat2(-100, d.encode(), -100, (d + ".link").encode(), 2)

    swapper = threading.Thread(target=swap)
    swapper.start()
    copies = 0
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                engine.cp(str(tmp_path / "payload"), f"c1:/d/{marker}")
                copies += 1
            except LaminaError:
                pass  # /d vanished or changed kind meanwhile: Docker fails too
            assert not os.path.lexists(f"/etc/{marker}")
    finally:
        stop.set()
        swapper.join()
        engine.umount("c1")
        engine.close()
    assert not os.path.lexists(f"/etc/{marker}")
    assert copies > 0


def test_inspect_shows_the_merged_dir(container):
    """GraphDriver.Data.MergedDir is a real directory path on every driver (the union driver's
    FUSE mount point, mounted or not), the one ``mount`` returns. The ``container`` fixture has
    already skipped a driver that cannot mount on this machine (tests.conformance.conftest's
    skip_reason: root, a private mount namespace, kernel overlayfs, /dev/fuse with libfuse3), so
    a mount that fails here is a bug."""
    engine, _ = container
    merged = engine.inspect_container("c1")["GraphDriver"]["Data"]["MergedDir"]
    assert os.path.isabs(merged) and merged.startswith(engine.root)
    mounted = engine.mount("c1")
    try:
        assert engine.inspect_container("c1")["GraphDriver"]["Data"]["MergedDir"] == mounted
        assert os.path.isdir(os.path.join(mounted, "etc", "app"))
    finally:
        engine.umount("c1")
