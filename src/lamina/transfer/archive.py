"""Images in and out of files: OCI archives, Docker archives, OCI and Docker directories.

``save`` writes one of three forms, several images and tags in one go:

* ``oci-archive``: a tar of an OCI image layout (``oci-layout``, ``index.json`` with one
  descriptor per tag, annotated ``org.opencontainers.image.ref.name``, and ``blobs/sha256/*``);
* ``oci-dir``: the same layout as a directory;
* ``docker-archive``: what ``docker save`` writes (``manifest.json``, ``repositories``, the
  config as ``<hex>.json`` and each layer as ``<hex>.tar``).

Layers go out as stored (their manifest bytes untouched) unless a compression is asked for, in
which case they are recompressed with :mod:`lamina.compression` (stable output) and the manifest is
made anew. ``load`` reads all of these plus Podman's ``docker-dir`` and compressed archives, from a
file, a directory or a pipe: every member is streamed once into the blob store (named by its
verified digest), the images are assembled from there with :func:`add_image`, and every blob the
load created that no image ended up using is removed again, on success and on failure.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
import time

from ..digest import chain_ids, hex_of, is_digest, sha256_bytes
from ..errors import InvalidArgument, LaminaError, NotFound
from ..faults import point
from ..metadata import Transaction

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

FORMATS = ("oci-archive", "docker-archive", "oci-dir")
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
_SMALL = 16 << 20  # cap on JSON documents (manifests, configs, indexes) held in memory
CHUNK = 1 << 20


# ----------------------------------------------------------------------------- storing images


def add_image(image_store: ImageStore, config: bytes, layers: list[tuple[str, int, str]], tags=(),
              manifest: bytes | None = None, ready=None) -> str:
    """Store an image from its exact config bytes and its layer blobs, which must be in the
    content store already: ``layers`` are (digest, size, media type), bottom first.

    A layer whose chain is stored already is reused; every other one is extracted into a new
    snapshot and its diff_id checked against the config's ``rootfs.diff_ids``. ``manifest`` (exact
    bytes) becomes the image's manifest (an OCI one is made when it is None). ``ready(i, follow)``,
    if given, is called before layer ``i`` is used: with ``follow`` False (the layer is stored
    already) it returns once the blob is stored; with ``follow`` True (the layer is to be
    extracted) it may return a reader of the blob as it arrives, whose end raises if the blob
    turned out bad and which may offer ``failure()``, the download's own error (a pull extracts
    while it downloads). On any error the layers this call added are removed again. Returns the
    image ID (the config digest).
    """
    try:
        doc = json.loads(config)
        diff_ids = list(doc["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("image config is not valid JSON with rootfs.diff_ids") from None
    if not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        raise InvalidArgument("image config has a malformed diff_id")
    if len(diff_ids) != len(layers):
        raise InvalidArgument(f"image config lists {len(diff_ids)} layers, its manifest "
                              f"{len(layers)}")
    image_id = sha256_bytes(config)
    chains = chain_ids(diff_ids)
    db = image_store.db
    added: list[str] = []
    try:
        if getattr(image_store.store.snaps, "independent_diffs", False):
            _add_layers_at_once(image_store, layers, diff_ids, chains, ready, added)
        else:
            _add_layers_in_order(image_store, layers, diff_ids, chains, ready, added)
        with Transaction(db):
            if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                image_store.add(config, chains, None, manifest)
            else:
                image_store.store.content.put(config)
            for tag in tags:
                image_store.set_tag(tag, image_id)
        return image_id
    except BaseException:
        _drop_layers(image_store, list(reversed(added)))
        raise


def _add_layers_in_order(image_store: ImageStore, layers, diff_ids, chains, ready, added: list[str]) -> None:
    """Extract each missing layer on its parent, bottom first (drivers whose layer trees hold
    their parents' files: vfs, overlay)."""
    from ..layertar import is_plain, open_layer_stream

    db = image_store.db
    parent = None
    for i, (digest, size, media_type) in enumerate(layers):
        chain = chains[i]
        stored = db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone()
        arriving = ready(i, not stored) if ready is not None else None
        if not stored:
            with arriving or image_store.store.content.open(digest) as blob:
                try:
                    stream = open_layer_stream(blob)  # a plain layer's diff_id: its digest
                    key, layer = image_store.layers.add(parent, stream,
                                                   digest=digest if is_plain(stream) else None)
                except Exception:
                    _raise_failure(blob)  # a bad download explains a bad tar best
                    raise
                try:
                    while blob.read(CHUNK):  # the digest check happens at the blob's end
                        pass
                    _check_diff_id(digest, layer["diff_id"], diff_ids[i])
                    with Transaction(db):
                        image_store.layers.commit(key, layer, (digest, size, media_type))
                except BaseException as error:
                    if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                        with Transaction(db):
                            image_store.store.snaps.remove(key)
                    _purge(image_store)
                    if isinstance(error, Exception):
                        _raise_failure(blob)
                    raise
            added.append(chain)
        parent = chain


EXTRACTORS = 4  # layers of one image extracted at once (each also has a reading thread)


def _add_layers_at_once(image_store: ImageStore, layers, diff_ids, chains, ready, added: list[str]) -> None:
    """Extract every missing layer at once, each into a snapshot of its own with no parent, then
    stack them bottom first (:meth:`DiffDirs.rebase`) and commit each after checking its diff_id.
    The threads only write files; the database is used by this thread alone."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    db = image_store.db
    todo = [i for i, chain in enumerate(chains)
            if db.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain,)).fetchone() is None]
    cancel = threading.Event()
    keys: dict[int, str] = {}
    jobs: dict = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(len(todo), EXTRACTORS)),
                              thread_name_prefix="extract")
    try:
        for i in todo:
            key = keys[i] = image_store.layers.stage(None)
            blob = ready(i, True) if ready is not None else None
            blob = blob or image_store.store.content.open(layers[i][0])
            fmt = "plain" if i == 0 else image_store.store.snaps.fmt  # the bottom layer's whiteouts hide nothing
            jobs[i] = pool.submit(_extract, blob, layers[i][0], image_store.store.snaps.dir(key), fmt, cancel)
        parent = None
        for i, (digest, size, media_type) in enumerate(layers):
            if i in jobs:
                try:
                    stats = jobs[i].result()
                except _Cancelled:  # report the layer that failed, not one it stopped
                    pool.shutdown(wait=True)
                    for job in jobs.values():
                        error = job.exception()
                        if error is not None and not isinstance(error, _Cancelled):
                            raise error from None
                    raise
                _check_diff_id(digest, stats.diff_id, diff_ids[i])
                layer = {"chain_id": chains[i], "diff_id": stats.diff_id, "parent": parent,
                         "size": stats.size, "inodes": stats.inodes}
                with image_store.store.tx():
                    if parent is not None:
                        image_store.store.snaps.rebase(keys[i], parent)
                    image_store.layers.commit(keys.pop(i), layer, (digest, size, media_type))
                added.append(chains[i])
            elif ready is not None:
                ready(i, False)
            parent = chains[i]
    except BaseException:
        cancel.set()
        pool.shutdown(wait=True)  # no thread may still write into a snapshot removed below
        if keys:
            with image_store.store.tx():
                for key in keys.values():
                    if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                        image_store.store.snaps.remove(key)
            _purge(image_store)
        raise
    finally:
        pool.shutdown(wait=True)


class _Cancelled(LaminaError):
    pass


class _Cancellable:
    """A blob reader that stops (raises) once ``cancel`` is set: another layer failed."""

    def __init__(self, blob, cancel):
        self.blob = blob
        self.cancel = cancel

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            raise _Cancelled("cancelled: another layer of the image failed")
        return self.blob.read(n)


def _extract(blob, digest: str, root: str, fmt: str, cancel):
    """Extract one layer blob into ``root`` (a worker thread); returns its TarStats."""
    from ..layertar import apply_tar, is_plain, open_layer_stream

    with blob:
        source = _Cancellable(blob, cancel)
        try:
            stream = open_layer_stream(source)  # a plain layer's diff_id: its (checked) digest
            stats = apply_tar(stream, root, fmt, digest if is_plain(stream) else None)
            while source.read(CHUNK):  # the digest check happens at the blob's end
                pass
        except Exception as error:
            if not isinstance(error, _Cancelled):
                cancel.set()  # the other layers stop: this image cannot be stored
            _raise_failure(blob)  # a bad download explains a bad tar best
            raise
    return stats


def _check_diff_id(digest: str, got: str, expected: str) -> None:
    if got != expected:
        raise InvalidArgument(f"layer {digest} has diff_id {got}, its config says {expected}")


def _raise_failure(blob) -> None:
    """Raise the download error of a blob read as it arrives, if its download failed."""
    failure = getattr(blob, "failure", None)
    error = failure() if failure is not None else None
    if error is not None:
        raise error from None


def _drop_layers(image_store: ImageStore, chains: list[str]) -> None:
    """Remove layers (top first) that nothing uses: undo a failed :func:`add_image`."""
    db = image_store.db
    for chain in chains:
        with Transaction(db):
            used = db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1",
                              (chain,)).fetchone()
            child = db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                               (chain,)).fetchone()
            if used or child:
                continue
            db.execute("DELETE FROM layers WHERE chain_id = ?", (chain,))
            image_store.store.snaps.remove(chain)
    _purge(image_store)


def _purge(image_store: ImageStore) -> None:
    """Delete the data of snapshots removed above (they are only filed as trash until then)."""
    purge = getattr(image_store.store.snaps, "purge", None)
    if purge is not None:
        purge()


def drop_unused(image_store: ImageStore, created: set[str]) -> None:
    """Delete the blobs in ``created`` that no image or layer refers to."""
    if not created:
        return
    from ..claims import referenced_blobs

    used = referenced_blobs(image_store.store)
    for digest in created - used:
        image_store.store.content.delete(digest)


class BlobSink:
    """Writes blobs into the content store, remembering which ones it created."""

    def __init__(self, image_store: ImageStore):
        self.content = image_store.store.content
        self.created: set[str] = set()

    def put_stream(self, read, expected: str | None = None, limit: int | None = None):
        """Copy ``read(n)`` to the end into a blob; returns (digest, size). ``expected`` is
        checked before the blob is named."""
        if expected is not None and self.content.exists(expected):
            size = 0
            while True:
                data = read(CHUNK)
                if not data:
                    break
                size += len(data)
            return expected, self.content.size(expected)
        with self.content.writer() as w:
            while True:
                data = read(CHUNK)
                if not data:
                    break
                w.write(data)
                if limit is not None and w.size > limit:
                    raise InvalidArgument(f"document larger than {limit} bytes")
            digest = "sha256:" + w.hash.hexdigest()
            if expected is not None and digest != expected:
                raise InvalidArgument(f"blob digest mismatch: expected {expected}, got {digest}")
            if self.content.exists(digest):
                return digest, w.size
            digest, size = w.commit()
        self.created.add(digest)
        return digest, size

    def put(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        if not self.content.exists(digest):
            self.content.put(data)
            self.created.add(digest)
        return digest


# ----------------------------------------------------------------------------- saving


class _Image:
    """One image to save: its config, manifest and layers as they will be written."""

    def __init__(self, image_id, config, manifest, manifest_digest, layers, tags, media_type):
        self.image_id = image_id
        self.config = config
        self.manifest = manifest
        self.manifest_digest = manifest_digest
        self.layers = layers  # [(digest, size, media_type, source) ...]; source: blob or temp path
        self.tags = tags
        self.media_type = media_type


def _resolve(image_store: ImageStore, names: list[str]) -> list[tuple[str, list[str]]]:
    """(image ID, tags to record) for each name, images merged in first-seen order."""
    from ..image import normalize

    out: dict[str, list[str]] = {}
    for name in names:
        image_id = image_store.resolve(name)
        tags = out.setdefault(image_id, [])
        try:
            ref = normalize(name)
        except InvalidArgument:
            ref = None
        if ref in image_store.tags(image_id) and ref not in tags:
            tags.append(ref)
    return list(out.items())


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        return int(value) if value else 0
    except ValueError:
        raise InvalidArgument(f"SOURCE_DATE_EPOCH={value!r} is not a number") from None


def _prepare(image_store: ImageStore, names, compression, workdir, log):
    """The images to save, recompressing layers into ``workdir`` when asked."""
    from .. import compression as comp
    from ..image import dumps

    images = []
    done: dict[tuple[str, str], tuple] = {}
    for image_id, tags in _resolve(image_store, names):
        row = image_store.row(image_id)
        config = image_store.store.content.read(image_id)
        manifest = image_store.store.content.read(row["manifest_digest"])
        doc = json.loads(manifest)
        layers = []
        changed = False
        for desc in doc.get("layers", []):
            digest, media = desc["digest"], desc.get("mediaType", MEDIA_OCI_LAYER)
            if not image_store.store.content.exists(digest):
                raise NotFound(f"blob {digest} of image {image_id[7:19]} is missing from the store")
            if compression is None or comp.of_media_type(media) == compression:
                layers.append((digest, desc["size"], media, None))
                continue
            key = (digest, compression)
            if key not in done:
                log(f"{hex_of(digest)[:12]}: compressing ({compression})")
                done[key] = _recompress(image_store, digest, compression, workdir)
            new_digest, size, path = done[key]
            media = MEDIA_OCI_LAYER + comp.media_suffix(compression)
            layers.append((new_digest, size, media, path))
            changed = True
        media_type = doc.get("mediaType") or MEDIA_OCI_MANIFEST
        if changed:
            manifest = dumps({
                "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": image_id, "size": len(config)},
                "layers": [{"mediaType": m, "digest": d, "size": s} for d, s, m, _ in layers]})
            media_type = MEDIA_OCI_MANIFEST
        images.append(_Image(image_id, config, manifest, sha256_bytes(manifest), layers, tags,
                             media_type))
    return images


def _recompress(image_store: ImageStore, digest, compression, workdir):
    """Decompress blob ``digest`` and compress it again into a file in ``workdir``; returns
    (new digest, size, path)."""
    path = os.path.join(workdir, f"{hex_of(digest)}.{compression}")
    blob = Recompressed(image_store, digest, compression)
    with open(path, "wb") as f:
        f.writelines(blob)
    return blob.digest, blob.size, path


class Recompressed:
    """The stored blob ``source`` decompressed and compressed again as ``compression``, made as
    it is iterated (pieces of compressed bytes); ``digest`` and ``size`` once exhausted. The
    stored blob's own digest is checked at its end, before the last piece is given."""

    def __init__(self, image_store: ImageStore, source: str, compression: str):
        self.image_store = image_store
        self.source = source
        self.compression = compression
        self.digest = None
        self.size = 0

    def __iter__(self):
        import collections
        import hashlib

        from ..compression import compressor
        from ..layertar import open_layer_stream

        pieces = collections.deque()  # filled by the compressor's writer thread
        sha = hashlib.sha256()

        class _Out:
            def write(self, data) -> int:
                pieces.append(bytes(data))
                return len(data)

        def ready():
            while pieces:
                piece = pieces.popleft()
                sha.update(piece)
                self.size += len(piece)
                yield piece

        with self.image_store.store.content.open(self.source) as blob:
            source = open_layer_stream(blob)
            sink = compressor(self.compression, _Out())
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                sink.write(data)
                yield from ready()
            sink.close()
            while blob.read(CHUNK):  # the stored blob's digest check
                pass
        yield from ready()
        self.digest = "sha256:" + sha.hexdigest()


def _copy_fd(src_path: str, out, size: int) -> None:
    """Copy ``size`` bytes of ``src_path`` to ``out`` (in the kernel when ``out`` is a file)."""
    out.flush()
    with open(src_path, "rb") as src:
        try:
            fd = out.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, AttributeError, ValueError):
            fd, mode = None, 0
        left = size
        if fd is not None and stat.S_ISREG(mode):
            while left:
                n = os.copy_file_range(src.fileno(), fd, min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        elif fd is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            while left:
                n = os.sendfile(fd, src.fileno(), None, min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        while left:
            data = src.read(min(left, CHUNK))
            if not data:
                break
            out.write(data)
            left -= len(data)
        if left:
            raise LaminaError(f"{src_path} shrank while it was being saved")


class _TarOut:
    """A minimal tar writer: PAX headers from :mod:`tarfile`, data copied by the kernel."""

    def __init__(self, out, mtime: int):
        self.out = out
        self.mtime = mtime
        self.names: set[str] = set()

    def _header(self, name: str, size: int, kind=tarfile.REGTYPE, mode=0o644) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = mode
        info.mtime = self.mtime
        info.uname = info.gname = ""
        return info.tobuf(format=tarfile.PAX_FORMAT)

    def directory(self, name: str) -> None:
        if name not in self.names:
            self.names.add(name)
            self.out.write(self._header(name, 0, tarfile.DIRTYPE, 0o755))

    def data(self, name: str, data: bytes) -> None:
        self.names.add(name)
        self.out.write(self._header(name, len(data)))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 512))

    def file(self, name: str, path: str, size: int) -> None:
        if name in self.names:
            return
        self.names.add(name)
        self.out.write(self._header(name, size))
        _copy_fd(path, self.out, size)
        self.out.write(b"\0" * (-size % 512))
        point("save.member")

    def close(self) -> None:
        self.out.write(b"\0" * 1024)
        self.out.flush()


