"""``lamina serve``'s image endpoints with the real clients: the docker CLI (28, legacy builder)
and docker-py (7) list, inspect, tag, remove, prune, import, save and load, build, commit, pull
and push (against Debian's docker-registry, one with htpasswd logins); raw HTTP where the shape
of an answer is the point; and side by side with Docker Engine (Debian's dockerd on a private
socket) for what the CLI prints.

Each test starts a real server (a subprocess, tests/apiserver.py) on a fresh store holding
``busybox:latest``, imported from Debian's busybox-static."""

import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.apiserver import DOCKER, beside_docker

from . import test_registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runc, overlay mounts)")
registry = test_registry.registry  # Debian's docker-registry on a loopback port, as fixtures
auth_registry = test_registry.auth_registry  # the same with an htpasswd login (alice, s3cret)

SUMMARY_KEYS = {"Containers", "Created", "Id", "Labels", "ParentId", "RepoDigests", "RepoTags",
                "SharedSize", "Size"}
INSPECT_KEYS = {"Architecture", "Author", "Comment", "Config", "ContainerConfig", "Created",
                "DockerVersion", "GraphDriver", "Id", "Metadata", "Os", "Parent", "RepoDigests",
                "RepoTags", "RootFS", "Size"}
HEX = re.compile(r"\b[0-9a-f]{12}\b|\b[0-9a-f]{64}\b")


