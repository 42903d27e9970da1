"""Volumes and networks through ``lamina serve``: the docker CLI (28), docker-py (7) and raw HTTP,
with the answers a Docker Engine gives (checked side by side against Docker 20.10's; the API 1.42
prune rule from Docker's documentation): Volume documents (Labels ``{}``, Options ``null`` when
none, UsageData only for ``/system/df``), 201 on create, 404/409 on remove, filters, prune with
and without ``all``; networks: the predefined ones with stable IDs, user bridge networks made,
used, connected and removed, with Docker's 4xx answers."""

import json
import os
import time
import urllib.parse

import pytest

from lamina import Engine
from lamina.api.networks import network_id
from lamina.api.volumes import volume_documents
from tests.test_api import http

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, overlay mounts)")


def call(api, method: str, path: str, body=None, version: str = "1.44"):
    """(status, decoded JSON or None) of one request."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, found, reply = http(api.socket, method, f"/v{version}{path}", data, headers)
    if reply.strip():
        assert found["content-type"] == "application/json"
        return status, json.loads(reply)
    return status, None


def q(filters: dict) -> str:
    return "?filters=" + urllib.parse.quote(json.dumps(filters))


def check_volume(doc: dict, usage: bool = False) -> None:
    """Docker's Volume of the API 1.44 schema: its required keys, Labels never null."""
    assert set(doc) == {"CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                        "Scope"} | ({"UsageData"} if usage else set())
    assert doc["Driver"] == "local" and doc["Scope"] == "local"
    assert isinstance(doc["Labels"], dict)
    assert doc["Options"] is None or isinstance(doc["Options"], dict)
    assert time.strptime(doc["CreatedAt"], "%Y-%m-%dT%H:%M:%SZ")  # RFC 3339, as Docker's
    if usage:
        assert set(doc["UsageData"]) == {"Size", "RefCount"}


# ----------------------------------------------------------------------------------- volumes
def test_volume_verbs_with_the_docker_cli(api):
    assert api.docker("volume", "create", "data").stdout == "data\n"
    assert api.docker("volume", "create", "--label", "team=a", "--label", "tier",
                      "labelled").stdout == "labelled\n"
    anonymous = api.docker("volume", "create").stdout.strip()
    assert len(anonymous) == 64
    out = api.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}} {{.Labels}}").stdout
    # the CLI prints a map's labels in Go's random map order: compared as sets
    rows = sorted((*line.split(" ")[:2], set(line.split(" ")[2].split(",")) - {""})
                  for line in out.splitlines())
    assert rows == sorted([("local", "data", set()), ("local", "labelled", {"team=a", "tier="}),
                           ("local", anonymous, set())])
    assert api.docker("volume", "ls", "-q", "--filter", "label=team=a").stdout == "labelled\n"
    assert api.docker("volume", "ls", "-q", "--filter", "name=abel").stdout == "labelled\n"
    (doc,) = json.loads(api.docker("volume", "inspect", "labelled").stdout)
    check_volume(doc)
    assert doc["Labels"] == {"team": "a", "tier": ""} and doc["Options"] is None
    assert doc["Mountpoint"] == os.path.join(api.root, "volumes", "labelled", "_data")
    # the lamina CLI sees the same volumes, with the labels
    assert json.loads(api.lamina("volume", "inspect", "labelled").stdout)[0]["Labels"] == \
        {"team": "a", "tier": ""}
    # in use: 409 with Docker's message; unknown: Docker's 404 message
    api.lamina("run", "--name", "user", "-v", "data:/data", "busybox", "true")  # kept: uses it
    proc = api.docker("volume", "rm", "data", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error response from daemon: remove data: volume is in use - [")
    proc = api.docker("volume", "rm", "nope", check=False)
    assert proc.stderr == "Error response from daemon: get nope: no such volume\n"
    assert api.docker("volume", "inspect", "nope", check=False).returncode == 1
    assert api.docker("volume", "rm", "-f", "nope").returncode == 0  # Docker: nothing to force
    # prune (API 1.44): anonymous volumes only, unless --all; used ones never
    assert api.docker("volume", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    out = api.docker("volume", "prune", "-f", "-a").stdout
    assert out.splitlines()[0] == "Deleted Volumes:"
    assert sorted(out.splitlines()[1:3]) == sorted([anonymous, "labelled"])
    assert api.docker("volume", "ls", "-q").stdout == "data\n"
    api.docker("rm", "user")
    assert api.docker("volume", "rm", "data").stdout == "data\n"
    assert api.docker("volume", "ls", "-q").stdout == ""


def test_volume_answers_over_http(api):
    status, doc = call(api, "POST", "/volumes/create", {"Name": "v1", "Labels": {"a": "b"}})
    assert status == 201
    check_volume(doc)
    assert doc["Name"] == "v1" and doc["Labels"] == {"a": "b"}
    status, again = call(api, "POST", "/volumes/create", {"Name": "v1", "Labels": {"c": "d"}})
    assert status == 201 and again == doc  # an existing volume is answered as it is
    status, doc = call(api, "POST", "/volumes/create", {"Name": "v2", "Driver": "local"})
    assert status == 201 and doc["Labels"] == {} and doc["Options"] is None
    status, listing = call(api, "GET", "/volumes")
    assert status == 200 and listing["Warnings"] is None
    assert sorted(v["Name"] for v in listing["Volumes"]) == ["v1", "v2"]
    for v in listing["Volumes"]:
        check_volume(v)
    assert call(api, "GET", "/volumes" + q({"label": ["a=b"]}))[1]["Volumes"][0]["Name"] == "v1"
    assert call(api, "GET", "/volumes" + q({"label": ["a=x"]}))[1]["Volumes"] == []
    assert call(api, "GET", "/volumes" + q({"driver": ["other"]}))[1]["Volumes"] == []
    assert len(call(api, "GET", "/volumes" + q({"dangling": ["true"]}))[1]["Volumes"]) == 2
    assert call(api, "GET", "/volumes" + q({"dangling": ["0"]}))[1]["Volumes"] == []
    # Docker's errors
    for filters, message in (({"dangling": ["maybe"]}, "invalid filter 'dangling=maybe'"),
                             ({"bogus": ["x"]}, "invalid filter 'bogus'")):
        assert call(api, "GET", "/volumes" + q(filters)) == (400, {"message": message})
    assert call(api, "GET", "/volumes/nope") == (404, {"message": "get nope: no such volume"})
    assert call(api, "DELETE", "/volumes/nope") == (404, {"message": "get nope: no such volume"})
    assert call(api, "DELETE", "/volumes/nope?force=1") == (204, None)
    assert call(api, "POST", "/volumes/create", {"Name": "a"}) == (400, {"message": (
        "create a: volume name is too short, names should be at least two alphanumeric "
        "characters")})
    status, doc = call(api, "POST", "/volumes/create", {"Name": "bad/name"})
    assert status == 400 and doc["message"].startswith(
        'create bad/name: "bad/name" includes invalid characters for a local volume name')
    status, doc = call(api, "POST", "/volumes/create", {"Name": "x", "Driver": "foo"})
    assert status == 404 and doc["message"].startswith(
        'create x: error looking up volume plugin foo: plugin "foo" not found')
    assert call(api, "POST", "/volumes/create", {"Name": "xx", "DriverOpts": {"foo": "bar"}}) == \
        (400, {"message": 'create xx: invalid option: "foo"'})
    status, doc = call(api, "POST", "/volumes/create",
                       {"Name": "xx", "DriverOpts": {"type": "tmpfs", "device": "tmpfs"}})
    assert status == 400 and "mounts no file systems or devices yet" in doc["message"]
    assert call(api, "POST", "/volumes/create", {"Name": 5})[0] == 400
    assert call(api, "POST", "/volumes/create", [1])[0] == 400
    assert call(api, "GET", "/volumes/xx")[0] == 404  # none of them made a volume
    # prune: API 1.41 prunes every unused volume and knows no "all"; 1.42+ anonymous only
    api.lamina("volume", "create")  # the lamina CLI's volume without a name is anonymous
    assert call(api, "POST", "/volumes/prune" + q({"all": ["1"]}), version="1.41") == \
        (400, {"message": "invalid filter 'all'"})
    status, doc = call(api, "POST", "/volumes/prune")
    assert status == 200 and len(doc["VolumesDeleted"]) == 1 and doc["SpaceReclaimed"] == 0
    assert len(doc["VolumesDeleted"][0]) == 64
    status, doc = call(api, "POST", "/volumes/prune" + q({"label": ["a"], "all": ["true"]}))
    assert doc == {"VolumesDeleted": ["v1"], "SpaceReclaimed": 0}
    status, doc = call(api, "POST", "/volumes/prune", version="1.41")
    assert doc == {"VolumesDeleted": ["v2"], "SpaceReclaimed": 0}
    assert call(api, "POST", "/volumes/prune" + q({"bogus": ["x"]})) == \
        (400, {"message": "invalid filter 'bogus'"})


def test_docker_py_volumes_and_a_bind_volume(api, tmp_path):
    device = tmp_path / "device"
    device.mkdir()
    client = api.client()
    try:
        vol = client.volumes.create("py", driver="local", labels={"k": "v"})
        assert vol.name == "py" and vol.attrs["Labels"] == {"k": "v"}
        bind = client.volumes.create("bind", driver_opts={"type": "none", "o": "bind",
                                                          "device": str(device)})
        assert bind.attrs["Options"] == {"type": "none", "o": "bind", "device": str(device)}
        assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["py"]
        assert client.volumes.get("py").attrs["Mountpoint"].endswith("/volumes/py/_data")
        # a container writes through the bind volume into its device
        api.lamina("run", "--rm", "-v", "bind:/out", "busybox", "sh", "-c", "echo hi > /out/f")
        assert (device / "f").read_text() == "hi\n"
        result = client.volumes.prune(filters={"all": "true", "label": "k"})
        assert result == {"VolumesDeleted": ["py"], "SpaceReclaimed": 0}
        client.volumes.get("bind").remove(force=True)
        assert client.volumes.list() == []
        assert (device / "f").exists()  # removing a bind volume leaves its device alone
        import docker

        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("py")
    finally:
        client.close()


def test_volume_documents_for_system_df(api):
    api.lamina("run", "--name", "writer", "-v", "used:/data", "busybox", "sh", "-c",
               "head -c 1000 /dev/zero > /data/z")
    api.docker("volume", "create", "spare")
    engine = Engine(api.root)
    try:
        docs = {d["Name"]: d for d in volume_documents(engine, usage=True)}
        for doc in docs.values():
            check_volume(doc, usage=True)
        assert docs["used"]["UsageData"] == {"Size": 1000, "RefCount": 1}
        assert docs["spare"]["UsageData"] == {"Size": 0, "RefCount": 0}
        assert "UsageData" not in volume_documents(engine, usage=False)[0]
    finally:
        engine.close()
    api.lamina("rm", "writer")


# ---------------------------------------------------------------------------------- networks
def test_networks_through_the_engine_api(api):
    from tests.test_network import free_range

    out = api.docker("network", "ls", "--no-trunc", "--format",
                     "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}}").stdout
    bridge_id = json.loads(api.docker("network", "inspect", "bridge").stdout)[0]["Id"]
    assert sorted(out.splitlines()) == sorted([
        f"{bridge_id} bridge bridge local",
        f"{network_id(api.root, 'host')} host host local",
        f"{network_id(api.root, 'none')} none null local"])
    (host,) = json.loads(api.docker("network", "inspect", "host").stdout)
    assert host == {
        "Name": "host", "Id": network_id(api.root, "host"), "Created": host["Created"],
        "Scope": "local", "Driver": "host", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False,
        "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {}}
    # an ID, an ID's prefix and the name find it; the ID is the same next time
    assert json.loads(api.docker("network", "inspect", host["Id"][:12]).stdout)[0] == host
    assert json.loads(api.docker("inspect", "--type", "network", "none").stdout)[0]["Driver"] == \
        "null"
    # a user network: create, containers on it find each other by name, connect, rm, prune
    subnet = str(next(free_range().subnets(new_prefix=24)))
    created = api.docker("network", "create", "--subnet", subnet, "--label", "k=v",
                         "mynet").stdout.strip()
    (doc,) = json.loads(api.docker("network", "inspect", "mynet").stdout)
    assert (doc["Id"], doc["Driver"], doc["IPAM"]["Config"][0]["Subnet"], doc["Labels"]) == \
        (created, "bridge", subnet, {"k": "v"})
    web = api.docker("run", "-d", "--network", "mynet", "--network-alias", "www", "--name", "web",
                     "busybox", "sh", "-c", "mkdir /w && echo api-web > /w/index.html && "
                     "exec httpd -f -p 80 -h /w").stdout.strip()
    try:
        out = api.docker("run", "--rm", "--network", "mynet", "busybox", "sh", "-c",
                         "for i in $(seq 50); do wget -qO- http://www/ && exit; sleep 0.1; done; "
                         "exit 1").stdout
        assert out == "api-web\n"
        (doc,) = json.loads(api.docker("network", "inspect", "mynet").stdout)
        assert list(doc["Containers"]) == [web]
        proc = api.docker("network", "rm", "mynet", check=False)
        assert proc.returncode == 1 and "has active endpoints" in proc.stderr
        settings = json.loads(api.docker("inspect", web).stdout)[0]["NetworkSettings"]
        assert settings["Networks"]["mynet"]["IPAddress"] == \
            doc["Containers"][web]["IPv4Address"].split("/")[0]
        # connect and disconnect: Docker's 400 for the host network
        proc = api.docker("network", "connect", "host", web, check=False)
        assert proc.returncode == 1 and "container cannot be disconnected from host network " \
            "or connected to host network" in proc.stderr
        api.docker("network", "connect", "bridge", web)
        assert sorted(json.loads(api.docker("inspect", web).stdout)[0]["NetworkSettings"]
                      ["Networks"]) == ["bridge", "mynet"]
        api.docker("network", "disconnect", "bridge", web)
    finally:
        api.docker("rm", "-f", web)
    assert api.docker("network", "rm", "mynet").stdout == "mynet\n"
    # a published port (HostConfig.PortBindings): docker port, docker ps, a client on the host
    from tests.test_network import fetch, free_port

    port = free_port()
    pub = api.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
                     "mkdir /w && echo api-pub > /w/index.html && exec httpd -f -p 80 -h /w"
                     ).stdout.strip()
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == b"api-pub\n"
        assert api.docker("port", pub).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
        assert api.docker("ps", "--format", "{{.Ports}}").stdout == f"127.0.0.1:{port}->80/tcp\n"
    finally:
        api.docker("rm", "-f", pub)
    # docker inspect probes container, image, network, volume: every miss is a 404
    proc = api.docker("inspect", "nope", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: No such object: nope\n"
    proc = api.docker("network", "inspect", "nope", check=False)
    assert proc.stderr == "Error response from daemon: network nope not found\n"
    proc = api.docker("network", "rm", "host", check=False)
    assert proc.stderr.startswith(
        "Error response from daemon: host is a pre-defined network and cannot be removed")
    assert call(api, "POST", "/networks/create", {"Name": "none"}) == \
        (403, {"message": "operation is not permitted on predefined none network "})
    assert call(api, "POST", "/networks/create", {"Name": "x", "Driver": "nope"}) == \
        (404, {"message": 'plugin "nope" not found'})
    status, doc = call(api, "POST", "/networks/create", {"Name": "pruned", "Labels": {"a": "b"}})
    assert status == 201 and set(doc) == {"Id", "Warning"}
    assert call(api, "POST", "/networks/create", {"Name": "pruned"}) == \
        (409, {"message": "network with name pruned already exists"})
    assert [n["Name"] for n in call(api, "GET", "/networks" + q({"type": ["custom"]}))[1]] == \
        ["pruned"]
    assert [n["Name"] for n in call(api, "GET", "/networks" + q({"dangling": ["true"]}))[1]] == \
        ["pruned"]
    assert call(api, "POST", "/networks/prune" + q({"label": ["a=c"]})) == \
        (200, {"NetworksDeleted": []})
    assert call(api, "POST", "/networks/prune") == (200, {"NetworksDeleted": ["pruned"]})
    assert [n["Name"] for n in call(api, "GET", "/networks" + q({"driver": ["null"]}))[1]] == \
        ["none"]
    assert call(api, "GET", "/networks" + q({"bogus": ["x"]})) == \
        (400, {"message": "invalid filter 'bogus'"})
    assert call(api, "POST", "/networks/none/connect", {"Container": "nope"}) == \
        (404, {"message": "No such container: nope"})


def test_docker_compose_style_network_probes(api):
    """What docker-compose 1.29 asks before it creates a project's default network (two
    inspects, 404 each), and the create it then sends: 201 with the network's ID."""
    for name in ("demo_default", "demodefault"):
        assert call(api, "GET", f"/networks/{name}")[0] == 404
    status, doc = call(api, "POST", "/networks/create", {
        "Name": "demo_default", "Driver": None, "Options": None, "IPAM": None,
        "Internal": False, "EnableIPv6": None, "CheckDuplicate": True, "Attachable": True,
        "Labels": {"com.docker.compose.project": "demo"}})
    assert status == 201
    status, found = call(api, "GET", "/networks/demo_default")
    assert status == 200 and found["Id"] == doc["Id"]
    assert found["Labels"] == {"com.docker.compose.project": "demo"}
    assert call(api, "DELETE", f"/networks/{doc['Id']}") == (204, None)
