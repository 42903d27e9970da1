"""A stored layer blob compressed anew (gzip, zstd, none) while it is read: save writes it to a
file, push sends it as it is made."""

from __future__ import annotations

from .blobs import CHUNK

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore


class Recompressed:
    """The stored blob ``source`` decompressed and compressed again as ``compression``, made as
    it is iterated (pieces of compressed bytes); ``digest`` and ``size`` once exhausted. The
    stored blob's own digest is checked at its end, before the last piece is given. A blob the
    store does not keep is read as layer ``chain``'s tar (from its snapshot and tar-split
    record), whose files' checksums are checked as they are read."""

    def __init__(self, image_store: ImageStore, source: str, compression: str,
                 chain: str | None = None):
        self.image_store = image_store
        self.source = source
        self.compression = compression
        self.chain = chain
        self.digest = None
        self.size = 0

    def __iter__(self):
        import collections
        import hashlib

        from ..compression import compressor
        from ..layertar import open_layer_stream

        pieces = collections.deque()  # filled by the compressor's writer thread
        sha = hashlib.sha256()

        class _Out:
            def write(self, data) -> int:
                pieces.append(bytes(data))
                return len(data)

        def ready():
            while pieces:
                piece = pieces.popleft()
                sha.update(piece)
                self.size += len(piece)
                yield piece

        content = self.image_store.store.content
        import os

        if self.chain is not None and not os.path.exists(content.path(self.source)):
            opened = self.image_store.layers.tar_reader(self.chain)
        else:
            opened = content.open(self.source)
        with opened as blob:
            source = open_layer_stream(blob)
            sink = compressor(self.compression, _Out())
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                sink.write(data)
                yield from ready()
            sink.close()
            while blob.read(CHUNK):  # the stored blob's digest check
                pass
        yield from ready()
        self.digest = "sha256:" + sha.hexdigest()
