"""Resource limits of a container: memory, CPU, PIDs and rlimits, and what its cgroup says.

The flags are Docker's (``--memory``, ``--memory-swap``, ``--memory-reservation``, ``--cpus``,
``--cpu-shares``, ``--cpuset-cpus``, ``--pids-limit``, ``--ulimit``); their values live in the
container's :class:`lamina.runtime.oci.RunConfig` as numbers (bytes, nano-CPUs), and reach the
runtime as the OCI spec's ``linux.resources`` and ``process.rlimits`` (:func:`apply`). runc
writes them to the cgroup, v1 or v2, whichever this host has: lamina only reads the cgroup
(:func:`cgroup_dirs`, :func:`oom_killed`, the stats of :mod:`lamina.runtime.cgroups`).

:func:`parse_size`, :func:`parse_cpus` and :func:`parse_ulimit` read the command line's text
with Docker's errors; :func:`validate` refuses what Docker's daemon refuses, with its messages,
before anything is created.
"""

from __future__ import annotations

import os

from ..errors import InvalidArgument

MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum for --memory and --memory-reservation
CFS_PERIOD = 100_000  # microseconds: the period --cpus is a share of, as Docker's
UNLIMITED = 2**64 - 1  # an rlimit of -1 (RLIM_INFINITY)
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
           "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


class FlagError(InvalidArgument):
    """A flag's value that cannot be read: Docker's CLI message, exit 125."""

    exit_code = 125

    def __init__(self, value: str, flag: str, reason: str):
        super().__init__(f'invalid argument "{value}" for "{flag}" flag: {reason}')


class ResourceError(InvalidArgument):
    """A limit Docker's daemon refuses (exit 125 from run and create)."""

    exit_code = 125


# ---------------------------------------------------------------------------------- parsing
def parse_size(text: str, flag: str = "-m, --memory", allow_unlimited: bool = False) -> int:
    """``32m``, ``1.5g``, ``100000`` (bytes; k, m, g, t, p are powers of 1024, an optional
    ``b``/``ib`` suffix) -> bytes; ``-1`` with ``allow_unlimited`` (``--memory-swap``)."""
    value = text.strip()
    if allow_unlimited and value == "-1":
        return -1
    lowered = value.lower().removesuffix("b").removesuffix("i")
    unit = lowered[-1:] if lowered[-1:] in _UNITS and lowered[-1:] else ""
    number = lowered[:-1].rstrip() if unit else lowered
    try:
        if not number or not number.replace(".", "", 1).isdigit():
            raise ValueError
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise FlagError(text, flag, f"invalid size: '{text}'") from None


