"""OCI runtime bundles, and the runtime binary (runc) that runs them.

A container process runs from a *bundle*: a directory holding ``config.json`` (the OCI runtime
spec), here ``<store>/containers/<id>/``. lamina writes that spec itself:

* the process comes from the image config and the command line: ``Entrypoint`` + ``Cmd`` by
  Docker's rules (:func:`combine_command`), ``Env`` with ``-e`` on top, ``WorkingDir``/``-w``,
  ``User``/``-u`` resolved against the container's own ``/etc/passwd`` and ``/etc/group``
  (:func:`lamina.runtime.users.resolve_user`);
* the root is the container's merged mount (``Engine.mount``), read-only with ``--read-only``;
* generated ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` (files in the bundle) are
  bind-mounted over the init layer's placeholders, so they never reach the container's layer;
* Docker's defaults: /proc, /dev (tmpfs + the standard devices), /dev/pts, /dev/shm, /dev/mqueue,
  /sys read-only, its default capability set, masked and read-only /proc paths, the open-files
  limit raised to this process's hard limit, cgroupfs cgroups under ``/lamina/<id>``;
* networks: a bridge network (``bridge``, the default, or a user network: the namespace file
  :mod:`lamina.endpoints` made and attached, joined by path), ``none`` (a new network namespace
  with only ``lo`` up) or ``host`` (the host's namespace, hostname and /etc/hosts).

:class:`Runtime` drives the runtime's command line (``run``, ``exec``, ``kill``, ``delete``); runc
is the implementation, ``LAMINA_RUNTIME`` or ``--runtime`` names another binary with the same
CLI. The process lifecycle around it is in ``lamina.runtime``'s other modules: output capture
(``process``, ``logs``), state and detaching (``ownership``, ``monitor``), the verbs
(``lifecycle``).

For the image builder, :func:`lamina.runtime.process.run_in_container` runs one command in an
existing container.
"""

from __future__ import annotations

import os

from .. import cjson
from ..errors import InvalidArgument, LaminaError, Unavailable
from ..image import merge_env, process_env
from ..records import as_dict, frozen
from ..rootpath import resolve_in_root
from .users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("none", "host")

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


class RuntimeFailure(LaminaError):
    """The runtime could not start the process. ``exit_code`` is Docker's: 127 when the executable
    is missing, 126 when it cannot be run, 125 otherwise."""

    def __init__(self, message: str, exit_code: int = 125):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------- run options
