"""Networks: bridge networks of a store, kept as rows in ``networks`` (Docker's model).

A network is a Linux bridge named ``lamina`` + 9 hex digits of its ID (recognisably lamina's,
unique across stores), one IPv4 subnet and its gateway (the bridge's address). The CNI plugins
(:mod:`lamina.cni`) make the bridge when the first container joins (it stays until ``network
rm``, as Docker's docker0 does) and hand out addresses from
the subnet (host-local IPAM, its files inside the store); :mod:`lamina.endpoints` attaches
containers. ``host`` and ``none`` are predefined and have no row; ``bridge`` is the default
network of ``run``/``create``, made on first use, as Docker's ``docker0`` network.

Subnets not given with ``--subnet`` come from a pool (``LAMINA_NETWORK_POOL``: comma-separated
``CIDR[:SIZE]``, by default Docker's 172.17.0.0/16 ... 172.31.0.0/16 then 192.168.0.0/16 in
/20s), skipping those of other networks of the store and any that overlaps a route of the host
(``/proc/net/route``: another engine's bridge, a VPN, the LAN).

A container's networks are rows of ``container_networks``: the aliases and address asked for at
create, and, while it runs, the address, gateway and MAC it got and the ports it publishes.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

from . import cjson
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .metadata import Transaction, prefix_bounds

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:  # ipaddress: imported where addresses are parsed (inspect, ps need none)
    import ipaddress

    from .store import Store

PREDEFINED = {"none": "null", "host": "host"}  # networks without a row, and their drivers
DEFAULT = "bridge"
DEFAULT_POOL = ("172.17.0.0/16:16,172.18.0.0/15:16,172.20.0.0/14:16,172.24.0.0/13:16,"
                "192.168.0.0/16:20")
_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"  # checked by re where a network is made: not at import


# ------------------------------------------------------------------------------- port specs
def parse_publish(text: str) -> tuple[str, int, int, str]:
    """``-p [IP:][HOST:]CONTAINER[/PROTO]`` -> (host IP or "", host port or 0 for any,
    container port, protocol)."""
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    host_ip = ""
    if spec.startswith("["):
        raise InvalidArgument(f"invalid port specification: {text!r} (IPv6 is not supported)")
    parts = spec.split(":")
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1:
        host, container = "", parts[0]
    else:
        raise InvalidArgument(f"invalid port specification: {text!r}")
    if host_ip:
        import ipaddress

        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid IP address: {host_ip}") from None
    return host_ip, _port(host, text, allow_zero=True) if host else 0, _port(container, text), proto


def _port(value: str, text: str, allow_zero: bool = False) -> int:
    if not value.isdigit() or not (0 if allow_zero else 1) <= int(value) <= 65535:
        raise InvalidArgument(f"invalid port specification: {text!r}")
    return int(value)


def exposed_ports(image_config: dict) -> list[tuple[str, int, int, str]]:
    """``-P``: every EXPOSE of the image, each to a random host port."""
    out = []
    for key in sorted(image_config.get("ExposedPorts") or {}):
        port, _, proto = key.partition("/")
        if port.isdigit():
            out.append(("", 0, int(port), proto or "tcp"))
    return out


# ------------------------------------------------------------------------------- subnets
def host_routes() -> list[ipaddress.IPv4Network]:
    """The destinations of the host's IPv4 routes (the default route left out)."""
    import ipaddress

    out = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                fields = line.split()
                dest, mask = (int(fields[i], 16).to_bytes(4, "little") for i in (1, 7))
                if mask == b"\0\0\0\0":
                    continue
                prefix = bin(int.from_bytes(mask, "big")).count("1")
                out.append(ipaddress.IPv4Network((ipaddress.IPv4Address(dest), prefix),
                                                 strict=False))
    except OSError:
        pass
    return out


