"""pull/push/login against Debian's docker-registry on a loopback port (one with htpasswd basic
auth), and against a tiny lying registry: every lie is one clear error and nothing half-stored."""

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import ClassVar

import pytest

from lamina import Engine
from lamina.errors import LaminaError

from .conftest import Lamina, store_files

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="docker-registry is installed by scripts/setup")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(workdir, htpasswd: str | None = None, tls: tuple[str, str] | None = None):
    """docker-registry serving ``workdir/data`` on 127.0.0.1:<free port>; returns (host, proc).
    ``tls``: (certificate, key) files: it serves https."""
    port = free_port()
    auth = ""
    if htpasswd:
        auth = f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {htpasswd}\n"
    http = f"http:\n  addr: 127.0.0.1:{port}\n"
    if tls:
        http += f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n"
    config = os.path.join(workdir, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {workdir}/data\n  delete:\n    enabled: true\n{http}{auth}")
    with open(os.path.join(workdir, "registry.log"), "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", config], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"docker-registry did not start; see {workdir}/registry.log")


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    host, proc = start_registry(str(tmp_path_factory.mktemp("registry")))
    yield host
    stop(proc)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd (apache2-utils) is installed by scripts/setup")
    work = str(tmp_path_factory.mktemp("auth-registry"))
    subprocess.run(["htpasswd", "-Bbc", f"{work}/htpasswd", "alice", "s3cret"], check=True,
                   capture_output=True)
    host, proc = start_registry(work, f"{work}/htpasswd")
    yield host
    stop(proc)


@pytest.fixture
def image_store(store_root, busybox_tar):
    """A vfs store with busybox:1 and a two-layer app:2 on it."""
    eng = Engine(root=store_root, driver="vfs")
    eng.import_image(busybox_tar, "busybox:1")
    eng.create("busybox:1", name="ctr")
    with open(os.path.join(eng.mount("ctr"), "hello"), "w") as f:
        f.write("hello\n")
    eng.commit("ctr", "app:2")
    yield eng
    eng.close()


@pytest.fixture
def other(tmp_path):
    """A second, empty store: another machine."""
    path = f"/var/tmp/{tmp_path.name}-other"
    eng = Engine(root=path, driver="vfs")
    yield eng
    eng.close()
    shutil.rmtree(path, ignore_errors=True)


def test_push_pull_round_trip(image_store, other, registry):
    digest = image_store.push("app:2", f"{registry}/team/app:2")
    image_id = other.pull(f"{registry}/team/app:2")
    assert image_id == image_store.inspect_image("app:2")["Id"]
    assert other.images()[0]["Repository"] == f"{registry}/team/app"
    # the manifest kept is the registry's, byte for byte
    assert other.image_store.row(image_id)["manifest_digest"] == digest
    root = other.mount(other.create(f"{registry}/team/app:2"))
    with open(os.path.join(root, "hello")) as f:
        assert f.read() == "hello\n"
    # by digest; pushing again uploads nothing (HEAD first), the digest is stable
    assert other.pull(f"{registry}/team/app@{digest}") == image_id
    assert image_store.push("app:2", f"{registry}/team/app:again") == digest
    # a pulled (gzip) image pushes its exact manifest back
    assert other.push(f"{registry}/team/app:2", f"{registry}/mirror/app:2") == digest


