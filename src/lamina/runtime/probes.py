"""Health probes of a container as execs (:mod:`lamina.runtime.health` has the rules): the
container's check, the process a probe runs as, one probe with Docker's exec events around it,
and :func:`serve_probe`, the whole of the short-lived process the relay starts each interval.

Apart from :mod:`lamina.runtime.monitor` so that a probe's interpreter imports only what a probe
needs (not the monitor's process, logs, security and cgroup modules): it starts afresh every
interval of every health-checked container.
"""

from __future__ import annotations

import os
import time

from .. import cjson
from ..errors import NotFound
from ..processes import start_time as process_start_time
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

    exec_id, line = os.urandom(32).hex(), " ".join(argv)
    containers.event(f"exec_create: {line}", row, execID=exec_id)
    containers.event(f"exec_start: {line}", row, execID=exec_id)
    code, output = exec_probe(runtime, row["id"], containers.store.bundle_dir(row["id"]),
                              process, argv, timeout)
    containers.event("exec_die", row, execID=exec_id, exitCode=code)
    return code, output


def serve_probe(containers: ContainerStore, container_id: str, args: list[str]) -> None:
    """One health probe of a relayed container (``lamina.runtime ROOT DRIVER ID probe PID TICKS
    STARTED``, run by the relay each interval): the probe run in the container, its
    result recorded in the run state (and ``health_status`` told) as the Python monitor's
    checks do (:class:`lamina.runtime.health.HealthMonitor`). PID and TICKS (its start time)
    name the container's process: a failure once it has ended is not counted (the exit
    decides); STARTED: when it started (seconds), for the start period."""
    from .. import runstate
    from ..image import rfc3339
    from .health import MAX_OUTPUT, initial
    from .health import record as record_health

    pid, ticks, started = int(args[0]), int(args[1]), float(args[2])
    try:
        row = containers.get(container_id)
    except NotFound:
        return
    config = RunConfig.from_json(row["run_config"])
    probe = probe_of_container(containers, row, config)
    if probe is None or row["pid"] != pid:
        return
    bundle = containers.store.bundle_dir(container_id)
    process = bundle_process(bundle)
    start = time.time()
    try:
        code, output = exec_with_events(containers, row,
                                        Runtime(containers.store.root, config.runtime), process,
                                        probe.argv, probe.timeout)
    except Exception as e:  # noqa: BLE001 - a probe that cannot run is a failed one
        code, output = -1, str(e)
    if code != 0 and process_start_time(pid) != ticks:
        return  # the process ended meanwhile: its exit decides, not this probe
    entry = {"Start": rfc3339(start), "End": rfc3339(time.time()), "ExitCode": code,
             "Output": output[:MAX_OUTPUT]}
    doc = runstate.read(bundle)
    health = doc.get("Health") or initial(None)
    changed = record_health(health, probe, {"entry": entry, "start": start}, started)
    doc["Health"] = health
    runstate.write(bundle, doc)
    if changed:
        containers.event(f"health_status: {changed}", row)
