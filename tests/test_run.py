"""Running containers under runc: ``run``, ``start``, ``stop``, ``kill``, ``wait``, ``logs``,
``exec``, ``ps`` states, and the builder's ``run_in_container``; through the real command."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from .conftest import Lamina, needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("runc") is None,
                                             reason="needs runc (apt-get install -y runc)")]


def make_image(engine, base: str, tag: str, **config) -> str:
    """``base`` with its config's ``config`` section updated (Entrypoint, Cmd, Env, ...)."""
    from lamina.image import dumps

    image_id = engine.image_store.resolve(base)
    doc = engine.image_store.config(image_id)
    doc["config"] = {**doc.get("config", {}), **config}
    layers = [(r["blob_digest"], r["blob_size"], r["media_type"])
              for r in engine.image_store.layer_rows(image_id)]
    return engine.add_image(dumps(doc), layers, [tag])


def owners(root: str) -> list[int]:
    from lamina import Engine

    engine = Engine(root=root)
    try:
        return [r[0] for r in engine.db.execute(
            "SELECT monitor_pid FROM containers WHERE state = 'running'")]
    finally:
        engine.close()


@pytest.fixture
def store(store_root, busybox_tar, request):
    """A store with ``busybox`` and ``app`` (Entrypoint/Cmd/Env/WorkingDir set); afterwards every
    container process is stopped by its owner's PID and nothing may be left mounted."""
    from lamina import Engine

    driver = getattr(request, "param", "overlay2")
    lamina = Lamina(store_root, driver)
    lamina("import", busybox_tar, "busybox")
    engine = Engine(root=store_root)
    make_image(engine, "busybox", "app:latest", Entrypoint=["echo", "ep"], Cmd=["default"],
               Env=["FROM_IMAGE=yes", "PATH=/bin:/usr/bin"], WorkingDir="/srv")
    engine.close()
    yield lamina
    for pid in owners(store_root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for cid in lamina("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
        lamina("rm", "-f", cid, check=False)
    with open("/proc/self/mountinfo") as f:
        assert store_root not in f.read()


def lines(proc) -> list[str]:
    return proc.stdout.splitlines()


@pytest.mark.parametrize("store", ["overlay2", "vfs"], indirect=True)
def test_exit_status_and_streams(store):
    proc = store("run", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert proc.returncode == 3
    assert proc.stdout == "out\n" and proc.stderr == "err\n"
    assert store("run", "busybox", "true").returncode == 0
    row = json.loads(store("ps", "-a", "--format", "json").stdout.splitlines()[-1])
    assert row["State"] == "exited" and row["Status"].startswith("Exited (3) ")


def test_flags_after_the_image_belong_to_the_command(store):
    assert store("run", "busybox", "echo", "-e", "--rm", "-d").stdout == "--rm -d\n"
    assert len(lines(store("ps", "-a", "-q"))) == 1  # --rm was not lamina's


def test_env_workdir_user(store):
    out = store("run", "-e", "A=1", "-e", "FROM_IMAGE=cli", "-w", "/work/dir", "-u", "1000:1000",
                "--entrypoint", "sh", "app", "-c", "id -u; id -g; pwd; env").stdout.splitlines()
    assert out[:3] == ["1000", "1000", "/work/dir"]
    env = dict(line.split("=", 1) for line in out[3:])
    assert env["A"] == "1" and env["FROM_IMAGE"] == "cli" and env["PATH"] == "/bin:/usr/bin"
    assert env["HOME"] == "/" and env["HOSTNAME"] == lines(store("ps", "-a", "-q"))[0]
    out = store("run", "--entrypoint", "sh", "app", "-c", "pwd; echo $FROM_IMAGE").stdout
    assert out == "/srv\nyes\n"  # the image's WorkingDir (created when missing) and Env
    os.environ["LAMINA_TEST_PASS"] = "from-host"
    try:
        assert store("run", "-e", "LAMINA_TEST_PASS", "-e", "UNSET_HERE_X", "busybox", "sh", "-c",
                     "echo $LAMINA_TEST_PASS ${UNSET_HERE_X-unset}").stdout == "from-host unset\n"
    finally:
        del os.environ["LAMINA_TEST_PASS"]


def test_user_names_resolve_in_the_container(store, store_root):
    cid = store("create", "busybox", "true").stdout.strip()
    root = store("mount", cid).stdout.strip()
    with open(os.path.join(root, "etc/passwd"), "a") as f:
        f.write("app:x:1500:1600:App:/home/app:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "a") as f:
        f.write("appgrp:x:1600:\nextra:x:1700:app\n")
    store("umount", cid)
    store("commit", cid, "users")
    assert store("run", "-u", "app", "users", "sh", "-c", "id; echo $HOME").stdout == (
        "uid=1500(app) gid=1600(appgrp) groups=1600(appgrp),1700(extra)\n/home/app\n")
    assert store("run", "-u", "app:extra", "users", "id", "-g").stdout == "1700\n"
    proc = store("run", "-u", "nobody", "users", "id", check=False)
    assert proc.returncode == 125
    assert proc.stderr == "Error: unable to find user nobody: no matching entries in passwd file\n"


def test_entrypoint_and_cmd_combination(store):
    assert store("run", "app").stdout == "ep default\n"
    assert store("run", "app", "x", "y").stdout == "ep x y\n"
    assert store("run", "--entrypoint", "echo", "app").stdout == "\n"  # image Cmd dropped
    assert store("run", "--entrypoint", "echo", "app", "z").stdout == "z\n"
    assert store("run", "--entrypoint", "", "app", "echo", "reset").stdout == "reset\n"
    rows = [json.loads(r) for r in store("ps", "-a", "--format", "json", "--no-trunc").stdout.split("\n") if r]
    assert rows[-1]["Command"] == '"echo ep default"'


def test_rm_leaves_nothing(store, store_root):
    from .conftest import store_files

    store("run", "--rm", "-v", "/anon", "busybox", "true")  # the first makes the store's dirs
    before = store_files(store_root)
    assert store("run", "--rm", "-v", "/anon", "busybox", "sh", "-c", "echo x > /f").returncode == 0
    assert store("ps", "-a", "-q").stdout == ""
    assert store("volume", "ls", "-q").stdout == ""  # its anonymous volume went with it
    assert store_files(store_root) == before
    proc = store("run", "--rm", "busybox", "sh", "-c", "exit 9", check=False)
    assert proc.returncode == 9 and store("ps", "-a", "-q").stdout == ""


def test_detached_logs_wait_stop(store):
    cid = store("run", "-d", "--name", "sleeper", "busybox", "sh", "-c",
                "echo started; echo oops >&2; sleep 100").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    ps = lines(store("ps"))
    assert len(ps) == 2 and "sleeper" in ps[1] and re.search(r"   Up (Less than a second|\d+ seconds?)", ps[1])
    for _ in range(50):
        proc = store("logs", "sleeper")
        if proc.stderr:
            break
        time.sleep(0.05)
    assert proc.stdout == "started\n" and proc.stderr == "oops\n"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z started\n$",
                    store("logs", "-t", "--tail", "2", "sleeper").stdout)
    proc = store("rm", "sleeper", check=False)
    assert proc.returncode == 1 and "You cannot remove a running container" in proc.stderr
    begin = time.monotonic()
    assert store("stop", "-t", "1", "sleeper").stdout == "sleeper\n"
    took = time.monotonic() - begin
    assert 1 <= took < 6, took  # sh as PID 1 ignores SIGTERM: SIGKILL after the timeout
    assert store("wait", "sleeper").stdout == "137\n"
    assert re.search(r"Exited \(137\) (Less than a second|\d+ seconds?) ago", store("ps", "-a").stdout)
    assert store("ps", "-q").stdout == ""


def test_stop_is_quick_when_the_process_handles_sigterm(store):
    store("run", "-d", "--name", "polite", "busybox", "sh", "-c",
          "trap 'echo bye; exit 7' TERM; while :; do sleep 0.1; done")
    begin = time.monotonic()
    store("stop", "polite")  # the default 10 s timeout is not used up
    assert time.monotonic() - begin < 5
    assert store("wait", "polite").stdout == "7\n"
    assert store("logs", "polite").stdout == "bye\n"
    # started again, it runs the same command and appends to the same log
    assert store("start", "polite").stdout == "polite\n"
    store("kill", "polite")
    assert store("wait", "polite").stdout == "137\n"


def test_kill_with_a_signal(store):
    store("run", "-d", "--name", "kk", "busybox", "sh", "-c",
          "trap 'echo got USR1; exit 5' USR1; echo ready; while :; do sleep 0.1; done")
    for _ in range(100):
        if store("logs", "kk").stdout:
            break
        time.sleep(0.05)
    assert store("kill", "-s", "USR1", "kk").stdout == "kk\n"
    assert store("wait", "kk").stdout == "5\n"
    assert store("logs", "kk").stdout == "ready\ngot USR1\n"
    proc = store("kill", "kk", check=False)
    assert proc.returncode == 1 and "is not running" in proc.stderr
    proc = store("kill", "-s", "NOPE", "kk", check=False)
    assert proc.returncode == 1 and "invalid signal: NOPE" in proc.stderr


def test_exec_into_a_running_container(store):
    cid = store("run", "-d", "--name", "box", "-e", "RUNENV=1", "busybox", "sleep", "100").stdout.strip()
    proc = store("exec", "box", "sh", "-c", "echo $HOSTNAME $RUNENV; ps -o pid,comm | grep -c sleep; exit 4",
                 check=False)
    assert proc.returncode == 4 and proc.stdout == f"{cid[:12]} 1\n1\n"
    assert store("exec", "-e", "X=2", "-u", "1000", "-w", "/tmp", "box", "sh", "-c",
                 "echo $X $(id -u) $(pwd)").stdout == "2 1000 /tmp\n"
    proc = store("exec", "box", "nonexist", check=False)
    assert proc.returncode == 127 and proc.stderr.startswith('Error: exec: "nonexist"')
    assert store("exec", "-i", "box", "cat", input="piped\n").stdout == "piped\n"
    store("kill", "box")
    store("wait", "box")
    proc = store("exec", "box", "true", check=False)
    assert proc.returncode == 125 and "is not running" in proc.stderr


def test_start_attach_of_a_created_container(store):
    store("create", "--name", "ctr", "busybox", "sh", "-c", "echo from-start; exit 2")
    assert "Created" in store("ps", "-a").stdout
    proc = store("start", "-a", "ctr", check=False)
    assert proc.returncode == 2 and proc.stdout == "from-start\n"
    assert "Exited (2)" in store("ps", "-a").stdout
    assert store("logs", "ctr").stdout == "from-start\n"


def test_read_only_root(store):
    proc = store("run", "--read-only", "busybox", "sh", "-c", "touch /x", check=False)
    assert proc.returncode == 1 and "Read-only file system" in proc.stderr
    assert store("run", "--read-only", "-v", "scratch:/scratch", "busybox", "sh", "-c",
                 "echo ok > /scratch/f && cat /scratch/f").stdout == "ok\n"


def test_networks(store):
    devices = store("run", "busybox", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1").stdout
    assert sorted(devices.split()) == ["eth0", "lo"]  # the default, bridge (tests/test_network.py)
    out = store("run", "--network", "none", "busybox", "sh", "-c",
                "tail -n +3 /proc/net/dev | cut -d: -f1").stdout
    assert out.split() == ["lo"]  # none: a namespace with only loopback
    assert "inet 127.0.0.1/8" in store("run", "--network", "none", "busybox", "ip", "addr").stdout
    def host_devices() -> set[str]:
        with open("/proc/net/dev") as f:
            return {line.split(":")[0].strip() for line in f.readlines()[2:]}

    before = host_devices()
    out = store("run", "--network", "host", "busybox", "sh", "-c",
                "tail -n +3 /proc/net/dev | cut -d: -f1").stdout
    after = host_devices()  # (veths of other containers may come and go meanwhile)
    assert before & after <= set(out.split()) <= before | after and "eth0" in out.split()
    made = store("ps", "-a", "-q").stdout
    proc = store("run", "--network", "nosuch", "busybox", "true", check=False)
    assert proc.returncode == 125 and proc.stderr == "Error: network nosuch not found\n"
    assert store("ps", "-a", "-q").stdout == made  # nothing made


def test_bad_input_is_a_one_line_error(store):
    for args, code, message in [
        (["run", "nope"], 125, "Error: No such image: nope"),
        (["run", "busybox"], 125, "Error: No command specified"),
        (["run", "busybox", "nonexist"], 127, 'Error: exec: "nonexist": executable file not found'),
        (["run", "busybox", "/etc/passwd"], 126, "Error: exec: \"/etc/passwd\": permission denied"),
        (["run", "-v", "a:b:c:d", "busybox", "true"], 125, "Error: invalid volume specification"),
        (["run", "-v", "./rel:/x", "busybox", "true"], 125,
         "Error: './rel' includes invalid characters for a local volume name"),
        (["run", "-v", "vol:rel", "busybox", "true"], 125, "Error: invalid volume specification"),
        (["run", "-w", "rel", "busybox", "true"], 125, "Error: the working directory 'rel' is invalid"),
        (["run", "--name", "bad name", "busybox", "true"], 125, "Error: Invalid container name"),
        (["start", "nope"], 1, "Error: No such container: nope"),
        (["exec", "nope", "true"], 125, "Error: No such container: nope"),
    ]:
        proc = store(*args, check=False)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith(message), (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    # failed runs leave created containers, as Docker's do; nothing is running or mounted
    assert store("ps", "-q").stdout == ""


def test_rm_force_stops_a_running_container(store):
    store("run", "-d", "--name", "ff", "busybox", "sleep", "100")
    [pid] = owners(store.root)
    assert store("rm", "-f", "ff").stdout == "ff\n"
    assert store("ps", "-a", "-q").stdout == ""
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_a_dead_owner_shows_as_exited(store):
    store("run", "-d", "--name", "orphan", "busybox", "sleep", "100")
    [pid] = owners(store.root)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if "Exited (255)" in store("ps", "-a").stdout:
            break
        time.sleep(0.05)
    assert "Exited (255)" in store("ps", "-a").stdout
    assert store("ps", "-q").stdout == ""
    assert store("rm", "orphan").stdout == "orphan\n"  # cleans up the runtime's leftovers


def test_run_in_container_for_the_builder(store, store_root):
    from lamina import Engine
    from lamina.runtime.oci import RuntimeFailure
    from lamina.runtime.process import run_in_container

    engine = Engine(root=store_root)
    try:
        cid = engine.create("app")
        r, w = os.pipe()
        code = run_in_container(engine.container_store, cid, ["sh", "-c", "echo built > /out; pwd; echo $A"],
                                env=["A=b", "PATH=/bin"], workdir="/build", stdout=w, stderr=w)
        assert code == 0
        code = run_in_container(engine.container_store, cid, ["sh", "-c", "id -u; echo $FROM_IMAGE; echo e >&2"],
                                user="1000", network="host", stdout=w, stderr=w)
        os.close(w)
        with os.fdopen(r) as f:
            lines = f.read().splitlines()
        # stdout and stderr share one pipe here but reach it through separate copies, so where
        # the second command's stderr line falls among its stdout lines is not defined
        assert lines[:2] == ["/build", "b"] and sorted(lines[2:]) == ["1000", "e", "yes"]
        assert [line for line in lines[2:] if line != "e"] == ["1000", "yes"]
        assert code == 0
        assert [(c.kind, c.path) for c in engine.diff(cid)] == [("A", "/build"), ("A", "/out"),
                                                               ("A", "/srv")]
        assert run_in_container(engine.container_store, cid, ["sh", "-c", "exit 6"]) == 6
        with pytest.raises(RuntimeFailure) as e:
            run_in_container(engine.container_store, cid, ["nonexist"])
        assert e.value.exit_code == 127
        assert engine.inspect_container(cid)["State"]["Status"] == "created"
        assert not os.path.ismount(engine.store.mount_target(cid))
    finally:
        engine.close()


def test_wait_on_a_created_container_blocks_until_it_is_started_and_exits(store):
    """Docker's ``wait`` on a container never started: it waits for some other command to start
    it, then for its process to end, and prints that exit code."""
    import subprocess
    import sys

    cid = store("create", "--name", "later", "busybox", "sh", "-c", "exit 7").stdout.strip()
    cmd = [sys.executable, "-m", "lamina", "--root", store.root, "--driver", store.driver,
           "wait", "later"]
    waiter = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting: nothing has started it
    store("start", cid)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == "7"


def _read_until(fd: int, pattern: bytes, timeout: float = 30) -> bytes:
    """What the terminal's master ``fd`` shows until ``pattern`` appears."""
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while pattern not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"{pattern!r} never came; the terminal showed {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is gone
            chunk = b""
        if not chunk:
            raise AssertionError(f"{pattern!r} never came; the terminal showed {data!r}")
        data += chunk
    return data


def test_run_it_gives_the_container_a_terminal(store):
    """`lamina run -it IMAGE sh` on a terminal of our own: the shell runs on a pty of the
    container's (`tty` prints /dev/pts/N), reads what is typed, sees the caller's window size and
    its changes, and its exit status is lamina's; the caller's terminal is restored."""
    import fcntl
    import pty
    import struct
    import sys
    import termios

    cmd = [sys.executable, "-m", "lamina", "--root", store.root, "--driver", store.driver, "run",
           "-it", "--rm", "busybox", "sh"]
    pid, master = pty.fork()
    if pid == 0:
        os.execv(sys.executable, cmd)
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        before = termios.tcgetattr(master)
        _read_until(master, b"# ")
        os.write(master, b"tty; echo $((6 * 7))\r")
        shown = _read_until(master, b"42\r\n")
        assert re.search(rb"/dev/pts/\d+\r\n", shown), shown
        os.write(master, b"stty size\r")
        assert b"30 100\r\n" in _read_until(master, b"30 100\r\n")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # SIGWINCH
        time.sleep(0.3)
        os.write(master, b"stty size\r")
        assert b"40 120\r\n" in _read_until(master, b"40 120\r\n")
        os.write(master, b"exit 3\r")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
        assert termios.tcgetattr(master)[3] == before[3]  # local modes (echo, icanon) restored
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)


def test_run_and_exec_it_start_with_the_callers_window_size(store):
    """`lamina run -it` and `exec -it`: the process's terminal has the caller's size before the
    process runs (runc sets the spec's consoleSize), so a first `stty size` sees it; a size set
    once it runs came too late for one that quick, now and then ("stty: standard input")."""
    import fcntl
    import pty
    import struct
    import sys
    import termios

    store("run", "-d", "--name", "bg", "busybox", "sleep", "60")
    lamina = [sys.executable, "-m", "lamina", "--root", store.root, "--driver", store.driver]
    for verb in (["run", "-it", "--rm", "busybox"], ["exec", "-it", "bg"]):
        for _ in range(3):
            pid, master = pty.fork()
            if pid == 0:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 101, 0, 0))
                os.execv(sys.executable, [*lamina, *verb, "stty", "size"])
            try:
                shown = _read_until(master, b"\r\n")
                assert shown.endswith(b"31 101\r\n"), (verb, shown)
                os.waitpid(pid, 0)
                pid = 0
            finally:
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                os.close(master)
    store("rm", "-f", "bg")


def test_detached_tty_is_logged_and_exec_t_gets_a_terminal(store, store_root):
    """`run -d -t`: the monitor keeps the terminal and writes what it shows to the log;
    `exec -t` without a terminal of its own still gives the process one. The console socket
    runc handed the terminal over is gone once it has (nothing in ingest/ or /tmp to leak)."""
    began = time.time() - 1
    store("run", "-d", "-t", "--name", "bg", "busybox", "sh", "-c",
          "tty; echo out; echo err >&2; exec sleep 100")
    deadline = time.monotonic() + 20
    while "err" not in store("logs", "bg").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [n for n in os.listdir(os.path.join(store_root, "ingest")) if "-console-" in n]
    assert not [n for n in os.listdir("/tmp") if n.startswith("lamina-console-")
                and os.stat(os.path.join("/tmp", n)).st_mtime >= began]
    logged = store("logs", "bg")
    # (text mode reads the terminal's \r\n as \n)
    assert re.match(r"/dev/pts/\d+\nout\nerr\n$", logged.stdout), logged
    assert logged.stderr == ""  # a terminal has one stream
    proc = store("exec", "-t", "bg", "sh", "-c", "tty; echo $TERM; exit 4", check=False)
    assert proc.returncode == 4
    assert re.match(r"/dev/pts/\d+\nxterm\n$", proc.stdout), proc
    assert store("exec", "bg", "sh", "-c", "tty || true").stdout == "not a tty\n"
    proc = store("exec", "-it", "bg", "true", check=False)  # stdin here is not a terminal
    assert proc.returncode == 1 and proc.stderr == "Error: the input device is not a TTY\n"
    proc = store("run", "-it", "busybox", "true", check=False)
    assert proc.returncode == 1 and proc.stderr == "Error: the input device is not a TTY\n"
    store("kill", "bg")
    assert store("wait", "bg").stdout.strip() == "137"


def test_a_container_being_started_is_owned_before_it_runs(store, store_root):
    """run/start claim the container (state running, owner this process, pid 0) before they
    mount and prepare it: rm without -f refuses it and container prune leaves it, so neither can
    delete it under the starter's feet; a start that fails gives the claim back."""
    from lamina import Engine
    from lamina.errors import FailedPrecondition
    from lamina.processes import start_time as process_start_time
    from lamina.runtime.monitor import supervise
    from lamina.runtime.oci import RuntimeFailure
    from lamina.runtime.ownership import become_owner

    engine = Engine(root=store_root)
    try:
        cid = engine.create("busybox", name="starting", command=["/no/such/binary"])
        row = become_owner(engine.container_store, "starting")
        assert row["state"] == "running" and row["pid"] == 0 and row["monitor_pid"] == os.getpid()
        with pytest.raises(FailedPrecondition, match="running container"):
            engine.rm("starting")
        assert engine.prune_containers() == ([], 0)
        other = subprocess.Popen(["sleep", "30"])  # another live owner: the claim is refused
        try:
            engine.db.execute("UPDATE containers SET monitor_pid = ?, monitor_start = ? WHERE id = ?",
                              (other.pid, process_start_time(other.pid), cid))
            with pytest.raises(FailedPrecondition, match="already running"):
                become_owner(engine.container_store, "starting")
        finally:
            other.kill()
            other.wait()
        # the owner must not stay this test process: the fixture stops owners by PID
        engine.db.execute("UPDATE containers SET state = 'created' WHERE id = ?", (cid,))
        with pytest.raises(RuntimeFailure):
            supervise(engine.container_store, "starting")
        assert engine.container_store.get("starting")["state"] == "created"
        assert engine.prune_containers()[0] == [cid]
    finally:
        engine.close()


def test_a_container_being_run_is_owned_from_its_creation(store, store_root, tmp_path,
                                                          monkeypatch):
    """``run`` creates the container already claimed by itself, so a ``container prune`` or an
    ``rm`` while it mounts the container to seed a named volume (before its process runs) cannot
    delete it; ``ps`` and ``inspect`` show it meanwhile. The prune and the others run in the
    middle of ``volumes.attach``, the window between creating the container and starting it."""
    from lamina import Engine, volumes
    from lamina.runtime.lifecycle import run
    from lamina.runtime.oci import RunConfig
    from lamina.runtime.ownership import release

    seen = {}
    attach = volumes.attach

    def others_meanwhile(engine, cid, specs, rootfs, binds=()):
        seen["cid"] = cid
        seen["prune"] = store("container", "prune", "-f")
        seen["rm"] = store("rm", cid, check=False)
        seen["ps"] = json.loads(store("ps", "--format", "json").stdout)
        seen["inspect"] = json.loads(store("inspect", cid).stdout)[0]
        return attach(engine, cid, specs, rootfs, binds)

    monkeypatch.setattr(volumes, "attach", others_meanwhile)
    out = tmp_path / "out"
    engine = Engine(root=store_root)
    try:
        with open(out, "wb") as f:
            cid, code = run(engine.container_store, "busybox", ["sh", "-c", "echo ran > /data/f; echo ok"],
                            config=RunConfig(volumes=(("vol", "/data", False),)),
                            stdout=f.fileno())
    finally:
        if "cid" in seen:  # the owner must not stay this test process: the fixture kills owners
            release(engine.container_store, seen["cid"])
        engine.close()
    assert (cid, code) == (seen["cid"], 0) and out.read_text() == "ok\n"
    assert cid not in seen["prune"].stdout
    assert seen["rm"].returncode != 0 and "cannot remove a running container" in seen["rm"].stderr
    assert seen["ps"]["ID"] == cid[:12] and seen["ps"]["State"] == "running"
    assert seen["ps"]["Status"].startswith("Up ")
    assert seen["inspect"]["State"]["Running"] is True
    row = json.loads(store("ps", "-a", "--format", "json").stdout)
    assert row["ID"] == cid[:12] and row["Status"].startswith("Exited (0) ")
    assert store("volume", "inspect", "vol").returncode == 0
    assert store("run", "--rm", "-v", "vol:/data", "busybox", "cat", "/data/f").stdout == "ran\n"


def test_run_detached_hands_its_claim_to_the_monitor(store, store_root, monkeypatch):
    """``run -d`` creates the container claimed by itself and hands the claim to the monitor it
    spawns (``LAMINA_HANDOVER``): a prune before the handover (while the volume is seeded) and
    one right after ``run -d`` returns both leave it running, owned by the monitor."""
    from lamina import Engine, volumes
    from lamina.runtime.lifecycle import run
    from lamina.runtime.oci import RunConfig
    from lamina.runtime.ownership import monitor_alive, release

    seen = {}
    attach = volumes.attach

    def prune_meanwhile(engine, cid, specs, rootfs, binds=()):
        seen["cid"] = cid
        seen["prune"] = store("container", "prune", "-f")
        return attach(engine, cid, specs, rootfs, binds)

    monkeypatch.setattr(volumes, "attach", prune_meanwhile)
    engine = Engine(root=store_root)
    try:
        cid, code = run(engine.container_store, "busybox", ["sleep", "30"], name="bg",
                        config=RunConfig(volumes=(("vol", "/data", False),)), detach=True)
        row = engine.container_store.get(cid)
    finally:
        if "cid" in seen:
            release(engine.container_store, seen["cid"])
        engine.close()
    assert code is None and cid not in seen["prune"].stdout
    assert row["state"] == "running" and row["pid"] and monitor_alive(row)
    assert row["monitor_pid"] != os.getpid()  # the monitor's now
    assert cid not in store("container", "prune", "-f").stdout
    assert lines(store("ps", "-q", "--no-trunc")) == [cid]
    # through the command itself: run -d, then a prune at once
    cid2 = store("run", "-d", "--name", "bg2", "-v", "vol:/data", "busybox", "sleep", "30").stdout
    assert cid2.strip() not in store("container", "prune", "-f").stdout
    assert sorted(lines(store("ps", "-q", "--no-trunc"))) == sorted([cid, cid2.strip()])
    store("stop", "-t", "0", "bg", "bg2")
    assert store("wait", "bg").stdout.strip() == "137"


def test_a_run_that_fails_before_its_process_gives_the_claim_back(store, store_root, monkeypatch):
    """Every way out of ``run`` before the process runs gives the claim back before removing the
    container (``rm -f`` of a container claimed by a live owner would wait for a process that
    never comes): seeding a volume fails; the monitor of ``run -d`` dies before taking the claim
    over (left ``created`` without ``--rm``, gone with it); its process cannot start."""
    from lamina import Engine, volumes
    from lamina.errors import LaminaError
    from lamina.runtime.lifecycle import run
    from lamina.runtime.oci import RunConfig, RuntimeFailure
    from lamina.runtime.ownership import release

    def fails(engine, cid, specs, rootfs, binds=()):
        raise LaminaError("seeding failed")

    engine = Engine(root=store_root)
    made = []
    create = engine.container_store.create

    def recorded(*args, **options):
        made.append(create(*args, **options))
        return made[-1]

    monkeypatch.setattr(engine.container_store, "create", recorded)
    try:
        with monkeypatch.context() as m:
            m.setattr(volumes, "attach", fails)
            started = time.monotonic()
            with pytest.raises(LaminaError, match="seeding failed"):
                run(engine.container_store, "busybox", ["true"], config=RunConfig(volumes=(("v", "/d", False),)))
            assert time.monotonic() - started < 5
        assert engine.containers() == []
        with monkeypatch.context() as m:  # the monitor's interpreter cannot even start
            m.setenv("PYTHONHOME", "/nonexistent")
            with pytest.raises(LaminaError, match="failed before starting"):
                run(engine.container_store, "busybox", ["sleep", "30"], name="left", detach=True)
            with pytest.raises(LaminaError, match="failed before starting"):
                run(engine.container_store, "busybox", ["sleep", "30"], name="gone", detach=True,
                    config=RunConfig(auto_remove=True))
        row = engine.container_store.get("left")
        assert (row["state"], row["pid"], row["monitor_pid"]) == ("created", 0, 0)
        assert [c["Names"] for c in engine.containers()] == ["left"]
        with pytest.raises(RuntimeFailure):  # the monitor took the claim over, then gave it back
            run(engine.container_store, "busybox", ["/no/such/binary"], name="bad", detach=True)
        assert engine.container_store.get("bad")["state"] == "created"
        started = time.monotonic()
        assert sorted(engine.prune_containers()[0]) == sorted(made[1:2] + made[3:])
        assert time.monotonic() - started < 5
    finally:
        for cid in made:
            release(engine.container_store, cid)
        engine.close()


def test_wait_follows_the_claim_to_the_monitor(store, store_root):
    """``wait`` on a container whose claim is still that of the ``run -d`` that created it waits
    on, once that process has handed the claim to the monitor and left, the monitor: the exit
    code is the process's, not that of a container still running."""
    import sys

    script = ("import sys\n"
              "from lamina import Engine\n"
              "from lamina.runtime.monitor import spawn\n"
              f"engine = Engine(root={store_root!r})\n"
              "cid = engine.create('busybox', name='handed', command=['sh', '-c', 'sleep 1; exit 3'],"
              " claimed=True)\n"
              "print(cid, flush=True)\n"
              "sys.stdin.read()\n"
              "spawn(engine.container_store, cid)\n")
    starter = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        cid = starter.stdout.readline().strip()
        waiter = subprocess.Popen([sys.executable, "-m", "lamina", "--root", store_root, "wait",
                                   "handed"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # the waiter is waiting on the starter, the claim's owner
        assert waiter.poll() is None
        assert cid not in store("container", "prune", "-f").stdout
        starter.stdin.close()
        assert starter.wait(30) == 0
        out, _ = waiter.communicate(timeout=30)
        assert out.strip() == "3"
    finally:
        starter.kill()
        starter.wait()


def test_cp_reaches_the_volumes_the_container_mounts(store, tmp_path):
    """``cp`` to or from a path under a volume or bind mount uses that volume, as the container
    sees it (Docker mounts them for the copy), whether the container runs or not."""
    bind = tmp_path / "bind"
    bind.mkdir()
    store("run", "--name", "ctr", "-v", "data:/vol", "-v", f"{bind}:/srv/bind", "busybox",
          "sh", "-c", "cat /vol/in /vol/d/deep /srv/bind/in", check=False)  # exits: not there
    src = tmp_path / "in"
    src.write_text("copied in\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "deep").write_text("deeper\n")
    store("cp", src, "ctr:/vol")  # into the volume's root
    store("cp", tmp_path / "d", "ctr:/vol/d")
    store("cp", src, "ctr:/srv/bind/")
    assert (bind / "in").read_text() == "copied in\n"
    proc = store("start", "-a", "ctr")
    assert proc.stdout == "copied in\ndeeper\ncopied in\n"
    out = tmp_path / "out"
    out.mkdir()
    store("cp", "ctr:/vol", out)  # the volume's root, under the name it has in the container
    assert sorted(os.listdir(out / "vol")) == ["d", "in"]
    store("cp", "ctr:/vol/d/.", out / "contents")
    assert (out / "contents" / "deep").read_text() == "deeper\n"
    # nothing of it went into the container's own layer under the mount points (which runc
    # made there: the diff shows them, as Docker's does)
    changed = [line.split()[1] for line in store("diff", "ctr").stdout.splitlines()]
    assert "/vol" in changed and not [p for p in changed if p.startswith(("/vol/", "/srv/bind/"))]


def test_add_host_in_run_create_build_and_bad_input(store, tmp_path):
    """``--add-host HOST:IP`` (and HOST=IP, IPv6) in the container's /etc/hosts on every network
    mode and in a build's RUN steps, kept with the container for its next start."""
    for network in ("bridge", "none", "host"):
        hosts = store("run", "--rm", "--network", network, "--add-host", "db.test:10.1.2.3",
                      "--add-host", "v6.test=::1", "busybox", "cat", "/etc/hosts").stdout
        assert "10.1.2.3\tdb.test\n" in hosts and "::1\tv6.test\n" in hosts, network
    store("create", "--name", "later", "--add-host", "late.test:192.0.2.7", "busybox", "sh",
          "-c", "grep late.test /etc/hosts")
    assert store("start", "-a", "later").stdout == "192.0.2.7\tlate.test\n"
    doc = json.loads(store("inspect", "later").stdout)[0]
    assert doc["HostConfig"]["ExtraHosts"] == ["late.test:192.0.2.7"]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN grep built.test /etc/hosts > /seen\n")
    store("build", "-q", "--add-host", "built.test:127.0.0.2", "-t", "withhost", ctx)
    assert store("run", "--rm", "withhost", "cat", "/seen").stdout == "127.0.0.2\tbuilt.test\n"
    made = store("ps", "-a", "-q").stdout
    for bad in ("nocolon", "host:999.1.1.1", ":1.2.3.4"):
        proc = store("run", "--add-host", bad, "busybox", "true", check=False)
        assert proc.returncode == 125, bad
        assert proc.stderr.startswith(f'Error: invalid argument "{bad}" for "--add-host" flag')
    assert store("ps", "-a", "-q").stdout == made  # nothing made


def test_inspect_format_labels_and_hostname(store):
    """``inspect -f`` (Docker's Go template: fields, json, index, maps and lists as Go prints
    them), ``--label`` and ``-h/--hostname`` on create and run."""
    store("create", "--name", "ff", "-l", "tier=web", "--label", "bare", "-h", "named-host",
          "-e", "A=1", "--network", "none", "busybox", "hostname")
    out = store("inspect", "-f", '{{.Name}}|{{.State.Status}}|{{json .Config.Labels}}|'
                "{{.Config.Labels}}|{{index .Config.Labels \"tier\"}}|{{.State.Running}}|"
                "{{.Config.Hostname}}|{{.Nope}}", "ff").stdout
    assert out == ('/ff|created|{"bare":"","tier":"web"}|map[bare: tier:web]|web|false|'
                   "named-host|<no value>\n")
    assert store("start", "-a", "ff").stdout == "named-host\n"
    lines = store("inspect", "--format", "{{.Id}} {{json .RootFS.Type}}", "ff", "busybox").stdout
    assert len(lines.splitlines()) == 2 and lines.splitlines()[1].endswith('"layers"')
    assert store("ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout == "ff\n"
    proc = store("inspect", "-f", "{{range .Mounts}}x{{end}}", "ff", check=False)
    assert proc.returncode != 0 and "lamina reads" in proc.stderr and "Traceback" not in proc.stderr
    store("volume", "create", "fmtvol")
    assert store("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "fmtvol").stdout == \
        "fmtvol local\n"
    assert store("network", "inspect", "-f", "{{.Name}} {{.Driver}}", "none").stdout == \
        "none null\n"
