#!/usr/bin/env python3
"""docker-py's own integration tests against any Docker Engine API server (issue 11).

    python3 bench/dockerpy.py --host unix:///PATH [--junit FILE] [--results FILE] [-- PYTEST-ARGS]
    python3 bench/dockerpy.py --compare [--servers docker,podman,lamina]

The tests are docker/docker-py's `tests/integration`, run unchanged by pytest with the installed
docker-py library.  They are not kept in this repository: the harness fetches them at run time
from PyPI (the sdist of docker TESTS_VERSION, the newest docker sdist that still ships tests/;
7.1.0's has none) or takes a docker-py source tree with --tests DIR (a checkout of the tag that
matches the installed library).  Only tests/ and pytest.ini are copied into a suite folder, so
the installed docker-py is the one under test, never the source tree's own copy.

Before the run the server gets the images the tests expect from Docker Hub (alpine:3.10, alpine,
busybox), all made here from Debian's static busybox and imported through the API
(POST /images/create?fromSrc=-), since there is no Docker Hub to pull from.  Groups of tests
that need swarm, plugins, networks beyond host/none or the internet, that cannot pass over a unix
socket, or that never reach the server are deselected in DESELECTED below, each with its reason;
the selection is the same for every server.

--compare starts each server on a fresh private store (Docker Engine and Podman's service as
bench/peers.py configures them, `lamina serve` from this checkout), preloads the images, runs the
selection, stops the server and removes its store, then prints the counts side by side and every
test whose outcome differs between servers.  Everything lives under BASE
(/var/tmp/lamina-dockerpy, LAMINA_DOCKERPY_BASE overrides).  Root; see bench/README.md.

This file is also the pytest plugin of the run (`-p dockerpy`): it deselects the list below and
writes one line per test (node id, outcome, seconds, first line of the failure).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = Path(os.environ.get("LAMINA_DOCKERPY_BASE", "/var/tmp/lamina-dockerpy"))

TESTS_VERSION = "7.0.0"
"""The docker sdist on PyPI whose tests/ we run.  Its tests/integration differs from 7.1.0's (on
GitHub) in import order and in two assertions: 7.0.0's CommitTest also checks the image's
`Container`/`ContainerConfig` (gone from API 1.45 on) and a network test expects other aliases
(deselected here)."""

TEST_IMAGES = ("alpine:3.10", "alpine:latest", "busybox:latest")
"""What the tests pull from Docker Hub: TEST_IMG (alpine:3.10), `alpine` in the model tests,
`FROM busybox` in the build tests.  One image we make is imported under all three names."""

COMPARE_API_VERSION = "1.41"
"""--compare's API version for every server, so that each test asks the same of all of them: the
newest that both peers here speak (Docker 20.10, Podman 4.3).  Newer versions change answers the
tests check (from 1.42 a volume prune keeps named volumes, failing test_prune_volumes)."""

PER_TEST_TIMEOUT = 90       # seconds, pytest-timeout (the slowest test takes 15 s on Docker)
RUN_TIMEOUT = 3600          # seconds for one whole run on one server
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")

IT = "tests/integration/"

# ------------------------------------------------------------------------------ the selection
#
# Node ids (or prefixes ending in ".py" or a class name) taken out of tests/integration, by
# group.  The same list for every server, so the counts compare.  Each entry must match a
# collected test: the plugin reports entries that match nothing (the suite changed under us).
# Kept on purpose although Docker Engine fails them here: the two stats tests (they want a
# `networks` key, which a container without a network interface lacks) and attach/stop cases that
# fail on Docker 20.10 itself; a server can pass them, so they count.
DESELECTED: dict[str, tuple[str, list[str]]] = {
    "swarm": (
        ("Swarm mode: services, nodes, secrets and configs exist only in a swarm, which neither "
         "lamina nor Podman has (and init_swarm would reconfigure the Docker Engine under test)."),
        [IT + "api_swarm_test.py", IT + "models_swarm_test.py", IT + "api_service_test.py",
         IT + "models_services_test.py", IT + "models_nodes_test.py", IT + "api_secret_test.py",
         IT + "api_config_test.py"]),
    "plugins": (
        "Managed plugins: the tests install vieux/sshfs from Docker Hub; lamina has no plugins.",
        [IT + "api_plugin_test.py"]),
    "networks": (
        ("Networks beyond host and none (user-defined networks, links, the bridge, a MAC address "
         "and published ports on it): lamina has none of them, and the private dockerd runs with "
         "--bridge=none."),
        [IT + "api_network_test.py", IT + "models_networks_test.py",
         IT + "api_build_test.py::BuildTest::test_build_with_network_mode",
         IT + "api_container_test.py::CreateContainerTest::test_create_with_links",
         IT + "api_container_test.py::LinkTest::test_remove_link",
         IT + "api_container_test.py::PortTest::test_port",
         IT + "api_container_test.py::CreateContainerTest::test_create_with_mac_address",
         IT + "regression_test.py::TestRegressions::test_792_explicit_port_protocol",
         IT + "models_containers_test.py::ContainerCollectionTest::test_run_with_network",
         IT + "models_containers_test.py::ContainerCollectionTest::test_run_with_networking_config",
         IT + "models_containers_test.py::ContainerCollectionTest::"
             "test_run_with_networking_config_with_undeclared_network",
         IT + "models_containers_test.py::ContainerCollectionTest::"
             "test_run_with_networking_config_only_undeclared_network",
         IT + "models_containers_test.py::ContainerTest::test_ports_target_list",
         IT + "models_containers_test.py::ContainerTest::test_ports_target_none",
         IT + "models_containers_test.py::ContainerTest::test_ports_target_tuple"]),
    "internet": (
        ("Pulls from Docker Hub or asks it about an image (hello-world, alpine:latest by digest, "
         "busybox's distribution data): no Docker Hub here."),
        [IT + "api_image_test.py::PullImageTest",
         IT + "api_image_test.py::ImportImageTest::test_get_load_image",
         IT + "api_image_test.py::PruneImagesTest::test_prune_images",
         IT + "api_image_test.py::InspectDistributionTest::test_inspect_distribution",
         IT + "models_images_test.py::ImageCollectionTest::test_list",
         IT + "models_images_test.py::ImageCollectionTest::test_list_with_repository",
         IT + "models_images_test.py::ImageCollectionTest::test_pull",
         IT + "models_images_test.py::ImageCollectionTest::test_pull_with_tag",
         IT + "models_images_test.py::ImageCollectionTest::test_pull_with_sha",
         IT + "models_images_test.py::ImageCollectionTest::test_pull_multiple",
         IT + "models_images_test.py::ImageTest::test_tag_and_remove",
         # expects the 404 of Docker Hub for an unknown repository (a pull, as `docker run`)
         IT + "models_containers_test.py::ContainerCollectionTest::"
             "test_run_with_image_that_does_not_exist"]),
    "websocket": (
        ("docker-py attaches through a websocket only over TCP (websocket-client refuses its "
         "http+docker:// URL), so this fails on every server reached by a unix socket."),
        [IT + "api_container_test.py::AttachContainerTest::test_run_container_reading_socket_ws"]),
    "client-only": (
        ("Tests of docker-py's client side that never reach the server: credential helpers (need "
         "docker-credential-pass and gpg, not installed) and contexts (files in ~/.docker)."),
        [IT + "credentials/", IT + "context_api_test.py"]),
}


def deselected_entries() -> list[tuple[str, str]]:
    """(entry, group) for every deselected node id or prefix."""
    return [(entry, group) for group, (_, entries) in DESELECTED.items() for entry in entries]


def is_deselected(nodeid: str, entry: str) -> bool:
    """An entry names one test exactly, or a file, folder or class whose tests it holds."""
    return nodeid == entry or nodeid.startswith(entry if entry.endswith("/") else entry + "::") \
        or (entry.endswith("/") and nodeid.startswith(entry))


# ------------------------------------------------------------------------------ pytest plugin
#
# Active only in the pytest process this harness starts (`-p dockerpy`, with bench/ on the path);
# RESULTS_ENV names the file to write.

RESULTS_ENV = "LAMINA_DOCKERPY_RESULTS"
_outcomes: dict[str, tuple[str, float, str]] = {}


def pytest_collection_modifyitems(config, items) -> None:
    entries = deselected_entries()
    keep, drop, used = [], [], set()
    for item in items:
        hit = next((e for e, _ in entries if is_deselected(item.nodeid, e)), None)
        if hit is None:
            keep.append(item)
        else:
            drop.append(item)
            used.add(hit)
    unmatched = [e for e, _ in entries if e not in used]
    if unmatched:
        print("\n[dockerpy] deselection entries that match no collected test (the suite "
              "changed?): " + ", ".join(unmatched), file=sys.stderr)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _first_line(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = crash.message
    elif isinstance(report.longrepr, tuple):     # a skip: (file, line, reason)
        text = str(report.longrepr[2])
    else:
        text = str(report.longrepr or "")
    text = " ".join(text.split())
    return text[:300]


def pytest_runtest_logreport(report) -> None:
    """One outcome per test from its setup/call/teardown reports (pytest's own rules: an xfail
    marker turns a failure into xfailed, a teardown failure after a pass is an error)."""
    old = _outcomes.get(report.nodeid)
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            _outcomes[report.nodeid] = ("error", report.duration, _first_line(report))
        elif report.skipped:
            kind = "xfailed" if wasxfail else "skipped"
            _outcomes[report.nodeid] = (kind, report.duration, _first_line(report))
    elif report.when == "call":
        if wasxfail:
            kind = "xfailed" if report.skipped else "xpassed"
        else:
            kind = "passed" if report.passed else "skipped" if report.skipped else "failed"
        message = _first_line(report) if kind != "passed" else (str(report.wasxfail) if wasxfail else "")
        _outcomes[report.nodeid] = (kind, report.duration, message)
    elif report.failed and old is not None and old[0] in ("passed", "xpassed", "skipped"):
        _outcomes[report.nodeid] = ("error", old[1], "teardown: " + _first_line(report))


def pytest_sessionfinish(session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    with open(path, "w") as out:
        for nodeid in sorted(_outcomes):
            outcome, seconds, message = _outcomes[nodeid]
            out.write(f"{nodeid}\t{outcome}\t{seconds:.2f}\t{message}\n")


# ------------------------------------------------------------------------------ helpers

def log(msg: str) -> None:
    print(f"[dockerpy] {msg}", file=sys.stderr, flush=True)


def socket_path(host: str) -> Path:
    if not host.startswith("unix://"):
        raise SystemExit(f"--host must be unix:///PATH, not {host!r}")
    return Path(host[len("unix://"):])


def api(sock: Path, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None, timeout: float = 300) -> tuple[int, bytes]:
    """One request on the server's unix socket: (status, body), with bench/api.py's client."""
    from api import request  # bench/api.py (imported here, not in the pytest plugin's process)
    return request(sock, method, path, body=body, headers=headers, timeout=timeout)


def wait_for_ping(sock: Path, timeout: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        if sock.exists():
            try:
                status, body = api(sock, "GET", "/_ping", timeout=5)
                if status == 200 and body.strip() == b"OK":
                    return True
            except OSError:
                pass
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------------------ the test suite

def ensure_deps(base: Path) -> list[str]:
    """pytest-timeout (per-test timeouts), paramiko (tests/helpers.py imports it) and
    websocket-client (docker-py's `websockets` extra: one attach test uses it) from PyPI, into a
    private folder added to the tests' PYTHONPATH, unless Python already has them."""
    missing = []
    for module, package in (("pytest_timeout", "pytest-timeout"), ("paramiko", "paramiko"),
                            ("websocket", "websocket-client")):
        try:
            __import__(module)
        except ImportError:
            missing.append((module, package))
    if not missing:
        return []
    deps = base / "deps"
    have = [m for m, _ in missing if (deps / m).exists() or (deps / f"{m}.py").exists()]
    for module, package in missing:
        if module in have:
            continue
        log(f"installing {package} into {deps} (pip, PyPI)")
        extra = ["--no-deps"] if package == "pytest-timeout" else []  # keep the system pytest
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--target", str(deps), *extra, package], check=True, timeout=600)
    return [str(deps)]


def prepare_suite(base: Path, tests: Path | None) -> Path:
    """A folder holding only tests/ and pytest.ini of docker-py: from --tests DIR, else from the
    PyPI sdist of docker TESTS_VERSION (downloaded once, kept under base/cache)."""
    if tests is not None:
        source = tests.resolve()
        if not (source / "tests" / "integration").is_dir():
            raise SystemExit(f"{source}: no tests/integration (want a docker-py source tree)")
        suite = base / "suite-custom"
    else:
        suite = base / f"suite-{TESTS_VERSION}"
        if (suite / "tests" / "integration").is_dir():
            return suite
        cache = base / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        sdist = cache / f"docker-{TESTS_VERSION}.tar.gz"
        if not sdist.exists():
            log(f"downloading the docker {TESTS_VERSION} sdist from PyPI (for its tests/)")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                            "--disable-pip-version-check", f"docker=={TESTS_VERSION}",
                            "--no-binary", ":all:", "--no-deps", "-d", str(cache)],
                           check=True, timeout=600)
        unpacked = cache / f"docker-{TESTS_VERSION}"
        if not unpacked.is_dir():
            with tarfile.open(sdist) as tar:
                tar.extractall(cache, filter="data")
        source = unpacked
    staging = Path(tempfile.mkdtemp(prefix=suite.name + ".", dir=base))
    shutil.copytree(source / "tests", staging / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if (source / "pytest.ini").exists():
        shutil.copy2(source / "pytest.ini", staging / "pytest.ini")
    if suite.exists():
        shutil.rmtree(suite)
    staging.rename(suite)
    return suite


def shared_tmp(base: Path) -> Path | None:
    """A folder for the tests' temporary files (TMPDIR) on a mount with shared propagation:
    test_create_with_binds_rw_rshared binds one with `rshared`, which Docker refuses unless its
    source is on a shared mount, as / is on a systemd host (and is not on this machine).  None
    where we cannot mount (not root): the tests then use /tmp."""
    tmp = base / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(tmp):
        if subprocess.run(["mount", "--bind", str(tmp), str(tmp)], capture_output=True,
                          timeout=30, check=False).returncode != 0:
            return None
        atexit.register(release_shared_tmp, tmp)
    subprocess.run(["mount", "--make-shared", str(tmp)], capture_output=True, timeout=30,
                   check=False)
    return tmp


def release_shared_tmp(tmp: Path) -> None:
    import peers
    peers.unmount_all(tmp)


def dockerpy_version() -> str:
    try:
        from importlib.metadata import version
        return version("docker")
    except Exception:  # noqa: BLE001  (any failure: report it as unknown)
        return "?"


# ------------------------------------------------------------------------------ the test image

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
postgres:x:70:70::/var/lib/postgresql:/bin/sh
"""
GROUP = "root:x:0:\nbin:x:1:\ndaemon:x:2:\nnobody:x:65534:\npostgres:x:70:\n"
DIRECTORIES = ("bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr",
               "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "var", "var/lib",
               "var/lib/postgresql", "var/opt", "var/tmp", "mnt", "opt")
IMAGE_CHANGES = ('CMD ["/bin/sh"]',
                 "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def test_image_tar(busybox: Path = Path("/bin/busybox")) -> bytes:
    """A root file system in the spirit of alpine's: static busybox with a link per applet, the
    users and folders the tests use (`postgres` in exec's user test, /var/opt as a workdir).
    Deterministic: the same busybox gives the same bytes, hence the same image ID everywhere."""
    if not busybox.exists():
        raise SystemExit(f"{busybox} not found: apt-get install -y busybox-static")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in DIRECTORIES:
            add(d, tarfile.DIRTYPE, 0o1777 if d.endswith("tmp") else 0o700 if d == "root" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in sorted(set(applets) - {"busybox"}):
            if "/" not in applet:
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
    return buf.getvalue()


def preload_images(sock: Path, tar: bytes, names=TEST_IMAGES) -> str:
    """Import the image (with alpine's CMD and PATH) and tag it under every name; return its ID.
    Tags by the ID that the import reports, since Podman 4.3 ignores import's `tag` (it names
    the image repo:latest).  Raises if the server refuses, or drops the CMD (tests create
    containers without a command)."""
    repo, tag = names[0].rsplit(":", 1)
    query = urllib.parse.urlencode([("fromSrc", "-"), ("repo", repo), ("tag", tag),
                                    *(("changes", c) for c in IMAGE_CHANGES)])
    status, body = api(sock, "POST", f"/images/create?{query}", body=tar,
                       headers={"Content-Type": "application/x-tar"})
    if status != 200 or b'"error' in body:
        raise RuntimeError(f"import failed: {status} {body[:300]!r}")
    image_id = ""
    for line in body.decode(errors="replace").splitlines():   # {"status": "sha256:..."}
        with contextlib.suppress(ValueError, AttributeError):
            reported = json.loads(line).get("status", "")
            if reported.startswith("sha256:"):
                image_id = reported
    image_id = image_id or names[0]
    for name in names:
        r, t = name.rsplit(":", 1)
        status, body = api(sock, "POST", f"/images/{image_id}/tag?"
                           + urllib.parse.urlencode({"repo": r, "tag": t}))
        if status not in (200, 201):
            raise RuntimeError(f"tag {image_id} as {name} failed: {status} {body[:300]!r}")
    status, body = api(sock, "GET", f"/images/{names[0]}/json")
    if status != 200:
        raise RuntimeError(f"inspect {names[0]} failed: {status} {body[:300]!r}")
    info = json.loads(body)
    if (info.get("Config") or {}).get("Cmd") != ["/bin/sh"]:
        raise RuntimeError(f"{names[0]} was imported without CMD [\"/bin/sh\"] (import's "
                           f"`changes` ignored?): Config {info.get('Config')}")
    return info["Id"]


def server_api_version(sock: Path) -> tuple[str, str]:
    """(ApiVersion, Version) from GET /version."""
    status, body = api(sock, "GET", "/version", timeout=30)
    if status != 200:
        raise RuntimeError(f"GET /version: {status} {body[:200]!r}")
    info = json.loads(body)
    return info.get("ApiVersion", "?"), info.get("Version", "?")


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


# ------------------------------------------------------------------------------ one run

@dataclass
class Run:
    name: str
    host: str
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)   # nodeid -> (kind, msg)
    api_version: str = "?"
    server_version: str = "?"
    seconds: float = 0.0
    note: str = ""

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.outcomes.values() if k == kind)


def run_suite(name: str, host: str, suite: Path, pythonpath: list[str], results: Path,
              junit: Path | None, api_version: str | None, pytest_args: list[str],
              per_test_timeout: int = PER_TEST_TIMEOUT, tmpdir: Path | None = None) -> Run:
    """Preload the images into the server at host, then run the selection on it."""
    run = Run(name, host)
    sock = socket_path(host)
    if not wait_for_ping(sock, 10):
        run.note = f"no answer to GET /_ping on {sock}"
        return run
    run.api_version, run.server_version = server_api_version(sock)
    log(f"{name}: server {run.server_version}, API {run.api_version}; importing "
        + ", ".join(TEST_IMAGES))
    try:
        preload_images(sock, test_image_tar())
    except (RuntimeError, OSError) as e:
        run.note = f"could not load the test image: {e}"
        log(f"{name}: {run.note}")
        return run
    import docker.constants
    # at most the server's version, and docker-py's default unless one is asked for
    api_version = min(run.api_version, api_version or docker.constants.DEFAULT_DOCKER_API_VERSION,
                      key=version_key)
    home = Path(tempfile.mkdtemp(prefix=f"home-{name}.", dir=results.parent))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKER_", "PYTEST_")) and k != "PYTHONPATH"}
    env.update({
        "DOCKER_HOST": host,
        "DOCKER_TEST_API_VERSION": api_version,   # the tests' client and their skip markers
        "HOME": str(home),                        # ~/.docker of the tests is a private one
        "PYTHONPATH": os.pathsep.join([str(HERE), *pythonpath]),
        "PYTHONDONTWRITEBYTECODE": "1",
        RESULTS_ENV: str(results),
    })
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    cmd = [sys.executable, "-m", "pytest", "tests/integration", "-p", "dockerpy",
           "-p", "no:cacheprovider", "-q", "-rN", f"--timeout={per_test_timeout}",
           *(["--junitxml", str(junit)] if junit else []), *pytest_args]
    log(f"{name}: {' '.join(cmd[2:])}  (DOCKER_HOST={host}, API {api_version})")
    results.unlink(missing_ok=True)
    started = time.monotonic()
    stdout_path = results.with_suffix(".log")
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            run.note = f"whole run killed after {RUN_TIMEOUT} s"
    run.seconds = time.monotonic() - started
    shutil.rmtree(home, ignore_errors=True)
    if not results.exists():
        run.note = run.note or f"pytest wrote no results (exit {proc.returncode}); see {stdout_path}"
        log(f"{name}: {run.note}")
        return run
    for line in results.read_text().splitlines():
        nodeid, kind, _, message = (line.split("\t", 3) + [""])[:4]
        run.outcomes[nodeid] = (kind, message)
    run.api_version = api_version if api_version == run.api_version else \
        f"{api_version} (server {run.api_version})"
    log(f"{name}: {summary(run)}; per test: {results}, pytest output: {stdout_path}")
    return run


def summary(run: Run) -> str:
    parts = [f"{run.count(k)} {k}" for k in OUTCOMES if k in ("passed", "failed", "error", "skipped")
             or run.count(k)]
    return f"{', '.join(parts)} of {len(run.outcomes)} selected ({run.seconds:.0f} s)"


# ------------------------------------------------------------------------------ servers

class Server:
    """A server on a fresh private store, started and stopped by the harness."""

    name = ""
    proc: subprocess.Popen | None = None

    def start(self) -> str:           # the DOCKER_HOST of the running server
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def spawn(self, cmd: list[str], sock: Path, logfile: Path, env: dict | None = None) -> str:
        """Start cmd in its own session, output to logfile; its DOCKER_HOST once it answers
        GET /_ping (RuntimeError, and the process ended, if it does not within 60 s)."""
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        if not wait_for_ping(sock, 60, lambda: proc.poll() is None):
            self.end_process()
            raise RuntimeError(f"{self.name}'s server did not answer GET /_ping; see {logfile}")
        return f"unix://{sock}"

    def end_process(self) -> None:
        import peers
        if self.proc is not None:
            peers.stop_pid(self.proc.pid, timeout=30, name=f"{self.name}'s server")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None


class DockerServer(Server):
    """Docker Engine: bench/peers.py's private dockerd (overlay2, no iptables, no bridge)."""

    name = "docker"

    def __init__(self, base: Path):
        import peers
        self.engine = peers.Docker(base)

    def start(self) -> str:
        self.engine.start()
        return self.engine.env["DOCKER_HOST"]

    def stop(self) -> None:
        self.engine.cleanup()


class PodmanServer(Server):
    """`podman system service --time=0` on bench/peers.py's private Podman store and config."""

    name = "podman"

    def __init__(self, base: Path):
        import peers
        self.engine = peers.Podman(base)
        self.sock = self.engine.dir / "api" / "podman.sock"

    def start(self) -> str:
        self.engine.start()
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        return self.spawn(self.engine.cli("system", "service", "--time=0", f"unix://{self.sock}"),
                          self.sock, self.engine.dir / "service.log", self.engine.env)

    def stop(self) -> None:
        import peers
        self.end_process()
        self.engine.stop()
        # exec sessions leave a conmon behind for minutes (--exit-delay 300) after `rm -fa`
        end_processes(processes_mentioning(self.engine.dir))
        peers.remove_tree(self.engine.dir)


def processes_mentioning(path: Path) -> list[int]:
    """PIDs whose command line names path or a file under it (a private store: only ours)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def end_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM the given PIDs, SIGKILL whichever is left after grace seconds (conmon waiting on
    an exec's exit delay ignores SIGTERM)."""
    import peers
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(peers.pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if peers.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class LaminaServer(Server):
    """`lamina --root ROOT serve --socket unix:///SOCK` of this checkout, on a fresh root."""

    name = "lamina"

    def __init__(self, base: Path, exe: list[str]):
        self.dir = base / "lamina"
        self.root = self.dir / "root"
        self.sock = self.dir / "lamina.sock"
        self.exe = exe

    def cli(self, *args: str) -> list[str]:
        return [*self.exe, "--root", str(self.root), *args]

    def start(self) -> str:
        self.stop()
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.spawn(self.cli("serve", "--socket", f"unix://{self.sock}"), self.sock,
                          self.dir / "serve.log")

    def stop(self) -> None:
        import peers
        self.end_process()
        if self.root.exists():   # containers' monitors outlive the server: remove them by the CLI
            ids = subprocess.run(self.cli("ps", "-aq", "--no-trunc"), capture_output=True,
                                 text=True, timeout=60, check=False).stdout.split()
            if ids:
                subprocess.run(self.cli("rm", "-f", *ids), capture_output=True, timeout=300,
                               check=False)
        end_processes(processes_mentioning(self.root))    # a monitor that rm did not end
        peers.remove_tree(self.dir)


# ------------------------------------------------------------------------------ reports

def print_table(runs: list[Run]) -> None:
    rows = [("", *(r.name for r in runs)),
            ("server", *(r.server_version for r in runs)),
            ("API used", *(r.api_version for r in runs))]
    for kind in OUTCOMES:
        if kind in ("passed", "failed", "error", "skipped") or any(r.count(kind) for r in runs):
            rows.append((kind, *(str(r.count(kind)) if r.outcomes else "-" for r in runs)))
    rows.append(("selected", *(str(len(r.outcomes)) if r.outcomes else "-" for r in runs)))
    rows.append(("seconds", *(f"{r.seconds:.0f}" for r in runs)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    for r in runs:
        if r.note:
            print(f"note: {r.name}: {r.note}")


def print_differences(runs: list[Run]) -> None:
    measured = [r for r in runs if r.outcomes]
    if len(measured) < 2:
        return
    ids = sorted(set().union(*(r.outcomes for r in measured)))
    differ = [i for i in ids if len({r.outcomes.get(i, ("-", ""))[0] for r in measured}) > 1]
    print(f"\n{len(differ)} tests whose outcome differs "
          f"({' / '.join(r.name for r in measured)}):")
    for nodeid in differ:
        kinds = " / ".join(r.outcomes.get(nodeid, ("-", ""))[0] for r in measured)
        print(f"  {nodeid[len(IT):] if nodeid.startswith(IT) else nodeid}: {kinds}")


def print_failures(run: Run) -> None:
    bad = [(i, k, m) for i, (k, m) in sorted(run.outcomes.items()) if k in ("failed", "error")]
    if bad:
        print(f"\n{run.name}: {len(bad)} failed or errors:")
        for nodeid, kind, message in bad:
            print(f"  {kind:6} {nodeid[len(IT):]}: {message[:160]}")


# ------------------------------------------------------------------------------ main

_lock_fd: int | None = None


def lock(base: Path) -> None:
    """One --compare at a time: it removes the stores of the servers it starts under base."""
    global _lock_fd
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"another bench/dockerpy.py --compare holds {base}/.lock") from None
    _lock_fd = fd


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run docker-py's integration tests against a Docker Engine API server.",
        epilog="Arguments after -- go to pytest (e.g. -- -k exec, or a test node id).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="a running server: unix:///PATH")
    where.add_argument("--compare", action="store_true",
                       help="start Docker Engine, Podman's service and lamina serve in turn")
    p.add_argument("--servers", default="docker,podman,lamina",
                   help="with --compare: which of docker,podman,lamina (default: all three)")
    p.add_argument("--tests", type=Path,
                   help=f"a docker-py source tree to take tests/ from (default: the docker "
                        f"{TESTS_VERSION} sdist from PyPI)")
    p.add_argument("--junit", type=Path, help="also write pytest's JUnit XML here (--host); with "
                   "--compare, FILE gets the server's name inserted before its suffix")
    p.add_argument("--results", type=Path,
                   help="per-test result file (--host; default BASE/results/host.tsv)")
    p.add_argument("--api-version", help="the API version the tests use, at most the server's "
                   f"(default: --host the server's, at most docker-py's default; --compare "
                   f"{COMPARE_API_VERSION})")
    p.add_argument("--timeout", type=int, default=PER_TEST_TIMEOUT,
                   help=f"seconds per test (default {PER_TEST_TIMEOUT})")
    p.add_argument("--lamina", default=f"{sys.executable} -S {REPO / 'bin' / 'lamina'}",
                   help="the lamina command for --compare (default: this checkout's bin/lamina)")
    p.add_argument("--show-selection", action="store_true",
                   help="print the deselected groups with their reasons and exit")
    if "--" in argv:
        i = argv.index("--")
        args = p.parse_args(argv[:i])
        args.pytest_args = argv[i + 1:]
    else:
        args = p.parse_args(argv)
        args.pytest_args = []
    return args


def show_selection() -> None:
    for group, (reason, entries) in DESELECTED.items():
        print(f"{group}: {reason}")
        for entry in entries:
            print(f"    {entry}")


def with_name(path: Path | None, name: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-{name}{path.suffix}")


def main(argv: list[str]) -> int:
    if "--show-selection" in argv:
        show_selection()
        return 0
    args = parse_args(argv)
    if args.junit is not None:      # pytest runs in the suite folder
        args.junit = args.junit.resolve()
    sys.path.insert(0, str(HERE))
    if dockerpy_version() != "7.1.0":
        log(f"note: the installed docker-py is {dockerpy_version()}, the tests are "
            f"{'from ' + str(args.tests) if args.tests else TESTS_VERSION}'s")
    BASE.mkdir(parents=True, exist_ok=True)
    pythonpath = ensure_deps(BASE)
    suite = prepare_suite(BASE, args.tests)
    tmpdir = shared_tmp(BASE)
    results_dir = BASE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)

    if args.host:
        results = (args.results or results_dir / "host.tsv").resolve()
        results.parent.mkdir(parents=True, exist_ok=True)
        run = run_suite("host", args.host, suite, pythonpath, results, args.junit,
                        args.api_version, args.pytest_args, args.timeout, tmpdir)
        if not run.outcomes:
            print(f"no results: {run.note}")
            return 1
        print(f"docker-py integration tests ({TESTS_VERSION if not args.tests else args.tests}) "
              f"against {args.host}: server {run.server_version}, API {run.api_version}")
        print(f"passed {run.count('passed')}  failed {run.count('failed')}  errors "
              f"{run.count('error')}  skipped {run.count('skipped')}  xfailed "
              f"{run.count('xfailed')}  xpassed {run.count('xpassed')}  of "
              f"{len(run.outcomes)} selected  ({run.seconds:.0f} s)")
        print_failures(run)
        print(f"\nper test: {results}")
        return 0 if run.count("failed") + run.count("error") == 0 else 1

    lock(BASE)
    # SIGTERM unwinds like an exception, so the finally below stops the server and removes its store
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = set(names) - {"docker", "podman", "lamina"}
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}")
    runs: list[Run] = []
    for name in names:
        server: Server
        if name == "docker":
            server = DockerServer(BASE)
        elif name == "podman":
            server = PodmanServer(BASE)
        else:
            server = LaminaServer(BASE, args.lamina.split())
        atexit.register(server.stop)
        try:
            log(f"{name}: starting on a fresh store under {BASE}")
            try:
                host = server.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log(f"{name}: {e}")
                runs.append(Run(name, "", note=f"did not start: {e}"))
                continue
            runs.append(run_suite(name, host, suite, pythonpath, results_dir / f"{name}.tsv",
                                  with_name(args.junit, name),
                                  args.api_version or COMPARE_API_VERSION,
                                  args.pytest_args, args.timeout, tmpdir))
        finally:
            log(f"{name}: stopping and removing its store")
            server.stop()
            atexit.unregister(server.stop)
    print(f"\ndocker-py {dockerpy_version()}, integration tests of "
          f"{args.tests or 'docker ' + TESTS_VERSION}; {len(DESELECTED)} groups deselected "
          f"({', '.join(DESELECTED)}): see --show-selection\n")
    print_table(runs)
    print_differences(runs)
    for run in runs:
        print_failures(run)
    print(f"\nper test: {results_dir}/NAME.tsv (and NAME.log, pytest's output)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
    sys.exit(130)
