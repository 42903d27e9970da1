"""The store's metadata: one SQLite database in WAL mode, changed in transactions.

Tables: ``settings`` (the store's driver), ``layers`` (one row per chain ID: diff_id, parent, size,
inode count, the blob that carries it), ``tar_split`` (per layer: its tar-split record and disk
use), ``layer_listings`` (per layer: what ``image analyze`` reads of its tar), ``shared_blocks`` (files whose data blocks ``system dedup`` shares), ``images`` (one row per config digest), ``tags`` and
``containers``; the snapshotter keeps ``snapshots`` in the same file, so a layer and its snapshot
land in one transaction.
"""

import os

try:  # the C module itself: ``sqlite3``'s wrapper adds only datetime adapters lamina does not
    import _sqlite3 as sqlite3  # use, and costs ~1.5 ms more on every command's start-up
except ImportError:  # pragma: no cover - another Python
    import sqlite3

from .faults import point

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    parent TEXT REFERENCES snapshots(key),
    kind TEXT NOT NULL,
    depth INTEGER NOT NULL,
    lower TEXT NOT NULL DEFAULT '',
    link TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE TABLE IF NOT EXISTS trash (
    path TEXT PRIMARY KEY,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT REFERENCES layers(chain_id),
    size INTEGER NOT NULL,
    inodes INTEGER NOT NULL,
    blob_digest TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    created REAL NOT NULL
);
-- the columns that reference a layer: deleting a layer row checks them through these indexes
-- instead of reading every layer and image (foreign keys are on)
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS tar_split (
    chain_id TEXT PRIMARY KEY REFERENCES layers(chain_id) ON DELETE CASCADE,
    tar_size INTEGER NOT NULL,
    disk_size INTEGER NOT NULL,
    record BLOB
);  -- per layer: its tar's bytes, what its snapshot takes on disk (du -sb), and its tar-split
    -- record (lamina.tarsplit; NULL: the layer keeps its blob, from which the tar is read)
CREATE TABLE IF NOT EXISTS layer_listings (
    chain_id TEXT PRIMARY KEY REFERENCES layers(chain_id) ON DELETE CASCADE,
    listing BLOB NOT NULL
);  -- per layer: the paths and sizes its tar lists (lamina.analyze), made from its record or
    -- blob the first time image analyze reads the layer; a layer never changes, nor does this
CREATE TABLE IF NOT EXISTS shared_blocks (
    grp INTEGER NOT NULL,
    chain_id TEXT NOT NULL REFERENCES layers(chain_id) ON DELETE CASCADE,
    bytes INTEGER NOT NULL
);  -- lamina.dedup: a row per layer file whose data blocks the files of its group share
CREATE INDEX IF NOT EXISTS shared_blocks_chain ON shared_blocks(chain_id);
CREATE TABLE IF NOT EXISTS kept_blobs (digest TEXT PRIMARY KEY);
    -- compressed layer blobs kept as a pull cache (the store's keep-pulled-blobs setting)
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    manifest_size INTEGER NOT NULL,
    config_size INTEGER NOT NULL,
    top_layer TEXT REFERENCES layers(chain_id),
    created TEXT NOT NULL,
    size INTEGER NOT NULL,
    command TEXT NOT NULL DEFAULT '[]',
    command_line TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_top_layer ON images(top_layer);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    chain_id TEXT NOT NULL REFERENCES layers(chain_id),
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id),
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_image ON tags(image_id);
CREATE TABLE IF NOT EXISTS removed_containers (
    id TEXT PRIMARY KEY,
    exit_code INTEGER NOT NULL,
    removed REAL NOT NULL
);  -- what a removed container ended with, for a while: the Engine API's wait?condition=removed
CREATE INDEX IF NOT EXISTS removed_containers_removed ON removed_containers(removed);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL REFERENCES images(id),
    image_ref TEXT NOT NULL,
    command TEXT NOT NULL,
    command_line TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'created',
    exit_code INTEGER NOT NULL DEFAULT 0,
    run_config TEXT NOT NULL DEFAULT '{}',
    pid INTEGER NOT NULL DEFAULT 0,
    monitor_pid INTEGER NOT NULL DEFAULT 0,
    monitor_start INTEGER NOT NULL DEFAULT 0,
    started REAL NOT NULL DEFAULT 0,
    finished REAL NOT NULL DEFAULT 0,
    oom_killed INTEGER NOT NULL DEFAULT 0,  -- its last run ended by the kernel's OOM killer
    paused INTEGER NOT NULL DEFAULT 0  -- running, its processes frozen (lamina pause)
);
CREATE INDEX IF NOT EXISTS containers_image ON containers(image_id);
CREATE TABLE IF NOT EXISTS build_cache (
    key TEXT PRIMARY KEY,
    parent_id TEXT,
    image_id TEXT NOT NULL,
    chain TEXT NOT NULL DEFAULT '[]',
    config BLOB,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS build_cache_image ON build_cache(image_id);
CREATE TABLE IF NOT EXISTS build_results (image_id TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS container_volumes (
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    volume TEXT NOT NULL REFERENCES volumes(name),
    destination TEXT NOT NULL,
    PRIMARY KEY (container_id, destination)
);
CREATE INDEX IF NOT EXISTS container_volumes_volume ON container_volumes(volume);
CREATE TABLE IF NOT EXISTS pushed_manifests (
    source TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (source, registry, repository)
);  -- a push that recompressed layers: stored manifest -> the one the repository has
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repository));
CREATE TABLE IF NOT EXISTS compressed_blobs (
    source TEXT NOT NULL, compression TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (source, compression));
