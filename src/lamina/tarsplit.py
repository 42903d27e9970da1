"""Tar-split records: what it takes, beside a layer's unpacked files, to give back its exact tar.

A layer is kept once, unpacked in its snapshot. Its tar (the bytes whose sha256 is the layer's
diff_id) is needed again only when the layer leaves the machine (``save``, ``push``), so instead
of the tar lamina keeps a *record*: every byte of the tar that is not file content (headers, PAX
records, padding, the end blocks and whatever follows them) verbatim, and for each regular file's
content a reference: its path in the layer's directory, its size and its CRC-32. Rebuilding the
tar streams the raw bytes and the files' contents in order (:func:`write_tar`); the checksums
catch a file that changed since (:func:`verify`, ``system check``). The idea is tar-split's
(Docker, Podman); the format is lamina's own:

    record  := zlib( MAGIC op* )
    op      := "R" u32:length bytes                       raw bytes of the tar
             | "F" u16:path-length u64:size u32:crc path  file content from the layer directory

A record is a few percent of the tar's metadata (a 50,000-file layer: a few MB) and lives in the
store's database, in the transaction that commits its layer, so it is never half written.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib

from .errors import LaminaError

MAGIC = b"LTS1"
CHUNK = 1 << 20
_RAW = struct.Struct(">I")
_FILE = struct.Struct(">HQI")


class DamagedLayer(LaminaError):
    """A layer's unpacked file no longer matches its record (changed, truncated, missing)."""


class Recorder:
    """Builds a record as a tar is read: :meth:`raw` for bytes kept verbatim, :meth:`file` for a
    regular file's content, :meth:`finish` for the compressed record. The operations are
    compressed as they come: what is held is the compressed record (about 25 bytes a file), not
    the tar's headers (about 1 KiB a file)."""

    def __init__(self):
        self.zip = zlib.compressobj(1)
        self.parts: list[bytes] = [self.zip.compress(MAGIC)]
        self.pending = bytearray()
        self.files = 0

    def raw(self, data) -> None:
        self.pending += data
        if len(self.pending) >= CHUNK:
            self._flush()

    def file(self, path: bytes, size: int, crc: int) -> None:
        self._flush()
        self._put(b"F" + _FILE.pack(len(path), size, crc) + path)
        self.files += 1

    def _put(self, data) -> None:
        out = self.zip.compress(data)
        if out:
            self.parts.append(out)

    def _flush(self) -> None:
        pending = self.pending
        if pending:  # u32 lengths: raw() flushes every CHUNK, so a run is never near 4 GiB
            self._put(b"R" + _RAW.pack(len(pending)))
            self._put(pending)
            pending.clear()

    def finish(self) -> bytes:
        self._flush()
        self.parts.append(self.zip.flush())
        return b"".join(self.parts)


class _Inflated:
    """The decompressed record, read a piece at a time (never all of it in memory)."""

    def __init__(self, record: bytes):
        self.zip = zlib.decompressobj()
        self.record = memoryview(record)
        self.pos = 0
        self.buf = b""  # the last piece decompressed; what is left of it starts at ``at``
        self.at = 0

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes, or fewer at the record's end."""
        at = self.at
        end = at + n
        if end <= len(self.buf):  # the common case: a slice of the piece at hand (a record
            self.at = end  # is read a few bytes at a time: no buffer shifted per call)
            return self.buf[at:end]
        parts = [self.buf[at:]]
        have = len(parts[0])
        self.buf, self.at = b"", 0
        while have < n and not self.zip.eof:
            if self.zip.unconsumed_tail:
                given = self.zip.unconsumed_tail
            else:
                given = self.record[self.pos:self.pos + CHUNK]
                self.pos += len(given)
            try:
                got = self.zip.decompress(given, CHUNK)
            except zlib.error:
                raise LaminaError("tar-split record is corrupt (not zlib data)") from None
            if not got and not given:
                break  # the record ends before its compressed stream does
            k = min(n - have, len(got))
            parts.append(got[:k])
            have += k
            if k < len(got):
                self.buf, self.at = got, k
        return b"".join(parts)

    def check_end(self) -> None:
        if not self.zip.eof:
            raise LaminaError("tar-split record is corrupt (not zlib data)")


