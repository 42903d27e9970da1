"""Every byte once (issue 16): disk bytes, save/export speed and commit of a large writable
layer, lamina before (main's code, layers kept twice) and after (this tree, one copy with tar-split
records) side by side with Docker and Podman, in one run.

    python3 bench/bytes.py [--runs 3] [--files 50000] [--commit-mib 1024] [--before /work/main/src]

* disk: ``du -sb`` of each engine's data root before and after importing the same 200 MB rootfs
  (bench/run.py's ``busybox-200m-mixed.tar``, built by it if missing);
* save: ``save -o`` of that image (docker-archive), each engine, median of ``--runs``; ratios
  against Docker's ``save``;
* export: ``export -o`` of a container of that image;
* commit: a container whose writable layer holds ``--commit-mib`` MiB in ``--files`` files
  (random content) committed, against ``docker commit`` and against ``tar -c DIR | sha256sum``
  of the same directory; lamina's commit once more under cProfile (where the time goes).

Stores live under /var/tmp/lamina-bytes-bench (its own peers: bench/peers.py with another base).
Results go to bench/RESULTS.md between this script's markers.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402

BASE = Path("/var/tmp/lamina-bytes-bench")
DATA = Path("/var/tmp/lamina-bench/data")
BEGIN = "<!-- bench/bytes.py: begin generated section -->"
END = "<!-- bench/bytes.py: end generated section -->"


def log(msg: str) -> None:
    print(f"[bytes] {msg}", file=sys.stderr, flush=True)


def du(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def timed(cmd, env=None, stdin=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=stdin, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: {proc.stderr.decode()[-2000:]}")
    return took


def tar_hash_seconds(tree, top: str) -> float:
    """Seconds for `tar -c` of ``tree/top`` piped into sha256sum: the floor a commit is held to."""
    start = time.perf_counter()
    subprocess.run(f"tar -C {tree} -cf - {top} | sha256sum > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


def run(cmd, env=None) -> str:
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True,
                          check=True).stdout


class Lamina:
    """``python3 -m lamina --root ROOT`` with ``src`` first on PYTHONPATH (before/after)."""

    def __init__(self, name: str, src: Path, root: Path):
        self.name, self.root = name, root
        self.env = dict(os.environ, PYTHONPATH=str(src))

    def cli(self, *args) -> list:
        return [sys.executable, "-m", "lamina", "--root", str(self.root), "--driver", "overlay2",
                *args]


def make_tree(path: Path, files: int, total_mib: int) -> None:
    """``files`` random files adding up to ``total_mib`` MiB, 100 per directory (seeded)."""
    if (path / ".done").exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    import random

    rng = random.Random(16)
    each = total_mib * (1 << 20) // files
    for i in range(files):
        d = path / "data" / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        size = max(1, int(each * rng.uniform(0.5, 1.5)))
        (d / f"f{i:06d}").write_bytes(rng.randbytes(size))
    (path / ".done").write_text("")


def median(values) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--commit-mib", type=int, default=1024)
    parser.add_argument("--before", default="/work/main/src")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--skip-commit", action="store_true", help="disk, save and export only")
    args = parser.parse_args()
    rootfs = DATA / "busybox-200m-mixed.tar"
    if not rootfs.exists():
        subprocess.run([sys.executable, str(HERE / "run.py"), "--only", "import", "--no-results",
                        "--skip", "podman"], check=True)
    BASE.mkdir(parents=True, exist_ok=True)
    docker, podman = peers.Docker(BASE), peers.Podman(BASE)
    engines = {"lamina-before": Lamina("lamina-before", Path(args.before), BASE / "before"),
               "lamina-after": Lamina("lamina-after", REPO / "src", BASE / "after")}
    results: dict[str, dict] = {}
    started = time.time()
    try:
        docker.start()
        podman.start()
        roots = {"lamina-before": BASE / "before", "lamina-after": BASE / "after",
                 "docker": docker.data_root, "podman": podman.root}
        clis = {"docker": (docker.cli, docker.env), "podman": (podman.cli, podman.env),
                **{k: (v.cli, v.env) for k, v in engines.items()}}
        for name, root in roots.items():
            if name.startswith("lamina"):
                shutil.rmtree(root, ignore_errors=True)
            cli, env = clis[name]
            run(cli("images"), env)  # the store exists, empty
            before = du(root)
            run(cli("import", rootfs, "bench-200m:1"), env)
            after = du(root)
            results.setdefault(name, {})["disk"] = (before, after, after - before)
            log(f"{name}: {after - before:,} bytes for the imported rootfs "
                f"({rootfs.stat().st_size:,} bytes tar)")
        # save and export
        out = BASE / "out.tar"
        for name in roots:
            cli, env = clis[name]
            run(cli("create", "--name", "exp", "bench-200m:1", "sh"), env)
            saves, exports = [], []
            for _ in range(args.runs):
                out.unlink(missing_ok=True)
                saves.append(timed(cli("save", "-o", out, "bench-200m:1"), env))
                out.unlink(missing_ok=True)
                exports.append(timed(cli("export", "-o", out, "exp"), env))
            results[name]["save"] = median(saves)
            results[name]["export"] = median(exports)
            log(f"{name}: save {median(saves):.2f}s, export {median(exports):.2f}s")
            out.unlink(missing_ok=True)
        profile = tar_profile = ""
        if not args.skip_commit:
            # commit of a large writable layer
            tree = BASE / "tree"
            log(f"making {args.files} files, {args.commit_mib} MiB")
            make_tree(tree, args.files, args.commit_mib)
            subprocess.run(["sync"], check=True)
            tar_hash = [tar_hash_seconds(tree, "data") for _ in range(args.runs)]
            results["tar -c | sha256sum"] = {"commit": median(tar_hash)}
            for name in ("docker", "lamina-before", "lamina-after"):
                cli, env = clis[name]
                times = []
                for i in range(args.runs if name != "docker" else min(args.runs, 2)):
                    cname = f"big{i}"
                    run(cli("create", "--name", cname, "bench-200m:1", "sh"), env)
                    if name == "docker":
                        run(cli("cp", f"{tree}/data", f"{cname}:/"), env)
                    else:
                        mounted = run(cli("mount", cname), env).strip()
                        subprocess.run(["cp", "-a", f"{tree}/data", mounted], check=True)
                        run(cli("umount", cname), env)
                    subprocess.run(["sync"], check=True)
                    times.append(timed(cli("commit", cname, f"big:{i}"), env))
                    run(cli("rm", "-f", cname), env)
                    run(cli("rmi", f"big:{i}"), env)
                results[name]["commit"] = median(times)
                log(f"{name}: commit {median(times):.2f}s ({times})")
            # where lamina's commit time goes
            after = engines["lamina-after"]
            cli, env = clis["lamina-after"]
            run(cli("create", "--name", "prof", "bench-200m:1", "sh"), env)
            mounted = run(cli("mount", "prof"), env).strip()
            subprocess.run(["cp", "-a", f"{tree}/data", mounted], check=True)
            run(cli("umount", "prof"), env)
            subprocess.run(["sync"], check=True)
            # the tar side alone (the layer-write thread: walk, stat, open, read, header, hash),
            # single-threaded so cProfile sees it: the container's upper dir into /dev/null
            tar_prof = BASE / "tar.prof"
            script = BASE / "tar_only.py"
            script.write_text(
                "import os, sys\nfrom lamina import Engine\nfrom lamina.layertar import "
                "write_overlay_tar\ne = Engine(root=sys.argv[1])\n"
                "d = e.store.snaps.dir(e.container_store.get('prof')['id'])\n"
                "f = open(os.devnull, 'wb', buffering=1 << 20)\nwrite_overlay_tar(f, d)\n")
            start = time.perf_counter()
            subprocess.run([sys.executable, str(script), str(after.root)], env=env, check=True)
            results["tar writer alone"] = {"commit": time.perf_counter() - start}
            subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tar_prof), str(script),
                            str(after.root)], env=env, check=True, stdout=subprocess.DEVNULL)
            text = io.StringIO()
            pstats.Stats(str(tar_prof), stream=text).sort_stats("tottime").print_stats(12)
            tar_profile = "\n".join(line for line in text.getvalue().splitlines()
                                    if line.strip() and not line.startswith(("   Ordered", "   List")))
            print(tar_profile)
            # in-process (the CLI leaves by os._exit, before cProfile could write its stats)
            prof = BASE / "commit.prof"
            script = BASE / "commit_only.py"
            script.write_text(
                "import cProfile, sys\nfrom lamina import Engine\ne = Engine(root=sys.argv[1])\n"
                "p = cProfile.Profile()\np.enable()\ne.commit('prof', 'prof:1')\np.disable()\n"
                "p.dump_stats(sys.argv[2])\n")
            subprocess.run([sys.executable, str(script), str(after.root), str(prof)], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            text = io.StringIO()
            pstats.Stats(str(prof), stream=text).sort_stats("tottime").print_stats(14)
            profile = "\n".join(line for line in text.getvalue().splitlines()
                                if line.strip() and not line.startswith(("   Ordered", "   List")))
            print(profile)
        versions = {"docker": docker.version(), "podman": podman.version()}
    finally:
        docker.cleanup()
        podman.cleanup()
        for engine in engines.values():
            peers.unmount_all(engine.root)
            shutil.rmtree(engine.root, ignore_errors=True)
    report = render(results, profile + "\n\n--- the tar writer alone (write_overlay_tar into "
                    "/dev/null):\n" + tar_profile, versions, args, time.time() - started, rootfs)
    print(report)
    if not args.no_results:
        write_results(report)
    return 0


def render(results, profile, versions, args, took, rootfs) -> str:
    docker_save = results["docker"]["save"]
    docker_export = results["docker"]["export"]
    docker_commit = results["docker"].get("commit")
    head = (f"`{' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} CPUs, Docker {versions['docker']}, Podman {versions['podman']}; "
            f"took {took:.0f} s. lamina-before: the code at {args.before}; lamina-after: this "
            "tree. Ratios are of times against Docker (below 1: faster).")
    disk = (f"Disk bytes to hold the imported rootfs ({rootfs.name}, {rootfs.stat().st_size:,} "
            "bytes), `du -sb` of the data root after minus before:")
    lines = [
        head,
        "",
        disk,
        "",
        "| engine | bytes added | vs the tar |",
        "|---|---:|---:|"]
    size = rootfs.stat().st_size
    for name in ("lamina-before", "lamina-after", "docker", "podman"):
        added = results[name]["disk"][2]
        lines.append(f"| {name} | {added:,} | {added / size:.2f}x |")
    lines += ["", "| engine | save -o (s) | vs docker save | export -o (s) | vs docker export |",
              "|---|---:|---:|---:|---:|"]
    for name in ("lamina-before", "lamina-after", "docker", "podman"):
        r = results[name]
        lines.append(f"| {name} | {r['save']:.2f} | {r['save'] / docker_save:.3f} | "
                     f"{r['export']:.2f} | {r['export'] / docker_export:.3f} |")
    if "commit" not in results["docker"]:
        return "\n".join(lines)
    commit = (f"Commit of a writable layer of {args.commit_mib} MiB in {args.files:,} files "
              "(median; docker of 2 runs at most):")
    lines += ["", commit, "",
              "| what | seconds | vs docker commit |", "|---|---:|---:|"]
    for name in ("lamina-before", "lamina-after", "docker", "tar -c | sha256sum",
                 "tar writer alone"):
        t = results[name]["commit"]
        lines.append(f"| {name} | {t:.2f} | {t / docker_commit:.2f} |")
    about = ("Profile of lamina-after's commit (cProfile, by own time; threads other than "
             "the main one are not profiled):")
    lines += ["", about, "", "```", profile, "```"]
    return "\n".join(lines)


def write_results(report: str) -> None:
    write_section(BEGIN, END, f"## Every byte once (bench/bytes.py)\n\n{report}")


def write_section(begin: str, end: str, report: str) -> None:
    """Put ``report`` between the markers ``begin`` and ``end`` of bench/RESULTS.md."""
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    section = f"{begin}\n{report}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
