"""Rootless lamina, tried as a real unprivileged user (tests/rootlessuser.py): private stores, a
user's defaults, the store's user namespace and ``lamina unshare``.

Run as root inside a private mount namespace, as scripts/test does; the user's commands run with
the user's own uid, gid and no other groups.
"""

import os
import stat

import pytest

from tests import test_registry
from tests.conftest import REPO, Lamina, store_files
from tests.rootlessuser import make_user, subordinate_start

registry = test_registry.registry  # Debian's docker-registry on a loopback port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd, a second user)")


@pytest.fixture(scope="module")
def user_busybox(rootless_user, busybox_tar):
    """The user's store holds busybox:latest (imported once for the module)."""
    rootless_user.lamina("import", rootless_user.give(busybox_tar), "busybox:latest")
    return rootless_user


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ----------------------------------------------------------------------------- private stores

def test_roots_store_is_roots_alone(store_root, busybox_tar, rootless_user):
    """Root's store: 0700, its database and every container's config.json (which holds the
    container's environment) 0600; the user can list, inspect or read nothing in it, each
    refusal one line, and root's store is left as it was."""
    root = Lamina(store_root, None)
    root("import", busybox_tar, "busybox:latest")
    cid = root("run", "-d", "--network", "none", "-e", "SECRET=hunter2", "busybox",
               "sleep", "30").stdout.strip()
    try:
        config = os.path.join(store_root, "containers", cid, "config.json")
        assert mode(store_root) == 0o700
        assert mode(os.path.join(store_root, "lamina.db")) == 0o600
        assert mode(config) == 0o600
        with open(config) as f:
            assert "SECRET=hunter2" in f.read()
        before = store_files(store_root)
        for args in (("ps", "-a"), ("images",), ("inspect", cid), ("image", "inspect", "busybox")):
            proc = rootless_user.lamina("--root", store_root, *args, check=False)
            assert proc.returncode != 0, args
            assert proc.stdout == ""
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "belongs to root" in lines[0], proc.stderr
            assert "Traceback" not in proc.stderr
        for path in (config, os.path.join(store_root, "lamina.db")):
            proc = rootless_user.run(["cat", path], check=False)
            assert proc.returncode != 0 and "Permission denied" in proc.stderr
            assert "hunter2" not in proc.stdout
        proc = rootless_user.run(["ls", store_root], check=False)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
        assert store_files(store_root) == before
    finally:
        root("rm", "-f", cid)


def test_an_older_store_is_tightened_on_open(store_root, busybox_tar):
    """A store made before stores were private (0755, database 0644, config.json 0644) is
    tightened by the next command that opens it."""
    root = Lamina(store_root, None)
    root("import", busybox_tar, "busybox:latest")
    cid = root("create", "--network", "none", "-e", "SECRET=x", "busybox", "true").stdout.strip()
    root("start", cid)
    config = os.path.join(store_root, "containers", cid, "config.json")
    for path, old in ((store_root, 0o755), (os.path.join(store_root, "lamina.db"), 0o644),
                      (os.path.join(store_root, "containers"), 0o755), (config, 0o644)):
        os.chmod(path, old)
    root("ps", "-a")
    assert mode(store_root) == 0o700
    assert mode(os.path.join(store_root, "lamina.db")) == 0o600
    assert mode(config) == 0o600


def test_users_store_is_the_users_alone(user_busybox):
    """A user's store is the user's: 0700 and the user's files; another user (root inside the
    namespace is the user, so this is a second user) cannot open it, with one line."""
    user = user_busybox
    st = os.stat(user.store)
    assert (st.st_uid, mode(user.store)) == (user.uid, 0o700)
    assert mode(os.path.join(user.store, "lamina.db")) == 0o600
    other, cleanup = make_user("lamina-rootless-other")
    try:
        proc = other.lamina("--root", user.store, "images", check=False)
        assert proc.returncode != 0 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1
        assert f"belongs to user {user.name}" in proc.stderr
    finally:
        cleanup()


# ----------------------------------------------------------------------------- defaults

