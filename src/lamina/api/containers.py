"""Engine API: containers (list, inspect, create, start, attach, wait, stop, kill, restart, rm,
logs). Files of a container (archive, export, changes) are :mod:`lamina.api.container_files`.

Everything goes through the same stores and runtime as the CLI: a container created here is
created by :func:`lamina.runtime.creation.create`, started by a detached monitor that outlives
the server (:func:`lamina.runtime.monitor.spawn`), listed and inspected by
:class:`lamina.containers.ContainerStore`.

Attaching (``docker run`` without ``-d``: create, attach, wait, start): the attach call hijacks
its connection and registers an :class:`Attachment`; the start call hands the attachment's pipe
ends to the monitor, which copies the process's output to them (as well as to the log) and its
input from them; a thread here frames the output for each attached client. If the server dies,
the monitor's writes fail and it goes on logging: the container does not notice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..events import labels_match
from ..runtime.attach import DetachKeys
from ..runtime.attach import parse_keys as detach_keys
from ..runtime.monitor import open_stdin
from .server import ApiError, MapOf, go_fields, route

HEADERS_ALONE = 0.05  # seconds between a hijack's headers and a log written at once (attach)


# ----------------------------------------------------------------------------- documents
def summary(row: dict, size: bool) -> dict:
    """A ``ps`` row of ContainerStore.list as Docker's ContainerSummary."""
    from .. import humanize

    run = json.loads(row.get("RunConfig") or "{}")
    network = run.get("network", "bridge")
    doc = {
        "Id": row["ID"], "Names": ["/" + row["Names"]], "Image": row["Image"],
        "ImageID": row["ImageID"], "Command": row["Command"], "Created": int(row["Created"]),
        "Ports": [{"IP": p["HostIp"], "PrivatePort": p["ContainerPort"],
                   "PublicPort": int(p["HostPort"]), "Type": p["Protocol"]}
                  for p in row.get("Ports") or ()],
        "Labels": dict(run.get("labels") or ()), "State": row["State"],
        "Status": humanize.status(row),
        "HostConfig": {"NetworkMode": network},
        "NetworkSettings": {"Networks": {network: {
            "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
            "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": "", "DriverOpts": None}}},
        "Mounts": [_mount_point(run, v) for v in run.get("volumes", ())],
    }
    if size:
        doc["SizeRw"] = row["SizeRw"]
        doc["SizeRootFs"] = row["SizeRootFs"]
    return doc


def _mount_point(run: dict, volume) -> dict:
    source, destination, read_only = volume
    from ..volumes import mount_mode

    mode, propagation = mount_mode(run, source, destination, read_only)
    if source.startswith("/"):
        return {"Type": "bind", "Source": source, "Destination": destination, "Mode": mode,
                "RW": not read_only, "Propagation": propagation}
    return {"Type": "volume", "Name": source, "Source": "", "Destination": destination,
            "Driver": "local", "Mode": mode, "RW": not read_only, "Propagation": ""}


def _matches(row: dict, filters: dict[str, list[str]]) -> bool:
    """Docker's container filters: id, name, status, label, ancestor, exited, health, before,
    since."""
    run = None
    for key, values in filters.items():
        if not values:
            continue
        if key == "id":
            ok = any(row["ID"].startswith(v) for v in values)
        elif key == "name":
            ok = any(v.lstrip("/") in row["Names"] for v in values)
        elif key == "status":
            ok = row["State"] in values
        elif key == "exited":
            ok = row["State"] == "exited" and str(row["ExitCode"]) in values
        elif key == "ancestor":
            ok = any(v in (row["Image"], row["ImageID"], row["ImageID"][7:19]) or
                     row["Image"] == v + ":latest" for v in values)
        elif key == "label":
            run = run if run is not None else json.loads(row.get("RunConfig") or "{}")
            ok = labels_match(dict(run.get("labels") or ()), values)
        elif key == "health":
            bad = [v for v in values if v not in ("starting", "healthy", "unhealthy", "none")]
            if bad:
                raise ApiError(400, f"Unrecognised filter value for health: {bad[0]}")
            ok = row["Health"] in values
        elif key in ("before", "since", "volume", "network", "publish", "expose",
                     "isolation", "is-task"):
            ok = True  # answered below (before/since) or nothing lamina has
        else:
            raise ApiError(400, f"invalid filter '{key}'")
        if not ok:
            return False
    return True


