"""``system df``: disk use by images, containers, volumes, the build cache and the store itself.

Each layer is counted once however many images share it, and once only: its files live in its
snapshot, its tar is not kept (a tar-split record gives it back). The figures come from sizes
measured when each layer was stored (its files' bytes, and what its snapshot takes on disk as
``du -sb`` counts it), never from a walk of the layers; the writable layers and volumes are
measured now, as ``ps -s`` does. The "Store Overhead" row is everything else the store's
directory holds: the database (metadata and tar-split records), the blobs it keeps (configs,
manifests, a pull cache), directories, whiteouts and driver files of layers and containers,
bundles. So the rows add up to ``du -sb`` of the store's root (tested to within 1%). ``du`` does
not see data blocks that files share (``system dedup``): ``Shared`` says how many bytes of the
rows are stored once, so that the store takes their sum less that on the filesystem.
"""

from __future__ import annotations

import os

from . import volumes
from .errors import LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .containers import ContainerStore


def system_df(containers: ContainerStore) -> dict:
    """Disk use by images and containers, from reference counts: each layer is counted once."""
    images_store = containers.images
    layers = containers.layers.sizes()
    disk = containers.layers.disk_sizes()
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
    volume_rows = volume_summary.pop("Volumes")
    counted = image_total + cache_size + mount_size + container_total + volume_summary["Size"]
    overhead = store_overhead(containers, layers, disk, visible_layers | cache_layers, rows,
                              volume_summary["Size"], mount_size)
    from .dedup import saved_bytes

    shared_files, shared_bytes = saved_bytes(containers.store.db)
    layer_rows = [{"ID": chain, "Size": layers[chain], "DiskSize": disk.get(chain, 0),
                   "Images": users.get(chain, 0),
                   "Shared": users.get(chain, 0) > 1} for chain in sorted(layers)]
    return {
        "Images": images,
        "Containers": rows,
        "Volumes": volume_rows,
        "Layers": layer_rows,
        "Overhead": overhead,
        # bytes that `system dedup` made identical files share: counted in every row above (as
        # `du` counts them), stored once on disk
        "Shared": {"Files": shared_files, "Bytes": shared_bytes},
        "Summary": [
            {"Type": "Images", "TotalCount": len(images), "Active": len(active_images),
             "Size": image_total, "Reclaimable": image_reclaimable},
            {"Type": "Containers", "TotalCount": len(rows),
             "Active": sum(1 for c in rows if c["State"] == "running"),
             "Size": container_total, "Reclaimable": container_reclaimable},
            volume_summary,
            {"Type": "Build Cache", "TotalCount": len(states) + mount_count, "Active": 0,
             "Size": cache_size + mount_size, "Reclaimable": cache_size + mount_size},
            {"Type": "Store Overhead", "TotalCount": overhead["Records"], "Active": 0,
             "Size": overhead["Size"], "Reclaimable": 0},
        ],
        "Counted": counted,
    }


def store_overhead(containers: ContainerStore, layers: dict[str, int], disk: dict[str, int],
                   counted_layers: set[str], rows: list[dict], volume_bytes: int,
                   cache_mount_bytes: int = 0) -> dict:
    """What the store's directory holds beyond the bytes of files in images, containers and
    volumes: ``Metadata`` (the database, ``Records`` tar-split records among it, ``RecordBytes``
    theirs), ``Blobs`` (kept blobs: configs, manifests, a pull cache), ``Layers`` (directories,
    whiteouts and driver files of layers, and the layers no image row counts), ``Containers``
    (the same for writable and init layers, and bundles) and ``Other``; ``Size`` their sum.
    Layers are never walked: their disk use was measured when they were stored."""
    from .fsutil import disk_usage

    store = containers.store
    root = store.root
    db = store.db
    metadata = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            metadata += os.lstat(os.path.join(root, "lamina.db" + suffix)).st_size
        except FileNotFoundError:
            pass
    records, record_bytes = db.execute(
        "SELECT count(record), coalesce(sum(length(record)), 0) FROM tar_split").fetchone()
    blobs = disk_usage([os.path.join(root, "blobs")])
    layer_bytes = sum(disk.get(c, 0) - (layers[c] if c in counted_layers else 0) for c in layers)
    snaps = store.snaps
    layer_keys = set(layers)
    other_snapshots = 0
    for key, in db.execute("SELECT key FROM snapshots").fetchall():
        if key not in layer_keys:
            try:
                other_snapshots += snaps.disk_usage(key)
            except LaminaError:  # removed meanwhile
                continue
    container_bytes = other_snapshots - sum(c["SizeRw"] for c in rows)
    data_root = os.path.join(root, store.driver)
    driver_files = os.lstat(data_root).st_size if os.path.exists(data_root) else 0
    for sub in ("l", "dir"):  # overlay2's short links, vfs's and union's directory of layers
        path = os.path.join(data_root, sub)
        if os.path.isdir(path):
            driver_files += disk_usage([path], {}) if sub == "l" else os.lstat(path).st_size
    volume_dir = os.path.join(root, "volumes")
    volumes_extra = disk_usage([volume_dir]) - volume_bytes if os.path.isdir(volume_dir) else 0
    mounts_dir = os.path.join(root, "mounts")
    mounts = 0
    if os.path.isdir(mounts_dir):  # mount points: the directories, not what is mounted on them
        mounts = os.lstat(mounts_dir).st_size + sum(
            os.lstat(os.path.join(mounts_dir, n)).st_size for n in os.listdir(mounts_dir))
    skip = {"lamina.db", "lamina.db-wal", "lamina.db-shm", "lamina.db-journal", "blobs",
            store.driver, "volumes", "mounts"}
    other = os.lstat(root).st_size + disk_usage(
        [os.path.join(root, n) for n in os.listdir(root) if n not in skip])
    other -= cache_mount_bytes  # the files of RUN --mount=type=cache: the Build Cache row's
    parts = {"Metadata": metadata, "Records": records, "RecordBytes": record_bytes,
             "Blobs": blobs, "Layers": layer_bytes + driver_files,
             "Containers": container_bytes, "Volumes": volumes_extra, "Other": other + mounts}
    parts["Size"] = metadata + blobs + parts["Layers"] + container_bytes + volumes_extra + \
        parts["Other"]
    return parts
