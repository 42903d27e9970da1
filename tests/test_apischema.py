"""The API schema fixtures (tests/data/api/schemas.json, read by tests/apischema.py) proven against
Docker Engine itself, so that lamina serve's tests hold it to shapes Docker really sends.

A private dockerd (bench/peers.py) imports busybox-static, runs containers, an exec and a build,
makes volumes, and every reply of every operation the fixtures describe must fit: a fixture that
rejects Docker's real output fails here. Then the other way: near-misses of those same replies (a
required field dropped, an integer sent as a string or as 1.0, a null where clients crash) must be
rejected, one case per schema family.

Docker Engine here is Debian's 20.10 (API 1.41), the fixtures describe API 1.44: every field the
fixtures require is sent by 1.41 already, and fields that 1.42-1.44 added (DNSNames, CDISpecDirs,
StartInterval, ...) are typed but optional. Plain HTTP over the unix socket (http.client)."""

import base64
import copy
import http.client
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tests import apischema

from .conftest import REPO
from .test_registry import start_registry, stop

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("docker-registry") is None,
    reason="needs root, dockerd and docker-registry (scripts/setup installs docker.io and "
           "docker-registry)")

sys.path.insert(0, os.path.join(REPO, "bench"))
import peers  # noqa: E402  (bench/peers.py: a private dockerd)

# The operations lamina serve must answer in Docker's shapes (issue 11); each needs a fixture and
# at least one real Docker reply below.
OPERATIONS = [
    "SystemPing", "SystemVersion", "SystemInfo", "SystemDataUsage", "SystemAuth", "SystemEvents",
    "ContainerList", "ContainerInspect", "ContainerCreate", "ContainerWait", "ContainerChanges",
    "ContainerTop", "ContainerPrune", "ContainerArchiveInfo", "ExecCreate", "ExecInspect",
    "ImageList", "ImageInspect", "ImageHistory", "ImageDelete", "ImagePrune", "ImageCommit",
    "ImageBuild", "ImageCreate", "ImageLoad", "VolumeList", "VolumeCreate", "VolumeInspect",
    "VolumePrune", "NetworkList", "NetworkInspect", "ErrorResponse",
]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Engine:
    """HTTP on a Docker Engine API socket; each request on its own connection."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def request(self, method: str, path: str, body=None, headers=None):
        """(status, headers, raw body bytes); a dict or list body is sent as JSON."""
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = UnixHTTPConnection(self.socket_path)
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.headers, reply.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body=None, headers=None):
        status, _, raw = self.request(method, path, body, headers)
        return status, (json.loads(raw) if raw.strip() else None)


def build_context(dockerfile: str | None) -> bytes:
    """A tar build context holding only a Dockerfile (or nothing at all)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        if dockerfile is not None:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def query(**params) -> str:
    return urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, dict) else v
                                   for k, v in params.items()})