@route("GET", "/containers/json")
def list_containers(request):
    filters = request.filters()
    size = request.flag("size")
    wanted_all = request.flag("all") or request.int_arg("limit", -1) > 0
    if filters.get("status") and any(s not in ("created", "running", "exited", "paused",
                                               "restarting", "removing", "dead")
                                     for s in filters["status"]):
        raise ApiError(400, f"invalid filter 'status={filters['status'][0]}'")
    rows = request.engine.containers(all=wanted_all or bool(filters.get("status")) or
                                     bool(filters.get("exited")), size=size)
    rows = [r for r in rows if _matches(r, filters)]
    for key in ("before", "since"):
        for value in filters.get(key, ()):
            mark = request.engine.container_store.get(value)["created"]
            rows = [r for r in rows if (r["Created"] < mark if key == "before" else r["Created"] > mark)]
    limit = request.int_arg("limit", -1)
    if limit is not None and limit > 0:
        rows = rows[:limit]
    return [summary(r, size) for r in rows]


# The text of a container inspect but for what changes without its configuration: for each
# (configuration, keys that change), the JSON around those keys' values, in order. Bounded.
_INSPECT_TEXT: dict[tuple, tuple[list[str], list[str]]] = {}


@route("GET", "/containers/{id}/json")
def inspect_container(request, id):
    """The container's inspect document, with the paths the runtime masks. Most of its text
    (about 4 KB) is what the container's configuration decides: kept per configuration, with
    the state's parts serialized into it at each request (the same bytes as ``json.dumps``
    of the whole document, in a fraction of its time)."""
    configuration, fixed, now = request.engine.container_store.inspect_parts(
        id, size=request.flag("size"))
    key = (configuration, tuple(now))
    found = _INSPECT_TEXT.get(key)
    if found is None:
        if len(_INSPECT_TEXT) >= 256:
            _INSPECT_TEXT.clear()
        found = _INSPECT_TEXT[key] = _inspect_text(fixed, now)
    order, pieces = found
    out = [pieces[0]]
    for name, piece in zip(order, pieces[1:]):
        out += (json.dumps(now[name], separators=(",", ":")), piece)
    request.send_bytes(200, "".join(out).encode())


def _inspect_text(fixed: dict, now: dict) -> tuple[list[str], list[str]]:
    """(the keys of ``now`` in the document's order, the texts around their values): the
    document ``fixed`` with the masked paths, serialized as the server sends JSON, cut where
    ``now``'s values go."""
    from ..runtime.oci import MASKED_PATHS, READONLY_PATHS

    doc = dict(fixed)
    host = doc["HostConfig"] = dict(fixed["HostConfig"])
    privileged = host.get("Privileged")  # nothing masked (runtime.security)
    host.setdefault("MaskedPaths", None if privileged else MASKED_PATHS)
    host.setdefault("ReadonlyPaths", None if privileged else READONLY_PATHS)
    marks = {name: f"\0{os.urandom(8).hex()}\0" for name in now}
    doc.update(marks)
    text = json.dumps(doc, separators=(",", ":")) + "\n"
    order = [name for name in doc if name in marks]
    pieces = []
    for name in order:
        before, _, text = text.partition(json.dumps(marks[name]))
        pieces.append(before)
    return order, [*pieces, text]


# ----------------------------------------------------------------------------- create
_STR, _BOOL, _OBJECT, _WORDS = "string", "bool", "object", "list of strings"
_CONFIG_TYPES = {"Image": _STR, "WorkingDir": _STR, "User": _STR, "Hostname": _STR,
                 "Domainname": _STR, "StopSignal": _STR, "Tty": _BOOL, "OpenStdin": _BOOL,
                 "AttachStdin": _BOOL, "AttachStdout": _BOOL, "AttachStderr": _BOOL,
                 "StdinOnce": _BOOL, "Labels": _OBJECT, "Volumes": _OBJECT,
                 "ExposedPorts": _OBJECT, "HostConfig": _OBJECT, "Env": _WORDS}
_HOST_TYPES = {"Binds": _WORDS, "NetworkMode": _STR, "AutoRemove": _BOOL, "LogConfig": _OBJECT,
               "ReadonlyRootfs": _BOOL, "Runtime": _STR, "Mounts": "list of objects"}


def _names(text: str) -> dict:
    return dict.fromkeys(text.split())


