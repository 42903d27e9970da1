#!/usr/bin/env python3
"""Side-by-side benchmark: lamina against Docker Engine (overlay2) and Podman (overlay).

    python3 bench/run.py [--quick] [--only NAME...] [--no-results]

Benchmarks (names for --only): create, create100, ps, size, copyup, import.
See bench/README.md for what each one measures and how.  Prints a table of medians and the
ratios lamina/docker and lamina/podman, and rewrites its own section of bench/RESULTS.md.
Plain standard library; needs root, dockerd, podman, runc, busybox-static and GNU tar.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import platform
import random
import shlex
import shutil
import signal
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
from peers import BASE, Docker, Podman, log, remove_tree, run, unmount_all  # noqa: E402

DATA = BASE / "data"          # generated tars, kept between runs (deterministic)
RESULTS = HERE / "RESULTS.md"
BEGIN = "<!-- bench/run.py: begin generated section -->"
END = "<!-- bench/run.py: end generated section -->"

BENCHES = ["create", "create100", "ps", "size", "copyup", "import", "run"]

IMG_BASE = "bench-busybox"
IMG_SMALL = "bench-10m"
IMG_BIG = "bench-1g"
IMG_IMPORT = "bench-import"

GiB = 1 << 30
MiB = 1 << 20


# ---------------------------------------------------------------- data sets

class RandomReader:
    """A file-like object giving n deterministic pseudo-random bytes."""

    def __init__(self, seed: int, n: int):
        self.rng = random.Random(seed)
        self.left = n

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left:
            size = self.left
        self.left -= size
        return self.rng.randbytes(size)


def _tarinfo(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, mode: int = 0o644):
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = kind
    ti.mode = mode
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    return ti


def _derived_tar(out: Path, base_tar: Path, add) -> None:
    """Write out = every member of base_tar, then what add(tar) appends.  Atomic."""
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(base_tar) as src, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as dst:
        dst.copybufsize = 4 * MiB
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        add(dst)
    tmp.rename(out)


def make_data(need: set[str]) -> dict[str, Path]:
    """Build (once; kept under /var/tmp/lamina-bench/data) the tars the benchmarks use."""
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {"base": DATA / "busybox-rootfs.tar", "small": DATA / "busybox-10m.tar",
             "big": DATA / "busybox-1g.tar", "import": DATA / "busybox-200m-mixed.tar"}
    if not paths["base"].exists():
        log("building the busybox rootfs tar (examples/busybox-rootfs.sh)")
        run([str(REPO / "examples" / "busybox-rootfs.sh"), str(paths["base"])], timeout=120)

    if "small" in need and not paths["small"].exists():
        log("generating busybox + 8 MiB file (~10 MB image)")

        def add_small(t):
            t.addfile(_tarinfo("./blob", 8 * MiB), RandomReader(10, 8 * MiB))
        _derived_tar(paths["small"], paths["base"], add_small)

    if "big" in need and not paths["big"].exists():
        log("generating busybox + one 1 GiB file /big (random content, seed 1)")

        def add_big(t):
            t.addfile(_tarinfo("./big", GiB), RandomReader(1, GiB))
        _derived_tar(paths["big"], paths["base"], add_big)

    if "import" in need and not paths["import"].exists():
        log("generating busybox + ~200 MB of random files of mixed sizes (seed 42)")

        def add_mixed(t):
            rng = random.Random(42)
            target, total, i = 200 * 1000 * 1000, 0, 0
            t.addfile(_tarinfo("./data", kind=tarfile.DIRTYPE, mode=0o755))
            for d in range(16):
                t.addfile(_tarinfo(f"./data/d{d:02}", kind=tarfile.DIRTYPE, mode=0o755))
            while total < target:
                r = rng.random()
                if r < 0.85:      # small files, 512 B - 32 KiB
                    size = int(2 ** rng.uniform(9, 15))
                elif r < 0.98:    # medium, 32 KiB - 1 MiB
                    size = int(2 ** rng.uniform(15, 20))
                else:             # large, 1 - 16 MiB
                    size = int(2 ** rng.uniform(20, 24))
                size = min(size, target - total)
                t.addfile(_tarinfo(f"./data/d{i % 16:02}/f{i:05}", size),
                          RandomReader(1000 + i, size))
                total += size
                i += 1
        _derived_tar(paths["import"], paths["base"], add_mixed)
    return paths


# ---------------------------------------------------------------- engines

class LaminaEngine:
    name = "lamina"

    def __init__(self, exe: str, driver: str | None):
        self.exe = exe
        self.driver = driver
        self.dir = BASE / "lamina"
        self.root = self.dir / "root"
        self.env = dict(os.environ)
        self.ids: list[str] = []

    def cli(self, *args: str) -> list[str]:
        drv = ["--driver", self.driver] if self.driver else []
        return [self.exe, "--root", str(self.root), *drv, *args]

    def version(self) -> str:
        p = run([self.exe, "--version"], check=False, timeout=30)
        v = (p.stdout or p.stderr).decode().strip().splitlines()
        v = v[0] if p.returncode == 0 and v else "?"
        g = run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cs"], check=False, timeout=10)
        return f"{v} (repo {g.stdout.decode().strip() or '?'})"

    def start(self) -> None:
        self.cleanup()
        self.root.mkdir(parents=True, exist_ok=True)

    def ref(self, image: str) -> str:
        return image

    def import_cmd(self, tar: Path, name: str) -> list[str]:
        return self.cli("import", str(tar), name)

    def create_cmd(self, image: str, cmd: str = "true") -> list[str]:
        return self.cli("create", self.ref(image))

    def ps_cmd(self) -> list[str]:
        return self.cli("ps", "-a", "-s")

    def run_cmd(self, image: str) -> list[str]:
        return self.cli("run", "--rm", "--network", "none", self.ref(image), "true")

    def rmi(self, image: str) -> None:
        run(self.cli("rmi", self.ref(image)), env=self.env, check=False, timeout=300)

    def mount(self, cid: str) -> Path:
        p = run(self.cli("mount", cid), env=self.env, timeout=60)
        return Path(p.stdout.decode().strip().splitlines()[-1])

    def umount(self, cid: str) -> None:
        run(self.cli("umount", cid), env=self.env, check=False, timeout=60)

    def remove_containers(self) -> None:
        for i in range(0, len(self.ids), 50):
            run(self.cli("rm", "-f", *self.ids[i:i + 50]), env=self.env, check=False,
                timeout=300)
        self.ids.clear()

    def cleanup(self) -> None:
        if self.root.exists() and self.ids:
            self.remove_containers()
        unmount_all(self.dir)
        remove_tree(self.dir)


class DockerEngine(Docker):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []

    def ref(self, image: str) -> str:
        return image

    def import_cmd(self, tar: Path, name: str) -> list[str]:
        return ["docker", "import", str(tar), name]

    def create_cmd(self, image: str, cmd: str = "true") -> list[str]:
        return ["docker", "create", "--network", "none", image, *cmd.split()]

    def ps_cmd(self) -> list[str]:
        return ["docker", "ps", "-a", "-s"]

    def run_cmd(self, image: str) -> list[str]:
        return ["docker", "run", "--rm", "--network", "none", image, "true"]

    def rmi(self, image: str) -> None:
        run(["docker", "rmi", "-f", image], env=self.env, check=False, timeout=300)

    def mount(self, cid: str) -> Path:
        # Docker mounts a container's overlay only while it runs: start it (sleep 1000).
        run(["docker", "start", cid], env=self.env, timeout=60)
        p = run(["docker", "inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", cid],
                env=self.env, timeout=30)
        return Path(p.stdout.decode().strip())

    def umount(self, cid: str) -> None:
        pass  # `docker rm -f` stops the container and unmounts

    def remove_containers(self) -> None:
        p = run(["docker", "ps", "-aq"], env=self.env, check=False, timeout=60)
        ids = p.stdout.decode().split()
        for i in range(0, len(ids), 50):
            run(["docker", "rm", "-f", *ids[i:i + 50]], env=self.env, check=False, timeout=300)
        self.ids.clear()


class PodmanEngine(Podman):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []

    def ref(self, image: str) -> str:
        return f"localhost/{image}:latest"

    def import_cmd(self, tar: Path, name: str) -> list[str]:
        return self.cli("import", "--quiet", str(tar), name)

    def create_cmd(self, image: str, cmd: str = "true") -> list[str]:
        return self.cli("create", "--network", "none", self.ref(image), *cmd.split())

    def ps_cmd(self) -> list[str]:
        return self.cli("ps", "-a", "-s")

    def run_cmd(self, image: str) -> list[str]:
        return self.cli("run", "--rm", "--network", "none", self.ref(image), "true")

    def rmi(self, image: str) -> None:
        run(self.cli("rmi", "-f", self.ref(image)), env=self.env, check=False, timeout=300)

    def mount(self, cid: str) -> Path:
        p = run(self.cli("mount", cid), env=self.env, timeout=60)
        return Path(p.stdout.decode().strip().splitlines()[-1])

    def umount(self, cid: str) -> None:
        run(self.cli("umount", cid), env=self.env, check=False, timeout=60)

    def remove_containers(self) -> None:
        run(self.cli("rm", "-fa"), env=self.env, check=False, timeout=300)
        self.ids.clear()


# ---------------------------------------------------------------- measuring

def timed(cmd: list[str], env: dict, timeout: float = 120) -> tuple[float, str]:
    """Wall time of one command (fork+exec+exit), and its last stdout line."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout,
                       check=False)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace').strip()[-800:]}")
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    return t, (lines[-1].strip() if lines else "")


