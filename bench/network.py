#!/usr/bin/env python3
"""Network benchmark, side by side: lamina (CNI bridge) against Docker Engine (a bridge,
iptables and its userland proxy: ``Docker(network=True)`` of bench/peers.py) and Podman (its
default network: CNI on Debian 12's Podman 4.3).

    python3 bench/network.py [--runs N] [--requests N] [--megabytes N] [--only NAME...]

Benchmarks (names for --only):

* ``run``: ``run --rm IMAGE true`` on the default bridge network; ``run-none``: the same with
  ``--network none`` (what the bridge costs is the difference); ``run-p``: on the bridge with
  ``-p 127.0.0.1::80`` (a random host port);
* ``bulk``: a container's busybox httpd serves a file of ``--megabytes`` MB through a published
  port; a Python client on the host reads it from 127.0.0.1 (MB/s, median of 5);
* ``latency``: ``--requests`` sequential small GETs (a new connection each: busybox httpd
  speaks HTTP/1.0) through the same port; the median and 90th percentile per request.

The three engines run at once, each timed run or round of requests in turn (round-robin), so
that the shared machine's load falls on all alike. Prints medians and the ratios lamina/docker
and lamina/podman. Needs root, dockerd, podman, runc,
the CNI plugins and busybox-static. Everything lives under LAMINA_BENCH_BASE
(/var/tmp/lamina-bench); the host's iptables rules are restored after Docker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import Docker, lock_base, log, run  # noqa: E402
from run import LaminaEngine, PodmanEngine, make_data, timed  # noqa: E402

HTTPD = "mkdir -p /www && echo ok > /www/index.html && {extra}exec httpd -f -p 80 -h /www"


class NetworkDocker(Docker):
    def __init__(self):
        super().__init__(network=True)

    def ref(self, image: str) -> str:
        return image

    def import_cmd(self, tar: Path, name: str) -> list[str]:
        return ["docker", "import", str(tar), name]


def run_cmd(eng, image: str, *options: str) -> list[str]:
    return eng.cli("run", "--rm", *options, eng.ref(image), "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def serve(eng, image: str, megabytes: int) -> tuple[str, int]:
    """A detached httpd container with a file of ``megabytes`` MB, published on 127.0.0.1."""
    port = free_port()
    extra = f"dd if=/dev/zero of=/www/big bs=1M count={megabytes} 2>/dev/null && "
    p = run(eng.cli("run", "-d", "-p", f"127.0.0.1:{port}:80", eng.ref(image), "sh", "-c",
                    HTTPD.format(extra=extra)), env=eng.env, timeout=120)
    cid = p.stdout.decode().strip().splitlines()[-1]
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"http://127.0.0.1:{port}/index.html") == b"ok\n":
                return cid, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bulk(port: int, megabytes: int) -> float:
    """MB/s of one read of /big."""
    t0 = time.perf_counter()
    total = 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=60) as response:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
    elapsed = time.perf_counter() - t0
    assert total == megabytes << 20, total
    return total / 1e6 / elapsed


def latencies(port: int, count: int) -> list[float]:
    out = []
    request = b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n"
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        out.append(time.perf_counter() - t0)
        assert data.endswith(b"ok\n"), data[-64:]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--only", nargs="*", default=["run", "run-none", "run-p", "bulk",
                                                       "latency"])
    parser.add_argument("--lamina", default=shutil.which("lamina") or "lamina",
                        help="lamina executable (default: from PATH)")
    a = parser.parse_args()
    lock_base()
    tar = make_data(set())["base"]
    engines = [LaminaEngine(a.lamina, None), NetworkDocker(), PodmanEngine()]
    saved_rules = run(["iptables-save"], timeout=30).stdout  # restored at the end
    results: dict[str, dict[str, float]] = {}
    image = "busybox"
    servers: dict[str, tuple[str, int]] = {}
    try:
        for eng in engines:
            log(f"{eng.name}: starting")
            eng.start()
            run(eng.import_cmd(tar, image), env=eng.env, timeout=300)
        # round-robin: each run of each engine in turn, so that the shared machine's load
        # falls on all three alike
        cases = {"run": (), "run-none": ("--network", "none"), "run-p": ("-p", "127.0.0.1::80")}
        for name, options in cases.items():
            if name not in a.only:
                continue
            times: dict[str, list[float]] = {eng.name: [] for eng in engines}
            for eng in engines:
                timed(run_cmd(eng, image, *options), eng.env)  # warm: the bridge, the rules
            for _ in range(a.runs):
                for eng in engines:
                    times[eng.name].append(timed(run_cmd(eng, image, *options), eng.env)[0])
            for eng in engines:
                results.setdefault(name, {})[eng.name] = statistics.median(times[eng.name])
            log(f"{name}: " + ", ".join(f"{k} {v:.3f} s" for k, v in results[name].items()))
        if {"bulk", "latency"} & set(a.only):
            for eng in engines:
                servers[eng.name] = serve(eng, image, a.megabytes)
            if "bulk" in a.only:
                rates: dict[str, list[float]] = {eng.name: [] for eng in engines}
                for _ in range(5):
                    for eng in engines:
                        rates[eng.name].append(bulk(servers[eng.name][1], a.megabytes))
                results["bulk MB/s"] = {k: statistics.median(v) for k, v in rates.items()}
                log("bulk: " + ", ".join(f"{k} {v:.0f} MB/s"
                                         for k, v in results["bulk MB/s"].items()))
            if "latency" in a.only:
                each: dict[str, list[float]] = {eng.name: [] for eng in engines}
                for _ in range(10):  # in tenths, round-robin
                    for eng in engines:
                        each[eng.name] += latencies(servers[eng.name][1], a.requests // 10)
                results["latency median ms"] = {k: statistics.median(v) * 1000
                                                for k, v in each.items()}
                results["latency p90 ms"] = {k: statistics.quantiles(v, n=10)[-1] * 1000
                                             for k, v in each.items()}
    finally:
        for eng in engines:
            if eng.name in servers:
                run(eng.cli("rm", "-f", servers[eng.name][0]), env=eng.env, check=False,
                    timeout=120)
            if eng.name == "lamina":  # its default network's bridge outlives the store's files
                p = run(eng.cli("network", "inspect", "bridge"), env=eng.env, check=False)
                for doc in json.loads(p.stdout or b"[]"):
                    bridge = doc["Options"].get("com.docker.network.bridge.name")
                    run(["ip", "link", "delete", bridge], check=False)
            eng.cleanup()
        run(["iptables-restore"], input=saved_rules, check=False)  # lamina's network rules
    print(f"{'benchmark':<20} {'lamina':>10} {'docker':>10} {'podman':>10} "
          f"{'l/docker':>9} {'l/podman':>9}")
    for name, row in results.items():
        lam, doc, pod = (row.get(k) for k in ("lamina", "docker", "podman"))
        unit = "" if " " in name else " s"
        cells = [f"{v:.3f}{unit}" if v is not None else "-" for v in (lam, doc, pod)]
        ratios = [f"{lam / v:.2f}x" if lam and v else "-" for v in (doc, pod)]
        print(f"{name:<20} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} "
              f"{ratios[0]:>9} {ratios[1]:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
