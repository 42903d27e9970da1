"""The HTTP side of ``lamina serve``: sockets, requests, routing, responses, hijacked streams.

Built on the standard library's threading HTTP server (one thread a connection, HTTP/1.1 with
keep-alive), because the Engine API needs what frameworks hide: a hijacked connection (``attach``
and ``exec start`` answer ``101 UPGRADED`` and then speak raw bytes both ways, the client
half-closing its side when stdin ends while the server keeps writing), a ``200`` flushed before
a handler blocks (``wait?condition=next-exit`` must reach the client before it calls ``start``),
and chunked request bodies (build, load, import and ``cp`` stream theirs). aiohttp closes a
half-closed connection unless its transport is taken over, and ASGI servers cannot hijack at
all; a thread a connection is what the docker CLI and docker-py need, and lamina's work (SQLite,
runc, files) blocks anyway.

Handlers are plain functions ``handler(request, **path_parameters)`` registered with
:func:`route`; they return a JSON-able value (a ``200`` with it), or answer through the
:class:`Request` (``send_json``, ``send_stream``, ``send_bytes``, ``hijack``...). A
:class:`~lamina.errors.LaminaError` becomes Docker's status and ``{"message": ...}``; anything
else a ``500`` (logged with its traceback, the server goes on).

The handler modules are imported by :func:`lamina.api.main.load_handlers` (a new module of
handlers is added to its list); :func:`lamina.api.main.serve` runs a server.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from socketserver import TCPServer as _TCPServer
from socketserver import ThreadingMixIn, UnixStreamServer
from urllib.parse import parse_qs, unquote, urlsplit

from .. import __version__ as LAMINA_VERSION
from ..errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    LaminaError,
    NotFound,
    Unavailable,
)
from ..fsutil import Readable

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"
MAX_JSON_BODY = 16 << 20  # a create or exec body is a few KiB; this bounds a hostile one
MAX_HEADER_BYTES = 64 << 10  # every header line together (the standard library caps each line)


class ApiError(Exception):
    """An answer other than success: ``status`` and Docker's one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(error: BaseException) -> int:
    """Docker's status code for a lamina error: 404 unknown object, 409 conflict, 400 bad input."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, AlreadyExists | FailedPrecondition):
        return 409
    if isinstance(error, InvalidArgument):
        return 400
    if isinstance(error, Unavailable):
        return 501
    if getattr(error, "exit_code", None) == 125 and type(error).__name__ == "UsageError":
        return 400
    if getattr(error, "exit_code", None) in (126, 127):
        return 400  # the command cannot be run or found: the caller's to fix, as Docker says
    return 500


# ------------------------------------------------------------------------------------ routes
_BY_SEGMENT: dict[str, list[tuple[str, re.Pattern, object]]] = {}  # "containers" -> its routes


def route(method: str, pattern: str):
    """Register ``handler`` for ``method`` (GET, POST, ...; GET also answers HEAD) on ``pattern``:
    a path whose ``{name}`` parts match one segment and ``{name:.+}`` parts anything (image
    names hold slashes)."""
    regex = re.sub(r"\{(\w+)(?::([^}]+))?\}",
                   lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})", pattern)
    compiled = re.compile(f"^{regex}$")
    if "{" in _first_segment(pattern):
        raise ValueError(f"a route's first segment must be literal: {pattern}")

    def register(handler):
        _BY_SEGMENT.setdefault(_first_segment(pattern), []).append((method, compiled, handler))
        return handler

    return register


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") else ""


def find_route(method: str, path: str):
    """(handler, parameters) for a request; ApiError 404 or 405 when there is none. Only the
    routes under the path's first segment are tried (every pattern starts with a literal one).
    The answers for short paths are kept (a client asks the same ones again and again: an
    inspect's path went through 14 patterns, 15 us); the parameters are for reading only."""
    if len(path) <= 256:
        return _known_route(method, path)
    return _route(method, path)


@lru_cache(maxsize=1024)
def _known_route(method: str, path: str):
    return _route(method, path)


def _route(method: str, path: str):
    allowed = False
    for verb, regex, handler in _BY_SEGMENT.get(_first_segment(path), ()):
        m = regex.match(path)
        if m is None:
            continue
        if verb == method or (method == "HEAD" and verb == "GET"):
            return handler, {k: unquote(v) for k, v in m.groupdict().items()}
        allowed = True
    if allowed:
        raise ApiError(405, f"method {method} is not allowed on {path}")
    raise ApiError(404, f"page not found: {path}")


@lru_cache(maxsize=64)
def version_tuple(text: str) -> tuple[int, ...]:
    """``"1.44"`` -> ``(1, 44)`` (asked a few times a request: kept for the versions seen)."""
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise ApiError(400, f"invalid API version {text!r}") from None


# ------------------------------------------------------------------------------ Go's JSON
class MapOf:
    """In a :func:`go_fields` schema: a JSON object whose keys are data (names, ports) and whose
    values are the struct (or list of structs) ``fields``."""

    def __init__(self, fields: dict):
        self.fields = fields


def go_fields(doc, fields: dict):
    """``doc`` with its keys named as Go's encoding/json matches them to a struct's fields, as
    Docker decodes a request body: a key that is no field's exact name takes the field whose name
    it matches case-insensitively (docker-py sends ``detachKeys``), the last of two such keys
    wins, and unknown keys stay. ``fields``: canonical name -> None (the value is kept as it is),
    the fields of the struct it holds (or of each struct of a list), or a :class:`MapOf`."""
    if not isinstance(doc, dict):
        return doc
    lowered = {name.lower(): name for name in fields}
    out = {}
    for key, value in doc.items():
        name = key if key in fields else lowered.get(key.lower(), key)
        inner = fields.get(name)
        if isinstance(inner, MapOf) and isinstance(value, dict):
            value = {k: _go_value(v, inner.fields) for k, v in value.items()}
        elif isinstance(inner, dict):
            value = _go_value(value, inner)
        out[name] = value
    return out


def _go_value(value, fields: dict):
    return [go_fields(v, fields) for v in value] if isinstance(value, list) else \
        go_fields(value, fields)


MULTIPLEXED = "application/vnd.docker.multiplexed-stream"  # 8-byte frame headers
RAW = "application/vnd.docker.raw-stream"

# ---------------------------------------------------------------------------------- requests
class Request:
    """One API call: what the client asked (method, path, query, body) and the ways to answer."""

    def __init__(self, http: Handler, method: str, path: str, query: dict, version: str):
        self.http = http
        self.method = method
        self.path = path
        self.query = query  # name -> list of values
        self.version = version  # the API version the client asked for (or ours)
        self.headers = http.headers
        self.server: ApiServer = http.server
        self.answered = False
        self._engine = None
        self._body = None

    # -------------------------------------------------------------- what was asked
    @property
    def engine(self):
        """The store's Engine, for this request alone (taken from the server's pool)."""
        if self._engine is None:
            self._engine = self.server.engines.take()
        return self._engine

    def close(self, failed: bool = False) -> None:
        """Done with the Engine: back to the pool (closed instead after an unexpected error)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            self.server.engines.give(engine, reusable=not failed)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """A query parameter; the first of repeated ones, as Go's ``FormValue`` takes it."""
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean query parameter as Docker reads them: 1/true/True/yes are true."""
        value = self.arg(name)
        if value is None:
            return default
        return value.strip().lower() in ("1", "true", "yes", "on")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {value!r}") from None

    def atoi(self, name: str) -> int:
        """A number parameter that must be there, refused in Docker's words (Go's strconv.Atoi):
        a terminal's ``h`` and ``w``."""
        value = self.arg(name) or ""
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f'strconv.Atoi: parsing "{value}": invalid syntax') from None

    def filters(self) -> dict[str, list[str]]:
        """The ``filters`` parameter: ``{"name": ["a"]}`` or the old ``{"name": {"a": true}}``."""
        text = self.arg("filters")
        if not text:
            return {}
        try:
            doc = json.loads(text)
        except ValueError:
            raise ApiError(400, f"invalid filters: {text!r}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, f"invalid filters: {text!r}")
        out = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                out[key] = [k for k, v in value.items() if v]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            else:
                out[key] = [str(value)]
        return out

    def body_reader(self):
        """The request body as a file-like object (chunked or Content-Length; empty if none)."""
        if self._body is None:
            self._body = BodyReader(self.http.rfile, self.headers)
        return self._body

    def json(self, default=None):
        """The request body decoded as JSON (``default`` when empty); 400 when it is not JSON."""
        data = self.body_reader().read(MAX_JSON_BODY + 1)
        if len(data) > MAX_JSON_BODY:
            raise ApiError(413, "request body too large")
        if not data.strip():
            return default
        try:
            return json.loads(data)
        except ValueError as e:
            raise ApiError(400, f"invalid JSON in the request body: {e}") from None

    # -------------------------------------------------------------- answers
    def gate(self):
        """Held while the request works (see :class:`Gate`); a stream lets go of it."""
        self._gate = self.server.gate
        return self

    def __enter__(self):
        self._gate.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release_gate()

    def release_gate(self) -> None:
        """Done with the CPU for a while: a stream waits on clients, processes and files."""
        gate, self._gate = getattr(self, "_gate", None), None
        if gate is not None:
            gate.release()

    def _start(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        if self.answered:
            raise RuntimeError("this request was answered already")
        self.answered = True
        self.http.answer(status, headers, body)

    def send_bytes(self, status: int, data: bytes, content_type: str = "application/json",
                   headers: dict | None = None) -> None:
        self._start(status, {"Content-Type": content_type, "Content-Length": str(len(data)),
                             **(headers or {})}, b"" if self.method == "HEAD" else data)

    def send_json(self, status: int, doc) -> None:
        self.send_bytes(status, json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    def send_empty(self, status: int = 204, headers: dict | None = None) -> None:
        self._start(status, {"Content-Length": "0", **(headers or {})} if status != 204
                    else dict(headers or {}))

    def send_stream(self, chunks, content_type: str = "application/json", status: int = 200,
                    headers: dict | None = None) -> None:
        """A chunked body from an iterable of bytes (a JSON stream: one document a chunk, each
        sent as soon as it is made; a tar: its blocks)."""
        writer = self.start_stream(content_type, status, headers)
        try:
            for chunk in chunks:
                writer.write(chunk)
        finally:
            writer.close()

    def start_stream(self, content_type: str = "application/json", status: int = 200,
                     headers: dict | None = None) -> ChunkedWriter:
        """Send the status and headers now (the client sees them at once) and return a writer of
        the chunked body; ``close()`` it to end the body."""
        self._start(status, {"Content-Type": content_type, "Transfer-Encoding": "chunked",
                             **(headers or {})})
        self.release_gate()
        return ChunkedWriter(self.http.wfile, head=self.method == "HEAD")

    def stream_type(self, tty: bool) -> str:
        """The media type of a container's output stream, as Docker names it for the client's
        API version: multiplexed-stream without a terminal from 1.42 on, raw-stream otherwise
        (before 1.42 a stream without a terminal is framed all the same)."""
        return RAW if tty or version_tuple(self.version) < (1, 42) else MULTIPLEXED

    def hijack(self, content_type: str) -> socket.socket:
        """Take the connection over (``attach``, ``exec start``): ``101 UPGRADED`` when the
        client asked to upgrade, else a ``200`` whose body is the raw stream until close. Sent
        alone, before anything runs; returns the socket, which is the caller's from now on."""
        upgrade = "upgrade" in self.headers.get("Connection", "").lower()
        if upgrade:
            self._start(101, {"Content-Type": content_type, "Connection": "Upgrade",
                              "Upgrade": self.headers.get("Upgrade", "tcp")})
        else:
            self._start(200, {"Content-Type": content_type})
        self.http.wfile.flush()
        self.http.close_connection = True
        self.release_gate()
        return self.http.connection

    def send_error(self, error: BaseException) -> None:
        status = status_of(error)
        message = str(error) or type(error).__name__
        if self.answered:
            return  # mid-stream: the connection is closed instead (see Handler.dispatch)
        self.send_json(status, {"message": message})


class BodyReader(Readable):
    """A request body as a stream: ``Transfer-Encoding: chunked`` decoded, or ``Content-Length``
    bytes; what the client did not send reads as the end."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length")
        try:
            self.left = int(length) if length and not self.chunked else 0
        except ValueError:
            raise ApiError(400, f"invalid Content-Length: {length!r}") from None
        if self.left < 0:
            raise ApiError(400, f"invalid Content-Length: {length!r}")
        self.chunk_left = 0
        self.done = not self.chunked and self.left == 0

    def _next_chunk(self) -> None:
        line = self.rfile.readline(1024)
        size = line.split(b";", 1)[0].strip()
        try:
            self.chunk_left = int(size, 16)
        except ValueError:
            raise ApiError(400, "invalid chunked request body") from None
        if self.chunk_left == 0:
            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self.done = True

    def read(self, n: int = -1) -> bytes:
        out = []
        want = n if n is not None and n >= 0 else 1 << 62
        while want > 0 and not self.done:
            if self.chunked:
                if self.chunk_left == 0:
                    self._next_chunk()
                    continue
                data = self.rfile.read(min(want, self.chunk_left, 1 << 20))
                if not data:
                    self.done = True
                    break
                self.chunk_left -= len(data)
                if self.chunk_left == 0:
                    self.rfile.readline(16)  # the CRLF after the chunk
            else:
                data = self.rfile.read(min(want, self.left, 1 << 20))
                if not data:
                    self.done = True
                    break
                self.left -= len(data)
                self.done = self.left == 0
            out.append(data)
            want -= len(data)
        return b"".join(out)


class ChunkedWriter:
    """Writes a chunked response body: one chunk a ``write``, flushed at once."""

    def __init__(self, wfile, head: bool = False):
        self.wfile = wfile
        self.head = head
        self.closed = False

    def write(self, data: bytes) -> int:
        if data and not self.head:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        return len(data)

    def json(self, doc) -> None:
        self.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.head:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()


# ------------------------------------------------------------------------------ the handler
class Headers(dict):
    """A request's headers by lower-cased name (the first of repeated ones, as ``email``'s
    ``Message.get`` answers); ``get`` takes any case."""

    def add(self, name: str, value: str) -> None:
        self.setdefault(name.lower(), value)

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str):
        return dict.get(self, name.lower())

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name.lower())


_VERSIONED = re.compile(r"^/v(\d+(?:\.\d+)*)(/.*)$")
_DOCKER_HEADERS = f"Api-Version: {API_VERSION}\r\nDocker-Experimental: false\r\nOstype: linux\r\n\r\n"
_DATE = [0, ""]  # the second, and the Date header's text for it


def _http_date() -> str:
    """Now as an HTTP date, formatted once a second."""
    now = int(time.time())
    second, text = _DATE
    if second != now:
        from email.utils import formatdate

        text = formatdate(now, usegmt=True)
        _DATE[:] = [now, text]
    return text


class Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (keep-alive), each dispatched to its route."""

    protocol_version = "HTTP/1.1"
    server: ApiServer

    def version_string(self) -> str:
        return f"lamina/{LAMINA_VERSION} (linux)"

    def setup(self) -> None:
        super().setup()
        self.server.activity(+1)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.activity(-1)

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

    def parse_request(self) -> bool:
        """The request line and headers, read here rather than by the standard library's
        ``email`` parser (70 us of a 1 ms request): HTTP/1.x only, a header a line (no
        folded lines), at most 100 of them and :data:`MAX_HEADER_BYTES` in all."""
        self.command = None
        self.request_version = "HTTP/0.9"  # until the request line says otherwise
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, f"bad request line {self.requestline[:100]!r}")
            return False
        self.command, self.path, self.request_version = words
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        headers = Headers()
        size = 0
        while True:
            line = self.rfile.readline(MAX_HEADER_BYTES + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            size += len(line)
            if size > MAX_HEADER_BYTES or len(headers) >= 100:
                self.send_error(431, "request headers too large")
                return False
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(400, f"bad header line {line[:100]!r}")
                return False
            headers.add(name, value.strip())
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        self.close_connection = (connection == "close" or
                                 (self.request_version == "HTTP/1.0" and connection != "keep-alive"))
        if headers.get("Expect", "").lower() == "100-continue" and \
                self.request_version != "HTTP/1.0":
            return self.handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's errors (bad request line, bad headers), as Docker's JSON."""
        body = json.dumps({"message": message or self.responses.get(code, ("error",))[0]}).encode()
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # answer with a status line and headers anyway
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def end_headers(self, body: bytes = b"") -> None:
        """Docker's headers, the end of the headers and ``body`` in one write (the standard
        library's errors: see :meth:`send_error`; every other answer goes through ``answer``)."""
        self._headers_buffer.append(_DOCKER_HEADERS.encode("latin-1") + body)  # as answer's
        self.flush_headers()

    def answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        """The status line, ``headers``, Docker's own headers and ``body`` in one write: one
        packet for a small answer (two writes cost a small request 6-15% of its time), made in
        one string (the standard library's send_response and send_header, a line at a time with
        a Date formatted each, were a fifth of a ``docker images`` request's time)."""
        if self.server.verbose:
            self.log_request(status)
        reason = "UPGRADED" if status == 101 else self.responses.get(status, ("",))[0]  # Docker's
        lines = [f"{self.protocol_version} {status} {reason}\r\n",
                 f"Server: {self.version_string()}\r\nDate: {_http_date()}\r\n"]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n")
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True  # as send_header notes it
        lines.append(_DOCKER_HEADERS)
        self.wfile.write("".join(lines).encode("latin-1") + body)

    def do_GET(self) -> None:
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def dispatch(self) -> None:
        if "?" in self.path or "#" in self.path or not self.path.startswith("/"):
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        else:  # most of the docker CLI's calls (4 us less)
            path, query = self.path, {}
        version = API_VERSION
        m = _VERSIONED.match(path)
        if m:
            version, path = m.group(1), m.group(2)
        request = Request(self, self.command, path, query, version)
        failed = False
        try:
            if m:
                asked = version_tuple(version)
                if asked > version_tuple(API_VERSION):
                    raise ApiError(400, f"client version {version} is too new. Maximum "
                                        f"supported API version is {API_VERSION}")
                if asked < version_tuple(MIN_API_VERSION):
                    raise ApiError(400, f"client version {version} is too old. Minimum "
                                        f"supported API version is {MIN_API_VERSION}, please "
                                        "upgrade your client to a newer version")
            handler, params = find_route(self.command, path)
            with request.gate():
                result = handler(request, **params)
            if not request.answered:
                if result is None:
                    request.send_empty(204)
                else:
                    request.send_json(200, result)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            if not isinstance(error, LaminaError | ApiError):
                failed = True
                self.log_error("%s", "".join(traceback.format_exception(error)).rstrip())
            if request.answered:
                self.close_connection = True  # mid-stream: the client sees the body end early
            else:
                try:
                    request.send_error(error)
                except OSError:
                    self.close_connection = True
        finally:
            request.close(failed=failed)
            body = request._body
            if body is not None and not body.done and not self.close_connection:
                self.close_connection = True  # an unread body would be taken for the next request
            elif body is None and (self.headers.get("Content-Length", "0") not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
                try:
                    BodyReader(self.rfile, self.headers).drain()
                except (OSError, ApiError):
                    self.close_connection = True

    def log_error(self, format: str, *args) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")


# ------------------------------------------------------------------------------- the servers
class Gate:
    """A semaphore of ``n`` places made of a queue of ``n`` tokens: taken and given back by every
    request, and the standard library's Semaphore (Python code around a Condition) cost 4.6 us
    for the pair where the queue's C code costs 0.2 us. Giving back more than was taken is the
    caller's mistake (:meth:`Request.release_gate` gives back once)."""

    def __init__(self, n: int):
        from queue import SimpleQueue

        self._tokens: SimpleQueue = SimpleQueue()
        for _ in range(n):
            self._tokens.put(None)

    def acquire(self) -> None:
        self._tokens.get()

    def release(self) -> None:
        self._tokens.put(None)


class EnginePool:
    """Open Engines of the store, handed to one request at a time: opening one (a SQLite
    connection, its pragmas, the store's crash recovery) was a fifth of a small request's time.
    An Engine idle for more than a second runs the store's recovery again when it is taken, as
    each CLI command does when it opens the store; one a request left in a transaction, or
    after an unexpected error, is closed rather than reused."""

    KEEP = 8

    def __init__(self, root: str, driver: str | None):
        self.root, self.driver = root, driver
        self.free: list = []
        self.recovered: dict[int, float] = {}  # id(engine) -> when its store last recovered
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            engine = self.free.pop() if self.free else None
        now = time.monotonic()
        if engine is None:
            from ..engine import Engine

            engine = Engine(self.root, self.driver)  # recovers on opening
        elif now - self.recovered.get(id(engine), 0.0) > 1.0:
            engine.store.recover()
        else:
            return engine
        with self.lock:
            self.recovered[id(engine)] = now
        return engine

    def give(self, engine, reusable: bool = True) -> None:
        if reusable and not engine.db.in_transaction:
            with self.lock:
                if len(self.free) < self.KEEP:
                    self.free.append(engine)
                    return
        with self.lock:
            self.recovered.pop(id(engine), None)
        engine.close()



class ApiServer(ThreadingMixIn):
    """What the servers share: the store they serve and the idle timer."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    root: str
    driver: str | None
    verbose = False
    timeout_seconds = 0.0

    def init_state(self, root: str, driver: str | None, timeout: float, verbose: bool) -> None:
        self.root, self.driver, self.verbose = root, driver, verbose
        self.engines = EnginePool(root, driver)
        self.timeout_seconds = timeout
        self._lock = threading.Lock()
        # At most this many requests run Python at once: with a thread a connection, 100
        # clients at once otherwise share the interpreter's lock 100 ways and each waits for
        # all (measured: 33 requests/s at 100 at once against 124 one by one). Streams (attach,
        # wait, logs, events, pulls) let go of it once their answer starts, and handlers that
        # wait on processes (stop, kill, start) before they block (Request.release_gate).
        self.gate = Gate(max(4, os.cpu_count() or 4))
        self._active = 0
        self._last = time.monotonic()
        self._stopping, self._stopped = threading.Event(), threading.Event()
        self._want_acceptor = threading.Event()
        self._spare = 0  # acceptors waiting in accept()
        self.started = time.time()

    # A connection is handled by the thread that accepted it: threads wait in accept() on the
    # listening socket, and one that takes a connection serves it at once, while the main thread
    # starts another to wait in its place. Starting a thread after accept() (the standard
    # library's ThreadingMixIn) put 0.4-0.8 ms into every connection, and the docker CLI opens
    # one per command.
    SPARE_ACCEPTORS = 4

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        # Blocking accept(): the kernel wakes one waiting thread a connection (with a timeout,
        # Python polls first, and every acceptor woke, three to find nothing, all wanting the
        # interpreter's lock while the fourth served). shutdown() wakes them all.
        self.socket.settimeout(None)
        try:
            wanted = True
            while not self._stopping.is_set():
                with self._lock:  # topped up only when asked: not while one is being served
                    missing = self.SPARE_ACCEPTORS - self._spare if wanted else 0
                    self._spare += max(0, missing)
                for _ in range(missing):
                    threading.Thread(target=self._accept_loop, daemon=True,
                                     name="acceptor").start()
                wanted = self._want_acceptor.wait(poll_interval)
                self._want_acceptor.clear()
        finally:
            self._stopped.set()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                request, client_address = self.get_request()
            except OSError as e:
                if self._stopping.is_set():
                    break
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    time.sleep(0.05)  # out of descriptors: give the open ones time to close
                continue  # or a failed TLS handshake
            with self._lock:
                self._spare -= 1
                low = self._spare < self.SPARE_ACCEPTORS // 2
            if low:  # else no thread is started while this connection is served
                self._want_acceptor.set()
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 (logged; the server goes on, as socketserver does)
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._lock:
                if self._spare >= self.SPARE_ACCEPTORS:
                    return
                self._spare += 1
        with self._lock:
            self._spare -= 1

    def shutdown(self) -> None:
        """Stop serving: serve_forever returns, and the acceptors' accept() fails at once."""
        self._stopping.set()
        self._want_acceptor.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # Linux: a blocked accept() returns EINVAL
        except OSError:
            pass
        self._stopped.wait()

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-request is no error of ours; anything else is logged."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def activity(self, delta: int) -> None:
        with self._lock:
            self._active += delta
            self._last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._active else time.monotonic() - self._last

    def watch_idle(self) -> None:
        """End the server after ``timeout_seconds`` without a connection (0: never)."""
        if self.timeout_seconds <= 0:
            return

        def watch():
            while True:
                time.sleep(min(1.0, self.timeout_seconds / 4))
                if self.idle_for() >= self.timeout_seconds:
                    self.shutdown()
                    return

        threading.Thread(target=watch, daemon=True, name="idle").start()


class UnixApiServer(ApiServer, UnixStreamServer):
    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("local", 0)  # the standard library's logging wants a (host, port)


class TCPApiServer(ApiServer, _TCPServer):
    allow_reuse_address = True
    tls = None

    def get_request(self):
        conn, address = self.socket.accept()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        return conn, address


def listen(address: str, *, group: str | None = None, tls=None, inherited: socket.socket | None = None):
    """A server bound to ``unix:///PATH`` or ``tcp://HOST:PORT`` (loopback only unless ``tls``).
    A unix socket is made 0600, 0660 and owned by ``group`` when one is given."""
    if inherited is not None:
        cls = UnixApiServer if inherited.family == socket.AF_UNIX else TCPApiServer
        server = cls(inherited.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = inherited
        return server
    if address.startswith("unix://"):
        path = address[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidArgument(f"the socket path must be absolute: {address}")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _remove_stale(path)
        old = os.umask(0o177)
        try:
            server = UnixApiServer(path, Handler)
        finally:
            os.umask(old)
        if group is not None:
            import grp

            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                server.server_close()
                os.unlink(path)
                raise InvalidArgument(f"no such group: {group}") from None
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
        return server
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rstrip("/").rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
            raise InvalidArgument(f"invalid address {address!r}: tcp://HOST:PORT")
        if tls is None and not _loopback(host):
            raise InvalidArgument(f"refusing to serve the API without TLS on {host}: use a "
                                  "loopback address, or --tls with --tlscert, --tlskey and "
                                  "--tlscacert")
        TCPApiServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = TCPApiServer((host, int(port)), Handler)
        server.tls = tls
        return server
    raise InvalidArgument(f"invalid address {address!r}: unix:///PATH or tcp://HOST:PORT")


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody listens on (a server that was killed); refuse a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"another server is listening on {path}")


def tls_context(cert: str, key: str, ca: str | None, verify: bool):
    """Docker's ``--tlsverify`` semantics: the server's certificate, and with ``verify`` only
    clients whose certificate the CA signed."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if verify:
            if not ca:
                raise InvalidArgument("--tlsverify needs --tlscacert")
            context.load_verify_locations(ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(f"cannot load the TLS files: {e}") from None
    return context


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation: LISTEN_PID, LISTEN_FDS), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=3)
