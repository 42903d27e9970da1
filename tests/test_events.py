"""The event journal (lamina.events) and ``GET /events``: what the core records (volumes, images:
tag, untag, delete, import, save, load, pull, push), concurrent writers that never interleave, the
journal's rotation and a follower that loses nothing across it, Docker's filters and times, and
the stream as the docker CLI and docker-py read it (old and new fields, since/until, follow until
the client goes away)."""

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

from lamina import events
from tests.apiserver import DOCKER, LAMINA, REPO
from tests.conftest import needs_root
from tests.test_api import http


def journal(root: str) -> list[dict]:
    return events.read(root)


def actions(root: str, kind: str | None = None) -> list[tuple[str, str, str]]:
    """(type, action, actor ID) of every event, oldest first."""
    return [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in journal(root)
            if kind is None or e["Type"] == kind]


# ------------------------------------------------------------------------------ the journal
def test_emit_writes_docker_event_messages(tmp_path):
    root = str(tmp_path)
    before = time.time_ns()
    events.emit(root, "container", "die", "c" * 64, {"name": "web", "exitCode": 3, "image": "bb"})
    (event,) = journal(root)
    assert event["Type"] == "container" and event["Action"] == "die"
    assert event["Actor"] == {"ID": "c" * 64,
                              "Attributes": {"name": "web", "exitCode": "3", "image": "bb"}}
    assert event["scope"] == "local"
    assert before <= event["timeNano"] <= time.time_ns()
    assert event["time"] == event["timeNano"] // 10**9
    assert oct(os.stat(tmp_path / "events.log").st_mode & 0o777) == "0o600"


def test_emit_never_fails_the_work_it_reports(tmp_path):
    events.emit(str(tmp_path / "no" / "such" / "store"), "volume", "create", "v", {})
    os.makedirs(tmp_path / "ro")
    os.mkdir(tmp_path / "ro" / "events.log")  # unwritable: a directory in its place
    events.emit(str(tmp_path / "ro"), "volume", "create", "v", {})


def test_parse_time_takes_unix_seconds_and_rfc3339():
    assert events.parse_time("1700000000") == 1700000000 * 10**9
    assert events.parse_time("1700000000.5") == 1700000000 * 10**9 + 500_000_000
    assert events.parse_time("1796640927.201275386") == 1796640927201275386  # the docker CLI's
    assert events.parse_time("2020-01-01T00:00:00Z") == 1577836800 * 10**9
    assert events.parse_time("2020-01-01T01:00:00.25+01:00") == 1577836800 * 10**9 + 250_000_000
    assert events.parse_time("") is None and events.parse_time(None) is None
    for bad in ("abc", "10m", "1.2.3", "2020-13-01"):
        with pytest.raises(ValueError):
            events.parse_time(bad)


def test_filters_as_docker_reads_them(tmp_path):
    root = str(tmp_path)
    cid = "ab" * 32
    events.emit(root, "container", "create", cid,
                {"name": "web-1", "image": "busybox:latest", "com.docker.compose.project": "p"})
    events.emit(root, "container", "exec_start: sh -c true", cid, {"name": "web-1", "image": "busybox"})
    events.emit(root, "image", "tag", "sha256:" + "1" * 64, {"name": "busybox:latest"})
    events.emit(root, "volume", "create", "data", {"driver": "local"})

    def picked(filters):
        return [(e["Type"], e["Action"]) for e in events.read(root, filters=filters)]

    assert picked({"type": ["volume", "image"]}) == [("image", "tag"), ("volume", "create")]
    assert picked({"event": ["exec_start"]}) == [("container", "exec_start: sh -c true")]
    assert picked({"action": ["create"]}) == [("container", "create"), ("volume", "create")]
    assert picked({"container": ["web"]}) == [("container", "create"),  # a name's prefix
                                              ("container", "exec_start: sh -c true")]
    assert picked({"container": ["abab"]}) == picked({"container": ["web-1"]})  # an ID's prefix
    assert picked({"container": ["data"]}) == []  # of that type only
    assert picked({"volume": ["data"]}) == [("volume", "create")]
    assert picked({"image": ["busybox"]}) == [("container", "create"),  # tag stripped
                                              ("container", "exec_start: sh -c true"),
                                              ("image", "tag")]
    assert picked({"image": ["busybox:latest"], "type": ["image"]}) == [("image", "tag")]
    assert picked({"label": ["com.docker.compose.project=p"]}) == [("container", "create")]
    assert picked({"label": ["com.docker.compose.project=q"]}) == []
    assert picked({"label": ["com.docker.compose.project", "name=web-1"]}) == [
        ("container", "create")]  # every label filter
    assert picked({"type": ["container"], "event": ["destroy"]}) == []