def parse_cpus(text: str) -> int:
    """``--cpus 0.5`` -> nano-CPUs (500000000); ``1/2`` too, as Docker's rational numbers."""
    from fractions import Fraction

    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise FlagError(text, "--cpus", f"failed to parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise FlagError(text, "--cpus", "value is too precise")
    return int(nano)


def parse_int(text: str, flag: str) -> int:
    """An integer flag (``--pids-limit``, ``--cpu-shares``) with Go's parse error."""
    try:
        return int(text.strip())
    except ValueError:
        raise FlagError(text, flag, f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """``--ulimit NAME=SOFT[:HARD]`` -> (name, soft, hard); -1 is unlimited."""
    name, sep, values = text.partition("=")
    if not sep:
        raise FlagError(text, "--ulimit", f"invalid ulimit argument: {text}")
    if name not in ULIMITS:
        raise FlagError(text, "--ulimit", f"invalid ulimit type: {name}")
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise FlagError(text, "--ulimit", f"invalid ulimit value: {values}") from None
    if soft != -1 and hard != -1 and soft > hard:
        raise FlagError(text, "--ulimit", "ulimit soft limit must be less than or equal to hard "
                                          f"limit: {soft} > {hard}")
    return name, soft, hard


def cpu_list(text: str) -> set[int] | None:
    """``0-2,5`` -> {0, 1, 2, 5}; None if it is not a CPU list."""
    out: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        if dash and int(high) < int(low):
            return None
        out.update(range(int(low), int(high if dash else low) + 1))
    return out


# ---------------------------------------------------------------------------------- checking
def validate(config) -> dict:
    """The limit fields of ``config`` (a RunConfig) as Docker's daemon settles them: errors
    for what it refuses, and the defaults it fills in (``--memory`` alone allows as much swap
    again: MemorySwap is twice Memory; CPU shares clamped to 2..262144). Returns the fields to
    replace in the RunConfig (empty when nothing changes)."""
    memory, swap = config.memory, config.memory_swap
    reservation = config.memory_reservation
    if config.shm_size < 0:
        raise ResourceError("SHM size can not be less than 0")
    if memory < 0 or reservation < 0:
        raise ResourceError("Minimum memory limit allowed is 6MB")
    if memory and memory < MIN_MEMORY:
        raise ResourceError("Minimum memory limit allowed is 6MB")
    if swap > 0 and not memory:
        raise ResourceError("You should always set the Memory limit when using Memoryswap "
                            "limit, see usage")
    if memory and swap > 0 and swap < memory:
        raise ResourceError("Minimum memoryswap limit should be larger than memory limit, see "
                            "usage")
    if reservation and reservation < MIN_MEMORY:
        raise ResourceError("Minimum memory reservation allowed is 6MB")
    if memory and reservation and memory < reservation:
        raise ResourceError("Minimum memory limit can not be less than memory reservation "
                            "limit, see usage")
    cpus = os.cpu_count() or 1
    if config.nano_cpus < 0 or config.nano_cpus > cpus * 1_000_000_000:
        raise ResourceError(f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} "
                            "CPUs available")
    if config.cpuset_cpus:
        wanted = cpu_list(config.cpuset_cpus)
        if wanted is None:
            raise ResourceError(f"Invalid value {config.cpuset_cpus} for cpuset cpus: invalid "
                                f"format: {config.cpuset_cpus}")
        available = _online_cpus()
        if not wanted <= available:
            missing = ",".join(str(c) for c in sorted(wanted - available))
            raise ResourceError(f"Requested CPUs are not available - requested {missing}, "
                                f"available: {_cpu_ranges(available)}")
    changes: dict = {}
    if memory and not swap:
        changes["memory_swap"] = memory * 2
    if config.cpu_shares and not 2 <= config.cpu_shares <= 262144:
        changes["cpu_shares"] = min(max(config.cpu_shares, 2), 262144)
    return changes


def _online_cpus() -> set[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return cpu_list(f.read().strip()) or set(range(os.cpu_count() or 1))
    except OSError:
        return set(range(os.cpu_count() or 1))


def _cpu_ranges(cpus: set[int]) -> str:
    ranges, ordered = [], sorted(cpus)
    start = previous = ordered[0]
    for cpu in ordered[1:] + [None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        ranges.append(f"{start}-{previous}" if previous != start else str(start))
        if cpu is not None:
            start = previous = cpu
    return ",".join(ranges)


# ---------------------------------------------------------------------------------- the spec
def shm_size(spec: dict, config) -> None:
    """``--shm-size``: the size of the spec's /dev/shm tmpfs."""
    if config.shm_size:
        for mount in spec["mounts"]:
            if mount["destination"] == "/dev/shm":
                mount["options"] = [o for o in mount["options"] if not o.startswith("size=")] + [
                    f"size={config.shm_size}"]


def linux_resources(config) -> dict:
    """The OCI ``linux.resources`` entries (memory, cpu, pids) for ``config``'s limits."""
    out: dict = {}
    memory: dict = {}
    if config.memory:
        memory["limit"] = config.memory
    if config.memory_reservation:
        memory["reservation"] = config.memory_reservation
    if config.memory_swap and swap_accounting():
        memory["swap"] = config.memory_swap
    if memory:
        out["memory"] = memory
    cpu: dict = {}
    if config.cpu_shares:
        cpu["shares"] = config.cpu_shares
    if config.nano_cpus:
        cpu["period"] = CFS_PERIOD
        cpu["quota"] = config.nano_cpus * CFS_PERIOD // 1_000_000_000
    if config.cpuset_cpus:
        cpu["cpus"] = config.cpuset_cpus
    if cpu:
        out["cpu"] = cpu
    if config.pids_limit:
        out["pids"] = {"limit": config.pids_limit if config.pids_limit > 0 else -1}
    return out


def rlimits(config, defaults: list[dict]) -> list[dict]:
    """``process.rlimits``: the defaults (lamina's open-files limit) with ``--ulimit`` on top."""
    given = {f"RLIMIT_{name.upper()}": (soft, hard) for name, soft, hard in config.ulimits}
    out = [r for r in defaults if r["type"] not in given]
    for kind, (soft, hard) in given.items():
        out.append({"type": kind, "soft": UNLIMITED if soft < 0 else soft,
                    "hard": UNLIMITED if hard < 0 else hard})
    return out


def swap_accounting() -> bool:
    """Whether the kernel can limit swap (cgroup v1 needs swapaccount; v2 has memory.swap.max
    wherever swap is configured): Docker drops the swap limit with a warning otherwise."""
    from .cgroups import unified

    if unified():
        return True
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
