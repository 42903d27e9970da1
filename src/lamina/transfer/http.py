"""The HTTP side of the OCI distribution protocol: :class:`Client`, one registry and one set of
scopes. It finds the scheme, answers authentication challenges, retries transport errors and 5xx
answers, and moves manifests and blobs: blob downloads resume with Range requests and are
checked before they are named; uploads go whole when small, in chunks (PATCH with Content-Range)
when large, and resume from the offset the registry reports after a dropped connection (or start
the blob over when the registry cannot resume: distribution does not once a broken PATCH wrote part
of a chunk). GET and HEAD go over :mod:`http.client`, uploads and anything behind a proxy over
httpx.

Authentication: anonymous, basic, or bearer tokens from the registry's token service, with the
credentials of :mod:`lamina.transfer.auth`. ``tls_verify=False`` (and any loopback registry) may
fall back to plain http, as Docker does for ``127.0.0.0/8``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

from ..digest import is_digest, sha256_bytes
from ..errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound, Unavailable
from .formats import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .pull import Arrival

CHUNK = 1 << 20
UPLOAD_CHUNK = 64 << 20       # PATCH size for chunked uploads
MONOLITHIC_LIMIT = 8 << 20    # blobs up to this size go in one PUT
MAX_MANIFEST = 4 << 20
RETRIES = 3
ACCEPT = f"{MEDIA_OCI_MANIFEST}, {MEDIA_DOCKER_MANIFEST}, {MEDIA_OCI_INDEX}, {MEDIA_DOCKER_LIST}"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or name.startswith("127.") or name == "::1"


class _Cancelled(Exception):
    pass


def registry_error(resp, what: str) -> LaminaError:
    """A one-line error from a registry's error response, of the class its status means (404:
    NotFound, 401/403: FailedPrecondition, 5xx: Unavailable, else InvalidArgument)."""
    detail = ""
    try:
        body = resp.read()
        doc = json.loads(body)
        errors = doc.get("errors") or []
        if errors:
            detail = "; ".join(
                f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}"
                               for e in errors[:3])
    except Exception:  # noqa: BLE001, S110 - any body will do for the message
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
                raise registry_error(resp, f"registry {self.host}")
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
        if path.startswith(("http://", "https://")):
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
                raise registry_error(resp, what)
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
                   arrival: Arrival | None = None) -> bool:
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
                                raise registry_error(resp, what)
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
        raise registry_error(resp, f"HEAD blob {digest}")

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
            raise registry_error(resp, f"upload of {digest}")
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
                raise registry_error(resp, what)
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
            raise registry_error(resp, what)
        return self._location(resp)

    def _finish_upload(self, location: str, digest: str, what: str) -> None:
        """PUT: the upload at ``location`` becomes blob ``digest``."""
        resp = self._retrying(lambda: self.send("PUT", location, params={"digest": digest},
                                                headers={"Content-Length": "0"}), what)
        resp.close()
        if resp.status_code != 201:
            raise registry_error(resp, what)

    def _upload_status(self, location: str, what: str) -> tuple[int, str]:
        """(next offset, location) of an upload in progress, from the registry's Range."""
        resp = self._retrying(lambda: self.send("GET", location), what)
        resp.close()
        if resp.status_code != 204:
            raise registry_error(resp, f"{what} (resuming)")
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
            raise registry_error(resp, what)
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

    def request(self, method: str, url: str, headers: dict) -> _RawBody:
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