def test_cli_output_mount_and_zstd(image_store, registry, tmp_path):
    lam = Lamina(image_store.root, "vfs")
    out = lam("push", "app:2", f"{registry}/one/app:2").stdout
    assert out.startswith(f"The push refers to repository [{registry}/one/app]\n")
    assert "Pushed" in out and "2: digest: sha256:" in out
    out = lam("push", "app:2", f"{registry}/two/app:2").stdout
    assert "Mounted from one/app" in out
    out = lam("push", "--compression-format", "zstd", "app:2", f"{registry}/three/app:z").stdout
    second = Lamina(str(tmp_path / "second"), "vfs")
    proc = second("pull", f"{registry}/three/app:z")
    assert f"Status: Downloaded newer image for {registry}/three/app:z" in proc.stdout
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/three/app:z"],
        capture_output=True, check=True).stdout) if shutil.which("skopeo") else None
    if manifest:
        assert all(d["mediaType"].endswith("+zstd") for d in manifest["layers"])
    bad = second("pull", f"{registry}/nosuch/app:1", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: manifest nosuch/app:1: ")
    assert bad.stderr.count("\n") == 1


@pytest.mark.parametrize("stored", ["plain", "gzip"])
def test_a_push_survives_a_dropped_connection(image_store, other, registry, monkeypatch, tmp_path,
                                             stored):
    """A proxy cuts the first connection that carries a PATCH after some bytes. A layer stored
    plain is gzipped as it is sent (one streamed PATCH): it is made and sent again. A layer
    stored gzipped goes in chunks: the push asks the registry where the upload stands and goes
    on from there. Either way the image arrives whole."""
    from lamina.transfer import http as reg

    monkeypatch.setattr(reg, "MONOLITHIC_LIMIT", 1000)
    monkeypatch.setattr(reg, "UPLOAD_CHUNK", 300_000)
    source = image_store
    if stored == "gzip":  # a store that holds app:2's layers gzipped (as a pull leaves them)
        archive = str(tmp_path / "app.tar")
        image_store.save(["app:2"], archive, fmt="oci-archive", compression="gzip")
        source = Engine(root=str(tmp_path / "gz"), driver="vfs")
        source.load(archive)
        manifest = json.loads(source.content.read(
            source.image_store.row(source.image_store.resolve("app:2"))["manifest_digest"]))
        assert all(d["mediaType"].endswith("+gzip") for d in manifest["layers"])
    upstream = registry.split(":")
    proxy = _CuttingProxy(upstream[0], int(upstream[1]), cut_after=200_000)
    try:
        digest = source.push("app:2", f"127.0.0.1:{proxy.port}/resume-{stored}/app:2")
        assert proxy.cuts == 1
    finally:
        proxy.close()
    image = other.pull(f"{registry}/resume-{stored}/app@{digest}")
    assert image == image_store.inspect_image("app:2")["Id"]


class _CuttingProxy:
    """TCP proxy on loopback that drops the first PATCH connection after ``cut_after`` bytes."""

    def __init__(self, host, port, cut_after):
        self.upstream = (host, port)
        self.cut_after = cut_after
        self.cuts = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, watch):
        seen, patching = 0, False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if watch:
                    if data.startswith(b"PATCH "):
                        patching, seen = True, 0
                    seen += len(data)
                    if patching and self.cuts == 0 and seen > self.cut_after:
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        self.sock.close()