def test_users_defaults_are_xdg(rootless_user):
    """The store under $XDG_DATA_HOME/lamina (default ~/.local/share/lamina), the namespace's
    state under $XDG_RUNTIME_DIR/lamina, or /tmp/lamina-run-UID without one (as Podman's
    /tmp/podman-run-UID)."""
    import json

    user = rootless_user
    before = set(users_paths(user.uid))
    info = json.loads(user.lamina("info").stdout)
    assert info["Root"] == user.store and info["Driver"] == "overlay2"
    assert any(n.startswith("ns-") for n in os.listdir(os.path.join(user.runtime_dir, "lamina")))
    data = os.path.join(user.home, "data")
    info = json.loads(user.lamina("info", env={"XDG_DATA_HOME": data}).stdout)
    assert info["Root"] == os.path.join(data, "lamina")
    fallback = f"/tmp/lamina-run-{user.uid}"
    user.lamina("info", env={"XDG_RUNTIME_DIR": None})
    st = os.stat(fallback)
    assert (st.st_uid, mode(fallback)) == (user.uid, 0o700)
    user.stop_namespaces()
    # nothing of the user's outside its home and its runtime directory
    assert set(users_paths(user.uid)) - before == set()


def users_paths(uid: int):
    """What ``uid`` owns at the top of the shared temporary and runtime directories."""
    for top in ("/tmp", "/var/tmp", "/run", "/dev/shm"):
        for name in os.listdir(top):
            path = os.path.join(top, name)
            if os.lstat(path).st_uid == uid and not path.startswith(f"/tmp/lamina-run-{uid}"):
                yield path


# ----------------------------------------------------------------------------- the user namespace

def test_one_namespace_with_the_subordinate_ranges(user_busybox):
    """Every command joins one long-lived namespace: root inside is the user, 1.. the user's
    subordinate range; image files of uid 0 are the user's on disk and root's inside."""
    user = user_busybox
    first = user.lamina("unshare", "sh", "-c", "id -u; readlink /proc/self/ns/user; "
                        "cat /proc/self/uid_map").stdout.split("\n")
    second = user.lamina("unshare", "readlink", "/proc/self/ns/user").stdout.strip()
    assert first[0] == "0" and first[1] == second
    start = subordinate_start(user.name)
    assert first[2].split() == ["0", str(user.uid), "1"]
    assert first[3].split() == ["1", str(start), "65536"]
    layers = os.path.join(user.store, "overlay2")
    busybox = [os.path.join(layers, d, "diff", "bin", "busybox") for d in os.listdir(layers)
               if os.path.exists(os.path.join(layers, d, "diff", "bin", "busybox"))]
    assert busybox and all(os.stat(p).st_uid == user.uid for p in busybox)
    inside = user.lamina("unshare", "stat", "-c", "%u", busybox[0]).stdout.strip()
    assert inside == "0"


def test_unshare_as_root_is_refused(store_root):
    proc = Lamina(store_root, None)("unshare", "id", check=False)
    assert proc.returncode != 0 and "rootless" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_subordinate_range_maps_the_user_alone_with_a_warning(busybox_tar):
    """Without /etc/subuid ranges: one id mapped (the user as 0) and a warning, as Podman;
    an image whose files are root's still imports and runs."""
    user, cleanup = make_user("lamina-rootless-nosub", subordinate=False)
    try:
        proc = user.lamina("import", user.give(busybox_tar), "busybox:latest")
        assert "single-id mapping" in proc.stderr and "subordinate" in proc.stderr
        maps = user.lamina("unshare", "cat", "/proc/self/uid_map").stdout.split()
        assert maps == ["0", str(user.uid), "1"]
        out = user.lamina("run", "--rm", "--network", "none", "busybox", "id", "-u").stdout
        assert out.strip() == "0"
    finally:
        cleanup()


# ----------------------------------------------------------------------------- overlay2 in the namespace

def test_conformance_suite_on_rootless_overlay2(rootless_user):
    """The snapshotter conformance suite, unchanged, on overlay2 as the user inside its store's
    namespace (kernel overlayfs with userxattr; whiteouts as 0/0 devices, opaque directories as
    user.overlay.opaque): its snapshot tests, or with LAMINA_LONG=1 all of it (graph and
    property tests too)."""
    user = rootless_user
    suite = os.path.join(REPO, "tests", "conformance")
    if not os.environ.get("LAMINA_LONG"):
        suite = os.path.join(suite, "test_snapshots.py")
    proc = user.lamina("unshare", user.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "-x", "-k", "overlay2", suite,
                       env={"PYTHONPATH": f"{user.pythonpath}:{REPO}"}, timeout=600, check=False)
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "skipped" not in last, proc.stdout[-2000:]


# ----------------------------------------------------------------------------- containers

