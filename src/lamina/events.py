"""The event journal: what happened to containers, images, volumes and networks, for ``GET /events``.

    emit(store, type, action, actor_id, attributes=None) -> None

``store``       a :class:`lamina.store.Store` (anything with a ``root``) or the store's root path
``type``        Docker's object type: ``"container"``, ``"image"``, ``"volume"``, ``"network"``
``action``      Docker's action: ``create``, ``start``, ``die``, ``destroy``, ``kill``, ``stop``,
                ``attach``, ``exec_create: CMD``, ``exec_start: CMD``, ``exec_die``, ``tag``,
                ``untag``, ``delete``, ``import``, ``pull``, ``push``, ``save``, ``load``, ...
``actor_id``    the object: a container's full ID, an image ID (``sha256:...``; a reference for
                pull and push), a volume's name
``attributes``  Docker's ``Actor.Attributes``, every value a string (others are made strings).
                Containers: ``name`` (without ``/``), ``image`` (the reference it was created
                from), the container's labels, and ``exitCode`` for ``die``, ``signal`` for
                ``kill``, ``execID`` for ``exec_*``; images: ``name`` and the image's labels;
                volumes: ``driver`` (and ``container`` for mount/unmount)

Call it once the change is done (after the transaction committed), never inside one. It never
raises: an event that cannot be written (a full disk, a read-only store) is dropped rather than
failing the work it reports. It costs one ``open``, one ``write`` and one ``close`` (about 10 us).

The journal is ``<root>/events.log``, one JSON document a line in Docker's ``EventMessage``
shape (new fields only: ``Type``, ``Action``, ``Actor``, ``scope``, ``time``, ``timeNano``; the
API adds the old ones). Every process appends with ``O_APPEND`` and the whole line in one
``write``, so lines of the CLI, the server and the monitors never interleave. Past
:data:`LIMIT` bytes the file is renamed ``events.log.1`` (replacing the older one) and the next
event starts a new file, so the journal keeps the newest 2-4 MiB (about 10,000 events).
:func:`read` reads both; :func:`follow` tails the journal across such renames.
"""

import os
import time

from . import cjson

LOG = "events.log"
LIMIT = 2 << 20  # bytes of events.log before it becomes events.log.1
STALE = 30.0  # seconds after which a rotation lock is taken to be a dead process's


def _root(store) -> str:
    return store if isinstance(store, str) else store.root


