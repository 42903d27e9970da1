"""Limits on hostile input that no format check catches: compression bombs.

A gzip or zstd stream of a few kilobytes can expand to terabytes. Layers are read as streams and
never held in memory, so the danger is the disk (and the time) an extraction would eat. The
decompressed stream is counted against the compressed bytes consumed so far; past
``LAMINA_MAX_COMPRESSION_RATIO`` (default 1000, i.e. 1000:1; 0 turns the check off) plus a
1 MiB allowance for tiny streams, reading fails with one clear InvalidArgument. gzip cannot go
much past 1032:1 even on zeros, so real gzip layers never hit the default; zstd can, but only on
data that is almost all zeros.
"""

import os

from .errors import InvalidArgument

DEFAULT_RATIO = 1000
ALLOWANCE = 1 << 20  # decompressed bytes always allowed, so tiny streams are never refused


def max_ratio() -> int:
    """The configured limit (0: none)."""
    value = os.environ.get("LAMINA_MAX_COMPRESSION_RATIO", "")
    if not value:
        return DEFAULT_RATIO
    try:
        ratio = int(value)
    except ValueError:
        raise InvalidArgument(
            f"LAMINA_MAX_COMPRESSION_RATIO={value!r} is not a whole number") from None
    if ratio < 0:
        raise InvalidArgument(f"LAMINA_MAX_COMPRESSION_RATIO={value!r} is negative")
    return ratio


class CountingReader:
    """Passes reads through to ``raw`` and counts the bytes (the compressed side)."""

    def __init__(self, raw):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n

    def close(self) -> None:
        self.raw.close()


class RatioGuard:
    """A decompressed stream that fails once it has produced more than ``ratio`` times the
    compressed bytes read (plus :data:`ALLOWANCE`)."""

    def __init__(self, stream, compressed: CountingReader, ratio: int, kind: str):
        self.stream = stream
        self.compressed = compressed
        self.ratio = ratio
        self.kind = kind
        self.count = 0

    def readable(self) -> bool:
        return True

    def _check(self, n: int) -> None:
        self.count += n
        if self.count > self.ratio * self.compressed.count + ALLOWANCE:
            raise InvalidArgument(
                f"{self.kind} stream expands more than {self.ratio}:1 ({self.compressed.count} "
                f"bytes gave over {self.count}): a compression bomb? "
                "LAMINA_MAX_COMPRESSION_RATIO raises the limit")

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self._check(len(data))
        return data

    def readinto(self, buffer) -> int:
        n = self.stream.readinto(buffer)
        self._check(n or 0)
        return n

    def close(self) -> None:
        self.stream.close()


def guard(open_decompressor, source, kind: str):
    """``open_decompressor(reader)`` on a counted ``source``, wrapped in a RatioGuard unless the
    limit is off."""
    ratio = max_ratio()
    if not ratio:
        return open_decompressor(source)
    counted = CountingReader(source)
    return RatioGuard(open_decompressor(counted), counted, ratio, kind)
