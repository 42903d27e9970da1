#!/usr/bin/env python3
"""What running containers cost in memory: 1, 10 and 100 ``run -d`` sleepers (busybox
``sleep 3600``, ``--network none``) with lamina, Podman and Docker Engine, and the resident
memory of the processes each engine keeps per container besides the container's own: lamina's
monitor (and whatever it runs, such as a foreground ``runc run``), Podman's ``conmon``, Docker's
``containerd-shim-runc-v2``. RSS (``VmRSS``) and PSS (``Pss`` of ``/proc/PID/smaps_rollup``: shared
pages divided among the processes that map them) per container, their medians over the
containers of a point, the total, and lamina's median against each peer's.

    python3 bench/sleepers.py [--quick] [--counts 1,10,100] [--engines lamina,podman,docker]
                              [--lamina "python3 -m lamina"] [--width 8]

``--quick``: 1 and 10 sleepers. The engines take turns at each point (lamina, Podman, Docker),
each removing its sleepers before the next starts. Importable: :func:`measure` returns the rows
(bench/scale.py uses it). Root; busybox-static, podman, docker.io. Everything lives under a fresh
directory in /var/tmp and goes at the end, peers included.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402 - bench's own helpers, found through the path above

ENGINES = ("lamina", "podman", "docker")
COUNTS = (1, 10, 100)
KiB = 1024


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in bytes; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * KiB
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * KiB
    except (OSError, ValueError):
        return 0, 0
    return rss, pss


def _processes() -> dict[int, tuple[str, bytes]]:
    """Every process: PID -> (name of its executable, its command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            exe = os.path.basename(os.readlink(entry / "exe"))
        except OSError:
            continue
        found[int(entry.name)] = (exe, cmdline)
    return found


def _tree(pid: int) -> list[int]:
    return [pid, *peers.descendants(pid)]


class Sleepers:
    """One engine's way to start and remove sleepers and to name its per-container processes."""

    def __init__(self, name: str, cli: list[str], env: dict | None = None,
                 image: str = "busybox"):
        self.name, self.cli, self.env, self.image = name, cli, env, image

    def run(self, count: int, width: int = 1) -> list[str]:
        """Start ``count`` sleepers, ``width`` ``run -d`` commands at a time."""
        def one(_: int) -> str:
            return peers.run([*self.cli, "run", "-d", "--network", "none", self.image, "sleep",
                              "3600"], env=self.env).stdout.decode().strip()

        if width <= 1:
            return [one(i) for i in range(count)]
        with concurrent.futures.ThreadPoolExecutor(width) as pool:
            return list(pool.map(one, range(count)))

    def remove(self, ids: list[str], width: int = 1) -> None:
        """``rm -f`` the sleepers, ``width`` commands at a time (an engine removes the
        containers named in one command one after the other)."""
        size = max(1, min(50, -(-len(ids) // max(1, width))))

        def one(start: int) -> None:
            peers.run([*self.cli, "rm", "-f", *ids[start:start + size]], env=self.env,
                      check=False, timeout=600)

        with concurrent.futures.ThreadPoolExecutor(max(1, width)) as pool:
            list(pool.map(one, range(0, len(ids), size)))

    def container_pids(self, ids: list[str]) -> list[int]:
        out = peers.run([*self.cli, "inspect", "--format", "{{.State.Pid}}", *ids],
                        env=self.env).stdout.decode().split()
        return [int(p) for p in out]

    def per_container(self, ids: list[str], marker: str) -> list[list[int]]:
        """For each container, the PIDs of the engine's processes that keep it (not the
        container's own processes)."""
        inside = set()
        for pid in self.container_pids(ids):
            inside.update(_tree(pid))
        processes = _processes()
        groups = []
        for cid in ids:
            roots = [pid for pid, (exe, cmdline) in processes.items()
                     if self.keeps(exe, cmdline, cid, marker)]
            pids = set()
            for root in roots:
                pids.update(p for p in _tree(root) if p not in inside)
            groups.append(sorted(pids))
        return groups

    def keeps(self, exe: str, cmdline: bytes, cid: str, marker: str) -> bool:
        """Whether the process is the engine's keeper of the container ``cid``."""
        if self.name == "podman":
            return exe == "conmon" and cid.encode() in cmdline
        if self.name == "docker":
            return exe.startswith("containerd-shim") and cid.encode() in cmdline
        # lamina: the monitor's command line names the store and the container (its children,
        # runc run, are found as its descendants)
        return marker.encode() in cmdline and cid.encode() in cmdline and not any(
            word in cmdline for word in (b"\0run\0", b"\0exec\0", b"\0kill\0", b"\0delete\0"))


def measure(counts=COUNTS, engines=ENGINES, lamina: list[str] | None = None,
            base: Path | None = None, settle: float = 2.0,
            running: dict[str, tuple[Sleepers, str]] | None = None, width: int = 1) -> list[dict]:
    """Start ``count`` sleepers with each engine in turn, for each of ``counts``; one row per
    (count, engine): ``rss``/``pss`` medians per container and ``rss_total``/``pss_total``, in
    bytes, ``processes`` per container, ``start_s`` (wall time of the ``run -d``s, ``width`` at a
    time). ``running``: engines already started, with their busybox image (name -> (Sleepers, the
    marker of lamina's monitors: its root)), used as they are instead of fresh ones (bench/scale.py
    hands its own, to start no second dockerd or Podman store)."""
    lamina = lamina or [sys.executable, "-m", "lamina"]
    own_base = base is None
    base = base or Path(tempfile.mkdtemp(prefix="lamina-sleepers-", dir="/var/tmp"))
    docker = podman = None
    rows = []
    running = running or {}
    try:
        rootfs = base / "busybox.tar"
        if set(engines) - set(running):
            peers.run([str(HERE.parent / "examples" / "busybox-rootfs.sh"), str(rootfs)])
        engines_by_name = dict(running)
        if "lamina" in engines and "lamina" not in running:
            root = str(base / "lamina")
            cli = [*lamina, "--root", root]
            peers.run([*cli, "import", str(rootfs), "busybox"])
            engines_by_name["lamina"] = (Sleepers("lamina", cli), root)
        if "podman" in engines and "podman" not in running:
            podman = peers.Podman(base)
            podman.start()
            peers.run(podman.cli("import", str(rootfs), "busybox"), env=podman.env)
            engines_by_name["podman"] = (Sleepers("podman", podman.cli(), podman.env),
                                         str(podman.root))
        if "docker" in engines and "docker" not in running:
            docker = peers.Docker(base)
            docker.start()
            with open(rootfs, "rb") as f:
                subprocess.run(["docker", "import", "-", "busybox"], stdin=f, env=docker.env,
                               check=True, capture_output=True)
            engines_by_name["docker"] = (Sleepers("docker", docker.cli(), docker.env), "")
        for count in counts:
            for name in engines:
                engine, marker = engines_by_name[name]
                began = time.monotonic()
                ids = engine.run(count, width)
                started = time.monotonic() - began
                try:
                    time.sleep(settle)  # past start-up: the steady state
                    groups = engine.per_container(ids, marker)
                    figures = [[memory(pid) for pid in group] for group in groups]
                finally:
                    engine.remove(ids, width)
                rss = [sum(r for r, _ in f) for f in figures]
                pss = [sum(p for _, p in f) for f in figures]
                rows.append({"engine": name, "count": count, "rss": statistics.median(rss),
                             "pss": statistics.median(pss), "rss_total": sum(rss),
                             "pss_total": sum(pss), "start_s": started,
                             "processes": statistics.median(len(g) for g in groups)})
                peers.log(f"{name} x{count}: {format_row(rows[-1])}")
    finally:
        if docker is not None:
            docker.cleanup()
        if podman is not None:
            podman.cleanup()
        if own_base:
            peers.remove_tree(base)
    return rows


def _mib(value: float) -> str:
    return f"{value / (1 << 20):7.2f}"


def format_row(row: dict) -> str:
    return (f"RSS {_mib(row['rss'])} MiB/container, PSS {_mib(row['pss'])} MiB/container, "
            f"total RSS {_mib(row['rss_total'])} MiB, PSS {_mib(row['pss_total'])} MiB, "
            f"{row['processes']:g} process(es)/container, run -d x{row['count']} "
            f"{row['start_s']:.1f} s")


def table(rows: list[dict]) -> str:
    """A Markdown table: per-container medians and totals, and lamina's medians over each
    peer's at the same count."""
    lines = [("| sleepers | engine | RSS/container MiB | PSS/container MiB | total RSS MiB | "
              "total PSS MiB | processes/container | lamina/peer RSS | lamina/peer PSS |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        own = next((r for r in rows if r["engine"] == "lamina" and r["count"] == row["count"]),
                   None)
        ratio = ("", "")
        if own is not None and row["engine"] != "lamina" and row["rss"] and row["pss"]:
            ratio = (f"{own['rss'] / row['rss']:.2f}x", f"{own['pss'] / row['pss']:.2f}x")
        lines.append(f"| {row['count']} | {row['engine']} | {_mib(row['rss']).strip()} | "
                     f"{_mib(row['pss']).strip()} | {_mib(row['rss_total']).strip()} | "
                     f"{_mib(row['pss_total']).strip()} | {row['processes']:g} | "
                     f"{ratio[0]} | {ratio[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 10 sleepers")
    parser.add_argument("--counts", default=None, help="comma-separated (default 1,10,100)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--lamina", default=f"{sys.executable} -m lamina")
    parser.add_argument("--width", type=int, default=1,
                        help="run -d commands at a time while starting the sleepers")
    args = parser.parse_args()
    counts = ([int(c) for c in args.counts.split(",")] if args.counts else
              [1, 10] if args.quick else list(COUNTS))
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    rows = measure(counts, engines, shlex.split(args.lamina), width=args.width)
    print(table(rows))


if __name__ == "__main__":
    main()
