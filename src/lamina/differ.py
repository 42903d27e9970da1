"""Layers in and out of snapshots: apply a layer tar, list changes, write a diff tar.

This is the generic part that every driver gets for free: it needs only a snapshot's own data
directory, its ancestors' and the driver's on-disk format ("overlay": whiteouts as 0/0 char devices
and opaque xattrs, each layer holding only its changes; "aufs": the same with ``.wh.`` files, as in
the tar; "plain": full trees).
"""

from .snapshots import Snapshotter


def apply(snaps: Snapshotter, key: str, stream, digest: str | None = None,
          record: bool = False, sources: dict | None = None):
    """Extract the (decompressed) layer tar ``stream`` into the active snapshot ``key``;
    ``digest``: the stream's sha256 if known already, ``record``: make its tar-split record
    too, ``sources``: reflink files from where the tar's writer read them (see
    layertar.apply_tar)."""
    from .layertar import apply_tar

    fmt = snaps.fmt if snaps.stat(key).parent is not None else "plain"
    return apply_tar(stream, snaps.dir(key), fmt, digest, record, sources)


def changes(snaps: Snapshotter, key: str) -> list:
    """Docker's A/C/D changes of ``key`` against its parent, sorted by path."""
    from .changes import overlay_changes, tree_changes

    own = snaps.dir(key)
    if snaps.fmt == "overlay":
        return overlay_changes(own, snaps.lower_dirs(key))
    if snaps.fmt == "aufs":
        from .union import branch_changes

        return branch_changes(own, snaps.lower_dirs(key))
    parent = snaps.stat(key).parent
    return tree_changes(snaps.dir(parent) if parent is not None else None, own)


def write_diff(snaps: Snapshotter, key: str, out, sources: dict | None = None):
    """Write ``key``'s changes as an OCI layer tar to ``out``; returns layertar.TarStats.
    ``sources``: filled with the files read (see layertar.TarWriter)."""
    return diff_writer(snaps, key, sources)(out)


def diff_writer(snaps: Snapshotter, key: str, sources: dict | None = None,
                found: list | None = None):
    """:func:`write_diff` as ``write(out)``, with what it needs from the store's database read
    now, in the caller's thread: ``write`` runs in a helper thread (LayerStore.add_written) while
    the caller writes through the same connection, and a query in flight there makes the
    caller's ``BEGIN IMMEDIATE`` an upgrade of a read transaction, which SQLite refuses at once
    ("database is locked", no busy wait) when another process has written meanwhile.
    ``found``: ``key``'s :func:`changes` if the caller has them (a plain tree's are a walk of both
    trees), else they are found here where the writer needs them."""
    from .layertar import write_changes_tar, write_overlay_tar

    own = snaps.dir(key)
    if snaps.fmt == "overlay":
        return lambda out: write_overlay_tar(out, own, sources)
    if snaps.fmt == "aufs":
        from .layertar import write_aufs_tar

        return lambda out: write_aufs_tar(out, own, sources)
    if found is None:
        found = changes(snaps, key)
    return lambda out: write_changes_tar(out, own, found, sources)
