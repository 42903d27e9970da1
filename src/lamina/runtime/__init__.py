"""Running containers with an OCI runtime (runc): the verbs (:mod:`.lifecycle`), the owner of a
running container's process (:mod:`.monitor`, :mod:`.ownership`) with what it keeps alive
(:mod:`.restart` policies, :mod:`.health` checks), one process in a container
(:mod:`.process`), its log (:mod:`.logs`), the runtime spec (:mod:`.oci`), users inside a root
(:mod:`.users`) and terminals (:mod:`.console`)."""


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
