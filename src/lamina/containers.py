"""Containers: an image's layers plus a thin writable layer of its own.

    >>> containers = ContainerStore(store, images, layers)
    >>> cid = containers.create("busybox", name="web")
    >>> root = containers.mount("web")          # the merged root, read-write
    >>> containers.diff("web")                  # [Change(kind='A', path='/hello')]
    >>> containers.commit("web", "web:v2")      # its writable layer becomes an image layer
    >>> containers.remove("web")

A container is a row in ``containers`` and an active snapshot on its image's init layer. The
init layer (placeholders for ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``, which the
runtime bind-mounts over, and Docker's ``/etc/mtab -> /proc/mounts``) is made once per layer chain
and shared by every container of it.

Running is the runtime's (:mod:`lamina.runtime`); a running container is removed only through
its ``lifecycle`` (refresh a dead owner's state, stop the process), which the runtime provides.
"""

from __future__ import annotations

import os
import time

from . import uses
from .errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from .image import command_line as shown_command
from .image import merge_env
from .layers import init_key
from .metadata import prefix_bounds
from .processes import same_process, start_time
from .userns import rootless

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from .images import ImageStore
    from .layers import LayerStore
    from .store import Store

INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
REMOVED_KEPT = 3600  # seconds a removed container's exit code is remembered


class Lifecycle:
    """What removal needs of the runtime: a row with a dead owner's state settled, and a stop
    (:class:`lamina.runtime.Lifecycle` is the one lamina has)."""

    def refresh(self, row):
        raise NotImplementedError

    def stop(self, container_id: str, timeout: float) -> None:
        raise NotImplementedError

    def forget(self, container_id: str) -> None:
        """Remove what the runtime may have left of a removed container (its cgroup)."""
        raise NotImplementedError


