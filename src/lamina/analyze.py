"""``image analyze``: where an image's bytes went, layer by layer (what ``dive`` shows).

    >>> report = analyze(engine.image_store, "app:1")
    >>> report["efficiency"], report["wasted_bytes"], report["layers"][1]["added"]

Everything comes from the layers' tar headers, read as a stream and never extracted
(:func:`layer_listing` is the one place that reads them: from the layer's tar-split record, whose
headers are the tar's, or from its blob when the layer keeps one). A layer never changes, so
its listing is kept in the store the first time it is read (:func:`encode_listing`, a table
beside the layer's row that goes with it): later analyses read that instead of the tar, a
fraction of a millisecond a layer against some 4 ms of CPU per 1,000 members. The layers are
stacked bottom to top as a union would stack them, which gives, for each layer:

* ``added``, ``changed``, ``removed``: entries that the layers below did not have, that they had
  (a directory listed again over a directory is neither: tars list parents again), and that the
  layer deletes (a whiteout, or an opaque directory hiding the lower entries; every entry under
  a deleted directory counts);
* ``wasted``: bytes of this layer's files that a later layer overwrites or deletes: they are
  still shipped and stored, and nobody sees them.

The image's ``wasted_bytes`` is their sum; ``top`` the paths that waste the most (with how many
layers added the path). ``efficiency`` is dive's image efficiency: per path, every time a layer
adds a file or deletes one (counted as the size it deletes) is one occurrence; the figure is the
sum over paths of the smallest occurrence divided by the sum of all occurrences (1 when the
layers hold no bytes). Unlike dive, a deleted directory counts as the deletion of each file in
it, and the wasted bytes are those of the hidden copies only (dive's "potential wasted space"
adds every copy of each path seen more than once, the surviving one included).
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array

from .errors import LaminaError
from .whiteouts import is_opaque_marker, is_whiteout_name, whited_out

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .images import ImageStore
    from .layers import LayerStore

DIRECTORY = -1  # a listing's size of a directory
_DIRECTORY = 0x35  # "5"
_REGULAR = 0x30  # "0" (NUL and "7" are reported as "0")


class LayerListing:
    """What one layer tar holds: ``entries`` maps each path (``etc/passwd``: no leading ``./``
    or ``/``, no trailing ``/``) to the bytes of its file data (0 for an entry that is not a
    regular file, :data:`DIRECTORY` for a directory), in tar order; ``deleted`` are the paths
    its whiteouts delete, ``opaque`` the directories it makes opaque."""

    __slots__ = ("deleted", "entries", "opaque")

    def __init__(self):
        self.entries: dict[bytes, int] = {}
        self.deleted: list[bytes] = []
        self.opaque: list[bytes] = []


def _clean(name: bytes) -> bytes:
    while name.startswith(b"./"):
        name = name[2:]
    return name.strip(b"/")


def layer_listing(layers: LayerStore, chain: str) -> LayerListing:
    """The listing of layer ``chain``'s tar, from its headers (its record's, or its blob's)."""
    from .layertar import list_members

    record = layers.record(chain)
    if record is not None:
        from .tarsplit import pieces

        kinds, names, sizes = list_members(pieces(record))
    else:
        from .layertar import CHUNK, open_layer_stream

        with layers.store.content.open(layers.get(chain)["blob_digest"], verify=False) as blob:
            stream = open_layer_stream(blob)
            kinds, names, sizes = list_members(iter(lambda: stream.read(CHUNK), b""))
    listing = LayerListing()
    joined = b"\0".join(names)
    if names and b".wh." not in joined and b"\0\0" not in joined and b"\0." not in joined \
            and b"\0/" not in joined and not joined.startswith((b".", b"/", b"\0")) \
            and not joined.endswith(b"\0"):
        # the common case, in bulk: no name to clean but of a trailing "/", no whiteout
        if b"/\0" in joined or joined.endswith(b"/"):
            names = [name.rstrip(b"/") for name in names]
        listing.entries = dict(zip(names, [
            size if kind == _REGULAR else DIRECTORY if kind == _DIRECTORY else 0
            for kind, size in zip(kinds, sizes)]))
        return listing
    entries = listing.entries
    for kind, name, size in zip(kinds, names, sizes):
        if name.endswith(b"/") or name.startswith((b".", b"/")):
            name = _clean(name)
            if not name or name == b".":
                continue
        if b".wh." in name:
            parent, _, base = name.rpartition(b"/")
            if base[:4] == b".wh.":  # never an entry of the tree itself
                if is_opaque_marker(base):
                    listing.opaque.append(parent)
                elif is_whiteout_name(base):
                    target = whited_out(base)
                    listing.deleted.append(parent + b"/" + target if parent else target)
                continue  # AUFS private files are not entries
        if kind == _REGULAR:
            entries[name] = size
        else:
            entries[name] = DIRECTORY if kind == _DIRECTORY else 0
    return listing


