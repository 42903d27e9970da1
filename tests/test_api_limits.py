"""Limits, privileges, OOM kills, ``update``, ``pause``/``unpause`` and ``stats`` through the
Engine API: the docker CLI against ``lamina serve`` and against Docker Engine side by side (the
same commands, the same answers), and the API's documents read directly."""

import json
import os
import shutil

import pytest

from tests.apiserver import docker_clis

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dockerd") is None,
                                reason="needs root and dockerd (scripts/setup installs docker.io)")

HOG = 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo survived'
LIMITS = ["--memory", "32m", "--memory-swap", "64m", "--memory-reservation", "16m", "--cpus",
          "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "20", "--ulimit",
          "nofile=100:200", "--ulimit", "nproc=50", "--cap-add", "sys_admin", "--cap-drop",
          "CAP_CHOWN", "--security-opt", "no-new-privileges", "--security-opt",
          "seccomp=unconfined", "--group-add", "10", "--device", "/dev/fuse:/dev/myfuse:r",
          "--shm-size", "128m"]
FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpusetCpus",
          "PidsLimit", "Ulimits", "CapAdd", "CapDrop", "SecurityOpt", "GroupAdd", "Privileged",
          "Devices", "MaskedPaths", "ReadonlyPaths", "ShmSize")


@pytest.fixture(scope="module")
def engines(busybox_tar):
    """(docker, lamina): each a function running the docker CLI against one engine."""
    with docker_clis("lamina-limits-", busybox_tar) as engines:
        yield engines


def inspect(docker, name: str) -> dict:
    return json.loads(docker("inspect", name).stdout)[0]


def test_limits_and_privileges_are_inspected_as_docker_shows_them(engines):
    for flags in (LIMITS, ["--memory", "32m"], ["--privileged"], []):
        docs = []
        for docker in engines:
            cid = docker("create", "--network", "none", *flags, "busybox", "true").stdout.strip()
            docs.append(inspect(docker, cid))
            docker("rm", cid)
        expected, got = ({k: d["HostConfig"][k] for k in FIELDS} for d in docs)
        if flags == ["--privileged"]:
            expected["SecurityOpt"] = None  # Docker 20.10 adds SELinux's label=disable
        if "--ulimit" not in flags:  # bench/peers.py's dockerd has a --default-ulimit
            expected["Ulimits"] = None
        assert got == expected, flags
        assert docs[1]["State"]["OOMKilled"] is False


def test_out_of_memory_and_bad_limits_as_docker(engines):
    for docker in engines:
        proc = docker("run", "--name", "hog", "--network", "none", "--memory", "32m", "busybox",
                      "sh", "-c", HOG)
        assert proc.returncode == 137 and "survived" not in proc.stdout
        state = inspect(docker, "hog")["State"]
        assert (state["OOMKilled"], state["ExitCode"]) == (True, 137)
        docker("rm", "hog")
    for flags in (["--memory", "1k"], ["--cpus", "64"], ["--memory", "10m", "--memory-swap", "5m"],
                  ["--cap-add", "NOPE"]):
        answers = [docker("run", "--rm", "--network", "none", *flags, "busybox", "true")
                   for docker in engines]
        assert [(a.returncode, a.stderr) for a in answers] == [
            (answers[0].returncode, answers[0].stderr)] * 2, flags
        assert answers[0].returncode == 125
    for docker in engines:
        assert docker("ps", "-a", "-q").stdout == ""


def test_seccomp_and_capabilities_through_the_api(engines):
    for docker in engines:
        denied = docker("run", "--rm", "--network", "none", "busybox", "linux32", "-R", "true")
        assert denied.returncode == 1  # Docker's profile says EPERM, Podman's ENOSYS
        assert docker("run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined",
                      "busybox", "linux32", "-R", "true").returncode == 0
        chown = docker("run", "--rm", "--network", "none", "--cap-drop", "chown", "busybox", "sh",
                       "-c", "touch /f; chown 1 /f")
        assert chown.returncode == 1 and "Operation not permitted" in chown.stderr
        groups = docker("run", "--rm", "--network", "none", "--group-add", "1234", "busybox",
                        "id", "-G").stdout.split()
        assert "1234" in groups


def test_pause_update_and_stats_as_docker(engines):
    outputs = []
    for docker in engines:
        docker("run", "-d", "--name", "svc", "--network", "none", "--memory", "32m",
               "--pids-limit", "20", "busybox", "sleep", "300")
        assert docker("pause", "svc").stdout == "svc\n"
        status = docker("ps", "--format", "{{.State}} {{.Status}}").stdout
        state = inspect(docker, "svc")["State"]
        again = docker("pause", "svc")
        assert docker("unpause", "svc").stdout == "svc\n"
        not_paused = docker("unpause", "svc")
        assert docker("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "30",
                      "--restart", "on-failure:42", "svc").stdout == "svc\n"
        host = inspect(docker, "svc")["HostConfig"]
        stats = json.loads(docker("stats", "--no-stream", "--format", "{{json .}}", "svc").stdout)
        outputs.append((status.split(" ", 1)[0], status.rstrip().endswith("(Paused)"),
                        state["Status"], state["Paused"], state["Running"], again.returncode,
                        not_paused.returncode, host["Memory"], host["MemorySwap"],
                        host["PidsLimit"], host["RestartPolicy"], stats["MemUsage"].split(" / ")[1],
                        stats["PIDs"],
                        stats["Name"]))
        docker("rm", "-f", "svc")
    assert outputs[1] == outputs[0]
    assert outputs[0][:5] == ("paused", True, "paused", True, True)
