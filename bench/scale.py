"""How costs grow with the store and with the work: lamina against Docker Engine and Podman in one
run (issue 14). Each curve at a few points; every command's wall time and peak RSS.

    python3 bench/scale.py            # the full run (23 minutes at load 5-7 on 2 cores)
    python3 bench/scale.py --quick    # fewer and smaller points, 2 repetitions
    python3 bench/scale.py --only containers layers --skip podman --no-results

Curves (bench/RESULTS.md, between this script's markers; a PNG each under bench/plots/):

1. ``containers``: ``ps -a -s``, ``system df``, and the one-container commands ``create``,
   ``rm``, ``inspect``, ``images`` with 10 ... 10,000 containers in the store (1% of them with an
   8 MiB writable layer); at the last point 1,000 more images (``images`` again).
2. ``layers``: images of 1 ... 500 layers: ``load``, ``create``, first ``mount``,
   ``run --rm IMAGE true``; and a ``build`` of a 128-step Dockerfile (``--set build_steps=256``
   for the issue's 256: each step takes seconds in every engine on a shared 2-core machine).
3. ``files``: roots of 1,000 ... 200,000 files: ``import``, ``diff`` and ``commit`` after 10
   changes, ``export``, ``save``; lamina's ``diff`` also in-process (the work without start-up).
4. ``transfer``: ``push`` and ``pull`` of 1, 10, 50 layers of 1 MiB through a loopback registry.
5. ``parallel``: 8 concurrent ``create``, ``run -d``, ``build`` on one store: wall time.
6. ``sleepers``: resident memory of running containers, through bench/sleepers.py when it is
   there (``measure``), on this run's engines (no second dockerd or Podman store), their
   ``run -d``s ``parallel`` at a time.

How stores are filled (the populating is not timed): lamina's containers through its Python API
(``Engine.create``, the code ``lamina create`` runs, so the store is what the CLI leaves);
Docker's and Podman's through their Engine APIs (dockerd's socket, ``podman system service``),
eight requests at a time. The 1% large writable layers and the 10 changes of curve 3 are written
straight into each container's upper directory (``GraphDriver.Data.UpperDir``), as the kernel
would when the container writes. 1,000 images: one ``load`` of a Docker archive holding 1,000
images that share a layer (each its own config). Docker's figures are its client's RSS: the
daemon does the work in its own, long-lived memory. Docker's load of 128 layers is refused
(``max depth exceeded``) after about as long as a load of 64 takes: its larger points are then
marked, not tried again. At the end only running containers are removed through the engines;
the thousands of stopped ones go with the stores' directories. RESULTS.md says how long each
curve took, its set-up included.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402

BASE = Path(os.environ.get("LAMINA_SCALE_BASE", "/var/tmp/lamina-scale-bench"))
BEGIN = "<!-- bench/scale.py: begin generated section -->"
END = "<!-- bench/scale.py: end generated section -->"
IMAGE = "bench-busybox"
ENGINES = ("lamina", "docker", "podman")
BIG_LAYER = 8 << 20
# Sized for 30 minutes (full: 23.2 at load 5-7) and 5 (quick: one repetition, a smoke test of
# every curve; 7.7 minutes at load 7-8 before the sleepers reused this run's engines, 5.1-5.8 at
# load 4-8 after, still with 128 layers, 2.5 at load 4-5 with 64) on a shared 2-core machine (a
# first full run of 10,000 containers, 1,000 images, roots of 200,000 files and 3 repetitions
# took 39 minutes for curves 1-2 alone): the largest points (10,000 containers, 1,000 images, 200,000 files)
# are reached with --set, and RESULTS.md says which points a run left out. Builds of many steps
# take seconds a step in every engine here: 128 steps already pass Docker's limit (125 layers).
# Podman stops at 100 containers (filling its store through its API takes minutes a thousand)
# and at 128 layers (its load of 256 and 500 layers took two minutes each; it cannot mount them).
FULL = {"containers": [10, 100, 1000, 3000], "images": 200, "layers": [1, 16, 64, 128, 256, 500],
        "build_steps": 64, "files": [1000, 10000, 50000], "transfer": [1, 10, 50],
        "reps": 2, "parallel": 8, "sleepers": [1, 10, 50], "most_containers": {"podman": 100},
        "most_layers": {"podman": 128}}
# --quick: a Docker figure at every deep-image point but the last (64 layers, not 128, which it
# refuses after 20-40 s of loading: the full run shows that refusal) and lamina past the classic
# mount options' page limit (256)
QUICK = {"containers": [10, 100], "images": 20, "layers": [1, 64, 256], "build_steps": 8,
         "files": [1000, 10000], "transfer": [1, 10], "reps": 1, "parallel": 8, "sleepers": [1, 10],
         "most_containers": {"podman": 100}, "most_layers": {"podman": 128, "docker": 125}}
LEFT_OUT = {"docker": "Docker refuses images of more than 125 layers (max depth exceeded)"}


STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[scale {time.monotonic() - STARTED:6.0f} s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ engines


class Lamina:
    name = "lamina"

    def __init__(self):
        self.root = BASE / "lamina"
        self.env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # users' installs are byte-compiled

    def cli(self, *args) -> list[str]:
        return [sys.executable, "-S", str(REPO / "bin" / "lamina"), "--root", str(self.root),
                "--driver", "overlay2", *map(str, args)]

    def start(self) -> None:
        peers.remove_tree(self.root)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")],
                       check=True, capture_output=True)

    def stop(self) -> None:
        """Remove the running containers (their monitors go with them); the stopped ones,
        thousands at the end of a run, go with the store's directory."""
        ids = self.ids() if self.root.exists() else []
        if ids:
            subprocess.run(self.cli("rm", "-f", *ids), capture_output=True, env=self.env,
                           check=False)
        peers.remove_tree(self.root)

    def ids(self) -> list[str]:
        p = subprocess.run(self.cli("ps", "-q", "--no-trunc"), capture_output=True,
                           env=self.env, check=False)
        return p.stdout.decode().split()

    def engine(self):
        sys.path.insert(0, str(REPO / "src"))
        from lamina import Engine

        return Engine(root=str(self.root), driver="overlay2")

    def populate(self, image: str, count: int, big_every: int) -> None:
        """``count`` more containers through lamina's Python API (what ``lamina create`` runs)."""
        engine = self.engine()
        try:
            have = engine.db.execute("SELECT count(*) FROM containers").fetchone()[0]
            for i in range(have, have + count):
                cid = engine.create(image, command=["true"])
                if i % big_every == big_every - 1:
                    write_big(engine.snaps.dir(cid))
        finally:
            engine.close()

    def upper(self, cid: str) -> str:
        return inspect(self, cid)["GraphDriver"]["Data"]["UpperDir"]


