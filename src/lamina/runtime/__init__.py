"""Running containers with an OCI runtime (runc): making one (:mod:`.creation`), the verbs
(:mod:`.lifecycle`), the owner of a running container's process (:mod:`.monitor`,
:mod:`.ownership`) with what it keeps alive (:mod:`.restart` policies, :mod:`.health` checks),
one process in a container (:mod:`.process`), its log (:mod:`.logs`), the runtime spec
(:mod:`.oci`), users inside a root (:mod:`.users`) and terminals (:mod:`.console`)."""


class Lifecycle:
    """What container removal needs of the runtime (see :class:`lamina.containers.Lifecycle`):
    a dead owner's state settled, and a stop. The runtime's modules are imported only when a
    running container is removed, so wiring this costs ``create`` nothing."""

    def __init__(self, containers):
        self.containers = containers

    def refresh(self, row):
        from .ownership import refresh

        return refresh(self.containers, row)

    def stop(self, container_id: str, timeout: float) -> None:
        from .lifecycle import stop

        stop(self.containers, container_id, timeout)

    def forget(self, container_id: str) -> None:
        """Remove what the runtime left of a removed container whose owner could not (killed
        with its runtime, say): the runtime's state (``runc delete``) and its cgroup, root's
        ``/lamina/<id>`` or those noted for a rootless container's runs (its ID, and the IDs
        ``<id[:16]>-<random>`` of the one-off runs in its root, :func:`.process.run_in_container`).
        Costs ``rm`` a directory listing or two when nothing is left (the usual case)."""
        import os

        from ..userns import rootless
        from . import cgroups

        root = self.containers.store.root
        names = [container_id]
        if rootless():
            try:
                noted = os.listdir(cgroups.notes_dir(root))
            except FileNotFoundError:
                noted = []
            names += [n for n in noted if n.startswith(container_id[:16] + "-")]
        try:
            runtimes = [e.name for e in os.scandir(os.path.join(root, "runtime"))
                        if e.is_dir() and e.name != os.path.basename(cgroups.notes_dir(root))]
        except FileNotFoundError:
            runtimes = []
        for binary in runtimes:
            for name in names:
                if os.path.isdir(os.path.join(root, "runtime", binary, name)):
                    from ..errors import LaminaError
                    from .oci import Runtime

                    try:
                        Runtime(root, binary).delete(name)
                    except LaminaError:  # that runtime is no longer installed
                        pass
        for name in names:
            if rootless():
                cgroups.forget(root, name)
            else:
                cgroups.remove(cgroups.container_path(name))
