"""Uses: a container that a command is working on is not garbage.

``cp``, ``commit``, ``export`` and ``diff`` work on a container without owning it (a container's
owner is the process that runs it, :mod:`lamina.runtime.monitor`). Meanwhile a ``container prune`` may
find it stopped, or an ``rm`` remove it: the command then failed with "snapshot ... not found",
or the remover's unmount with "Device or resource busy", or (a ``cp`` mounting it between the
remover's unmount and its delete) a mount was left on deleted data.

A use is one row (container ID, PID), taken in the transaction that looks the container up and
given back when the command ends: while a live process uses a container, ``rm`` refuses it (``-f``
waits for the use to end) and prune leaves it. A removal is a row too (``removing`` = 1), taken by
``rm`` in the transaction that checks that nobody uses it: from then on, a command that wants to
use the container is told "No such container", as it would be a moment later. Rows of dead
processes count for nothing (and are dropped by the next :func:`begin`), so a killed command
leaves nothing behind.

A ``run --rm`` uses its own container from its claim to its removal, so that a prune cannot take
it in the moment between its process's exit and the removal of its anonymous volumes.
"""

from __future__ import annotations

import os

from .errors import FailedPrecondition, NotFound
from .processes import alive

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store


def begin(store: Store, container_id: str, name: str) -> None:
    """Inside the transaction that looked the container up: use it from this process on (see
    :meth:`lamina.containers.ContainerStore.take_use`). "No such container" if another live
    process is removing it; rows of dead processes are dropped on the way."""
    for (pid,) in store.db.execute("SELECT DISTINCT pid FROM container_uses").fetchall():
        if pid != os.getpid() and not alive(pid):
            store.db.execute("DELETE FROM container_uses WHERE pid = ?", (pid,))
    if any(removing for _, removing in others(store.db, container_id)):
        raise NotFound(f"No such container: {name}")  # another rm or prune is removing it
    add(store.db, container_id)


def add(db, container_id: str) -> None:
    """Inside a transaction: this process uses the container (see :func:`begin`; ``create`` of a
    build's RUN container and the claim of a ``run --rm`` take it this way)."""
    db.execute("INSERT OR IGNORE INTO container_uses VALUES (?, ?, 0)", (container_id, os.getpid()))


def give_back(store: Store, container_id: str) -> None:
    """End this process's use of the container (nothing if it has none)."""
    with store.tx():
        store.db.execute("DELETE FROM container_uses WHERE container_id = ? AND pid = ?"
                         " AND removing = 0", (container_id, os.getpid()))


def others(db, container_id: str) -> list[tuple[int, int]]:
    """(pid, removing) of the live processes other than this one that use or remove the
    container."""
    rows = db.execute("SELECT pid, removing FROM container_uses WHERE container_id = ?",
                      (container_id,)).fetchall()
    return [(pid, removing) for pid, removing in rows if pid != os.getpid() and alive(pid)]


class InUse(FailedPrecondition):
    """Another live command uses the container."""


def begin_removal(store: Store, container_id: str, name: str) -> None:
    """Inside a transaction: make the container this process's to remove. "No such container"
    if another live process is removing it; FailedPrecondition if one uses it."""
    found = others(store.db, container_id)
    if any(removing for _, removing in found):
        raise NotFound(f"No such container: {name}")
    if found:
        raise InUse(
            f"conflict: container {name} is in use by another command (pid {found[0][0]}); "
            "try again once it has finished")
    store.db.execute("INSERT OR REPLACE INTO container_uses VALUES (?, ?, 1)",
                      (container_id, os.getpid()))


def end(store: Store, container_id: str) -> None:
    """Inside a transaction: the container is gone (or its removal failed): drop every row of
    it that this process or a dead one holds."""
    rows = store.db.execute("SELECT pid FROM container_uses WHERE container_id = ?",
                            (container_id,)).fetchall()
    for (pid,) in rows:
        if pid == os.getpid() or not alive(pid):
            store.db.execute("DELETE FROM container_uses WHERE container_id = ? AND pid = ?",
                              (container_id, pid))
