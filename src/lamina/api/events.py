"""Engine API: ``GET /events``, the store's event journal (:mod:`lamina.events`) as Docker's
stream of ``EventMessage`` documents, one a chunk.

The journal is written by every process that changes the store (the CLI, this server, the
containers' monitors), so ``docker events`` here sees a ``lamina rm`` as well. ``since`` and
``until`` are unix seconds (``1700000000``, ``1700000000.123456789``: what the docker CLI sends)
or RFC 3339. With either, the kept events from ``since`` come first; with ``until`` the stream
ends once that time has passed, without it it follows the journal until the client goes away
(Docker's rules). Container and image events carry the old fields too (``status``, ``id``,
``from``), which docker-compose 1.29 reads.
"""

from __future__ import annotations

import json
import socket

from .. import events
from .server import ApiError, route


def message(event: dict) -> dict:
    """A journal event as Docker's ``EventMessage``: the old fields first for containers and
    images, as Docker orders them, each only when it has a value (a prune names no ID)."""
    kind = event.get("Type")
    if kind not in ("container", "image"):
        return event
    actor = event.get("Actor") or {}
    old = {"status": event.get("Action"), "id": actor.get("ID"),
           "from": (actor.get("Attributes") or {}).get("image") if kind == "container" else None}
    return {**{k: v for k, v in old.items() if v}, **event}  # Docker omits the empty ones


def _time(request, key: str) -> int | None:
    try:
        return events.parse_time(request.arg(key))
    except ValueError:
        raise ApiError(400, f"invalid value for {key}: {request.arg(key)!r} (unix seconds, "
                            "with a fraction or not, or RFC 3339)") from None


def _seconds(nanos: int) -> str:
    return f"{nanos // 1_000_000_000}" + (f".{nanos % 1_000_000_000:09d}".rstrip("0")
                                          if nanos % 1_000_000_000 else "")


def client_gone(conn) -> bool:
    """Whether the client closed its side (a peek reads the end of the stream)."""
    try:
        data = socket.socket.recv(conn, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True
    return data == b""


@route("GET", "/events")
def stream_events(request):
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and since > until:
        raise ApiError(400, f"`since` time ({_seconds(since)}) cannot be after `until` time "
                            f"({_seconds(until)})")
    filters = request.filters()
    conn = request.http.connection
    root = request.engine.root
    request.close()  # the store's database is not needed while the stream lasts
    found = events.follow(root, since, until, filters,
                          stop=lambda: client_gone(conn), interval=0.1)
    writer = request.start_stream("application/json")
    try:
        for event in found:
            writer.write(json.dumps(message(event), separators=(",", ":")).encode() + b"\n")
        writer.close()
    finally:
        found.close()
