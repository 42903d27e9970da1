"""Who owns a container's process, as the container's row records it.

Whoever runs a container's process owns it until the process ends, like Podman's conmon (see
:mod:`lamina.runtime.monitor`): the row says ``running``, with the owner's PID and start time
(``monitor_pid``, ``monitor_start``) and, once the process runs, its ``pid``. An owner claims
the container before touching it (:func:`become_owner`) and gives the claim back if its process
never ran (:func:`release`). Whether a ``running`` container's owner is still alive is a cheap
check of its PID and start time (:func:`monitor_alive`): a container whose owner died shows as
exited (:func:`refresh`).
"""

from __future__ import annotations

import os
import time

from ..errors import FailedPrecondition, NotFound
from ..metadata import Transaction
from ..processes import start_time as process_start_time
from .oci import RunConfig, Runtime

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

UNKNOWN_EXIT = 255  # the owner died without recording the process's exit


def monitor_alive(row) -> bool:
    """Whether the process that owns a running container still exists."""
    pid = row["monitor_pid"]
    return bool(pid) and process_start_time(pid) == row["monitor_start"]


def record(containers: ContainerStore, container_id: str, **columns) -> None:
    """Set ``columns`` of the container's row, in one transaction."""
    containers.record(container_id, **columns)


def become_owner(containers: ContainerStore, name: str, handover: int = 0):
    """Become the container's owner before touching it: in one transaction, check that nobody
    owns it and mark it running with this process as owner (its pid stays 0 until the process
    runs). From then on ``rm`` refuses it without ``-f`` and prunes leave it alone, so a
    concurrent ``container prune`` cannot delete a container that is being started.

    A claim not yet started (pid 0) that is this process's own (``run`` creates the container
    claimed) or that of ``handover`` (the ``run -d`` or ``start`` that spawned this monitor and
    waits for it) is taken over; any other live owner's is refused.

    A ``--rm`` container is also used (:mod:`lamina.uses`) from here on, so that no prune takes
    it between its process's exit and its removal with its anonymous volumes
    (:func:`lamina.runtime.monitor.remove_after_run`). One that an ``rm`` or prune is removing
    is "No such container"."""
    from .. import uses

    with Transaction(containers.db):
        row = containers.get(name)
        if any(removing for _, removing in uses.others(containers.db, row["id"])):
            raise NotFound(f"No such container: {row['name']}")  # an rm or prune is removing it
        if row["state"] == "running" and monitor_alive(row) and not (
                not row["pid"] and row["monitor_pid"] in (os.getpid(), handover)):
            raise FailedPrecondition(f"container {row['name']} is already running")
        containers.claim(row["id"])
        if RunConfig.from_json(row["run_config"]).auto_remove:
            uses.add(containers.db, row["id"])
    return containers.get(row["id"])


def release(containers: ContainerStore, container_id: str) -> bool:
    """Undo :func:`become_owner` (or ``Engine.create(claimed=True)``) if the claim is still this
    process's and its process never ran: the container is ``created`` again, with no owner, so
    ``rm -f`` has nothing to stop and prune may take it. True if it was given back."""
    return containers.unclaim(container_id)


def refresh(containers: ContainerStore, row):
    """The container's row, with a dead owner's ``running`` turned into ``exited``."""
    if row["state"] == "running" and not monitor_alive(row):
        # ``row`` may have been read just before its owner recorded the exit and ended: once
        # the owner is known dead, the row read now is its last word
        current = containers.get(row["id"])
        if (current["state"], current["monitor_pid"], current["monitor_start"]) != (
                "running", row["monitor_pid"], row["monitor_start"]):
            return current if current["state"] != "running" else refresh(containers, current)
        config = RunConfig.from_json(row["run_config"])
        Runtime(containers.store.root, config.runtime).delete(row["id"])
        if config.network not in ("none", "host"):  # what its owner held on its networks
            from .network import leave

            leave(containers, row["id"], None)
        containers.umount(row["id"])
        record(containers, row["id"], state="exited", exit_code=UNKNOWN_EXIT, finished=time.time(),
               pid=0)
        row = containers.get(row["id"])
    return row


def wait_past_start(containers: ContainerStore, row):
    """A container being started (claimed, its process not yet running: pid 0): wait a little
    for its process, so that stop and kill reach it rather than a runtime that knows nothing."""
    deadline = time.monotonic() + 10
    while row["state"] == "running" and not row["pid"] and time.monotonic() < deadline:
        if restarting(containers, row):
            break  # no process until its restart: nothing to wait for
        time.sleep(0.05)
        row = refresh(containers, containers.get(row["id"]))
    return row


def require_running(containers: ContainerStore, name: str, verb: str,
                    restarting_too: bool = False):
    """The container's row if its process is running (waiting a little for one being started);
    else FailedPrecondition, as Docker words it for ``verb`` (``kill``, ``exec in``). One that
    waits to restart (:mod:`lamina.runtime.restart`) is refused too unless ``restarting_too``."""
    row = wait_past_start(containers, refresh(containers, containers.get(name)))
    if row["state"] != "running":
        raise FailedPrecondition(f"Cannot {verb} container: {name}: Container {row['id']} is not "
                                 "running")
    if not restarting_too and restarting(containers, row):
        raise FailedPrecondition(f"Container {row['id']} is restarting, wait until the "
                                 "container is running")
    return row


def restarting(containers: ContainerStore, row) -> bool:
    """Whether the container's owner is waiting to restart its process (no process now)."""
    from .. import runstate

    return (row["state"] == "running" and not row["pid"] and
            bool(runstate.read(containers.store.bundle_dir(row["id"])).get("Restarting")))
