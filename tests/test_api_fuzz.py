"""A fuzz pass over ``lamina serve``'s HTTP layer: random methods, paths (the API's own, mangled),
headers and bodies, and connections cut mid-request. The server must keep answering every
request with a status line (never a 500 for input a client chose, never a traceback), and the
store must stay consistent (``system check`` clean)."""

import json
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.apiserver import Server, ping

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, overlay mounts)")

PATHS = ["/_ping", "/version", "/info", "/containers/json", "/containers/create",
         "/containers/{id}/json", "/containers/{id}/start", "/containers/{id}/wait",
         "/containers/{id}/kill", "/containers/{id}/stop", "/containers/{id}/logs",
         "/containers/{id}/attach", "/containers/{id}/exec", "/containers/{id}",
         "/exec/{id}/json", "/images/json", "/images/{id}/json", "/volumes", "/volumes/create",
         "/system/df", "/events", "/build", "/images/load", "/nothing/here"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "G E T", ""]
IDS = st.sampled_from(["x", "busybox", "..", "%00", "a" * 300, "%2F%2E%2E", "fuzz", "é"])
QUERY = st.dictionaries(st.sampled_from(["all", "size", "filters", "name", "t", "signal",
                                         "condition", "follow", "tail", "stdout", "force"]),
                        st.sampled_from(["1", "true", "0", "{", '{"status":["nope"]}', "-1",
                                         "9" * 30, "", "%zz", "KILL"]), max_size=3)
BODIES = st.one_of(st.just(b""), st.binary(max_size=300),
                   st.sampled_from([b"{}", b"[]", b"null", b'{"Image": 5}', b'{"Image": "busybox"}',
                                    b'{"Image": "busybox", "Cmd": "true", "HostConfig": 3}',
                                    b'{"Cmd": ["true"], "Env": [1]}',
                                    b'{"Image": "busybox", "Cmd": ["true"], "Volumes": {"x": {}}}']))
HEADERS = st.dictionaries(st.sampled_from(["Content-Type", "Transfer-Encoding", "Connection",
                                           "Upgrade", "X-Registry-Auth", "Content-Length"]),
                          st.sampled_from(["application/json", "chunked", "Upgrade", "tcp",
                                           "!!", "-3", "99999999999", "close"]), max_size=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory, busybox_tar):
    import subprocess
    import sys

    from tests.conftest import remove_bridges

    root = str(tmp_path_factory.mktemp("fuzz-store"))
    subprocess.run([sys.executable, "-m", "lamina", "--root", root, "import", busybox_tar,
                    "busybox:latest"], check=True, capture_output=True)
    s = Server(root, str(tmp_path_factory.mktemp("fuzz-sock") / "api.sock")).start()
    yield s
    s.stop()
    remove_bridges(root)
    unmount = f"grep -o ' {root}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
    subprocess.run(["sh", "-c", unmount], check=False)


def exchange(path: str, data: bytes, cut: bool) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(data)
        if cut:
            return b""  # hang up without reading: the server must cope
        s.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
                if len(reply) > 1 << 20:
                    break
        except TimeoutError:
            pass  # a stream that follows (logs, events, wait) keeps going: what came is enough
        return reply
    finally:
        s.close()


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(METHODS), path=st.sampled_from(PATHS), ident=IDS, query=QUERY,
       headers=HEADERS, body=BODIES, version=st.sampled_from(["", "/v1.44", "/v1.24", "/v0.1",
                                                              "/v1.x", "/v9"]),
       cut=st.booleans())
def test_random_requests(server, method, path, ident, query, headers, body, version, cut):
    from urllib.parse import quote

    url = version + path.replace("{id}", ident)
    if query:
        url += "?" + "&".join(f"{k}={quote(v, safe='%')}" for k, v in query.items())
    lines = [f"{method} {url} HTTP/1.1", "Host: fuzz"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    reply = exchange(server.socket, ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body, cut)
    if not cut and reply:
        status_line = reply.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 "), reply[:200]
        assert not status_line.startswith(b"HTTP/1.1 500"), (url, reply[:500])
        head, _, rest = reply.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")]
        if (int(status_line.split()[1]) >= 400 and b"application/json" in head and length
                and method != "HEAD"):
            assert "message" in json.loads(rest[:length[0]])  # the first answer: Docker's error


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8) |
                    st.sampled_from(["busybox", "true", "/data", "a:b", "/x:/y:ro", "host"]),
                    lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
CREATE_KEYS = ["Image", "Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Tty", "OpenStdin",
               "Labels", "Volumes", "Hostname", "HostConfig"]
HOST_KEYS = ["Binds", "Mounts", "NetworkMode", "AutoRemove", "ReadonlyRootfs", "Runtime"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=st.fixed_dictionaries({}, optional=dict.fromkeys(CREATE_KEYS, JSON)),
       host=st.fixed_dictionaries({}, optional=dict.fromkeys(HOST_KEYS, JSON)),
       with_host=st.booleans(), good_image=st.booleans())
def test_random_create_bodies(server, doc, host, with_host, good_image):
    """Any JSON shape in a create body: a 201 or a 4xx with Docker's message, never a 500."""
    if good_image:
        doc["Image"] = "busybox"
    if with_host:
        doc["HostConfig"] = host
    body = json.dumps(doc).encode()
    request = (f"POST /containers/create HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    reply = exchange(server.socket, request, False)
    status = int(reply.split()[1])
    rest = reply.partition(b"\r\n\r\n")[2]
    assert status == 201 or 400 <= status < 500, (doc, reply[:400])
    answer = json.loads(rest)
    if status == 201:
        cid = answer["Id"]
        delete = f"DELETE /containers/{cid}?force=1&v=1 HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n"
        assert exchange(server.socket, delete.encode(), False).startswith(b"HTTP/1.1 204")
    else:
        assert answer["message"]


def test_after_the_fuzz(server):
    import subprocess
    import sys

    assert ping(server.socket)
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]
    check = subprocess.run([sys.executable, "-m", "lamina", "--root", server.root, "system",
                            "check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
