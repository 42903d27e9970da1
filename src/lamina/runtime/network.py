"""A container's networks as its owner and the network verbs see them.

:func:`join` is what the owner of a container's process (:mod:`lamina.runtime.monitor`) does
before the runtime starts it: the container's bridge networks (the ``--network`` of its create,
configured then; ``bridge`` for one made without it) are attached with its published ports
(:mod:`lamina.endpoints`); :func:`leave` undoes that once the process has ended. ``connect``
and ``disconnect`` are ``network connect|disconnect``, at once for a running container.
"""

from __future__ import annotations

import os
import sys

from .. import cjson
from ..errors import FailedPrecondition, LaminaError
from ..processes import same_process
from ..userns import rootless
from .oci import RunConfig

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore
    from ..endpoints import Sandbox


def join(containers: ContainerStore, row, config: RunConfig) -> Sandbox:
    """Attach the container ``row`` to its bridge networks; the Sandbox its owner holds."""
    from .. import endpoints, networks

    store = containers.store
    if rootless():
        from .usernet import user_mode_network

        image = containers.images.config(row["image_id"]).get("config") or {}
        ports = endpoints.wanted_ports(cjson.loads(config.to_json()), image)
        return user_mode_network(store, row["id"], config.network, ports)
    if not store.db.execute("SELECT 1 FROM container_networks WHERE container_id = ?",
                            (row["id"],)).fetchone():
        if config.network != networks.DEFAULT:  # all disconnected: it runs with none
            networks.get(store, config.network)  # unless its network was removed (Docker's error)
            return endpoints.Sandbox()
        networks.configure(store, row["id"], config.network)  # made without run's options
    image = containers.images.config(row["image_id"]).get("config") or {}
    ports = endpoints.wanted_ports(cjson.loads(config.to_json()), image)
    return endpoints.attach(store, row["id"], row["name"], ports)


def leave(containers: ContainerStore, container_id: str, sandbox: Sandbox | None) -> None:
    """Undo :func:`join`; a failure is written to stderr (the monitor's log), not raised: the
    container has ended either way, and ``system check --repair`` removes what is left."""
    from ..endpoints import detach

    if rootless():  # the user-mode network (lamina.runtime.usernet): its helper goes with it
        from ..cni import remove_netns
        from ..networks import record_user_mode_ports

        record_user_mode_ports(containers.store, container_id, None)
        remove_netns(sandbox.netns if sandbox and sandbox.netns else
                     os.path.join(containers.store.root, "netns", container_id))
        if sandbox is not None:
            sandbox.close()
        else:
            from .usernet import stop_helper

            stop_helper(container_id)
        return
    try:
        detach(containers.store, container_id, sandbox)
    except LaminaError as e:
        print(f"lamina: detaching {container_id[:12]} from its networks: {e}", file=sys.stderr)


def connect(containers: ContainerStore, network: str, name: str, aliases=(), ip: str = "") -> None:
    """``network connect NETWORK CONTAINER``."""
    from ..endpoints import connect as attach_one

    row = containers.get(name)
    config = RunConfig.from_json(row["run_config"])
    if config.network == "host" or network == "host":
        raise FailedPrecondition("container cannot be disconnected from host network or "
                                 "connected to host network")
    running = row["state"] == "running" and bool(row["pid"]) and same_process(
        row["monitor_pid"], row["monitor_start"])
    attach_one(containers.store, row["id"], row["name"], network, aliases, ip, running=running)


def disconnect(containers: ContainerStore, network: str, name: str) -> None:
    """``network disconnect NETWORK CONTAINER``."""
    from ..endpoints import disconnect as detach_one

    row = containers.get(name)
    if network == "host":
        raise FailedPrecondition("container cannot be disconnected from host network or "
                                 "connected to host network")
    detach_one(containers.store, row["id"], row["name"], network)
