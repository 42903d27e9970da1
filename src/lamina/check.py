"""``system check``: find what is inconsistent in a store, and with ``repair`` fix what can be.

Looks for orphan layer directories and links, snapshot rows without data, layers without
snapshots, unreferenced and missing blobs, blobs whose bytes do not match their digest, containers
without their writable layer, stale mounts, staging leftovers, volume directories without a
volume, bundle directories without a container, network leftovers of containers that no longer
run (addresses, namespaces, rules, bridges), an ``index.json`` that does not list the tags,
and, unless ``quick``, layers whose unpacked files no longer match the checksums of their
tar-split records (a byte flipped on disk), records that cannot be read, and the layer listings
kept for ``image analyze`` that do not match their layers (removed: made again when needed).

Repair removes what nothing references and rebuilds what can be rebuilt: a damaged layer's
snapshot from its kept blob, a lost record from an intact snapshot (only if the tar it gives has
the layer's diff_id). What cannot be rebuilt is not hidden (a corrupt blob is moved to
``quarantine/`` only when nothing needs it): the finding names the images and containers that
depend on it and the command that removes them, and stays a problem until they are removed.
"""

from __future__ import annotations

import hashlib
import os

from .errors import LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store


class Finding:
    """One problem: what it is, where, whether ``repair`` fixed it, and for one it cannot fix,
    what depends on what is lost (``lost``: a sentence naming the images, the containers and
    the command that removes them)."""

    __slots__ = ("fixable", "fixed", "kind", "lost", "where")

    def __init__(self, kind: str, where: str, fixable: bool, lost: str = ""):
        self.kind, self.where, self.fixable, self.fixed = kind, where, fixable, False
        self.lost = lost

    def __str__(self) -> str:
        state = " (repaired)" if self.fixed else "" if self.fixable else " (cannot repair)"
        lost = f"\n  {self.lost}" if self.lost and not self.fixed else ""
        return f"{self.kind}: {self.where}{state}{lost}"


def dependents(store: Store, chains=(), image_ids=()) -> str:
    """A sentence naming the images that use any of the layers ``chains`` (or are among
    ``image_ids``), the containers made from them, and the command that removes them all."""
    db = store.db
    images = set(image_ids)
    for chain in chains:
        images |= {r[0] for r in db.execute(
            "SELECT DISTINCT image_id FROM image_layers WHERE chain_id = ?", (chain,))}
    if not images:
        return "no image uses it"
    names = []
    for image_id in sorted(images):
        tags = [r[0] for r in db.execute("SELECT name FROM tags WHERE image_id = ?", (image_id,))]
        names.append(", ".join(tags) + f" ({image_id[7:19]})" if tags else image_id[7:19])
    containers = sorted(r[0] for image_id in images for r in db.execute(
        "SELECT name FROM containers WHERE image_id = ?", (image_id,)))
    command = ("lamina rm -f " + " ".join(containers) + " && " if containers else "") + \
        "lamina rmi -f " + " ".join(image_id[7:19] for image_id in sorted(images))
    used_by = f"; containers: {', '.join(containers)}" if containers else ""
    return f"lost for images: {'; '.join(names)}{used_by}. Remove them with: {command}"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return "sha256:" + h.hexdigest()
            h.update(chunk)