class Docker(peers.Docker):
    def api(self) -> Api:
        return Api(str(self.sock))

    def upper(self, cid: str) -> str:
        return inspect(self, cid)["GraphDriver"]["Data"]["UpperDir"]

    def populate(self, image: str, count: int, big_every: int) -> None:
        populate_api(self, self.api(), image, count, big_every)


class Podman(peers.Podman):
    service: subprocess.Popen | None = None

    def start(self) -> None:
        super().start()
        sock = self.dir / "api.sock"
        self.service = subprocess.Popen(
            self.cli("system", "service", "--time=0", f"unix://{sock}"), env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        for _ in range(200):
            if sock.exists():
                return
            time.sleep(0.05)
        raise RuntimeError("podman system service did not start")

    def stop(self) -> None:
        if self.service is not None:
            peers.stop_pid(self.service.pid, timeout=10, name="podman service")
            self.service.wait()
            self.service = None
        super().stop()

    def api(self) -> Api:
        return Api(str(self.dir / "api.sock"))

    def upper(self, cid: str) -> str:
        return inspect(self, cid)["GraphDriver"]["Data"]["UpperDir"]

    def populate(self, image: str, count: int, big_every: int) -> None:
        populate_api(self, self.api(), image, count, big_every)


class Api:
    """The Docker Engine API on a unix socket (dockerd's, or Podman's compatible one)."""

    def __init__(self, path: str):
        self.path = path

    def call(self, method: str, url: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("localhost", timeout=300)
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(self.path)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        text = answer.read()
        conn.close()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {url}: {answer.status} {text[:300]!r}")
        return json.loads(text) if text else {}


def populate_api(eng, api: Api, image: str, count: int, big_every: int) -> None:
    """``count`` more containers through the engine's API, eight requests at a time."""
    have = len(subprocess.run(eng.cli("ps", "-aq"), env=eng.env, capture_output=True,
                              check=True).stdout.split())

    def one(i: int) -> None:
        cid = api.call("POST", "/v1.41/containers/create",
                       {"Image": image, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})["Id"]
        if i % big_every == big_every - 1:
            data = api.call("GET", f"/v1.41/containers/{cid}/json")
            write_big(data["GraphDriver"]["Data"]["UpperDir"])

    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        list(pool.map(one, range(have, have + count)))
    finally:  # interrupted: the requests not yet sent are not sent
        pool.shutdown(wait=True, cancel_futures=True)


def write_big(upper: str) -> None:
    with open(os.path.join(upper, "big"), "wb") as f:
        f.write(os.urandom(BIG_LAYER))


def inspect(eng, name: str) -> dict:
    out = subprocess.run(eng.cli("inspect", name), env=eng.env, capture_output=True, check=True)
    doc = json.loads(out.stdout)
    return doc[0] if isinstance(doc, list) else doc


# ------------------------------------------------------------------ measuring


class Results:
    """Samples per (curve, point, command, engine): seconds and peak RSS in KiB."""

    def __init__(self):
        self.samples: dict[tuple, list[tuple[float, int]]] = {}
        self.notes: dict[tuple, str] = {}
        self.sleepers: list[dict] | str = []  # curve 6's rows (bench/sleepers.py's)
        self.took: dict[str, float] = {}  # seconds each curve took, its set-up included

    def add(self, key: tuple, seconds: float, rss: int) -> None:
        self.samples.setdefault(key, []).append((seconds, rss))

    def note(self, key: tuple, text: str) -> None:
        self.notes[key] = text

    def median(self, key: tuple) -> tuple[float, int] | None:
        got = self.samples.get(key)
        if not got:
            return None
        return statistics.median(s for s, _ in got), max(r for _, r in got)


def timed(eng, args, results: Results, key: tuple, stdin=None, check: bool = True,
          stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess | None:
    """Run ``eng``'s command ``args`` once, under /usr/bin/time; record (seconds, peak RSS)."""
    report = BASE / f"time-{os.getpid()}.out"
    cmd = eng.cli(*map(str, args)) if eng is not None else list(map(str, args))
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *cmd],
                          env=getattr(eng, "env", None), stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, check=False, timeout=1800)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        first = next((line for line in err if line and "Command exited" not in line), "?")
        if check:
            raise RuntimeError(f"{' '.join(cmd)}: {first}")
        results.note(key, first[:160])
        return None
    results.add(key, elapsed, int(report.read_text().split()[-1]))
    return proc


def quiet(eng, *args, check: bool = True, timeout: float = 1800) -> str:
    p = subprocess.run(eng.cli(*map(str, args)), env=eng.env, capture_output=True,
                       check=False, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(eng.cli(*map(str, args)))}: "
                           f"{p.stderr.decode(errors='replace')[-500:]}")
    return p.stdout.decode()


