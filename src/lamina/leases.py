"""Leases: a layer that a running command is about to build on is not garbage.

A build resolves its ``FROM`` image, then works for seconds before its first new layer is
stacked on the image's top layer (and its new image refers to every layer below). Meanwhile a
concurrent ``rmi`` or ``image prune`` may find the image unused. A lease (one row: chain ID, PID)
says "this process will use this layer chain"; :func:`leased` makes the deletion of images
(``Engine._delete_image``) keep the chain while the process lives. Leases of dead processes count
for nothing and are dropped by the next :func:`hold`, so a killed build leaves nothing behind.

When a lease ends, the layers that only it kept (their image was removed meanwhile and the build
failed, say) are deleted, as ``rmi`` would have deleted them.
"""

import os
import sqlite3

from .errors import NotFound
from .snapshots import _alive

SCHEMA = """CREATE TABLE IF NOT EXISTS leases (
    chain_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (chain_id, pid)
)"""


def hold(engine, image_id: str) -> tuple[list[str], bytes]:
    """Lease every layer of ``image_id`` for this process, checking in the same transaction
    that the image still exists. Returns its chain IDs (bottom first) and its config bytes, read
    while the image surely exists (a lease keeps layers, not the image and its config)."""
    with engine._tx():
        engine.db.execute(SCHEMA)
        if engine._image_row(image_id) is None:
            raise NotFound(f"No such image: {image_id}")
        chains = [r["chain_id"] for r in engine._layer_chain(image_id)]
        for (pid,) in engine.db.execute("SELECT DISTINCT pid FROM leases").fetchall():
            if pid != os.getpid() and not _alive(pid):
                _end(engine, pid)
        engine.db.executemany("INSERT OR IGNORE INTO leases VALUES (?, ?)",
                              [(chain, os.getpid()) for chain in chains])
        config = engine.content.read(image_id)
    return chains, config


def release(engine) -> None:
    """Drop this process's leases."""
    try:
        with engine._tx():
            _end(engine, os.getpid())
    except sqlite3.OperationalError:  # no lease was ever taken in this store
        pass


def _end(engine, pid: int) -> None:
    """Inside a transaction: drop ``pid``'s leases and delete the layers only they kept."""
    db = engine.db
    chains = [r[0] for r in db.execute("SELECT chain_id FROM leases WHERE pid = ?", (pid,))]
    db.execute("DELETE FROM leases WHERE pid = ?", (pid,))
    changed = True
    while changed:  # a parent becomes free once its child layer is gone
        changed = False
        for chain in chains:
            if (db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() is None
                    or db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1",
                                  (chain,)).fetchone() or leased(db, chain)):
                continue
            init = f"{chain}-init"  # the shared init layer of containers (Engine.create)
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init,)).fetchone() and not \
                    db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", (init,)).fetchone():
                engine.snaps.remove(init)
            if db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", (chain,)).fetchone():
                continue
            blob = db.execute("SELECT blob_digest FROM layers WHERE chain_id = ?",
                              (chain,)).fetchone()[0]
            db.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
            engine.snaps.remove(chain)
            if not db.execute("SELECT 1 FROM layers WHERE blob_digest = ? LIMIT 1",
                              (blob,)).fetchone():
                db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                           (engine.content.path(blob), os.getpid()))
            changed = True


def leased(db, chain: str) -> bool:
    """Whether a live process holds a lease on ``chain``."""
    try:
        rows = db.execute("SELECT pid FROM leases WHERE chain_id = ?", (chain,)).fetchall()
    except sqlite3.OperationalError:  # no lease was ever taken in this store
        return False
    return any(_alive(pid) for (pid,) in rows)