def test_run_exec_cp_and_mount_as_the_user(user_busybox):
    """run, exec, cp, and mount inside unshare."""
    user = user_busybox
    cid = user.lamina("run", "-d", "--network", "none", "busybox", "sleep", "30").stdout.strip()
    try:
        assert user.lamina("exec", cid, "id", "-u").stdout.strip() == "0"
        source = os.path.join(user.home, "in.txt")
        user.run(["sh", "-c", f"echo copied > {source}"])
        user.lamina("cp", source, f"{cid}:/in.txt")
        assert user.lamina("exec", cid, "cat", "/in.txt").stdout == "copied\n"
        user.lamina("exec", cid, "sh", "-c", "echo made inside > /out.txt")
        user.lamina("cp", f"{cid}:/out.txt", os.path.join(user.home, "out.txt"))
        with open(os.path.join(user.home, "out.txt")) as f:
            assert f.read() == "made inside\n"
        lamina = f"{user.python} -m lamina"
        out = user.lamina("unshare", "sh", "-c",
                          f"m=$({lamina} mount {cid}) && cat $m/in.txt && {lamina} umount {cid}")
        assert out.stdout == "copied\n"
    finally:
        user.lamina("rm", "-f", cid)


def test_limits_without_delegated_cgroups_are_one_line(user_busybox):
    """Where the host delegates no cgroup to the user (this one: cgroup v1 + v2 hybrid, no
    systemd), --memory, --cpus and --pids-limit are refused by run, create and update in one
    line (exit 125 for run and create), before anything is made, as Podman refuses them at
    create; a container without limits still runs."""
    user = user_busybox
    before = user.lamina("ps", "-a", "-q").stdout
    for flags, name in ((["-m", "16m"], "memory"), (["--cpus", "0.5"], "cpu"),
                        (["--pids-limit", "10"], "pids")):
        for verb in (["run", "--rm"], ["create"]):
            proc = user.lamina(*verb, "--network", "none", *flags, "busybox", "true",
                               check=False)
            assert proc.returncode == 125, (verb, flags, proc.stderr)
            assert proc.stdout == ""
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert f"cannot apply the {name} limit" in lines[0]
            assert "delegates" in lines[0]
    assert user.lamina("ps", "-a", "-q").stdout == before  # nothing made
    cid = user.lamina("create", "--network", "none", "busybox", "true").stdout.strip()
    try:
        proc = user.lamina("update", "--pids-limit", "10", cid, check=False)
        assert proc.returncode != 0 and "cannot apply the pids limit" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        user.lamina("start", "-a", cid)
    finally:
        user.lamina("rm", "-f", cid)


@pytest.fixture
def delegated_cgroups(user_busybox):
    """cgroups delegated to the user as an administrator (or systemd's ``Delegate=yes``) does
    on this host's cgroup v1 hierarchies (runc's on the v1 + v2 hybrid): in the memory and pids
    hierarchies, a cgroup under the test's own, owned by the user with its cgroup.procs and
    tasks. Yields ``lamina(*args)``: lamina as the user, from a shell that first moves itself
    into them (as a login would put the user's shell). The cpu hierarchy is left root's."""
    from lamina.runtime import cgroups

    if cgroups.unified():
        pytest.skip("a cgroup v2 host: the delegation made here is the v1 hierarchies'")
    user = user_busybox
    made = []
    try:
        for name in ("memory", "pids"):
            directory = os.path.join(cgroups.cgroup_dirs(os.getpid())[name],
                                     f"lamina-delegated-{os.getpid()}")
            os.mkdir(directory)
            made.append(directory)
            for entry in ("", "cgroup.procs", "tasks"):
                os.chown(os.path.join(directory, entry), user.uid, user.gid)
        moves = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in made)

        def lamina(*args, check=True):
            return user.run(["sh", "-c", f'{moves} && exec "$@"', "sh", user.python, "-m",
                             "lamina", *args], check=check)

        yield lamina
    finally:  # runc removed the containers' own cgroups: whatever is left is reported
        for directory in made:
            left = [e.name for e in os.scandir(directory) if e.is_dir()]
            for name in left:
                os.rmdir(os.path.join(directory, name))
            os.rmdir(directory)
            assert not left, f"cgroups left under {directory}: {left}"


