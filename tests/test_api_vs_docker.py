"""The docker CLI against ``lamina serve`` and against Docker Engine, side by side: the same
commands on the same image must print the same thing (IDs, names and times aside), exit with
the same codes, and the documents must have Docker's keys. Docker Engine is Debian's docker.io,
started on a private socket (bench/peers.py)."""

import json
import os
import re
import shutil
import time

import pytest

from tests.apiserver import docker_clis

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dockerd") is None,
                                reason="needs root and dockerd (scripts/setup installs docker.io)")

@pytest.fixture(scope="module")
def engines(busybox_tar):
    """(docker, lamina): each a function running the docker CLI against one engine."""
    with docker_clis("lamina-vs-docker-", busybox_tar) as engines:
        yield engines


def both(engines, *args, input=None):
    docker, lamina = engines
    return docker(*args, input=input), lamina(*args, input=input)


HEX = re.compile(r"\b[0-9a-f]{12}\b|\b[0-9a-f]{64}\b")


def same(a: str, b: str) -> None:
    assert HEX.sub("<id>", a) == HEX.sub("<id>", b)


def test_run_outputs_and_exit_codes(engines):
    for args in (["run", "--rm", "--network", "none", "busybox", "echo", "hello"],
                 ["run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo o; echo e >&2; exit 3"],
                 ["run", "--rm", "--network", "none", "busybox", "nosuchcommand"],
                 ["run", "--rm", "--network", "none", "-e", "A=1", "-w", "/tmp", "busybox", "sh",
                  "-c", "echo $A $(pwd) $(id -u)"],
                 ["run", "--rm", "--network", "none", "-u", "1234:5", "busybox", "id"]):
        d, lam = both(engines, *args)
        assert (d.returncode, d.stdout) == (lam.returncode, lam.stdout), args
        if d.returncode == 0:
            assert d.stderr == lam.stderr, args
    d, lam = both(engines, "run", "-i", "--rm", "--network", "none", "busybox", "wc", "-c",
                  input="x" * 100000)
    assert d.stdout == lam.stdout == "100000\n"


def test_ps_size_and_inspect_shapes(engines):
    for engine in engines:
        assert engine("run", "--name", "sized", "--network", "none", "busybox", "sh", "-c",
                      "head -c 3000 /dev/zero > /blob").returncode == 0
    d, lam = both(engines, "ps", "-a", "-s", "--filter", "name=sized", "--format",
                  "table {{.Image}}\t{{.Command}}\t{{.State}}\t{{.Names}}\t{{.Size}}")
    assert d.stdout == lam.stdout  # Status holds the age: "Exited (0) 1 second ago"
    d, lam = both(engines, "inspect", "sized")
    docker_doc, lamina_doc = json.loads(d.stdout)[0], json.loads(lam.stdout)[0]
    assert set(docker_doc) <= set(lamina_doc) | {"AppArmorProfile"}
    for key in ("State", "Config", "NetworkSettings"):
        missing = set(docker_doc[key]) - set(lamina_doc[key])
        assert not missing, (key, missing)
    assert set(docker_doc["HostConfig"]) <= set(lamina_doc["HostConfig"])
    for key in ("Status", "Running", "ExitCode", "Pid"):
        assert docker_doc["State"][key] == lamina_doc["State"][key], key
    for key in ("Cmd", "Env", "Tty", "OpenStdin", "WorkingDir", "User", "Entrypoint"):
        assert docker_doc["Config"][key] == lamina_doc["Config"][key], key
    d, lam = both(engines, "rm", "sized")
    assert d.returncode == lam.returncode == 0


