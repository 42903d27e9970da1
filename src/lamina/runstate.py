"""What a container's owner knows beyond its row: restart count, whether it is waiting to
restart, its health. One small JSON file, ``<bundle>/runstate.json``.

Its owner (:mod:`lamina.runtime.monitor`, the only writer while it lives) replaces the file
whole (write, then rename), so readers (``ps``, ``inspect``, the Engine API) see one version or
the next, never half of one. It is read only for containers that have something to show there
(a restart policy, a health check), and it outlives the owner: ``RestartCount`` and the last
health log stay readable once the container has exited, as Docker keeps them.

    {"RestartCount": 3, "Restarting": false,
     "Health": {"Status": "healthy", "FailingStreak": 0, "Log": [...]}}
"""

from __future__ import annotations

import os

from . import cjson

FILE = "runstate.json"


def read(bundle: str) -> dict:
    """The state in ``bundle``; ``{}`` when nothing was written (or it cannot be read)."""
    try:
        with open(os.path.join(bundle, FILE), "rb") as f:
            doc = cjson.loads(f.read() or b"{}")
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


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