def emit(store, type: str, action: str, actor_id: str, attributes: dict | None = None) -> None:
    """Append one event to the store's journal (see the module's docstring)."""
    now = time.time_ns()
    doc = {"Type": type, "Action": action,
           "Actor": {"ID": actor_id,
                     "Attributes": {str(k): v if isinstance(v, str) else str(v)
                                    for k, v in (attributes or {}).items()}},
           "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
    path = os.path.join(_root(store), LOG)
    try:
        line = (cjson.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_size > LIMIT:
            _rotate(path, st.st_ino)
    except (OSError, ValueError):
        pass  # see the docstring: the work it reports must not fail for its event


def actor_prefix(actor_id: str, attributes: dict) -> str:
    """The JSON of an event's ``Actor`` as :func:`emit` writes it, up to the end of its
    attributes (the closing ``}}`` left out), for a writer that appends attributes of its own
    (``lamina-relay``'s health checks, :mod:`lamina.runtime.relay`)."""
    actor = {"ID": actor_id, "Attributes": {str(k): v if isinstance(v, str) else str(v)
                                            for k, v in attributes.items()}}
    return cjson.dumps(actor, separators=(",", ":"), ensure_ascii=False)[1:-2]


def _rotate(path: str, ino: int) -> None:
    """Rename a full ``events.log`` (the inode ``ino``) to ``events.log.1``; one process at a
    time (a lock file made with O_EXCL), so a concurrent rotation never renames the new, small
    file over the old one."""
    lock = path + ".rotating"
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        try:
            if time.time() - os.stat(lock).st_mtime > STALE:  # its process died rotating
                os.unlink(lock)
        except OSError:
            pass
        return
    try:
        st = os.stat(path)
        if st.st_ino == ino and st.st_size > LIMIT:
            os.rename(path, path + ".1")
    finally:
        os.close(fd)
        os.unlink(lock)


# ------------------------------------------------------------------------------ reading
def parse_time(value) -> int | None:
    """Nanoseconds since the epoch of ``since``/``until``: unix seconds (``1700000000``,
    ``1700000000.5``, Docker's ``SECONDS.NANOSECONDS``) or RFC 3339; None for None or ``""``.
    ValueError when it is neither."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    seconds, dot, fraction = text.partition(".")
    if seconds.lstrip("-").isdigit() and (not dot or fraction.isdigit()):
        nanos = int((fraction + "000000000")[:9]) if dot else 0
        return int(seconds) * 1_000_000_000 + (nanos if not seconds.startswith("-") else -nanos)
    from .image import parse_rfc3339

    parsed = parse_rfc3339(text)
    if parsed == 0.0 and not text.startswith("1970-01-01T00:00:00"):
        raise ValueError(f"invalid time {text!r}: unix seconds or RFC 3339")
    frac = text.partition(".")[2]
    digits = frac[:len(frac) - len(frac.lstrip("0123456789"))][:9]
    return int(parsed) * 1_000_000_000 + int(digits.ljust(9, "0") or 0)


def _fuzzy(wanted: list[str], *values: str) -> bool:
    """Docker's name match: equal to, or starting with, one of ``wanted``."""
    return any(v and (v == w or v.startswith(w)) for w in wanted for v in values)


def _strip_tag(name: str) -> str:
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def labels_match(labels: dict, wanted: list[str]) -> bool:
    """Docker's ``label`` filter: every one of ``wanted`` (``KEY`` or ``KEY=VALUE``) is among
    ``labels``."""
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def matches(event: dict, filters: dict | None) -> bool:
    """Docker's event filters (``{"key": [values]}``: any value of a key, every key): ``type``;
    ``event`` (or ``action``: the action, or its part before ``:`` as in ``exec_start: sh``);
    ``container``, ``volume``, ``network``, ``daemon``, ``plugin`` (the actor's ID or ``name``,
    whole or a prefix, and of that type); ``image`` (an image event's ID or name, a container
    event's image, with or without the tag); ``label`` (``KEY`` or ``KEY=VALUE``, all of them,
    among the attributes); ``scope``."""
    if not filters:
        return True
    kind = event.get("Type", "")
    action = event.get("Action", "")
    actor = event.get("Actor") or {}
    actor_id = actor.get("ID", "")
    attributes = actor.get("Attributes") or {}
    for key, wanted in filters.items():
        if not wanted:
            continue
        if key == "type":
            ok = kind in wanted
        elif key in ("event", "action"):
            ok = action in wanted or action.split(":", 1)[0] in wanted
        elif key in ("container", "volume", "network", "daemon", "plugin", "service", "node",
                     "secret", "config"):
            ok = kind == key and _fuzzy(wanted, actor_id, attributes.get("name", ""))
        elif key == "image":
            name = attributes.get("name" if kind == "image" else "image", "")
            candidates = {name, _strip_tag(name)}
            if kind == "image":
                candidates |= {actor_id, _strip_tag(actor_id)}
            ok = bool(candidates & set(wanted))
        elif key == "label":
            ok = labels_match(attributes, wanted)
        elif key == "scope":
            ok = event.get("scope", "local") in wanted
        else:
            continue  # Docker ignores the keys it does not know
        if not ok:
            return False
    return True


def _lines(data: bytes):
    for raw in data.split(b"\n"):
        if raw.strip():
            try:
                doc = cjson.loads(raw)
            except ValueError:
                continue  # a torn line (a process killed mid-write on a full disk)
            if isinstance(doc, dict):
                yield doc


def _in_window(event: dict, since: int | None, until: int | None) -> bool:
    t = event.get("timeNano")
    if not isinstance(t, int):
        return False
    return (since is None or t >= since) and (until is None or t <= until)


def read(store, since=None, until=None, filters: dict | None = None) -> list[dict]:
    """The journal's events from ``since`` to ``until`` (nanoseconds, or anything
    :func:`parse_time` takes; None: from the oldest kept, to now) that pass ``filters``,
    oldest first."""
    since, until = _nanos(since), _nanos(until)
    path = os.path.join(_root(store), LOG)
    out = []
    for name in (path + ".1", path):
        try:
            with open(name, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        out.extend(e for e in _lines(data) if _in_window(e, since, until) and matches(e, filters))
    out.sort(key=lambda e: e["timeNano"])
    return out


def _nanos(value) -> int | None:
    return value if isinstance(value, int) or value is None else parse_time(value)


def follow(store, since=None, until=None, filters: dict | None = None, stop=None,
           interval: float = 0.1):
    """Yield events as :func:`read` does and then those written afterwards, as they come
    (polling every ``interval`` seconds), until ``until`` has passed or ``stop()`` is true.
    Without ``since`` or ``until`` only new events come (``docker events``); with either, the
    kept ones from ``since`` (or the oldest) first. Follows ``events.log`` across its renames."""
    since, until = _nanos(since), _nanos(until)
    path = os.path.join(_root(store), LOG)
    tail = _Tail(path, from_start=since is not None or until is not None)
    try:
        if since is not None or until is not None:  # the older file first, if ours is new
            try:
                with open(path + ".1", "rb") as f:
                    if tail.ino is None or os.fstat(f.fileno()).st_ino != tail.ino:
                        for event in _lines(f.read()):
                            if _in_window(event, since, until) and matches(event, filters):
                                yield event
            except FileNotFoundError:
                pass
        while True:
            ended = until is not None and time.time_ns() > until
            for event in tail.poll():
                if _in_window(event, since, until) and matches(event, filters):
                    yield event
            if ended or (stop is not None and stop()):
                return
            time.sleep(interval)
    finally:
        tail.close()


class _Tail:
    """``tail -F`` of the journal: complete lines as they are appended, across the renames to
    ``events.log.1``. A writer may still append to a renamed file for a moment (it opened the
    file before the rename), so a renamed file is read for one more poll before it is let go;
    and when the journal was renamed twice since the last poll, the file in between (now
    ``events.log.1``) is read too."""

    def __init__(self, path: str, from_start: bool):
        self.path = path
        self.fd: int | None = None
        self.ino: int | None = None
        self.pending = b""
        self.old: list[tuple[int, bytes]] = []  # renamed files to read once more: (fd, pending)
        self._open(at_end=not from_start)

    def _open(self, at_end: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        self.fd, self.ino, self.pending = fd, os.fstat(fd).st_ino, b""
        if at_end:
            os.lseek(fd, 0, os.SEEK_END)

    @staticmethod
    def _drain(fd: int, pending: bytes) -> tuple[list[dict], bytes]:
        chunks = [pending]
        while True:
            data = os.read(fd, 1 << 20)
            if not data:
                break
            chunks.append(data)
        data = b"".join(chunks)
        complete, newline, rest = data.rpartition(b"\n")
        return (list(_lines(complete)) if newline else []), (rest if newline else data)

    def poll(self) -> list[dict]:
        out = []
        for fd, pending in self.old:  # a writer that opened a renamed file wrote its line by now
            out.extend(self._drain(fd, pending)[0])
            os.close(fd)
        self.old = []
        if self.fd is None:
            self._open(at_end=False)  # the first event made the file
            if self.fd is None:
                return out
        events, self.pending = self._drain(self.fd, self.pending)
        out.extend(events)
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != self.ino:  # renamed to events.log.1: read on once more, then the new one
            self.old.append((self.fd, self.pending))
            try:
                fd = os.open(self.path + ".1", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            if fd is not None and os.fstat(fd).st_ino != self.ino:  # renamed twice meanwhile
                events, pending = self._drain(fd, b"")
                out.extend(events)
                self.old.append((fd, pending))
            elif fd is not None:
                os.close(fd)
            self.fd = self.ino = None
            self._open(at_end=False)
            if self.fd is not None:
                events, self.pending = self._drain(self.fd, self.pending)
                out.extend(events)
        return out

    def close(self) -> None:
        for fd in [self.fd] + [fd for fd, _ in self.old]:
            if fd is not None:
                os.close(fd)
        self.fd, self.old = None, []