@pytest.fixture(scope="module")
def replies(busybox_tar):
    """Docker Engine's replies, {operation: [(what, status, decoded body), ...]}, from one
    scenario run on a private dockerd that is stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="lamina-apischema-", dir="/var/tmp"))
    dockerd = peers.Docker(base)
    registry = None
    try:
        dockerd.start()
        work = base / "registry"
        work.mkdir()
        registry_host, registry = start_registry(str(work))
        yield run_scenario(Engine(str(dockerd.sock)), busybox_tar, registry_host)
    finally:
        if registry is not None:
            stop(registry)
        dockerd.cleanup()
        peers.remove_tree(base)


def run_scenario(docker: Engine, busybox_tar: str, registry_host: str) -> dict:
    recorded: dict[str, list] = {}

    def record(operation, what, status, body):
        recorded.setdefault(operation, []).append((what, status, body))
        return body

    def call(operation, what, method, path, body=None, headers=None, expect=None):
        status, decoded = docker.json(method, path, body, headers)
        if expect is not None:
            assert status == expect, (what, status, decoded)
        return record(operation, what, status, decoded)

    def stream(operation, what, method, path, body=None, headers=None):
        status, _, raw = docker.request(method, path, body, headers)
        assert status == 200, (what, status, raw[:500])
        return record(operation, what, status, apischema.decode_stream(raw))

    since = int(time.time())
    status, _, raw = docker.request("GET", "/_ping")
    record("SystemPing", "GET /_ping", status, raw.decode())
    call("SystemVersion", "version", "GET", "/version", expect=200)
    call("SystemInfo", "info, empty engine", "GET", "/info", expect=200)

    with open(busybox_tar, "rb") as f:
        stream("ImageCreate", "import busybox", "POST",
               "/images/create?" + query(fromSrc="-", repo="busybox", tag="latest"), f.read(),
               {"Content-Type": "application/x-tar"})
    call("SystemDataUsage", "df, one image and nothing else", "GET", "/system/df", expect=200)

    # volumes: one with labels (mounted below), one bare (pruned below)
    call("VolumeCreate", "with labels", "POST", "/volumes/create",
         {"Name": "data", "Labels": {"purpose": "test"}}, expect=201)
    call("VolumeCreate", "bare", "POST", "/volumes/create", {"Name": "spare"}, expect=201)
    call("VolumeInspect", "data", "GET", "/volumes/data", expect=200)
    call("VolumeList", "two volumes", "GET", "/volumes", expect=200)

    # containers: a running one with a volume and a bind mount, one that exits 3 after changing
    # its files, one only created
    running = call("ContainerCreate", "sleeper", "POST", "/containers/create?name=sleeper", {
        "Image": "busybox", "Cmd": ["sleep", "300"], "Labels": {"role": "sleeper"},
        "HostConfig": {"NetworkMode": "none", "Binds": ["data:/data", "/tmp:/hosttmp:ro"]},
    }, expect=201)["Id"]
    assert docker.request("POST", f"/containers/{running}/start")[0] == 204
    changer = call("ContainerCreate", "changer", "POST", "/containers/create?name=changer", {
        "Image": "busybox", "Cmd": ["sh", "-c", "echo hi > /new; rm /bin/vi; touch /etc/passwd; exit 3"],
        "HostConfig": {"NetworkMode": "none"},
    }, expect=201)["Id"]
    assert docker.request("POST", f"/containers/{changer}/start")[0] == 204
    call("ContainerWait", "exit 3", "POST", f"/containers/{changer}/wait", expect=200)
    created = call("ContainerCreate", "created only", "POST", "/containers/create?name=idle",
                   {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}},
                   expect=201)["Id"]
    call("ContainerChanges", "added, changed, deleted", "GET", f"/containers/{changer}/changes",
         expect=200)
    call("ContainerChanges", "nothing changed", "GET", f"/containers/{created}/changes", expect=200)
    call("ContainerInspect", "running, size=1", "GET", f"/containers/{running}/json?size=1",
         expect=200)
    call("ContainerInspect", "exited", "GET", f"/containers/{changer}/json", expect=200)
    call("ContainerInspect", "created", "GET", f"/containers/{created}/json", expect=200)
    call("ContainerList", "all, size=1", "GET", "/containers/json?all=1&size=1", expect=200)
    call("ContainerList", "running", "GET", "/containers/json", expect=200)
    call("ContainerTop", "sleeper", "GET", f"/containers/{running}/top", expect=200)
    for path in ("/bin", "/bin/sh", "/bin/busybox"):
        status, headers, _ = docker.request("HEAD", f"/containers/{running}/archive?path={path}")
        assert status == 200, path
        record("ContainerArchiveInfo", path, status,
               apischema.path_stat(headers["X-Docker-Container-Path-Stat"]))

    # exec: inspected before it ran (ExitCode null) and after
    exec_id = call("ExecCreate", "exit 2", "POST", f"/containers/{running}/exec",
                   {"Cmd": ["sh", "-c", "echo out; exit 2"], "AttachStdout": True,
                    "AttachStderr": True}, expect=201)["Id"]
    call("ExecInspect", "before start", "GET", f"/exec/{exec_id}/json", expect=200)
    assert docker.request("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False})[0] == 200
    call("ExecInspect", "after exit", "GET", f"/exec/{exec_id}/json", expect=200)

    # images: commit, build (legacy builder), save and load, tag and delete
    call("ImageCommit", "changer", "POST",
         "/commit?" + query(container=changer, repo="committed", tag="1", comment="from a test"),
         {}, expect=201)
    stream("ImageBuild", "legacy builder", "POST",
           "/build?" + query(t="built:1", networkmode="none", rm="1"),
           build_context('FROM busybox\nLABEL a=b\nRUN echo hi > /x\nCMD ["sh"]\n'),
           {"Content-Type": "application/x-tar"})
    status, _, saved = docker.request("GET", "/images/get?names=built:1")
    assert status == 200
    stream("ImageLoad", "docker save of built:1", "POST", "/images/load", saved,
           {"Content-Type": "application/x-tar"})
    call("ImageList", "tagged", "GET", "/images/json", expect=200)
    call("ImageList", "all", "GET", "/images/json?all=1", expect=200)
    for name in ("busybox", "committed:1", "built:1"):
        call("ImageInspect", name, "GET", f"/images/{name}/json", expect=200)
        call("ImageHistory", name, "GET", f"/images/{name}/history", expect=200)
    assert docker.request("POST", "/images/busybox/tag?repo=other&tag=x")[0] == 201
    call("ImageDelete", "a second tag: untagged", "DELETE", "/images/other:x", expect=200)
    call("ImageDelete", "built:1: untagged and deleted", "DELETE", "/images/built:1", expect=200)

    call("SystemDataUsage", "df, containers and volumes", "GET", "/system/df", expect=200)
    call("SystemInfo", "info, three containers", "GET", "/info", expect=200)
    call("NetworkList", "none and host", "GET", "/networks", expect=200)
    call("NetworkInspect", "none, with the sleeper", "GET", "/networks/none", expect=200)
    call("NetworkInspect", "host", "GET", "/networks/host", expect=200)
    call("SystemAuth", "a registry without auth", "POST", "/auth",
         {"username": "someone", "password": "secret", "serveraddress": registry_host},
         expect=200)

    # errors, each recorded under its operation and as ErrorResponse
    for operation, what, method, path, body, expected in [
        ("ContainerInspect", "no such container", "GET", "/containers/nosuch/json", None, 404),
        ("ImageInspect", "no such image", "GET", "/images/nosuch:1/json", None, 404),
        ("VolumeInspect", "no such volume", "GET", "/volumes/nosuch", None, 404),
        ("NetworkInspect", "no such network", "GET", "/networks/nosuch", None, 404),
        ("ContainerCreate", "no command", "POST", "/containers/create", {"Image": "busybox"}, 400),
        ("ContainerCreate", "name in use", "POST", "/containers/create?name=sleeper",
         {"Image": "busybox", "Cmd": ["true"]}, 409),
        ("ContainerCreate", "no such image", "POST", "/containers/create",
         {"Image": "nosuch:1", "Cmd": ["true"]}, 404),
        ("ExecCreate", "container not running", "POST", f"/containers/{changer}/exec",
         {"Cmd": ["true"]}, 409),
        ("ImageDelete", "image in use", "DELETE", "/images/busybox", None, 409),
        ("ImageBuild", "no Dockerfile", "POST", "/build", build_context(None), 500),
    ]:
        status, decoded = docker.json(method, path, body)
        assert status == expected, (what, status, decoded)
        record(operation, what, status, decoded)
        record("ErrorResponse", what, status, decoded)

    # prunes, each once with something to remove and once with nothing
    assert docker.request("POST", f"/containers/{running}/kill")[0] == 204
    call("ContainerWait", "killed", "POST", f"/containers/{running}/wait", expect=200)
    call("ContainerPrune", "three stopped", "POST", "/containers/prune", expect=200)
    call("ContainerPrune", "nothing", "POST", "/containers/prune", expect=200)
    call("ImagePrune", "unused images", "POST",
         "/images/prune?" + query(filters={"dangling": ["false"]}), expect=200)
    call("ImagePrune", "nothing", "POST", "/images/prune", expect=200)
    call("VolumePrune", "two unused", "POST", "/volumes/prune", expect=200)
    call("VolumePrune", "nothing", "POST", "/volumes/prune", expect=200)
    call("VolumeList", "none", "GET", "/volumes", expect=200)

    stream("SystemEvents", "everything above", "GET",
           "/events?" + query(since=since, until=int(time.time()) + 1))
    return recorded


# ---------------------------------------------------------------- the fixtures themselves

def walk(node, where="$"):
    """Every object of a fixture with where it is; not the conditions of if/then (an 'if' that
    requires a field only asks whether it is there)."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key != "if":
                yield from walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}[{index}]")


