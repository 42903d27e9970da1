"""``system check``: find what is inconsistent in a store, and with ``repair`` fix what can be.

Looks for orphan layer directories and links, snapshot rows without data, layers without
snapshots, unreferenced and missing blobs, blobs whose bytes do not match their digest, containers
without their writable layer, stale mounts, staging leftovers, volume directories without a
volume, bundle directories without a container, network leftovers of containers that no longer
run (addresses, namespaces, rules, bridges) and an ``index.json`` that does not list the tags. Repair removes what nothing references, quarantines corrupt blobs (moved to
``quarantine/``, never deleted) and reports what it cannot fix.
"""

from __future__ import annotations

import hashlib
import os

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store


class Finding:
    """One problem: what it is, where, whether ``repair`` fixed it."""

    __slots__ = ("fixable", "fixed", "kind", "where")

    def __init__(self, kind: str, where: str, fixable: bool):
        self.kind, self.where, self.fixable, self.fixed = kind, where, fixable, False

    def __str__(self) -> str:
        state = " (repaired)" if self.fixed else "" if self.fixable else " (cannot repair)"
        return f"{self.kind}: {self.where}{state}"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return "sha256:" + h.hexdigest()
            h.update(chunk)


def check(store: Store, repair: bool = False) -> list[Finding]:
    """Every inconsistency found in ``store``'s store (repaired where possible if ``repair``)."""
    from .fsutil import remove_tree
    from .mount import unmount
    from .processes import alive

    db = store.db
    findings: list[Finding] = []

    def found(kind, where, fixable=True, fix=None):
        item = Finding(kind, where, fixable)
        findings.append(item)
        if repair and fixable and fix is not None:
            fix()
            item.fixed = True

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
    for r in rows:
        if not os.path.exists(store.snaps.dir(r["key"])) and not (
                store.driver == "overlay2" and r["kind"] == "view"):
            found("snapshot without data", r["key"], fixable=False)
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
    layer_rows = db.execute("SELECT chain_id, blob_digest FROM layers").fetchall()
    for chain, _ in layer_rows:
        if chain not in keys:
            found("layer without snapshot", chain, fixable=False)
    from .gc import referenced_blobs

    referenced = referenced_blobs(store)
    content = store.content
    present = set(content.digests())
    for digest in sorted(referenced - present):
        found("missing blob", digest, fixable=False)
    for digest in sorted(present - referenced):
        found("unreferenced blob", digest, fix=lambda d=digest: content.delete(d))
    quarantine = os.path.join(store.root, "quarantine")
    for digest in sorted(present & referenced):
        path = content.path(digest)
        if _sha256_file(path) != digest:
            def move(p=path, d=digest):
                os.makedirs(quarantine, exist_ok=True)
                os.rename(p, os.path.join(quarantine, d.split(":", 1)[1]))
            found("corrupt blob (content does not match digest)", digest, fix=move)
    for cid, in db.execute("SELECT id FROM containers"):
        if cid not in keys:
            found("container without writable layer", cid, fixable=False)

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


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _in_tx(store: Store, fn) -> None:
    with store.tx():
        fn()
