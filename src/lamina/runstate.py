"""What a container's owner knows beyond its row: restart count, whether it is waiting to
restart, its health. One small JSON file, ``<bundle>/runstate.json``.

Its owner (:mod:`lamina.runtime.monitor`, the only writer while it lives) replaces the file
whole (write, then rename), so readers (``ps``, ``inspect``, the Engine API) see one version or
the next, never half of one. It is read only for containers that have something to show there
(a restart policy, a health check), and it outlives the owner: ``RestartCount`` and the last
health log stay readable once the container has exited, as Docker keeps them.

    {"RestartCount": 3, "Restarting": false,
     "Health": {"Status": "healthy", "FailingStreak": 0, "Log": [...]}}

A container whose owner is ``lamina-relay`` (:mod:`lamina.runtime.relay`) has its health since
the process started in a second file, ``<bundle>/health.json`` (:data:`RELAYED_HEALTH`,
``{"Status", "FailingStreak", "Log"}``), which the relay replaces after each probe, so that a
probe needs no Python: :func:`read` gives the two as one ``Health`` (the status and streak of
the relay's, the log of both, the last five), and :func:`fold` makes them one file again.
"""

from __future__ import annotations

import os

from . import cjson

FILE = "runstate.json"
RELAYED_HEALTH = "health.json"
MAX_LOG_ENTRIES = 5  # health log entries kept (Docker's)


def read(bundle: str) -> dict:
    """The state in ``bundle`` (with the relay's health, see above); ``{}`` when nothing was
    written (or it cannot be read)."""
    doc = _load(os.path.join(bundle, FILE))
    health = doc.get("Health")
    if isinstance(health, dict):
        relayed = _load(os.path.join(bundle, RELAYED_HEALTH))
        if relayed:
            log = [*(health.get("Log") or []), *(relayed.get("Log") or [])]
            doc["Health"] = {"Status": relayed.get("Status", health.get("Status")),
                             "FailingStreak": relayed.get("FailingStreak", 0),
                             "Log": log[-MAX_LOG_ENTRIES:]}
    return doc


def _load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = cjson.loads(f.read() or b"{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def fold(bundle: str) -> None:
    """Make the relay's health (see above) part of the state file again, once no relay runs
    (at the exit); nothing without one."""
    if os.path.exists(os.path.join(bundle, RELAYED_HEALTH)):
        write(bundle, read(bundle))
        drop_relayed(bundle)


def drop_relayed(bundle: str) -> None:
    """Remove the relay's health file: once the state file has it, or for a new start (whose
    health begins with what :func:`read` gave)."""
    try:
        os.unlink(os.path.join(bundle, RELAYED_HEALTH))
    except FileNotFoundError:
        pass


def write(bundle: str, doc: dict) -> None:
    """Replace the state in ``bundle`` with ``doc`` (atomically: a rename)."""
    replace_json(os.path.join(bundle, FILE), doc)


def replace_json(path: str, doc) -> None:
    """Write ``doc`` as JSON to ``path`` through a rename, so that a reader sees the old
    version or the new one, never a part."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        cjson.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, path)


def health_status(doc: dict) -> str:
    """``starting``, ``healthy``, ``unhealthy``, or ``none`` without a health check (the value
    of Docker's ``health`` filter)."""
    health = doc.get("Health")
    return health.get("Status", "none") if isinstance(health, dict) else "none"


class Keeper:
    """The owner's copy of the state, saved on every change; changes may come from more than
    one thread of the owner (its health checks), one at a time."""

    def __init__(self, bundle: str, doc: dict):
        import threading

        self.bundle = bundle
        self.doc = doc
        self.lock = threading.Lock()
        write(bundle, doc)

    def update(self, change) -> None:
        """Apply ``change(doc)`` and save."""
        with self.lock:
            change(self.doc)
            write(self.bundle, self.doc)
