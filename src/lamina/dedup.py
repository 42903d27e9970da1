"""``lamina system dedup``: identical files in different layers share their data blocks.

Two layers often hold the same file (a base rebuilt, a package installed in two images, a file
copied by a build step). Where the store's filesystem can share data blocks between files
(reflinks: XFS made with ``reflink=1``, btrfs), this pass makes every group of identical layer
files use one copy of the blocks:

1. walk every committed layer's directory; regular, non-empty files of the same size are
   candidates (hard links of one inode count once);
2. read each file's extent map (``FS_IOC_FIEMAP``): files whose extents are already the same
   blocks need nothing; the others are hashed (sha256) into groups of equal content;
3. ask the kernel to share the blocks (``FIDEDUPERANGE``, what duperemove uses): it locks both
   files, compares them byte for byte and remaps the destination only where they are equal, in
   one step, so a file that changed after it was hashed is left alone (reported as differing),
   and a container reading the file through its overlay sees the same bytes throughout.

``FIDEDUPERANGE`` rather than ``FICLONE``: a clone rewrites the destination whatever it holds
(the byte-for-byte comparison would have to happen before it, leaving a window), and it counts
as a write (mtime and ctime change, setuid and setgid bits are dropped). A deduplication changes
no metadata: mode, owner, xattrs and times stay, so the layers' tar-split records (and their
checksums) and ``system check`` are unaffected.

Only committed layers are touched: they never change. Containers' writable layers are left
alone (a running container writes them; its files become a layer at ``commit``, and a later
pass shares them then).

What the pass found is kept in the ``shared_blocks`` table (a row per shared file: its group,
its layer and the bytes its blocks take), so ``system df`` says how many bytes are stored once
although ``du`` counts them in every layer: a group of n files that are still stored saves
(n - 1) times its bytes. Removing a layer removes its rows (a foreign key), so the figure stays
true when a group's first file goes: the others keep the blocks.
"""

from __future__ import annotations

import errno
import os
import struct

from .errors import FailedPrecondition, LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store

FIDEDUPERANGE = 0xC0189436  # _IOWR(0x94, 54, struct file_dedupe_range)
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_RANGE = struct.Struct("=QQHHI")  # src_offset, src_length, dest_count, reserved
_RANGE_INFO = struct.Struct("=qQQiI")  # dest_fd, dest_offset, bytes_deduped, status, reserved
_FIEMAP = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags, 3 reserved
_FIEMAP_FLAG_SYNC = 1
_EXTENT_LAST = 0x1
_EXTENT_UNSHAREABLE = 0x2 | 0x4 | 0x8 | 0x100 | 0x200 | 0x400 | 0x800  # unknown, delalloc,
# encoded, not aligned, inline, tail, unwritten: no physical block of its own to compare
_DEDUPE_CHUNK = 16 << 20  # btrfs takes at most 16 MiB a call; XFS more, but this is enough
_DESTS = 64  # destinations per call (the kernel takes a page's worth)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.EXDEV, errno.ENOSYS)


class NoReflinks(FailedPrecondition):
    """The store's filesystem cannot share data blocks between files."""