def check(store: Store, repair: bool = False, quick: bool = False) -> list[Finding]:
    """Every inconsistency found in ``store``'s store (repaired where possible if ``repair``);
    ``quick``: without reading every layer file against its record."""
    from .fsutil import remove_tree
    from .mount import unmount
    from .processes import alive

    db = store.db
    findings: list[Finding] = []

    def found(kind, where, fixable=True, fix=None, lost=""):
        item = Finding(kind, where, fixable, lost)
        findings.append(item)
        if repair and fixable and fix is not None:
            try:
                fixed = fix()
            except (LaminaError, OSError) as error:
                item.lost = f"repair failed: {error}"
                fixed = False
            item.fixed = fixed is not False
            item.fixable = item.fixed  # tried and failed: it cannot be repaired
        return item

    # -- staging and deferred deletions left by dead processes
    for key, in db.execute("SELECT key FROM snapshots WHERE key >= 'extract-' AND key < 'extract.'"):
        if not alive(int(key.split("-")[1])):
            found("staged layer of a dead process", key,
                  fix=lambda k=key: _in_tx(store, lambda: store.snaps.remove(k)))
    for path, pid in db.execute("SELECT path, pid FROM trash").fetchall():
        if not alive(pid):
            found("unfinished deletion", path, fix=lambda: store.snaps.purge(everything=True))
    ingest = os.path.join(store.root, "ingest")
    for name in _listdir(ingest):
        pid = name.split("-", 1)[0]
        if not (pid.isdigit() and alive(int(pid))):
            found("partial blob", f"ingest/{name}", fix=lambda n=name: remove_tree(os.path.join(ingest, n)))

    # -- snapshots against their data
    rows = db.execute("SELECT key, id, kind, link FROM snapshots").fetchall()
    ids = {r["id"] for r in rows}
    layer_chains = {r[0] for r in db.execute("SELECT chain_id FROM layers")}
    for r in rows:
        if not os.path.exists(store.snaps.dir(r["key"])) and not (
                store.driver == "overlay2" and r["kind"] == "view"):
            found("snapshot without data", r["key"], fixable=False,
                  lost=dependents(store, [r["key"]]) if r["key"] in layer_chains else "")
    if store.driver == "overlay2":
        base = os.path.join(store.root, "overlay2")
        links = {r["link"] for r in rows if r["link"]}
        for name in _listdir(base):
            if name not in ids and name != "l":
                found("orphan layer directory", f"overlay2/{name}",
                      fix=lambda n=name: remove_tree(os.path.join(base, n)))
        for name in _listdir(os.path.join(base, "l")):
            if name not in links:
                found("orphan layer link", f"overlay2/l/{name}",
                      fix=lambda n=name: os.unlink(os.path.join(base, "l", n)))
    else:
        base = os.path.join(store.root, store.driver, "dir")
        for name in _listdir(base):
            if name not in ids:
                found("orphan layer directory", f"{store.driver}/dir/{name}",
                      fix=lambda n=name: remove_tree(os.path.join(base, n)))

    # -- layers, images, containers against snapshots and blobs
    keys = {r["key"] for r in rows}
    for chain in sorted(layer_chains - keys):
        found("layer without snapshot", chain, fixable=False, lost=dependents(store, [chain]))
    from .gc import referenced_blobs

    referenced = referenced_blobs(store)
    content = store.content
    present = set(content.digests())
    kept = {r[0] for r in db.execute("SELECT digest FROM kept_blobs")}
    needed_by = _blob_users(store)
    recordless = {r[0] for r in db.execute(  # their loss is told as theirs (_check_records)
        "SELECT l.blob_digest FROM layers l LEFT JOIN tar_split t ON t.chain_id = l.chain_id"
        " WHERE t.chain_id IS NULL")}
    for digest in sorted(referenced - present):
        if digest in recordless and not needed_by.get(digest, ((), ()))[1]:
            continue
        if digest in kept:  # a pull cache's blob: forgetting it loses nothing
            found("missing blob", digest, fix=lambda d=digest: _forget_kept(store, d))
        else:
            found("missing blob", digest, fixable=False,
                  lost=dependents(store, *needed_by.get(digest, ((), ()))))
    for digest in sorted(present - referenced):
        found("unreferenced blob", digest, fix=lambda d=digest: content.delete(d))
    quarantine = os.path.join(store.root, "quarantine")
    for digest in sorted(present & referenced):
        path = content.path(digest)
        if _sha256_file(path) != digest:
            def move(p=path, d=digest):
                os.makedirs(quarantine, exist_ok=True)
                os.rename(p, os.path.join(quarantine, d.split(":", 1)[1]))
                _forget_kept(store, d)
            kind = "corrupt blob (content does not match digest)"
            if digest in kept and digest not in needed_by:  # a cache: the layer has its record
                found(kind, digest, fix=move)
            else:
                found(kind, digest, fixable=False,
                      lost=dependents(store, *needed_by.get(digest, ((), ()))))

    # -- each layer's files against its tar-split record
    _check_records(store, found, layer_chains & keys, quick)
    _check_listings(store, found, quick)
    for cid, name in db.execute("SELECT id, name FROM containers"):
        if cid not in keys:
            found("container without writable layer", cid, fixable=False,
                  lost=f"container {name} cannot run. Remove it with: lamina rm -f {name}")

    # -- mounts
    mounts_dir = os.path.join(store.root, "mounts")
    containers = {r[0] for r in db.execute("SELECT id FROM containers")}
    for name in _listdir(mounts_dir):
        if name not in containers:
            path = os.path.join(mounts_dir, name)

            def unmount_stale(p=path):
                unmount(p, detach=True)
                os.rmdir(p)
            found("stale mount", f"mounts/{name}", fix=unmount_stale)

    # -- bundle directories of containers that are gone (and not waiting in the trash)
    bundles = os.path.join(store.root, "containers")
    trashed = {r[0] for r in db.execute("SELECT path FROM trash")}
    for name in _listdir(bundles):
        if name not in containers and os.path.join(bundles, name) not in trashed:
            stray = os.path.join(bundles, name)
            found("orphan container directory", f"containers/{name}",
                  fix=lambda p=stray: remove_tree(p))

    # -- volume directories without a volume (and not waiting in the trash)
    volumes_dir = os.path.join(store.root, "volumes")
    kept = {r[0] for r in db.execute("SELECT name FROM volumes")}
    kept |= {os.path.basename(r[0]) for r in db.execute("SELECT path FROM trash")}
    for name in _listdir(volumes_dir):
        if name not in kept:
            stray = os.path.join(volumes_dir, name)
            found("orphan volume directory", f"volumes/{name}", fix=lambda p=stray: remove_tree(p))

    # -- network leftovers (lamina.endpoints) of containers that no longer run: CNI results,
    #    host-local addresses, namespace files, endpoint records, bridges without ports
    from .endpoints import leftovers
    from .processes import same_process

    running = {r[0] for r in db.execute("SELECT id, monitor_pid, monitor_start FROM containers"
                                        " WHERE state = 'running'").fetchall()
               if same_process(r[1], r[2])}
    for kind, where, fix in leftovers(store, running):
        found(kind, where, fix=fix)

    # -- index.json lists exactly the tags
    import json

    try:
        with open(os.path.join(store.root, "index.json"), "rb") as f:
            listed = {m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                      for m in json.load(f).get("manifests", [])}
    except (OSError, ValueError):
        listed = None
    tags = {r[0] for r in db.execute("SELECT name FROM tags")}
    if listed != tags:
        found("index.json does not match the tags", "index.json",
              fix=lambda: _in_tx(store, store.write_index))
    return findings


