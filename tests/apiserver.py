"""A real ``lamina serve`` for tests: a subprocess on a private unix socket over a test store,
with the docker CLI and docker-py pointed at it."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMINA = [sys.executable, "-S", os.path.join(REPO, "bin", "lamina")]
DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"


def ping(path: str) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"OK")
    except OSError:
        return False
    finally:
        s.close()


class Server:
    """``lamina --root ROOT serve --socket unix://SOCKET``, started and stopped by the test."""

    def __init__(self, root: str, socket_path: str, *extra: str):
        self.root = root
        self.socket = socket_path
        self.url = "unix://" + socket_path
        self.extra = extra
        self.proc = None
        self.log = os.path.join(os.path.dirname(socket_path), "serve.log")

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(LAMINA + ["--root", self.root, "serve", "--socket",
                                                   self.url, *self.extra],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 15
        while not ping(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"lamina serve did not start: {self.log_text()}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        """What the server wrote to its stderr so far."""
        with open(self.log, errors="replace") as f:
            return f.read()

    def env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": self.url, "DOCKER_BUILDKIT": "0",
                "DOCKER_CONFIG": os.path.join(os.path.dirname(self.socket), "docker-config")}

    def docker(self, *args, input=None, check=True, timeout=120):
        """The docker CLI against this server; the CompletedProcess (text)."""
        proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                              env=self.env(), timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr}\nserver log: {self.log_text()[-3000:]}")
        return proc

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.url, version="auto", timeout=120)

    def lamina(self, *args, check=True):
        proc = subprocess.run(LAMINA + ["--root", self.root, *args], capture_output=True,
                              text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"lamina {' '.join(args)} failed: {proc.stderr}")
        return proc


@contextlib.contextmanager
def beside_docker(prefix: str):
    """A private Docker Engine (bench/peers.py's dockerd) and a ``lamina serve`` on a fresh
    store, under one new /var/tmp directory: yields (dockerd, server); both are stopped and
    everything removed afterwards, containers of the store included."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import peers

    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    dockerd = peers.Docker(base)
    server = None
    try:
        dockerd.start()
        server = Server(str(base / "lamina-store"), str(base / "api.sock")).start()
        yield dockerd, server
    finally:
        if server is not None:
            from tests.conftest import remove_bridges

            server.stop()
            for cid in server.lamina("ps", "-aq", check=False).stdout.split():
                server.lamina("rm", "-f", cid, check=False)
            remove_bridges(str(base / "lamina-store"))
        dockerd.cleanup()
        peers.remove_tree(base)


@contextlib.contextmanager
def docker_clis(prefix: str, busybox_tar: str):
    """:func:`beside_docker` with ``busybox:latest`` imported into both engines: yields
    (docker, lamina), each a function running the docker CLI against one engine
    (``docker(*args, input=None)`` -> CompletedProcess, text)."""
    with beside_docker(prefix) as (dockerd, server):
        server.lamina("import", busybox_tar, "busybox:latest")
        with open(busybox_tar, "rb") as f:
            subprocess.run([DOCKER, "import", "-", "busybox:latest"], stdin=f, env=dockerd.env,
                           check=True, capture_output=True)

        def runner(env):
            def docker(*args, input=None):
                return subprocess.run([DOCKER, *args], env=env, input=input, text=True,
                                      capture_output=True, timeout=120, check=False)
            docker.socket = env["DOCKER_HOST"][len("unix://"):]  # for raw requests
            return docker

        docker, lamina = runner(dockerd.env), runner(server.env())
        lamina.server = server  # for lamina's own CLI on the served store
        yield docker, lamina
