#!/usr/bin/env python3
"""What the default seccomp profile costs a container's start (issue 12, item 4).

    python3 bench/seccomp.py [--runs N]

lamina reads Podman's profile (/usr/share/containers/seccomp.json) and converts it to the OCI
spec's ``linux.seccomp`` every time a container starts (lamina.runtime.security), and runc then
compiles it into a BPF filter. This measures both: the read + conversion alone, in this process,
and ``lamina run --rm --network none busybox true`` with the default profile against
``--security-opt seccomp=unconfined``, the two interleaved run by run (so that a busy machine weighs on both
alike), on a fresh store under /var/tmp that is removed afterwards. Prints medians and the
ratio, of the wall-clock time and of the CPU time (user + system) that each run's processes used
(lamina, runc, the container): on a machine shared with other work the CPU time is the steadier
figure. Root (runc), in a private mount namespace (it re-executes itself under unshare).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def conversion_ms(rounds: int = 200) -> float:
    """Median milliseconds of reading and converting the default profile."""
    sys.path.insert(0, str(REPO / "src"))
    from lamina.runtime import security
    from lamina.runtime.oci import DEFAULT_CAPABILITIES

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        security.oci_seccomp(security.default_profile(), DEFAULT_CAPABILITIES)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def runc_cpu_ms(root: str, runs: int) -> dict[str, float]:
    """Median CPU milliseconds of ``runc run`` of one container's bundle (as lamina writes it)
    with its ``linux.seccomp`` and without: runc's own cost of the filter (libseccomp compiles
    it to BPF for the three x86 architectures)."""
    import json

    sys.path.insert(0, str(REPO / "src"))
    from lamina import Engine
    from lamina.runtime.oci import RunConfig
    from lamina.runtime.process import prepare_bundle

    engine = Engine(root=root)
    containers = engine.container_store
    cid = engine.create("busybox", command=["true"])
    row = containers.get(cid)
    rootfs = containers.mount(cid)
    bundle = os.path.join(root, "bench-bundle")
    os.makedirs(bundle)
    state = os.path.join(root, "bench-runc")
    prepare_bundle(containers, row, RunConfig(network="none"), rootfs, bundle, ["true"], None,
                   None, None, "none", "bench")
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    plain = {**spec, "linux": {k: v for k, v in spec["linux"].items() if k != "seccomp"}}
    cpu: dict[str, list[float]] = {"with its filter": [], "without": []}
    try:
        for i in range(runs):
            for kind, doc in (("with its filter", spec), ("without", plain)):
                with open(os.path.join(bundle, "config.json"), "w") as f:
                    json.dump(doc, f)
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(["runc", "--root", state, "run", "--bundle", bundle,
                                f"bench-{i}-{len(kind)}"], check=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[kind].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
    finally:
        containers.umount(cid)
        engine.rm(cid)
        engine.close()
    return {kind: statistics.median(times) * 1000 for kind, times in cpu.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each kind (default 20)")
    args = parser.parse_args()
    if os.environ.get("LAMINA_BENCH_UNSHARED") != "1":
        env = {**os.environ, "LAMINA_BENCH_UNSHARED": "1"}
        return subprocess.call(["unshare", "--mount", "--propagation", "private",
                                sys.executable, *sys.argv], env=env)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    lamina = [sys.executable, "-m", "lamina"]
    with tempfile.TemporaryDirectory(prefix="lamina-bench-seccomp-", dir="/var/tmp") as base:
        root = os.path.join(base, "store")
        tar = os.path.join(base, "busybox.tar")
        subprocess.run([str(REPO / "examples" / "busybox-rootfs.sh"), tar], check=True,
                       capture_output=True)
        subprocess.run([*lamina, "--root", root, "import", tar, "busybox"], env=env, check=True,
                       capture_output=True)
        kinds = {"default profile": [], "seccomp=unconfined": []}
        cpu = {kind: [] for kind in kinds}
        flags = {"default profile": [], "seccomp=unconfined": ["--security-opt",
                                                               "seccomp=unconfined"]}

        def run(kind: str) -> None:
            subprocess.run([*lamina, "--root", root, "run", "--rm", "--network", "none",
                            *flags[kind], "busybox", "true"], env=env, check=True)

        for kind in kinds:  # one warm-up of each
            run(kind)
        for _ in range(args.runs):
            for kind, times in kinds.items():
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                run(kind)
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[kind].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
        runc = runc_cpu_ms(root, args.runs)
    print(f"read + convert the profile (in process): {conversion_ms():.2f} ms median")
    for kind, value in runc.items():
        print(f"runc run of the same bundle, {kind:<15}  cpu: {value:7.1f} ms median")
    for title, samples in (("wall", kinds), ("cpu", cpu)):
        medians = {kind: statistics.median(times) * 1000 for kind, times in samples.items()}
        for kind, value in medians.items():
            print(f"run --rm busybox true, {kind:<18} {title:>4}: {value:7.1f} ms median of "
                  f"{args.runs}")
        ratio = medians["default profile"] / medians["seccomp=unconfined"]
        print(f"default / unconfined ({title}): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
