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


def remember_name(image_store: ImageStore, manifest: str, registry: str, repository: str, digest: str) -> None:
    """The stored manifest ``manifest`` is known as ``digest`` in that repository (a pushed
    manifest that was rewritten, the index a pull chose it from): inspect's RepoDigests."""
    with Transaction(image_store.db):
        image_store.db.execute("INSERT OR REPLACE INTO pushed_manifests VALUES (?,?,?,?)",
                          (manifest, registry, repository, digest))
