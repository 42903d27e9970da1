"""Build caches that travel: ``--cache-to`` and ``--cache-from`` (``type=local`` and
``type=registry``), in BuildKit's cache manifest format.

What is written, as BuildKit writes it with ``image-manifest=true``: an OCI image manifest whose
config has the media type ``application/vnd.buildkit.cacheconfig.v0`` and whose layers are the
gzip layer blobs; in a registry under ``ref``, or in an OCI image layout at ``dest`` (``index.json``
names it ``latest``, or the ``tag=`` given). The cache config is BuildKit's::

    {"layers": [{"blob": "sha256:...", "parent": -1, "annotations": {"diffID": ..., ...}}, ...],
     "records": [{"digest": "sha256:<step key>", "layers": [{"layer": 1}],
                  "inputs": [[{"selector": "", "link": 0}]], "lamina.config": "{...}"}, ...]}

Each record is one step of a lamina build: its digest is lamina's step key (the parent state's
image ID, the instruction's cache text and its sources' digest; see :mod:`.cache`), its result is
the top layer of the state the step made (BuildKit's parent links give the rest of the chain), its
input is the record of the step before. BuildKit's own records are keyed by LLB digests that a
Dockerfile builder of another design cannot compute, so the two builders read each other's
manifests, layers and links but never hit each other's records; ``lamina.config`` (a field
BuildKit ignores) carries the exact config of the state, so that a hit on another machine gives
the same image ID. Both of BuildKit's forms are read: the image manifest and the older index whose
last entry is the cache config.

A hit fetches only the layers of the state that hit and that the store lacks (a cache of many
stages costs nothing for the stages a build does not reach). ``mode=min`` exports the steps of the
final image (its stage and the stages it is built on); ``mode=max`` every step of the build.
A cache that cannot be read is a warning and the build goes on, as with BuildKit.

``type=inline`` (or ``--build-arg BUILDKIT_INLINE_CACHE=1``) writes the records into the built
image's config instead, under BuildKit's key ``moby.buildkit.cache.v0`` (base64 of the records,
each result an index into the image's own layers); ``--cache-from IMAGE`` reads them from an image
in a registry, as ``docker build --cache-from`` does.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

from lamina.errors import InvalidArgument, LaminaError, Unavailable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from lamina.images import ImageStore

__all__ = ["MEDIA_CACHE_CONFIG", "CacheSpec", "RemoteCache", "Step", "export_cache",
           "parse_cache_spec"]

MEDIA_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
INLINE_KEY = "moby.buildkit.cache.v0"  # the image config's field of an inline cache
MEDIA_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


class CacheSpecError(InvalidArgument):
    """A ``--cache-to``/``--cache-from`` that cannot be used."""


@dataclass(frozen=True)
class CacheSpec:
    """One ``--cache-to`` or ``--cache-from``: ``kind`` "local" (``location`` a directory) or
    "registry" (``location`` a reference); ``mode`` min or max; ``tag`` of a local layout."""

    kind: str
    location: str
    mode: str = "min"
    tag: str = "latest"

    def __str__(self) -> str:
        return self.location if self.kind == "registry" else f"{self.kind}:{self.location}"


def parse_cache_spec(text: str, export: bool) -> CacheSpec:
    """``type=local,dest=DIR`` / ``type=local,src=DIR`` / ``type=registry,ref=REF[,mode=...]``,
    or a bare ``REF`` (``type=registry``), as buildx reads them."""
    flag = "--cache-to" if export else "--cache-from"
    if "=" not in text:
        if not text:
            raise CacheSpecError(f"{flag}: empty value")
        return CacheSpec("registry", text)
    if text.replace(" ", "") == "type=inline":
        if not export:
            raise CacheSpecError("--cache-from: type=inline is for --cache-to (read an image's "
                                 "inline cache with --cache-from IMAGE)")
        return CacheSpec("inline", "")
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            raise CacheSpecError(f"{flag}: invalid value {part!r}: expected KEY=VALUE")
        fields[key.strip().lower()] = value.strip()
    kind = fields.pop("type", "registry")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise CacheSpecError(f"{flag}: invalid mode {mode!r}: min or max")
    for ignored in ("oci-mediatypes", "image-manifest", "compression", "compression-level",
                    "force-compression", "ignore-error", "digest"):
        fields.pop(ignored, None)
    if kind == "local":
        keys = ("dest", "src") if export else ("src", "dest")
        location = next((fields.pop(k) for k in keys if fields.get(k)), "")
        tag = fields.pop("tag", "latest") or "latest"
        for k in ("dest", "src"):
            fields.pop(k, None)
        if not location:
            raise CacheSpecError(f"{flag}: type=local needs {'dest' if export else 'src'}=DIR")
        spec = CacheSpec("local", os.path.abspath(location), mode, tag)
    elif kind == "registry":
        location = fields.pop("ref", "")
        if not location:
            raise CacheSpecError(f"{flag}: type=registry needs ref=REF")
        from lamina.reference import parse_reference

        try:
            parse_reference(location)
        except LaminaError as error:
            raise CacheSpecError(f"{flag}: {error}") from None
        spec = CacheSpec("registry", location, mode)
    else:
        raise CacheSpecError(f"{flag}: unsupported cache type {kind!r}: local, registry or "
                             "inline")
    if fields:
        raise CacheSpecError(f"{flag}: unknown option {sorted(fields)[0]!r}")
    return spec


@dataclass(frozen=True)
class Step:
    """A step of a build, as a cache record: the state ``image_id`` it made (``chains``, exact
    ``config``) from ``parent_key``'s state (None: a base image or scratch)."""

    key: str
    parent_key: str | None
    image_id: str
    chains: tuple[str, ...]
    config: bytes


