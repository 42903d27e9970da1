"""Content-addressed blobs, kept as an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``).

Writes are atomic (temp file, then rename) and idempotent: writing a blob that exists changes
nothing. Reads verify the digest as the bytes go by. ``index.json`` lists the tagged images so that
``skopeo inspect oci:ROOT:TAG`` and ``umoci`` read the store directly.
"""

import os

from . import cjson
from .digest import hex_of, is_digest, sha256
from .errors import InvalidArgument, LaminaError, NotFound
from .faults import point

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


WRITEBACK = 8 << 20  # a large blob's bytes go to disk as they come, not all at its end
_libc = None


def _sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
    global _libc
    if _libc is None:
        import ctypes

        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                              ctypes.c_uint)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.sync_file_range(fd, offset, length, flags)  # errors: harmless (a hint)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a file to disk without waiting (sync_file_range WRITE), so that
    a pull does not leave hundreds of MiB of dirty pages to be written back all at once."""
    _sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


def drop_cached(fd: int, offset: int, length: int) -> None:
    """Write a range of a file back (waiting for it) and drop its pages from the page cache.

    For a blob's bytes that were just written and read once (a pull's extraction follows the
    download), so that the next bytes reuse those pages instead of taking new ones. In a VM the
    first touch of a page that had long been free can cost far more than a reused one: here,
    1 GiB written in 1 MiB pieces took 1.5-2.2 s of system time into fresh pages and 0.2 s when
    the pages were recycled this way (bench/RESULTS.md, pull)."""
    _sync_file_range(fd, offset, length, 1 | 2 | 4)  # WAIT_BEFORE | WRITE | WAIT_AFTER
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


class BlobWriter:
    """A blob being written: ``write`` bytes, then ``commit`` to give it its digest name."""

    def __init__(self, store: "ContentStore"):
        import hashlib  # here: a reader (every create's) needs it only for large blobs

        self.store = store
        self.hash = hashlib.sha256()
        self.size = 0
        self.tmp = os.path.join(store.ingest, f"{os.getpid()}-{os.urandom(6).hex()}")
        self.file = open(self.tmp, "wb", buffering=0)  # noqa: SIM115 (closed by commit/abort)
        self.flushed = 0  # bytes handed to the kernel's writeback already (see write)

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        n = self.file.write(data)
        if self.size - self.flushed >= WRITEBACK:
            _start_writeback(self.file.fileno(), self.flushed, self.size - self.flushed)
            self.flushed = self.size
        return n

    def commit(self, expected: str | None = None) -> tuple[str, int]:
        """Name the blob by its digest (checked against ``expected``); returns (digest, size)."""
        digest = "sha256:" + self.hash.hexdigest()
        if expected is not None and expected != digest:
            self.abort()
            raise InvalidArgument(f"blob digest mismatch: expected {expected}, got {digest}")
        # No fsync: the rename is atomic for every process (what the SIGKILL trials test), and the
        # bytes are on their way to disk already (_start_writeback). An fsync per blob made a pull
        # wait for journal commits (on this ext4, with online discard, for the blocks of whatever
        # was deleted before): 2.1-2.2 s against 1.7-1.8 s without. Docker, Podman and skopeo do
        # not fsync pulled layers either; after a power loss `system check` finds a blob whose
        # bytes do not match its name (RELIABILITY.md, durability).
        self.file.close()
        self.store.claim(digest)  # named before the transaction that references it commits
        point("blob.written")
        os.rename(self.tmp, self.store.path(digest))
        point("blob.renamed")
        return digest, self.size

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or not self.file.closed:
            self.abort()


class VerifyingReader:
    """Reads a blob and raises if its bytes do not match its digest once the end is reached."""

    def __init__(self, path: str, digest: str, verify: bool = True):
        self.file = open(path, "rb")  # noqa: SIM115 (the reader owns it: closed by close())
        self.digest = digest
        self.hash = sha256(os.fstat(self.file.fileno()).st_size) if verify else None

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        if self.hash is None:
            return data
        if data:
            self.hash.update(data)
        elif "sha256:" + self.hash.hexdigest() != self.digest:
            raise LaminaError(f"blob {self.digest} is corrupt: its content does not match its digest")
        return data

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ContentStore:
    """The blob store of one lamina store, rooted at an OCI image layout directory."""

    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        self.ingest = os.path.join(root, "ingest")
        self._claims: set[str] = set()
        if not os.path.exists(os.path.join(root, "oci-layout")):
            os.makedirs(self.blobs, exist_ok=True)
            os.makedirs(self.ingest, exist_ok=True)
            self._atomic_write(os.path.join(root, "index.json"),
                               b'{"schemaVersion":2,"manifests":[]}')
            self._atomic_write(os.path.join(root, "oci-layout"), LAYOUT)

    def path(self, digest: str) -> str:
        if not is_digest(digest):
            raise InvalidArgument(f"invalid digest {digest!r}")
        return os.path.join(self.blobs, hex_of(digest))

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored; one that is gets claimed (see :meth:`claim`), since the
        caller means to use it instead of writing its own copy."""
        path = self.path(digest)
        if not os.path.exists(path):
            return False
        self.claim(digest)
        return os.path.exists(path)  # checked again after the claim: see lamina.claims

    def claim(self, digest: str) -> None:
        """Mark the blob as about to be referenced by this process, so that if the process dies
        before its transaction commits, the next command deletes the blob unless something else
        references it (:mod:`lamina.claims`). Idempotent; undone by :meth:`release_claims`."""
        path = os.path.join(self.ingest, f"{os.getpid()}-claim-{hex_of(digest)}")
        if path not in self._claims:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._claims.add(path)

    def release_claims(self) -> None:
        """Drop this process's claims: what it meant to reference is committed (or given up)."""
        for path in self._claims:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._claims.clear()

    def take_claims(self) -> list[str]:
        """This process's claim files, which it no longer holds (for :func:`lamina.claims.abandon`,
        which deletes them and resolves their blobs)."""
        mine = sorted(self._claims)
        self._claims.clear()
        return mine

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its digest. Idempotent."""
        with self.writer() as w:
            w.write(data)
            digest = "sha256:" + w.hash.hexdigest()
            if self.exists(digest):
                return digest
            return w.commit()[0]

    def open(self, digest: str, verify: bool = True) -> VerifyingReader:
        """A reader of the blob that raises at its end if the bytes do not match the digest;
        ``verify=False`` for a blob this process has just written (and so checked)."""
        try:
            return VerifyingReader(self.path(digest), digest, verify)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as r:
            data = r.read()
            r.read()
        return data

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> list[str]:
        return ["sha256:" + name for name in os.listdir(self.blobs)]

    def write_index(self, manifests: list[dict]) -> None:
        """Replace ``index.json``'s manifest list (descriptors with ref-name annotations)."""
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": manifests}
        self._atomic_write(os.path.join(self.root, "index.json"),
                           cjson.dumps(doc, indent=None, separators=(",", ":")).encode(),
                           "index.written")

    def _atomic_write(self, path: str, data: bytes, fault: str = "") -> None:
        """Replace ``path`` with ``data`` at once. The temporary file is written under
        ``ingest/`` with this process's ID, so that if the process dies before the rename the next
        command's recovery deletes it (beside ``path`` nothing would)."""
        tmp = os.path.join(self.ingest, f"{os.getpid()}-{os.path.basename(path)}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if fault:
            point(fault)  # lamina.faults: e.g. "index.written"
        os.rename(tmp, path)
