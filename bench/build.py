"""Side-by-side build benchmark: lamina, Docker Engine 20.10 (legacy builder and BuildKit) and
Podman 4.3.

Three measurements on the same Dockerfiles and contexts, each engine on a private store under
/var/tmp/lamina-build-bench (never another run's or another tool's directories):

* small, cold: a busybox base, metadata instructions, two COPYs and one RUN, ``--no-cache``;
* small, warm: the same, every step cached;
* big COPY: ``COPY tree /data/`` of a generated tree of 10,000 files (about 350 MB), ``--no-cache``;
* graph: two independent stages of ``RUN sleep 1`` and a stage that copies from both,
  ``--no-cache`` (a builder that runs independent stages at once takes about 1 s, not 2);
* cache mount: a stand-in for ``pip install`` with ``RUN --mount=type=cache`` whose input changed,
  so the RUN runs again and reads 20 MB of wheels from the warm cache (not for the legacy
  builder, which has no ``--mount``);
* cache-from: machine A builds the small Dockerfile (plus a RUN writing 20 MB) and exports its
  cache to a loopback docker-registry; machine B, a second store holding only the base image
  (pulled from that registry, so both have the same base), builds it with ``--cache-from`` and
  runs nothing: every step comes from the cache, its layers fetched. With an image's inline cache
  (``BUILDKIT_INLINE_CACHE=1``, then ``--cache-from IMAGE``), the one form Debian's 20.10 client
  offers BuildKit (``--cache-to`` is buildx's, and buildx is not packaged here); lamina's
  ``--cache-to type=registry`` cache manifest is a second row, lamina's alone. B is emptied
  (lamina: a new store; Docker: the image removed and ``builder prune -af``) before each run.

Repetitions are interleaved (lamina, docker, podman, lamina, ...) so that a noisy neighbour hits
every engine alike; the report gives medians and lamina's ratio to each peer. BuildKit is
measured when the docker CLI has the buildx plugin (Docker 20.10's own CLI path); without it the
report says so (it is measured as "buildkit" through Debian's 20.10 client). The peers are started and stopped as bench/peers.py does (by PID, private
sockets and roots).

    python3 bench/build.py [--runs N] [--big-runs N] [--only lamina docker podman] [--no-write]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers

BASE = Path("/var/tmp/lamina-build-bench")
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- bench/build.py: begin generated section -->"
END = "<!-- bench/build.py: end generated section -->"
REPO = Path(__file__).resolve().parent.parent

SMALL_DOCKERFILE = """\
ARG BASE=busybox:bench
FROM $BASE
LABEL org.opencontainers.image.title=bench-small
ENV APP_HOME=/app MODE=bench
WORKDIR /app
COPY app.txt /app/
COPY src /app/src/
RUN echo built > /app/built.txt && ls /app/src > /app/manifest.txt
EXPOSE 8080
CMD ["sh"]
"""

BIG_DOCKERFILE = """\
ARG BASE=busybox:bench
FROM $BASE
COPY tree /data/
"""


# a stand-in for `pip install` with a cache mount (busybox has no pip): each requirement's wheel
# comes from the cache when it is there, else from the context (a bind mount) into the cache
CACHE_DOCKERFILE = """\
ARG BASE=busybox:bench
FROM $BASE
COPY requirements.txt /app/
RUN --mount=type=cache,target=/root/.cache/pip \\
    --mount=type=bind,source=wheels,target=/wheels \\
    for r in $(grep -v '^#' /app/requirements.txt); do \\
      if [ -f /root/.cache/pip/$r.whl ]; then cat /root/.cache/pip/$r.whl > /dev/null; \\
      else cp /wheels/$r.whl /root/.cache/pip/; fi; \\
      mkdir -p /app/site && echo $r > /app/site/$r; \\
    done
