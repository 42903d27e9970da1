"""A container's cgroup, read: where it is on this host (v1, v2 or the hybrid of both) and what
it counts (memory, CPU, PIDs, block I/O, OOM kills), in the shapes of Docker's stats API.

runc creates and removes the cgroup (cgroupfs, at the spec's ``cgroupsPath``) and writes the
limits to it (:mod:`lamina.runtime.resources`); lamina only reads it: ``lamina stats``, the
Engine API's ``/containers/{id}/stats``, and ``State.OOMKilled`` when a container ends. What
runc leaves behind (a killed runc, tasks of an OOM kill not yet gone) lamina removes: root's
``/lamina/<id>`` (:func:`remove`), and a rootless container's as noted when its runc was started
(:func:`note`, :func:`forget`).
"""

from __future__ import annotations

import os


def unified() -> bool:
    """True on a cgroup v2 host (no v1 controllers): one tree under /sys/fs/cgroup."""
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def delegated() -> set[str]:
    """The controllers whose limits a rootless container can have on this host: those of the
    cgroup under which runc (in rootless mode, given no ``cgroupsPath``) makes the container's
    own, where this user may make it, as runc and Podman find them. v1 and the hybrid: this
    process's cgroup in each controller's hierarchy, if writable (an administrator's chown);
    v2: the parent of this process's cgroup (a cgroup with processes cannot hand controllers
    down, so runc puts the container beside the caller: a systemd user slice), if writable,
    with the controllers it hands down or may hand down."""
    dirs = cgroup_dirs(os.getpid())
    if not unified():
        return {name for name, directory in dirs.items()
                if name and os.access(directory, os.W_OK)}
    parent = os.path.dirname(dirs.get("", "/sys/fs/cgroup"))
    if not parent.startswith("/sys/fs/cgroup/") or not os.access(parent, os.W_OK):
        return set()
    names = set((read_cgroup(parent, "cgroup.subtree_control") or "").split())
    if os.access(os.path.join(parent, "cgroup.subtree_control"), os.W_OK):
        names.update((read_cgroup(parent, "cgroup.controllers") or "").split())
    return names


def controllers(resources: dict) -> dict[str, set[str]]:
    """The controllers each limit of the spec's ``linux.resources`` needs (its key -> their
    names), in this host's cgroup version."""
    out = {}
    for key, value in resources.items():
        if key == "cpu":
            names = {"cpu"} if {"shares", "quota", "period"} & set(value) else set()
            out[key] = names | ({"cpuset"} if {"cpus", "mems"} & set(value) else set())
        elif key == "blockIO":
            out[key] = {"io" if unified() else "blkio"}
        elif key == "hugepageLimits":
            out[key] = {"hugetlb"}
        elif key != "devices":
            out[key] = {key}  # memory, pids
    return out


def rootless_dirs(container_id: str) -> dict[str, str]:
    """The directories of a rootless container's cgroup (see :func:`delegated`), as
    :func:`cgroup_dirs_of_path` names them; those runc could not make do not exist."""
    dirs = cgroup_dirs(os.getpid())
    if unified():
        return {"": os.path.join(os.path.dirname(dirs.get("", "/sys/fs/cgroup")), container_id)}
    return {name: os.path.join(directory, container_id) for name, directory in dirs.items()}