class ContainerStore:
    """The containers of one store, their writable layers and their mounts."""

    lifecycle: Lifecycle | None = None

    def __init__(self, store: Store, images: ImageStore, layers: LayerStore):
        self.store = store
        self.db = store.db
        self.images = images
        self.layers = layers
        self._configured_docs: dict[tuple, tuple] = {}  # see _configured

    def get(self, name: str):
        row = self.db.execute("SELECT * FROM containers WHERE name = ? OR id = ?",
                              (name.lstrip("/"), name)).fetchone()
        if row is None and name and all(c in "0123456789abcdef" for c in name):
            rows = self.db.execute("SELECT * FROM containers WHERE id >= ? AND id < ? LIMIT 2",
                                   prefix_bounds(name)).fetchall()
            if len(rows) > 1:
                raise InvalidArgument(f"container ID prefix {name} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"No such container: {name}")
        return row

    def create(self, image: str, name: str | None = None, command: list[str] | None = None,
               claimed: bool = False, used: bool = False) -> str:
        """A new container: a writable layer on the image's init layer. Returns its ID.

        The init layer holds the placeholders the runtime bind-mounts over (``/etc/hosts``, ...).
        It is the same for every container of an image, so it is made once per layer chain and
        shared: a container costs one snapshot, and N containers add nothing but their own layers.

        ``claimed`` (for ``run``): the container is born owned by this process, as
        :func:`lamina.runtime.monitor.supervise` claims one it starts (state ``running``, pid 0), so no
        ``rm`` or prune can take it before its process runs. The caller must then start it or
        give the claim back (:func:`lamina.runtime.ownership.release`). ``used`` (for a build's ``RUN``):
        the container is born used by this process (:mod:`lamina.uses`), until it removes it.
        """
        image_id = self.images.resolve(image)
        img = self.images.row(image_id)
        if img is None:
            raise NotFound(f"No such image: {image}")
        cid = os.urandom(32).hex()
        if name is not None:
            name = container_name(name)
        init = init_key(img["top_layer"])
        with self.store.tx():
            if self.images.row(image_id) is None:  # removed by another process since the lookup
                raise NotFound(f"No such image: {image}")
            if name is None:
                name = self._random_name()
            elif taken := self.db.execute("SELECT id FROM containers WHERE name = ?",
                                          (name,)).fetchone():
                raise FailedPrecondition(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{taken[0]}". You have to remove (or rename) that container to be able to '
                    "reuse that name.")
            if not self.db.execute("SELECT 1 FROM snapshots WHERE key = ?", (init,)).fetchone():
                self._prepare_init(init, img["top_layer"])
                self._write_init(init)
                self.store.snaps.commit(init, init)  # same key, now read-only
            self.store.snaps.prepare(cid, init)
            if command is None:  # the image's, as stored: no JSON work on this hot path
                command_json, command_line = img["command"], img["command_line"]
            else:
                from . import cjson

                command_json, command_line = cjson.dumps(command), shown_command(command)
            self.db.execute(
                "INSERT INTO containers(id, name, image_id, image_ref, command, command_line,"
                " created) VALUES (?,?,?,?,?,?,?)",
                (cid, name, image_id, image, command_json, command_line, time.time()))
            if claimed:
                self.claim(cid)
            if used:
                uses.add(self.db, cid)
        from .events import emit

        emit(self.store, "container", "create", cid, {"image": image, "name": name})
        return cid

    def _prepare_init(self, key: str, top: str | None) -> None:
        """The init snapshot on ``top``; on an image as deep as a mount may stack it takes the
        top layer's place (a hard-linked copy of it), so that a container still fits."""
        snaps = self.store.snaps
        if top is not None and snaps.child_depth(top) + 1 > snaps.max_depth:
            snaps.prepare_in_place_of(key, top)
        else:
            snaps.prepare(key, top)

    def _write_init(self, key: str) -> None:
        """Placeholders the runtime bind-mounts over; they live below the container's own layer,
        so they never show in its diff or size."""
        import stat

        root = self.store.snaps.dir(key)
        etc = os.path.join(root, "etc")
        if not os.path.lexists(etc):
            st = None
            for lower in self.store.snaps.lower_dirs(key):
                try:
                    st = os.lstat(os.path.join(lower, "etc"))
                    break
                except FileNotFoundError:
                    continue
            if st is not None and not stat.S_ISDIR(st.st_mode):
                return  # /etc is not a directory in this image: leave it alone
            os.mkdir(etc, 0o755)
            if st is not None:  # keep the image's /etc metadata in the merged view
                os.chown(etc, st.st_uid, st.st_gid)
                os.chmod(etc, stat.S_IMODE(st.st_mode))
                os.utime(etc, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif os.path.islink(etc) or not os.path.isdir(etc):
            return
        for rel in INIT_FILES:
            path = os.path.join(root, rel)
            if os.path.islink(path) or os.path.isdir(path):
                continue
            if os.path.lexists(path):  # a hard link to a layer's file: replaced, never written
                os.unlink(path)
            with open(path, "wb"):
                pass
            os.chmod(path, 0o755)  # Docker's init layer placeholders are 0755
        mtab = os.path.join(root, "etc", "mtab")
        if not any(os.path.lexists(os.path.join(d, "etc", "mtab"))
                   for d in [root] + self.store.snaps.lower_dirs(key)):
            os.symlink("/proc/mounts", mtab)  # as Docker's init layer: tools that read it work

    def _random_name(self) -> str:
        def pick(words):
            return words[int.from_bytes(os.urandom(2), "little") % len(words)]

        for _ in range(20):
            name = f"{pick(_ADJECTIVES)}_{pick(_NAMES)}"
            if not self.db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone():
                return name
        return f"{pick(_ADJECTIVES)}_{pick(_NAMES)}{int.from_bytes(os.urandom(3), 'little')}"


    def list(self, all: bool = True, size: bool = False) -> list[dict]:
        """``ps`` rows, newest first; with ``size``, SizeRw and SizeRootFs in bytes."""
        rows = self.db.execute(
            "SELECT c.*, i.size AS image_size FROM containers c JOIN images i ON i.id = c.image_id"
            " ORDER BY c.created DESC").fetchall()
        out = []
        published: dict[str, list] = {}
        if rows:
            from . import cjson

            for cid, ports in self.db.execute("SELECT container_id, ports FROM"
                                              " container_networks WHERE ports != '[]'"):
                published.setdefault(cid, []).extend(cjson.loads(ports))
        for r in rows:
            state, exit_code, finished = r["state"], r["exit_code"], r["finished"]
            if state == "running" and not same_process(r["monitor_pid"], r["monitor_start"]):
                # its owner died (lamina.runtime.monitor): shown as exited; the next verb on it cleans up
                state, exit_code, finished = "exited", 255, r["started"]
            health = "none"
            if state == "running" and r["paused"]:
                state = "paused"
            elif state == "running":  # restarting, health: what its owner knows (lamina.runstate)
                from . import runstate

                life = runstate.read(self.store.bundle_dir(r["id"]))
                health = runstate.health_status(life)
                if life.get("Restarting") and not r["pid"]:
                    state, health = "restarting", "none"
            if not all and state not in ("running", "paused", "restarting"):
                continue
            item = {"ID": r["id"], "Names": r["name"], "Image": r["image_ref"], "ImageID": r["image_id"],
                    "Command": r["command_line"], "Created": r["created"],
                    "State": state, "ExitCode": exit_code, "StartedAt": r["started"],
                    "FinishedAt": finished, "RunConfig": r["run_config"], "Health": health,
                    "Ports": published.get(r["id"], []) if state == "running" else []}
            if state == "running" and not item["Ports"] and rootless():
                from .networks import user_mode_ports  # lamina.runtime.usernet's

                item["Ports"] = user_mode_ports(self.store, r["id"])
            if size:
                try:
                    rw = self.store.snaps.usage(r["id"])[0]
                except (NotFound, FileNotFoundError):
                    continue  # removed by another process since the query: no longer listed
                item["SizeRw"] = rw
                item["SizeRootFs"] = rw + r["image_size"]
            out.append(item)
        return out

    def inspect(self, name: str, size: bool = False) -> dict:
        """Docker-shaped ``container inspect`` document: Docker's keys, its zero values where
        lamina has nothing to say (no restarts, no user networks), what an Engine API client
        sent to create it echoed back (``Config``, ``HostConfig``)."""
        _, fixed, now = self.inspect_parts(name, size)
        doc = dict(fixed)  # the keys set below keep their places (Docker's order)
        doc["HostConfig"] = dict(fixed["HostConfig"])  # the API adds its masked paths
        doc["Config"] = dict(fixed["Config"])
        doc.update(now)
        return doc

    def inspect_parts(self, name: str, size: bool = False) -> tuple[tuple, dict, dict]:
        """:meth:`inspect`'s document in two parts, for a server that keeps the text of what a
        configuration decides: (a key of the container's configuration; the document as that
        configuration alone decides it, shared: not to be changed; what changes without it:
        ``State``, ``Name``, ``RestartCount``, ``NetworkSettings`` and, with ``size``,
        ``SizeRw`` and ``SizeRootFs``, in the document's order). The document is the second
        with the third's keys set: in their places, the sizes last."""
        from . import networks, runstate
        from .image import rfc3339

        r = self.get(name)
        if self.lifecycle is not None:
            r = self.lifecycle.refresh(r)  # a dead owner's container shows as exited
        configuration, fixed, bundle, network, exposed = self._configured(r)
        running = r["state"] == "running"
        life = runstate.read(bundle)  # restarts and health, as the owner knows them
        restarting = running and not r["pid"] and bool(life.get("Restarting"))
        never = "0001-01-01T00:00:00Z"
        state = {
            "Status": "restarting" if restarting else "paused" if running and r["paused"]
            else r["state"],
            "Running": running, "Paused": bool(running and r["paused"]), "Restarting": restarting,
            "OOMKilled": bool(r["oom_killed"]), "Dead": False, "Pid": r["pid"] if running else 0,
            "ExitCode": r["exit_code"], "Error": "",
            "StartedAt": rfc3339(r["started"]) if r["started"] else never,
            "FinishedAt": rfc3339(r["finished"]) if r["finished"] else never}
        if "Health" in life:
            state["Health"] = life["Health"]
        now = {"State": state, "Name": "/" + r["name"],
               "RestartCount": life.get("RestartCount", 0),
               "NetworkSettings": networks.settings(self.store, r["id"], network, running,
                                                    exposed)}
        if size:
            rw = self.store.snaps.usage(r["id"])[0]
            now["SizeRw"] = rw
            now["SizeRootFs"] = rw + self.images.row(r["image_id"])["size"]
        return configuration, fixed, now

    def _configured(self, r) -> tuple[tuple, dict, str, str, dict | None]:
        """What of the row ``r``'s inspect its configuration alone decides (command, run config,
        image, creation), as (the configuration's key, the document with its state's keys in
        place but unset, the bundle, the network mode, the image's exposed ports). Made once for each configuration
        seen by this store object (an ``update`` or a new container is another one), since a
        server answers inspect after inspect of one container; the document's parts are shared
        between callers, who must not change them (:meth:`inspect` copies its top level,
        ``HostConfig`` and ``Config``)."""
        configuration = (r["id"], r["created"], r["command"], r["run_config"], r["image_id"],
                         r["image_ref"])
        found = self._configured_docs.get(configuration)
        if found is not None:
            return found
        from . import cjson
        from .image import rfc3339

        command = cjson.loads(r["command"])
        run = cjson.loads(r["run_config"] or "{}")
        api = cjson.loads(run.get("api_config") or "{}")
        image = self.images.shared_config(r["image_id"]).get("config") or {}  # not changed here
        target = self.store.mount_target(r["id"])
        mounts = self.store.snaps.mounts(r["id"])
        m = mounts[0]
        graph = {"MergedDir": target if m.type in ("overlay", "union") else m.source}  # FUSE
        if m.type == "overlay":
            graph.update(UpperDir=m.upper(), LowerDir=":".join(m.lowers()),
                         WorkDir=os.path.join(os.path.dirname(m.upper()), "work"))
        bundle = self.store.bundle_dir(r["id"])
        from . import networks, volumes

        network = run.get("network", "none")
        env = merge_env(image.get("Env"), run.get("env"))
        config = {
            "Hostname": run.get("hostname") or r["id"][:12], "Domainname": "",
            "User": run.get("user") or image.get("User") or "",
            "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
            "Tty": bool(run.get("tty")), "OpenStdin": bool(run.get("open_stdin")),
            "StdinOnce": False, "Env": env or None,
            "Cmd": command, "Image": r["image_ref"],
            "Volumes": image.get("Volumes"),
            "WorkingDir": run.get("workdir") or image.get("WorkingDir") or "",
            "Entrypoint": None, "OnBuild": image.get("OnBuild"),
            "Labels": {**(image.get("Labels") or {}), **dict(run.get("labels") or ())},
        }
        for key in ("ExposedPorts", "StopSignal", "Healthcheck", "Shell"):
            if image.get(key) is not None:
                config[key] = image[key]
        if run.get("healthcheck"):  # the container's check: the image's merged at create
            config["Healthcheck"] = cjson.loads(run["healthcheck"])
        config.update({k: v for k, v in (api.get("Config") or {}).items()
                       if k not in ("Env", "Image", "Labels", "Hostname")})
        host_config = {
            "Binds": (list(run["binds"]) if "binds" in run else [  # else: made before it was kept
                ":".join([src, dst, volumes.mount_mode(run, src, dst, ro)[0]]).rstrip(":")
                for src, dst, ro in run.get("volumes", ()) if src.startswith("/")]) or None,
            "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": network, "PortBindings": networks.port_bindings(run.get("ports")),
            "RestartPolicy": _restart_policy(run.get("restart")),
            "AutoRemove": bool(run.get("auto_remove")), "VolumeDriver": "", "VolumesFrom": None,
            "CapAdd": None, "CapDrop": None, "CgroupnsMode": "private" if os.path.exists(
                "/sys/fs/cgroup/cgroup.controllers") else "host",
            "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": list(run.get("extra_hosts") or ()) or None, "GroupAdd": None,
            "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
            "Privileged": False, "PublishAllPorts": bool(run.get("publish_all")),
            "ReadonlyRootfs": bool(run.get("read_only")), "SecurityOpt": None, "UTSMode": "",
            "UsernsMode": "", "ShmSize": 67108864, "Runtime": run.get("runtime") or "runc",
            "ConsoleSize": [0, 0], "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0,
            "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": [],
            "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [],
            "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0,
            "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": [],
            "DeviceCgroupRules": None, "DeviceRequests": None, "KernelMemory": 0,
            "KernelMemoryTCP": 0, "MemoryReservation": 0, "MemorySwap": 0,
            "MemorySwappiness": None, "OomKillDisable": False, "PidsLimit": None, "Ulimits": None,
            "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        }
        host_config.update(_limits_host_config(run))
        if run.get("init"):
            host_config["Init"] = True  # Docker leaves it out unless set
        host_config.update({k: v for k, v in (api.get("HostConfig") or {}).items()
                            if k not in ("NetworkMode", "AutoRemove", "ReadonlyRootfs")})
        if run.get("mounts"):
            host_config["Mounts"] = cjson.loads(run["mounts"])
        volume_mounts = []
        for src, dst, ro in run.get("volumes", ()):
            mode, propagation = volumes.mount_mode(run, src, dst, ro)
            if src.startswith("/"):
                volume_mounts.append({"Type": "bind", "Source": src, "Destination": dst,
                                      "Mode": mode, "RW": not ro, "Propagation": propagation})
            else:
                volume_mounts.append({"Type": "volume", "Name": src,
                                      "Source": os.path.join(self.store.root, "volumes", src, "_data"),
                                      "Destination": dst, "Driver": "local", "Mode": mode,
                                      "RW": not ro, "Propagation": ""})
        doc = {
            "Id": r["id"],
            "Created": rfc3339(r["created"]),
            "Path": command[0] if command else "",
            "Args": command[1:],
            "State": None,
            "Image": r["image_id"],
            "ResolvConfPath": os.path.join(bundle, "resolv.conf"),
            "HostnamePath": os.path.join(bundle, "hostname"),
            "HostsPath": os.path.join(bundle, "hosts"),
            "LogPath": os.path.join(bundle, "container.log"),
            "Name": None,
            "RestartCount": 0,
            "Driver": self.store.driver,
            "Platform": "linux",
            "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
            "ExecIDs": None,
            "HostConfig": host_config,
            "GraphDriver": {"Name": self.store.driver, "Data": graph},
            "Mounts": volume_mounts,
            "Config": config,
            "NetworkSettings": None,
        }
        found = (configuration, doc, bundle, network, image.get("ExposedPorts"))
        if len(self._configured_docs) >= 256:
            self._configured_docs.clear()
        self._configured_docs[configuration] = found
        return found

    def mount(self, name: str) -> str:
        """Mount the container's merged root read-write; returns the host path."""
        r = self.get(name)
        mounts = self.store.snaps.mounts(r["id"])
        if len(mounts) == 1 and mounts[0].type == "bind" and not mounts[0].readonly:
            return mounts[0].source  # vfs: the directory is the root already
        from .mount import mount_all

        target = self.store.mount_target(r["id"])
        os.makedirs(target, exist_ok=True)
        if not os.path.ismount(target):
            mount_all(mounts, target)
        return target

    def umount(self, name: str) -> None:
        """Undo :meth:`mount`."""
        from .mount import unmount

        r = self.get(name)
        target = self.store.mount_target(r["id"])
        if os.path.isdir(target):
            unmount(target)
            try:
                os.rmdir(target)
            except FileNotFoundError:  # another process unmounted it too (a --rm monitor, a prune)
                pass

    def claim(self, container_id: str) -> None:
        """Inside a transaction: the container is this process's, being started (state
        ``running``, pid 0 until its process runs; see :mod:`lamina.runtime.monitor`)."""
        me = os.getpid()
        self.db.execute("UPDATE containers SET state = 'running', pid = 0, monitor_pid = ?,"
                        " monitor_start = ?, started = ? WHERE id = ?",
                        (me, start_time(me), time.time(), container_id))

    def record(self, container_id: str, **columns) -> None:
        """Set ``columns`` of the container's row (its run state), in one transaction."""
        sets = ", ".join(f"{k} = ?" for k in columns)
        with self.store.tx():
            self.db.execute(f"UPDATE containers SET {sets} WHERE id = ?",
                            (*columns.values(), container_id))

    def unclaim(self, container_id: str) -> bool:
        """Give back this process's claim (see :meth:`claim`) if its process never ran: the
        container is ``created`` again, with no owner. True if it was given back."""
        with self.store.tx():
            return bool(self.db.execute(
                "UPDATE containers SET state = 'created', pid = 0, monitor_pid = 0,"
                " monitor_start = 0 WHERE id = ? AND state = 'running' AND pid = 0"
                " AND monitor_pid = ?", (container_id, os.getpid())).rowcount)

    def event(self, action: str, row, **attributes) -> None:
        """Record a container event (:mod:`lamina.events`): Docker's attributes (``name``,
        ``image``, the container's labels) and ``attributes``."""
        from .events import emit

        emit(self.store, "container", action, row["id"], {**self.event_attributes(row),
                                                          **attributes})

    def event_attributes(self, row) -> dict:
        """Docker's attributes of every event of the container: its labels, ``image`` and
        ``name``."""
        from . import cjson

        labels = dict(cjson.loads(row["run_config"] or "{}").get("labels") or ())
        return {**labels, "image": row["image_ref"], "name": row["name"]}

    def exit_code_of_removed(self, container_id: str) -> int | None:
        """The exit code a container had when it was removed (kept :data:`REMOVED_KEPT`
        seconds: a ``--rm`` container's waiter learns it after the monitor removed it)."""
        row = self.db.execute("SELECT exit_code FROM removed_containers WHERE id = ?",
                              (container_id,)).fetchone()
        return None if row is None else row[0]

    def take_use(self, name: str):
        """Use the container ``name`` from this process on (:mod:`lamina.uses`); returns its row.
        In one transaction: the container exists and no other live process is removing it."""
        with self.store.tx():
            row = self.get(name)
            uses.begin(self.store, row["id"], name)
        return row

    def using(self, name: str) -> _Use:
        """``with containers.using(name) as row:`` the container cannot be removed meanwhile."""
        return _Use(self, name)

    def _stop(self, container_id: str) -> None:
        if self.lifecycle is None:
            raise _running_refused(container_id)
        self.lifecycle.stop(container_id, 0)

    def rm(self, name: str, force: bool = False, volumes: bool = False) -> str:
        """Delete a container and its writable layer; with ``volumes`` (``rm -v``), then its
        anonymous volumes (those ``-v /PATH`` or the image's VOLUME made), as Docker does: one
        another container still uses (``--volumes-from``) stays, silently. Returns its ID.

        Refused without ``force``: a running container, and one another command is using (``cp``,
        ``commit``...: :mod:`lamina.uses`); ``force`` stops the first and waits for the second.
        "No such container" if another ``rm`` or prune is removing it."""
        if not volumes:
            return self.remove(name, force)[0]
        from . import volumes as volume_store

        anonymous = volume_store.anonymous_of(self.store, self.get(name)["id"])
        cid = self.remove(name, force)[0]
        for volume in anonymous:
            try:
                volume_store.remove(self.store, volume)
            except (NotFound, FailedPrecondition):  # in use by another container, or gone
                pass
        return cid

    def remove(self, name: str, force: bool = False, measure: bool = False) -> tuple[str, int]:
        """:meth:`rm`; returns the ID and, with ``measure`` (for prune), the bytes of the writable
        layer, measured once the removal is this process's (nobody else deletes it meanwhile)."""
        r = self.get(name)
        stopped = False
        if r["state"] == "running":
            if self.lifecycle is not None:
                r = self.lifecycle.refresh(r)  # its owner may have died
            if r["state"] == "running" and not force:
                raise _running_refused(r["id"])
            if r["state"] == "running":
                self._stop(r["id"])
                stopped = True
        cid, deadline = r["id"], time.monotonic() + 30
        while True:  # in one transaction: it exists, nobody runs, uses or removes it; it is ours
            try:
                with self.store.tx():
                    r = self.db.execute("SELECT * FROM containers WHERE id = ?", (cid,)).fetchone()
                    if r is None:
                        raise NotFound(f"No such container: {name}")
                    if r["state"] == "running" and same_process(r["monitor_pid"],
                                                                r["monitor_start"]):
                        if force:
                            raise _StillRunning()
                        raise _running_refused(cid)  # started since the lookup (prune: skipped)
                    uses.begin_removal(self.store, cid, name)
                break
            except _StillRunning:  # -f: its owner is still starting or ending it
                if time.monotonic() > deadline:
                    raise _running_refused(cid) from None
                self._stop(cid)  # a process that started after the first stop
                stopped = True
                time.sleep(0.05)
            except uses.InUse:
                if not force or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a cp or commit: short, wait for it
            except NotFound:
                if stopped:  # a --rm container's monitor removes it itself
                    return cid, 0
                raise
        try:
            size = self.store.snaps.usage(cid)[0] if measure else 0
            self.umount(cid)
            with self.store.tx():
                if not self.db.execute("DELETE FROM containers WHERE id = ?", (cid,)).rowcount:
                    raise NotFound(f"No such container: {name}")
                now = time.time()
                self.db.execute("DELETE FROM removed_containers WHERE removed < ?",
                                (now - REMOVED_KEPT,))
                self.db.execute("INSERT OR REPLACE INTO removed_containers VALUES (?, ?, ?)",
                                (cid, r["exit_code"], now))
                uses.end(self.store, cid)
                self.store.snaps.remove(r["id"])
                self.store.snaps.trash(os.path.join(self.store.root, "containers", r["id"]))  # bundle and log
        except BaseException:
            with self.store.tx():  # not removed after all: others may use it again
                uses.end(self.store, cid)
            raise
        if self.lifecycle is not None:
            self.lifecycle.forget(cid)
        self.event("destroy", r)
        return r["id"], size  # (the bundle went with the purge after that commit)

    def cp(self, src: str, dst: str, archive: bool = False, follow: bool = False) -> None:
        """``docker cp``: ``CONTAINER:PATH`` to a host path or back (rules in lamina.copy)."""
        from . import copy

        source, dest = copy.parse_location(src), copy.parse_location(dst)
        copy.check_direction(source, dest)
        inside = source[1] if source[0] is not None else dest[1]
        # no rm or prune meanwhile; a path under a volume is the volume's, as the container sees it
        with self.files_at(source[0] or dest[0], inside) as (_, fs, inner, base, _):
            host = copy.RootedFS("/")
            try:
                if source[0] is not None:
                    owner = None if archive or os.geteuid() == 0 else (os.geteuid(), os.getegid())
                    copy.copy(fs, inner, host, copy.host_path(dest[1]), owner, follow,
                              name=base if base not in ("/", ".") else None)
                else:
                    copy.copy(host, copy.host_path(source[1]), fs, inner,
                              None if archive else (0, 0), follow)
            except OSError as error:
                raise copy.os_error(error) from None
            finally:
                host.close()

    def files_at(self, name: str, path: str):
        """``with containers.files_at(name, path) as (row, fs, inner, base, mounted_on):`` the
        file system holding the container path ``path`` as the container sees it: its root
        (:meth:`files`), or the directory of the volume or bind mount over that part of it (the
        deepest), whatever the container's state, as Docker mounts them for ``cp``. ``inner``
        is the path inside ``fs``, ``base`` the name an archive of it has (lamina.copy's rules),
        ``mounted_on`` where ``fs`` is in the container ("" for its root)."""
        import contextlib

        from . import copy

        @contextlib.contextmanager
        def opened():
            with self.using(name) as row:
                found = self._volume_holding(row, path)
                if found is None:
                    with self.files(name) as (row, fs):
                        yield row, fs, path, copy.archive_path(path)[1], ""
                    return
                host, inner, base, destination = found
                with copy.RootedFS(host) as fs:
                    yield row, fs, inner, base, destination

        return opened()

    def _volume_holding(self, row, path: str) -> tuple[str, str, str, str] | None:
        """(host directory, path inside it, base name, destination) of the volume or bind
        mount of a directory at or above ``path``, the deepest; None when there is none."""
        import posixpath

        from . import cjson, copy, volumes

        absolute, base = copy.archive_path(path)
        clean = posixpath.normpath(absolute)
        best = None
        for source, destination, _ in cjson.loads(row["run_config"] or "{}").get("volumes", ()):
            dest = posixpath.normpath(destination)
            host = source if source.startswith("/") else volumes.mount_source(self.store, source)
            if dest != "/" and (clean == dest or clean.startswith(dest + "/")) and \
                    os.path.isdir(host) and (best is None or len(dest) > len(best[0])):
                best = (dest, host)
        if best is None:
            return None
        inner = "/" + clean[len(best[0]):].lstrip("/")
        if inner != "/" and absolute.endswith(("/", "/.")):
            inner += absolute[len(clean):]  # "/" or "/.": the directory's contents, its target
        return best[1], inner, base, best[0]

    def diff(self, name: str) -> list:
        """Docker's A/C/D changes of the container's writable layer."""
        from . import differ

        with self.using(name) as r:
            return differ.changes(self.store.snaps, r["id"])

    def commit(self, name: str, reference: str | None = None, message: str = "",
               author: str = "") -> str:
        """Turn the container's writable layer into a new image layer on its image. The
        container is used (:mod:`lamina.uses`) meanwhile: no rm or prune takes it."""
        with self.using(name) as r:
            return self._commit(r, reference, message, author)

    def _commit(self, r, reference: str | None, message: str, author: str) -> str:
        from . import cjson, differ
        from .image import MAX_LAYERS, dumps, normalize, rfc3339

        tag = normalize(reference) if reference else None
        base = self.images.config(r["image_id"])
        chains = [row["chain_id"] for row in self.images.layer_rows(r["image_id"])]
        if len(chains) + 1 > MAX_LAYERS:
            raise InvalidArgument(
                f"an image may have at most {MAX_LAYERS} layers; committing {r['name']} would make "
                f"{len(chains) + 1}")
        sources: dict = {}  # the files read: the layer's are reflinks of them where it can
        key, layer, blob = self.layers.add_written(   # the tar extracted as it is written
            chains[-1] if chains else None,
            differ.diff_writer(self.store.snaps, r["id"], sources), sources)
        try:
            now = rfc3339()
            history = list(base.get("history", []))
            history.append({"created": now, "created_by": " ".join(cjson.loads(r["command"])),
                            **({"author": author} if author else {}),
                            **({"comment": message} if message else {})})
            doc = dict(base)
            doc["created"] = now
            doc.pop("comment", None)  # the base image's (an import's "Imported from ...")
            if message:
                doc["comment"] = message
            if author:
                doc["author"] = author
            doc["rootfs"] = {"type": "layers",
                             "diff_ids": list(base["rootfs"]["diff_ids"]) + [layer["diff_id"]]}
            doc["history"] = history
            with self.store.tx():
                self.layers.commit(key, layer, blob)
                return self.images.add(dumps(doc), chains + [layer["chain_id"]], tag)
        except BaseException:
            self.layers.discard(key)
            from .claims import abandon

            abandon(self.store)  # a layer blob written above goes again
            raise
        finally:
            self.store.content.release_claims()

    def export(self, name: str, out) -> None:
        """Write the container's flattened root as a tar to the binary file ``out``."""
        with self.using(name) as r:  # no rm or prune meanwhile
            self._export(r, out)

    def _export(self, r, out) -> None:
        from .layertar import write_tree_tar

        view = getattr(self.store.snaps, "union_view", None)
        if view is not None:  # the union driver: its Python API, no mount (as cp and diff)
            from .union import write_view_tar

            write_view_tar(out, view(r["id"]))
            return
        target = self.store.mount_target(r["id"])
        was_mounted = os.path.ismount(target)
        path = self.mount(r["id"])
        try:
            write_tree_tar(out, path, hashed=False)  # nobody needs an export's sha256
        finally:
            if not was_mounted and path == target:
                self.umount(r["id"])


    def files(self, name: str):
        """``with containers.files(name) as (row, fs):`` the container's merged root as a file
        system of its own, whatever its state: a :class:`lamina.copy.RootedFS` on its mount
        (made for the while if it was not mounted) or the union driver's view. The container is
        used meanwhile (:mod:`lamina.uses`): no rm or prune takes it."""
        import contextlib

        @contextlib.contextmanager
        def opened():
            with self.using(name) as row:
                view = getattr(self.store.snaps, "union_view", None)
                if view is not None:  # the union driver: its Python API, no mount
                    yield row, view(row["id"])
                    return
                from .copy import RootedFS

                target = self.store.mount_target(row["id"])
                mounted_here = not os.path.ismount(target)
                for attempt in range(5):  # another user of it may unmount it meanwhile
                    try:
                        fs = RootedFS(self.mount(row["id"]))
                    except (LaminaError, OSError):
                        if attempt == 4:
                            raise
                        continue
                    if fs.root != os.path.realpath(target) or os.path.ismount(target):
                        break  # (vfs: its directory is the root, never mounted)
                    fs.close()  # the empty directory it was mounted on
                else:
                    raise LaminaError(f"cannot keep {target} mounted: others unmount it")
                try:
                    yield row, fs
                finally:
                    fs.close()  # its descriptor of the root would keep the mount busy
                    if mounted_here:
                        try:
                            self.umount(row["id"])
                        except (LaminaError, OSError):
                            pass  # busy: another user of it; rm and the next umount undo it

        return opened()

    def rename(self, name: str, new_name: str) -> str:
        """Give the container ``name`` the name ``new_name`` (a leading ``/`` is dropped), as
        ``docker rename``: refused if another container has it or it is its name already.
        Returns the container's ID. Docker's order of refusals: no such container, the same
        name, an invalid name, a name in use."""
        if not name or not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        shown = new_name if new_name.startswith("/") else "/" + new_name  # as Docker names it
        with self.store.tx():
            row = self.get(name)
            if "/" + row["name"] == shown:
                raise InvalidArgument("Renaming a container with the same name as its current name")
            try:
                new = container_name(shown)
            except InvalidArgument as e:
                raise InvalidArgument(f"Error when allocating new name: {e}") from None
            taken = self.db.execute("SELECT id FROM containers WHERE name = ?", (new,)).fetchone()
            if taken is not None:
                raise FailedPrecondition(
                    f'Error when allocating new name: Conflict. The container name "/{new}" is '
                    f'already in use by container "{taken[0]}". You have to remove (or rename) '
                    "that container to be able to reuse that name.")
            self.db.execute("UPDATE containers SET name = ? WHERE id = ?", (new, row["id"]))
        return row["id"]


def open_containers(root: str | None = None, driver: str | None = None) -> ContainerStore:
    """The typed stores of the store at ``root``, wired: a :class:`ContainerStore` (with its
    ``images``, ``layers`` and ``store``)."""
    from .images import ImageStore
    from .layers import LayerStore
    from .store import Store

    store = Store(root, driver)
    layers = LayerStore(store)
    return ContainerStore(store, ImageStore(store, layers), layers)


def _limits_host_config(run: dict) -> dict:
    """HostConfig's limits and privileges from a RunConfig's JSON (lamina.runtime.oci), named
    and shaped as Docker's inspect shows them; only those that were set."""
    out = {}
    for key, field in (("Memory", "memory"), ("MemorySwap", "memory_swap"),
                       ("MemoryReservation", "memory_reservation"), ("NanoCpus", "nano_cpus"),
                       ("CpuShares", "cpu_shares"), ("CpusetCpus", "cpuset_cpus"),
                       ("PidsLimit", "pids_limit"), ("Privileged", "privileged"),
                       ("ShmSize", "shm_size")):
        if run.get(field):
            out[key] = run[field]
    for key, field in (("CapAdd", "cap_add"), ("CapDrop", "cap_drop"),
                       ("SecurityOpt", "security_opt"), ("GroupAdd", "group_add")):
        if run.get(field):
            out[key] = list(run[field])
    if run.get("devices"):
        out["Devices"] = [{"PathOnHost": host, "PathInContainer": inside,
                           "CgroupPermissions": permissions}
                          for host, inside, permissions in run["devices"]]
    if run.get("ulimits"):
        out["Ulimits"] = [{"Name": name, "Hard": hard, "Soft": soft}
                          for name, soft, hard in run["ulimits"]]
    return out


class _Use:
    """See :meth:`ContainerStore.using` (a class: contextlib costs start-up time)."""

    def __init__(self, containers: ContainerStore, name: str):
        self.containers = containers
        self.name = name
        self.row = None

    def __enter__(self):
        self.row = self.containers.take_use(self.name)
        return self.row

    def __exit__(self, *exc) -> None:
        uses.give_back(self.containers.store, self.row["id"])


class _StillRunning(Exception):
    """rm -f found the container still running: its owner is still starting or ending it."""


def _restart_policy(text: str | None) -> dict:
    """``on-failure:3`` -> Docker's ``{"Name": "on-failure", "MaximumRetryCount": 3}``."""
    name, _, count = (text or "no").partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _running_refused(cid: str) -> FailedPrecondition:
    return FailedPrecondition(f"You cannot remove a running container {cid}. Stop the container "
                              "before attempting removal or force remove")


_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _NAME_START | frozenset("_.-")


def container_name(name: str) -> str:
    """``name`` without its leading ``/``, if it is a valid container name: Docker's pattern
    ``/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (ASCII, two characters at least, no length limit). Else
    InvalidArgument, with Docker's message naming it as given."""
    bare = name.removeprefix("/")
    if len(bare) < 2 or bare[0] not in _NAME_START or not _NAME_CHARS.issuperset(bare):
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                              "are allowed")
    return bare


_ADJECTIVES = ("admiring", "bold", "brave", "calm", "clever", "eager", "elastic", "festive", "gifted",
               "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp",
               "stoic", "vibrant", "wizardly", "zealous")
_NAMES = ("babbage", "curie", "darwin", "einstein", "euler", "fermi", "goodall", "hopper", "hypatia",
          "kepler", "lovelace", "meitner", "newton", "noether", "pasteur", "ritchie", "shannon",
          "thompson", "turing", "wozniak")
