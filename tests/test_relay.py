"""The small resident monitor of a detached container (``lamina-relay``, runtime/relay.c): what
stays of the monitor while the process runs, what it logs, and the Python monitor it becomes
again at the exit (records, restarts); through the real command, runc and the C compiler."""

import json
import os
import re
import shutil
import time

import pytest

from .conftest import needs_root
from .test_run import owners, store  # noqa: F401 - the fixture

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("runc") is None,
                                             reason="needs runc (apt-get install -y runc)")]


def resident(pid: int) -> tuple[str, int, list[int]]:
    """(the name of the process's executable, its RSS in KiB, its children's PIDs)."""
    exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    return exe, rss, children


def became_relay(monitor: int) -> bool:
    """Whether the monitor ``monitor`` is (or soon becomes) the relay: a monitor stays Python
    for a moment after the start, in case the process ends at once (monitor.GRACE)."""
    deadline = time.monotonic() + 10
    while not resident(monitor)[0].startswith("lamina-relay"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def inspect(lamina, name: str, template: str) -> str:
    return lamina("inspect", "-f", template, name).stdout.strip()


def test_a_detached_container_is_kept_by_the_relay_alone(store):  # noqa: F811
    store("run", "-d", "--network", "none", "--name", "quiet", "busybox", "sleep", "100")
    [monitor] = owners(store.root)
    assert became_relay(monitor)
    _, rss, children = resident(monitor)
    assert rss < 4096, rss  # KiB: no interpreter, no runc
    assert children == [int(inspect(store, "quiet", "{{.State.Pid}}"))]  # the process, no runc
    store("kill", "quiet")
    assert store("wait", "quiet").stdout == "137\n"
    assert inspect(store, "quiet", "{{.State.Status}} {{.State.ExitCode}}") == "exited 137"
    with open("/proc/self/mountinfo") as f:
        assert store.root not in f.read()  # the monitor unmounted the root at the exit


def test_the_log_keeps_every_byte_and_line(store):  # noqa: F811
    # a quote, a backslash, a tab, a control byte, UTF-8, a byte that is not UTF-8, a line
    # without its newline
    script = r'printf "a\"b\\\\c\td\001e caf\303\251 \377\nlast"; printf "E\n" >&2'
    store("run", "-d", "--network", "none", "--name", "bytes", "busybox", "sh", "-c", script)
    assert store("wait", "bytes").stdout == "0\n"
    proc = store("logs", "bytes", input=b"")  # bytes in and out
    assert proc.stdout == b'a"b\\c\td\x01e caf\xc3\xa9 \xff\nlast' and proc.stderr == b"E\n"
    cid = inspect(store, "bytes", "{{.Id}}")
    with open(os.path.join(store.root, "containers", cid, "container.log"), "rb") as f:
        entries = [json.loads(line) for line in f]
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stdout"] == [
        ("stdout", 'a"b\\c\td\x01e café \udcff\n'), ("stdout", "last")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", e["time"])
               for e in entries)


def test_restarts_go_through_the_relay_with_one_owner(store):  # noqa: F811
    store("run", "-d", "--network", "none", "--name", "again", "--restart", "on-failure:2", "busybox", "sh", "-c",
          "echo run; sleep 0.3; exit 3")
    [monitor] = owners(store.root)
    assert became_relay(monitor)
    deadline = time.monotonic() + 20
    while inspect(store, "again", "{{.State.Status}}") != "exited":
        assert time.monotonic() < deadline
        assert owners(store.root) in ([], [monitor])  # the same process owns every run
        time.sleep(0.1)
    assert inspect(store, "again", "{{.RestartCount}} {{.State.ExitCode}}") == "2 3"
    assert store("logs", "again").stdout == "run\nrun\nrun\n"


def test_a_stop_during_the_backoff_ends_the_policy(store):  # noqa: F811
    store("run", "-d", "--network", "none", "--name", "looping", "--restart", "always", "busybox", "sh", "-c",
          "sleep 0.2; exit 1")
    time.sleep(1.5)
    store("stop", "-t", "1", "looping")
    assert inspect(store, "looping", "{{.State.Status}}") == "exited"
    count = inspect(store, "looping", "{{.RestartCount}}")
    time.sleep(1)
    assert inspect(store, "looping", "{{.RestartCount}} {{.State.Status}}") == f"{count} exited"
    assert owners(store.root) == []


def test_stdin_of_a_detached_i_container_stays_open_for_attach(store):  # noqa: F811
    store("run", "-d", "-i", "--network", "none", "--name", "reader", "busybox", "sh", "-c",
          "read line; echo got $line")
    [monitor] = owners(store.root)
    assert became_relay(monitor)
    time.sleep(0.3)
    assert inspect(store, "reader", "{{.State.Status}}") == "running"  # stdin has not ended
    cid = inspect(store, "reader", "{{.Id}}")
    fifo = os.path.join(store.root, "containers", cid, "stdin")
    with open(fifo, "w") as f:  # what attach writes into
        f.write("hello\n")
    assert store("wait", "reader").stdout == "0\n"
    assert store("logs", "reader").stdout == "got hello\n"


