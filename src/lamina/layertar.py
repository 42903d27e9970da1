"""Layer tars: directory trees to OCI layer tars and back, whiteouts included, extracted safely.

Writing (``write_overlay_tar``, ``write_changes_tar``, ``write_tree_tar``) emits PAX tars with
entries in depth-first order, children sorted by name, numeric owners, whole-second mtimes (as
Docker does, so layers are reproducible), hard links as links to the first path of the inode, and
xattrs as binary-safe ``SCHILY.xattr.*`` records (``trusted.overlay.*`` never leaves the host).

Reading (``apply_tar``) is a small tar parser of its own rather than ``tarfile``: a helper thread
reads (decompresses) and hashes the non-seekable stream in 1 MiB chunks while the caller's thread
writes files; paths stay bytes (names need not be UTF-8) and no symlink is ever followed while
creating: every parent directory is checked with ``lstat`` once and remembered, an existing entry
is unlinked before it is replaced (never written through, so a hard link shared with another tree
is left alone), and file metadata is set through the new file's descriptor.

Whiteouts are translated here and only here, between the tar's encoding and the layer
directory's (the encodings themselves are :mod:`lamina.whiteouts`'). In "overlay" format a layer
directory holds only its own changes (deletion = char device 0/0, opaque dir =
``trusted.overlay.opaque=y``); in "aufs" format the same with the tar's ``.wh.`` files; in "plain"
format it is a full root filesystem, so whiteouts become real deletions.
"""

import hashlib
import os
import stat
import struct
import zlib
from collections import namedtuple

from lamina.errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from lamina.faults import point
from lamina.tarsplit import Recorder
from lamina.whiteouts import (
    is_aufs_opaque,
    is_opaque_marker,
    is_overlay_opaque,
    is_overlay_private_xattr,
    is_overlay_whiteout,
    is_reserved_name,
    is_whiteout_name,
    make_overlay_whiteout,
    opaque_marker_path,
    set_overlay_opaque,
    whited_out,
    whiteout_name,
    whiteout_path,
)

TarStats = namedtuple("TarStats", "diff_id tar_size size inodes record", defaults=(None,))
TarStats.__doc__ = """What a layer tar came to: its sha256 (``diff_id``), its bytes, the bytes and
inodes of its entries and, from :func:`apply_tar` with ``record``, its tar-split record
(:mod:`lamina.tarsplit`; None when the layer directory cannot give the tar back, e.g. a tar that
writes one path twice)."""

CHUNK = 1 << 20
# a file smaller than this is written from the tar even where it could be a reflink: opening
# its source and cloning cost about as much as writing a few blocks. On a loopback XFS, one file
# at a time: 4 KiB written 80-160 us, cloned 170-190 us; from 64 KiB the clone is ahead once the
# writeback is counted (1 MiB: 0.3-0.5 ms cloned, 2.8-8 ms written and synced). Commits of
# 20,000 files of 10-30 KB, all cloned against all written, were within the noise of a loaded
# machine (16.7-20.0 s against 16.2-22.6 s).
CLONE_MIN = 64 << 10


class GivenSources(dict):
    """The ``sources`` of a tree whose files are given to the layer made of it (a build step's
    container, removed once its layer is made, its processes gone): every regular file of the
    layer is a hard link of the file the tar's writer read, whatever its size and on any
    filesystem, so that making the layer writes no file data and removing the container frees
    none. Only for a source that nothing writes to any more: the layer and the source share
    their inodes until the source is removed."""
_BLOCK = 512
ZERO_BLOCK = bytes(_BLOCK)
_MAX_META = 8 << 20  # cap on PAX / GNU long-name payloads held in memory
_XATTR_PREFIX = "SCHILY.xattr."


# ----------------------------------------------------------------------------- decompression


class _Prefixed:
    """A read-only stream that yields ``head`` and then the rest of ``raw`` (peek without seek)."""

    def __init__(self, head: bytes, raw):
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        head = self._head
        if not head:
            return self._raw.read(size)
        if size is None or size < 0:
            self._head = b""
            return head + self._raw.read()
        if size >= len(head):
            self._head = b""
            return head
        self._head = head[size:]
        return head[:size]

    def readinto(self, buffer) -> int:
        head = self._head
        if not head:
            readinto = getattr(self._raw, "readinto", None)
            if readinto is not None:
                return readinto(buffer)
            data = self._raw.read(len(buffer))
        else:
            data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()


def is_plain(stream) -> bool:
    """True if ``stream`` (from :func:`open_layer_stream`) is the blob's own bytes, uncompressed:
    the layer's diff_id is then the blob's digest."""
    return isinstance(stream, _Prefixed)


def open_layer_stream(fileobj):
    """Return a stream of the uncompressed tar in ``fileobj`` (gzip, zstd, bzip2, xz or plain,
    sniffed).

    Works on pipes: the magic bytes are read, not peeked with seek, and handed back in front.
    """
    head = b""
    while len(head) < 4:
        chunk = fileobj.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    src = _Prefixed(head, fileobj)
    if head[:2] == b"\x1f\x8b":
        try:
            from isal import igzip as gzip_module
        except ImportError:  # pragma: no cover - isal is a declared dependency
            import gzip as gzip_module
        from .limits import guard  # compression bombs: LAMINA_MAX_COMPRESSION_RATIO

        return guard(lambda raw: gzip_module.GzipFile(fileobj=raw, mode="rb"), src, "gzip")
    if head == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError:
            raise InvalidArgument("zstd layer but the zstandard module is not installed") from None
        from .limits import guard

        return guard(lambda raw: zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True), src, "zstd")
    if head[:3] == b"BZh":  # what Docker's archive endpoints and import accept besides
        import bz2

        from .limits import guard

        return guard(lambda raw: bz2.BZ2File(raw, "rb"), src, "bzip2")
    if head == b"\xfd7zX":
        import lzma

        from .limits import guard

        return guard(lambda raw: lzma.LZMAFile(raw, "rb"), src, "xz")
    return src


# ----------------------------------------------------------------------------- writing


class _HashWriter:
    """Counts and hashes what goes to ``out`` (``hashed=False``: only counts)."""

    def __init__(self, out, hashed: bool = True):
        self._write = out.write
        self.sha = hashlib.sha256() if hashed else None
        self.count = 0

    def write(self, data) -> None:
        if self.sha is not None:
            self.sha.update(data)
        n = len(data)
        self.count += n
        written = self._write(data)
        if written is not None and written < n:  # raw files may write short
            view = memoryview(data)
            while written < n:
                written += self._write(view[written:])


