"""Garbage collection: prune containers and images, and say exactly how many bytes went.

Removal reuses the engine's own paths (``rm``, ``_delete_image``), which delete a layer only when
no image uses it and no snapshot stands on it: that reference count is the mark, the deletion the
sweep. The bytes reported are the same layer sizes ``system df`` adds up, so what ``df`` calls
reclaimable is what a prune reclaims.
"""

from .faults import point


def referenced_blobs(engine) -> set[str]:
    """Every blob the store's images and layers point at: configs, manifests, the blobs layers
    were stored from, and every blob a manifest lists (a pulled layer may be listed by its
    compressed blob while the layer row names the one it was first stored from)."""
    import json

    from .errors import LaminaError

    used = {r[0] for r in engine.db.execute("SELECT blob_digest FROM layers")}
    for image_id, manifest_digest in engine.db.execute("SELECT id, manifest_digest FROM images"):
        used.add(image_id)
        used.add(manifest_digest)
        try:
            doc = json.loads(engine.content.read(manifest_digest))
        except (LaminaError, ValueError):
            continue
        used.update(d.get("digest") for d in doc.get("layers") or [] if isinstance(d, dict))
    return used


def prune_containers(engine) -> tuple[list[str], int]:
    """Remove every container that is not running and that no command is using (lamina.uses);
    returns (ids, bytes of their writable layers)."""
    removed, size = [], 0
    from .errors import FailedPrecondition, NotFound

    for row in engine.containers(all=True):
        if row["State"] == "running":
            continue
        try:  # another process may remove it meanwhile (then it is not this prune's to count),
            rw = engine._remove(row["ID"], measure=True)[1]  # start it, or use it (cp, commit):
        except (NotFound, FailedPrecondition):  # rm refuses those, and this prune leaves them
            continue
        removed.append(row["ID"])
        size += rw
        point("gc.sweep")
    return removed, size


def prune_images(engine, all: bool = False, build_cache: bool = False) -> tuple[list[str], int]:
    """Remove dangling images (untagged, unused), or with ``all`` every image no container uses.
    A build's intermediate states are build cache: kept unless ``all`` or ``build_cache``.
    Returns Docker's ``Untagged:``/``Deleted:`` lines and the layer bytes reclaimed."""
    lines: list[str] = []
    reclaimed: list[int] = []
    while True:  # deleting an image can leave another one dangling (a parent): repeat
        with engine._tx():
            rows = engine.db.execute(
                "SELECT i.id FROM images i WHERE NOT EXISTS"
                " (SELECT 1 FROM containers c WHERE c.image_id = i.id)"
                + ("" if all else " AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.image_id = i.id)")
                + " ORDER BY i.added DESC").fetchall()
            keep = set() if all or build_cache else engine._build_states()
            rows = [row for row in rows if row[0] not in keep]
            for (image_id,) in rows:
                lines += [f"Untagged: {t}" for t in engine._tags(image_id)]
                lines += engine._delete_image(image_id, reclaimed)
        if not rows:
            break
        point("gc.sweep")
    return lines, sum(reclaimed)


def prune_system(engine, all: bool = False, volumes: bool = False) -> dict:
    """``system prune``: stopped containers, then dangling (or all unused) images, then, if asked,
    unused volumes; and the build cache when the builder keeps one."""
    containers, container_bytes = prune_containers(engine)
    image_lines, image_bytes = prune_images(engine, all=all, build_cache=True)
    result = {"Containers": containers, "Images": image_lines,
              "Reclaimed": container_bytes + image_bytes, "Volumes": []}
    if volumes and hasattr(engine, "volume_prune"):
        pruned = engine.volume_prune()
        if isinstance(pruned, tuple):
            result["Volumes"], extra = pruned
            result["Reclaimed"] += extra or 0
        else:
            result["Volumes"] = pruned
    return result