def cgroup_dirs_of_path(path: str) -> dict[str, str]:
    """The directories of the cgroup ``path`` (the spec's ``cgroupsPath``, cgroupfs): v1
    controller name -> directory, and ``""`` -> the v2 one."""
    if unified():
        return {"": "/sys/fs/cgroup" + path}
    out = {name: f"/sys/fs/cgroup/{name}{path}" for name in
           ("memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "freezer", "devices")}
    out[""] = "/sys/fs/cgroup/unified" + path
    return out


def container_dirs(container_id: str, store_root: str | None = None) -> dict[str, str]:
    """The directories of a container's cgroup: root's ``/lamina/<id>``; a rootless
    container's as noted when its runc was started (:func:`noted_dirs`, whichever cgroup this
    process is in), or, with no note (nothing delegated, or a container started before notes
    were kept), under this process's (:func:`rootless_dirs`)."""
    from ..userns import rootless

    if rootless():
        noted = noted_dirs(store_root, container_id) if store_root else None
        return rootless_dirs(container_id) if noted is None else noted
    return cgroup_dirs_of_path(container_path(container_id))


def running_dirs(store_root: str, container_id: str, pid: int) -> dict[str, str]:
    """The cgroup directories whose counters are those of the running container
    (``stats``): a rootless container's as noted when its runc was started (:func:`noted_dirs`:
    those of the controllers not delegated are the starting process's cgroup, shared with
    others, so not read), else those of its process ``pid``."""
    from ..userns import rootless

    noted = noted_dirs(store_root, container_id) if rootless() else None
    return cgroup_dirs(pid) if noted is None else noted


def container_path(container_id: str) -> str:
    """The cgroup of a container (the spec's ``cgroupsPath``, cgroupfs), in every hierarchy."""
    return f"/lamina/{container_id}"


def remove(path: str, patience: float = 0.5) -> None:
    """Remove the cgroup ``path`` (``/lamina/<id>``) from every hierarchy where it is left
    after ``runc delete`` (runc gives up on a directory whose dying tasks have not yet left,
    as after an OOM kill), as :func:`remove_dirs` does."""
    if unified():
        roots = ["/sys/fs/cgroup"]
    else:
        try:
            roots = [os.path.join("/sys/fs/cgroup", name) for name in os.listdir("/sys/fs/cgroup")]
        except OSError:
            return
    remove_dirs([root + path for root in roots], patience)


def remove_dirs(directories: list[str], patience: float = 0.5) -> list[str]:
    """Remove the cgroup directories (rmdir: the kernel refuses one that still has processes
    or cgroups under it). An empty directory goes at once; a busy one is retried for
    ``patience`` seconds in all, then left. Returns those left (busy, or refused)."""
    import errno
    import time

    deadline = time.monotonic() + patience
    left = []
    for directory in directories:
        while True:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                left.append(directory)
            break
    return left


def notes_dir(store_root: str) -> str:
    """Where a store notes its rootless containers' cgroups (:func:`note`), one file per
    runtime container ID, beside the runtimes' own state (``runtime/<binary>``)."""
    return os.path.join(store_root, "runtime", "cgroups")


def note(store_root: str, container_id: str) -> None:
    """Note, before this process starts runc for the rootless container ``container_id``,
    where runc will make its cgroup: runc's rootless default (no ``cgroupsPath``) is under
    runc's own cgroup, which is this process's (:func:`rootless_dirs`), in each hierarchy where
    this user may make it. :func:`forget` removes what runc leaves of it there, whichever cgroup
    the process that removes the container is in. Nothing is noted where nothing is delegated."""
    dirs = [d for d in rootless_dirs(container_id).values()
            if os.access(os.path.dirname(d), os.W_OK)]
    if not dirs:
        return
    directory = notes_dir(store_root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, container_id), "w") as f:
        f.write("".join(d + "\n" for d in dirs))


def noted_dirs(store_root: str, container_id: str) -> dict[str, str] | None:
    """The cgroup directories noted for the rootless container ``container_id`` (:func:`note`),
    named as :func:`cgroup_dirs` names them (v1 controller -> directory, ``""`` -> the v2
    one); None when nothing is noted. Only the hierarchies where runc could make the
    container's own cgroup are there: a controller that is not delegated has no directory
    (rather than the starting process's cgroup, which counts more than the container)."""
    try:
        with open(os.path.join(notes_dir(store_root), container_id)) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if unified():
        return {"": lines[0]} if lines else {}
    out = {}
    for directory in lines:
        name = directory.removeprefix("/sys/fs/cgroup/").split("/", 1)[0]
        out["" if name == "unified" else name] = directory
    return out


def forget(store_root: str, container_id: str, patience: float = 0.5) -> None:
    """Remove what is left of the cgroup noted for the rootless container ``container_id``
    (:func:`note`), after ``runc delete`` or without one (a runc killed before it wrote its
    state); the note goes once nothing noted is left. What still runs in it is the
    container's and is killed first, as ``runc delete --force`` would (a ``runc init`` whose
    runc was killed waits for ever). Idempotent."""
    import signal

    path = os.path.join(notes_dir(store_root), container_id)
    try:
        with open(path) as f:
            dirs = f.read().splitlines()
    except FileNotFoundError:
        return
    for directory in dirs:
        for pid in (read_cgroup(directory, "cgroup.procs") or "").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if not remove_dirs(dirs, patience):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def cgroup_dirs(pid: int) -> dict[str, str]:
    """The cgroup directories of the process ``pid``: v1 controller name -> directory, and
    ``""`` -> its unified (v2) directory, as /proc/PID/cgroup names them."""
    out = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    pure_v2 = unified()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            out[""] = ("/sys/fs/cgroup" if pure_v2 else "/sys/fs/cgroup/unified") + path
            continue
        for name in controllers.split(","):
            name = name.removeprefix("name=")
            out[name] = f"/sys/fs/cgroup/{name}{path}"
    return out


def read_cgroup(directory: str | None, name: str) -> str | None:
    """The text of the cgroup file ``name`` in ``directory``; None when absent."""
    if directory is None:
        return None
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return None


def pairs(text: str | None) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events) as a dict of numbers."""
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def oom_kills(dirs: dict[str, str]) -> int:
    """How many processes of the cgroup the kernel's OOM killer has killed (v1's
    memory.oom_control, v2's memory.events ``oom_kill``)."""
    v1 = read_cgroup(dirs.get("memory"), "memory.oom_control")
    if v1 is not None:
        return pairs(v1).get("oom_kill", 0)
    return pairs(read_cgroup(dirs.get(""), "memory.events")).get("oom_kill", 0)


