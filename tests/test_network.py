"""Networks and published ports with the real parts: CNI's bridge, host-local, portmap and
firewall plugins, iptables, runc and busybox's httpd and wget (issue 12, items 1, 2 and 6).

Every test runs on a throwaway store whose address pool (``LAMINA_NETWORK_POOL``) is a range of
10.0.0.0/8 that no route of the host touches, and talks only to addresses of the bridges and
namespaces it made; afterwards nothing of it may be left (no namespace file, no address, no
bridge, no iptables rule).
"""

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import Lamina, needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (apt-get install -y runc)"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs CNI plugins (apt-get install -y containernetworking-plugins)"),
]

HTTPD = ("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")


def free_range() -> ipaddress.IPv4Network:
    """A /16 of 10.0.0.0/8 that overlaps no route of the host (other engines' bridges too)."""
    from lamina.networks import host_routes

    routes = host_routes()
    for candidate in ipaddress.IPv4Network("10.200.0.0/13").subnets(new_prefix=16):
        if not any(candidate.overlaps(r) for r in routes):
            return candidate
    pytest.skip("no free /16 in 10.200.0.0/13 on this host")


@pytest.fixture
def net(store_root, busybox_tar, monkeypatch):
    """A store with busybox; its pool is a free range (the default bridge takes its first /24,
    the test's own networks the next ones). Afterwards: containers removed, nothing left."""
    pool = free_range()
    monkeypatch.setenv("LAMINA_NETWORK_POOL", f"{pool}:24")
    lamina = Lamina(store_root, None)
    lamina("import", busybox_tar, "busybox")
    lamina.pool = pool
    lamina.subnets = iter(list(pool.subnets(new_prefix=24))[100:])
    yield lamina
    for cid in lamina("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        lamina("rm", "-f", cid, check=False)
    bridges = {r["Name"]: r["Options"].get("com.docker.network.bridge.name")
               for r in inspect_networks(lamina)}
    for name in lamina("network", "ls", "-q", "--no-trunc").stdout.split():
        lamina("network", "rm", name, check=False)
    # user networks' bridges went with network rm; the default one stays with its store
    assert_nothing_left(lamina, [b for n, b in bridges.items() if b and n != "bridge"])


def inspect_networks(lamina) -> list[dict]:
    names = lamina("network", "ls", "-q", "--no-trunc").stdout.split()
    return json.loads(lamina("network", "inspect", *names).stdout)


def assert_nothing_left(lamina, bridges) -> None:
    from lamina import cni

    root = lamina.root
    assert os.listdir(cni.netns_dir(root)) == [] if os.path.isdir(cni.netns_dir(root)) else True
    assert cni.allocations(root) == []
    assert cni.cached(root) == []
    for bridge in bridges:
        assert not os.path.exists(f"/sys/class/net/{bridge}"), bridge


def iptables(lamina=None) -> list[str]:
    """iptables-save without comments and counters (what rules exist, not their traffic).

    With ``lamina`` (a store), only what is this store's: the lines that name one of its CNI
    networks, bridges or network rules, and every line of a chain such a line names. On a
    machine where other engines' containers come and go meanwhile (CI runs one test at a time;
    a shared development machine does not) the whole dump would change without us."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
             if line and not line.startswith("#")]
    if lamina is None:
        return lines
    marks = set()
    for doc in inspect_networks(lamina):
        if doc["Options"].get("com.docker.network.bridge.name"):
            marks |= {"lamina-" + doc["Id"][:16], f"lamina network {doc['Id'][:12]}",
                      doc["Options"]["com.docker.network.bridge.name"]}
    ours = [line for line in lines if any(m in line for m in marks)]
    chains = {c for line in ours for c in re.findall(r"CNI-[A-Za-z0-9-]+", line)
              if not c.startswith(("CNI-HOSTPORT", "CNI-FORWARD", "CNI-ADMIN"))}
    return [line for line in lines if line in ours or any(c in line for c in chains)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 20) -> bytes:
    """GET ``url``, retrying while the container's httpd starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def make_network(lamina, name: str, *args) -> ipaddress.IPv4Network:
    subnet = next(lamina.subnets)
    lamina("network", "create", "--subnet", str(subnet), *args, name)
    return subnet


def test_containers_find_each_other_by_name(net):
    subnet = make_network(net, "appnet", "--label", "purpose=test")
    web = net("run", "-d", "--name", "web", "--network", "appnet", "--network-alias", "www",
              "busybox", "sh", "-c", HTTPD.format(text="hello-by-name")).stdout.strip()
    # by name, alias and short ID (the first waits for httpd to listen)
    out = net("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
              "for i in $(seq 50); do wget -qO- http://web/ && break; sleep 0.1; done; "
              f"wget -qO- http://www/ && wget -qO- http://{web[:12]}/").stdout
    assert out == "hello-by-name\n" * 3
    (doc,) = json.loads(net("network", "inspect", "appnet").stdout)
    assert doc["IPAM"]["Config"] == [{"Subnet": str(subnet), "Gateway": str(subnet[1])}]
    assert doc["Labels"] == {"purpose": "test"} and list(doc["Containers"]) == [web]
    address = ipaddress.IPv4Interface(doc["Containers"][web]["IPv4Address"])
    assert address.ip in subnet and address.network == subnet
    settings = json.loads(net("inspect", "web").stdout)[0]["NetworkSettings"]
    assert settings["Networks"]["appnet"]["IPAddress"] == str(address.ip)
    assert settings["Networks"]["appnet"]["Aliases"] == ["www", web[:12]]
    assert settings["IPAddress"] == ""  # Docker fills the top level for the default bridge only

    # connect and disconnect a running container of the default network
    other = net("run", "-d", "--name", "other", "busybox", "sleep", "60").stdout.strip()
    assert net("exec", "other", "wget", "-qO-", "-T", "2", "http://web/", check=False).returncode
    net("network", "connect", "appnet", "other")
    assert net("exec", "other", "wget", "-qO-", "http://web/").stdout == "hello-by-name\n"
    assert net("exec", "web", "grep", "-c", "other", "/etc/hosts").stdout == "1\n"  # kept current
    settings = json.loads(net("inspect", other).stdout)[0]["NetworkSettings"]
    assert sorted(settings["Networks"]) == ["appnet", "bridge"] and settings["IPAddress"]
    net("network", "disconnect", "appnet", "other")
    assert net("exec", "web", "grep", "-c", "other", "/etc/hosts", check=False).stdout == "0\n"
    assert net("exec", "other", "ip", "-o", "addr").stdout.count(" inet ") == 2  # lo, eth0
    proc = net("network", "rm", "appnet", check=False)
    assert proc.returncode == 1 and "has active endpoints" in proc.stderr
    net("rm", "-f", "web", "other")
    assert net("network", "rm", "appnet").stdout == "appnet\n"


def test_published_port_from_loopback_and_the_bridge(net):
    # the shared chains portmap and firewall make on their first use stay (as CNI's README says
    # of CNI-HOSTPORT-DNAT); a first container makes them, so that the comparison below is of
    # what one container adds and leaves
    net("run", "--rm", "-p", "127.0.0.1::80", "busybox", "true")
    before = iptables()
    mine = iptables(net)
    port, other_port = free_port(), free_port()
    cid = net("run", "-d", "--name", "pub", "-p", f"127.0.0.1:{port}:80", "-p", f"{other_port}:80",
              "-p", "80/udp", "busybox", "sh", "-c", HTTPD.format(text="hello-published")).stdout.strip()
    assert fetch(f"http://127.0.0.1:{port}/") == b"hello-published\n"
    running = iptables(net)
    assert len(running) > len(mine) and any(f"--dport {port}" in line for line in running)
    doc = json.loads(net("inspect", "pub").stdout)[0]
    settings = doc["NetworkSettings"]
    gateway = settings["Gateway"]
    assert ipaddress.IPv4Address(gateway) in net.pool and settings["IPAddress"]
    assert settings["MacAddress"] and settings["Networks"]["bridge"]["Gateway"] == gateway
    # the bridge's own address (another of the host's addresses, ours) reaches it too
    assert fetch(f"http://{gateway}:{other_port}/") == b"hello-published\n"
    udp = settings["Ports"]["80/udp"][0]["HostPort"]
    assert settings["Ports"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)},
                   {"HostIp": "0.0.0.0", "HostPort": str(other_port)}],
        "80/udp": [{"HostIp": "0.0.0.0", "HostPort": udp}]}
    assert doc["HostConfig"]["PortBindings"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}, {"HostIp": "", "HostPort": str(other_port)}]
    ps = net("ps").stdout
    assert (f"127.0.0.1:{port}->80/tcp, 0.0.0.0:{other_port}->80/tcp, 0.0.0.0:{udp}->80/udp"
            in ps)
    assert net("port", "pub").stdout == (f"80/tcp -> 127.0.0.1:{port}\n"
                                         f"80/tcp -> 0.0.0.0:{other_port}\n"
                                         f"80/udp -> 0.0.0.0:{udp}\n")
    assert net("port", "pub", "80/udp").stdout == f"0.0.0.0:{udp}\n"
    # the port is held while it runs: another container cannot take it
    proc = net("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true", check=False)
    assert proc.returncode == 125 and "port is already allocated" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    net("rm", "-f", cid)
    with socket.socket() as s:  # free again
        s.bind(("127.0.0.1", port))
    assert iptables(net) == mine
    if os.environ.get("CI"):  # one test at a time: nothing else changes the rules meanwhile
        assert iptables() == before


