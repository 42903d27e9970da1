"""What an idle container costs while it runs, and what each health probe costs: the CPU time
an engine spends on one busybox ``sleep`` container over a window, without a health check, with
one every 30 s (Docker's default) and with one every second, lamina, Docker Engine and Podman
side by side; and for the 1 s case the CPU of one probe.

    python3 bench/monitor_cpu.py [--quick] [--seconds 60] [--skip docker] [--skip podman]
                                 [--lamina "python3 -S bin/lamina"] [--before TREE] [--rounds N]

``--before TREE`` measures lamina as of the git commit TREE too (``lamina@TREE``, its ``src``
extracted with ``git archive``, its relay compiled from that source), in the same run;
``--rounds N`` repeats every window N times, the cases and engines interleaved in each round,
and the table shows medians.

Whose CPU is counted (utime + stime of the processes, and of the children they waited for, from
/proc/PID/stat):

- lamina: the container's monitor, ``lamina-relay`` (a C program), with the probes it started
  and reaped: each the ``runc exec`` of the probe, run by the relay itself (before issue 14: a
  short-lived Python process that ran ``runc exec`` and recorded the result).
- Docker: dockerd, containerd, their descendants and the container's shim (which runs each
  probe's ``runc exec``): the whole engine, its idle work included (the case without a check).
- Podman: the container's ``conmon``, and, for a check, ``podman healthcheck run ID`` started
  from here each interval (what the systemd timer Podman creates for a health check runs; this
  machine has no systemd, so Podman schedules nothing by itself), counted as children of this
  process. An exec's own conmon detaches: the few milliseconds of that C program are not counted.

Probes: the check is ``echo >> /probes`` (a shell, as ``--health-cmd`` runs it, in every engine),
so the probes made in the window are the lines of ``/probes`` then, read with an exec after it.
CPU per probe: (the window's CPU - the window's CPU without a check) / probes.

Root; busybox-static; docker.io and podman for their columns. Prints one line per case and
engine, and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
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

CHECK = ["--health-cmd", "echo >> /probes"]
CASES = {"no health check": [], "health check every 30 s": CHECK,
         "health check every 1 s": [*CHECK, "--health-interval", "1s"]}
QUICK = ("no health check", "health check every 1 s")  # --quick: what a probe costs
ENGINES = ("lamina", "docker", "podman")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime + cutime + cstime of each of ``pids`` still there, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = sum(int(v) for v in fields[11:15]) / tick
    return found


def own_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Engine:
    """One engine's way to run the sleeper, find the processes that keep it and count probes."""

    def __init__(self, name: str, cli: list[str], env: dict | None = None):
        self.name, self.cli, self.env = name, cli, env

    def run(self, *args: str) -> str:
        return subprocess.run([*self.cli, *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def start(self, flags: list[str]) -> str:
        return self.run("run", "-d", "--network", "none", *flags, "busybox", "sleep", "100000")

    def remove(self, cid: str) -> None:
        subprocess.run([*self.cli, "rm", "-f", cid], env=self.env, check=False,
                       capture_output=True)

    def probes(self, cid: str) -> int:
        out = subprocess.run([*self.cli, "exec", cid, "sh", "-c", "cat /probes 2>/dev/null"],
                             env=self.env, check=False, capture_output=True).stdout
        return out.count(b"\n")


def keeper(cid: str, exe: str) -> list[int]:
    """The processes whose executable's name starts with ``exe`` and whose command line names
    the container."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (os.path.basename(os.readlink(entry / "exe")).startswith(exe)
                    and cid.encode() in (entry / "cmdline").read_bytes()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def window(engine: Engine, cid: str, pids, seconds: float, every: float | None) -> float:
    """CPU seconds of ``pids()`` over ``seconds``; ``every``: run ``podman healthcheck run`` at
    that interval, one after the other ends (counted as this process's children)."""
    watched = pids()
    before, children = cpu_seconds(watched), own_children_cpu()
    end = time.monotonic() + seconds
    while every is not None and time.monotonic() + every < end:
        time.sleep(every)
        subprocess.run([*engine.cli, "healthcheck", "run", cid], env=engine.env, check=False,
                       capture_output=True)
    time.sleep(max(0.0, end - time.monotonic()))
    after = cpu_seconds(watched)  # a process gone meanwhile (an exec's conmon) is left out
    return (sum(after[pid] - before[pid] for pid in after if pid in before)
            + own_children_cpu() - children)


def measure(engine: Engine, flags: list[str], seconds: float, docker=None,
            root: str = "") -> tuple[float, int]:
    """(CPU seconds over the window, probes made in it) of one sleeper with ``flags``."""
    cid = engine.start(flags)
    try:
        time.sleep(1)  # past its start
        every = None
        if engine.name.startswith("lamina"):
            def pids():
                return keeper(cid, "lamina-relay") or keeper(cid, "python")
        elif engine.name == "docker":
            def pids():  # the shim is no descendant of dockerd (it daemonizes)
                return [docker.proc.pid, *peers.descendants(docker.proc.pid),
                        *keeper(cid, "containerd-shim")]
        else:
            def pids():
                return keeper(cid, "conmon")
            if flags:
                every = 1.0 if "--health-interval" in flags else 30.0
        engine.run("exec", cid, "sh", "-c", ": > /probes")  # the start's probes are not counted
        cpu = window(engine, cid, pids, seconds, every)
        return cpu, engine.probes(cid)
    finally:
        engine.remove(cid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--skip", action="append", default=[], choices=["docker", "podman"])
    parser.add_argument("--quick", action="store_true",
                        help="leave out the 30 s case (a window sees one or two of its probes)")
    parser.add_argument("--lamina", default=f"{sys.executable} -S {HERE.parent / 'bin' / 'lamina'}")
    parser.add_argument("--before", metavar="TREE",
                        help="also measure lamina as of this git commit, side by side")
    parser.add_argument("--rounds", type=int, default=1,
                        help="windows per case and engine, interleaved; the table shows medians")
    args = parser.parse_args()
    lamina = shlex.split(args.lamina)
    base = Path(tempfile.mkdtemp(prefix="lamina-monitor-cpu-", dir="/var/tmp"))
    docker = podman = None
    engines: list[Engine] = []
    rows = []
    try:
        rootfs = base / "busybox.tar"
        subprocess.run([str(HERE.parent / "examples" / "busybox-rootfs.sh"), str(rootfs)],
                       check=True, capture_output=True)
        root = str(base / "lamina")
        engines.append(Engine("lamina", [*lamina, "--root", root], with_path(HERE.parent / "src")))
        engines[0].run("import", str(rootfs), "busybox")
        if args.before:
            tree = base / "before"
            tree.mkdir()
            subprocess.run(f"git -C {shlex.quote(str(HERE.parent))} archive "
                           f"{shlex.quote(args.before)} src bin | tar -x -C {tree}",
                           shell=True, check=True)
            engines.append(Engine(f"lamina@{args.before}",
                                  [sys.executable, "-S", str(tree / "bin" / "lamina"), "--root",
                                   str(base / "lamina-before")], with_path(tree / "src")))
            engines[-1].run("import", str(rootfs), "busybox")
        if "docker" not in args.skip:
            docker = peers.Docker(base)
            docker.start()
            engines.append(Engine("docker", docker.cli(), docker.env))
            engines[-1].run("import", str(rootfs), "busybox")
        if "podman" not in args.skip:
            podman = peers.Podman(base)
            podman.start()
            engines.append(Engine("podman", podman.cli(), podman.env))
            engines[-1].run("import", str(rootfs), "busybox")
        print(f"CPU time over {args.seconds:g} s of one idle container (busybox sleep), seconds "
              f"(% of one core); load {os.getloadavg()[0]:.1f}", flush=True)
        results: dict[tuple[str, str], list] = {}
        for round_ in range(args.rounds):
            baseline = {}
            for case, flags in CASES.items():
                if args.quick and case not in QUICK:
                    continue
                for engine in engines:
                    cpu, probes = measure(engine, flags, args.seconds, docker=docker)
                    if not flags:
                        baseline[engine.name] = cpu
                    per = (((cpu - baseline.get(engine.name, 0)) / probes) if flags and probes
                           else None)
                    results.setdefault((case, engine.name), []).append((cpu, probes, per))
                    print(f"{round_ + 1}: {case:26} {engine.name:16} {_fmt(cpu, args.seconds)}  "
                          f"probes {probes:3}"
                          + (f"  {per * 1000:6.1f} ms CPU/probe" if per is not None else "")
                          + f"  load {os.getloadavg()[0]:.1f}", flush=True)
        for (case, name), runs in results.items():
            pers = [per for _, _, per in runs if per is not None]
            rows.append((case, name, statistics.median(cpu for cpu, _, _ in runs),
                         round(statistics.median(probes for _, probes, _ in runs)),
                         statistics.median(pers) if pers else None))
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}"
              + (f"; medians of {args.rounds} rounds" if args.rounds > 1 else "") + "\n")
        print(table(rows, args.seconds))
    finally:
        if docker is not None:
            docker.cleanup()
        if podman is not None:
            podman.cleanup()
        peers.remove_tree(base)


def table(rows, seconds: float) -> str:
    lines = [(f"| case | engine | CPU s in {seconds:g} s (% of a core) | probes | CPU ms/probe | "
              "lamina/engine per probe |"), "|---|---|---:|---:|---:|---:|"]
    own = {case: per for case, name, _, _, per in rows if name == "lamina"}
    for case, name, cpu, probes, per in rows:
        ratio = (f"{own[case] / per:.2f}" if name != "lamina" and per and own.get(case)
                 else "")
        lines.append(f"| {case} | {name} | {cpu:.2f} ({100 * cpu / seconds:.1f}%) | "
                     f"{probes if case != 'no health check' else '-'} | "
                     f"{f'{per * 1000:.0f}' if per is not None else '-'} | {ratio} |")
    return "\n".join(lines)


def with_path(src: Path) -> dict:
    """This environment with ``src`` first on PYTHONPATH: the lamina whose source it is; and
    bytecode written, as an installed lamina has it (with PYTHONDONTWRITEBYTECODE every
    interpreter start would compile each module it imports again)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _fmt(cpu: float, seconds: float) -> str:
    return f"{cpu:6.2f} s ({100 * cpu / seconds:5.2f}%)"


if __name__ == "__main__":
    main()