def test_an_https_registry_is_verified_unless_told_otherwise(image_store, other, tmp_path,
                                                            monkeypatch):
    """A registry with a self-signed certificate: refused; trusted through SSL_CERT_FILE (pushes
    and pulls go over verified https, blob bodies included); or --tls-verify=false."""
    work = str(tmp_path / "tls-registry")
    os.makedirs(work)
    cert, key = f"{work}/cert.pem", f"{work}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", key, "-out", cert, "-subj", "/CN=lamina-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    host, proc = start_registry(work, tls=(cert, key))
    try:
        with pytest.raises(LaminaError, match=r"certificate verify failed.*SSL_CERT_FILE"):
            image_store.push("app:2", f"{host}/tls/app:2")
        assert not os.path.exists(f"{work}/data/docker/registry/v2/repositories/tls")
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        digest = image_store.push("app:2", f"{host}/tls/app:2")
        assert other.pull(f"{host}/tls/app@{digest}") == image_store.inspect_image("app:2")["Id"]
        monkeypatch.delenv("SSL_CERT_FILE")
        third = Engine(root=str(tmp_path / "third"), driver="vfs")
        with pytest.raises(LaminaError, match="certificate verify failed"):
            third.pull(f"{host}/tls/app:2")
        assert third.pull(f"{host}/tls/app:2", tls_verify=False) == \
            image_store.inspect_image("app:2")["Id"]
        third.close()
    finally:
        stop(proc)


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain-http forward proxy (``GET http://host/path``), counting what it forwards."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def _forward(self):
        import http.client
        import urllib.parse

        url = urllib.parse.urlsplit(self.path)
        type(self).seen.append((self.command, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    break
                body += chunk
        else:
            body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "transfer-encoding",
                                        "content-length")}
        conn = http.client.HTTPConnection(url.netloc, timeout=60)
        conn.request(self.command, url.path + (f"?{url.query}" if url.query else ""),
                     body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


def test_push_and_pull_through_a_proxy(image_store, other, registry, monkeypatch):
    """With HTTP_PROXY set, every request goes through the proxy (httpx serves them all, blob
    bodies included); NO_PROXY for the registry's host goes direct."""
    handler = type("Handler", (_ForwardProxy,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        digest = image_store.push("app:2", f"{registry}/proxied/app:2", tls_verify=False)
        assert other.pull(f"{registry}/proxied/app@{digest}", tls_verify=False) == \
            image_store.inspect_image("app:2")["Id"]
        methods = {m for m, _ in handler.seen}
        assert {"HEAD", "POST", "PATCH", "PUT", "GET"} <= methods, handler.seen
        assert any("/blobs/sha256:" in path for m, path in handler.seen if m == "GET")
        handler.seen.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        third = Engine(root=f"/var/tmp/{os.getpid()}-proxy-third", driver="vfs")
        try:
            assert third.pull(f"{registry}/proxied/app@{digest}", tls_verify=False)
        finally:
            third.close()
            shutil.rmtree(third.root, ignore_errors=True)
        assert handler.seen == []
    finally:
        server.shutdown()
        server.server_close()


def test_login_logout_and_basic_auth(image_store, other, auth_registry, tmp_path):
    authfile = tmp_path / "auth.json"
    lam = Lamina(image_store.root, "vfs")
    denied = lam("push", "--authfile", authfile, "app:2", f"{auth_registry}/a/app:2", check=False)
    assert denied.returncode == 1 and "authentication required" in denied.stderr
    wrong = lam("login", "--authfile", authfile, "-u", "alice", "--password-stdin", auth_registry,
                input="nope\n", check=False)
    assert wrong.returncode == 1 and "incorrect username or password" in wrong.stderr
    assert not authfile.exists()
    ok = lam("login", "--authfile", authfile, "-u", "alice", "--password-stdin", auth_registry,
             input="s3cret\n")
    assert ok.stdout.strip() == "Login Succeeded"
    assert os.stat(authfile).st_mode & 0o777 == 0o600
    assert auth_registry in json.loads(authfile.read_text())["auths"]
    lam("push", "--authfile", authfile, "app:2", f"{auth_registry}/a/app:2")
    assert other.pull(f"{auth_registry}/a/app:2", authfile=str(authfile))
    assert lam("logout", "--authfile", authfile, auth_registry).stdout.startswith("Removing")
    assert json.loads(authfile.read_text())["auths"] == {}
    with pytest.raises(LaminaError):
        other.pull(f"{auth_registry}/a/app:2", authfile=str(authfile))


# ------------------------------------------------------------------------------ a lying registry
def _image_blobs(eng, name):
    """(manifest bytes, {digest: bytes}) of a stored image, layers gzipped as a registry has them."""
    import io

    from lamina.compression import compressor

    config = eng.content.read(eng.image_store.resolve(name))
    layers = []
    blobs = {}
    image_id = eng.image_store.resolve(name)
    for row in eng.image_store.layer_rows(image_id):  # each layer's tar, from its record
        tar = io.BytesIO()
        eng.image_store.layers.write_tar(row["chain_id"], tar)
        buf = io.BytesIO()
        c = compressor("gzip", buf)
        c.write(tar.getvalue())
        c.close()
        data = buf.getvalue()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": digest, "size": len(data)})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    blobs[config_digest] = config
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": config_digest, "size": len(config)}, "layers": layers}
    return json.dumps(doc).encode(), blobs, [d["digest"] for d in layers]


class _Liar(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    manifest = b""
    blobs: ClassVar[dict] = {}
    layers: ClassVar[list] = []
    lie = ""

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=(), length=None):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = self.path
        if path == "/v2/":
            return self._send(200, b"{}")
        if "/manifests/" in path:
            digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
            return self._send(200, self.manifest, [
                ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                ("Docker-Content-Digest", digest)])
        digest = path.rsplit("/", 1)[-1]
        data = self.blobs.get(digest)
        if data is None:
            return self._send(404)
        if digest == self.layers[-1]:
            if self.lie == "wrong-digest":
                data = data[:-10] + b"0123456789"
            elif self.lie == "truncated":
                data = data[: len(data) // 2]
            elif self.lie == "content-length":
                self._send(200, b"", length=len(data))
                self.wfile.write(data[: len(data) // 3])
                self.wfile.flush()
                self.close_connection = True
                return
            elif self.lie == "error-500":
                return self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
        self._send(200, data)

    do_HEAD = do_GET


@pytest.fixture
def liar(image_store):
    manifest, blobs, layers = _image_blobs(image_store, "app:2")
    handler = type("Handler", (_Liar,), {"manifest": manifest, "blobs": blobs, "layers": layers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Bearer(_Liar):
    """A registry that wants a bearer token from its token service (``/token``, which itself
    wants alice's password when ``password`` is set), as Docker Hub and most registries do."""

    password = None
    scopes: ClassVar[list] = []

    def do_GET(self):
        import base64
        import urllib.parse

        if self.path.startswith("/token"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            type(self).scopes.append((query.get("service"), query.get("scope")))
            if self.password is not None:
                given = self.headers.get("Authorization", "")
                want = "Basic " + base64.b64encode(f"alice:{self.password}".encode()).decode()
                if given != want:
                    return self._send(401, b'{"details":"wrong password"}')
            return self._send(200, b'{"token":"T0K3N"}')
        if self.headers.get("Authorization") != "Bearer T0K3N":
            host = self.headers.get("Host")
            return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}', [
                ("WWW-Authenticate",
                 f'Bearer realm="http://{host}/token",service="fake-registry"')])
        return super().do_GET()

    do_HEAD = do_GET


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_pull_through_a_token_service(image_store, tmp_path, password):
    """Bearer auth: the challenge names the token service; lamina asks it for a token with the
    repository's pull scope (with the stored credentials when the service wants them)."""
    manifest, blobs, layers = _image_blobs(image_store, "app:2")
    handler = type("Handler", (_Bearer,), {"manifest": manifest, "blobs": blobs,
                                           "layers": layers, "password": password, "scopes": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    authfile = tmp_path / "auth.json"
    eng = Engine(root=str(tmp_path / "store"), driver="vfs")
    try:
        if password is not None:
            with pytest.raises(LaminaError, match="token service refused"):
                eng.pull(f"{host}/team/app:2", authfile=str(authfile))
            from lamina.transfer import auth

            auth.store(host, "alice", password, str(authfile))
        image_id = eng.pull(f"{host}/team/app:2", authfile=str(authfile))
        assert image_id == image_store.inspect_image("app:2")["Id"]
        assert (["fake-registry"], ["repository:team/app:pull"]) in handler.scopes
    finally:
        eng.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("lie, message", [
    ("wrong-digest", "blob digest mismatch"),
    ("truncated", "is truncated"),
    ("content-length", "download failed"),
    ("error-500", "download failed: HTTP 500"),
])
@pytest.mark.parametrize("driver", ["vfs", "overlay2"])  # layers in order / all at once
def test_a_lying_registry_leaves_nothing(liar, tmp_path, lie, message, driver):
    handler, host = liar
    root = str(tmp_path / "victim")
    lam = Lamina(root, driver)
    eng = Engine(root=root, driver=driver)
    assert eng.content.digests() == []  # the layout exists: compare blobs, not its creation
    eng.close()
    before = store_files(root)
    handler.lie = lie
    proc = lam("pull", f"{host}/app:2", check=False)
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("Error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert store_files(root) == before
    assert lam("images", "-q").stdout == ""
    info = json.loads(lam("info").stdout)
    assert info["Images"] == 0 and info["Layers"] == 0
    handler.lie = ""
    lam("pull", f"{host}/app:2")  # the truth is accepted
    assert json.loads(lam("info").stdout)["Images"] == 1


def test_pull_picks_the_platform_from_an_index(image_store, other, registry):
    """An OCI index with an amd64 and an arm64 image: linux/amd64 by default, --platform picks."""
    import httpx

    amd = image_store.push("busybox:1", f"{registry}/multi/app:amd")
    arm = image_store.push("app:2", f"{registry}/multi/app:arm")

    def desc(digest, arch):
        size = len(httpx.get(f"http://{registry}/v2/multi/app/manifests/{digest}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"}).content)
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                "size": size, "platform": {"os": "linux", "architecture": arch}}

    index = json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [desc(arm, "arm64"), desc(amd, "amd64")]}).encode()
    resp = httpx.put(f"http://{registry}/v2/multi/app/manifests/both", content=index,
                     headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert resp.status_code == 201, resp.text
    assert other.pull(f"{registry}/multi/app:both") == image_store.inspect_image("busybox:1")["Id"]
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    repo_digests = other.inspect_image(f"{registry}/multi/app:both")["RepoDigests"]
    assert f"{registry}/multi/app@{index_digest}" in repo_digests  # what Docker shows
    assert f"{registry}/multi/app@{amd}" in repo_digests  # and the platform's, as Podman does
    assert other.pull(f"{registry}/multi/app:both", platform=("linux", "arm64", None)) == \
        image_store.inspect_image("app:2")["Id"]
    with pytest.raises(LaminaError, match="no image for linux/s390x"):
        other.pull(f"{registry}/multi/app:both", platform=("linux", "s390x", None))


def test_inspect_after_pull_shows_repo_digests_and_the_manifest_media_type(image_store, other,
                                                                         registry, liar):
    """Docker's shape: RepoDigests NAME@<manifest digest>; Descriptor.mediaType as pulled."""
    digest = image_store.push("app:2", f"{registry}/shape/app:2")
    other.pull(f"{registry}/shape/app:2")
    doc = other.inspect_image(f"{registry}/shape/app:2")
    assert doc["RepoDigests"] == [f"{registry}/shape/app@{digest}"]
    assert doc["Descriptor"]["digest"] == digest
    assert doc["Descriptor"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    # a Docker schema 2 manifest keeps its own media type
    handler, host = liar
    docker = json.loads(handler.manifest)
    docker["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in docker["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    handler.manifest = json.dumps(docker).encode()
    third = Engine(root=f"/var/tmp/{os.getpid()}-inspect-third", driver="vfs")
    try:
        third.pull(f"{host}/dock/app:2")
        doc = third.inspect_image(f"{host}/dock/app:2")
        manifest_digest = "sha256:" + hashlib.sha256(handler.manifest).hexdigest()
        assert doc["Descriptor"] == {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": manifest_digest, "size": len(handler.manifest)}
        assert doc["RepoDigests"] == [f"{host}/dock/app@{manifest_digest}"]
    finally:
        third.close()
        shutil.rmtree(third.root, ignore_errors=True)
    # an image that never went through a registry has none
    assert image_store.inspect_image("busybox:1")["RepoDigests"] == []


def test_push_of_an_uncompressed_image_records_its_repo_digest(image_store, registry):
    """A locally built/imported image keeps its layers plain; push sends gzip layers and so a
    different manifest: RepoDigests names the pushed one (Docker's shape), per repository."""
    stored = image_store.image_store.row(image_store.image_store.resolve("app:2"))["manifest_digest"]
    assert image_store.inspect_image("app:2")["RepoDigests"] == []
    digest = image_store.push("app:2", f"{registry}/recorded/app:2")
    assert digest != stored  # the layers were recompressed
    assert image_store.inspect_image("app:2")["RepoDigests"] == [
        f"{registry}/recorded/app@{digest}"]
    zstd = image_store.push("app:2", f"{registry}/other/app:2", compression="zstd")
    assert image_store.inspect_image("app:2")["RepoDigests"] == [
        f"{registry}/other/app@{zstd}", f"{registry}/recorded/app@{digest}"]
    # the registry serves that very manifest under that digest
    from lamina.transfer.http import Client

    with Client(registry, ["repository:recorded/app:pull"], None, False) as client:
        body, _, _ = client.get_manifest("recorded/app", digest)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest


def test_a_kept_alive_connection_the_server_dropped_is_opened_again():
    """A server that closes each connection after one answer, without saying so: the next
    request on the kept-alive connection fails to send, and is sent once more on a new one."""
    from lamina.transfer.http import _RawGetter

    answered = []

    class Once(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            answered.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Once)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    getter = _RawGetter(False)
    try:
        for i in range(3):
            resp = getter.request("GET", f"http://127.0.0.1:{server.server_address[1]}/{i}", {})
            assert (resp.status_code, resp.read()) == (200, b"ok")
            resp.close()
            time.sleep(0.05)  # the server has closed its end by now
        assert answered == ["/0", "/1", "/2"]
    finally:
        getter.close()
        server.shutdown()
        server.server_close()


def test_a_pulled_image_keeps_no_blob_and_pushes_back_what_registries_have(
        image_store, other, registry, tmp_path):
    """A pulled layer is kept unpacked only: its compressed blob is not stored, the registry's
    digest is remembered. Pushed back to the registry it came from, nothing is uploaded (HEAD,
    cross-repository mount); pushed to another registry, its tar is compressed again by the
    stable compressor, which gives the digests the first push made: the same manifest digest."""
    digest = image_store.push("app:2", f"{registry}/src/app:2")
    image_id = other.pull(f"{registry}/src/app:2")
    manifest = json.loads(other.content.read(other.image_store.row(image_id)["manifest_digest"]))
    layers = [d["digest"] for d in manifest["layers"]]
    assert not set(layers) & set(other.content.digests())
    lam = Lamina(other.root, "vfs")
    out = lam("push", f"{registry}/src/app:2", f"{registry}/copy/app:2").stdout
    assert "Pushed" not in out and out.count("Mounted from src/app") == len(layers)
    assert digest in out
    second_host, proc = start_registry(str(tmp_path))
    try:
        out = lam("push", f"{registry}/src/app:2", f"{second_host}/far/app:2").stdout
        assert out.count("Pushed") == len(layers) and digest in out
        again = lam("push", f"{registry}/src/app:2", f"{second_host}/far/app:again").stdout
        assert out.count("Pushed") == len(layers) and "Pushed" not in again
    finally:
        stop(proc)
    assert other.check() == []
    # the pull cache: a store that keeps pulled blobs has them, and check counts them as kept
    third = Engine(root=str(tmp_path / "third"), driver="vfs")
    third.store_option("keep-pulled-blobs", "true")
    third.pull(f"{registry}/src/app:2")
    assert set(layers) <= set(third.content.digests())
    assert third.check() == []
    third.rmi([f"{registry}/src/app:2"])
    assert third.content.digests() == [] and third.check() == []
    third.close()