def test_every_operation_has_a_fixture():
    assert sorted(OPERATIONS) == apischema.operations()


def test_fixtures_are_json_schemas():
    doc = apischema.document()
    schemas = [("$defs." + name, s) for name, s in doc["$defs"].items()]
    for name, op in doc["operations"].items():
        for part in ("responses", "whole"):
            schemas += [(f"{name}.{part}.{code}", s) for code, s in op.get(part, {}).items()]
    for where, schema in schemas:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise AssertionError(f"{where}: {e.message} at {e.json_path}") from e


def test_every_required_field_says_why():
    """A field is required because the API description requires it (x-swagger-required) or a
    client reads it (x-read-by names the client and where); every such note names a required
    field of the same object."""
    problems = []
    for where, node in walk(apischema.document()):
        required = node.get("required", [])
        read_by = node.get("x-read-by", {})
        swagger = node.get("x-swagger-required", [])
        if not isinstance(required, list):  # a property that happens to be called "required"
            continue
        problems += [f"{where}: {f} required without a reason" for f in required
                     if f not in read_by and f not in swagger]
        problems += [f"{where}: {f} noted but not required" for f in [*read_by, *swagger]
                     if f not in required]
        problems += [f"{where}: {f} has no reader" for f, who in read_by.items()
                     if not any(who.startswith(c) for c in ("cli:", "py:", "compose:"))]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- Docker's replies fit

