"""Rootless containers: what changes in a container's OCI spec when lamina runs as an ordinary
user, inside its store's user namespace (:mod:`lamina.userns`).

runc runs there as the namespace's root, in its rootless mode; the container shares the store's
user namespace (so a file of uid 1000 in the image is uid 1000 inside and the mapped subordinate
id on disk, as with Podman), and gets its own mount, PID, IPC and UTS namespaces as root's do.
Its network: :mod:`lamina.runtime.usernet`.
"""

from ..errors import Unavailable
from ..userns import rootless
from . import cgroups


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
    check_limits(linux.get("resources", {}), linux.get("cgroupsPath") or "/")
    linux["cgroupsPath"] = ""
    linux.pop("resources", None)


def check_limits(resources: dict, cgroups_path: str = cgroups.container_path("")) -> None:
    """Refuse, in one line, the limits (the spec's ``linux.resources``) a rootless container
    cannot have where the host delegates it no cgroup (``cgroups_path``: the container's
    cgroup; only where its parent lies matters): at create, before anything is made (as Podman
    refuses them), and again when its spec is written."""
    limits = sorted(k for k in resources if k != "devices")
    if limits and rootless() and not cgroups.delegated(cgroups_path):
        raise Unavailable(
            f"cannot apply the {', '.join(limits)} limit(s): a rootless container gets cgroup "
            "limits only where the host delegates a cgroup v2 subtree to the user (a systemd "
            "user slice), and this host does not")


def mapped_gid(gid: int) -> bool:
    """Whether ``gid`` is mapped into this process's user namespace."""
    with open("/proc/self/gid_map") as f:
        for line in f:
            inside, _, count = (int(n) for n in line.split())
            if inside <= gid < inside + count:
                return True
    return False

