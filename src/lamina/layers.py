"""Layers: a layer tar becomes a committed snapshot named by its chain ID.

    >>> layers = LayerStore(store)
    >>> key, layer = layers.add(parent_chain, tar_stream)   # extracted under a staging key
    >>> with store.tx():
    ...     layers.commit(key, layer, (blob_digest, blob_size, media_type))

A layer is staged first (``extract-<pid>-*``, which the next command removes if this process
dies), then committed under its chain ID in the caller's transaction, together with whatever
refers to it (an image row, say). A layer whose chain ID is already stored is not kept twice.
"""

from __future__ import annotations

import os
import time

from .errors import LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store


class LayerStore:
    """The ``layers`` table and the committed snapshots it names."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    def get(self, chain: str):
        """The layer's row, or None."""
        return self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()

    def exists(self, chain: str) -> bool:
        """Whether layer ``chain`` is stored."""
        return self.db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() \
            is not None

    def stage(self, parent_chain: str | None) -> str:
        """A new active snapshot on ``parent_chain`` under a staging key; returns the key."""
        key = f"extract-{os.getpid()}-{os.urandom(6).hex()}"
        with self.store.tx():
            self.store.snaps.prepare(key, parent_chain)
        return key

    def add(self, parent_chain: str | None, stream,
            digest: str | None = None) -> tuple[str, dict]:
        """Extract the layer tar ``stream`` on ``parent_chain``; returns (staging key, layer facts:
        chain_id, diff_id, parent, size, inodes). ``digest``: the diff ID the tar must have.

        The snapshot is committed under its chain ID by the caller's transaction (see
        :meth:`commit`); on error it is removed again."""
        key = self.stage(parent_chain)
        from . import differ
        from .digest import chain_id

        try:
            stats = differ.apply(self.store.snaps, key, stream, digest)
        except BaseException:
            try:
                with self.store.tx():
                    self.store.snaps.remove(key)
            except LaminaError:  # a full disk, say: the next command removes the staged key
                pass
            raise
        return key, {"chain_id": chain_id(parent_chain, stats.diff_id), "diff_id": stats.diff_id,
                     "parent": parent_chain, "size": stats.size, "inodes": stats.inodes}

    def commit(self, key: str, layer: dict, blob: tuple[str, int, str]) -> None:
        """Inside a transaction: keep the staged snapshot as layer ``chain_id`` (or drop a
        duplicate). ``blob``: (digest, size, media type) of the blob the layer came from."""
        db = self.db
        if db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (layer["chain_id"],)).fetchone():
            self.store.snaps.remove(key)
            return
        self.store.snaps.commit(layer["chain_id"], key)
        db.execute(
            "INSERT INTO layers(chain_id, diff_id, parent, size, inodes, blob_digest, blob_size,"
            " media_type, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (layer["chain_id"], layer["diff_id"], layer["parent"], layer["size"], layer["inodes"],
             blob[0], blob[1], blob[2], time.time()))

    def discard(self, key: str) -> None:
        """Remove the staged snapshot ``key`` if it is still there (an operation failed after
        :meth:`add`)."""
        if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            with self.store.tx():
                self.store.snaps.remove(key)

    def sizes(self) -> dict[str, int]:
        """Bytes of every layer, by chain ID."""
        return {r[0]: r[1] for r in self.db.execute("SELECT chain_id, size FROM layers")}


def init_key(top_layer: str | None) -> str:
    """The key of the shared init snapshot of containers on a layer chain."""
    return f"{top_layer or 'scratch'}-init"