@frozen
class RunConfig:
    """What ``lamina run`` adds to the image config; kept with the container (``run_config``) so
    that ``start`` runs it again the same way. Volumes are ``(source, destination, read_only)``:
    source is an absolute host path (a bind mount) or a volume name."""

    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    volumes: tuple[tuple[str, str, bool], ...] = ()
    read_only: bool = False
    network: str = "bridge"  # bridge (the default network), a user network, none or host
    auto_remove: bool = False
    runtime: str | None = None
    tty: bool = False  # -t: the process gets a terminal (see lamina.console)
    hostname: str | None = None  # --hostname (default: the ID's first 12 digits)
    open_stdin: bool = False  # -i: stdin stays open for attached clients
    labels: tuple[tuple[str, str], ...] = ()  # --label KEY=VALUE
    # Limits (lamina.runtime.resources): bytes, nano-CPUs, (name, soft, hard); 0 is none
    memory: int = 0
    memory_swap: int = 0  # memory + swap, -1 unlimited
    memory_reservation: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0
    shm_size: int = 0  # --shm-size: bytes of /dev/shm (0: Docker's 64 MiB)
    ulimits: tuple[tuple[str, int, int], ...] = ()
    # Privileges (lamina.runtime.security): capability names as given, --security-opt values
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    security_opt: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    devices: tuple[tuple[str, str, str], ...] = ()  # --device: (host path, path inside, rwm)
    restart: str = "no"  # --restart POLICY (lamina.runtime.restart)
    healthcheck: str = ""  # Docker's HealthConfig as JSON, the image's merged in (runtime.health)
    init: bool = False  # --init: an init as PID 1 (lamina.runtime.process.INIT_PATH)
    ports: tuple[tuple[str, int, int, str], ...] = ()  # -p: (host IP, host port, port, proto)
    publish_all: bool = False  # -P: every EXPOSE of the image to a random host port
    network_aliases: tuple[str, ...] = ()  # --network-alias
    ip: str = ""  # --ip
    extra_hosts: tuple[str, ...] = ()  # --add-host HOST:IP (HostConfig.ExtraHosts)
    # (destination, rshared|shared|rslave|slave|private) of binds given a propagation
    bind_propagation: tuple[tuple[str, str], ...] = ()
    binds: tuple[str, ...] = ()  # the -v values as given (HostConfig.Binds; Mode in inspect)
    console_size: tuple[int, ...] = ()  # with tty: (height, width) its terminal starts with
    mounts: str = ""  # the --mount values as Docker's HostConfig.Mounts, as JSON text
    # What an Engine API client sent to create it beyond the fields above (Config, HostConfig),
    # as JSON text, echoed by its inspect: "" when it was made by the CLI.
    api_config: str = ""

    def to_json(self) -> str:
        return cjson.dumps(as_dict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> RunConfig:
        doc = cjson.loads(text or "{}")
        return cls(**{k: _tuples(v) for k, v in doc.items() if k in cls.FIELDS})


def _tuples(value):
    """JSON's lists back to the tuples RunConfig keeps (volumes, labels: tuples of tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def combine_command(image_config: dict, command: list[str] | None,
                    entrypoint: list[str] | None) -> list[str]:
    """Docker's rules: ``--entrypoint`` (``[]`` resets it) replaces the image's and drops the
    image's Cmd; a command given on the command line replaces the image's Cmd."""
    if entrypoint is not None:
        argv = list(entrypoint) + list(command or [])
    else:
        argv = list(image_config.get("Entrypoint") or []) + list(
            command if command else image_config.get("Cmd") or [])
    if not argv:
        raise InvalidArgument("No command specified")
    return argv


# ------------------------------------------------------------------------------ the network files
def parse_extra_host(value: str) -> str:
    """``--add-host``'s ``HOST:IP`` (or ``HOST=IP``) checked and kept as ``HOST:IP``; the IP may
    be IPv6 (``host:::1``). InvalidArgument with Docker's words otherwise."""
    import ipaddress

    sep = "=" if "=" in value else ":"
    host, found, address = value.partition(sep)
    address = address.strip("[]")
    try:
        if not found or not host:
            raise ValueError
        ipaddress.ip_address(address)
    except ValueError:
        raise InvalidArgument(f'invalid argument "{value}" for "--add-host" flag: invalid IP '
                              f'address in add-host: "{address}"') from None
    return f"{host}:{address}"


def extra_hosts_text(extra_hosts) -> str:
    """/etc/hosts lines of ``HOST:IP`` entries, as Docker writes them (``IP<TAB>HOST``)."""
    return "".join(f"{entry.partition(':')[2]}\t{entry.partition(':')[0]}\n"
                   for entry in extra_hosts)


def write_network_files(bundle: str, hostname: str, network: str,
                        extra_hosts=(), address: str | None = None,
                        nameserver: str | None = None) -> dict[str, str]:
    """Write the bundle's hosts, hostname and resolv.conf; returns {container path: host path}.
    ``extra_hosts``: ``HOST:IP`` entries added to the hosts file (``--add-host``); ``address``:
    the container's own, under its hostname (as Docker writes it after them); ``nameserver``:
    a user-mode network's DNS forwarder (:func:`resolv_conf_via`); else, on the host's network,
    the host's resolv.conf as it is, and on any other the nameservers it can reach
    (:func:`resolv_conf_reachable`)."""
    if network == "host":
        hosts = _read_host("/etc/hosts") or "127.0.0.1\tlocalhost\n"
    else:
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                 "ff02::2\tip6-allrouters\n")
    if hosts and not hosts.endswith("\n"):
        hosts += "\n"
    hosts += extra_hosts_text(extra_hosts)
    if address:
        hosts += f"{address}\t{hostname}\n"
    resolv = _read_host("/etc/resolv.conf")
    if nameserver:
        resolv = resolv_conf_via(resolv, nameserver)
    elif network != "host":
        resolv = resolv_conf_reachable(resolv)
    files = {"/etc/hosts": hosts, "/etc/hostname": hostname + "\n", "/etc/resolv.conf": resolv}
    out = {}
    for dest, text in files.items():
        path = os.path.join(bundle, os.path.basename(dest))
        with open(path, "w") as f:
            f.write(text)
        out[dest] = path
    return out


