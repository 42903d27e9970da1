"""What a container's processes may do: capabilities, the seccomp filter, ``--privileged``.

* Capabilities: Docker's default set (:data:`lamina.runtime.oci.DEFAULT_CAPABILITIES`) with
  ``--cap-add``/``--cap-drop`` applied by Docker's rules (:func:`capabilities`: ``ALL`` on
  either side, names with or without ``CAP_``, in any case).
* seccomp: the default profile is Podman's, ``/usr/share/containers/seccomp.json`` (Debian's
  golang-github-containers-common), read when a container starts and converted to the OCI
  spec's ``linux.seccomp`` for this machine's architecture and the container's capabilities
  (:func:`oci_seccomp`; its rules may name the capabilities and architectures they apply to).
  ``--security-opt seccomp=unconfined`` runs without a filter, ``seccomp=FILE`` with another
  profile in the same format (its text is kept with the container, as Docker's CLI sends it).
* ``--privileged``: every capability this process has, every host device, no seccomp filter,
  /sys read-write, nothing masked (:func:`apply`).
* ``--security-opt no-new-privileges``: the process cannot gain privileges (setuid files).
* ``--device HOST[:CONTAINER][:rwm]``: a host device in the container, allowed in its cgroup.
"""

from __future__ import annotations

import os

from .. import cjson
from ..errors import InvalidArgument

PROFILE = "/usr/share/containers/seccomp.json"  # Podman's default profile (containers-common)

# Every capability Linux names, by number (linux/capability.h).
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
# The architectures of seccomp profiles' "includes"/"excludes" (Go's names) and of their
# "archMap" (libseccomp's), for the machine lamina runs on.
_ARCHES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
           "s390x": ("s390x", "SCMP_ARCH_S390X"), "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
           "riscv64": ("riscv64", "SCMP_ARCH_RISCV64")}


class SecurityError(InvalidArgument):
    """A capability or security option that cannot be used (exit 125 from run and create)."""

    exit_code = 125


# ---------------------------------------------------------------------------------- options
def cap_name(name: str) -> str:
    """``chown``, ``CAP_CHOWN``, ``all`` -> ``CAP_CHOWN``, ``ALL``."""
    upper = name.strip().upper()
    return upper if upper == "ALL" else "CAP_" + upper.removeprefix("CAP_")


def check_capabilities(names, what: str) -> None:
    """Docker's error for a name that is no capability: ``invalid CapAdd: unknown capability``."""
    for name in names:
        full = cap_name(name)
        if full != "ALL" and full.removeprefix("CAP_") not in CAPABILITIES:
            raise SecurityError(f'invalid {what}: unknown capability: "{full}"')


def security_options(values, read=None) -> tuple[str, ...]:
    """``--security-opt`` values checked, as Docker's CLI keeps them: ``seccomp=FILE`` becomes
    ``seccomp=<the file's JSON>`` (``read(path)`` gives its text; the container keeps the
    profile, not the path). Accepted: ``seccomp=unconfined|FILE``, ``no-new-privileges[=|:
    true|false]``."""
    out = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            key, sep, rest = value.partition(":")
        if key == "no-new-privileges":
            if rest not in ("", "true", "false"):
                raise SecurityError(f'invalid --security-opt 2: "{value}"')
            out.append(value)
        elif key == "seccomp" and rest:
            if rest == "unconfined" or rest.lstrip().startswith("{"):
                out.append("seccomp=" + rest)  # seccomp:unconfined, Docker's older spelling
                continue
            try:
                text = read(rest) if read is not None else _read_text(rest)
                cjson.loads(text)
            except OSError as e:
                raise SecurityError(f"opening seccomp profile ({rest}) failed: open {rest}: "
                                    f"{(e.strerror or str(e)).lower()}") from None
            except ValueError as e:
                raise SecurityError(f"decoding seccomp profile ({rest}) failed: {e}") from None
            out.append("seccomp=" + text)
        else:
            raise SecurityError(f'Invalid --security-opt: "{value}"')
    return tuple(out)


def parse_device(text: str) -> tuple[str, str, str]:
    """``--device HOST[:CONTAINER][:PERMISSIONS]`` -> (host path, container path, rwm)."""
    parts = text.split(":")
    host, inside, permissions = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if parts[1] and set(parts[1]) <= set("rwm"):
            permissions = parts[1]
        else:
            inside = parts[1]
    elif len(parts) == 3:
        inside, permissions = parts[1], parts[2]
    elif len(parts) > 3:
        raise SecurityError(f"invalid device specification: {text}")
    if not permissions or not set(permissions) <= set("rwm"):
        raise SecurityError(f"bad mode specified: {permissions}")
    if not inside.startswith("/"):
        raise SecurityError(f"{inside} is not an absolute path")
    return host, inside, permissions