# ---------------------------------------------------------------------------- where blobs live
class _Layout:
    """An OCI image layout directory."""

    def __init__(self, root: str, create: bool) -> None:
        self.root = root
        if create:
            os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", *digest.split(":", 1))

    def has(self, digest: str, images: ImageStore | None = None) -> bool:
        return os.path.exists(self.path(digest))

    def write_stream(self, pieces) -> tuple[str, int]:
        """Write the iterable ``pieces`` as a blob; returns (digest, size)."""
        import hashlib
        import tempfile

        sha = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=os.path.join(self.root, "blobs", "sha256"), prefix=".in-")
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in pieces:
                    sha.update(piece)
                    size += len(piece)
                    f.write(piece)
            digest = "sha256:" + sha.hexdigest()
            os.replace(tmp, self.path(digest))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return digest, size

    def put(self, data: bytes) -> str:
        return self.write_stream([data])[0]

    def read(self, digest: str, limit: int = 64 << 20) -> bytes:
        from lamina.digest import sha256_bytes

        with open(self.path(digest), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit or sha256_bytes(data) != digest:
            raise InvalidArgument(f"{self.root}: blob {digest} is damaged")
        return data

    def set_tag(self, tag: str, manifest: bytes) -> None:
        from lamina.digest import sha256_bytes

        index_path = os.path.join(self.root, "index.json")
        try:
            with open(index_path, "rb") as f:
                index = json.load(f)
        except (OSError, ValueError):
            index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
        entries = [m for m in index.get("manifests") or []
                   if (m.get("annotations") or {}).get(REF_NAME) != tag]
        entries.append({"mediaType": MEDIA_OCI_MANIFEST, "digest": sha256_bytes(manifest),
                        "size": len(manifest), "annotations": {REF_NAME: tag}})
        index["manifests"] = entries
        for name, body in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index).encode())):
            tmp = os.path.join(self.root, f".{name}.tmp")
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, os.path.join(self.root, name))

    def manifest_of(self, tag: str) -> tuple[bytes, str]:
        try:
            with open(os.path.join(self.root, "index.json"), "rb") as f:
                index = json.load(f)
        except (OSError, ValueError) as error:
            raise InvalidArgument(f"{self.root}: not an OCI layout with a cache "
                                  f"({error.__class__.__name__})") from None
        entries = index.get("manifests") or []
        chosen = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == tag] \
            or entries[-1:]
        if not chosen:
            raise InvalidArgument(f"{self.root}: index.json names no manifest")
        digest = chosen[0].get("digest", "")
        return self.read(digest, 4 << 20), chosen[0].get("mediaType") or ""