def test_limits_in_a_delegated_cgroup(delegated_cgroups):
    """Where the host delegates the user's cgroup (here the memory and pids controllers, not
    cpu), a rootless container gets --memory and --pids-limit in a cgroup of its own under the
    user's, as runc's rootless mode makes it: its /sys/fs/cgroup shows them and the PIDs limit
    is enforced; --cpus, whose controller is not delegated, is refused in one line (exit 125)."""
    lamina = delegated_cgroups
    proc = lamina("run", "--rm", "--network", "none", "-m", "64m", "--pids-limit", "8",
                  "busybox", "sh", "-c",
                  "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
                  "; grep -E ':(memory|pids):' /proc/self/cgroup"
                  "; i=0; while [ $i -lt 12 ]; do sleep 5 & i=$((i+1)); done",
                  check=False)
    lines = proc.stdout.splitlines()
    assert lines[:2] == [str(64 * 1024 * 1024), "8"], (proc.stdout, proc.stderr)
    for line in lines[2:4]:  # the container's cgroup is a child of the delegated one
        assert f"/lamina-delegated-{os.getpid()}/" in line, proc.stdout
    # the shell and 7 sleeps: the 8th fork is refused, and the shell ends on it (its sleeps
    # with it, as the container's init)
    assert proc.returncode == 2 and proc.stderr == "sh: can't fork: Resource temporarily " \
        "unavailable\n", proc.stderr
    proc = lamina("run", "--rm", "--network", "none", "--cpus", "0.5", "busybox", "true",
                  check=False)
    assert proc.returncode == 125 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot apply the cpu limit" in proc.stderr and "no cpu controller" in proc.stderr
    cid = lamina("run", "-d", "--network", "none", "busybox", "sleep", "30").stdout.strip()
    try:  # a running container's limits are changed in its cgroup
        lamina("update", "--memory", "32m", cid)
        out = lamina("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout
        assert out.strip() == str(32 * 1024 * 1024)
    finally:
        lamina("rm", "-f", cid)


def processes(user, pattern: str) -> list[int]:
    """The PIDs of the user's processes whose command line matches ``pattern`` (pgrep -f)."""
    out = user.run(["pgrep", "-u", str(user.uid), "-f", pattern], check=False).stdout
    return [int(pid) for pid in out.split()]


def kill_runc_once_it_made_the_cgroup(user, parents: list, cid: str, caught: dict) -> None:
    """Once runc made the container's cgroup under each of ``parents`` (one a hierarchy, made
    one after another): stop runc, note in ``caught`` whether it had written its state yet, and
    kill it and the container's monitor (-9)."""
    import signal
    import time

    deadline = time.monotonic() + 30
    while not all(os.path.isdir(os.path.join(parent, cid)) for parent in parents):
        if time.monotonic() > deadline:
            return
    runc = []  # found in /proc at once (a pgrep as the user takes longer than runc's window)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        if argv and argv[0].endswith(b"/runc") and b"--root" in argv and argv[-1] == cid.encode():
            os.kill(int(pid), signal.SIGSTOP)
            runc.append(int(pid))
    state = os.path.join(user.store, "runtime", "runc", cid, "state.json")
    caught["before its state"] = bool(runc) and not os.path.exists(state)
    for pid in processes(user, f"lamina[.]runtime.* {cid}") + runc:
        os.kill(pid, signal.SIGKILL)


def test_rm_removes_the_cgroup_a_killed_runc_left(delegated_cgroups, user_busybox):
    """runc and the container's monitor killed (-9) while runc sets the container up, after it
    made the container's cgroup under the delegated one and before it wrote its state: the
    cgroup stays behind (empty, or with runc's init waiting for ever), with nothing that knows
    it but lamina's note of where runc makes it (runc's rootless default, under the cgroup of
    the process that starts runc); ``rm`` kills what is left in it and removes it, in every
    delegated hierarchy."""
    import threading

    from lamina.runtime import cgroups

    lamina, user = delegated_cgroups, user_busybox
    parents = [os.path.join(cgroups.cgroup_dirs(os.getpid())[name],
                            f"lamina-delegated-{os.getpid()}") for name in ("memory", "pids")]
    for _ in range(20):  # until runc is caught before it writes its state (most tries)
        cid = lamina("create", "--network", "none", "-m", "64m", "busybox", "sleep",
                     "30").stdout.strip()
        state = os.path.join(user.store, "runtime", "runc", cid, "state.json")
        caught = {}
        watcher = threading.Thread(target=kill_runc_once_it_made_the_cgroup,
                                   args=(user, parents, cid, caught))
        watcher.start()
        proc = lamina("start", cid, check=False)
        watcher.join()
        if caught.get("before its state"):
            break
        lamina("rm", "-f", cid)
    else:
        pytest.fail("runc was never caught between making the cgroup and writing its state")
    assert proc.returncode != 0
    left = [os.path.join(parent, cid) for parent in parents]

    def tasks() -> str:
        out = ""
        for directory in left:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                out += f.read()
        return out

    # left behind with no runc state that names it; runc's init, its runc killed, mostly ends
    # and leaves the cgroup empty, but may wait for ever (seen once): rm kills what is left
    assert all(os.path.isdir(directory) for directory in left)
    pids = tasks().split()
    assert not os.path.exists(state)
    assert cid in lamina("ps", "-a", "-q", "--no-trunc").stdout.split()
    lamina("rm", "-f", cid)
    assert [d for d in left if os.path.exists(d)] == []
    assert cid not in lamina("ps", "-a", "-q", "--no-trunc").stdout.split()
    for pid in pids:  # killed: gone, or a zombie not reaped yet
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().rpartition(")")[2].split()[0] in ("Z", "X"), pid
        except FileNotFoundError:
            pass


def answer(port: int) -> str:
    """The body of http://127.0.0.1:PORT/ once something serves it (10 s at most)."""
    import time
    import urllib.request

    deadline, body = time.monotonic() + 10, None
    while body is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                body = r.read().decode() or None  # answered before httpd listened
        except OSError:
            if time.monotonic() > deadline:
                raise
        if body is None:
            assert time.monotonic() < deadline, "no answer on the published port"
            time.sleep(0.1)
    return body


def test_networks_none_host_and_published_ports(user_busybox):
    """none (loopback only), host (the host's interfaces) and the default user-mode network,
    whose -p HOSTPORT:80 to busybox httpd answers on the host's loopback (slirp4netns), and
    -p 127.0.0.1::8081 on a port chosen for it; ps's PORTS, port and inspect's
    NetworkSettings.Ports show both while it runs (as Podman's do), nothing once it exited."""
    import json

    user = user_busybox
    none = user.lamina("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split()[1] for line in none.splitlines()] == ["lo:"]
    host = user.lamina("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout
    assert len(host.splitlines()) > 1
    port = test_registry.free_port()
    cid = user.lamina("run", "-d", "-p", f"{port}:80", "-p", "127.0.0.1::8081", "busybox",
                      "sh", "-c", "mkdir /www && hostname > /www/index.html && "
                      "httpd -p 8081 -h /www && exec httpd -f -p 80 -h /www").stdout.strip()
    try:
        assert answer(port).strip() == cid[:12]
        shown = user.lamina("port", cid).stdout.splitlines()
        assert shown[0] == f"80/tcp -> 0.0.0.0:{port}"
        chosen = int(shown[1].rpartition(":")[2])
        assert shown[1] == f"8081/tcp -> 127.0.0.1:{chosen}" and chosen not in (0, port)
        assert answer(chosen).strip() == cid[:12]  # the port shown is the one forwarded
        assert user.lamina("port", cid, "80").stdout == f"0.0.0.0:{port}\n"
        ps = user.lamina("ps", "--format", "{{.ID}} {{.Ports}}").stdout.splitlines()
        assert f"{cid[:12]} 0.0.0.0:{port}->80/tcp, 127.0.0.1:{chosen}->8081/tcp" in ps
        settings = json.loads(user.lamina("inspect", cid).stdout)[0]["NetworkSettings"]
        assert settings["Ports"] == {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}],
            "8081/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(chosen)}]}
        user.lamina("kill", cid)
        user.lamina("wait", cid)
        assert user.lamina("port", cid).stdout == ""
        assert json.loads(user.lamina("inspect", cid).stdout)[0]["NetworkSettings"][
            "Ports"] == {}
    finally:
        user.lamina("rm", "-f", cid)
    # slirp4netns left with the container, reaped: not even a zombie
    assert user.run(["pgrep", "-u", str(user.uid), "-a", "slirp4netns"], check=False).stdout == ""


def test_host_networks_sys_is_read_only_under_its_top_too(busybox_tar):
    """A rootless container on the host's network gets the host's /sys bound (sysfs cannot be
    mounted there), with the mounts under it: read-only all the way down, not only the top
    (runc's "ro" on an rbind), nor the tmpfs runc leaves writable at /sys/fs/cgroup. Seen with
    a file the user may write, in a tmpfs of the user's mounted under the host's /sys (as a
    user's FUSE connections are in fusectl): the user writes it outside, the container not
    (rootless Podman 4.3 with runc here writes it). --privileged keeps it writable."""
    import subprocess

    target = "/sys/fs/bpf"  # a mount point sysfs has, as Docker's and systemd's hosts
    if not os.path.isdir(target):
        pytest.skip(f"no {target} to mount on")
    user, cleanup = make_user("lamina-rootless-test")  # its namespace: made after the mount
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"uid={user.uid},gid={user.gid},mode=755",
                    "lamina-test", target], check=True)
    try:
        user.run(["sh", "-c", f"echo outside > {target}/users-file"])
        user.lamina("import", user.give(busybox_tar), "busybox:latest")
        probe = (f"for f in {target}/users-file /sys/fs/cgroup/x; do echo inside > $f "
                 "&& echo wrote $f; done; cat /proc/self/mountinfo")
        proc = user.lamina("run", "--rm", "--network", "host", "busybox", "sh", "-c", probe)
        assert "wrote" not in proc.stdout
        assert "Read-only file system" in proc.stderr, proc.stderr
        top = {}  # mount point -> the options of the mount on top there
        for line in proc.stdout.splitlines():
            fields = line.split()
            top[fields[4]] = fields[5].split(",")
        under_sys = {point: options for point, options in top.items()
                     if point == "/sys" or point.startswith("/sys/")}
        assert {target, "/sys/fs/cgroup", "/sys/fs/cgroup/memory"} <= set(under_sys)
        assert {p for p, options in under_sys.items() if "ro" not in options} == set()
        with open(f"{target}/users-file") as f:
            assert f.read() == "outside\n"
        proc = user.lamina("run", "--rm", "--network", "host", "--privileged", "busybox", "sh",
                           "-c", f"echo inside > {target}/users-file")
        with open(f"{target}/users-file") as f:
            assert f.read() == "inside\n"
    finally:
        subprocess.run(["umount", target], check=True)
        cleanup()


