"""The small commands' wall time (issue 14): lamina against Docker's CLI, and against the code
before a change, in one interleaved run.

    python3 bench/startup.py [--rounds 11] [--before SRC] [--podman] [--no-results]

Commands: ``images``, ``inspect`` of a container and of an image, ``ps -a -s``, ``system df``,
``create`` (``--network none``), ``rm`` of the container that create just made, and ``start`` of
a stopped container (its command is ``true``: it has ended again by the next round). Each
engine has a store with one busybox image (examples/busybox-rootfs.sh, imported) and two
created containers. Every round runs each command once per engine, engines in turn (the order
rotates each round), and the table gives the medians.

lamina is this tree's ``bin/lamina`` run as its ``#!`` line would (``python -S``, the bench's own
interpreter, not a pyenv shim) with this tree's ``src`` on PYTHONPATH; ``--before SRC`` adds
``lamina-before``, the same with SRC (another tree's ``src``) instead. Both trees' bytecode is
compiled first, as an installed package has it (PYTHONDONTWRITEBYTECODE would otherwise make
every run compile every module). The ``modules`` columns count what each lamina command imports
(``-X importtime`` lines, the interpreter's own start included); the ``CPU`` columns are the
median user + system time of lamina's command (and of what it waited for: runc, not a detached
monitor), which a loaded machine moves less than the wall time.

Stores under LAMINA_BENCH_BASE (/var/tmp/lamina-bench)/startup; Docker is bench/peers.py's private
dockerd (stopped at the end), Podman (``--podman``) its private store.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
BEGIN = "<!-- bench/startup.py: begin generated section -->"
END = "<!-- bench/startup.py: end generated section -->"
DIR = peers.BASE / "startup"

COMMANDS = ["images", "inspect", "image inspect", "ps -a -s", "system df", "create", "rm",
            "start"]


class Lamina:
    def __init__(self, name: str, src: Path):
        self.name = name
        self.root = DIR / name
        self.env = {**os.environ, "PYTHONPATH": str(src)}
        self.exe = [sys.executable, "-S", str(REPO / "bin" / "lamina"), "--root", str(self.root)]
        self.src = src

    def cli(self, *args: str) -> list[str]:
        return [*self.exe, *args]

    def prepare(self, tar: Path) -> None:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.src)], check=True,
                       stdout=subprocess.DEVNULL)
        peers.remove_tree(self.root)
        peers.run(self.cli("import", str(tar), "busybox"), env=self.env)

    def cleanup(self) -> None:
        peers.remove_tree(self.root)


class DockerCli(peers.Docker):
    def prepare(self, tar: Path) -> None:
        self.start()
        peers.run(["docker", "import", str(tar), "busybox"], env=self.env)


class PodmanCli(peers.Podman):
    def prepare(self, tar: Path) -> None:
        self.start()
        peers.run(self.cli("import", str(tar), "busybox"), env=self.env)


def argv_of(engine, command: str, state: dict) -> list[str]:
    if command == "inspect":
        return engine.cli("inspect", "c1")
    if command == "image inspect":
        return engine.cli("image", "inspect", "busybox")
    if command == "create":
        return engine.cli("create", "--network", "none", "busybox", "true")
    if command == "rm":
        return engine.cli("rm", state.pop(engine.name))
    if command == "start":
        return engine.cli("start", "s1")
    return engine.cli(*command.split())


def timed(engine, argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the command and what it waited for: not a
    daemon's, nor a detached monitor's) and what it printed."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=engine.env, capture_output=True, timeout=120, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-500:]}")
    used = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    return seconds, used, proc.stdout.decode().strip()


def imported(engine: Lamina, argv: list[str]) -> tuple[int, str]:
    """How many modules the command imports, and what it printed."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=engine.env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr[-500:]}")
    lines = proc.stderr.splitlines()
    return sum(line.startswith("import time:") for line in lines) - 1, proc.stdout.strip()


