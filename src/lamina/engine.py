"""The facade: one object that does everything the ``lamina`` command does.

    >>> from lamina import Engine
    >>> engine = Engine(root="/var/tmp/store", driver="overlay2")
    >>> image_id = engine.import_image("rootfs.tar", "busybox:latest")
    >>> cid = engine.create("busybox", name="web")
    >>> path = engine.mount("web")          # the merged root, read-write
    >>> engine.diff("web")                  # [Change(kind='A', path='/hello')]
    >>> engine.inspect_container("web", size=True)["SizeRw"]

The CLI is a thin layer over this class. Data flows one way: Engine -> (snapshots, content,
metadata); the lower modules never import this one.
"""

import os
import time

from .errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from .metadata import Transaction, connect
from .snapshots import DRIVERS, open_snapshotter

INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")


def default_root() -> str:
    """``/var/lib/lamina`` for root, the XDG data dir otherwise."""
    if os.geteuid() == 0:
        return "/var/lib/lamina"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "lamina")


class Engine:
    """A lamina store: images, layers and containers under ``root``, kept by one storage driver."""

    def __init__(self, root: str | None = None, driver: str | None = None):
        self.root = os.path.abspath(root or os.environ.get("LAMINA_ROOT") or default_root())
        wanted = driver or os.environ.get("LAMINA_DRIVER") or None
        if wanted is not None and wanted not in DRIVERS:
            raise InvalidArgument(f"unknown storage driver {wanted!r} (choose from {', '.join(DRIVERS)})")
        try:
            if not os.path.isdir(self.root):
                os.makedirs(self.root, exist_ok=True)
            self.db = connect(os.path.join(self.root, "lamina.db"))
        except OSError as e:
            raise LaminaError(f"cannot open store {self.root}: {e.strerror}") from None
        row = self.db.execute("SELECT value FROM settings WHERE key = 'driver'").fetchone()
        if row is None:
            chosen = wanted or self._detect_driver()
            if chosen in ("overlay2", "overlay") and os.geteuid() != 0:
                from .errors import Unavailable

                raise Unavailable(
                    f"the {chosen} driver needs root (kernel overlay mounts, whiteouts as device "
                    "nodes, trusted.* xattrs): as a non-root user use --driver vfs or union, or "
                    "run lamina inside a user namespace (unshare -Ur)")
            with Transaction(self.db):
                self.db.execute("INSERT OR IGNORE INTO settings VALUES ('driver', ?)", (chosen,))
            row = self.db.execute("SELECT value FROM settings WHERE key = 'driver'").fetchone()
        self.driver = row[0]
        if wanted is not None and wanted != self.driver:
            raise FailedPrecondition(
                f"store {self.root} uses the {self.driver} driver, not {wanted}: "
                f"use another --root or --driver {self.driver}")
        self.snaps = open_snapshotter(self.driver, self.root, self.db)
        self.snaps.blob_gate = self._blob_gate
        self._content = None
        self._recover()

    def _tx(self):
        """A write transaction; data of snapshots it removed is deleted once it has committed."""
        return Transaction(self.db, after=self._after_commit)

    _index_marker = None

    def _after_commit(self) -> None:
        if self.snaps.staged:  # snapshots made in the transaction: keep if committed, else delete
            self.snaps.settle()
        if self._index_marker is not None:  # index.json was written inside the transaction
            marker, self._index_marker = self._index_marker, None
            try:
                with Transaction(self.db):  # from the tags as committed (or rolled back)
                    self._write_index()
                os.unlink(marker)
            except (LaminaError, OSError):  # a full disk, say: the next command rewrites it
                pass
            self._index_marker = None
        if self.snaps.pending:
            self.snaps.purge()

    def _recover(self) -> None:
        """Finish or undo what processes that died left half done: staged layer extractions,
        deferred deletions, partial blobs. Cheap when there is nothing to do (one indexed query,
        one listdir), since every command pays it."""
        from .snapshots import _alive

        staged = self.db.execute(
            "SELECT key FROM snapshots WHERE key >= 'extract-' AND key < 'extract.'"
            " UNION ALL SELECT path FROM trash LIMIT 20").fetchall()
        dead = [r[0] for r in staged if r[0].startswith("extract-")
                and not _alive(int(r[0].split("-")[1]))]
        if dead:
            # Looked at again under the write lock: since the query above, the process may have
            # committed its layer and ended, or another command may have recovered it.
            exists = "SELECT 1 FROM snapshots WHERE key = ?"
            with self._tx():
                for key in dead:
                    if self.db.execute(exists, (key,)).fetchone():
                        self.snaps.remove(key)
        if staged:
            self.snaps.purge()
        try:
            leftovers = os.listdir(os.path.join(self.root, "ingest"))
        except FileNotFoundError:
            return
        claims = []
        for name in leftovers:
            pid = name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                if name.startswith(pid + "-claim-"):  # a blob it named but maybe never used
                    claims.append(name)
                    continue
                if name == pid + "-index":  # it died between writing index.json and commit
                    with self._tx():
                        self._write_index()
                    try:
                        os.unlink(os.path.join(self.root, "ingest", name))
                    except FileNotFoundError:  # another command recovered it too
                        pass
                    continue
                if name.startswith(pid + "-snapshot-"):  # data made, record maybe not committed
                    self.snaps.settle([(name.split("-", 2)[2],
                                        os.path.join(self.root, "ingest", name))])
                    continue
                try:
                    os.unlink(os.path.join(self.root, "ingest", name))
                except FileNotFoundError:
                    pass
                except IsADirectoryError:  # the staging directory of a killed push or save
                    from .fsutil import remove_tree

                    remove_tree(os.path.join(self.root, "ingest", name))
        if claims:
            from .claims import resolve

            resolve(self, claims)

    def _detect_driver(self) -> str:
        from .snapshots import overlay_supported

        if os.geteuid() == 0 and overlay_supported(self.root):
            return "overlay2"
        return "vfs"

    @property
    def content(self):
        if self._content is None:
            from .content import ContentStore

            self._content = ContentStore(self.root)
        return self._content

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ lookups
    def _image_id(self, name: str) -> str:
        for tag in (name, name + ":latest"):  # the common case, without parsing the reference
            row = self.db.execute("SELECT image_id FROM tags WHERE name = ?", (tag,)).fetchone()
            if row:
                return row[0]
        from .image import normalize

        if name.startswith("sha256:") and len(name) == 71:
            if self.db.execute("SELECT 1 FROM images WHERE id = ?", (name,)).fetchone():
                return name
        try:
            row = self.db.execute("SELECT image_id FROM tags WHERE name = ?",
                                  (normalize(name),)).fetchone()
            if row:
                return row[0]
        except InvalidArgument:
            pass
        prefix = name.removeprefix("sha256:")
        if 1 <= len(prefix) <= 64 and all(c in "0123456789abcdef" for c in prefix):
            rows = self.db.execute("SELECT id FROM images WHERE substr(id, 8, ?) = ?",
                                   (len(prefix), prefix)).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise InvalidArgument(f"image ID prefix {name} is ambiguous")
        raise NotFound(f"No such image: {name}")

    def _container(self, name: str):
        row = self.db.execute("SELECT * FROM containers WHERE name = ? OR id = ?",
                              (name.lstrip("/"), name)).fetchone()
        if row is None and name and all(c in "0123456789abcdef" for c in name):
            rows = self.db.execute("SELECT * FROM containers WHERE substr(id, 1, ?) = ?",
                                   (len(name), name)).fetchall()
            if len(rows) > 1:
                raise InvalidArgument(f"container ID prefix {name} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"No such container: {name}")
        return row

    def _image_row(self, image_id: str):
        return self.db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()

    def _image_config(self, image_id: str) -> dict:
        import json

        try:
            return json.loads(self.content.read(image_id))
        except NotFound:
            if self._image_row(image_id) is None:  # removed by another process meanwhile
                raise NotFound(f"No such image: {image_id}") from None
            raise

    def _blob_gate(self, path: str):
        """Snapshotter.purge asks before deleting a trashed path: blobs go through
        lamina.claims.gate (referenced again, or claimed by a live process, they stay); removed
        volumes go through lamina.volumes.purge_removed (under the write lock)."""
        if path.startswith(os.path.join(self.root, "volumes") + os.sep):
            from .volumes import purge_removed

            return purge_removed(self, path)
        if os.sep + "blobs" + os.sep not in path:
            return None
        from .claims import gate

        return gate(self, path)

    def _layer_chain(self, image_id: str) -> list:
        return self.db.execute(
            "SELECT l.* FROM image_layers il JOIN layers l ON l.chain_id = il.chain_id"
            " WHERE il.image_id = ? ORDER BY il.position", (image_id,)).fetchall()

    def _tags(self, image_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY added, name", (image_id,))]

    # ------------------------------------------------------------------ layers and images
    def _add_layer(self, parent_chain: str | None, stream, writer=None,
                   digest: str | None = None) -> tuple[str, dict]:
        """Extract the layer tar ``stream`` on ``parent_chain``; returns (chain_id, layer facts).

        The snapshot is made under a staging key and committed under its chain ID by the caller's
        transaction (see :meth:`_commit_layer`); on error it is removed again.
        """
        key = self._stage_layer(parent_chain)
        from . import differ

        try:
            stats = differ.apply(self.snaps, key, stream, digest)
        except BaseException:
            try:
                with self._tx():
                    self.snaps.remove(key)
            except LaminaError:  # a full disk, say: the next command removes the staged key
                pass
            raise
        from .digest import sha256_bytes

        chain = stats.diff_id if parent_chain is None else sha256_bytes(
            f"{parent_chain} {stats.diff_id}".encode())
        return key, {"chain_id": chain, "diff_id": stats.diff_id, "parent": parent_chain,
                     "size": stats.size, "inodes": stats.inodes}

    def _stage_layer(self, parent_chain: str | None) -> str:
        """A new active snapshot on ``parent_chain`` under a staging key (``extract-<pid>-*``, which
        the next command removes if this process dies); returns the key."""
        key = f"extract-{os.getpid()}-{os.urandom(6).hex()}"
        with self._tx():
            self.snaps.prepare(key, parent_chain)
        return key

    def _commit_layer(self, key: str, layer: dict, blob: tuple[str, int, str]) -> None:
        """Inside a transaction: keep the staged snapshot as layer ``chain_id`` (or drop a duplicate)."""
        exists = self.db.execute("SELECT 1 FROM layers WHERE chain_id = ?",
                                 (layer["chain_id"],)).fetchone()
        if exists:
            self.snaps.remove(key)
            return
        self.snaps.commit(layer["chain_id"], key)
        self.db.execute(
            "INSERT INTO layers(chain_id, diff_id, parent, size, inodes, blob_digest, blob_size,"
            " media_type, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (layer["chain_id"], layer["diff_id"], layer["parent"], layer["size"], layer["inodes"],
             blob[0], blob[1], blob[2], time.time()))

    def _store_image(self, config: bytes, chains: list[str], tag: str | None,
                     manifest: bytes | None = None) -> str:
        """Inside a transaction: write config + manifest blobs and the image row; tag it.
        ``manifest`` (exact bytes, e.g. as pulled) replaces the OCI manifest made here."""
        import json

        from .image import MEDIA_LAYER, make_manifest

        content = self.content
        config_digest = content.put(config)
        descriptors = []
        for chain in chains:
            layer = self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()
            if layer is None:  # its image was removed by another process while this one worked
                raise NotFound(f"No such image: layer {chain} was removed meanwhile")
            descriptors.append({"mediaType": layer["media_type"] or MEDIA_LAYER,
                                "digest": layer["blob_digest"], "size": layer["blob_size"]})
        if manifest is None:
            manifest = make_manifest(config_digest, len(config), descriptors)
        manifest_digest = content.put(manifest)
        if not self._image_row(config_digest):
            size = sum(self.db.execute("SELECT size FROM layers WHERE chain_id = ?",
                                       (c,)).fetchone()[0] for c in chains)
            doc = json.loads(config)
            run = doc.get("config") or {}
            command = (run.get("Entrypoint") or []) + (run.get("Cmd") or [])
            self.db.execute(
                "INSERT INTO images(id, manifest_digest, manifest_size, config_size, top_layer,"
                " created, size, command, command_line, added) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (config_digest, manifest_digest, len(manifest), len(config),
                 chains[-1] if chains else None, doc.get("created", ""), size, json.dumps(command),
                 " ".join(command), time.time()))
            self.db.executemany("INSERT INTO image_layers VALUES (?,?,?)",
                                [(config_digest, i, c) for i, c in enumerate(chains)])
        if tag:
            self._set_tag(tag, config_digest)
        return config_digest

    def _set_tag(self, tag: str, image_id: str) -> None:
        if self._image_row(image_id) is None:  # looked up before the transaction, gone since
            raise NotFound(f"No such image: {image_id}")
        self.db.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?)", (tag, image_id, time.time()))
        self._write_index()

    def _write_index(self) -> None:
        """Inside a transaction: rewrite index.json from the tags. The file cannot join the
        transaction, so a marker ``ingest/<pid>-index`` says it may be ahead of what commits:
        the transaction's end (``_after_commit``) or, if this process dies, the next command
        rewrites it from the committed tags."""
        from .image import MEDIA_MANIFEST

        if self._index_marker is None:
            self._index_marker = os.path.join(self.root, "ingest", f"{os.getpid()}-index")
            os.makedirs(os.path.dirname(self._index_marker), exist_ok=True)
            os.close(os.open(self._index_marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        rows = self.db.execute(
            "SELECT t.name, i.manifest_digest, i.manifest_size FROM tags t"
            " JOIN images i ON i.id = t.image_id ORDER BY t.name").fetchall()
        def media_type(digest: str) -> str:  # a pulled or loaded manifest may be Docker's
            import json

            return json.loads(self.content.read(digest)).get("mediaType") or MEDIA_MANIFEST

        self.content.write_index([
            {"mediaType": media_type(r[1]), "digest": r[1], "size": r[2],
             "annotations": {"org.opencontainers.image.ref.name": r[0]}} for r in rows])

    def import_image(self, source, reference: str | None = None, message: str = "") -> str:
        """Make a one-layer image from a rootfs tar (a path, ``-``, or a binary file; plain, gzip or
        zstd). Returns the image ID."""
        import sys

        from .image import MEDIA_LAYER, make_config, normalize, rfc3339
        from .layertar import open_layer_stream

        tag = normalize(reference) if reference else None
        if source == "-":
            f, label = sys.stdin.buffer, "-"
        elif isinstance(source, (str, os.PathLike)):
            try:
                f, label = open(source, "rb"), os.fspath(source)
            except OSError as e:
                raise NotFound(f"cannot open {source}: {e.strerror}") from None
        else:
            f, label = source, "-"
        try:
            with self.content.writer() as writer:
                tee = _Tee(f, writer)
                key, layer = self._add_layer(None, open_layer_stream(tee))
                try:
                    tee.drain()
                    head = tee.head
                    media = MEDIA_LAYER + ("+gzip" if head[:2] == b"\x1f\x8b" else
                                           "+zstd" if head[:4] == b"\x28\xb5\x2f\xfd" else "")
                    blob = writer.commit()
                    now = rfc3339()
                    config = make_config([layer["diff_id"]], [{
                        "created": now, "created_by": "lamina import " + label,
                        "comment": message or f"Imported from {label}"}], created=now)
                    with self._tx():
                        self._commit_layer(key, layer, (blob[0], blob[1], media))
                        return self._store_image(config, [layer["chain_id"]], tag)
                except BaseException:
                    if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                        with self._tx():
                            self.snaps.remove(key)
                    raise
        except BaseException:  # what it wrote goes again (lamina.claims)
            from .claims import abandon

            abandon(self)
            raise
        finally:
            self.content.release_claims()
            if f is not source and label != "-":
                f.close()

    def images(self, all: bool = False) -> list[dict]:
        """One row per tag (and one for each untagged image), newest first, as ``docker images``."""
        out = []
        rows = self.db.execute("SELECT * FROM images ORDER BY added DESC").fetchall()
        hidden = set() if all else self._build_states()
        for img in rows:
            tags = self._tags(img["id"])
            if not tags and img["id"] in hidden:
                continue
            for name in tags or ["<none>:<none>"]:
                repo, _, tag = name.rpartition(":")
                out.append({"Repository": repo, "Tag": tag, "ID": img["id"],
                            "CreatedAt": img["created"], "Size": img["size"]})
        return out

    def _build_states(self) -> set[str]:
        """IDs of a build's intermediate states (hidden from ``images``, counted as build cache),
        unless some build ended on them or they carry a tag."""
        import sqlite3

        try:
            return {r[0] for r in self.db.execute(
                "SELECT c.image_id FROM build_cache c JOIN images i ON i.id = c.image_id"
                " EXCEPT SELECT image_id FROM build_results EXCEPT SELECT image_id FROM tags")}
        except sqlite3.OperationalError:  # a store older than the build tables
            return set()

    def inspect_image(self, name: str) -> dict:
        """Docker-shaped ``image inspect`` document."""
        image_id = self._image_id(name)
        img = self._image_row(image_id)
        cfg = self._image_config(image_id)
        top = img["top_layer"]
        data = {}
        if top:
            data = {"Dir": self.snaps.dir(top)}
        return {
            "Id": image_id,
            "RepoTags": self._tags(image_id),
            "RepoDigests": self._repo_digests(img["manifest_digest"]),
            "Parent": "",
            "Comment": (cfg.get("history") or [{}])[-1].get("comment", ""),
            "Created": cfg.get("created", ""),
            "Author": cfg.get("author", ""),
            "Config": cfg.get("config", {}),
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""),
            "Size": img["size"],
            "VirtualSize": img["size"],
            "GraphDriver": {"Name": self.driver, "Data": data},
            "RootFS": {"Type": "layers", "Layers": cfg.get("rootfs", {}).get("diff_ids", [])},
            "Metadata": {"LastTagTime": ""},
            "Descriptor": {"mediaType": self._manifest_media_type(img["manifest_digest"]),
                           "digest": img["manifest_digest"], "size": img["manifest_size"]},
        }

    def _repo_digests(self, manifest_digest: str) -> list[str]:
        """``NAME@DIGEST`` for each registry repository this manifest was pulled from or pushed
        to (lamina.transfer.registry records them in ``blob_sources``)."""
        import sqlite3

        from .transfer.registry import Reference

        try:
            rows = self.db.execute(  # pushed_manifests: pushes that recompressed its layers
                "SELECT registry, repository, ? FROM blob_sources WHERE digest = ? UNION"
                " SELECT registry, repository, digest FROM pushed_manifests WHERE source = ?"
                " ORDER BY 1, 2, 3", (manifest_digest,) * 3).fetchall()
        except sqlite3.OperationalError:  # no pull or push yet: no table
            return []
        return [f"{Reference(r[0], r[1], None, None).name}@{r[2]}" for r in rows]

    def _manifest_media_type(self, manifest_digest: str) -> str:
        """The media type the manifest's exact bytes declare (OCI when they name none)."""
        import json

        try:
            doc = json.loads(self.content.read(manifest_digest))
        except (LaminaError, ValueError):
            doc = {}
        media = doc.get("mediaType") if isinstance(doc, dict) else None
        return media if isinstance(media, str) and media else \
            "application/vnd.oci.image.manifest.v1+json"

    def history(self, name: str) -> list[dict]:
        """One row per history entry, newest first; empty_layer entries have size 0."""
        image_id = self._image_id(name)
        cfg = self._image_config(image_id)
        layers = self._layer_chain(image_id)
        from .image import parse_rfc3339

        rows = []
        li = 0
        for entry in cfg.get("history", []):
            size = 0
            if not entry.get("empty_layer"):
                if li < len(layers):
                    size = layers[li]["size"]
                li += 1
            rows.append({"CreatedAt": entry.get("created", ""),
                         "Created": parse_rfc3339(entry.get("created", "")),
                         "CreatedBy": entry.get("created_by", ""), "Size": size,
                         "Comment": entry.get("comment", ""), "EmptyLayer": bool(entry.get("empty_layer"))})
        rows.reverse()
        for row in rows:
            row["ID"] = "<missing>"
        if rows:
            rows[0]["ID"] = image_id
        return rows

    def tag(self, source: str, target: str) -> None:
        """Give the image ``source`` the extra name ``target``."""
        from .image import normalize

        image_id = self._image_id(source)
        with self._tx():
            self._set_tag(normalize(target), image_id)

    def rmi(self, names: list[str], force: bool = False) -> list[str]:
        """Remove images (or just the named tag when the image has others); returns Docker's
        ``Untagged:`` / ``Deleted:`` lines. Layers shared with other images stay."""
        from .image import normalize

        out: list[str] = []
        for name in names:
            image_id = self._image_id(name)
            with self._tx():
                if self._image_row(image_id) is None:  # removed by another process meanwhile
                    raise NotFound(f"No such image: {name}")
                tags = self._tags(image_id)
                try:
                    by_tag = normalize(name) in tags
                except InvalidArgument:
                    by_tag = False
                users = self.db.execute("SELECT id FROM containers WHERE image_id = ?",
                                        (image_id,)).fetchall()
                if by_tag and (len(tags) > 1 or (users and force)):
                    self.db.execute("DELETE FROM tags WHERE name = ?", (normalize(name),))
                    out.append(f"Untagged: {normalize(name)}")
                    self._write_index()
                    continue
                if len(tags) > 1 and not force:
                    raise FailedPrecondition(
                        f"conflict: unable to delete {image_id[7:19]} (must be forced) - image is "
                        "referenced in multiple repositories")
                if users:
                    if not force:
                        raise FailedPrecondition(
                            f"conflict: unable to remove repository reference \"{name}\" (must force)"
                            f" - container {users[0][0][:12]} is using its referenced image "
                            f"{image_id[7:19]}")
                    for t in tags:
                        self.db.execute("DELETE FROM tags WHERE name = ?", (t,))
                        out.append(f"Untagged: {t}")
                    self._write_index()
                    continue
                for t in tags:
                    out.append(f"Untagged: {t}")
                out.extend(self._delete_image(image_id))
        return out

    def _delete_image(self, image_id: str, reclaimed: list | None = None) -> list[str]:
        """Inside a transaction: drop the image and every layer and blob nothing else uses.
        The sizes of the layers deleted are appended to ``reclaimed``."""
        img = self._image_row(image_id)
        chains = [r["chain_id"] for r in self._layer_chain(image_id)]
        self.db.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM image_layers WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self._write_index()
        out = [f"Deleted: {image_id}"]
        blobs = [image_id, img["manifest_digest"]]
        for chain in reversed(chains):
            used = self.db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1",
                                   (chain,)).fetchone()
            init = _init_key(chain)
            if not used and self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init,)).fetchone() \
                    and not self.db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                                            (init,)).fetchone():
                self.snaps.remove(init)
            child = self.db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                                    (chain,)).fetchone()
            from .leases import leased

            if used or child or leased(self.db, chain):  # leased: a build is about to use it
                break
            layer = self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()
            self.db.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
            self.snaps.remove(chain)
            blobs.append(layer["blob_digest"])
            out.append(f"Deleted: {chain}")
            if reclaimed is not None:
                reclaimed.append(layer["size"])
        try:  # the blobs the manifest lists (a pulled layer's compressed blob, say)
            import json

            listed = json.loads(self.content.read(img["manifest_digest"])).get("layers") or []
            blobs += [d["digest"] for d in listed if isinstance(d, dict) and "digest" in d]
        except (LaminaError, ValueError):
            pass
        from .gc import referenced_blobs

        used = referenced_blobs(self)
        for digest in dict.fromkeys(blobs):
            if digest not in used:  # deleted once the transaction commits, like snapshot data
                self.db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                                (self.content.path(digest), os.getpid()))
                self.snaps.pending = True
        return out

    # ------------------------------------------------------------------ containers
    def create(self, image: str, name: str | None = None, command: list[str] | None = None,
               claimed: bool = False, used: bool = False) -> str:
        """A new container: a writable layer on the image's init layer. Returns its ID.

        The init layer holds the placeholders the runtime bind-mounts over (``/etc/hosts``, ...).
        It is the same for every container of an image, so it is made once per layer chain and
        shared: a container costs one snapshot, and N containers add nothing but their own layers.

        ``claimed`` (for ``run``): the container is born owned by this process, as
        :func:`lamina.runtime.monitor.supervise` claims one it starts (state ``running``, pid 0), so no
        ``rm`` or prune can take it before its process runs. The caller must then start it or
        give the claim back (:func:`lamina.runtime.monitor.release`). ``used`` (for a build's ``RUN``):
        the container is born used by this process (:mod:`lamina.uses`), until it removes it.
        """
        image_id = self._image_id(image)
        img = self._image_row(image_id)
        if img is None:
            raise NotFound(f"No such image: {image}")
        cid = os.urandom(32).hex()
        if name is not None:
            _check_name(name)
        init_key = _init_key(img["top_layer"])
        with self._tx():
            if self._image_row(image_id) is None:  # removed by another process since the lookup
                raise NotFound(f"No such image: {image}")
            if name is None:
                name = self._random_name()
            elif self.db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                raise FailedPrecondition(
                    f'Conflict. The container name "/{name}" is already in use')
            if not self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init_key,)).fetchone():
                self.snaps.prepare(init_key, img["top_layer"])
                self._write_init(init_key)
                self.snaps.commit(init_key, init_key)  # same key, now read-only
            self.snaps.prepare(cid, init_key)
            if command is None:  # the image's, as stored: no JSON work on this hot path
                command_json, command_line = img["command"], img["command_line"]
            else:
                import json

                command_json, command_line = json.dumps(command), " ".join(command)
            self.db.execute(
                "INSERT INTO containers(id, name, image_id, image_ref, command, command_line,"
                " created) VALUES (?,?,?,?,?,?,?)",
                (cid, name, image_id, image, command_json, command_line, time.time()))
            if claimed:
                from .runtime.monitor import claim

                claim(self.db, cid)
            if used:
                from . import uses

                uses.add(self.db, cid)
        return cid

    def _write_init(self, key: str) -> None:
        """Placeholders the runtime bind-mounts over; they live below the container's own layer,
        so they never show in its diff or size."""
        import stat

        root = self.snaps.dir(key)
        etc = os.path.join(root, "etc")
        if not os.path.lexists(etc):
            st = None
            for lower in self.snaps.lower_dirs(key):
                try:
                    st = os.lstat(os.path.join(lower, "etc"))
                    break
                except FileNotFoundError:
                    continue
            if st is not None and not stat.S_ISDIR(st.st_mode):
                return  # /etc is not a directory in this image: leave it alone
            os.mkdir(etc, 0o755)
            if st is not None:  # keep the image's /etc metadata in the merged view
                os.chown(etc, st.st_uid, st.st_gid)
                os.chmod(etc, stat.S_IMODE(st.st_mode))
                os.utime(etc, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif os.path.islink(etc) or not os.path.isdir(etc):
            return
        for rel in INIT_FILES:
            path = os.path.join(root, rel)
            if os.path.islink(path) or os.path.isdir(path):
                continue
            with open(path, "wb"):
                pass

    def _random_name(self) -> str:
        def pick(words):
            return words[int.from_bytes(os.urandom(2), "little") % len(words)]

        for _ in range(20):
            name = f"{pick(_ADJECTIVES)}_{pick(_NAMES)}"
            if not self.db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                return name
        return f"{pick(_ADJECTIVES)}_{pick(_NAMES)}{int.from_bytes(os.urandom(3), 'little')}"

    def _mount_target(self, cid: str) -> str:
        return os.path.join(self.root, "mounts", cid)

    def containers(self, all: bool = True, size: bool = False) -> list[dict]:
        """``ps`` rows, newest first; with ``size``, SizeRw and SizeRootFs in bytes."""
        rows = self.db.execute(
            "SELECT c.*, i.size AS image_size FROM containers c JOIN images i ON i.id = c.image_id"
            " ORDER BY c.created DESC").fetchall()
        out = []
        for r in rows:
            state, exit_code, finished = r["state"], r["exit_code"], r["finished"]
            if state == "running" and not _owner_alive(r["monitor_pid"], r["monitor_start"]):
                # its owner died (lamina.runtime.monitor): shown as exited; the next verb on it cleans up
                state, exit_code, finished = "exited", 255, r["started"]
            if not all and state != "running":
                continue
            item = {"ID": r["id"], "Names": r["name"], "Image": r["image_ref"], "ImageID": r["image_id"],
                    "Command": r["command_line"], "Created": r["created"],
                    "State": state, "ExitCode": exit_code, "StartedAt": r["started"],
                    "FinishedAt": finished}
            if size:
                try:
                    rw = self.snaps.usage(r["id"])[0]
                except (NotFound, FileNotFoundError):
                    continue  # removed by another process since the query: no longer listed
                item["SizeRw"] = rw
                item["SizeRootFs"] = rw + r["image_size"]
            out.append(item)
        return out

    def inspect_container(self, name: str, size: bool = False) -> dict:
        """Docker-shaped ``container inspect`` document."""
        import json

        from .image import rfc3339

        r = self._container(name)
        command = json.loads(r["command"])
        target = self._mount_target(r["id"])
        mounts = self.snaps.mounts(r["id"])
        m = mounts[0]
        graph = {"MergedDir": target if m.type in ("overlay", "union") else m.source}  # FUSE
        if m.type == "overlay":
            graph.update(UpperDir=m.upper(), LowerDir=":".join(m.lowers()),
                         WorkDir=os.path.join(os.path.dirname(m.upper()), "work"))
        doc = {
            "Id": r["id"],
            "Created": rfc3339(r["created"]),
            "Path": command[0] if command else "",
            "Args": command[1:],
            "State": {"Status": r["state"], "Running": r["state"] == "running",
                      "ExitCode": r["exit_code"]},
            "Image": r["image_id"],
            "Name": "/" + r["name"],
            "Driver": self.driver,
            "GraphDriver": {"Name": self.driver, "Data": graph},
            "Config": {"Image": r["image_ref"], "Cmd": command},
        }
        if size:
            rw = self.snaps.usage(r["id"])[0]
            doc["SizeRw"] = rw
            doc["SizeRootFs"] = rw + self._image_row(r["image_id"])["size"]
        return doc

    def mount(self, name: str) -> str:
        """Mount the container's merged root read-write; returns the host path."""
        r = self._container(name)
        mounts = self.snaps.mounts(r["id"])
        if len(mounts) == 1 and mounts[0].type == "bind" and not mounts[0].readonly:
            return mounts[0].source  # vfs: the directory is the root already
        from .mount import mount_all

        target = self._mount_target(r["id"])
        os.makedirs(target, exist_ok=True)
        if not os.path.ismount(target):
            mount_all(mounts, target)
        return target

    def umount(self, name: str) -> None:
        """Undo :meth:`mount`."""
        from .mount import unmount

        r = self._container(name)
        target = self._mount_target(r["id"])
        if os.path.isdir(target):
            unmount(target)
            try:
                os.rmdir(target)
            except FileNotFoundError:  # another process unmounted it too (a --rm monitor, a prune)
                pass

    def rm(self, name: str, force: bool = False) -> str:
        """Delete a container and its writable layer (and nothing else). Returns its ID.

        Refused without ``force``: a running container, and one another command is using (``cp``,
        ``commit``...: :mod:`lamina.uses`); ``force`` stops the first and waits for the second.
        "No such container" if another ``rm`` or prune is removing it."""
        return self._remove(name, force)[0]

    def _remove(self, name: str, force: bool = False, measure: bool = False) -> tuple[str, int]:
        """:meth:`rm`; returns the ID and, with ``measure`` (for prune), the bytes of the writable
        layer, measured once the removal is this process's (nobody else deletes it meanwhile)."""
        from . import uses

        r = self._container(name)
        stopped = False
        if r["state"] == "running":
            from .runtime.monitor import refresh, stop

            r = refresh(self, r)  # its owner may have died
            if r["state"] == "running" and not force:
                raise _running_refused(r["id"])
            if r["state"] == "running":
                stop(self, r["id"], timeout=0)
                stopped = True
        cid, deadline = r["id"], time.monotonic() + 30
        while True:  # in one transaction: it exists, nobody runs, uses or removes it; it is ours
            try:
                with self._tx():
                    r = self.db.execute("SELECT * FROM containers WHERE id = ?", (cid,)).fetchone()
                    if r is None:
                        raise NotFound(f"No such container: {name}")
                    if r["state"] == "running" and _owner_alive(r["monitor_pid"],
                                                                r["monitor_start"]):
                        if force:
                            raise _StillRunning()
                        raise _running_refused(cid)  # started since the lookup (prune: skipped)
                    uses.begin_removal(self, cid, name)
                break
            except _StillRunning:  # -f: its owner is still starting or ending it
                if time.monotonic() > deadline:
                    raise _running_refused(cid) from None
                from .runtime.monitor import stop

                stop(self, cid, timeout=0)  # a process that started after the first stop
                stopped = True
                time.sleep(0.05)
            except uses.InUse:
                if not force or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a cp or commit: short, wait for it
            except NotFound:
                if stopped:  # a --rm container's monitor removes it itself
                    return cid, 0
                raise
        try:
            size = self.snaps.usage(cid)[0] if measure else 0
            self.umount(cid)
            with self._tx():
                if not self.db.execute("DELETE FROM containers WHERE id = ?", (cid,)).rowcount:
                    raise NotFound(f"No such container: {name}")
                uses.end(self, cid)
                self.snaps.remove(r["id"])
                self.snaps.trash(os.path.join(self.root, "containers", r["id"]))  # bundle and log
        except BaseException:
            with self._tx():  # not removed after all: others may use it again
                uses.end(self, cid)
            raise
        return r["id"], size  # (the bundle went with the purge after that commit)

    def cp(self, src: str, dst: str, archive: bool = False, follow: bool = False) -> None:
        """``docker cp``: ``CONTAINER:PATH`` to a host path or back (rules in lamina.copy)."""
        from . import copy, uses

        source, dest = copy.parse_location(src), copy.parse_location(dst)
        copy.check_direction(source, dest)
        with uses.using(self, source[0] or dest[0]) as row:  # no rm or prune meanwhile
            self._cp(row["id"], source, dest, archive, follow)

    def _cp(self, cid: str, source, dest, archive: bool, follow: bool) -> None:
        from . import copy

        view = getattr(self.snaps, "union_view", None)
        mounted = None
        if view is not None:  # the union driver: its Python API, no mount
            fs = view(cid)
        else:
            target = self._mount_target(cid)
            mounted = None if os.path.ismount(target) else cid
            fs = copy.RootedFS(self.mount(cid))
        host = copy.RootedFS("/")
        try:
            if source[0] is not None:
                owner = None if archive or os.geteuid() == 0 else (os.geteuid(), os.getegid())
                copy.copy(fs, source[1], host, copy.host_path(dest[1]), owner, follow)
            else:
                copy.copy(host, copy.host_path(source[1]), fs, dest[1],
                          None if archive else (0, 0), follow)
        except OSError as error:
            raise copy.os_error(error) from None
        finally:
            if mounted is not None:
                fs.close()  # its descriptor of the root would keep the mount busy
                self.umount(mounted)

    def diff(self, name: str) -> list:
        """Docker's A/C/D changes of the container's writable layer."""
        from . import differ, uses

        with uses.using(self, name) as r:
            return differ.changes(self.snaps, r["id"])

    def commit(self, name: str, reference: str | None = None, message: str = "",
               author: str = "") -> str:
        """Turn the container's writable layer into a new image layer on its image. The
        container is used (:mod:`lamina.uses`) meanwhile: no rm or prune takes it."""
        from . import uses

        with uses.using(self, name) as r:
            return self._commit(r, reference, message, author)

    def _commit(self, r, reference: str | None, message: str, author: str) -> str:
        import json

        from . import differ
        from .image import MAX_LAYERS, MEDIA_LAYER, dumps, normalize, rfc3339

        tag = normalize(reference) if reference else None
        base = self._image_config(r["image_id"])
        chains = [row["chain_id"] for row in self._layer_chain(r["image_id"])]
        if len(chains) + 1 > MAX_LAYERS:
            raise InvalidArgument(
                f"an image may have at most {MAX_LAYERS} layers; committing {r['name']} would make "
                f"{len(chains) + 1}")
        with self.content.writer() as writer:
            differ.write_diff(self.snaps, r["id"], writer)
            blob = writer.commit()
        with self.content.open(blob[0]) as stream:
            key, layer = self._add_layer(chains[-1] if chains else None, stream)
        try:
            now = rfc3339()
            history = list(base.get("history", []))
            history.append({"created": now, "created_by": " ".join(json.loads(r["command"])),
                            **({"author": author} if author else {}),
                            **({"comment": message} if message else {})})
            doc = dict(base)
            doc["created"] = now
            if author:
                doc["author"] = author
            doc["rootfs"] = {"type": "layers",
                             "diff_ids": list(base["rootfs"]["diff_ids"]) + [layer["diff_id"]]}
            doc["history"] = history
            with self._tx():
                self._commit_layer(key, layer, (blob[0], blob[1], MEDIA_LAYER))
                return self._store_image(dumps(doc), chains + [layer["chain_id"]], tag)
        except BaseException:
            if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                with self._tx():
                    self.snaps.remove(key)
            from .claims import abandon

            abandon(self)  # the layer blob written above goes again
            raise
        finally:
            self.content.release_claims()

    def export(self, name: str, out) -> None:
        """Write the container's flattened root as a tar to the binary file ``out``."""
        from . import uses

        with uses.using(self, name) as r:  # no rm or prune meanwhile
            self._export(r, out)

    def _export(self, r, out) -> None:
        from .layertar import write_tree_tar

        view = getattr(self.snaps, "union_view", None)
        if view is not None:  # the union driver: its Python API, no mount (as cp and diff)
            from .union import write_view_tar

            write_view_tar(out, view(r["id"]))
            return
        target = self._mount_target(r["id"])
        was_mounted = os.path.ismount(target)
        path = self.mount(r["id"])
        try:
            write_tree_tar(out, path)
        finally:
            if not was_mounted and path == target:
                self.umount(r["id"])

    # ------------------------------------------------------------------ sizes
    def system_df(self) -> dict:
        """Disk use by images and containers, from reference counts: each layer is counted once."""
        layers = {r["chain_id"]: r["size"] for r in self.db.execute("SELECT chain_id, size FROM layers")}
        image_layers: dict[str, list[str]] = {}
        users: dict[str, int] = {}
        for r in self.db.execute("SELECT image_id, chain_id FROM image_layers"):
            image_layers.setdefault(r[0], []).append(r[1])
            users[r[1]] = users.get(r[1], 0) + 1
        containers = self.containers(all=True, size=True)
        active_images = {c["ImageID"] for c in containers}
        in_use = {chain for image in active_images for chain in image_layers.get(image, [])}
        # a build's intermediate states are the "Build Cache" row: their layers that no image
        # uses, all reclaimable; the Images rows are the images `lamina images` lists
        states = self._build_states() - active_images
        visible_layers = {c for image, chains in image_layers.items() if image not in states
                          for c in chains}
        cache_layers = {c for image in states for c in image_layers.get(image, [])} - visible_layers
        cache_size = sum(layers[c] for c in cache_layers)
        images = []
        for img in self.db.execute("SELECT * FROM images ORDER BY added DESC"):
            if img["id"] in states:
                continue
            chains = image_layers.get(img["id"], [])
            shared = sum(layers[c] for c in chains if users[c] > 1)
            tags = self._tags(img["id"])
            images.append({"ID": img["id"], "Repository": tags[0].rpartition(":")[0] if tags else "<none>",
                           "Tag": tags[0].rpartition(":")[2] if tags else "<none>",
                           "CreatedAt": img["created"], "Size": img["size"], "SharedSize": shared,
                           "UniqueSize": img["size"] - shared,
                           "Containers": sum(1 for c in containers if c["ImageID"] == img["id"])})
        image_total = sum(layers[c] for c in visible_layers)
        image_reclaimable = sum(layers[c] for c in visible_layers if c not in in_use)
        container_total = sum(c["SizeRw"] for c in containers)
        container_reclaimable = sum(c["SizeRw"] for c in containers if c["State"] != "running")
        from .volumes import summary

        volume_summary = summary(self)
        return {
            "Images": images,
            "Containers": containers,
            "Volumes": volume_summary.pop("Volumes"),
            "Summary": [
                {"Type": "Images", "TotalCount": len(images), "Active": len(active_images),
                 "Size": image_total, "Reclaimable": image_reclaimable},
                {"Type": "Containers", "TotalCount": len(containers),
                 "Active": sum(1 for c in containers if c["State"] == "running"),
                 "Size": container_total, "Reclaimable": container_reclaimable},
                volume_summary,
                {"Type": "Build Cache", "TotalCount": len(states), "Active": 0,
                 "Size": cache_size, "Reclaimable": cache_size},
            ],
        }

    # ------------------------------------------------------------------ moving images (archive.py, registry.py)
    def add_image(self, config: bytes, layers: list[tuple[str, int, str]], tags=(),
                  manifest: bytes | None = None) -> str:
        """Store an image from exact config bytes and layer blobs already in the content store
        ((digest, size, media type), bottom first); each new layer's diff_id is checked against
        the config. ``manifest`` (exact bytes) is kept as its manifest. Returns the image ID."""
        from .transfer.archive import add_image

        return add_image(self, config, layers, tags, manifest)

    def save(self, names: list[str], output, fmt: str = "docker-archive",
             compression: str | None = None, log=lambda line: None) -> None:
        """Write images to an oci-archive, docker-archive (a path or binary file) or oci-dir."""
        from .transfer.archive import save

        try:
            save(self, names, output, fmt, compression, log)
        finally:
            self.content.release_claims()

    def load(self, source, platform=("linux", "amd64", None), log=lambda line: None) -> list[str]:
        """Load every image of an archive or layout directory; returns Docker's output lines."""
        from .transfer.archive import load

        try:
            return load(self, source, platform, log)
        except BaseException:
            from .claims import abandon

            abandon(self)
            raise
        finally:
            self.content.release_claims()

    def pull(self, reference: str, **options) -> str:
        """Pull an image from a registry (see :func:`lamina.transfer.registry.pull`); returns its ID."""
        from .transfer.registry import pull

        try:
            return pull(self, reference, **options)
        except BaseException:
            from .claims import abandon

            abandon(self)
            raise
        finally:
            self.content.release_claims()

    def push(self, name: str, destination: str | None = None, **options) -> str:
        """Push an image to a registry (see :func:`lamina.transfer.registry.push`); returns the manifest
        digest."""
        from .transfer.registry import push

        return push(self, name, destination, **options)


    # ------------------------------------------------------------------ garbage and consistency
    def prune_containers(self) -> tuple[list[str], int]:
        """Remove stopped containers; returns (ids, bytes reclaimed)."""
        from .gc import prune_containers

        return prune_containers(self)

    def prune_images(self, all: bool = False) -> tuple[list[str], int]:
        """Remove dangling images (``all``: every image no container uses); (lines, bytes)."""
        from .gc import prune_images

        return prune_images(self, all=all)

    def prune_system(self, all: bool = False, volumes: bool = False) -> dict:
        """``system prune``: containers, images and (``volumes``) volumes nothing uses."""
        from .gc import prune_system

        return prune_system(self, all=all, volumes=volumes)

    def check(self, repair: bool = False) -> list:
        """``system check``: inconsistencies in the store, repaired where possible."""
        from .check import check

        return check(self, repair=repair)

    # ------------------------------------------------------------------ running (monitor.py, volumes.py)
    def run(self, image: str, command: list[str] | None = None, *, name: str | None = None,
            entrypoint: list[str] | None = None, config=None, detach: bool = False,
            stdin=None, stdout: int = 1, stderr: int = 2) -> tuple[str, int | None]:
        """``docker run``: create a container and run its process (see :mod:`lamina.runtime.monitor`).

        ``config`` is a :class:`lamina.runtime.RunConfig` (env, workdir, user, volumes,
        read_only, network, auto_remove, runtime, tty). In the foreground the output streams to the
        file descriptors ``stdout``/``stderr`` and the result is (id, exit code); with
        ``detach`` it returns (id, None) once the process runs, under its own monitor."""
        from .runtime.monitor import run

        return run(self, image, command, name=name, entrypoint=entrypoint, config=config,
                   detach=detach, stdin=stdin, stdout=stdout, stderr=stderr)

    def start(self, name: str, attach: bool = False, stdin=None, stdout: int = 1,
              stderr: int = 2) -> tuple[str, int | None]:
        """Start a created or exited container: detached (id, None), or attached (id, exit code)."""
        from .runtime.monitor import start

        return start(self, name, attach=attach, stdin=stdin, stdout=stdout, stderr=stderr)

    def stop(self, name: str, timeout: float = 10) -> str:
        """SIGTERM (the image's StopSignal), SIGKILL after ``timeout`` seconds; returns the ID."""
        from .runtime.monitor import stop

        return stop(self, name, timeout)

    def kill(self, name: str, signal: str | int = "KILL") -> str:
        """Send ``signal`` to the container's process; returns the ID."""
        from .runtime.monitor import kill

        return kill(self, name, signal)

    def wait(self, name: str) -> int:
        """Block until the container's process ends; its exit code."""
        from .runtime.monitor import wait

        return wait(self, name)

    def logs(self, name: str, follow: bool = False, tail: int | None = None,
             timestamps: bool = False, stdout: int = 1, stderr: int = 2) -> None:
        """Write the container's logged output to the file descriptors ``stdout``/``stderr``."""
        from .runtime.monitor import logs

        logs(self, name, follow=follow, tail=tail, timestamps=timestamps, stdout=stdout,
             stderr=stderr)

    def exec(self, name: str, argv: list[str], **options) -> int:
        """Run ``argv`` in a running container (see :func:`lamina.runtime.monitor.exec_process`)."""
        from .runtime.monitor import exec_process

        return exec_process(self, name, argv, **options)

    def volume_create(self, name: str | None = None) -> str:
        from .volumes import create

        return create(self, name)

    def volumes(self) -> list[dict]:
        from .volumes import ls

        return ls(self)

    def volume_inspect(self, name: str) -> dict:
        from .volumes import inspect

        return inspect(self, name)

    def volume_rm(self, name: str, force: bool = False) -> str:
        from .volumes import remove

        return remove(self, name, force=force)

    def volume_prune(self) -> tuple[list[str], int]:
        """Remove every volume no container uses; (names, bytes reclaimed)."""
        from .volumes import prune

        return prune(self)

    # ------------------------------------------------------------------ building (build/)
    def build(self, options, out=print) -> str:
        """Build an image from a Dockerfile (``options``: :class:`lamina.builder.BuildOptions`),
        printing the legacy builder's progress lines through ``out``; returns the image ID."""
        from .builder import build

        try:
            return build(self, options, out)
        finally:
            self.content.release_claims()


class _Tee:
    """Reads from ``source`` and copies every byte read into ``sink`` (the blob being written)."""

    def __init__(self, source, sink):
        self.source = source
        self.sink = sink
        self.head = b""

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        if data:
            if len(self.head) < 8:
                self.head += data[: 8 - len(self.head)]
            self.sink.write(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _owner_alive(pid: int, start: int) -> bool:
    """Whether the process that owns a running container (lamina.runtime.monitor) still exists: its PID
    with the same start time (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return pid > 0 and int(data[data.rindex(b")") + 2:].split()[19]) == start


class _StillRunning(Exception):
    """rm -f found the container still running: its owner is still starting or ending it."""


def _running_refused(cid: str) -> FailedPrecondition:
    return FailedPrecondition(f"You cannot remove a running container {cid}. Stop the container "
                              "before attempting removal or force remove")


def _init_key(top_layer: str | None) -> str:
    """The key of the shared init snapshot on a layer chain."""
    return f"{top_layer or 'scratch'}-init"


def _check_name(name: str) -> None:
    import re

    if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", name) or len(name) > 128:
        raise InvalidArgument(
            f"Invalid container name ({name!r}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


_ADJECTIVES = ("admiring", "bold", "brave", "calm", "clever", "eager", "elastic", "festive", "gifted",
               "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp",
               "stoic", "vibrant", "wizardly", "zealous")
_NAMES = ("babbage", "curie", "darwin", "einstein", "euler", "fermi", "goodall", "hopper", "hypatia",
          "kepler", "lovelace", "meitner", "newton", "noether", "pasteur", "ritchie", "shannon",
          "thompson", "turing", "wozniak")