def test_publish_all_exposed_ports(net):
    from lamina import Engine
    from tests.test_run import make_image

    engine = Engine(root=net.root)
    make_image(engine, "busybox", "exposing:latest", ExposedPorts={"80/tcp": {}, "53/udp": {}})
    engine.close()
    net("run", "-d", "--name", "all", "-P", "exposing", "sleep", "60")
    ports = net("port", "all").stdout.splitlines()
    assert sorted(line.split(" -> ")[0] for line in ports) == ["53/udp", "80/tcp"]
    assert all(re.fullmatch(r"\S+ -> 0\.0\.0\.0:\d+", line) for line in ports)


def test_eight_concurrent_runs_get_distinct_addresses(net):
    subnet = make_network(net, "busy")
    procs = [subprocess.Popen([sys.executable, "-m", "lamina", "--root", net.root, "run", "-d", "--network", "busy", "busybox",
                               "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(8)]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(out.strip())
    addresses = [json.loads(net("inspect", cid).stdout)[0]["NetworkSettings"]["Networks"]["busy"]
                 ["IPAddress"] for cid in ids]
    assert len(set(addresses)) == 8 and all(ipaddress.IPv4Address(a) in subnet for a in addresses)
    from lamina import cni

    assert sorted(a for _, a, _ in cni.allocations(net.root)) == sorted(addresses)
    net("rm", "-f", *ids)
    assert cni.allocations(net.root) == []


def test_bad_input_leaves_nothing(net):
    from lamina import cni

    make_network(net, "checked")
    subnet = ipaddress.IPv4Network(json.loads(net("network", "inspect", "checked").stdout)[0]
                                   ["IPAM"]["Config"][0]["Subnet"])
    net("run", "--rm", "-p", "127.0.0.1::80", "busybox", "true")  # the shared chains (above)
    before = iptables(net)

    def refused(args, code, message):
        proc = net(*args, check=False)
        assert (proc.returncode, proc.stderr.count("\n")) == (code, 1), proc.stderr
        assert message in proc.stderr, proc.stderr
        assert cni.allocations(net.root) == [] and cni.cached(net.root) == []
        assert os.listdir(cni.netns_dir(net.root)) == []
        assert iptables(net) == before

    refused(["run", "--network", "nosuch", "busybox", "true"], 125, "network nosuch not found")
    outside = str(next(net.subnets)[5])
    refused(["run", "--network", "checked", "--ip", outside, "busybox", "true"], 125,
            f"invalid address {outside}")
    refused(["run", "--ip", str(subnet[9]), "busybox", "true"], 125,
            "supported on user defined networks only")
    assert net("ps", "-a", "-q").stdout == ""  # none of them made a container
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        refused(["run", "--name", "late", "-p", f"127.0.0.1:{port}:80", "busybox", "true"], 125,
                f"Bind for 127.0.0.1:{port} failed: port is already allocated")
    # as Docker: the container was made, its start failed; it is Created, with no address
    doc = json.loads(net("inspect", "late").stdout)[0]
    assert doc["State"]["Status"] == "created"
    assert doc["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    # an overlapping subnet, a gateway outside it (network create exits 1, as Docker's)
    refused(["network", "create", "--subnet", str(subnet.supernet(new_prefix=20)), "over"], 1,
            "Pool overlaps with other one on this address space")
    refused(["network", "create", "--subnet", "10.9.9.0/24", "--gateway", "10.9.8.1", "gw"], 1,
            "no matching subnet for gateway 10.9.8.1")
    assert sorted(net("network", "ls", "--format", "{{.Name}}").stdout.split()) == [
        "bridge", "checked", "host", "none"]
    # with a valid --ip the address is the one asked for
    wanted = str(subnet[42])
    cid = net("run", "-d", "--network", "checked", "--ip", wanted, "busybox", "sleep", "60").stdout
    assert net("exec", cid.strip(), "ip", "-o", "-4", "addr", "show", "eth0").stdout.split()[3] \
        == f"{wanted}/{subnet.prefixlen}"


def test_system_check_repairs_what_a_killed_owner_left(net):
    from lamina import cni

    cid = net("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", "60").stdout.strip()
    from lamina import Engine

    engine = Engine(root=net.root)
    row = engine.container_store.get(cid)
    monitor, pid = row["monitor_pid"], row["pid"]
    engine.close()
    os.kill(monitor, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{monitor}") and time.monotonic() < deadline:
        time.sleep(0.05)
    report = net("system", "check", check=False).stdout
    for kind in ("network endpoint of a container that no longer runs",
                 "network namespace of a container that no longer runs",
                 "network endpoint record of a container that no longer runs"):
        assert kind in report, report
    assert cni.allocations(net.root) != []
    repaired = net("system", "check", "--repair", check=False).stdout
    assert "(repaired)" in repaired and "left" in repaired
    assert cni.allocations(net.root) == [] and os.listdir(cni.netns_dir(net.root)) == []
    assert "network" not in net("system", "check", check=False).stdout
    # the container shows as exited (its owner died); rm has nothing more to undo
    net("rm", "-f", cid)


def test_network_verbs_as_docker_prints_them(net):
    subnet = make_network(net, "tidy", "--internal")
    rows = net("network", "ls").stdout.splitlines()
    assert rows[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [r.split()[1:] for r in rows[1:]] == [
        ["bridge", "bridge", "local"], ["host", "host", "local"], ["none", "null", "local"],
        ["tidy", "bridge", "local"]]
    (line,) = [json.loads(x) for x in net("network", "ls", "--format", "json").stdout.splitlines()
               if json.loads(x)["Name"] == "tidy"]
    assert line["Internal"] == "true" and line["Driver"] == "bridge"
    assert net("network", "ls", "-q", "-f", "name=tid").stdout.strip() == line["ID"]
    # an internal network: containers on it have no default route
    out = net("run", "--rm", "--network", "tidy", "busybox", "ip", "route").stdout
    assert "default" not in out and str(subnet) in out
    proc = net("network", "create", "tidy", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: network with name tidy already exists\n"
    proc = net("network", "rm", "bridge", check=False)
    assert "pre-defined network" in proc.stderr
    assert net("network", "prune", "-f").stdout == "Deleted Networks:\ntidy\n\n"


# what Docker 20.10 wrote for these host files (docker run --rm --network bridge|none busybox
# cat /etc/resolv.conf, the host's file bound over /etc/resolv.conf in dockerd's mount namespace)
RESOLV_CASES = [
    ("# host file\nsearch lamina.test\nnameserver 127.0.0.53\nnameserver ::1\noptions ndots:2\n",
     "# host file\nsearch lamina.test\noptions ndots:2\n\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"),
    ("nameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
     "nameserver 192.0.2.53\n"),
]


@pytest.mark.parametrize("host_text, expected", RESOLV_CASES)
def test_resolv_conf_keeps_the_nameservers_a_container_can_reach(net, tmp_path, host_text,
                                                                   expected):
    """On the default bridge, a user network and ``none``, a container's resolv.conf is the
    host's without the nameservers it cannot reach (loopback ones, which inside name its own
    loopback, and IPv6 ones) and, when none is left, Docker's fall-back, Google's 8.8.8.8 and
    8.8.4.4: byte for byte what Docker writes. ``--network host`` keeps the host's file."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(host_text)
    make_network(net, "dnsnet")

    def inside(network):  # the host's resolv.conf is the test's, in a mount namespace of its own
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh", str(resolv),
             sys.executable, "-m", "lamina", "--root", net.root, "run", "--rm", "--network",
             network, "busybox", "cat", "/etc/resolv.conf"],
            capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    for network in ("bridge", "dnsnet", "none"):
        assert inside(network) == expected, network
    assert inside("host") == host_text
