"""Engine API: networks, the store's (:mod:`lamina.networks`): the predefined ``host`` and
``none``, the default ``bridge`` and user bridge networks, with Docker's documents and status
codes: list with its filters, inspect (the attached containers in ``Containers``), create (403
for a predefined name, 409 for a taken one, 404 for a driver lamina lacks), delete (403 while
containers are attached), connect and disconnect (a running container at once) and prune.
"""

from __future__ import annotations

from .. import networks
from ..errors import FailedPrecondition, NotFound
from ..events import emit, labels_match, parse_time
from .server import ApiError, route

BUILTIN = ("bridge", "host", "none")


network_id = networks.predefined_id  # the stable ID of host and none in a store


def find(engine, ident: str) -> dict:
    """The record of the network ``ident`` names (name, ID or unambiguous ID prefix); 404."""
    return networks.get(engine.store, ident)


def _truth(key: str, value: str) -> bool:
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ApiError(400, f"invalid value for filter '{key}', must be \"true\" (or \"1\"), or "
                        "\"false\" (or \"0\")")


def _labels_match(record: dict, wanted: list[str]) -> bool:
    return labels_match(record["labels"], wanted)


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
    store = request.engine.store
    out = []
    for record in networks.ls(store):
        name, builtin = record["name"], record["name"] in BUILTIN
        if filters.get("name") and not any(v in name for v in filters["name"]):
            continue
        if filters.get("id") and not any(v in record["id"] for v in filters["id"]):
            continue
        if filters.get("driver") and record["driver"] not in filters["driver"]:
            continue
        if filters.get("scope") and "local" not in filters["scope"]:
            continue
        if filters.get("type") and ("builtin" if builtin else "custom") not in filters["type"]:
            continue
        if filters.get("label") and not _labels_match(record, filters["label"]):
            continue
        if dangling:  # dangling: a custom network no container is on
            unused = not builtin and not networks.users(store, record["id"])
            if unused not in dangling:
                continue
        out.append(networks.document(store, record))
    return out


@route("GET", "/networks/{id}")
def inspect_network(request, id):
    scope = request.arg("scope")
    record = find(request.engine, id)
    if scope and scope != "local":
        raise NotFound(f"network {id} not found")
    return networks.document(request.engine.store, record, containers=True)


@route("DELETE", "/networks/{id}")
def remove_network(request, id):
    try:
        networks.remove(request.engine.store, id)
    except FailedPrecondition as e:
        raise ApiError(403, str(e)) from None
    request.send_empty(204)


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
    if name in BUILTIN:
        raise ApiError(403, f"operation is not permitted on predefined {name} network ")
    if driver in ("host", "null"):
        raise ApiError(403, f"only one instance of \"{driver}\" network is allowed")
    if driver != "bridge":
        raise ApiError(404, f"plugin \"{driver}\" not found")
    if body.get("EnableIPv6"):
        raise ApiError(400, "lamina's networks are IPv4 only (EnableIPv6)")
    config = ((body.get("IPAM") or {}).get("Config") or [{}])
    if not isinstance(config, list) or len(config) > 1 or not isinstance(config[0], dict):
        raise ApiError(400, "IPAM.Config: lamina takes one IPv4 subnet per network")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ApiError(400, "Labels must be an object")
    network = networks.create(request.engine.store, name, driver,
                              subnet=config[0].get("Subnet") or None,
                              gateway=config[0].get("Gateway") or None,
                              internal=bool(body.get("Internal")),
                              labels={str(k): str(v) for k, v in labels.items()})
    request.send_json(201, {"Id": network, "Warning": ""})


def _body(request, verb: str) -> dict:
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("Container"), str):
        raise ApiError(400, f"{verb}: the body needs a Container (name or ID)")
    return body


@route("POST", "/networks/{id}/connect")
def connect(request, id):
    body = _body(request, "connect")
    engine = request.engine
    row = engine.container_store.get(body["Container"])
    record = find(engine, id)
    endpoint = body.get("EndpointConfig") or {}
    current = networks.of_container(engine.store, row["id"])
    if any(n["id"] == record["id"] for n in current):
        raise ApiError(403, f"endpoint with name {row['name']} already exists in network "
                            f"{record['name']}")
    try:
        engine.network_connect(record["name"], row["id"], tuple(endpoint.get("Aliases") or ()),
                               (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or "")
    except FailedPrecondition as e:
        if "host network" in str(e):
            raise ApiError(400, str(e)) from None
        raise
    request.send_empty(200)


@route("POST", "/networks/{id}/disconnect")
def disconnect(request, id):
    body = _body(request, "disconnect")
    engine = request.engine
    row = engine.container_store.get(body["Container"])
    record = find(engine, id)
    if record["name"] == "host":
        raise ApiError(400, "container cannot be disconnected from host network or connected "
                            "to host network")
    try:
        engine.network_disconnect(record["name"], row["id"])
    except FailedPrecondition as e:
        raise ApiError(403, str(e)) from None
    request.send_empty(200)


@route("POST", "/networks/prune")
def prune_networks(request):
    filters = request.filters()
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")

    def keep(record) -> bool:
        if filters.get("label") and not _labels_match(record, filters["label"]):
            return False
        if filters.get("label!") and _labels_match(record, filters["label!"]):
            return False
        if filters.get("until"):
            try:
                until = min(parse_time(v) for v in filters["until"])
            except ValueError:
                raise ApiError(400, f"invalid until filter: {filters['until']}") from None
            if record["created"] * 1e9 >= until:
                return False
        return True

    deleted = request.engine.network_prune(keep)
    emit(request.engine.store, "network", "prune", "", {"reclaimed": "0"})
    return {"NetworksDeleted": deleted}
