"""Engine API: the server itself and the store as a whole (``_ping``, ``version``, ``info``,
``system/df``)."""

from __future__ import annotations

import os
import platform

from .. import __version__
from .server import API_VERSION, MIN_API_VERSION, route

_PING_HEADERS = {"Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate",
                 "Pragma": "no-cache", "Swarm": "inactive"}


@route("GET", "/_ping")
def ping(request):
    request.send_bytes(200, b"OK", "text/plain; charset=utf-8", _PING_HEADERS)


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


@route("GET", "/version")
def version(request):
    kernel = platform.release()
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
               "GoVersion": f"python{platform.python_version()}", "Os": "linux", "Arch": _arch(),
               "KernelVersion": kernel, "BuildTime": "", "Experimental": "false"}
    return {
        "Platform": {"Name": f"lamina {__version__}"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "", "GoVersion": details["GoVersion"], "Os": "linux", "Arch": _arch(),
        "KernelVersion": kernel, "BuildTime": "",
    }


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


@route("GET", "/info")
def info(request):
    import socket

    engine = request.engine
    rows = engine.containers(all=True)
    states = [r["State"] for r in rows]
    counts = engine.counts()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    runtime = os.environ.get("LAMINA_RUNTIME") or "runc"
    return {
        "ID": _server_id(engine.root), "Containers": len(rows),
        "ContainersRunning": states.count("running"), "ContainersPaused": 0,
        "ContainersStopped": len(rows) - states.count("running"), "Images": counts["Images"],
        "Driver": engine.driver,
        "DriverStatus": [["Backing Filesystem", _filesystem(engine.root)],
                         ["Layers", str(counts["Layers"])]],
        "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": None,
                    "Log": ["json-file"]},
        "MemoryLimit": False, "SwapLimit": False, "KernelMemoryTCP": False,
        "CpuCfsPeriod": False, "CpuCfsQuota": False, "CPUShares": False, "CPUSet": False,
        "PidsLimit": False, "IPv4Forwarding": False, "BridgeNfIptables": False,
        "BridgeNfIp6tables": False, "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": False, "NGoroutines": 0, "SystemTime": _now(),
        "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
        "CgroupVersion": _cgroup_version(), "NEventsListener": 0,
        "KernelVersion": platform.release(), "OperatingSystem": _os_name(), "OSVersion": "",
        "OSType": "linux", "Architecture": platform.machine(), "IndexServerAddress": "",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": None,
                           "AllowNondistributableArtifactsHostnames": None,
                           "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                           "Mirrors": None},
        "NCPU": os.cpu_count() or 1, "MemTotal": memory, "GenericResources": None,
        "DockerRootDir": engine.root, "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""), "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
        "ServerVersion": __version__, "Runtimes": {runtime: {"path": runtime}},
        "DefaultRuntime": runtime,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=cgroupns"] if _cgroup_version() == "2" else [],
        "Warnings": None,
    }


def _now() -> str:
    import time

    from ..image import rfc3339

    return rfc3339(time.time())


def _server_id(root: str) -> str:
    """A stable ID for this store (Docker's is its engine's key fingerprint)."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(root).encode()).hexdigest().upper()
    return ":".join(digest[i:i + 4] for i in range(0, 48, 4))


def _filesystem(path: str) -> str:
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and path.startswith(fields[1]) and len(fields[1]) > len(best):
                    best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


@route("GET", "/system/df")
def disk_usage(request):
    """Images (each layer counted once), containers with their sizes, volumes with UsageData
    (the docker CLI needs it), the build cache."""
    from . import containers, images, volumes

    engine = request.engine
    df = engine.system_df()
    per_image = {}
    for c in df["Containers"]:
        per_image[c["ImageID"]] = per_image.get(c["ImageID"], 0) + 1
    layers_size = next(s["Size"] for s in df["Summary"] if s["Type"] == "Images")
    return {
        "LayersSize": layers_size,
        "Images": images.image_summaries(engine, per_image, shared=True),
        "Containers": [containers.summary(c, True) for c in df["Containers"]],
        "Volumes": volumes.volume_documents(engine, usage=True),
        "BuildCache": [],
    }
