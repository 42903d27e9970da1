"""The CNI plugins, called as the CNI specification says, and network namespaces.

lamina has no libcni: a network's configuration list (:func:`conflist`) is a few plugin
configurations that :func:`add` runs in order (each gets the previous one's result as
``prevResult``) and :func:`delete` runs in reverse, each a binary of Debian's
``containernetworking-plugins`` (``/usr/lib/cni``, or ``LAMINA_CNI_PATH``) fed its JSON on stdin
with the ``CNI_*`` environment. The list Podman 4 uses with CNI, less what lamina does not need:

* ``bridge``: the network's Linux bridge (made by the first ADD), a veth pair into the
  container's namespace (``eth0``), addresses from ``host-local`` IPAM (its files under the
  store's ``networks/ipam/``: one file per address naming its container, written under a file
  lock, so concurrent ADDs never hand out one address twice and a killed lamina leaves a file
  that ``system check`` finds) and the gateway route unless ``--internal``;
* ``portmap`` when the container publishes ports: DNAT rules from the host's addresses (its
  loopback too: ``snat`` sets the bridge's ``route_localnet`` and masquerades hairpin and
  localhost traffic).

What Podman's CNI list adds per container with the bridge's ``ipMasq`` and the ``firewall``
plugin (a masquerade rule, FORWARD accepts) is the same for every container of a network, so
lamina writes it once per network instead, as netavark (Podman 4's own network stack) and
Docker do: :func:`ensure_network_rules` (a masquerade of the subnet's traffic leaving by another
interface; FORWARD accepts for the bridge's traffic, ahead of a DROP policy such as Docker
sets), checked with one ``iptables -C`` per start and written again if someone flushed them;
:func:`drop_network_rules` at ``network rm``. Each container then costs no iptables process
unless it publishes ports (some 30 fewer per ``run`` than the per-container rules).

The ADD's result is kept under ``networks/results/`` for the DEL (a plugin may need the addresses
in it: Podman's firewall plugin does), as libcni keeps it under /var/lib/cni; it is written,
without a result, before the first plugin runs, so that a lamina killed meanwhile leaves what
``system check`` finds and deletes.

A network namespace is a file, ``<store>/netns/<container ID>``: a bind mount of
``/proc/self/ns/net`` of a child that unshared it (its ``lo`` already up), so it outlives every
process and runc joins it by path.
"""

from __future__ import annotations

import json
import os

from .errors import LaminaError, Unavailable

CNI_VERSION = "1.0.0"
DEFAULT_PATH = "/usr/lib/cni:/opt/cni/bin"
CLONE_NEWNET = 0x40000000


class PluginError(LaminaError):
    """A CNI plugin failed: its own message."""

    exit_code = 125


def plugin_dirs() -> list[str]:
    return [d for d in (os.environ.get("LAMINA_CNI_PATH") or DEFAULT_PATH).split(":") if d]


def _find(plugin: str) -> str:
    for directory in plugin_dirs():
        path = os.path.join(directory, plugin)
        if os.access(path, os.X_OK):
            return path
    raise Unavailable(f"CNI plugin {plugin!r} not found in {':'.join(plugin_dirs())} "
                      "(apt-get install -y containernetworking-plugins)")


def ipam_dir(store_root: str) -> str:
    return os.path.join(store_root, "networks", "ipam")


def results_dir(store_root: str) -> str:
    return os.path.join(store_root, "networks", "results")


def conflist(store_root: str, network: dict, ports: bool) -> dict:
    """The CNI configuration list of a bridge ``network`` record (:mod:`lamina.networks`);
    ``ports``: with the portmap plugin."""
    internal = network["internal"]
    ipam = {"type": "host-local", "dataDir": ipam_dir(store_root),
            "ranges": [[{"subnet": network["subnet"], "gateway": network["gateway"]}]]}
    if not internal:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    plugins = [{"type": "bridge", "bridge": network["bridge"], "isGateway": not internal,
                "ipMasq": False, "hairpinMode": True, "ipam": ipam}]
    if ports:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    # host-local's directory is named after the network: its ID, unique even across re-creations
    return {"cniVersion": CNI_VERSION, "name": "lamina-" + network["id"][:16], "plugins": plugins}


def network_rules(network: dict) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule) of a bridge network's own rules (none for an internal one)."""
    if network["internal"]:
        return []
    bridge, tag = network["bridge"], ["-m", "comment", "--comment",
                                      f"lamina network {network['id'][:12]}"]
    return [("nat", "POSTROUTING", ["-s", network["subnet"], "!", "-o", bridge, *tag,
                                    "-j", "MASQUERADE"]),
            ("filter", "FORWARD", ["-o", bridge, "-m", "conntrack", "--ctstate",
                                   "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"]),
            ("filter", "FORWARD", ["-i", bridge, *tag, "-j", "ACCEPT"])]