CREATE TABLE IF NOT EXISTS leases (
    chain_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (chain_id, pid)
);
CREATE TABLE IF NOT EXISTS container_uses (
    container_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    removing INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (container_id, pid)
);
CREATE TABLE IF NOT EXISTS volume_config (
    name TEXT PRIMARY KEY REFERENCES volumes(name) ON DELETE CASCADE,
    labels TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}'
);  -- a volume's Labels and DriverOpts (the Engine API's volume create), when it has some
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    internal INTEGER NOT NULL DEFAULT 0,
    bridge TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);  -- bridge networks (lamina.networks); host and none are predefined, without rows
CREATE TABLE IF NOT EXISTS container_networks (
    container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    network_id TEXT NOT NULL REFERENCES networks(id),
    aliases TEXT NOT NULL DEFAULT '[]',
    requested_ip TEXT NOT NULL DEFAULT '',
    ifname TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    prefix INTEGER NOT NULL DEFAULT 0,
    gateway TEXT NOT NULL DEFAULT '',
    mac TEXT NOT NULL DEFAULT '',
    ports TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (container_id, network_id)
);  -- a container's networks; ip and the rest are set while it is attached (lamina.endpoints)
CREATE INDEX IF NOT EXISTS container_networks_network ON container_networks(network_id);
"""


WAL_LIMIT = 4 << 20


def connect(path: str) -> sqlite3.Connection:
    """Open the store's database, creating its tables on first use."""
    # check_same_thread=False: lamina serve hands a store's connection from one request's
    # thread to the next (one at a time, never two at once: see lamina.api.server.EnginePool)
    if not os.path.exists(path):  # the owner's alone (SQLite gives its -wal and -shm the same mode)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 30000")
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA wal_autocheckpoint = 100")
    db.execute("PRAGMA foreign_keys = ON")
    # The CLI leaves without closing (see cli._exit), so no checkpoint-on-close; every open then
    # re-reads the WAL. Truncate it once it grows past a few MB to keep that read short.
    try:
        if os.stat(path + "-wal").st_size > WAL_LIMIT:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except FileNotFoundError:
        pass
    # Tables are (re)declared whenever the schema text changed since this store last saw it:
    # one pragma read per open. New tables appear in old stores; columns added to existing
    # tables do not (lamina has no migrations yet: a store from an older lamina needs a new --root).
    import zlib

    version = zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF
    if db.execute("PRAGMA user_version").fetchone()[0] != version:
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(build_cache)")}
        if "chain" not in columns:  # a table from before build cache rows kept chain and config
            db.execute("ALTER TABLE build_cache ADD COLUMN chain TEXT NOT NULL DEFAULT '[]'")
            db.execute("ALTER TABLE build_cache ADD COLUMN config BLOB")
        columns = {row[1] for row in db.execute("PRAGMA table_info(containers)")}
        for column in ("oom_killed", "paused"):  # containers from before limits and pause
            if column not in columns:
                db.execute(f"ALTER TABLE containers ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        db.execute(f"PRAGMA user_version = {version}")
    return db


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """(low, high) such that ``column >= low AND column < high`` holds for exactly the values
    that start with the lowercase hex ``prefix``: a range the column's index answers, where
    ``substr(column, 1, n) = ?`` reads every row."""
    return prefix, prefix + "g"  # "g" sorts after every hex digit


def _writer_lock(db: sqlite3.Connection) -> int:
    """A new descriptor of ``<database>-writer``, the file writers queue on."""
    path = db.execute("PRAGMA database_list").fetchone()[2]
    return os.open(path + "-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


class Transaction:
    """``with Transaction(db):`` runs the block in one IMMEDIATE transaction (the commit point).
    ``after`` (a callable) runs once the transaction has committed or rolled back, outside it.

    Writers first take an flock of ``<database>-writer``, retrying every 2 ms at the most, where
    SQLite's busy handler sleeps up to 100 ms between tries (eight concurrent ``create`` spent
    most of their time asleep). SQLite's own lock still decides; the flock only shortens the
    waits. After 30 s without it, SQLite's busy timeout takes over, as before."""

    def __init__(self, db: sqlite3.Connection, after=None):
        self.db = db
        self.after = after
        self.lock = None

    def __enter__(self):
        import fcntl

        try:
            self.lock = _writer_lock(self.db)
        except OSError:  # a read-only store directory, say: SQLite's lock alone
            self.lock = None
        else:
            import time

            nap, deadline = 0.0005, time.monotonic() + 30
            while True:  # not a blocking flock: a stuck holder must not hang every writer
                try:
                    fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:  # SQLite's busy timeout decides from here
                        break
                    time.sleep(nap)
                    nap = min(nap * 2, 0.002)
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:  # locked past the busy timeout, disk full, ...
            self._unlock()
            raise _store_error(e) from None
        return self.db

    def _unlock(self) -> None:
        if self.lock is not None:
            os.close(self.lock)  # lets go of the flock
            self.lock = None

    def __exit__(self, exc_type, exc, tb):
        try:
            self._end(exc_type, exc)
        finally:
            self._unlock()  # also when a fault point raises

    def _end(self, exc_type, exc):
        try:
            point("tx.before-commit" if exc_type is None else "tx.before-rollback")
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.OperationalError as e:
            if exc_type is None:  # the commit failed (disk full, I/O error): nothing happened
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back by itself
                self._unlock()
                if self.after is not None:
                    self.after()
                raise _store_error(e) from None
            # else the rollback failed while another error propagates: that one is reported
        self._unlock()
        point("tx.after-commit" if exc_type is None else "tx.after-rollback")
        if self.after is not None:
            self.after()
        if exc_type is not None and issubclass(exc_type, sqlite3.OperationalError):
            raise _store_error(exc) from None  # e.g. a full disk inside the block


class Reading:
    """``with Reading(db):`` reads in one snapshot: a deferred transaction around the block, so
    its queries see one state of the store and pay for starting a read (the WAL index looked
    up, the cache checked) once instead of once a statement (a query of ``images`` took 35 us
    alone and 13 us in a block). Inside a transaction already, it adds nothing. Writing inside
    the block is a mistake (a Transaction cannot start in it): keep it for reads."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.began = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self.began = True
        return self.db

    def __exit__(self, *exc) -> None:
        if self.began:
            self.began = False
            self.db.execute("COMMIT")  # ends a read: nothing to write, nothing to fail


def _store_error(error: sqlite3.Error):
    """A one-line LaminaError for a database failure (a full disk, most often)."""
    from .errors import LaminaError

    hint = " (no space left on device)" if "full" in str(error) else ""
    return LaminaError(f"cannot write the store's database: {error}{hint}")
