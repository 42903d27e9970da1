"""Resource limits, privileges and the verbs on a running container's cgroup (issue 12, items 3
and 4): ``--memory``... ``--ulimit`` through runc into the real cgroup (v1, v2 or this host's
hybrid), OOM kills as Docker reports them, ``stats``, ``update``, ``pause``/``unpause``, the
default seccomp profile (Podman's, converted at run time), capabilities and ``--privileged``."""

import json
import os
import re
import shutil

import pytest

from .conftest import Lamina, needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("runc") is None,
                                             reason="needs runc (apt-get install -y runc)")]

HOG = 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo survived'  # 100 MB in a shell variable


@pytest.fixture
def store(store_root, busybox_tar):
    lamina = Lamina(store_root, "overlay2")
    lamina("import", busybox_tar, "busybox")
    yield lamina
    for cid in lamina("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        lamina("rm", "-f", cid, check=False)


def inspect(store, name: str) -> dict:
    return json.loads(store("inspect", name).stdout)[0]


def cgroup(store, name: str) -> dict[str, str]:
    """The running container's cgroup directories (lamina.runtime.cgroups)."""
    from lamina.runtime.cgroups import cgroup_dirs

    dirs = cgroup_dirs(inspect(store, name)["State"]["Pid"])
    assert dirs
    return dirs


def read(dirs: dict, v1: tuple[str, str], v2: str) -> str:
    """A cgroup file: the v1 controller's (controller, file) where this host has v1, else v2."""
    controller, name = v1
    path = os.path.join(dirs[controller], name) if controller in dirs else os.path.join(dirs[""], v2)
    with open(path) as f:
        return f.read().strip()


def test_out_of_memory_is_exit_137_and_oom_killed(store):
    proc = store("run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c", HOG,
                 check=False)
    assert proc.returncode == 137 and "survived" not in proc.stdout
    doc = inspect(store, "hog")
    assert doc["State"]["OOMKilled"] is True and doc["State"]["ExitCode"] == 137
    assert doc["HostConfig"]["Memory"] == 32 * 1024 * 1024
    assert doc["HostConfig"]["MemorySwap"] == 64 * 1024 * 1024  # Docker's default: twice
    assert store("run", "--name", "fits", "--memory", "32m", "busybox", "true").returncode == 0
    assert inspect(store, "fits")["State"]["OOMKilled"] is False


def test_pids_limit_stops_a_fork_loop_and_the_container_survives(store):
    store("run", "-d", "--name", "forks", "--pids-limit", "20", "busybox", "sleep", "300")
    assert read(cgroup(store, "forks"), ("pids", "pids.max"), "pids.max") == "20"
    proc = store("exec", "forks", "sh", "-c",
                 "for i in $(seq 40); do sleep 2 & done; echo all-forked", check=False)
    assert proc.returncode != 0 and "can't fork" in proc.stderr
    assert "all-forked" not in proc.stdout
    assert inspect(store, "forks")["State"]["Running"] is True
    assert inspect(store, "forks")["HostConfig"]["PidsLimit"] == 20


def test_cpus_shares_cpuset_and_ulimits_reach_the_cgroup_and_the_process(store):
    store("run", "-d", "--name", "cpu", "--cpus", "0.5", "--cpu-shares", "512",
          "--cpuset-cpus", "0", "--memory-reservation", "16m", "--ulimit", "nofile=100:200",
          "--ulimit", "nproc=50", "--shm-size", "128m", "busybox", "sleep", "300")
    dirs = cgroup(store, "cpu")
    if "cpu" in dirs:  # v1
        assert read(dirs, ("cpu", "cpu.cfs_quota_us"), "") == "50000"
        assert read(dirs, ("cpu", "cpu.cfs_period_us"), "") == "100000"
        assert read(dirs, ("cpu", "cpu.shares"), "") == "512"
        assert read(dirs, ("memory", "memory.soft_limit_in_bytes"), "") == str(16 * 1024 * 1024)
    else:
        assert read(dirs, ("", ""), "cpu.max") == "50000 100000"
    assert read(dirs, ("cpuset", "cpuset.cpus"), "cpuset.cpus") == "0"
    # the container's process and an exec's have the limits (an exec's soft open-files limit
    # can come out raised to the hard one: Debian 12's runc 1.1.5, built with Go 1.19, races
    # Go's own raise of it in runc init, opencontainers/runc#4195, fixed in runc 1.1.13)
    soft, hard, processes = store("exec", "cpu", "sh", "-c",
                                  "ulimit -n; ulimit -Hn; ulimit -u").stdout.split()
    assert (hard, processes) == ("200", "50") and soft in ("100", "199", "200")
    status = store("exec", "cpu", "cat", "/proc/1/limits").stdout
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["100", "200"]
               for line in status.splitlines())
    assert store("exec", "cpu", "df", "-k", "/dev/shm").stdout.split()[-5] == "131072"
    host = inspect(store, "cpu")["HostConfig"]
    assert (host["NanoCpus"], host["CpuShares"], host["CpusetCpus"], host["ShmSize"]) == (
        500000000, 512, "0", 128 * 1024 * 1024)
    assert host["Ulimits"] == [{"Name": "nofile", "Hard": 200, "Soft": 100},
                               {"Name": "nproc", "Hard": 50, "Soft": 50}]


