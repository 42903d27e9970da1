"""``image analyze``: where an image's bytes went, layer by layer (what ``dive`` shows).

    >>> report = analyze(engine.image_store, "app:1")
    >>> report["efficiency"], report["wasted_bytes"], report["layers"][1]["added"]

Everything comes from the layers' tar headers, read as a stream and never extracted
(:func:`layer_listing` is the one place that reads them: from the layer's tar-split record, whose
headers are the tar's, or from its blob when the layer keeps one). The layers are stacked bottom
to top as a union would stack them, which gives, for each layer:

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

import contextlib

from .layertar import TarMembers, open_layer_stream
from .whiteouts import is_opaque_marker, is_reserved_name, is_whiteout_name, whited_out

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .images import ImageStore
    from .layers import LayerStore

_DIRECTORY = 0x35  # "5"
_REGULAR = 0x30  # "0" (NUL and "7" are reported as "0")


class LayerListing:
    """What one layer tar holds: ``entries`` maps each path (``etc/passwd``: no leading ``./``
    or ``/``, no trailing ``/``) to (is a directory, bytes of file data); ``deleted`` are the
    paths its whiteouts delete, ``opaque`` the directories it makes opaque."""

    __slots__ = ("deleted", "entries", "opaque")

    def __init__(self):
        self.entries: dict[bytes, tuple[bool, int]] = {}
        self.deleted: list[bytes] = []
        self.opaque: list[bytes] = []


def _clean(name: bytes) -> bytes:
    while name.startswith(b"./"):
        name = name[2:]
    return name.strip(b"/")


def layer_listing(layers: LayerStore, chain: str) -> LayerListing:
    """The listing of layer ``chain``'s tar, from its headers (its record's, or its blob's)."""
    listing = LayerListing()
    entries = listing.entries
    record = layers.record(chain)
    if record is not None:  # in memory: read without a helper thread
        from .tarsplit import HeaderReader

        opened, stream = HeaderReader(record), None
    else:
        opened = layers.store.content.open(layers.get(chain)["blob_digest"], verify=False)
        stream = open_layer_stream(opened)
    with contextlib.closing(opened) as raw:
        members = TarMembers(raw, names_only=True) if stream is None else \
            TarMembers(stream, names_only=True)
        for member in members:
            path = _clean(member.name)
            if not path or path == b".":
                continue
            parent, _, name = path.rpartition(b"/")
            if is_reserved_name(name):
                if is_opaque_marker(name):
                    listing.opaque.append(parent)
                elif is_whiteout_name(name):
                    target = whited_out(name)
                    listing.deleted.append(parent + b"/" + target if parent else target)
                continue  # AUFS private files are not entries
            kind = member.kind
            entries[path] = (kind == _DIRECTORY, member.size if kind == _REGULAR else 0)
    return listing


class _Tree:
    """The stacked view: each path's entry (layer index, is a directory, bytes) and each
    directory's children, so that deleting a directory finds what it held."""

    def __init__(self):
        self.entries: dict[bytes, tuple[int, bool, int]] = {}
        self.children: dict[bytes, set[bytes]] = {}

    def add(self, path: bytes, entry: tuple[int, bool, int]) -> None:
        if path not in self.entries:
            parent = path.rpartition(b"/")[0]
            siblings = self.children.get(parent)
            if siblings is None:
                self.children[parent] = {path}
            else:
                siblings.add(path)
        self.entries[path] = entry

    def remove(self, path: bytes, removed: list) -> None:
        """Remove ``path`` and everything under it, appending (path, entry) to ``removed``."""
        entry = self.entries.pop(path, None)
        if entry is None:
            return
        self.children.get(path.rpartition(b"/")[0], set()).discard(path)
        removed.append((path, entry))
        for child in self.children.pop(path, ()):
            self.remove(child, removed)

    def clear_under(self, directory: bytes, removed: list) -> None:
        """Remove everything under ``directory`` (an opaque directory hides the lower ones)."""
        for child in list(self.children.get(directory, ())):
            self.remove(child, removed)


def analyze(images: ImageStore, name: str, top: int = 10) -> dict:
    """The analysis of image ``name``: its layers (bottom first, each with its instruction,
    size, added/changed/removed counts and wasted bytes), ``wasted_bytes``, the ``top`` paths
    that waste the most, and dive's ``efficiency``."""
    image_id = images.resolve(name)
    config = images.config(image_id)
    rows = images.layer_rows(image_id)
    history = [h for h in config.get("history", []) if not h.get("empty_layer")]
    tree = _Tree()
    layers = []
    wasted_by_path: dict[bytes, int] = {}
    copies: dict[bytes, int] = {}  # path -> how many layers added it as a file
    occurrences: dict[bytes, int] = {}  # path -> bytes of all its occurrences (dive)
    smallest: dict[bytes, int] = {}  # path -> its smallest occurrence (dive)

    def occur(path: bytes, size: int) -> None:
        occurrences[path] = occurrences.get(path, 0) + size
        known = smallest.get(path)
        if known is None or size < known:
            smallest[path] = size

    def waste(path: bytes, entry: tuple[int, bool, int]) -> None:
        index, is_dir, size = entry
        if not is_dir:
            layers[index]["wasted"] += size
            wasted_by_path[path] = wasted_by_path.get(path, 0) + size

    for index, row in enumerate(rows):
        listing = layer_listing(images.layers, row["chain_id"])
        entry = history[index] if index < len(history) else {}
        layer = {"index": index, "diff_id": row["diff_id"], "size": row["size"],
                 "created_by": entry.get("created_by", ""), "comment": entry.get("comment", ""),
                 "added": 0, "changed": 0, "removed": 0, "wasted": 0}
        layers.append(layer)
        before = tree.entries
        changed = 0
        added = 0
        for path, (is_dir, _) in listing.entries.items():
            lower = before.get(path)
            if lower is None:
                added += 1
            elif not (is_dir and lower[1]):
                changed += 1
        removed: list = []
        for path in listing.deleted:
            tree.remove(path, removed)
        for directory in listing.opaque:
            tree.clear_under(directory, removed)
        gone = 0
        for path, old in removed:
            waste(path, old)
            if not old[1]:
                occur(path, old[2])
            if path not in listing.entries:
                gone += 1
        for path, (is_dir, size) in listing.entries.items():
            old = tree.entries.get(path)
            if old is not None:
                waste(path, old)
                if old[1] and not is_dir:  # a file over a directory hides what it held
                    hidden: list = []
                    tree.remove(path, hidden)
                    for below, entry in hidden[1:]:
                        waste(below, entry)
                        if not entry[1]:
                            occur(below, entry[2])
            if not is_dir:
                occur(path, size)
                copies[path] = copies.get(path, 0) + 1
            tree.add(path, (index, is_dir, size))
        layer["added"], layer["changed"], layer["removed"] = added, changed, gone
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
        "top": [{"path": "/" + path.decode(errors="surrogateescape"), "count": copies.get(path, 0),
                 "wasted": size} for path, size in worst[:max(top, 0)] if size],
    }