def _oci_index(images: list[_Image]) -> bytes:
    from ..image import dumps

    manifests = []
    for img in images:
        base = {"mediaType": img.media_type, "digest": img.manifest_digest,
                "size": len(img.manifest)}
        for tag in img.tags or [None]:
            desc = dict(base)
            if tag:
                desc["annotations"] = {"io.containerd.image.name": _docker_name(tag),
                                       "org.opencontainers.image.ref.name": tag}
            manifests.append(desc)
    return dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifests})


def _docker_name(tag: str) -> str:
    """``busybox:1`` -> ``docker.io/library/busybox:1`` (containerd's full names)."""
    first = tag.split("/", 1)[0]
    if "/" in tag and ("." in first or ":" in first or first == "localhost"):
        return tag
    return "docker.io/" + (tag if "/" in tag else "library/" + tag)


def save(image_store: ImageStore, names: list[str], output, fmt: str = "docker-archive",
         compression: str | None = None, log=lambda line: None) -> None:
    """Write the images ``names`` to ``output`` (a path, or a binary file for the archive forms)
    in ``fmt``; ``compression`` (gzip, zstd, none) recompresses layers, None keeps them."""
    import shutil
    import tempfile

    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if compression is not None:
        from ..compression import check

        check(compression)
    if not names:
        raise InvalidArgument("save needs at least one image")
    workdir = tempfile.mkdtemp(prefix=f"{os.getpid()}-save-", dir=image_store.store.content.ingest)
    try:
        images = _prepare(image_store, names, compression, workdir, log)
        if fmt == "oci-dir":
            if not isinstance(output, (str, os.PathLike)):
                raise InvalidArgument("oci-dir needs an output directory (-o DIR)")
            _save_oci_dir(image_store, images, os.fspath(output))
            return
        if isinstance(output, (str, os.PathLike)):
            from ..fsutil import output_file

            with output_file(os.fspath(output)) as f:
                _save_tar(image_store, images, fmt, f)
        else:
            _save_tar(image_store, images, fmt, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _layer_path(image_store: ImageStore, layer) -> str:
    digest, _, _, source = layer
    return source or image_store.store.content.path(digest)


def _save_tar(image_store: ImageStore, images: list[_Image], fmt: str, out) -> None:
    tar = _TarOut(out, _epoch())
    if fmt == "oci-archive":
        tar.data("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        tar.directory("blobs/")
        tar.directory("blobs/sha256/")
        for img in images:
            for layer in img.layers:
                tar.file(f"blobs/sha256/{hex_of(layer[0])}", _layer_path(image_store, layer), layer[1])
            tar.data(f"blobs/sha256/{hex_of(img.image_id)}", img.config)
            tar.data(f"blobs/sha256/{hex_of(img.manifest_digest)}", img.manifest)
        tar.data("index.json", _oci_index(images))
        tar.close()
        return
    # docker-archive: the layout of `docker save` (config <hex>.json, layers <hex>.tar)
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    for img in images:
        paths = []
        for layer in img.layers:
            name = f"{hex_of(layer[0])}.tar"
            tar.file(name, _layer_path(image_store, layer), layer[1])
            paths.append(name)
        config_name = f"{hex_of(img.image_id)}.json"
        if config_name not in tar.names:
            tar.data(config_name, img.config)
        entries.append({"Config": config_name, "RepoTags": img.tags or None, "Layers": paths})
        diff_ids = json.loads(img.config)["rootfs"]["diff_ids"]
        for tag in img.tags:
            repo, _, name = tag.rpartition(":")
            if diff_ids:
                repositories.setdefault(repo, {})[name] = hex_of(diff_ids[-1])
    tar.data("manifest.json", json.dumps(entries, separators=(",", ":")).encode())
    if repositories:
        tar.data("repositories", json.dumps(repositories, separators=(",", ":")).encode())
    tar.close()


def _save_oci_dir(image_store: ImageStore, images: list[_Image], path: str) -> None:
    """Write (or add to) an OCI layout directory; index.json last, so a reader never sees an
    index naming a missing blob."""
    import shutil

    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layout = os.path.join(path, "oci-layout")
    if not os.path.exists(layout):
        with open(layout, "wb") as f:
            f.write(b'{"imageLayoutVersion":"1.0.0"}')

    def put(digest: str, data: bytes | None = None, source: str | None = None) -> None:
        target = os.path.join(blobs, hex_of(digest))
        if os.path.exists(target):
            return
        tmp = target + f".tmp-{os.getpid()}"
        if data is not None:
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            shutil.copyfile(source, tmp)
        os.rename(tmp, target)

    for img in images:
        for layer in img.layers:
            put(layer[0], source=_layer_path(image_store, layer))
        put(img.image_id, img.config)
        put(img.manifest_digest, img.manifest)
    index_path = os.path.join(path, "index.json")
    old = []
    if os.path.exists(index_path):
        with open(index_path, "rb") as f:
            old = json.loads(f.read()).get("manifests", [])
    new = json.loads(_oci_index(images))["manifests"]
    names = {(d.get("annotations") or {}).get("org.opencontainers.image.ref.name") for d in new}
    kept = [d for d in old
            if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") not in names
            or not (d.get("annotations") or {}).get("org.opencontainers.image.ref.name")]
    from ..image import dumps

    data = dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": kept + new})
    tmp = index_path + f".tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, index_path)


# ----------------------------------------------------------------------------- loading


class _Source:
    """What a load reads: member name -> blob digest (in the store) or small bytes (in memory)."""

    def __init__(self):
        self.members: dict[str, str] = {}      # name -> digest of a blob in the store
        self.small: dict[str, bytes] = {}      # name -> bytes (JSON documents)
        self.links: dict[str, str] = {}        # name -> target name

    def resolve(self, name: str) -> str:
        name = os.path.normpath(name).lstrip("/")
        for _ in range(40):
            if name in self.links:
                name = self.links[name]
            else:
                return name
        raise InvalidArgument(f"archive member {name!r}: too many levels of links")

    def digest(self, name: str) -> str:
        real = self.resolve(name)
        if real in self.members:
            return self.members[real]
        raise InvalidArgument(f"archive has no member {name!r}")

    def text(self, name: str) -> bytes | None:
        real = self.resolve(name)
        return self.small.get(real)

    def has(self, name: str) -> bool:
        real = self.resolve(name)
        return real in self.members or real in self.small


_JSON_NAMES = ("manifest.json", "index.json", "oci-layout", "repositories", "version")


class _Slice:
    """``size`` bytes of the file ``raw`` from ``offset``, read with pread in large pieces."""

    def __init__(self, raw, offset: int, size: int):
        self.fd = raw.fileno()
        self.offset = offset
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = os.pread(self.fd, n, self.offset) if n else b""
        if n and not data:
            raise InvalidArgument("bad archive: unexpected end of data")
        self.offset += len(data)
        self.left -= len(data)
        return data


def _read_tar(stream, sink: BlobSink, source: _Source, raw=None) -> None:
    """Stream every member of the archive into the blob store (or memory for its JSON files).

    ``raw``: the same archive as a seekable, uncompressed regular file; members are then indexed
    by tarfile and their data read directly from the file (several times faster than streaming).
    """
    try:
        if raw is not None:
            tar = tarfile.open(fileobj=raw, mode="r:")
        else:
            tar = tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK)
    except tarfile.TarError as e:
        raise InvalidArgument(f"not a tar archive: {e}") from None
    try:
        for info in tar:
            name = os.path.normpath(info.name).lstrip("/")
            if name.startswith("..") or name == ".":
                continue
            if info.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(name), info.linkname))
                source.links[name] = target.lstrip("/")
                continue
            if info.islnk():
                source.links[name] = os.path.normpath(info.linkname).lstrip("/")
                continue
            if not info.isfile():
                continue
            f = tar.extractfile(info) if raw is None else _Slice(raw, info.offset_data, info.size)
            base = os.path.basename(name)
            expected = None
            parts = name.split("/")
            if len(parts) >= 3 and parts[-3] == "blobs" and parts[-2] == "sha256":
                expected = "sha256:" + parts[-1]
                if not is_digest(expected):
                    expected = None
            if expected is None and (base in _JSON_NAMES or name.endswith(".json")) \
                    and info.size <= _SMALL:
                source.small[name] = f.read()
                continue
            digest, _ = sink.put_stream(f.read, expected)
            source.members[name] = digest
    except tarfile.TarError as e:
        raise InvalidArgument(f"bad archive: {e}") from None
    except EOFError:
        raise InvalidArgument("bad archive: unexpected end of data") from None