def test_impossible_limits_are_one_line_errors_and_nothing_is_made(store):
    cpus = os.cpu_count()
    for i, (args, message) in enumerate([
        (["--memory", "1k"], "Error: Minimum memory limit allowed is 6MB"),
        (["--memory", "abc"], """Error: invalid argument "abc" for "-m, --memory" flag: invalid size: 'abc'"""),
        (["--cpus", "-1"], f"Error: Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"),
        (["--cpus", "x"], 'Error: invalid argument "x" for "--cpus" flag: failed to parse x as a rational number'),
        (["--memory", "10m", "--memory-swap", "5m"],
         "Error: Minimum memoryswap limit should be larger than memory limit, see usage"),
        (["--memory-swap", "5m"], "Error: You should always set the Memory limit when using Memoryswap limit"),
        (["--memory", "10m", "--memory-reservation", "20m"],
         "Error: Minimum memory limit can not be less than memory reservation limit"),
        (["--cpuset-cpus", "x"], "Error: Invalid value x for cpuset cpus: invalid format: x"),
        (["--cpuset-cpus", "99"], "Error: Requested CPUs are not available - requested 99"),
        (["--shm-size", "x"], """Error: invalid argument "x" for "--shm-size" flag: invalid size: 'x'"""),
        (["--pids-limit", "abc"], 'Error: invalid argument "abc" for "--pids-limit" flag'),
        (["--ulimit", "foo=1"], 'Error: invalid argument "foo=1" for "--ulimit" flag: invalid ulimit type: foo'),
        (["--ulimit", "nofile=200:100"], 'Error: invalid argument "nofile=200:100" for "--ulimit" flag: '
         + "ulimit soft limit must be less than or equal to hard limit: 200 > 100"),
        (["--cap-add", "FOO"], 'Error: invalid CapAdd: unknown capability: "CAP_FOO"'),
        (["--cap-drop", "bar"], 'Error: invalid CapDrop: unknown capability: "CAP_BAR"'),
        (["--security-opt", "foo"], 'Error: Invalid --security-opt: "foo"'),
        (["--security-opt", "seccomp=/nonexistent.json"],
         "Error: opening seccomp profile (/nonexistent.json) failed"),
    ]):
        verb = ("run", "create")[i % 2]  # both, each for half the cases
        proc = store(verb, *args, "busybox", "true", check=False)
        assert proc.returncode == 125, (verb, args, proc.stderr)
        assert proc.stderr.startswith(message), (verb, args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert store("ps", "-a", "-q").stdout == ""


def test_update_changes_a_running_container_s_cgroup(store):
    store("run", "-d", "--name", "up", "--memory", "32m", "--pids-limit", "20", "busybox",
          "sleep", "300")
    assert store("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "30",
                 "--cpus", "1", "up").stdout == "up\n"
    dirs = cgroup(store, "up")
    assert read(dirs, ("memory", "memory.limit_in_bytes"), "memory.max") == str(64 * 1024 * 1024)
    assert read(dirs, ("pids", "pids.max"), "pids.max") == "30"
    host = inspect(store, "up")["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"], host["NanoCpus"]) == (
        64 * 1024 * 1024, 128 * 1024 * 1024, 30, 1000000000)
    proc = store("update", "--memory", "1k", "up", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: Minimum memory limit allowed is 6MB\n"
    proc = store("update", "up", check=False)
    assert proc.returncode == 125 and "you must provide one or more flags" in proc.stderr
    # a stopped container keeps the new limits for its next start
    store("rm", "-f", "up")
    store("create", "--name", "later", "--memory", "32m", "busybox", "sleep", "300")
    store("update", "--memory", "48m", "later")
    store("start", "later")
    assert read(cgroup(store, "later"), ("memory", "memory.limit_in_bytes"), "memory.max") \
        == str(48 * 1024 * 1024)


def test_update_restart_is_followed_from_the_next_exit(store):
    import signal
    import time

    store("run", "-d", "--restart", "always", "--name", "keep", "--network", "none", "busybox",
          "sleep", "300")
    assert store("update", "--restart", "no", "keep").stdout == "keep\n"
    doc = inspect(store, "keep")
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    os.kill(doc["State"]["Pid"], signal.SIGKILL)  # from the host: the old policy would restart
    assert store("wait", "keep").stdout == "137\n"
    time.sleep(1)
    doc = inspect(store, "keep")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0
    proc = store("update", "--restart", "sometimes", "keep", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: invalid restart policy 'sometimes'\n"


def test_pause_and_unpause(store):
    cid = store("run", "-d", "--name", "frozen", "busybox", "sleep", "300").stdout.strip()
    store("pause", "frozen")
    dirs = cgroup(store, "frozen")
    assert read(dirs, ("freezer", "freezer.state"), "cgroup.freeze") in ("FROZEN", "1")
    row = json.loads(store("ps", "--format", "json").stdout)
    assert row["State"] == "paused" and row["Status"].endswith(" (Paused)")
    state = inspect(store, "frozen")["State"]
    assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True)
    proc = store("pause", "frozen", check=False)
    assert proc.returncode == 1 and proc.stderr == f"Error: Container {cid} is already paused\n"
    proc = store("exec", "frozen", "true", check=False)
    assert proc.returncode == 125 and proc.stderr == (
        f"Error: Container {cid} is paused, unpause the container before exec\n")
    store("unpause", "frozen")
    assert read(dirs, ("freezer", "freezer.state"), "cgroup.freeze") in ("THAWED", "0")
    assert inspect(store, "frozen")["State"]["Status"] == "running"
    proc = store("unpause", "frozen", check=False)
    assert proc.returncode == 1 and proc.stderr == f"Error: Container {cid} is not paused\n"
    store("pause", "frozen")
    store("stop", "-t", "1", "frozen")  # a paused container stops as Docker's does
    assert inspect(store, "frozen")["State"]["Status"] == "exited"
    proc = store("pause", "frozen", check=False)
    assert proc.returncode == 1 and proc.stderr == f"Error: Container {cid} is not running\n"


def test_stats_prints_docker_s_columns_from_the_cgroup(store):
    cid = store("run", "-d", "--name", "busy", "--network", "none", "--memory", "32m",
                "busybox", "sh", "-c",
                "x=$(head -c 5000000 /dev/zero | tr '\\0' a); sleep 300").stdout.strip()
    store("create", "--name", "idle", "busybox", "true")
    out = store("stats", "--no-stream").stdout.splitlines()
    assert re.split(r"\s{3,}", out[0]) == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
                                   "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    assert len(out) == 2 and out[1].startswith(cid[:12] + "   busy   ")  # running ones only
    row = json.loads(store("stats", "--no-stream", "--format", "json", "busy").stdout)
    assert row["ID"] == cid[:12] and row["Name"] == "busy"
    usage, limit = row["MemUsage"].split(" / ")
    assert limit == "32MiB" and usage.endswith(("KiB", "MiB"))
    assert 0 < float(row["MemPerc"].rstrip("%")) < 100
    assert row["PIDs"] in ("1", "2") and row["NetIO"] == "0B / 0B"
    assert row["CPUPerc"].endswith("%")
    table = store("stats", "--no-stream", "--format", "table {{.Name}}\t{{.PIDs}}", "busy",
                  "idle").stdout.splitlines()
    assert [line.split() for line in table] == [["NAME", "PIDS"], ["busy", row["PIDs"]],
                                                 ["idle", "0"]]
    proc = store("stats", "--no-stream", "nope", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: No such container: nope\n"


# ---------------------------------------------------------------------------------- security
def test_the_default_seccomp_profile_denies_what_podman_s_denies(store):
    # personality(PER_LINUX32|ADDR_NO_RANDOMIZE): the profile allows personality() only with
    # a few values, this is not one of them (the profile's default: ENOSYS)
    proc = store("run", "--rm", "busybox", "linux32", "-R", "true", check=False)
    assert proc.returncode == 1 and "Function not implemented" in proc.stderr
    assert store("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "linux32",
                 "-R", "true").returncode == 0
    assert "Seccomp:\t2" in store("run", "--rm", "busybox", "cat", "/proc/self/status").stdout
    assert "Seccomp:\t0" in store("run", "--rm", "--security-opt", "seccomp=unconfined",
                                  "busybox", "cat", "/proc/self/status").stdout


def test_the_profile_conversion_keeps_the_rules_for_this_machine_and_these_capabilities():
    from lamina.runtime.security import native_arches, oci_seccomp

    go_arch, scmp_arch = native_arches()
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
               "archMap": [{"architecture": scmp_arch, "subArchitectures": ["SUB"]},
                           {"architecture": "SCMP_ARCH_OTHER", "subArchitectures": []}],
               "syscalls": [
                   {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": []},
                   {"names": ["here"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": [go_arch]}},
                   {"names": ["elsewhere"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["nope"]}},
                   {"names": ["not_here"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": [go_arch]}},
                   {"names": ["admin"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                   {"names": ["admin"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                    "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                   {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
                   {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}
    plain = oci_seccomp(profile, ["CAP_CHOWN"])
    assert plain["architectures"] == [scmp_arch, "SUB"] and plain["defaultErrnoRet"] == 38
    assert [(r["names"], r["action"], r.get("errnoRet")) for r in plain["syscalls"]] == [
        (["read"], "SCMP_ACT_ALLOW", None), (["here"], "SCMP_ACT_ALLOW", None),
        (["admin"], "SCMP_ACT_ERRNO", 1), (["personality"], "SCMP_ACT_ALLOW", None)]
    assert plain["syscalls"][-1]["args"] == [{"index": 0, "value": 8, "valueTwo": 0,
                                              "op": "SCMP_CMP_EQ"}]
    admin = oci_seccomp(profile, ["CAP_SYS_ADMIN"])
    assert [r["names"][0] for r in admin["syscalls"]] == ["read", "here", "admin", "personality"]
    assert admin["syscalls"][2]["action"] == "SCMP_ACT_ALLOW"


def test_a_seccomp_profile_of_one_s_own(store, tmp_path):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                     {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}))
    proc = store("run", "--name", "own", "--security-opt", f"seccomp={profile}", "busybox",
                 "sh", "-c", "mkdir /made; rmdir /tmp && echo rmdir-ran", check=False)
    assert "mkdir: can't create directory '/made': Operation not permitted" in proc.stderr
    assert "rmdir-ran" in proc.stdout or "Directory not empty" in proc.stderr  # not CAP_SYS_ADMIN
    profile.unlink()  # the container keeps the profile's text, as Docker's CLI sends it
    opts = inspect(store, "own")["HostConfig"]["SecurityOpt"]
    assert len(opts) == 1 and json.loads(opts[0][len("seccomp="):])["defaultAction"] == \
        "SCMP_ACT_ALLOW"
    proc = store("start", "-a", "own", check=False)
    assert "Operation not permitted" in proc.stderr


def effective_caps(store, *flags) -> int:
    status = store("run", "--rm", *flags, "busybox", "cat", "/proc/self/status").stdout
    return int(next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1], 16)


def test_cap_add_and_cap_drop(store):
    from lamina.runtime.security import CAPABILITIES

    bit = {name: 1 << number for number, name in enumerate(CAPABILITIES)}
    default = effective_caps(store)
    assert default & bit["CHOWN"] and not default & bit["SYS_ADMIN"]
    proc = store("run", "--rm", "--cap-drop", "CHOWN", "busybox", "sh", "-c",
                 "touch /f && chown 1 /f", check=False)
    assert proc.returncode == 1 and "Operation not permitted" in proc.stderr
    assert store("run", "--rm", "busybox", "sh", "-c", "touch /f && chown 1 /f").returncode == 0
    assert effective_caps(store, "--cap-drop", "chown") == default & ~bit["CHOWN"]
    assert effective_caps(store, "--cap-drop", "ALL", "--cap-add", "cap_chown") == bit["CHOWN"]
    assert effective_caps(store, "--cap-add", "SYS_ADMIN") == default | bit["SYS_ADMIN"]
    # SYS_ADMIN also opens the syscalls that the profile gives to it (sethostname, setns...)
    assert store("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "hostname",
                 "renamed").returncode == 0
    proc = store("run", "--rm", "busybox", "hostname", "renamed", check=False)
    assert proc.returncode == 1
    host = inspect(store, store("create", "--cap-add", "sys_admin", "--cap-drop", "CAP_CHOWN",
                                "busybox", "true").stdout.strip())["HostConfig"]
    assert (host["CapAdd"], host["CapDrop"]) == (["sys_admin"], ["CAP_CHOWN"])


def test_privileged(store):
    from lamina.runtime.security import CAPABILITIES, bounding_capabilities

    out = store("run", "--rm", "--privileged", "busybox", "sh", "-c",
                "grep -E 'Seccomp:|CapEff:' /proc/self/status; grep -E ' /sys | /proc/keys "
                "| /sys/fs/cgroup(/memory)? ' /proc/mounts; ls /dev").stdout
    assert int(out.split("CapEff:")[1].split()[0], 16) == sum(
        1 << n for n, c in enumerate(CAPABILITIES) if "CAP_" + c in bounding_capabilities())
    assert "Seccomp:\t0" in out and "sysfs /sys sysfs rw," in out
    # its own cgroup (v1: the memory hierarchy's; v2: the one tree), writable as Docker's
    assert re.search(r" /sys/fs/cgroup(/memory)? cgroup2? rw,", out), out
    assert "/proc/keys" not in out  # nothing masked
    host_devices = {name for name in os.listdir("/dev") if name.startswith(("loop", "tty"))}
    assert host_devices and host_devices <= set(out.split())
    plain = store("run", "--rm", "-m", "64m", "busybox", "sh", "-c",
                  "grep -E ' /sys | /proc/keys | /sys/fs/cgroup(/memory)? ' /proc/mounts; ls /dev; "
                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                  "|| cat /sys/fs/cgroup/memory.max").stdout
    assert "sysfs /sys sysfs ro," in plain and "/proc/keys" in plain
    assert re.search(r" /sys/fs/cgroup(/memory)? cgroup2? ro,", plain), plain  # read-only
    assert plain.split()[-1] == str(64 << 20)  # what it is limited to
    assert not host_devices <= set(plain.split())
    assert inspect(store, store("create", "--privileged", "busybox", "true").stdout.strip())[
        "HostConfig"]["Privileged"] is True


def test_no_new_privileges_and_group_add(store):
    status = store("run", "--rm", "--security-opt", "no-new-privileges", "busybox", "cat",
                   "/proc/self/status").stdout
    assert "NoNewPrivs:\t1" in status
    assert "NoNewPrivs:\t0" in store("run", "--rm", "busybox", "cat", "/proc/self/status").stdout
    assert "1234" in store("run", "--rm", "--group-add", "1234", "busybox", "id", "-G").stdout.split()


def test_device(store):
    out = store("run", "--rm", "--device", "/dev/fuse:/dev/myfuse:r", "busybox", "sh", "-c",
                "ls -l /dev/myfuse; exec 3</dev/myfuse && echo read-ok; exec 4>/dev/myfuse && "
                "echo write-ok", check=False)
    assert "10, 229" in out.stdout and "read-ok" in out.stdout and "write-ok" not in out.stdout
    assert "Operation not permitted" in out.stderr  # the cgroup allows reading only
    assert "write-ok" in store("run", "--rm", "--device", "/dev/fuse", "busybox", "sh", "-c",
                               "exec 4>/dev/fuse && echo write-ok").stdout
    for spec, message in (("/dev/nope", ('Error: error gathering device information while adding '
                                        'custom device "/dev/nope": no such file or directory')),
                          ("/dev/fuse:rel", "Error: rel is not an absolute path"),
                          ("/dev/fuse:/dev/f:xyz", "Error: bad mode specified: xyz")):
        proc = store("create", "--device", spec, "busybox", "true", check=False)
        assert (proc.returncode, proc.stderr) == (125, message + "\n")
    assert store("ps", "-a", "-q").stdout == ""


def test_cgroups_left_after_delete_are_removed():
    """What ``runc delete`` leaves (a cgroup whose tasks had not yet left) goes with
    lamina.runtime.cgroups.remove: at once when empty, after its last task when busy."""
    import subprocess

    from lamina.runtime import cgroups

    path = cgroups.container_path("test-remove-" + os.urandom(4).hex())
    made = []
    for directory in cgroups.cgroup_dirs_of_path(path).values():
        if os.path.isdir(os.path.dirname(directory)) or os.path.isdir(
                os.path.dirname(os.path.dirname(directory))):
            os.makedirs(directory)
            made.append(directory)
    assert made
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with open(os.path.join(made[0], "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        cgroups.remove(path, patience=0.1)
        assert [d for d in made if os.path.isdir(d)] == [made[0]]  # busy: left, the rest gone
    finally:
        sleeper.kill()
        sleeper.wait()
    cgroups.remove(path)
    assert not [d for d in made if os.path.isdir(d)]