# A create body's structs, by their fields (Docker's container.Config, HostConfig and
# NetworkingConfig), for go_fields: keys matched case-insensitively as Docker's decoder does.
_ENDPOINT = {**_names("Links Aliases DriverOpts NetworkID EndpointID Gateway IPAddress "
                      "IPPrefixLen IPv6Gateway GlobalIPv6Address GlobalIPv6PrefixLen MacAddress "
                      "DNSNames"),
             "IPAMConfig": _names("IPv4Address IPv6Address LinkLocalIPs")}
_HOST_FIELDS = {
    **_names("Binds ContainerIDFile NetworkMode AutoRemove VolumeDriver VolumesFrom ConsoleSize "
             "Annotations CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch ExtraHosts "
             "GroupAdd IpcMode Cgroup Links OomScoreAdj PidMode Privileged PublishAllPorts "
             "ReadonlyRootfs SecurityOpt StorageOpt Tmpfs UTSMode UsernsMode ShmSize Sysctls "
             "Runtime Isolation CpuShares Memory NanoCpus CgroupParent BlkioWeight "
             "BlkioWeightDevice BlkioDeviceReadBps BlkioDeviceWriteBps BlkioDeviceReadIOps "
             "BlkioDeviceWriteIOps CpuPeriod CpuQuota CpuRealtimePeriod CpuRealtimeRuntime "
             "CpusetCpus CpusetMems DeviceCgroupRules DeviceRequests KernelMemory "
             "KernelMemoryTCP MemoryReservation MemorySwap MemorySwappiness OomKillDisable "
             "PidsLimit CpuCount CpuPercent IOMaximumIOps IOMaximumBandwidth MaskedPaths "
             "ReadonlyPaths Init"),
    "LogConfig": _names("Type Config"),
    "PortBindings": MapOf(_names("HostIp HostPort")),
    "RestartPolicy": _names("Name MaximumRetryCount"),
    "Devices": _names("PathOnHost PathInContainer CgroupPermissions"),
    "Ulimits": _names("Name Soft Hard"),
    "Mounts": {**_names("Target Source Type ReadOnly Consistency"),
               "BindOptions": _names("Propagation NonRecursive CreateMountpoint "
                                     "ReadOnlyNonRecursive ReadOnlyForceRecursive"),
               "VolumeOptions": {**_names("NoCopy Labels Subpath"),
                                 "DriverConfig": _names("Name Options")},
               "TmpfsOptions": _names("SizeBytes Mode Options")},
}
CREATE_FIELDS = {
    **_names("Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty "
             "OpenStdin StdinOnce Env Cmd ArgsEscaped Image Volumes WorkingDir Entrypoint "
             "NetworkDisabled MacAddress OnBuild Labels StopSignal StopTimeout Shell"),
    "Healthcheck": _names("Test Interval Timeout Retries StartPeriod StartInterval"),
    "HostConfig": _HOST_FIELDS,
    "NetworkingConfig": {"EndpointsConfig": MapOf(_ENDPOINT)},
}


def _check_types(doc: dict, types: dict, where: str) -> None:
    """400 for a field of the wrong JSON type, as Docker's decoder refuses it (null is fine)."""
    for key, kind in types.items():
        value = doc.get(key)
        if value is None:
            continue
        ok = {_STR: isinstance(value, str), _BOOL: isinstance(value, bool),
              _OBJECT: isinstance(value, dict),
              _WORDS: isinstance(value, list) and all(isinstance(v, str) for v in value),
              "list of objects": isinstance(value, list) and all(isinstance(v, dict) for v in value),
              }[kind]
        if not ok:
            raise ApiError(400, f"json: cannot unmarshal {type(value).__name__} into field "
                                f"{where}{key} of type {kind}")
    if types is _CONFIG_TYPES and isinstance(doc.get("Labels"), dict) and not all(
            isinstance(v, str) for v in doc["Labels"].values()):
        raise ApiError(400, "json: the values of Labels must be strings")


def console_size(value) -> tuple[int, ...]:
    """A create's ``ConsoleSize`` ([height, width], the docker CLI's terminal) if it is one."""
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n < 65536 for n in value):
        return value[0], value[1]
    return ()


