"""``lamina serve`` with the real clients: the docker CLI (28) and docker-py (7) drive containers
through the Engine API; the server's own rules (versions, errors, sockets, limits) over raw HTTP.

Each test starts a real server (a subprocess, tests/apiserver.py) on a fresh store."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from tests.apiserver import DOCKER, LAMINA, Server, ping

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, overlay mounts)")


def raw(path: str, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes on the socket, return everything the server sends until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data
    finally:
        s.close()


def http(path: str, method: str, url: str, body: bytes = b"", headers: dict | None = None):
    """(status, headers, body) of one request."""
    head = [f"{method} {url} HTTP/1.1", "Host: d", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        head.append(f"Content-Length: {len(body)}")
    reply = raw(path, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    top, _, rest = reply.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    status = int(lines[0].split()[1])
    found = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if found.get("transfer-encoding") == "chunked":
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        rest = out
    return status, found, rest


# ------------------------------------------------------------------------ the docker CLI
def test_version_and_info(api):
    out = api.docker("version", "--format", "{{json .}}").stdout
    doc = json.loads(out)
    assert doc["Server"]["ApiVersion"] == "1.44"
    assert doc["Server"]["Components"][0]["Name"] == "Engine"
    assert doc["Client"]["ApiVersion"] == "1.44"  # negotiated down from the client's
    info = json.loads(api.docker("info", "--format", "{{json .}}").stdout)
    assert info["Driver"] == "overlay2" and info["Images"] == 1
    assert info["DockerRootDir"] == api.root


def test_run_output_and_exit_codes(api):
    proc = api.docker("run", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    proc = api.docker("run", "--rm", "busybox", "sh", "-c", "echo gone; exit 5", check=False)
    assert (proc.returncode, proc.stdout) == (5, "gone\n")
    assert api.docker("ps", "-a", "-q").stdout.split() == [
        api.lamina("ps", "-a", "-q").stdout.strip()]  # the --rm one is gone, the other stays
    proc = api.docker("run", "-i", "--rm", "busybox", "cat", input="piped in\n")
    assert proc.stdout == "piped in\n"
    proc = api.docker("run", "--rm", "busybox", "nosuchcommand", check=False)
    assert proc.returncode == 127


def test_detached_exec_logs_stop_rm(api):
    cid = api.docker("run", "-d", "--name", "web", "-e", "GREETING=hi", "busybox", "sh", "-c",
                     "echo started; echo $GREETING >&2; sleep 300").stdout.strip()
    assert len(cid) == 64
    assert api.docker("exec", "web", "cat", "/etc/hostname").stdout == cid[:12] + "\n"
    assert api.docker("exec", "web", "sh", "-c", "exit 7", check=False).returncode == 7
    assert api.docker("exec", "-i", "web", "cat", input="to exec\n").stdout == "to exec\n"
    started = time.monotonic()
    api.docker("exec", "-d", "web", "sh", "-c", "mkdir /made; sleep 30")
    assert time.monotonic() - started < 10  # returns once the process runs, not when it ends
    assert api.docker("exec", "web", "ls", "-d", "/made").stdout == "/made\n"
    logs = api.docker("logs", "web")
    assert (logs.stdout, logs.stderr) == ("started\n", "hi\n")
    rows = api.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout.splitlines()
    assert rows[0].startswith("web Up ")
    # the CLI on the same store sees the same container
    assert api.lamina("ps", "-q").stdout.strip() == cid[:12]
    assert api.docker("rm", "web", check=False).returncode != 0  # running: refused
    api.docker("stop", "-t", "1", "web")
    inspect = json.loads(api.docker("inspect", "web").stdout)[0]
    assert inspect["State"]["Status"] == "exited" and inspect["State"]["ExitCode"] == 137
    assert inspect["Config"]["Env"][-1] == "GREETING=hi"
    api.docker("rm", "web")
    proc = api.docker("inspect", "web", check=False)
    assert proc.returncode == 1 and "No such object: web" in proc.stderr


def test_ps_sizes_agree_with_the_cli(api):
    api.docker("run", "--name", "writer", "busybox", "sh", "-c", "echo 12345 > /data")
    docker_rows = api.docker("ps", "-a", "-s", "--format", "{{.Names}}\t{{.Size}}").stdout
    lamina_rows = api.lamina("ps", "-a", "-s", "--format", "{{.Names}}\t{{.Size}}").stdout
    assert docker_rows == lamina_rows and docker_rows.startswith("writer\t")


def test_tty_run_through_a_terminal(api, tmp_path):
    """``docker run -it`` in tmux: a shell on a pty, window size applied, exit code returned."""
    if subprocess.run(["which", "tmux"], capture_output=True, check=False).returncode != 0:
        pytest.skip("tmux is not installed")
    session = f"lamina-api-{os.getpid()}"
    out = tmp_path / "exit"
    env = " ".join(f"{k}={v}" for k, v in api.env().items() if k.startswith("DOCKER"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"{env} {DOCKER} run -it --rm busybox sh; echo $? > {out}"], check=True)
    try:
        time.sleep(2)
        subprocess.run(["tmux", "send-keys", "-t", session, "echo hi-$((40+2)); stty size",
                        "Enter"], check=True)
        time.sleep(1)
        screen = subprocess.run(["tmux", "capture-pane", "-pt", session], capture_output=True,
                                text=True, check=False).stdout
        subprocess.run(["tmux", "send-keys", "-t", session, "exit 4", "Enter"], check=True)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert "hi-42" in screen
    assert "30 100" in screen
    assert out.read_text().strip() == "4"


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-pt", session], capture_output=True,
                          text=True, check=False).stdout


def test_resize_through_a_terminal(api):
    """``docker run -it`` and ``docker exec -it`` in tmux: the process starts with the window's
    size; the window then made larger, the docker CLI sends POST /containers/{id}/resize and
    /exec/{id}/resize, and the process in the
    container is woken by SIGWINCH (its trap prints ``stty size``) and sees the new size. (For
    ``run``, the CLI also sends the container a SIGWINCH itself; for ``exec`` it does not.)"""
    if subprocess.run(["which", "tmux"], capture_output=True, check=False).returncode != 0:
        pytest.skip("tmux is not installed")
    env = " ".join(f"{k}={v}" for k, v in api.env().items() if k.startswith("DOCKER"))
    api.docker("run", "-d", "--name", "bg", "busybox", "sleep", "300")
    watch = "stty size; trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done"
    for verb in (f"run -it --rm busybox sh -c \"{watch}\"", f"exec -it bg sh -c \"{watch}\""):
        session = f"lamina-resize-{os.getpid()}"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                        f"{env} {DOCKER} {verb}; sleep 30"], check=True)

        try:
            deadline = time.monotonic() + 20
            while "ready" not in _screen(session) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "ready" in _screen(session), _screen(session)
            # the size from the start (ConsoleSize in the create: runc sets it before the
            # process runs), not 0 0 until a resize comes
            assert _screen(session).splitlines()[0] == "30 100", (verb, _screen(session))
            subprocess.run(["tmux", "resize-window", "-t", session, "-x", "123", "-y", "41"],
                           check=True)
            size = subprocess.run(["tmux", "display", "-p", "-t", session,
                                   "#{pane_height} #{pane_width}"], capture_output=True,
                                  text=True, check=True).stdout.strip()
            assert size == "41 123"
            while size not in _screen(session).splitlines() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert size in _screen(session).splitlines(), (verb, _screen(session))
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    api.docker("rm", "-f", "bg")


# ------------------------------------------------------------------------ docker-py
def test_docker_py_containers(api):
    client = api.client()
    out = client.containers.run("busybox", ["sh", "-c", "echo from-py"], remove=True)
    assert out == b"from-py\n"
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, name="py",
                              labels={"tier": "test"})
    assert c.status in ("created", "running")
    c.reload()
    assert c.status == "running" and c.labels == {"tier": "test"}
    code, output = c.exec_run(["sh", "-c", "echo in; sleep 0.2; echo err >&2; exit 2"])  # two pipes: ordered by time
    assert code == 2 and output == b"in\nerr\n"
    assert [x.name for x in client.containers.list(filters={"label": "tier=test"})] == ["py"]
    assert client.containers.list(filters={"label": "tier=other"}) == []
    c.kill()
    assert c.wait()["StatusCode"] == 137
    c.remove()
    # -i with nobody attached: stdin stays open (cat waits), as Docker keeps it
    cat = client.containers.create("busybox", "cat", stdin_open=True)
    cat.start()
    time.sleep(0.5)
    assert cat.exec_run(["echo", "still here"]).output == b"still here\n"
    # an exec's terminal comes from its create, the stream's framing from its start (Docker)
    tty_exec = client.api.exec_create(cat.id, ["sh", "-c", "test -t 1 && echo T"], tty=True)
    assert client.api.exec_start(tty_exec) == b"T\r\n"  # multiplexed, as the start asked
    tty_exec = client.api.exec_create(cat.id, ["sh", "-c", "test -t 1 && echo T"], tty=True)
    assert client.api.exec_start(tty_exec, tty=True) == b"T\r\n"  # raw
    cat.kill()  # answered once the container is dead, as Docker answers a SIGKILL
    cat.reload()
    assert (cat.status, cat.attrs["State"]["ExitCode"]) == ("exited", 137)
    cat.remove()
    with pytest.raises(Exception, match="no log driver named 'syslog2'"):
        client.containers.create("busybox", "true", log_config={"type": "syslog2"})
    logged = client.containers.create("busybox", "true",
                                      log_config={"type": "json-file", "config": {"max-size": "1m"}})
    assert logged.attrs["HostConfig"]["LogConfig"] == {"Type": "json-file",
                                                       "Config": {"max-size": "1m"}}
    logged.remove()
    # a bare name in Env (docker-py's {"Foo": None}) stays bare in Config.Env, as Docker keeps
    # it, and the process does not get it (no "Foo=" in its environment)
    bare = client.containers.create("busybox", ["env"],
                                    environment={"Foo": None, "Other": "one", "Blank": ""})
    assert {"Foo", "Other=one", "Blank="} <= set(bare.attrs["Config"]["Env"])
    bare.start()
    bare.wait()
    seen = bare.logs().decode().split("\n")
    assert "Other=one" in seen and "Blank=" in seen
    assert not [line for line in seen if line.startswith("Foo")]
    bare.remove()
    # attach(logs, no stream) to an exited container: its whole log (docker-py reads the raw
    # socket after the headers: a log sent with them was lost to it, 9 times in 15)
    for _ in range(5):
        done = client.api.create_container("busybox", "echo hello")
        client.api.start(done)
        client.api.wait(done, condition="not-running")
        assert client.api.attach(done, stream=False, logs=True) == b"hello\n"
        client.api.remove_container(done)
    # extra hosts: a build's (extrahosts) and a container's (HostConfig.ExtraHosts)
    import io

    client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN cp /etc/hosts /hosts-file\n"),
                        tag="hosts", extra_hosts={"extrahost.local.test": "127.0.0.1"})
    out = client.containers.run("hosts", ["cat", "/hosts-file"], remove=True,
                                extra_hosts={"run.test": "10.9.8.7"})
    assert b"127.0.0.1\textrahost.local.test\n" in out and b"run.test" not in out
    out = client.containers.run("hosts", ["cat", "/etc/hosts"], remove=True,
                                extra_hosts={"run.test": "10.9.8.7"})
    assert b"10.9.8.7\trun.test\n" in out
    with pytest.raises(Exception, match="invalid IP address in add-host"):
        client.containers.create("busybox", "true", extra_hosts={"bad.test": "x"})
    with pytest.raises(Exception) as failure:
        client.containers.get("py")
    assert type(failure.value).__name__ == "NotFound"


def _read_until(sock, wanted: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    seen = b""
    while wanted not in seen:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"{wanted!r} did not come in {timeout} s: {seen!r}") from None
        assert chunk, f"closed before {wanted!r} came: {seen!r}"
        seen += chunk
    return seen


def _closed(sock, timeout: float = 10) -> bool:
    """The server ended the session: reads reach end-of-file (what is left is drained)."""
    sock.settimeout(timeout)
    while True:
        try:
            if not sock.recv(4096):
                return True
        except ConnectionResetError:
            return True


def test_detach_keys_stdin_of_a_running_container_and_reaping(api):
    import docker

    client = docker.APIClient(base_url=api.url, version="1.41", timeout=20)
    cid = client.create_container("busybox", "cat", stdin_open=True, tty=True)["Id"]
    client.start(cid)
    # attach to a running -i container: input reaches its stdin; ctrl-p ctrl-q (Docker's
    # default) ends the session and nothing else: the keys never reach cat, cat runs on
    sock = client.attach_socket(cid, {"stdin": 1, "stdout": 1, "stream": 1})._sock
    sock.sendall(b"first\n")
    _read_until(sock, b"first")
    sock.sendall(b"\x10")
    time.sleep(0.2)
    sock.sendall(b"\x11")
    assert _closed(sock)
    sock.close()
    assert client.inspect_container(cid)["State"]["Running"]
    # keys of the client's choice; a broken sequence is passed on whole
    sock = client.attach_socket(cid, {"stdin": 1, "stdout": 1, "stream": 1,
                                      "detachKeys": "ctrl-x,x"})._sock
    sock.sendall(b"\x18second\n")
    _read_until(sock, b"second")
    sock.sendall(b"\x18x")
    assert _closed(sock)
    sock.close()
    logged = client.logs(cid)
    assert b"first" in logged and b"\x18second" in logged.replace(b"^X", b"\x18")
    assert b"\x10" not in logged and b"^P" not in logged and b"^Q" not in logged
    status, _, body = http(api.socket, "POST", f"/containers/{cid}/attach?stream=1&stdin=1"
                                               "&detachKeys=ctrl-%3F%3F")
    assert status == 400 and b"Invalid detach keys" in body
    # an exec's session ends on its keys too, and the process goes on
    exec_id = client.exec_create(cid, "cat", stdin=True, tty=True, detach_keys="ctrl-p")["Id"]
    sock = client.exec_start(exec_id, tty=True, socket=True)._sock
    sock.sendall(b"third\n")
    _read_until(sock, b"third")  # it runs (Running is true from then on)
    sock.sendall(b"\x10")
    assert _closed(sock)
    sock.close()
    assert client.exec_inspect(exec_id)["Running"]
    # a terminal exec made the server a child subreaper: a detached exec's process is then
    # the server's child, and it must be reaped, or the container's PID 1 never finishes
    # dying (the kernel waits for every process of its PID namespace) and rm -f hangs
    exec_id = client.exec_create(cid, ["echo", "done"])["Id"]
    assert client.exec_start(exec_id, detach=True) == ""
    started = time.monotonic()
    client.remove_container(cid, force=True)
    assert time.monotonic() - started < 15
    assert client.containers(all=True) == []


# ------------------------------------------------------------------------ the protocol
def test_versions_headers_and_errors(api):
    status, headers, body = http(api.socket, "GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.44" and headers["ostype"] == "linux"
    assert headers["builder-version"] == "1"
    status, headers, body = http(api.socket, "HEAD", "/_ping")
    assert status == 200 and body == b""
    for prefix in ("", "/v1.24", "/v1.41", "/v1.44"):
        status, _, body = http(api.socket, "GET", prefix + "/containers/json")
        assert status == 200 and json.loads(body) == []
    status, headers, body = http(api.socket, "GET", "/v1.99/containers/json")
    assert status == 400 and headers["content-type"] == "application/json"
    assert "too new" in json.loads(body)["message"]
    assert http(api.socket, "GET", "/v1.12/containers/json")[0] == 400
    for kind in ("containers", "images", "volumes", "networks", "exec"):
        status, headers, body = http(api.socket, "GET", f"/{kind}/nosuchthing/json")
        assert status == 404, kind
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["message"]
    assert http(api.socket, "POST", "/session")[0] == 404
    assert http(api.socket, "POST", "/grpc")[0] == 404
    status, _, body = http(api.socket, "POST", "/containers/create", b"{not json",
                           {"Content-Type": "application/json"})
    assert status == 400
    status, _, body = http(api.socket, "POST", "/containers/create", b'{"Image": "nosuch"}',
                           {"Content-Type": "application/json"})
    assert status == 404 and json.loads(body)["message"] == "No such image: nosuch:latest"
    status, _, body = http(api.socket, "POST", "/containers/create", b'{"Image": "busybox"}',
                           {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["message"] == "No command specified"
    api.docker("create", "--name", "dup", "busybox", "true")
    status, _, body = http(api.socket, "POST", "/containers/create?name=dup",
                           b'{"Image": "busybox", "Cmd": ["true"]}',
                           {"Content-Type": "application/json"})
    assert status == 409 and "already in use" in json.loads(body)["message"]
    status, _, body = http(api.socket, "POST", "/containers/create?name=dup",
                           b'{"Image": "busybox"}', {"Content-Type": "application/json"})
    assert status == 400  # Docker looks at the command before the name


def test_malformed_requests_get_400_and_the_server_lives(api):
    for junk in (b"GARBAGE\r\n\r\n", b"GET /_ping HTTP/9.9\r\n\r\n", b"\x00\xff\xfe\r\n\r\n",
                 b"GET /containers/json HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n",
                 b"POST /containers/create HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        reply = raw(api.socket, junk)
        assert reply.startswith(b"HTTP/1.") and b" 500 " not in reply.split(b"\r\n")[0], junk
        status = int(reply.split()[1])
        assert 400 <= status < 500 or (status == 505 and b"HTTP/9.9" in junk), (junk, reply[:200])
    assert ping(api.socket)
    assert "Traceback" not in api.log_text()


def test_socket_mode_and_group(store_root, tmp_path):
    server = Server(store_root, str(tmp_path / "a.sock")).start()
    try:
        assert stat.S_IMODE(os.stat(server.socket).st_mode) == 0o600
    finally:
        server.stop()
    assert not os.path.exists(server.socket)  # removed on the way out
    server = Server(store_root, str(tmp_path / "b.sock"), "--group", "adm").start()
    try:
        st = os.stat(server.socket)
        import grp

        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam("adm").gr_gid
    finally:
        server.stop()


def test_tcp_only_on_loopback_without_tls(store_root):
    proc = subprocess.run(LAMINA + ["--root", store_root, "serve", "--socket",
                                    "tcp://0.0.0.0:23751"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode != 0 and "without TLS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_idle_timeout_ends_the_server(store_root, tmp_path):
    server = Server(store_root, str(tmp_path / "idle.sock"), "--timeout", "1").start()
    assert server.proc.wait(15) == 0
    assert not os.path.exists(server.socket)


def test_killed_server_loses_nothing(api, tmp_path):
    """A container started through the server outlives a SIGKILL of it; a new server finds it
    running and can stop it; the store checks clean."""
    api.docker("run", "-d", "--name", "survivor", "busybox", "sleep", "300")
    api.stop(signal.SIGKILL)
    assert api.lamina("ps", "--format", "{{.Names}} {{.State}}").stdout.split() == [
        "survivor", "running"]
    api.start()  # the stale socket file of the killed server is replaced
    assert api.docker("ps", "--format", "{{.Names}}").stdout.split() == ["survivor"]
    api.docker("rm", "-f", "survivor")
    assert api.lamina("system", "check").returncode == 0


def test_cli_and_server_on_one_store_at_once(api):
    """``lamina rm`` of one container while the server follows the logs of another."""
    api.docker("run", "-d", "--name", "talker", "busybox", "sh", "-c",
               "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.3; done")
    api.lamina("create", "--name", "victim", "busybox", "true")
    follower = subprocess.Popen([DOCKER, "logs", "-f", "talker"], env=api.env(),
                                stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    api.lamina("rm", "victim")
    out, _ = follower.communicate(timeout=30)
    assert out.split() == [f"line{i}" for i in range(1, 7)]
    assert "victim" not in api.docker("ps", "-a", "--format", "{{.Names}}").stdout


def _certificates(directory) -> dict:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = str(directory)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=lamina-test-ca")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "ext.cnf"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra)
    return {n: os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                           "client.key")}


def test_tls_with_client_verification(store_root, tmp_path):
    """``--tlsverify``: a client whose certificate the CA signed gets in, one without is refused
    (Docker's semantics); the docker CLI works over it."""
    import ssl
    import urllib.request

    files = _certificates(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(LAMINA + ["--root", store_root, "serve", "--socket",
                                      f"tcp://127.0.0.1:{port}", "--tlsverify",
                                      "--tlscacert", files["ca.pem"],
                                      "--tlscert", files["server.pem"],
                                      "--tlskey", files["server.key"]],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        url = f"https://127.0.0.1:{port}/_ping"
        good = ssl.create_default_context(cafile=files["ca.pem"])
        good.load_cert_chain(files["client.pem"], files["client.key"])
        assert urllib.request.urlopen(url, context=good, timeout=10).read() == b"OK"
        anonymous = ssl.create_default_context(cafile=files["ca.pem"])
        with pytest.raises((ssl.SSLError, OSError)):
            urllib.request.urlopen(url, context=anonymous, timeout=10).read()
        certs = tmp_path / "docker-certs"
        certs.mkdir()
        for src, dst in (("ca.pem", "ca.pem"), ("client.pem", "cert.pem"),
                         ("client.key", "key.pem")):
            shutil.copy(files[src], certs / dst)
        env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
               "DOCKER_CERT_PATH": str(certs)}
        out = subprocess.run([DOCKER, "version", "--format", "{{.Server.APIVersion}}"], env=env,
                             capture_output=True, text=True, check=False)
        assert out.stdout.strip() == "1.44", out.stderr
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0, proc.stderr.read()


def test_compose_two_services(api, tmp_path):
    """Debian's docker-compose 1.29: up -d, ps, logs, down of a two-service project (network_mode
    none), then one on its default network whose services reach each other by name."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "docker-compose.yml").write_text(
        'version: "2.4"\nservices:\n'
        '  web:\n    image: busybox\n    command: sh -c "echo web up; sleep 300"\n'
        '    network_mode: none\n'
        '  worker:\n    image: busybox\n    command: sh -c "echo worker up; sleep 300"\n'
        '    network_mode: none\n    depends_on: [web]\n')

    def compose(*args, check=True):
        proc = subprocess.run(["docker-compose", *args], cwd=project, env=api.env(),
                              capture_output=True, text=True, timeout=120, check=False)
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    compose("up", "-d")
    rows = compose("ps").stdout.splitlines()[2:]
    assert sorted(r.split()[0] for r in rows) == ["proj_web_1", "proj_worker_1"]
    assert all(" Up " in r for r in rows)
    logs = compose("logs", "--no-color").stdout
    assert "web up" in logs and "worker up" in logs
    names = api.lamina("ps", "--format", "{{.Names}}").stdout.split()
    assert sorted(names) == ["proj_web_1", "proj_worker_1"]  # the CLI sees compose's containers
    compose("down", "-t", "1")
    assert api.lamina("ps", "-a", "-q").stdout == ""
    # a project on its default network (proj_default): the services find each other by name
    (project / "docker-compose.yml").write_text(
        'version: "2.4"\nservices:\n'
        '  web:\n    image: busybox\n    command: sh -c "mkdir /w; echo by-service-name >'
        ' /w/index.html; exec httpd -f -p 80 -h /w"\n'
        '  client:\n    image: busybox\n    command: sleep 60\n')
    compose("up", "-d")
    out = compose("exec", "-T", "client", "sh", "-c", "for i in $(seq 50); do wget -qO- "
                  "http://web/ && exit; sleep 0.1; done; exit 1").stdout
    assert out == "by-service-name\n"
    assert "proj_default" in api.lamina("network", "ls").stdout
    compose("down", "-t", "1")
    assert "proj_default" not in api.lamina("network", "ls").stdout


def test_create_fields_match_case_insensitively_as_go_decodes_them(api):
    """Docker decodes a create body with Go's encoding/json: a field's name in any case (the
    last of two spellings wins), nested structs too; map keys (Labels, ports) stay as sent.
    Docker Engine 20.10 gave this same inspect for this body."""
    from lamina.api.server import MapOf, go_fields

    body = {"image": "busybox", "cmd": ["sh", "-c", "echo $A"], "ENV": ["A=1"],
            "labels": {"Keep": "Case"}, "Cmd": ["echo", "last"],
            "hostconfig": {"networkmode": "none",
                           "restartpolicy": {"name": "on-failure", "maximumretrycount": 2},
                           "portbindings": {"80/tcp": [{"hostip": "127.0.0.1", "hostport": "0"}]}}}
    status, _, reply = http(api.socket, "POST", "/v1.44/containers/create",
                            json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert status == 201, reply
    doc = api.client().api.inspect_container(json.loads(reply)["Id"])
    assert doc["Config"]["Cmd"] == ["echo", "last"] and "A=1" in doc["Config"]["Env"]
    assert doc["Config"]["Labels"] == {"Keep": "Case"}
    host = doc["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "0"}]}
    schema = {"A": None, "S": {"X": None}, "M": MapOf({"Y": None})}
    assert go_fields({"a": 1, "s": [{"x": 2}, {"X": 3, "x": 4}], "m": {"k": {"y": 5}},
                      "other": {"a": 6}}, schema) == {
        "A": 1, "S": [{"X": 2}, {"X": 4}], "M": {"k": {"Y": 5}}, "other": {"a": 6}}


def test_a_name_that_is_also_an_id_prefix_is_free(api):
    # names and IDs are apart: another container's ID prefix is free as a name, which then
    # names the new container (a lookup tries names first), as in Docker 20.10
    other = api.lamina("create", "busybox", "true").stdout.strip()
    prefix = other[:3]
    assert api.docker("create", "--name", prefix, "busybox", "true").returncode == 0
    assert api.lamina("inspect", "-f", "{{.Name}}", prefix).stdout == f"/{prefix}\n"
    assert api.docker("inspect", "-f", "{{.Id}}", other).stdout == other + "\n"  # its whole ID
    proc = api.docker("create", "--name", prefix, "busybox", "true", check=False)
    assert proc.returncode != 0 and "is already in use" in proc.stderr


def test_container_inspect_is_its_document_serialized_at_once(api):
    """The server keeps the text of what a container's configuration decides and puts the
    state's parts into it: the bytes must be those of the whole document serialized at once
    (Python's json.dumps, as every answer), however the state, the name or ?size change."""
    api.docker("create", "--name", "spliced", "--network", "none", "busybox", "sleep", "300")
    seen = []
    for step in ("created", "again", "started", "renamed", "size"):
        if step == "started":
            api.docker("start", "spliced")
        elif step == "renamed":
            api.docker("rename", "spliced", "spliced2")
        name = "spliced2" if step in ("renamed", "size") else "spliced"
        status, _, body = http(api.socket, "GET", f"/containers/{name}/json"
                                                  + ("?size=1" if step == "size" else ""))
        doc = json.loads(body)
        assert status == 200 and body == json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        seen.append((doc["Name"], doc["State"]["Status"], "SizeRw" in doc,
                     doc["HostConfig"]["MaskedPaths"][0]))
    assert seen == [("/spliced", "created", False, "/proc/asound")] * 2 + [
        ("/spliced", "running", False, "/proc/asound"),
        ("/spliced2", "running", False, "/proc/asound"),
        ("/spliced2", "running", True, "/proc/asound")]
    api.docker("rm", "-f", "spliced2")


def test_inspect_follows_updates_renames_and_a_dead_owner(api):
    """The server keeps what a container's configuration decides between inspects: an update
    (a new configuration) and a rename still show at once, and so does an owner that died
    (the container is recorded as exited, as the CLI's inspect records it)."""
    from tests.test_run import owners

    def inspect(name: str) -> dict:
        return json.loads(api.docker("inspect", name).stdout)[0]

    api.docker("run", "-d", "--name", "keep", "--network", "none", "busybox", "sleep", "300")
    first = inspect("keep")
    assert first["HostConfig"]["RestartPolicy"]["Name"] == "no" and first["State"]["Running"]
    assert first == {**inspect("keep"), "State": first["State"]}  # the same twice
    api.docker("update", "--restart", "always", "keep")
    assert inspect("keep")["HostConfig"]["RestartPolicy"] == {"Name": "always",
                                                             "MaximumRetryCount": 0}
    api.docker("rename", "keep", "kept")
    assert inspect("kept")["Name"] == "/kept"
    assert api.docker("inspect", "keep", check=False).returncode == 1
    [pid] = owners(api.root)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not inspect("kept")["State"]["Running"]:
            break
        time.sleep(0.05)
    state = inspect("kept")["State"]
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 255)
    assert api.lamina("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout == "kept exited\n"


def test_hijacked_streams_are_named_as_docker_names_them_per_api_version(api):
    """An attached exec's answer: ``101 UPGRADED``, and multiplexed-stream without a terminal
    for clients of API 1.42 and later, raw-stream before (the frames are the same), as moby's
    routes choose; with a terminal raw-stream always."""
    api.docker("run", "-d", "--name", "streams", "busybox", "sleep", "300")
    seen = {}
    for version, tty in (("1.41", False), ("1.44", False), ("1.44", True)):
        status, _, body = http(api.socket, "POST", f"/v{version}/containers/streams/exec",
                               json.dumps({"Cmd": ["echo", "hi"], "AttachStdout": True,
                                           "Tty": tty}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 201, body
        start = json.dumps({"Detach": False, "Tty": tty}).encode()
        reply = raw(api.socket, f"POST /v{version}/exec/{json.loads(body)['Id']}/start HTTP/1.1\r\n"
                                "Host: d\r\nContent-Type: application/json\r\nConnection: Upgrade\r\n"
                                f"Upgrade: tcp\r\nContent-Length: {len(start)}\r\n\r\n".encode()
                                + start, timeout=30)
        head, _, out = reply.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        kind = [line.split(":", 1)[1].strip() for line in lines
                if line.lower().startswith("content-type:")]
        seen[version, tty] = (lines[0], kind, out)
    framed = b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert seen == {
        ("1.41", False): ("HTTP/1.1 101 UPGRADED", ["application/vnd.docker.raw-stream"], framed),
        ("1.44", False): ("HTTP/1.1 101 UPGRADED", ["application/vnd.docker.multiplexed-stream"],
                          framed),
        ("1.44", True): ("HTTP/1.1 101 UPGRADED", ["application/vnd.docker.raw-stream"],
                         b"hi\r\n")}