def _read_dir(path: str, sink: BlobSink, source: _Source) -> None:
    """Every file of a layout directory (OCI or Docker's ``dir`` transport) into the store."""
    for dirpath, _, filenames in os.walk(path):
        for base in filenames:
            full = os.path.join(dirpath, base)
            name = os.path.relpath(full, path)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            parts = name.split("/")
            expected = None
            if len(parts) >= 3 and parts[-3] == "blobs" and parts[-2] == "sha256":
                expected = "sha256:" + parts[-1]
            elif len(parts) == 1 and len(base) == 64:  # docker-dir: blobs named <hex>
                expected = "sha256:" + base
            if expected is not None and not is_digest(expected):
                expected = None
            size = os.path.getsize(full)
            with open(full, "rb") as f:
                if expected is None:
                    if size <= _SMALL:
                        source.small[name] = f.read()
                    continue
                digest, _ = sink.put_stream(f.read, expected)
            source.members[name] = digest


def _json(data: bytes | None, what: str):
    if data is None:
        raise InvalidArgument(f"archive has no {what}")
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidArgument(f"{what} is not valid JSON") from None


def _blob_bytes(image_store: ImageStore, digest: str, what: str) -> bytes:
    if image_store.store.content.size(digest) > _SMALL:
        raise InvalidArgument(f"{what} {digest} is too large")
    return image_store.store.content.read(digest)


