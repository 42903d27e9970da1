"""Verbs on a running container's cgroup: ``update`` (new limits, ``runc update``), ``pause``
and ``unpause`` (``runc pause``/``resume``: the cgroup freezer), and ``stats`` (its use of
memory, CPU, PIDs, network and disks, as Docker's ``stats`` prints it)."""

from __future__ import annotations

import time

from .. import cjson
from ..errors import FailedPrecondition
from . import cgroups
from .oci import RunConfig, Runtime
from .ownership import refresh

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore


def _runtime_call(runtime: Runtime, *args: str, stdin: bytes | None = None) -> None:
    import subprocess

    proc = subprocess.run(runtime.command(*args), input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise FailedPrecondition(lines[-1] if lines else f"{runtime.name} {args[0]} failed")


def settle_limits(config: RunConfig) -> RunConfig:
    """``config`` with its limits and privileges checked as Docker's daemon checks them
    (:func:`lamina.runtime.resources.validate`, unknown capabilities) and its defaults filled in
    (MemorySwap twice Memory...)."""
    from . import resources, security

    security.check_capabilities(config.cap_add, "CapAdd")
    security.check_capabilities(config.cap_drop, "CapDrop")
    for host, inside, _ in config.devices:
        security.device_entry(host, inside)
    changes = resources.validate(config)
    config = RunConfig(**{**config.__dict__, **changes}) if changes else config
    from .rootless import check_limits

    check_limits(resources.linux_resources(config))
    return config


def update(containers: ContainerStore, name: str, **fields) -> str:
    """New limits (RunConfig fields: memory, memory_swap, memory_reservation, nano_cpus,
    cpu_shares, cpuset_cpus, pids_limit) for the container: kept for its next start, and
    written to its cgroup now if it runs. Docker's checks; its name back. A new ``restart``
    policy is followed from the process's next exit (its monitor reads it then) when the
    container was started with one, else from its next start."""
    from . import resources

    row = refresh(containers, containers.get(name))
    config = RunConfig.from_json(row["run_config"])
    memory = fields.get("memory")
    if memory and "memory_swap" not in fields and 0 < config.memory_swap < memory:
        raise resources.ResourceError("Memory limit should be smaller than already set "
                                      "memoryswap limit, update the memoryswap at the same time")
    new = settle_limits(RunConfig(**{**config.__dict__, **fields}))
    if new.restart != config.restart and new.auto_remove and new.restart not in ("", "no"):
        from ..errors import InvalidArgument

        raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled "
                              "for the container")
    if row["state"] == "running" and row["pid"] and set(fields) - {"restart"}:
        runtime = Runtime(containers.store.root, config.runtime)
        limits = resources.linux_resources(new)
        _runtime_call(runtime, "update", "--resources", "-", row["id"],
                      stdin=cjson.dumps(limits).encode())
    containers.record(row["id"], run_config=new.to_json())
    containers.event("update", row)
    return name


def _running(containers: ContainerStore, name: str):
    row = refresh(containers, containers.get(name))
    if row["state"] != "running" or not row["pid"]:
        raise FailedPrecondition(f"Container {row['id']} is not running")
    return row


def pause(containers: ContainerStore, name: str) -> str:
    """Freeze every process of the container (Docker's ``pause``)."""
    row = _running(containers, name)
    if row["paused"]:
        raise FailedPrecondition(f"Container {row['id']} is already paused")
    config = RunConfig.from_json(row["run_config"])
    _runtime_call(Runtime(containers.store.root, config.runtime), "pause", row["id"])
    containers.record(row["id"], paused=1)
    containers.event("pause", row)
    return row["id"]


def unpause(containers: ContainerStore, name: str) -> str:
    """Thaw a paused container."""
    row = _running(containers, name)
    if not row["paused"]:
        raise FailedPrecondition(f"Container {row['id']} is not paused")
    resume(containers, row)
    containers.event("unpause", row)
    return row["id"]


def resume(containers: ContainerStore, row) -> None:
    """Thaw the container ``row`` (``unpause``; ``stop`` and ``kill`` of a paused one)."""
    config = RunConfig.from_json(row["run_config"])
    _runtime_call(Runtime(containers.store.root, config.runtime), "resume", row["id"])
    containers.record(row["id"], paused=0)