def test_hosts_file_names_the_container_on_the_user_mode_network(user_busybox):
    """Under slirp4netns the container's /etc/hosts gives its hostname its address (10.0.2.100,
    its tap0's), after the --add-host entries, as Docker and Podman write it; so the hostname
    resolves inside. --network none has no such line, as Docker's."""
    user = user_busybox
    out = user.lamina("run", "--rm", "--hostname", "web", "--add-host", "db:10.0.2.50",
                      "busybox", "sh", "-c", "cat /etc/hosts; echo ==; hostname -i; "
                      "ip -o -4 addr show tap0").stdout
    hosts, _, rest = out.partition("==\n")
    lines = hosts.splitlines()
    assert lines[-2:] == ["10.0.2.50\tdb", "10.0.2.100\tweb"], hosts
    resolved, tap = rest.splitlines()
    assert resolved.strip() == "10.0.2.100" and "inet 10.0.2.100/" in tap
    hosts = user.lamina("run", "--rm", "--network", "none", "--hostname", "web", "busybox",
                        "cat", "/etc/hosts").stdout
    assert "web" not in hosts and "127.0.0.1\tlocalhost" in hosts


@pytest.fixture
def loopback_resolver():
    """Debian's dnsmasq as a host resolver on a loopback address (as systemd-resolved's
    127.0.0.53 or a dnsmasq's 127.0.0.1 are), answering ``probe.lamina.test`` with 192.0.2.7
    and nothing else: (its address, the name, the answer). Stopped by its pid."""
    import random
    import subprocess

    address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    server = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", f"--listen-address={address}", "--port=53", "--pid-file",
         "--log-facility=-", "--address=/probe.lamina.test/192.0.2.7"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:  # it says "started" once it listens, else why it exits
            if "started" in line:
                break
        else:
            pytest.fail(f"dnsmasq did not start ({server.wait()})")
        yield address, "probe.lamina.test", "192.0.2.7"
    finally:
        server.terminate()
        server.wait()
        server.stderr.close()