def test_detached_exec_logs_stop(engines):
    for engine in engines:
        assert engine("run", "-d", "--name", "svc", "--network", "none", "busybox", "sh", "-c",
                      "echo up; sleep 0.3; echo warn >&2; sleep 300").returncode == 0
    for engine in engines:  # both lines logged, in that order (they go down two pipes)
        deadline = time.monotonic() + 10
        while "warn" not in engine("logs", "svc").stderr and time.monotonic() < deadline:
            time.sleep(0.1)
    for args in (["exec", "svc", "sh", "-c", "echo in; exit 4"], ["logs", "svc"],
                 ["logs", "--tail", "1", "svc"], ["exec", "-i", "svc", "cat"],
                 ["exec", "svc", "nosuch"], ["top", "svc", "-o", "comm"]):
        d, lam = both(engines, *args, input="stdin text\n" if "-i" in args else None)
        assert (d.returncode, d.stdout, d.stderr) == (lam.returncode, lam.stdout, lam.stderr), args
    d, lam = both(engines, "top", "svc", "-o", "pid,comm")
    assert d.returncode == lam.returncode == 0
    assert [line.split()[1:] for line in d.stdout.splitlines()] == [
        line.split()[1:] for line in lam.stdout.splitlines()]  # PID ... sh, sleep
    d, lam = both(engines, "rm", "svc")
    assert d.returncode == lam.returncode == 1
    # Docker 20.10 (the engine Debian has) words it "You cannot remove a running container
    # ID...": lamina answers as API 1.44's Docker (25+) does
    assert lam.stderr == ('Error response from daemon: cannot remove container "/svc": '
                          "container is running: stop the container before removing or force "
                          "remove\n")
    assert "force remove" in d.stderr
    d, lam = both(engines, "stop", "-t", "1", "svc")
    assert d.returncode == lam.returncode == 0
    d, lam = both(engines, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "svc")
    assert d.stdout == lam.stdout == "exited 137\n"
    both(engines, "rm", "svc")


def test_errors_as_docker_prints_them(engines):
    for args in (["inspect", "nosuch"], ["rm", "nosuch"], ["logs", "nosuch"],
                 ["stop", "nosuch"], ["exec", "nosuch", "true"], ["start", "nosuch"]):
        d, lam = both(engines, *args)
        assert (d.returncode, d.stderr) == (lam.returncode, lam.stderr), args


def test_bind_propagation_as_docker_answers(engines, tmp_path):
    """HostConfig.Binds with a propagation: the same inspect Mounts and Binds, the same refusal
    to start when the source is not on a shared mount, the same refusal of a volume with one."""
    src = str(tmp_path)
    docs, starts = [], []
    for engine in engines:
        made = engine("create", "--network", "none", "-v", f"{src}:/mnt:ro,rshared", "-v",
                      f"{src}:/plain", "busybox", "true")
        assert made.returncode == 0, made.stderr
        cid = made.stdout.strip()
        docs.append(engine("inspect", "-f", "{{json .Mounts}} {{json .HostConfig.Binds}}",
                           cid).stdout)
        starts.append(engine("start", cid))
        engine("rm", cid)
    mounts, binds = zip(*(doc.split(" ") for doc in docs))
    docker_mounts, lamina_mounts = (sorted(json.loads(m), key=lambda m: m["Destination"])
                                    for m in mounts)  # Docker's order is a Go map's
    # Binds too: the docker CLI gathers -v values in a Go map before it sends them
    assert docker_mounts == lamina_mounts and sorted(json.loads(binds[0])) == sorted(
        json.loads(binds[1]))
    assert [m["Propagation"] for m in lamina_mounts] == ["rshared", "rprivate"]
    assert starts[0].returncode == starts[1].returncode == 1
    same(starts[0].stderr, starts[1].stderr)
    assert "is not a shared mount" in starts[1].stderr
    d, lam = both(engines, "create", "-v", "vol:/m:rshared", "busybox", "true")
    assert (d.returncode, d.stderr) == (lam.returncode, lam.stderr) and d.returncode != 0


# -v values and --mount values whose inspect (Mounts, HostConfig.Binds, HostConfig.Mounts) must
# be Docker's: a -v's mode as written, in any order and combination, binds and named volumes
# in Binds, --mount ones only in HostConfig.Mounts
MOUNT_CASES = (["-v", "SRC:/a:z,slave"], ["-v", "SRC:/a:rslave,ro,z"], ["-v", "SRC:/a:rw"],
               ["-v", "SRC:/a:cached,ro"], ["-v", "SRC:/a"], ["-v", "vol-ro:/a:ro"],
               ["-v", "vol-nc:/a:nocopy,z"], ["-v", "vol-plain:/a"], ["-v", "/a"],
               ["--mount", "type=bind,src=SRC,dst=/a,readonly"],
               ["--mount", "type=bind,source=SRC,target=/a/,bind-propagation=rslave"],
               ["--mount", "type=volume,src=mnt-vol,dst=/a,ro"], ["--mount", "type=volume,dst=/a"],
               ["--mount", "type=bind,src=SRC,dst=/a", "-v", "SRC:/b:ro,Z"])
