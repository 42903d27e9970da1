"""The facade: one object that wires the typed stores and does what the ``lamina`` command does.

    >>> from lamina import Engine
    >>> engine = Engine(root="/var/tmp/store", driver="overlay2")
    >>> image_id = engine.import_image("rootfs.tar", "busybox:latest")
    >>> cid = engine.create("busybox", name="web")
    >>> path = engine.mount("web")          # the merged root, read-write
    >>> engine.diff("web")                  # [Change(kind='A', path='/hello')]
    >>> engine.inspect_container("web", size=True)["SizeRw"]

The work is done by the typed stores, which this class builds and hands to each other:
:class:`~lamina.store.Store` (root, driver, database, recovery), :class:`~lamina.layers.LayerStore`,
:class:`~lamina.images.ImageStore`, :class:`~lamina.containers.ContainerStore`, and by the packages
above them (:mod:`lamina.runtime`, :mod:`lamina.transfer`, :mod:`lamina.builder`). Each method
here is one call into them; modules import what they run lazily, so ``create`` pays for the
stores and the driver, nothing more.
"""

from __future__ import annotations

from .images import ImageStore
from .layers import LayerStore
from .store import Store, default_root

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .containers import ContainerStore

__all__ = ["Engine", "default_root"]


class Engine:
    """A lamina store: images, layers and containers under ``root``, kept by one storage driver."""

    def __init__(self, root: str | None = None, driver: str | None = None):
        self.store = Store(root, driver)
        self.layer_store = LayerStore(self.store)
        self.image_store = ImageStore(self.store, self.layer_store)
        self._container_store: ContainerStore | None = None

    @property
    def container_store(self) -> ContainerStore:
        """The containers' store, made on first use: ``images`` and ``image inspect`` need none,
        nor its modules (lamina.containers, lamina.uses, lamina.runtime)."""
        if self._container_store is None:
            from .containers import ContainerStore
            from .runtime import Lifecycle

            self._container_store = ContainerStore(self.store, self.image_store, self.layer_store)
            self._container_store.lifecycle = Lifecycle(self._container_store)
        return self._container_store

    # the store's parts, for Python users and tests
    root = property(lambda self: self.store.root)
    driver = property(lambda self: self.store.driver)
    db = property(lambda self: self.store.db)
    snaps = property(lambda self: self.store.snaps)
    content = property(lambda self: self.store.content)

    def close(self) -> None:
        self.store.close()

    def counts(self) -> dict[str, int]:
        """How many images, containers and layers the store holds (``info``)."""
        return self.store.counts()

    # ------------------------------------------------------------------ images
    def import_image(self, source, reference: str | None = None, message: str = "") -> str:
        """Make a one-layer image from a rootfs tar (a path, ``-``, or a binary file; plain, gzip
        or zstd). Returns the image ID."""
        return self.image_store.import_tar(source, reference, message)

    def images(self, all: bool = False) -> list[dict]:
        """One row per tag (and one for each untagged image), newest first, as ``docker images``."""
        return self.image_store.list(all)

    def inspect_image(self, name: str) -> dict:
        """Docker-shaped ``image inspect`` document."""
        return self.image_store.inspect(name)

    def history(self, name: str) -> list[dict]:
        """One row per history entry, newest first; empty_layer entries have size 0."""
        return self.image_store.history(name)

    def tag(self, source: str, target: str) -> None:
        """Give the image ``source`` the extra name ``target``."""
        self.image_store.tag(source, target)

    def rmi(self, names: list[str], force: bool = False) -> list[str]:
        """Remove images (or just the named tag); returns Docker's ``Untagged:``/``Deleted:``."""
        return self.image_store.remove(names, force)

    # ------------------------------------------------------------------ containers
    def create(self, image: str, name: str | None = None, command: list[str] | None = None,
               claimed: bool = False, used: bool = False, config=None) -> str:
        """A new container: a writable layer on the image's init layer. Returns its ID (see
        :meth:`lamina.containers.ContainerStore.create`). With ``config`` (a RunConfig: limits,
        privileges...) it is created as ``run`` creates it (``lamina.runtime.creation``)."""
        if config is not None:
            from .runtime.creation import create

            return create(self.container_store, image, command, name=name, config=config)
        return self.container_store.create(image, name, command, claimed, used)

    def containers(self, all: bool = True, size: bool = False) -> list[dict]:
        """``ps`` rows, newest first; with ``size``, SizeRw and SizeRootFs in bytes."""
        return self.container_store.list(all, size)

    def inspect_container(self, name: str, size: bool = False) -> dict:
        """Docker-shaped ``container inspect`` document."""
        return self.container_store.inspect(name, size)

    def mount(self, name: str) -> str:
        """Mount the container's merged root read-write; returns the host path."""
        return self.container_store.mount(name)

    def umount(self, name: str) -> None:
        """Undo :meth:`mount`."""
        self.container_store.umount(name)

    def rm(self, name: str, force: bool = False, volumes: bool = False) -> str:
        """Delete a container and its writable layer (``force``: stop it first; ``volumes``: its
        anonymous volumes too, as ``docker rm -v``). Returns its ID."""
        return self.container_store.rm(name, force, volumes)

    def cp(self, src: str, dst: str, archive: bool = False, follow: bool = False) -> None:
        """``docker cp``: ``CONTAINER:PATH`` to a host path or back (rules in lamina.copy)."""
        self.container_store.cp(src, dst, archive, follow)

    def diff(self, name: str) -> list:
        """Docker's A/C/D changes of the container's writable layer."""
        return self.container_store.diff(name)

    def commit(self, name: str, reference: str | None = None, message: str = "",
               author: str = "") -> str:
        """Turn the container's writable layer into a new image layer on its image."""
        return self.container_store.commit(name, reference, message, author)

    def export(self, name: str, out) -> None:
        """Write the container's flattened root as a tar to the binary file ``out``."""
        self.container_store.export(name, out)

    def system_df(self) -> dict:
        """Disk use by images, containers and volumes: each layer is counted once."""
        from .diskuse import system_df

        return system_df(self.container_store)

    # ------------------------------------------------------------------ moving images
    def add_image(self, config: bytes, layers: list[tuple[str, int, str]], tags=(),
                  manifest: bytes | None = None) -> str:
        """Store an image from exact config bytes and layer blobs already in the content store
        ((digest, size, media type), bottom first). Returns the image ID."""
        from .transfer.unpack import add_image

        return add_image(self.image_store, config, layers, tags, manifest)

    def save(self, names: list[str], output, fmt: str = "docker-archive",
             compression: str | None = None, log=lambda line: None) -> None:
        """Write images to an oci-archive, docker-archive (a path or binary file) or oci-dir."""
        from .transfer.save import save

        try:
            save(self.image_store, names, output, fmt, compression, log)
        finally:
            self.content.release_claims()

    def load(self, source, platform=("linux", "amd64", None), log=lambda line: None) -> list[str]:
        """Load every image of an archive or layout directory; returns Docker's output lines."""
        from .transfer.load import load

        with self._claiming():
            return load(self.image_store, source, platform, log)

    def pull(self, reference: str, **options) -> str:
        """Pull an image from a registry (see :func:`lamina.transfer.pull.pull`)."""
        from .transfer.pull import pull

        with self._claiming():
            return pull(self.image_store, reference, **options)

    def push(self, name: str, destination: str | None = None, **options) -> str:
        """Push an image to a registry; returns the manifest digest."""
        from .transfer.push import push

        return push(self.image_store, name, destination, **options)

    def _claiming(self):
        """Blobs this process wrote are released when the work ends, deleted if it failed."""
        import contextlib

        @contextlib.contextmanager
        def claiming():
            try:
                yield
            except BaseException:
                from .claims import abandon

                abandon(self.store)
                raise
            finally:
                self.content.release_claims()

        return claiming()

    # ------------------------------------------------------------------ garbage and consistency
    def prune_containers(self, only=None) -> tuple[list[str], int]:
        """Remove stopped containers (those whose ``ps`` row ``only(row)`` accepts, if given);
        returns (ids, bytes reclaimed)."""
        from .gc import prune_containers

        return prune_containers(self.container_store, only)

    def prune_images(self, all: bool = False) -> tuple[list[str], int]:
        """Remove dangling images (``all``: every image no container uses); (lines, bytes)."""
        from .gc import prune_images

        return prune_images(self.image_store, all=all)

    def prune_build_cache(self) -> tuple[list[str], int]:
        """``builder prune``: unused intermediate build states and cache mounts; (ids, bytes)."""
        from .gc import prune_build_cache

        return prune_build_cache(self.image_store)

    def prune_system(self, all: bool = False, volumes: bool = False) -> dict:
        """``system prune``: containers, images and (``volumes``) volumes nothing uses."""
        from .gc import prune_system

        return prune_system(self.container_store, all=all, volumes=volumes)

    def store_options(self) -> dict[str, str]:
        """The store's options and their values (``system config``)."""
        return {"keep-pulled-blobs": str(self.layer_store.keeps_pulled_blobs()).lower()}

    def store_option(self, name: str, value: str | None = None) -> str:
        """Read (``value`` None) or set one of the store's options."""
        if name != "keep-pulled-blobs":
            from .errors import InvalidArgument

            raise InvalidArgument(f"unknown store option {name!r} (known: keep-pulled-blobs)")
        if value is not None:
            self.layer_store.keep_pulled_blobs(value)
        return str(self.layer_store.keeps_pulled_blobs()).lower()

    def check(self, repair: bool = False, quick: bool = False) -> list:
        """``system check``: inconsistencies in the store, repaired where possible; ``quick``
        skips reading every layer file against its tar-split record."""
        from .check import check

        return check(self.store, repair=repair, quick=quick)

    def dedup(self, dry_run: bool = False) -> dict:
        """``system dedup``: identical files in the store's layers share their data blocks
        (reflinks; see :mod:`lamina.dedup`)."""
        from .dedup import dedup

        return dedup(self.store, dry_run=dry_run)

    # ------------------------------------------------------------------ running
    def run(self, image: str, command: list[str] | None = None, *, name: str | None = None,
            entrypoint: list[str] | None = None, config=None, detach: bool = False,
            stdin=None, stdout: int = 1, stderr: int = 2) -> tuple[str, int | None]:
        """``docker run`` (see :func:`lamina.runtime.lifecycle.run`): (id, exit code), or (id,
        None) with ``detach`` once the process runs under its own monitor."""
        from .runtime.lifecycle import run

        return run(self.container_store, image, command, name=name, entrypoint=entrypoint,
                   config=config, detach=detach, stdin=stdin, stdout=stdout, stderr=stderr)

    def start(self, name: str, attach: bool = False, stdin=None, stdout: int = 1,
              stderr: int = 2) -> tuple[str, int | None]:
        """Start a created or exited container: detached (id, None), or attached (id, exit code)."""
        from .runtime.lifecycle import start

        return start(self.container_store, name, attach=attach, stdin=stdin, stdout=stdout,
                     stderr=stderr)

    def attach(self, name: str, **options) -> int:
        """Attach this process's stdio to a running container until it ends (its exit code)
        or the detach keys are typed (see :func:`lamina.runtime.attach.attach`)."""
        from .runtime.attach import attach

        return attach(self.container_store, name, **options)

    def stop(self, name: str, timeout: float = 10) -> str:
        """SIGTERM (the image's StopSignal), SIGKILL after ``timeout`` seconds; returns the ID."""
        from .runtime.lifecycle import stop

        return stop(self.container_store, name, timeout)

    def kill(self, name: str, signal: str | int = "KILL") -> str:
        """Send ``signal`` to the container's process; returns the ID."""
        from .runtime.lifecycle import kill

        return kill(self.container_store, name, signal)

    def wait(self, name: str) -> int:
        """Block until the container's process ends; its exit code."""
        from .runtime.lifecycle import wait

        return wait(self.container_store, name)

    def logs(self, name: str, follow: bool = False, tail: int | None = None,
             timestamps: bool = False, stdout: int = 1, stderr: int = 2) -> None:
        """Write the container's logged output to the file descriptors ``stdout``/``stderr``."""
        from .runtime.logs import logs

        logs(self.container_store, name, follow=follow, tail=tail, timestamps=timestamps,
             stdout=stdout, stderr=stderr)

    def exec(self, name: str, argv: list[str], **options) -> int:
        """Run ``argv`` in a running container (see :func:`lamina.runtime.process.exec_process`)."""
        from .runtime.process import exec_process

        return exec_process(self.container_store, name, argv, **options)

    # ------------------------------------------------------------------ volumes
    def update(self, name: str, **limits) -> str:
        """New limits for a container, applied now if it runs (see ``runtime.control``)."""
        from .runtime.control import update

        return update(self.container_store, name, **limits)

    def pause(self, name: str) -> str:
        """Freeze the container's processes."""
        from .runtime.control import pause

        return pause(self.container_store, name)

    def unpause(self, name: str) -> str:
        """Thaw a paused container."""
        from .runtime.control import unpause

        return unpause(self.container_store, name)

    def stats(self, names: list[str] | None = None, all: bool = False,
              previous: dict | None = None) -> tuple[list[dict], dict]:
        """``stats`` lines (Docker's fields) and the samples they came from (pass them back as
        ``previous`` for the next lines of a stream)."""
        from .runtime.control import stats

        return stats(self.container_store, names, all=all, previous=previous)

    def volume_create(self, name: str | None = None) -> str:
        from .volumes import create

        return create(self.store, name)

    def volumes(self) -> list[dict]:
        from .volumes import ls

        return ls(self.store)

    def volume_inspect(self, name: str) -> dict:
        from .volumes import inspect

        return inspect(self.store, name)

    def volume_rm(self, name: str, force: bool = False) -> str:
        from .volumes import remove

        return remove(self.store, name, force=force)

    def volume_prune(self) -> tuple[list[str], int]:
        """Remove every volume no container uses; (names, bytes reclaimed)."""
        from .volumes import prune

        return prune(self.store)

    # ------------------------------------------------------------------ networks
    def network_create(self, name: str, **options) -> str:
        """``network create`` (see :func:`lamina.networks.create`): the new network's ID."""
        from .networks import create

        return create(self.store, name, **options)

    def networks(self) -> list[dict]:
        """Every network's record, the predefined ones too, sorted by name."""
        from .networks import ls

        return ls(self.store)

    def network_inspect(self, name: str) -> dict:
        """Docker's ``Network`` document, with the containers attached to it."""
        from .networks import document, get

        return document(self.store, get(self.store, name), containers=True)

    def network_rm(self, name: str) -> str:
        from .networks import remove

        return remove(self.store, name)

    def network_prune(self, select=None) -> list[str]:
        """Remove the user networks no container is on; their names."""
        from .networks import prune

        return prune(self.store, select)

    def network_connect(self, network: str, container: str, aliases=(), ip: str = "") -> None:
        from .runtime.network import connect

        connect(self.container_store, network, container, aliases, ip)

    def network_disconnect(self, network: str, container: str) -> None:
        from .runtime.network import disconnect

        disconnect(self.container_store, network, container)

    def ports(self, container: str) -> list[dict]:
        """The ports the container publishes now: HostIp, HostPort, ContainerPort, Protocol."""
        from .networks import published

        return published(self.store, self.container_store.get(container)["id"])

    # ------------------------------------------------------------------ building
    def build(self, options, out=print) -> str:
        """Build an image from a Dockerfile (``options``: :class:`lamina.builder.BuildOptions`),
        printing the legacy builder's progress lines through ``out``; returns the image ID."""
        from .builder import build

        try:
            return build(self.container_store, options, out)
        finally:
            self.content.release_claims()