class _Registry:
    """A repository of a registry, through :class:`lamina.transfer.http.Client`."""

    def __init__(self, reference: str, push: bool) -> None:
        from lamina.reference import parse_reference
        from lamina.transfer import auth
        from lamina.transfer.http import Client

        self.ref = parse_reference(reference)
        self.repo = self.ref.repository
        scopes = [f"repository:{self.repo}:{'pull,push' if push else 'pull'}"]
        self.client = Client(self.ref.api_host, scopes, auth.lookup(self.ref.registry, None))
        self.lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def has(self, digest: str, images: ImageStore | None = None) -> bool:
        """Whether the repository has the blob, or has it now: mounted from another repository
        of the registry that ``images`` knows holds it (a pulled base image's layer)."""
        if self.client.blob_exists(self.repo, digest):
            return True
        if images is None:
            return False
        from lamina.transfer.sources import repositories_of

        for registry, repository in repositories_of(images, digest):
            if registry == self.ref.registry and repository != self.repo:
                try:
                    if self.client.start_upload(self.repo, digest, repository)[1]:
                        return True
                except LaminaError:
                    continue
        return False

    def put(self, data: bytes) -> str:
        from lamina.digest import sha256_bytes

        digest = sha256_bytes(data)
        if not self.has(digest):
            self.client.upload_stream(self.repo, lambda: _Pieces([data]), lambda n: None)
        return digest

    def read(self, digest: str, limit: int = 64 << 20) -> bytes:
        from lamina.digest import sha256_bytes

        resp = self.client.send("GET", f"/v2/{self.repo}/blobs/{digest}", stream=True)
        try:
            if resp.status_code != 200:
                from lamina.transfer.http import registry_error

                raise registry_error(resp, f"blob {digest}")
            data = resp.read()
        finally:
            resp.close()
        if len(data) > limit or sha256_bytes(data) != digest:
            raise InvalidArgument(f"blob {digest} of {self.ref} is damaged")
        return data


class _Pieces:
    """An iterable of bytes with ``digest`` and ``size`` once exhausted (what
    :meth:`Client.upload_stream` takes)."""

    def __init__(self, pieces) -> None:
        self.pieces = pieces
        self.digest = None
        self.size = 0

    def __iter__(self):
        import hashlib

        sha = hashlib.sha256()
        for piece in self.pieces:
            sha.update(piece)
            self.size += len(piece)
            yield piece
        self.digest = "sha256:" + sha.hexdigest()


# ---------------------------------------------------------------------------- export
def select_steps(steps: dict[str, Step], final_image: str, mode: str) -> list[Step]:
    """The steps to export, parents before children: every step (``max``), or those on the
    way to ``final_image`` (``min``)."""
    if mode == "max":
        chosen = dict(steps)
    else:
        by_image = {s.image_id: s for s in steps.values()}
        chosen = {}
        step = by_image.get(final_image)
        while step is not None and step.key not in chosen:
            chosen[step.key] = step
            step = steps.get(step.parent_key) if step.parent_key else None
    ordered: list[Step] = []
    placed: set[str] = set()

    def place(step: Step) -> None:
        if step.key in placed:
            return
        placed.add(step.key)
        if step.parent_key in chosen:
            place(chosen[step.parent_key])
        ordered.append(step)

    for step in chosen.values():
        place(step)
    return ordered