def run_config(config: dict, host: dict):
    """A RunConfig from the API's create body (Config with HostConfig)."""
    from .. import volumes
    from ..runtime.oci import RunConfig

    specs = [volumes.parse_volume_propagation(bind) for bind in host.get("Binds") or ()]
    documents = []
    for mount in host.get("Mounts") or ():
        fields = (mount.get("Type", "volume"), mount.get("Source") or "", mount.get("Target", ""),
                  bool(mount.get("ReadOnly")),
                  (mount.get("BindOptions") or {}).get("Propagation", ""))
        specs.append(volumes.mount_spec(*fields))
        documents.append(volumes.mount_document(*fields))
    taken = {spec[1] for spec, _ in specs}
    for path in config.get("Volumes") or {}:
        if os.path.normpath(path) not in taken:
            specs.append(volumes.parse_volume_propagation(path))
    network = host.get("NetworkMode") or "default"
    if network == "default":
        network = "bridge"
    ports, aliases, ip = _network_options(body_networking(config), network, config, host)
    labels = config.get("Labels") or {}
    env = config.get("Env") or ()
    log = host.get("LogConfig") or {}
    if log.get("Type") not in (None, "", "json-file", "none"):
        raise ApiError(400, f"logger: no log driver named '{log['Type']}' is registered")
    host = {**host, "LogConfig": {"Type": log.get("Type") or "json-file",
                                  "Config": log.get("Config") or {}}}
    extra = {"Config": {k: config[k] for k in ("AttachStdin", "AttachStdout", "AttachStderr",
                                                 "StdinOnce", "Domainname", "ExposedPorts",
                                                 "StopSignal", "StopTimeout", "Entrypoint")
                        if config.get(k) is not None},
             "HostConfig": {k: v for k, v in host.items() if v not in (None, "", [], {}, 0)
                            and k not in ("Binds", "Mounts", "RestartPolicy")  # as settled
                            and k not in LIMIT_FIELDS}}
    return RunConfig(env=tuple(env), workdir=config.get("WorkingDir") or None,
                     user=config.get("User") or None, **volumes.volume_fields(specs, host.get("Binds") or (), documents),
                     read_only=bool(host.get("ReadonlyRootfs")), network=network,
                     auto_remove=bool(host.get("AutoRemove")),
                     runtime=host.get("Runtime") if host.get("Runtime") not in (None, "", "runc")
                     else None,
                     tty=bool(config.get("Tty")), hostname=config.get("Hostname") or None,
                     open_stdin=bool(config.get("OpenStdin")),
                     labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                     ports=ports, publish_all=bool(host.get("PublishAllPorts")),
                     network_aliases=aliases, ip=ip, extra_hosts=_extra_hosts(host),
                     api_config=json.dumps(extra, separators=(",", ":")), **limit_fields(host),
                     console_size=console_size(host.get("ConsoleSize")) if config.get("Tty")
                     else (), **_life(config, host))


# HostConfig's limits and privileges -> RunConfig's fields (inspect shows them from there)
LIMIT_FIELDS = {"Memory": "memory", "MemorySwap": "memory_swap",
                "MemoryReservation": "memory_reservation", "NanoCpus": "nano_cpus",
                "CpuShares": "cpu_shares", "CpusetCpus": "cpuset_cpus", "PidsLimit": "pids_limit",
                "Ulimits": "ulimits", "CapAdd": "cap_add", "CapDrop": "cap_drop",
                "Privileged": "privileged", "SecurityOpt": "security_opt", "GroupAdd": "group_add",
                "Devices": "devices", "ShmSize": "shm_size"}
_NUMBERS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "PidsLimit",
            "ShmSize")


def limit_fields(host: dict, only=LIMIT_FIELDS) -> dict:
    """The RunConfig fields of HostConfig's limits and privileges (400 for a wrong type)."""
    from ..runtime import security

    out: dict = {}
    for key in only:
        value = host.get(key)
        if value is None:
            continue
        field = LIMIT_FIELDS[key]
        if key in _NUMBERS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ApiError(400, f"json: cannot unmarshal {type(value).__name__} into field "
                                    f"HostConfig.{key} of type int64")
            out[field] = value
        elif key == "CpusetCpus":
            out[field] = str(value)
        elif key == "Privileged":
            out[field] = bool(value)
        elif key == "Ulimits":
            try:
                out[field] = tuple((u["Name"], int(u.get("Soft", 0)), int(u.get("Hard", 0)))
                                   for u in value)
            except (TypeError, KeyError, ValueError):
                raise ApiError(400, "HostConfig.Ulimits: a list of {Name, Soft, Hard}") from None
        elif key == "Devices":
            try:
                out[field] = tuple(security.parse_device(
                    f"{d['PathOnHost']}:{d.get('PathInContainer') or d['PathOnHost']}:"
                    f"{d.get('CgroupPermissions') or 'rwm'}") for d in value)
            except (TypeError, KeyError):
                raise ApiError(400, "HostConfig.Devices: a list of {PathOnHost, "
                                    "PathInContainer, CgroupPermissions}") from None
        elif key == "SecurityOpt":
            out[field] = security.security_options([str(v) for v in value])
        else:
            out[field] = tuple(str(v) for v in value)
    return out


