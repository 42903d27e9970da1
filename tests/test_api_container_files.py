"""A container's files and processes through ``lamina serve`` (lamina.api.container_files):
``docker cp`` both ways, ``diff``, ``export``, ``rename``, ``container prune``, ``top``,
``resize`` and ``stats`` with the docker CLI and docker-py, the archive endpoints over raw
HTTP (their stat header, Docker's status codes, tars that try to leave the container), and the
same calls side by side with Docker Engine (Debian's docker.io on a private socket,
bench/peers.py)."""

import base64
import gzip
import http.client
import io
import json
import lzma
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.apiserver import DOCKER, Server, beside_docker

from .conftest import Lamina

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, overlay mounts)")


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def request(path: str, method: str, url: str, body: bytes = b"", chunked: bool = False):
    """(status, headers, body) of one request on the unix socket ``path``; the body is sent
    chunked if asked (as the docker CLI sends a cp's)."""
    connection = UnixConnection(path)
    try:
        if chunked:
            parts = iter([body[i:i + 1000] for i in range(0, len(body), 1000)])
            connection.request(method, url, body=parts, encode_chunked=True,
                               headers={"Transfer-Encoding": "chunked"})
        else:
            connection.request(method, url, body=body)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def path_stat(headers: dict) -> dict:
    return json.loads(base64.b64decode(headers["x-docker-container-path-stat"]))