def pool() -> list[tuple[ipaddress.IPv4Network, int]]:
    """The address pool: (range, size of each subnet) pairs (``LAMINA_NETWORK_POOL``)."""
    import ipaddress

    out = []
    for item in (os.environ.get("LAMINA_NETWORK_POOL") or DEFAULT_POOL).split(","):
        cidr, _, size = item.strip().partition(":")
        try:
            net = ipaddress.IPv4Network(cidr, strict=False)
            out.append((net, int(size) if size else net.prefixlen))
        except ValueError:
            raise InvalidArgument(f"invalid LAMINA_NETWORK_POOL entry {item!r}: CIDR[:SIZE]") from None
    return out


def _choose_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    blocked = taken + host_routes()
    for base, size in pool():
        for subnet in base.subnets(new_prefix=max(size, base.prefixlen)):
            if not any(subnet.overlaps(other) for other in blocked):
                return subnet
    raise FailedPrecondition("could not find an available, non-overlapping IPv4 address pool "
                             "among the defaults to assign to the network")


# ------------------------------------------------------------------------------- records
def _record(row) -> dict:
    return {"id": row["id"], "name": row["name"], "driver": row["driver"],
            "subnet": row["subnet"], "gateway": row["gateway"], "internal": bool(row["internal"]),
            "bridge": row["bridge"], "labels": cjson.loads(row["labels"]), "created": row["created"]}


@lru_cache(maxsize=64)
def predefined_id(root: str, name: str) -> str:
    """The stable ID of a predefined network (``host``, ``none``) of the store at ``root``
    (made once for each: every inspect of a container on one shows it)."""
    from .digest import hex_of, sha256_bytes  # no hashlib: it loads libcrypto (inspect, ps)

    return hex_of(sha256_bytes(f"lamina network\0{os.path.abspath(root)}\0{name}".encode()))


def _predefined(store: Store, name: str) -> dict:
    return {"id": predefined_id(store.root, name), "name": name, "driver": PREDEFINED[name],
            "subnet": "", "gateway": "", "internal": False, "bridge": "", "labels": {},
            "created": 0.0}


def create(store: Store, name: str, driver: str = "bridge", subnet: str | None = None,
           gateway: str | None = None, internal: bool = False,
           labels: dict[str, str] | None = None) -> str:
    """A new bridge network; returns its ID. Docker's errors: a predefined or taken name, a
    driver other than bridge, a subnet that overlaps another network's or a host route, a
    gateway outside its subnet."""
    import re

    if not re.match(_NAME, name or ""):
        raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                              "are allowed")
    if name in PREDEFINED or (name == DEFAULT and driver != "bridge"):
        raise FailedPrecondition(f"operation is not permitted on predefined {name} network")
    if driver in ("host", "null"):
        raise FailedPrecondition(f'only one instance of "{driver}" network is allowed')
    if driver != "bridge":
        raise NotFound(f'plugin "{driver}" not found')
    import ipaddress

    wanted = None
    if subnet:
        try:
            wanted = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid subnet {subnet}: an IPv4 CIDR such as "
                                  "10.1.0.0/24") from None
        if wanted.prefixlen > 30:
            raise InvalidArgument(f"invalid subnet {subnet}: too small for a network")
    elif gateway:
        raise InvalidArgument("a gateway needs a subnet (--subnet)")
    network_id = os.urandom(32).hex()
    with Transaction(store.db):
        if store.db.execute("SELECT 1 FROM networks WHERE name = ?", (name,)).fetchone():
            raise AlreadyExists(f"network with name {name} already exists")
        taken = [ipaddress.IPv4Network(r[0]) for r in store.db.execute("SELECT subnet FROM networks")]
        if wanted is None:
            chosen = _choose_subnet(taken)
        else:
            chosen = wanted
            for other in taken + host_routes():
                if chosen.overlaps(other):
                    raise FailedPrecondition(f"invalid pool request: Pool overlaps with other one "
                                             f"on this address space ({chosen} overlaps {other})")
        if gateway:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError:
                raise InvalidArgument(f"invalid gateway {gateway}") from None
            if gw not in chosen or gw in (chosen.network_address, chosen.broadcast_address):
                raise InvalidArgument(f"no matching subnet for gateway {gateway}")
        else:
            gw = chosen.network_address + 1
        store.db.execute(
            "INSERT INTO networks VALUES (?,?,?,?,?,?,?,?,?)",
            (network_id, name, driver, str(chosen), str(gw), int(internal),
             "lamina" + network_id[:9], cjson.dumps(labels or {}, sort_keys=True), time.time()))
    from .events import emit

    emit(store, "network", "create", network_id, {"name": name, "type": driver})
    return network_id


