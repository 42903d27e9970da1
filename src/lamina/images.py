"""Images: records, tags, configs and history, kept as an OCI image layout.

    >>> images = ImageStore(store, LayerStore(store))
    >>> image_id = images.import_tar("rootfs.tar", "busybox:latest")
    >>> images.resolve("busybox")            # a name, a tag, an ID or an unambiguous ID prefix
    >>> images.inspect("busybox")["RootFS"]

An image is a config blob (its ID is the config's digest), a manifest blob, a row in ``images``
and its layer chain in ``image_layers``. Tags are rows in ``tags`` and entries of
``index.json``. Removing an image removes every layer and blob nothing else uses.
"""

from __future__ import annotations

import os
import time

from .errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from .events import emit
from .fsutil import Readable
from .image import command_line
from .layers import init_key
from .metadata import prefix_bounds

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .layers import LayerStore
    from .store import Store


class ImageStore:
    """The images, tags and image layers of one store."""

    def __init__(self, store: Store, layers: LayerStore):
        self.store = store
        self.db = store.db
        self.layers = layers
        self._shared_configs: dict[str, dict] = {}

    def resolve(self, name: str) -> str:
        for tag in (name, name + ":latest"):  # the common case, without parsing the reference
            row = self.db.execute("SELECT image_id FROM tags WHERE name = ?", (tag,)).fetchone()
            if row:
                return row[0]
        from .image import normalize

        if name.startswith("sha256:") and len(name) == 71 and \
                self.db.execute("SELECT 1 FROM images WHERE id = ?", (name,)).fetchone():
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
            low, high = prefix_bounds("sha256:" + prefix)
            rows = self.db.execute("SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2",
                                   (low, high)).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise InvalidArgument(f"image ID prefix {name} is ambiguous")
        raise NotFound(f"No such image: {name}")


    def row(self, image_id: str):
        return self.db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()

    def by_digest(self, digest: str) -> str | None:
        """The ID of the image whose config or manifest has ``digest`` (``NAME@DIGEST``)."""
        row = self.db.execute("SELECT id FROM images WHERE id = ? OR manifest_digest = ?",
                              (digest, digest)).fetchone()
        return row[0] if row else None

    def config(self, image_id: str) -> dict:
        from . import cjson

        try:
            return cjson.loads(self.store.content.read(image_id))
        except NotFound:
            if self.row(image_id) is None:  # removed by another process meanwhile
                raise NotFound(f"No such image: {image_id}") from None
            raise

    def shared_config(self, image_id: str) -> dict:
        """The image's config as :meth:`config` reads it, parsed once for this store object and
        shared between callers, who must not change it: a server reads it for every ``docker
        images`` and ``inspect``, and a config never changes (the image ID is its digest)."""
        found = self._shared_configs.get(image_id)
        if found is None:
            found = self.config(image_id)
            if len(self._shared_configs) >= 1024:
                self._shared_configs.clear()
            self._shared_configs[image_id] = found
        return found

    def layer_rows(self, image_id: str) -> list:
        return self.db.execute(
            "SELECT l.* FROM image_layers il JOIN layers l ON l.chain_id = il.chain_id"
            " WHERE il.image_id = ? ORDER BY il.position", (image_id,)).fetchall()

    def tags(self, image_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY added, name", (image_id,))]


    def add(self, config: bytes, chains: list[str], tag: str | None,
                     manifest: bytes | None = None) -> str:
        """Inside a transaction: write config + manifest blobs and the image row; tag it.
        ``manifest`` (exact bytes, e.g. as pulled) replaces the OCI manifest made here."""
        from . import cjson
        from .image import MEDIA_LAYER, make_manifest

        content = self.store.content
        config_digest = content.put(config)
        descriptors = []
        for chain in chains:
            layer = self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()
            if layer is None:  # its image was removed by another process while this one worked
                raise NotFound(f"No such image: layer {chain} was removed meanwhile")
            descriptors.append({"mediaType": layer["media_type"] or MEDIA_LAYER,
                                "digest": layer["blob_digest"], "size": layer["blob_size"]})
        if not self.row(config_digest):  # an image already here keeps its manifest (no blob)
            if manifest is None:
                manifest = make_manifest(config_digest, len(config), descriptors)
            manifest_digest = content.put(manifest)
            size = sum(self.db.execute("SELECT size FROM layers WHERE chain_id = ?",
                                       (c,)).fetchone()[0] for c in chains)
            doc = cjson.loads(config)
            run = doc.get("config") or {}
            command = (run.get("Entrypoint") or []) + (run.get("Cmd") or [])
            self.db.execute(
                "INSERT INTO images(id, manifest_digest, manifest_size, config_size, top_layer,"
                " created, size, command, command_line, added) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (config_digest, manifest_digest, len(manifest), len(config),
                 chains[-1] if chains else None, doc.get("created", ""), size, cjson.dumps(command),
                 command_line(command), time.time()))
            self.db.executemany("INSERT INTO image_layers VALUES (?,?,?)",
                                [(config_digest, i, c) for i, c in enumerate(chains)])
        if tag:
            self.set_tag(tag, config_digest)
        return config_digest

    def emit(self, action: str, image_id: str, name: str | None = None,
             actor: str | None = None) -> None:
        """Record an image event in the journal (:mod:`lamina.events`) once it happened: the
        actor is the image ID (``actor``: a pull's or push's reference), its attributes the
        image's labels and ``name`` (the image ID unless given), as Docker's."""
        attributes = {}
        if action != "delete":  # a deleted image's config may be gone
            try:
                attributes.update((self.config(image_id).get("config") or {}).get("Labels") or {})
            except (LaminaError, ValueError, AttributeError):
                pass
        attributes["name"] = name or image_id
        emit(self.store, "image", action, actor or image_id, attributes)

    def set_tag(self, tag: str, image_id: str) -> None:
        if self.row(image_id) is None:  # looked up before the transaction, gone since
            raise NotFound(f"No such image: {image_id}")
        self.db.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?)", (tag, image_id, time.time()))
        self.store.write_index()


    def import_tar(self, source, reference: str | None = None, message: str = "") -> str:
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
                f, label = open(source, "rb"), os.fspath(source)  # noqa: SIM115 (closed below)
            except OSError as e:
                raise NotFound(f"cannot open {source}: {e.strerror}") from None
        else:
            f, label = source, "-"
        try:
            import stat

            seekable = f is not sys.stdin.buffer and stat.S_ISREG(os.fstat(f.fileno()).st_mode)
        except (OSError, AttributeError, ValueError):  # a file object without a descriptor
            seekable = False
        writer = None
        try:
            # the layer is kept unpacked with its tar-split record, not as a tar; only a tar
            # the snapshot cannot give back (a path written twice) is kept as a blob, read
            # again from the file, or from the copy a pipe's bytes were written to meanwhile
            stream = open_layer_stream(f)
            if not seekable:
                writer = self.store.content.writer()
                stream = _Tee(stream, writer)
            key, layer = self.layers.add(None, stream)
            try:
                blob = (layer["diff_id"], layer["tar_size"], MEDIA_LAYER)
                if layer["record"] is None:
                    if writer is None:
                        f.seek(0)
                        writer = self.store.content.writer()
                        _Tee(open_layer_stream(f), writer).drain()
                    else:
                        stream.drain()
                    blob = (*writer.commit(layer["diff_id"]), MEDIA_LAYER)
                now = rfc3339()
                config = make_config([layer["diff_id"]], [{
                    "created": now, "created_by": "lamina import " + label,
                    "comment": message or f"Imported from {label}"}], created=now)
                with self.store.tx():
                    self.layers.commit(key, layer, blob)
                    image_id = self.add(config, [layer["chain_id"]], tag)
                if tag:
                    self.emit("tag", image_id, tag)
                self.emit("import", image_id)
                return image_id
            except BaseException:
                if self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                    with self.store.tx():
                        self.store.snaps.remove(key)
                raise
        except BaseException:  # what it wrote goes again (lamina.claims)
            from .claims import abandon

            abandon(self.store)
            raise
        finally:
            if writer is not None:
                writer.abort()  # nothing if it was committed
            self.store.content.release_claims()
            if f is not source and label != "-":
                f.close()

    def list(self, all: bool = False) -> list[dict]:
        """One row per tag (and one for each untagged image), newest first, as ``docker images``."""
        out = []
        rows = self.db.execute("SELECT id, created, size FROM images ORDER BY added DESC").fetchall()
        hidden = set() if all else self.build_states()
        tagged: dict[str, list[str]] = {}  # one query for every tag, not one per image
        for image_id, name in self.db.execute("SELECT image_id, name FROM tags ORDER BY added, name"):
            tagged.setdefault(image_id, []).append(name)
        for img in rows:
            tags = tagged.get(img["id"])
            if not tags and img["id"] in hidden:
                continue
            for name in tags or ["<none>:<none>"]:
                repo, _, tag = name.rpartition(":")
                out.append({"Repository": repo, "Tag": tag, "ID": img["id"],
                            "CreatedAt": img["created"], "Size": img["size"]})
        return out

    def rows(self) -> list:
        """Every image's row, newest first."""
        return self.db.execute("SELECT * FROM images ORDER BY added DESC").fetchall()

    def all_layer_links(self) -> list:
        """(image ID, chain ID) of every image's every layer."""
        return self.db.execute("SELECT image_id, chain_id FROM image_layers").fetchall()

    def unused(self, dangling_only: bool = True) -> list[str]:
        """IDs of the images no container uses (``dangling_only``: and without a tag), newest
        first."""
        return [r[0] for r in self.db.execute(
            "SELECT i.id FROM images i WHERE NOT EXISTS"
            " (SELECT 1 FROM containers c WHERE c.image_id = i.id)"
            + (" AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.image_id = i.id)"
               if dangling_only else "") + " ORDER BY i.added DESC")]

    def build_states(self) -> set[str]:
        """IDs of a build's intermediate states (hidden from ``images``, counted as build cache),
        unless some build ended on them or they carry a tag."""
        return {r[0] for r in self.db.execute(
            "SELECT c.image_id FROM build_cache c JOIN images i ON i.id = c.image_id"
            " EXCEPT SELECT image_id FROM build_results EXCEPT SELECT image_id FROM tags")}

    def inspect(self, name: str) -> dict:
        """Docker-shaped ``image inspect`` document."""
        image_id = self.resolve(name)
        img = self.row(image_id)
        cfg = self.config(image_id)
        top = img["top_layer"]
        data = {}
        if top:
            data = {"Dir": self.store.snaps.dir(top)}
        return {
            "Id": image_id,
            "RepoTags": self.tags(image_id),
            "RepoDigests": self.repo_digests(img["manifest_digest"]),
            "Parent": "",
            "Comment": (cfg.get("history") or [{}])[-1].get("comment", ""),
            "Created": cfg.get("created", ""),
            "Author": cfg.get("author", ""),
            "Config": cfg.get("config", {}),
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""),
            "Size": img["size"],
            "VirtualSize": img["size"],
            "GraphDriver": {"Name": self.store.driver, "Data": data},
            "RootFS": {"Type": "layers", "Layers": cfg.get("rootfs", {}).get("diff_ids", [])},
            "Metadata": {"LastTagTime": ""},
            "Descriptor": {"mediaType": self.manifest_media_type(img["manifest_digest"]),
                           "digest": img["manifest_digest"], "size": img["manifest_size"]},
        }

    def repo_digests(self, manifest_digest: str) -> list[str]:
        """``NAME@DIGEST`` for each registry repository this manifest was pulled from or pushed
        to (:mod:`lamina.transfer.sources` records them in ``blob_sources``)."""
        from .reference import Reference

        rows = self.db.execute(  # pushed_manifests: pushes that recompressed its layers
            "SELECT registry, repository, ? FROM blob_sources WHERE digest = ? UNION"
            " SELECT registry, repository, digest FROM pushed_manifests WHERE source = ?"
            " ORDER BY 1, 2, 3", (manifest_digest,) * 3).fetchall()
        return [f"{Reference(r[0], r[1], None, None).name}@{r[2]}" for r in rows]

    def manifest_media_type(self, manifest_digest: str) -> str:
        """The media type the manifest's exact bytes declare (OCI when they name none)."""
        from . import cjson

        try:
            doc = cjson.loads(self.store.content.read(manifest_digest))
        except (LaminaError, ValueError):
            doc = {}
        media = doc.get("mediaType") if isinstance(doc, dict) else None
        return media if isinstance(media, str) and media else \
            "application/vnd.oci.image.manifest.v1+json"

    def history(self, name: str) -> list[dict]:
        """One row per history entry, newest first; empty_layer entries have size 0."""
        image_id = self.resolve(name)
        cfg = self.config(image_id)
        layers = self.layer_rows(image_id)
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

        image_id = self.resolve(source)
        tag = normalize(target)
        with self.store.tx():
            self.set_tag(tag, image_id)
        self.emit("tag", image_id, tag)

    def remove(self, names: list[str], force: bool = False) -> list[str]:
        """Remove images (or just the named tag when the image has others); returns Docker's
        ``Untagged:`` / ``Deleted:`` lines. Layers shared with other images stay."""
        out: list[str] = []
        for name in names:
            image_id = self.resolve(name)
            with self.store.tx():
                untagged = self._remove_one(name, image_id, force, out)
            for _ in untagged:  # committed: the events (Docker names the ID in untag's)
                self.emit("untag", image_id)
        return out

    def _remove_one(self, name: str, image_id: str, force: bool, out: list[str]) -> list[str]:
        """Inside a transaction: :meth:`remove` of one name. Returns the tags it took off an
        image that stays (:meth:`delete` records the events of an image it deletes)."""
        from .image import normalize

        if self.row(image_id) is None:  # removed by another process meanwhile
            raise NotFound(f"No such image: {name}")
        tags = self.tags(image_id)
        try:
            by_tag = normalize(name) in tags
        except InvalidArgument:
            by_tag = False
        users = self.db.execute("SELECT id FROM containers WHERE image_id = ?",
                                (image_id,)).fetchall()
        if by_tag and (len(tags) > 1 or (users and force)):
            self.db.execute("DELETE FROM tags WHERE name = ?", (normalize(name),))
            out.append(f"Untagged: {normalize(name)}")
            self.store.write_index()
            return [normalize(name)]
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
            self.store.write_index()
            return tags
        for t in tags:
            out.append(f"Untagged: {t}")
        out.extend(self.delete(image_id))
        return []

    def delete(self, image_id: str, reclaimed: list | None = None) -> list[str]:
        """Inside a transaction: drop the image and every layer and blob nothing else uses.
        The sizes of the layers deleted are appended to ``reclaimed``."""
        img = self.row(image_id)
        chains = [r["chain_id"] for r in self.layer_rows(image_id)]
        for _ in self.tags(image_id):  # the events before the rows go (the labels are read);
            self.emit("untag", image_id)  # in the transaction: only a failing commit undoes them
        self.db.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM image_layers WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self.store.write_index()
        self.emit("delete", image_id)
        out = [f"Deleted: {image_id}"]
        blobs = [image_id, img["manifest_digest"]]
        for chain in reversed(chains):
            used = self.db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1",
                                   (chain,)).fetchone()
            init = init_key(chain)
            if not used and self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init,)).fetchone() \
                    and not self.db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                                            (init,)).fetchone():
                self.store.snaps.remove(init)
            child = self.db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                                    (chain,)).fetchone()
            from .leases import leased

            if used or child or leased(self.db, chain):  # leased: a build is about to use it
                break
            layer = self.db.execute("SELECT * FROM layers WHERE chain_id = ?", (chain,)).fetchone()
            self.db.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
            self.store.snaps.remove(chain)
            blobs.append(layer["blob_digest"])
            out.append(f"Deleted: {chain}")
            if reclaimed is not None:
                reclaimed.append(layer["size"])
        try:  # the blobs the manifest lists (a pulled layer's compressed blob, say)
            from . import cjson

            listed = cjson.loads(self.store.content.read(img["manifest_digest"])).get("layers") or []
            blobs += [d["digest"] for d in listed if isinstance(d, dict) and "digest" in d]
        except (LaminaError, ValueError):
            pass
        self._forget_kept(blobs)
        from .claims import referenced_blobs

        used = referenced_blobs(self.store)
        for digest in dict.fromkeys(blobs):
            if digest not in used:  # deleted once the transaction commits, like snapshot data
                self.db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                                (self.store.content.path(digest), os.getpid()))
                self.store.snaps.pending = True
        return out


    def _forget_kept(self, digests: list[str]) -> None:
        """Inside a transaction: the pull cache's blobs among ``digests`` (those of an image
        being deleted) that no other image's manifest lists are kept no more."""
        kept = {r[0] for d in digests for r in self.db.execute(
            "SELECT digest FROM kept_blobs WHERE digest = ?", (d,))}
        if not kept:
            return
        from . import cjson

        for (manifest,) in self.db.execute("SELECT manifest_digest FROM images").fetchall():
            try:
                listed = cjson.loads(self.store.content.read(manifest)).get("layers") or []
            except (LaminaError, ValueError):
                continue
            kept -= {d.get("digest") for d in listed if isinstance(d, dict)}
        self.db.executemany("DELETE FROM kept_blobs WHERE digest = ?", [(d,) for d in kept])


class _Tee(Readable):
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
