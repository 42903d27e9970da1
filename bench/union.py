"""Side-by-side benchmark of the union driver: lamina's FUSE mount and Python API against
fuse-overlayfs and kernel overlayfs on the same layers, plus the overlay driver's inode cost.

    unshare --mount --propagation private python3 bench/union.py [--quick]

Data lives in /var/tmp/lamina-union-bench (ext4; made and removed here). Results go to
bench/RESULTS.md between this script's own markers; other sections are left alone.
"""
# ruff: noqa: B023 - every closure below is called at once, inside the loop that binds it

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from lamina.mount import Mount, mount_all, unmount
from lamina.union import UnionView

DATA = "/var/tmp/lamina-union-bench"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
BEGIN, END = "<!-- bench/union.py: begin -->", "<!-- bench/union.py: end -->"
GIB = 1 << 30
LAYERS = 10
FILES_PER_LAYER = 1000
ENGINES = ("union-fuse", "fuse-overlayfs", "kernel-overlay")


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def build_layers(quick: bool) -> list[str]:
    """10 plain branches (no whiteouts: valid for all three engines), newest first: each holds
    1,000 small files in 10 directories; the oldest also holds big/file (1 GiB of data)."""
    layers = []
    for i in range(LAYERS):
        root = os.path.join(DATA, "layers", f"l{i}")
        for d in range(10):
            os.makedirs(os.path.join(root, "tree", f"l{i}", f"d{d}"))
            for f in range(FILES_PER_LAYER // 10):
                with open(os.path.join(root, "tree", f"l{i}", f"d{d}", f"f{f:04}"), "wb") as out:
                    out.write(b"x" * 100)
        layers.append(root)
    big = os.path.join(layers[0], "big")
    os.makedirs(big)
    size = (64 << 20) if quick else GIB
    with open(os.path.join(big, "file"), "wb") as out:
        block = os.urandom(1 << 20)
        out.writelines(block for _ in range(size >> 20))
    os.sync()
    return list(reversed(layers))


class Mounted:
    """One engine's merged view of ``lowers`` with a fresh upper dir."""

    def __init__(self, engine: str, lowers: list[str], name: str):
        self.engine = engine
        base = tempfile.mkdtemp(prefix=f"{engine}-{name}-", dir=os.path.join(DATA, "mounts"))
        self.upper, work, self.target = (os.path.join(base, d) for d in ("upper", "work", "mnt"))
        for d in (self.upper, work, self.target):
            os.mkdir(d)
        self.base = base
        lower = ":".join(lowers)
        if engine == "kernel-overlay":
            mount_all([Mount("overlay", "overlay", (f"lowerdir={lower}", f"upperdir={self.upper}",
                                                    f"workdir={work}"))], self.target)
        elif engine == "fuse-overlayfs":
            sh("fuse-overlayfs", "-o",
               f"lowerdir={lower},upperdir={self.upper},workdir={work}", self.target)
        else:
            mount_all([Mount("union", "lamina-union", (f"lowerdir={lower}",
                                                       f"upperdir={self.upper}"))], self.target)

    def close(self) -> None:
        unmount(self.target)
        time.sleep(0.05)
        shutil.rmtree(self.base)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_all(path: str) -> int:
    total = 0
    buf = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return total
            total += n


def small_files(root: str, count: int) -> None:
    d = os.path.join(root, "small")
    os.mkdir(d)
    for i in range(count):
        with open(os.path.join(d, f"s{i}"), "wb") as f:
            f.write(b"y" * 200)
    for i in range(count):
        os.unlink(os.path.join(d, f"s{i}"))
    os.rmdir(d)


def run_engines(lowers: list[str], runs: int, quick: bool) -> dict:
    big_size = os.path.getsize(os.path.join(lowers[-1], "big", "file"))
    results: dict = {}

    def sample(bench: str, engine: str, value: float) -> None:
        results.setdefault(bench, {}).setdefault(engine, []).append(value)

    for _ in range(runs):  # interleaved: one run of every engine per round
        for engine in ENGINES:
            m = Mounted(engine, lowers, "read")
            try:
                # the first read goes through the daemon (the branch file is in the page cache,
                # the mount's own cache is empty); it warms the mount's page cache
                t = timed(lambda: read_all(os.path.join(m.target, "big", "file")))
                sample("seqread_first", engine, big_size / t / 1e6)
                t = timed(lambda: read_all(os.path.join(m.target, "big", "file")))
                sample("seqread", engine, big_size / t / 1e6)
            finally:
                m.close()
            m = Mounted(engine, lowers, "find")  # a fresh mount: no cached dentries or attrs
            try:
                t = timed(lambda: sh("find", m.target, "-printf", "%s %m\n",
                                     stdout=subprocess.DEVNULL))
                sample("find", engine, t)
            finally:
                m.close()
            m = Mounted(engine, lowers, "copyup")
            try:
                def append():
                    with open(os.path.join(m.target, "big", "file"), "ab") as f:
                        f.write(b"!")
                sample("copyup", engine, timed(append))
            finally:
                m.close()
            m = Mounted(engine, lowers, "small")
            try:
                sample("small", engine, timed(lambda: small_files(m.target, 10_000)))
            finally:
                m.close()
            m = Mounted(engine, lowers, "tar")
            try:
                t = timed(lambda: sh("sh", "-c", f"tar -C {m.target} -cf - tree | cat > /dev/null"))
                sample("tar", engine, t)
            finally:
                m.close()
    # plain cp of the same file on the same ext4, the copy_up reference
    for _ in range(runs):
        dst = os.path.join(DATA, "cp-copy")
        sample("copyup", "plain cp (ext4)",
               timed(lambda: sh("cp", os.path.join(lowers[-1], "big", "file"), dst)))
        os.unlink(dst)
    # the Python API: copy_up and a lookup 10 layers down
    for _ in range(runs):
        upper = tempfile.mkdtemp(dir=DATA)
        view = UnionView(lowers, upper)
        def api_append():
            fd = view.open("/big/file", os.O_WRONLY | os.O_APPEND)
            os.write(fd, b"!")
            os.close(fd)
        sample("copyup", "union API", timed(api_append))
        shutil.rmtree(upper)
    view = UnionView(lowers, tempfile.mkdtemp(dir=DATA))
    path = "/tree/l0/d7/f0042"  # in the oldest of 10 layers
    view.lookup(path)
    for _ in range(runs):
        n = 20000
        sample("lookup", "union API", timeit.timeit(lambda: view.lookup(path), number=n) / n * 1e6)
        sample("lookup_stat", "union API",
               timeit.timeit(lambda: view.lstat(path), number=n) / n * 1e6)
    shutil.rmtree(view.upper)
    return results


def reflink_copy_up(runs: int, quick: bool) -> list[float] | str:
    """copy_up of a 1 GiB file through the API on a loopback XFS with reflink=1."""
    image = os.path.join(DATA, "xfs.img")
    mnt = os.path.join(DATA, "xfs")
    os.mkdir(mnt)
    try:
        with open(image, "wb") as f:
            f.truncate(3 * GIB)
        sh("mkfs.xfs", "-q", "-m", "reflink=1", image)
        sh("mount", "-o", "loop", image, mnt)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        return f"no loopback XFS here: {error}"
    try:
        lower = os.path.join(mnt, "lower")
        os.makedirs(lower)
        with open(os.path.join(lower, "file"), "wb") as f:
            block = os.urandom(1 << 20)
            f.writelines(block for _ in range(((64 << 20) if quick else GIB) >> 20))
        os.sync()
        out = []
        for i in range(runs):
            upper = os.path.join(mnt, f"upper{i}")
            os.mkdir(upper)
            view = UnionView([lower], upper)
            def append():
                fd = view.open("/file", os.O_WRONLY | os.O_APPEND)
                os.write(fd, b"!")
                os.close(fd)
            out.append(timed(append))
        return out
    finally:
        unmount(mnt)
        os.unlink(image)


def inode_cost(quick: bool) -> dict:
    """Inodes that an image of 10 layers costs on overlay2 and overlay: each layer adds 100
    files in 10 new directories over a base of 2,000 files in 200 directories."""
    from lamina import metadata
    from lamina.snapshots import open_snapshotter

    out = {}
    for driver in ("overlay2", "overlay"):
        root = tempfile.mkdtemp(prefix=f"inodes-{driver}-", dir=DATA)
        db = metadata.connect(os.path.join(root, "db"))
        snaps = open_snapshotter(driver, os.path.join(root, "store"), db)
        parent = None
        for layer in range(LAYERS):
            with metadata.Transaction(db):
                snaps.prepare(f"x{layer}", parent)
            own = snaps.dir(f"x{layer}")
            dirs = 200 if layer == 0 else 10
            for d in range(dirs):
                os.makedirs(os.path.join(own, f"l{layer}", f"d{d}"))
                for f in range(2000 // 200 if layer == 0 else 10):
                    with open(os.path.join(own, f"l{layer}", f"d{d}", f"f{f}"), "wb") as w:
                        w.write(b"z")
            with metadata.Transaction(db):
                snaps.commit(f"L{layer}", f"x{layer}")
            parent = f"L{layer}"
        seen = set()
        for directory, dirs, files in os.walk(os.path.join(root, "store")):
            for name in dirs + files:
                st = os.lstat(os.path.join(directory, name))
                seen.add((st.st_dev, st.st_ino))
        out[driver] = len(seen)
        db.close()
        shutil.rmtree(root)
    return out


def report(results: dict, reflink, inodes: dict, runs: int, took: float, quick: bool) -> str:
    med = {b: {e: statistics.median(v) for e, v in engines.items()}
           for b, engines in results.items()}
    def fmt_s(x):
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
    lines = [BEGIN, "## Union driver (bench/union.py)", "",
             (f"Command: `unshare --mount --propagation private python3 bench/union.py"
             f"{' --quick' if quick else ''}` ({runs} interleaved runs per figure, medians; took "
             f"{took / 60:.1f} min; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). "
             f"Data on ext4 under {DATA}; {LAYERS} plain layers of {FILES_PER_LAYER} files, "
             f"the oldest with a {'64 MiB' if quick else '1 GiB'} file. Reads are warm "
             "(page cache filled by one read first, which is timed as the first read); every "
             "other figure uses a fresh mount."), "",
             "| benchmark | union FUSE | fuse-overlayfs 1.10 | kernel overlay | union/fuse-overlayfs |",
             "|---|---|---|---|---|"]
    s = med["seqread"]
    lines.append(f"| sequential read, 1 MiB reads (MB/s, higher is better) | {s['union-fuse']:.0f} | "
                 f"{s['fuse-overlayfs']:.0f} | {s['kernel-overlay']:.0f} | "
                 f"{s['union-fuse'] / s['fuse-overlayfs']:.0%} of its throughput |")
    s = med["seqread_first"]
    lines.append(f"| first sequential read through the daemon (MB/s, higher is better) | "
                 f"{s['union-fuse']:.0f} | {s['fuse-overlayfs']:.0f} | {s['kernel-overlay']:.0f} | "
                 f"{s['union-fuse'] / s['fuse-overlayfs']:.0%} of its throughput |")
    for key, label in (("find", "`find -printf '%s %m'` over 10,000 files in 10 layers"),
                       ("small", "create + write + delete 10,000 small files"),
                       ("tar", "`tar -c` of the 10,000-file tree"),
                       ("copyup", "first 1-byte append to the big lower file (copy_up)")):
        m = med[key]
        ratio = m["fuse-overlayfs"] / m["union-fuse"]
        lines.append(f"| {label} | {fmt_s(m['union-fuse'])} | {fmt_s(m['fuse-overlayfs'])} | "
                     f"{fmt_s(m['kernel-overlay'])} | {ratio:.0%} of its throughput |")
    c = med["copyup"]
    lines += ["", (f"copy_up on ext4: union API {fmt_s(c['union API'])}, plain `cp` of the same file "
              f"{fmt_s(c['plain cp (ext4)'])} (ratio {c['union API'] / c['plain cp (ext4)']:.2f}x; "
              f"through the FUSE mount {c['union-fuse'] / c['plain cp (ext4)']:.2f}x).")]
    if isinstance(reflink, str):
        lines.append(f"copy_up on a reflink filesystem: not measured ({reflink}).")
    else:
        lines.append(f"copy_up on a loopback XFS (reflink=1), union API: "
                     f"{statistics.median(reflink) * 1000:.2f} ms median "
                     f"({', '.join(f'{x * 1000:.2f}' for x in reflink)} ms).")
    lines.append(f"Python API lookup of a path 10 layers down: {med['lookup']['union API']:.2f} µs "
                 f"(with its lstat: {med['lookup_stat']['union API']:.2f} µs).")
    def verdict(ratio: float, target: float) -> str:
        return f"{'met' if ratio >= target else '**missed**'} ({ratio:.0%})"

    ratios = {"seqread": med["seqread"]["union-fuse"] / med["seqread"]["fuse-overlayfs"]}
    for key in ("find", "tar", "small"):
        ratios[key] = med[key]["fuse-overlayfs"] / med[key]["union-fuse"]
    lines += ["", (f"Targets: sequential read >= 50% of fuse-overlayfs: {verdict(ratios['seqread'], 0.5)}; "
              f"metadata-heavy runs >= 25%: `find` {verdict(ratios['find'], 0.25)}, `tar` "
              f"{verdict(ratios['tar'], 0.25)}, small files {verdict(ratios['small'], 0.25)}.")]
    lines += ["", (f"Inode cost of a 10-layer image (2,000 files in 200 dirs + 9 layers of 100 files "
              f"in 10 dirs): overlay2 {inodes['overlay2']} inodes, overlay {inodes['overlay']} "
              f"({inodes['overlay'] / inodes['overlay2']:.1f}x: each overlay layer re-creates "
              "every directory of the image; files are hard links)."), "",
              "<details><summary>Raw samples</summary>", "", "```"]
    for bench, engines in results.items():
        for engine, values in engines.items():
            lines.append(f"{bench} / {engine}: " + ", ".join(f"{v:.4g}" for v in values))
    lines += ["```", "", "</details>", END]
    return "\n".join(lines)


def write_section(section: str, notes: str) -> None:
    text = "# lamina benchmark results\n"
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            text = f.read()
    block = section.replace(END, notes + "\n" + END) if notes else section
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


def main() -> None:
    quick = "--quick" in sys.argv
    if not os.environ.get("LAMINA_UNION_BENCH_NS"):  # mounts stay in a private namespace
        os.environ["LAMINA_UNION_BENCH_NS"] = "1"
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                              *sys.argv])
    if os.path.exists(DATA):
        shutil.rmtree(DATA)
    os.makedirs(os.path.join(DATA, "mounts"))
    start = time.perf_counter()
    try:
        lowers = build_layers(quick)
        runs = 3
        results = run_engines(lowers, runs, quick)
        reflink = reflink_copy_up(runs, quick)
        inodes = inode_cost(quick)
    finally:
        with open("/proc/self/mountinfo") as f:
            for target in sorted((line.split()[4] for line in f), key=len, reverse=True):
                if target.startswith(DATA):
                    unmount(target, detach=True)
        shutil.rmtree(DATA, ignore_errors=True)
    section = report(results, reflink, inodes, runs, time.perf_counter() - start, quick)
    notes = os.environ.get("UNION_BENCH_NOTES", "")
    print(section)
    if not quick:
        write_section(section, notes)


if __name__ == "__main__":
    main()
