"""Engine API: networks, as far as lamina has them: ``host`` (the host's network namespace) and
``none`` (a namespace with only ``lo``), both predefined, as in Docker. lamina has no bridge and
no user-defined networks yet, so ``create`` answers 501 naming that (or Docker's 403 for a
predefined name, 404 for a driver plugin it lacks), ``connect``/``disconnect`` change nothing a
container can be moved to (Docker's 400 for the host network; the same network is a no-op),
``prune`` finds nothing and ``DELETE`` is Docker's 403 for predefined networks.

Documents are Docker's ``Network``: a stable ID per store and network (a digest of both), the
store's creation time as ``Created``, and in ``inspect`` the running containers on it.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..errors import NotFound
from ..events import emit
from .server import ApiError, route

DRIVERS = {"none": "null", "host": "host"}  # the predefined networks and their drivers
NO_USER_NETWORKS = ("lamina has no user-defined networks yet (no bridge): its networks are "
                    "host and none; use network_mode: host (compose) or --network host|none")


def network_id(root: str, name: str) -> str:
    """The stable ID of network ``name`` in the store at ``root``: 64 hex digits."""
    return hashlib.sha256(f"lamina network\0{os.path.abspath(root)}\0{name}".encode()).hexdigest()


def _created(engine) -> str:
    """When the store was made (its OCI layout's marker is written once)."""
    from ..image import rfc3339

    _ = engine.content  # makes the layout (and its marker) when the store has none yet
    try:
        return rfc3339(os.stat(os.path.join(engine.root, "oci-layout")).st_mtime)
    except OSError:
        return "0001-01-01T00:00:00Z"


def _endpoints(engine, name: str) -> dict:
    """The running containers on network ``name``: Docker's ``Containers`` of inspect."""
    out = {}
    for row in engine.containers(all=False):
        run = json.loads(row.get("RunConfig") or "{}")
        if run.get("network", "none") == name and row["State"] == "running":
            endpoint = hashlib.sha256(f"{row['ID']}\0{name}".encode()).hexdigest()
            out[row["ID"]] = {"Name": row["Names"], "EndpointID": endpoint, "MacAddress": "",
                              "IPv4Address": "", "IPv6Address": ""}
    return out


def document(engine, name: str, containers: bool = False) -> dict:
    """Docker's ``Network`` of a predefined network (``containers``: with its endpoints)."""
    return {"Name": name, "Id": network_id(engine.root, name), "Created": _created(engine),
            "Scope": "local", "Driver": DRIVERS[name], "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False,
            "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
            "ConfigOnly": False, "Containers": _endpoints(engine, name) if containers else {},
            "Options": {}, "Labels": {}}


def find(engine, ident: str) -> str:
    """The name of the network ``ident`` names (name, ID or unambiguous ID prefix); 404 else."""
    if ident in DRIVERS:
        return ident
    if ident:
        found = [n for n in DRIVERS if network_id(engine.root, n).startswith(ident.lower())]
        if len(found) == 1:
            return found[0]
    raise NotFound(f"network {ident} not found")


def _truth(key: str, value: str) -> bool:
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ApiError(400, f"invalid value for filter '{key}', must be \"true\" (or \"1\"), or "
                        "\"false\" (or \"0\")")


@route("GET", "/networks")
def list_networks(request):
    filters = request.filters()
    for key in filters:
        if key not in ("dangling", "driver", "id", "label", "name", "scope", "type"):
            raise ApiError(400, f"invalid filter '{key}'")
    for value in filters.get("type", ()):
        if value not in ("custom", "builtin"):
            raise ApiError(400, f"invalid filter: 'type'='{value}'")
    dangling = [_truth("dangling", v) for v in filters.get("dangling", ())]
    engine = request.engine
    out = []
    for name in ("none", "host"):  # Docker's order
        nid = network_id(engine.root, name)
        if filters.get("name") and not any(v in name for v in filters["name"]):
            continue
        if filters.get("id") and not any(v in nid for v in filters["id"]):
            continue
        if filters.get("driver") and DRIVERS[name] not in filters["driver"]:
            continue
        if filters.get("scope") and "local" not in filters["scope"]:
            continue
        if filters.get("type") and "builtin" not in filters["type"]:
            continue
        if filters.get("label"):  # predefined networks carry no labels
            continue
        if dangling and True in dangling:  # predefined networks are never dangling
            continue
        out.append(document(engine, name))
    return out


@route("GET", "/networks/{id}")
def inspect_network(request, id):
    scope = request.arg("scope")
    name = find(request.engine, id)
    if scope and scope != "local":
        raise NotFound(f"network {id} not found")
    return document(request.engine, name, containers=True)


@route("DELETE", "/networks/{id}")
def remove_network(request, id):
    name = find(request.engine, id)
    raise ApiError(403, f"{name} is a pre-defined network and cannot be removed")


@route("POST", "/networks/create")
def create_network(request):
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid JSON in the request body: a NetworkCreateRequest object")
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"invalid name: {name if isinstance(name, str) else ''}")
    driver = body.get("Driver") or "bridge"
    if not isinstance(driver, str):
        raise ApiError(400, "invalid driver: not a string")
    if name in DRIVERS or name == "bridge":
        raise ApiError(403, f"operation is not permitted on predefined {name} network ")
    if driver in ("host", "null"):
        raise ApiError(403, f"only one instance of \"{driver}\" network is allowed")
    if driver not in ("bridge", "overlay", "macvlan", "ipvlan"):
        raise ApiError(404, f"plugin \"{driver}\" not found")
    raise ApiError(501, f"cannot create network {name} ({driver}): {NO_USER_NETWORKS}")


def _connection(request, id: str, verb: str) -> tuple[str, str, str]:
    """(network name, container ID, the container's network) of a connect or disconnect."""
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("Container"), str):
        raise ApiError(400, f"{verb}: the body needs a Container (name or ID)")
    row = request.engine.container_store.get(body["Container"])
    try:
        name = find(request.engine, id)
    except NotFound:
        raise NotFound(f"network {id} not found ({NO_USER_NETWORKS})") from None
    current = json.loads(row["run_config"] or "{}").get("network", "none")
    return name, row["id"], current


@route("POST", "/networks/{id}/connect")
def connect(request, id):
    name, cid, current = _connection(request, id, "connect")
    if name == current:
        request.send_empty(200)  # on it already: nothing to do (Docker's 200)
        return
    if "host" in (name, current):
        raise ApiError(400, "container cannot be disconnected from host network or connected "
                            "to host network")
    raise ApiError(501, f"cannot connect container {cid[:12]} to {name}: {NO_USER_NETWORKS}")


@route("POST", "/networks/{id}/disconnect")
def disconnect(request, id):
    name, cid, current = _connection(request, id, "disconnect")
    if name == "host":
        raise ApiError(400, "container cannot be disconnected from host network or connected "
                            "to host network")
    if name != current:
        raise ApiError(403, f"container {cid[:12]} is not connected to network {name}")
    request.send_empty(200)  # none: a namespace with only lo, which is what disconnected means


@route("POST", "/networks/prune")
def prune_networks(request):
    filters = request.filters()
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")
    emit(request.engine.store, "network", "prune", "", {"reclaimed": "0"})
    return {"NetworksDeleted": []}