_LISTING = struct.Struct("<4sIII")  # magic, how many entries, deleted paths, opaque dirs
_LISTING_MAGIC = b"LLS1"


def encode_listing(listing: LayerListing) -> bytes | None:
    """The listing as the store keeps it (:meth:`LayerStore.keep_listings`): zlib of the
    counts, each entry's bytes (int64, little-endian) and the paths, NUL-separated; None for
    a listing whose paths hold a NUL (a PAX path may), which is not kept."""
    entries = listing.entries
    names = [*entries, *listing.deleted, *listing.opaque]
    joined = b"\0".join(names)
    if joined.count(b"\0") != max(len(names) - 1, 0):
        return None
    sizes = array("q", entries.values())
    if sys.byteorder == "big":
        sizes.byteswap()
    head = _LISTING.pack(_LISTING_MAGIC, len(entries), len(listing.deleted),
                         len(listing.opaque))
    return zlib.compress(head + sizes.tobytes() + joined, 1)


def decode_listing(data: bytes) -> LayerListing | None:
    """The listing that :func:`encode_listing` gave ``data``; None if ``data`` is not one."""
    try:
        data = zlib.decompress(data)
        magic, count, deleted, opaque = _LISTING.unpack_from(data)
    except (zlib.error, struct.error):
        return None
    start = _LISTING.size + 8 * count
    names = data[start:].split(b"\0") if count + deleted + opaque else []
    if magic != _LISTING_MAGIC or len(data) < start or len(names) != count + deleted + opaque:
        return None
    sizes = array("q")
    sizes.frombytes(data[_LISTING.size:start])
    if sys.byteorder == "big":
        sizes.byteswap()
    listing = LayerListing()
    listing.entries = dict(zip(names[:count], sizes))
    listing.deleted = names[count:count + deleted]
    listing.opaque = names[count + deleted:]
    return listing


class _Tree:
    """The stacked view: each path's bytes (:data:`DIRECTORY` for a directory) and the layer
    that put it there. Deleting a path deletes what is under it as a union's directory tree
    holds it: its children, theirs, and so on (an entry whose parent is no entry, in a tar
    that leaves a directory out, is not reached). Children are found in a sorted list of the
    paths, kept up to date only when a deletion needs it."""

    def __init__(self):
        self.sizes: dict[bytes, int] = {}
        self.owners: dict[bytes, int] = {}
        self.parents: set[bytes] = set()  # parent paths of the entries (and of some gone)
        self.order: list[bytes] = []  # sorted paths, some gone, some twice
        self.unsorted: list[bytes] = []  # paths added since ``order`` was sorted

    def add_all(self, entries: dict[bytes, int], index: int, new) -> None:
        """Add ``entries`` (of layer ``index``) whose paths ``new`` the tree did not have."""
        self.sizes.update(entries)
        self.owners.update(dict.fromkeys(entries, index))
        self.unsorted.extend(new)
        self.parents.update([path.rpartition(b"/")[0] for path in new])

    def add(self, path: bytes, size: int, index: int) -> None:
        if path not in self.sizes:
            self.unsorted.append(path)
            self.parents.add(path.rpartition(b"/")[0])
        self.sizes[path] = size
        self.owners[path] = index

    def remove(self, path: bytes, removed: list) -> None:
        """Remove ``path`` and everything under it, appending (path, layer, bytes) to
        ``removed`` (``path``'s first)."""
        size = self.sizes.pop(path, None)
        if size is not None:
            removed.append((path, self.owners.pop(path), size))
            self.clear_under(path, removed)

    def clear_under(self, directory: bytes, removed: list) -> None:
        """Remove everything under ``directory`` (an opaque directory hides the lower ones)."""
        if directory not in self.parents:
            return
        from bisect import bisect_left

        if self.unsorted:
            self.order = sorted(self.order + self.unsorted)
            self.unsorted = []
        order, sizes, owners = self.order, self.sizes, self.owners
        reached = {directory}
        if directory:  # the paths that start with "directory/" sort between these two
            start = bisect_left(order, directory + b"/")
            order = order[start:bisect_left(order, directory + b"0", start)]
        for path in order:
            if path in sizes and path not in reached and path.rpartition(b"/")[0] in reached:
                reached.add(path)
                removed.append((path, owners.pop(path), sizes.pop(path)))


