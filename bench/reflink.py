"""Identical files stored once and commits that copy no file data, on a filesystem with
reflinks (issue 16, item 4), side by side with Docker and Podman in one run.

    unshare --mount --propagation private python3 bench/reflink.py [--runs 2] [--files 50000]
        [--commit-mib 1024] [--no-results]

Everything lives on a fresh loopback XFS (``mkfs.xfs -m reflink=1``) under
/var/tmp/lamina-reflink-bench, except ``lamina-ext4``: the same lamina with its store on the
machine's ext4 (/var/tmp), for the commit without reflinks.

* dedup: each engine imports the 200 MB rootfs (bench/run.py's ``busybox-200m-mixed.tar``) and
  a variant of it (the same files and one more: another layer, as a rebuilt base is); disk
  bytes as ``du -sb`` of the data root and as the filesystem's free space (statvfs) count them,
  then ``lamina system dedup`` (timed) and both again; ``system check`` after it.
* commit: a container whose writable layer holds a tree (a gcc-like one: 341 MB in 2,800 files
  copied from this machine's /usr/lib and /usr/include, as ``apt-get install gcc`` leaves; and
  ``--commit-mib`` MiB of random data in ``--files`` files), committed by each engine, against
  ``tar -c DIR | sha256sum`` of the same tree. Median of ``--runs``, engines interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bytes as bench_bytes  # noqa: E402
import peers  # noqa: E402

BASE = Path("/var/tmp/lamina-reflink-bench")
XFS = BASE / "xfs"
BEGIN = "<!-- bench/reflink.py: begin generated section -->"
END = "<!-- bench/reflink.py: end generated section -->"
GCC_BYTES, GCC_FILES = 341_000_000, 2_800


def log(msg: str) -> None:
    print(f"[reflink] {msg}", file=sys.stderr, flush=True)


def free(path: Path) -> int:
    subprocess.run(["sync"], check=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def make_xfs() -> None:
    peers.unmount_all(BASE)
    shutil.rmtree(BASE, ignore_errors=True)
    XFS.mkdir(parents=True)
    image = BASE / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(16 << 30)  # sparse
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(XFS)], check=True)


def variant_tar(rootfs: Path, out: Path) -> None:
    """The rootfs tar with one more file at its end: the same files, another layer."""
    if out.exists():
        return
    with tarfile.open(rootfs) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo("etc/rebuilt")
        data = b"a rebuilt base\n"
        info.size = len(data)
        import io

        dst.addfile(info, io.BytesIO(data))


def gcc_tree(path: Path) -> tuple[int, int]:
    """About GCC_BYTES in about GCC_FILES files from /usr (the largest shared objects for the
    bytes, then headers for the count): what `apt-get install gcc libc6-dev` adds."""
    if not (path / ".done").exists():
        shutil.rmtree(path, ignore_errors=True)
        files = []
        for top in ("/usr/lib/gcc", "/usr/lib/x86_64-linux-gnu", "/usr/include"):
            for d, _, names in os.walk(top):
                for n in names:
                    p = os.path.join(d, n)
                    if os.path.isfile(p) and not os.path.islink(p):
                        files.append((os.path.getsize(p), p))
        headers = sorted((f for f in files if f[1].startswith("/usr/include")),
                         key=lambda f: f[1])
        big = sorted((f for f in files if not f[1].startswith("/usr/include")), reverse=True)
        chosen, total = [], 0
        for size, p in big:  # most of the bytes in large shared objects, as gcc's cc1 and libs
            if total + size <= GCC_BYTES * 0.8:
                chosen.append(p)
                total += size
        for size, p in headers:  # then many headers, as libc6-dev's
            if len(chosen) >= GCC_FILES or total + size > GCC_BYTES:
                break
            chosen.append(p)
            total += size
        taken = set(chosen)
        for size, p in big:  # the rest of the bytes, largest first
            if p not in taken and total + size <= GCC_BYTES:
                chosen.append(p)
                total += size
        for p in chosen:
            dest = path / "usr" / os.path.relpath(p, "/usr")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        (path / ".done").write_text("")
    count = sum(len(f) for _, _, f in os.walk(path / "usr"))
    return bench_bytes.du(path / "usr"), count


def fill(name: str, cli, env, container: str, tree: Path, top: str) -> None:
    """Copy ``tree/top`` into the container's writable layer."""
    if name == "docker":
        bench_bytes.run(cli("cp", f"{tree}/{top}", f"{container}:/"), env)
        return
    mounted = bench_bytes.run(cli("mount", container), env).strip()
    subprocess.run(["cp", "-a", f"{tree}/{top}", mounted], check=True)
    bench_bytes.run(cli("umount", container), env)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--commit-mib", type=int, default=1024)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--gcc-only", action="store_true",
                        help="only the commit of the gcc-like layer (no dedup, no big tree)")
    args = parser.parse_args()
    rootfs = bench_bytes.DATA / "busybox-200m-mixed.tar"
    if not rootfs.exists():
        subprocess.run([sys.executable, str(HERE / "run.py"), "--only", "import", "--no-results",
                        "--skip", "podman"], check=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "src" / "lamina")],
                   check=True)  # as scripts/setup does: the CLI's start-up, not the compiler
    make_xfs()
    variant = BASE / "variant.tar"
    variant_tar(rootfs, variant)
    trees = {"gcc": BASE / "gcc-tree",
             "big": BASE.parent / f"lamina-reflink-tree-{args.files}-{args.commit_mib}"}
    bench_bytes.BASE.mkdir(parents=True, exist_ok=True)
    gcc_bytes, gcc_files = gcc_tree(trees["gcc"])
    if not args.gcc_only:
        bench_bytes.make_tree(trees["big"], args.files, args.commit_mib)
    docker, podman = peers.Docker(XFS), peers.Podman(XFS)
    laminas = {"lamina-xfs": bench_bytes.Lamina("lamina-xfs", HERE.parent / "src", XFS / "lamina"),
               "lamina-ext4": bench_bytes.Lamina("lamina-ext4", HERE.parent / "src",
                                                 BASE / "lamina-ext4")}
    results: dict = {"disk": {}, "commit": {}}
    try:
        docker.start()
        podman.start()
        clis = {"docker": (docker.cli, docker.env), "podman": (podman.cli, podman.env),
                **{k: (v.cli, v.env) for k, v in laminas.items()}}
        roots = {"lamina-xfs": XFS / "lamina", "docker": docker.data_root,
                 "podman": podman.root}
        for name, root in roots.items():  # one after the other: free space is the XFS's
            cli, env = clis[name]
            if args.gcc_only:  # the base, nothing measured
                bench_bytes.run(cli("import", rootfs, "base:1"), env)
                continue
            bench_bytes.run(cli("images"), env)
            du0, free0 = bench_bytes.du(root), free(XFS)
            bench_bytes.run(cli("import", rootfs, "base:1"), env)
            bench_bytes.run(cli("import", variant, "base:2"), env)
            du1, free1 = bench_bytes.du(root), free(XFS)
            row = {"du": du1 - du0, "used": free0 - free1}
            if name == "lamina-xfs":
                t = time.perf_counter()
                out = bench_bytes.run(cli("system", "dedup"), env)
                row["dedup_s"] = time.perf_counter() - t
                row["dedup_out"] = out.strip()
                row["du_after"], row["used_after"] = bench_bytes.du(root) - du0, free0 - free(XFS)
                row["check"] = subprocess.run(cli("system", "check"), env=env, capture_output=True, check=False,
                                              text=True).stdout.strip()
                row["df"] = bench_bytes.run(cli("system", "df"), env).strip()
                again = time.perf_counter()
                bench_bytes.run(cli("system", "dedup"), env)
                row["again_s"] = time.perf_counter() - again
            results["disk"][name] = row
            log(f"{name}: {row}")
        cli, env = clis["lamina-ext4"]
        bench_bytes.run(cli("import", rootfs, "base:1"), env)
        subprocess.run(["sync"], check=True)
        for what, tree, top in (("gcc", trees["gcc"], "usr"), ("big", trees["big"], "data"))[
                :1 if args.gcc_only else 2]:
            times: dict[str, list[float]] = {}
            hashing = []
            for i in range(args.runs):
                hashing.append(bench_bytes.tar_hash_seconds(tree, top))
                for name in ("lamina-xfs", "lamina-ext4", "docker", "podman"):
                    cli, env = clis[name]
                    container = f"{what}{i}"
                    bench_bytes.run(cli("create", "--name", container, "base:1", "sh"), env)
                    fill(name, cli, env, container, tree, top)
                    subprocess.run(["sync"], check=True)
                    took = bench_bytes.timed(cli("commit", container, f"{what}:{i}"), env)
                    times.setdefault(name, []).append(took)
                    log(f"{what} {name}: commit {took:.2f}s")
                    bench_bytes.run(cli("rm", "-f", container), env)
                    bench_bytes.run(cli("rmi", f"{what}:{i}"), env)
            results["commit"][what] = {"tar | sha256sum": hashing, **times}
        versions = {"docker": docker.version(), "podman": podman.version()}
    finally:
        docker.cleanup()
        podman.cleanup()
        for engine in laminas.values():
            peers.unmount_all(engine.root)
            shutil.rmtree(engine.root, ignore_errors=True)
        peers.unmount_all(BASE)
        subprocess.run(["umount", "-l", str(XFS)], check=False)
    report = render(results, versions, args, time.time() - started, rootfs,
                    (gcc_bytes, gcc_files))
    print(report)
    if not args.no_results:
        bench_bytes.write_section(BEGIN, END, report)
    shutil.rmtree(BASE, ignore_errors=True)
    return 0