INSPECTED = "{{json .Mounts}} {{json .HostConfig.Binds}} {{json .HostConfig.Mounts}}"


def _mounts(text: str) -> list:
    """inspect's Mounts in a comparable form: by destination, a volume's source named from the
    store's volumes directory on, anonymous volumes' IDs masked."""
    mounts = json.loads(text)
    for m in mounts:
        if m["Type"] == "volume":
            m["Source"] = HEX.sub("<id>", m["Source"].rpartition("/volumes/")[2])
            m["Name"] = HEX.sub("<id>", m["Name"])
    return sorted(mounts, key=lambda m: m["Destination"])


def test_mount_modes_binds_and_mounts_as_docker_shows_them(engines, tmp_path):
    lamina = engines[1]
    src = str(tmp_path)
    for case in MOUNT_CASES:
        args = [a.replace("SRC", src) for a in case]
        shown = []
        for engine in engines:
            made = engine("create", "--network", "none", *args, "busybox", "true")
            assert made.returncode == 0, (case, made.stderr)
            shown.append(engine("inspect", "-f", INSPECTED, made.stdout.strip()).stdout.split(" "))
            engine("rm", "-v", made.stdout.strip())
        (docker_mounts, docker_binds, docker_host_mounts), (mounts, binds, host_mounts) = shown
        assert _mounts(docker_mounts) == _mounts(mounts), case
        # the docker CLI gathers -v values in a Go map before it sends them: Binds as sets
        docker_binds, binds = json.loads(docker_binds), json.loads(binds)
        assert (docker_binds is None) == (binds is None), case
        assert sorted(docker_binds or []) == sorted(binds or []), case
        assert json.loads(docker_host_mounts) == json.loads(host_mounts), case
        # lamina's own CLI on the served store shows the same
        cid = lamina.server.lamina("create", "--network", "none", *args, "busybox",
                                   "true").stdout.strip()
        doc = json.loads(lamina.server.lamina("inspect", cid).stdout)[0]
        lamina.server.lamina("rm", cid)
        assert _mounts(json.dumps(doc["Mounts"])) == _mounts(mounts), case
        assert sorted(doc["HostConfig"]["Binds"] or []) == sorted(binds or []), case
        assert doc["HostConfig"].get("Mounts") == json.loads(host_mounts), case


def test_mount_modes_docker_refuses_and_nocopy(engines, tmp_path):
    src = str(tmp_path)
    for mode in ("z,Z", "ro,", "ro,rw", "nocopy", "slave,private", "bogus"):
        d, lam = both(engines, "create", "-v", f"{src}:/a:{mode}", "busybox", "true")
        assert d.returncode == lam.returncode != 0 and d.stderr == lam.stderr, mode
    # nocopy: the volume starts empty instead of with the image's /etc
    d, lam = both(engines, "run", "--rm", "--network", "none", "-v", "nocopy-etc:/etc:nocopy",
                  "busybox", "cat", "/etc/passwd")
    assert d.returncode == lam.returncode == 1 and "No such file" in lam.stderr
    d, lam = both(engines, "run", "--rm", "--network", "none", "-v", "copied-etc:/etc",
                  "busybox", "cat", "/etc/passwd")
    assert d.returncode == lam.returncode == 0 and d.stdout == lam.stdout
    both(engines, "volume", "rm", "nocopy-etc", "copied-etc")


def test_rm_v_removes_what_docker_removes(engines):
    """``docker rm -v`` (``DELETE /containers/X?v=1``): the container's anonymous volumes go; a
    named one stays, and so does an anonymous one that another container names (whose own
    ``rm -v`` keeps it too); ``rm`` without ``-v`` keeps them all."""
    seen = []
    for engine in engines:
        assert engine("create", "--name", "vc", "--network", "none", "-v", "/a1", "-v", "/a2",
                      "-v", "vnamed:/n", "busybox", "true").returncode == 0
        mounts = {m["Destination"]: m["Name"]
                  for m in json.loads(engine("inspect", "vc").stdout)[0]["Mounts"]}
        a1, a2 = mounts["/a1"], mounts["/a2"]
        assert engine("create", "--name", "vsharer", "--network", "none", "-v", f"{a2}:/s",
                      "busybox", "true").returncode == 0
        assert engine("create", "--name", "vplain", "--network", "none", "-v", "/a3",
                      "busybox", "true").returncode == 0
        a3 = json.loads(engine("inspect", "vplain").stdout)[0]["Mounts"][0]["Name"]

        def exists(name, engine=engine):
            return engine("volume", "inspect", name).returncode == 0
        steps = []
        for args in (["rm", "-v", "vc"], ["rm", "-v", "vsharer"], ["rm", "vplain"],
                     ["rm", "-v", "vc"]):
            proc = engine(*args)
            steps.append((args, proc.returncode, proc.stdout, exists(a1), exists(a2),
                          exists(a3), exists("vnamed")))
        seen.append(steps)
        for name in (a2, a3, "vnamed"):
            engine("volume", "rm", name)
    docker_steps, lamina_steps = seen
    assert docker_steps == lamina_steps
    assert docker_steps[0][1:] == (0, "vc\n", False, True, True, True)  # what Docker did here


