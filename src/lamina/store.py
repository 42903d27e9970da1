"""The store: one root directory, its storage driver, its database and its crash recovery.

    >>> store = Store("/var/tmp/store", driver="overlay2")
    >>> with store.tx():                    # one write transaction (SQLite, IMMEDIATE)
    ...     store.snaps.prepare("key", None)

Everything else (layers, images, containers, volumes) is kept by a typed store built on this
one. A :class:`Store` knows rows and files, not what they mean: it opens the root, chooses the
driver once (the first open) and refuses another later, runs transactions (deleting what a
committed transaction removed once it has committed), keeps ``index.json`` in step with the
tags, and finishes or undoes what dead processes left half done.
"""

from __future__ import annotations

import os
import stat

from .errors import FailedPrecondition, InvalidArgument, LaminaError, Unavailable
from .metadata import Reading, Transaction, connect, sqlite3  # the C module: see metadata
from .processes import alive
from .snapshots import DRIVERS, open_snapshotter
from .userns import in_user_namespace, user_data_root


def default_root() -> str:
    """``/var/lib/lamina`` for root, the XDG data dir otherwise."""
    if os.geteuid() == 0 and not in_user_namespace():
        return "/var/lib/lamina"
    return user_data_root()


PRIVATE_FILES = ("lamina.db", "lamina.db-wal", "lamina.db-shm", "events.log")
"""Files of a store that hold what its containers were given (``-e NAME=secret``): mode 0600."""


def guard(root: str) -> None:
    """Make ``root`` a store directory that only its owner can enter (0700, as Podman's storage;
    Docker keeps ``/var/lib/docker`` at 0710): created so, and tightened when an older store
    (0755) is opened, with its database and its containers' ``config.json`` made 0600. A store
    that belongs to another user is refused before anything in it is touched. One ``stat`` when
    the store is already right: every command pays it."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:  # another command made it first
            pass
        st = os.stat(root)
        if stat.S_IMODE(st.st_mode) & 0o077:  # mkdir under a umask that left bits out, or raced
            os.chmod(root, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise FailedPrecondition(f"cannot open store {root}: not a directory")
    if st.st_uid != os.geteuid() and (os.geteuid() != 0 or in_user_namespace()):
        raise FailedPrecondition(
            f"cannot open store {root}: it belongs to {owner_name(st.st_uid)}, and a store is "
            "its owner's alone (use your own --root)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        tighten(root)


def tighten(root: str) -> None:
    """Take group and other users' access away from an older store: its root (0700), its
    database and events (0600) and every container's bundle (0700) and ``config.json`` (0600)."""
    os.chmod(root, 0o700)
    for name in PRIVATE_FILES:
        try:
            os.chmod(os.path.join(root, name), 0o600)
        except FileNotFoundError:
            pass
    bundles = os.path.join(root, "containers")
    try:
        names = os.listdir(bundles)
    except FileNotFoundError:
        return
    os.chmod(bundles, 0o700)
    for name in names:
        for path, mode in ((os.path.join(bundles, name), 0o700),
                           (os.path.join(bundles, name, "config.json"), 0o600)):
            try:
                os.chmod(path, mode)
            except FileNotFoundError:
                pass


def owner_name(uid: int) -> str:
    """``root``, ``user alice (uid 1000)`` or ``uid 65534``."""
    import pwd

    if uid == 0 and not in_user_namespace():
        return "root"
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}" + (" (not mapped into this user namespace)" if uid == 65534 else "")


