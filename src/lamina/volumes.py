"""Volumes: directories that live outside every container's layers.

A named volume is ``<store>/volumes/<name>/_data`` (Docker's layout) plus a row in ``volumes``;
``container_volumes`` records which container uses which, so ``rm`` and ``prune`` spare volumes in
use. A container sees a volume (or a host directory, ``-v /host/dir:/path[:ro]``) through a bind
mount over its merged root, so writes to it bypass copy-on-write: they never reach the container's
writable layer, never count in its size, and survive ``rm``. A named volume that is empty when a
container first mounts it is seeded with the image's content at that path, as Docker does.

What the Engine API's ``volume create`` gives besides a name (``Labels``, and ``DriverOpts``: the
local driver's ``type``/``o``/``device``) is kept in ``volume_config``, a row only for volumes
that have some. Of the local driver's options lamina honours a bind (``type=none, o=bind,
device=/PATH``: containers mount that directory); it mounts no devices or file systems yet.
Creating and removing a volume are recorded in the event journal (:mod:`lamina.events`).
"""

from __future__ import annotations

import os
import re
import time

from .errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from .events import emit
from .faults import point
from .metadata import Transaction

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store

_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"  # compiled by re on first use (start-up)


PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


def parse_volume(text: str) -> tuple[str, str, bool]:
    """``-v`` syntax -> (source, destination, read_only). Source is an absolute host path, a
    volume name, or ``""`` for an anonymous volume (``-v /path``)."""
    return parse_volume_propagation(text)[0]


# Docker's mode words for -v, by kind: at most one of each kind (ValidMountMode of its linux
# parser). z and Z relabel for SELinux, which these machines do not run; cached, delegated and
# consistent are Docker Desktop's, accepted and without effect on Linux, as Docker has them.
_MODE_KINDS = {"ro": "rw", "rw": "rw", "z": "label", "Z": "label", "nocopy": "copy",
               "consistent": "consistency", "cached": "consistency", "delegated": "consistency",
               **dict.fromkeys(PROPAGATIONS, "propagation")}


def split_volume(text: str) -> tuple[str, str, str]:
    """``-v`` syntax -> (source, destination, mode) as written (``""`` for what is left out)."""
    parts = text.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return parts[0], parts[1], ""
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise InvalidArgument(f"invalid volume specification: {text!r}")


def parse_volume_propagation(text: str) -> tuple[tuple[str, str, bool], str]:
    """``-v`` syntax -> ((source, destination, read_only), propagation): the bind propagation
    its mode names (``rshared``...; ``""`` when none, which is rprivate), as Docker allows it
    on host paths only."""
    source, destination, mode = split_volume(text)
    if not destination.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: {text!r}: the destination "
                              f"{destination!r} must be an absolute path")
    if destination.rstrip("/") == "":
        raise InvalidArgument(f"invalid volume specification: {text!r}: destination can't be '/'")
    modes = mode.split(",") if mode else []
    kinds = [_MODE_KINDS.get(m) for m in modes]
    if None in kinds or len(set(kinds)) != len(kinds):
        raise InvalidArgument(f"invalid mode: {mode}")
    if source and not source.startswith("/") and not re.match(_NAME, source):
        raise InvalidArgument(
            f"{source!r} includes invalid characters for a local volume name, only "
            "\"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, "
            "use absolute path")
    propagation = "".join(m for m in modes if m in PROPAGATIONS)
    if propagation and not source.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: {text!r}: invalid mount config "
                              "for type \"volume\": field BindOptions must not be specified")
    if "nocopy" in modes and source.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: {text!r}: invalid mount config "
                              "for type \"bind\": field VolumeOptions must not be specified")
    return (source, os.path.normpath(destination), "ro" in modes), propagation


def parse_mount(text: str) -> tuple[tuple[str, str, bool], str]:
    """``--mount`` syntax (``type=bind|volume,source=..,target=..[,readonly][,bind-propagation=
    ..]``) -> ((source, destination, read_only), propagation), as :func:`mount_spec`."""
    return mount_spec(*_mount_fields(text))