def ensure_default(store: Store) -> dict:
    """The default ``bridge`` network, made on first use."""
    row = store.db.execute("SELECT * FROM networks WHERE name = ?", (DEFAULT,)).fetchone()
    if row is None:
        try:
            create(store, DEFAULT)
        except AlreadyExists:  # another command made it meanwhile
            pass
        row = store.db.execute("SELECT * FROM networks WHERE name = ?", (DEFAULT,)).fetchone()
    return _record(row)


def get(store: Store, ident: str) -> dict:
    """The network ``ident`` names (name, ID or unique ID prefix); Docker's NotFound else."""
    if ident in PREDEFINED:
        return _predefined(store, ident)
    if ident == DEFAULT:
        return ensure_default(store)
    db = store.db
    row = db.execute("SELECT * FROM networks WHERE name = ? OR id = ?", (ident, ident)).fetchone()
    if row is None and ident and all(c in "0123456789abcdef" for c in ident.lower()):
        rows = db.execute("SELECT * FROM networks WHERE id >= ? AND id < ?",
                          prefix_bounds(ident.lower())).fetchall()
        if len(rows) > 1:
            raise InvalidArgument(f"network {ident} is ambiguous ({len(rows)} matches found "
                                  "based on ID prefix)")
        row = rows[0] if rows else None
        if row is None:
            for name in PREDEFINED:
                if predefined_id(store.root, name).startswith(ident.lower()):
                    return _predefined(store, name)
    if row is None:
        raise NotFound(f"network {ident} not found")
    return _record(row)


def ls(store: Store, make_default: bool = True) -> list[dict]:
    """Every network, the predefined ones included, sorted by name (as ``docker network ls``);
    the default one is made if need be unless ``make_default`` is False."""
    if make_default:
        ensure_default(store)
    out = [_record(r) for r in store.db.execute("SELECT * FROM networks")]
    out += [_predefined(store, name) for name in PREDEFINED]
    return sorted(out, key=lambda r: r["name"])


def users(store: Store, network_id: str) -> list[str]:
    """IDs of the containers configured on the network (running or not)."""
    return [r[0] for r in store.db.execute(
        "SELECT container_id FROM container_networks WHERE network_id = ?", (network_id,))]


def lock(store: Store, network_id: str, exclusive: bool, blocking: bool = True) -> int | None:
    """A file lock on the network (a file descriptor to close; None if ``blocking`` is False
    and it is taken): attaches share it, ``remove`` takes it alone to delete the bridge."""
    import fcntl

    directory = os.path.join(store.root, "networks", "locks")
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, network_id), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                    | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove(store: Store, ident: str) -> str:
    """Delete a network nobody is attached to, and its bridge; returns its ID. Stopped
    containers configured on it lose it (Docker refuses them at their next start; here they
    start without it)."""
    from .cni import delete_link, drop_network_rules

    record = get(store, ident)
    if record["name"] in PREDEFINED or record["name"] == DEFAULT:
        raise FailedPrecondition(f"{record['name']} is a pre-defined network and cannot be removed")
    fd = lock(store, record["id"], exclusive=True)
    try:
        _remove(store, record)
        drop_network_rules(record)
        delete_link(record["bridge"])
    finally:
        os.close(fd)
    for name in (record["id"], record["id"] + ".rules"):
        try:
            os.unlink(os.path.join(store.root, "networks", "locks", name))
        except FileNotFoundError:
            pass
    from .events import emit

    emit(store, "network", "destroy", record["id"], {"name": record["name"], "type": "bridge"})
    return record["id"]