def call(api, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """(status, content type, body) of one request on the server's socket."""

    class Connection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(120)
            self.sock.connect(api.socket)

    conn = Connection("localhost")
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def documents(data: bytes) -> list:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def context_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_context(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


# ------------------------------------------------------------------ list, inspect, history
def test_list_and_inspect_documents(api):
    status, kind, body = call(api, "GET", "/v1.44/images/json")
    assert (status, kind) == (200, "application/json")
    (summary,) = json.loads(body)
    assert set(summary) == SUMMARY_KEYS
    assert summary["RepoTags"] == ["busybox:latest"] and summary["RepoDigests"] == []
    assert (summary["Labels"], summary["Containers"], summary["SharedSize"]) == ({}, -1, -1)
    assert summary["Size"] == json.loads(api.lamina("images", "--format", "json").stdout)[
        "SizeBytes"]
    old = json.loads(call(api, "GET", "/v1.43/images/json")[2])[0]
    assert old["VirtualSize"] == old["Size"]

    status, _, body = call(api, "GET", "/v1.44/images/busybox/json")
    doc = json.loads(body)
    assert status == 200 and set(doc) == INSPECT_KEYS
    assert list(doc["Config"]) == sorted(doc["Config"])  # a Go map: keys sorted
    assert doc["Config"]["Cmd"] is None and doc["Config"]["AttachStdin"] is False
    assert doc["ContainerConfig"]["Hostname"] == "" and doc["RootFS"]["Type"] == "layers"
    assert doc["Id"] == summary["Id"] and doc["Size"] == summary["Size"]
    assert json.loads(call(api, "GET", "/v1.43/images/busybox/json")[2])["VirtualSize"] > 0
    for path in ("/images/nosuch/json", "/images/nosuch/history"):
        status, kind, body = call(api, "GET", path)
        assert (status, kind, json.loads(body)) == (404, "application/json",
                                                    {"message": "No such image: nosuch:latest"})

    client = api.client()
    image = client.images.get("busybox")
    assert image.id == summary["Id"] and image.tags == ["busybox:latest"] and image.labels == {}
    top = image.history()[0]
    assert (top["Id"], top["Tags"], top["Size"]) == (image.id, ["busybox:latest"], summary["Size"])
    assert api.docker("image", "inspect", "--format", "{{.Id}} {{.Os}}/{{.Architecture}}",
                      "busybox").stdout == f"{image.id} linux/amd64\n"


def test_inspect_and_list_after_changes_and_across_versions(api):
    """What the server keeps from one request to the next (an image's config and the parts of
    its inspect made from it, parsed names and dates) never hides a change: a new tag shows in
    the next list and inspect, each API version gets its own document, and every answer carries
    Docker's headers and a current Date."""
    from email.utils import parsedate_to_datetime

    first = json.loads(call(api, "GET", "/v1.44/images/busybox/json")[2])
    api.lamina("tag", "busybox", "example.com/team/tool:2")
    again = json.loads(call(api, "GET", "/v1.44/images/busybox/json")[2])
    assert again["RepoTags"] == ["busybox:latest", "example.com/team/tool:2"]
    assert {k: v for k, v in again.items() if k != "RepoTags"} == \
        {k: v for k, v in first.items() if k != "RepoTags"}
    (summary,) = json.loads(call(api, "GET", "/v1.44/images/json")[2])
    assert summary["RepoTags"] == ["busybox:latest", "example.com/team/tool:2"]
    old = json.loads(call(api, "GET", "/v1.43/images/busybox/json")[2])
    assert "VirtualSize" in old and "VirtualSize" not in again
    assert old["Config"] == again["Config"] and old["Created"] == again["Created"]
    api.lamina("rmi", "example.com/team/tool:2")
    assert json.loads(call(api, "GET", "/images/busybox/json")[2])["RepoTags"] == \
        ["busybox:latest"]

    conn = http.client.HTTPConnection("localhost")
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(api.socket)
    try:
        for path in ("/_ping", "/v1.44/images/json"):  # one connection, as the docker CLI
            conn.request("HEAD" if path == "/_ping" else "GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("Api-Version") == "1.44"
            assert resp.getheader("Ostype") == "linux"
            assert resp.getheader("Server", "").startswith("lamina/")
            assert abs(time.time() - parsedate_to_datetime(resp.getheader("Date")).timestamp()) < 60
            assert int(resp.getheader("Content-Length")) == (len(body) if path != "/_ping" else 2)
    finally:
        conn.close()


def test_list_filters_and_shared_size(api, busybox_tar):
    api.docker("import", "-c", "LABEL team=core", busybox_tar, "other:1")
    api.docker("tag", "busybox", "registry.test/team/app:v2")
    api.docker("import", busybox_tar)  # untagged: dangling
    client = api.client()

    def tags(**filters):
        return sorted(t for i in client.api.images(filters=filters) for t in i["RepoTags"])

    assert tags(reference="busy*") == ["busybox:latest"]
    assert tags(reference="registry.test/team/*") == ["registry.test/team/app:v2"]
    assert tags(label="team=core") == tags(label="team") == ["other:1"]
    assert tags(dangling=True) == [] and len(client.api.images(filters={"dangling": True})) == 1
    assert "other:1" not in tags(before="other:1") and tags(since="busybox") == ["other:1"]
    status, _, body = call(api, "GET",
                           "/images/json?filters=" + quote(json.dumps({"nosuch": ["x"]})))
    assert (status, json.loads(body)) == (400, {"message": "invalid filter 'nosuch'"})
    shared = {i["Id"]: i["SharedSize"] for i in client.api.images()}
    assert set(shared.values()) == {-1}
    docs = json.loads(call(api, "GET", "/images/json?shared-size=1")[2])
    assert all(d["SharedSize"] == d["Size"] for d in docs)  # the one layer: every image has it


# ------------------------------------------------------------------ tag, rmi, prune
def test_tag_rmi_and_conflicts(api):
    api.docker("tag", "busybox", "team/tool:1")
    assert "team/tool" in api.docker("images").stdout
    assert api.docker("rmi", "team/tool:1").stdout == "Untagged: team/tool:1\n"
    status, _, body = call(api, "POST", "/images/busybox/tag?repo=Upper&tag=x")
    assert (status, json.loads(body)["message"]) == (
        400, "invalid reference format: repository name must be lowercase")
    status, _, body = call(api, "POST", "/images/busybox/tag?repo=ok&tag=bad:tag")
    assert (status, json.loads(body)["message"]) == (400, "invalid tag format")
    assert call(api, "POST", "/images/busybox/tag?repo=ok&tag=fine")[0] == 201
    assert call(api, "POST", "/images/nosuch/tag?repo=ok&tag=fine")[0] == 404
    cid = api.lamina("create", "--name", "user", "busybox", "true").stdout.strip()
    status, _, body = call(api, "DELETE", "/images/ok:fine")  # another tag stays: untagged
    assert (status, json.loads(body)) == (200, [{"Untagged": "ok:fine"}])
    image_id = api.client().images.get("busybox").id
    status, _, body = call(api, "DELETE", "/images/busybox")
    assert status == 409 and json.loads(body)["message"] == (
        f'conflict: unable to remove repository reference "busybox" (must force) - container '
        f"{cid[:12]} is using its referenced image {image_id[7:19]}")
    status, _, body = call(api, "DELETE", f"/images/{image_id[7:19]}")
    assert status == 409 and json.loads(body)["message"] == (
        f"conflict: unable to delete {image_id[7:19]} (must be forced) - image is being used by "
        f"stopped container {cid[:12]}")
    proc = api.docker("rmi", "busybox", check=False)
    assert proc.returncode == 1 and "must force" in proc.stderr
    api.lamina("rm", "user")
    records = json.loads(call(api, "DELETE", "/images/busybox")[2])
    assert records[0] == {"Untagged": "busybox:latest"}
    assert {"Deleted": image_id} in records and api.docker("images", "-q").stdout == ""


def test_prune(api, busybox_tar):
    dangling = api.docker("import", "-c", "LABEL keep=no", busybox_tar).stdout.strip()
    api.docker("import", "-c", "LABEL keep=yes", busybox_tar, "kept:1")
    report = api.client().images.prune(filters={"dangling": True})
    assert {"Deleted": dangling} in report["ImagesDeleted"]
    assert report["SpaceReclaimed"] == 0  # its layer is busybox's too
    assert api.client().images.prune()["ImagesDeleted"] is None
    report = api.client().images.prune(filters={"dangling": False, "label": ["keep=yes"]})
    assert report["ImagesDeleted"][0] == {"Untagged": "kept:1"}
    assert "busybox" in api.docker("images").stdout
    proc = api.docker("image", "prune", "-a", "-f")
    assert "untagged: busybox:latest" in proc.stdout
    assert re.search(r"Total reclaimed space: [1-9][0-9.]*MB", proc.stdout)  # busybox's layer
    assert api.docker("images", "-q").stdout == ""


# ------------------------------------------------------------------ import, save, load
def test_import_with_changes(api, busybox_tar):
    out = api.docker("import", "-m", "the message", "-c", "ENV A=1", "-c", "ENV B=$A-2", "-c",
                     'CMD ["sh", "-c", "echo $B"]', "-c", "EXPOSE 8080", "-c", "WORKDIR /srv",
                     busybox_tar, "imported:1")
    image_id = out.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    doc = api.client().api.inspect_image("imported:1")
    assert doc["Id"] == image_id and doc["Comment"] == "the message"
    config = doc["Config"]
    assert (config["Env"], config["Cmd"], config["WorkingDir"], config["ExposedPorts"]) == (
        ["A=1", "B=1-2"], ["sh", "-c", "echo $B"], "/srv", {"8080/tcp": {}})
    history = api.client().api.history("imported:1")
    assert [(h["CreatedBy"], h["Comment"]) for h in history] == [("", "the message")]
    assert api.docker("images", "-q").stdout.split().count(image_id[7:19]) == 1  # one image
    proc = api.docker("import", "-c", "RUN true", busybox_tar, check=False)
    assert proc.returncode == 1 and "run is not a valid change command" in proc.stderr
    status, _, body = call(api, "POST", "/images/create?fromSrc=http://example.com/x.tar")
    assert status == 400 and "URL" in json.loads(body)["message"]
    def chunks():  # docker-py sends a generator chunked (a file it sends mislabelled, which
        with open(busybox_tar, "rb") as f:  # Docker Engine refuses too)
            while data := f.read(65536):
                yield data

    answer = api.client().api.import_image_from_stream(chunks(), repository="streamed", tag="2")
    assert documents(answer.encode())[-1]["status"].startswith("sha256:")


def test_save_and_load(api, busybox_tar, tmp_path):
    api.docker("import", busybox_tar, "second:1")
    archive = tmp_path / "images.tar"
    api.docker("save", "-o", str(archive), "busybox", "second:1")
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert sorted(t for entry in manifest for t in entry["RepoTags"]) == ["busybox:latest",
                                                                            "second:1"]
    api.docker("rmi", "second:1")
    with open(archive, "rb") as f:
        proc = subprocess.run([DOCKER, "load"], stdin=f, env=api.env(), capture_output=True,
                              text=True, check=True)
    assert proc.stdout == "Loaded image: busybox:latest\nLoaded image: second:1\n"
    status, kind, body = call(api, "GET", "/images/get?names=busybox&names=second:1")
    assert (status, kind) == (200, "application/x-tar")
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "manifest.json" in tar.getnames()
    assert call(api, "GET", "/images/nosuch/get")[0] == 404
    status, kind, body = call(api, "POST", "/images/load", body=body,
                              headers={"Content-Type": "application/x-tar"})
    assert (status, kind) == (200, "application/json")
    assert documents(body) == [{"stream": "Loaded image: busybox:latest\n"},
                               {"stream": "Loaded image: second:1\n"}]
    status, _, body = call(api, "POST", "/images/load", body=b"not a tar" * 100)
    assert status == 200 and "error" in documents(body)[-1]
    client = api.client()
    data = b"".join(client.images.get("second:1").save(named=True))
    client.images.remove("second:1")
    assert [i.tags for i in client.images.load(data)] == [["second:1"]]


# ------------------------------------------------------------------ build
DOCKERFILE = """\
FROM busybox
ARG GREETING=hello
RUN echo "$GREETING" > /greeting && echo to-stdout && echo to-stderr >&2
COPY app.txt /app/
ENV APP=/app
CMD ["cat", "/app/app.txt"]
"""


def test_build_with_the_legacy_builder(api, tmp_path):
    context = make_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "app.txt": "app\n"})
    proc = api.docker("build", "-t", "app:1", "-t", "app:latest", "--build-arg",
                      "GREETING=hi", context)
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.startswith("Step ")]
    assert steps == ["Step 1/6 : FROM busybox", "Step 2/6 : ARG GREETING=hello",
                     ('Step 3/6 : RUN echo "$GREETING" > /greeting && echo to-stdout && echo '
                      "to-stderr >&2"), "Step 4/6 : COPY app.txt /app/", "Step 5/6 : ENV APP=/app",
                     'Step 6/6 : CMD ["cat", "/app/app.txt"]']
    # stdout and stderr come through two pipes: which one the server reads first when both
    # hold data is not defined (nor is it in Docker), so stderr's reset may come before stdout
    assert "\x1b[91mto-stderr" in lines and re.search(r"^(\x1b\[0m)?to-stdout$", proc.stdout,
                                                       re.M), proc.stdout
    assert re.search(r"^Successfully built [0-9a-f]{12}$", proc.stdout, re.M)
    assert lines[-2:] == ["Successfully tagged app:1", "Successfully tagged app:latest"]
    client = api.client()
    image = client.images.get("app:1")
    assert image.attrs["Config"]["Cmd"] == ["cat", "/app/app.txt"]
    assert "APP=/app" in image.attrs["Config"]["Env"]
    history = client.api.history("app:1")
    assert [h["Size"] for h in history][:4] == [0, 0, 4, 3]  # CMD, ENV, COPY, RUN
    assert history[3]["CreatedBy"].startswith("|1 GREETING=hi /bin/sh -c echo")
    # what the steps wrote is in the image
    from lamina import Engine

    engine = Engine(api.root)
    try:
        root = engine.mount(engine.create("app:1"))
        assert Path(root, "greeting").read_text() == "hi\n"
        assert Path(root, "app/app.txt").read_text() == "app\n"
    finally:
        engine.close()

    # the cache, -q, a Dockerfile from stdin, a failing step
    proc = api.docker("build", "-t", "app:1", "--build-arg", "GREETING=hi", context)
    assert proc.stdout.count(" ---> Using cache") == 5
    assert api.docker("build", "-q", "--build-arg", "GREETING=hi", context).stdout.strip() == \
        image.id
    proc = api.docker("build", "-f", "-", "-t", "fromstdin", context,
                      input="FROM app:1\nRUN cat /greeting\n")
    assert "\nhi\n" in proc.stdout
    proc = api.docker("build", "-f", "-", context, input="FROM busybox\nRUN exit 3\n",
                      check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip().endswith("The command '/bin/sh -c exit 3' returned a non-zero "
                                        "code: 3")
    # the intermediate states are the build cache
    states = len(api.client().images.list(all=True)) - len(api.client().images.list())
    proc = api.docker("builder", "prune", "-f")
    assert proc.stdout.startswith("Deleted build cache objects:\n")
    assert len(re.findall(r"^[0-9a-f]{64}$", proc.stdout, re.M)) == states > 0
    assert len(api.client().images.list(all=True)) == len(api.client().images.list())
    assert api.client().images.get("app:1").id == image.id


def test_build_with_docker_py(api):
    client = api.client()
    files = {"Dockerfile": b'FROM busybox\nARG V\nRUN echo "v=$V" > /v\nLABEL a=b\n',
             "extra.txt": b"x"}
    image, logs = client.images.build(fileobj=io.BytesIO(context_tar(files)), custom_context=True,
                                      tag="py:1", buildargs={"V": "42"}, labels={"set": "by-api"},
                                      nocache=True)
    logs = list(logs)
    assert {"aux": {"ID": image.id}} in logs
    assert image.labels == {"a": "b", "set": "by-api"} and image.tags == ["py:1"]
    assert any("Step 5/5 : LABEL" in entry.get("stream", "") for entry in logs)
    with pytest.raises(Exception) as failure:
        client.images.build(fileobj=io.BytesIO(context_tar({"Dockerfile": b"FROM busybox\n"
                                                                          b"RUN exit 9\n"})),
                            custom_context=True)
    assert "returned a non-zero code: 9" in str(failure.value)
    # gzip context, a Dockerfile in a subdirectory, raw answer shape
    import gzip

    body = gzip.compress(context_tar({"sub/Build.file": b"FROM busybox\nCMD [\"x\"]\n"}))
    status, kind, data = call(api, "POST", "/build?dockerfile=sub/Build.file&t=gz:1", body=body,
                              headers={"Content-Type": "application/x-tar"})
    docs = documents(data)
    assert (status, kind) == (200, "application/json")
    assert docs[:2] == [{"stream": "Step 1/2 : FROM busybox"}, {"stream": "\n"}]
    assert docs[-3]["aux"]["ID"] == client.images.get("gz:1").id
    assert docs[-2:] == [{"stream": f"Successfully built {docs[-3]['aux']['ID'][7:19]}\n"},
                         {"stream": "Successfully tagged gz:1\n"}]
    status, _, data = call(api, "POST", "/build?dockerfile=nosuch", body=body)
    assert (status, json.loads(data)) == (
        500, {"message": "Cannot locate specified Dockerfile: nosuch"})


def test_a_build_stops_when_its_client_goes_away(api):
    body = context_tar({"Dockerfile": b"FROM busybox\nRUN seq 1 300000; echo done\n"
                                      b"RUN echo after\n"})
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(api.socket)
    conn.sendall(b"POST /v1.44/build?t=cut:1 HTTP/1.1\r\nHost: d\r\nContent-Type: "
                 b"application/x-tar\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    data = b""
    while b"Running in" not in data:
        data += conn.recv(65536)
    conn.close()  # mid-RUN, its output still coming
    deadline = time.monotonic() + 60
    while api.lamina("ps", "-a", "-q").stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.lamina("ps", "-a", "-q").stdout == ""  # the step's container is gone
    assert api.docker("images", "-q", "cut").stdout == ""
    assert api.lamina("system", "check").stdout == "No problems found\n"
    assert api.docker("images", "--format", "{{.Repository}}").stdout == "busybox\n"


def test_build_beside_a_cli_build(api, tmp_path):
    """A build through the server and ``lamina build`` on the same store at the same time."""
    one = make_context(tmp_path / "one", {"Dockerfile": "FROM busybox\nRUN sleep 1; echo 1 > /one"
                                                         "\nRUN echo more > /more\n"})
    two = make_context(tmp_path / "two", {"Dockerfile": "FROM busybox\nRUN sleep 1; echo 2 > /two"
                                                         "\nCOPY Dockerfile /\n"})
    results = {}

    def through_the_server():
        results["api"] = api.docker("build", "-t", "one:1", one, check=False)

    thread = threading.Thread(target=through_the_server)
    thread.start()
    results["cli"] = api.lamina("build", "-t", "two:1", two, check=False)
    thread.join()
    assert results["api"].returncode == 0, results["api"].stderr
    assert results["cli"].returncode == 0, results["cli"].stderr
    assert {"one:1", "two:1"} <= {t for i in api.client().images.list() for t in i.tags}
    assert api.lamina("system", "check").returncode == 0


# ------------------------------------------------------------------ commit
def test_commit(api):
    from lamina import Engine

    engine = Engine(api.root)
    try:
        cid = engine.create("busybox", name="work", command=["sh", "-c", "echo hi"])
        Path(engine.mount("work"), "made.txt").write_text("made\n")
        engine.umount("work")
    finally:
        engine.close()
    out = api.docker("commit", "-m", "a message", "-a", "Ann <ann@example.com>", "-c",
                     "ENV STAGE=2", "-c", "EXPOSE 80", "work", "committed:1").stdout.strip()
    client = api.client()
    doc = client.api.inspect_image("committed:1")
    assert doc["Id"] == out and doc["Author"] == "Ann <ann@example.com>"
    assert (doc["Comment"], doc["Config"]["Cmd"]) == ("a message", ["sh", "-c", "echo hi"])
    assert "STAGE=2" in doc["Config"]["Env"] and doc["Config"]["ExposedPorts"] == {"80/tcp": {}}
    base = client.images.get("busybox").id
    assert (doc["Parent"], doc["Container"], doc["ContainerConfig"]["Image"]) == (base, cid,
                                                                                  "busybox")
    top, below = client.api.history("committed:1")
    assert (top["CreatedBy"], top["Comment"], top["Size"]) == ("sh -c echo hi", "a message", 5)
    assert (below["Id"], below["Tags"]) == (base, ["busybox:latest"])  # the parent, as Docker's
    answer = client.api.commit(cid, repository="py", tag="2", conf={"Cmd": ["echo", "conf"],
                                                                    "Labels": {"k": "v"}})
    doc = client.api.inspect_image("py:2")
    assert doc["Id"] == answer["Id"] and doc["Config"]["Cmd"] == ["echo", "conf"]
    assert doc["Config"]["Labels"] == {"k": "v"}
    status, _, body = call(api, "POST", "/commit?container=nosuch")
    assert (status, json.loads(body)) == (404, {"message": "No such container: nosuch"})
    status, _, body = call(api, "POST", f"/commit?container={cid}&changes=RUN%20x")
    assert (status, json.loads(body)) == (400, {"message": "run is not a valid change command"})
    assert api.lamina("system", "check").returncode == 0


# ------------------------------------------------------------------ pull, push, login
def test_push_and_pull(api, registry, tmp_path):
    target = f"{registry}/team/bb:1"
    api.docker("tag", "busybox", target)
    proc = api.docker("push", target)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"The push refers to repository [{registry}/team/bb]"
    assert lines[1:3] == ["6a133f584730: Preparing", "6a133f584730: Pushed"] or \
        re.fullmatch(r"[0-9a-f]{12}: Pushed", lines[2])
    assert re.fullmatch(r"1: digest: sha256:[0-9a-f]{64} size: \d+", lines[-1])
    digest = lines[-1].split()[2]
    again = api.docker("push", target).stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{12}: Layer already exists", again[2]) and again[-1] == lines[-1]
    status, _, body = call(api, "POST", f"/images/{registry}/team/bb/push?tag=1")
    docs = documents(body)
    assert docs[-1] == {"progressDetail": {}, "aux": {"Tag": "1", "Digest": digest,
                                                      "Size": int(lines[-1].split()[-1])}}

    api.docker("rmi", target)
    proc = api.docker("pull", target)
    assert proc.stdout.splitlines()[0] == "1: Pulling from team/bb"
    assert proc.stdout.splitlines()[-3:] == [f"Digest: {digest}",
                                             f"Status: Downloaded newer image for {target}", target]
    assert "Pull complete" in proc.stdout or "Already exists" in proc.stdout
    proc = api.docker("pull", target)
    assert proc.stdout.splitlines() == ["1: Pulling from team/bb", f"Digest: {digest}",
                                        f"Status: Image is up to date for {target}", target]
    assert api.docker("images", "--digests", "--format", "{{.Digest}}", f"{registry}/team/bb"
                      ).stdout.strip() == digest
    proc = api.docker("pull", f"{registry}/team/nosuch:1", check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"Error response from daemon: manifest for {registry}/team/nosuch:1 not found: manifest "
        "unknown: manifest unknown")
    status, _, body = call(api, "POST", f"/images/create?fromImage={registry}/team/nosuch&tag=1")
    assert status == 404 and "not found" in json.loads(body)["message"]

    # a new store pulls every layer: docker-py's stream, then by digest
    client = api.client()
    client.images.remove(target)
    client.images.remove("busybox")
    events = list(client.api.pull(f"{registry}/team/bb", tag="1", stream=True, decode=True))
    assert events[0] == {"status": "Pulling from team/bb", "id": "1"}
    statuses = [e.get("status") for e in events]
    assert {"Pulling fs layer", "Download complete", "Pull complete"} <= set(statuses)
    assert any("progressDetail" in e and e["progressDetail"].get("total") for e in events)
    image = client.images.pull(f"{registry}/team/bb@{digest}")
    assert f"{registry}/team/bb@{digest}" in image.attrs["RepoDigests"]
    # the docker CLI's run: create answers 404, the CLI pulls, creates again
    client.images.remove(f"{registry}/team/bb:1")
    proc = api.docker("run", "--rm", "--network", "none", target, "echo", "ran")
    assert proc.stdout == "ran\n" and "Pulling from team/bb" in proc.stderr
    distribution = client.api.inspect_distribution(target)
    assert distribution["Descriptor"]["digest"] == digest
    assert distribution["Platforms"] == [{"architecture": "amd64", "os": "linux"}]
    # a build pulls the FROM image the store lacks, as Docker's builder does
    client.images.remove(target)
    context = make_context(tmp_path / "ctx", {"Dockerfile": f"FROM {target}\nRUN echo built\n"})
    proc = api.docker("build", "-t", "on-pulled", context)
    assert "1: Pulling from team/bb" in proc.stdout and "\nbuilt\n" in proc.stdout
    assert proc.stdout.endswith("Successfully tagged on-pulled:latest\n")


def test_login_and_credentials(api, auth_registry):
    target = f"{auth_registry}/private/bb:1"
    api.docker("tag", "busybox", target)
    proc = api.docker("push", target, check=False)
    assert proc.returncode == 1
    proc = api.docker("login", "-u", "alice", "--password-stdin", auth_registry, input="wrong\n",
                      check=False)
    assert proc.returncode == 1 and "incorrect username or password" in proc.stderr
    status, _, _ = call(api, "POST", "/auth", json.dumps(
        {"username": "alice", "password": "wrong", "serveraddress": auth_registry}).encode())
    assert status == 401
    proc = api.docker("login", "-u", "alice", "--password-stdin", auth_registry,
                      input="s3cret\n")
    assert proc.stdout.strip().endswith("Login Succeeded")
    assert re.search(r"Pushed$", api.docker("push", target).stdout, re.M)
    api.docker("rmi", target)
    assert "Status: Downloaded newer image" in api.docker("pull", target).stdout
    client = api.client()
    assert client.login("alice", "s3cret", registry=auth_registry)["Status"] == "Login Succeeded"
    api.docker("logout", auth_registry)
    assert api.docker("pull", target, check=False).returncode == 1
    # docker-py's explicit auth_config travels as X-Registry-Auth
    client.images.remove(target)
    image = client.images.pull(target, auth_config={"username": "alice", "password": "s3cret"})
    assert target in image.tags


# ------------------------------------------------------------------ side by side with Docker
@pytest.fixture(scope="module")
def engines(busybox_tar, registry):
    """(docker, lamina): the docker CLI against Docker Engine and against lamina serve, each
    with ``busybox:latest`` imported the same way (``docker import``)."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is installed by scripts/setup (docker.io)")
    with beside_docker("lamina-images-vs-docker-") as (dockerd, server):
        envs = [dockerd.env, server.env()]

        def runner(env):
            def docker(*args, input=None, check=True):
                proc = subprocess.run([DOCKER, *args], env={**env, "DOCKER_BUILDKIT": "0"},
                                      input=input, text=True, capture_output=True, timeout=180,
                                      check=False)
                if check and proc.returncode != 0:
                    raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
                return proc
            return docker

        docker, lamina = runner(envs[0]), runner(envs[1])
        for run in (docker, lamina):
            run("import", "-m", "imported the same way", busybox_tar, "busybox:latest")
        yield docker, lamina


def masked(text: str) -> str:
    """IDs and ages out, columns as cells (their widths follow the ages)."""
    text = HEX.sub("<id>", text)
    text = re.sub(r"(Less than a second|\d+ seconds?|About a minute) ago", "<ago>", text)
    return "\n".join(re.sub(r" {2,}", "\t", line.rstrip()) for line in text.splitlines())


def test_images_and_history_as_docker_prints_them(engines):
    for args in (["images"], ["images", "--format", "{{.Repository}} {{.Tag}} {{.Size}}"],
                 ["history", "busybox"], ["history", "--no-trunc", "--format",
                                          "{{.CreatedBy}}|{{.Size}}|{{.Comment}}", "busybox"],
                 ["image", "inspect", "--format",
                  ("{{.Os}} {{.Architecture}} {{.Size}} {{.RepoTags}} {{json .Config.Cmd}} "
                   "{{.Comment}} {{len .RootFS.Layers}}"), "busybox"]):
        d, lam = (engine(*args) for engine in engines)
        assert masked(d.stdout) == masked(lam.stdout), args
    d, lam = (json.loads(engine("image", "inspect", "busybox").stdout)[0] for engine in engines)
    assert set(d) - {"Container", "VirtualSize"} == set(lam)  # API 1.41 (Debian's) against 1.44
    assert d["Config"] == lam["Config"] and d["ContainerConfig"] == lam["ContainerConfig"]
    assert d["Size"] == lam["Size"] and d["RootFS"] == lam["RootFS"]


def test_build_output_as_docker_prints_it(engines, tmp_path):
    context = make_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt\nRUN echo err >&2\n",
        "a.txt": "from the context\n"})
    outputs = [engine("build", "-t", "side:1", context) for engine in engines]
    d, lam = (masked(p.stdout).splitlines() for p in outputs)
    assert d == lam
    d, lam = (engine("history", "--format", "{{.CreatedBy}}|{{.Size}}", "side:1").stdout
              for engine in engines)
    # the COPY source's hash is lamina's own (Docker's covers the file's times too)
    d, lam = (re.sub(r"file:[0-9a-f]+", "file:<hash>", masked(text)) for text in (d, lam))
    assert d == lam


def test_push_and_pull_output_as_docker_prints_it(engines, registry, tmp_path):
    archive = tmp_path / "small.tar"
    archive.write_bytes(context_tar({"hello.txt": b"hello\n", "etc/motd": b"small\n"}))
    outputs = []
    for name, engine in zip(("docker", "lamina"), engines, strict=True):
        target = f"{registry}/{name}/small:1"
        engine("import", str(archive), target)
        push = engine("push", target).stdout
        engine("rmi", target)
        pull = engine("pull", target).stdout
        outputs.append((masked(push.replace(name, "<engine>")),
                        masked(pull.replace(name, "<engine>"))))
    (d_push, d_pull), (l_push, l_pull) = outputs
    # Docker pushes a Docker schema 2 manifest, lamina an OCI one: their sizes differ
    d_push, l_push = (re.sub(r"size: \d+", "size: <n>", text) for text in (d_push, l_push))
    assert d_push == l_push
    # Docker may also say Waiting, Verifying Checksum, Extracting: the rest is the same
    noise = {"<id>: Waiting", "<id>: Verifying Checksum", "<id>: Extracting"}
    assert [line for line in d_pull.splitlines() if line not in noise] == l_pull.splitlines()
