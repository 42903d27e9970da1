"""A running container's place on its networks: its namespace, addresses, ports and hosts file.

Whoever owns a container's process (:mod:`lamina.runtime.monitor`) calls :func:`attach` before
the runtime starts it and :func:`detach` once it has ended (and ``rm -f``, or the next command
that finds its owner dead, calls :func:`detach` for an owner that died):

1. the published ports are reserved by binding them (a listening TCP socket, a bound UDP one,
   as Podman's conmon holds them), so a port another program or container holds fails here,
   before any rule exists, and stays held by the owner while the container runs;
2. a network namespace file (:func:`lamina.cni.create_netns`);
3. CNI ADD on each of its networks (``eth0``, ``eth1``...: :mod:`lamina.cni`), the ports mapped
   through the first; what each gave (address, gateway, MAC, ports) recorded in
   ``container_networks``.

Any failure undoes the steps before it, in reverse, so nothing is left half made.

Name resolution between containers on a user network is by **hosts files kept current**, not by
a DNS server (aardvark-dns): every container's ``/etc/hosts`` (a file of its bundle, bind-mounted)
lists the containers on its user networks by name and alias, and is rewritten in place (the same
inode, so the mount sees it) whenever one of them attaches or detaches. Why: lamina is daemonless,
and a DNS server per network is a daemon that must be started, kept and stopped by someone (Podman
runs aardvark-dns from netavark for this); a hosts file costs one small write per peer, works with
every libc and busybox, and needs no port 53 on the bridge. What it gives up: a container that
caches a lookup does not see a peer's new address until it looks again, and names are not
resolved through the host's resolver for other containers. The default ``bridge`` network has no
name resolution, as Docker's.
"""

from __future__ import annotations

import os
import socket

from . import cjson, cni, networks
from .errors import FailedPrecondition, LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .store import Store

LOCALHOST = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
             "ff02::2\tip6-allrouters\n")


class PortTaken(FailedPrecondition):
    """A published host port another program or container holds."""

    exit_code = 125


class Sandbox:
    """What an owner holds while its container runs: the namespace file (None: no bridge
    network) and the sockets that reserve its published ports. ``address``: the container's
    own address where no endpoint record gives it (a rootless user-mode network), for its
    hosts file; ``nameserver``: its network's DNS forwarder (a user-mode network's), for its
    resolv.conf."""

    address: str | None = None
    nameserver: str | None = None

    def __init__(self, netns: str | None = None, sockets=()):
        self.netns = netns
        self.sockets = list(sockets)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []

    def kept_fds(self) -> list[int]:
        """The file descriptors that must stay open while the container runs (its owner keeps
        them across an exec of the relay): the published ports' sockets."""
        return [s.fileno() for s in self.sockets]


def netns_path(store: Store, container_id: str) -> str:
    return os.path.join(cni.netns_dir(store.root), container_id)


def _reserve(ports: list[tuple[str, int, int, str]], name: str) -> tuple[list, list[dict]]:
    """Bind every host port; (sockets, Docker's port records). PortTaken, with nothing held,
    if one is in use."""
    held, records = [], []
    try:
        for host_ip, host_port, container_port, proto in ports:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            try:
                if proto == "tcp":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host_ip or "0.0.0.0", host_port))
                if proto == "tcp":
                    s.listen(1)
            except OSError as e:
                s.close()
                where = f"{host_ip or '0.0.0.0'}:{host_port}"
                raise PortTaken(f"driver failed programming external connectivity on endpoint "
                                f"{name}: Bind for {where} failed: port is already allocated"
                                if e.errno == 98 else f"cannot bind {where}/{proto}: "
                                f"{e.strerror}") from None
            s.set_inheritable(False)
            held.append(s)
            records.append({"HostIp": host_ip or "0.0.0.0", "HostPort": str(s.getsockname()[1]),
                            "ContainerPort": container_port, "Protocol": proto})
    except BaseException:
        for s in held:
            s.close()
        raise
    return held, records


def wanted_ports(config: dict, image_config: dict) -> list[tuple[str, int, int, str]]:
    """The ports a container publishes: ``-p`` ones, then (``-P``) every EXPOSE not given."""
    ports = [tuple(p) for p in config.get("ports") or ()]
    if config.get("publish_all"):
        given = {(p[2], p[3]) for p in ports}
        ports += [p for p in networks.exposed_ports(image_config) if (p[2], p[3]) not in given]
    return ports