def _remove(store: Store, record: dict) -> None:
    with Transaction(store.db):
        active = store.db.execute(
            "SELECT container_id FROM container_networks WHERE network_id = ? AND ip != ''",
            (record["id"],)).fetchall()
        if active:
            raise FailedPrecondition(f"error while removing network: network {record['name']} id "
                                     f"{record['id']} has active endpoints")
        store.db.execute("DELETE FROM container_networks WHERE network_id = ?", (record["id"],))
        store.db.execute("DELETE FROM networks WHERE id = ?", (record["id"],))


def prune(store: Store, select=None) -> list[str]:
    """Remove the user networks no container is configured on (``select(record)``: those the
    filters keep); their names."""
    out = []
    for record in ls(store):
        if record["name"] in PREDEFINED or record["name"] == DEFAULT:
            continue
        if users(store, record["id"]) or (select is not None and not select(record)):
            continue
        try:
            remove(store, record["id"])
        except (FailedPrecondition, NotFound):
            continue
        out.append(record["name"])
    return out


# ------------------------------------------------------------------------------- a container's networks
def configure(store: Store, container_id: str, network: str, aliases=(), ip: str = "",
              db=None) -> dict:
    """Record that the container is on ``network`` (a bridge network), with its ``aliases``
    and the address asked for (``--ip``, checked against the subnet). Inside the caller's
    transaction when ``db`` is given."""
    record = get(store, network)
    if record["driver"] != "bridge":
        raise InvalidArgument(f"container cannot be connected to network {network}")
    if ip and record["name"] == DEFAULT:
        raise InvalidArgument("user specified IP address is supported on user defined networks "
                              "only")
    if ip:
        import ipaddress

        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            raise InvalidArgument(f"invalid IPv4 address: {ip}") from None
        subnet = ipaddress.IPv4Network(record["subnet"])
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address,
                                                ipaddress.IPv4Address(record["gateway"])):
            raise InvalidArgument(f"invalid address {ip}: it does not belong to any of this "
                                  f"network's subnets ({record['subnet']})")
    if aliases and record["name"] == DEFAULT:
        raise InvalidArgument("network-scoped alias is supported only for containers in user "
                              "defined networks")

    def insert(db):
        if db.execute("SELECT 1 FROM container_networks WHERE container_id = ? AND network_id = ?",
                      (container_id, record["id"])).fetchone():
            raise AlreadyExists(f"endpoint with name {container_id[:12]} already exists in "
                                f"network {record['name']}")
        db.execute("INSERT INTO container_networks(container_id, network_id, aliases,"
                   " requested_ip) VALUES (?,?,?,?)",
                   (container_id, record["id"], cjson.dumps(list(aliases)), ip))

    if db is not None:
        insert(db)
    else:
        with Transaction(store.db):
            insert(store.db)
    return record


def unconfigure(store: Store, container_id: str, network_id: str) -> None:
    with Transaction(store.db):
        store.db.execute("DELETE FROM container_networks WHERE container_id = ? AND network_id = ?",
                         (container_id, network_id))


def of_container(store: Store, container_id: str) -> list[dict]:
    """The container's bridge networks, in the order they were configured: the network record
    with its endpoint (``aliases``, ``requested_ip``, ``ifname``, ``ip``, ``prefix``,
    ``gateway_ip``, ``mac``, ``ports``)."""
    rows = store.db.execute(
        "SELECT n.*, c.aliases, c.requested_ip, c.ifname, c.ip, c.prefix, c.gateway AS gateway_ip,"
        " c.mac, c.ports FROM container_networks c JOIN networks n ON n.id = c.network_id"
        " WHERE c.container_id = ? ORDER BY c.rowid", (container_id,)).fetchall()
    out = []
    for r in rows:
        item = _record(r)
        item.update(aliases=cjson.loads(r["aliases"]), requested_ip=r["requested_ip"],
                    ifname=r["ifname"], ip=r["ip"], prefix=r["prefix"],
                    gateway_ip=r["gateway_ip"], mac=r["mac"], ports=cjson.loads(r["ports"]))
        out.append(item)
    return out