def _life(config: dict, host: dict) -> dict:
    """RestartPolicy, Init and Healthcheck, as RunConfig fields (lamina.runtime.restart, health)."""
    from ..runtime.restart import RestartPolicy

    policy = host.get("RestartPolicy") or {}
    if not isinstance(policy, dict) or not isinstance(policy.get("MaximumRetryCount") or 0, int):
        raise ApiError(400, "HostConfig.RestartPolicy must be {Name, MaximumRetryCount}")
    check = config.get("Healthcheck")
    return {"restart": str(RestartPolicy.of(policy.get("Name"), policy.get("MaximumRetryCount") or 0)),
            "init": bool(host.get("Init")), "healthcheck": json.dumps(check) if check else ""}


def _extra_hosts(host: dict) -> tuple[str, ...]:
    """HostConfig.ExtraHosts (``HOST:IP``), checked as ``--add-host`` is."""
    from ..runtime.oci import parse_extra_host

    value = host.get("ExtraHosts") or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "HostConfig.ExtraHosts must be a list of HOST:IP strings")
    return tuple(parse_extra_host(v) for v in value)


def body_networking(config: dict) -> dict:
    """The create body's NetworkingConfig.EndpointsConfig ({} when absent)."""
    endpoints = (config.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict):
        raise ApiError(400, "NetworkingConfig.EndpointsConfig must be an object")
    return endpoints


def _network_options(endpoints: dict, network: str, config: dict, host: dict):
    """(published ports, aliases, IPv4 address) of a create: HostConfig.PortBindings (and, with
    PublishAllPorts, Config.ExposedPorts not bound there, to random host ports) and the
    EndpointsConfig of its network."""
    ports = []
    bindings = host.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise ApiError(400, "HostConfig.PortBindings must be an object")
    for key, binds in bindings.items():
        number, _, proto = key.partition("/")
        if not number.isdigit() or (proto or "tcp") not in ("tcp", "udp"):
            raise InvalidArgument(f"invalid port specification: {key!r}")
        for bind in binds or [{}]:
            host_port = str((bind or {}).get("HostPort") or "0")
            if not host_port.isdigit():
                raise InvalidArgument(f"invalid port specification: {host_port!r}")
            ports.append(((bind or {}).get("HostIp") or "", int(host_port), int(number),
                          proto or "tcp"))
    if host.get("PublishAllPorts"):
        for key in config.get("ExposedPorts") or {}:
            number, _, proto = key.partition("/")
            if number.isdigit() and key not in bindings and f"{key}/tcp" not in bindings:
                ports.append(("", 0, int(number), proto or "tcp"))
    endpoint = endpoints.get(network) or {}
    aliases = tuple(a for a in endpoint.get("Aliases") or () if isinstance(a, str))
    ip = ((endpoint.get("IPAMConfig") or {}).get("IPv4Address") or "")
    return tuple(ports), aliases, ip


def _words(value, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, f"{what} must be a string or a list of strings")


@route("POST", "/containers/create")
def create_container(request):
    from ..runtime.creation import create

    body = request.json({})
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    body = go_fields(body, CREATE_FIELDS)
    _check_types(body, _CONFIG_TYPES, "Config.")
    host = body.get("HostConfig") or {}
    _check_types(host, _HOST_TYPES, "HostConfig.")
    image = body.get("Image")
    if not image:
        raise ApiError(400, "Config cannot be empty in order to create a container")
    name = request.arg("name") or None
    config = run_config(body, host)
    engine = request.engine
    try:
        engine.image_store.resolve(image)
    except NotFound:
        raise NotFound(f"No such image: {_normalized(image)}") from None
    cid = create(engine.container_store, image, _words(body.get("Cmd"), "Cmd"),
                 name=name,
                 entrypoint=_words(body.get("Entrypoint"), "Entrypoint"), config=config)
    request.send_json(201, {"Id": cid, "Warnings": []})


def _normalized(image: str) -> str:
    """``busybox`` -> ``busybox:latest``, as Docker's "No such image" names it."""
    last = image.rpartition("/")[2]
    return image if ":" in last or "@" in image else image + ":latest"


# ----------------------------------------------------------------------------- running
_attachments: dict[str, Attachment] = {}
_attach_lock = threading.Lock()


