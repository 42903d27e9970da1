"""Leases: a layer that a running command is about to build on is not garbage.

A build resolves its ``FROM`` image, then works for seconds before its first new layer is
stacked on the image's top layer (and its new image refers to every layer below). Meanwhile a
concurrent ``rmi`` or ``image prune`` may find the image unused. A lease (one row: chain ID, PID)
says "this process will use this layer chain"; :func:`leased` makes the deletion of images
(``ImageStore.delete``) keep the chain while the process lives. Leases of dead processes count
for nothing and are dropped by the next :func:`hold`, so a killed build leaves nothing behind.

When a lease ends, the layers that only it kept (their image was removed meanwhile and the build
failed, say) are deleted, as ``rmi`` would have deleted them.

A process may run several builds at once (``lamina serve``): the rows are the process's, and
this module counts, in the process, how many of its operations hold each chain; a build's
:func:`release` of its own chains drops a row only when no other operation of the process
holds it.
"""

from __future__ import annotations

import os
import threading

from .errors import NotFound
from .layers import init_key
from .processes import alive

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .images import ImageStore
    from .store import Store

_held: dict[str, int] = {}  # chain ID -> how many operations of this process hold it
_held_lock = threading.Lock()


def hold(images: ImageStore, image_id: str) -> tuple[list[str], bytes]:
    """Lease every layer of ``image_id`` for this process, checking in the same transaction
    that the image still exists. Returns its chain IDs (bottom first) and its config bytes, read
    while the image surely exists (a lease keeps layers, not the image and its config)."""
    store = images.store
    with store.tx():
        if images.row(image_id) is None:
            raise NotFound(f"No such image: {image_id}")
        chains = [r["chain_id"] for r in images.layer_rows(image_id)]
        for (pid,) in store.db.execute("SELECT DISTINCT pid FROM leases").fetchall():
            if pid != os.getpid() and not alive(pid):
                _end(store, pid)
        add(store.db, chains)
        config = store.content.read(image_id)
    return chains, config


def add(db, chains: list[str]) -> None:
    """Inside a transaction: lease ``chains`` for this process (a build leases each state it
    stores, so that a concurrent prune of the untagged state leaves its layers)."""
    db.executemany("INSERT OR IGNORE INTO leases VALUES (?, ?)",
                   [(chain, os.getpid()) for chain in chains])
    with _held_lock:
        for chain in chains:
            _held[chain] = _held.get(chain, 0) + 1


def release(store: Store, chains: list[str] | None = None) -> None:
    """End an operation's leases: of ``chains`` (as many times as it leased each), or all of
    this process's. A chain another operation of this process still holds stays leased."""
    if chains is None:
        with _held_lock:
            _held.clear()
        with store.tx():
            _end(store, os.getpid())
        return
    free = []
    with _held_lock:
        for chain in chains:
            left = _held.get(chain, 0) - 1
            if left > 0:
                _held[chain] = left
            else:
                _held.pop(chain, None)
                free.append(chain)
    if free:
        with store.tx():
            _end(store, os.getpid(), free)


def _end(store: Store, pid: int, only: list[str] | None = None) -> None:
    """Inside a transaction: drop ``pid``'s leases (of the chains ``only``, if given) and delete
    the layers only they kept."""
    db = store.db
    chains = [r[0] for r in db.execute("SELECT chain_id FROM leases WHERE pid = ?", (pid,))]
    if only is not None:
        chains = [c for c in chains if c in set(only)]
    db.executemany("DELETE FROM leases WHERE pid = ? AND chain_id = ?",
                   [(pid, chain) for chain in chains])
    changed = True
    while changed:  # a parent becomes free once its child layer is gone
        changed = False
        for chain in chains:
            if (db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() is None
                    or db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1",
                                  (chain,)).fetchone() or leased(db, chain)):
                continue
            init = init_key(chain)  # the shared init layer of containers on it
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init,)).fetchone() and not \
                    db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", (init,)).fetchone():
                store.snaps.remove(init)
            if db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", (chain,)).fetchone():
                continue
            blob = db.execute("SELECT blob_digest FROM layers WHERE chain_id = ?",
                              (chain,)).fetchone()[0]
            db.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
            store.snaps.remove(chain)
            if not db.execute("SELECT 1 FROM layers WHERE blob_digest = ? LIMIT 1",
                              (blob,)).fetchone():
                db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                           (store.content.path(blob), os.getpid()))
            changed = True


def leased(db, chain: str) -> bool:
    """Whether a live process holds a lease on ``chain``."""
    rows = db.execute("SELECT pid FROM leases WHERE chain_id = ?", (chain,)).fetchall()
    return any(alive(pid) for (pid,) in rows)