def lamina_in_process(eng: Lamina, fn, reps: int) -> float:
    """Median seconds of ``fn(engine)`` in one process (the work, without process start-up)."""
    engine = eng.engine()
    try:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn(engine)
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        engine.close()


# ------------------------------------------------------------------ data


def tar_bytes(entries) -> bytes:
    """A tar of (name, bytes | None for a directory), deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(path: Path, images: list[tuple[str, list[bytes], dict]]) -> None:
    """A Docker archive (``docker save``'s format): (reference, layer tars, extra config)."""
    with tarfile.open(path, "w") as out:
        written = set()

        def add(name: str, data: bytes) -> None:
            if name in written:
                return
            written.add(name)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

        manifest = []
        for reference, layers, extra in images:
            names, diff_ids = [], []
            for data in layers:
                digest = hashlib.sha256(data).hexdigest()
                add(f"{digest}/layer.tar", data)
                names.append(f"{digest}/layer.tar")
                diff_ids.append(f"sha256:{digest}")
            config = json.dumps({"architecture": "amd64", "os": "linux",
                                 "config": {"Cmd": ["sh"], **extra},
                                 "rootfs": {"type": "layers", "diff_ids": diff_ids},
                                 "history": [{"created_by": f"layer {i}"}
                                             for i in range(len(layers))]}).encode()
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            add(config_name, config)
            manifest.append({"Config": config_name, "RepoTags": [reference], "Layers": names})
        add("manifest.json", json.dumps(manifest).encode())


def busybox_tar() -> Path:
    path = BASE / "data" / "busybox-rootfs.tar"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        peers.run([str(REPO / "examples" / "busybox-rootfs.sh"), str(path)])
    return path


def deep_image(layers: int) -> Path:
    """A Docker archive of ``deep:N``: busybox, then N-1 layers of one small file each."""
    path = BASE / "data" / f"deep-{layers}.tar"
    if not path.exists():
        base = busybox_tar().read_bytes()
        extra = [tar_bytes([(f"layer{i:03d}", f"{i}\n".encode())]) for i in range(1, layers)]
        docker_archive(path, [(f"deep:{layers}", [base, *extra], {})])
    return path


def many_images(count: int) -> Path:
    """A Docker archive of ``many:N`` images, all on busybox, each its own config (a label)."""
    path = BASE / "data" / f"many-{count}.tar"
    if not path.exists():
        base = busybox_tar().read_bytes()
        docker_archive(path, [(f"many:{i}", [base], {"Labels": {"n": str(i)}})
                              for i in range(count)])
    return path


def files_tar(count: int) -> Path:
    """A rootfs of busybox plus ``count`` 64-byte files, 1,000 to a directory."""
    path = BASE / "data" / f"files-{count}.tar"
    if not path.exists():
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar, \
                tarfile.open(busybox_tar()) as base:
            for member in base:
                tar.addfile(member, base.extractfile(member) if member.isreg() else None)
            for d in range((count + 999) // 1000):
                info = tarfile.TarInfo(f"data/d{d:03d}")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
                tar.addfile(info)
            for i in range(count):
                data = hashlib.sha256(str(i).encode()).hexdigest().encode()
                info = tarfile.TarInfo(f"data/d{i // 1000:03d}/f{i:06d}")
                info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
                tar.addfile(info, io.BytesIO(data))
    return path


def random_layers(count: int) -> Path:
    """A Docker archive of ``xfer:N``: busybox and N-1 layers of 1 MiB of random bytes each."""
    path = BASE / "data" / f"xfer-{count}.tar"
    if not path.exists():
        base = busybox_tar().read_bytes()
        extra = [tar_bytes([(f"blob{i:03d}", os.urandom(1 << 20))]) for i in range(1, count)]
        docker_archive(path, [(f"xfer:{count}", [base, *extra], {})])
    return path


# ------------------------------------------------------------------ curves


def one_container(eng, key: tuple, results: Results) -> None:
    """``images``, then ``create``, ``inspect`` and ``rm`` of one container (by short ID)."""
    timed(eng, ["images"], results, (*key, "images", eng.name))
    proc = timed(eng, ["create", "--network", "none", IMAGE, "true"], results,
                 (*key, "create", eng.name), stdout=subprocess.PIPE)
    cid = proc.stdout.decode().split()[-1][:12]
    timed(eng, ["inspect", cid], results, (*key, "inspect", eng.name))
    timed(eng, ["rm", cid], results, (*key, "rm", eng.name))


def curve_containers(engines, cfg, results: Results) -> None:
    reps = cfg["reps"]
    have = 0
    for n in cfg["containers"]:
        here = [eng for eng in engines if n <= cfg["most_containers"].get(eng.name, n)]
        for eng in engines:
            if eng not in here:
                for command in ("ps -a -s", "system df", "images", "create", "inspect", "rm"):
                    results.note(("containers", n, command, eng.name), "filling its store "
                                 "through its API takes too long for this run (see below)")
                continue
            log(f"containers: {eng.name} to {n}")
            start = time.perf_counter()
            eng.populate(IMAGE, n - have, 100)
            results.note(("containers", n, "populate", eng.name),
                         f"{time.perf_counter() - start:.0f} s for {n - have}")
        have = n
        for _ in range(reps):
            for eng in here:
                key = ("containers", n)
                timed(eng, ["ps", "-a", "-s"], results, (*key, "ps -a -s", eng.name))
                timed(eng, ["system", "df"], results, (*key, "system df", eng.name))
                one_container(eng, key, results)
    if cfg["images"]:
        count = cfg["images"]
        archive = many_images(count)
        for eng in engines:
            quiet(eng, "load", "-i", archive)
        n = cfg["containers"][-1]
        key = ("containers", f"+ {count} images")
        for _ in range(reps):
            for eng in engines:  # each at the most containers it reached
                one_container(eng, key, results)


def curve_layers(engines, cfg, results: Results) -> None:
    reps = cfg["reps"]
    refused: dict[str, int] = {}  # engine -> the fewest layers its load refused
    for n in sorted(cfg["layers"]):
        archive = deep_image(n)
        ref = f"deep:{n}"
        for eng in engines:
            key = ("layers", n)
            if n > cfg.get("most_layers", {}).get(eng.name, n):
                why = LEFT_OUT.get(eng.name, "its load of so many layers takes minutes")
                for command in ("load", "create", "first mount", "run --rm"):
                    results.note((*key, command, eng.name), f"left out of this run ({why}; see "
                                 "the settings)")
                continue
            if eng.name in refused:  # Docker's depth limit: more layers are refused as well,
                # after as long a load (about 20 s for 128 here, more for more)
                first = results.notes[("layers", refused[eng.name], "load", eng.name)]
                results.note((*key, "load", eng.name),
                             f"not tried: its load of {refused[eng.name]} layers was refused "
                             f"({first})")
                continue
            log(f"layers: {eng.name} {n}")
            if timed(eng, ["load", "-i", archive], results, (*key, "load", eng.name),
                     check=False) is None:
                refused[eng.name] = n
                continue
            for _ in range(reps):
                proc = timed(eng, ["create", "--network", "none", ref, "true"], results,
                             (*key, "create", eng.name), stdout=subprocess.PIPE, check=False)
                if proc is None:
                    break
                cid = proc.stdout.decode().split()[-1]
                if eng.name != "docker" and timed(  # Docker has no mount verb
                        eng, ["mount", cid], results, (*key, "first mount", eng.name),
                        check=False) is not None:
                    quiet(eng, "umount", cid)
                quiet(eng, "rm", cid)
                timed(eng, ["run", "--rm", "--network", "none", ref, "true"], results,
                      (*key, "run --rm", eng.name), check=False)
            quiet(eng, "rmi", ref, check=False)
    steps = cfg["build_steps"]
    context = BASE / "data" / f"build-{steps}"
    if not context.exists():
        context.mkdir(parents=True)
        lines = [f"FROM {IMAGE}"]
        for i in range(1, steps):
            (context / f"f{i:03d}").write_text(f"{i}\n")
            lines.append(f"COPY f{i:03d} /f{i:03d}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    for eng in engines:
        log(f"layers: {eng.name} build of {steps} steps")
        args = ["build", "-q", "--network=none", "--no-cache", "-t", f"built:{steps}", context]
        timed(eng, args, results, ("build", steps, "build", eng.name), check=False)
        quiet(eng, "rmi", f"built:{steps}", check=False)


def ten_changes(upper: str, count: int) -> None:
    """10 changes in a container's upper dir, as the kernel writes them: 4 files added, 4
    rewritten (copied up), 2 deleted (whiteouts)."""
    data = os.path.join(upper, "data", "d000")
    os.makedirs(data, exist_ok=True)
    for i in range(4):
        with open(os.path.join(upper, f"new{i}"), "w") as f:
            f.write("new\n")
    for i in range(4):
        with open(os.path.join(data, f"f{i:06d}"), "w") as f:
            f.write("rewritten\n")
    for i in (4, 5):
        os.mknod(os.path.join(data, f"f{i:06d}"), 0o20000 | 0o644, os.makedev(0, 0))


def curve_files(engines, cfg, results: Results) -> None:
    reps = cfg["reps"]
    for n in cfg["files"]:
        archive = files_tar(n)
        key = ("files", n)
        for eng in engines:
            log(f"files: {eng.name} {n}")
            timed(eng, ["import", archive, f"files:{n}"], results, (*key, "import", eng.name))
            cid = quiet(eng, "create", "--network", "none", f"files:{n}", "true").split()[-1]
            ten_changes(eng.upper(cid), n)
            for _ in range(reps):
                timed(eng, ["diff", cid], results, (*key, "diff", eng.name))
            if eng.name == "lamina":
                seconds = lamina_in_process(eng, lambda e, c=cid: e.diff(c), max(reps, 10))
                results.add((*key, "diff (in-process)", "lamina"), seconds, 0)
            timed(eng, ["commit", cid, f"committed:{n}"], results, (*key, "commit", eng.name))
            timed(eng, ["export", "-o", BASE / "export.tar", cid], results,
                  (*key, "export", eng.name))
            timed(eng, ["save", "-o", BASE / "save.tar", f"files:{n}"], results,
                  (*key, "save", eng.name))
            for name in ("export.tar", "save.tar"):
                (BASE / name).unlink(missing_ok=True)
            quiet(eng, "rm", cid)
            quiet(eng, "rmi", f"committed:{n}", f"files:{n}", check=False)


def curve_transfer(engines, cfg, results: Results) -> None:
    import transfer

    registry = transfer.Registry(BASE / "registry")
    registry.start()
    try:
        for n in cfg["transfer"]:
            archive = random_layers(n)
            for eng in engines:
                log(f"transfer: {eng.name} {n} layers")
                key = ("transfer", n)
                quiet(eng, "load", "-i", archive)
                dest = f"{registry.host}/scale/{eng.name}-{n}:1"
                tls = [] if eng.name == "docker" else ["--tls-verify=false"]
                if eng.name == "lamina":
                    push = ["push", "-q", *tls, f"xfer:{n}", dest]
                else:
                    quiet(eng, "tag", f"xfer:{n}", dest)
                    push = ["push", *(["-q"] if eng.name == "docker" else []), *tls, dest]
                timed(eng, push, results, (*key, "push", eng.name))
                quiet(eng, "rmi", f"xfer:{n}", check=False)
                quiet(eng, "rmi", dest, check=False)
                timed(eng, ["pull", "-q", *tls, dest], results, (*key, "pull", eng.name))
                quiet(eng, "rmi", dest, check=False)
    finally:
        registry.stop()
        peers.remove_tree(BASE / "registry")


def curve_parallel(engines, cfg, results: Results) -> None:
    width = cfg["parallel"]
    context = BASE / "data" / "build-small"
    if not context.exists():
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(f"FROM {IMAGE}\nARG N\nCOPY f /f\nRUN echo $N > /n\n")
        (context / "f").write_text("f\n")

    def batch(eng, label: str, make_args) -> list[str]:
        start = time.perf_counter()
        procs = [subprocess.Popen(eng.cli(*map(str, make_args(i))), env=eng.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(width)]
        outs = [p.communicate(timeout=1800) for p in procs]
        elapsed = time.perf_counter() - start
        failed = [err for p, (_, err) in zip(procs, outs) if p.returncode != 0]
        if failed:
            results.note(("parallel", width, label, eng.name),
                         f"{len(failed)} failed: {failed[0].decode(errors='replace')[:120]}")
        else:
            results.add(("parallel", width, label, eng.name), elapsed, 0)
        return [out.decode().split()[-1] for out, _ in outs if out.strip()]

    for _ in range(cfg["reps"]):
        for eng in engines:
            log(f"parallel: {eng.name}")
            ids = batch(eng, "create", lambda i: ["create", "--network", "none", IMAGE, "true"])
            ids += batch(eng, "run -d", lambda i: ["run", "-d", "--network", "none", IMAGE,
                                                   "sleep", "600"])
            quiet(eng, "rm", "-f", *ids, check=False)
            batch(eng, "build", lambda i: ["build", "-q", "--network=none", "--no-cache", "--build-arg",
                                           f"N={i}", "-t", f"par:{i}", context])
            quiet(eng, "rmi", *[f"par:{i}" for i in range(width)], check=False)


def curve_sleepers(engines, cfg, results: Results) -> None:
    """bench/sleepers.py's measure, on this run's engines (their stores and daemons as the other
    curves left them: a monitor's or shim's memory does not depend on them), ``parallel`` ``run
    -d``s at a time."""
    try:
        import sleepers
    except ImportError:
        results.sleepers = "bench/sleepers.py is not here: the running-sleepers curve was skipped"
        return
    running = {eng.name: (sleepers.Sleepers(eng.name, eng.cli(), eng.env, IMAGE),
                          str(getattr(eng, "root", ""))) for eng in engines}
    results.sleepers = sleepers.measure(cfg["sleepers"], [eng.name for eng in engines],
                                        running=running, width=cfg["parallel"])


PODMAN_FILL = (
    "Podman's store is filled through `podman system service` (its Docker-compatible API), eight "
    "requests at a time, and its containers are counted under one lock: in a trial its 900 "
    "containers from 100 to 1,000 had not been made after more than four minutes, so Podman stops "
    "at 100 containers here (`+ N images`: each engine at the most containers it reached).")

CURVES = ("containers", "layers", "files", "transfer", "parallel", "sleepers")


# ------------------------------------------------------------------ report


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(results: Results, curve: str, names: list[str]) -> str:
    keys = sorted({k[1:3] for k in list(results.samples) + list(results.notes)
                   if k[0] == curve and k[2] != "populate"},
                  key=lambda k: (str(k[1]), k[0] if isinstance(k[0], int) else 10**9, str(k[0])))
    head = ["command", "point", *[f"{n} s (RSS MiB)" for n in names],
            *[f"lamina/{n}" for n in names if n != "lamina"]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point, command in keys:
        cells, times = [], {}
        for name in names:
            got = results.median((curve, point, command, name))
            if got is None:
                note = results.notes.get((curve, point, command, name))
                cells.append(f"not reached: {note}" if note else "-")
                continue
            seconds, rss = got
            times[name] = seconds
            cells.append(fmt_s(seconds) + (f" ({rss / 1024:.0f})" if rss else ""))
        ratios = [f"{times['lamina'] / times[n]:.2f}" if "lamina" in times and n in times
                  and times[n] > 0 else "-" for n in names if n != "lamina"]
        rows.append("| " + " | ".join([command, str(point), *cells, *ratios]) + " |")
    return "\n".join(rows)


def plot(results: Results, curve: str, names: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # scripts/setup installs the test extra only
        log(f"no plot of {curve}: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    commands = sorted({k[2] for k in results.samples if k[0] == curve})
    if not commands:
        return False
    fig, axes = plt.subplots(1, len(commands), figsize=(3.2 * len(commands), 3), squeeze=False)
    for ax, command in zip(axes[0], commands):
        for name in names:
            points = sorted((k[1], results.median(k)[0]) for k in results.samples
                            if k[0] == curve and k[2] == command and k[3] == name
                            and isinstance(k[1], int))
            if points:
                ax.plot([p for p, _ in points], [s for _, s in points], marker="o", label=name,
                        color=f"C{ENGINES.index(name)}")  # an engine's colour in every panel
        ax.set_title(command, fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel({"containers": "containers in the store", "layers": "image layers",
                       "files": "files in the root", "transfer": "layers"}.get(curve, curve),
                      fontsize=8)
        ax.set_ylabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_results(results: Results, names, args, cfg, elapsed: float, versions: dict) -> str:
    lines = [f"## Scaling curves (bench/scale.py{' --quick' if args.quick else ''})", "",
             f"`{' '.join(['python3', 'bench/scale.py', *sys.argv[1:]])}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed / 60:.1f} min; "
             f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} cores, shared with "
             "other work (medians of interleaved runs: compare ratios, not absolute figures); "
             + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
             "", "Points and repetitions of this run (the issue's largest are reached with "
             "`--set`; a peer's points left out are marked in the tables): `"
             + json.dumps(cfg, separators=(", ", ": ")) + "`.",
             "", ("Each cell: median wall time of the command (its peak RSS, MiB, in brackets; "
                  "Docker's is its client's, the daemon's work is not in it). Ratios below 1: "
                  "lamina is faster. `not reached`: the peer refused or failed, with its first "
                  "error line."),
             ""]
    titles = {"containers": "1-2. Commands with many containers (and images) in the store",
              "layers": "3. Deep images", "build": "3. A build of many steps",
              "files": "4. Roots of many files", "transfer": "5. Push and pull",
              "parallel": f"7. {cfg['parallel']} commands at once on one store (wall time of "
                          "the batch)"}
    for curve in ("containers", "layers", "build", "files", "transfer", "parallel"):
        if not any(k[0] == curve for k in list(results.samples) + list(results.notes)):
            continue
        lines += [f"### {titles[curve]}", "", table(results, curve, names), ""]
        png = HERE / "plots" / f"scale-{curve}.png"
        if curve not in ("build", "parallel") and plot(results, curve, names, png):
            lines += [f"![{curve}](plots/{png.name})", ""]
        populate = {k: v for k, v in results.notes.items() if k[0] == curve and k[2] == "populate"}
        if populate:
            lines += [PODMAN_FILL, ""] if "podman" in names else []
            lines += ["Filling the stores (not timed above): " + "; ".join(
                f"{k[3]} to {k[1]}: {v}" for k, v in sorted(populate.items(), key=str)) + ".", ""]
    lines += ["### 6. Running containers", ""]
    if isinstance(results.sleepers, str):
        lines += [results.sleepers + ".", ""]
    elif results.sleepers:
        import sleepers

        lines += [sleepers.table(results.sleepers), ""]
    if results.took:
        lines += ["Time each curve took, its set-up (filling the stores, loading) included: "
                  + ", ".join(f"{curve} {seconds / 60:.1f} min"
                              for curve, seconds in results.took.items()) + ".", ""]
    text = "\n".join(lines)
    if not args.no_results:
        path = HERE / "RESULTS.md"
        old = path.read_text() if path.exists() else ""
        section = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            new = head + section + rest.split(END, 1)[1].lstrip("\n")
        else:
            new = old.rstrip("\n") + "\n\n" + section
        path.write_text(new)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=CURVES)
    ap.add_argument("--skip", nargs="+", default=[], choices=ENGINES)
    ap.add_argument("--no-results", action="store_true")
    ap.add_argument("--set", action="append", metavar="NAME=JSON",
                    help="override a setting, e.g. --set 'containers=[10,100]' --set reps=1")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for item in args.set or ():
        name, _, value = item.partition("=")
        cfg[name] = json.loads(value)
    curves = args.only or CURVES
    peers.BASE = BASE
    peers.lock_base()
    import signal

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    started = time.time()
    names = [n for n in ENGINES if n not in args.skip]
    engines = {"lamina": Lamina(), "docker": Docker(BASE), "podman": Podman(BASE)}
    engines = [engines[n] for n in names]
    results = Results()
    versions = {}
    interrupted_by = None
    try:
        for eng in engines:
            eng.start()
            quiet(eng, "import", busybox_tar(), IMAGE)
        for eng in engines:
            versions[eng.name] = getattr(eng, "version", lambda: "this tree")()
        for curve in curves:
            began = time.monotonic()
            try:
                globals()[f"curve_{curve}"](engines, cfg, results)
            except Exception as error:  # noqa: BLE001 - the other curves still run
                log(f"{curve}: {error}")
                results.note((curve, "-", "the curve stopped", "lamina"), str(error)[-300:])
            results.took[curve] = time.monotonic() - began
            log(f"{curve}: {results.took[curve]:.0f} s")
            # what is measured so far is kept, whatever happens next
            write_results(results, names, args, cfg, time.time() - started, versions)
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM: clean up, keep what was measured
        interrupted_by = stop
    finally:
        for eng in engines:
            try:
                eng.stop()
            except Exception as error:  # noqa: BLE001 - the rest must still be stopped
                log(f"stopping {eng.name}: {error}")
        for eng in engines:
            peers.remove_tree(getattr(eng, "dir", None) or eng.root)
    if interrupted_by is not None:
        log(f"interrupted ({interrupted_by}): what was measured is kept")
    text = write_results(results, names, args, cfg, time.time() - started, versions)
    print(text)
    shutil.rmtree(BASE / "data" / "build-small", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