def render(results, versions, args, took, rootfs, gcc) -> str:
    lines = [
        (f"## Reflinks: dedup and commit (bench/reflink.py), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"), "",
        (f"`{' '.join(sys.argv)}` (inside `unshare --mount --propagation private`; {os.cpu_count()}"
        f" CPUs shared with other jobs, load average {os.getloadavg()[0]:.1f} at the end; Docker "
        f"{versions['docker']}, Podman {versions['podman']}; took {took:.0f} s). Stores on a "
        "loopback XFS (reflink=1) except lamina-ext4's."), ""]
    disk = results["disk"]
    if disk:  # not with --gcc-only
        lines += [(f"Two images: the imported rootfs ({rootfs.stat().st_size:,} bytes of tar) and "
                   "a variant with the same files and one more (another layer):"), "",
                  "| engine | `du -sb` added | filesystem space used (statvfs) |", "|---|---:|---:|"]
        for name in ("lamina-xfs", "docker", "podman"):
            lines.append(f"| {name} | {disk[name]['du']:,} | {disk[name]['used']:,} |")
        lam = disk["lamina-xfs"]
        lines.append(f"| lamina-xfs after `system dedup` | {lam['du_after']:,} | "
                     f"{lam['used_after']:,} |")
        lines += ["", (f"`lamina system dedup`: {lam['dedup_s']:.2f} s (again, nothing left to "
                  f"do: {lam['again_s']:.2f} s); it said:"), "", "```", lam["dedup_out"], "```",
                  "", "`lamina system df` after it, and `system check`:", "", "```", lam["df"],
                  lam["check"], "```", ""]
    gcc_bytes, gcc_files = gcc
    for what, title in (("gcc", (f"a gcc-like layer ({gcc_bytes:,} bytes in {gcc_files:,} files "
                                "from /usr)")),
                        ("big", f"{args.commit_mib} MiB in {args.files:,} random files")):
        rows = results["commit"].get(what)
        if rows is None:  # --gcc-only
            continue
        docker = statistics.median(rows["docker"])
        hashing = statistics.median(rows["tar | sha256sum"])
        lines += [f"`commit` of {title}, median of {args.runs}:", "",
                  "| what | seconds | vs docker commit | vs tar \\| sha256sum |",
                  "|---|---:|---:|---:|"]
        for name in ("lamina-xfs", "lamina-ext4", "docker", "podman", "tar | sha256sum"):
            t = statistics.median(rows[name])
            label = name.replace("|", "\\|")
            lines.append(f"| {label} | {t:.2f} | {t / docker:.2f} | {t / hashing:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
