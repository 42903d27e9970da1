"""Images in from files: ``load`` reads OCI archives and layouts, Docker archives, Podman's
``docker-dir`` and compressed archives, from a file, a directory or a pipe. Every member is
streamed once into the blob store (named by its verified digest), the images are assembled from
there with :func:`~lamina.transfer.unpack.add_image`, and every blob the load created that no
image ended up using is removed again, on success and on failure.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
import time

from ..digest import hex_of, is_digest, sha256_bytes
from ..errors import InvalidArgument, NotFound
from .blobs import CHUNK, BlobSink, drop_unused
from .formats import (
    INDEX_TYPES,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_LAYER,
    MEDIA_OCI_MANIFEST,
    platform_matches,
)
from .unpack import add_image

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

_SMALL = 16 << 20  # cap on JSON documents (manifests, configs, indexes) held in memory


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
            tar = tarfile.open(fileobj=raw, mode="r:")  # noqa: SIM115 - the caller owns raw
        else:
            tar = tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK)  # noqa: SIM115 - and stream
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
                    f = open(path, "rb")  # noqa: SIM115 - closed by the with below
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
            image_store.emit("load", image_id)
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
