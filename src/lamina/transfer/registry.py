"""A client of the OCI distribution protocol: ``pull`` and ``push`` against any v2 registry.

Pull: the manifest (OCI or Docker schema 2, or an index from which one platform is picked) is
fetched and its digest checked, then the config, then the layer blobs that are not stored yet, in
parallel, each streamed into the blob store and named only once its size and digest are right
(a dropped download resumes with a Range request). Each layer is extracted while it arrives (all
at once on overlay2 and union, in order on vfs and overlay: see archive.add_image), so extraction
overlaps the downloads. The manifest and config are kept as the exact bytes received. A failure leaves no image, no snapshot and no blob that nothing uses.

Push: every blob is checked with HEAD first and skipped when the registry has it; a blob known to
be in another repository of the same registry is mounted from there; others are uploaded, whole
when small, in chunks (PATCH with Content-Range) when large; after a dropped connection the
upload resumes from the offset the registry reports, or starts the blob over when the registry
cannot resume (distribution does not once a broken PATCH wrote part of a chunk). Layers stored
uncompressed are gzipped on the way (isal, stable output,
so the same image always pushes the same digests); the compressed digests are remembered so that a
second push can skip them with HEAD.

Authentication: anonymous, basic, or bearer tokens from the registry's token service, with the
credentials of :mod:`lamina.auth`. ``tls_verify=False`` (and any loopback registry) may fall back
to plain http, as Docker does for ``127.0.0.0/8``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..content import WRITEBACK, drop_cached
from ..digest import hex_of, is_digest, sha256_bytes
from ..errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound, Unavailable
from ..metadata import Transaction
from ..reference import DOCKER_HUB, Reference, parse_reference
from .archive import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_MANIFEST,
    BlobSink,
    Recompressed,
    add_image,
    drop_unused,
    platform_matches,
)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

CHUNK = 1 << 20
UPLOAD_CHUNK = 64 << 20       # PATCH size for chunked uploads
MONOLITHIC_LIMIT = 8 << 20    # blobs up to this size go in one PUT
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20
RETRIES = 3
ACCEPT = ", ".join((MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST))

def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or name.startswith("127.") or name == "::1"


# ----------------------------------------------------------------------------- HTTP client


class _Cancelled(Exception):
    pass


def _registry_error(resp, what: str) -> LaminaError:
    """A one-line error from a registry's error response."""
    detail = ""
    try:
        body = resp.read()
        doc = json.loads(body)
        errors = doc.get("errors") or []
        if errors:
            detail = "; ".join(
                f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}"
                               for e in errors[:3])
    except Exception:  # noqa: BLE001 - any body will do for the message
        pass
    status = resp.status_code
    message = f"{what}: {detail or f'HTTP {status} {resp.reason_phrase}'}"
    if status == 404:
        return NotFound(message)
    if status in (401, 403):
        return FailedPrecondition(message)
    if status >= 500:
        return Unavailable(message)
    return InvalidArgument(message)


