"""Images into the store from blobs already in it: :func:`add_image` extracts each layer that is
not stored yet into a snapshot and commits it under its chain ID, in order (each layer on its
parent: vfs, overlay) or all at once (each into a snapshot of its own, stacked afterwards:
overlay2, union). Pull and load both end here; a pull's layers are extracted while they arrive."""

from __future__ import annotations

import json

from ..digest import chain_ids, is_digest, sha256_bytes
from ..errors import InvalidArgument, LaminaError
from ..layers import facts
from ..metadata import Transaction
from .blobs import CHUNK

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..images import ImageStore


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
            if image_store.row(image_id) is None:
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
        stored = image_store.layers.exists(chain)
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
            if not image_store.layers.exists(chain)]
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
                    stats, data_bytes = jobs[i].result()
                except _Cancelled:  # report the layer that failed, not one it stopped
                    pool.shutdown(wait=True)
                    for job in jobs.values():
                        error = job.exception()
                        if error is not None and not isinstance(error, _Cancelled):
                            raise error from None
                    raise
                _check_diff_id(digest, stats.diff_id, diff_ids[i])
                layer = facts(chains[i], parent, stats, data_bytes)
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
    """Extract one layer blob into ``root`` (a worker thread) with its tar-split record;
    returns (its TarStats, the disk use of ``root``)."""
    from ..fsutil import disk_usage
    from ..layertar import apply_tar, is_plain, open_layer_stream

    with blob:
        source = _Cancellable(blob, cancel)
        try:
            stream = open_layer_stream(source)  # a plain layer's diff_id: its (checked) digest
            stats = apply_tar(stream, root, fmt, digest if is_plain(stream) else None,
                              record=True)
            while source.read(CHUNK):  # the digest check happens at the blob's end
                pass
        except Exception as error:
            if not isinstance(error, _Cancelled):
                cancel.set()  # the other layers stop: this image cannot be stored
            _raise_failure(blob)  # a bad download explains a bad tar best
            raise
    return stats, disk_usage([root])


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
