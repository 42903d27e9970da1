"""Peer engines for the side-by-side benchmark: Docker Engine and Podman on private stores.

Everything lives under BASE (/var/tmp/lamina-bench by default, /var/tmp because file creation
under /tmp was much slower on the reference machine).  Nothing touches the system's own
/var/lib/docker, /var/lib/containers, /run/docker.sock or ~/.docker.

* Docker: a dockerd started by us (overlay2, no iptables, no bridge) on a private unix socket;
  it is stopped by its PID (SIGTERM, then SIGKILL), and so is every descendant it left behind
  (its managed containerd, shims). ``Docker(network=True)`` (bench/network.py) starts it with
  a bridge (a private one, ``lbenchdocker0``: another dockerd started with --bridge=none deletes
  docker0), iptables rules and userland proxy, as users run it; the host's iptables rules are
  saved before and restored after it, and the bridge is deleted.
* Podman: daemonless; a private containers.conf (runc, cgroupfs, ulimits, file events),
  storage.conf and --root/--runroot/--tmpdir.  Cleanup removes its containers and unmounts.

After either stops, every mount left under its directory is unmounted (deepest first).

Plain standard library; usable on its own:
    python3 bench/peers.py start|stop   (start leaves dockerd running and prints DOCKER_HOST)
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE = Path(os.environ.get("LAMINA_BENCH_BASE", "/var/tmp/lamina-bench"))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process and mount helpers

_lock_fd: int | None = None


def lock_base() -> None:
    """Take an exclusive lock on BASE/.lock for this process's lifetime, so that two runs
    cannot stop each other's dockerd or delete each other's stores."""
    global _lock_fd
    if _lock_fd is not None:
        return
    BASE.mkdir(parents=True, exist_ok=True)
    fd = os.open(BASE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SystemExit(f"another benchmark run holds {BASE}/.lock (pid {other}); "
                         "wait for it to finish") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _lock_fd = fd


def _children(pid: int) -> list[int]:
    """Direct children of pid (via /proc/PID/task/*/children)."""
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return kids
    for t in tasks:
        try:
            kids += [int(x) for x in (t / "children").read_text().split()]
        except OSError:
            pass
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in _children(p):
            if c not in out:
                out.append(c)
                todo.append(c)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 20.0, name: str = "") -> None:
    """SIGTERM pid, wait up to timeout, then SIGKILL it.  Only ever the given PID."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    log(f"{name or pid}: still alive after SIGTERM, sending SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path).rstrip("/")
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        mp = fields[4].encode().decode("unicode_escape")  # \040 etc.
        if mp == prefix or mp.startswith(prefix + "/"):
            found.append(mp)
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def unmount_all(path: Path) -> None:
    for _ in range(5):
        mps = mounts_under(path)
        if not mps:
            return
        for mp in mps:
            subprocess.run(["umount", mp], capture_output=True, timeout=30, check=False)
        for mp in mounts_under(path):
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30, check=False)
    left = mounts_under(path)
    if left:
        log(f"could not unmount: {left}")


def remove_tree(path: Path) -> None:
    """Unmount everything under path, then delete it."""
    if not path.exists():
        return
    unmount_all(path)
    if mounts_under(path):
        log(f"not deleting {path}: mounts remain")
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # e.g. immutable or busy files: try rm -rf once
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True,
                       timeout=300, check=False)


def run(cmd: list[str], env: dict | None = None, timeout: float = 120, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, input=input, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(
            f"command failed ({p.returncode}): {' '.join(cmd)}\n"
            f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p


# ---------------------------------------------------------------- Docker

class Docker:
    name = "docker"

    def __init__(self, base: Path = BASE, network: bool = False):
        self.network = network
        self.saved_rules: bytes | None = None
        self.dir = base / "docker"
        self.data_root = self.dir / "data"
        self.exec_root = self.dir / "exec"
        self.sock = self.exec_root / "docker.sock"
        self.pidfile = self.exec_root / "dockerd.pid"
        self.logfile = self.dir / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.pids_seen: set[int] = set()
        self.env = dict(os.environ)
        self.env["DOCKER_HOST"] = f"unix://{self.sock}"
        self.env["DOCKER_CONFIG"] = str(self.dir / "cli-config")
        self.env.pop("DOCKER_CONTEXT", None)

    def cli(self, *args: str) -> list[str]:
        return ["docker", *args]

    def version(self) -> str:
        p = run(["docker", "version", "--format", "{{.Server.Version}} (client {{.Client.Version}})"],
                env=self.env, check=False, timeout=30)
        return p.stdout.decode().strip() or "?"

    def start(self, timeout: float = 60) -> None:
        self.stop()          # a leftover from an earlier, killed run
        remove_tree(self.dir)
        for d in (self.data_root, self.exec_root, self.dir / "cli-config"):
            d.mkdir(parents=True, exist_ok=True)
        cmd = ["dockerd",
               "--data-root", str(self.data_root),
               "--exec-root", str(self.exec_root),
               "--pidfile", str(self.pidfile),
               "-H", f"unix://{self.sock}",
               *(["--ip6tables=false", f"--bridge={self.BRIDGE}"] if self.network else
                 ["--iptables=false", "--ip6tables=false", "--bridge=none"]),
               "--storage-driver", "overlay2",
               "--default-ulimit", "nofile=20000:20000",
               "--log-level", "warn"]
        if self.network:  # dockerd's rules (and FORWARD's DROP policy) go when it stops
            self.saved_rules = run(["iptables-save"], timeout=30).stdout
            self._make_bridge()
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=self.env)
        self.pids_seen.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}; see {self.logfile}")
            if self.sock.exists():
                p = run(["docker", "info", "--format", "{{.Driver}}"], env=self.env,
                        check=False, timeout=30)
                if p.returncode == 0:
                    drv = p.stdout.decode().strip()
                    if drv != "overlay2":
                        raise RuntimeError(f"dockerd storage driver is {drv!r}, not overlay2")
                    self._remember_descendants()
                    return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {timeout}s; see {self.logfile}")

    def _remember_descendants(self) -> None:
        if self.proc is not None:
            self.pids_seen.update(descendants(self.proc.pid))

    def stop(self) -> None:
        pid = None
        if self.proc is not None:
            pid = self.proc.pid
        elif self.pidfile.exists():  # started by an earlier run of ours
            try:
                pid = int(self.pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not (cmdline and cmdline[0].endswith(b"dockerd")
                        and str(self.data_root).encode() in cmdline):
                    pid = None
            except (OSError, ValueError):
                pid = None
        if pid is not None:
            self.pids_seen.add(pid)
            self.pids_seen.update(descendants(pid))
            if self.sock.exists() and pid_alive(pid):
                # remove running containers while the daemon can still do it cleanly (stopped
                # ones are only directories, which go with the data root: removing thousands
                # through the daemon took minutes)
                p = run(["docker", "ps", "-q"], env=self.env, check=False, timeout=60)
                ids = p.stdout.decode().split()
                if ids:
                    run(["docker", "rm", "-f", *ids], env=self.env, check=False, timeout=300)
                self.pids_seen.update(descendants(pid))
            stop_pid(pid, timeout=30, name="dockerd")
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        # the managed containerd and shims should have gone with dockerd; make sure, by PID
        for p in sorted(self.pids_seen):
            if p != pid and pid_alive(p):
                stop_pid(p, timeout=10, name=f"dockerd child {p}")
        self.proc = None
        unmount_all(self.dir)
        if self.saved_rules is not None:
            subprocess.run(["iptables-restore"], input=self.saved_rules, check=False)
            subprocess.run(["ip", "link", "delete", self.BRIDGE], check=False,
                           stderr=subprocess.DEVNULL)
            self.saved_rules = None

    # A bridge of its own, not docker0: any other dockerd started with --bridge=none (the other
    # benchmarks', the tests') deletes docker0 at its start, under a running dockerd's feet.
    BRIDGE = "lbenchdocker0"

    def _make_bridge(self) -> None:
        import ipaddress

        routes = run(["ip", "-4", "route"], timeout=30).stdout.decode()
        taken = [ipaddress.IPv4Network(line.split()[0]) for line in routes.splitlines()
                 if line and line.split()[0][0].isdigit()]
        subnet = next(n for n in ipaddress.IPv4Network("10.190.0.0/16").subnets(new_prefix=24)
                      if not any(n.overlaps(t) for t in taken))
        subprocess.run(["ip", "link", "delete", self.BRIDGE], check=False,
                       stderr=subprocess.DEVNULL)
        run(["ip", "link", "add", self.BRIDGE, "type", "bridge"], timeout=30)
        run(["ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", self.BRIDGE],
            timeout=30)
        run(["ip", "link", "set", self.BRIDGE, "up"], timeout=30)

    def cleanup(self) -> None:
        self.stop()
        remove_tree(self.dir)


# ---------------------------------------------------------------- Podman

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"
"""


class Podman:
    name = "podman"

    def __init__(self, base: Path = BASE):
        self.dir = base / "podman"
        self.root = self.dir / "root"
        self.runroot = self.dir / "run"
        self.tmp = self.dir / "tmp"
        self.env = dict(os.environ)
        self.env["CONTAINERS_CONF"] = str(self.dir / "containers.conf")
        self.env["CONTAINERS_STORAGE_CONF"] = str(self.dir / "storage.conf")

    def cli(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--tmpdir", str(self.tmp), "--storage-driver", "overlay",
                "--cgroup-manager", "cgroupfs", "--runtime", "runc", *args]

    def version(self) -> str:
        p = run(["podman", "version", "--format", "{{.Client.Version}}"], env=self.env,
                check=False, timeout=30)
        return p.stdout.decode().strip() or "?"

    def start(self) -> None:
        self.cleanup()
        for d in (self.root, self.runroot, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=self.tmp))
        (self.dir / "storage.conf").write_text(
            STORAGE_CONF.format(root=self.root, runroot=self.runroot))
        p = run(self.cli("info", "--format", "json"), env=self.env, timeout=60)
        info = json.loads(p.stdout)
        drv = info.get("store", {}).get("graphDriverName")
        if drv != "overlay":
            raise RuntimeError(f"podman storage driver is {drv!r}, not overlay")

    def stop(self) -> None:
        if self.root.exists() and (self.dir / "containers.conf").exists():
            run(self.cli("umount", "-a"), env=self.env, check=False, timeout=120)
            # the running ones (their conmon and processes): stopped ones go with the store
            ids = run(self.cli("ps", "-q"), env=self.env, check=False,
                      timeout=120).stdout.decode().split()
            if ids:
                run(self.cli("rm", "-f", *ids), env=self.env, check=False, timeout=300)
        unmount_all(self.dir)

    def cleanup(self) -> None:
        self.stop()
        remove_tree(self.dir)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    lock_base()  # held only while this command runs
    d, pm = Docker(), Podman()
    if argv[0] == "start":
        d.start()
        pm.start()
        print(f"export DOCKER_HOST={d.env['DOCKER_HOST']} DOCKER_CONFIG={d.env['DOCKER_CONFIG']}")
        print(f"export CONTAINERS_CONF={pm.env['CONTAINERS_CONF']} "
              f"CONTAINERS_STORAGE_CONF={pm.env['CONTAINERS_STORAGE_CONF']}")
        print("# podman: " + " ".join(pm.cli()))
        print(f"# dockerd PID {d.proc.pid}; stop with: python3 bench/peers.py stop")
        return 0
    d.cleanup()
    pm.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
