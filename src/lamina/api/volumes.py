"""Engine API: volumes (list, create, inspect, remove, prune), over :mod:`lamina.volumes`.

Documents are Docker's ``Volume``: ``Labels`` is ``{}`` when a volume has none (the schema's
``x-nullable: false``; Docker 20.10 sends ``null``), ``Options`` ``null`` when it has none (as
Docker), ``UsageData`` only where Docker gives it (``/system/df``, through
:func:`volume_documents`). Only the ``local`` driver exists: another is a plugin lamina does not
have (404, as Docker's answer for a missing plugin). Of the local driver's options a bind
(``type=none, o=bind, device=/PATH``) is honoured; devices and file systems are refused (400).
"""

from __future__ import annotations

import os
import re

from .. import volumes
from ..errors import InvalidArgument, NotFound
from ..events import labels_match
from .server import ApiError, route, version_tuple

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def volume_documents(engine, usage: bool) -> list[dict]:
    """Every volume as Docker's ``Volume``, by name; with ``usage``, ``UsageData`` (``Size`` in
    bytes, ``RefCount``) as ``/system/df`` gives it."""
    return [volumes.document(engine.store, r, usage) for r in volumes.records(engine.store)]


def _truth(key: str, value: str) -> bool:
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ApiError(400, f"invalid filter '{key}={value}'")


def _check_keys(filters: dict, allowed: tuple[str, ...]) -> None:
    for key in filters:
        if key not in allowed:
            raise ApiError(400, f"invalid filter '{key}'")


@route("GET", "/volumes")
def list_volumes(request):
    filters = request.filters()
    _check_keys(filters, ("dangling", "name", "label", "driver"))
    dangling = [_truth("dangling", v) for v in filters.get("dangling", ())]
    out = []
    for r in volumes.records(request.engine.store):
        if dangling and (r["refs"] == 0) not in dangling:
            continue
        if filters.get("name") and not any(n in r["name"] for n in filters["name"]):
            continue
        if filters.get("driver") and "local" not in filters["driver"]:
            continue
        if filters.get("label") and not labels_match(r["labels"], filters["label"]):
            continue
        out.append(volumes.document(request.engine.store, r))
    return {"Volumes": out, "Warnings": None}


def _string_map(body: dict, key: str) -> dict:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"json: cannot unmarshal {_kind(value)} into Go struct field "
                            f"CreateOptions.{key} of type map[string]string")
    for item in value.values():
        if not isinstance(item, str):
            raise ApiError(400, f"json: cannot unmarshal {_kind(item)} into Go struct field "
                                f"CreateOptions.{key} of type string")
    return value


def _kind(value) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), "value")


@route("POST", "/volumes/create")
def create_volume(request):
    body = request.json()
    if body is None:
        raise ApiError(400, "got EOF while reading request body")
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {_kind(body)} into Go value of type "
                            "volume.CreateOptions")
    for key in ("Name", "Driver"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f"json: cannot unmarshal {_kind(body[key])} into Go struct "
                                f"field CreateOptions.{key} of type string")
    labels = _string_map(body, "Labels")
    options = _string_map(body, "DriverOpts")
    name = body.get("Name") or os.urandom(32).hex()  # Docker's: not an anonymous volume
    driver = body.get("Driver") or "local"
    if driver != "local":
        raise ApiError(404, f"create {name}: error looking up volume plugin {driver}: plugin "
                            f"\"{driver}\" not found (lamina has the local driver only)")
    if len(name) < 2:
        raise ApiError(400, f"create {name}: volume name is too short, names should be at least "
                            "two alphanumeric characters")
    if not _NAME.match(name):
        raise ApiError(400, f"create {name}: \"{name}\" includes invalid characters for a local "
                            "volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you "
                            "intended to pass a host directory, use absolute path")
    try:
        volumes.create(request.engine.store, name, labels=labels, options=options)
    except InvalidArgument as e:
        raise ApiError(400, f"create {name}: {e}") from None
    request.send_json(201, _inspect(request.engine, name))


def _inspect(engine, name: str) -> dict:
    found = volumes.records(engine.store, [name])
    if not found:
        raise NotFound(f"get {name}: no such volume")
    return volumes.document(engine.store, found[0])


@route("GET", "/volumes/{name}")
def inspect_volume(request, name):
    return _inspect(request.engine, name)


@route("DELETE", "/volumes/{name}")
def remove_volume(request, name):
    force = request.flag("force")
    try:
        volumes.remove(request.engine.store, name, force=force)
    except NotFound:
        if not force:  # Docker: a forced removal of no volume is done
            raise NotFound(f"get {name}: no such volume") from None
    request.send_empty(204)


@route("POST", "/volumes/prune")
def prune_volumes(request):
    """Unused volumes; from API 1.42 only anonymous ones unless ``all=true`` (Docker's rule)."""
    filters = request.filters()
    modern = version_tuple(request.version) >= (1, 42)
    _check_keys(filters, ("label", "label!") + (("all",) if modern else ()))
    every = not modern or any(_truth("all", v) for v in filters.get("all", ()))
    wanted, unwanted = filters.get("label", []), filters.get("label!", [])

    def select(record: dict) -> bool:
        if not every and not record["anonymous"]:
            return False
        if wanted and not labels_match(record["labels"], wanted):
            return False
        return not (unwanted and labels_match(record["labels"], unwanted))

    names, reclaimed = volumes.prune(request.engine.store, select)
    return {"VolumesDeleted": names, "SpaceReclaimed": reclaimed}