def test_published_ports_stay_taken_until_the_exit(store):  # noqa: F811
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    publish = ["-p", f"127.0.0.1:{port}:80"]
    store("run", "-d", "--name", "web", *publish, "busybox", "sleep", "100")
    [monitor] = owners(store.root)
    assert became_relay(monitor)
    proc = store("run", "-d", "--name", "web2", *publish, "busybox", "true", check=False)
    assert proc.returncode == 125 and "port is already allocated" in proc.stderr
    store("kill", "web")
    assert store("wait", "web").stdout == "137\n"
    store("rm", "web2", check=False)  # left created, as Docker leaves it
    store("run", "-d", "--name", "web3", *publish, "busybox", "true")  # free again
    assert store("wait", "web3").stdout == "0\n"


def test_a_row_read_before_the_owner_recorded_its_exit_is_not_a_dead_owner(store):  # noqa: F811
    # What `inspect` does while a monitor records the last exit and leaves: the row it read
    # says running, and by the time it looks, the owner is gone. The exit the owner recorded
    # stands; a dead owner's unknown exit (255) is only for an owner that recorded nothing.
    from lamina import Engine
    from lamina.processes import start_time
    from lamina.runtime.ownership import refresh

    store("run", "-d", "--network", "none", "--name", "brief", "busybox", "sleep", "100")
    engine = Engine(root=store.root)
    try:
        stale = engine.container_store.get("brief")
        assert stale["state"] == "running" and stale["monitor_pid"]
        store("kill", "brief")
        assert store("wait", "brief").stdout == "137\n"
        deadline = time.monotonic() + 10
        while start_time(stale["monitor_pid"]) is not None:  # None: gone, or a zombie
            assert time.monotonic() < deadline
            time.sleep(0.05)
        row = refresh(engine.container_store, stale)
        assert (row["state"], row["exit_code"]) == ("exited", 137)
    finally:
        engine.close()


def test_a_health_checked_container_is_kept_by_the_relay_too(store):  # noqa: F811
    store("run", "-d", "--network", "none", "--name", "checked", "--health-cmd",
          "test -e /ok && echo fine", "--health-interval", "100ms", "--health-retries", "2",
          "busybox", "sleep", "100")
    [monitor] = owners(store.root)

    def health() -> dict:
        return json.loads(inspect(store, "checked", "{{json .State.Health}}"))

    def wait_for(status: str) -> dict:
        deadline = time.monotonic() + 30
        while (now := health())["Status"] != status:
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        return now

    unhealthy = wait_for("unhealthy")
    assert unhealthy["FailingStreak"] >= 2 and unhealthy["Log"][-1]["ExitCode"] == 1
    exe, rss, _ = resident(monitor)  # between probes or during one: the relay all along
    assert exe.startswith("lamina-relay"), exe
    assert rss < 4096, rss
    store("exec", "checked", "touch", "/ok")
    healthy = wait_for("healthy")
    assert healthy["FailingStreak"] == 0 and healthy["Log"][-1]["Output"] == "fine\n"
    assert owners(store.root) == [monitor]
    # the relay runs each probe as the runtime's exec itself: no interpreter starts for one
    # (every 100 ms, a probe is under way within seconds however loaded the machine; a child
    # seen between its fork and its exec is still the relay; the container's process is the
    # relay's child too)
    process = int(inspect(store, "checked", "{{.State.Pid}}"))
    seen, deadline = set(), time.monotonic() + 20
    while "runc" not in seen and time.monotonic() < deadline:
        for child in set(resident(monitor)[2]) - {process}:
            try:
                seen.add(os.path.basename(os.readlink(f"/proc/{child}/exe")))
            except OSError:
                pass  # ended meanwhile
    assert "runc" in seen and all(name == "runc" or name.startswith("lamina-relay")
                                  for name in seen), seen
    store("kill", "checked")
    assert store("wait", "checked").stdout == "137\n"
    assert inspect(store, "checked", "{{.State.Status}}") == "exited"
    assert health()["Status"] == "healthy"  # the last health stays readable, as Docker's
    # the relay's health (health.json, since the start) is folded into the run state at the exit
    bundle = os.path.join(store.root, "containers", inspect(store, "checked", "{{.Id}}"))
    with open(os.path.join(bundle, "runstate.json")) as f:
        assert json.load(f)["Health"] == health()
    assert not os.path.exists(os.path.join(bundle, "health.json"))
    assert owners(store.root) == []


def test_a_process_that_ends_at_once_keeps_its_output_exit_and_removal(store):  # noqa: F811
    # `run --rm IMAGE true` through a detached monitor (as the Engine API starts every
    # container): the monitor sees the exit within its grace (monitor.GRACE), copies the output
    # and records the exit itself, as the relay and the exit command it starts would have
    store("run", "-d", "--network", "none", "--name", "quick", "busybox", "sh", "-c",
          "echo out; echo err >&2; exit 5")
    assert store("wait", "quick").stdout == "5\n"
    proc = store("logs", "quick")
    assert (proc.stdout, proc.stderr) == ("out\n", "err\n")
    assert inspect(store, "quick", "{{.State.Status}} {{.State.ExitCode}}") == "exited 5"
    cid = inspect(store, "quick", "{{.Id}}")
    with open(os.path.join(store.root, "containers", cid, "container.log"), "rb") as f:
        assert [json.loads(line)["stream"] for line in f] == ["stdout", "stderr"]
    store("run", "-d", "--rm", "--network", "none", "--name", "gone", "busybox", "true")
    deadline = time.monotonic() + 10
    while store("ps", "-aq", "--filter", "name=gone").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with open("/proc/self/mountinfo") as f:
        assert store.root not in f.read()