def test_resolv_conf_on_the_user_mode_network(busybox_tar, loopback_resolver, tmp_path):
    """Under slirp4netns a container's resolv.conf names slirp4netns' DNS forwarder, 10.0.2.3,
    first (as Podman's), and keeps of the host's nameservers only those it can reach: a host
    resolver on loopback (here a real dnsmasq on 127.x.y.z) answers a name looked up inside
    through 10.0.2.3, which a copy of the host's file could not reach. ``--network host`` keeps
    the host's file as it is. The host's file is the test's own, bound over /etc/resolv.conf in
    a mount namespace of the user's first command, where its store's namespace is made."""
    import subprocess

    address, name, expected = loopback_resolver
    host_text = (f"# the host's\nsearch lamina.test\nnameserver {address}\n"
                 "nameserver 192.0.2.53\nnameserver ::1\noptions ndots:1 timeout:2\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(host_text)
    resolv.chmod(0o644)
    tmp_path.chmod(0o755)
    user, cleanup = make_user("lamina-rootless-test")  # a fresh store: a namespace made here
    try:
        tar = user.give(busybox_tar)
        as_user_with_that_file = ('mount --bind "$1" /etc/resolv.conf && u=$2 g=$3 && shift 3 '
                                  '&& exec setpriv --reuid="$u" --regid="$g" --clear-groups "$@"')
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", as_user_with_that_file,
             "sh", str(resolv), str(user.uid), str(user.gid), user.python, "-m", "lamina",
             "import", tar, "busybox:latest"],
            env=user.env, cwd=user.home, check=True, capture_output=True)
        # busybox nslookup asks for AAAA too, which this resolver refuses: exit 1 with the answer
        inside = user.lamina("run", "--rm", "busybox", "sh", "-c",
                             f"cat /etc/resolv.conf; echo ==; nslookup {name}",
                             check=False).stdout
        conf, _, lookup = inside.partition("==\n")
        assert conf == ("nameserver 10.0.2.3\n# the host's\nsearch lamina.test\n"
                        "nameserver 192.0.2.53\noptions ndots:1 timeout:2\n"), inside
        assert f"Address: {expected}" in lookup.splitlines(), inside
        # 10.0.2.3 itself answers: the name, through the host's loopback resolver, and a name
        # that resolver refuses (a DNS answer too, not a timeout)
        direct = user.lamina("run", "--rm", "busybox", "nslookup", name, "10.0.2.3",
                             check=False).stdout
        assert "Address:\t10.0.2.3:53" in direct and f"Address: {expected}" in direct, direct
        refused = user.lamina("run", "--rm", "busybox", "nslookup", "other.test", "10.0.2.3",
                              check=False)
        assert "other.test: REFUSED" in refused.stdout and "timed out" not in refused.stdout, \
            refused
        on_host = user.lamina("run", "--rm", "--network", "host", "busybox", "sh", "-c",
                              f"cat /etc/resolv.conf; echo ==; nslookup {name}",
                              check=False).stdout
        conf, _, lookup = on_host.partition("==\n")
        assert conf == host_text and f"Address: {expected}" in lookup.splitlines(), on_host
    finally:
        cleanup()