def _exec(sock: str, cmd: list[str], tty: bool) -> str:
    from tests.test_api import http

    status, _, out = http(sock, "POST", "/v1.41/containers/rz/exec",
                          json.dumps({"Cmd": cmd, "Tty": tty, "AttachStdout": True,
                                      "AttachStderr": True}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 201, out
    return json.loads(out)["Id"]


def _start_attached(sock: str, exec_id: str, tty: bool, out: list) -> None:
    """``POST /exec/ID/start`` hijacked, as the docker CLI sends it; appends what follows the
    101's headers once the server closes."""
    import socket

    body = json.dumps({"Detach": False, "Tty": tty}).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(sock)
        s.sendall(f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: d\r\n"
                  "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out.append(data.partition(b"\r\n\r\n")[2])


def _exec_ended(sock: str, exec_id: str) -> bool:
    """Whether the exec's inspect says it ended (Running false) within 10 s."""
    from tests.test_api import http

    for _ in range(100):
        if not json.loads(http(sock, "GET", f"/v1.41/exec/{exec_id}/json")[2])["Running"]:
            return True
        time.sleep(0.1)
    return False


def _resize_ended(sock: str, exec_id: str) -> tuple[int, str]:
    """What a resize of an ended exec answers once the engine has let it go: Docker's daemon
    answers with containerd's 500 ("cannot resize a stopped container", "... a deleted
    process") for a moment after the exec's inspect says it ended; its answer after that is
    the one compared (within 10 s)."""
    for _ in range(100):
        status, message, _ = _resize(sock, exec_id, "h=30&w=100")
        if not (status == 500 and "cannot resize a" in message):
            break
        time.sleep(0.1)
    return status, message


def _resize(sock: str, exec_id: str, size: str) -> tuple[int, str, float]:
    """(status, body, seconds) of ``POST /exec/ID/resize?SIZE``."""
    from tests.test_api import raw

    started = time.monotonic()
    reply = raw(sock, f"POST /v1.41/exec/{exec_id}/resize?{size} HTTP/1.1\r\nHost: d\r\n"
                      "Connection: close\r\n\r\n".encode(), timeout=30)
    top, _, out = reply.partition(b"\r\n\r\n")
    return int(top.split()[1]), out.decode().strip(), time.monotonic() - started


def test_exec_resize_before_start_as_docker_answers(engines):
    """A resize of an exec that has not started waits for its start (then 200, and a terminal
    gets the size), 10 s at the most (then 500); one after the exec ended is "no such exec";
    bad sizes are refused at once. Both engines in parallel threads (the 10 s wait once)."""
    import threading

    for engine in engines:
        assert engine("run", "-d", "--name", "rz", "--network", "none", "busybox", "sleep",
                      "300").returncode == 0

    def scenario(sock: str) -> dict:
        seen = {}
        for tty in (True, False):  # started 1 s after the resize was sent: it waits for it
            exec_id = _exec(sock, ["sh", "-c", "sleep 3; stty size"], tty)
            out: list = []
            threading.Timer(1.0, _start_attached, (sock, exec_id, tty, out)).start()
            status, message, took = _resize(sock, exec_id, "h=31&w=101")
            seen[f"later tty={tty}"] = (status, message, took > 0.8)
            for _ in range(150):
                if out:
                    break
                time.sleep(0.1)
            seen[f"later tty={tty} output"] = out[0].endswith(b"31 101\r\n") if out else out
            # once the engine has seen the end (Docker, asked at once, may still be handling it:
            # "cannot resize a stopped container", 500, was its answer once)
            seen[f"ended tty={tty} seen"] = _exec_ended(sock, exec_id)
            seen[f"ended tty={tty}"] = _resize_ended(sock, exec_id)
        exec_id = _exec(sock, ["true"], True)
        seen["bad"] = _resize(sock, exec_id, "h=abc&w=100")[:2]
        seen["missing"] = _resize(sock, exec_id, "w=100")[:2]
        status, message, took = _resize(sock, exec_id, "h=30&w=100")  # never started
        seen["never"] = (status, message, 9 < took < 15)
        exec_id = _exec(sock, ["/nonexistent"], True)  # a start that fails
        out = []
        threading.Timer(1.0, _start_attached, (sock, exec_id, True, out)).start()
        seen["failed start"] = _resize(sock, exec_id, "h=31&w=101")[:2]
        return seen

    docker_seen, lamina_seen = _in_parallel(engines, scenario)
    for engine in engines:
        engine("rm", "-f", "rz")
    assert lamina_seen == docker_seen
    assert docker_seen["later tty=True"] == (200, "", True)  # what Docker 20.10 did here
    assert docker_seen["never"] == (
        500, '{"message":"timeout waiting for exec session ready"}', True)
    assert docker_seen["ended tty=True"] == (404, '{"message":"no such exec"}')


def _in_parallel(engines, scenario) -> tuple:
    """(Docker's, lamina's) results of ``scenario(socket)``, run against both engines at once
    (their waits pass once); None for one that failed."""
    import threading

    results: dict = {}
    threads = [threading.Thread(target=lambda i=i, e=e: results.update({i: scenario(e.socket)}))
               for i, e in enumerate(engines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results.get(0), results.get(1)


def test_container_names_as_docker_checks_them(engines):
    """A container name is Docker's ``/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (so one character is too
    few, and any length will do), checked before "in use"; a rename checks it after the lookup
    of the container, naming the new name with a "/". The API's answers side by side (status,
    message), then lamina's own CLI, which must print Docker's message."""
    from urllib.parse import quote

    from tests.test_api import http

    docker, lamina = engines
    names = ["a", "/a", "7", "_ab", "-ab", "ab_", "/ab", "//ab", "a b", "a/b", "ab\n", "x\u00e9y",
             "taken", "/taken", "n" * 300]

    def post(engine, url, body=b""):
        status, _, out = http(engine.socket, "POST", url, body,
                              {"Content-Type": "application/json"})
        return status, json.loads(out) if out else {}

    seen: dict = {}
    for engine in engines:
        assert engine("create", "--name", "taken", "busybox", "true").returncode == 0
        answers = seen[engine] = []
        for i, name in enumerate(names):
            status, doc = post(engine, f"/v1.41/containers/create?name={quote(name)}",
                               json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode())
            answers.append(("create", name, status, HEX.sub("<id>", doc.get("message", ""))))
            if status == 201:
                assert engine("rm", doc["Id"]).returncode == 0
            assert engine("create", "--name", f"rn{i}", "busybox", "true").returncode == 0
            status, doc = post(engine, f"/v1.41/containers/rn{i}/rename?name={quote(name)}")
            answers.append(("rename", name, status, HEX.sub("<id>", doc.get("message", ""))))
        for url in ("/containers/nosuch/rename?name=_x", "/containers/rn0/rename",
                    "/containers/rn0/rename?name=rn0", "/containers/rn0/rename?name=/rn0"):
            answers.append(("rename", url, *post(engine, "/v1.41" + url)))
    assert seen[lamina] == seen[docker]
    invalid = "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    assert ("create", "a", 400, invalid.format("a")) in seen[docker]  # what Docker 20.10 said
    assert ("rename", "/a", 400, "Error when allocating new name: " + invalid.format("/a")) \
        in seen[docker]
    assert ("create", "n" * 300, 201, "") in seen[docker]
    assert next(a for a in seen[docker] if a[1] == "/taken")[:3] == ("create", "/taken", 409)

    def message(proc) -> tuple:
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ""
        return proc.returncode != 0, HEX.sub("<id>", first.removeprefix(
            "Error response from daemon: ").removeprefix("Error: "))

    for name in ("a", "/a", "_ab", "a b", "//ab", "/taken", "/rn2", "n" * 300):
        for args in (["create", "--name", name, "busybox", "true"], ["rename", "rn1", name]):
            d, lam = docker(*args), lamina.server.lamina(*args, check=False)
            assert message(d) == message(lam), args
        for engine in engines:  # rn1 again, if it took the name
            engine("rename", name, "rn1")
    for engine in engines:
        assert engine("rm", *engine("ps", "-aq").stdout.split()).returncode == 0


def _exec_scenario(sock: str) -> list:
    """What a second start of an exec answers (while it runs, after it ended; detached, or on
    an attached stream, multiplexed or raw) and what a detached exec's inspect says right after
    its start and after its end (a killed one, one that could not start, one with a User)."""
    from tests.test_api import http, raw

    def post(url: str, body: dict) -> tuple:
        status, _, out = http(sock, "POST", "/v1.41" + url, json.dumps(body).encode(),
                              {"Content-Type": "application/json"})
        return status, HEX.sub("<id>", out.decode())

    def create(cmd: list[str], **fields) -> str:
        status, _, out = http(sock, "POST", "/v1.41/containers/xs/exec", json.dumps(
            {"Cmd": cmd, **fields}).encode(), {"Content-Type": "application/json"})
        assert status == 201, out
        return json.loads(out)["Id"]

    def attached(exec_id: str, tty: bool) -> bytes:
        body = json.dumps({"Detach": False, "Tty": tty}).encode()
        reply = raw(sock, f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: d\r\n"
                          "Content-Type: application/json\r\nConnection: Upgrade\r\n"
                          f"Upgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body,
                    timeout=30)
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        kind = [line for line in lines if line.lower().startswith(b"content-type:")]
        return lines[0], kind, re.sub(HEX.pattern.encode(), b"<id>", body)

    def inspect(exec_id: str, wait: bool = False) -> dict:
        for _ in range(200):
            doc = json.loads(http(sock, "GET", f"/v1.41/exec/{exec_id}/json")[2])
            if not (wait and doc["Running"]):
                break
            time.sleep(0.1)
        return {**doc, "ID": "<id>", "ContainerID": "<id>", "Pid": doc["Pid"] > 0}

    seen = []
    for tty in (False, True):
        exec_id = create(["sh", "-c", "sleep 3; exit 7"], Tty=tty)
        seen += [post(f"/exec/{exec_id}/start", {"Detach": True, "Tty": tty}), inspect(exec_id),
                 post(f"/exec/{exec_id}/start", {"Detach": True}),
                 attached(exec_id, False), attached(exec_id, True),
                 inspect(exec_id, wait=True), post(f"/exec/{exec_id}/start", {"Detach": True}),
                 attached(exec_id, False)]
    for cmd, fields in ((["sh", "-c", "kill -9 $$"], {"User": "1234"}),
                        (["/nonexistent"], {})):
        exec_id = create(cmd, **fields)
        seen += [post(f"/exec/{exec_id}/start", {"Detach": True}), inspect(exec_id, wait=True),
                 post(f"/exec/{exec_id}/start", {"Detach": True})]
    return seen


def test_exec_started_twice_and_detached_as_docker_answers(engines):
    for engine in engines:
        assert engine("run", "-d", "--name", "xs", "--network", "none", "busybox", "sleep",
                      "300").returncode == 0
    seen, lamina_seen = _in_parallel(engines, _exec_scenario)
    for engine in engines:
        engine("rm", "-f", "xs")
    assert lamina_seen == seen
    # what Docker 20.10 answered here
    assert seen[1]["Running"] and seen[1]["ExitCode"] is None and seen[1]["Pid"]
    assert seen[2] == (409, '{"message":"Error: Exec command <id> is already running"}\n')
    upgraded = b"HTTP/1.1 101 UPGRADED", [b"Content-Type: application/vnd.docker.raw-stream"]
    assert seen[3] == (*upgraded, (b"\x01\x00\x00\x00\x00\x00\x00iError: Exec command <id> is "
                                   b"already running\r\n"))  # raw-stream named, framed all the same
    assert seen[4] == (*upgraded, b"Error: Exec command <id> is already running\r\n")
    assert (seen[5]["Running"], seen[5]["ExitCode"], seen[5]["Pid"]) == (False, 7, True)
    assert seen[6] == (409, '{"message":"Error: Exec command <id> has already run"}\n')
    assert seen[17]["ExitCode"] == 137 and seen[17]["ProcessConfig"]["user"] == "1234"
    assert seen[19][0] == 400 and (seen[20]["ExitCode"], seen[20]["Pid"]) == (126, False)