def _emitter(root: str, tag: str, count: int, limit: int | None, pause: float = 0) -> None:
    if limit is not None:
        events.LIMIT = limit
    for i in range(count):
        events.emit(root, "container", "exec_start: " + "x" * (i % 300), f"{tag}-{i}",
                    {"n": i, "pad": "y" * 200})
        if pause:
            time.sleep(pause)


def test_concurrent_writers_never_interleave(tmp_path):
    """8 processes x 400 events of up to 800 bytes, at once: every line whole, none lost."""
    root = str(tmp_path)
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_emitter, args=(root, f"p{k}", 400, None)) for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open(tmp_path / "events.log", "rb") as f:
        lines = f.read().splitlines()
    assert len(lines) == 3200
    seen = {json.loads(line)["Actor"]["ID"] for line in lines}  # each line is one whole document
    assert seen == {f"p{k}-{i}" for k in range(8) for i in range(400)}


def test_a_follower_reads_across_one_and_two_renames(tmp_path, monkeypatch):
    """Between two polls of a follower the journal is renamed not at all, once, twice: every
    event comes once, in order."""
    root = str(tmp_path)
    monkeypatch.setattr(events, "LIMIT", 4096)
    line = len(json.dumps({"Type": "volume", "Action": "create", "Actor": {
        "ID": "v-0-00", "Attributes": {"pad": "y" * 300}}, "scope": "local", "time": 1,
        "timeNano": 1}).encode())
    per_file = 4096 // line + 1  # the event that passes the limit renames the file
    rounds = iter([0, 3, per_file, 2 * per_file + 2, 2, None])  # events written before polls
    written: list[str] = []

    def stop():
        count = next(rounds)
        if count is None:
            return True
        for _ in range(count):
            written.append(f"v-{len(written)}")
            events.emit(root, "volume", "create", written[-1], {"pad": "y" * 300})
        return False

    got = [e["Actor"]["ID"] for e in events.follow(root, stop=stop, interval=0)]
    assert got == written and len(written) > 2 * per_file + 2


def test_the_journal_rotates_and_a_follower_loses_nothing(tmp_path):
    """A journal of 256 KiB a file, 4 writers renaming it about 12 times while a follower reads:
    the follower sees each event exactly once; the files keep the newest part only."""
    root = str(tmp_path)
    limit = 256 << 10
    got: list[str] = []
    done = threading.Event()

    def follower():
        for event in events.follow(root, stop=done.is_set, interval=0.01):
            got.append(event["Actor"]["ID"])

    reader = threading.Thread(target=follower)
    reader.start()
    time.sleep(0.3)  # the follower is at the end of the (empty) journal
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_emitter, args=(root, f"p{k}", 1500, limit, 0.0005))
             for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    time.sleep(0.5)
    done.set()
    reader.join(10)
    wanted = {f"p{k}-{i}" for k in range(4) for i in range(1500)}
    assert len(got) == len(set(got)) == 6000 and set(got) == wanted
    sizes = [os.path.getsize(tmp_path / n) for n in ("events.log", "events.log.1")]
    assert all(size <= limit + 4096 for size in sizes)  # a line past the limit at most
    kept = [e["Actor"]["ID"] for e in events.read(root)]
    assert 0 < len(kept) < 6000 and set(kept) <= wanted
    assert not os.path.exists(tmp_path / "events.log.rotating")


def test_follow_from_since_then_new_events_until(tmp_path):
    root = str(tmp_path)
    events.emit(root, "volume", "create", "old", {})
    mark = time.time_ns()
    events.emit(root, "volume", "create", "a", {})
    until = time.time_ns() + 700_000_000
    out = []
    thread = threading.Thread(target=lambda: out.extend(
        e["Actor"]["ID"] for e in events.follow(root, since=mark, until=until, interval=0.02)))
    thread.start()
    time.sleep(0.2)
    events.emit(root, "volume", "create", "b", {})
    thread.join(5)
    assert not thread.is_alive() and out == ["a", "b"]  # ended once until had passed
    assert time.time_ns() >= until


