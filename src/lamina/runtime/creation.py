"""Making a container as ``run`` and ``create`` do: the image's config merged with what the
command line (or the Engine API) gives, checked, the container made, its volumes attached and its
run config recorded; nothing started. Kept apart from :mod:`lamina.runtime.lifecycle` (which
imports the monitor, its process handling and ``signal`` for run, start, stop and kill) so that
``create`` imports only what it uses.
"""

from __future__ import annotations

from ..errors import InvalidArgument
from ..userns import rootless
from .oci import RunConfig, Runtime
from .ownership import record, release

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore


def create(containers: ContainerStore, image: str, command: list[str] | None = None, *,
           name: str | None = None, entrypoint: list[str] | None = None,
           config: RunConfig | None = None, keep_claim: bool = False) -> str:
    """A container from ``image`` with what ``run`` adds to the image (``config``: env, volumes,
    network, tty...), not started: ``docker create`` with all its options, as the Engine API's
    create does it. Its volumes are attached (named ones created, anonymous ones seeded from the
    image). With ``keep_claim`` this process still owns it on return (``run`` goes on to run it);
    otherwise it is released. Returns its ID."""
    from .. import volumes
    from .oci import NETWORKS, combine_command

    config = config or RunConfig()
    bridged = config.network not in NETWORKS
    if bridged and rootless():  # the user-mode network (lamina.runtime.usernet), no bridge
        from .usernet import check_network

        check_network(config.network)
        bridged = False
    elif bridged:  # a bridge network: it must exist (Docker's "network X not found")
        from .. import networks

        networks.get(containers.store, config.network)
    elif config.network_aliases or config.ip:
        raise InvalidArgument("network-scoped aliases and --ip are only supported for "
                              "user-defined networks")
    if config.workdir is not None and not config.workdir.startswith("/"):
        raise InvalidArgument(f"the working directory {config.workdir!r} is invalid: it needs to "
                              "be an absolute path")
    Runtime(containers.store.root, config.runtime)  # a missing runtime fails before anything is made
    from .control import settle_limits

    config = settle_limits(config)
    image_config = containers.images.config(containers.images.resolve(image)).get("config") or {}
    config = _with_life(config, image_config)
    argv = combine_command(image_config, command, entrypoint)
    # Born claimed by this process: no prune or rm can take it while its volumes are seeded and
    # until supervise (or the monitor spawn hands the claim to) runs its process. Every way out
    # before that gives the claim back first, so that rm -f finds nothing to stop.
    cid = containers.create(image, name=name, command=argv, claimed=True)
    try:
        if config.volumes:
            target = containers.store.mount_target(cid)
            rootfs = containers.mount(cid)
            try:
                resolved = volumes.attach(containers.store, cid, config.volumes, rootfs,
                                          config.binds)
            finally:
                if rootfs == target:
                    containers.umount(cid)
            config = RunConfig(**{**config.__dict__, "volumes": resolved})
        if bridged:
            from .. import networks

            networks.configure(containers.store, cid, config.network, config.network_aliases,
                               config.ip)
        record(containers, cid, run_config=config.to_json())
    except BaseException:
        release(containers, cid)
        containers.rm(cid, force=True)
        raise
    if not keep_claim:
        release(containers, cid)
    return cid


def _with_life(config: RunConfig, image_config: dict) -> RunConfig:
    """``config`` checked for what keeps a container alive (restart policy, health check,
    init), with the image's health check merged into the user's as Docker merges them."""
    if config.restart == "no" and not (config.healthcheck or config.init or
                                       image_config.get("Healthcheck")):
        return config  # nothing to check: run's hot path imports nothing more
    from .. import cjson
    from .health import merge, validate
    from .restart import RestartPolicy

    policy = RestartPolicy.parse(config.restart)
    if policy.enabled and config.auto_remove:
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    user = cjson.loads(config.healthcheck) if config.healthcheck else None
    validate(user)
    merged = merge(image_config.get("Healthcheck"), user)
    if config.init:
        from .process import init_binary

        init_binary()  # none on this host: refused now rather than at start
    return RunConfig(**{**config.__dict__, "restart": str(policy),
                        "healthcheck": cjson.dumps(merged) if merged else ""})