def tar_of(*members) -> bytes:
    """A tar of (name, kind, data or link target, extra TarInfo fields) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, *extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            for key, value in (extra[0] if extra else {}).items():
                setattr(info, key, value)
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload or ""
                tar.addfile(info)
    return out.getvalue()


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


# ------------------------------------------------------------------------ docker cp
def test_docker_cp_both_ways_on_running_created_and_exited(api, tmp_path):
    api.docker("run", "-d", "--name", "running", "busybox", "sleep", "300")
    api.docker("create", "--name", "created", "busybox", "sh")
    api.docker("run", "--name", "exited", "busybox", "sh", "-c", "mkdir -p /data/sub; "
               "echo deep > /data/sub/f; ln -s sub/f /data/link")
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "file").write_text("payload\n")
    os.chown(src / "d" / "e" / "file", 1234, 5678)
    os.chmod(src / "d" / "e" / "file", 0o4750)  # after the chown, which clears setuid
    os.utime(src / "d" / "e" / "file", (1_600_000_000, 1_600_000_000))
    (src / "d" / "rel").symlink_to("e/file")
    for name in ("running", "created", "exited"):
        api.docker("cp", str(src / "d"), f"{name}:/copied")
        api.docker("cp", str(src / "d" / "e" / "file"), f"{name}:/etc/")
        out = tmp_path / f"back-{name}"
        out.mkdir()
        api.docker("cp", f"{name}:/copied", str(out / "tree"))
        api.docker("cp", f"{name}:/copied/.", str(out / "contents"))
        api.docker("cp", f"{name}:/etc/file", str(out))
        api.docker("cp", f"{name}:/bin/sh", str(out / "sh"))
        api.docker("cp", "-L", f"{name}:/bin/sh", str(out / "sh-followed"))
        for tree in (out / "tree", out / "contents"):
            copied = tree / "e" / "file"
            assert copied.read_text() == "payload\n"
            st = copied.stat()
            assert (st.st_mode & 0o7777, st.st_mtime) == (0o4750, 1_600_000_000), name
            assert os.readlink(tree / "rel") == "e/file"
        assert (out / "file").read_text() == "payload\n"
        assert os.readlink(out / "sh") == "busybox"
        assert (out / "sh-followed").stat().st_size > 100_000
    out = tmp_path / "from-exited"
    api.docker("cp", "exited:/data", str(out))
    assert (out / "sub" / "f").read_text() == "deep\n" and os.readlink(out / "link") == "sub/f"
    # what was copied into the running container is what its processes see, with the tar's
    # owner (the docker CLI sends the host's; Docker Engine keeps it)
    proc = api.docker("exec", "running", "sh", "-c", "cat /copied/e/file /etc/file; "
                      "stat -c '%a %u %g' /copied/e/file")
    assert proc.stdout == "payload\npayload\n4750 1234 5678\n"
    proc = api.docker("cp", str(src / "d"), "created:/nosuch/dir/x", check=False)
    assert proc.returncode == 1
    proc = api.docker("cp", "created:/nosuch", str(tmp_path), check=False)
    assert proc.returncode == 1
    assert "Could not find the file /nosuch in container created" in proc.stderr
    # the container was only mounted for the while: nothing of it is left mounted
    cid = api.docker("inspect", "--format", "{{.Id}}", "created").stdout.strip()
    assert f"/mounts/{cid}" not in Path("/proc/self/mountinfo").read_text()


def test_copy_uid_gid_is_the_containers_user(api, tmp_path):
    api.docker("create", "--name", "uu", "--user", "4321:8765", "busybox", "sh")
    (tmp_path / "f").write_text("x")
    os.chown(tmp_path / "f", 1111, 2222)
    api.docker("cp", str(tmp_path / "f"), "uu:/tmp/plain")
    api.docker("cp", "-a", str(tmp_path / "f"), "uu:/tmp/archived")
    client = api.client()
    for name, owner in (("plain", (1111, 2222)), ("archived", (4321, 8765))):
        chunks, _ = client.containers.get("uu").get_archive(f"/tmp/{name}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.getmember(name)
        assert (member.uid, member.gid) == owner, name


# ------------------------------------------------------------------------ the archive endpoints
def test_archive_stat_header_and_status_codes(api):
    api.docker("create", "--name", "ctr", "busybox", "sh")
    sock = api.socket
    status, headers, body = request(sock, "HEAD", "/containers/ctr/archive?path=/bin/sh")
    assert (status, body) == (200, b"")
    assert path_stat(headers) == {"name": "sh", "size": 7, "mode": (1 << 27) | 0o777,
                                  "mtime": path_stat(headers)["mtime"],
                                  "linkTarget": "/bin/busybox"}
    status, headers, _ = request(sock, "HEAD", "/containers/ctr/archive?path=/etc")
    doc = path_stat(headers)
    assert (doc["name"], doc["mode"], doc["linkTarget"]) == ("etc", (1 << 31) | 0o755, "")
    assert doc["mtime"].endswith("Z") and doc["mtime"][4] == "-"
    for path, name in (("/etc/", "etc"), ("/etc/.", "."), ("/", "/"), ("etc", "etc"),
                       ("/tmp/../etc/passwd", "passwd")):
        status, headers, _ = request(sock, "HEAD", f"/containers/ctr/archive?path={path}")
        assert status == 200 and path_stat(headers)["name"] == name, path
    status, headers, _ = request(sock, "HEAD", "/containers/ctr/archive?path=/tmp")
    assert path_stat(headers)["mode"] == (1 << 31) | (1 << 20) | 0o777  # sticky: Go's ModeSticky
    status, headers, body = request(sock, "GET", "/containers/ctr/archive?path=/nosuch")
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body)["message"] == "Could not find the file /nosuch in container ctr"
    assert request(sock, "HEAD", "/containers/ctr/archive?path=/nosuch")[0] == 404
    assert request(sock, "GET", "/containers/nosuch/archive?path=/")[0] == 404
    status, _, body = request(sock, "GET", "/containers/ctr/archive")
    assert status == 400 and json.loads(body)["message"] == "bad parameter: pathcannot be empty"
    status, _, body = request(sock, "GET", "/containers/ctr/archive?path=/bin/sh/")
    assert status == 500 and json.loads(body)["message"] == "lstat /bin/sh/: not a directory"
    status, headers, body = request(sock, "GET", "/containers/ctr/archive?path=/etc")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    assert path_stat(headers)["name"] == "etc"
    assert {"etc", "etc/passwd", "etc/hosts"} <= set(names(body))
    assert names(request(sock, "GET", "/containers/ctr/archive?path=/etc/.")[2])[:2] == [
        ".", "./group"]
    root = names(request(sock, "GET", "/containers/ctr/archive?path=/")[2])
    assert "/bin/busybox" in root and "/etc/passwd" in root  # Docker names the root's so
    assert names(request(sock, "GET", "/containers/ctr/archive?path=/etc/passwd")[2]) == ["passwd"]


def test_put_archive_rules(api):
    api.docker("run", "-d", "--name", "rr", "busybox", "sleep", "300")
    sock = api.socket
    plain = tar_of(("d/", tarfile.DIRTYPE, None, {"mode": 0o750, "uid": 7, "gid": 8,
                                                  "mtime": 1_400_000_000}),
                   ("d/f", tarfile.REGTYPE, b"hello\n", {"mode": 0o640, "mtime": 1_500_000_000}),
                   ("d/l", tarfile.SYMTYPE, "f"), ("d/h", tarfile.LNKTYPE, "d/f"),
                   ("d/p", tarfile.FIFOTYPE, None))
    for where, body, chunked in (("/tmp", plain, True), ("/root", gzip.compress(plain), False),
                                 ("/var", lzma.compress(plain), True)):
        status, headers, _ = request(sock, "PUT", f"/containers/rr/archive?path={where}", body,
                                     chunked)
        assert (status, headers["content-length"]) == (200, "0"), where
    out = api.docker("exec", "rr", "sh", "-c", "for d in /tmp /root /var; do cd $d/d; "
                     "stat -c '%n %a %u %g %Y %h' . f; readlink l; test -p p && echo fifo; done")
    assert out.stdout == ". 750 7 8 1400000000 2\nf 640 0 0 1500000000 2\nf\nfifo\n" * 3
    # a symlink to a directory is a way in; a file or nothing is not
    api.docker("exec", "rr", "ln", "-s", "/tmp/d", "/way")
    assert request(sock, "PUT", "/containers/rr/archive?path=/way",
                   tar_of(("via", tarfile.REGTYPE, b"v")))[0] == 200
    assert api.docker("exec", "rr", "cat", "/tmp/d/via").stdout == "v"
    status, _, body = request(sock, "PUT", "/containers/rr/archive?path=/nosuch", plain)
    assert status == 404 and "Could not find the file /nosuch" in json.loads(body)["message"]
    status, _, body = request(sock, "PUT", "/containers/rr/archive?path=/etc/passwd", plain)
    assert (status, json.loads(body)["message"]) == (400, "extraction point is not a directory")
    assert request(sock, "PUT", "/containers/rr/archive?path=/tmp", b"")[0] == 200
    assert request(sock, "PUT", "/containers/rr/archive?path=/tmp", b"not a tar" * 100)[0] == 500
    # noOverwriteDirNonDir: a directory is not replaced by a file, nor a file by a directory
    file_for_dir = tar_of(("d", tarfile.REGTYPE, b"x"))
    assert request(sock, "PUT", "/containers/rr/archive?path=/tmp&noOverwriteDirNonDir=true",
                   file_for_dir)[0] == 500
    assert request(sock, "PUT", "/containers/rr/archive?path=/tmp/d&noOverwriteDirNonDir=1",
                   tar_of(("f", tarfile.DIRTYPE, None)))[0] == 500
    assert request(sock, "PUT", "/containers/rr/archive?path=/tmp", file_for_dir)[0] == 200
    assert api.docker("exec", "rr", "cat", "/tmp/d").stdout == "x"  # without it: replaced


def test_tars_and_links_never_leave_the_container(api, tmp_path):
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    api.docker("run", "-d", "--name", "rr", "busybox", "sleep", "300")
    api.docker("create", "--name", "ctr", "busybox", "sh")
    for name in ("rr", "ctr"):
        api.docker("cp", str(tmp_path / "host-dir" / "secret"), f"{name}:/tmp/")  # a file to use
        for link, target in (("/abs", str(outside)), ("/rel", "../../../../../.." + str(outside))):
            tar = tar_of((link.lstrip("/"), tarfile.SYMTYPE, target))
            assert request(api.socket, "PUT", f"/containers/{name}/archive?path=/", tar)[0] == 200
            # the link leads to its target inside the container, where there is nothing
            for method in ("HEAD", "GET"):
                assert request(api.socket, method,
                               f"/containers/{name}/archive?path={link}/secret")[0] == 404
            assert request(api.socket, "PUT", f"/containers/{name}/archive?path={link}",
                           tar_of(("pwned", tarfile.REGTYPE, b"x")))[0] == 404
            status, headers, _ = request(api.socket, "HEAD",
                                         f"/containers/{name}/archive?path={link}")
            assert path_stat(headers)["linkTarget"] == str(outside)
        hostile = (tar_of(("x", tarfile.SYMTYPE, str(outside)),
                          ("x/pwned", tarfile.REGTYPE, b"pwned")),
                   tar_of(("../../../../pwned", tarfile.REGTYPE, b"pwned")),
                   tar_of(("up", tarfile.SYMTYPE, "../../../../../../etc")),
                   tar_of(("h", tarfile.LNKTYPE, "../../../etc/passwd")))
        for number, tar in enumerate(hostile):
            status, _, body = request(api.socket, "PUT", f"/containers/{name}/archive?path=/tmp",
                                      tar)
            assert status == 500, (name, number, body)
        # an absolute symlink inside the tar points into the container: Docker writes there
        tar = tar_of(("e", tarfile.SYMTYPE, "/etc"), ("e/through", tarfile.REGTYPE, b"in"))
        assert request(api.socket, "PUT", f"/containers/{name}/archive?path=/tmp", tar)[0] == 200
        chunks, _ = api.client().containers.get(name).get_archive("/etc/through")
        assert names(b"".join(chunks)) == ["through"]
    assert sorted(os.listdir(outside)) == ["secret"]
    assert not os.path.exists("/etc/through") and not os.path.exists("/pwned")


# ------------------------------------------------------------------------ changes, export
def test_changes_and_export(api, tmp_path):
    api.docker("create", "--name", "fresh", "busybox", "sh")
    status, _, body = request(api.socket, "GET", "/containers/fresh/changes")
    assert (status, body.strip()) == (200, b"null")  # Docker's answer for no changes
    api.docker("run", "--name", "changed", "busybox", "sh", "-c",
               "echo hi > /hello; rm /bin/vi; echo x >> /etc/passwd; mkdir -p /a/b")
    client = api.client()
    changes = client.containers.get("changed").diff()
    assert sorted((c["Path"], c["Kind"]) for c in changes) == [
        ("/a", 1), ("/a/b", 1), ("/bin", 0), ("/bin/vi", 2), ("/etc", 0), ("/etc/passwd", 0),
        ("/hello", 1)]
    assert api.docker("diff", "changed").stdout == api.lamina("diff", "changed").stdout
    status, _, body = request(api.socket, "GET", "/containers/nosuch/changes")
    assert status == 404
    exported = names(b"".join(client.containers.get("changed").export()))
    assert "hello" in exported and "bin/vi" not in exported and "bin/busybox" in exported
    api.lamina("export", "-o", str(tmp_path / "cli.tar"), "changed")
    assert exported == names((tmp_path / "cli.tar").read_bytes())  # the CLI's tar, the same
    status, headers, _ = request(api.socket, "GET", "/containers/changed/export")
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert request(api.socket, "GET", "/containers/nosuch/export")[0] == 404


# ------------------------------------------------------------------------ rename, prune
def test_rename(api):
    api.docker("create", "--name", "first", "busybox", "sh")
    api.docker("run", "-d", "--name", "other", "busybox", "sleep", "300")
    api.docker("rename", "first", "second")
    assert api.lamina("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["other", "second"]
    api.docker("rename", "other", "/running-renamed")  # a running one too, "/" dropped
    proc = api.docker("rename", "second", "running-renamed", check=False)
    assert proc.returncode == 1 and 'The container name "/running-renamed" is already in use' \
        in proc.stderr
    for url, status, message in (
            ("/containers/second/rename?name=second", 400,
             "Renaming a container with the same name as its current name"),
            ("/containers/second/rename", 400, "Neither old nor new names may be empty"),
            ("/containers/nosuch/rename?name=x", 404, "No such container: nosuch"),
            ("/containers/second/rename?name=bad%20name", 400,
             ("Error when allocating new name: Invalid container name (/bad name), only "
              "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"))):
        got = request(api.socket, "POST", url)
        assert (got[0], json.loads(got[2])["message"]) == (status, message), url
    status, _, body = request(api.socket, "POST", "/containers/second/rename?name=third")
    assert (status, body) == (204, b"")
    client = api.client()
    client.containers.get("third").rename("fourth")
    assert client.containers.get("fourth").name == "fourth"
    assert api.docker("exec", "running-renamed", "true").returncode == 0


def test_container_prune_with_filters(api):
    api.docker("create", "--name", "keep-me", "--label", "keep=yes", "busybox", "sh")
    api.docker("create", "--name", "labelled", "--label", "tier=x", "busybox", "sh")
    api.docker("run", "--name", "wrote", "busybox", "sh", "-c", "head -c 1000 /dev/zero > /z")
    api.docker("run", "-d", "--name", "running", "busybox", "sleep", "300")
    client = api.client()
    result = client.containers.prune(filters={"label": "tier=nomatch"})
    assert result == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    result = client.containers.prune(filters={"label": ["tier=x"]})
    assert len(result["ContainersDeleted"]) == 1
    result = client.containers.prune(filters={"until": "2000-01-01T00:00:00Z"})
    assert result["ContainersDeleted"] is None
    proc = api.docker("container", "prune", "-f", "--filter", "label!=keep")
    assert "Deleted Containers:" in proc.stdout and "Total reclaimed space: 1kB" in proc.stdout
    assert sorted(api.lamina("ps", "-a", "--format", "{{.Names}}").stdout.split()) == [
        "keep-me", "running"]
    for filters, message in (({"bogus": ["x"]}, "invalid filter 'bogus'"),
                             ({"until": ["soon"]}, ("invalid value for 'until' filter: "
                                                    "failed to parse value as time or "
                                                    'duration: "soon"'))):
        url = "/containers/prune?filters=" + json.dumps(filters).replace(" ", "")
        status, _, body = request(api.socket, "POST", url)
        assert (status, json.loads(body)["message"]) == (400, message)
    time.sleep(1.1)
    assert len(client.containers.prune(filters={"until": "1s"})["ContainersDeleted"]) == 1
    assert api.lamina("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["running"]


# ------------------------------------------------------------------------ top, resize
def test_top(api):
    api.docker("run", "-d", "--name", "rr", "busybox", "sh", "-c", "sleep 300 & sleep 301; echo")
    api.docker("exec", "rr", "sh", "-c", "sleep 302 > /dev/null 2>&1 &")  # an exec's process too
    time.sleep(0.3)
    proc = api.docker("top", "rr")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(line.split(None, 7)[7] for line in lines[1:])  # ps cuts at 80 columns
    assert commands[0].startswith("sh -c sleep 300") and commands[1:] == [
        "sleep 300", "sleep 301", "sleep 302"]
    top = api.client().containers.get("rr").top(ps_args="-o pid,comm")
    assert top["Titles"] == ["PID", "COMMAND"] and len(top["Processes"]) == 4
    top = api.client().containers.get("rr").top(ps_args="aux")
    assert top["Titles"][:2] == ["USER", "PID"] and len(top["Processes"]) == 4
    status, _, body = request(api.socket, "GET", "/containers/rr/top?ps_args=-o%20comm")
    assert (status, json.loads(body)["message"]) == (500, "Couldn't find PID field in ps output")
    api.docker("create", "--name", "ctr", "busybox", "sh")
    status, _, body = request(api.socket, "GET", "/containers/ctr/top")
    cid = api.docker("inspect", "--format", "{{.Id}}", "ctr").stdout.strip()
    assert (status, json.loads(body)["message"]) == (409, f"Container {cid} is not running")
    assert request(api.socket, "GET", "/containers/nosuch/top")[0] == 404


def test_resize(api):
    api.docker("run", "-d", "-t", "--name", "tty", "busybox", "sh")
    api.docker("run", "-d", "--name", "plain", "busybox", "sleep", "300")
    container = api.client().containers.get("tty")
    container.resize(height=33, width=111)
    size = api.docker("exec", "tty", "stty", "-F", "/proc/1/fd/0", "size").stdout
    assert size == "33 111\n"
    status, headers, body = request(api.socket, "POST", "/containers/tty/resize?h=40&w=120")
    assert (status, headers["content-length"], body) == (200, "0", b"")
    assert api.docker("exec", "tty", "stty", "-F", "/proc/1/fd/0", "size").stdout == "40 120\n"
    assert request(api.socket, "POST", "/containers/plain/resize?h=40&w=120")[0] == 200
    status, _, body = request(api.socket, "POST", "/containers/plain/resize?h=x&w=1")
    assert (status, json.loads(body)["message"]) == (
        400, 'strconv.Atoi: parsing "x": invalid syntax')
    api.docker("create", "--name", "ctr", "busybox", "sh")
    assert request(api.socket, "POST", "/containers/ctr/resize?h=1&w=1")[0] == 409
    assert request(api.socket, "POST", "/containers/nosuch/resize?h=1&w=1")[0] == 404
    # an exec's terminal: a resize given before the start waits for it (as Docker's does: see
    # tests/test_api_vs_docker.py) and its size is the one the process starts with; one given
    # while it runs reaches its pty; an exec without a terminal answers 200 (Docker's answers)
    import threading

    low = api.client().api
    early = low.exec_create("tty", ["stty", "size"], tty=True)
    answered = []
    waiting = threading.Thread(target=lambda: answered.append(
        request(api.socket, "POST", f"/exec/{early['Id']}/resize?h=12&w=34")[:3:2]))
    waiting.start()
    time.sleep(0.5)  # the resize is in (it waits for the start)
    assert waiting.is_alive()
    assert low.exec_start(early["Id"]) == b"12 34\r\n"
    waiting.join(10)
    assert answered == [(200, b"")]
    running = low.exec_create("tty", ["sleep", "30"], tty=True)
    low.exec_start(running["Id"], detach=True)
    low.exec_resize(running["Id"], height=21, width=43)
    pid = low.exec_inspect(running["Id"])["Pid"]
    assert pid and api.docker("exec", "tty", "sh", "-c",
                              "stty -F /proc/$(pidof sleep)/fd/0 size").stdout == "21 43\n"
    plain = low.exec_create("plain", ["sleep", "30"])
    low.exec_start(plain["Id"], detach=True)
    status, headers, body = request(api.socket, "POST", f"/exec/{plain['Id']}/resize?h=1&w=1")
    assert (status, body) == (200, b"")
    status, _, body = request(api.socket, "POST", f"/exec/{plain['Id']}/resize?h=1&w=y")
    assert (status, json.loads(body)["message"]) == (
        400, 'strconv.Atoi: parsing "y": invalid syntax')


def test_stats(api):
    api.docker("run", "-d", "--name", "busy", "busybox", "sh", "-c", "while :; do :; done")
    api.docker("create", "--name", "idle", "busybox", "sh")
    client = api.client()
    doc = client.containers.get("busy").stats(stream=False)  # two samples, a second apart
    assert doc["name"] == "/busy" and doc["pids_stats"]["current"] == 1
    assert doc["memory_stats"]["usage"] > 0 and doc["memory_stats"]["limit"] > 0
    cpu, before = doc["cpu_stats"], doc["precpu_stats"]
    assert cpu["cpu_usage"]["total_usage"] > before["cpu_usage"]["total_usage"] > 0
    assert cpu["system_cpu_usage"] > before["system_cpu_usage"] and cpu["online_cpus"] >= 1
    line = api.docker("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.PIDs}}",
                      "busy").stdout.split()
    assert line[0] == "busy" and float(line[1].rstrip("%")) > 5 and line[2] == "1"
    idle = client.containers.get("idle").stats(stream=False)
    assert idle["read"] == "0001-01-01T00:00:00Z" and idle["memory_stats"] == {}  # Docker's
    stream = client.containers.get("busy").stats(stream=True, decode=True)
    first, second = next(stream), next(stream)
    assert second["preread"] == first["read"] and second["read"] > first["read"]
    one = client.containers.get("busy").stats(stream=False, one_shot=True)
    assert one["preread"] == "0001-01-01T00:00:00Z"
    assert request(api.socket, "GET", "/containers/nosuch/stats?stream=false")[0] == 404


# ------------------------------------------------------------------------ the vfs driver
def test_cp_on_a_vfs_store(store_root, busybox_tar, tmp_path):
    Lamina(store_root, "vfs")("import", busybox_tar, "busybox:latest")
    server = Server(store_root, str(tmp_path / "api.sock")).start()
    try:
        server.docker("create", "--name", "ctr", "busybox", "sh")
        (tmp_path / "f").write_text("on vfs\n")
        server.docker("cp", str(tmp_path / "f"), "ctr:/f")
        server.docker("cp", "ctr:/f", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "on vfs\n"
        assert server.docker("diff", "ctr").stdout == "A /f\n"
    finally:
        server.stop()


# ------------------------------------------------------------------------ beside Docker Engine
@pytest.fixture(scope="module")
def engines(busybox_tar):
    """{"docker": (socket, env), "lamina": (socket, env)}: Docker Engine and lamina serve."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing (scripts/setup installs docker.io)")
    with beside_docker("lamina-files-vs-docker-") as (dockerd, server):
        server.lamina("import", busybox_tar, "busybox:latest")
        with open(busybox_tar, "rb") as f:
            subprocess.run([DOCKER, "import", "-", "busybox:latest"], env=dockerd.env,
                           input=f.read(), check=True, capture_output=True)
        yield {"docker": (str(dockerd.sock), dockerd.env), "lamina": (server.socket, server.env())}