def _tag_of(annotations: dict) -> str | None:
    """A tag from an OCI descriptor's annotations (containerd's full name first)."""
    from ..image import normalize

    name = annotations.get("io.containerd.image.name")
    if name:
        name = familiar(name)
    else:
        name = annotations.get("org.opencontainers.image.ref.name")
        if not name or ("/" not in name and ":" not in name):
            return None  # a bare tag names no repository
        name = familiar(name)
    try:
        return normalize(name)
    except InvalidArgument:
        return None


def familiar(name: str) -> str:
    """Docker's short form of a Docker Hub name: ``docker.io/library/app:2`` -> ``app:2``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def platform_matches(desc: dict, platform: tuple[str, str, str | None]) -> bool:
    want_os, want_arch, want_variant = platform
    p = desc.get("platform") or {}
    if p.get("os") != want_os or p.get("architecture") != want_arch:
        return False
    return want_variant is None or p.get("variant") in (None, want_variant)


def _images_from_oci(image_store: ImageStore, source: _Source, platform) -> list[tuple]:
    """(config, layers, tags, manifest) of each image an OCI layout's index.json names."""
    index = _json(source.text("index.json"), "index.json")
    found: dict[str, list] = {}

    def visit(desc: dict, tags: list[str], depth: int) -> None:
        media = desc.get("mediaType")
        digest = desc.get("digest", "")
        if not is_digest(digest):
            raise InvalidArgument(f"index.json names a malformed digest {digest!r}")
        if media in INDEX_TYPES:
            if depth > 4:
                raise InvalidArgument("image indexes nested too deeply")
            doc = json.loads(_blob_bytes(image_store, digest, "index"))
            chosen = [d for d in doc.get("manifests", []) if platform_matches(d, platform)]
            if not chosen and len(doc.get("manifests", [])) == 1:
                chosen = doc["manifests"]
            if not chosen:
                raise NotFound(f"no image for {'/'.join(p for p in platform if p)} in index "
                               f"{digest}")
            visit(chosen[0], tags, depth + 1)
            return
        entry = found.setdefault(digest, [])
        entry.extend(t for t in tags if t not in entry)

    for desc in index.get("manifests", []):
        tag = _tag_of(desc.get("annotations") or {})
        visit(desc, [tag] if tag else [], 0)
    out = []
    for digest, tags in found.items():
        manifest = _blob_bytes(image_store, digest, "manifest")
        out.append(_from_manifest(image_store, manifest, tags))
    return out


