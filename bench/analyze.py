"""``lamina image analyze`` on a 30-layer, 50,000-file image (issue 16's target: under a second).

    python3 bench/analyze.py [--files 50000] [--layers 30] [--runs 5] [--keep DIR] [--before REPO]

Figures: bench/RESULTS.md ("image analyze on 30 layers of 50,000 files").

Builds the image in a fresh store under /var/tmp with lamina's Engine: a base rootfs of half the
files (``import``), then 29 layers each adding new files, overwriting some of the layers below
and deleting a few (added as a pull adds layers: ``add_image`` over blobs in the content store).
File sizes are 0 to 8 KiB (about 200 MB in all). Then it times the analysis in process and the
real command (``lamina image analyze``, wall time, with ``--format json``), each both on the first
read of the layers (the listings that analyze keeps dropped before) and with the listings kept,
and prints the medians. ``--before REPO``: the command of another checkout (main, say) is timed
too, on a store of its own holding the same image, each of its runs beside one of this one's.
"""

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))


def layer_tar(entries, deleted=()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({name.rpartition("/")[0] for name, _ in entries} |
                      {name.rpartition("/")[0] for name in deleted})
        for directory in dirs:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for name, size in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = size, 1_700_000_000
            tar.addfile(info, io.BytesIO(b"x" * size))
        for name in deleted:
            parent, _, base = name.rpartition("/")
            info = tarfile.TarInfo(f"{parent}/.wh.{base}")
            info.mtime = 1_700_000_000
            tar.addfile(info)
    return out.getvalue()


def build(engine, files: int, layers: int) -> str:
    from lamina.digest import sha256_bytes
    from lamina.image import MEDIA_LAYER, dumps

    rng = random.Random(16)
    base_files = files // 2
    per_layer = (files - base_files) // (layers - 1)
    names = [f"usr/lib/pkg{i // 100}/file{i}" for i in range(base_files)]
    base = layer_tar([(n, rng.randrange(8192)) for n in names])
    path = os.path.join(engine.root, "base.tar")
    with open(path, "wb") as f:
        f.write(base)
    image = engine.import_image(path, "analyze-base:1")
    os.unlink(path)
    doc = engine.image_store.config(image)
    blobs = [(r["blob_digest"], r["blob_size"], r["media_type"])
             for r in engine.image_store.layer_rows(image)]
    history = list(doc.get("history", []))
    serial = base_files
    for step in range(1, layers):
        new = [f"opt/step{step}/d{i // 100}/f{serial + i}" for i in range(per_layer)]
        serial += per_layer
        overwrite = rng.sample(names, 50)  # counted apart from the 50,000 new paths
        deleted = rng.sample([n for n in names if n not in overwrite], 10)
        names = [n for n in names if n not in deleted] + new
        blob = layer_tar([(n, rng.randrange(8192)) for n in new + overwrite], deleted)
        blobs.append((engine.content.put(blob), len(blob), MEDIA_LAYER))
        doc["rootfs"]["diff_ids"].append(sha256_bytes(blob))
        history.append({"created_by": f"/bin/sh -c install step {step}"})
    doc["history"] = history
    return engine.add_image(dumps(doc), blobs, ["analyze:1"])


def drop_listings(root: str) -> None:
    """Forget the layer listings that image analyze keeps (its next run reads the records)."""
    import sqlite3

    db = sqlite3.connect(os.path.join(root, "lamina.db"), timeout=30)
    try:
        with db:
            db.execute("DELETE FROM layer_listings")
    except sqlite3.OperationalError:  # a lamina from before listings were kept
        pass
    db.close()


def command(src_repo: str, root: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``lamina image analyze --format json`` of
    ``src_repo``'s lamina on ``root``."""
    import resource

    env = {**os.environ, "PYTHONPATH": os.path.join(src_repo, "src")}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-S", os.path.join(src_repo, "bin", "lamina"), "--root", root,
                    "image", "analyze", "--format", "json", "analyze:1"],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="build in (or reuse) this store and leave it")
    parser.add_argument("--before", metavar="REPO",
                        help="also time this checkout's lamina (its own store, the same image), "
                             "its runs interleaved with this one's")
    args = parser.parse_args()
    import compileall

    from lamina import Engine
    from lamina.analyze import analyze

    repos = [REPO] + ([os.path.abspath(args.before)] if args.before else [])
    for repo in repos:  # as installed: byte-compiled (PYTHONDONTWRITEBYTECODE would not)
        compileall.compile_dir(os.path.join(repo, "src"), quiet=1)
    root = args.keep or tempfile.mkdtemp(prefix="lamina-analyze-", dir="/var/tmp")
    try:
        engine = Engine(root=root)  # overlay2 where it works (vfs copies each layer: slow)
        try:
            engine.image_store.resolve("analyze:1")
        except Exception:  # noqa: BLE001 - not built yet
            started = time.perf_counter()
            build(engine, args.files, args.layers)
            print(f"built in {time.perf_counter() - started:.1f} s")
        if args.before:  # its own store: each lamina rewrites a schema it does not know
            other = Engine(root=root + "-before")
            try:
                other.image_store.resolve("analyze:1")
            except Exception:  # noqa: BLE001 - not built yet
                build(other, args.files, args.layers)
            other.close()
        print(f"load average {load()} (1/5/15 min)")
        cold, warm = [], []
        for _ in range(args.runs):
            drop_listings(root)
            started = time.perf_counter()
            report = analyze(engine.image_store, "analyze:1")
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            analyze(engine.image_store, "analyze:1")
            warm.append(time.perf_counter() - started)
        engine.close()
        entries = sum(layer["added"] + layer["changed"] for layer in report["layers"])
        print(f"{len(report['layers'])} layers, {entries} entries added or changed, "
              f"{report['size'] / 1e6:.0f} MB, {report['wasted_bytes'] / 1e6:.1f} MB wasted, "
              f"efficiency {report['efficiency']:.4f}")
        print(f"analyze() in process: first read of the layers median {statistics.median(cold):.3f}"
              f" s (min {min(cold):.3f}); listings kept: median {statistics.median(warm):.3f} s "
              f"(min {min(warm):.3f})")
        if args.before:  # once, untimed: each store's first open by a lamina
            command(args.before, root + "-before")
        command(REPO, root)
        times: dict[str, list[tuple[float, float]]] = {"before": [], "cold": [], "warm": []}
        for _ in range(args.runs):
            if args.before:
                times["before"].append(command(args.before, root + "-before"))
            drop_listings(root)
            times["cold"].append(command(REPO, root))
            times["warm"].append(command(REPO, root))
        for what, label in (("before", f"{args.before}"), ("cold", "first run (listings made)"),
                            ("warm", "listings kept")):
            if times[what]:
                wall = [t[0] for t in times[what]]
                cpu = [t[1] for t in times[what]]
                print(f"lamina image analyze, {label}: wall median {statistics.median(wall):.3f} s"
                      f" (min {min(wall):.3f}, max {max(wall):.3f}), CPU median "
                      f"{statistics.median(cpu):.3f} s (min {min(cpu):.3f})")
        print(f"load average {load()} (1/5/15 min)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(root + "-before", ignore_errors=True)


if __name__ == "__main__":
    main()
