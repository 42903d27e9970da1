"""Garbage collection: prune containers and images, and say exactly how many bytes went.

Removal reuses the stores' own paths (:meth:`ContainerStore.remove`, :meth:`ImageStore.delete`),
which delete a layer only when no image uses it and no snapshot stands on it: that reference
count is the mark, the deletion the sweep. The bytes reported are the same layer sizes
``system df`` adds up, so what ``df`` calls reclaimable is what a prune reclaims.
"""

from __future__ import annotations

from .claims import referenced_blobs
from .errors import FailedPrecondition, NotFound
from .faults import point

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .containers import ContainerStore
    from .images import ImageStore

__all__ = ["prune_containers", "prune_images", "prune_system", "referenced_blobs"]


def prune_containers(containers: ContainerStore, only=None) -> tuple[list[str], int]:
    """Remove every container that is not running and that no command is using (lamina.uses),
    of those whose ``ps`` row ``only(row)`` accepts if given (the API's prune filters); returns
    (ids, bytes of their writable layers)."""
    removed, size = [], 0
    for row in containers.list(all=True):
        if row["State"] in ("running", "restarting") or (only is not None and not only(row)):
            continue
        try:  # another process may remove it meanwhile (then it is not this prune's to count),
            rw = containers.remove(row["ID"], measure=True)[1]  # start it, or use it (cp, commit):
        except (NotFound, FailedPrecondition):  # rm refuses those, and this prune leaves them
            continue
        removed.append(row["ID"])
        size += rw
        point("gc.sweep")
    return removed, size


def prune_images(images: ImageStore, all: bool = False,
                 build_cache: bool = False) -> tuple[list[str], int]:
    """Remove dangling images (untagged, unused), or with ``all`` every image no container uses.
    A build's intermediate states are build cache: kept unless ``all`` or ``build_cache``.
    Returns Docker's ``Untagged:``/``Deleted:`` lines and the layer bytes reclaimed."""
    lines: list[str] = []
    reclaimed: list[int] = []
    while True:  # deleting an image can leave another one dangling (a parent): repeat
        with images.store.tx():
            rows = images.unused(dangling_only=not all)
            keep = set() if all or build_cache else images.build_states()
            rows = [image_id for image_id in rows if image_id not in keep]
            for image_id in rows:
                lines += [f"Untagged: {t}" for t in images.tags(image_id)]
                lines += images.delete(image_id, reclaimed)
        if not rows:
            break
        point("gc.sweep")
    return lines, sum(reclaimed)


def prune_build_cache(images: ImageStore) -> tuple[list[str], int]:
    """``builder prune``: a build's intermediate states that nothing uses or names, and every
    cache mount (``RUN --mount=type=cache``) no build is using. Returns (deleted state IDs,
    bytes reclaimed)."""
    from .cachemounts import prune_caches

    deleted: list[str] = []
    reclaimed: list[int] = []
    while True:  # removing a state can leave its parent state unused: repeat
        with images.store.tx():
            rows = sorted(images.build_states() & set(images.unused(dangling_only=True)))
            for image_id in rows:
                images.delete(image_id, reclaimed)
                deleted.append(image_id)
        if not rows:
            break
        point("gc.sweep")
    _count, cache_bytes = prune_caches(images.store.root)
    return deleted, sum(reclaimed) + cache_bytes


def prune_system(containers: ContainerStore, all: bool = False, volumes: bool = False) -> dict:
    """``system prune``: stopped containers, then dangling (or all unused) images and the build
    cache (its states and its cache mounts), then, if asked, unused volumes."""
    removed, container_bytes = prune_containers(containers)
    image_lines, image_bytes = prune_images(containers.images, all=all, build_cache=True)
    from .cachemounts import prune_caches

    _count, cache_bytes = prune_caches(containers.store.root)  # RUN --mount=type=cache
    result = {"Containers": removed, "Images": image_lines,
              "Reclaimed": container_bytes + image_bytes + cache_bytes, "Volumes": []}
    if volumes:
        from . import volumes as volume_store

        result["Volumes"], extra = volume_store.prune(containers.store)
        result["Reclaimed"] += extra
    return result