class Client:
    """One registry, one set of scopes: pings ``/v2/``, answers auth challenges, retries."""

    def __init__(self, host: str, scopes: list[str], credentials=None,
                 tls_verify: bool | None = None):
        self.host = host
        self.scopes = scopes
        self.credentials = credentials
        self.insecure_ok = tls_verify is False or _is_loopback(host)
        self.verify = tls_verify is not False
        self.base = None
        self.authorization: str | None = None
        self._lock = threading.Lock()
        self._http = None  # httpx, made on first use: uploads, or anything behind a proxy
        self._raw = None   # _RawGetter: GET and HEAD over http.client
        self._direct: dict[str, bool] = {}  # scheme://host -> no proxy in the way

    @property
    def httpx(self):
        import httpx

        return httpx

    @property
    def http(self):
        if self._http is None:
            httpx = self.httpx
            self._http = httpx.Client(
                timeout=httpx.Timeout(120.0, connect=15.0), follow_redirects=True,
                verify=tls_context(self.verify),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                headers={"User-Agent": "lamina"})
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._raw is not None:
            self._raw.close()

    def _request(self, method: str, url: str, headers: dict, content=None, stream: bool = False):
        """One request; network failures raise :class:`_Transport`. GET and HEAD go over
        :mod:`http.client` (a pull never imports httpx, and blob bodies are read straight into
        one buffer: httpx passes every 64 KiB piece through h11, about twice the CPU per byte);
        uploads, and anything behind a proxy, go over httpx."""
        if content is None and method in ("GET", "HEAD") and self._is_direct(url):
            if self._raw is None:
                self._raw = _RawGetter(self.verify)
            return self._raw.request(method, url, headers)
        httpx = self.httpx
        try:
            resp = self.http.send(self.http.build_request(method, url, headers=headers,
                                                          content=content), stream=stream)
        except httpx.TransportError as e:
            raise _Transport(_oneline(e)) from None
        return _HttpxBody(resp)

    def _is_direct(self, url: str) -> bool:
        origin = "/".join(url.split("/", 3)[:3])
        direct = self._direct.get(origin)
        if direct is None:
            direct = self._direct[origin] = not _proxied(origin)
        return direct

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- connection and auth
    def ping(self) -> None:
        """Find the scheme (https, or http where allowed) and authenticate if challenged."""
        errors = []
        for scheme in ("https", "http"):
            if scheme == "http" and not self.insecure_ok:
                break
            try:
                resp = self._request("GET", f"{scheme}://{self.host}/v2/", {})
                resp.read()
                resp.close()
            except _Transport as e:  # includes TLS failures
                errors.append(f"{scheme}: {e}")
                continue
            if scheme == "http" and resp.status_code == 400 and errors:
                break  # an https server answering plain http: its https error is the one
            self.base = f"{scheme}://{self.host}"
            if resp.status_code == 401:
                self._authenticate(resp.headers.get("www-authenticate", ""))
            elif resp.status_code >= 400 and resp.status_code != 404:
                raise _registry_error(resp, f"registry {self.host}")
            return
        if any("CERTIFICATE_VERIFY_FAILED" in e or "certificate verify failed" in e
               for e in errors):
            hint = " (trust its CA with SSL_CERT_FILE=FILE, or use --tls-verify=false)"
        else:
            hint = "" if self.insecure_ok else " (for a plain-http registry use --tls-verify=false)"
        raise Unavailable(f"cannot reach registry {self.host}: {'; '.join(errors)}{hint}")

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic":
            if not self.credentials:
                raise FailedPrecondition(f"{self.host}: authentication required (lamina login "
                                         f"{self.host})")
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            self.authorization = "Basic " + token
            return
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise FailedPrecondition(f"{self.host}: unsupported authentication {challenge!r}")
        params = [("service", fields["service"])] if fields.get("service") else []
        params += [("scope", s) for s in self.scopes]
        headers = {}
        if self.credentials:
            basic = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers["Authorization"] = "Basic " + basic
        try:
            resp = self._request("GET", _with_params(fields["realm"], params), headers)
            body = resp.read()
            resp.close()
        except _Transport as e:
            raise Unavailable(f"cannot reach token service {fields['realm']}: {e}") from None
        if resp.status_code != 200:
            raise FailedPrecondition(f"{self.host}: token service refused: HTTP {resp.status_code}"
                                     + ("" if self.credentials else " (lamina login first?)"))
        try:
            doc = json.loads(body)
        except ValueError:
            raise FailedPrecondition(f"{self.host}: token service gave no JSON") from None
        if not isinstance(doc, dict):
            raise FailedPrecondition(f"{self.host}: token service gave no token")
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise FailedPrecondition(f"{self.host}: token service gave no token")
        self.authorization = "Bearer " + token

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return self.base + path

    def send(self, method: str, path: str, headers=None, content=None, params=None,
             stream: bool = False):
        """One request; a 401 re-authenticates once (bodies given here must be re-sendable)."""
        if self.base is None:
            self.ping()
        url = self.url(path)
        if params:  # keep the query an upload location carries (its state)
            url = _with_params(url, params)
        return self._authorized(lambda h: self._request(method, url, h, content, stream),
                                headers)

    def _authorized(self, request, headers=None):
        """``request(headers)`` with this client's Authorization; a 401 re-authenticates once."""
        for attempt in range(2):
            h = dict(headers or {})
            if self.authorization:
                h["Authorization"] = self.authorization
            resp = request(h)
            if resp.status_code == 401 and attempt == 0:
                challenge = resp.headers.get("www-authenticate", "")
                resp.close()
                with self._lock:
                    self._authenticate(challenge)
                continue
            return resp
        return resp

    # -------------------------------------------------------------- manifests and blobs
    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest, its digest verified."""
        what = f"manifest {repository}:{reference}" if not is_digest(reference) else \
            f"manifest {repository}@{reference}"
        resp = self._retrying(lambda: self.send(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT},
            stream=True), what)
        try:
            if resp.status_code != 200:
                raise _registry_error(resp, what)
            body = _read_limited(resp, MAX_MANIFEST, what)
        finally:
            resp.close()
        digest = sha256_bytes(body)
        expected = reference if is_digest(reference) else resp.headers.get("docker-content-digest")
        if expected and expected != digest:
            raise InvalidArgument(f"{what}: digest mismatch: expected {expected}, got {digest}")
        media = _media_type(body, resp.headers.get("content-type", ""))
        return body, media, digest

    def _retrying(self, call, what: str):
        """``call()`` again after a transport error or a 5xx (a few times, short backoff)."""
        for attempt in range(RETRIES + 1):
            try:
                resp = call()
            except _Transport as e:
                if attempt == RETRIES:
                    raise Unavailable(f"{what}: {e}") from None
                time.sleep(0.2 * (attempt + 1))
                continue
            if resp.status_code >= 500 and attempt < RETRIES:
                resp.close()
                time.sleep(0.2 * (attempt + 1))
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch_blob(self, repository: str, digest: str, size: int, content, on_bytes, stop,
                   arrival: "_Arrival | None" = None) -> bool:
        """Stream blob ``digest`` into the blob store; True if this call created it.

        The temporary file only grows, so ``arrival`` can let a reader follow it while it is
        written. Size and digest are checked before the blob is named; a dropped connection
        resumes with a Range request (a registry that ignores it sends the blob from the start,
        and the bytes already written are skipped)."""
        what = f"blob {digest}"
        writer = content.writer()
        if arrival is not None:
            arrival.started(writer.tmp)
        attempts = 0
        try:
            while True:
                offset = writer.size
                try:
                    resp = self.send("GET", f"/v2/{repository}/blobs/{digest}",
                                     headers={"Range": f"bytes={offset}-"} if offset else {},
                                     stream=True)
                    try:
                        skip = offset if resp.status_code == 200 else 0
                        if resp.status_code not in (200, 206):
                            if resp.status_code < 500:
                                raise _registry_error(resp, what)
                            raise _Retry(f"HTTP {resp.status_code}")
                        for data in resp.chunks():
                            if stop.is_set():
                                raise _Cancelled()
                            if skip:
                                if len(data) <= skip:
                                    skip -= len(data)
                                    continue
                                data, skip = data[skip:], 0
                            writer.write(data)
                            on_bytes(len(data))
                            if arrival is not None:
                                arrival.wrote(writer.size)
                            if writer.size > size:
                                raise InvalidArgument(
                                    f"{what} is larger than its manifest says ({size} bytes)")
                    finally:
                        resp.close()
                except (_Transport, _Retry) as e:
                    attempts += 1
                    if attempts > RETRIES:
                        raise Unavailable(f"{what}: download failed: {_oneline(e)}") from None
                    time.sleep(0.2 * attempts)
                    continue
                break
            if writer.size != size:
                raise InvalidArgument(f"{what} is truncated: {writer.size} of {size} bytes")
            got = "sha256:" + writer.hash.hexdigest()
            if got != digest:
                raise InvalidArgument(f"blob digest mismatch: expected {digest}, got {got}")
            if content.exists(digest):
                writer.abort()
                return False
            writer.commit(expected=digest)
            return True
        finally:
            if not writer.file.closed:
                writer.abort()
            if arrival is not None:
                arrival.finished()

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self._retrying(lambda: self.send("HEAD", f"/v2/{repository}/blobs/{digest}"),
                              f"blob {digest}")
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise _registry_error(resp, f"HEAD blob {digest}")

    def start_upload(self, repository: str, digest: str, mount_from: str | None):
        """POST an upload; returns (location, mounted)."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        resp = self._retrying(lambda: self.send("POST", f"/v2/{repository}/blobs/uploads/",
                                                params=params, headers={"Content-Length": "0"}),
                              f"upload of {digest}")
        resp.close()
        if resp.status_code == 201 and mount_from:
            return None, True
        if resp.status_code != 202:
            raise _registry_error(resp, f"upload of {digest}")
        return self._location(resp), False

    def _location(self, resp) -> str:
        location = resp.headers.get("location")
        if not location:
            raise InvalidArgument("registry gave no upload location")
        import urllib.parse

        return urllib.parse.urljoin(str(resp.url), location)

    def upload(self, repository: str, path: str, digest: str, size: int, location: str,
               on_bytes) -> None:
        """Upload the file ``path`` as blob ``digest``: one PUT if small, else PATCH chunks with
        resume from the registry's reported offset after a dropped connection."""
        what = f"upload of {digest}"
        if size <= MONOLITHIC_LIMIT:
            with open(path, "rb") as f:
                data = f.read()
            resp = self._retrying(lambda: self.send(
                "PUT", location, params={"digest": digest}, content=data,
                headers={"Content-Type": "application/octet-stream"}), what)
            resp.close()
            if resp.status_code != 201:
                raise _registry_error(resp, what)
            on_bytes(size)
            return
        offset = 0
        attempts = 0
        while offset < size:
            end = min(offset + UPLOAD_CHUNK, size)
            try:
                body = _file_slice(path, offset, end, on_bytes)
                resp = self.send("PATCH", location, content=body,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{offset}-{end - 1}",
                                          "Content-Length": str(end - offset)})
                location = self._accepted(resp, what)
                offset = end
            except (_Transport, _Retry) as e:
                attempts += 1
                if attempts > RETRIES:
                    raise Unavailable(f"{what}: {_oneline(e)}") from None
                time.sleep(0.2 * attempts)
                try:
                    new_offset, location = self._upload_status(location, what)
                except LaminaError:
                    # distribution refuses to resume once a broken PATCH wrote part of a chunk
                    # (its upload state no longer matches): start this blob over
                    location, _ = self.start_upload(repository, digest, None)
                    new_offset = 0
                on_bytes(new_offset - end)  # forget the bytes the registry did not take
                offset = new_offset
        self._finish_upload(location, digest, what)

    def upload_stream(self, repository: str, make, on_bytes):
        """Upload a blob made while it is sent (a layer compressed on the way, whose digest is
        known only at its end): ``make()`` gives an iterable of its bytes that has ``digest``
        and ``size`` once exhausted. One PATCH streams it (chunked), then a PUT names it; after
        a dropped connection the blob is made and sent again. Returns the exhausted iterable.
        """
        what = f"upload to {repository}"
        attempts = 0
        while True:
            location, _ = self.start_upload(repository, "a layer", None)
            sent = 0
            blob = None

            def request(headers, location=location):
                nonlocal blob
                blob = make()  # again after a 401: a body is sent once

                def body():
                    nonlocal sent
                    for piece in blob:
                        sent += len(piece)
                        on_bytes(len(piece))
                        yield piece

                headers["Content-Type"] = "application/octet-stream"
                return self._request("PATCH", location, headers, content=body())

            try:
                location = self._accepted(self._authorized(request), what)
                break
            except (_Transport, _Retry) as e:
                attempts += 1
                on_bytes(-sent)  # those bytes start over
                if attempts > RETRIES:
                    raise Unavailable(f"{what}: {_oneline(e)}") from None
                time.sleep(0.2 * attempts)
        self._finish_upload(location, blob.digest, what)
        return blob

    def _accepted(self, resp, what: str) -> str:
        """The next location after a PATCH (a 5xx is worth a retry)."""
        resp.close()
        if resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}")
        if resp.status_code != 202:
            raise _registry_error(resp, what)
        return self._location(resp)

    def _finish_upload(self, location: str, digest: str, what: str) -> None:
        """PUT: the upload at ``location`` becomes blob ``digest``."""
        resp = self._retrying(lambda: self.send("PUT", location, params={"digest": digest},
                                                headers={"Content-Length": "0"}), what)
        resp.close()
        if resp.status_code != 201:
            raise _registry_error(resp, what)

    def _upload_status(self, location: str, what: str) -> tuple[int, str]:
        """(next offset, location) of an upload in progress, from the registry's Range."""
        resp = self._retrying(lambda: self.send("GET", location), what)
        resp.close()
        if resp.status_code != 204:
            raise _registry_error(resp, f"{what} (resuming)")
        match = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("range", ""))
        offset = int(match.group(1)) + 1 if match else 0
        return offset, self._location(resp) if resp.headers.get("location") else location

    def put_manifest(self, repository: str, reference: str, manifest: bytes,
                     media_type: str) -> str:
        what = f"manifest {repository}:{reference}"
        resp = self._retrying(lambda: self.send(
            "PUT", f"/v2/{repository}/manifests/{reference}", content=manifest,
            headers={"Content-Type": media_type}), what)
        resp.close()
        if resp.status_code not in (200, 201):
            raise _registry_error(resp, what)
        digest = sha256_bytes(manifest)
        said = resp.headers.get("docker-content-digest")
        if said and said != digest:
            raise InvalidArgument(f"{what}: registry stored digest {said}, expected {digest}")
        return digest


