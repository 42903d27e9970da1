"""``system df``: disk use by images, containers, volumes and the build cache.

Each layer is counted once however many images share it: the figures come from the layer sizes
measured when each layer was stored, and the writable layers and volumes as measured now, so
``du`` of the store and these numbers agree.
"""

from __future__ import annotations

from . import volumes

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .containers import ContainerStore


def system_df(containers: ContainerStore) -> dict:
    """Disk use by images and containers, from reference counts: each layer is counted once."""
    images_store = containers.images
    layers = containers.layers.sizes()
    image_layers: dict[str, list[str]] = {}
    users: dict[str, int] = {}
    for r in images_store.all_layer_links():
        image_layers.setdefault(r[0], []).append(r[1])
        users[r[1]] = users.get(r[1], 0) + 1
    rows = containers.list(all=True, size=True)
    active_images = {c["ImageID"] for c in rows}
    in_use = {chain for image in active_images for chain in image_layers.get(image, [])}
    # a build's intermediate states are the "Build Cache" row: their layers that no image
    # uses, all reclaimable; the Images rows are the images `lamina images` lists
    states = images_store.build_states() - active_images
    visible_layers = {c for image, chains in image_layers.items() if image not in states
                      for c in chains}
    cache_layers = {c for image in states for c in image_layers.get(image, [])} - visible_layers
    cache_size = sum(layers[c] for c in cache_layers)
    images = []
    for img in images_store.rows():
        if img["id"] in states:
            continue
        chains = image_layers.get(img["id"], [])
        shared = sum(layers[c] for c in chains if users[c] > 1)
        tags = images_store.tags(img["id"])
        images.append({"ID": img["id"], "Repository": tags[0].rpartition(":")[0] if tags else "<none>",
                       "Tag": tags[0].rpartition(":")[2] if tags else "<none>",
                       "CreatedAt": img["created"], "Size": img["size"], "SharedSize": shared,
                       "UniqueSize": img["size"] - shared,
                       "Containers": sum(1 for c in rows if c["ImageID"] == img["id"])})
    image_total = sum(layers[c] for c in visible_layers)
    image_reclaimable = sum(layers[c] for c in visible_layers if c not in in_use)
    container_total = sum(c["SizeRw"] for c in rows)
    container_reclaimable = sum(c["SizeRw"] for c in rows if c["State"] != "running")
    volume_summary = volumes.summary(containers.store)
    from .cachemounts import cache_usage

    mount_count, mount_size = cache_usage(containers.store.root)  # RUN --mount=type=cache
    return {
        "Images": images,
        "Containers": rows,
        "Volumes": volume_summary.pop("Volumes"),
        "Summary": [
            {"Type": "Images", "TotalCount": len(images), "Active": len(active_images),
             "Size": image_total, "Reclaimable": image_reclaimable},
            {"Type": "Containers", "TotalCount": len(rows),
             "Active": sum(1 for c in rows if c["State"] == "running"),
             "Size": container_total, "Reclaimable": container_reclaimable},
            volume_summary,
            {"Type": "Build Cache", "TotalCount": len(states) + mount_count, "Active": 0,
             "Size": cache_size + mount_size, "Reclaimable": cache_size + mount_size},
        ],
    }
