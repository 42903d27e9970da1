"""The build cache: one row per executed step, ``key -> resulting state``.

A state is an image (its config digest): the layer chain and the config with its history, so a
hit reuses the exact bytes, and an unchanged Dockerfile gives the same image ID again. The key is
the sha256 of the parent state, the step's cache text (the instruction after substitution, plus
what else it depends on) and, for COPY/ADD, the digest of its sources' content.

Images made by builds are recorded too (``build_results``): ``lamina images`` hides untagged
intermediate states (``-a`` shows them), as Docker's legacy builder does.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

__all__ = ["ensure_schema", "lookup", "record", "record_result", "step_key"]


def ensure_schema(db: sqlite3.Connection) -> None:
    """Stores made before the build tables existed get them now (all statements are idempotent)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'build_results'").fetchone() is None:
        from lamina.metadata import SCHEMA

        db.executescript(SCHEMA)


def step_key(parent: str | None, text: str, digest: str = "") -> str:
    data = json.dumps([parent or "scratch", text, digest], separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def lookup(db: sqlite3.Connection, key: str) -> str | None:
    """The image ID a step made before, if it (and its image) still exists."""
    row = db.execute("SELECT c.image_id FROM build_cache c JOIN images i ON i.id = c.image_id"
                     " WHERE c.key = ?", (key,)).fetchone()
    return row[0] if row else None


def record(db: sqlite3.Connection, key: str, parent: str | None, image_id: str) -> None:
    """Inside a transaction: remember that step ``key`` on ``parent`` made ``image_id``."""
    db.execute("INSERT OR REPLACE INTO build_cache(key, parent_id, image_id, created)"
               " VALUES (?,?,?,?)", (key, parent, image_id, time.time()))


def record_result(db: sqlite3.Connection, image_id: str) -> None:
    """Inside a transaction: ``image_id`` is what a build produced (listed even when untagged)."""
    db.execute("INSERT OR REPLACE INTO build_results(image_id, created) VALUES (?,?)",
               (image_id, time.time()))
