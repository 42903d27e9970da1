#!/usr/bin/env python3
"""The Docker Engine API side by side: the docker CLI against `lamina serve`, Docker Engine
and `podman system service` (issue 11's benchmark).

    python3 bench/api.py [--reps N] [--only NAME...] [--servers lamina,docker,podman]
                         [--before EXE]

Benchmarks (names for --only): create, run, images, inspect, requests, ps, parallel.
Each server runs on a private store under /var/tmp/lamina-bench/api/ and gets the same busybox
image (POST /images/create?fromSrc=- of examples/busybox-rootfs.sh's tar); the same docker CLI
commands are then timed against each (DOCKER_HOST per server), interleaved round-robin, and
100 requests are sent at once by this script's own client.  Prints a table of medians with the
ratios lamina/docker and lamina/podman.  ``--before EXE`` adds a server "before": another lamina
(say, an export of the code before a change) in the same interleaved run, and the ratio
lamina/before.  See bench/README.md.  Plain standard library; root.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import run as cli_bench  # noqa: E402  (bench/run.py: the data tar, timing and formatting)
from peers import BASE, Docker, Podman, log, remove_tree, unmount_all  # noqa: E402

API_BASE = BASE / "api"
BENCHES = ["create", "run", "images", "inspect", "requests", "ps", "parallel"]
SERVERS = ["lamina", "docker", "podman"]
IMAGE = "bench-busybox"
INSPECTED = "bench-inspect"      # the container `inspect` looks at
API = "/v1.41"                   # this script's own requests: Podman 4.3's service goes to 1.41
N_CONTAINERS = 100
N_PARALLEL = 100
DOCKER_CLI = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"


# ---------------------------------------------------------------- a client on a unix socket

class UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket (setup and checks; the timed requests use raw sockets)."""

    def __init__(self, path: Path, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def request(sock: Path, method: str, path: str, body=None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    conn = UnixConnection(sock, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api_error(status: int, body: bytes) -> str:
    """The server's one-line message for a failed request."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {status}: {message or body.decode(errors='replace').strip()[:200]}"


def ping(sock: Path) -> bool:
    try:
        status, body = request(sock, "GET", "/_ping", timeout=2)
    except OSError:
        return False
    return status == 200 and body == b"OK"


def split_response(data: bytes) -> tuple[int, bytes]:
    """Status and body (chunked transfer decoded) of one whole HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    if any(line.lower().replace(b" ", b"") == b"transfer-encoding:chunked" for line in lines[1:]):
        out, rest = [], body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out.append(rest[:size])
            rest = rest[size + 2:]
        body = b"".join(out)
    return status, body


def get_once(sock: Path, path: str, start: threading.Barrier, out: list, i: int) -> None:
    """One GET on its own connection once every thread is ready: (seconds, response bytes)."""
    req = f"GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".encode()
    start.wait()
    t0 = time.perf_counter()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(120)
            s.connect(str(sock))
            s.sendall(req)
            chunks = []
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
        out[i] = (time.perf_counter() - t0, b"".join(chunks))
    except OSError as e:
        out[i] = (time.perf_counter() - t0, e)


def parallel_gets(sock: Path, path: str, n: int) -> tuple[float, list[float], list]:
    """n GETs at once, a thread and a connection each (the threads are made before the clock
    starts); wall time from the start to the last answer, each request's latency, the answers."""
    out: list = [None] * n
    start = threading.Barrier(n + 1)
    threads = [threading.Thread(target=get_once, args=(sock, path, start, out, i), daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(300)
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in out if r], [r[1] if r else TimeoutError() for r in out]


# ---------------------------------------------------------------- the three servers

def cli_env(sock: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    env["DOCKER_HOST"] = f"unix://{sock}"
    env["DOCKER_CONFIG"] = str(API_BASE / "cli-config")
    env["DOCKER_CLI_HINTS"] = "false"
    return env


def wait_ready(proc: subprocess.Popen, sock: Path, logfile: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ping(sock):
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"exited with {proc.returncode}: {' | '.join(tail)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer to /_ping within {timeout:.0f} s; see {logfile}")
        time.sleep(0.05)


def stop_processes_under(path: Path, first: int | None) -> None:
    """Stop `first` (a server we started), then by PID every process left whose command line
    names our private directory (containerd shims, conmon, lamina's container monitors)."""
    if first is not None:
        peers.stop_pid(first, timeout=30, name=f"server {first}")
    mark = str(path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmdline:
            peers.stop_pid(int(entry.name), timeout=10, name=f"leftover {entry.name}")


class LaminaServer:
    def __init__(self, exe: Path, name: str = "lamina"):
        self.exe = exe
        self.name = name
        self.dir = API_BASE / name
        self.root = self.dir / "root"
        self.sock = self.dir / "api.sock"
        self.logfile = self.dir / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.env = cli_env(self.sock)

    def start(self) -> None:
        self.stop()
        self.dir.mkdir(parents=True)
        cmd = [sys.executable, "-S", str(self.exe), "--root", str(self.root), "serve",
               "--socket", f"unix://{self.sock}", "--timeout", "0"]
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_ready(self.proc, self.sock, self.logfile, 30)

    def import_fallback(self, tar: Path) -> None:
        """The image through lamina's CLI on the served store, when the API cannot import."""
        peers.run([sys.executable, "-S", str(self.exe), "--root", str(self.root), "import",
                   str(tar), IMAGE], timeout=300)

    def stop(self) -> None:
        stop_processes_under(self.dir, self.proc.pid if self.proc else None)
        self.proc = None
        unmount_all(self.dir)
        remove_tree(self.dir)


class DockerServer:
    name = "docker"

    def __init__(self):
        self.docker = Docker(API_BASE)       # bench/peers.py's private dockerd
        self.sock = self.docker.sock
        self.env = cli_env(self.sock)

    def start(self) -> None:
        self.docker.start()

    def stop(self) -> None:
        self.docker.cleanup()
        stop_processes_under(self.docker.dir, None)


class PodmanServer:
    name = "podman"

    def __init__(self):
        self.podman = Podman(API_BASE)       # bench/peers.py's private stores and configuration
        self.sock = self.podman.dir / "api.sock"
        self.logfile = self.podman.dir / "service.log"
        self.proc: subprocess.Popen | None = None
        self.env = cli_env(self.sock)

    def start(self) -> None:
        self.podman.start()
        cmd = self.podman.cli("system", "service", "--time=0", f"unix://{self.sock}")
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=self.podman.env)
        wait_ready(self.proc, self.sock, self.logfile, 60)

    def stop(self) -> None:
        stop_processes_under(self.podman.dir, self.proc.pid if self.proc else None)
        self.proc = None
        self.podman.cleanup()


def server_version(s) -> str:
    try:
        status, body = request(s.sock, "GET", "/version", timeout=30)
        v = json.loads(body) if status == 200 else {}
        return f"{v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"
    except (OSError, ValueError) as e:
        return f"? ({e})"


# ---------------------------------------------------------------- setting up

def load_image(s, tar: Path, notes: list[str]) -> None:
    """POST /images/create?fromSrc=- with the tar: the same image in every server."""
    try:
        with open(tar, "rb") as f:
            status, body = request(s.sock, "POST",
                                   f"{API}/images/create?fromSrc=-&repo={IMAGE}&tag=latest",
                                   body=f, headers={"Content-Type": "application/x-tar",
                                                    "Content-Length": str(tar.stat().st_size)},
                                   timeout=300)
    except OSError as e:       # a server without the route may close before reading the tar
        status, body = 0, str(e).encode()
    failed = status != 200 or b'"error"' in body
    if failed and isinstance(s, LaminaServer):
        notes.append(f"lamina: POST /images/create failed ({api_error(status, body)[:120]}); the "
                     "image was imported with `lamina import` on the served store instead")
        s.import_fallback(tar)
    elif failed:
        raise RuntimeError(f"image import: {api_error(status, body)}")


def create_containers(s, n: int, name: str | None = None) -> list[str]:
    """n containers of IMAGE (`true`, no network) through the API, untimed."""
    ids = []
    query = f"?name={name}" if name else ""
    body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
    for _ in range(n):
        status, out = request(s.sock, "POST", f"{API}/containers/create{query}", body=body,
                              headers={"Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"create through the API: {api_error(status, out)}")
        ids.append(json.loads(out)["Id"])
    return ids


def remove_containers(s, ids: list[str]) -> None:
    for cid in ids:
        request(s.sock, "DELETE", f"{API}/containers/{cid}?force=1", timeout=120)


# ---------------------------------------------------------------- results

class Results:
    def __init__(self, servers: list[str]):
        self.servers = servers
        self.rows: list[tuple[str, dict, str]] = []   # label, server -> value or why, kind
        self.notes: list[str] = []
        self.raw: list[str] = []

    def row(self, label: str, values: dict, kind: str = "time") -> None:
        self.rows.append((label, values, kind))

    def failed(self, bench: str, server: str, error: BaseException) -> str:
        """Log a server's failure at a step; the short reason for its cell."""
        lines = str(error).strip().splitlines() or [type(error).__name__]
        log(f"{bench}/{server} FAILED: {' | '.join(lines)[:600]}")
        self.notes.append(f"{bench} / {server}: `{lines[-1][:300]}`")
        return "failed: " + lines[-1][:70]


def fmt(value, kind: str) -> str:
    if isinstance(value, str):
        return value.replace("|", "/")
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value * 1e3:.2f} ms"
    return f"{value:.0f}/s" if kind == "rate" else cli_bench.fmt_t(value)


def ratio(a, b, kind: str) -> str:
    if not isinstance(a, float) or not isinstance(b, float) or min(a, b) <= 0:
        return "-"
    return f"{(b / a) if kind == 'rate' else (a / b):.2f}"


def table(res: Results) -> str:
    names = res.servers
    peers_of_lamina = [n for n in ("docker", "podman", "before") if n in names and "lamina" in names]
    out = ["| benchmark | " + " | ".join(names) + "".join(f" | lamina/{p}" for p in peers_of_lamina)
           + " |", "|---" * (1 + len(names) + len(peers_of_lamina)) + "|"]
    for label, values, kind in res.rows:
        cells = [fmt(values.get(n), kind) for n in names]
        cells += [ratio(values.get("lamina"), values.get(p), kind) for p in peers_of_lamina]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- the benchmarks

def interleaved(servers, res: Results, bench: str, label: str, reps: int, command, check=None,
                timeout: float = 120, failed: dict | None = None) -> None:
    """Median wall time of the docker CLI command(server) on each server: one untimed warm-up,
    then reps runs, round-robin across the servers. check(server, stdout) validates untimed;
    failed: servers that could not be set up for it, and why."""
    samples: dict[str, list[float]] = {s.name: [] for s in servers}
    values: dict[str, object] = dict(failed or {})
    for i in range(reps + 1):
        for s in servers:
            if s.name in values:
                continue
            try:
                t0 = time.perf_counter()
                p = subprocess.run([DOCKER_CLI, *command(s)], env=s.env, capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=timeout, check=False)
                t = time.perf_counter() - t0
                if p.returncode != 0:
                    err = p.stderr.decode(errors="replace").strip().splitlines() or ["?"]
                    raise RuntimeError(f"exit {p.returncode}: "
                                       + err[-1].removeprefix("Error response from daemon: "))
                if check is not None:
                    check(s, p.stdout.decode(errors="replace"))
                if i > 0:
                    samples[s.name].append(t)
            except Exception as e:  # noqa: BLE001 - one server's failure must not stop the others
                values[s.name] = res.failed(bench, s.name, e)
    for s in servers:
        if s.name not in values:
            values[s.name] = statistics.median(samples[s.name])
            res.raw.append(f"{bench} / {s.name}: " + ", ".join(f"{x:.4f}" for x in samples[s.name]))
    res.row(f"{label} (median of {reps})", values)


def bench_create(servers, res: Results, reps: int) -> None:
    made: dict[str, list[str]] = {s.name: [] for s in servers}

    def keep(s, out: str) -> None:
        made[s.name].append(out.strip().splitlines()[-1])
    interleaved(servers, res, "create", f"`create --network none {IMAGE} true`", reps,
                lambda s: ["create", "--network", "none", IMAGE, "true"], keep)
    for s in servers:
        remove_containers(s, made[s.name])


def bench_run(servers, res: Results, reps: int) -> None:
    interleaved(servers, res, "run", f"`run --rm --network none {IMAGE} true`", reps,
                lambda s: ["run", "--rm", "--network", "none", IMAGE, "true"])


def bench_images(servers, res: Results, reps: int) -> None:
    def check(s, out: str) -> None:
        if IMAGE not in out:
            raise RuntimeError(f"`docker images` does not list {IMAGE}")
    interleaved(servers, res, "images", "`images`", reps, lambda s: ["images"], check)


def create_inspected(servers, res: Results, bench: str) -> dict:
    """The container INSPECTED on each server; {server: why not} where it could not be made."""
    failed = {}
    for s in servers:
        try:
            create_containers(s, 1, INSPECTED)
        except Exception as e:  # noqa: BLE001
            failed[s.name] = res.failed(bench, s.name, e)
    return failed


def bench_inspect(servers, res: Results, reps: int) -> None:
    failed = create_inspected(servers, res, "inspect")

    def check(s, out: str) -> None:
        json.loads(out)
    interleaved(servers, res, "inspect", f"`inspect {INSPECTED}` (a container)", reps,
                lambda s: ["inspect", INSPECTED], check, failed=failed)
    interleaved(servers, res, "image inspect", f"`image inspect {IMAGE}`", reps,
                lambda s: ["image", "inspect", IMAGE], check)
    for s in servers:
        if s.name not in failed:
            remove_containers(s, [INSPECTED])


def read_answer(sock: socket.socket, head: bool, buf: bytes) -> bytes:
    """One response off a keep-alive connection (Content-Length or chunked; none after a
    HEAD); returns what was read past it."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(1 << 16)
        if not more:
            raise ConnectionError("closed before an answer")
        buf += more
    top, _, rest = buf.partition(b"\r\n\r\n")
    lines = top.lower().split(b"\r\n")
    if not lines[0].split()[1].startswith(b"2"):
        raise RuntimeError(f"status {lines[0].decode(errors='replace')}")
    if head:
        return rest
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")),
                  None)
    if length is None:  # chunked
        while b"0\r\n\r\n" not in rest:
            rest += sock.recv(1 << 16)
        return rest.partition(b"0\r\n\r\n")[2]
    while len(rest) < length:
        rest += sock.recv(1 << 16)
    return rest[length:]


def ping_then_get(sock: Path, path: str) -> float:
    """What the docker CLI sends for `images` or `image inspect`, on one new connection:
    `HEAD /_ping`, then one GET; seconds to the end of the second answer."""
    agent = b"User-Agent: Docker-Client/28.2.2 (linux)\r\nHost: api.moby.localhost\r\n\r\n"
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(sock))
        s.sendall(b"HEAD /_ping HTTP/1.1\r\n" + agent)
        rest = read_answer(s, True, b"")
        s.sendall(f"GET {path} HTTP/1.1\r\n".encode() + agent)
        read_answer(s, False, rest)
    return time.perf_counter() - t0


def bench_requests(servers, res: Results, reps: int) -> None:
    """The exchanges of `docker images`, `docker image inspect` and `docker inspect` of a
    container without the CLI's process (most of its wall time): this script's own client,
    20 x reps connections each, round-robin."""
    failed = create_inspected(servers, res, "requests")
    for label, path in (("`images`", f"{API}/images/json"),
                        ("`image inspect`", f"{API}/images/{IMAGE}/json"),
                        ("`inspect` (a container)", f"{API}/containers/{INSPECTED}/json")):
        samples: dict[str, list[float]] = {s.name: [] for s in servers}
        values: dict[str, object] = {}
        if "containers" in path:
            values.update(failed)
        for i in range(20 * reps + 1):
            for s in servers:
                if s.name in values:
                    continue
                try:
                    t = ping_then_get(s.sock, path)
                except Exception as e:  # noqa: BLE001
                    values[s.name] = res.failed("requests", s.name, e)
                    continue
                if i > 0:
                    samples[s.name].append(t)
        for s in servers:
            if s.name not in values:
                values[s.name] = statistics.median(samples[s.name])
        res.row(f"{label}'s requests alone: `HEAD /_ping` + `GET {path}` on one connection "
                f"(median of {20 * reps})", values, "ms")
    for s in servers:
        if s.name not in failed:
            remove_containers(s, [INSPECTED])


def populate(servers, res: Results) -> dict[str, str]:
    """N_CONTAINERS containers in each server (untimed); the servers that failed, and why."""
    failed = {}
    for s in servers:
        log(f"{s.name}: creating {N_CONTAINERS} containers")
        try:
            create_containers(s, N_CONTAINERS)
        except Exception as e:  # noqa: BLE001
            failed[s.name] = res.failed(f"{N_CONTAINERS} containers", s.name, e)
    return failed


def bench_ps(servers, res: Results, reps: int, failed: dict) -> None:
    def check(s, out: str) -> None:
        rows = len(out.strip().splitlines()) - 1
        if rows != N_CONTAINERS:
            raise RuntimeError(f"`docker ps -a -s` listed {rows} containers, not {N_CONTAINERS}")
    interleaved(servers, res, "ps", f"`ps -a -s` with {N_CONTAINERS} containers", reps,
                lambda s: ["ps", "-a", "-s"], check, timeout=300, failed=failed)


def bench_parallel(servers, res: Results, reps: int, failed: dict) -> None:
    """N_PARALLEL GET /containers/json?all=1 at once, reps rounds interleaved after a warm-up:
    requests/s (median over rounds) and p50/p99 latency (over every timed request)."""
    path = f"{API}/containers/json?all=1"
    rates: dict[str, list[float]] = {s.name: [] for s in servers}
    latencies: dict[str, list[float]] = {s.name: [] for s in servers}
    why: dict[str, str] = dict(failed)
    for i in range(reps + 1):
        for s in servers:
            if s.name in why:
                continue
            wall, times, answers = parallel_gets(s.sock, path, N_PARALLEL)
            try:
                for a in answers:
                    if isinstance(a, BaseException):
                        raise a
                    status, body = split_response(a)
                    if status != 200:
                        raise RuntimeError(api_error(status, body))
                    if len(json.loads(body)) != N_CONTAINERS:
                        raise RuntimeError(f"listed {len(json.loads(body))} containers, "
                                           f"not {N_CONTAINERS}")
            except Exception as e:  # noqa: BLE001
                why[s.name] = res.failed("parallel", s.name, e)
                continue
            if i > 0:
                rates[s.name].append(N_PARALLEL / wall)
                latencies[s.name] += times
    rate, p50, p99 = {}, {}, {}
    for s in servers:
        if s.name in why:
            rate[s.name] = p50[s.name] = p99[s.name] = why[s.name]
            continue
        lat = sorted(latencies[s.name])
        rate[s.name] = statistics.median(rates[s.name])
        p50[s.name] = statistics.median(lat)
        p99[s.name] = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        res.raw.append(f"parallel requests/s / {s.name}: " +
                       ", ".join(f"{x:.1f}" for x in rates[s.name]))
    what = f"{N_PARALLEL} parallel `GET /containers/json?all=1` ({N_CONTAINERS} containers)"
    res.row(f"{what}: requests/s (median of {reps} rounds)", rate, "rate")
    res.row(f"{what}: p50 latency ({reps} x {N_PARALLEL} requests)", p50)
    res.row(f"{what}: p99 latency", p99)


# ---------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHES, metavar="NAME",
                    help=f"run only these benchmarks ({', '.join(BENCHES)})")
    ap.add_argument("--reps", type=int, default=10, metavar="N",
                    help="timed repetitions of each command (default 10; one warm-up more)")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="which servers, in this order (default lamina,docker,podman)")
    ap.add_argument("--lamina", type=Path, default=REPO / "bin" / "lamina", metavar="EXE",
                    help="the lamina command to serve with (default bin/lamina, run with "
                         "this Python and -S)")
    ap.add_argument("--before", type=Path, metavar="EXE",
                    help="also serve with this lamina command, as the server 'before' (a "
                         "before/after comparison in one interleaved run)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if args.before is not None and "before" not in names:
        names.insert(names.index("lamina") + 1 if "lamina" in names else 0, "before")
    known = SERVERS + (["before"] if args.before is not None else [])
    if not names or any(n not in known for n in names) or len(set(names)) != len(names):
        ap.error(f"--servers: a comma-separated list of {', '.join(SERVERS)}")
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if os.geteuid() != 0:
        print("bench/api.py needs root (dockerd, podman's and lamina's overlay mounts)",
              file=sys.stderr)
        return 2
    if shutil.which(DOCKER_CLI) is None:
        print(f"bench/api.py needs the docker CLI ({DOCKER_CLI})", file=sys.stderr)
        return 2
    peers.lock_base()   # one benchmark at a time on this machine, bench/run.py included
    selected = args.only or BENCHES
    started = time.monotonic()
    load_start = cli_bench.loadavg()
    make = {"lamina": lambda: LaminaServer(args.lamina), "docker": DockerServer,
            "podman": PodmanServer, "before": lambda: LaminaServer(args.before, "before")}
    all_servers = [make[n]() for n in names]
    res = Results(names)

    stopped = False

    def stop_all() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        for s in all_servers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {s.name} failed: {e}")
        remove_tree(API_BASE / "cli-config")
        try:
            API_BASE.rmdir()
        except OSError:
            pass

    atexit.register(stop_all)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    versions = []
    down: dict[str, str] = {}
    try:
        tar = cli_bench.make_data(set())["base"]
        servers = []
        for s in all_servers:
            log(f"starting {s.name}")
            try:
                s.start()
                load_image(s, tar, res.notes)
                servers.append(s)
                versions.append(f"{s.name}: {server_version(s)}")
            except Exception as e:  # noqa: BLE001
                down[s.name] = res.failed("start", s.name, e)
        cli_bench.sync()
        for bench, fn in (("create", bench_create), ("run", bench_run), ("images", bench_images),
                          ("inspect", bench_inspect), ("requests", bench_requests)):
            if bench in selected:
                log(f"benchmark: {bench}")
                fn(servers, res, args.reps)
        if "ps" in selected or "parallel" in selected:
            failed = populate(servers, res)
            if "ps" in selected:
                log("benchmark: ps")
                bench_ps(servers, res, args.reps, failed)
            if "parallel" in selected:
                log("benchmark: parallel")
                bench_parallel(servers, res, args.reps, failed)
    finally:
        stop_all()

    for _label, values, _kind in res.rows:
        for name in names:
            values.setdefault(name, down.get(name, "not measured (see notes)"))
    elapsed = time.monotonic() - started
    print()
    print(table(res))
    print()
    print("Medians of the docker CLI's wall time (client 28.2.2: process start, API round trips, "
          "exit), or of this script's own requests, interleaved across servers."
          + (" Ratios below 1 mean lamina is faster (requests/s: the peer's rate over lamina's)."
             if "lamina" in names else ""))
    for n in res.notes:
        print(f"note: {n}")
    print(f"servers: {'; '.join(versions)}")
    print(f"machine: {os.cpu_count()} CPUs; load average {load_start} at start, "
          f"{cli_bench.loadavg()} at end; shared with other work, so compare ratios taken in one "
          "run rather than absolute figures across runs")
    for line in res.raw:
        print(f"samples {line}")
    print(f"(total {elapsed / 60:.1f} min; {' '.join(['python3 bench/api.py', *argv])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
