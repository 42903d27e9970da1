"""The store's cache mounts (``RUN --mount=type=cache``): where they live, what they hold, and
their removal by ``builder prune`` and ``system prune``.

Each cache is a directory ``build-mounts/<sha256(id)[:32]>`` of the store, with a lock file beside
it: a build holds the lock (shared, or exclusive for ``sharing=locked|private``) while a RUN uses
the cache, and a prune removes only the caches whose lock it can take.
"""

from __future__ import annotations

import os

from .digest import sha256_bytes

__all__ = ["MOUNTS_DIR", "cache_dir", "cache_usage", "prune_caches"]

MOUNTS_DIR = "build-mounts"


def cache_dir(store_root: str, cache_id: str) -> str:
    """The directory of the cache ``cache_id`` (it may not exist yet)."""
    return os.path.join(store_root, MOUNTS_DIR, sha256_bytes(cache_id.encode())[7:39])


def _names(top: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(top) if not n.endswith((".lock", ".new")))
    except FileNotFoundError:
        return []


def cache_usage(store_root: str) -> tuple[int, int]:
    """(number of cache mounts, bytes they hold) of a store."""
    from .fsutil import tree_usage

    top = os.path.join(store_root, MOUNTS_DIR)
    names = _names(top)
    return len(names), sum(tree_usage(os.path.join(top, n))[0] for n in names)


def prune_caches(store_root: str) -> tuple[int, int]:
    """Remove every cache mount no build is using; returns (count, bytes) removed."""
    import fcntl

    from .fsutil import remove_tree, tree_usage

    top = os.path.join(store_root, MOUNTS_DIR)
    count = size = 0
    for name in _names(top):
        path = os.path.join(top, name)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a build uses it now
            size += tree_usage(path)[0]
            remove_tree(path)
            os.unlink(path + ".lock")
            count += 1
        finally:
            os.close(fd)
    return count, size
