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

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from lamina.images import ImageStore

__all__ = ["lookup", "record", "record_result", "result_chains", "step_key"]


def step_key(parent: str | None, text: str, digest: str = "") -> str:
    data = json.dumps([parent or "scratch", text, digest], separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def lookup(images: ImageStore, key: str) -> str | None:
    """The image ID a step made before. A state whose image was removed (``rmi``) but whose
    layers remain is stored again from the recorded config bytes: the same ID as before."""
    db = images.db
    row = db.execute("SELECT image_id, chain, config FROM build_cache WHERE key = ?",
                     (key,)).fetchone()
    if row is None:
        return None
    image_id, chain, config = row
    if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
        return image_id
    if config is None:
        return None
    chains = json.loads(chain)
    with images.store.tx():  # the layers checked and the image stored at one commit point
        if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
            return image_id
        if any(db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (c,)).fetchone() is None
               for c in chains):
            return None
        return images.add(bytes(config), chains, None)


def record(db: sqlite3.Connection, key: str, parent: str | None, image_id: str,
           chains: list[str], config: bytes) -> None:
    """Inside a transaction: remember that step ``key`` on ``parent`` made ``image_id`` (layer
    ``chains`` and exact ``config`` bytes)."""
    db.execute("INSERT OR REPLACE INTO build_cache(key, parent_id, image_id, chain, config,"
               " created) VALUES (?,?,?,?,?,?)",
               (key, parent, image_id, json.dumps(chains), config, time.time()))


def record_result(db: sqlite3.Connection, image_id: str) -> None:
    """Inside a transaction: ``image_id`` is what a build produced (listed even when untagged)."""
    db.execute("INSERT OR REPLACE INTO build_results(image_id, created) VALUES (?,?)",
               (image_id, time.time()))


def result_chains(db: sqlite3.Connection, key: str) -> list[str] | None:
    """The layer chains step ``key`` made, as recorded (its image may be gone since)."""
    row = db.execute("SELECT chain FROM build_cache WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row is not None else None