def _imported(code: str) -> tuple[set[str], str]:
    """The modules ``python -S -c code`` imports, and what it prints."""
    proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.path.join(REPO, "src")})
    found = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return found - {"imported package"}, proc.stdout


def test_importing_and_emitting_is_cheap(tmp_path):
    """``lamina.events`` imports nothing but lamina.cjson (json's C half, not json and re), os
    and time (which ``lamina create`` has anyway), and an event costs well under a millisecond."""
    code = ("import lamina.events, time; t = time.perf_counter()\n"
            f"for i in range(1000): lamina.events.emit({str(tmp_path)!r}, 'container', 'create', "
            "'x' * 64, {'name': 'n', 'image': 'busybox'})\n"
            "print((time.perf_counter() - t) / 1000)")
    modules, out = _imported(code)
    extra = modules - _imported("import lamina")[0] - _imported("import _json, os, time")[0]
    assert extra == {"lamina.events", "lamina.cjson"}
    assert float(out) < 0.001
    assert len(events.read(str(tmp_path))) == 1000


# ------------------------------------------------------------------ where the core records
@needs_root
def test_volume_and_image_events_from_the_core(store_root, busybox_tar, tmp_path):
    def lamina(*args):
        return subprocess.run(LAMINA + ["--root", store_root, *args], capture_output=True,
                              text=True, check=True).stdout

    image_id = lamina("import", busybox_tar, "bb:1").strip()
    lamina("tag", "bb:1", "bb:2")
    lamina("rmi", "bb:2")
    lamina("save", "-o", str(tmp_path / "bb.tar"), "bb:1")
    lamina("rmi", "bb:1")
    lamina("load", "-i", str(tmp_path / "bb.tar"))
    lamina("volume", "create", "v1")
    lamina("volume", "create", "v1")  # exists: nothing happened
    lamina("volume", "rm", "v1")
    lamina("volume", "create", "v2")
    lamina("volume", "prune", "-f")
    assert actions(store_root) == [
        ("image", "tag", image_id), ("image", "import", image_id),
        ("image", "tag", image_id), ("image", "untag", image_id),
        ("image", "save", image_id),
        ("image", "untag", image_id), ("image", "delete", image_id),
        ("image", "load", image_id),
        ("volume", "create", "v1"), ("volume", "destroy", "v1"),
        ("volume", "create", "v2"), ("volume", "destroy", "v2"), ("volume", "prune", ""),
    ]
    names = [e["Actor"]["Attributes"]["name"] for e in journal(store_root) if e["Type"] == "image"]
    assert names == ["bb:1", image_id, "bb:2", image_id, image_id, image_id, image_id, image_id]
    assert {e["Actor"]["Attributes"].get("driver") for e in journal(store_root)
            if e["Type"] == "volume" and e["Action"] != "prune"} == {"local"}


@needs_root
def test_pull_and_push_events(store_root, busybox_tar, tmp_path):
    from tests.test_registry import start_registry, stop

    os.makedirs(tmp_path / "registry")
    address, proc = start_registry(str(tmp_path / "registry"))
    try:
        def lamina(root, *args):
            return subprocess.run(LAMINA + ["--root", root, *args], capture_output=True,
                                  text=True, check=True).stdout

        image_id = lamina(store_root, "import", busybox_tar, f"{address}/team/bb:1").strip()
        lamina(store_root, "push", f"{address}/team/bb:1")
        other = str(tmp_path / "other")
        lamina(other, "pull", f"{address}/team/bb:1")
    finally:
        stop(proc)
    push = [e for e in journal(store_root) if e["Action"] == "push"]
    pull = [e for e in journal(other) if e["Action"] == "pull"]
    for event in push + pull:  # Docker's: the reference as the actor, the repository as name
        assert event["Actor"] == {"ID": f"{address}/team/bb:1",
                                  "Attributes": {"name": f"{address}/team/bb"}}
    assert len(push) == len(pull) == 1
    assert image_id.startswith("sha256:")