"""

# what machine A exports and machine B builds from the cache alone: 20 MB of RUN output
CACHE_FROM_DOCKERFILE = SMALL_DOCKERFILE.replace(
    "EXPOSE 8080", "RUN head -c 20000000 /dev/urandom > /app/blob\nEXPOSE 8080")

# two independent stages of 1 s each and a last stage that takes a file from each
GRAPH_DOCKERFILE = """\
ARG BASE=busybox:bench
FROM $BASE AS one
RUN sleep 1 && echo one > /one
FROM $BASE AS two
RUN sleep 1 && echo two > /two
FROM $BASE
COPY --from=one /one /
COPY --from=two /two /
"""


def log(message: str) -> None:
    print(f"[build-bench] {message}", file=sys.stderr, flush=True)


def lock() -> int:
    BASE.mkdir(parents=True, exist_ok=True)
    fd = os.open(BASE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another build benchmark holds {BASE}/.lock") from None
    return fd


def find_lamina() -> str:
    """The installed ``lamina`` command itself (not a pyenv shim), as bench/run.py times it."""
    exe = shutil.which("lamina")
    if exe and "/shims/" in exe:
        import sysconfig

        candidate = os.path.join(sysconfig.get_path("scripts"), "lamina")
        if os.access(candidate, os.X_OK):
            exe = candidate
    if not exe:
        raise SystemExit("lamina is not installed: run scripts/setup")
    return exe


# ---------------------------------------------------------------- data
def make_contexts() -> tuple[Path, Path, Path]:
    """The busybox rootfs tar, the small context and the big one (made once, then reused)."""
    data = BASE / "data"
    data.mkdir(parents=True, exist_ok=True)
    rootfs = data / "busybox.tar"
    if not rootfs.exists():
        subprocess.run([str(REPO / "examples" / "busybox-rootfs.sh"), str(rootfs)], check=True)
    small = data / "small"
    if not (small / "Dockerfile").exists():
        (small / "src").mkdir(parents=True, exist_ok=True)
        (small / "app.txt").write_text("the app\n")
        for i in range(20):
            (small / "src" / f"module{i:02d}.py").write_text(f"VALUE = {i}\n" * 50)
        (small / "Dockerfile").write_text(SMALL_DOCKERFILE)
    big = data / "big"
    if not (big / "Dockerfile").exists():
        rng = random.Random(7)
        sizes = [1000, 4000, 16000, 30000, 60000, 100000]
        for d in range(100):
            directory = big / "tree" / f"d{d:03d}"
            directory.mkdir(parents=True, exist_ok=True)
            for f in range(100):
                (directory / f"f{f:03d}.bin").write_bytes(rng.randbytes(rng.choice(sizes)))
        (big / "Dockerfile").write_text(BIG_DOCKERFILE)
    cache = data / "cache"
    if not (cache / "Dockerfile").exists():
        rng = random.Random(11)
        (cache / "wheels").mkdir(parents=True, exist_ok=True)
        for i in range(20):  # 20 wheels of 1 MB
            (cache / "wheels" / f"pkg{i:02d}.whl").write_bytes(rng.randbytes(1 << 20))
        (cache / "requirements.txt").write_text(
            "".join(f"pkg{i:02d}\n" for i in range(20)))
        (cache / "Dockerfile").write_text(CACHE_DOCKERFILE)
    travel = data / "travel"
    if not (travel / "Dockerfile").exists():
        shutil.copytree(small, travel, dirs_exist_ok=True)
        (travel / "Dockerfile").write_text(CACHE_FROM_DOCKERFILE)
    graph = data / "graph"
    if not (graph / "Dockerfile").exists():
        graph.mkdir(parents=True, exist_ok=True)
        (graph / "Dockerfile").write_text(GRAPH_DOCKERFILE)
    return rootfs, small, big, cache, graph, travel


def change_requirements(cache: Path, rep: int) -> None:
    """A new comment line: COPY requirements.txt, and so the RUN, are no longer cached."""
    text = "".join(f"pkg{i:02d}\n" for i in range(20))
    (cache / "requirements.txt").write_text(f"# change {rep} {time.time()}\n" + text)


def tree_size(path: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


# ---------------------------------------------------------------- engines
class Lamina:
    name = "lamina"

    def __init__(self) -> None:
        self.exe = find_lamina()
        self.root = BASE / "lamina"
        self.env = dict(os.environ)
        self.base = "busybox:bench"

    def cli(self, *args: str) -> list[str]:
        return [self.exe, "--root", str(self.root), *args]

    def start(self, rootfs: Path) -> None:
        peers.remove_tree(self.root)
        peers.run(self.cli("import", str(rootfs), self.base), env=self.env)

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return self.cli("build", "-q", "--network", "host", "-t", tag,
                        "--build-arg", f"BASE={self.base}", *(["--no-cache"] if no_cache else []),
                        str(context))

    def version(self) -> str:
        return peers.run(self.cli("version"), env=self.env, check=False).stdout.decode().strip()

    def cleanup(self) -> None:
        peers.remove_tree(self.root)

    # machine B of the cache-from rows: another store
    def second(self) -> Lamina:
        other = Lamina()
        other.root = BASE / "lamina-b"
        return other

    def push_base(self, name: str) -> None:
        peers.run(self.cli("tag", self.base, name), env=self.env)
        peers.run(self.cli("push", name), env=self.env, timeout=300)

    def export_build(self, context: Path, registry: str, inline: bool) -> list[str]:
        cache = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"] if inline else [
            "--cache-to", f"type=registry,ref={registry}/bench/lamina-cache:1,mode=max"]
        return self.cli("build", "-q", "--network", "host", "-t",
                        f"{registry}/bench/lamina-app:1", "--build-arg",
                        f"BASE={registry}/bench/lamina-base:1", *cache, str(context))

    def push_built(self, registry: str) -> None:
        peers.run(self.cli("push", f"{registry}/bench/lamina-app:1"), env=self.env, timeout=300)

    def empty(self, registry: str) -> None:
        """B holds the base image alone again."""
        peers.remove_tree(self.root)
        peers.run(self.cli("pull", f"{registry}/bench/lamina-base:1"), env=self.env, timeout=300)

    def cache_from_build(self, context: Path, registry: str, inline: bool) -> list[str]:
        source = f"{registry}/bench/lamina-app:1" if inline else \
            f"type=registry,ref={registry}/bench/lamina-cache:1"
        return self.cli("build", "-q", "--network", "host", "-t", "app:b", "--build-arg",
                        f"BASE={registry}/bench/lamina-base:1", "--cache-from", source,
                        str(context))


class DockerLegacy(peers.Docker):
    name = "docker"

    def __init__(self) -> None:
        super().__init__(BASE)
        self.env["DOCKER_BUILDKIT"] = "0"
        self.base = "busybox:bench"

    def start(self, rootfs: Path) -> None:  # type: ignore[override]
        super().start()
        peers.run(["docker", "import", str(rootfs), self.base], env=self.env)

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return ["docker", "build", "-q", "--network", "host", "-t", tag,
                "--build-arg", f"BASE={self.base}", *(["--no-cache"] if no_cache else []),
                str(context)]


class DockerBuildKit(DockerLegacy):
    """The same Docker Engine version, building with BuildKit: Debian's 20.10 client
    (/usr/bin/docker) with DOCKER_BUILDKIT=1, on a dockerd of its own."""

    name = "buildkit"

    def __init__(self) -> None:
        peers.Docker.__init__(self, BASE / "buildkit")
        self.env["DOCKER_BUILDKIT"] = "1"
        self.base = "busybox:bench"
        self.client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"

    def start(self, rootfs: Path) -> None:  # type: ignore[override]
        peers.Docker.start(self)
        peers.run([self.client, "import", str(rootfs), self.base], env=self.env)

    def version(self) -> str:
        p = peers.run([self.client, "version", "--format",
                       "{{.Server.Version}} (client {{.Client.Version}})"],
                      env=self.env, check=False, timeout=30)
        return p.stdout.decode().strip() or "?"

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return [self.client, "build", "-q", "--network", "host", "-t", tag,
                "--build-arg", f"BASE={self.base}", *(["--no-cache"] if no_cache else []),
                str(context)]

    # machine B of the cache-from rows: a second dockerd
    def second(self) -> DockerBuildKit:
        other = DockerBuildKit()
        peers.Docker.__init__(other, BASE / "buildkit-b")
        other.env["DOCKER_BUILDKIT"] = "1"
        return other

    def start_empty(self) -> None:
        peers.Docker.start(self)

    def push_base(self, name: str) -> None:
        peers.run([self.client, "tag", self.base, name], env=self.env)
        peers.run([self.client, "push", name], env=self.env, timeout=300)

    def export_build(self, context: Path, registry: str, inline: bool) -> list[str]:
        return [self.client, "build", "-q", "--network", "host", "-t",
                f"{registry}/bench/bk-app:1", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                "--build-arg", f"BASE={registry}/bench/bk-base:1", str(context)]

    def push_built(self, registry: str) -> None:
        peers.run([self.client, "push", f"{registry}/bench/bk-app:1"], env=self.env, timeout=300)

    def empty(self, registry: str) -> None:
        peers.run([self.client, "image", "rm", "-f", "app:b"], env=self.env, check=False)
        peers.run([self.client, "builder", "prune", "-af"], env=self.env, check=False,
                  timeout=300)
        peers.run([self.client, "image", "prune", "-f"], env=self.env, check=False)
        peers.run([self.client, "pull", f"{registry}/bench/bk-base:1"], env=self.env,
                  timeout=300)

    def cache_from_build(self, context: Path, registry: str, inline: bool) -> list[str]:
        return [self.client, "build", "-q", "--network", "host", "-t", "app:b",
                "--build-arg", f"BASE={registry}/bench/bk-base:1", "--cache-from",
                f"{registry}/bench/bk-app:1", str(context)]


class Podman(peers.Podman):
    name = "podman"

    def __init__(self) -> None:
        super().__init__(BASE)
        self.base = "localhost/busybox:bench"

    def start(self, rootfs: Path) -> None:  # type: ignore[override]
        super().start()
        peers.run(self.cli("import", str(rootfs), self.base), env=self.env)

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return self.cli("build", "-q", "--network", "host", "--layers", "--pull=never",
                        "-t", tag, "--build-arg", f"BASE={self.base}",
                        *(["--no-cache"] if no_cache else []), str(context))


def stop(engines, lock_fd: int) -> None:
    """Stop and delete every engine's store (one failing does not keep the others), then let
    go of the benchmark's lock."""
    for engine in engines:
        try:
            engine.cleanup()
        except Exception as error:  # noqa: BLE001 - keep stopping the others
            log(f"cleanup of {engine.name}: {error}")
    os.close(lock_fd)