def attach(store: Store, container_id: str, name: str, ports=()) -> Sandbox:
    """Put the container on its bridge networks (see the module's docstring); the Sandbox to
    hand to :func:`detach`. A container without bridge networks gets an empty Sandbox."""
    joined = networks.of_container(store, container_id)
    if not joined:
        return Sandbox()
    sockets, records = _reserve(list(ports), name)
    sandbox = Sandbox(netns_path(store, container_id), sockets)
    try:
        cni.remove_netns(sandbox.netns)  # one an owner that died left
        cni.create_netns(sandbox.netns)
        for index, network in enumerate(joined):
            _add(store, container_id, network, f"eth{index}", sandbox.netns,
                 records if index == 0 else [])
    except BaseException:
        detach(store, container_id, sandbox)
        raise
    return sandbox


def _add(store: Store, container_id: str, network: dict, ifname: str, netns: str,
         ports: list[dict]) -> None:
    import ipaddress

    config = cni.conflist(store.root, network, ports=bool(ports))
    mappings = [{"hostPort": int(p["HostPort"]), "containerPort": p["ContainerPort"],
                 "protocol": p["Protocol"], "hostIP": p["HostIp"]} for p in ports]
    rules = networks.lock(store, network["id"] + ".rules", exclusive=True)
    try:
        cni.ensure_network_rules(network)  # one start at a time checks (and writes) them
    finally:
        os.close(rules)
    fd = networks.lock(store, network["id"], exclusive=False)
    try:
        result = cni.add(store.root, config, container_id, netns, ifname,
                         {"portMappings": mappings} if mappings else {},
                         ip=network.get("requested_ip") or "")
    finally:
        os.close(fd)
    address = ipaddress.IPv4Interface(result["ips"][0]["address"])
    interfaces = result.get("interfaces") or []
    index = result["ips"][0].get("interface")
    mac = interfaces[index].get("mac", "") if index is not None and index < len(interfaces) else ""
    try:
        networks.set_endpoint(store, container_id, network["id"], ifname=ifname,
                              ip=str(address.ip), prefix=address.network.prefixlen,
                              gateway=result["ips"][0].get("gateway", ""), mac=mac, ports=ports)
    except BaseException:
        cni.delete(store.root, config, container_id, netns, ifname, {"portMappings": mappings},
                   result)
        raise


def _remove(store: Store, container_id: str, network: dict, ifname: str, netns: str) -> None:
    """CNI DEL of one endpoint (with what its ADD kept), and its record cleared."""
    kept = cni.cached_add(store.root, container_id, ifname)
    if kept is not None:
        cni.delete(store.root, kept["config"], container_id, netns, ifname, kept["runtime"],
                   kept["result"])
    elif network.get("subnet"):
        cni.delete(store.root, cni.conflist(store.root, network, ports=True), container_id,
                   netns, ifname)
    networks.set_endpoint(store, container_id, network["id"], ifname="", ip="", prefix=0,
                          gateway="", mac="", ports=[])


def detach(store: Store, container_id: str, sandbox: Sandbox | None = None) -> None:
    """Undo :func:`attach` (idempotent; with no Sandbox, for an owner that died): DEL on every
    network the container is attached to, its namespace file removed, its ports freed, its
    peers' hosts files rewritten, and a bridge left without ports deleted."""
    netns = sandbox.netns if sandbox and sandbox.netns else netns_path(store, container_id)
    first = None
    touched = []
    for network in networks.of_container(store, container_id):
        ifname = network["ifname"]
        if not ifname and cni.cached_add(store.root, container_id, "eth0") is None:
            continue
        try:
            _remove(store, container_id, network, ifname or "eth0", netns)
        except LaminaError as e:
            first = first or e
        touched.append(network)
    cni.remove_netns(netns)
    if sandbox is not None:
        sandbox.close()
    for network in touched:
        refresh_hosts(store, network["id"])
    if first is not None:
        raise first


def connect(store: Store, container_id: str, name: str, network: str, aliases=(),
            ip: str = "", running: bool = False) -> None:
    """``network connect``: configure the container on ``network``; a running one is attached
    at once (the next free ``ethN``)."""
    record = networks.configure(store, container_id, network, aliases, ip)
    if not running:
        return
    netns = netns_path(store, container_id)
    if not os.path.exists(netns):
        networks.unconfigure(store, container_id, record["id"])
        raise FailedPrecondition(f"container {name} has no network namespace to connect "
                                 f"(its network mode is not a bridge network)")
    used = {n["ifname"] for n in networks.of_container(store, container_id)}
    ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
    record = next(n for n in networks.of_container(store, container_id)
                  if n["id"] == record["id"])
    try:
        _add(store, container_id, record, ifname, netns, [])
    except BaseException:
        networks.unconfigure(store, container_id, record["id"])
        raise
    refresh_hosts(store, record["id"])