def create(eng, image: str, cmd: str = "true", timeout: float = 120) -> tuple[float, str]:
    t, cid = timed(eng.create_cmd(image, cmd), eng.env, timeout)
    if not cid:
        raise RuntimeError(f"{eng.name} create printed no container id")
    eng.ids.append(cid)
    return t, cid


def sync() -> None:
    subprocess.run(["sync"], timeout=600, check=False)


def drop_caches() -> bool:
    sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fmt_t(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 0.01:
        return f"{t:.3f} s"
    return f"{t * 1000:.2f} ms"


class Results:
    def __init__(self):
        self.rows: list[dict] = []   # label, per-engine value (s) or error text, extra text
        self.raw: list[str] = []
        self.notes: list[str] = []

    def row(self, label: str, values: dict, extra: dict | None = None, ratios: bool = True):
        self.rows.append({"label": label, "values": values, "extra": extra or {},
                          "ratios": ratios})

    def sample(self, label: str, engine: str, samples: list[float]) -> None:
        self.raw.append(f"{label} / {engine}: " + ", ".join(f"{s:.4f}" for s in samples))


def cell(v, extra: str = "") -> str:
    if isinstance(v, (int, float)):
        return fmt_t(v) + (f" ({extra})" if extra else "")
    return v if v else "-"


def ratio(a, b) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return f"{a / b:.2f}"
    return "-"


def table(res: Results) -> str:
    out = ["| benchmark | lamina | docker | podman | lamina/docker | lamina/podman |",
           "|---|---|---|---|---|---|"]
    for r in res.rows:
        v, x = r["values"], r["extra"]
        out.append(" | ".join([
            f"| {r['label']}",
            cell(v.get("lamina"), x.get("lamina", "")),
            cell(v.get("docker"), x.get("docker", "")),
            cell(v.get("podman"), x.get("podman", "")),
            ratio(v.get("lamina"), v.get("docker")) if r["ratios"] else "-",
            ratio(v.get("lamina"), v.get("podman")) if r["ratios"] else "-"]) + " |")
    return "\n".join(out)


def guarded(res: Results, bench: str, eng, fn, *args):
    """Run fn; on failure log it and return an error string for the table cell."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one engine's failure must not stop the others
        msg = str(e).strip().splitlines()
        log(f"{bench}/{eng.name} FAILED: {' | '.join(msg)[:600]}")
        res.notes.append(f"{bench} / {eng.name} failed: `{(msg[0] if msg else repr(e))[:200]}`")
        return "error"


# ---------------------------------------------------------------- the benchmarks

def bench_create(engines, res: Results, reps: int) -> None:
    """Median wall time of one create; runs interleaved across engines (1 warm-up each)."""
    samples = {e.name: [] for e in engines}
    failed: dict[str, str] = {}
    sync()
    for i in range(reps + 1):
        for e in engines:
            if e.name in failed:
                continue
            try:
                t, _ = create(e, IMG_BASE)
                if i > 0:
                    samples[e.name].append(t)
            except Exception as ex:  # noqa: BLE001
                failed[e.name] = "error"
                log(f"create/{e.name} FAILED: {ex}")
                res.notes.append(f"create / {e.name} failed: `{str(ex)[:200]}`")
    vals = {}
    for e in engines:
        if e.name not in failed:
            vals[e.name] = statistics.median(samples[e.name])
            res.sample("create", e.name, samples[e.name])
        else:
            vals[e.name] = "error"
        e.remove_containers()
    res.row(f"`create`, one container (median of {reps})", vals)


def bench_run(engines, res: Results, reps: int) -> None:
    """Median wall time of `run --rm IMAGE true` (the whole command: create, mount, runc, exit,
    remove); interleaved across engines, one warm-up each."""
    samples = {e.name: [] for e in engines}
    failed: set[str] = set()
    for i in range(reps + 1):
        for e in engines:
            if e.name in failed:
                continue
            try:
                t, _ = timed(e.run_cmd(IMG_BASE), e.env)
                if i > 0:
                    samples[e.name].append(t)
            except Exception as ex:  # noqa: BLE001
                failed.add(e.name)
                log(f"run/{e.name} FAILED: {ex}")
                res.notes.append(f"run / {e.name} failed: `{str(ex)[:200]}`")
    vals = {}
    for e in engines:
        if e.name in failed:
            vals[e.name] = "error"
        else:
            vals[e.name] = statistics.median(samples[e.name])
            res.sample("run", e.name, samples[e.name])
    res.row(f"`run --rm IMAGE true`, whole command (median of {reps})", vals)


def bench_create_n_and_ps(engines, res: Results, n: int, reps: int, want_create: bool,
                          want_ps: bool) -> None:
    """n sequential creates (total wall time), then `ps -a -s` with those n present."""
    seq, ps = {}, {}
    for e in engines:
        e.remove_containers()

    def create_n(e):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            create(e, IMG_BASE)
        return time.perf_counter() - t0

    for e in engines:
        seq[e.name] = guarded(res, "create100", e, create_n, e)
    if want_ps:
        samples = {e.name: [] for e in engines if isinstance(seq[e.name], float)}
        for e in engines:
            if e.name not in samples:
                ps[e.name] = "error"
        for i in range(reps + 1):
            for e in engines:
                if e.name not in samples or ps.get(e.name) == "error":
                    continue
                try:
                    t, _ = timed(e.ps_cmd(), e.env, 300)
                    if i > 0:
                        samples[e.name].append(t)
                except Exception as ex:  # noqa: BLE001
                    ps[e.name] = "error"
                    log(f"ps/{e.name} FAILED: {ex}")
                    res.notes.append(f"ps / {e.name} failed: `{str(ex)[:200]}`")
        for name, s in samples.items():
            if ps.get(name) != "error":
                ps[name] = statistics.median(s)
                res.sample("ps", name, s)
    for e in engines:
        e.remove_containers()
    if want_create:
        res.row(f"{n} x `create`, sequential (total)", seq)
    if want_ps:
        res.row(f"`ps -a -s` with {n} containers (median of {reps})", ps)


def bench_size(lamina, res: Results, reps: int) -> None:
    """lamina create on a ~10 MB image against a 1 GiB image (interleaved)."""
    small, big = [], []
    sync()
    for i in range(reps + 1):
        t1, _ = create(lamina, IMG_SMALL)
        t2, _ = create(lamina, IMG_BIG)
        if i > 0:
            small.append(t1)
            big.append(t2)
    lamina.remove_containers()
    ms, mb = statistics.median(small), statistics.median(big)
    res.sample("create 10 MB image", "lamina", small)
    res.sample("create 1 GiB image", "lamina", big)
    res.row(f"`create` on a 10 MB image, lamina only (median of {reps})", {"lamina": ms},
            ratios=False)
    res.row(f"`create` on a 1 GiB image, lamina only (median of {reps})", {"lamina": mb},
            {"lamina": f"{mb / ms:.2f}x the 10 MB image"}, ratios=False)


MOUNT_OPTS: dict[str, str] = {}


def overlay_options(path: Path) -> str:
    """fstype and options of the mount at path, without the layer paths."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if pre.split()[4] == str(path):
            fstype, _src, sopts = post.split()[:3]
            keep = [o for o in (pre.split()[5] + "," + sopts).split(",")
                    if not o.startswith(("lowerdir=", "upperdir=", "workdir="))]
            return fstype + " " + ",".join(dict.fromkeys(keep))
    return "? (not found in mountinfo)"


def copy_up_once(e, cold: bool) -> float:
    """Fresh container on the 1 GiB image; time only open('ab') + write 1 byte + close."""
    _, cid = create(e, IMG_BIG, "sleep 1000")
    try:
        merged = e.mount(cid)
        if e.name not in MOUNT_OPTS:
            MOUNT_OPTS[e.name] = overlay_options(merged)
        big = merged / "big"
        if not big.is_file() or big.stat().st_size != GiB:
            raise RuntimeError(f"{big} is not the 1 GiB image file")
        if cold:
            if not drop_caches():
                raise RuntimeError("cannot write /proc/sys/vm/drop_caches")
        else:
            with open(big, "rb") as f:      # read through the overlay: the lower file is cached
                while f.read(8 * MiB):
                    pass
            sync()
        t0 = time.perf_counter()
        with open(big, "ab") as f:
            f.write(b"x")
        t = time.perf_counter() - t0
        if big.stat().st_size != GiB + 1:
            raise RuntimeError("append did not land")
        return t
    finally:
        e.umount(cid)
        e.remove_containers()


def bench_copyup(engines, res: Results, reps: int) -> None:
    can_drop = drop_caches()
    modes = [("warm", False)] + ([("cold", True)] if can_drop else [])
    if not can_drop:
        res.notes.append("copy_up: /proc/sys/vm/drop_caches is not writable; cold-cache row skipped")
    for mode, cold in modes:
        vals = {}
        samples = {e.name: [] for e in engines}
        for _ in range(reps):
            for e in engines:
                if vals.get(e.name) == "error":
                    continue
                r = guarded(res, f"copyup-{mode}", e, copy_up_once, e, cold)
                if isinstance(r, float):
                    samples[e.name].append(r)
                else:
                    vals[e.name] = r
        for e in engines:
            if vals.get(e.name) != "error":
                vals[e.name] = statistics.median(samples[e.name])
                res.sample(f"copy_up {mode}", e.name, samples[e.name])
        what = "warm cache" if not cold else "cold cache (drop_caches)"
        res.row(f"copy_up: first 1-byte append to a 1 GiB image file, {what} "
                f"(median of {reps})", vals)
    res.notes.append("copy_up mount options (layer paths left out): " +
                     "; ".join(f"{k}: `{v}`" for k, v in MOUNT_OPTS.items()))


def bench_import(engines, res: Results, tar: Path, reps: int) -> None:
    size = tar.stat().st_size
    mb = size / 1e6
    vals, extra = {}, {}
    samples = {e.name: [] for e in engines}
    for _ in range(reps):
        for e in engines:
            if vals.get(e.name) == "error":
                continue

            def once(e=e):
                e.rmi(IMG_IMPORT)
                sync()
                t, _ = timed(e.import_cmd(tar, IMG_IMPORT), e.env, 900)
                return t
            r = guarded(res, "import", e, once)
            if isinstance(r, float):
                samples[e.name].append(r)
            else:
                vals[e.name] = r
    # Untimed check that each engine really imported everything (files and bytes under /data).
    want = (0, 0)
    with tarfile.open(tar) as t:
        for m in t:
            if m.isreg() and m.name.startswith("./data/"):
                want = (want[0] + 1, want[1] + m.size)
    for e in engines:
        if vals.get(e.name) == "error":
            continue

        def check(e=e):
            _, cid = create(e, IMG_IMPORT, "sleep 1000")
            try:
                got = [0, 0]
                for dirpath, _dirs, files in os.walk(e.mount(cid) / "data"):
                    for f in files:
                        got[0] += 1
                        got[1] += os.lstat(os.path.join(dirpath, f)).st_size
                if tuple(got) != want:
                    raise RuntimeError(f"imported image has {got[0]} files / {got[1]} bytes "
                                       f"under /data, the tar {want[0]} / {want[1]}")
            finally:
                e.umount(cid)
                e.remove_containers()
        if guarded(res, "import-check", e, check) == "error":
            vals[e.name] = "error"
    for e in engines:
        e.rmi(IMG_IMPORT)
        if vals.get(e.name) != "error":
            vals[e.name] = statistics.median(samples[e.name])
            extra[e.name] = f"{mb / vals[e.name]:.0f} MB/s"
            res.sample("import", e.name, samples[e.name])
    res.row(f"`import` of a {mb:.0f} MB rootfs tar (median of {reps})", vals, extra)


# ---------------------------------------------------------------- machine facts, results file

def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_facts(engines) -> list[str]:
    def sh(cmd):
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
            return proc.stdout.decode().strip()
        except Exception:  # noqa: BLE001
            return "?"
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    fs = " ".join(sh(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(BASE)]).split())
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    runc = (sh(["runc", "--version"]).splitlines() or ["runc ?"])[0]
    facts = [f"OS: {os_name}; kernel {platform.release()} {platform.machine()}",
             f"CPU: {cpu}, {os.cpu_count()} cores; RAM {mem}",
             f"stores and data: {BASE} ({fs})",
             f"Python {platform.python_version()}; {runc}",
             f"load average at start: {loadavg()}"]
    for e in engines:
        facts.append(f"{e.name}: {e.version()}")
    return facts