def ops(record: bytes):
    """The record's operations, decompressed as they are read: ``(b"R", bytes)`` (a long raw
    run in pieces of at most CHUNK bytes) and ``(b"F", path, size, crc)``."""
    data = _Inflated(record)
    if data.take(len(MAGIC)) != MAGIC:
        data.check_end()
        raise LaminaError("tar-split record is corrupt (bad magic)")
    while True:
        kind = data.take(1)
        if not kind:
            data.check_end()
            return
        if kind == b"R":
            head = data.take(_RAW.size)
            if len(head) < _RAW.size:
                break
            (left,) = _RAW.unpack(head)
            while left:
                piece = data.take(min(left, CHUNK))
                if not piece:
                    break
                left -= len(piece)
                yield b"R", piece
            if left:
                break
        elif kind == b"F":
            head = data.take(_FILE.size)
            if len(head) < _FILE.size:
                break
            plen, size, crc = _FILE.unpack(head)
            path = data.take(plen)
            if len(path) < plen:
                break
            yield b"F", path, size, crc
        else:
            raise LaminaError("tar-split record is corrupt (unknown operation)")
    data.check_end()
    raise LaminaError("tar-split record is corrupt (truncated)")


def files(record: bytes):
    """(path, size, crc) of every file content the record refers to, in tar order (an
    iterator: a record of 200,000 files is decoded as it is read)."""
    return ((op[1], op[2], op[3]) for op in ops(record) if op[0] == b"F")


