"""The snapshotter protocol and what every driver shares (records, trash, staging).

See :mod:`lamina.snapshots` for the protocol as a tutorial; each driver is a module beside this one.
"""

import os

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..faults import point
from ..processes import alive
from ..records import frozen


@frozen
class Info:
    """A snapshot's record: kind is 'active', 'view' or 'committed'. (A record, not a
    namedtuple: collections costs every command's start-up a few milliseconds.)"""

    key: str
    parent: str | None
    kind: str
    id: str
    created: float

ACTIVE, VIEW, COMMITTED = "active", "view", "committed"
MAX_DEPTH = 128  # lowers one mount may stack: 125 image layers + init + container, with room
# (overlay2 stacks up to the kernel's 500 where it takes lowers one by one: Overlay2.max_depth)

class Snapshotter:
    """Shared bookkeeping; a driver supplies the directories and the mounts.

    A driver implements ``_create(row_id, parent_row, kind)``, ``_mounts(row, kind)``,
    ``_usage(row)`` and ``_destroy(row)``; everything else comes from here.
    """

    name = "base"
    max_depth = MAX_DEPTH  # lowers a snapshot may have; a driver may allow more

    def __init__(self, root: str, db):
        self.root = root
        self.db = db
        if not os.path.isdir(root):
            os.makedirs(root, exist_ok=True)

    # -- records -----------------------------------------------------------------------------
    def _row(self, key: str):
        row = self.db.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(f"snapshot {key} not found")
        return row

    def stat(self, key: str) -> Info:
        """The record of ``key``."""
        r = self._row(key)
        return Info(r["key"], r["parent"], r["kind"], r["id"], r["created"])

    def walk(self, fn=None):
        """Every snapshot's Info; with ``fn``, call it on each instead of returning them."""
        infos = [Info(r["key"], r["parent"], r["kind"], r["id"], r["created"])
                 for r in self.db.execute("SELECT * FROM snapshots ORDER BY created, key")]
        if fn is None:
            return infos
        for info in infos:
            fn(info)
        return None

    def dir(self, key: str) -> str:
        """The directory that holds this snapshot's own data (diff for overlay2, a full tree for vfs)."""
        return self._data_dir(self._row(key)["id"])

    def lower_dirs(self, key: str) -> list[str]:
        """Data directories of ``key``'s ancestors, newest first."""
        dirs = []
        parent = self._row(key)["parent"]
        while parent is not None:
            row = self._row(parent)
            dirs.append(self._data_dir(row["id"]))
            parent = row["parent"]
        return dirs

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self, key: str, parent: str | None = None) -> list:
        """A new writable snapshot on ``parent``; returns the mounts that show it."""
        return self._new(key, parent, ACTIVE)

    def view(self, key: str, parent: str | None = None) -> list:
        """A new read-only snapshot of ``parent``; returns its mounts."""
        return self._new(key, parent, VIEW)

    def _new(self, key: str, parent: str | None, kind: str) -> list:
        if not key or "/" in key:
            raise InvalidArgument(f"invalid snapshot key {key!r}")
        if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise AlreadyExists(f"snapshot {key} already exists")
        parent_row = None
        depth = 0
        if parent is not None:
            parent_row, depth = self._parent(key, parent)
        row_id = os.urandom(16).hex()
        import time

        self._stage(row_id)  # the data exists before the record commits: see settle()
        link, lower = self._create(row_id, parent_row, kind)
        point("snapshot.staged")
        self.db.execute(
            "INSERT INTO snapshots(key, id, parent, kind, depth, lower, link, created)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (key, row_id, parent, kind, depth, lower, link, time.time()),
        )
        return self._mounts(self._row(key))

    def _parent(self, key: str, parent: str):
        """(row, depth of a child) of ``parent``, which must be committed and not too deep."""
        parent_row = self._row(parent)
        if parent_row["kind"] != COMMITTED:
            raise FailedPrecondition(f"parent {parent} is not committed")
        depth = parent_row["depth"] + 1
        if depth > self.max_depth:
            raise InvalidArgument(f"snapshot {key} would stack {depth} lowers; at most"
                                  f" {self.max_depth} here")
        return parent_row, depth

    def child_depth(self, key: str) -> int:
        """How many lowers a child of ``key`` would stack (``key`` itself and its own)."""
        return self._row(key)["depth"] + 1

    def prepare_in_place_of(self, key: str, parent: str) -> list:
        """A writable snapshot that takes the committed ``parent``'s place in a stack, one lower
        less than a child of it; drivers that can do it cheaply override this."""
        raise InvalidArgument(f"snapshot {key} would stack {self.child_depth(parent)} lowers;"
                              f" at most {self.max_depth} here")

    def mounts(self, key: str) -> list:
        """How to see ``key``: read-write for an active snapshot, read-only otherwise."""
        return self._mounts(self._row(key))

    def commit(self, name: str, key: str) -> None:
        """Make the active snapshot ``key`` read-only under the new key ``name``."""
        row = self._row(key)
        if row["kind"] != ACTIVE:
            raise FailedPrecondition(f"snapshot {key} is not active")
        if name != key and self.db.execute("SELECT 1 FROM snapshots WHERE key = ?",
                                           (name,)).fetchone():
            raise AlreadyExists(f"snapshot {name} already exists")
        self.db.execute("UPDATE snapshots SET key = ?, kind = ? WHERE key = ?", (name, COMMITTED, key))

    def remove(self, key: str) -> None:
        """Delete ``key`` and its data; refused while it has children."""
        row = self._row(key)
        child = self.db.execute("SELECT key FROM snapshots WHERE parent = ? LIMIT 1", (key,)).fetchone()
        if child:
            raise FailedPrecondition(f"snapshot {key} has a child ({child[0]})")
        self.db.execute("DELETE FROM snapshots WHERE key = ?", (key,))
        self.db.executemany("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                            [(path, os.getpid()) for path in self._paths(row)])
        point("trash.filed")
        self.pending = True

    def trash(self, path: str) -> None:
        """Inside a transaction: file ``path`` (a tree or a file that is not a snapshot's, such
        as a removed container's bundle) for deletion once the transaction commits, as
        :meth:`remove` files a snapshot's data; a crash leaves it to the next :meth:`purge`."""
        self.db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                        (path, os.getpid()))
        self.pending = True

    pending = False
    independent_diffs = False  # True where a layer can be extracted before its parent exists
    blob_gate = None  # set by the engine: decides about blobs in the trash (lamina.claims.gate);
    # it returns None for a path it does not handle, False to keep the row, True once it
    # dealt with the path and dropped its row
    staged: tuple | list = ()  # (row id, marker) of snapshots this process made, not yet settled

    def _stage(self, row_id: str) -> None:
        """Leave a marker ``ingest/<pid>-snapshot-<row id>`` next to the store's partial blobs
        before a snapshot's data is made: if the process dies before the record commits, the
        next command finds the marker of a dead process and removes the data (:meth:`settle`)."""
        ingest = os.path.join(os.path.dirname(self.root), "ingest")
        marker = os.path.join(ingest, f"{os.getpid()}-snapshot-{row_id}")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(ingest, exist_ok=True)
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        if not self.staged:
            self.staged = []  # this instance's own list
        self.staged.append((row_id, marker))

    def settle(self, staged: list | None = None) -> None:
        """Once the transaction that made snapshots has ended (or their process has died): keep
        the data of those whose record committed, delete the rest, drop the markers. Call it
        outside any transaction. ``staged``: (row id, marker path) pairs, this process's by
        default."""
        if staged is None:
            staged, self.staged = self.staged, []
        for row_id, marker in staged:
            if not self.db.execute("SELECT 1 FROM snapshots WHERE id = ?", (row_id,)).fetchone():
                from ..fsutil import remove_tree

                try:
                    paths = self._paths({"id": row_id, "link": ""})
                except (KeyError, IndexError, TypeError):  # a driver that needs more of the row
                    paths = [self._data_dir(row_id)]
                for path in paths:
                    remove_tree(path)
                links = os.path.join(self.root, "l")  # overlay2's short link, if it made one
                if os.path.isdir(links):
                    for name in os.listdir(links):
                        try:
                            if os.readlink(os.path.join(links, name)) == f"../{row_id}/diff":
                                os.unlink(os.path.join(links, name))
                        except OSError:
                            pass
            try:
                os.unlink(marker)
            except FileNotFoundError:
                pass

    def purge(self, everything: bool = False) -> int:
        """Delete the data of removed snapshots: this process's, and those of processes that died
        before finishing (``everything``: all, for ``system check --repair``). Call it outside
        any transaction. Returns how many paths were deleted."""
        from ..fsutil import remove_tree

        self.pending = False
        done = 0
        for path, pid in self.db.execute("SELECT path, pid FROM trash").fetchall():
            if not everything and pid != os.getpid() and alive(pid):
                continue  # another live process is still committing or deleting it
            handled = self.blob_gate(path) if self.blob_gate is not None else None
            if handled is False:
                continue  # a blob a live process claims: later (see lamina.claims.gate)
            if handled is None:
                remove_tree(path)
            point("purge.mid")
            if handled is None:  # a gate drops the row in the transaction that decided: a
                # blob's or volume's path can be filed again the moment its lock is let go
                self.db.execute("DELETE FROM trash WHERE path = ?", (path,))
            done += 1
        return done

    def usage(self, key: str) -> tuple[int, int]:
        """(bytes, inodes) that ``key`` adds over its parent: apparent sizes, hard links once."""
        return self._usage(self._row(key))

    def disk_usage(self, key: str, data_bytes: int | None = None) -> int:
        """What ``du -sb`` counts for everything ``key`` owns on disk (its data directory,
        driver files, links); ``data_bytes``: its data directory's, measured already."""
        from ..fsutil import disk_usage

        row = self._row(key)
        known = {} if data_bytes is None else {self._data_dir(row["id"]): data_bytes}
        return disk_usage(self._paths(row), known)

    # -- for drivers -------------------------------------------------------------------------
    def _data_dir(self, row_id: str) -> str:
        raise NotImplementedError

    def _create(self, row_id, parent_row, kind) -> tuple[str, str]:
        raise NotImplementedError

    def _mounts(self, row) -> list:
        raise NotImplementedError

    def _usage(self, row) -> tuple[int, int]:
        raise NotImplementedError

    def _paths(self, row) -> list[str]:
        """Everything on disk that the snapshot ``row`` owns."""
        raise NotImplementedError


