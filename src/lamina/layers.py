"""Layers: a layer tar becomes a committed snapshot named by its chain ID, kept once.

    >>> layers = LayerStore(store)
    >>> key, layer = layers.add(parent_chain, tar_stream)   # extracted under a staging key
    >>> with store.tx():
    ...     layers.commit(key, layer, (digest, size, media_type))
    >>> layers.write_tar(layer["chain_id"], out)            # the exact tar again (save, push)

A layer is staged first (``extract-<pid>-*``, which the next command removes if this process
dies), then committed under its chain ID in the caller's transaction, together with whatever
refers to it (an image row, say). A layer whose chain ID is already stored is not kept twice.

Its files live once, in its snapshot. Beside it, in the same transaction, the layer's tar-split
record (:mod:`lamina.tarsplit`: the tar's headers and padding, and a checksum per file) gives the
exact tar back when it must leave the machine; the tar itself is not kept. Only a tar that the
snapshot cannot give back (one that writes a path twice, say) keeps its blob. The blob tuple a
layer is committed with is the descriptor its images' manifests list (the compressed blob a
registry had, or the tar itself); the blob's file is kept only in that case, or as a pull cache.
"""

from __future__ import annotations

import os
import time

from .errors import FailedPrecondition, LaminaError, NotFound
from .fsutil import Readable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store