def records_of(chosen: list[Step], layer_of) -> list[dict]:
    """BuildKit's records of ``chosen`` (parents first): ``layer_of(step)`` is the index of the
    layer of the step's result, or None."""
    index = {step.key: i for i, step in enumerate(chosen)}
    records = []
    for step in chosen:
        record: dict = {"digest": "sha256:" + step.key}
        layer = layer_of(step)
        if layer is not None:
            record["layers"] = [{"layer": layer}]
        if step.parent_key in index:
            record["inputs"] = [[{"selector": "", "link": index[step.parent_key]}]]
        record["lamina.config"] = step.config.decode("utf-8")
        records.append(record)
    return records


def with_inline_cache(config: bytes, steps: dict[str, Step], final_image: str) -> bytes:
    """The image config ``config`` with the records of the steps that made it (``mode=min``)
    inline, as BuildKit writes them: results index the image's own layers."""
    import base64

    from lamina.image import dumps

    chosen = select_steps(steps, final_image, "min")
    records = records_of(chosen, lambda step: len(step.chains) - 1 if step.chains else None)
    doc = json.loads(config)
    doc[INLINE_KEY] = base64.b64encode(dumps(records)).decode()
    return dumps(doc)


def export_cache(images: ImageStore, spec: CacheSpec, steps: dict[str, Step],
                 final_image: str, report=lambda line: None) -> str:
    """Write the cache of ``steps`` to ``spec``; returns the digest of its manifest."""
    try:
        return _export(images, spec, steps, final_image, report)
    except OSError as error:  # a directory that cannot be written, a full disk
        raise Unavailable(f"failed to export cache to {spec}: {error.strerror or error}") \
            from None


def _export(images: ImageStore, spec: CacheSpec, steps: dict[str, Step], final_image: str,
            report) -> str:
    from lamina.digest import sha256_bytes
    from lamina.image import dumps

    chosen = select_steps(steps, final_image, spec.mode)
    target = _Layout(spec.location, create=True) if spec.kind == "local" else \
        _Registry(spec.location, push=True)
    try:
        chains: list[str] = []
        for step in chosen:
            for chain in step.chains:
                if chain not in chains:
                    chains.append(chain)
        layer_index = {chain: i for i, chain in enumerate(chains)}
        descriptors = []
        layers = []
        for chain in chains:
            digest, size, diff_id = _put_layer(images, target, chain, report)
            descriptors.append({"mediaType": MEDIA_GZIP_LAYER, "digest": digest, "size": size,
                                "annotations": {"containerd.io/uncompressed": diff_id}})
            row = images.layers.get(chain)
            parent = layer_index.get(row["parent"]) if row["parent"] else None
            layers.append({"blob": digest, "parent": -1 if parent is None else parent,
                           "annotations": {"mediaType": MEDIA_GZIP_LAYER, "diffID": diff_id,
                                           "size": size}})
        records = records_of(chosen, lambda step: layer_index[step.chains[-1]]
                             if step.chains else None)
        config = dumps({"layers": layers, "records": records})
        config_digest = target.put(config)
        manifest = dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                          "config": {"mediaType": MEDIA_CACHE_CONFIG, "digest": config_digest,
                                     "size": len(config)},
                          "layers": descriptors})
        if isinstance(target, _Layout):
            target.put(manifest)
            target.set_tag(spec.tag, manifest)
        else:
            target.client.put_manifest(target.repo, target.ref.digest or target.ref.tag or
                                       "latest", manifest, MEDIA_OCI_MANIFEST)
        report(f"writing manifest {sha256_bytes(manifest)} done")
        return sha256_bytes(manifest)
    finally:
        if isinstance(target, _Registry):
            target.close()