@pytest.mark.parametrize("operation", OPERATIONS)
def test_docker_replies_fit(replies, operation):
    assert_replies_fit(replies, operation, "Docker")


def assert_replies_fit(replies, operation, server):
    """Every reply of ``operation`` the scenario recorded fits its fixture (and there is one)."""
    assert replies.get(operation), f"the scenario recorded no reply of {operation}"
    stream = apischema.document()["operations"][operation].get("stream")
    for what, status, body in replies[operation]:
        try:
            if stream and status < 400:  # an error comes as one JSON document, not a stream
                apischema.validate_stream(operation, status, body)
            else:
                apischema.validate(operation, status, body)
        except AssertionError as e:
            raise AssertionError(f"{server}'s reply ({what}) does not fit the fixture:\n{e}") from e


def test_scenario_covers_the_interesting_cases(replies):
    assert_interesting_cases(replies, {"container", "image", "volume", "network"})


def assert_interesting_cases(replies, event_types):
    """The replies above hold the cases the fixtures are about (else 'fits' proves little), and
    events of at least ``event_types``."""
    def bodies(operation, status=None):
        return [b for _, s, b in replies[operation] if status is None or s == status]

    kinds = {c["Kind"] for c in bodies("ContainerChanges")[0]}
    assert kinds == {0, 1, 2}
    assert None in bodies("ContainerChanges")
    assert [e["ExitCode"] for e in bodies("ExecInspect")] == [None, 2]
    mounts = {m["Type"] for m in bodies("ContainerInspect", 200)[0]["Mounts"]}
    assert mounts == {"volume", "bind"}
    df = bodies("SystemDataUsage")[-1]
    assert df["Volumes"] and all("UsageData" in v for v in df["Volumes"])
    assert {b["ContainersDeleted"] is None for b in bodies("ContainerPrune")} == {True, False}
    events = bodies("SystemEvents")[0]
    assert {e["Type"] for e in events} >= event_types
    modes = {s["name"]: s["mode"] for s in bodies("ContainerArchiveInfo")}
    assert modes["bin"] & (1 << 31) and modes["sh"] & (1 << 27)  # directory, symlink
    assert {s for _, s, _ in replies["ErrorResponse"]} == {400, 404, 409, 500}


# ---------------------------------------------------------------- near-misses are rejected

DROP = object()


def changed(body, path, value):
    """A deep copy of body with the item at path (keys and indexes) replaced, or dropped."""
    body = copy.deepcopy(body)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if value is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