class LayerStore:
    """The ``layers`` table and the committed snapshots it names."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db
        if self.db.execute("SELECT 1 FROM settings WHERE key = 'layers'").fetchone() is None:
            self.migrate()  # once per store: a store made before tar-split records

    def migrate(self) -> int:
        """Give every layer stored by an older lamina (its tar kept as a blob beside its
        snapshot) a tar-split record made from the blob, check it against the snapshot, and
        drop the blob; then mark the store as migrated. Each layer is one transaction (its
        record, and its blob filed for deletion), so a crash leaves layers either migrated or
        as they were, and the next open carries on. A layer whose snapshot does not match its
        blob keeps the blob (``system check`` reports it; ``--repair`` rebuilds the snapshot
        from it). Returns how many layers were migrated."""
        from .faults import point
        from .layertar import open_layer_stream, split_tar
        from .metadata import Transaction
        from .tarsplit import verify

        content = self.store.content
        legacy = self.db.execute(
            "SELECT l.chain_id, l.blob_digest, l.diff_id FROM layers l LEFT JOIN tar_split t"
            " ON t.chain_id = l.chain_id WHERE t.chain_id IS NULL").fetchall()
        done = 0
        for chain, digest, diff_id in legacy:
            if not os.path.exists(content.path(digest)) or not self.db.execute(
                    "SELECT 1 FROM snapshots WHERE key = ?", (chain,)).fetchone():
                continue  # nothing to make the record from: `system check` reports the layer
            try:
                with content.open(digest) as blob:
                    record, tar_digest, size = split_tar(open_layer_stream(blob))
                    blob.read()
            except LaminaError:
                continue  # a corrupt blob: `system check` reports it
            if tar_digest != diff_id:
                continue
            damaged = verify(record, self.store.snaps.dir(chain))
            disk = self.store.snaps.disk_usage(chain)
            with self.store.tx():
                if self.get(chain) is None:  # removed meanwhile by another command
                    continue
                self.db.execute("INSERT OR IGNORE INTO tar_split(chain_id, tar_size, disk_size,"
                                " record) VALUES (?,?,?,?)", (chain, size, disk, record))
                if damaged:
                    self.db.execute("INSERT OR IGNORE INTO kept_blobs VALUES (?)", (digest,))
                else:  # deleted after the commit unless something else still needs it
                    self.store.snaps.trash(content.path(digest))
            point("layer.migrated")
            done += 1
        with Transaction(self.db):
            self.db.execute("INSERT OR IGNORE INTO settings VALUES ('layers', 'tar-split')")
        return done

    def get(self, chain: str):
        """The layer's row, or None."""
        return self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()

    def exists(self, chain: str) -> bool:
        """Whether layer ``chain`` is stored."""
        return self.db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() \
            is not None

    def stage(self, parent_chain: str | None) -> str:
        """A new active snapshot on ``parent_chain`` under a staging key; returns the key."""
        key = f"extract-{os.getpid()}-{os.urandom(6).hex()}"
        with self.store.tx():
            self.store.snaps.prepare(key, parent_chain)
        return key

    def add(self, parent_chain: str | None, stream, digest: str | None = None,
            sources: dict | None = None) -> tuple[str, dict]:
        """Extract the layer tar ``stream`` on ``parent_chain``; returns (staging key, layer facts:
        chain_id, diff_id, parent, size, inodes). ``digest``: the diff ID the tar must have;
        ``sources``: see :meth:`add_written`.

        The snapshot is committed under its chain ID by the caller's transaction (see
        :meth:`commit`); on error it is removed again."""
        key = self.stage(parent_chain)
        from . import differ
        from .digest import chain_id
        from .fsutil import disk_usage

        try:
            stats = differ.apply(self.store.snaps, key, stream, digest, record=True,
                                 sources=sources)
            data = self.store.snaps.dir(key)
            data_bytes = disk_usage([data])
        except BaseException:
            self.discard(key)
            raise
        return key, facts(chain_id(parent_chain, stats.diff_id), parent_chain, stats, data_bytes)

    def add_written(self, parent_chain: str | None, write,
                    sources: dict | None = None) -> tuple[str, dict, tuple]:
        """Stage the layer tar that ``write(out)`` writes (a container's changes, a build step's
        files), extracted as it is written, without a blob; returns (staging key, layer facts,
        (digest, size, media type) of the tar). A tar the snapshot cannot give back is written
        again into a blob, which the layer then keeps.

        ``sources``: the dict that ``write``'s :class:`lamina.layertar.TarWriter` fills with the
        files it reads. On a filesystem with reflinks (XFS, btrfs) the layer's files are then
        clones of them, not copies: a commit writes no file data. A file that changes while
        it is written (a running container's) makes the layer again, by copying."""
        from .image import MEDIA_LAYER

        reader_fd, writer_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(writer_fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer, larger writes
        except OSError:
            pass
        failure: list[BaseException] = []
        written = []

        def produce():
            try:
                with open(writer_fd, "wb", buffering=1 << 20, closefd=True) as out:
                    written.append(write(out))
            except BrokenPipeError:
                pass  # the extraction failed and stopped reading: its error is reported
            except BaseException as error:  # noqa: BLE001 - re-raised by the caller's thread
                failure.append(error)

        import threading  # here: every create imports this module, and needs no thread

        thread = threading.Thread(target=produce, name="layer-write", daemon=True)
        thread.start()
        try:
            with open(reader_fd, "rb", buffering=0, closefd=True) as stream:
                # the writer hashes the tar as it writes it: the extraction need not again
                key, layer = self.add(parent_chain, stream, digest=_WRITER_HASHES,
                                      sources=sources)
                leftover = stream.read(1)
        except BaseException as error:
            thread.join()
            if failure:  # the writer's error (a file that vanished, say) explains it best
                raise failure[0] from None
            from .layertar import SourceChanged

            if isinstance(error, SourceChanged):
                return self.add_written(parent_chain, write)  # again, copying every file
            raise
        thread.join()
        if failure or leftover or not written:
            self.discard(key)
            if failure:
                raise failure[0]
            raise LaminaError("layer tar had data after its end")
        from .digest import chain_id

        layer["diff_id"] = written[0].diff_id
        layer["chain_id"] = chain_id(parent_chain, layer["diff_id"])
        blob = (layer["diff_id"], layer["tar_size"], MEDIA_LAYER)
        if layer["record"] is None:
            try:
                with self.store.content.writer() as writer:
                    write(writer)
                    blob = writer.commit(layer["diff_id"])
            except BaseException:
                self.discard(key)
                raise
            blob = (blob[0], blob[1], MEDIA_LAYER)
        return key, layer, blob

    def commit(self, key: str, layer: dict, blob: tuple[str, int, str]) -> None:
        """Inside a transaction: keep the staged snapshot as layer ``chain_id`` (or drop a
        duplicate) with its tar-split record. ``blob``: (digest, size, media type) of the
        blob the layer came from, what manifests list; it must be stored if the layer has no
        record (it is the layer's tar then)."""
        db = self.db
        if db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (layer["chain_id"],)).fetchone():
            self.store.snaps.remove(key)
            return
        self.store.snaps.commit(layer["chain_id"], key)
        db.execute(
            "INSERT INTO layers(chain_id, diff_id, parent, size, inodes, blob_digest, blob_size,"
            " media_type, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (layer["chain_id"], layer["diff_id"], layer["parent"], layer["size"], layer["inodes"],
             blob[0], blob[1], blob[2], time.time()))
        disk = self.store.snaps.disk_usage(layer["chain_id"], layer.get("data_bytes"))
        db.execute("INSERT INTO tar_split(chain_id, tar_size, disk_size, record) VALUES (?,?,?,?)",
                   (layer["chain_id"], layer["tar_size"], disk, layer.get("record")))

    def discard(self, key: str) -> None:
        """Remove the staged snapshot ``key`` if it is still there (an operation failed after
        :meth:`add`). If the database cannot be written (a full disk, most often: the layer
        itself may have filled it), its data is deleted at once, so that the next command has
        the room to remove its row (the recovery of a dead process's staged key)."""
        try:
            if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                with self.store.tx():
                    self.store.snaps.remove(key)
        except LaminaError:
            from .fsutil import remove_tree

            try:
                remove_tree(self.store.snaps.dir(key))  # this process's staging: nobody else's
            except (LaminaError, OSError):
                pass

    def sizes(self) -> dict[str, int]:
        """Bytes of every layer, by chain ID."""
        return {r[0]: r[1] for r in self.db.execute("SELECT chain_id, size FROM layers")}

    def disk_sizes(self) -> dict[str, int]:
        """What each layer's snapshot takes on disk (``du -sb``), measured when it was stored."""
        return {r[0]: r[1] for r in self.db.execute("SELECT chain_id, disk_size FROM tar_split")}

    # ------------------------------------------------------------------ the pull cache
    def keeps_pulled_blobs(self) -> bool:
        """Whether the store keeps pulled layers' compressed blobs (``lamina system config
        keep-pulled-blobs true``): a pull cache, at the cost of every such layer on disk twice."""
        row = self.db.execute("SELECT value FROM settings WHERE key = 'keep-pulled-blobs'"
                              ).fetchone()
        return row is not None and row[0] == "true"

    def keep_pulled_blobs(self, value: str) -> None:
        """Set the keep-pulled-blobs option (``true`` or ``false``). Turned off, the blobs kept
        so far stay until their images go."""
        if value not in ("true", "false"):
            from .errors import InvalidArgument

            raise InvalidArgument(f"keep-pulled-blobs is true or false, not {value!r}")
        from .metadata import Transaction

        with Transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('keep-pulled-blobs', ?)",
                            (value,))

    def keep_blobs(self, digests: list[str]) -> None:
        """Keep the stored blobs ``digests`` although their layers do not need them."""
        from .metadata import Transaction

        with Transaction(self.db):
            self.db.executemany("INSERT OR IGNORE INTO kept_blobs VALUES (?)",
                                [(d,) for d in digests])

    # ------------------------------------------------------------------ the layer's tar
    def record(self, chain: str) -> bytes | None:
        """The layer's tar-split record, or None (the layer keeps its blob, or is unknown)."""
        row = self.db.execute("SELECT record FROM tar_split WHERE chain_id = ?",
                              (chain,)).fetchone()
        return row[0] if row is not None else None

    def listing(self, chain: str) -> bytes | None:
        """What :meth:`keep_listings` kept for the layer, or None."""
        row = self.db.execute("SELECT listing FROM layer_listings WHERE chain_id = ?",
                              (chain,)).fetchone()
        return row[0] if row is not None else None

    def keep_listings(self, listings: dict[str, bytes]) -> None:
        """Keep each layer's listing (lamina.analyze's, derived from the layer's tar and never
        changed: a layer never changes) beside its row; it goes with the layer. A layer removed
        meanwhile is skipped."""
        with self.store.tx():
            for chain, listing in listings.items():
                self.db.execute("INSERT OR REPLACE INTO layer_listings(chain_id, listing)"
                                " SELECT chain_id, ? FROM layers WHERE chain_id = ?",
                                (listing, chain))

    def tar_size(self, chain: str) -> int:
        """Bytes of the layer's (uncompressed) tar."""
        row = self.db.execute("SELECT t.tar_size, l.blob_size FROM layers l LEFT JOIN tar_split t"
                              " ON t.chain_id = l.chain_id WHERE l.chain_id = ?",
                              (chain,)).fetchone()
        if row is None:
            raise NotFound(f"layer {chain} not found")
        return row[0] if row[0] is not None else row[1]

    def write_tar(self, chain: str, out) -> int:
        """Write the layer's exact, uncompressed tar to ``out`` (from its snapshot and record, or
        from its kept blob); returns its size. A file that changed in the snapshot raises
        :class:`lamina.tarsplit.DamagedLayer`."""
        return self.tar_writer(chain)(out)

    def tar_writer(self, chain: str):
        """:meth:`write_tar` as ``write(out)``, with the layer's rows and directory read now:
        ``write`` may run in another thread (:meth:`tar_reader`) while this one writes through
        the same connection (see lamina.differ.diff_writer)."""
        record = self.record(chain)
        row = self.get(chain)
        if record is not None:
            from .tarsplit import write_tar

            # files not written since a second before the layer was stored need no CRC
            unchanged_before = row["created"] - 1.0 if row is not None else None
            data = self.store.snaps.dir(chain)
            return lambda out: write_tar(record, data, out, unchanged_before)
        if row is None:
            raise NotFound(f"layer {chain} not found")
        from .layertar import open_layer_stream

        content = self.store.content
        digest = row["blob_digest"]
        if not os.path.exists(content.path(digest)):
            raise FailedPrecondition(
                f"layer {chain[7:19]} has neither a tar-split record nor its blob: "
                "`lamina system check` names what depends on it")

        def copy(out) -> int:
            size = 0
            with content.open(digest) as blob:
                stream = open_layer_stream(blob)
                while True:
                    data = stream.read(1 << 20)
                    if not data:
                        break
                    out.write(data)
                    size += len(data)
                blob.read()
            return size

        return copy

    def tar_reader(self, chain: str):
        """A readable stream of the layer's tar (:meth:`tar_writer` in a thread, through a
        pipe); its end raises what the writing raised."""
        return _PipeReader(self.tar_writer(chain))