def resolv_conf_via(host_text: str, nameserver: str) -> str:
    """The resolv.conf of a container whose network has a DNS forwarder at ``nameserver``
    (slirp4netns' 10.0.2.3, which forwards to the host's resolver from the host's side), as
    Podman writes it: the forwarder first, then the host's file without the nameservers the
    container cannot reach (:func:`unreachable_nameserver`). Search domains and options stay."""
    kept = "".join(line + "\n" for line in host_text.splitlines()
                   if not unreachable_nameserver(line))
    return f"nameserver {nameserver}\n" + kept


DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")  # Docker's when none of the host's is left


def resolv_conf_reachable(host_text: str) -> str:
    """The resolv.conf of a container in a network namespace of its own with no DNS forwarder
    (a bridge, ``none``), as Docker writes it: the host's file without the nameservers the
    container cannot reach (:func:`unreachable_nameserver`) and, when none is left, Google's
    public resolvers after an empty line. Search domains, options and comments stay."""
    kept = [line + "\n" for line in host_text.splitlines() if not unreachable_nameserver(line)]
    if not any(line.split()[:1] == ["nameserver"] for line in kept):
        kept += ["\n", *(f"nameserver {address}\n" for address in DEFAULT_NAMESERVERS)]
    return "".join(kept)


def unreachable_nameserver(line: str) -> bool:
    """Whether the resolv.conf ``line`` names a nameserver a container in a network namespace
    of its own cannot reach: a loopback one (systemd-resolved's 127.0.0.53, a dnsmasq's
    127.0.0.1, ``::1``: inside they name the container's own loopback) or an IPv6 one
    (lamina's networks have no IPv6)."""
    words = line.split()
    return words[:1] == ["nameserver"] and (len(words) < 2 or words[1].startswith("127.")
                                            or ":" in words[1])


def _read_host(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------- the spec
def make_process(root: str, argv: list[str], env: list[str], workdir: str | None,
                 user: str | None, hostname: str, terminal: bool = False) -> dict:
    """The spec's ``process``: ids resolved in ``root``, HOME, HOSTNAME and PATH defaulted;
    with ``terminal`` the runtime gives it a pty (and, as Docker, TERM=xterm by default)."""
    who = resolve_user(root, user)
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if terminal else [])
    merged = process_env(merge_env(base, env))
    if not any(e.startswith("HOME=") for e in merged):
        merged.append(f"HOME={who.home}")
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if hard == resource.RLIM_INFINITY else min(hard, 1048576)
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "terminal": terminal,
        "user": {"uid": who.uid, "gid": who.gid,
                 **({"additionalGids": list(who.additional_gids)} if who.additional_gids else {})},
        "args": list(argv),
        "env": merged,
        "cwd": workdir or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": False,
    }