class Attachment:
    """The clients attached to a container before it starts, and the pipes its monitor gets."""

    def __init__(self, tty: bool, stdin: bool):
        self.tty = tty
        self.clients: list[tuple[socket.socket, set[int]]] = []
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = (self.out_r, self.out_w) if tty else os.pipe()
        self.in_r, self.in_w = os.pipe() if stdin else (-1, -1)
        self.started = False
        self.done = threading.Event()
        self.lock = threading.Lock()

    def add(self, conn: socket.socket, streams: set[int]) -> None:
        with self.lock:
            self.clients.append((conn, streams))

    def remove(self, conn: socket.socket) -> None:
        with self.lock:
            self.clients = [client for client in self.clients if client[0] is not conn]

    def stdio(self) -> tuple[int, int, int]:
        return self.in_r, self.out_w, self.err_w

    def begin(self) -> None:
        """The monitor has its ends: close ours of them and copy its output to the clients."""
        self.started = True
        for fd in {self.in_r, self.out_w, self.err_w} - {-1}:
            os.close(fd)
        threading.Thread(target=self._pump, daemon=True, name="attach").start()

    def abandon(self) -> None:
        """The start failed: nothing will come."""
        for fd in {self.in_r, self.out_w, self.err_w, self.in_w} - {-1}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.in_w = -1
        self._finish()

    def _pump(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.out_r, selectors.EVENT_READ, 1)
        if self.err_r != self.out_r:
            sel.register(self.err_r, selectors.EVENT_READ, 2)
        while sel.get_map():
            for key, _ in sel.select():
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    continue
                self.send(key.data, data)
        self._finish()

    def send(self, stream: int, data: bytes) -> None:
        frame = data if self.tty else frame_header(stream, len(data)) + data
        with self.lock:
            for client in list(self.clients):
                conn, streams = client
                if stream not in streams:
                    continue
                try:
                    conn.sendall(frame)
                except OSError:
                    self.clients.remove(client)

    def _finish(self) -> None:
        fd, self.in_w = self.in_w, -1
        if fd >= 0:  # held open past a detach: the process has ended now
            try:
                os.close(fd)
            except OSError:
                pass
        with self.lock:
            for conn, _ in self.clients:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        self.done.set()

    def relay_stdin(self, conn: socket.socket, keys: DetachKeys) -> bool:
        """Copy what the client sends to the process's stdin until the client half-closes
        (stdin then ends, Docker's StdinOnce) or types the detach keys (stdin stays open, for
        the process and a later client). True when it detached."""
        detached = relay_input(conn, self.in_w, keys)
        if not detached:
            fd, self.in_w = self.in_w, -1
            if fd >= 0:
                os.close(fd)
        return detached


def relay_input(conn: socket.socket, fd: int, keys: DetachKeys) -> bool:
    """Copy a client's input to ``fd`` (-1: read and drop it) through the detach keys, until the
    client half-closes (False) or types them (True: the connection is then shut down both ways,
    so the client sees its session end; ``fd`` stays open)."""
    while True:
        try:
            data = conn.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        data, detached = keys.feed(data)
        if fd >= 0 and data:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                fd = -1  # the process stopped reading: keep draining for the keys
        if detached:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True


def frame_header(stream: int, length: int) -> bytes:
    """The multiplexed stream's 8-byte header: stream (0 stdin, 1 stdout, 2 stderr), three
    zeros, the payload's length big-endian."""
    return bytes((stream, 0, 0, 0)) + length.to_bytes(4, "big")


def _wanted_streams(request, default: bool) -> set[int]:
    return {n for n, name in ((1, "stdout"), (2, "stderr")) if request.flag(name, default)}