_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12s")


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def tar_header(
    name: bytes,
    kind: bytes,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    size: int = 0,
    linkname: bytes = b"",
    device: int = 0,
    xattrs=(),
) -> bytes:
    """The header block(s) of one member: a PAX 'x' header first when ustar cannot hold it."""
    pax = []
    if len(name) > 100 or not name.isascii():
        pax.append(_pax_record(b"path", name))
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(_pax_record(b"linkpath", linkname))
    numbers = []
    for key, value, width in (
        (b"uid", uid, 8),
        (b"gid", gid, 8),
        (b"size", size, 12),
        (b"mtime", mtime, 12),
    ):
        if 0 <= value < 8 ** (width - 1):
            numbers.append(_octal(value, width))
        else:
            pax.append(_pax_record(key, b"%d" % value))
            numbers.append(_octal(0, width))
    for key, value in xattrs:
        pax.append(_pax_record(b"SCHILY.xattr." + key, value))
    block = _ustar(name[:100], mode, numbers, kind, linkname[:100], device)
    if not pax:
        return block
    records = b"".join(pax)
    base = name.rstrip(b"/").rpartition(b"/")[2]
    meta = _ustar(
        (b"PaxHeaders/" + base)[:100],
        0o644,
        [_octal(0, 8), _octal(0, 8), _octal(len(records), 12), numbers[3]],
        b"x",
        b"",
        0,
    )
    return meta + records + ZERO_BLOCK[: -len(records) % _BLOCK] + block


def _ustar(name, mode, numbers, kind, linkname, device) -> bytes:
    uid, gid, size, mtime = numbers
    major = minor = _octal(0, 8)
    if device:
        major, minor = _octal(os.major(device), 8), _octal(os.minor(device), 8)
    fields = [
        name,
        _octal(mode, 8),
        uid,
        gid,
        size,
        mtime,
        b" " * 8,
        kind,
        linkname,
        b"ustar\x0000",
        b"",
        b"",
        major,
        minor,
        b"",
        b"",
    ]
    block = _HEADER.pack(*fields)
    fields[6] = b"%06o\0 " % sum(block)
    return _HEADER.pack(*fields)


class TarWriter:
    """Writes a tar stream member by member (headers, padding, end blocks) and hashes what it
    writes: the layer tar and its diff_id in one pass."""

    def __init__(self, out, sources: dict | None = None, hashed: bool = True):
        self.out = _HashWriter(out, hashed)  # hashed=False: a tar nobody needs the digest of
        self.size = 0
        self.inodes = 0
        self._links = {}
        self._buf = None
        # name -> (path, lstat) of each regular file's content as it is about to be read, for
        # an extraction that reflinks the file instead of writing it (apply_tar's ``sources``)
        self.sources = sources

    def marker(self, name: bytes, st, mode: int | None = None) -> None:
        """An empty regular file (whiteout or opaque marker) with the owner and mtime of ``st``
        and ``mode`` (default: the permission bits of ``st``)."""
        mode = st.st_mode & 0o777 if mode is None else mode
        self.out.write(tar_header(name, b"0", mode, st.st_uid, st.st_gid, _seconds(st)))

    def entry(self, name: bytes, path: bytes, st) -> None:
        """Emit the file system entry at ``path`` (lstat ``st``) under ``name``."""
        mode = st.st_mode
        perms = stat.S_IMODE(mode)
        if stat.S_ISDIR(mode):
            self.inodes += 1
            self.out.write(
                tar_header(
                    name + b"/",
                    b"5",
                    perms,
                    st.st_uid,
                    st.st_gid,
                    _seconds(st),
                    xattrs=_read_xattrs(path),
                )
            )
            return
        if stat.S_ISSOCK(mode):
            return
        self.inodes += 1
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                self.out.write(
                    tar_header(name, b"1", perms, st.st_uid, st.st_gid, _seconds(st), linkname=first)
                )
                return
            self._links[key] = name
        self.size += st.st_size
        size = 0
        linkname = b""
        if stat.S_ISREG(mode):
            kind = b"0"
            size = st.st_size
            if self.sources is not None and (size >= CLONE_MIN
                                             or isinstance(self.sources, GivenSources)):
                self.sources[name] = (path, st)  # before its header: the reader finds it
        elif stat.S_ISLNK(mode):
            kind = b"2"
            linkname = os.readlink(path)
        elif stat.S_ISCHR(mode):
            kind = b"3"
        elif stat.S_ISBLK(mode):
            kind = b"4"
        elif stat.S_ISFIFO(mode):
            kind = b"6"
        else:  # pragma: no cover - no other file types exist on Linux
            return
        self.out.write(
            tar_header(
                name,
                kind,
                perms,
                st.st_uid,
                st.st_gid,
                _seconds(st),
                size,
                linkname,
                st.st_rdev if kind in b"34" else 0,
                _read_xattrs(path),
            )
        )
        if size:
            self._copy_data(path, size)

    def _copy_data(self, path: bytes, size: int) -> None:
        if self._buf is None:
            self._buf = memoryview(bytearray(CHUNK))
        view = self._buf
        write = self.out.write
        remaining = size
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb", 0) as f:
            readinto = f.readinto
            while remaining:
                n = readinto(view[: min(remaining, CHUNK)])
                if not n:
                    raise FailedPrecondition(
                        f"{os.fsdecode(path)} shrank while it was being archived"
                    )
                write(view[:n])
                remaining -= n
        pad = -size % _BLOCK
        if pad:
            write(ZERO_BLOCK[:pad])

    def finish(self) -> TarStats:
        self.out.write(ZERO_BLOCK * 2)
        sha = self.out.sha
        return TarStats("sha256:" + sha.hexdigest() if sha is not None else "", self.out.count,
                        self.size, self.inodes)


def _seconds(st) -> int:
    return st.st_mtime_ns // 1_000_000_000