def set_endpoint(store: Store, container_id: str, network_id: str, **values) -> None:
    """Record what the container got on the network (``ifname``, ``ip``, ``prefix``,
    ``gateway``, ``mac``, ``ports``), or clear it (values of "")."""
    if "ports" in values and not isinstance(values["ports"], str):
        values["ports"] = cjson.dumps(values["ports"])
    sets = ", ".join(f"{k} = ?" for k in values)
    with Transaction(store.db):
        store.db.execute(f"UPDATE container_networks SET {sets} WHERE container_id = ? AND "
                         "network_id = ?", (*values.values(), container_id, network_id))


def attached(store: Store, network_id: str) -> list[dict]:
    """The endpoints on the network now: container ID and name, hostname, ip, mac, aliases."""
    rows = store.db.execute(
        "SELECT c.container_id, c.ip, c.prefix, c.mac, c.aliases, k.name, k.run_config"
        " FROM container_networks c JOIN containers k ON k.id = c.container_id"
        " WHERE c.network_id = ? AND c.ip != '' ORDER BY c.rowid", (network_id,)).fetchall()
    return [{"id": r["container_id"], "name": r["name"], "ip": r["ip"], "prefix": r["prefix"],
             "mac": r["mac"], "aliases": cjson.loads(r["aliases"]),
             "hostname": cjson.loads(r["run_config"] or "{}").get("hostname") or r["container_id"][:12]}
            for r in rows]


def all_endpoints(store: Store) -> list[tuple[str, str]]:
    """(container ID, network ID) of every endpoint that is attached now."""
    return [(r[0], r[1]) for r in store.db.execute(
        "SELECT container_id, network_id FROM container_networks WHERE ip != ''")]


def published(store: Store, container_id: str) -> list[dict]:
    """The ports the container publishes now (Docker's Port objects): its bridge endpoints',
    or a rootless container's user-mode ones."""
    out = []
    for r in store.db.execute("SELECT ports FROM container_networks WHERE container_id = ?"
                              " AND ip != ''", (container_id,)):
        out.extend(cjson.loads(r[0]))
    return out or user_mode_ports(store, container_id)


# A rootless container has no bridge endpoint (lamina.runtime.usernet): its owner records the
# ports slirp4netns forwards (random host ports resolved) in its bundle while it runs.
USER_MODE_PORTS = "ports.json"


def record_user_mode_ports(store: Store, container_id: str, records: list[dict] | None) -> None:
    """Record (a list of Docker's Port objects) or forget (None) a rootless container's
    published ports; replaced whole (a rename), so a reader sees one version or none."""
    path = os.path.join(store.bundle_dir(container_id), USER_MODE_PORTS)
    if records is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    from .runstate import replace_json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_json(path, records)


def user_mode_ports(store: Store, container_id: str) -> list[dict]:
    """A rootless container's published ports while its owner runs it (none recorded: [])."""
    try:
        with open(os.path.join(store.bundle_dir(container_id), USER_MODE_PORTS), "rb") as f:
            records = cjson.loads(f.read() or b"[]")
    except (OSError, ValueError):
        return []
    return records if isinstance(records, list) else []


