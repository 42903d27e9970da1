"""What an idle container costs while it runs: the CPU time of lamina's monitor (the process that
owns a ``run -d`` container and runs its health checks, with the ``runc exec`` of each probe it
reaped) over a window, for a container without a health check, with one every 30 s (Docker's
default) and with one every second; and, side by side, the CPU time Docker Engine's processes
(dockerd, containerd, the container's shim, and what they reaped) spend in the same window on
the same container.

    python3 bench/monitor_cpu.py [--seconds 30] [--skip docker] [--lamina "python3 -m lamina"]

Root; busybox-static; docker.io for the Docker column. Prints one line per case: CPU seconds
in the window and that as a percentage of one core.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402 - bench's own helpers, found through the path above

CASES = {"no health check": [], "health check every 30 s": ["--health-cmd", "true"],
         "health check every 1 s": ["--health-cmd", "true", "--health-interval", "1s"]}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime of ``pids`` (gone ones count 0), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / tick


def window(pids, seconds: float) -> float:
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return cpu_seconds(pids) - before


def lamina_case(lamina: list[str], root: str, flags: list[str], seconds: float) -> float:
    cid = subprocess.run([*lamina, "--root", root, "run", "-d", *flags, "busybox", "sleep",
                          "100000"], check=True, capture_output=True, text=True).stdout.strip()
    try:
        from lamina import Engine

        engine = Engine(root=root)
        monitor = engine.container_store.get(cid)["monitor_pid"]
        engine.close()
        time.sleep(1)  # past its start
        return window([monitor], seconds)
    finally:
        subprocess.run([*lamina, "--root", root, "rm", "-f", cid], check=False, capture_output=True)


def docker_case(docker: peers.Docker, flags: list[str], seconds: float) -> float:
    cid = subprocess.run(["docker", "run", "-d", "--network", "none", *flags, "busybox", "sleep",
                          "100000"], env=docker.env, check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        time.sleep(1)
        shims = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
                 _cmdline_has(p, cid)]  # the shim is no descendant of dockerd (it daemonizes)
        return window([docker.proc.pid, *peers.descendants(docker.proc.pid), *shims], seconds)
    finally:
        subprocess.run(["docker", "rm", "-f", cid], env=docker.env, check=False,
                       capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--skip", action="append", default=[], choices=["docker"])
    parser.add_argument("--lamina", default=f"{sys.executable} -m lamina")
    args = parser.parse_args()
    lamina = shlex.split(args.lamina)
    base = Path(tempfile.mkdtemp(prefix="lamina-monitor-cpu-", dir="/var/tmp"))
    docker = None
    try:
        root = str(base / "lamina")
        rootfs = base / "busybox.tar"
        subprocess.run([str(HERE.parent / "examples" / "busybox-rootfs.sh"), str(rootfs)],
                       check=True, capture_output=True)
        subprocess.run([*lamina, "--root", root, "import", str(rootfs), "busybox"], check=True,
                       capture_output=True)
        if "docker" not in args.skip:
            docker = peers.Docker(base)
            docker.start()
            with open(rootfs, "rb") as f:
                subprocess.run(["docker", "import", "-", "busybox"], stdin=f, env=docker.env,
                               check=True, capture_output=True)
        print(f"CPU time over {args.seconds:g} s of one idle container (sleep), seconds "
              "(% of one core)")
        for case, flags in CASES.items():
            line = f"{case:26} lamina monitor {_fmt(lamina_case(lamina, root, flags, args.seconds), args.seconds)}"
            if docker is not None:
                line += f"   docker engine {_fmt(docker_case(docker, flags, args.seconds), args.seconds)}"
            print(line, flush=True)
    finally:
        if docker is not None:
            docker.cleanup()
        peers.remove_tree(base)


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _fmt(cpu: float, seconds: float) -> str:
    return f"{cpu:6.2f} s ({100 * cpu / seconds:5.2f}%)"


if __name__ == "__main__":
    main()