def _put_layer(images: ImageStore, target, chain: str, report) -> tuple[str, int, str]:
    """Layer ``chain`` as a gzip blob in ``target`` (made once per store: the compressed
    form's digest is remembered, and a target that has it is not sent it again)."""
    from lamina.compression import of_media_type
    from lamina.transfer.recompress import Recompressed
    from lamina.transfer.sources import compressed_form, remember_compressed

    row = images.layers.get(chain)
    blob, media, diff_id = row["blob_digest"], row["media_type"] or "", row["diff_id"]
    content = images.store.content
    if of_media_type(media) == "gzip" and content.exists(blob):
        known = (blob, int(row["blob_size"]))
    else:
        known = compressed_form(images, blob, "gzip")
    if of_media_type(media) == "gzip" and target.has(blob, images):  # pulled: as it came
        return blob, int(row["blob_size"]), diff_id
    if known is not None and target.has(known[0], images):
        report(f"layer {known[0]} exists")
        return known[0], int(known[1]), diff_id

    def make():
        if known is not None and known[0] == blob:  # a gzip blob the store keeps: copied
            return _Pieces(_file_pieces(content.path(blob)))
        return Recompressed(images, blob, "gzip", chain)

    if isinstance(target, _Layout):
        digest, size = target.write_stream(make())
    else:
        made = target.client.upload_stream(target.repo, make, lambda n: None)
        digest, size = made.digest, made.size
    if known is None:
        remember_compressed(images, [(blob, "gzip", digest, size)])
    report(f"writing layer {digest} done")
    return digest, size, diff_id


def _file_pieces(path: str):
    with open(path, "rb") as f:
        while True:
            data = f.read(1 << 20)
            if not data:
                return
            yield data


# ---------------------------------------------------------------------------- import
@dataclass(frozen=True)
class _Record:
    config: bytes
    layers: tuple[tuple[str, int, str], ...]  # (blob digest, size, media type), bottom first


