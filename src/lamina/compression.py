"""Layer compression: gzip (isal, multi-threaded, level 1), zstd, or none, with stable output.

The same uncompressed bytes and the same compression name always give the same compressed bytes,
whatever the machine's core count or how the caller slices its writes: gzip is written in fixed
1 MiB blocks by isal's pigz-like writer (header mtime 0, no file name), zstd in multi-threaded
mode (whose output does not depend on the number of workers). That keeps compressed digests, and
so pushed and saved blob digests, reproducible.
"""

import os

from .errors import InvalidArgument

COMPRESSIONS = ("gzip", "zstd", "none")
BLOCK = 1 << 20
GZIP_LEVEL = 1
ZSTD_LEVEL = 3
_SUFFIX = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}


def check(name: str) -> str:
    """``name`` if it is a known compression, else InvalidArgument."""
    if name not in COMPRESSIONS:
        raise InvalidArgument(
            f"unknown compression {name!r} (choose from {', '.join(COMPRESSIONS)})")
    return name


def media_suffix(name: str) -> str:
    """The media-type suffix of a compression: ``+gzip``, ``+zstd`` or nothing."""
    return _SUFFIX[check(name)]


def of_media_type(media_type: str) -> str:
    """The compression a layer media type names (Docker's and OCI's)."""
    if media_type.endswith(("+zstd", ".zstd")):
        return "zstd"
    if (media_type.endswith(("+gzip", ".tar.gzip"))
            or media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
            or media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"):
        return "gzip"
    return "none"


def sniff(head: bytes) -> str:
    """The compression of a blob from its first bytes."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except OSError:  # pragma: no cover
        return os.cpu_count() or 1


class _Blocked:
    """Hands ``inner`` writes of exactly ``size`` bytes (the last one shorter), whatever the
    caller's slicing: the compressed stream then depends on the bytes alone."""

    def __init__(self, inner, size: int = BLOCK):
        self.inner = inner
        self.size = size
        self.buf = bytearray()

    def write(self, data) -> int:
        n = len(data)
        if not self.buf and n == self.size:
            self.inner.write(data)
            return n
        self.buf += data
        while len(self.buf) >= self.size:
            self.inner.write(bytes(self.buf[: self.size]))
            del self.buf[: self.size]
        return n

    def close(self) -> None:
        if self.buf:
            self.inner.write(bytes(self.buf))
            self.buf = bytearray()
        self.inner.close()


class _Plain:
    def __init__(self, out):
        self.out = out

    def write(self, data) -> int:
        self.out.write(data)
        return len(data)

    def close(self) -> None:
        pass


def compressor(name: str, out):
    """A writer (``write``, ``close``) that compresses into the binary file ``out``.

    ``close`` finishes the compressed stream but leaves ``out`` open.
    """
    check(name)
    if name == "none":
        return _Plain(out)
    if name == "gzip":
        from isal import igzip_threaded

        inner = igzip_threaded.open(_Unclosable(out), "wb", compresslevel=GZIP_LEVEL,
                                    threads=_threads(), block_size=BLOCK)
        return _Blocked(inner)
    import zstandard

    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=max(1, _threads()))
    return _Blocked(cctx.stream_writer(_Unclosable(out), closefd=False))


class _Unclosable:
    """A view of ``out`` whose ``close`` only flushes (the compressors close what they write to)."""

    def __init__(self, out):
        self.out = out

    def write(self, data) -> int:
        n = self.out.write(data)
        return len(data) if n is None else n

    def flush(self) -> None:
        flush = getattr(self.out, "flush", None)
        if flush:
            flush()

    def close(self) -> None:
        self.flush()

    @property
    def closed(self) -> bool:
        return False

    def writable(self) -> bool:
        return True