def _mount_fields(text: str) -> tuple[str, str, str, bool, str]:
    """``--mount`` syntax -> (type, source, target, read_only, propagation) as given."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro") and not eq:
            value = "true"
        elif not eq or not value:
            raise InvalidArgument(f"invalid argument {text!r} for \"--mount\" flag: invalid "
                                  f"field '{part}' must be a key=value pair")
        fields[{"src": "source", "dst": "target", "destination": "target",
                "ro": "readonly"}.get(key, key)] = value
    for key in fields:
        if key not in ("type", "source", "target", "readonly", "bind-propagation"):
            raise InvalidArgument(f"invalid argument {text!r} for \"--mount\" flag: unexpected "
                                  f"key '{key}' in '{text}'")
    readonly = fields.get("readonly", "false").lower()
    if readonly not in ("1", "true", "0", "false"):
        raise InvalidArgument(f"invalid argument {text!r} for \"--mount\" flag: invalid value "
                              f"for readonly: {fields['readonly']}")
    return (fields.get("type", "volume"), fields.get("source", ""), fields.get("target", ""),
            readonly in ("1", "true"), fields.get("bind-propagation", ""))


def volume_fields(specs, binds=(), mounts=()) -> dict:
    """RunConfig's ``volumes`` and ``bind_propagation`` from parsed ((source, destination,
    read_only), propagation) pairs; ``binds`` (the ``-v`` values, Docker's HostConfig.Binds) and
    ``mounts`` (the ``--mount`` values as :func:`mount_document` makes them) as given, which
    inspect shows."""
    import json

    return {"volumes": tuple(spec for spec, _ in specs),
            "bind_propagation": tuple((spec[1], mode) for spec, mode in specs if mode),
            "binds": tuple(binds),
            "mounts": json.dumps(list(mounts), separators=(",", ":")) if mounts else ""}


def cli_volume_fields(volume_texts, mount_texts) -> dict:
    """:func:`volume_fields` of ``-v`` and ``--mount`` values, as the docker CLI sends them: a
    ``-v`` with a destination is a bind (HostConfig.Binds), one without an anonymous volume
    (Config.Volumes), a ``--mount`` one of HostConfig.Mounts."""
    specs = [parse_volume_propagation(v) for v in volume_texts]
    documents = []
    for text in mount_texts:
        fields = _mount_fields(text)
        specs.append(mount_spec(*fields))
        documents.append(mount_document(*fields))
    return volume_fields(specs, [v for v in volume_texts if ":" in v], documents)


def mount_document(kind: str, source: str, target: str, read_only: bool,
                   propagation: str = "") -> dict:
    """One of Docker's HostConfig.Mounts as its inspect shows it (what was given; the fields
    left at their zero value left out)."""
    doc: dict = {"Type": kind}
    if source:
        doc["Source"] = source
    doc["Target"] = target
    if read_only:
        doc["ReadOnly"] = True
    if propagation:
        doc["BindOptions"] = {"Propagation": propagation}
    return doc


def mount_mode(run: dict, source: str, destination: str, read_only: bool) -> tuple[str, str]:
    """(Mode, Propagation) of a container's volume or bind (``run``: its RunConfig as JSON) as
    Docker's inspect shows them: a ``-v``'s mode as written (``z`` for a volume given none), ``z``
    for a ``--mount`` volume, ``""`` for a ``--mount`` bind and an anonymous volume of the
    image or Config.Volumes; a bind's propagation, ``rprivate`` by default (a volume's ``""``)."""
    bind = source.startswith("/")
    propagation = (dict(run.get("bind_propagation") or ()).get(destination, "") or "rprivate") \
        if bind else ""
    if "binds" not in run:  # made before lamina kept what was given: the mode it implies
        if bind:
            return ",".join((["ro"] if read_only else []) + (
                [propagation] if propagation != "rprivate" else [])), propagation
        return ("ro" if read_only else "z"), propagation
    for text in run["binds"]:
        given_source, given_destination, mode = split_volume(text)
        if os.path.normpath(given_destination) == destination:
            return (mode or ("" if given_source.startswith("/") else "z")), propagation
    import json

    for doc in json.loads(run.get("mounts") or "[]"):
        if os.path.normpath(doc.get("Target", "")) == destination:
            return ("" if doc.get("Type") == "bind" else "z"), propagation
    return "", propagation


def mount_spec(kind: str, source: str, target: str, read_only: bool,
               propagation: str = "") -> tuple[tuple[str, str, bool], str]:
    """A ``--mount`` or the Engine API's ``HostConfig.Mounts[]`` -> ((source, destination,
    read_only), propagation), checked as Docker checks them."""
    if kind not in ("bind", "volume"):
        raise InvalidArgument(f"mount type {kind!r} is not supported")
    if not target:
        raise InvalidArgument("invalid mount config: Target must not be empty")
    if kind == "bind" and not source.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: "
                              f"'{source}' mount path must be absolute")
    if propagation and kind != "bind":
        raise InvalidArgument(f"invalid mount config for type \"{kind}\": field BindOptions "
                              "must not be specified")
    if propagation and propagation not in PROPAGATIONS:
        raise InvalidArgument(f"invalid mount config for type \"bind\": invalid propagation "
                              f"mode: {propagation}")
    spec = parse_volume(f"{source}:{target}" if source else target)
    return (spec[0], spec[1], read_only), propagation


def data_dir(store: Store, name: str) -> str:
    return os.path.join(store.root, "volumes", name, "_data")


def check_options(options: dict | None) -> dict:
    """The local driver's options (Docker's ``DriverOpts``) as lamina can honour them: none, or
    a bind of a host directory (``type=none, o=bind, device=/PATH``). InvalidArgument else."""
    options = dict(options or {})
    for key, value in options.items():
        if key not in ("type", "o", "device", "size"):
            raise InvalidArgument(f'invalid option: "{key}"')
        if not isinstance(value, str):
            raise InvalidArgument(f"invalid option {key!r}: not a string")
    if not options:
        return options
    flags = [f for f in options.get("o", "").split(",") if f]
    if options.get("type", "none") not in ("none", "") or not {"bind", "rbind"} & set(flags) \
            or "size" in options:
        raise InvalidArgument(
            "lamina's local volume driver mounts no file systems or devices yet "
            f"(type={options.get('type', '')!r}, o={options.get('o', '')!r}): only a bind of a "
            "host directory (type=none, o=bind, device=/PATH) or no options")
    if not options.get("device", "").startswith("/"):
        raise InvalidArgument("a bind volume needs an absolute device path "
                              "(type=none, o=bind, device=/PATH)")
    return options


def create(store: Store, name: str | None = None, anonymous: bool = False,
           labels: dict | None = None, options: dict | None = None) -> str:
    """Create a named volume (idempotent, as Docker's: an existing one is returned as it is);
    a random name when ``name`` is None. ``labels`` and ``options`` (:func:`check_options`)
    are kept with a new volume."""
    import json

    options = check_options(options)
    if name is None:
        name = os.urandom(32).hex()
        anonymous = True
    elif not re.match(_NAME, name):
        raise InvalidArgument(f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                              "allowed (at least two characters)")
    elif len(name) > 255:  # one directory name: NAME_MAX
        raise InvalidArgument(f"invalid volume name {name[:20]!r}...: longer than 255 characters")
    path = data_dir(store, name)
    creating = os.path.join(store.root, "volumes", _CREATING + name)
    exists = "SELECT 1 FROM volumes WHERE name = ?"
    with Transaction(store.db):  # the directory is made before the row commits: if this
        if store.db.execute(exists, (name,)).fetchone():  # process dies in between, the next
            return name  # command's purge finds this trash row and removes it (purge_removed)
        store.snaps.trash(creating)
    with Transaction(store.db):
        store.db.execute("DELETE FROM trash WHERE path = ?", (creating,))
        if store.db.execute(exists, (name,)).fetchone():  # another process made it meanwhile
            return name
        aside = _set_aside(store, os.path.dirname(path))  # a removed one's data: not ours
        os.makedirs(path, exist_ok=True)
        os.chmod(os.path.dirname(path), 0o700)
        store.db.execute("INSERT INTO volumes(name, created, anonymous) VALUES (?,?,?)",
                          (name, time.time(), int(anonymous)))
        if labels or options:
            store.db.execute("INSERT INTO volume_config(name, labels, options) VALUES (?,?,?)",
                              (name, json.dumps(dict(labels or {})), json.dumps(options)))
    if aside is not None:
        store.snaps.purge()
    emit(store, "volume", "create", name, {"driver": "local"})
    return name


def _row(store: Store, name: str):
    row = store.db.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no such volume: {name}")
    return row


def _users(store: Store, name: str) -> list[str]:
    return [r[0] for r in store.db.execute(
        "SELECT container_id FROM container_volumes WHERE volume = ?", (name,))]


def records(store: Store, names: list[str] | None = None) -> list[dict]:
    """Every volume (or those of ``names`` that exist), by name: ``name``, ``created`` (unix
    seconds), ``anonymous``, ``labels``, ``options`` (dicts, empty when none) and ``refs``
    (how many containers use it)."""
    import json

    sql = ("SELECT v.name, v.created, v.anonymous, c.labels, c.options,"
           " (SELECT count(*) FROM container_volumes cv WHERE cv.volume = v.name) AS refs"
           " FROM volumes v LEFT JOIN volume_config c ON c.name = v.name")
    if names is not None:
        sql += f" WHERE v.name IN ({','.join('?' * len(names))})"
    rows = store.db.execute(sql + " ORDER BY v.name", tuple(names or ())).fetchall()
    return [{"name": r["name"], "created": r["created"], "anonymous": bool(r["anonymous"]),
             "labels": json.loads(r["labels"] or "{}"), "options": json.loads(r["options"] or "{}"),
             "refs": r["refs"]} for r in rows]


def document(store: Store, record: dict, usage: bool = False) -> dict:
    """Docker's Volume document of a :func:`records` row; with ``usage``, ``UsageData`` (the
    exact size in bytes of the data, and how many containers use it)."""
    from .image import rfc3339

    doc = {"CreatedAt": rfc3339(int(record["created"])), "Driver": "local",
           "Labels": record["labels"], "Mountpoint": data_dir(store, record["name"]),
           "Name": record["name"], "Options": record["options"] or None, "Scope": "local"}
    if usage:
        from .fsutil import tree_usage

        doc["UsageData"] = {"RefCount": record["refs"],
                            "Size": tree_usage(data_dir(store, record["name"]))[0]}
    return doc


def inspect(store: Store, name: str) -> dict:
    """Docker-shaped ``volume inspect``, plus the exact size in bytes (``UsageData``)."""
    found = records(store, [name])
    if not found:
        raise NotFound(f"no such volume: {name}")
    doc = document(store, found[0], usage=True)
    doc["Options"] = doc["Options"] or {}
    return doc


def ls(store: Store) -> list[dict]:
    """One row per volume, by name."""
    return [{"Driver": "local", "Name": r["name"], "Mountpoint": data_dir(store, r["name"]),
             "Anonymous": bool(r["anonymous"])}
            for r in store.db.execute("SELECT * FROM volumes ORDER BY name")]


def remove(store: Store, name: str, force: bool = False) -> str:
    """Delete a volume and its data; refused while a container uses it."""
    _row(store, name)
    with Transaction(store.db):  # the commit point; the data goes through the trash, so a
        users = _users(store, name)  # killed rm is finished by the next command's recovery
        if users:
            raise FailedPrecondition(f"remove {name}: volume is in use - [{', '.join(users)}]")
        if not store.db.execute("DELETE FROM volumes WHERE name = ?", (name,)).rowcount:
            raise NotFound(f"no such volume: {name}")
        store.db.execute("INSERT OR REPLACE INTO trash(path, pid) VALUES (?, ?)",
                          (os.path.dirname(data_dir(store, name)), os.getpid()))
    store.snaps.purge()
    emit(store, "volume", "destroy", name, {"driver": "local"})
    return name


_ASIDE = ".removing-"  # no volume name starts with a dot
_CREATING = ".creating-"  # in a trash row: the directory of a volume whose create may not finish


def _set_aside(store: Store, path: str) -> str | None:
    """Inside a transaction: if the removed volume directory ``path`` waits in the trash, rename
    it to a name no volume can take and file that instead; returns the new name."""
    if not store.db.execute("SELECT 1 FROM trash WHERE path = ?", (path,)).fetchone():
        return None
    store.db.execute("DELETE FROM trash WHERE path = ?", (path,))
    return _move_aside(store, path)


def _move_aside(store: Store, path: str) -> str:
    """Inside a transaction: rename the volume directory ``path`` (if it exists) to a name no
    volume can take, ``.removing-<pid>-<random>``, and file that in the trash; returns it. A
    process killed before the transaction commits leaves that directory outside the trash:
    :func:`_dead_asides` finds it."""
    aside = os.path.join(os.path.dirname(path), f"{_ASIDE}{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass
    point("volume.set-aside")
    store.db.execute("INSERT INTO trash(path, pid) VALUES (?, ?)", (aside, os.getpid()))
    return aside


def purge_removed(store: Store, path: str) -> bool:
    """For :meth:`lamina.snapshots.Snapshotter.purge`: delete a removed volume's directory. It is
    first renamed aside under the write lock, so that a ``volume create`` of the same name
    meanwhile never loses its new directory to this deletion nor inherits the old data. For the
    trash row of a ``create`` that never finished, the volume's directory goes unless the volume
    exists (another create made it since)."""
    from .fsutil import remove_tree

    name = os.path.basename(path)
    if name.startswith(_CREATING):
        with Transaction(store.db):
            store.db.execute("DELETE FROM trash WHERE path = ?", (path,))
            name = name[len(_CREATING):]
            if store.db.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                return True
            path = _move_aside(store, os.path.join(os.path.dirname(path), name))
    elif not name.startswith(_ASIDE):
        with Transaction(store.db):
            path = _set_aside(store, path)
        if path is None:
            return True  # another process dealt with it
    for stray in [path] + _dead_asides(store):
        remove_tree(stray)
        with Transaction(store.db):
            store.db.execute("DELETE FROM trash WHERE path = ?", (stray,))
    return True


def _dead_asides(store: Store) -> list[str]:
    """Directories ``volumes/.removing-<pid>-*`` of dead processes that no trash row files: the
    transaction that renamed them aside never committed (its process was killed)."""
    from .processes import alive

    top = os.path.join(store.root, "volumes")
    try:
        names = os.listdir(top)
    except FileNotFoundError:  # a create killed before it made the first volume's directory
        return []
    trashed = {r[0] for r in store.db.execute("SELECT path FROM trash")}
    found = []
    for name in names:
        pid = name[len(_ASIDE):].split("-", 1)[0]
        path = os.path.join(top, name)
        if name.startswith(_ASIDE) and pid.isdigit() and not alive(int(pid)) \
                and path not in trashed:
            found.append(path)
    return found


def prune(store: Store, select=None) -> tuple[list[str], int]:
    """Remove every volume no container uses (``select``: those of them whose :func:`records`
    row it returns true for); (names, bytes reclaimed)."""
    from .fsutil import tree_usage

    names = [r["name"] for r in records(store)
             if not r["refs"] and (select is None or select(r))]
    reclaimed, removed = 0, []
    for name in names:
        try:  # another process may remove it, or a new container take it, meanwhile
            size = tree_usage(data_dir(store, name))[0]
            remove(store, name)
        except (FileNotFoundError, NotFound, FailedPrecondition):
            continue
        removed.append(name)
        reclaimed += size
        point("gc.sweep")
    emit(store, "volume", "prune", "", {"reclaimed": reclaimed})
    return removed, reclaimed


def attach(store: Store, container_id: str, specs, rootfs: str,
           binds=()) -> tuple[tuple[str, str, bool], ...]:
    """Make the ``-v`` specs of a new container real: create named and anonymous volumes (seeding
    empty ones from ``rootfs``, the container's merged root, at the destination, unless its
    ``-v`` in ``binds`` says ``nocopy``) and host directories, and record which volumes it uses.
    Returns the specs with anonymous volumes named."""
    from .rootpath import resolve_in_root

    nocopy = set()
    for text in binds:
        _, destination, mode = split_volume(text)
        if "nocopy" in mode.split(","):
            nocopy.add(os.path.normpath(destination))
    out = []
    for source, destination, read_only in specs:
        if source.startswith("/"):
            if not os.path.exists(source):
                os.makedirs(source, 0o755)  # as docker run -v does
            out.append((source, destination, read_only))
            continue
        name = _create_used(store, source or None, container_id, destination)
        path = mount_source(store, name)
        if not os.path.isdir(path):  # a bind volume's device
            raise NotFound(f"error while mounting volume {name!r}: failed to mount local "
                           f"volume: {path}: no such directory")
        image_dir = resolve_in_root(rootfs, destination)
        if destination not in nocopy and os.path.isdir(image_dir) and not os.listdir(path):
            # (it is used from now on: no rm or prune meanwhile)
            _seed(image_dir, path)
        out.append((name, destination, read_only))
    return tuple(out)


def _create_used(store: Store, name: str | None, container_id: str, destination: str) -> str:
    """Create the volume (or find it) and record the container's use of it, checking in that
    transaction that it still exists: a ``volume rm`` or ``volume prune`` may remove it between
    its creation and that record (it was an IntegrityError). Then it is made again; if it keeps
    going, "no such volume"."""
    for _ in range(5):
        made = create(store, name)
        with Transaction(store.db):
            if store.db.execute("SELECT 1 FROM volumes WHERE name = ?", (made,)).fetchone():
                store.db.execute("INSERT OR REPLACE INTO container_volumes VALUES (?,?,?)",
                                  (container_id, made, destination))
                return made
    raise NotFound(f"no such volume: {name}: removed by another command while it was attached")


def _seed(source: str, target: str) -> None:
    """Copy the image's directory ``source`` into the empty volume ``target``, owner and mode
    included (the volume's root takes the directory's ownership and mode)."""
    from .fsutil import copy_metadata, copy_tree

    if os.listdir(source):
        copy_tree(source, target)
    else:
        copy_metadata(os.lstat(source), source, target)


def anonymous_of(store: Store, container_id: str) -> list[str]:
    """The anonymous volumes the container made (its ``-v /PATH``, ``--mount`` without a source
    and its image's VOLUMEs), which ``rm -v`` and ``run --rm`` remove with it. Not one it was
    given by name (``-v NAME:/PATH`` of another container's anonymous volume): Docker removes
    only the volumes whose source the container's spec left out."""
    import json

    row = store.db.execute("SELECT run_config FROM containers WHERE id = ?",
                           (container_id,)).fetchone()
    run = json.loads(row[0] or "{}") if row else {}
    named = {split_volume(text)[0] for text in run.get("binds") or ()}
    named.update(doc.get("Source") for doc in json.loads(run.get("mounts") or "[]"))
    return [r[0] for r in store.db.execute(
        "SELECT v.name FROM container_volumes cv JOIN volumes v ON v.name = cv.volume"
        " WHERE cv.container_id = ? AND v.anonymous = 1", (container_id,)) if r[0] not in named]


def mount_source(store: Store, name: str) -> str:
    """The host directory a container mounts for the volume ``name``: its data directory, or
    the device of a bind volume (``type=none, o=bind, device=/PATH``)."""
    import json

    row = store.db.execute("SELECT options FROM volume_config WHERE name = ?", (name,)).fetchone()
    device = json.loads(row[0]).get("device") if row else None
    return device or data_dir(store, name)


def oci_mounts(store: Store, config) -> list[dict]:
    """The runtime spec's bind mounts for a container's volumes (a RunConfig's). A bind with a
    shared or slave propagation needs its source on a mount of that kind, as Docker checks."""
    mounts = []
    propagation = dict(config.bind_propagation)
    for source, destination, read_only in config.volumes:
        host = source if source.startswith("/") else mount_source(store, source)
        if not source.startswith("/") and not os.path.isdir(host):
            if host != data_dir(store, source):
                raise NotFound(f"volume {source}: its device {host} is not a directory")
            raise NotFound(f"volume {source} of this container no longer exists")
        mode = propagation.get(destination, "rprivate") if source.startswith("/") else "rprivate"
        if "shared" in mode or "slave" in mode:
            _check_propagation(host, mode)
        mounts.append({"destination": destination, "type": "bind", "source": host,
                       "options": ["rbind", mode] + (["ro"] if read_only else [])})
    return mounts


def rootfs_propagation(config) -> str | None:
    """The spec's ``rootfsPropagation`` its binds need, as Docker sets it: ``shared`` when one
    is shared (a mount the container makes under it reaches the host), ``rslave`` when one is
    a slave; None (runc's default) otherwise."""
    modes = {mode for _, mode in config.bind_propagation}
    if modes & {"shared", "rshared"}:
        return "shared"
    if modes & {"slave", "rslave"}:
        return "rslave"
    return None


def _check_propagation(source: str, mode: str) -> None:
    """Docker's check: a shared bind's source must sit on a shared mount, a slave one's on a
    shared or slave mount (else nothing would propagate)."""
    path = os.path.realpath(source)
    best, tags = "/", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, tags = point, " ".join(fields[6:fields.index("-")])
    if "shared" in mode and "shared:" not in tags:
        raise LaminaError(f"path {source} is mounted on {best} but it is not a shared mount")
    if "slave" in mode and "shared:" not in tags and "master:" not in tags:
        raise LaminaError(f"path {source} is mounted on {best} but it is not a shared or "
                          "slave mount")


def summary(store: Store) -> dict:
    """The ``system df`` row: count, volumes in use, bytes, bytes in unused volumes; plus the
    per-volume rows for ``-v``."""
    from .fsutil import tree_usage

    rows = []
    for r in store.db.execute(
            "SELECT v.name, (SELECT count(*) FROM container_volumes cv WHERE cv.volume = v.name)"
            " FROM volumes v ORDER BY v.name").fetchall():
        rows.append({"Name": r[0], "Links": r[1], "Size": tree_usage(data_dir(store, r[0]))[0]})
    return {"Type": "Local Volumes", "TotalCount": len(rows),
            "Active": sum(1 for r in rows if r["Links"]),
            "Size": sum(r["Size"] for r in rows),
            "Reclaimable": sum(r["Size"] for r in rows if not r["Links"]), "Volumes": rows}