def _blob_users(store: Store) -> dict:
    """Blob digest -> (layer chains, image IDs) that need it: a layer without a record needs
    its blob; an image its config and manifest."""
    users: dict = {}
    for chain, digest in store.db.execute(
            "SELECT l.chain_id, l.blob_digest FROM layers l LEFT JOIN tar_split t"
            " ON t.chain_id = l.chain_id WHERE t.record IS NULL"):
        users.setdefault(digest, ([], []))[0].append(chain)
    for image_id, manifest in store.db.execute("SELECT id, manifest_digest FROM images"):
        users.setdefault(image_id, ([], []))[1].append(image_id)
        users.setdefault(manifest, ([], []))[1].append(image_id)
    return users


def _forget_kept(store: Store, digest: str) -> None:
    with store.tx():
        store.db.execute("DELETE FROM kept_blobs WHERE digest = ?", (digest,))


def _check_records(store: Store, found, chains: set[str], quick: bool) -> None:
    """Layers without a usable record (and without the blob that would stand in for it), and
    unless ``quick`` every recorded file against its checksum."""
    from . import tarsplit

    db = store.db
    rows = db.execute("SELECT l.chain_id, l.blob_digest, t.chain_id AS has_row, t.record FROM"
                      " layers l LEFT JOIN tar_split t ON t.chain_id = l.chain_id").fetchall()
    for row in rows:
        chain = row["chain_id"]
        if chain not in chains:
            continue  # reported above: no snapshot
        record = row["record"]
        if record is None:
            if row["has_row"] is None:
                found("layer without tar-split record", chain,
                      fix=lambda c=chain: _record_again(store, c),
                      lost=dependents(store, [chain]))
            continue  # it keeps its blob, checked above
        try:
            for _ in tarsplit.files(record):  # decodes the whole record
                pass
        except LaminaError:
            found("corrupt tar-split record", chain,
                  fix=lambda c=chain: _record_from_snapshot(store, c) or False,
                  lost=dependents(store, [chain]))
            continue
        if quick:
            continue
        damaged = tarsplit.verify(record, store.snaps.dir(chain))
        if damaged:
            where = f"{chain} ({', '.join(damaged[:5])}{', ...' if len(damaged) > 5 else ''})"
            blob = _kept_blob_of(store, chain)
            if blob is not None and getattr(store.snaps, "independent_diffs", False):
                found("damaged layer files (do not match their record)", where,
                      fix=lambda c=chain, b=blob: _snapshot_from_blob(store, c, b))
            else:
                found("damaged layer files (do not match their record)", where, fixable=False,
                      lost=dependents(store, [chain]))


