"""Images out to files: ``save`` writes one of three forms, several images and tags in one go:

* ``oci-archive``: a tar of an OCI image layout (``oci-layout``, ``index.json`` with one
  descriptor per tag, annotated ``org.opencontainers.image.ref.name``, and ``blobs/sha256/*``);
* ``oci-dir``: the same layout as a directory;
* ``docker-archive``: what ``docker save`` writes (``manifest.json``, ``repositories``, the
  config as ``<hex>.json`` and each layer as ``<hex>.tar``).

Layers go out as stored (their manifest bytes untouched) unless a compression is asked for, in
which case they are recompressed with :mod:`lamina.compression` (stable output) and the manifest is
made anew.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile

from ..digest import hex_of, sha256_bytes
from ..errors import InvalidArgument, LaminaError, NotFound
from ..faults import point
from .blobs import CHUNK
from .formats import MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST
from .recompress import Recompressed

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

FORMATS = ("oci-archive", "docker-archive", "oci-dir")


class _Image:
    """One image to save: its config, manifest and layers as they will be written."""

    def __init__(self, image_id, config, manifest, manifest_digest, layers, tags, media_type):
        self.image_id = image_id
        self.config = config
        self.manifest = manifest
        self.manifest_digest = manifest_digest
        self.layers = layers  # [(digest, size, media_type, source) ...]; source: None (the
        # stored blob), a temporary file's path, or a layer's chain ID (its tar, rebuilt)
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
    content = image_store.store.content
    for image_id, tags in _resolve(image_store, names):
        row = image_store.row(image_id)
        config = content.read(image_id)
        manifest = content.read(row["manifest_digest"])
        doc = json.loads(manifest)
        chains = [r["chain_id"] for r in image_store.layer_rows(image_id)]
        layers = []
        changed = False
        for i, desc in enumerate(doc.get("layers", [])):
            digest, media = desc["digest"], desc.get("mediaType", MEDIA_OCI_LAYER)
            chain = chains[i] if i < len(chains) else None
            stored = content.exists(digest)
            if not stored and chain is None:
                raise NotFound(f"blob {digest} of image {image_id[7:19]} is missing from the store")
            if compression is None or comp.of_media_type(media) == compression:
                if stored:
                    layers.append((digest, desc["size"], media, None))
                    continue
                if comp.of_media_type(media) == "none":  # the tar: from the layer's record
                    layers.append((digest, desc["size"], media, chain))
                    continue
                # a pulled layer whose compressed blob is not kept: saved as its tar (as
                # `docker save` does), in a manifest made anew
                plain = image_store.layers.get(chain)
                layers.append((plain["diff_id"], image_store.layers.tar_size(chain),
                               MEDIA_OCI_LAYER, chain))
                changed = True
                continue
            key = (digest, compression)
            if key not in done:
                log(f"{hex_of(digest)[:12]}: compressing ({compression})")
                done[key] = _recompress(image_store, digest, compression, workdir, chain)
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


def _recompress(image_store: ImageStore, digest, compression, workdir, chain=None):
    """Decompress blob ``digest`` (layer ``chain``'s tar if the blob is not kept) and compress
    it again into a file in ``workdir``; returns (new digest, size, path)."""
    path = os.path.join(workdir, f"{hex_of(digest)}.{compression}")
    blob = Recompressed(image_store, digest, compression, chain)
    with open(path, "wb") as f:
        f.writelines(blob)
    return blob.digest, blob.size, path



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

    def layer(self, name: str, image_store: ImageStore, layer) -> None:
        """A layer under ``name``: a stored blob or file copied, or its tar rebuilt."""
        digest, size, _, source = layer
        if source is None or not source.startswith("sha256:"):
            self.file(name, _layer_path(image_store, layer), size)
            return
        if name in self.names:
            return
        self.names.add(name)
        self.out.write(self._header(name, size))
        written = image_store.layers.write_tar(source, self.out)
        if written != size:
            raise LaminaError(f"layer {digest} gave {written} bytes, its descriptor says {size}")
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
        elif isinstance(output, (str, os.PathLike)):
            from ..fsutil import output_file

            with output_file(os.fspath(output)) as f:
                _save_tar(image_store, images, fmt, f)
        else:
            _save_tar(image_store, images, fmt, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for image in images:
        image_store.emit("save", image.image_id)


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
                tar.layer(f"blobs/sha256/{hex_of(layer[0])}", image_store, layer)
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
            tar.layer(name, image_store, layer)
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
        try:
            if data is not None:
                with open(tmp, "wb") as f:
                    f.write(data)
            elif source.startswith("sha256:"):  # a layer's tar, rebuilt from its record
                with open(tmp, "wb") as f:
                    image_store.layers.write_tar(source, f)
            else:
                shutil.copyfile(source, tmp)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        os.rename(tmp, target)

    for img in images:
        for layer in img.layers:
            put(layer[0], source=layer[3] if layer[3] and layer[3].startswith("sha256:")
                else _layer_path(image_store, layer))
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