def _iptables(*args: str) -> int:
    import subprocess

    return subprocess.run(["iptables", "-w", *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False).returncode


def ensure_network_rules(network: dict) -> None:
    """Write the network's rules unless they are there (one ``iptables -C`` when they are):
    the masquerade appended to POSTROUTING, the accepts inserted first in FORWARD."""
    rules = network_rules(network)
    if not rules or _iptables("-t", rules[0][0], "-C", rules[0][1], *rules[0][2]) == 0:
        return
    for table, chain, rule in rules:
        if _iptables("-t", table, "-C", chain, *rule) != 0:
            verb = ["-A", chain] if table == "nat" else ["-I", chain, "1"]
            if _iptables("-t", table, *verb, *rule) != 0:
                raise LaminaError(f"cannot add the {network['name']} network's iptables rule "
                                  f"to {table} {chain}")


def drop_network_rules(network: dict) -> None:
    """Delete the network's rules (every copy; idempotent)."""
    for table, chain, rule in network_rules(network):
        while _iptables("-t", table, "-D", chain, *rule) == 0:
            pass


def _call(plugin: dict, command: str, config: dict, container_id: str, netns: str, ifname: str,
          runtime: dict, args: str, previous: dict | None) -> dict | None:
    import subprocess

    conf = {**plugin, "cniVersion": config["cniVersion"], "name": config["name"]}
    capabilities = conf.pop("capabilities", {})
    wanted = {k: v for k, v in runtime.items() if capabilities.get(k)}
    if wanted:
        conf["runtimeConfig"] = wanted
    if previous is not None:
        conf["prevResult"] = previous
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": ":".join(plugin_dirs()),
           "PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run([_find(plugin["type"])], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        try:
            error = json.loads(proc.stdout)
            message = error.get("msg", "") + (f": {error['details']}" if error.get("details") else "")
        except ValueError:
            message = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise PluginError(f"CNI plugin {plugin['type']} {command} failed: {message}")
    if command != "ADD":
        return None
    return json.loads(proc.stdout or b"{}")


# Chained plugins that hand their prevResult on unchanged and act only on what it names
# (rules for its addresses): after the first plugin they can run side by side.
PASS_THROUGH = ("portmap", "firewall", "tuning")


def _each(calls) -> list:
    """Run the callables side by side (one thread each: each waits for a plugin process);
    their results, or the first exception raised."""
    import threading

    out: list = [None] * len(calls)
    errors: list = []

    def one(i, call):
        try:
            out[i] = call()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(calls[1:], 1)]
    for t in threads:
        t.start()
    one(0, calls[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _keep(store_root: str, container_id: str, ifname: str, doc: dict) -> None:
    os.makedirs(results_dir(store_root), exist_ok=True)
    path = os.path.join(results_dir(store_root), f"{container_id}-{ifname}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


def add(store_root: str, config: dict, container_id: str, netns: str, ifname: str,
        runtime: dict | None = None, ip: str = "") -> dict:
    """Run the list's ADD: the container (its namespace file ``netns``) gets ``ifname`` on the
    network; returns the result (``ips``, ``interfaces``...). ``runtime``: the capabilities'
    arguments (``portMappings``); ``ip``: the address asked for. On failure whatever the
    plugins made is deleted again before the error is raised.

    The first plugin (bridge) runs first; the ones after it that only pass its result on
    (:data:`PASS_THROUGH`) run side by side, each given that result, as a chain would give it.
    What is being added is recorded before the first plugin runs, so that a lamina killed
    meanwhile leaves something ``system check`` finds and deletes."""
    runtime = runtime or {}
    args = "IgnoreUnknown=1" + (f";IP={ip}" if ip else "")
    doc = {"config": config, "result": None, "runtime": runtime, "netns": netns}
    _keep(store_root, container_id, ifname, doc)
    first, rest = config["plugins"][0], config["plugins"][1:]
    result = None
    try:
        result = _call(first, "ADD", config, container_id, netns, ifname, runtime, args, None)
        if rest and all(p["type"] in PASS_THROUGH for p in rest):
            _each([lambda p=p: _call(p, "ADD", config, container_id, netns, ifname, runtime,
                                     args, result) for p in rest])
        else:
            for plugin in rest:
                result = _call(plugin, "ADD", config, container_id, netns, ifname, runtime,
                               args, result)
    except BaseException:
        try:
            delete(store_root, config, container_id, netns, ifname, runtime, result)
        except LaminaError:
            pass
        raise
    _keep(store_root, container_id, ifname, {**doc, "result": result})
    return result


def delete(store_root: str, config: dict, container_id: str, netns: str, ifname: str,
           runtime: dict | None = None, result: dict | None = None) -> None:
    """Run the list's DEL (in reverse order; the pass-through plugins side by side, then the
    first). Every plugin is called even if one fails; the first failure is raised at the end.
    A missing ``netns`` is allowed (the plugins then release what they hold outside it:
    addresses, rules)."""
    runtime = runtime or {}
    if netns and not os.path.exists(netns):
        netns = ""
    errors: list = []

    def call(plugin):
        try:
            _call(plugin, "DEL", config, container_id, netns, ifname, runtime, "IgnoreUnknown=1",
                  result)
        except LaminaError as e:
            errors.append(e)
    first, rest = config["plugins"][0], config["plugins"][1:]
    if rest and all(p["type"] in PASS_THROUGH for p in rest):
        _each([lambda p=p: call(p) for p in reversed(rest)])
    else:
        for plugin in reversed(rest):
            call(plugin)
    call(first)
    try:
        os.unlink(os.path.join(results_dir(store_root), f"{container_id}-{ifname}.json"))
    except FileNotFoundError:
        pass
    if errors:
        raise errors[0]


def cached(store_root: str) -> list[tuple[str, str, dict]]:
    """Every kept ADD: (container ID, interface, {config, result, runtime, netns})."""
    out = []
    directory = results_dir(store_root)
    for name in sorted(_listdir(directory)):
        if not name.endswith(".json"):
            continue
        container_id, _, ifname = name[:-5].rpartition("-")
        try:
            with open(os.path.join(directory, name)) as f:
                out.append((container_id, ifname, json.load(f)))
        except (OSError, ValueError):
            continue
    return out


def cached_add(store_root: str, container_id: str, ifname: str) -> dict | None:
    try:
        with open(os.path.join(results_dir(store_root), f"{container_id}-{ifname}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def allocations(store_root: str) -> list[tuple[str, str, str]]:
    """host-local's address files: (network directory, address, container ID)."""
    out = []
    base = ipam_dir(store_root)
    for network in _listdir(base):
        for name in _listdir(os.path.join(base, network)):
            if name.startswith(("last_reserved_ip", "lock")):
                continue
            try:
                with open(os.path.join(base, network, name)) as f:
                    owner = f.read().split()[0] if f else ""
            except (OSError, IndexError):
                owner = ""
            out.append((network, name, owner))
    return out


def free_allocation(store_root: str, network_dir: str, address: str) -> None:
    """Drop one of host-local's address files (``system check --repair``, when DEL cannot)."""
    try:
        os.unlink(os.path.join(ipam_dir(store_root), network_dir, address))
    except FileNotFoundError:
        pass


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------------------- namespaces
def netns_dir(store_root: str) -> str:
    return os.path.join(store_root, "netns")


def create_netns(path: str) -> None:
    """A new network namespace, ``lo`` up, kept by a bind mount on the file ``path``. What the
    child needs is imported before the fork (an import in the child would cost every run)."""
    import ctypes
    import fcntl  # noqa: F401 - for _loopback_up, in the child
    import socket  # noqa: F401
    import struct  # noqa: F401

    from .mount import Mount, mount_all

    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only makes the namespace
        code = 1
        try:
            if libc.unshare(CLONE_NEWNET) == 0:
                _loopback_up()
                mount_all([Mount("bind", "/proc/self/ns/net")], path)
                code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            code = 1
        os._exit(code)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise LaminaError(f"cannot create a network namespace at {path} (needs root)")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, request))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP


def remove_netns(path: str) -> None:
    """Unmount and delete a namespace file (idempotent)."""
    from .mount import unmount

    try:
        unmount(path, detach=True)
    except LaminaError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        pass


def bridge_ports(bridge: str) -> list[str]:
    """The interfaces enslaved to ``bridge`` (empty when it does not exist)."""
    return _listdir(f"/sys/class/net/{bridge}/brif")


def bridge_exists(bridge: str) -> bool:
    return os.path.exists(f"/sys/class/net/{bridge}")


def delete_link(name: str) -> None:
    """Delete a network interface (a lamina bridge left without ports): one RTM_DELLINK netlink
    request, not an ``ip`` process (it runs at every container's exit)."""
    import socket
    import struct

    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return  # gone already
    rtm_dellink, request, ack = 17, 1, 4
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)  # struct ifinfomsg
    message = struct.pack("IHHII", 16 + len(body), rtm_dellink, request | ack, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.sendto(message, (0, 0))
        reply = s.recv(4096)
    error = struct.unpack_from("i", reply, 16)[0] if len(reply) >= 20 else 0
    if error not in (0, -19):  # ENODEV: another process deleted it meanwhile
        raise LaminaError(f"cannot delete {name}: {os.strerror(-error)}")


def lamina_links() -> list[str]:
    """The host's interfaces whose names are lamina's (``lamina`` + 9 hex digits: bridges)."""
    return sorted(n for n in _listdir("/sys/class/net")
                  if n.startswith("lamina") and len(n) == 15)