def _check_listings(store: Store, found, quick: bool) -> None:
    """Layer listings kept for ``image analyze`` that cannot be read or, unless ``quick``, that
    differ from the listing of the layer's tar (its record, or its blob): removed by repair,
    they are made again by the next analysis."""
    from .analyze import decode_listing, layer_listing
    from .layers import LayerStore

    layers = None
    for chain, data in store.db.execute("SELECT chain_id, listing FROM layer_listings"):
        listing = decode_listing(data)
        if listing is not None and not quick:
            layers = layers or LayerStore(store)
            try:
                fresh = layer_listing(layers, chain)
            except (LaminaError, OSError):
                continue  # a record or blob that cannot be read: its own finding
            if (list(fresh.entries.items()), fresh.deleted, fresh.opaque) != \
                    (list(listing.entries.items()), listing.deleted, listing.opaque):
                listing = None
        if listing is None:
            found("layer listing that does not match its layer", chain,
                  fix=lambda c=chain: _in_tx(store, lambda: store.db.execute(
                      "DELETE FROM layer_listings WHERE chain_id = ?", (c,))))


def _kept_blob_of(store: Store, chain: str) -> str | None:
    """A stored blob that holds layer ``chain``'s tar (a pull cache's), or None."""
    row = store.db.execute("SELECT blob_digest FROM layers WHERE chain_id = ?", (chain,)).fetchone()
    if row is not None and os.path.exists(store.content.path(row[0])):
        return row[0]
    for image_id, manifest in store.db.execute(
            "SELECT i.id, i.manifest_digest FROM images i JOIN image_layers il"
            " ON il.image_id = i.id WHERE il.chain_id = ?", (chain,)).fetchall():
        import json

        position = store.db.execute(
            "SELECT position FROM image_layers WHERE image_id = ? AND chain_id = ?",
            (image_id, chain)).fetchone()[0]
        try:
            digest = json.loads(store.content.read(manifest))["layers"][position]["digest"]
        except (LaminaError, ValueError, KeyError, IndexError, TypeError):
            continue
        if os.path.exists(store.content.path(digest)):
            return digest
    return None


def _snapshot_from_blob(store: Store, chain: str, digest: str) -> bool:
    """Extract the layer's tar from blob ``digest`` into a new directory beside its damaged
    data, check it against the record and the diff_id, then put it in the damaged one's place
    (a layer dir holding only its own changes: overlay2, union)."""
    from .fsutil import remove_tree
    from .layertar import apply_tar, open_layer_stream
    from .tarsplit import verify

    data = store.snaps.dir(chain)
    row = store.db.execute("SELECT l.diff_id, l.parent, t.record FROM layers l JOIN tar_split t"
                           " ON t.chain_id = l.chain_id WHERE l.chain_id = ?", (chain,)).fetchone()
    fresh = data + f".repair-{os.getpid()}"
    os.mkdir(fresh, 0o755)
    try:
        with store.content.open(digest) as blob:
            stats = apply_tar(open_layer_stream(blob), fresh,
                              "plain" if row["parent"] is None else store.snaps.fmt)
            blob.read()
        if stats.diff_id != row["diff_id"] or verify(row["record"], fresh):
            raise LaminaError(f"blob {digest} does not give layer {chain} back")
        aside = data + f".damaged-{os.getpid()}"
        os.rename(data, aside)
        os.rename(fresh, data)
        remove_tree(aside)
    finally:
        if os.path.exists(fresh):
            remove_tree(fresh)
    return True


def _record_again(store: Store, chain: str) -> bool:
    """A record for a layer that has none: from its blob if stored (what opening an older
    store does, :meth:`LayerStore.migrate`), else from its snapshot."""
    from .layers import LayerStore

    row = store.db.execute("SELECT blob_digest FROM layers WHERE chain_id = ?", (chain,)).fetchone()
    if os.path.exists(store.content.path(row[0])):
        LayerStore(store).migrate()
        if store.db.execute("SELECT 1 FROM tar_split WHERE chain_id = ?", (chain,)).fetchone():
            return True
    return _record_from_snapshot(store, chain)


def _record_from_snapshot(store: Store, chain: str) -> bool:
    """Make layer ``chain``'s record again from its snapshot: the tar written from it must have
    the layer's diff_id (it does when lamina wrote the layer; an imported tar laid out another
    way cannot be given back), and its files must match. False if it cannot be done."""
    import tempfile

    from . import differ
    from .layertar import split_tar

    row = store.db.execute("SELECT diff_id FROM layers WHERE chain_id = ?", (chain,)).fetchone()
    with tempfile.TemporaryFile(dir=store.content.ingest) as tar:
        differ.write_diff(store.snaps, chain, tar)
        tar.seek(0)
        record, digest, size = split_tar(tar)
    if digest != row["diff_id"]:
        return False
    disk = store.snaps.disk_usage(chain)
    with store.tx():
        store.db.execute("INSERT OR REPLACE INTO tar_split(chain_id, tar_size, disk_size, record)"
                         " VALUES (?,?,?,?)", (chain, size, disk, record))
    return True


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _in_tx(store: Store, fn) -> None:
    with store.tx():
        fn()
