"""Rootless containers: what changes in a container's OCI spec when lamina runs as an ordinary
user, inside its store's user namespace (:mod:`lamina.userns`).

runc runs there as the namespace's root, in its rootless mode; the container shares the store's
user namespace (so a file of uid 1000 in the image is uid 1000 inside and the mapped subordinate
id on disk, as with Podman), and gets its own mount, PID, IPC and UTS namespaces as root's do.
Its network: :mod:`lamina.runtime.usernet`.
"""

from ..errors import Unavailable
from ..userns import rootless
from . import cgroups, security


def fit_spec(spec: dict) -> None:
    """Fit an OCI spec to a rootless container (lamina in its user namespace). Its cgroup is
    runc's rootless default (no ``cgroupsPath``: the container's ID under the caller's cgroup,
    made where the host delegates it to the user, given up where not); a limit whose controller
    is not delegated is a clear error rather than a limit silently not applied."""
    linux = spec["linux"]
    if not rootless():
        return
    if not any(ns["type"] == "network" for ns in linux["namespaces"]):
        # the host's network namespace is not the user namespace's: sysfs cannot be mounted
        # there, so the host's /sys is bound (as Podman does), with the mounts under it
        # (/sys/fs/fuse/connections, /sys/kernel/security, ...): read-only, all of them
        # ("rro": runc's recursive read-only, by mount_setattr(2) of Linux 5.12; "ro" would
        # leave those under the top writable)
        read_only = "rro" if security.kernel_version() >= (5, 12) else "ro"
        for mount in spec["mounts"]:
            if mount["destination"] == "/sys":
                access = read_only if "ro" in mount["options"] else "rw"  # rw: --privileged
                mount.update(type="bind", source="/sys",
                             options=["rbind", "nosuid", "noexec", "nodev", access])
    if any(m["type"] == "cgroup" and "ro" in m["options"] for m in spec["mounts"]):
        # runc mounts a cgroup v1 /sys/fs/cgroup as a tmpfs that it leaves writable, under the
        # read-only hierarchies: made read-only too (rootless Podman's on the host's network,
        # the host's root-owned tmpfs, cannot be written either)
        linux["readonlyPaths"] = [*linux.get("readonlyPaths", ()), "/sys/fs/cgroup"]
    if not mapped_gid(5):  # a single-id mapping: devpts cannot give its ttys the tty group
        for mount in spec["mounts"]:
            if mount["type"] == "devpts":
                mount["options"] = [o for o in mount.get("options", ()) if o != "gid=5"]
    check_limits(linux.get("resources", {}))
    linux["cgroupsPath"] = ""
    if not set(linux.get("resources", {})) - {"devices"}:
        linux.pop("resources", None)


def check_limits(resources: dict) -> None:
    """Refuse, in one line, the limits (the spec's ``linux.resources``) a rootless container
    cannot have here: those whose controllers the host does not delegate to the user
    (:func:`lamina.runtime.cgroups.delegated`). At create, before anything is made (as Podman
    refuses them), and again when its spec is written."""
    if not rootless():
        return
    needed = cgroups.controllers(resources)
    if not needed:
        return
    missing = set().union(*needed.values()) - cgroups.delegated()
    limits = sorted(key for key, names in needed.items() if names & missing)
    if limits:
        raise Unavailable(
            f"cannot apply the {', '.join(limits)} limit(s): a rootless container gets cgroup "
            "limits only where the host delegates the user's cgroup to it (a systemd user "
            f"slice), and this host delegates no {', '.join(sorted(missing))} controller to "
            "this user")


def mapped_gid(gid: int) -> bool:
    """Whether ``gid`` is mapped into this process's user namespace."""
    with open("/proc/self/gid_map") as f:
        for line in f:
            inside, _, count = (int(n) for n in line.split())
            if inside <= gid < inside + count:
                return True
    return False

