"""Pull: an image from a registry into the store.

The manifest (OCI or Docker schema 2, or an index from which one platform is picked) is fetched
and its digest checked, then the config, then the layer blobs that are not stored yet, in
parallel, each streamed into the blob store and named only once its size and digest are right
(a dropped download resumes with a Range request). Each layer is extracted while it arrives (all
at once on overlay2 and union, in order on vfs and overlay: see :func:`.unpack.add_image`), so
extraction overlaps the downloads. The manifest and config are kept as the exact bytes received.
A failure leaves no image, no snapshot and no blob that nothing uses.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..content import WRITEBACK, drop_cached
from ..digest import is_digest
from ..errors import InvalidArgument, NotFound
from ..reference import DOCKER_HUB, Reference, parse_reference
from .blobs import BlobSink, drop_unused
from .formats import INDEX_TYPES, MEDIA_OCI_LAYER, platform_matches
from .http import Client
from .progress import Silent, layer_key
from .sources import remember_name, remember_sources
from .unpack import add_image

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore

MAX_CONFIG = 16 << 20


class Arrival:
    """A layer blob being downloaded, readable while it arrives: extraction follows the download
    instead of reading the blob again afterwards.

    The downloading thread calls :meth:`started` (with its temporary file, which only grows),
    :meth:`wrote` and :meth:`finished`; :meth:`reader` hands the extracting thread a file-like
    object that waits for bytes, and at the end raises the download's error, if any (wrong
    digest, truncated, ...), so a layer is never committed from a blob that failed its check.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.fd: int | None = None
        self.size = 0
        self.done = False
        self.future = None  # set by the puller once submitted

    def started(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # stays valid once the file is renamed
        with self.cond:
            self.fd = fd
            self.cond.notify_all()

    def wrote(self, size: int) -> None:
        with self.cond:
            self.size = size
            self.cond.notify_all()

    def finished(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def reader(self) -> _Following:
        return _Following(self)


class _Following:
    """Reads an :class:`Arrival` from its start, waiting for the download as needed."""

    def __init__(self, arrival: Arrival):
        self.arrival = arrival
        self.pos = 0
        self.dropped = 0  # the blob's pages before this are out of the page cache

    def read(self, n: int = -1) -> bytes:
        arrival = self.arrival
        with arrival.cond:
            while arrival.size <= self.pos and not arrival.done:
                arrival.cond.wait()
            available, fd = arrival.size - self.pos, arrival.fd
        if available > 0 and fd is not None:
            data = os.pread(fd, available if n is None or n < 0 else min(n, available), self.pos)
            self.pos += len(data)
            # what was read more than a writeback step ago is on its way to disk (BlobWriter):
            # give its pages back, so the download reuses them (content.drop_cached)
            end = (self.pos - WRITEBACK) & ~0xFFFFF
            if end - self.dropped >= 2 * WRITEBACK:
                drop_cached(fd, self.dropped, end - self.dropped)
                self.dropped = end
            return data
        arrival.future.result()  # the end: raises the download's error (a blob that failed)
        return b""

    def failure(self) -> BaseException | None:
        """The download's error once it has ended, or None (it succeeded)."""
        return self.arrival.future.exception()

    def close(self) -> None:
        pass  # the descriptor is the puller's: a helper thread may still be in a read

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pull(image_store: ImageStore, reference: str, platform=("linux", "amd64", None), tls_verify: bool | None = None,
         authfile: str | None = None, progress=None, jobs: int = 3) -> str:
    """Pull ``NAME[:TAG|@DIGEST]`` into the store; returns the image ID."""
    from . import auth

    ref = parse_reference(reference)
    progress = progress or Silent()
    credentials = auth.lookup(ref.registry, authfile)
    scope = f"repository:{ref.repository}:pull"
    with Client(ref.api_host, [scope], credentials, tls_verify) as client:
        try:
            image_id = _pull(image_store, client, ref, platform, progress, max(1, jobs))
        finally:
            progress.close()
    image_store.emit("pull", image_id, name=ref.name, actor=str(ref))  # as Docker names them
    return image_id


def _pull(image_store: ImageStore, client, ref: Reference, platform, progress, jobs: int) -> str:
    repo = ref.repository
    shown = ref.name if ref.registry != DOCKER_HUB else repo
    progress.message(f"{ref.tag or ref.digest}: Pulling from {shown}")
    manifest, media, digest = client.get_manifest(repo, ref.digest or ref.tag)
    index_digest = None
    if media in INDEX_TYPES:
        index_digest = digest
        index = json.loads(manifest)
        chosen = [d for d in index.get("manifests", []) if isinstance(d, dict)
                  and platform_matches(d, platform)]
        if not chosen:
            raise NotFound(f"no image for {'/'.join(p for p in platform if p)} in {ref}")
        child = chosen[0].get("digest", "")
        if not is_digest(child):
            raise InvalidArgument(f"index of {ref} names a malformed digest")
        manifest, media, digest = client.get_manifest(repo, child)
        if media in INDEX_TYPES:
            raise InvalidArgument(f"index of {ref} points at another index")
    doc = json.loads(manifest)
    try:
        config_desc = doc["config"]
        layers = [(d["digest"], int(d["size"]), d.get("mediaType") or MEDIA_OCI_LAYER)
                  for d in doc["layers"]]
        config_digest, config_size = config_desc["digest"], int(config_desc["size"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument(f"malformed manifest for {ref}") from None
    for d, size, _ in layers + [(config_digest, config_size, "")]:
        if not is_digest(d) or size < 0:
            raise InvalidArgument(f"manifest for {ref} has a malformed descriptor")
    if config_size > MAX_CONFIG:
        raise InvalidArgument(f"config of {ref} is larger than {MAX_CONFIG} bytes")
    content = image_store.store.content
    sink = BlobSink(image_store)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pull")
    futures = {}
    arrivals: dict[str, Arrival] = {}
    try:
        if content.exists(config_digest):
            config = content.read(config_digest)
        else:
            if sink_fetch(client, repo, config_digest, config_size, content, lambda n: None, stop):
                sink.created.add(config_digest)
            config = content.read(config_digest)
        chains = _chains(config, len(layers))
        for i, (blob, size, _) in enumerate(layers):
            key = layer_key(blob)
            if blob in futures:
                continue
            # stored already: its blob (a pull cache), or its layer, unpacked, whose chain the
            # config names (the blob itself is not kept once its layer is)
            if content.exists(blob) or (chains[i] is not None
                                        and image_store.layers.exists(chains[i])):
                progress.add(key, size, "Already exists")
                futures[blob] = None
                continue
            progress.add(key, size, "Pulling fs layer")
            arrival = arrivals[blob] = Arrival()

            def fetch(blob=blob, size=size, key=key, arrival=arrival):
                progress.status(key, "Downloading")
                created = client.fetch_blob(repo, blob, size, content,
                                            lambda n: progress.advance(key, n), stop, arrival)
                progress.status(key, "Download complete")
                return created

            futures[blob] = arrival.future = pool.submit(fetch)

        followed: set[str] = set()

        def ready(i: int, follow: bool):
            blob = layers[i][0]
            if futures.get(blob) is None:
                return None
            if follow and blob not in followed:  # a blob listed twice is followed once
                followed.add(blob)
                return arrivals[blob].reader()
            futures[blob].result()
            return None

        tag = ref.local_tag()
        image_id = add_image(image_store, config, layers, [tag] if tag else [], manifest, ready=ready)
        if image_store.layers.keeps_pulled_blobs():
            image_store.layers.keep_blobs([b for b, _, _ in layers if content.exists(b)])
        for blob, _, _ in layers:
            if futures.get(blob) is not None:
                progress.status(layer_key(blob), "Pull complete")
        remember_sources(image_store, [b for b, _, _ in layers] + [config_digest, digest],
                          ref.registry, repo)  # the manifest's: inspect's RepoDigests
        if index_digest is not None:  # and the index's, the digest that names it there
            remember_name(image_store, digest, ref.registry, repo, index_digest)
        digest = index_digest or digest
        progress.message(f"Digest: {digest}")
        progress.message(f"Status: Downloaded newer image for {ref}")
        return image_id
    except BaseException:
        stop.set()
        for future in futures.values():
            if future is not None:
                future.cancel()
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for arrival in arrivals.values():
            arrival.finished()  # wakes a reader of a download that was cancelled unstarted
            arrival.close()
        for blob, future in futures.items():
            if future is not None and not future.cancelled() and future.exception() is None \
                    and future.result():
                sink.created.add(blob)
        drop_unused(image_store, sink.created)


def _chains(config: bytes, count: int) -> list:
    """The chain IDs of the layers a config lists (None each if it lists them badly: the
    image is refused later, by add_image)."""
    from ..digest import chain_ids

    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        if len(diff_ids) == count and all(is_digest(d) for d in diff_ids):
            return chain_ids(diff_ids)
    except (ValueError, KeyError, TypeError):
        pass
    return [None] * count


def sink_fetch(client, repo, digest, size, content, on_bytes, stop) -> bool:
    """Download one blob unless it is stored; True if this call created it."""
    if content.exists(digest):
        return False
    return client.fetch_blob(repo, digest, size, content, on_bytes, stop)