@route("POST", "/containers/{id}/attach")
def attach(request, id):
    engine = request.engine
    row = engine.container_store.get(id)
    run = json.loads(row["run_config"] or "{}")
    tty = bool(run.get("tty"))
    streams = _wanted_streams(request, False)
    wants_stdin = request.flag("stdin") and bool(run.get("open_stdin"))
    stream = request.flag("stream")
    keys = DetachKeys(detach_keys(request.arg("detachKeys")))
    cid = row["id"]
    with _attach_lock:
        attachment = None
        if stream and row["state"] != "running":
            attachment = _attachments.get(cid)
            if attachment is None or attachment.started:
                attachment = _attachments[cid] = Attachment(tty, wants_stdin)
    engine.container_store.event("attach", row)
    conn = request.hijack(request.stream_type(tty))
    request.close()  # the engine is not needed while the stream lasts
    if request.flag("logs"):
        # docker-py reads the stream from the raw socket once http.client has parsed the 101's
        # headers: bytes that arrived together with them sit in http.client's buffer, lost to
        # it (attach(stream=False, logs=True) then returned b'' 9 times in 15 here). The log is
        # there at once, so give the client a moment to take the headers alone, as Docker's
        # daemon does by writing them in a flush of their own well before the log.
        time.sleep(HEADERS_ALONE)
        _write_log(request, conn, cid, tty, streams, follow=False)
    if not stream:
        return
    if attachment is None:  # already running: its output comes from the log, from now on
        follow = threading.Thread(target=_write_log, args=(request, conn, cid, tty, streams),
                                  kwargs={"follow": True, "since": time.time()}, daemon=True,
                                  name="attach-log")
        follow.start()
        if wants_stdin:  # into the FIFO its monitor holds (-i), until the client leaves
            fd = open_stdin(engine.container_store, cid)
            try:
                if relay_input(conn, -1 if fd is None else fd, keys):
                    return  # detached: the log's follower ends at its next write
            finally:
                if fd is not None:
                    os.close(fd)
        follow.join()
        return
    attachment.add(conn, streams)
    if wants_stdin and attachment.in_w >= 0 and attachment.relay_stdin(conn, keys):
        attachment.remove(conn)
        return
    attachment.done.wait()


def _write_log(request, conn, cid, tty, streams, follow: bool, since: float = 0) -> None:
    from ..runtime.logs import entries

    engine = request.engine
    try:
        for stream, data, _ in entries(engine.container_store, cid, follow=follow, since=since):
            if stream in streams:
                conn.sendall(data if tty else frame_header(stream, len(data)) + data)
    except (OSError, NotFound):
        pass
    finally:
        request.close()


@route("POST", "/containers/{id}/start")
def start(request, id):
    from ..runtime.lifecycle import start as start_container
    from ..runtime.ownership import refresh

    if request.json(None):
        raise ApiError(400, "starting a container with a HostConfig was removed in API 1.24; "
                            "set it when creating the container")
    containers = request.engine.container_store
    row = refresh(containers, containers.get(id))
    if row["state"] == "running":
        request.send_empty(304)
        return
    with _attach_lock:
        attachment = _attachments.pop(row["id"], None)
    request.release_gate()  # the monitor's start is a process's, not ours to wait for in the gate
    try:
        start_container(containers, row["id"],
                        stdio=attachment.stdio() if attachment is not None else None)
    except BaseException:
        if attachment is not None:
            attachment.abandon()
        if json.loads(row["run_config"] or "{}").get("auto_remove"):
            from ..runtime.monitor import remove_after_run

            remove_after_run(containers, row["id"])  # as Docker does: --rm goes when start fails
        raise
    if attachment is not None:
        attachment.begin()


def _state(containers, cid: str):
    from ..runtime.ownership import refresh

    return refresh(containers, containers.get(cid))


@route("POST", "/containers/{id}/wait")
def wait(request, id):
    """Block until the container is not running (the default), until its next exit, or until it
    is removed. The 200 and its headers go out first: the docker CLI starts the container only
    once it has them."""
    condition = request.arg("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {condition!r}")
    containers = request.engine.container_store
    row = _state(containers, id)
    cid, first_finish = row["id"], row["finished"]
    writer = request.start_stream()
    code = row["exit_code"]
    delay = 0.005
    while True:
        try:
            row = _state(containers, cid)
        except NotFound:
            if condition == "removed":
                break
            code = _exit_code(request.engine, cid, code)
            break
        code = row["exit_code"]
        if condition == "not-running" and row["state"] != "running" and not (
                row["state"] == "created" and row["monitor_pid"]):
            break
        if condition == "next-exit" and row["state"] == "exited" and row["finished"] != first_finish:
            break
        if row["state"] == "running" and row["pid"]:
            from ..runtime.lifecycle import wait as wait_exit

            try:
                code = wait_exit(containers, cid)
            except NotFound:
                pass
            if condition != "removed" and json.loads(row["run_config"] or "{}").get(
                    "restart", "no") != "no":
                break  # it exited, and its restart policy may start it again (Docker's wait)
            delay = 0.005
            continue
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    if condition == "removed":
        code = _exit_code(request.engine, cid, code)
    writer.json({"StatusCode": code, "Error": None})
    writer.close()


