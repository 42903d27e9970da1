"""A rootless container's network: ``none`` and ``host`` as root's, and every other network (the
default ``bridge``) a user-mode network made by Debian's ``slirp4netns``.

The container gets a network namespace of the store's user namespace (``<store>/netns/<id>``);
slirp4netns gives it ``tap0`` (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) and carries its
traffic through the host's sockets. ``-p HOST:CONTAINER`` are slirp4netns port forwards, added
through its API socket (``add_hostfwd``): it listens on the host's port, as the user. Its
resolv.conf names slirp4netns' DNS forwarder (10.0.2.3) first, as Podman's: the host's resolver
is often on the host's loopback (systemd-resolved's 127.0.0.53, a dnsmasq's 127.0.0.1), which the
container cannot reach and slirp4netns, on the host's side, can.

slirp4netns rather than pasta (both were tried, both work here): set-up is what every ``run``
pays, and slirp4netns is ready about 10 ms after it starts against 60-100 ms for pasta, whose own
start (opening and sizing its sockets, sandboxing itself) dominates (bench/rootless.py measures
both, side by side). pasta carries bulk traffic faster; a container that needs that can use
``--network host``.

slirp4netns runs as a child of the container's owner, which reaps it: it leaves when the owner
closes its exit pipe (this machine's PID 1, like a container's, reaps no orphans, so a helper
left to it would stay a zombie).
"""

from __future__ import annotations

import os

from ..endpoints import Sandbox
from ..errors import FailedPrecondition, Unavailable
from ..networks import record_user_mode_ports

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..store import Store

GUEST_ADDRESS = "10.0.2.100"
DNS_ADDRESS = "10.0.2.3"  # slirp4netns answers DNS here from the host's resolver


def check_network(network: str) -> None:
    """A rootless container's ``--network`` other than none and host must be the default one."""
    from ..networks import DEFAULT

    if network not in (DEFAULT, "slirp4netns"):
        raise FailedPrecondition(
            f"network {network!r}: a rootless container has the networks none, host and the "
            "default user-mode one (slirp4netns); user-defined bridges need root")