def test_answers_beside_docker_engine(engines, tmp_path):
    import subprocess

    got = {}
    for engine, (sock, env) in engines.items():
        def docker(*args, env=env):
            return subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True,
                                  timeout=120, check=False)

        for args in (("run", "-d", "--name", "rr", "--network", "none", "busybox", "sleep", "300"),
                     ("create", "--name", "cc", "--network", "none", "busybox", "sh"),
                     ("exec", "rr", "sh", "-c", "echo hi > /hello; rm /bin/vi; mkdir -p /a/b"),
                     ("create", "--name", "vv", "--network", "none", "-v", "/vol",
                      "-v", "lamina-files-named:/named:ro", "busybox", "sleep", "300")):
            proc = docker(*args)
            assert proc.returncode == 0, (engine, args, proc.stderr)
        answers = {}
        for path in ("/bin/sh", "/bin", "/bin/", "/bin/.", "/", "/a", "/nosuch", "/bin/sh/"):
            status, headers, _ = request(sock, "HEAD", f"/containers/rr/archive?path={path}")
            doc = path_stat(headers) if status == 200 else {}
            doc.pop("mtime", None)
            if path in ("/", "/a"):
                doc.pop("size", None)  # a directory's size is its file system's
            answers[f"HEAD {path}"] = (status, doc)
        status, _, body = request(sock, "GET", "/containers/rr/archive?path=/bin")
        answers["GET /bin"] = (status, sorted(names(body)))
        answers["GET /a/."] = sorted(names(request(sock, "GET",
                                                   "/containers/rr/archive?path=/a/.")[2]))
        answers["no changes"] = json.loads(request(sock, "GET", "/containers/cc/changes")[2])
        for url in ("/containers/cc/archive?path=/nosuch", "/containers/cc/archive",
                    "/containers/nosuch/archive?path=/"):
            status, _, body = request(sock, "PUT", url, tar_of(("f", tarfile.REGTYPE, b"x")))
            answers[f"PUT {url}"] = (status, json.loads(body)["message"])
        answers["PUT ok"] = request(sock, "PUT", "/containers/cc/archive?path=/tmp",
                                    tar_of(("f", tarfile.REGTYPE, b"x")))[:1]
        answers["changes"] = sorted(json.loads(request(sock, "GET", "/containers/rr/changes")[2]),
                                    key=lambda c: c["Path"])
        answers["top"] = json.loads(request(sock, "GET", "/containers/rr/top")[2])["Titles"]
        for url in ("/containers/cc/top", "/containers/cc/resize?h=1&w=1"):
            status, _, body = request(sock, "GET" if "top" in url else "POST", url)
            answers[url] = (status, json.loads(body)["message"].split()[0])
        for url in ("/containers/rr/resize?h=1&w=1", "/containers/rr/resize",
                    "/containers/cc/rename?name=rr", "/containers/cc/rename?name=cc",
                    "/containers/cc/rename", "/containers/nosuch/rename?name=x",
                    "/containers/cc/rename?name=renamed"):
            status, _, body = request(sock, "POST", url)
            message = json.loads(body)["message"] if body.strip() else ""
            answers[url] = (status, message.split(" by container ")[0])
        status, _, body = request(sock, "POST", "/containers/prune?filters=%7B%22label%22%3A%5B%22"
                                                "nomatch%22%5D%7D")
        answers["prune none"] = (status, json.loads(body))
        answers["prune bogus"] = request(sock, "POST", "/containers/prune?filters=%7B%22bogus"
                                                       "%22%3A%5B%22x%22%5D%7D")[0]
        export = request(sock, "GET", "/containers/rr/export")
        answers["export"] = (export[0], export[1]["content-type"],
                             {"hello", "bin/sh", "etc/passwd"} <= set(names(export[2])))
        # volumes: the archive reaches the volume mounted at the path, as the container sees it
        # (vv is created, not started: Docker mounts its volumes for the copy)
        put = tar_of(("f", tarfile.REGTYPE, b"in volume"), ("d/", tarfile.DIRTYPE, None),
                     ("d/g", tarfile.REGTYPE, b"deeper"))
        answers["PUT /vol"] = request(sock, "PUT", "/containers/vv/archive?path=/vol", put)[0]
        status, _, body = request(sock, "PUT", "/containers/vv/archive?path=/named", put)
        answers["PUT /named (ro)"] = (status, json.loads(body)["message"])
        for path in ("/vol", "/vol/f", "/vol/d/.", "/vol/nosuch"):
            status, headers, _ = request(sock, "HEAD", f"/containers/vv/archive?path={path}")
            doc = path_stat(headers) if status == 200 else {}
            doc.pop("mtime", None)
            if path in ("/vol", "/vol/d/."):
                doc.pop("size", None)
            answers[f"HEAD vv {path}"] = (status, doc)
        for path in ("/vol", "/vol/.", "/vol/d"):
            status, _, body = request(sock, "GET", f"/containers/vv/archive?path={path}")
            answers[f"GET vv {path}"] = (status, sorted(names(body)))
        docker("create", "--name", "ro", "--read-only", "--network", "none", "busybox", "sh")
        status, _, body = request(sock, "PUT", "/containers/ro/archive?path=/tmp", put)
        answers["PUT read-only root"] = (status, json.loads(body)["message"])
        docker("rm", "ro")
        docker("start", "vv")
        answers["vv sees"] = docker("exec", "vv", "cat", "/vol/f", "/vol/d/g").stdout
        docker("rm", "-f", "-v", "vv")
        docker("volume", "rm", "lamina-files-named")
        out = tmp_path / engine
        out.mkdir()
        docker("cp", "rr:/a", str(out / "a"))
        docker("cp", "rr:/bin/sh", str(out / "sh"))
        answers["cp out"] = (sorted(os.listdir(out)), os.readlink(out / "sh"),
                             (out / "a" / "b").is_dir())
        answers["diff"] = sorted(docker("diff", "rr").stdout.splitlines())
        answers["top CLI"] = docker("top", "rr").stdout.splitlines()[0].split()
        docker("rm", "-f", "rr", "cc", "renamed")
        got[engine] = answers
    differences = {key: (answer, got["lamina"].get(key)) for key, answer in got["docker"].items()
                   if got["lamina"].get(key) != answer}
    assert not differences  # key: (Docker Engine's answer, lamina's)
