"""Life without a daemon: restart policies and health checks kept by the container's monitor,
``--init`` as PID 1, ``exec -d -t``; with real runc, through the real command."""

import itertools
import json
import os
import re
import shutil
import signal
import time

import pytest

from .conftest import needs_root
from .test_run import make_image, owners, store  # noqa: F401 - the store fixture


@pytest.fixture
def box(store):  # noqa: F811 - test_run's store: busybox, app; every container gone afterwards
    return store


pytestmark = [needs_root, pytest.mark.skipif(shutil.which("runc") is None,
                                             reason="needs runc (apt-get install -y runc)")]


def inspect(box, name: str) -> dict:
    """The container's inspect document, read in this process (the polls below would otherwise
    start an interpreter each time; ``lamina inspect`` prints this same document)."""
    from lamina import Engine

    engine = Engine(root=box.root, driver=box.driver)
    try:
        return engine.inspect_container(name)
    finally:
        engine.close()


def until(predicate, timeout: float = 20, what: str = "condition"):
    """Poll ``predicate`` (every 50 ms) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ps_status(box, name: str) -> str:
    rows = [json.loads(line) for line in box("ps", "-a", "--format", "json").stdout.splitlines()]
    return next(r["Status"] for r in rows if r["Names"] == name)


# ------------------------------------------------------------------------------ restart
def test_on_failure_runs_n_plus_one_times(box):
    box("run", "-d", "--restart", "on-failure:3", "--name", "ff", "busybox", "sh", "-c",
          "echo run; exit 1")
    doc = until(lambda: (d := inspect(box, "ff"))["State"]["Status"] == "exited" and d,
                what="the last exit")
    assert doc["RestartCount"] == 3
    assert json.loads(box("inspect", "ff").stdout)[0]["RestartCount"] == 3  # the command says so
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert doc["State"]["ExitCode"] == 1 and not doc["State"]["Restarting"]
    assert box("logs", "ff").stdout == "run\n" * 4
    assert ps_status(box, "ff").startswith("Exited (1) ")
    time.sleep(1)  # the policy is spent: it stays down
    assert inspect(box, "ff")["State"]["Status"] == "exited"
    # a success ends on-failure at once; a foreground run shows its first run only
    proc = box("run", "--restart", "on-failure", "--name", "ok", "busybox", "sh", "-c",
                 "echo once")
    assert proc.stdout == "once\n" and proc.returncode == 0
    until(lambda: inspect(box, "ok")["State"]["Status"] == "exited", what="ok to exit")
    assert inspect(box, "ok")["RestartCount"] == 0


def test_always_comes_back_after_sigkill_and_stop_ends_it(box):
    box("run", "-d", "--init", "--restart", "always", "--name", "aa", "busybox", "sleep", "300")
    first = inspect(box, "aa")["State"]["Pid"]
    assert first
    os.kill(first, signal.SIGKILL)  # from the host, not through lamina: restarted
    doc = until(lambda: (d := inspect(box, "aa"))["State"]["Pid"] not in (0, first) and d,
                what="the restart")
    assert doc["State"]["Status"] == "running" and doc["RestartCount"] == 1
    assert ps_status(box, "aa").startswith("Up ")
    box("stop", "aa")
    doc = inspect(box, "aa")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 143
    time.sleep(1)
    doc = inspect(box, "aa")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 1
    assert owners(box.root) == []  # its monitor is gone
    # start again: a fresh count, and a user's kill ends the policy too
    box("start", "aa")
    assert inspect(box, "aa")["RestartCount"] == 0
    box("kill", "aa")
    assert box("wait", "aa").stdout == "137\n"
    time.sleep(0.5)
    assert inspect(box, "aa")["State"]["Status"] == "exited"
    # in the foreground: the first run is shown; a signal to lamina is a kill, the end of it
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lamina", "--root", box.root, "--driver", box.driver, "run",
           "--init", "--restart", "always", "--name", "fg", "busybox", "sh", "-c",
           "echo up; exec sleep 300"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as fg:
        assert fg.stdout.readline() == "up\n"
        fg.send_signal(signal.SIGTERM)
        assert fg.wait(30) == 143
    time.sleep(0.5)
    doc = inspect(box, "fg")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0


def test_restarting_state_exec_refused_and_rm_f(box):
    box("run", "-d", "--restart", "always", "--name", "rr", "busybox", "false")
    # the waits double (0.1, 0.2, 0.4 ... s): soon one is long enough to be seen
    until(lambda: ps_status(box, "rr").startswith("Restarting (1) "), what="Restarting")
    doc = inspect(box, "rr")
    if doc["State"]["Restarting"]:  # (unless it was just started again)
        assert doc["State"]["Status"] == "restarting" and doc["State"]["Pid"] == 0
        assert doc["State"]["Running"] is True
    assert doc["RestartCount"] >= 1  # (the first wait, 0.1 s, can be the one seen)
    proc = box("ps", "--filter", "status=restarting", "--format", "{{.Names}}")
    assert proc.stdout in ("rr\n", "")  # "" only if it was just started again
    until(lambda: inspect(box, "rr")["RestartCount"] >= 2, what="a second restart")
    wait = box("wait", "rr")  # the next exit, as Docker's wait returns it
    assert wait.stdout == "1\n"
    cid = inspect(box, "rr")["Id"]
    box("rm", "-f", "rr")
    assert box("ps", "-a", "-q").stdout == ""
    assert owners(box.root) == []
    # each wait before a restart is at least Docker's: 0.1 s, doubled each time (lower bounds
    # only: a loaded machine makes them longer, never shorter)
    with open(os.path.join(box.root, "events.log")) as f:
        events = [e for e in map(json.loads, f) if e["Actor"]["ID"] == cid]
    times = [(e["Action"], e["timeNano"] / 1e9) for e in events if e["Action"] in ("die", "start")]
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(times) if (a[0], b[0]) == ("die", "start")]
    assert len(gaps) >= 2
    for number, gap in enumerate(gaps):
        assert gap >= 0.1 * 2 ** number - 0.01, gaps


def test_restart_refusals(box):
    for args, message in (
            (["--rm", "--restart", "always"], "Conflicting options: --restart and --rm"),
            (["--restart", "sometimes"], "invalid restart policy 'sometimes'"),
            (["--restart", "always:2"], ("maximum retry count cannot be used with restart "
                                         "policy 'always'")),
            (["--restart", "on-failure:x"], "maximum retry count must be an integer"),
            (["--health-interval", "-1s"], "--health-interval cannot be negative"),
            (["--no-healthcheck", "--health-cmd", "true"],
             "--no-healthcheck conflicts with --health-* options")):
        proc = box("run", *args, "busybox", "true", check=False)
        assert proc.returncode == 125, args
        assert proc.stderr.strip() == f"Error: {message}", args
    proc = box("create", "--restart", "always:2", "busybox", "true", check=False)
    assert proc.returncode == 125 and "cannot be used with restart policy" in proc.stderr
    box("create", "--restart", "always", "--init", "--health-cmd", "true", "busybox", "true")
    assert len(box("ps", "-a", "-q").stdout.split()) == 1  # nothing left by the refusals
    for bad, message in (("bogus=1", "invalid filter 'bogus'"),
                         ("health=sick", "Unrecognised filter value for health: sick")):
        proc = box("ps", "--filter", bad, check=False)
        assert (proc.returncode, proc.stderr) == (1, f"Error: {message}\n")


# ------------------------------------------------------------------------------ health
def health_of(box, name: str, status: str) -> dict:
    return until(lambda: (h := inspect(box, name)["State"].get("Health")) and
                 h["Status"] == status and h, what=f"{name} {status}")


def test_healthy_and_unhealthy(box):
    box("run", "-d", "--name", "good", "--health-cmd", "echo fine", "--health-interval",
          "200ms", "busybox", "sleep", "300")
    box("run", "-d", "--name", "bad", "--health-cmd", "echo sick; exit 1",
          "--health-interval", "200ms", "--health-retries", "3", "busybox", "sleep", "300")
    box("run", "-d", "--name", "later", "--health-cmd", "true", "--health-interval", "1h",
          "busybox", "sleep", "300")
    assert ps_status(box, "later").endswith(" (health: starting)")  # no probe before 1 h
    good = health_of(box, "good", "healthy")
    assert set(good) == {"Status", "FailingStreak", "Log"} and good["FailingStreak"] == 0
    entry = good["Log"][-1]
    assert set(entry) == {"Start", "End", "ExitCode", "Output"}
    assert entry["ExitCode"] == 0 and entry["Output"] == "fine\n"
    assert entry["Start"] <= entry["End"] and entry["End"].endswith("Z")
    bad = health_of(box, "bad", "unhealthy")
    assert bad["FailingStreak"] >= 3 and bad["Log"][-1]["ExitCode"] == 1
    assert bad["Log"][-1]["Output"] == "sick\n"
    until(lambda: len(inspect(box, "bad")["State"]["Health"]["Log"]) == 5, what="5 entries")
    time.sleep(0.5)
    assert len(inspect(box, "bad")["State"]["Health"]["Log"]) == 5  # the last five only
    assert ps_status(box, "good").endswith(" (healthy)")
    assert ps_status(box, "bad").endswith(" (unhealthy)")
    names = box("ps", "--filter", "health=unhealthy", "--format", "{{.Names}}").stdout
    assert names == "bad\n"
    assert box("ps", "--filter", "health=healthy", "-q").stdout.strip() == \
        inspect(box, "good")["Id"][:12]
    assert inspect(box, "good")["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "echo fine"], "Interval": 200_000_000}
    with open(os.path.join(box.root, "events.log")) as f:
        events = [json.loads(line) for line in f]
    actions = [(e["Actor"]["Attributes"]["name"], e["Action"]) for e in events]
    assert ("good", "health_status: healthy") in actions
    assert ("bad", "health_status: unhealthy") in actions
    assert ("bad", "health_status: healthy") not in actions
    assert ("good", "exec_start: /bin/sh -c echo fine") in actions  # each probe, as Docker's
    box("stop", "-t", "0", "good")  # the last health stays readable, as Docker keeps it
    assert inspect(box, "good")["State"]["Health"]["Status"] == "healthy"
    assert "(healthy)" not in ps_status(box, "good")


def test_image_healthcheck_timeout_and_none(box):
    from lamina import Engine

    engine = Engine(root=box.root)
    make_image(engine, "busybox", "checked:latest", Healthcheck={
        "Test": ["CMD", "sleep", "5"], "Interval": 200_000_000, "Timeout": 300_000_000,
        "Retries": 1})
    engine.close()
    box("run", "-d", "--name", "slow", "checked", "sleep", "300")
    box("run", "-d", "--name", "off", "--no-healthcheck", "checked", "sleep", "300")
    box("run", "-d", "--name", "quick", "--health-cmd", "true", "checked", "sleep", "300")
    slow = health_of(box, "slow", "unhealthy")
    assert slow["Log"][0]["ExitCode"] == -1
    assert slow["Log"][0]["Output"] == "Health check exceeded timeout (300ms)"
    health_of(box, "quick", "healthy")  # the image's interval, the user's command
    assert inspect(box, "quick")["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    off = inspect(box, "off")
    assert "Health" not in off["State"]  # NONE, with the image's timings merged in as Docker's
    assert off["Config"]["Healthcheck"]["Test"] == ["NONE"]
    assert ps_status(box, "off").startswith("Up ") and "(" not in ps_status(box, "off")


def test_health_start_period_and_restart_resets_it(box):
    box("run", "-d", "--name", "sp", "--restart", "always", "--health-cmd",
          "test -e /ready", "--health-interval", "100ms", "--health-retries", "1",
          "--health-start-period", "30s", "busybox", "sleep", "300")
    # failing probes inside the start period: still starting (each probe is a short-lived
    # process of the relay's: a loaded machine may take a second or two for two of them)
    health = until(lambda: (h := inspect(box, "sp")["State"]["Health"]) and len(h["Log"]) >= 2
                   and h, what="two probes")
    assert health["Status"] == "starting" and health["FailingStreak"] == 0
    assert health["Log"][-1]["ExitCode"] == 1
    box("exec", "sp", "touch", "/ready")
    health_of(box, "sp", "healthy")
    os.kill(inspect(box, "sp")["State"]["Pid"], signal.SIGKILL)
    until(lambda: inspect(box, "sp")["RestartCount"] == 1, what="the restart")
    assert inspect(box, "sp")["State"]["Health"]["Status"] in ("starting", "healthy")


def journal(box) -> list[dict]:
    with open(os.path.join(box.root, "events.log")) as f:
        return [json.loads(line) for line in f]


def test_health_output_is_kept_as_dockers_and_each_probe_is_an_exec(box):
    # 5000 bytes after a line: the first 4096 bytes kept, "..." after them (Docker's
    # limitedBuffer); a byte that is not UTF-8 becomes U+FFFD, as Go's JSON writes it
    box("run", "-d", "--name", "loud", "--health-cmd",
        r"printf 'x\377y\n'; head -c 5000 /dev/zero | tr '\0' a", "--health-interval", "200ms",
        "busybox", "sleep", "300")
    entry = health_of(box, "loud", "healthy")["Log"][-1]
    assert entry["ExitCode"] == 0
    assert entry["Output"] == "x\ufffdy\n" + "a" * (4096 - 4) + "..."
    box("run", "-d", "--name", "short", "--health-cmd", "printf 1234", "--health-interval",
        "200ms", "busybox", "sleep", "300")
    assert health_of(box, "short", "healthy")["Log"][-1]["Output"] == "1234"  # no "..."
    cid = inspect(box, "loud")["Id"]
    mine = [e for e in journal(box) if e["Actor"]["ID"] == cid]
    line = "/bin/sh -c printf 'x\\377y\\n'; head -c 5000 /dev/zero | tr '\\0' a"
    created = [e for e in mine if e["Action"] == f"exec_create: {line}"]
    assert created, [e["Action"] for e in mine]
    exec_id = created[0]["Actor"]["Attributes"]["execID"]
    assert re.fullmatch("[0-9a-f]{64}", exec_id)
    same = [(e["Action"], e["Actor"]["Attributes"]) for e in mine
            if e["Actor"]["Attributes"].get("execID") == exec_id]
    assert same == [(f"exec_create: {line}", {"image": "busybox", "name": "loud",
                                               "execID": exec_id}),
                    (f"exec_start: {line}", {"image": "busybox", "name": "loud",
                                              "execID": exec_id}),
                    ("exec_die", {"image": "busybox", "name": "loud", "execID": exec_id,
                                  "exitCode": "0"})]
    assert [e["Action"] for e in mine if e["Action"].startswith("health_status")] == \
        ["health_status: healthy"]
    assert all(e["timeNano"] // 1_000_000_000 == e["time"] for e in mine)


def test_health_timeout_kills_the_probe(box):
    box("run", "-d", "--name", "hung", "--health-cmd", "echo started; sleep 77",
        "--health-timeout", "300ms", "--health-interval", "100ms", "--health-retries", "2",
        "busybox", "sleep", "300")
    hung = until(lambda: (h := inspect(box, "hung")["State"]["Health"])["Status"] == "unhealthy"
                 and len(h["Log"]) >= 3 and h, what="three timed-out probes")
    assert hung["FailingStreak"] >= 2
    assert {(e["ExitCode"], e["Output"]) for e in hung["Log"]} == {
        (-1, "Health check exceeded timeout (300ms)")}
    # each probe's process was killed at its timeout: at most the one under way is left
    sleeping = box("exec", "hung", "sh", "-c", "ps -o args | grep -c '^sleep 77'",
                   check=False).stdout
    assert int(sleeping) <= 1
    dies = [e["Actor"]["Attributes"]["exitCode"] for e in journal(box)
            if e["Action"] == "exec_die" and e["Actor"]["Attributes"]["name"] == "hung"]
    assert dies and set(dies) == {"-1"}
    # a probe whose background child holds its output open: runc's exec waits for the output's
    # end, so it times out too (and the next probes still run)
    box("run", "-d", "--name", "held", "--health-cmd", "sleep 78 & echo ok", "--health-timeout",
        "300ms", "--health-interval", "100ms", "--health-retries", "2", "busybox", "sleep", "300")
    held = until(lambda: (h := inspect(box, "held")["State"]["Health"])["Status"] == "unhealthy"
                 and len(h["Log"]) >= 2 and h, what="two timed-out probes")
    assert {e["ExitCode"] for e in held["Log"]} == {-1}


def test_health_failures_count_once_the_start_period_is_over(box):
    box("run", "-d", "--name", "late", "--health-cmd", "false", "--health-interval", "100ms",
        "--health-retries", "1", "--health-start-period", "1500ms", "busybox", "sleep", "300")
    health_of(box, "late", "unhealthy")
    doc = inspect(box, "late")
    from lamina.image import parse_rfc3339

    started = parse_rfc3339(doc["State"]["StartedAt"])
    [changed] = [e for e in journal(box) if e["Action"].startswith("health_status")
                 and e["Actor"]["Attributes"]["name"] == "late"]
    assert changed["Action"] == "health_status: unhealthy"
    assert changed["timeNano"] / 1e9 >= started + 1.5  # no failure counted before


def test_health_probe_that_cannot_start(box):
    from lamina import Engine

    engine = Engine(root=box.root)
    make_image(engine, "busybox", "missing:latest", Healthcheck={
        "Test": ["CMD", "/no/such/probe"], "Interval": 100_000_000, "Retries": 1})
    engine.close()
    box("run", "-d", "--name", "missing", "missing", "sleep", "300")
    entry = health_of(box, "missing", "unhealthy")["Log"][-1]
    assert entry["ExitCode"] == -1 and "/no/such/probe" in entry["Output"], entry
    actions = {e["Action"] for e in journal(box) if e["Actor"]["Attributes"]["name"] == "missing"}
    assert "exec_create: /no/such/probe " in actions  # Docker's: the executable, " ", the args


# ------------------------------------------------------------------------------ init, exec
def zombies(box, name: str) -> int:
    proc = box("exec", name, "sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l")
    return int(proc.stdout)


def test_init_reaps_zombies(box):
    orphan = "(sleep 0.1 &); exec sleep 300"  # an orphan that PID 1 must reap
    box("run", "-d", "--name", "plain", "busybox", "sh", "-c", orphan)
    box("run", "-d", "--init", "--name", "reaped", "busybox", "sh", "-c", orphan)
    time.sleep(0.8)
    assert zombies(box, "plain") == 1  # sleep 300 as PID 1 never waits
    assert zombies(box, "reaped") == 0
    pid1 = box("exec", "reaped", "cat", "/proc/1/cmdline").stdout.split("\0")
    assert pid1[:3] == ["/sbin/docker-init", "--", "sh"]
    doc = inspect(box, "reaped")
    assert doc["HostConfig"]["Init"] is True and doc["Path"] == "sh"
    assert "Init" not in inspect(box, "plain")["HostConfig"]
    box("stop", "reaped")  # tini passes SIGTERM on: no 10 s wait for SIGKILL
    assert inspect(box, "reaped")["State"]["ExitCode"] == 143


def test_exec_detached_with_tty(box):
    box("run", "-d", "--name", "tt", "busybox", "sleep", "300")
    script = "if test -t 0; then echo tty > /{0}; else echo none > /{0}; fi; sleep 1; echo end >> /{0}"
    box("exec", "-d", "-t", "tt", "sh", "-c", script.format("with"))
    box("exec", "-d", "tt", "sh", "-c", script.format("without"))
    until(lambda: "end" in box("exec", "tt", "cat", "/with", "/without", check=False).stdout
          .split("\n", 2)[-1], what="both markers")
    time.sleep(0.2)
    assert box("exec", "tt", "cat", "/with").stdout == "tty\nend\n"  # outlived its caller
    assert box("exec", "tt", "cat", "/without").stdout == "none\nend\n"


# ------------------------------------------------------------------------------ the rules alone
def test_policy_and_backoff_rules():
    from lamina.errors import InvalidArgument
    from lamina.runtime.restart import Backoff, RestartPolicy

    on_failure = RestartPolicy.parse("on-failure:2")
    assert str(on_failure) == "on-failure:2" and on_failure.to_api() == {
        "Name": "on-failure", "MaximumRetryCount": 2}
    assert [on_failure.should_restart(1, n, False) for n in range(3)] == [True, True, False]
    assert not on_failure.should_restart(0, 0, False)
    assert RestartPolicy.parse("on-failure").should_restart(1, 1000, False)
    for name in ("always", "unless-stopped"):
        assert RestartPolicy.parse(name).should_restart(0, 1000, False)
        assert not RestartPolicy.parse(name).should_restart(137, 0, True)  # stopped by the user
    assert not RestartPolicy.parse(None).enabled
    with pytest.raises(InvalidArgument, match="cannot be negative"):
        RestartPolicy.of("on-failure", -1)
    backoff = Backoff()
    assert [backoff.next(0.5) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff.next(10.0) == 0.1  # it ran 10 s: from the start again
    assert max(backoff.next(0) for _ in range(20)) == 60.0


def test_health_rules():
    from lamina.errors import InvalidArgument
    from lamina.runtime import health

    probe = health.Probe(["true"], {"Retries": 2, "StartPeriod": 10 * 10**9})
    state = health.initial({"Log": [{"old": 1}]})
    assert state == {"Status": "starting", "FailingStreak": 0, "Log": [{"old": 1}]}

    def result(code, start):
        return {"entry": {"ExitCode": code}, "start": start}

    assert health.record(state, probe, result(1, 105.0), started=100.0) is None  # start period
    assert state["FailingStreak"] == 0
    assert health.record(state, probe, result(1, 111.0), started=100.0) is None
    assert health.record(state, probe, result(1, 112.0), started=100.0) == "unhealthy"
    assert health.record(state, probe, result(0, 113.0), started=100.0) == "healthy"
    assert state["FailingStreak"] == 0 and len(state["Log"]) == 5  # the last five
    assert health.record(state, probe, result(1, 200.0), started=100.0) is None  # streak 1 of 2
    assert health.from_flags(cmd="true", interval="1m30s") == {
        "Test": ["CMD-SHELL", "true"], "Interval": 90 * 10**9}
    assert health.from_flags() is None and health.from_flags(disabled=True) == {"Test": ["NONE"]}
    assert health.merge({"Test": ["CMD", "x"], "Interval": 5, "Retries": 2},
                        {"Test": [], "Timeout": 7}) == {
        "Test": ["CMD", "x"], "Timeout": 7, "Interval": 5, "Retries": 2}
    with pytest.raises(InvalidArgument, match="cannot be less than 1ms"):
        health.validate({"Test": ["CMD", "true"], "Interval": 5})
    assert health.probe_of('{"Test": ["CMD-SHELL", "a b"]}', {"Shell": ["/bin/ash", "-c"]}).argv \
        == ["/bin/ash", "-c", "a b"]
    assert health.timed_out(0.3) == "Health check exceeded timeout (300ms)"
