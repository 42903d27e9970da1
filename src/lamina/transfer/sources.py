"""What the store remembers about registries: which repositories hold a blob (``blob_sources``:
a push mounts a blob from there instead of uploading it) and under which digest a repository knows
a stored manifest (``pushed_manifests``: inspect's RepoDigests)."""

from __future__ import annotations

from ..metadata import Transaction

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore


def remember_sources(image_store: ImageStore, digests, registry: str, repository: str) -> None:
    """The blobs ``digests`` are in ``repository`` of ``registry`` (pulled from or pushed there)."""
    with Transaction(image_store.db):
        image_store.db.executemany("INSERT OR IGNORE INTO blob_sources VALUES (?,?,?)",
                              [(d, registry, repository) for d in digests])


def repositories_of(image_store: ImageStore, digest: str) -> list[tuple[str, str]]:
    """(registry, repository) of every repository known to hold blob ``digest``."""
    return [tuple(r) for r in image_store.db.execute(
        "SELECT registry, repository FROM blob_sources WHERE digest = ?", (digest,))]


def compressed_forms(image_store: ImageStore, source: str) -> list[str]:
    """Digests of the compressed blobs a push made of the stored blob ``source``."""
    return [r[0] for r in image_store.db.execute(
        "SELECT digest FROM compressed_blobs WHERE source = ?", (source,))]


def compressed_form(image_store: ImageStore, source: str, compression: str):
    """(digest, size) of the blob ``source`` compressed with ``compression`` by an earlier push,
    or None."""
    return image_store.db.execute(
        "SELECT digest, size FROM compressed_blobs WHERE source = ? AND compression = ?",
        (source, compression)).fetchone()


def remember_compressed(image_store: ImageStore, rows) -> None:
    """Remember (source, compression, digest, size) of blobs a push compressed."""
    with Transaction(image_store.db):
        image_store.db.executemany("INSERT OR REPLACE INTO compressed_blobs VALUES (?,?,?,?)",
                                   rows)


def remember_name(image_store: ImageStore, manifest: str, registry: str, repository: str, digest: str) -> None:
    """The stored manifest ``manifest`` is known as ``digest`` in that repository (a pushed
    manifest that was rewritten, the index a pull chose it from): inspect's RepoDigests."""
    with Transaction(image_store.db):
        image_store.db.execute("INSERT OR REPLACE INTO pushed_manifests VALUES (?,?,?,?)",
                          (manifest, registry, repository, digest))
