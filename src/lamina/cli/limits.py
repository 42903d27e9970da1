"""``lamina stats``, ``update``, ``pause`` and ``unpause``, and the limit and privilege flags
that ``run`` and ``create`` share (:data:`LIMIT_ARGS`, read by :func:`limit_fields`): Docker's
flags and columns over :mod:`lamina.runtime.resources`, :mod:`lamina.runtime.security` and
:mod:`lamina.runtime.control`."""

import sys

from .common import UsageError, each, open_engine

# Flags of run and create (and, the first eight, of update).
LIMIT_ARGS = (
    ("-m --memory", "bytes", "Memory limit"),
    ("--memory-reservation", "bytes", "Memory soft limit"),
    ("--memory-swap", "bytes", "Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    ("--cpus", "decimal", "Number of CPUs"),
    ("-c --cpu-shares", "int", "CPU shares (relative weight)"),
    ("--cpuset-cpus", "string", "CPUs in which to allow execution (0-3, 0,1)"),
    ("--pids-limit", "int", "Tune container pids limit (set -1 for unlimited)"),
    ("--shm-size", "bytes", "Size of /dev/shm (default 64MiB)"),
    ("--ulimit", "list", "Ulimit options (NAME=SOFT[:HARD])"),
    ("--cap-add", "list", "Add Linux capabilities"),
    ("--cap-drop", "list", "Drop Linux capabilities"),
    ("--group-add", "list", "Add additional groups to join"),
    ("--privileged", "bool", "Give extended privileges to this container"),
    ("--security-opt", "list", "Security Options (seccomp=unconfined|FILE, no-new-privileges)"),
    ("--device", "list", "Add a host device to the container (HOST[:CONTAINER][:rwm])"),
)
UPDATE_FLAGS = ("memory", "memory_reservation", "memory_swap", "cpus", "cpu_shares",
                "cpuset_cpus", "pids_limit")

ARGS = {
    "stats": (
        ("containers", "*", "[CONTAINER...]"),
        ("-a --all", "bool", "Show all containers (default shows just running)"),
        ("--format", "string", "Format: 'table', 'table TEMPLATE', 'json' or a Go template"),
        ("--no-stream", "bool", "Disable streaming stats and only pull the first result"),
        ("--no-trunc", "bool", "Do not truncate output"),
    ),
    "update": (("containers", "+", "CONTAINER [CONTAINER...]"),) + LIMIT_ARGS[:7] + (
        ("--restart", "string", "Restart policy to apply when a container exits"),),
    "pause": (("containers", "+", "CONTAINER [CONTAINER...]"),),
    "unpause": (("containers", "+", "CONTAINER [CONTAINER...]"),),
}


def limit_fields(a, only=None) -> dict:
    """The RunConfig fields that the flags of :data:`LIMIT_ARGS` given in ``a`` set."""
    names = [f[0].split()[-1].lstrip("-").replace("-", "_") for f in LIMIT_ARGS]
    if not any(getattr(a, name, None) for name in names):
        return {}  # create's hot path imports nothing more
    from ..runtime import resources, security

    out: dict = {}
    if a.memory is not None:
        out["memory"] = resources.parse_size(a.memory)
    if a.memory_reservation is not None:
        out["memory_reservation"] = resources.parse_size(a.memory_reservation,
                                                         "--memory-reservation")
    if a.memory_swap is not None:
        out["memory_swap"] = resources.parse_size(a.memory_swap, "--memory-swap",
                                                  allow_unlimited=True)
    if a.cpus is not None:
        out["nano_cpus"] = resources.parse_cpus(a.cpus)
    if a.cpu_shares is not None:
        out["cpu_shares"] = resources.parse_int(a.cpu_shares, "-c, --cpu-shares")
    if a.cpuset_cpus is not None:
        out["cpuset_cpus"] = a.cpuset_cpus
    if a.pids_limit is not None:
        out["pids_limit"] = resources.parse_int(a.pids_limit, "--pids-limit")
    if only is not None:
        return out
    if a.shm_size is not None:
        out["shm_size"] = resources.parse_size(a.shm_size, "--shm-size")
    if a.ulimit:
        out["ulimits"] = tuple(resources.parse_ulimit(u) for u in a.ulimit)
    if a.cap_add:
        out["cap_add"] = tuple(a.cap_add)
    if a.cap_drop:
        out["cap_drop"] = tuple(a.cap_drop)
    if a.group_add:
        out["group_add"] = tuple(a.group_add)
    if a.privileged:
        out["privileged"] = True
    if a.device:
        out["devices"] = tuple(security.parse_device(d) for d in a.device)
    if a.security_opt:
        out["security_opt"] = security.security_options(a.security_opt)
    return out


# ---------------------------------------------------------------------------------- verbs
def cmd_update(opts, a):
    fields = limit_fields(a, only=UPDATE_FLAGS)
    if a.restart is not None:
        from ..runtime.restart import RestartPolicy

        fields["restart"] = str(RestartPolicy.parse(a.restart))
    if not fields:
        raise UsageError("you must provide one or more flags when using this command")
    engine = open_engine(opts)
    each(a.containers, lambda name: print(engine.update(name, **fields)))


def cmd_pause(opts, a):
    engine = open_engine(opts)
    each(a.containers, lambda name: print(engine.pause(name) and name))


def cmd_unpause(opts, a):
    engine = open_engine(opts)
    each(a.containers, lambda name: print(engine.unpause(name) and name))


COLUMNS = {"ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
           "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
HEADERS = {**COLUMNS, "Container": "CONTAINER"}
TABLE = "table " + "\t".join("{{." + key + "}}" for key in COLUMNS)


def stats_lines(rows: list[dict], fmt: str) -> list[str]:
    """``stats`` rows as Docker prints them: ``table [TEMPLATE]`` (its columns by default), one
    JSON object a line (``json``), or a Go template of the fields."""
    import io
    import re
    from contextlib import redirect_stdout

    from .common import json_lines

    if fmt == "table":
        fmt = TABLE
    out = io.StringIO()
    with redirect_stdout(out):
        json_lines(rows, fmt)
    lines = out.getvalue().splitlines()
    if fmt.startswith("table") and lines:
        # json_lines made the header from the field names: Docker's titles instead, columns
        # realigned to them
        fields = re.findall(r"\{\{\s*\.([A-Za-z]+)\s*\}\}", fmt)
        cells = [[HEADERS.get(f, f.upper()) for f in fields]]
        cells += [[str(row[f]) for f in fields] for row in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(fields))]
        lines = ["   ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
                 for row in cells]
    return lines


def cmd_stats(opts, a):
    import time

    engine = open_engine(opts)
    names = a.containers or None
    samples = None
    while True:
        rows, samples = engine.stats(names, all=a.all, previous=samples)
        if not a.no_trunc:
            for row in rows:
                row["ID"] = row["ID"][:12]
        if not a.no_stream:
            sys.stdout.write("\x1b[2J\x1b[H")  # Docker's stream redraws the screen
        for line in stats_lines(rows, a.format or "table"):
            print(line)
        sys.stdout.flush()
        if a.no_stream:
            break
        time.sleep(1)
