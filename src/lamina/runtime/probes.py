"""Health probes of a container as execs (:mod:`lamina.runtime.health` has the rules): the
container's check, the process a probe runs as, one probe with Docker's exec events around it
(a Python monitor's), and :func:`relay_check`, what ``lamina-relay`` needs to run the probes
itself (:mod:`lamina.runtime.relay`): no interpreter starts for a probe of a relayed container.
"""

from __future__ import annotations

import os

from .. import cjson
from .oci import RunConfig, Runtime

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore


def probe_of_container(containers: ContainerStore, row, config: RunConfig):
    """The container's health check (a :class:`lamina.runtime.health.Probe`), or None."""
    from .health import probe_of

    image_config = containers.images.config(row["image_id"]).get("config") or {}
    return probe_of(config.healthcheck, image_config)


def bundle_process(bundle: str) -> dict:
    """The runtime spec's process of the bundle: the container's user, env, working directory
    (what a probe runs with)."""
    with open(os.path.join(bundle, "config.json")) as f:
        return cjson.load(f)["process"]


def exec_with_events(containers: ContainerStore, row, runtime: Runtime, process: dict,
                     argv: list[str], timeout: float) -> tuple[int, str]:
    """Run one probe in the container as an exec, with Docker's exec events around it."""
    from .health import exec_probe

    exec_id, line = os.urandom(32).hex(), exec_line(argv)
    containers.event(f"exec_create: {line}", row, execID=exec_id)
    containers.event(f"exec_start: {line}", row, execID=exec_id)
    code, output = exec_probe(runtime, row["id"], containers.store.bundle_dir(row["id"]),
                              process, argv, timeout)
    containers.event("exec_die", row, execID=exec_id, exitCode=code)
    return code, output


def exec_line(argv: list[str]) -> str:
    """The command of a probe's exec events as Docker writes it: the executable, a space and the
    arguments (``/bin/true `` for one without any)."""
    return f"{argv[0]} {' '.join(argv[1:])}"


def relay_check(containers: ContainerStore, row, runtime: Runtime, probe, started: float) -> list[str]:
    """The relay's options (``relay.c``'s -c, -t, ...) that run the probe ``probe`` (a
    :class:`lamina.runtime.health.Probe`) of the container's process started at ``started``
    (seconds): the runtime's exec of it with the container's user, env and working directory
    (the process file written here, in the bundle), where the relay keeps the health and writes
    the events, and Docker's timings and message."""
    from .. import events, runstate
    from .health import timed_out

    bundle = containers.store.bundle_dir(row["id"])
    paths = {name: os.path.join(bundle, f"health-{name}") for name in ("process.json", "pid",
                                                                        "runtime.log")}
    with open(paths["process.json"], "w") as f:
        cjson.dump({**bundle_process(bundle), "args": list(probe.argv), "terminal": False}, f)
    command = runtime.command("exec", "--process", paths["process.json"], "--pid-file",
                              paths["pid"], row["id"], log=paths["runtime.log"])
    options = ["-c", str(max(1, round(probe.interval * 1000))),
               "-t", str(max(1, round(probe.timeout * 1000))), "-r", str(probe.retries),
               "-s", str(round(probe.start_period * 1000)), "-S", str(round(started * 1000)),
               "-P", paths["pid"], "-L", paths["runtime.log"],
               "-H", os.path.join(bundle, runstate.RELAYED_HEALTH),
               "-M", timed_out(probe.timeout), "-J", os.path.join(containers.store.root, events.LOG),
               "-A", events.actor_prefix(row["id"], containers.event_attributes(row)),
               "-x", exec_line(probe.argv)]
    for word in command:
        options += ["-a", word]
    return options