# ----------------------------------------------------------------------------- the whole workflow

DOCKERFILE = """FROM {base}
LABEL org.opencontainers.image.authors="demo@example.com"
COPY . /app
COPY --chown=1000:1000 app.sh /home/app/app.sh
RUN sh /app/build.sh && mkdir /data && echo mine > /data/owned && chown 1000:1000 /data/owned
CMD ["sh", "/app/app.sh"]
"""


def test_the_whole_workflow_as_the_user(user_busybox, busybox_tar, registry, store_root):
    """As the user: import, pull from the local registry, build the demo's app (RUN, COPY
    --chown), run with a named volume, ps -a -s, diff, commit, push; root pulls what the user
    pushed. A file made by ``RUN chown 1000:1000`` is uid 1000 inside and the mapped subordinate
    id on disk; root's store is not touched."""
    import shutil

    user = user_busybox
    root = Lamina(store_root, None)
    root("import", busybox_tar, "busybox:latest")
    root("push", "busybox:latest", f"{registry}/rootless/busybox:1")
    roots_files = store_files(store_root)
    user.lamina("pull", f"{registry}/rootless/busybox:1")
    context = os.path.join(user.home, "app")
    shutil.copytree(os.path.join(REPO, "examples", "app"), context)
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE.format(base=f"{registry}/rootless/busybox:1"))
    for dirpath, _, names in os.walk(context):
        for name in [".", *names]:
            os.chown(os.path.join(dirpath, name), user.uid, user.gid)
    user.lamina("build", "-t", "app:rootless", context)
    out = user.lamina("run", "--name", "app-1", "--network", "none", "-v", "appdata:/vol",
                      "app:rootless", "sh", "-c",
                      "stat -c '%u:%g' /data/owned /home/app/app.sh; echo kept > /vol/f; "
                      "echo new > /app/new.txt").stdout.split()
    assert out == ["1000:1000", "1000:1000"]
    start = subordinate_start(user.name)
    owned = [os.path.join(d, "diff", "data", "owned") for d in
             (os.path.join(user.store, "overlay2", n) for n in os.listdir(
                 os.path.join(user.store, "overlay2")))
             if os.path.exists(os.path.join(d, "diff", "data", "owned"))]
    assert [os.stat(p).st_uid for p in owned] == [start + 999]
    again = user.lamina("run", "--rm", "--network", "none", "-v", "appdata:/vol", "busybox",
                        "cat", "/vol/f").stdout
    assert again == "kept\n"
    ps = user.lamina("ps", "-a", "-s").stdout
    assert "app-1" in ps and "Exited (0)" in ps and "(virtual" in ps
    assert "A /app/new.txt" in user.lamina("diff", "app-1").stdout.splitlines()
    user.lamina("commit", "app-1", "app:committed")
    user.lamina("push", "app:committed", f"{registry}/rootless/app:committed")
    user.lamina("rm", "app-1")
    assert store_files(store_root) == roots_files
    root("pull", f"{registry}/rootless/app:committed")
    shown = root("run", "--rm", "--network", "none", f"{registry}/rootless/app:committed",
                 "sh", "-c", "cat /app/new.txt; stat -c %u /data/owned").stdout.split()
    assert shown == ["new", "1000"]


