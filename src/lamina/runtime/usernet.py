"""A rootless container's network: ``none`` and ``host`` as root's, and every other network (the
default ``bridge``) a user-mode network made by Debian's ``pasta`` (passt).

The container gets a network namespace of the store's user namespace (``<store>/netns/<id>``),
whose ``eth0`` pasta connects to the host's stack; ``-p HOST:CONTAINER`` are pasta's port
forwards (it listens on the host's port, as the user, and connects inside). pasta rather than
slirp4netns: it configures the namespace's address, route and DNS itself and takes the ports
on its command line (slirp4netns needs ``--configure`` plus one API socket request per port),
it leaves by itself when the namespace file is removed, and it was ready sooner here
(bench/rootless.py measures both).
"""

from __future__ import annotations

import os
import time

from ..endpoints import Sandbox
from ..errors import FailedPrecondition, Unavailable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..store import Store



def user_mode_network(store: Store, container_id: str, network: str, ports) -> Sandbox:
    """A rootless container's network namespace (``<store>/netns/<id>``), connected and its
    ``ports`` ((host IP, host port, container port, protocol) rows) forwarded by pasta."""
    import shutil
    import subprocess

    from ..cni import create_netns, netns_dir, remove_netns
    from ..networks import DEFAULT

    if network not in (DEFAULT, "pasta"):
        raise FailedPrecondition(
            f"network {network!r}: a rootless container has the networks none, host and the "
            "default user-mode one (pasta); user-defined bridges need root")
    pasta = shutil.which("pasta")
    if pasta is None:
        raise Unavailable("rootless networking needs pasta (apt-get install -y passt), or "
                          "use --network none or host")
    path = os.path.join(netns_dir(store.root), container_id)
    remove_netns(path)  # one an owner that died left
    create_netns(path)
    pid_file = path + ".pasta"
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    # In the foreground, as the owner's child: the owner reaps it when the namespace goes (this
    # machine's PID 1, like a container's, reaps no orphans: a daemonized pasta would stay a
    # zombie). It writes its pid file once the namespace is configured.
    argv = [pasta, "--foreground", "--config-net", "--quiet", "--netns", path, "--pid", pid_file,
            "-u", "none", "-T", "none", "-U", "none", "-t", "none"]
    tcp = [p for p in ports if p[3] == "tcp"]
    udp = [p for p in ports if p[3] == "udp"]
    for flag, rows in (("-t", tcp), ("-u", udp)):
        if rows:
            index = argv.index(flag)
            argv[index + 1] = ",".join(
                (f"{ip}/" if ip else "") + f"{host}:{inside}" for ip, host, inside, _ in rows)
    helper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    delay = 0.0005
    while helper.poll() is None and not (os.path.exists(pid_file) and os.path.getsize(pid_file)):
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    if helper.returncode is not None:
        remove_netns(path)
        lines = [line for line in helper.stderr.read().splitlines() if "syslog" not in line]
        raise Unavailable(f"pasta: {lines[-1] if lines else helper.returncode}")
    return UserModeSandbox(path, helper, pid_file)


class UserModeSandbox(Sandbox):
    """A rootless container's network namespace and the pasta that serves it."""

    def __init__(self, netns: str, helper, pid_file: str):
        super().__init__(netns)
        self.helper, self.pid_file = helper, pid_file

    def close(self) -> None:
        """After the namespace file is removed: pasta leaves by itself; reap it (kill it if it
        lingers)."""
        import subprocess

        super().close()
        try:
            self.helper.wait(2)
        except subprocess.TimeoutExpired:
            self.helper.kill()
            self.helper.wait()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