def device_entry(host: str, inside: str) -> dict:
    """The OCI ``linux.devices`` entry for the host's device ``host`` at ``inside``; Docker's
    error when it is no device."""
    import stat

    try:
        st = os.stat(host)
    except OSError as e:
        raise SecurityError(f'error gathering device information while adding custom device '
                            f'"{host}": {(e.strerror or str(e)).lower()}') from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise SecurityError(f'error gathering device information while adding custom device '
                            f'"{host}": not a device node')
    return {"path": inside, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def no_new_privileges(config) -> bool:
    for value in config.security_opt:
        key, _, rest = value.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            return rest in ("", "true")
    return False


def seccomp_option(config) -> str | None:
    """What ``--security-opt seccomp=`` says (``unconfined`` or a profile's JSON); None."""
    for value in config.security_opt:
        if value.startswith("seccomp="):
            return value[len("seccomp="):]
    return None


# ---------------------------------------------------------------------------------- capabilities
def bounding_capabilities() -> list[str]:
    """The capabilities this process can give (its bounding set): ``--privileged``'s."""
    mask = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
    except OSError:
        pass
    return ["CAP_" + name for number, name in enumerate(CAPABILITIES) if mask >> number & 1]


def capabilities(default: list[str], config) -> list[str]:
    """The container's capabilities by Docker's rules: ``--privileged`` gives all; ``--cap-add
    ALL`` gives all but the dropped ones; ``--cap-drop ALL`` keeps only the added ones;
    otherwise the default set without the dropped, with the added."""
    if config.privileged:
        return bounding_capabilities()
    adds = [cap_name(c) for c in config.cap_add]
    drops = [cap_name(c) for c in config.cap_drop]
    if "ALL" in adds:
        return [c for c in bounding_capabilities() if c not in drops]
    if "ALL" in drops:
        return list(dict.fromkeys(adds))
    caps = [c for c in default if c not in drops]
    return caps + [c for c in dict.fromkeys(adds) if c not in caps]


# ---------------------------------------------------------------------------------- seccomp
def native_arches() -> tuple[str, str]:
    """(Go's name, libseccomp's name) of this machine's architecture."""
    machine = os.uname().machine
    return _ARCHES.get(machine, (machine, "SCMP_ARCH_" + machine.upper()))


def oci_seccomp(profile: dict, caps: list[str]) -> dict:
    """A profile in Docker's / containers-common's format -> the OCI spec's ``linux.seccomp``
    for this machine and the capabilities ``caps``: the rules whose ``includes`` (caps, arches,
    minKernel) hold and whose ``excludes`` do not, each as ``names``/``action``/``args``
    (``errnoRet`` kept); the architectures are this machine's and its sub-architectures from
    ``archMap``. A profile already in the OCI form (``architectures``, no conditions) passes."""
    go_arch, scmp_arch = native_arches()
    kernel = kernel_version()
    out: dict = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ALLOW")}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or ())
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == scmp_arch:
            arches = [scmp_arch, *(entry.get("subArchitectures") or ())]
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = profile["flags"]
    held = set(caps)
    rules = []
    for rule in profile.get("syscalls") or ():
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("arches") and go_arch not in includes["arches"]:
            continue
        if excludes.get("arches") and go_arch in excludes["arches"]:
            continue
        if any(c not in held for c in includes.get("caps") or ()):
            continue
        if any(c in held for c in excludes.get("caps") or ()):
            continue
        if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        converted: dict = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            converted["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            converted["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op")
                                  if k in a} for a in rule["args"]]
        rules.append(converted)
    out["syscalls"] = rules
    return out


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
        if digits != part:
            break
    return tuple(parts)


def kernel_version() -> tuple[int, ...]:
    """The running kernel's version numbers: (6, 18, 0) for 6.18.0-1-amd64."""
    return _version(os.uname().release)


def default_profile() -> dict | None:
    """Podman's default seccomp profile, read now; None when containers-common is missing
    (the container then runs without a filter, as Docker does on a kernel without seccomp)."""
    try:
        with open(PROFILE) as f:
            return cjson.load(f)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------- the spec
def apply_process(process: dict, config) -> None:
    """The capabilities and no-new-privileges of a process of the container (its own and its
    execs, as Docker gives an exec the container's)."""
    caps = capabilities(process["capabilities"]["bounding"], config)
    process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    process["noNewPrivileges"] = no_new_privileges(config)


def apply(spec: dict, config) -> None:
    """Put ``config``'s container-wide privileges into the OCI ``spec`` (whose process has had
    :func:`apply_process`): the seccomp filter, and ``--privileged``'s devices, /sys and
    /sys/fs/cgroup writable, and unmasked paths."""
    process = spec["process"]
    linux = spec["linux"]
    if config.privileged:
        linux["maskedPaths"], linux["readonlyPaths"] = [], []
        for mount in spec["mounts"]:
            if mount["destination"] == "/sys" or mount["type"] == "cgroup":  # as Docker's
                mount["options"] = [o for o in mount["options"] if o != "ro"] + ["rw"]
        linux["devices"] = host_devices()
        linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
        return
    for host, inside, permissions in config.devices:
        entry = device_entry(host, inside)
        linux.setdefault("devices", []).append(entry)
        linux.setdefault("resources", {}).setdefault("devices", []).append(
            {"allow": True, "type": entry["type"], "major": entry["major"],
             "minor": entry["minor"], "access": permissions})
    option = seccomp_option(config)
    if option == "unconfined":
        return
    profile = cjson.loads(option) if option else default_profile()
    if profile is not None:
        linux["seccomp"] = oci_seccomp(profile, process["capabilities"]["bounding"])


_SKIPPED_DEVICES = {"pts", "shm", "fd", "mqueue", "console", "ptmx", "core"}


def host_devices(top: str = "/dev") -> list[dict]:
    """Every character and block device under /dev, as OCI ``linux.devices`` (``--privileged``
    gives the container the host's devices)."""
    import stat

    out = []
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not (directory == top and d in _SKIPPED_DEVICES)]
        for name in files:
            if directory == top and name in _SKIPPED_DEVICES:
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                            "gid": st.st_gid})
    return out
