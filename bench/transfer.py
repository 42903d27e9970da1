"""Side-by-side benchmark of moving images: push/pull through a loopback docker-registry and
save/load through archives, lamina against skopeo, Podman and Docker, in one run.

    python3 bench/transfer.py [--runs 3] [--layer-mib 205] [--layers 5]

Another shape (e.g. ``--layers 1 --layer-mib 1024``, the peak-memory case of one 1 GiB layer)
gets its own marked section in RESULTS.md, after the main one.

Data and stores live under /var/tmp/lamina-transfer-bench (its own directory; bench/run.py's is
another). The image is 5 layers of random-content files (incompressible: the worst case for gzip),
about 1 GiB in all, built once as an OCI layout and loaded into each engine. Each timing is the
wall time of the command; peak memory is the command's own maximum RSS (wait4). Medians and
ratios go to bench/RESULTS.md between this script's markers; the rest of that file is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
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

BASE = Path("/var/tmp/lamina-transfer-bench")
BEGIN = "<!-- bench/transfer.py: begin generated section -->"
END = "<!-- bench/transfer.py: end generated section -->"
LAMINA = [sys.executable, "-m", "lamina"]


def log(msg: str) -> None:
    print(f"[transfer] {msg}", file=sys.stderr, flush=True)


def timed(cmd, env=None) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of one command; fails loudly."""
    # /usr/bin/time measures the command's own peak RSS (a child of this process would inherit
    # this process's high-water mark across fork + exec)
    report = BASE / "time.out"
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *map(str, cmd)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, int(report.read_text().split()[-1]) // 1024


def run(cmd, env=None) -> str:
    return peers.run([str(c) for c in cmd], env=env, timeout=1800).stdout.decode()


