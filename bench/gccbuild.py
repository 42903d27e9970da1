"""A real two-stage build (issue 16): ``apt-get install gcc libc6-dev`` on a Debian base, compile a
program, copy the binary into a fresh base; cold (``--no-cache``) build time and the disk bytes the
built image adds to each engine's data root, lamina side by side with Docker Engine 20.10's legacy
builder, the same engine building with BuildKit (Debian's 20.10 client, ``DOCKER_BUILDKIT=1``: the
docker 28 CLI here has no buildx plugin, so this is the one BuildKit at hand) and Podman 4.3.

    python3 bench/gccbuild.py [--runs 2] [--only lamina docker buildkit podman] [--no-write]
                              [--before SRC]

The base is a Debian 12 minbase rootfs (``debootstrap --variant=minbase bookworm``, made once and
kept as a tar under /var/tmp/lamina-bench/data); every engine imports it as ``debian:bench`` and
builds with ``--network host``, so apt-get fetches from the machine's Debian mirror each run (the
network's speed is in every engine's time alike: runs are interleaved). Disk: ``du -sb`` of the
data root before the first build and after it (the image, its intermediate layers and build
cache, as each engine keeps them). Stores under /var/tmp/lamina-build-bench (bench/build.py's
engines and lock). ``--before SRC``: one more engine, ``lamina-before``, the installed ``lamina``
with SRC (another tree's ``src``) first on PYTHONPATH and a store of its own, interleaved with
the others, so that a change is measured against the code before it in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build as bench_build
import bytes as bench_bytes
import peers

DATA = Path("/var/tmp/lamina-bench/data")
BEGIN = "<!-- bench/gccbuild.py: begin generated section -->"
END = "<!-- bench/gccbuild.py: end generated section -->"

DOCKERFILE = """\
ARG BASE=debian:bench
FROM $BASE AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/*
COPY hello.c /src/hello.c
RUN gcc -O2 -static -o /hello /src/hello.c && /hello
FROM $BASE
COPY --from=build /hello /usr/local/bin/hello
CMD ["/usr/local/bin/hello"]
"""

HELLO = '#include <stdio.h>\nint main(void) { puts("hello from a two-stage build"); return 0; }\n'


def log(message: str) -> None:
    print(f"[gccbuild] {message}", file=sys.stderr, flush=True)


def debian_rootfs() -> Path:
    """A Debian 12 minbase rootfs tar, made by debootstrap once."""
    tar = DATA / "debian-bookworm-minbase.tar"
    if tar.exists():
        return tar
    DATA.mkdir(parents=True, exist_ok=True)
    tree = DATA / "debian-bookworm-minbase"
    peers.remove_tree(tree)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(tree),
                    "http://deb.debian.org/debian"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tar) + ".tmp", "."], check=True)
    os.rename(str(tar) + ".tmp", tar)
    peers.remove_tree(tree)
    return tar


def context() -> Path:
    path = bench_build.BASE / "data" / "gcc-two-stage"
    path.mkdir(parents=True, exist_ok=True)
    (path / "hello.c").write_text(HELLO)
    (path / "Dockerfile").write_text(DOCKERFILE)
    return path


def data_root(engine) -> Path:
    return Path(engine.root) if hasattr(engine, "root") else Path(engine.data_root)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=("lamina", "docker", "buildkit", "podman"),
                    default=["lamina", "docker", "buildkit", "podman"])
    ap.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    ap.add_argument("--before", metavar="SRC",
                    help="also time lamina with SRC first on PYTHONPATH (lamina-before)")
    args = ap.parse_args(argv)
    lock_fd = bench_build.lock()
    rootfs = debian_rootfs()
    ctx = context()
    classes = {"lamina": bench_build.Lamina, "docker": bench_build.DockerLegacy,
               "buildkit": bench_build.DockerBuildKit, "podman": bench_build.Podman}
    engines = []
    if args.before:
        before = bench_build.Lamina()
        before.name = "lamina-before"
        before.root = bench_build.BASE / "lamina-before"
        before.env["PYTHONPATH"] = os.path.abspath(args.before)
        before.base = "debian:bench"
        engines.append(before)
    for name in args.only:
        engine = classes[name]()
        engine.base = "localhost/debian:bench" if name == "podman" else "debian:bench"
        engines.append(engine)
    times: dict[str, list[float]] = {}
    disk: dict[str, tuple[int, int]] = {}
    versions: dict[str, str] = {}
    started = time.time()
    loads = [os.getloadavg()[0]]
    try:
        for engine in engines:
            log(f"starting {engine.name}")
            engine.start(rootfs)
            versions[engine.name] = engine.version()
        for rep in range(args.runs):
            for engine in engines:
                subprocess.run(["sync"], check=False)
                before = bench_bytes.du(data_root(engine)) if rep == 0 else 0
                took = bench_build.timed(engine, engine.build(ctx, "hello:bench", no_cache=True),
                                         timeout=1800)
                times.setdefault(engine.name, []).append(took)
                if rep == 0:
                    disk[engine.name] = (before, bench_bytes.du(data_root(engine)))
                log(f"{engine.name}: run {rep + 1}: {took:.1f} s")
                loads.append(os.getloadavg()[0])
    finally:
        bench_build.stop(engines, lock_fd)
    report = render(engines, times, disk, versions, args, time.time() - started, loads)
    print(report)
    if not args.no_write:
        bench_bytes.write_section(BEGIN, END, report)
    return 0


def render(engines, times, disk, versions, args, took, loads) -> str:
    names = [e.name for e in engines]
    lamina = statistics.median(times["lamina"]) if "lamina" in times else None
    lines = [
        (f"## A two-stage gcc build (bench/gccbuild.py), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"), "",
        (f"`python3 bench/gccbuild.py --runs {args.runs}"
         f"{' --before ' + args.before if args.before else ''}` ({os.cpu_count()} CPUs shared with "
         f"other helpers' jobs, load average {min(loads):.1f} to {max(loads):.1f}; took "
         f"{took:.0f} s). Versions: " + "; ".join(f"{n} {versions.get(n, '?')}" for n in names)
         + ". docker is the legacy builder (DOCKER_BUILDKIT=0); buildkit the same Engine "
         "through Debian's 20.10 client with DOCKER_BUILDKIT=1 (no buildx plugin here). "
         "Cold builds (`--no-cache`, `--network host`, apt-get from the Debian mirror in every "
         "run), engines interleaved; medians, each run in brackets:"), "",
        "```", DOCKERFILE.rstrip(), "```", "",
        "| engine | build (s) | lamina / engine | data root before | after the first build | added |",
        "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        median = statistics.median(times[name])
        runs = ", ".join(f"{t:.1f}" for t in times[name])
        before, after = disk[name]
        ratio = f"{lamina / median:.2f}" if lamina is not None else "-"
        lines.append(f"| {name} | {median:.1f} ({runs}) | {ratio} | {before:,} | {after:,} | "
                     f"{after - before:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