def load() -> float:
    return os.getloadavg()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--before", metavar="SRC", help="also time lamina with SRC (lamina-before)")
    ap.add_argument("--podman", action="store_true", help="also time Podman")
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()

    peers.lock_base()
    engines: list = [Lamina("lamina", REPO / "src")]
    if args.before:
        engines.append(Lamina("lamina-before", Path(args.before).resolve()))
    engines.append(DockerCli())
    if args.podman:
        engines.append(PodmanCli())
    DIR.mkdir(parents=True, exist_ok=True)
    tar = DIR / "busybox.tar"
    if not tar.exists():
        peers.run([str(REPO / "examples" / "busybox-rootfs.sh"), str(tar)])
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    loads: dict[str, list[float]] = {c: [] for c in COMMANDS}
    modules: dict[tuple[str, str], int] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    try:
        for engine in engines:
            peers.log(f"preparing {engine.name}")
            engine.prepare(tar)
            for name in ("c1", "s1"):
                peers.run(engine.cli("create", "--network", "none", "--name", name, "busybox",
                                     "true"), env=engine.env)
        versions = {e.name: e.version() for e in engines if not isinstance(e, Lamina)}
        for engine in engines:  # what each lamina command imports (rm: the create's container)
            if isinstance(engine, Lamina):
                state: dict = {}
                for command in COMMANDS:
                    count, out = imported(engine, argv_of(engine, command, state))
                    modules[engine.name, command] = count
                    if command == "create":
                        state[engine.name] = out.splitlines()[-1]
        for round_ in range(args.rounds):
            order = engines[round_ % len(engines):] + engines[:round_ % len(engines)]
            state = {}
            for command in COMMANDS:
                loads[command].append(load())
                for engine in order:
                    seconds, used, out = timed(engine, argv_of(engine, command, state))
                    samples.setdefault((engine.name, command), []).append(seconds)
                    cpu.setdefault((engine.name, command), []).append(used)
                    if command == "create":
                        state[engine.name] = out.splitlines()[-1]
            peers.log(f"round {round_ + 1}/{args.rounds} done, load {load():.2f}")
    finally:
        for engine in engines:
            try:
                engine.cleanup()
            except Exception as e:  # noqa: BLE001 - the others are still cleaned up
                peers.log(f"cleanup of {engine.name}: {e}")

    names = [e.name for e in engines]
    med = {key: statistics.median(v) * 1000 for key, v in samples.items()}
    cpu_med = {key: statistics.median(v) * 1000 for key, v in cpu.items()}
    head = "| command | " + " | ".join(f"{n} (ms)" for n in names) + " | lamina / docker |"
    if args.before:
        head += (" before / docker | after / before | CPU before (ms) | CPU after (ms) |"
                 " modules before | modules after |")
    else:
        head += " modules |"
    lines = [head, "|" + "---|" * (head.count("|") - 1), ]
    for command in COMMANDS:
        row = [command] + [f"{med[n, command]:.1f}" for n in names]
        row.append(f"{med['lamina', command] / med['docker', command]:.2f}")
        if args.before:
            row.append(f"{med['lamina-before', command] / med['docker', command]:.2f}")
            row.append(f"{med['lamina', command] / med['lamina-before', command]:.2f}")
            row.append(f"{cpu_med['lamina-before', command]:.1f}")
            row.append(f"{cpu_med['lamina', command]:.1f}")
            row.append(str(modules['lamina-before', command]))
        row.append(str(modules['lamina', command]))
        lines.append("| " + " | ".join(row) + " |")
    load_end = os.getloadavg()
    lines += ["", "Load average (1 min) when each command's rounds began: "
              + "; ".join(f"{c} {min(loads[c]):.2f}-{max(loads[c]):.2f}" for c in COMMANDS)
              + f". Load (1, 5, 15 min) at the start {load_start[0]:.2f} {load_start[1]:.2f} "
              f"{load_start[2]:.2f}, at the end {load_end[0]:.2f} {load_end[1]:.2f} "
              f"{load_end[2]:.2f}."]
    table = "\n".join(lines)
    print(table)
    if not args.no_results:
        git = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h"],
                             capture_output=True, text=True, check=False).stdout.strip()
        raw = "\n".join(f"- {n} {c}: " + " ".join(f"{s * 1000:.1f}" for s in samples[n, c])
                        for c in COMMANDS for n in names)
        text = (f"## Small commands' wall time (bench/startup.py), {started}\n\n"
                f"`python3 bench/startup.py --rounds {args.rounds}"
                f"{' --before ' + args.before if args.before else ''}"
                f"{' --podman' if args.podman else ''}` at {git or '?'} ({os.cpu_count()} CPUs "
                f"shared with other work), {args.rounds} rounds interleaved, medians in ms; "
                f"lamina is `{Path(sys.executable).name} -S bin/lamina` with compiled bytecode; "
                f"Docker is the docker CLI against dockerd (server and client: "
                f"{versions['docker']})"
                f"{'; Podman ' + versions['podman'] if args.podman else ''}.\n\n"
                f"{table}\n\n<details><summary>samples (ms)</summary>\n\n{raw}\n\n</details>\n")
        section = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
        old = RESULTS.read_text() if RESULTS.exists() else "# lamina benchmark results\n"
        if BEGIN in old and END in old:
            head_text, rest = old.split(BEGIN, 1)
            old = head_text + section + rest.split(END, 1)[1].lstrip("\n")
        else:
            first, _, rest = old.partition("\n\n")
            old = f"{first}\n\n{section}\n{rest}"
        RESULTS.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