def analyze(images: ImageStore, name: str, top: int = 10) -> dict:
    """The analysis of image ``name``: its layers (bottom first, each with its instruction,
    size, added/changed/removed counts and wasted bytes), ``wasted_bytes``, the ``top`` paths
    that waste the most, and dive's ``efficiency``."""
    image_id = images.resolve(name)
    config = images.config(image_id)
    rows = images.layer_rows(image_id)
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    tree = _Tree()
    sizes, owners = tree.sizes, tree.owners
    layers = []
    wasted_by_path: dict[bytes, int] = {}
    listed: list[dict[bytes, int]] = []  # each layer's entries (how many added a path: top)
    occurrences: dict[bytes, int] = {}  # path -> bytes of all its occurrences (dive)
    smallest: dict[bytes, int] = {}  # path -> its smallest occurrence (dive)

    def occur(path: bytes, size: int) -> None:
        occurrences[path] = occurrences.get(path, 0) + size
        known = smallest.get(path)
        if known is None or size < known:
            smallest[path] = size

    def waste(path: bytes, index: int, size: int) -> None:
        if size != DIRECTORY:
            layers[index]["wasted"] += size
            wasted_by_path[path] = wasted_by_path.get(path, 0) + size

    made: dict[str, bytes] = {}  # listings read from a tar this time, to keep
    for index, row in enumerate(rows):
        chain = row["chain_id"]
        kept = images.layers.listing(chain)
        listing = decode_listing(kept) if kept is not None else None
        if listing is None:
            listing = layer_listing(images.layers, chain)
            data = encode_listing(listing)
            if data is not None:
                made[chain] = data
        entries = listing.entries
        listed.append(entries)
        entry = history[index] if index < len(history) else {}
        layer = {"index": index, "diff_id": row["diff_id"], "size": row["size"],
                 "created_by": entry.get("created_by", ""), "comment": entry.get("comment", ""),
                 "added": 0, "changed": 0, "removed": 0, "wasted": 0}
        layers.append(layer)
        lower = entries.keys() & sizes.keys()
        layer["added"] = len(entries) - len(lower)
        layer["changed"] = sum(1 for path in lower
                               if entries[path] != DIRECTORY or sizes[path] != DIRECTORY)
        removed: list = []
        for path in listing.deleted:
            tree.remove(path, removed)
        for directory in listing.opaque:
            tree.clear_under(directory, removed)
        for path, owner, size in removed:
            waste(path, owner, size)
            if size != DIRECTORY:
                occur(path, size)
            if path not in entries:
                layer["removed"] += 1
        lower = entries.keys() & sizes.keys() if removed else lower
        if any(sizes[path] == DIRECTORY and entries[path] != DIRECTORY for path in lower):
            # a file over a directory hides what the directory held: one path at a time, in
            # the tar's order (this layer's own entries under it may go too)
            for path, size in entries.items():
                old = sizes.get(path)
                if old is not None:
                    waste(path, owners[path], old)
                    if old == DIRECTORY and size != DIRECTORY:
                        hidden: list = []
                        tree.remove(path, hidden)
                        for below, owner, below_size in hidden[1:]:
                            waste(below, owner, below_size)
                            if below_size != DIRECTORY:
                                occur(below, below_size)
                if size != DIRECTORY:
                    occur(path, size)
                tree.add(path, size, index)
            continue
        for path in lower:
            waste(path, owners[path], sizes[path])
        files = {path: size for path, size in entries.items() if size != DIRECTORY}
        seen = files.keys() & occurrences.keys()
        before = {path: (occurrences[path], smallest[path])
                  for path in seen}
        occurrences.update(files)
        smallest.update(files)
        for path, (total, least) in before.items():
            size = files[path]
            occurrences[path] = total + size
            smallest[path] = min(least, size)
        tree.add_all(entries, index, entries.keys() - lower)
    if made:
        try:
            images.layers.keep_listings(made)
        except LaminaError:  # a read-only store, a full disk: read from the tars next time
            pass
    total = sum(occurrences.values())
    efficiency = sum(smallest.values()) / total if total else 1.0
    worst = sorted(wasted_by_path.items(), key=lambda item: (-item[1], item[0]))
    return {
        "image": image_id,
        "name": name,
        "size": sum(layer["size"] for layer in layers),
        "layers": layers,
        "wasted_bytes": sum(wasted_by_path.values()),
        "wasted_paths": sum(1 for size in wasted_by_path.values() if size),
        "efficiency": efficiency,
        "top": [{"path": "/" + path.decode(errors="surrogateescape"),
                 "count": sum(1 for entries in listed
                              if entries.get(path, DIRECTORY) != DIRECTORY),
                 "wasted": size} for path, size in worst[:max(top, 0)] if size],
    }