class Store:
    """A lamina store under ``root``, kept by one storage driver."""

    def __init__(self, root: str | None = None, driver: str | None = None):
        self.root = os.path.abspath(root or os.environ.get("LAMINA_ROOT") or default_root())
        wanted = driver or os.environ.get("LAMINA_DRIVER") or None
        if wanted is not None and wanted not in DRIVERS:
            raise InvalidArgument(f"unknown storage driver {wanted!r} (choose from {', '.join(DRIVERS)})")
        try:
            guard(self.root)
            self.db = connect(os.path.join(self.root, "lamina.db"))
        except OSError as e:
            raise LaminaError(f"cannot open store {self.root}: {e.strerror}") from None
        except sqlite3.Error as e:
            raise LaminaError(f"cannot open store {self.root}: {e}") from None
        row = self.db.execute("SELECT value FROM settings WHERE key = 'driver'").fetchone()
        if row is None:
            chosen = wanted or self._detect_driver()
            if chosen in ("overlay2", "overlay") and os.geteuid() != 0:  # not in a user namespace
                raise Unavailable(
                    f"the {chosen} driver needs root (kernel overlay mounts, whiteouts as device "
                    "nodes, trusted.* xattrs): as a non-root user use --driver vfs or union, or "
                    "run lamina inside its user namespace (lamina unshare)")
            with Transaction(self.db):
                self.db.execute("INSERT OR IGNORE INTO settings VALUES ('driver', ?)", (chosen,))
            row = self.db.execute("SELECT value FROM settings WHERE key = 'driver'").fetchone()
        self.driver: str = row[0]
        if wanted is not None and wanted != self.driver:
            raise FailedPrecondition(
                f"store {self.root} uses the {self.driver} driver, not {wanted}: "
                f"use another --root or --driver {self.driver}")
        self.snaps = open_snapshotter(self.driver, self.root, self.db)
        self.snaps.blob_gate = self._gate
        self._content = None
        self._index_marker: str | None = None
        self.recover()

    # ------------------------------------------------------------------ transactions
    def tx(self) -> Transaction:
        """A write transaction; data of snapshots it removed is deleted once it has committed."""
        return Transaction(self.db, after=self._after_commit)

    def reading(self) -> Reading:
        """A block of reads that see one state of the store (and start one read, not one a
        query: see :class:`lamina.metadata.Reading`)."""
        return Reading(self.db)

    def _after_commit(self) -> None:
        if self.snaps.staged:  # snapshots made in the transaction: keep if committed, else delete
            self.snaps.settle()
        if self._index_marker is not None:  # index.json was written inside the transaction
            marker, self._index_marker = self._index_marker, None
            try:
                with Transaction(self.db):  # from the tags as committed (or rolled back)
                    self.write_index()
                os.unlink(marker)
            except (LaminaError, OSError):  # a full disk, say: the next command rewrites it
                pass
            self._index_marker = None
        if self.snaps.pending:
            self.snaps.purge()

    @property
    def content(self):
        """The blob store (:class:`lamina.content.ContentStore`), opened on first use."""
        if self._content is None:
            from .content import ContentStore

            self._content = ContentStore(self.root)
        return self._content

    def close(self) -> None:
        self.db.close()

    def counts(self) -> dict[str, int]:
        """How many images, containers and layers the store holds."""
        return {table.capitalize(): self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("images", "containers", "layers")}

    def mount_target(self, container_id: str) -> str:
        """Where a container's merged root is mounted."""
        return os.path.join(self.root, "mounts", container_id)

    def bundle_dir(self, container_id: str) -> str:
        """A container's runtime bundle and logs."""
        return os.path.join(self.root, "containers", container_id)

    def _gate(self, path: str) -> bool | None:
        """The snapshotter's purge asks before deleting a trashed path: blobs go through
        :func:`lamina.claims.gate` (referenced again, or claimed by a live process, they stay);
        removed volumes through :func:`lamina.volumes.purge_removed` (under the write lock)."""
        if path.startswith(os.path.join(self.root, "volumes") + os.sep):
            from .volumes import purge_removed

            return purge_removed(self, path)
        if os.sep + "blobs" + os.sep not in path:
            return None
        from .claims import gate

        return gate(self, path)

    # ------------------------------------------------------------------ index.json
    def write_index(self) -> None:
        """Inside a transaction: rewrite index.json from the tags. The file cannot join the
        transaction, so a marker ``ingest/<pid>-index`` says it may be ahead of what commits:
        the transaction's end or, if this process dies, the next command rewrites it from the
        committed tags."""
        from . import cjson
        from .image import MEDIA_MANIFEST

        if self._index_marker is None:
            self._index_marker = os.path.join(self.root, "ingest", f"{os.getpid()}-index")
            os.makedirs(os.path.dirname(self._index_marker), exist_ok=True)
            os.close(os.open(self._index_marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        rows = self.db.execute(
            "SELECT t.name, i.manifest_digest, i.manifest_size FROM tags t"
            " JOIN images i ON i.id = t.image_id ORDER BY t.name").fetchall()

        def media_type(digest: str) -> str:  # a pulled or loaded manifest may be Docker's
            return cjson.loads(self.content.read(digest)).get("mediaType") or MEDIA_MANIFEST

        self.content.write_index([
            {"mediaType": media_type(r[1]), "digest": r[1], "size": r[2],
             "annotations": {"org.opencontainers.image.ref.name": r[0]}} for r in rows])

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Finish or undo what processes that died left half done: staged layer extractions,
        deferred deletions, partial blobs. Cheap when there is nothing to do (one indexed query,
        one listdir), since every command pays it."""
        staged = self.db.execute(
            "SELECT key FROM snapshots WHERE key >= 'extract-' AND key < 'extract.'"
            " UNION ALL SELECT path FROM trash LIMIT 20").fetchall()
        dead = [r[0] for r in staged if r[0].startswith("extract-")
                and not alive(int(r[0].split("-")[1]))]
        if dead:
            # Looked at again under the write lock: since the query above, the process may have
            # committed its layer and ended, or another command may have recovered it.
            exists = "SELECT 1 FROM snapshots WHERE key = ?"
            with self.tx():
                for key in dead:
                    if self.db.execute(exists, (key,)).fetchone():
                        self.snaps.remove(key)
        if staged:
            self.snaps.purge()
        ingest = os.path.join(self.root, "ingest")
        try:
            leftovers = os.listdir(ingest)
        except FileNotFoundError:
            return
        claims = []
        for name in leftovers:
            pid = name.split("-", 1)[0]
            if not pid.isdigit() or alive(int(pid)):
                continue
            if name.startswith(pid + "-claim-"):  # a blob it named but maybe never used
                claims.append(name)
                continue
            if name == pid + "-index":  # it died between writing index.json and commit
                with self.tx():
                    self.write_index()
                try:
                    os.unlink(os.path.join(ingest, name))
                except FileNotFoundError:  # another command recovered it too
                    pass
                continue
            if name.startswith(pid + "-snapshot-"):  # data made, record maybe not committed
                self.snaps.settle([(name.split("-", 2)[2], os.path.join(ingest, name))])
                continue
            try:
                os.unlink(os.path.join(ingest, name))
            except FileNotFoundError:
                pass
            except IsADirectoryError:  # the staging directory of a killed push or save
                from .fsutil import remove_tree

                remove_tree(os.path.join(ingest, name))
        if claims:
            from .claims import resolve

            resolve(self, claims)

    def _detect_driver(self) -> str:
        from .snapshots import overlay_supported

        if os.geteuid() == 0 and overlay_supported(self.root):  # as root, or in a user namespace
            return "overlay2"
        return "vfs"
