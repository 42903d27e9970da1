"""Blobs a transfer writes into the content store (:class:`BlobSink` remembers which it created),
and the removal of those that no image ended up using (:func:`drop_unused`), so that a pull or
load that fails, or stores less than it read, leaves no blob behind that nothing uses."""

from __future__ import annotations

from ..digest import sha256_bytes
from ..errors import InvalidArgument

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

CHUNK = 1 << 20  # the piece size blobs are read and copied in


def drop_unused(image_store: ImageStore, created: set[str]) -> None:
    """Delete the blobs in ``created`` that no image or layer refers to."""
    if not created:
        return
    from ..claims import referenced_blobs

    used = referenced_blobs(image_store.store)
    for digest in created - used:
        image_store.store.content.delete(digest)


class BlobSink:
    """Writes blobs into the content store, remembering which ones it created."""

    def __init__(self, image_store: ImageStore):
        self.content = image_store.store.content
        self.created: set[str] = set()

    def put_stream(self, read, expected: str | None = None, limit: int | None = None):
        """Copy ``read(n)`` to the end into a blob; returns (digest, size). ``expected`` is
        checked before the blob is named."""
        if expected is not None and self.content.exists(expected):
            size = 0
            while True:
                data = read(CHUNK)
                if not data:
                    break
                size += len(data)
            return expected, self.content.size(expected)
        with self.content.writer() as w:
            while True:
                data = read(CHUNK)
                if not data:
                    break
                w.write(data)
                if limit is not None and w.size > limit:
                    raise InvalidArgument(f"document larger than {limit} bytes")
            digest = "sha256:" + w.hash.hexdigest()
            if expected is not None and digest != expected:
                raise InvalidArgument(f"blob digest mismatch: expected {expected}, got {digest}")
            if self.content.exists(digest):
                return digest, w.size
            digest, size = w.commit()
        self.created.add(digest)
        return digest, size

    def put(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        if not self.content.exists(digest):
            self.content.put(data)
            self.created.add(digest)
        return digest