# ---------------------------------------------------------------------------------- stats
_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", None, None, None, None,
               "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def interfaces(pid: int) -> dict[str, dict[str, int]]:
    """The counters of the interfaces (but lo) of the process's network namespace, as the
    stats API's ``networks``: name -> rx_bytes, rx_packets... tx_dropped."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() != "lo":
            out[name.strip()] = {key: int(value) for key, value in zip(_NET_FIELDS, counters.split())
                                 if key is not None}
    return out


def sample(containers: ContainerStore, row) -> dict | None:
    """The cgroup's counters for the running container ``row`` now; None if it does not run."""
    if row["state"] != "running" or not row["pid"]:
        return None
    dirs = cgroups.running_dirs(containers.store.root, row["id"], row["pid"])
    if not dirs:
        return None
    doc = cgroups.usage(dirs)
    network = cjson.loads(row["run_config"] or "{}").get("network", "none")
    doc["networks"] = {} if network == "host" else interfaces(row["pid"])
    return doc


def stats_row(row, now: dict | None, before: dict | None) -> dict:
    """A ``stats`` line (Docker's fields: ID, Name, CPUPerc, MemUsage, MemPerc, NetIO,
    BlockIO, PIDs) from two samples of the container (the CPU share is over the time between
    them)."""
    cpu_percent = memory_percent = 0.0
    usage = limit = received = sent = read = written = pids = 0
    if now is not None:
        cpu_now = now["cpu_stats"]
        if before is not None:
            cpu_delta = cpu_now["cpu_usage"]["total_usage"] - before["cpu_stats"]["cpu_usage"][
                "total_usage"]
            system_delta = cpu_now["system_cpu_usage"] - before["cpu_stats"]["system_cpu_usage"]
            if cpu_delta > 0 and system_delta > 0:
                cpu_percent = cpu_delta / system_delta * cpu_now["online_cpus"] * 100
        memory = now["memory_stats"]
        usage, limit = memory.get("usage", 0), memory.get("limit", 0)
        stat = memory.get("stats") or {}
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        if inactive < usage:
            usage -= inactive  # Docker leaves out the page cache that can be dropped at once
        memory_percent = usage / limit * 100 if limit else 0.0
        received = sum(n["rx_bytes"] for n in now["networks"].values())
        sent = sum(n["tx_bytes"] for n in now["networks"].values())
        for entry in now["blkio_stats"].get("io_service_bytes_recursive") or ():
            if entry["op"].lower() == "read":
                read += entry["value"]
            elif entry["op"].lower() == "write":
                written += entry["value"]
        pids = now["pids_stats"].get("current", 0)
    from ..humanize import binary_size, size

    return {"BlockIO": f"{size(read)} / {size(written)}",
            "CPUPerc": f"{cpu_percent:.2f}%", "Container": row["name"], "ID": row["id"],
            "MemPerc": f"{memory_percent:.2f}%",
            "MemUsage": f"{binary_size(usage)} / {binary_size(limit)}", "Name": row["name"],
            "NetIO": f"{size(received)} / {size(sent)}", "PIDs": str(pids)}


def stats(containers: ContainerStore, names: list[str] | None = None, all: bool = False,
          interval: float = 1.0, previous: dict | None = None) -> tuple[list[dict], dict]:
    """``stats`` lines of the named containers (default: the running ones; ``all``: every
    one), their CPU share measured over ``interval`` seconds, or since ``previous`` (the
    samples this returned last time: ``stats`` without ``--no-stream``). Returns the lines and
    the samples."""
    if names:
        rows = [refresh(containers, containers.get(n)) for n in names]
    else:
        rows = [refresh(containers, containers.get(r["ID"])) for r in containers.list(all=all)]
    first = {r["id"]: sample(containers, r) for r in rows}
    if previous is None and any(first.values()) and interval:
        time.sleep(interval)
        previous, first = first, {r["id"]: sample(containers, r) for r in rows}
    previous = previous or {}
    lines = [stats_row(r, first[r["id"]], previous.get(r["id"])) for r in rows]
    return lines, first