def extents(fd: int) -> tuple | None:
    """The file's data extents as ((logical, physical, length), ...), or None when they cannot
    be compared (no FIEMAP, inline or delayed data)."""
    import fcntl

    found: list[tuple[int, int, int]] = []
    start = 0
    count = 32
    while True:
        request = bytearray(_FIEMAP.size + count * _EXTENT.size)
        _FIEMAP.pack_into(request, 0, start, (1 << 64) - 1 - start, _FIEMAP_FLAG_SYNC, 0, count, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
        except OSError:
            return None
        mapped = _FIEMAP.unpack_from(request, 0)[3]
        if not mapped:
            return tuple(found)
        for i in range(mapped):
            logical, physical, length, _, _, flags, *_ = _EXTENT.unpack_from(
                request, _FIEMAP.size + i * _EXTENT.size)
            if flags & _EXTENT_UNSHAREABLE:
                return None
            found.append((logical, physical, length))
            if flags & _EXTENT_LAST:
                return tuple(found)
        start = found[-1][0] + found[-1][2]


def dedupe(src: int, dests: list[int], size: int) -> list[int]:
    """Share the first ``size`` bytes of ``src`` with each of ``dests`` (open file descriptors
    of files of that size) where their content is the same; returns a status for each dest:
    0 shared, 1 its content differs, or a negative errno."""
    import fcntl

    status = [0] * len(dests)
    for first in range(0, len(dests), _DESTS):
        batch = list(range(first, min(first + _DESTS, len(dests))))
        offset = 0
        while offset < size and batch:
            length = min(_DEDUPE_CHUNK, size - offset)
            request = bytearray(_RANGE.size + len(batch) * _RANGE_INFO.size)
            _RANGE.pack_into(request, 0, offset, length, len(batch), 0, 0)
            for slot, i in enumerate(batch):
                _RANGE_INFO.pack_into(request, _RANGE.size + slot * _RANGE_INFO.size,
                                      dests[i], offset, 0, 0, 0)
            fcntl.ioctl(src, FIDEDUPERANGE, request)
            done = length
            still = []
            for slot, i in enumerate(batch):
                _, _, deduped, result, _ = _RANGE_INFO.unpack_from(
                    request, _RANGE.size + slot * _RANGE_INFO.size)
                if result != 0:
                    status[i] = result
                    continue
                done = min(done, deduped) if deduped else done
                still.append(i)
            batch = still
            offset += done
    return status


def supported(directory: str) -> bool:
    """Whether files in ``directory`` can share data blocks: two small identical files are made
    there and deduplicated."""
    base = os.path.join(directory, f".dedup-probe-{os.getpid()}")
    fds = []
    try:
        for name in ("a", "b"):
            fd = os.open(f"{base}-{name}", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
            fds.append(fd)
            os.write(fd, b"lamina dedup probe\n" * 3449)  # 65,531 bytes: two blocks and a tail
            os.fsync(fd)
        try:
            return dedupe(fds[0], [fds[1]], os.fstat(fds[0]).st_size) == [0]
        except OSError as error:
            if error.errno in _UNSUPPORTED:
                return False
            raise
    finally:
        for fd in fds:
            os.close(fd)
        for name in ("a", "b"):
            try:
                os.unlink(f"{base}-{name}")
            except FileNotFoundError:
                pass


def _layer_files(directory: str):
    """(path, stat) of every regular, non-empty file under ``directory``."""
    stack = [directory]
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:  # removed meanwhile
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = st.st_mode & 0o170000
            if mode == 0o040000:
                stack.append(entry.path)
            elif mode == 0o100000 and st.st_size:
                yield entry.path, st


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def _file_hash(path: str, size: int) -> bytes:
    """sha256 of the file's content if it still has ``size`` bytes, else b""."""
    fd = _open(path)
    if fd is None:
        return b""
    try:
        return _hash(fd, size)
    finally:
        os.close(fd)


def _hash(fd: int, size: int) -> bytes:
    import hashlib  # here: system df reads saved_bytes, and libcrypto is milliseconds to load

    digest = hashlib.sha256()
    buf = memoryview(bytearray(1 << 20))
    left = size
    while left:
        n = os.readv(fd, [buf[:min(left, 1 << 20)]])
        if not n:
            break
        digest.update(buf[:n])
        left -= n
    return digest.digest() if not left and not os.read(fd, 1) else b""


def _allocated(ext: tuple | None, st: os.stat_result) -> int:
    """Bytes of the file's data blocks."""
    return sum(e[2] for e in ext) if ext else st.st_blocks * 512


def dedup(store: Store, dry_run: bool = False) -> dict:
    """Share the data blocks of identical files across the store's committed layers (see the
    module's docstring). Returns what was done: ``Files`` scanned, ``Layers``, ``Groups`` of
    identical files, ``Shared`` files now sharing a group's blocks, ``Saved`` bytes stored once
    that ``du`` counts in every file (before this pass and by it), ``Newly`` the bytes this pass
    freed (would free, with ``dry_run``), ``Differed`` files that changed while it ran,
    ``Failed`` files the kernel refused.

    Raises :class:`NoReflinks` on a filesystem that cannot share blocks."""
    from .metadata import Transaction

    if not supported(store.root):
        fstype = _fs_type(store.root)
        raise NoReflinks(f"the store's filesystem ({fstype} at {store.root}) cannot share data "
                         "blocks between files (no reflinks): nothing to deduplicate; use XFS "
                         "(mkfs.xfs -m reflink=1) or btrfs")
    layers = store.db.execute("SELECT chain_id FROM layers ORDER BY created").fetchall()
    by_size: dict[int, list] = {}
    seen: set[tuple[int, int]] = set()
    scanned = 0
    for (chain,) in layers:
        try:
            directory = store.snaps.dir(chain)
        except LaminaError:  # removed meanwhile
            continue
        for path, st in _layer_files(directory):
            scanned += 1
            if (st.st_dev, st.st_ino) in seen:
                continue  # a hard link of a file seen already
            seen.add((st.st_dev, st.st_ino))
            by_size.setdefault(st.st_size, []).append((path, chain))
    groups_rows: list[tuple[int, str, int]] = []
    shared = saved = newly = differed = failed = 0
    group_id = 0
    for size, candidates in by_size.items():
        if len(candidates) < 2:
            continue
        # files already sharing one set of blocks are one content; one of each set is hashed
        by_extents: dict[tuple, list] = {}
        for path, chain in candidates:
            fd = _open(path)
            if fd is None:
                continue  # removed meanwhile, or unreadable
            try:
                ext = extents(fd)
            finally:
                os.close(fd)
            by_extents.setdefault(("x", ext) if ext else ("path", path), []).append(
                (path, chain, ext))
        by_content: dict[bytes, list] = {}
        for members in by_extents.values():
            # one set of files sharing their blocks already (a pass before this one): no hash
            digest = b"shared" if len(by_extents) == 1 else _file_hash(members[0][0], size)
            if digest:
                by_content.setdefault(digest, []).append(members)
        for sets in by_content.values():
            if sum(len(m) for m in sets) < 2:
                continue
            sets.sort(key=len, reverse=True)  # the largest set already sharing is the source
            source, others = sets[0], [m for s in sets[1:] for m in s]
            src_path, _, src_ext = source[0]
            members = list(source)
            src_fd = _open(src_path)
            if src_fd is None:
                continue
            try:
                bytes_ = _allocated(src_ext, os.fstat(src_fd))
                if dry_run:
                    members += others
                for first in range(0, 0 if dry_run else len(others), _DESTS):
                    batch = others[first:first + _DESTS]
                    fds = [_open(m[0]) for m in batch]
                    try:
                        status = dedupe(src_fd, [fd for fd in fds if fd is not None], size)
                    finally:
                        for fd in fds:
                            if fd is not None:
                                os.close(fd)
                    results = iter(status)
                    for member, fd in zip(batch, fds):
                        result = -errno.ENOENT if fd is None else next(results)
                        if result == 0:
                            members.append(member)
                        elif result == 1:
                            differed += 1  # changed since it was hashed: left as it is
                        else:
                            failed += 1
            finally:
                os.close(src_fd)
            newly += bytes_ * (len(members) - len(source))
            group_id += 1
            groups_rows += [(group_id, m[1], bytes_) for m in members]
            shared += len(members)
            saved += bytes_ * (len(members) - 1)
    if not dry_run:
        with Transaction(store.db):
            store.db.execute("DELETE FROM shared_blocks")
            # a layer removed while the pass ran has no rows (its files no longer count)
            store.db.executemany(
                "INSERT INTO shared_blocks(grp, chain_id, bytes) SELECT ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM layers WHERE chain_id = ?)",
                [(g, chain, b, chain) for g, chain, b in groups_rows])
    return {"Layers": len(layers), "Files": scanned, "Groups": group_id, "Shared": shared,
            "Saved": saved, "Newly": newly, "Differed": differed, "Failed": failed}


def saved_bytes(db) -> tuple[int, int]:
    """(files, bytes): files of stored layers whose data blocks another such file shares, and
    the bytes stored once that ``du`` counts in each (as the last ``system dedup`` found them)."""
    row = db.execute(
        "SELECT coalesce(sum(n), 0), coalesce(sum(bytes * (n - 1)), 0) FROM ("
        " SELECT count(*) AS n, max(s.bytes) AS bytes FROM shared_blocks s"
        " GROUP BY s.grp HAVING n > 1)"
    ).fetchone()
    return row[0], row[1]


def _fs_type(path: str) -> str:
    """The filesystem type of ``path`` as /proc/self/mountinfo names it."""
    best, fstype = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= len(best):
                    best, fstype = point, fields[fields.index("-") + 1]
    except OSError:
        pass
    return fstype