class _Transport(Exception):
    """A network failure, over http.client or httpx alike (callers retry it)."""


class _Retry(Exception):
    pass


def _oneline(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _read_limited(resp, limit: int, what: str) -> bytes:
    parts, total = [], 0
    for data in resp.chunks():
        total += len(data)
        if total > limit:
            raise InvalidArgument(f"{what} is larger than {limit} bytes")
        parts.append(bytes(data))  # a chunk may be a view of a buffer that is reused
    return b"".join(parts)


def _media_type(body: bytes, header: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidArgument("manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    media = doc.get("mediaType") or header.split(";")[0].strip()
    if not media or media in ("application/json", "text/plain"):
        media = MEDIA_OCI_INDEX if "manifests" in doc else MEDIA_OCI_MANIFEST
    if media not in MANIFEST_TYPES + INDEX_TYPES:
        raise InvalidArgument(f"unsupported manifest type {media!r}")
    return media


def _file_slice(path: str, start: int, end: int, on_bytes):
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                raise LaminaError(f"{path} shrank during the upload")
            left -= len(data)
            on_bytes(len(data))
            yield data


# ----------------------------------------------------------------------------- progress


class _Silent:
    def add(self, key: str, total: int, status: str) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def status(self, key: str, text: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _PlainLog(_Silent):
    """Docker's output when stdout is not a terminal: one line per layer status change."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def add(self, key, total, status):
        self._print(f"{key}: {status}")

    def status(self, key, text):
        self._print(f"{key}: {text}")

    def message(self, text):
        self._print(text)


class _Bars(_PlainLog):
    """A progress bar per layer (rich), for terminals."""

    def __init__(self):
        super().__init__()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), transient=False)
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def add(self, key, total, status):
        self.tasks[key] = self.progress.add_task(f"{key}: {status}", total=total or None)

    def advance(self, key, n):
        if key in self.tasks:
            self.progress.advance(self.tasks[key], n)

    def status(self, key, text):
        if key in self.tasks:
            task = self.tasks[key]
            done = (text.endswith("complete") or text.startswith("Mounted")
                    or text in ("Pushed", "Layer already exists", "Already exists"))
            kwargs = {"completed": self.progress.tasks[task].total} if done and \
                self.progress.tasks[task].total else {}
            self.progress.update(task, description=f"{key}: {text}", **kwargs)

    def message(self, text):
        self.progress.console.print(text, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(quiet: bool = False):
    """Bars on a terminal, Docker's plain log otherwise, nothing when ``quiet``."""
    if quiet:
        return _Silent()
    if sys.stdout.isatty():
        try:
            return _Bars()
        except ImportError:
            pass
    return _PlainLog()


# ----------------------------------------------------------------------------- blob bodies


def _proxied(base: str) -> bool:
    """True if the environment routes requests to ``base`` through a proxy."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return False  # the common case, without importing urllib.request
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies()
    scheme = urllib.parse.urlsplit(base).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(urllib.parse.urlsplit(base).netloc)


def tls_context(verify: bool):
    """The TLS context of registry connections: the system's CA directory, read lazily (httpx's
    default context parses certifi's whole bundle: about 80 ms of every pull, push and login);
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` override it, certifi is the fallback."""
    import ssl

    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        context.load_verify_locations(cafile=cafile or None, capath=capath or None)
    elif os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):  # hashed links beside it
        context.load_verify_locations(capath="/etc/ssl/certs")
    else:
        import certifi  # httpx's own dependency

        context.load_verify_locations(cafile=certifi.where())
    return context


def _with_params(url: str, params) -> str:
    """``url`` with the query parameters ``params`` (a dict or pairs) added or replaced."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    items = list(params.items() if isinstance(params, dict) else params)
    names = {name for name, _ in items}
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if k not in names]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query + items)))


class _RawGetter:
    """GET and HEAD over :mod:`http.client`, one kept-alive connection per thread and host,
    following redirects (a blob store's signed URL gets no Authorization header from another
    host)."""

    def __init__(self, verify: bool):
        self.verify = verify
        self.local = threading.local()
        self.all: list = []
        self.lock = threading.Lock()
        self.context = None

    def _connection(self, scheme: str, netloc: str):
        import http.client

        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=120, context=self._tls())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=120)
            conns[(scheme, netloc)] = conn
            with self.lock:
                self.all.append(conn)
        return conn

    def _tls(self):
        if self.context is None:
            self.context = tls_context(self.verify)
        return self.context

    def request(self, method: str, url: str, headers: dict) -> "_RawBody":
        import http.client
        import urllib.parse

        headers = {"User-Agent": "lamina", **headers}
        for _ in range(6):
            parts = urllib.parse.urlsplit(url)
            conn = self._connection(parts.scheme, parts.netloc)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            for fresh in (conn.sock is None, True):
                try:
                    conn.request(method, target, headers=headers)
                    resp = conn.getresponse()
                    break
                except BaseException as e:
                    conn.close()  # http.client opens a new connection on the next request
                    gone = (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError, ConnectionAbortedError)
                    if not fresh and isinstance(e, gone):
                        continue  # the server closed a kept-alive connection: once more
                    if isinstance(e, (OSError, http.client.HTTPException)):
                        raise _Transport(_oneline(e)) from None
                    raise
            location = resp.getheader("location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                resp.read()
                following = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(following).netloc != parts.netloc:
                    headers.pop("Authorization", None)
                url = following
                continue
            return _RawBody(resp, conn, url)
        raise Unavailable(f"too many redirects for {url}")

    def close(self) -> None:
        with self.lock:
            for conn in self.all:
                conn.close()
            self.all.clear()


class _RawBody:
    """A response of :class:`_RawGetter`, read in chunks into one reused buffer."""

    def __init__(self, resp, conn, url: str):
        self.resp = resp
        self.conn = conn
        self.url = url
        self.status_code = resp.status
        self.reason_phrase = resp.reason
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.done = False

    def chunks(self):
        """Memoryviews of one buffer, each valid until the next is asked for."""
        import http.client

        view = memoryview(bytearray(CHUNK))
        filled = 0
        while True:  # whole chunks: one hash, write and wake-up of the extractor per MiB
            try:
                n = self.resp.readinto(view[filled:])
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut short
                raise _Transport(_oneline(e)) from None
            filled += n
            if n and filled < CHUNK:
                continue
            if filled:
                yield view[:filled]
                filled = 0
            if not n:
                if self.resp.length:  # readinto ends quietly where read() would complain
                    raise _Transport(f"connection closed with {self.resp.length} bytes of the "
                                     "body unread")
                self.done = True
                return

    def read(self) -> bytes:
        import http.client

        try:
            data = self.resp.read(MAX_MANIFEST)
        except (OSError, http.client.HTTPException) as e:
            raise _Transport(_oneline(e)) from None
        self.done = self.resp.isclosed()
        return data

    def close(self) -> None:
        if not self.done:
            if self.resp.length == 0:  # HEAD, or an empty body: the connection stays usable
                self.resp.read()
            else:  # unread bytes: the connection cannot carry another request
                self.conn.close()
        self.resp.close()


class _HttpxBody:
    """An httpx response with :class:`_RawBody`'s interface (network errors: _Transport)."""

    def __init__(self, resp):
        self.resp = resp
        self.status_code = resp.status_code
        self.headers = resp.headers

    def chunks(self):
        import httpx

        try:
            yield from self.resp.iter_raw()  # no chunk size: re-joining the pieces costs a copy
        except httpx.TransportError as e:
            raise _Transport(_oneline(e)) from None

    def read(self) -> bytes:
        import httpx

        try:
            return self.resp.read()
        except httpx.TransportError as e:
            raise _Transport(_oneline(e)) from None

    def __getattr__(self, name):
        return getattr(self.resp, name)

    def close(self) -> None:
        self.resp.close()


# ----------------------------------------------------------------------------- pull


class _Arrival:
    """A layer blob being downloaded, readable while it arrives: extraction follows the download
    instead of reading the blob again afterwards.

    The downloading thread calls :meth:`started` (with its temporary file, which only grows),
    :meth:`wrote` and :meth:`finished`; :meth:`reader` hands the extracting thread a file-like
    object that waits for bytes, and at the end raises the download's error, if any (wrong
    digest, truncated, ...), so a layer is never committed from a blob that failed its check.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.fd: int | None = None
        self.size = 0
        self.done = False
        self.future = None  # set by the puller once submitted

    def started(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # stays valid once the file is renamed
        with self.cond:
            self.fd = fd
            self.cond.notify_all()

    def wrote(self, size: int) -> None:
        with self.cond:
            self.size = size
            self.cond.notify_all()

    def finished(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def reader(self) -> "_Following":
        return _Following(self)


class _Following:
    """Reads an :class:`_Arrival` from its start, waiting for the download as needed."""

    def __init__(self, arrival: _Arrival):
        self.arrival = arrival
        self.pos = 0
        self.dropped = 0  # the blob's pages before this are out of the page cache

    def read(self, n: int = -1) -> bytes:
        arrival = self.arrival
        with arrival.cond:
            while arrival.size <= self.pos and not arrival.done:
                arrival.cond.wait()
            available, fd = arrival.size - self.pos, arrival.fd
        if available > 0 and fd is not None:
            data = os.pread(fd, available if n is None or n < 0 else min(n, available), self.pos)
            self.pos += len(data)
            # what was read more than a writeback step ago is on its way to disk (BlobWriter):
            # give its pages back, so the download reuses them (content.drop_cached)
            end = (self.pos - WRITEBACK) & ~0xFFFFF
            if end - self.dropped >= 2 * WRITEBACK:
                drop_cached(fd, self.dropped, end - self.dropped)
                self.dropped = end
            return data
        arrival.future.result()  # the end: raises the download's error (a blob that failed)
        return b""

    def failure(self) -> BaseException | None:
        """The download's error once it has ended, or None (it succeeded)."""
        return self.arrival.future.exception()

    def close(self) -> None:
        pass  # the descriptor is the puller's: a helper thread may still be in a read

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _short(digest: str) -> str:
    return hex_of(digest)[:12]


def _remember_sources(image_store: ImageStore, digests, registry: str, repository: str) -> None:
    with Transaction(image_store.db):
        image_store.db.executemany("INSERT OR IGNORE INTO blob_sources VALUES (?,?,?)",
                              [(d, registry, repository) for d in digests])


def _remember_name(image_store: ImageStore, manifest: str, registry: str, repository: str, digest: str) -> None:
    """The stored manifest ``manifest`` is known as ``digest`` in that repository (a pushed
    manifest that was rewritten, the index a pull chose it from): inspect's RepoDigests."""
    with Transaction(image_store.db):
        image_store.db.execute("INSERT OR REPLACE INTO pushed_manifests VALUES (?,?,?,?)",
                          (manifest, registry, repository, digest))


def pull(image_store: ImageStore, reference: str, platform=("linux", "amd64", None), tls_verify: bool | None = None,
         authfile: str | None = None, progress=None, jobs: int = 3) -> str:
    """Pull ``NAME[:TAG|@DIGEST]`` into the store; returns the image ID."""
    from . import auth

    ref = parse_reference(reference)
    progress = progress or _Silent()
    credentials = auth.lookup(ref.registry, authfile)
    scope = f"repository:{ref.repository}:pull"
    with Client(ref.api_host, [scope], credentials, tls_verify) as client:
        try:
            return _pull(image_store, client, ref, platform, progress, max(1, jobs))
        finally:
            progress.close()


def _pull(image_store: ImageStore, client, ref: Reference, platform, progress, jobs: int) -> str:
    repo = ref.repository
    shown = ref.name if ref.registry != DOCKER_HUB else repo
    progress.message(f"{ref.tag or ref.digest}: Pulling from {shown}")
    manifest, media, digest = client.get_manifest(repo, ref.digest or ref.tag)
    index_digest = None
    if media in INDEX_TYPES:
        index_digest = digest
        index = json.loads(manifest)
        chosen = [d for d in index.get("manifests", []) if isinstance(d, dict)
                  and platform_matches(d, platform)]
        if not chosen:
            raise NotFound(f"no image for {'/'.join(p for p in platform if p)} in {ref}")
        child = chosen[0].get("digest", "")
        if not is_digest(child):
            raise InvalidArgument(f"index of {ref} names a malformed digest")
        manifest, media, digest = client.get_manifest(repo, child)
        if media in INDEX_TYPES:
            raise InvalidArgument(f"index of {ref} points at another index")
    doc = json.loads(manifest)
    try:
        config_desc = doc["config"]
        layers = [(d["digest"], int(d["size"]), d.get("mediaType") or MEDIA_OCI_LAYER)
                  for d in doc["layers"]]
        config_digest, config_size = config_desc["digest"], int(config_desc["size"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument(f"malformed manifest for {ref}") from None
    for d, size, _ in layers + [(config_digest, config_size, "")]:
        if not is_digest(d) or size < 0:
            raise InvalidArgument(f"manifest for {ref} has a malformed descriptor")
    if config_size > MAX_CONFIG:
        raise InvalidArgument(f"config of {ref} is larger than {MAX_CONFIG} bytes")
    content = image_store.store.content
    sink = BlobSink(image_store)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pull")
    futures = {}
    arrivals: dict[str, _Arrival] = {}
    try:
        if content.exists(config_digest):
            config = content.read(config_digest)
        else:
            if sink_fetch(client, repo, config_digest, config_size, content, lambda n: None, stop):
                sink.created.add(config_digest)
            config = content.read(config_digest)
        for blob, size, _ in layers:
            key = _short(blob)
            if blob in futures:
                continue
            if content.exists(blob):
                progress.add(key, size, "Already exists")
                futures[blob] = None
                continue
            progress.add(key, size, "Pulling fs layer")
            arrival = arrivals[blob] = _Arrival()

            def fetch(blob=blob, size=size, key=key, arrival=arrival):
                progress.status(key, "Downloading")
                created = client.fetch_blob(repo, blob, size, content,
                                            lambda n: progress.advance(key, n), stop, arrival)
                progress.status(key, "Download complete")
                return created

            futures[blob] = arrival.future = pool.submit(fetch)

        followed: set[str] = set()

        def ready(i: int, follow: bool):
            blob = layers[i][0]
            if futures.get(blob) is None:
                return None
            if follow and blob not in followed:  # a blob listed twice is followed once
                followed.add(blob)
                return arrivals[blob].reader()
            futures[blob].result()
            return None

        tag = ref.local_tag()
        image_id = add_image(image_store, config, layers, [tag] if tag else [], manifest, ready=ready)
        for blob, _, _ in layers:
            if futures.get(blob) is not None:
                progress.status(_short(blob), "Pull complete")
        _remember_sources(image_store, [b for b, _, _ in layers] + [config_digest, digest],
                          ref.registry, repo)  # the manifest's: inspect's RepoDigests
        if index_digest is not None:  # and the index's, the digest that names it there
            _remember_name(image_store, digest, ref.registry, repo, index_digest)
        digest = index_digest or digest
        progress.message(f"Digest: {digest}")
        progress.message(f"Status: Downloaded newer image for {ref}")
        return image_id
    except BaseException:
        stop.set()
        for future in futures.values():
            if future is not None:
                future.cancel()
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for arrival in arrivals.values():
            arrival.finished()  # wakes a reader of a download that was cancelled unstarted
            arrival.close()
        for blob, future in futures.items():
            if future is not None and not future.cancelled() and future.exception() is None \
                    and future.result():
                sink.created.add(blob)
        drop_unused(image_store, sink.created)


def sink_fetch(client, repo, digest, size, content, on_bytes, stop) -> bool:
    """Download one blob unless it is stored; True if this call created it."""
    if content.exists(digest):
        return False
    return client.fetch_blob(repo, digest, size, content, on_bytes, stop)


# ----------------------------------------------------------------------------- push


def push(image_store: ImageStore, name: str, destination: str | None = None, tls_verify: bool | None = None,
         authfile: str | None = None, compression: str | None = None, progress=None,
         jobs: int = 5) -> str:
    """Push image ``name`` to ``destination`` (default: ``name`` itself); returns the digest of
    the manifest the registry now has."""
    from ..compression import check
    from . import auth

    if compression is not None:
        check(compression)
    image_id = image_store.resolve(name)
    target = destination or name
    if destination is None and target.startswith("sha256:") or (
            destination is None and image_id[7:].startswith(target)):
        raise InvalidArgument("pushing an image by ID needs a destination: push ID NAME[:TAG]")
    ref = parse_reference(target)
    progress = progress or _Silent()
    row = image_store.row(image_id)
    manifest = image_store.store.content.read(row["manifest_digest"])
    doc = json.loads(manifest)
    sources = {}  # blob digest (stored or its compressed form) -> a repository that has it
    for desc in doc.get("layers", []):
        candidates = [desc["digest"]] + [r[0] for r in image_store.db.execute(
            "SELECT digest FROM compressed_blobs WHERE source = ?", (desc["digest"],))]
        for digest in candidates:
            for registry, repository in image_store.db.execute(
                    "SELECT registry, repository FROM blob_sources WHERE digest = ?", (digest,)):
                if registry == ref.registry and repository != ref.repository:
                    sources.setdefault(digest, repository)
    scopes = [f"repository:{ref.repository}:pull,push"]
    scopes += sorted({f"repository:{r}:pull" for r in sources.values()})
    credentials = auth.lookup(ref.registry, authfile)
    with Client(ref.api_host, scopes, credentials, tls_verify) as client:
        try:
            return _push(image_store, client, ref, image_id, manifest, doc, compression, sources,
                         progress, max(1, jobs))
        finally:
            progress.close()


def _push(image_store: ImageStore, client, ref: Reference, image_id, manifest, doc, compression, sources, progress,
          jobs: int) -> str:
    from ..compression import media_suffix, of_media_type

    progress.message(f"The push refers to repository [{ref.name}]")
    client.ping()
    repo = ref.repository
    content = image_store.store.content
    stop = threading.Event()
    plan = []  # (stored digest, stored size, stored media, target compression or None)
    for desc in doc.get("layers", []):
        media = desc.get("mediaType") or MEDIA_OCI_LAYER
        stored = of_media_type(media)
        want = compression or (stored if stored != "none" else "gzip")
        plan.append((desc["digest"], int(desc["size"]), media, None if want == stored else want))
    converted = any(p[3] for p in plan)
    results: dict[int, tuple[str, int, str]] = {}

    def push_layer(i: int) -> None:
        digest, size, media, want = plan[i]
        key = _short(digest)
        path = content.path(digest)
        if want:
            cached = cache.get(i)
            new_media = MEDIA_OCI_LAYER + media_suffix(want)
            if cached and _skip_or_mount(client, repo, cached[0], sources.get(cached[0]), key,
                                         progress)[0]:
                results[i] = (cached[0], cached[1], new_media)
                return
            progress.status(key, "Pushing")  # compressed as it is sent
            blob = client.upload_stream(repo, lambda: Recompressed(image_store, digest, want),
                                        lambda n: progress.advance(key, n))
            results[i] = (blob.digest, blob.size, new_media)
            progress.status(key, "Pushed")
            return
        results[i] = (digest, size, media)
        _push_blob(client, repo, digest, size, path, sources.get(digest), key, progress)

    cache = {}  # the database is used from this thread only
    for i, (digest, size, _, want) in enumerate(plan):
        progress.add(_short(digest), size, "Preparing")
        if want:
            cache[i] = image_store.db.execute(
                "SELECT digest, size FROM compressed_blobs"
                " WHERE source = ? AND compression = ?",
                (digest, want)).fetchone()
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push") as pool:
        futures = [pool.submit(push_layer, i) for i in range(len(plan))]
        try:
            config_size = content.size(image_id)
            _push_blob(client, repo, image_id, config_size, content.path(image_id), None, None,
                       progress)
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    if converted:
        from ..image import dumps

        with Transaction(image_store.db):
            image_store.db.executemany(
                "INSERT OR REPLACE INTO compressed_blobs VALUES (?,?,?,?)",
                [(plan[i][0], plan[i][3], *results[i][:2]) for i in results if plan[i][3]])

        config_media = (doc.get("config") or {}).get("mediaType") or MEDIA_OCI_CONFIG
        if config_media != MEDIA_OCI_CONFIG:
            config_media = MEDIA_OCI_CONFIG
        manifest = dumps({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": config_media, "digest": image_id,
                       "size": content.size(image_id)},
            "layers": [{"mediaType": results[i][2], "digest": results[i][0],
                        "size": results[i][1]} for i in range(len(plan))]})
        media_type = MEDIA_OCI_MANIFEST
    else:
        media_type = doc.get("mediaType") or MEDIA_OCI_MANIFEST
    digest = client.put_manifest(repo, ref.digest or ref.tag, manifest, media_type)
    _remember_sources(image_store, [r[0] for r in results.values()] + [image_id, digest],
                      ref.registry, repo)
    stored = image_store.row(image_id)["manifest_digest"]
    if digest != stored:  # so that inspect's RepoDigests names what the repository has
        _remember_name(image_store, stored, ref.registry, repo, digest)
    progress.message(f"{ref.tag or ref.digest}: digest: {digest} size: {len(manifest)}")
    return digest


def _skip_or_mount(client, repo, digest, mount_from, key, progress) -> tuple[bool, str | None]:
    """(True, None) when the registry has the blob in ``repo`` or mounted it from
    ``mount_from``; else (False, an upload location)."""
    if client.blob_exists(repo, digest):
        if key:
            progress.status(key, "Layer already exists")
        return True, None
    location, mounted = client.start_upload(repo, digest, mount_from)
    if mounted and key:
        progress.status(key, f"Mounted from {mount_from}")
    return mounted, location


def _push_blob(client, repo, digest, size, path, mount_from, key, progress) -> None:
    done, location = _skip_or_mount(client, repo, digest, mount_from, key, progress)
    if done:
        return
    if key:
        progress.status(key, "Pushing")
    client.upload(repo, path, digest, size, location,
                  (lambda n: progress.advance(key, n)) if key else (lambda n: None))
    if key:
        progress.status(key, "Pushed")


# ----------------------------------------------------------------------------- login


def check_login(host: str, username: str, password: str, tls_verify: bool | None = None) -> None:
    """Raise unless ``username``/``password`` are accepted by the registry at ``host``."""
    api = "registry-1.docker.io" if host.startswith("https://index.docker.io") else host
    with Client(api, [], (username, password), tls_verify) as client:
        client.ping()
        resp = client.send("GET", "/v2/")
        resp.close()
        if resp.status_code == 401:
            raise FailedPrecondition(f"login to {host} failed: unauthorized: incorrect username "
                                     "or password")
        if resp.status_code >= 400 and resp.status_code != 404:
            raise _registry_error(resp, f"login to {host}")