# ---------------------------------------------------------------------------- GET /events
def _lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


@needs_root
def test_events_endpoint_since_until_and_old_fields(api):
    start = f"{time.time():.9f}"
    api.lamina("tag", "busybox", "bb:x")
    api.docker("volume", "create", "ev")
    api.lamina("volume", "rm", "ev")  # another process than the server: the same journal
    end = f"{time.time():.9f}"
    status, headers, body = http(api.socket, "GET", f"/v1.44/events?since={start}&until={end}")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["transfer-encoding"] == "chunked"
    got = _lines(body)
    assert [(e["Type"], e["Action"]) for e in got] == [
        ("image", "tag"), ("volume", "create"), ("volume", "destroy")]
    tag = got[0]
    assert list(tag) == ["status", "id", "Type", "Action", "Actor", "scope", "time", "timeNano"]
    assert tag["status"] == "tag" and tag["id"] == tag["Actor"]["ID"]
    assert tag["Actor"]["Attributes"] == {"name": "bb:x"}
    assert "status" not in got[1] and got[1]["Actor"] == {"ID": "ev",
                                                          "Attributes": {"driver": "local"}}
    # the docker CLI: its own format, its filters
    out = api.docker("events", "--since", start, "--until", end, "--filter", "type=volume").stdout
    assert [line.split()[1:4] for line in out.splitlines()] == [
        ["volume", "create", "ev"], ["volume", "destroy", "ev"]]
    out = api.docker("events", "--since", start, "--until", end, "--format", "{{json .}}",
                     "--filter", "event=tag").stdout
    assert [json.loads(line)["Action"] for line in out.splitlines()] == ["tag"]
    # docker-py
    client = api.client()
    try:
        seen = list(client.events(since=float(start), until=float(end), decode=True,
                                  filters={"type": "image"}))
    finally:
        client.close()
    assert [(e["Type"], e["status"]) for e in seen] == [("image", "tag")]
    # Docker's errors
    status, _, body = http(api.socket, "GET", "/v1.44/events?since=100&until=50")
    assert status == 400 and json.loads(body)["message"] == \
        "`since` time (100) cannot be after `until` time (50)"
    status, _, body = http(api.socket, "GET", "/v1.44/events?since=yesterday&until=50")
    assert status == 400 and "since" in json.loads(body)["message"]


@needs_root
def test_events_follow_until_the_client_goes_away(api):
    import socket

    def threads() -> int:
        with open(f"/proc/{api.proc.pid}/status") as f:
            return int(f.read().split("Threads:")[1].split()[0])

    # The server answers its first ping while it may still be starting its spare acceptor
    # threads (one fewer was counted once under load): count once the number holds still.
    before, deadline = threads(), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = threads()
        if now == before:
            break
        before = now
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(api.socket)
    s.sendall(b'GET /v1.44/events?filters={"type":["volume"]} HTTP/1.1\r\nHost: d\r\n\r\n')
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)  # the status and headers come at once, before any event
    assert head.startswith(b"HTTP/1.1 200")
    api.lamina("volume", "create", "live")  # the CLI's event reaches the stream
    data = head.partition(b"\r\n\r\n")[2]
    deadline = time.monotonic() + 10
    while b'"live"' not in data and time.monotonic() < deadline:
        data += s.recv(4096)
    assert b'"Action":"create"' in data and b'"live"' in data
    s.close()
    # the server notices the client went away: its stream ends, it serves on
    deadline = time.monotonic() + 5
    while threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads() <= before
    proc = api.docker("events", "--since", "1", "--until", f"{time.time():.3f}",
                      "--filter", "volume=live")
    assert proc.stdout.split()[1:4] == ["volume", "create", "live"]
    status, _, _ = http(api.socket, "GET", "/_ping")
    assert status == 200


@needs_root
def test_docker_events_follows_new_events(api):
    proc = subprocess.Popen([DOCKER, "events", "--filter", "type=volume", "--format",
                             "{{.Action}} {{.Actor.ID}}"], stdout=subprocess.PIPE, text=True,
                            env=api.env())
    try:
        time.sleep(1)
        api.docker("volume", "create", "f1")
        api.docker("volume", "rm", "f1")
        lines = [proc.stdout.readline().strip() for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert lines == ["create f1", "destroy f1"]