def disconnect(store: Store, container_id: str, name: str, network: str) -> None:
    """``network disconnect``: detach from ``network`` (if attached) and forget it."""
    record = networks.get(store, network)
    mine = [n for n in networks.of_container(store, container_id) if n["id"] == record["id"]]
    if not mine:
        raise FailedPrecondition(f"container {container_id} is not connected to network "
                                 f"{record['name']}")
    if mine[0]["ip"]:
        _remove(store, container_id, mine[0], mine[0]["ifname"], netns_path(store, container_id))
    networks.unconfigure(store, container_id, record["id"])
    refresh_hosts(store, record["id"])


# ------------------------------------------------------------------------------- hosts files
def hosts_text(store: Store, container_id: str, hostname: str, extra_hosts=()) -> str:
    """The container's /etc/hosts: localhost, its ``--add-host`` entries (``HOST:IP``), its
    own addresses under its hostname, and the containers on its user networks by name and
    aliases."""
    lines = [LOCALHOST]
    for entry in extra_hosts:
        host, _, address = entry.partition(":")
        lines.append(f"{address}\t{host}\n")
    joined = [n for n in networks.of_container(store, container_id) if n["ip"]]
    for network in joined:
        lines.append(f"{network['ip']}\t{hostname}\n")
    for network in joined:
        if network["name"] == networks.DEFAULT:
            continue
        for peer in networks.attached(store, network["id"]):
            if peer["id"] == container_id:
                continue
            names = " ".join(dict.fromkeys([peer["name"], *peer["aliases"], peer["id"][:12]]))
            lines.append(f"{peer['ip']}\t{names}\n")
    return "".join(lines)


def write_hosts(store: Store, container_id: str) -> None:
    """Rewrite the container's hosts file in place (the bind mount keeps the inode)."""
    row = store.db.execute("SELECT run_config FROM containers WHERE id = ?",
                           (container_id,)).fetchone()
    if row is None:
        return
    run = cjson.loads(row[0] or "{}")
    hostname = run.get("hostname") or container_id[:12]
    path = os.path.join(store.bundle_dir(container_id), "hosts")
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        data = hosts_text(store, container_id, hostname, run.get("extra_hosts") or ()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def refresh_hosts(store: Store, network_id: str) -> None:
    """Rewrite the hosts file of every container attached to the network (one at a time: a
    file lock for the store's hosts files)."""
    if networks.get(store, network_id)["name"] == networks.DEFAULT:
        return
    import fcntl

    directory = os.path.join(store.root, "networks", "locks")
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "hosts"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for peer in networks.attached(store, network_id):
            write_hosts(store, peer["id"])
    finally:
        os.close(fd)


def publish_hosts(store: Store, container_id: str) -> None:
    """Once the container's bundle is written: its hosts file, and its peers'."""
    joined = [n for n in networks.of_container(store, container_id) if n["ip"]]
    if not joined:
        return
    write_hosts(store, container_id)
    for network in joined:
        refresh_hosts(store, network["id"])


# ------------------------------------------------------------------------------- leftovers
def leftovers(store: Store, running: set[str]):
    """What a container that no longer runs left (``running``: the IDs of those that run or
    are being started): (kind, where, fix) for ``system check``, found one after the other
    (a fix applied before the next is looked for)."""
    seen = set()
    for container_id, ifname, kept in cni.cached(store.root):
        if container_id in running:
            continue
        seen.add(container_id)

        def fix(c=container_id, i=ifname, k=kept):
            try:
                cni.delete(store.root, k["config"], c, netns_path(store, c), i, k["runtime"],
                           k["result"])
            except LaminaError:
                pass
        ips = ", ".join(ip.get("address", "") for ip in (kept.get("result") or {}).get("ips", []))
        yield ("network endpoint of a container that no longer runs",
               f"{container_id[:12]} {ifname} {ips}", fix)
    for network_dir, address, owner in cni.allocations(store.root):
        if owner in running or owner in seen:
            continue
        yield ("address allocation of a container that no longer runs",
               f"{network_dir} {address} ({owner[:12] or 'no owner'})",
               lambda n=network_dir, a=address: cni.free_allocation(store.root, n, a))
    for name in sorted(os.listdir(cni.netns_dir(store.root)) if os.path.isdir(
            cni.netns_dir(store.root)) else []):
        if name not in running:
            path = os.path.join(cni.netns_dir(store.root), name)
            yield ("network namespace of a container that no longer runs", f"netns/{name}",
                   lambda p=path: cni.remove_netns(p))
    for container_id, network_id in networks.all_endpoints(store):
        if container_id not in running:
            yield ("network endpoint record of a container that no longer runs",
                   f"{container_id[:12]} on {network_id[:12]}",
                   lambda c=container_id, n=network_id: networks.set_endpoint(
                       store, c, n, ifname="", ip="", prefix=0, gateway="", mac="", ports=[]))