def make_layout(path: Path, layers: int, layer_mib: int) -> None:
    """An OCI layout with ``layers`` uncompressed layers of random 4 MiB files."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors, diff_ids = [], []
    for n in range(layers):
        tmp = path / "layer.tmp"
        with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"layer{n}")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
            for i in range(layer_mib // 4):
                data = os.urandom(4 << 20)
                info = tarfile.TarInfo(f"layer{n}/file{i:03d}")
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        sha = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        digest = sha.hexdigest()
        tmp.rename(blobs / digest)
        size = (blobs / digest).stat().st_size
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": "sha256:" + digest, "size": size})
        diff_ids.append("sha256:" + digest)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"layer {n}"} for n in range(layers)]}).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    (blobs / config_digest).write_bytes(config)
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + config_digest, "size": len(config)},
                           "layers": descriptors}).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest).write_bytes(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + manifest_digest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bench/big:1"}}]}))


class Registry:
    def __init__(self, path: Path):
        self.path = path
        self.proc = None
        self.host = None

    def start(self) -> None:
        self.stop()
        peers.remove_tree(self.path)
        self.path.mkdir(parents=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (self.path / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "
            f"{self.path}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
        with open(self.path / "registry.log", "wb") as logf:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.path / "config.yml")],
                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        self.host = f"127.0.0.1:{port}"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc is not None:
            peers.stop_pid(self.proc.pid, timeout=10, name="docker-registry")
            self.proc.wait()
            self.proc = None


def lamina(root: Path, *args) -> list:
    return [*LAMINA, "--root", root, "--driver", "overlay2", *args]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--layer-mib", type=int, default=205)
    args = ap.parse_args()
    started = time.time()
    peers.BASE = BASE
    peers.lock_base()
    docker, podman = peers.Docker(BASE), peers.Podman(BASE)
    registry = Registry(BASE / "registry")
    samples: dict[str, list[float]] = {}
    memory: dict[str, int] = {}
    disk: dict[str, int] = {}  # bytes a pull added to each engine's store (du -sb)

    def sample(key: str, cmd, env=None) -> None:
        os.sync()  # untimed: no command pays for writing back what the one before it wrote
        seconds, rss = timed(cmd, env)
        samples.setdefault(key, []).append(seconds)
        memory[key] = max(memory.get(key, 0), rss)
        log(f"{key}: {seconds:.2f} s, {rss} MiB")

    try:
        layout = BASE / "layout"
        shape = f"{args.layers}x{args.layer_mib}"
        marker = layout / "shape"
        if not marker.exists() or marker.read_text() != shape:
            peers.remove_tree(layout)
            log(f"building a {args.layers} x {args.layer_mib} MiB image")
            make_layout(layout, args.layers, args.layer_mib)
            marker.write_text(shape)
        total = sum(f.stat().st_size for f in (layout / "blobs" / "sha256").iterdir())
        src = BASE / "lamina-src"
        peers.remove_tree(src)
        run(lamina(src, "load", "-q", "-i", layout))
        docker.start()
        podman.start()
        archive = BASE / "lamina.tar"
        run(lamina(src, "save", "-q", "-o", archive, "bench/big:1"))
        run(docker.cli("load", "-i", archive), docker.env)
        run(podman.cli("load", "-i", archive), podman.env)
        for i in range(args.runs):
            log(f"run {i + 1} of {args.runs}")
            # push: an empty registry each time (no blob mounts or skips)
            for who in ("lamina", "skopeo", "podman", "docker"):
                registry.start()
                dest = f"{registry.host}/bench/big:1"
                if who == "lamina":
                    fresh = BASE / "lamina-push"
                    peers.remove_tree(fresh)
                    run(lamina(fresh, "load", "-q", "-i", layout))
                    sample("push / lamina", lamina(fresh, "push", "-q", "bench/big:1", dest))
                elif who == "skopeo":
                    sample("push / skopeo", ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                             f"oci:{layout}:bench/big:1", f"docker://{dest}"])
                elif who == "podman":
                    sample("push / podman", podman.cli("push", "-q", "--tls-verify=false",
                                                       "bench/big:1", f"docker://{dest}"),
                           podman.env)
                else:  # a loopback registry is insecure by default for dockerd
                    run(docker.cli("tag", "bench/big:1", dest), docker.env)
                    sample("push / docker", docker.cli("push", "-q", dest), docker.env)
                    run(docker.cli("rmi", dest), docker.env)
            # pull: from a registry filled by lamina (gzip layers)
            registry.start()
            dest = f"{registry.host}/bench/big:1"
            run(lamina(src, "push", "-q", "bench/big:1", dest))
            target = BASE / "lamina-pull"
            peers.remove_tree(target)
            run(lamina(target, "images"))  # an empty store
            before = du(target)
            sample("pull / lamina", lamina(target, "pull", "-q", dest))
            disk.setdefault("lamina", du(target) - before)
            peers.remove_tree(target)
            out = BASE / "skopeo-pull"
            peers.remove_tree(out)
            sample("pull / skopeo", ["skopeo", "copy", "-q", "--src-tls-verify=false",
                                     f"docker://{dest}", f"oci:{out}:big"])
            peers.remove_tree(out)
            run(podman.cli("rmi", "-af"), podman.env)  # no layer may be there already
            before = du(podman.root)
            sample("pull / podman", podman.cli("pull", "-q", "--tls-verify=false", dest), podman.env)
            disk.setdefault("podman", du(podman.root) - before)
            run(podman.cli("tag", dest, "bench/big:1"), podman.env)
            run(docker.cli("rmi", "-f", "bench/big:1"), docker.env)  # its layers go with it
            before = du(docker.data_root)
            sample("pull / docker", docker.cli("pull", "-q", dest), docker.env)
            disk.setdefault("docker", du(docker.data_root) - before)
            run(docker.cli("tag", dest, "bench/big:1"), docker.env)
            run(docker.cli("rmi", dest), docker.env)
            # save and load (docker-archive, as `docker save` writes)
            for who, cmd, env in (
                    ("lamina", lamina(src, "save", "-q", "-o", BASE / "s-lamina.tar", "bench/big:1"),
                     None),
                    ("docker", docker.cli("save", "-o", BASE / "s-docker.tar", "bench/big:1"),
                     docker.env),
                    ("podman", podman.cli("save", "-q", "-o", BASE / "s-podman.tar", "bench/big:1"),
                     podman.env)):
                sample(f"save / {who}", cmd, env)
            target = BASE / "lamina-load"
            peers.remove_tree(target)
            sample("load / lamina", lamina(target, "load", "-q", "-i", BASE / "s-lamina.tar"))
            peers.remove_tree(target)
            run(docker.cli("rmi", "-f", "bench/big:1"), docker.env)
            sample("load / docker", docker.cli("load", "-q", "-i", BASE / "s-docker.tar"), docker.env)
            run(podman.cli("rmi", "-af"), podman.env)
            sample("load / podman", podman.cli("load", "-q", "-i", BASE / "s-podman.tar"),
                   podman.env)
            for name in ("s-lamina.tar", "s-docker.tar", "s-podman.tar"):
                (BASE / name).unlink()
        write_results(samples, memory, total, args, time.time() - started,
                      docker.version(), podman.version(), disk)
    finally:
        registry.stop()
        docker.cleanup()
        podman.cleanup()
        for name in ("lamina-src", "lamina-push", "lamina-pull", "lamina-load", "skopeo-pull",
                     "registry"):
            peers.remove_tree(BASE / name)
    return 0


def du(path: Path) -> int:
    return int(run(["du", "-sb", path]).split()[0])


def write_results(samples, memory, total, args, took, docker_version, podman_version,
                  disk) -> None:
    med = {k: statistics.median(v) for k, v in samples.items()}
    mib = total / (1 << 20)

    def cell(key):
        if key not in med:
            return "-"
        return f"{med[key]:.2f} s ({mib / med[key]:.0f} MiB/s, {memory[key]} MiB RSS)"

    rows = [("push to the registry", "push", ("skopeo", "podman")),
            ("push, against Docker", "push", ("docker", "skopeo")),
            ("pull from the registry", "pull", ("skopeo", "podman")),
            ("pull, against Docker", "pull", ("docker", "skopeo")),
            ("save (docker-archive)", "save", ("docker", "podman")),
            ("load (docker-archive)", "load", ("docker", "podman"))]
    lines = [BEGIN, f"## Transfer run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             (f"Command: `python3 bench/transfer.py --runs {args.runs} --layers {args.layers} "
              f"--layer-mib {args.layer_mib}` (took {took / 60:.1f} min)"), "",
             (f"Image: {args.layers} layers, {mib:.0f} MiB of uncompressed random-content files "
              f"(gzip cannot shrink them). Machine: {platform.node() and 'Debian 12'}, "
              f"{os.cpu_count()} cores; data under {BASE} (ext4). Docker {docker_version}, "
              f"Podman {podman_version}, skopeo and docker-registry from Debian 12. Medians of "
              f"{args.runs}; MiB/s is the image's uncompressed size over the time; RSS is the "
              "command's peak (for Docker, the CLI only: the daemon does the work)."), "",
             "Speed-up = the peer's median time / lamina's (above 1: lamina is faster).", "",
             "| work | lamina | peer 1 | peer 2 | speed-up vs peer 1 | speed-up vs peer 2 |",
             "|---|---|---|---|---|---|"]
    for label, op, others in rows:
        mine = f"{op} / lamina"
        peer = [f"{op} / {o}" for o in others]
        ratios = [f"{med[p] / med[mine]:.2f}" if mine in med and p in med else "-"
                  for p in peer]
        lines.append(f"| {label} | {cell(mine)} | {others[0]}: {cell(peer[0])} | "
                     f"{others[1]}: {cell(peer[1])} | {ratios[0]} | {ratios[1]} |")
    if disk:
        lines += ["", (f"Disk bytes a pull added to each engine's store (`du -sb` after minus "
                  f"before; the image is {total:,} bytes of uncompressed layers):"), "",
                  "| engine | bytes | vs the layers |", "|---|---:|---:|"]
        lines += [f"| {name} | {disk[name]:,} | {disk[name] / total:.2f}x |"
                  for name in ("lamina", "docker", "podman") if name in disk]
    lines += ["", "Notes:", "",
              ("- push: lamina and skopeo read the same uncompressed layers and gzip them on the "
               "way (lamina: isal level 1, 2 threads; skopeo: Go's gzip); Podman does the same "
               "from its own store. Each push goes to an empty registry."),
              ("- pull: lamina and Podman verify, store and extract every layer (a runnable "
               "image); `skopeo copy` to an OCI layout only downloads and verifies, it extracts "
               "nothing."),
              ("- save/load: Docker 20.10 and Podman write and read docker-archive; lamina too. "
               "load includes extraction into the engine's store."),
              ("- Every timed command starts after an untimed `sync`, so none pays for writing "
               "back what the step before it left in the page cache."), "",
              "<details><summary>Raw samples (seconds)</summary>", "", "```"]
    lines += [f"{k}: {', '.join(f'{s:.2f}' for s in v)}" for k, v in samples.items()]
    lines += ["```", "", "</details>", END]
    begin, end = BEGIN, END
    if (args.layers, args.layer_mib) != (5, 205):  # other shapes get a section of their own
        shape = f" ({args.layers}x{args.layer_mib} MiB)"
        begin, end = BEGIN.replace(":", shape + ":", 1), END.replace(":", shape + ":", 1)
        lines[0], lines[-1] = begin, end
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    section = "\n".join(lines)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    elif END in text and begin != BEGIN:  # right after the main section
        head, rest = text.split(END, 1)
        text = head + END + "\n\n" + section + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