def write_results(text: str) -> None:
    section = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    if RESULTS.exists():
        old = RESULTS.read_text()
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1].lstrip("\n")
            new = head + section + (("\n" + tail) if tail else "")
        else:
            new = old.rstrip() + "\n\n" + section
    else:
        new = ("# lamina benchmark results\n\n"
               "Written by `bench/run.py` (see bench/README.md). The section between the markers\n"
               "is replaced on every run; notes outside it are kept.\n\n" + section)
    RESULTS.write_text(new)


# ---------------------------------------------------------------- main

def find_lamina(explicit: str | None) -> tuple[str | None, str]:
    exe = explicit or shutil.which("lamina")
    if exe and not explicit and "/shims/" in exe:
        # A version manager's shim (pyenv) is a bash script that re-resolves the command on every
        # call; time the installed command itself, as Docker's CLI is timed.
        scripts = subprocess.run([sys.executable, "-c",
                                  "import sysconfig; print(sysconfig.get_path('scripts'))"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        if os.access(os.path.join(scripts, "lamina"), os.X_OK):
            exe = os.path.join(scripts, "lamina")
    if not exe:
        return None, "lamina not installed (no `lamina` on PATH; run `pip install -e .`)"
    try:
        p = subprocess.run([exe, "--help"], capture_output=True, timeout=60, check=False)
    except Exception as e:  # noqa: BLE001
        return None, f"lamina not installed (`{exe} --help`: {e})"
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        return None, f"lamina not installed (`lamina --help` failed: {err[-1] if err else p.returncode})"
    return exe, ""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repetitions and 30 instead of 100 sequential creates")
    ap.add_argument("--only", nargs="+", choices=BENCHES, metavar="NAME",
                    help=f"run only these benchmarks ({', '.join(BENCHES)})")
    ap.add_argument("--lamina", metavar="EXE", help="lamina executable (default: from PATH)")
    ap.add_argument("--lamina-driver", choices=["overlay2", "vfs"], default=None,
                    help="pass --driver to lamina (default: lamina's own default)")
    ap.add_argument("--skip", nargs="+", choices=["lamina", "docker", "podman"], default=[],
                    metavar="ENGINE", help="leave out these engines")
    ap.add_argument("--no-results", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("bench/run.py needs root (overlay mounts, dockerd, drop_caches)", file=sys.stderr)
        return 2
    peers.lock_base()
    selected = args.only or BENCHES
    q = args.quick
    reps_create = 5 if q else 10
    n_seq = 30 if q else 100
    reps_ps = 5 if q else 10
    reps_copy = 2 if q else 5
    reps_import = 1 if q else 3
    started = time.monotonic()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmdline = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *argv])

    res = Results()
    engines: list = []
    lamina_exe, why = (None, "lamina skipped (--skip)") if "lamina" in args.skip \
        else find_lamina(args.lamina)
    if lamina_exe is None:
        log(why)
        res.notes.append(why)
    lamina = LaminaEngine(lamina_exe, args.lamina_driver) if lamina_exe else None
    docker = DockerEngine() if "docker" not in args.skip else None
    podman = PodmanEngine() if "podman" not in args.skip else None
    all_engines = [x for x in (lamina, docker, podman) if x is not None]

    stopped = False

    def stop_all():
        nonlocal stopped
        if stopped:
            return
        stopped = True
        for e in all_engines:
            try:
                e.cleanup()
            except Exception as ex:  # noqa: BLE001
                log(f"cleanup of {e.name} failed: {ex}")

    atexit.register(stop_all)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        need = set()
        if "size" in selected and lamina:
            need |= {"small", "big"}
        if "copyup" in selected:
            need.add("big")
        if "import" in selected:
            need.add("import")
        data = make_data(need)

        for e in all_engines:
            try:
                e.start()
                engines.append(e)
            except Exception as ex:  # noqa: BLE001
                log(f"{e.name} did not start: {ex}")
                res.notes.append(f"{e.name} did not start: `{str(ex)[:300]}`")
        facts = machine_facts(engines)

        # Same images everywhere: import of the same tars.
        images = [(IMG_BASE, data["base"])]
        if "size" in selected and lamina in engines:
            images.append((IMG_SMALL, data["small"]))
        if "copyup" in selected or ("size" in selected and lamina in engines):
            images.append((IMG_BIG, data["big"]))
        ready = []
        for e in engines:
            ok = True
            for name, tar in images:
                if name == IMG_SMALL and e is not lamina:
                    continue
                if name == IMG_BIG and e is not lamina and "copyup" not in selected:
                    continue
                log(f"{e.name}: import {tar.name} as {name}")
                try:
                    timed(e.import_cmd(tar, name), e.env, 900)
                except Exception as ex:  # noqa: BLE001
                    log(f"{e.name}: import failed: {ex}")
                    res.notes.append(f"{e.name}: image import failed: `{str(ex)[:300]}`")
                    ok = False
                    break
            if ok:
                ready.append(e)
        engines = ready
        sync()

        if "create" in selected:
            log("benchmark: create")
            bench_create(engines, res, reps_create)
        if "create100" in selected or "ps" in selected:
            log(f"benchmark: {n_seq} sequential creates" + (" + ps -a -s" if "ps" in selected else ""))
            bench_create_n_and_ps(engines, res, n_seq, reps_ps, "create100" in selected,
                                  "ps" in selected)
        if "size" in selected:
            if lamina in engines:
                log("benchmark: create time against image size (lamina)")
                r = guarded(res, "size", lamina, bench_size, lamina, res, reps_create)
                if r == "error":
                    res.row("`create` on a 10 MB vs a 1 GiB image, lamina only",
                            {"lamina": "error"}, ratios=False)
            else:
                res.row("`create` on a 10 MB vs a 1 GiB image, lamina only",
                        {"lamina": "n/a"}, ratios=False)
        if "copyup" in selected:
            log("benchmark: copy_up")
            bench_copyup(engines, res, reps_copy)
        if "import" in selected:
            log("benchmark: import")
            bench_import(engines, res, data["import"], reps_import)
        if "run" in selected:
            log("benchmark: run --rm")
            bench_run(engines, res, reps_create)
    finally:
        stop_all()

    if lamina is None:
        for r in res.rows:
            r["values"].setdefault("lamina", "n/a")
    elapsed = time.monotonic() - started
    tbl = table(res)
    print()
    print(tbl)
    for n in res.notes:
        print(f"note: {n}")
    for line in res.raw:
        log(f"samples {line}")
    print(f"\n(total {elapsed / 60:.1f} min)")

    if not args.no_results:
        body = [f"## Run of {date}", "",
                f"Command: `{cmdline}` (took {elapsed / 60:.1f} min)", "",
                "Machine:", ""] + [f"- {f}" for f in facts] + [
                f"- load average at end: {loadavg()}",
                "", "Medians; ratios are of times (below 1 = lamina faster). Every command is",
                "timed whole (process start to exit) with `time.perf_counter` around",
                "`subprocess.run`, except copy_up, which times only `open(..., 'ab')`, a",
                "1-byte write and close in the harness. Runs are interleaved across engines.",
                "copy_up warm: the file is read through the overlay first, then `sync`; cold:",
                "`sync; echo 3 > /proc/sys/vm/drop_caches` just before the append.",
                "", tbl, ""]
        if res.notes:
            body += ["Notes:", ""] + [f"- {n}" for n in res.notes] + [""]
        body += ["<details><summary>Raw samples (seconds)</summary>", "", "```"] + res.raw + \
                ["```", "", "</details>"]
        write_results("\n".join(body))
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