class DiffDirs(Snapshotter):
    """The layout overlay2 and union share: each snapshot's own changes in ``<id>/diff``, named
    by a short link ``l/<LINK>`` so that a mount's options for 128 layers fit one page. A view
    owns no data (no link); usage is what its own ``diff`` holds."""

    def __init__(self, root, db):
        super().__init__(root, db)
        if not os.path.isdir(os.path.join(root, "l")):
            os.makedirs(os.path.join(root, "l"), exist_ok=True)

    independent_diffs = True  # a layer's diff is made without its parent's tree: see rebase()

    def _data_dir(self, row_id: str) -> str:
        return os.path.join(self.root, row_id, "diff")

    def rebase(self, key: str, parent: str) -> None:
        """Put the active, parentless snapshot ``key`` on the committed ``parent`` (inside a
        transaction). Its own diff does not change: a layer's diff never depends on the layers
        below it here, so several layers of one image can be extracted at once and stacked
        afterwards, in order."""
        row = self._row(key)
        if row["kind"] != ACTIVE or row["parent"] is not None:
            raise FailedPrecondition(f"snapshot {key} is not an active snapshot without a parent")
        parent_row, depth = self._parent(key, parent)
        self.db.execute("UPDATE snapshots SET parent = ?, depth = ?, lower = ? WHERE key = ?",
                        (parent, depth, self._lower_of(parent_row), key))

    @staticmethod
    def _lower_of(parent_row) -> str:
        raise NotImplementedError

    def prepare_in_place_of(self, key: str, parent: str) -> list:
        """A writable snapshot that starts as ``parent``'s own data and sits on ``parent``'s
        parent: the view is the same as a child of ``parent`` but stacks one lower less. For the
        init layer of an image as deep as a mount may stack (500 layers with overlay2).

        Files are hard links to ``parent``'s (only directories and whiteouts are new): a
        committed layer never changes, and whoever writes here must replace a file, never write
        into it (the init layer only creates empty placeholders)."""
        from ..fsutil import copy_tree

        row = self._row(parent)
        if row["kind"] != COMMITTED:
            raise FailedPrecondition(f"parent {parent} is not committed")
        mounts = self._new(key, row["parent"], ACTIVE)
        copy_tree(self._data_dir(row["id"]), self.dir(key), link_files=True)
        return mounts

    def _usage(self, row):
        from ..fsutil import tree_usage

        if not row["link"]:
            return 0, 0
        return tree_usage(self._data_dir(row["id"]))

    def _paths(self, row):
        paths = [os.path.join(self.root, "l", row["link"])] if row["link"] else []
        return paths + [os.path.join(self.root, row["id"])]