def _from_manifest(image_store: ImageStore, manifest: bytes, tags: list[str]) -> tuple:
    try:
        doc = json.loads(manifest)
    except ValueError:
        raise InvalidArgument("image manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("malformed image manifest")
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        raise InvalidArgument("expected an image manifest, found an index")
    try:
        config_digest = doc["config"]["digest"]
        layers = [(d["digest"], int(d["size"]), d.get("mediaType") or MEDIA_OCI_LAYER)
                  for d in doc["layers"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument("malformed image manifest") from None
    for digest, size, _ in layers:
        if not is_digest(digest) or not image_store.store.content.exists(digest):
            raise InvalidArgument(f"layer blob {digest} is missing")
        if image_store.store.content.size(digest) != size:
            raise InvalidArgument(f"layer blob {digest} has the wrong size")
    config = _blob_bytes(image_store, config_digest, "config")
    declared = doc["config"].get("size") if isinstance(doc["config"], dict) else None
    if declared is not None and declared != len(config):
        raise InvalidArgument(f"config blob {config_digest} has the wrong size")
    return config, layers, tags, manifest


def _images_from_docker(image_store: ImageStore, source: _Source) -> list[tuple]:
    """(config, layers, tags, manifest) of each image in a ``docker save`` manifest.json."""
    from .. import compression
    from ..image import dumps, normalize

    entries = _json(source.text("manifest.json"), "manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json is not a list")
    out = []
    for entry in entries:
        try:
            config_name = entry["Config"]
            layer_names = list(entry["Layers"])
        except (KeyError, TypeError):
            raise InvalidArgument("manifest.json entry without Config or Layers") from None
        config = source.text(config_name)
        if config is None:
            config = _blob_bytes(image_store, source.digest(config_name), "config")
        layers = []
        for name in layer_names:
            digest = source.digest(name)
            with image_store.store.content.open(digest) as blob:
                head = blob.file.read(8)
            media = MEDIA_OCI_LAYER + compression.media_suffix(compression.sniff(head))
            layers.append((digest, image_store.store.content.size(digest), media))
        tags = []
        for tag in entry.get("RepoTags") or []:
            try:
                tags.append(normalize(familiar(tag)))
            except InvalidArgument:
                raise InvalidArgument(f"manifest.json has a bad tag {tag!r}") from None
        manifest = dumps({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": sha256_bytes(config),
                       "size": len(config)},
            "layers": [{"mediaType": m, "digest": d, "size": s} for d, s, m in layers]})
        out.append((config, layers, tags, manifest))
    return out


def _images_from_docker_dir(image_store: ImageStore, source: _Source) -> list[tuple]:
    """containers/image's ``dir`` transport: manifest.json is the manifest itself."""
    manifest = source.text("manifest.json")
    for desc in json.loads(manifest).get("layers", []):  # blobs may be named <hex> or <hex>.tar
        if not image_store.store.content.exists(desc.get("digest", "")):
            raise InvalidArgument(f"layer blob {desc.get('digest')} is missing")
    doc = json.loads(manifest)
    config_digest = doc.get("config", {}).get("digest", "")
    if is_digest(config_digest) and not image_store.store.content.exists(config_digest):
        data = source.small.get(hex_of(config_digest))
        if data is not None:
            BlobSink(image_store).put(data)
    return [_from_manifest(image_store, manifest, [])]


def load(image_store: ImageStore, input, platform=("linux", "amd64", None), log=lambda line: None) -> list[str]:
    """Load every image of an archive (path, directory, or binary file such as stdin); returns
    Docker's ``Loaded image: NAME`` / ``Loaded image ID: ID`` lines."""
    from ..layertar import open_layer_stream

    sink = BlobSink(image_store)
    source = _Source()
    loaded = []
    try:
        if isinstance(input, (str, os.PathLike)):
            path = os.fspath(input)
            if os.path.isdir(path):
                _read_dir(path, sink, source)
            else:
                try:
                    f = open(path, "rb")
                except OSError as e:
                    raise NotFound(f"cannot open {path}: {e.strerror}") from None
                with f:
                    from ..compression import sniff

                    plain = sniff(os.pread(f.fileno(), 8, 0)) == "none" and \
                        stat.S_ISREG(os.fstat(f.fileno()).st_mode)
                    if plain:
                        _read_tar(None, sink, source, raw=f)
                    else:
                        _read_tar(open_layer_stream(f), sink, source)
        else:
            _read_tar(open_layer_stream(input), sink, source)
        _small_blobs_to_store(sink, source)
        try:  # the documents are untrusted: a value of the wrong type is a malformed archive
            if source.has("manifest.json") and isinstance(_json(source.text("manifest.json"),
                                                                "manifest.json"), list):
                images = _images_from_docker(image_store, source)
            elif source.has("index.json"):
                images = _images_from_oci(image_store, source, platform)
            elif source.has("manifest.json"):
                images = _images_from_docker_dir(image_store, source)
            else:
                raise InvalidArgument("not an image archive: no manifest.json or index.json")
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
            raise InvalidArgument(f"malformed image archive ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else 'bad value'})") from None
        if not images:
            raise InvalidArgument("the archive holds no image")
        for config, layers, tags, manifest in images:
            started = time.monotonic()

            def ready(i: int, follow: bool, layers=layers):
                digest = layers[i][0]
                if follow and digest in sink.created:  # checked as it was stored, just now
                    return image_store.store.content.open(digest, verify=False)
                return None

            image_id = add_image(image_store, config, layers, tags, manifest, ready=ready)
            log(f"{image_id[7:19]}: loaded in {time.monotonic() - started:.1f}s")
            loaded.extend(f"Loaded image: {t}" for t in tags)
            if not tags:
                loaded.append(f"Loaded image ID: {image_id}")
    finally:
        drop_unused(image_store, sink.created)
    return loaded


def _small_blobs_to_store(sink: BlobSink, source: _Source) -> None:
    """JSON documents named like blobs (docker-archive configs) are blobs too."""
    for name, data in list(source.small.items()):
        if name.endswith(".json") and name not in _JSON_NAMES:
            digest = sink.put(data)
            source.members[name] = digest