def user_mode_network(store: Store, container_id: str, network: str, ports) -> Sandbox:
    """A rootless container's network namespace, connected, with its ``ports`` ((host IP, host
    port, container port, protocol) rows) forwarded. Nothing is left if a step fails."""
    import shutil
    import subprocess

    from ..cni import create_netns, netns_dir, remove_netns

    check_network(network)
    slirp = shutil.which("slirp4netns")
    if slirp is None:
        raise Unavailable("rootless networking needs slirp4netns (apt-get install -y "
                          "slirp4netns), or use --network none or host")
    path = os.path.join(netns_dir(store.root), container_id)
    remove_netns(path)  # one an owner that died left
    create_netns(path)
    from ..userns import runtime_dir

    # the API socket's path must fit a socket address (108 bytes): not beside the namespace file
    api = os.path.join(runtime_dir(), f"slirp-{container_id[:16]}.sock")
    try:
        os.unlink(api)
    except FileNotFoundError:
        pass
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    os.set_inheritable(exit_w, False)
    try:
        helper = subprocess.Popen(
            [slirp, "--configure", "--mtu=65520", "--disable-host-loopback",
             "--netns-type=path", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
             f"--api-socket={api}", path, "tap0"],
            pass_fds=(ready_w, exit_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
    except BaseException:
        for fd in (ready_r, ready_w, exit_r, exit_w):
            os.close(fd)
        remove_netns(path)
        raise
    os.close(ready_w)
    os.close(exit_r)
    with open(api + ".pid", "w") as f:  # for stop_helper, when the sandbox object is gone
        f.write(str(helper.pid))
    sandbox = UserModeSandbox(path, helper, exit_w, api)
    try:
        if os.read(ready_r, 1) != b"1":
            helper.wait()
            lines = helper.stderr.read().strip().splitlines()
            raise Unavailable(f"slirp4netns: {lines[-1] if lines else helper.returncode}")
        records = []
        for host_ip, host_port, inside, proto in ports:
            host_port = host_port or free_port(host_ip, proto)
            sandbox.forward(host_ip, host_port, inside, proto)
            records.append({"HostIp": host_ip or "0.0.0.0", "HostPort": str(host_port),
                            "ContainerPort": inside, "Protocol": proto})
        # what ps, port and inspect show while it runs (network.leave forgets it)
        record_user_mode_ports(store, container_id, records)
    except BaseException:
        remove_netns(path)
        sandbox.close()
        raise
    finally:
        os.close(ready_r)
    return sandbox


def free_port(host_ip: str, proto: str) -> int:
    """A host port free now, for ``-p CONTAINER`` (and ``-P``): slirp4netns binds the port
    it is given and does not say which one 0 gave it, so the port is chosen here, as Podman
    does for its rootless port forwarders."""
    import socket

    with socket.socket(socket.AF_INET,
                       socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as s:
        s.bind((host_ip or "0.0.0.0", 0))
        return s.getsockname()[1]


class UserModeSandbox(Sandbox):
    """A rootless container's network namespace and the slirp4netns that serves it."""

    address = GUEST_ADDRESS  # its hosts file names it under the hostname, as Podman's
    # slirp4netns' DNS forwarder, first in its resolv.conf, as Podman's (oci.resolv_conf_via)
    nameserver = DNS_ADDRESS

    def __init__(self, netns: str, helper, exit_fd: int, api: str):
        super().__init__(netns)
        self.helper, self.exit_fd, self.api = helper, exit_fd, api

    def kept_fds(self) -> list[int]:
        """The exit pipe too: slirp4netns leaves when it closes, so the relay keeps it."""
        return [*super().kept_fds(), *([self.exit_fd] if self.exit_fd >= 0 else [])]

    def forward(self, host_ip: str, host_port: int, inside: int, proto: str) -> None:
        """``-p host_ip:host_port:inside/proto``, through slirp4netns' API socket."""
        import json
        import socket

        request = {"execute": "add_hostfwd", "arguments": {
            "proto": proto, "host_addr": host_ip or "0.0.0.0", "host_port": int(host_port),
            "guest_addr": GUEST_ADDRESS, "guest_port": int(inside)}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.api)
            s.sendall(json.dumps(request).encode())
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        error = json.loads(answer or b"{}").get("error")
        if error or not answer:
            from ..endpoints import PortTaken

            where = f"{host_ip or '0.0.0.0'}:{host_port}"
            raise PortTaken(f"cannot publish {where}/{proto}: "
                            f"{(error or {}).get('desc', 'no answer from slirp4netns')}")

    def close(self) -> None:
        """Close the exit pipe (slirp4netns leaves) and reap it."""
        import subprocess

        super().close()
        if self.exit_fd >= 0:
            os.close(self.exit_fd)
            self.exit_fd = -1
        try:
            self.helper.wait(2)
        except subprocess.TimeoutExpired:
            self.helper.kill()
            self.helper.wait()
        self.helper.stderr.close()
        _forget(self.api)


def stop_helper(container_id: str) -> None:
    """Stop the slirp4netns of ``container_id`` whose sandbox object is gone (the owner became
    the relay and then the exit's Python side, which inherited only the exit pipe's other end,
    under a number it does not know): by its pid file, before a restart makes another."""
    import signal

    from ..userns import runtime_dir

    api = os.path.join(runtime_dir(), f"slirp-{container_id[:16]}.sock")
    try:
        with open(api + ".pid") as f:
            pid = int(f.read())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)  # our child: the owner keeps its PID through the execs
    except (ProcessLookupError, ChildProcessError):
        pass
    _forget(api)


def _forget(api: str) -> None:
    """Remove a slirp4netns' API socket and its pid file."""
    for name in (api, api + ".pid"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