@pytest.mark.parametrize("fallback", ["vfs", "union"])
def test_fallback_drivers_as_the_user(rootless_user, busybox_tar, fallback):
    """The fall-backs where overlayfs does not mount: vfs, and union (FUSE) in the namespace."""
    user = rootless_user
    root = os.path.join(user.home, f"store-{fallback}")
    user.lamina("--root", root, "--driver", fallback, "import", user.give(busybox_tar), "busybox")
    cid = user.lamina("--root", root, "run", "--network", "none", "busybox", "sh", "-c",
                      "rm /bin/vi && echo made > /made && cat /made").stdout
    assert cid == "made\n"
    changes = user.lamina("--root", root, "diff", user.lamina(
        "--root", root, "ps", "-a", "-q").stdout.strip()).stdout.splitlines()
    assert "D /bin/vi" in changes and "A /made" in changes


def test_stats_from_another_cgroup_reads_the_containers(delegated_cgroups, user_busybox):
    """``stats`` run from a shell in another cgroup than the one the container was started
    from (not moved into the delegated one) reads the container's cgroup where runc made it,
    as noted when it started: the memory limit set with -m and a usage under it. The cpu
    controller is not delegated: the container's cpu cgroup is the starting shell's, which
    counts a busy neighbour too, and is not read (0%, not the neighbour's 100%)."""
    import json
    import subprocess
    import sys

    lamina, user = delegated_cgroups, user_busybox
    cid = lamina("run", "-d", "--name", "measured", "--network", "none", "-m", "48m",
                 "busybox", "sleep", "60").stdout.strip()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # this cpu cgroup
    try:
        proc = user.lamina("stats", "--no-stream", "--format", "json", "measured")
        row = json.loads(proc.stdout)
        assert row["MemUsage"].endswith(" / 48MiB"), row
        used = row["MemUsage"].split(" / ")[0]
        assert used != "0B" and row["PIDs"] == "1", row
        assert float(row["CPUPerc"].rstrip("%")) < 5, row
    finally:
        busy.kill()
        busy.wait()
        lamina("rm", "-f", cid)


def test_oom_kill_seen_by_a_monitor_in_another_cgroup(delegated_cgroups, user_busybox):
    """The container's monitor moved out of the cgroup it started runc from (into the one
    above, as a service manager may move it) still reads the OOM kill of the container's
    cgroup at its exit, from where runc made it as noted at start: State.OOMKilled."""
    import json
    import time

    from lamina.runtime import cgroups

    lamina, user = delegated_cgroups, user_busybox
    delegated = {name: os.path.join(cgroups.cgroup_dirs(os.getpid())[name],
                                    f"lamina-delegated-{os.getpid()}") for name in ("memory", "pids")}
    cid = lamina("run", "-d", "--network", "none", "-m", "16m", "busybox", "sh", "-c",
                 "sleep 2; tail /dev/zero").stdout.strip()
    try:
        moved = 0
        for directory in delegated.values():  # the monitor and its relay, not the container
            with open(os.path.join(directory, "cgroup.procs")) as f:
                pids = f.read().split()
            for pid in pids:
                with open(os.path.join(os.path.dirname(directory), "cgroup.procs"), "w") as f:
                    f.write(pid)
                moved += 1
        assert moved, "no monitor in the delegated cgroup"
        deadline = time.monotonic() + 30
        while True:
            state = json.loads(user.lamina("inspect", cid).stdout)[0]["State"]
            if state["Status"] == "exited" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert state["Status"] == "exited" and state["OOMKilled"] is True, state
    finally:
        lamina("rm", "-f", cid)
