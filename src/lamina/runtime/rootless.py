"""Rootless containers: what changes in a container's OCI spec when lamina runs as an ordinary
user, inside its store's user namespace (:mod:`lamina.userns`).

runc runs there as the namespace's root, in its rootless mode; the container shares the store's
user namespace (so a file of uid 1000 in the image is uid 1000 inside and the mapped subordinate
id on disk, as with Podman), and gets its own mount, PID, IPC and UTS namespaces as root's do.

Networks: ``none`` and ``host`` as root's; every other network (the default ``bridge``) is a
user-mode network made by Debian's ``pasta`` (passt): a network namespace of the store's user
namespace, whose ``eth0`` pasta connects to the host's stack, with ``-p HOST:CONTAINER`` as
pasta's port forwards (it listens on the host's port, as the user). pasta rather than
slirp4netns: one command that returns once the namespace is configured and leaves by itself
when the namespace file is removed (slirp4netns needs a ready pipe, an API socket for each port
and a kill), and it starts faster (bench/rootless.py measures both).
"""

import os

from ..errors import FailedPrecondition, Unavailable
from ..userns import rootless
from . import cgroups

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..endpoints import Sandbox
    from ..store import Store


def fit_spec(spec: dict) -> None:
    """Fit an OCI spec to a rootless container (lamina in its user namespace): runc in
    rootless mode gives up on a cgroup it cannot make, so with no delegated cgroup the spec asks
    for none (as Podman's rootless containers on cgroup v1), and a limit that needs one is a
    clear error rather than a limit silently not applied."""
    linux = spec["linux"]
    if not rootless():
        return
    if not any(ns["type"] == "network" for ns in linux["namespaces"]):
        # the host's network namespace is not the user namespace's: sysfs cannot be mounted
        # there, so the host's /sys is bound read-only (as Podman does)
        for mount in spec["mounts"]:
            if mount["destination"] == "/sys":
                mount.update(type="bind", source="/sys",
                             options=["rbind", "nosuid", "noexec", "nodev", "ro"])
    if not mapped_gid(5):  # a single-id mapping: devpts cannot give its ttys the tty group
        for mount in spec["mounts"]:
            if mount["type"] == "devpts":
                mount["options"] = [o for o in mount.get("options", ()) if o != "gid=5"]
    if cgroups.delegated(linux.get("cgroupsPath") or "/"):
        return
    limits = sorted(k for k in linux.get("resources", {}) if k != "devices")
    if limits:
        raise Unavailable(
            f"cannot apply the {', '.join(limits)} limit(s): a rootless container gets cgroup "
            "limits only where the host delegates a cgroup v2 subtree to the user (a systemd "
            "user slice), and this host does not")
    linux["cgroupsPath"] = ""
    linux.pop("resources", None)


def mapped_gid(gid: int) -> bool:
    """Whether ``gid`` is mapped into this process's user namespace."""
    with open("/proc/self/gid_map") as f:
        for line in f:
            inside, _, count = (int(n) for n in line.split())
            if inside <= gid < inside + count:
                return True
    return False


def user_mode_network(store: "Store", container_id: str, network: str, ports) -> "Sandbox":
    """A rootless container's network namespace (``<store>/netns/<id>``), connected and its
    ``ports`` ((host IP, host port, container port, protocol) rows) forwarded by pasta."""
    import shutil
    import subprocess

    from ..cni import create_netns, netns_dir, remove_netns
    from ..endpoints import Sandbox
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
    argv = [pasta, "--config-net", "--quiet", "--netns", path, "-u", "none", "-T", "none",
            "-U", "none", "-t", "none"]
    tcp = [p for p in ports if p[3] == "tcp"]
    udp = [p for p in ports if p[3] == "udp"]
    for flag, rows in (("-t", tcp), ("-u", udp)):
        if rows:
            index = argv.index(flag)
            argv[index + 1] = ",".join(
                (f"{ip}/" if ip else "") + f"{host}:{inside}" for ip, host, inside, _ in rows)
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        remove_netns(path)
        lines = [line for line in done.stderr.splitlines() if "syslog" not in line]
        raise Unavailable(f"pasta: {lines[-1] if lines else done.returncode}")
    return Sandbox(path)