def _exit_code(engine, cid: str, fallback: int) -> int:
    """The exit code of a container that may be gone (``--rm``: its monitor removed it)."""
    found = engine.container_store.exit_code_of_removed(cid)
    return fallback if found is None else found


@route("POST", "/containers/{id}/stop")
def stop(request, id):
    from ..runtime.lifecycle import stop as stop_container

    containers = request.engine.container_store
    row = _state(containers, id)
    if row["state"] != "running":
        request.send_empty(304)
        return
    timeout = request.int_arg("t")
    request.release_gate()
    stop_container(containers, row["id"], 10 if timeout is None or timeout < 0 else timeout)


@route("POST", "/containers/{id}/kill")
def kill(request, id):
    from ..runtime.lifecycle import kill as kill_container

    containers = request.engine.container_store
    row = _state(containers, id)
    if row["state"] != "running":
        raise FailedPrecondition(f"Cannot kill container: {id}: Container {row['id']} is not "
                                 "running")
    request.release_gate()
    from ..runtime.lifecycle import signal_number

    number = signal_number(request.arg("signal") or "KILL")
    kill_container(containers, row["id"], number)
    if number == 9:  # Docker answers a SIGKILL once the container is dead
        deadline = time.monotonic() + 10
        while _state(containers, row["id"])["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.01)


@route("POST", "/containers/{id}/restart")
def restart(request, id):
    from ..runtime.lifecycle import start as start_container
    from ..runtime.lifecycle import stop as stop_container

    containers = request.engine.container_store
    row = _state(containers, id)
    timeout = request.int_arg("t")
    request.release_gate()
    if row["state"] == "running":
        stop_container(containers, row["id"], 10 if timeout is None or timeout < 0 else timeout)
    start_container(containers, row["id"])


@route("POST", "/containers/{id}/update")
def update(request, id):
    """New limits and restart policy for a container (``docker update``)."""
    body = request.json({})
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    fields = limit_fields(body, only=("Memory", "MemorySwap", "MemoryReservation", "NanoCpus",
                                      "CpuShares", "CpusetCpus", "PidsLimit"))
    if body.get("RestartPolicy"):
        fields["restart"] = _life({}, body)["restart"]
    request.engine.update(id, **fields)
    return {"Warnings": []}


@route("POST", "/containers/{id}/pause")
def pause(request, id):
    request.engine.pause(id)
    request.send_empty(204)


@route("POST", "/containers/{id}/unpause")
def unpause(request, id):
    request.engine.unpause(id)
    request.send_empty(204)


@route("DELETE", "/containers/{id}")
def remove(request, id):
    engine = request.engine
    containers = engine.container_store
    row = _state(containers, id)
    force = request.flag("force")
    if row["state"] == "running" and not force:
        raise FailedPrecondition(
            f"cannot remove container \"/{row['name']}\": container is running: stop the "
            "container before removing or force remove")
    if row["state"] == "running":
        request.release_gate()  # it is stopped first
    engine.rm(row["id"], force=force, volumes=request.flag("v"))


# ----------------------------------------------------------------------------- logs
def _since(value: str | None) -> float:
    """Unix seconds of a ``since``/``until`` parameter (the forms ``/events`` takes); 0: none."""
    from ..events import parse_time

    try:
        nanos = parse_time(value)
    except ValueError:
        raise ApiError(400, f"invalid time: {value!r}") from None
    return 0 if nanos is None else nanos / 1e9


@route("GET", "/containers/{id}/logs")
def logs(request, id):
    from ..runtime.logs import entries

    containers = request.engine.container_store
    row = containers.get(id)
    streams = _wanted_streams(request, False)
    if not streams:
        raise ApiError(400, "You must choose at least one stream")
    run = json.loads(row["run_config"] or "{}")
    tty = bool(run.get("tty"))
    tail_text = request.arg("tail") or "all"
    if tail_text == "all":
        tail = None
    else:
        try:
            tail = int(tail_text)
        except ValueError:
            raise ApiError(400, f"invalid value for tail: {tail_text!r}") from None
        tail = None if tail < 0 else tail
    timestamps = request.flag("timestamps")
    writer = request.start_stream(request.stream_type(tty))
    for stream, data, stamp in entries(containers, row["id"], follow=request.flag("follow"),
                                       tail=tail, since=_since(request.arg("since")),
                                       until=_since(request.arg("until"))):
        if stream not in streams:
            continue
        if timestamps:
            data = stamp.encode() + b" " + data
        writer.write(data if tty else frame_header(stream, len(data)) + data)
    writer.close()
