"""Blob claims: what a killed process wrote into the blob store but never committed goes away.

A blob is named (renamed into ``blobs/sha256``) before the transaction that references it
commits: ``import``, ``commit``, ``load`` and ``pull`` all write blobs first and then extract and
record layers. A process killed in between leaves a blob that nothing references. So every blob a
process names or finds and means to use is *claimed* first: an empty file
``ingest/<pid>-claim-<hex>`` (see :meth:`lamina.content.ContentStore.claim`), released when the
operation ends. A claim left by a dead process is resolved by the next command's recovery
(:func:`resolve`): the blob stays if the metadata references it or a live process claims it,
otherwise it is deleted.

The deletion is careful about a live process that claims the same blob at the same moment (it
claims first, then checks that the blob exists): the blob is first renamed away, the claims are
read again, and it is put back if a live claim appeared. Either the live process saw the blob
after our re-check (then we put it back) or it did not see it and wrote its own copy.
"""

from __future__ import annotations

import os

from .faults import point
from .processes import alive

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store

CLAIM = "-claim-"


def is_dead_claim(name: str) -> bool:
    """Whether ``name`` (in ``ingest/``) is a claim of a process that no longer runs."""
    pid, _, rest = name.partition("-")
    return rest.startswith(CLAIM[1:]) and pid.isdigit() and not alive(int(pid))


def _live_claim(ingest: str, hex_digest: str) -> bool:
    suffix = CLAIM + hex_digest
    for name in os.listdir(ingest):
        if name.endswith(suffix):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and alive(int(pid)):
                return True
    return False


def referenced_blobs(store: Store) -> set[str]:
    """Every blob the store keeps: images' configs and manifests, the blobs of layers that
    have no tar-split record (their tar is read from the blob) and the compressed blobs kept as
    a pull cache. A layer with a record does not need its blob: a manifest may list it (the
    registry's compressed blob) without the store holding it."""
    used = {r[0] for r in store.db.execute(
        "SELECT l.blob_digest FROM layers l LEFT JOIN tar_split t ON t.chain_id = l.chain_id"
        " WHERE t.record IS NULL UNION SELECT digest FROM kept_blobs")}
    for image_id, manifest_digest in store.db.execute("SELECT id, manifest_digest FROM images"):
        used.add(image_id)
        used.add(manifest_digest)
    return used


def _referenced(store: Store, digest: str) -> bool:
    """Referenced the way ``system check`` counts it (:func:`referenced_blobs`)."""
    return store.db.execute(
        "SELECT 1 FROM layers l LEFT JOIN tar_split t ON t.chain_id = l.chain_id"
        " WHERE l.blob_digest = ? AND t.record IS NULL UNION ALL SELECT 1 FROM images"
        " WHERE id = ? OR manifest_digest = ? UNION ALL SELECT 1 FROM kept_blobs WHERE digest = ?"
        " LIMIT 1", (digest, digest, digest, digest)).fetchone() is not None


def gate(store: Store, path: str):
    """For :meth:`lamina.snapshots.Snapshotter.purge`, a blob in the trash: True if it was dealt
    with (deleted, or kept because it is referenced again) and its trash row dropped, False to
    leave it for later (a live process claims it), None if ``path`` is no blob.

    A blob is filed for deletion by the transaction that stopped referencing it; by the time
    the deletion runs, another process may have found the blob present (its import or load
    made the same bytes) and committed a reference to it, or be about to. So the reference and
    the claims are checked again under the write lock, and the blob is moved aside before the
    lock is released (see the module docstring for the claim protocol).

    The trash row goes in the same transaction as the decision: a blob kept because it is
    referenced again can be unreferenced and filed again by the next commit (a build stores a
    pruned state again, a prune removes it again), and a row deleted after the lock was let go
    would be that new one, leaving the blob on disk with nothing to delete it."""
    blobs = os.path.join(store.root, "blobs", "sha256") + os.sep
    if not path.startswith(blobs):
        return None
    from .metadata import Transaction

    hex_digest = path[len(blobs):]
    aside = os.path.join(store.root, "ingest", f"{os.getpid()}-unclaimed-{hex_digest}")
    moved = False
    with Transaction(store.db):
        ingest = os.path.join(store.root, "ingest")
        if not _referenced(store, "sha256:" + hex_digest):  # referenced: the file stays
            if _live_claim(ingest, hex_digest):
                return False
            try:
                os.rename(path, aside)
                moved = True
            except FileNotFoundError:
                pass
            # a process that claims a blob checks that it exists after claiming it, outside
            # the lock: one that did so between the look above and the rename uses the blob,
            # so it goes back (as resolve does)
            if moved and _live_claim(ingest, hex_digest):
                os.rename(aside, path)
                return False
        store.db.execute("DELETE FROM trash WHERE path = ?", (path,))
    if moved:  # a crash from here leaves ingest/<pid>-unclaimed-*: the next command deletes it
        point("blob.aside")
        os.unlink(aside)
    return True


def resolve(store: Store, names: list[str]) -> int:
    """Resolve the dead claims ``names``: delete their blobs unless referenced or claimed by a
    live process, then drop the claims. Returns how many blobs were deleted."""
    content = store.content
    ingest = content.ingest
    doomed = []
    with store.tx():  # no transaction that could reference these blobs runs meanwhile
        for hex_digest in sorted({name.split(CLAIM, 1)[1] for name in names}):
            digest = "sha256:" + hex_digest
            if _referenced(store, digest) or _live_claim(ingest, hex_digest):
                continue
            path = content.path(digest)
            aside = os.path.join(ingest, f"{os.getpid()}-unclaimed-{hex_digest}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if _live_claim(ingest, hex_digest):
                os.rename(aside, path)
                continue
            doomed.append(aside)
    for name in names:
        try:
            os.unlink(os.path.join(ingest, name))
        except FileNotFoundError:
            pass
    for path in doomed:
        os.unlink(path)
    return len(doomed)


def abandon(store: Store) -> int:
    """An operation failed: drop this process's claims, deleting the blobs it claimed that
    nothing references and no other live process claims (what it wrote before failing).
    Returns how many blobs were deleted."""
    content = store.content
    mine = content.take_claims()
    for path in mine:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return resolve(store, [os.path.basename(path) for path in mine]) if mine else 0
