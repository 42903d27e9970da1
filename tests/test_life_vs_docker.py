"""Restart policies, health checks, ``--init`` and ``exec -d -t`` through the docker CLI, against
``lamina serve`` and against Docker Engine side by side (Debian's docker.io on a private socket,
tests/apiserver.py): the same commands must leave the same documents (times and IDs aside)."""

import json
import os
import shutil
import time

import pytest

from .test_api_vs_docker import engines  # noqa: F401 - a private dockerd and lamina serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dockerd") is None,
                                reason="needs root and dockerd (scripts/setup installs docker.io)")


@pytest.fixture(scope="module")
def peers(engines):  # noqa: F811 - test_api_vs_docker's: (docker, lamina), each the docker CLI
    return engines


def inspect(engine, name: str) -> dict:
    return json.loads(engine("inspect", name).stdout)[0]


def until(engine, name: str, predicate, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = inspect(engine, name)
        if predicate(doc):
            return doc
        assert time.monotonic() < deadline, (name, doc["State"])
        time.sleep(0.1)


def test_health_documents(peers):
    since = str(int(time.time()) - 1)
    for engine in peers:
        assert engine("run", "-d", "--name", "hc", "--network", "none", "--restart", "on-failure:2",
                      "--health-cmd", "echo ok", "--health-interval", "200ms", "busybox", "sleep",
                      "300").returncode == 0
        assert engine("run", "-d", "--name", "sick", "--network", "none", "--health-cmd",
                      "exit 3", "--health-interval", "200ms", "--health-retries", "2", "busybox",
                      "sleep", "300").returncode == 0
    docs = [until(e, "hc", lambda d: d["State"].get("Health", {}).get("Status") == "healthy")
            for e in peers]
    sick = [until(e, "sick", lambda d: d["State"].get("Health", {}).get("Status") == "unhealthy")
            for e in peers]
    docker_doc, lamina_doc = docs
    for key in ("Config", "HostConfig"):
        assert docker_doc[key].get("Healthcheck") == lamina_doc[key].get("Healthcheck"), key
    assert docker_doc["HostConfig"]["RestartPolicy"] == lamina_doc["HostConfig"]["RestartPolicy"]
    assert docker_doc["RestartCount"] == lamina_doc["RestartCount"] == 0
    docker_health, lamina_health = docker_doc["State"]["Health"], lamina_doc["State"]["Health"]
    assert set(docker_health) == set(lamina_health)
    assert set(docker_health["Log"][0]) == set(lamina_health["Log"][0])
    assert (docker_health["Log"][-1]["ExitCode"], docker_health["Log"][-1]["Output"]) == \
        (lamina_health["Log"][-1]["ExitCode"], lamina_health["Log"][-1]["Output"]) == (0, "ok\n")
    assert docker_health["FailingStreak"] == lamina_health["FailingStreak"] == 0
    assert sick[0]["State"]["Health"]["Log"][-1]["ExitCode"] == \
        sick[1]["State"]["Health"]["Log"][-1]["ExitCode"] == 3
    assert sick[0]["State"]["Health"]["FailingStreak"] >= 2
    assert sick[1]["State"]["Health"]["FailingStreak"] >= 2
    outputs = []
    for engine in peers:
        outputs.append([
            engine("ps", "--filter", f"health={health}", "--format", "{{.Names}}").stdout
            for health in ("healthy", "unhealthy", "starting", "none")])
        status = engine("ps", "--filter", "name=hc", "--format", "{{.Status}}").stdout
        assert status.endswith(" (healthy)\n"), status
    assert outputs[0] == outputs[1] == ["hc\n", "sick\n", "", ""]
    refused = [e("ps", "--filter", "health=sick") for e in peers]
    assert (refused[0].returncode, refused[0].stderr) == (refused[1].returncode, refused[1].stderr)
    events = [e("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter",
                "container=hc", "--format", "{{.Action}}").stdout.splitlines() for e in peers]
    for wanted in ("exec_start: /bin/sh -c echo ok", "health_status: healthy"):
        assert wanted in events[0] and wanted in events[1], (wanted, events)
    for engine in peers:
        engine("rm", "-f", "hc", "sick")


def test_restart_documents_and_init(peers):
    for engine in peers:
        assert engine("run", "-d", "--name", "rs", "--network", "none", "--restart",
                      "on-failure:3", "busybox", "sh", "-c", "exit 1").returncode == 0
    docs = [until(e, "rs", lambda d: d["State"]["Status"] == "exited" and d["RestartCount"] == 3)
            for e in peers]
    for doc in docs:
        assert doc["State"]["ExitCode"] == 1 and doc["State"]["Restarting"] is False
        assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                      "MaximumRetryCount": 3}
    attached = [e("run", "--name", "fg", "--network", "none", "--restart", "on-failure:1",
                  "busybox", "sh", "-c", "echo hi; exit 3") for e in peers]
    assert (attached[0].returncode, attached[0].stdout) == \
        (attached[1].returncode, attached[1].stdout) == (3, "hi\n")  # the first run only
    for engine in peers:
        until(engine, "fg", lambda d: d["State"]["Status"] == "exited" and d["RestartCount"] == 1)
        engine("rm", "fg")
    refused = [e("create", "--restart", "always:2", "busybox", "true") for e in peers]
    assert refused[0].returncode == refused[1].returncode != 0
    assert "maximum retry count cannot be used with restart policy" in refused[0].stderr
    assert "maximum retry count cannot be used with restart policy" in refused[1].stderr
    init = [e("run", "--rm", "--init", "--network", "none", "busybox", "cat", "/proc/1/cmdline")
            for e in peers]
    assert init[0].stdout == init[1].stdout == "/sbin/docker-init\0--\0cat\0/proc/1/cmdline\0"
    for engine in peers:
        assert engine("run", "-d", "--name", "svc", "--network", "none", "--init", "busybox",
                      "sleep", "300").returncode == 0
        assert inspect(engine, "svc")["HostConfig"]["Init"] is True
        assert engine("exec", "-d", "-t", "svc", "sh", "-c",
                      "test -t 0 && touch /tty; test -t 0 || touch /notty").returncode == 0
    for engine in peers:
        deadline = time.monotonic() + 10
        while engine("exec", "svc", "ls", "/tty").returncode and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine("exec", "svc", "ls", "/tty", "/notty").stdout == "/tty\n"
        engine("rm", "-f", "svc", "rs")