_WRITER_HASHES = "sha256:" + "0" * 64  # add_written: the diff_id comes from the tar's writer


def facts(chain: str, parent: str | None, stats, data_bytes: int) -> dict:
    """A staged layer's facts (what :meth:`LayerStore.commit` records) from its extraction's
    :class:`lamina.layertar.TarStats` and its data directory's disk use."""
    return {"chain_id": chain, "diff_id": stats.diff_id, "parent": parent, "size": stats.size,
            "inodes": stats.inodes, "tar_size": stats.tar_size, "record": stats.record,
            "data_bytes": data_bytes}


class _PipeReader(Readable):
    """Reads what ``write(out)`` writes in a helper thread; the end raises its error."""

    def __init__(self, write):
        reader_fd, writer_fd = os.pipe()
        self.file = open(reader_fd, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self.failure: list[BaseException] = []

        def produce():
            try:
                with open(writer_fd, "wb", buffering=1 << 20) as out:
                    write(out)
            except BrokenPipeError:
                pass  # the reader stopped early
            except BaseException as error:  # noqa: BLE001 - raised at the reader's end
                self.failure.append(error)

        import threading

        self.thread = threading.Thread(target=produce, name="layer-tar", daemon=True)
        self.thread.start()

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        if not data:
            self.thread.join()
            if self.failure:
                raise self.failure[0]
        return data

    def close(self) -> None:
        self.file.close()
        self.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def init_key(top_layer: str | None) -> str:
    """The key of the shared init snapshot of containers on a layer chain."""
    return f"{top_layer or 'scratch'}-init"