# ---------------------------------------------------------------------------------- usage
BLKIO_KEYS = ("io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
               "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
               "io_time_recursive", "sectors_recursive")


def number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def host_cpu() -> tuple[int, int]:
    """The host's CPU time since boot in nanoseconds and its CPUs, from /proc/stat (Docker's
    ``system_cpu_usage`` and ``online_cpus``)."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    fields = lines[0].split()[1:8]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return sum(int(v) for v in fields) * 1_000_000_000 // os.sysconf("SC_CLK_TCK"), cpus


def host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def blkio(dirs: dict[str, str]) -> dict:
    doc = dict.fromkeys(BLKIO_KEYS)
    entries = []
    v1 = read_cgroup(dirs.get("blkio"), "blkio.throttle.io_service_bytes_recursive")
    if v1 is not None:
        for line in v1.splitlines():
            parts = line.split()
            if len(parts) == 3 and ":" in parts[0]:
                major, minor = parts[0].split(":")
                entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                                "value": int(parts[2])})
    else:
        for line in (read_cgroup(dirs.get(""), "io.stat") or "").splitlines():
            device, *counters = line.split()
            major, _, minor = device.partition(":")
            values = dict(c.split("=", 1) for c in counters if "=" in c)
            for op, key in (("read", "rbytes"), ("write", "wbytes")):
                if key in values:
                    entries.append({"major": int(major), "minor": int(minor), "op": op,
                                    "value": int(values[key])})
    doc["io_service_bytes_recursive"] = entries or None
    return doc


def cpu(dirs: dict[str, str]) -> dict:
    v1 = dirs.get("cpuacct")
    total = number(read_cgroup(v1, "cpuacct.usage"))
    if total is not None:
        percpu = [int(v) for v in (read_cgroup(v1, "cpuacct.usage_percpu") or "").split()]
        ticks = pairs(read_cgroup(v1, "cpuacct.stat"))
        per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        usage = {"total_usage": total, "percpu_usage": percpu,
                 "usage_in_kernelmode": ticks.get("system", 0) * per_tick,
                 "usage_in_usermode": ticks.get("user", 0) * per_tick}
        throttling = pairs(read_cgroup(dirs.get("cpu"), "cpu.stat"))
        throttled = {"periods": throttling.get("nr_periods", 0),
                     "throttled_periods": throttling.get("nr_throttled", 0),
                     "throttled_time": throttling.get("throttled_time", 0)}
    else:
        stat_v2 = pairs(read_cgroup(dirs.get(""), "cpu.stat"))
        usage = {"total_usage": stat_v2.get("usage_usec", 0) * 1000,
                 "usage_in_kernelmode": stat_v2.get("system_usec", 0) * 1000,
                 "usage_in_usermode": stat_v2.get("user_usec", 0) * 1000}
        throttled = {"periods": stat_v2.get("nr_periods", 0),
                     "throttled_periods": stat_v2.get("nr_throttled", 0),
                     "throttled_time": stat_v2.get("throttled_usec", 0) * 1000}
    system, cpus = host_cpu()
    return {"cpu_usage": usage, "system_cpu_usage": system, "online_cpus": cpus,
            "throttling_data": throttled}


def memory(dirs: dict[str, str]) -> dict:
    v1 = dirs.get("memory")
    usage = number(read_cgroup(v1, "memory.usage_in_bytes"))
    machine = host_memory()
    if usage is not None:
        limit = number(read_cgroup(v1, "memory.limit_in_bytes")) or machine
        doc = {"usage": usage, "max_usage": number(read_cgroup(v1, "memory.max_usage_in_bytes")) or 0,
               "stats": pairs(read_cgroup(v1, "memory.stat")),
               "failcnt": number(read_cgroup(v1, "memory.failcnt")) or 0}
    else:
        unified = dirs.get("")
        usage = number(read_cgroup(unified, "memory.current"))
        if usage is None:
            return {}
        limit = number(read_cgroup(unified, "memory.max")) or machine  # "max": none
        doc = {"usage": usage, "stats": pairs(read_cgroup(unified, "memory.stat"))}
    doc["limit"] = min(limit, machine) if machine else limit  # unlimited: the host's memory
    return doc


def pids(dirs: dict[str, str]) -> dict:
    directory = dirs.get("pids") or dirs.get("")
    current = number(read_cgroup(directory, "pids.current"))
    if current is None:
        return {}
    limit = number(read_cgroup(directory, "pids.max"))
    return {"current": current, **({"limit": limit} if limit is not None else {})}


def zero_cpu() -> dict:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def usage(dirs: dict[str, str]) -> dict:
    """The Engine API's stats fields for the cgroup ``dirs``: ``pids_stats``, ``blkio_stats``,
    ``cpu_stats``, ``memory_stats``."""
    return {"pids_stats": pids(dirs), "blkio_stats": blkio(dirs), "cpu_stats": cpu(dirs),
            "memory_stats": memory(dirs)}