def _read_xattrs(path: bytes) -> list:
    """Sorted (name, value) byte pairs of ``path``, symlinks not followed, trusted.overlay.* out."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    if not names:
        return []
    pairs = []
    for key in sorted(names):
        if is_overlay_private_xattr(key):
            continue
        try:
            pairs.append((os.fsencode(key), os.getxattr(path, key, follow_symlinks=False)))
        except OSError:
            continue
    return pairs


def _sorted_entries(path: bytes) -> list:
    with os.scandir(path) as it:
        entries = list(it)
    entries.sort(key=lambda entry: entry.name)
    return entries


def _walk(writer: TarWriter, path: bytes, prefix: bytes, overlay: bool) -> None:
    for entry in _sorted_entries(path):
        st = entry.stat(follow_symlinks=False)
        name = prefix + entry.name
        if overlay and is_overlay_whiteout(st):
            # 0600 whatever made the 0/0 device (the kernel makes 0000, apply_tar 0600), so a
            # layer written, applied and written again keeps its bytes and its diff_id
            writer.marker(prefix + whiteout_name(entry.name), st, 0o600)
            writer.inodes += 1
            continue
        writer.entry(name, entry.path, st)
        if stat.S_ISDIR(st.st_mode):
            if overlay and is_overlay_opaque(entry.path):
                writer.marker(opaque_marker_path(name), st)
            _walk(writer, entry.path, name + b"/", overlay)


def write_overlay_tar(out, upper: str, sources: dict | None = None) -> TarStats:
    """Write the layer tar of an overlay-format layer dir: char dev 0/0 -> ``.wh.NAME``,
    opaque dir -> the dir then ``DIR/.wh..wh..opq``. ``sources``: see :class:`TarWriter`."""
    writer = TarWriter(out, sources)
    upper = os.fsencode(upper)
    if is_overlay_opaque(upper):
        writer.marker(opaque_marker_path(b""), os.lstat(upper))
    _walk(writer, upper, b"", overlay=True)
    return writer.finish()


def _walk_aufs(writer: TarWriter, path: bytes, prefix: bytes) -> None:
    # ordered as _walk orders an overlay layer: a whiteout ".wh.NAME" sits where NAME would
    items = []
    for entry in _sorted_entries(path):
        name = entry.name
        if is_reserved_name(name):
            if is_whiteout_name(name):  # not AUFS's private names nor the opaque marker
                items.append((whited_out(name), True, entry))
        else:
            items.append((name, False, entry))
    items.sort(key=lambda item: item[0])
    for name, is_whiteout, entry in items:
        st = entry.stat(follow_symlinks=False)
        if is_whiteout:
            writer.marker(prefix + whiteout_name(name), st, 0o600)
            writer.inodes += 1
            continue
        writer.entry(prefix + name, entry.path, st)
        if stat.S_ISDIR(st.st_mode):
            if is_aufs_opaque(entry.path):
                writer.marker(opaque_marker_path(prefix + name), st)
            _walk_aufs(writer, entry.path, prefix + name + b"/")


def write_aufs_tar(out, branch: str, sources: dict | None = None) -> TarStats:
    """Write the layer tar of an aufs-format layer dir (lamina.union's branches): its ``.wh.``
    files are the tar's own whiteouts; the bytes equal write_overlay_tar's for the same changes."""
    writer = TarWriter(out, sources)
    branch = os.fsencode(branch)
    if is_aufs_opaque(branch):
        writer.marker(opaque_marker_path(b""), os.lstat(branch))
    _walk_aufs(writer, branch, b"")
    return writer.finish()


def write_tree_tar(out, root: str, hashed: bool = True) -> TarStats:
    """Write the whole tree under ``root`` (a flattened export): no whiteout translation.
    ``hashed=False``: no digest (the stats' diff_id is empty)."""
    writer = TarWriter(out, hashed=hashed)
    _walk(writer, os.fsencode(root), b"", overlay=False)
    return writer.finish()


def write_changes_tar(out, root: str, changes: list, sources: dict | None = None) -> TarStats:
    """Write the layer tar of ``changes`` (from ``changes.tree_changes``) taken from ``root``.

    D -> ``.wh.NAME``; A/C -> the entry in ``root``, a directory as its own header only.
    Parent directories are emitted only if ``changes`` lists them (tree_changes does).
    """
    writer = TarWriter(out, sources)
    root_b = os.fsencode(root)
    for rel in sorted((os.fsencode(c.path).strip(b"/"), c.kind) for c in changes):
        rel, kind = rel
        if not rel:
            continue
        if kind == "D":
            writer.out.write(tar_header(whiteout_path(rel), b"0", 0o600, 0, 0, 0))
            continue
        path = root_b + b"/" + rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise NotFound(f"changed path /{os.fsdecode(rel)} is missing from {root}") from None
        writer.entry(rel, path, st)
    return writer.finish()


# ----------------------------------------------------------------------------- reading


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument("invalid layer tar: " + message)


def _member(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _number(field: bytes) -> int:
    try:  # the common case: octal digits ended by NULs or spaces
        return int(field.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    if field and field[0] & 0x80:  # base-256 (GNU) for values that do not fit in octal
        value = int.from_bytes(field, "big") & ~(1 << (8 * len(field) - 1))
        if field[0] & 0x40:  # negative
            value -= 1 << (8 * len(field) - 1)
        return value
    field = field.split(b"\0", 1)[0].strip(b" ")
    if not field:
        return 0
    try:
        return int(field, 8)
    except ValueError:
        raise _bad(f"bad numeric field {field[:20]!r}") from None


def _pax_records(data: bytes) -> dict:
    records = {}
    pos = 0
    end = len(data)
    while pos < end:
        space = data.find(b" ", pos)
        if space < 0:
            if not data[pos:].strip(b"\0"):
                break
            raise _bad("malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _bad("malformed PAX header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > end or not record.endswith(b"\n") or b"=" not in record:
            raise _bad("malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    sign = -1 if text.startswith("-") else 1
    seconds, _, fraction = text.lstrip("-").partition(".")
    try:
        return sign * (int(seconds or "0") * 1_000_000_000 + int((fraction + "000000000")[:9]))
    except ValueError:
        raise _bad(f"bad PAX time {text[:40]!r}") from None


def _clean_path(raw: bytes, what: str) -> bytes:
    """Relative byte path with "." and empty components dropped; absolute or ".." rejected."""
    if raw.startswith(b"/"):
        raise InvalidArgument(f"layer tar {what} {_member(raw)!r} is an absolute path")
    if b"\0" in raw:
        raise InvalidArgument(f"layer tar {what} {_member(raw)!r} contains a NUL byte")
    parts = [p for p in raw.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise InvalidArgument(f"layer tar {what} {_member(raw)!r} contains '..'")
    return b"/".join(parts)


def _decoding_errors() -> tuple:
    """What a decompressing stream raises on bad input (only modules in use can raise)."""
    import sys
    import zlib

    errors = [OSError, EOFError, ValueError, zlib.error]
    isal_zlib = sys.modules.get("isal.isal_zlib")
    if isal_zlib is not None:
        errors.append(isal_zlib.error)
    zstandard = sys.modules.get("zstandard")
    if zstandard is not None:
        errors.append(zstandard.ZstdError)
    return tuple(errors)


class _Reader:
    """Buffered, hashing reader of a tar stream.

    A helper thread reads (and so decompresses) and hashes the next chunks while the caller
    writes files: zlib, isal, zstd, hashlib and file reads all release the GIL. (A listing of
    a tar-split record's headers, in memory already, is :func:`list_members`' instead:
    handing each small chunk to another thread cost image analyze 4 of its 4.5 s.)
    """

    def __init__(self, stream, hashed: bool = True):
        import queue
        import threading

        self.sha = hashlib.sha256() if hashed else None
        self.count = 0
        self.recorder = None  # a tarsplit.Recorder: every byte consumed is recorded
        self.buf = b""
        self.pos = 0
        self._eof = False
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=8)
        self._thread = threading.Thread(
            target=self._produce, args=(stream.read,), name="layertar-read", daemon=True
        )
        self._thread.start()

    def _produce(self, read) -> None:
        try:
            while not self._stop.is_set():
                chunk = read(CHUNK)
                if chunk:
                    if self.sha is not None:
                        self.sha.update(chunk)
                    self.count += len(chunk)
                self._put(chunk)
                if not chunk:
                    return
        except Exception as error:  # noqa: BLE001 - the consumer maps or re-raises it
            self._put(error)

    def _put(self, item) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Stop the helper (it ends after the read in progress); join it if it is done."""
        self._stop.set()
        if self._eof:
            self._thread.join()

    def fill(self) -> bool:
        """Replace the (consumed) buffer with the next chunk; False at end of stream."""
        if self._eof:
            return False
        chunk = self._queue.get()
        if isinstance(chunk, BaseException):
            self._eof = True
            if isinstance(chunk, _decoding_errors()):
                raise _bad(f"{type(chunk).__name__}: {chunk}".splitlines()[0]) from None
            raise chunk
        if not chunk:
            self._eof = True
            return False
        self.buf = chunk
        self.pos = 0
        return True

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only if the stream ends."""
        pos = self.pos
        if len(self.buf) - pos >= n:
            self.pos = pos + n
            data = self.buf[pos : pos + n]
            if self.recorder is not None:
                self.recorder.raw(data)
            return data
        parts = [self.buf[pos:]]
        have = len(parts[0])
        self.pos = len(self.buf)
        while have < n and self.fill():
            k = min(n - have, len(self.buf))
            parts.append(self.buf[:k])
            self.pos = k
            have += k
        data = b"".join(parts)
        if self.recorder is not None:
            self.recorder.raw(data)
        return data

    def skip(self, n: int, member: bytes) -> None:
        while n:
            avail = len(self.buf) - self.pos
            if not avail:
                if not self.fill():
                    raise _bad(f"truncated in member {_member(member)!r}")
                continue
            k = min(avail, n)
            if self.recorder is not None:
                self.recorder.raw(memoryview(self.buf)[self.pos : self.pos + k])
            self.pos += k
            n -= k

    def copy_to(self, fd: int | None, n: int, member: bytes) -> int:
        """Write the next ``n`` bytes (a file's content) to ``fd`` (None: only read them);
        returns their CRC-32 when recording (the record refers to them, not holds them)."""
        write = os.write
        crc = 0
        recording = self.recorder is not None
        while n:
            avail = len(self.buf) - self.pos
            if not avail:
                if not self.fill():
                    raise _bad(f"truncated in member {_member(member)!r}")
                continue
            k = min(avail, n)
            view = memoryview(self.buf)[self.pos : self.pos + k]
            if recording:
                crc = zlib.crc32(view, crc)
            if fd is not None:
                while view:
                    view = view[write(fd, view) :]
            self.pos += k
            n -= k
        return crc

    def drain(self) -> None:
        if self.recorder is not None:
            self.recorder.raw(memoryview(self.buf)[self.pos :])
        self.pos = len(self.buf)
        while self.fill():
            if self.recorder is not None:
                self.recorder.raw(self.buf)


_HEADER_ONLY = frozenset(b"123456")  # link, symlink, char, block, dir, fifo: no data


def _extended(kind: int, data: bytes, pax: dict, global_pax: dict, long_name, long_link):
    """Take in an extended header's data: PAX records (``x``, ``g``) go into ``pax`` or
    ``global_pax``; returns (long_name, long_link), one of them replaced by a GNU long name
    (``L``) or link (``K``)."""
    if kind == 0x78:  # x
        pax.update(_pax_records(data))
    elif kind == 0x67:  # g
        global_pax.update(_pax_records(data))
    elif kind == 0x4C:  # L
        long_name = data.split(b"\0", 1)[0]
    else:
        long_link = data.split(b"\0", 1)[0]
    return long_name, long_link


def _kind_name_size(header: bytes, at: int, kind: int, size: int, records: dict, long_name):
    """(kind, name, size) of the member whose header starts at ``header[at]``, given its type
    byte and size field: NUL and "7" are regular files ("0"); the name is its PAX path, its GNU
    long name, or the ustar prefix and name; the size its PAX one, 0 for kinds without data."""
    if "path" in records:
        name = records["path"]
    elif long_name is not None:
        name = long_name
    else:
        name = header[at:at + 100].split(b"\0", 1)[0]
        if header[at + 345] and header[at + 257:at + 263] == b"ustar\x00":
            name = header[at + 345:at + 500].split(b"\0", 1)[0] + b"/" + name
    if kind == 0 or kind == 0x37:  # NUL and "7" (contiguous) are regular files
        kind = 0x30
    if "size" in records:
        size = int(records["size"])
    return kind, name, 0 if kind in _HEADER_ONLY else size


def _headers(reader: _Reader, empty_ok: bool = False):
    """Yield (type, name, linkname, size, mode, uid, gid, mtime_ns, devmajor, devminor, xattrs)
    for each member, data left unread in ``reader`` (``size`` bytes then padding). An empty
    stream is an error unless ``empty_ok``. (A listing of names and sizes alone, for image
    analyze, is :func:`list_members`.)"""
    global_pax = {}
    pax = {}
    long_name = long_link = None
    seen = False
    while True:
        block = reader.take(_BLOCK)
        if not block:
            if not seen and not empty_ok:
                raise _bad("empty stream")
            return  # a missing end-of-archive marker is tolerated, like Go's archive/tar
        if len(block) < _BLOCK:
            raise _bad("truncated header")
        if block == ZERO_BLOCK:
            if pax or long_name is not None or long_link is not None:
                raise _bad("extended header without a member")
            second = reader.take(_BLOCK)
            if second and second != ZERO_BLOCK[: len(second)]:
                raise _bad("a single zero block in the middle of the archive")
            return
        if _number(block[148:156]) != sum(block) - sum(block[148:156]) + 256:
            raise _bad("header checksum mismatch (not a tar, or corrupt)")
        seen = True
        kind = block[156]
        size = _number(block[124:136])
        if size < 0:
            raise _bad("negative member size")
        if kind in b"xgLK":
            if size > _MAX_META:
                raise _bad("oversized extended header")
            data = reader.take(size)
            if len(data) < size:
                raise _bad("truncated extended header")
            reader.skip(-size % _BLOCK, b"extended header")
            long_name, long_link = _extended(kind, data, pax, global_pax, long_name, long_link)
            continue
        records = {**global_pax, **pax} if global_pax else pax
        kind, name, size = _kind_name_size(block, 0, kind, size, records, long_name)
        if "linkpath" in records:
            linkname = records["linkpath"]
        elif long_link is not None:
            linkname = long_link
        else:
            linkname = block[157:257].split(b"\0", 1)[0]
        uid = int(records["uid"]) if "uid" in records else _number(block[108:116])
        gid = int(records["gid"]) if "gid" in records else _number(block[116:124])
        if size < 0 or uid < 0 or gid < 0:
            raise _bad("negative size, uid or gid")
        if "mtime" in records:
            mtime_ns = _pax_time_ns(records["mtime"])
        else:
            mtime_ns = _number(block[136:148]) * 1_000_000_000
        xattrs = None
        for key, value in records.items():
            if key.startswith(_XATTR_PREFIX):
                if xattrs is None:
                    xattrs = []
                xattrs.append((key[len(_XATTR_PREFIX) :], value))
            elif key.startswith("GNU.sparse."):
                raise _bad(f"sparse member {_member(name)!r} is not supported")
        yield (
            kind,
            name,
            linkname,
            size,
            _number(block[100:108]) & 0o7777,
            uid,
            gid,
            mtime_ns,
            _number(block[329:337]),
            _number(block[337:345]),
            xattrs,
        )
        pax = {}
        long_name = long_link = None


def list_members(pieces) -> tuple[list[int], list[bytes], list[int]]:
    """The kinds, names and sizes of the members of a tar given in ``pieces`` (bytes of the
    tar in order; an int stands for that many bytes of a member's data left out, as
    :func:`lamina.tarsplit.pieces` gives a record's tar), three lists in tar order: a listing
    for image analyze. Kinds and sizes are :data:`TarMember`'s, names are the PAX, GNU or
    ustar ones; header checksums are not summed (a layer was checked when it was stored). Each
    header is parsed where it lies in its piece, data is stepped over by arithmetic: some 1 us
    a member, against 5 through a reader's ``take`` and ``skip`` and :func:`_headers`."""
    global_pax = {}
    pax = {}
    long_name = long_link = None
    skip = 0  # bytes of the tar (data and padding) to step over before the next header
    carry = b""  # the start of a header (with its extended data) that the next piece ends
    trailer = -1  # after the end-of-archive block: bytes of the second one left to check
    name = b""
    kinds: list[int] = []
    names: list[bytes] = []
    sizes: list[int] = []
    for piece in pieces:
        if piece.__class__ is int and trailer < 0:  # data left out: only ever a member's
            if piece > skip or carry:
                raise _bad("a member's data where a header should be")
            skip -= piece
            continue
        if trailer >= 0:  # after the end of the archive: the second block, then anything
            if piece.__class__ is int:  # (read to the end: a damaged record is still found)
                trailer -= min(trailer, piece)
            elif trailer:
                second = piece[:trailer]
                if second != ZERO_BLOCK[:len(second)]:
                    raise _bad("a single zero block in the middle of the archive")
                trailer -= len(second)
            continue
        pos, end = skip, len(piece)
        if pos >= end:
            skip = pos - end
            continue
        skip = 0
        if carry:
            piece, pos = carry + piece[pos:], 0
            end = len(piece)
            carry = b""
        while pos + _BLOCK <= end:
            kind = piece[pos + 156]
            if not piece[pos] and piece[pos:pos + _BLOCK] == ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    raise _bad("extended header without a member")
                second = piece[pos + _BLOCK:pos + 2 * _BLOCK]
                if second != ZERO_BLOCK[:len(second)]:
                    raise _bad("a single zero block in the middle of the archive")
                trailer = _BLOCK - len(second)
                pos = end
                break
            field = piece[pos + 124:pos + 136]
            try:  # _number's common case, without its call
                size = int(field.rstrip(b"\0 ") or b"0", 8)
            except ValueError:
                size = _number(field)
            if size < 0:
                raise _bad("negative member size")
            if kind in b"xgLK":
                if size > _MAX_META:
                    raise _bad("oversized extended header")
                if pos + _BLOCK + size > end:
                    break  # its data goes on in the next piece: carried
                long_name, long_link = _extended(kind, piece[pos + _BLOCK:pos + _BLOCK + size],
                                                 pax, global_pax, long_name, long_link)
            else:
                records = {**global_pax, **pax} if global_pax else pax
                kind, name, size = _kind_name_size(piece, pos, kind, size, records, long_name)
                if size < 0:
                    raise _bad("negative member size")
                kinds.append(kind)
                names.append(name)
                sizes.append(size)
                if pax:
                    pax = {}
                long_name = long_link = None
            pos += _BLOCK + size + (-size % _BLOCK)
        if pos < end:
            carry = piece[pos:]
        else:
            skip = pos - end
    if carry:
        raise _bad("truncated header" if len(carry) < _BLOCK else "truncated extended header")
    if skip and trailer < 0:
        raise _bad(f"truncated in member {_member(name)!r}")
    return kinds, names, sizes


TarMember = namedtuple(
    "TarMember", "kind name linkname size mode uid gid mtime_ns devmajor devminor xattrs")
TarMember.__doc__ = """One member's header: ``kind`` is the type byte (``ord("0")`` a file, "5" a
directory, "1" a hard link, "2" a symlink, "3"/"4" devices, "6" a FIFO), names are bytes as the
tar has them, ``mode`` the permission bits, ``xattrs`` (name, value) pairs or None."""


class TarMembers:
    """The members of an uncompressed tar stream, one at a time, for extractors other than
    :func:`apply_tar` (:func:`lamina.copy.extract_archive` writes them into a container's root).

    Iterating yields each :data:`TarMember`; :meth:`copy_data` writes the data of the current
    one to a file descriptor, and data not copied is skipped. The parsing (PAX and GNU long
    names, checksums, truncation) is :func:`apply_tar`'s; an empty stream has no members."""

    def __init__(self, stream):
        self._stream = stream
        self._reader = None
        self._left = 0
        self._name = b""

    def __iter__(self):
        self._reader = reader = _Reader(self._stream, hashed=False)
        try:
            for header in _headers(reader, empty_ok=True):
                member = TarMember(*header)
                self._left, self._name = member.size, member.name
                yield member
                reader.skip(self._left + (-member.size % _BLOCK), member.name)
                self._left = 0
            reader.drain()
        finally:
            reader.close()

    def copy_data(self, fd: int) -> None:
        """Write the current member's data (what is left of it) to ``fd``."""
        self._reader.copy_to(fd, self._left, self._name)
        self._left = 0


def _has_entries(directory: bytes) -> bool:
    try:
        with os.scandir(directory) as it:
            return next(it, None) is not None
    except FileNotFoundError:
        return False


class _Extractor:
    def __init__(self, root: str, fmt: str):
        if fmt not in ("overlay", "plain", "aufs"):
            raise InvalidArgument(f"unknown layer format {fmt!r}")
        self.overlay = fmt in ("overlay", "aufs")  # the layer dir holds only its own changes
        self.aufs = fmt == "aufs"  # ...with whiteouts kept as the tar has them (.wh. files)
        self.root = os.fsencode(os.path.abspath(root))
        self.dirs = {self.root}  # directories known to be real (not symlinks) inside root
        self.dir_meta = {}  # path -> (mode, uid, gid, mtime_ns, xattrs), applied at the end
        self.created = set()  # plain format: paths this tar created (opaque dirs keep them)
        # ...needed only where the directory holds a parent's entries too (a plain layer on a
        # parent): in an empty one everything is the tar's, and a set of every path would grow
        # with the layer (200,000 files: some 20 MB)
        self.track_created = not self.overlay and _has_entries(self.root)
        self.opaque = []  # plain format: opaque dirs, purged at the end
        self.size = 0
        self.inodes = 0
        self.owners_kept = 0  # non-root: entries left owned by the user (see chown)
        self.recording = False  # a tar-split record is made: see replaced
        self.replaced = False  # recording, and an entry the tar wrote was removed or replaced
        self.sources = None  # name -> (path, lstat) of the files the tar's writer read (clone)

    def chown(self, target, uid: int, gid: int) -> None:
        """Give ``target`` (a descriptor or a path, never followed) its owner. A user without
        privileges cannot give files away: the entry keeps the user's own uid and gid, and
        apply_tar says so once (Podman without a user namespace does the same)."""
        try:
            if isinstance(target, int):
                os.fchown(target, uid, gid)
            else:
                os.chown(target, uid, gid, follow_symlinks=False)
        except PermissionError:
            if os.geteuid() == 0:
                raise
            self.owners_kept += 1

    # -- path safety

    def parent_dir(self, rel: bytes, member: bytes, create: bool = True, what: str = "member"):
        """Absolute path of the directory holding ``rel``, made of real directories only.

        Missing ones are created (0755) if ``create``, else None is returned.
        """
        parent = rel.rpartition(b"/")[0]
        path = self.root + b"/" + parent if parent else self.root
        if path in self.dirs:
            return path
        current = self.root
        for part in parent.split(b"/"):
            current = current + b"/" + part
            if current in self.dirs:
                continue
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(current, 0o755)
                self.dirs.add(current)
                continue
            if not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a non-directory"
                raise InvalidArgument(f"layer tar {what} {_member(member)!r} goes through {kind}")
            self.dirs.add(current)
        return path

    def remove(self, path: bytes) -> bool:
        """Remove whatever is at ``path`` (never following a symlink); False if nothing.

        Every removal and replacement of an entry goes through here: while recording, the
        first one that meets something this tar made makes the record unusable (a file content
        it refers to may be gone; whether it was one is not worth a list of every file written).
        An overlay layer's directory holds only what its tar made; a plain one starts as a copy
        of its parent, whose entries a whiteout removes without harm to the record."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if self.recording and not self.replaced:
            self.replaced = not self.track_created or path in self.created or any(
                made.startswith(path + b"/") for made in self.created)
        if stat.S_ISDIR(st.st_mode):
            import shutil

            shutil.rmtree(path)
            prefix = path + b"/"
            self.dirs = {d for d in self.dirs if d != path and not d.startswith(prefix)}
        else:
            os.unlink(path)
        return True

    # -- members

    def member(self, header, reader: _Reader) -> None:
        kind, raw, linkname, size, mode, uid, gid, mtime_ns, major, minor, xattrs = header
        rel = _clean_path(raw, "member")
        if not rel:  # the root itself ("./"): its metadata belongs to the layer's parent
            reader.skip(size + (-size % _BLOCK), raw)
            return
        base = rel.rpartition(b"/")[2]
        if is_reserved_name(base):
            self.whiteout(rel, base, raw, header)
            reader.skip(size + (-size % _BLOCK), raw)
            return
        parent = self.parent_dir(rel, raw)
        path = parent + b"/" + base
        if kind == 0x30:  # regular file
            fd = self.take(path, rel, size) if self.given else None
            linked = fd is not None
            if not linked:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    fd = os.open(path, flags, 0o600)
                except FileExistsError:
                    self.remove(path)
                    fd = os.open(path, flags, 0o600)
            try:
                if size:
                    source = None
                    if self.sources is not None and not linked and not self.given:
                        source = self.clone(fd, rel, size)
                    crc = reader.copy_to(None if linked or source is not None else fd, size, raw)
                    if source is not None:
                        _check_source(source, raw)
                    if self.recording:
                        reader.recorder.file(rel, size, crc)
                    reader.skip(-size % _BLOCK, raw)
                self.chown(fd, uid, gid)
                os.fchmod(fd, mode)
                if xattrs:
                    for key, value in xattrs:
                        if not is_overlay_private_xattr(key):
                            os.setxattr(fd, key, value)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
            self.size += size
        elif kind == 0x35:  # directory
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    self.inodes -= 1  # an existing directory only takes the new metadata
                else:
                    self.remove(path)
                    os.mkdir(path, 0o700)
            self.dirs.add(path)
            self.dir_meta[path] = (mode, uid, gid, mtime_ns, xattrs)
        elif kind == 0x31:  # hard link
            target_rel = _clean_path(linkname, "hard link target")
            target_parent = (
                self.parent_dir(target_rel, linkname, create=False, what="hard link target")
                if target_rel
                else None
            )
            target = None
            if target_parent is not None:
                target = target_parent + b"/" + target_rel.rpartition(b"/")[2]
                try:
                    target_st = os.lstat(target)
                except FileNotFoundError:
                    target = None
                else:
                    if stat.S_ISDIR(target_st.st_mode):
                        raise InvalidArgument(
                            f"layer tar hard link {_member(raw)!r} points to a directory"
                        )
            if target is None:
                raise InvalidArgument(
                    f"layer tar hard link {_member(raw)!r} points to missing {_member(linkname)!r}"
                )
            if target == path:
                return
            try:
                os.link(target, path, follow_symlinks=False)
            except FileExistsError:
                self.remove(path)
                os.link(target, path, follow_symlinks=False)
        elif kind == 0x32:  # symlink
            try:
                os.symlink(linkname, path)
            except FileExistsError:
                self.remove(path)
                os.symlink(linkname, path)
            self.chown(path, uid, gid)
            self.set_xattrs(path, xattrs, symlink=True)
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            self.size += len(linkname)
        elif kind in (0x33, 0x34, 0x36):  # char, block, fifo
            file_type = {0x33: stat.S_IFCHR, 0x34: stat.S_IFBLK, 0x36: stat.S_IFIFO}[kind]
            device = os.makedev(major, minor) if kind != 0x36 else 0
            from lamina.userns import in_user_namespace

            if kind != 0x36 and (os.geteuid() != 0 or in_user_namespace()):  # rootless: root
                from lamina.errors import Unavailable  # of a user namespace cannot mknod either

                raise Unavailable(
                    f"layer tar member {_member(raw)!r} is a device node, which only root can "
                    "create: import this layer as root (a non-root store cannot hold it)")
            try:
                os.mknod(path, file_type | 0o600, device)
            except FileExistsError:
                self.remove(path)
                os.mknod(path, file_type | 0o600, device)
            self.chown(path, uid, gid)
            os.chmod(path, mode)  # the node was just made here: not a symlink
            self.set_xattrs(path, xattrs)
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        else:
            raise _bad(f"member {_member(raw)!r} has unsupported type {chr(kind)!r}")
        self.inodes += 1
        if self.track_created:
            self.created.add(path)

    @property
    def given(self) -> bool:
        return isinstance(self.sources, GivenSources)

    def take(self, path: bytes, rel: bytes, size: int) -> int | None:
        """:class:`GivenSources`: make ``path`` a hard link of the file the tar's writer read
        for ``rel``, if it is still the file the writer saw, and open it (read-only: its owner,
        mode, xattrs and mtime are set through it as for a written file); None: write it from
        the tar. The source's overlayfs xattrs (``trusted.overlay.origin`` of a copied-up
        file) go: a layer's files carry only what its tar gives them."""
        import errno

        source = self.sources.pop(rel, None)
        if source is None:
            return None
        spath, seen = source
        try:
            now = os.lstat(spath)
        except OSError:
            return None
        if _identity(now) != _identity(seen) or now.st_size != size:
            return None
        try:
            os.link(spath, path, follow_symlinks=False)
        except FileExistsError:
            self.remove(path)
            os.link(spath, path, follow_symlinks=False)
        except OSError as error:
            if error.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                self.sources = None  # another filesystem (or no links there): write them all
                return None
            raise
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except PermissionError:  # a mode this user cannot read: written from the tar instead
            os.unlink(path)
            return None
        try:
            for key in os.listxattr(fd):
                if is_overlay_private_xattr(key):
                    os.removexattr(fd, key)
        except OSError:
            os.close(fd)
            raise
        return fd

    def clone(self, fd: int, rel: bytes, size: int):
        """Give the new file ``fd`` the data blocks of the file the tar's writer is reading for
        ``rel`` (a reflink: nothing copied), if that file is unchanged since the writer looked
        at it; returns (its descriptor, its stat) to check once its content has been read from
        the tar (:func:`_check_source`), or None: the content is written from the tar."""
        import errno
        import fcntl

        from lamina.fsutil import FICLONE

        source = self.sources.pop(rel, None)
        if source is None:
            return None
        path, seen = source
        try:
            sfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            now = os.fstat(sfd)
            if _identity(now) != _identity(seen) or now.st_size != size:
                os.close(sfd)
                return None
            fcntl.ioctl(fd, FICLONE, sfd)
        except OSError as error:
            os.close(sfd)
            if error.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
                               errno.ENOSYS, errno.EPERM):
                self.sources = None  # a filesystem without reflinks: write every file
            return None
        return sfd, now

    def set_xattrs(self, path: bytes, xattrs, symlink: bool = False) -> None:
        for key, value in xattrs or ():
            if is_overlay_private_xattr(key):
                continue
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except PermissionError:
                if not (symlink and key.startswith("user.")):  # Linux refuses user.* on links
                    raise

    def marker(self, path: bytes, header) -> None:
        """aufs format: an empty ``.wh.`` file (a whiteout or an opaque marker) with the owner
        and mtime of its tar header, mode 0600 (what the tar writers emit for whiteouts)."""
        _, _, _, _, _, uid, gid, mtime_ns, _, _, _ = header
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            self.chown(fd, uid, gid)
            os.fchmod(fd, 0o600)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def whiteout(self, rel: bytes, base: bytes, raw: bytes, header=None) -> None:
        if is_opaque_marker(base):
            parent = self.parent_dir(rel, raw, create=self.overlay)
            if parent is None:
                return
            if self.aufs:
                self.marker(parent + b"/" + base, header)
            elif self.overlay:
                set_overlay_opaque(parent)
            elif self.track_created:  # else nothing there is a parent's to hide
                self.opaque.append(parent)
            return
        name = whited_out(base)
        if not name or name in (b".", b"..") or is_reserved_name(name):
            raise InvalidArgument(f"layer tar member {_member(raw)!r} is an invalid whiteout")
        parent = self.parent_dir(rel, raw, create=self.overlay)
        if parent is None:
            return
        path = parent + b"/" + name
        if self.aufs:
            self.remove(path)
            self.marker(parent + b"/" + base, header)
            self.inodes += 1
        elif self.overlay:
            self.remove(path)
            make_overlay_whiteout(path)
            if header is not None:  # the tar's owner and mtime, so a re-export keeps its bytes
                os.chown(path, header[5], header[6], follow_symlinks=False)
                os.utime(path, ns=(header[7], header[7]), follow_symlinks=False)
            self.inodes += 1
        elif self.track_created and path not in self.created:  # a whiteout hides lower
            # layers, never its own layer (in an empty directory there is nothing else)
            self.remove(path)

    # -- end of archive

    def purge(self, directory: bytes) -> None:
        """Plain format opaque dir: delete everything below that this tar did not create."""
        with os.scandir(directory) as it:
            entries = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in it]
        for path, is_dir in entries:
            if path in self.created or self.is_ancestor_of_created(path):
                if is_dir:
                    self.purge(path)
            else:
                self.remove(path)

    def is_ancestor_of_created(self, path: bytes) -> bool:
        if self._ancestors is None:
            ancestors = set()
            for created in self.created:
                parent = created.rpartition(b"/")[0]
                while len(parent) > len(self.root) and parent not in ancestors:
                    ancestors.add(parent)
                    parent = parent.rpartition(b"/")[0]
            self._ancestors = ancestors
        return path in self._ancestors

    _ancestors = None

    def finish(self) -> None:
        for directory in self.opaque:
            if directory in self.dirs:
                self.purge(directory)
        for path, (mode, uid, gid, mtime_ns, xattrs) in self.dir_meta.items():
            if path not in self.dirs:  # replaced by a later member
                continue
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self.chown(fd, uid, gid)
                os.fchmod(fd, mode)
                for key, value in xattrs or ():
                    if not is_overlay_private_xattr(key):
                        os.setxattr(fd, key, value)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)


class SourceChanged(LaminaError):
    """A file reflinked from the tar's source changed while the tar was written: the layer is
    made again without reflinks."""


def _identity(st) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _check_source(source, member: bytes) -> None:
    """After a reflinked file's content went by in the tar: the source did not change since
    the clone (ctime moves with every write), so the clone holds the bytes the tar has."""
    sfd, seen = source
    try:
        now = os.fstat(sfd)
    finally:
        os.close(sfd)
    if _identity(now) != _identity(seen):
        raise SourceChanged(f"{_member(member)} changed while its layer was written")


def apply_tar(stream, root: str, fmt: str, digest: str | None = None,
              record: bool = False, sources: dict | None = None) -> TarStats:
    """Extract the (uncompressed) layer tar read from ``stream`` into ``root``.

    ``fmt`` is "overlay" (whiteouts stay as char devices / opaque xattrs), "aufs" (whiteouts stay
    as the tar has them: ``.wh.NAME`` and ``.wh..wh..opq`` files) or "plain" (whiteouts
    delete). Hostile members raise InvalidArgument; nothing is ever written outside ``root``,
    but on error ``root`` is left half-written for the caller to discard. The whole stream is
    read, so ``diff_id`` is the sha256 of every byte of it; a caller that knows that digest
    already (the stream is a stored, verified blob: see :func:`is_plain`) passes it as
    ``digest`` and the bytes are not hashed again. ``record``: also make the tar's tar-split
    record (:mod:`lamina.tarsplit`), given back in the stats when every file content the tar
    wrote is still in ``root`` at its end. ``sources``: the dict the tar's :class:`TarWriter`
    fills (a container's or a build step's changes, written as they are extracted): on a
    filesystem with reflinks each file is cloned from the file the writer reads instead of
    written (:class:`SourceChanged` if one changed meanwhile).
    """
    extractor = _Extractor(root, fmt)
    extractor.sources = sources
    reader = _Reader(stream, hashed=digest is None)
    if record:
        reader.recorder = Recorder()
        extractor.recording = True
    header = None
    try:
        for header in _headers(reader):
            extractor.member(header, reader)
            point("extract.mid")
        extractor.finish()
        reader.drain()
    except OSError as error:
        where = f" at {_member(header[1])!r}" if header else ""
        raise LaminaError(f"cannot extract layer{where}: {error.strerror or error}") from None
    except (ValueError, OverflowError) as error:  # NUL bytes, out-of-range numbers
        raise _bad(str(error).splitlines()[0] if str(error) else "bad value") from None
    finally:
        reader.close()
    if extractor.owners_kept:
        import sys

        print(f"warning: not root: {extractor.owners_kept} entries of the layer are owned by "
              "you, not by the owners the layer gives them", file=sys.stderr)
    split = None
    if record and not extractor.replaced:
        split = reader.recorder.finish()
    return TarStats(
        digest or "sha256:" + reader.sha.hexdigest(), reader.count, extractor.size,
        extractor.inodes, split,
    )


def split_tar(stream) -> tuple[bytes, str, int]:
    """(tar-split record, sha256, size) of the uncompressed layer tar ``stream``, read without
    extracting anything (a stored blob's record: migration, ``system check --repair``)."""
    reader = _Reader(stream)
    reader.recorder = recorder = Recorder()
    try:
        for header in _headers(reader, empty_ok=True):
            kind, raw, size = header[0], header[1], header[3]
            if kind == 0x30 and size:
                rel = _clean_path(raw, "member")
                base = rel.rpartition(b"/")[2]
                if rel and not is_reserved_name(base):
                    recorder.file(rel, size, reader.copy_to(None, size, raw))
                    reader.skip(-size % _BLOCK, raw)
                    continue
            reader.skip(size + (-size % _BLOCK), raw)
        reader.drain()
    except (ValueError, OverflowError) as error:
        raise _bad(str(error).splitlines()[0] if str(error) else "bad value") from None
    finally:
        reader.close()
    return recorder.finish(), "sha256:" + reader.sha.hexdigest(), reader.count