# ------------------------------------------------------------------------------- documents
def document(store: Store, record: dict, containers: bool = False) -> dict:
    """Docker's ``Network`` (``network inspect``, the Engine API)."""
    from .image import rfc3339

    config = []
    if record["subnet"]:
        config = [{"Subnet": record["subnet"], "Gateway": record["gateway"]}]
    endpoints = {}
    if containers and record["subnet"]:
        for e in attached(store, record["id"]):
            endpoints[e["id"]] = {
                "Name": e["name"], "EndpointID": endpoint_id(e["id"], record["id"]),
                "MacAddress": e["mac"], "IPv4Address": f"{e['ip']}/{e['prefix']}",
                "IPv6Address": ""}
    options = {}
    if record["bridge"]:
        options = {"com.docker.network.bridge.name": record["bridge"]}
    created = record["created"] or _store_created(store)
    return {"Name": record["name"], "Id": record["id"], "Created": rfc3339(created),
            "Scope": "local", "Driver": record["driver"], "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {} if record["subnet"] else None,
                     "Config": config},
            "Internal": record["internal"], "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": endpoints,
            "Options": options, "Labels": record["labels"]}


def endpoint_id(container_id: str, network_id: str) -> str:
    """A stable EndpointID for a container on a network."""
    import hashlib

    return hashlib.sha256(f"{container_id}\0{network_id}".encode()).hexdigest()


def _store_created(store: Store) -> float:
    try:
        return os.stat(os.path.join(store.root, "lamina.db")).st_mtime
    except OSError:
        return 0.0


def settings(store: Store, container_id: str, mode: str, running: bool,
             exposed: dict | None = None) -> dict:
    """Docker's ``NetworkSettings`` of a container inspect: ``Ports`` (published ones, and the
    image's other EXPOSEs as null, while it runs), ``Networks`` with each endpoint's address,
    gateway and MAC; the top-level address fields are the default ``bridge`` network's, as
    Docker fills them."""
    empty = {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "",
             "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
             "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
             "DriverOpts": None, "DNSNames": None}
    doc = {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
           "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
           "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
           "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
           "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", "Networks": {}}
    joined = of_container(store, container_id) if mode not in PREDEFINED else []
    ports: dict = {}
    if not joined:
        doc["Networks"][mode] = {**empty, "NetworkID": predefined_id(store.root, mode)
                                 if mode in PREDEFINED else ""}
        from .userns import rootless

        if not (running and mode not in PREDEFINED and rootless()):
            return doc
        _port_map(ports, user_mode_ports(store, container_id))  # lamina.runtime.usernet
    for network in joined:
        endpoint = dict(empty)
        user = network["name"] != DEFAULT
        endpoint["NetworkID"] = network["id"]
        if user:
            endpoint["Aliases"] = [*network["aliases"], container_id[:12]]
            endpoint["DNSNames"] = None
        if network["requested_ip"]:
            endpoint["IPAMConfig"] = {"IPv4Address": network["requested_ip"]}
        if network["ip"]:
            endpoint.update(EndpointID=endpoint_id(container_id, network["id"]),
                            Gateway=network["gateway_ip"], IPAddress=network["ip"],
                            IPPrefixLen=network["prefix"], MacAddress=network["mac"])
            _port_map(ports, network["ports"])
            doc["SandboxKey"] = os.path.join(store.root, "netns", container_id)
            doc["SandboxID"] = endpoint_id(container_id, "sandbox")
        if not user:
            for key in ("EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "MacAddress"):
                doc[key] = endpoint[key]
        doc["Networks"][network["name"]] = endpoint
    if running:
        for key in sorted(exposed or {}):
            ports.setdefault(key if "/" in key else key + "/tcp", None)
    doc["Ports"] = ports
    return doc


def _port_map(ports: dict, records: list[dict]) -> None:
    """Add Docker's Port objects to NetworkSettings.Ports ({"80/tcp": [{HostIp, HostPort}]})."""
    for p in records:
        ports.setdefault(f"{p['ContainerPort']}/{p['Protocol']}", []).append(
            {"HostIp": p["HostIp"], "HostPort": p["HostPort"]})


def port_bindings(ports) -> dict:
    """HostConfig.PortBindings of ``-p`` specs: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}."""
    out: dict = {}
    for host_ip, host_port, container_port, proto in ports or ():
        out.setdefault(f"{container_port}/{proto}", []).append(
            {"HostIp": host_ip, "HostPort": str(host_port) if host_port else ""})
    return out