class RemoteCache:
    """The records of one ``--cache-from``, read once; :meth:`materialize` stores a hit's state
    (only the layers the store lacks are fetched)."""

    def __init__(self, spec: CacheSpec) -> None:
        self.spec = spec
        self.source = _Layout(spec.location, create=False) if spec.kind == "local" else \
            _Registry(spec.location, push=False)
        self.records: dict[str, _Record] = {}
        self.lock = threading.Lock()
        self.fetched: list[str] = []  # blob digests this cache fetched, in order

    def close(self) -> None:
        if isinstance(self.source, _Registry):
            self.source.close()

    def load(self) -> int:
        """Read the manifest and the cache config; returns the number of records."""
        manifest, _media = self._manifest()
        doc = json.loads(manifest)
        config_desc = doc.get("config") or {}
        if config_desc.get("mediaType") == MEDIA_CACHE_CONFIG:  # image-manifest form
            descriptors = doc.get("layers") or []
        elif "manifests" in doc:  # the index form: the cache config is an entry among the layers
            entries = doc.get("manifests") or []
            found = [e for e in entries if e.get("mediaType") == MEDIA_CACHE_CONFIG]
            if not found:
                raise InvalidArgument(f"{self.spec} is not a build cache (no "
                                      f"{MEDIA_CACHE_CONFIG})")
            config_desc = found[-1]
            descriptors = [e for e in entries if e is not config_desc]
        else:  # an image: the cache inline in its config, if it has one
            return self._load_inline(doc)
        sizes = {d.get("digest"): (int(d.get("size") or 0), d.get("mediaType") or "")
                 for d in descriptors}
        config = json.loads(self.source.read(config_desc.get("digest", "")))
        return self._add_records(config.get("layers") or [], config.get("records") or [], sizes)

    def _load_inline(self, manifest: dict) -> int:
        import base64

        descriptors = manifest.get("layers") or []
        image_config = json.loads(self.source.read((manifest.get("config") or {}).get(
            "digest", ""), 16 << 20))
        inline = image_config.get(INLINE_KEY)
        if not isinstance(inline, str):
            raise InvalidArgument(f"{self.spec}: the image has no inline build cache (build it "
                                  "with --cache-to type=inline)")
        records = json.loads(base64.b64decode(inline))
        layers = [{"blob": d.get("digest", ""), "parent": i - 1}
                  for i, d in enumerate(descriptors)]
        sizes = {d.get("digest"): (int(d.get("size") or 0), d.get("mediaType") or "")
                 for d in descriptors}
        return self._add_records(layers, records if isinstance(records, list) else [], sizes)

    def _add_records(self, layers: list, records: list, sizes: dict) -> int:
        for record in records:
            if not isinstance(record, dict):
                continue
            text = record.get("lamina.config")
            key = (record.get("digest") or "").partition(":")[2]
            if not isinstance(text, str) or not key:
                continue  # a record of another builder
            chain: list[tuple[str, int, str]] = []
            results = record.get("layers") or []
            index = results[0].get("layer") if results else None
            while isinstance(index, int) and 0 <= index < len(layers) and \
                    len(chain) <= len(layers):  # a parent loop ends here
                blob = layers[index].get("blob", "")
                size, media = sizes.get(blob, (0, ""))
                chain.append((blob, size, media or MEDIA_GZIP_LAYER))
                index = layers[index].get("parent", 0)  # BuildKit omits a parent of 0
            self.records[key] = _Record(text.encode("utf-8"), tuple(reversed(chain)))
        return len(self.records)

    def _manifest(self) -> tuple[bytes, str]:
        if isinstance(self.source, _Layout):
            return self.source.manifest_of(self.spec.tag)
        from lamina.transfer.formats import INDEX_TYPES

        ref = self.source.ref
        client, repo = self.source.client, self.source.repo
        manifest, media, _ = client.get_manifest(repo, ref.digest or ref.tag or "latest")
        if media in INDEX_TYPES:
            doc = json.loads(manifest)
            entries = doc.get("manifests") or []
            if not any(e.get("mediaType") == MEDIA_CACHE_CONFIG for e in entries):
                # an image index: its linux/amd64 image, whose config may hold a cache
                from lamina.transfer.formats import platform_matches

                chosen = [e for e in entries if platform_matches(e, ("linux", "amd64", None))]
                if not chosen:
                    raise InvalidArgument(f"{self.spec}: no linux/amd64 image in its index")
                manifest, media, _ = client.get_manifest(repo, chosen[0].get("digest", ""))
        return manifest, media

    def materialize(self, images: ImageStore, key: str) -> str | None:
        """Store the state step ``key`` made, if this cache has it: its missing layers are
        fetched and extracted, its exact config stored; returns the image ID, or None."""
        record = self.records.get(key)
        if record is None:
            return None
        from lamina.digest import chain_ids, sha256_bytes
        from lamina.transfer.blobs import BlobSink, drop_unused
        from lamina.transfer.unpack import add_image

        image_id = sha256_bytes(record.config)
        if images.row(image_id) is not None:
            return image_id
        try:
            diff_ids = json.loads(record.config)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            return None
        if len(diff_ids) != len(record.layers):
            return None
        chains = chain_ids(diff_ids)
        sink = BlobSink(images)
        with self.lock:
            try:
                for chain, (blob, size, _media) in zip(chains, record.layers):
                    if images.layers.exists(chain) or images.store.content.exists(blob):
                        continue
                    self._fetch(images, sink, blob, size)
                return add_image(images, record.config, list(record.layers))
            finally:
                drop_unused(images, sink.created)

    def _fetch(self, images: ImageStore, sink, blob: str, size: int) -> None:
        self.fetched.append(blob)
        if isinstance(self.source, _Layout):
            with open(self.source.path(blob), "rb") as f:
                sink.put_stream(f.read, expected=blob)
            return
        content = images.store.content
        if self.source.client.fetch_blob(self.source.repo, blob, size, content,
                                         lambda n: None, threading.Event()):
            sink.created.add(blob)
