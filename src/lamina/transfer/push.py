"""Push: an image from the store to a registry.

Every blob is checked with HEAD first and skipped when the registry has it; a blob known to be in
another repository of the same registry is mounted from there; others are uploaded by
:meth:`.http.Client.upload`. Layers stored uncompressed are gzipped on the way (isal, stable
output, so the same image always pushes the same digests); the compressed digests are remembered
so that a second push can skip them with HEAD.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import InvalidArgument
from ..reference import Reference, parse_reference
from . import sources as sources_of
from .formats import MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST
from .http import Client
from .progress import Silent, layer_key
from .recompress import Recompressed
from .sources import remember_name, remember_sources

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore


def push(image_store: ImageStore, name: str, destination: str | None = None, tls_verify: bool | None = None,
         authfile: str | None = None, compression: str | None = None, progress=None,
         jobs: int = 5) -> str:
    """Push image ``name`` to ``destination`` (default: ``name`` itself); returns the digest of
    the manifest the registry now has."""
    from ..compression import check
    from . import auth

    if compression is not None:
        check(compression)
    image_id = image_store.resolve(name)
    target = destination or name
    if (destination is None and target.startswith("sha256:")) or (
            destination is None and image_id[7:].startswith(target)):
        raise InvalidArgument("pushing an image by ID needs a destination: push ID NAME[:TAG]")
    ref = parse_reference(target)
    progress = progress or Silent()
    row = image_store.row(image_id)
    manifest = image_store.store.content.read(row["manifest_digest"])
    doc = json.loads(manifest)
    sources = {}  # blob digest (stored or its compressed form) -> a repository that has it
    for desc in doc.get("layers", []):
        candidates = [desc["digest"]] + sources_of.compressed_forms(image_store, desc["digest"])
        for digest in candidates:
            for registry, repository in sources_of.repositories_of(image_store, digest):
                if registry == ref.registry and repository != ref.repository:
                    sources.setdefault(digest, repository)
    scopes = [f"repository:{ref.repository}:pull,push"]
    scopes += sorted({f"repository:{r}:pull" for r in sources.values()})
    credentials = auth.lookup(ref.registry, authfile)
    with Client(ref.api_host, scopes, credentials, tls_verify) as client:
        try:
            digest = _push(image_store, client, ref, image_id, manifest, doc, compression,
                           sources, progress, max(1, jobs))
        finally:
            progress.close()
    image_store.emit("push", image_id, name=ref.name, actor=str(ref))  # as Docker names them
    return digest


def _push(image_store: ImageStore, client, ref: Reference, image_id, manifest, doc, compression, sources, progress,
          jobs: int) -> str:
    from ..compression import media_suffix, of_media_type

    progress.message(f"The push refers to repository [{ref.name}]")
    client.ping()
    repo = ref.repository
    content = image_store.store.content
    stop = threading.Event()
    chains = [r["chain_id"] for r in image_store.layer_rows(image_id)]
    plan = []  # (stored digest, stored size, stored media, target compression or None, chain)
    for i, desc in enumerate(doc.get("layers", [])):
        media = desc.get("mediaType") or MEDIA_OCI_LAYER
        stored = of_media_type(media)
        want = compression or (stored if stored != "none" else "gzip")
        plan.append((desc["digest"], int(desc["size"]), media, None if want == stored else want,
                     chains[i] if i < len(chains) else None))
    results: dict[int, tuple[str, int, str]] = {}
    made: dict[int, str] = {}  # layers compressed anew: index -> compression

    def push_layer(i: int) -> None:
        digest, size, media, want, chain = plan[i]
        key = layer_key(digest)
        path = content.path(digest)
        if not want and not os.path.exists(path):
            # a pulled blob the store does not keep: the registry may have it (HEAD, or a
            # mount from a repository it came from); else the layer's tar is compressed again
            # (stable compressor: the same tar always gives the same digest)
            if client.blob_exists(repo, digest):
                progress.status(key, "Layer already exists")
                done = True
            elif sources.get(digest):
                done = _skip_or_mount(client, repo, digest, sources.get(digest), key, progress)[0]
            else:
                done = False
            if done:
                results[i] = (digest, size, media)
                return
            want = of_media_type(media) if of_media_type(media) != "none" else "gzip"
        if want:
            made[i] = want
            cached = cache.get((i, want))
            new_media = MEDIA_OCI_LAYER + media_suffix(want)
            if cached and _skip_or_mount(client, repo, cached[0], sources.get(cached[0]), key,
                                         progress)[0]:
                results[i] = (cached[0], cached[1], new_media)
                return
            progress.status(key, "Pushing")  # compressed as it is sent
            blob = client.upload_stream(
                repo, lambda: Recompressed(image_store, digest, want, chain),
                lambda n: progress.advance(key, n))
            results[i] = (blob.digest, blob.size, new_media)
            progress.status(key, "Pushed")
            return
        results[i] = (digest, size, media)
        _push_blob(client, repo, digest, size, path, sources.get(digest), key, progress)

    cache = {}  # the database is used from this thread only: what push_layer may ask, asked here
    for i, (digest, size, media, want, _) in enumerate(plan):
        progress.add(layer_key(digest), size, "Preparing")
        for compression_of in {want, of_media_type(media) if of_media_type(media) != "none"
                               else "gzip"} - {None}:
            cache[(i, compression_of)] = sources_of.compressed_form(image_store, digest,
                                                                    compression_of)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push") as pool:
        futures = [pool.submit(push_layer, i) for i in range(len(plan))]
        try:
            config_size = content.size(image_id)
            _push_blob(client, repo, image_id, config_size, content.path(image_id), None, None,
                       progress)
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    converted = any(results[i][0] != plan[i][0] for i in results)
    if converted:
        from ..image import dumps

        sources_of.remember_compressed(
            image_store, [(plan[i][0], made[i], *results[i][:2]) for i in made])

        config_media = (doc.get("config") or {}).get("mediaType") or MEDIA_OCI_CONFIG
        if config_media != MEDIA_OCI_CONFIG:
            config_media = MEDIA_OCI_CONFIG
        manifest = dumps({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": config_media, "digest": image_id,
                       "size": content.size(image_id)},
            "layers": [{"mediaType": results[i][2], "digest": results[i][0],
                        "size": results[i][1]} for i in range(len(plan))]})
        media_type = MEDIA_OCI_MANIFEST
    else:
        media_type = doc.get("mediaType") or MEDIA_OCI_MANIFEST
    digest = client.put_manifest(repo, ref.digest or ref.tag, manifest, media_type)
    remember_sources(image_store, [r[0] for r in results.values()] + [image_id, digest],
                      ref.registry, repo)
    stored = image_store.row(image_id)["manifest_digest"]
    if digest != stored:  # so that inspect's RepoDigests names what the repository has
        remember_name(image_store, stored, ref.registry, repo, digest)
    progress.message(f"{ref.tag or ref.digest}: digest: {digest} size: {len(manifest)}")
    return digest


def _skip_or_mount(client, repo, digest, mount_from, key, progress) -> tuple[bool, str | None]:
    """(True, None) when the registry has the blob in ``repo`` or mounted it from
    ``mount_from``; else (False, an upload location)."""
    if client.blob_exists(repo, digest):
        if key:
            progress.status(key, "Layer already exists")
        return True, None
    location, mounted = client.start_upload(repo, digest, mount_from)
    if mounted and key:
        progress.status(key, f"Mounted from {mount_from}")
    return mounted, location


def _push_blob(client, repo, digest, size, path, mount_from, key, progress) -> None:
    done, location = _skip_or_mount(client, repo, digest, mount_from, key, progress)
    if done:
        return
    if key:
        progress.status(key, "Pushing")
    client.upload(repo, path, digest, size, location,
                  (lambda n: progress.advance(key, n)) if key else (lambda n: None))
    if key:
        progress.status(key, "Pushed")