def make_spec(root: str, process: dict, *, hostname: str, network: str = "none",
              read_only: bool = False, files: dict[str, str] | None = None,
              binds: list[dict] | None = None, cgroup: str | None = None,
              netns: str | None = None) -> dict:
    """An OCI runtime spec (config.json) for ``process`` on the tree ``root``.

    ``files`` maps container paths to host files bind-mounted over them (hosts, resolv.conf...);
    ``binds`` are extra OCI mounts (volumes), mounted last so that they win; ``netns``: the
    network namespace file of a container on bridge networks."""
    if network not in NETWORKS and not netns:
        raise InvalidArgument(f"network {network!r} is not supported (choose from "
                              f"{', '.join(NETWORKS)}; lamina has no bridge network)")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        # the container's own cgroup, read-only (Docker's and Podman's default): its limits
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    for dest, source in (files or {}).items():
        target = resolve_in_root(root, dest)
        if os.path.isfile(target) and not os.path.islink(target):
            mounts.append({"destination": dest, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate"]})
    mounts.extend(binds or [])
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns:
        namespaces.append({"type": "network", "path": netns})
    elif network == "none":
        namespaces.append({"type": "network"})
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": root, "readonly": read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroup or "",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


# ---------------------------------------------------------------------------------- the binary
class Runtime:
    """An OCI runtime with runc's command line. Its state lives under ``state_dir`` (runc's
    ``--root``), one directory per runtime binary, inside the store."""

    def __init__(self, store_root: str, binary: str | None = None):
        from ..processes import find_program

        name = binary or os.environ.get("LAMINA_RUNTIME") or "runc"
        path = find_program(name)
        if path is None:
            hint = " (apt-get install -y runc)" if name == "runc" else ""
            raise Unavailable(f"OCI runtime {name!r} not found in PATH{hint}")
        self.binary = path
        self.name = os.path.basename(path)
        self.store_root = store_root
        self.state_dir = os.path.join(store_root, "runtime", self.name)
        self.ingest = os.path.join(store_root, "ingest")

    def command(self, *args: str, log: str | None = None) -> list[str]:
        """The runtime's argv for ``args``, for this process to run; ``log`` gets its own
        errors as JSON lines. For ``run`` and ``create`` (the container ID last) of a rootless
        container, where its cgroup will be is noted first (:func:`.cgroups.note`), for
        :meth:`delete` to remove what runc may leave of it."""
        if args and args[0] in ("run", "create"):
            from ..userns import rootless

            if rootless():
                from .cgroups import note

                note(self.store_root, args[-1])
        cmd = [self.binary, "--root", self.state_dir]
        if log:
            cmd += ["--log", log, "--log-format", "json"]
        return cmd + list(args)

    def has_state(self, container_id: str) -> bool:
        return os.path.isdir(os.path.join(self.state_dir, container_id))

    def kill(self, container_id: str, signal: int, all: bool = False) -> bool:
        """Send ``signal`` to the container's init (every process with ``all``); False when the
        runtime does not know the container or it is not running."""
        import subprocess

        args = ["kill"] + (["--all"] if all else []) + [container_id, str(signal)]
        proc = subprocess.run(self.command(*args), check=False, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0 and all:  # rootless without a cgroup: runc cannot list them,
            return self.kill(container_id, signal)  # and the init's end ends its PID namespace
        return proc.returncode == 0

    def delete(self, container_id: str) -> None:
        """Forget the container, killing what is left of it, and remove what runc could not
        remove (yet) of its cgroup (idempotent)."""
        import subprocess

        from ..userns import rootless

        if self.has_state(container_id):
            subprocess.run(self.command("delete", "--force", container_id), check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if not rootless():
                from .cgroups import container_path, remove

                remove(container_path(container_id))
        if rootless():  # with runc's state or without (a runc killed before it wrote it)
            from .cgroups import forget

            forget(self.store_root, container_id)


def failure_from_log(log: str) -> RuntimeFailure | None:
    """The runtime's own error, from its JSON log, classified as Docker does; None if none."""
    message = None
    try:
        with open(log) as f:
            for line in f:
                try:
                    entry = cjson.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    message = entry.get("msg", "")
    except FileNotFoundError:
        return None
    if message is None:
        return None
    for prefix in ("runc run failed: ", "runc exec failed: ", "exec failed: ",
                   "unable to start container process: "):
        message = message.removeprefix(prefix)
    code = 125
    if message.startswith("exec:"):  # the executable itself: missing (127) or not runnable (126)
        code = 126 if "permission denied" in message or "exec format error" in message else 127
    return RuntimeFailure(message, code)