def _open(root: bytes, path: bytes) -> int:
    return os.open(root + b"/" + path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _kernel_copy(out):
    """``copy(src_fd, n)`` that copies a file's bytes to ``out`` in the kernel:
    ``copy_file_range`` to a regular file, ``sendfile`` to a pipe or socket; None when ``out``
    has no such descriptor."""
    try:
        fd = out.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, AttributeError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return _FileCopy(fd)
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return lambda src, n: os.sendfile(fd, src, None, n)
    return None


class _FileCopy:
    """Copies to a regular file: ``copy_file_range`` (a reflink or a copy on the same
    filesystem), ``sendfile`` from another one (an overlay mount's file, say: EXDEV)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.ranges = True

    def __call__(self, src: int, n: int) -> int:
        if self.ranges:
            import errno

            try:
                return os.copy_file_range(src, self.fd, n)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP,
                                       errno.ENOSYS):
                    raise
                self.ranges = False  # nothing was copied: sendfile from here on
        return os.sendfile(self.fd, src, None, n)


def _unchanged(fd: int, size: int, before: float) -> bool:
    st = os.fstat(fd)
    return st.st_ctime < before and st.st_size == size


def _send(copy, fd: int, size: int, path: bytes) -> bool:
    """Copy ``size`` bytes of ``fd`` with ``copy``; False if the kernel cannot (nothing sent)."""
    import errno

    left = size
    try:
        while left:
            n = copy(fd, min(left, 1 << 30))
            if not n:
                raise DamagedLayer(f"layer file /{os.fsdecode(path)} is shorter than its record "
                                   "says")
            left -= n
    except OSError as error:
        if left != size or error.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                               errno.EOPNOTSUPP):
            raise
        return False
    return True


def write_tar(record: bytes, root: str, out, unchanged_before: float | None = None) -> int:
    """Write the exact layer tar to ``out`` from ``record`` and the layer directory ``root``;
    returns its size. Raises :class:`DamagedLayer` (before the damaged file's last byte is
    written) when a file's content does not match its size and CRC.

    ``unchanged_before``: a time (the layer's commit, less a margin) before which a file's
    ctime says it has not been written since its content was recorded (every write, chmod or
    rename moves the ctime; copying the layer's files elsewhere and back does too): such a
    file's bytes go to ``out`` in the kernel when ``out`` is a file, pipe or socket, without
    a CRC. A byte that rots on the disk itself is what ``system check`` reads every file for."""
    root_b = os.fsencode(root)
    buf = memoryview(bytearray(CHUNK))
    total = 0
    write = out.write
    copy = _kernel_copy(out) if unchanged_before is not None else None
    for op in ops(record):
        if op[0] == b"R":
            write(op[1])
            total += len(op[1])
            continue
        _, path, size, crc = op
        try:
            fd = _open(root_b, path)
        except OSError as e:
            raise DamagedLayer(f"layer file /{os.fsdecode(path)} is unreadable: "
                               f"{e.strerror}") from None
        try:
            if copy is not None and _unchanged(fd, size, unchanged_before):
                out.flush()
                if _send(copy, fd, size, path):
                    total += size
                    continue
                copy = None  # a filesystem or kernel that cannot: read from here on
            left, got = size, 0
            while left:
                n = os.readv(fd, [buf[:min(left, CHUNK)]])
                if not n:
                    raise DamagedLayer(f"layer file /{os.fsdecode(path)} is shorter than "
                                       "its record says")
                got = zlib.crc32(buf[:n], got)
                left -= n
                if not left and got != crc:
                    raise DamagedLayer(f"layer file /{os.fsdecode(path)} does not match the "
                                       "checksum its record holds")
                write(buf[:n])
            if os.read(fd, 1):
                raise DamagedLayer(f"layer file /{os.fsdecode(path)} is longer than its record "
                                   "says")
        finally:
            os.close(fd)
        total += size
    return total


def verify(record: bytes, root: str) -> list[str]:
    """Paths (``/etc/passwd``) of the layer's files that do not match the record: missing,
    another size, another content. Reads every file once."""
    root_b = os.fsencode(root)
    buf = memoryview(bytearray(CHUNK))
    damaged = []
    for path, size, crc in files(record):
        try:
            fd = _open(root_b, path)
        except OSError:
            damaged.append("/" + os.fsdecode(path))
            continue
        try:
            if os.fstat(fd).st_size != size:
                damaged.append("/" + os.fsdecode(path))
                continue
            got, left = 0, size
            while left:
                n = os.readv(fd, [buf[:min(left, CHUNK)]])
                if not n:
                    break
                got = zlib.crc32(buf[:n], got)
                left -= n
            if left or got != crc:
                damaged.append("/" + os.fsdecode(path))
        finally:
            os.close(fd)
    return damaged


def pieces(record: bytes):
    """The layer tar with every file's content left out, for a lister of its headers (``image
    analyze``: :func:`lamina.layertar.list_members`) that never touches the layer's files:
    ``bytes`` are the tar's own bytes (a raw run, or a piece of a long one), an ``int`` is a
    file's content of that many bytes, left out. The record is decompressed a piece at a time
    and each operation is parsed where it lies (one struct call, one slice for a raw run): a
    50,000-file layer is some 100,000 operations."""
    zip = zlib.decompressobj()
    view = memoryview(record)
    pos = 0

    def fill(buf: bytes, need: int) -> bytes:
        """``buf`` with decompressed bytes appended until it holds ``need`` (or the record's
        end: then fewer)."""
        nonlocal pos
        while len(buf) < need and not zip.eof:
            given = zip.unconsumed_tail
            if not given:
                given = view[pos:pos + CHUNK]
                pos += len(given)
            try:
                got = zip.decompress(given, CHUNK)
            except zlib.error:
                raise LaminaError("tar-split record is corrupt (not zlib data)") from None
            if not got and not given:
                break  # the record ends before its compressed stream does
            buf += got
        return buf

    truncated = "tar-split record is corrupt (truncated)"
    buf = fill(b"", len(MAGIC))
    if buf[:len(MAGIC)] != MAGIC:
        if not zip.eof:
            raise LaminaError("tar-split record is corrupt (not zlib data)")
        raise LaminaError("tar-split record is corrupt (bad magic)")
    at, n = len(MAGIC), len(buf)  # n: len(buf)
    head, raw_head = 1 + _FILE.size, 1 + _RAW.size  # the longest operation head, and R's
    unpack_raw, unpack_file = _RAW.unpack_from, _FILE.unpack_from
    while True:
        if at + head > n:
            buf, at = fill(buf[at:], head), 0
            n = len(buf)
            if not n:
                if zip.eof:
                    return
                raise LaminaError(truncated)
        kind = buf[at]
        if kind == 0x52:  # R
            if at + raw_head > n:
                raise LaminaError(truncated)
            (left,) = unpack_raw(buf, at + 1)
            at += raw_head
            if at + left <= n:  # the common case: all of the run in the piece at hand
                yield buf[at:at + left]
                at += left
                continue
            while left:
                if at == n:
                    buf, at = fill(b"", 1), 0
                    n = len(buf)
                    if not n:
                        raise LaminaError(truncated)
                end = min(at + left, n)
                yield buf[at:end]
                left -= end - at
                at = end
        elif kind == 0x46:  # F: its path is not needed here
            if at + head > n:
                raise LaminaError(truncated)
            length, size, _ = unpack_file(buf, at + 1)
            if at + head + length > n:
                buf, at = fill(buf[at:], head + length), 0
                n = len(buf)
                if head + length > n:
                    raise LaminaError(truncated)
            at += head + length
            yield size
        else:
            raise LaminaError("tar-split record is corrupt (unknown operation)")