# (operation, which recorded reply, path, new value, what the error must say)
NEAR_MISSES = [
    ("SystemPing", 0, None, "ok", "'OK' was expected"),
    ("SystemVersion", 0, ["ApiVersion"], DROP, "'ApiVersion' is a required property"),
    ("SystemVersion", 0, ["Components"], [], "$.Components: [] should be non-empty"),
    ("SystemVersion", 0, ["Components", 0, "Details"], {}, "'ApiVersion' is a required property"),
    ("SystemInfo", 0, ["NCPU"], "2", "$.NCPU: '2' is not of type 'integer'"),
    ("SystemInfo", 0, ["DriverStatus"], [["Backing Filesystem"]], "is too short"),
    ("SystemInfo", 0, ["Swarm"], DROP, "'Swarm' is a required property"),
    ("SystemDataUsage", -1, ["Volumes", 0, "UsageData"], DROP, "'UsageData' is a required property"),
    ("SystemDataUsage", -1, ["Volumes", 0, "UsageData"], None, "None is not of type 'object'"),
    ("SystemDataUsage", -1, ["LayersSize"], 1.0, "1.0 is not of type 'integer'"),
    ("ContainerList", 0, [0, "Names"], DROP, "$[0]: 'Names' is a required property"),
    ("ContainerList", 0, [0, "Created"], "2024-01-01T00:00:00Z", "$[0].Created"),
    ("ContainerList", 0, [0, "NetworkSettings", "Networks"], None, "None is not of type 'object'"),
    ("ContainerInspect", 0, ["State", "Pid"], True, "$.State.Pid: True is not of type 'integer'"),
    ("ContainerInspect", 0, ["Config", "Tty"], DROP, "$.Config: 'Tty' is a required property"),
    ("ContainerInspect", 0, ["Mounts"], None, "$.Mounts: None is not of type 'array'"),
    ("ContainerInspect", 0, ["Created"], "yesterday", "$.Created: 'yesterday' does not match"),
    ("ContainerInspect", 0, ["HostConfig", "LogConfig"], DROP, "'LogConfig' is a required property"),
    ("ContainerCreate", 0, ["Warnings"], None, "$.Warnings: None is not of type 'array'"),
    ("ContainerWait", 0, ["StatusCode"], "3", "$.StatusCode: '3' is not of type 'integer'"),
    ("ContainerWait", 0, ["Error"], DROP, "'Error' is a required property"),
    ("ContainerChanges", 0, [0, "Kind"], "A", "$[0].Kind: 'A' is not of type 'integer'"),
    ("ContainerTop", 0, ["Processes", 0, 1], 1, "$.Processes[0][1]: 1 is not of type 'string'"),
    ("ContainerPrune", 0, ["SpaceReclaimed"], DROP, "'SpaceReclaimed' is a required property"),
    ("ContainerArchiveInfo", 0, ["mode"], "0755", "$.mode: '0755' is not of type 'integer'"),
    ("ContainerArchiveInfo", 0, ["mtime"], 0, "$.mtime: 0 is not of type 'string'"),
    ("ExecCreate", 0, ["Id"], DROP, "'Id' is a required property"),
    ("ExecInspect", 1, ["ExitCode"], "2", "$.ExitCode: '2' is not of type 'integer', 'null'"),
    ("ExecInspect", 1, ["Running"], DROP, "'Running' is a required property"),
    ("ImageList", 0, [0, "Size"], "1.9MB", "$[0].Size: '1.9MB' is not of type 'integer'"),
    ("ImageList", 0, [0, "RepoTags"], None, "$[0].RepoTags: None is not of type 'array'"),
    ("ImageInspect", 0, ["ContainerConfig"], DROP, "'ContainerConfig' is a required property"),
    ("ImageInspect", 0, ["Config", "Env"], "PATH=/bin", "$.Config.Env: 'PATH=/bin' is not of type"),
    ("ImageHistory", 0, [0, "Created"], "2024-01-01", "$[0].Created: '2024-01-01' is not of type"),
    ("ImageDelete", 0, [0], {}, "$[0]: {} should be non-empty"),
    ("ImagePrune", 1, ["ImagesDeleted"], DROP, "'ImagesDeleted' is a required property"),
    ("ImageCommit", 0, ["Id"], 7, "$.Id: 7 is not of type 'string'"),
    ("ImageBuild", 0, [-2], {"stream": "Successfully tagged built:1\n"}, "does not contain items"),
    ("ImageBuild", 0, [0, "stream"], 1, "message 0: $.stream: 1 is not of type 'string'"),
    ("ImageCreate", 0, [0], {}, "message 0: $: {} should be non-empty"),
    ("ImageLoad", 0, [0, "stream"], "done\n", "does not contain items"),
    ("VolumeList", 0, ["Volumes", 0, "Mountpoint"], DROP, "'Mountpoint' is a required property"),
    ("VolumeCreate", 0, ["Scope"], "node", "$.Scope: 'node' is not one of"),
    ("VolumeInspect", 0, ["Labels"], ["purpose=test"], "$.Labels: ['purpose=test'] is not of type"),
    ("VolumePrune", 0, ["VolumesDeleted"], "spare", "$.VolumesDeleted: 'spare' is not of type"),
    ("NetworkList", 0, [0, "IPAM"], None, "$[0].IPAM: None is not of type 'object'"),
    ("NetworkInspect", 0, ["Created"], 1700000000, "$.Created: 1700000000 is not of type 'string'"),
    ("NetworkInspect", 0, ["Containers"], DROP, "'Containers' is a required property"),
    ("SystemAuth", 0, ["Status"], DROP, "'Status' is a required property"),
    ("SystemEvents", 0, [2, "timeNano"], "1", "$.timeNano: '1' is not of type 'integer'"),
    ("SystemEvents", 0, [2, "Actor", "Attributes"], None, "$.Actor.Attributes: None is not of type"),
    ("ErrorResponse", 0, ["message"], DROP, "'message' is a required property"),
    ("ErrorResponse", 0, ["message"], None, "$.message: None is not of type 'string'"),
]