def timed(engine, cmd: list[str], timeout: float = 900) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=engine.env, capture_output=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{engine.name}: {' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def prune(engine) -> None:
    """Drop images left by --no-cache runs so that the big runs do not fill the disk."""
    if engine.name in ("docker", "buildkit"):
        peers.run(["docker", "image", "prune", "-f"], env=engine.env, check=False, timeout=600)
    elif engine.name == "podman":
        peers.run(engine.cli("image", "prune", "-f"), env=engine.env, check=False, timeout=600)
    else:
        peers.run(engine.cli("image", "prune", "-f"), env=engine.env, check=False, timeout=600)


def cache_from_rows(engines, context: Path, runs: int, times: dict) -> None:
    """Machine A exports, machine B (emptied before each run) builds from the cache alone."""
    from transfer import Registry

    pairs = [(e, e.second()) for e in engines if e.name in ("lamina", "buildkit")]
    if not pairs:
        return
    registry = Registry(BASE / "registry")
    registry.start()
    try:
        for a, b in pairs:
            short = "lamina" if a.name == "lamina" else "bk"
            a.push_base(f"{registry.host}/bench/{short}-base:1")
            timed(a, a.export_build(context, registry.host, inline=True))
            a.push_built(registry.host)
            if a.name == "lamina":
                timed(a, a.export_build(context, registry.host, inline=False))
            if a.name == "buildkit":
                b.start_empty()
        rows = [("cache-from an image's inline cache, empty store B (20 MB layer)", True),
                ("cache-from a registry cache (--cache-to type=registry), empty store B", False)]
        for rep in range(runs):
            for work, inline in rows:
                for a, b in pairs:
                    if a.name != "lamina" and not inline:
                        continue  # --cache-to type=registry needs buildx
                    b.empty(registry.host)
                    times.setdefault((a.name, work), []).append(
                        timed(b, b.cache_from_build(context, registry.host, inline)))
            log(f"cache-from: run {rep + 1}/{runs}")
    finally:
        for _, b in pairs:
            try:
                b.cleanup()
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                log(f"cleanup of {b.name} B: {error}")
        registry.stop()


# ---------------------------------------------------------------- report
def write_results(section: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# lamina benchmark results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        new = head + section + tail
    else:
        new = old.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(new)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="repetitions of the small builds")
    ap.add_argument("--big-runs", type=int, default=3, help="repetitions of the big COPY")
    ap.add_argument("--only", nargs="+", choices=("lamina", "docker", "buildkit", "podman"),
                    default=["lamina", "docker", "buildkit", "podman"])
    ap.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    ap.add_argument("--skip-big", action="store_true", help="only the small Dockerfile")
    args = ap.parse_args(argv)
    lock_fd = lock()
    rootfs, small, big, cache, graph, travel = make_contexts()
    files, total = tree_size(big / "tree")
    engines = []
    for name in args.only:
        engines.append({"lamina": Lamina, "docker": DockerLegacy, "buildkit": DockerBuildKit,
                        "podman": Podman}[name]())
    times: dict[tuple[str, str], list[float]] = {}
    versions = {}
    try:
        for engine in engines:
            log(f"starting {engine.name}")
            engine.start(rootfs)
            versions[engine.name] = engine.version()
        for engine in engines:  # prime: the first build of each engine is not measured
            timed(engine, engine.build(small, "small:bench", no_cache=False))
        for rep in range(args.runs):
            for engine in engines:
                times.setdefault((engine.name, "small cold (--no-cache)"), []).append(
                    timed(engine, engine.build(small, "small:bench", no_cache=True)))
            for engine in engines:
                times.setdefault((engine.name, "small warm (all cached)"), []).append(
                    timed(engine, engine.build(small, "small:bench", no_cache=False)))
            for engine in engines:
                times.setdefault((engine.name, "2 independent stages of 1 s (--no-cache)"),
                                 []).append(timed(engine, engine.build(graph, "graph:bench",
                                                                        no_cache=True)))
            log(f"small: run {rep + 1}/{args.runs}")
        mounts = [e for e in engines if e.name != "docker"]  # the legacy builder has no --mount
        for engine in mounts:  # prime: the cache mount filled once
            timed(engine, engine.build(cache, "cache:bench", no_cache=False))
        for rep in range(args.runs):
            change_requirements(cache, rep)
            for engine in mounts:
                work = "cache mount: RUN again, 20 MB read from the cache"
                times.setdefault((engine.name, work), []).append(
                    timed(engine, engine.build(cache, "cache:bench", no_cache=False)))
            log(f"cache mount: run {rep + 1}/{args.runs}")
        cache_from_rows(engines, travel, args.runs, times)
        for rep in range(0 if args.skip_big else args.big_runs):
            for engine in engines:
                subprocess.run(["sync"], check=False)
                times.setdefault((engine.name, f"COPY {total / 1e6:.0f} MB, {files} files"),
                                 []).append(timed(engine, engine.build(big, "big:bench",
                                                                        no_cache=True)))
                prune(engine)
            log(f"big: run {rep + 1}/{args.big_runs}")
    finally:
        stop(engines, lock_fd)
    names = [e.name for e in engines]
    works = list(dict.fromkeys(work for _, work in times))
    lines = [BEGIN, f"## Build run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             (f"Command: `python3 bench/build.py --runs {args.runs} --big-runs {args.big_runs}` "
              "(medians of interleaved runs in seconds, min-max in brackets; wall time of the CLI "
              "command; stores and contexts on /var/tmp ext4, files in the page cache; the "
              "machine is shared, so compare the ratios of one run)."), "",
             ("Versions: " + "; ".join(f"{n} {versions.get(n, '?')}" for n in names) + ". "
              "docker builds with the legacy builder (DOCKER_BUILDKIT=0), buildkit is the same "
              "Docker Engine building with BuildKit (Debian's 20.10 client, DOCKER_BUILDKIT=1); "
              "buildah is not installed here. The legacy builder has no RUN --mount. "
              "cache-from: store B holds only the base image (pulled from a loopback "
              "docker-registry, as A pushed it) and builds from A's cache alone, fetching its "
              "layers; Debian's 20.10 client gives BuildKit only the inline form (--cache-to "
              "needs buildx, which is not packaged here)."), "",
             "| work | " + " | ".join(names) + " | " +
             " | ".join(f"lamina / {n}" for n in names if n != "lamina") + " |",
             "|---" * (1 + len(names) + len([n for n in names if n != "lamina"])) + "|"]
    for work in works:
        medians = {n: statistics.median(times[(n, work)]) for n in names if (n, work) in times}
        spread = {n: (min(times[(n, work)]), max(times[(n, work)])) for n in medians}
        row = [work] + [f"{medians[n]:.3f} ({spread[n][0]:.2f}-{spread[n][1]:.2f})"
                        if n in medians else "-" for n in names]
        if "lamina" in medians:
            row += [f"{medians['lamina'] / medians[n]:.2f}" if n in medians else "-"
                    for n in names if n != "lamina"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Small Dockerfile (busybox base, 2 COPYs, 1 RUN, LABEL/ENV/WORKDIR/EXPOSE/CMD):",
              "", "```", SMALL_DOCKERFILE.rstrip(), "```", END]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_results(section)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