@pytest.mark.parametrize("operation,index,path,value,says", NEAR_MISSES,
                         ids=[f"{m[0]}-{'.'.join(map(str, m[2] or ['body']))}" for m in NEAR_MISSES])
def test_near_misses_of_docker_replies_are_rejected(replies, operation, index, path, value, says):
    _, status, body = replies[operation][index]
    bad = value if path is None else changed(body, path, value)
    check = (apischema.validate_stream if apischema.document()["operations"][operation].get("stream")
             else apischema.validate)
    with pytest.raises(AssertionError) as caught:
        check(operation, status, bad)
    assert says in str(caught.value)


def test_events_of_containers_carry_the_old_fields(replies):
    """compose 1.29 reads status and id of container events: Docker's have them, and without
    them a container event is rejected (a prune event, with no Actor.ID, needs no id)."""
    events = replies["SystemEvents"][0][2]
    started = next(e for e in events if e["Type"] == "container" and e["Action"] == "start")
    pruned = next(e for e in events if e["Type"] == "container" and e["Action"] == "prune")
    assert "id" not in pruned
    apischema.validate_stream("SystemEvents", 200, [started, pruned])
    for field in ("status", "id"):
        with pytest.raises(AssertionError, match=f"'{field}' is a required property"):
            apischema.validate_stream("SystemEvents", 200, [changed(started, [field], DROP)])


def test_every_family_has_a_near_miss():
    assert {m[0] for m in NEAR_MISSES} == set(OPERATIONS)


# ---------------------------------------------------------------- the module's own edges

def test_unknown_operations_and_statuses_are_errors_not_passes():
    with pytest.raises(AssertionError, match="no schema for operation"):
        apischema.validate("ContainerFly", 200, {})
    with pytest.raises(AssertionError, match="no schema for status 201"):
        apischema.validate("ContainerList", 201, [])
    with pytest.raises(AssertionError, match="validate_stream"):
        apischema.validate("SystemEvents", 200, {})
    with pytest.raises(AssertionError, match=r"validate\(\)"):
        apischema.validate_stream("ContainerList", 200, b"[]")


def test_errors_of_any_operation_are_error_responses():
    apischema.validate("ContainerList", 500, {"message": "boom"})
    with pytest.raises(AssertionError, match="'message' is a required property"):
        apischema.validate("ContainerList", 400, {"error": "boom"})


def test_streams_must_be_json():
    assert apischema.decode_stream(b'{"a":1}\r\n{"b":2}{"c":3}\n') == [{"a": 1}, {"b": 2}, {"c": 3}]
    with pytest.raises(AssertionError, match="message 1 of the stream is not JSON"):
        apischema.decode_stream(b'{"a":1}\nStep 1/2 : FROM busybox\n')


def test_path_stat_header_is_standard_base64_of_json():
    stat = {"name": "a?>b", "size": 1, "mode": 420, "mtime": "2024-01-01T00:00:00Z",
            "linkTarget": ""}
    raw = json.dumps(stat).encode()
    assert apischema.path_stat(base64.b64encode(raw).decode()) == stat
    with pytest.raises(AssertionError, match="not standard base64"):  # Go's StdEncoding only
        apischema.path_stat(base64.urlsafe_b64encode(raw).decode())
    with pytest.raises(AssertionError, match="not standard base64"):  # padding required
        apischema.path_stat(base64.b64encode(raw).decode().rstrip("="))
    with pytest.raises(AssertionError, match="not base64 of JSON"):
        apischema.path_stat(base64.b64encode(b"name=a").decode())
    with pytest.raises(AssertionError, match="no X-Docker-Container-Path-Stat"):
        apischema.path_stat(None)
