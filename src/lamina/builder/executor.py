"""The executor: runs a planned Dockerfile step by step, each step a state on the previous one.

A *state* is an image in the store (layer chain + config with history). Every step makes a new
state: COPY, ADD, a RUN that changes files and a WORKDIR that creates its directory add exactly
one layer; every other instruction only edits the config and adds a history entry with
``empty_layer: true``. Each state is kept as an (untagged, hidden) image and recorded in the build
cache, so the next build that reaches the same step with the same inputs reuses it as is.

COPY and ADD layers are written as layer tars straight from the context (``copy.py``): no
container, no mount. RUN creates a container on the state, runs the command through
:func:`lamina.runtime.process.run_in_container`, and commits the container's changes as the layer.
A failing step leaves nothing behind: its container and staged snapshot are removed, and no
state of it is stored.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import posixpath
import threading
import time
from dataclasses import dataclass, field

from lamina.builder.dockerfile import DockerfileError, parse, parse_duration
from lamina.builder.plan import PROXY_ARGS, ResolvedInstruction, Stage, plan
from lamina.errors import InvalidArgument, LaminaError, NotFound
from lamina.humanize import go_duration

from . import cache
from .context import Context
from .tree import LayerTree

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from lamina.containers import ContainerStore

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# BuildKit-only flags the parser accepts but this builder (like Docker's legacy one) does not do
_UNSUPPORTED = {"add": ("unpack",)}


class BuildError(LaminaError):
    """A step failed; ``exit_code`` is the failing RUN's status when there is one."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code or 1


@dataclass
class State:
    """An image the build reached: its ID (None: empty scratch), layer chain and config."""

    image_id: str | None
    chains: list[str]
    doc: dict
    cmd_set: bool = False  # CMD given in this stage (ENTRYPOINT then keeps it)
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    raw: bytes = b""  # the config's exact bytes, to store the image again if it was pruned

    @property
    def config(self) -> dict:
        return self.doc.setdefault("config", {})


@dataclass
class BuildOptions:
    context: str
    dockerfile: str | bytes
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    network: str | None = None
    quiet: bool = False
    ignore_text: str | None = None
    stdout: int | None = None  # where RUN's output goes (file descriptors; None: this process's)
    stderr: int | None = None
    # RUN --mount=type=secret: id -> ("file", path) or ("env", variable name)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)
    progress: str = "legacy"  # legacy (Docker's "Step N/M"), plain or tty (BuildKit's), quiet
    output: tuple[str, str] | None = None  # ("local", DIR) or ("tar", FILE): files, no image
    jobs: int | None = None  # stages built at once (None: the CPU count)
    extra_hosts: tuple[str, ...] = ()  # --add-host HOST:IP: in each RUN's /etc/hosts
    # --cache-to / --cache-from (lamina.builder.remotecache.CacheSpec each)
    cache_to: tuple = ()
    cache_from: tuple = ()


def _nop(state: State) -> str:
    """The start of a history entry for a step that runs nothing: the shell in effect, then
    ``#(nop) `` (Docker's words: ``/bin/sh -ec #(nop)  ENV ...`` after ``SHELL ["/bin/sh", "-ec"]``)."""
    return " ".join(state.shell) + " #(nop) "


def _go_quote_list(words: list[str]) -> str:
    """Go's ``%q`` of a []string: ``["a" "b"]`` (as in Docker's CMD/ENTRYPOINT history)."""
    return "[" + " ".join(json.dumps(w, ensure_ascii=False) for w in words) + "]"


def _env_dict(env: list[str]) -> dict[str, str]:
    out = {}
    for item in env or []:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _set_env(config: dict, key: str, value: str) -> None:
    env = list(config.get("Env") or [])
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    config["Env"] = env


def _expand_ports(words: list[str]) -> list[str]:
    ports = []
    for word in words:
        number, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        low, dash, high = number.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise InvalidArgument(f"invalid containerPort: {word}") from None
        if not 0 < first <= last <= 65535:
            raise InvalidArgument(f"invalid range specified for container port: {word}")
        ports += [f"{p}/{proto}" for p in range(first, last + 1)]
    return ports


class Builder:
    """One build: ``Builder(containers, options, out).run()`` returns the image ID."""

    def __init__(self, containers: ContainerStore, options: BuildOptions, out=print) -> None:
        self.containers = containers
        self.images = containers.images
        self.layers = containers.layers
        self.store = containers.store
        self.options = options
        from .progress import Plain

        mode = "quiet" if options.quiet else (options.progress or "legacy")
        self.plain = Plain(out) if mode == "plain" else None
        if mode == "tty":  # BuildKit's live view, drawn on this process's terminal
            import sys

            from .progress import Tty

            self.plain = Tty(sys.stdout)
        if mode == "quiet" or self.plain is not None:
            self.out = lambda *a, **k: None  # Docker's legacy lines: not in these modes
        else:
            lock = threading.Lock()  # stages built in parallel write whole lines

            def locked_out(*args, **kwargs):
                with lock:
                    out(*args, **kwargs)
            self.out = locked_out
        self.db = self.store.db
        self.context = Context(options.context, options.ignore_text)
        self.step = 0
        self.steps = itertools.count(1)  # shared by the stages' builders
        self.total = 0
        self.stage_states: dict[int, State] = {}
        self.leased: list[str] = []  # chains this build leased (lamina.leases), once per lease
        self.tmp: str | None = None
        self.stage_label = ""  # BuildKit's name of the stage being built ("stage-1", "build")
        self.stage_steps = (0, 0)  # (vertices so far, vertices) of that stage
        self.hit = False  # the last step came from the cache
        self.vertex: int | None = None  # the plain progress's vertex of the step being built
        self.made: dict = {}  # step key -> remotecache.Step: what --cache-to exports
        self.made_by: dict[str, str] = {}  # image ID -> the step key that made it
        self.exporting = False  # --cache-to or an inline cache: steps are remembered
        self.remote: list = []  # the --cache-from caches (remotecache.RemoteCache)

    # ------------------------------------------------------------------ images and states
    def _find_image(self, reference: str) -> str | None:
        _name, at, digest = reference.partition("@")
        if at:
            return self.images.by_digest(digest)
        try:
            return self.images.resolve(reference)
        except (NotFound, InvalidArgument):
            return None

    def _state_of(self, image_id: str) -> State:
        from lamina.leases import hold

        chains, config = hold(self.images, image_id)  # a concurrent rmi or prune spares them
        self.leased += chains
        return State(image_id, chains, json.loads(config), raw=config)

    def _base_env(self, reference: str) -> dict[str, str]:
        image_id = self._find_image(reference)
        if image_id is None:
            return {}
        doc = json.loads(self.store.content.read(image_id))
        return _env_dict((doc.get("config") or {}).get("Env"))

    def _tree(self, state: State) -> LayerTree:
        snaps = self.store.snaps
        if not state.chains:
            return LayerTree([], snaps.fmt)
        top = state.chains[-1]
        return LayerTree([snaps.dir(top)] + snaps.lower_dirs(top), snaps.fmt)

    # ------------------------------------------------------------------ the build
    def run(self) -> str:
        failed = True
        try:
            image_id = self._run()
            failed = False
            return image_id
        finally:
            if self.plain is not None:
                self.plain.close(failed)
            self._release_leases()

    def _run(self) -> str:
        options = self.options
        df = parse(options.dockerfile)
        stages = plan(df, options.build_args, options.target, base_env=self._base_env)
        self._warn_unused_args(df, stages)
        self._check_mounts(stages)
        self.total = sum(1 + len(s.instructions) for s in stages)
        self.several = len(stages) > 1
        self.exporting = bool(options.cache_to) or self._inline_cache_wanted()
        self._import_caches()
        jobs = self.options.jobs or os.cpu_count() or 1
        try:
            if jobs > 1 and self.several:
                self._run_graph(stages, jobs)
            else:
                for stage in stages:
                    self.stage_states[stage.index] = self._run_stage(stage)
        finally:
            for remote in self.remote:
                remote.close()
            if self.tmp:
                import shutil

                shutil.rmtree(self.tmp, ignore_errors=True)
        state = self.stage_states[stages[-1].index]
        if state.image_id is None:  # FROM scratch and nothing else: an empty image
            state = self._commit(state, "", None, None, add_history=False)
        if options.output is not None and options.output[0] in ("local", "tar"):
            # the final stage's files, no image named
            from .output import write_output

            write_output(self._tree(state), *options.output)
            self.out(f"Successfully built {state.image_id[7:19]}")
            self._export_caches(state.image_id)
            return state.image_id
        built = state.image_id  # the last step's state (made_by knows it)
        if self._inline_cache_wanted():  # the image made carries its cache
            state = self._with_inline_cache(state)
        from lamina.image import normalize

        tags = [normalize(t) for t in options.tags]
        with self.store.tx():  # the image and its tags in one transaction
            self._store_again(state)
            cache.record_result(self.db, state.image_id)
            for tag in tags:
                self.images.set_tag(tag, state.image_id)
        self.out(f"Successfully built {state.image_id[7:19]}")
        for tag in tags:
            self.out(f"Successfully tagged {tag}")
        if options.output is not None:  # oci or docker: the image as an archive (and kept)
            from lamina.transfer.save import save

            kind, dest = options.output
            save(self.images, tags or [state.image_id], dest, f"{kind}-archive")
        if self.plain is not None:
            number = self.plain.start("exporting to image")
            self.plain.status(number, f"writing image {state.image_id} done")
            for tag in tags:
                self.plain.status(number, f"naming to {_full_name(tag)} done")
            self.plain.done(number)
        self._export_caches(built)
        return state.image_id

    # ------------------------------------------------------------------ caches that travel
    def _import_caches(self) -> None:
        """Read each ``--cache-from``; one that cannot be read is a warning (as BuildKit's)."""
        if not self.options.cache_from or self.options.no_cache:  # --no-cache: none is used
            return
        from .remotecache import RemoteCache

        for spec in self.options.cache_from:
            number = self.plain.start(f"importing cache manifest from {spec}") \
                if self.plain is not None else None
            remote = RemoteCache(spec)
            try:
                count = remote.load()
            except (LaminaError, OSError, ValueError) as error:
                remote.close()
                message = f"failed to import cache {spec}: {str(error).splitlines()[0]}"
                if number is not None:
                    self.plain.status(number, f"WARNING: {message}")
                    self.plain.done(number)
                else:
                    self.out(f"WARNING: {message}")
                continue
            self.remote.append(remote)
            if number is not None:
                self.plain.status(number, f"{count} cache records")
                self.plain.done(number)

    def _inline_cache_wanted(self) -> bool:
        return any(spec.kind == "inline" for spec in self.options.cache_to) or \
            self.options.build_args.get("BUILDKIT_INLINE_CACHE", "0").lower() in ("1", "true")

    def _with_inline_cache(self, state: State) -> State:
        """The final state again, its config holding the cache of the steps that made it."""
        from .remotecache import with_inline_cache

        config = with_inline_cache(state.raw, self.made, state.image_id)
        with self.store.tx():
            image_id = self.images.add(config, state.chains, None)
            self._lease(state.chains)
        return State(image_id, list(state.chains), json.loads(config), state.cmd_set,
                     list(state.shell), config)

    def _export_caches(self, image_id: str) -> None:
        from .remotecache import export_cache

        for spec in self.options.cache_to:
            if spec.kind == "inline":
                continue
            kind = "client directory" if spec.kind == "local" else "registry"
            if self.plain is not None:
                number = self.plain.start(f"exporting cache to {kind}")
                self.plain.status(number, "preparing build cache for export")
                export_cache(self.images, spec, self.made, image_id,
                             lambda line, n=number: self.plain.status(n, line))
                self.plain.done(number)
            else:
                export_cache(self.images, spec, self.made, image_id)

    def _remote_hit(self, key: str) -> str | None:
        """The state step ``key`` made on the machine that wrote a ``--cache-from``, stored
        here (its missing layers fetched), or None."""
        for remote in self.remote:
            try:
                image_id = remote.materialize(self.images, key)
            except (LaminaError, OSError) as error:  # a warning: the step is built here
                warning = f"WARNING: cache {remote.spec}: {str(error).splitlines()[0]}"
                if self.plain is not None and self.vertex is not None:
                    self.plain.status(self.vertex, warning)
                else:
                    self.out(warning)
                continue
            if image_id is not None:
                return image_id
        return None

    def _remember(self, key: str, parent_id: str | None, state: State) -> None:
        """Step ``key`` on ``parent_id`` made (or found) ``state``: a record for --cache-to."""
        if not self.exporting:
            return
        from .remotecache import Step

        parent = self.made_by.get(parent_id) if parent_id else None
        self.made[key] = Step(key, parent, state.image_id, tuple(state.chains), state.raw)
        self.made_by[state.image_id] = key

    def _run_graph(self, stages: list[Stage], jobs: int) -> None:
        """Build the stages as a graph: each as soon as the stages it needs are built, at most
        ``jobs`` at once, each in a thread with its own connection to the store. A failure
        stops new stages from starting; the first error is raised once the running ones end."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        needs = {stage.index: stage_needs(stage) for stage in stages}
        pending = {stage.index: stage for stage in stages}
        running: dict = {}
        error: BaseException | None = None
        with ThreadPoolExecutor(min(jobs, len(stages)), thread_name_prefix="stage") as pool:
            while pending or running:
                if error is None:
                    for index, stage in list(pending.items()):
                        if needs[index] <= set(self.stage_states):
                            del pending[index]
                            running[pool.submit(self._run_stage_apart, stage)] = index
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    try:
                        self.stage_states[index] = future.result()
                    except BaseException as failure:  # noqa: BLE001  (raised below)
                        error = error or failure
        if error is not None:
            raise error

    def _run_stage_apart(self, stage: Stage) -> State:
        """Build one stage in this thread, through a store connection of its own."""
        from lamina.containers import ContainerStore
        from lamina.images import ImageStore
        from lamina.layers import LayerStore
        from lamina.store import Store

        store = Store(self.store.root, self.store.driver)
        try:
            layers = LayerStore(store)
            images = ImageStore(store, layers)
            containers = ContainerStore(store, images, layers)
            lifecycle = self.containers.lifecycle
            if lifecycle is not None:
                containers.lifecycle = type(lifecycle)(containers)
            twin = Builder.__new__(Builder)
            twin.__dict__.update(self.__dict__)
            twin.containers, twin.images, twin.layers = containers, images, layers
            twin.store, twin.db = store, store.db
            twin.leased, twin.tmp = [], None
            try:
                return twin._run_stage(stage)
            finally:
                self.leased += twin.leased  # released with the build's own, at its end
                if twin.tmp:
                    import shutil

                    shutil.rmtree(twin.tmp, ignore_errors=True)
        finally:
            store.close()

    def _release_leases(self) -> None:
        """Drop the leases this build took on the layers it built on (lamina.leases): once the
        build is done its images hold their layers themselves."""
        from lamina.leases import release

        leased, self.leased = self.leased, []
        release(self.store, leased)  # its own: another build of this process keeps its leases

    def _warn_unused_args(self, df, stages: list[Stage]) -> None:
        declared = set()
        for node in df.instructions:
            if node.cmd == "arg":
                declared.update(w.partition("=")[0] for w in node.args)
        from lamina.builder.plan import platform_args

        unused = sorted(k for k in self.options.build_args
                        if k not in declared and k not in PROXY_ARGS and k not in platform_args()
                        and k != "BUILDKIT_INLINE_CACHE")
        if unused:
            self.out(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")

    def _check_mounts(self, stages: list[Stage]) -> None:
        """Every RUN --mount of the stages to build, checked before any step runs: a bad one
        leaves nothing in the store."""
        from .mounts import check_mounts, parse_mount

        found = []
        for stage in stages:
            for ins in stage.instructions:
                if ins.cmd != "run":
                    continue
                found.append((ins.line, [parse_mount(text, ins.line)
                                         for text in ins.flags.get("mount", [])]))
                security = ins.flags.get("security") or "sandbox"
                if security != "sandbox":
                    raise DockerfileError(ins.line, f"RUN --security={security} needs the "
                                          "security.insecure entitlement, which lamina build "
                                          "does not grant")
        check_mounts(found, self.options.secrets, self.context.root)

    def _announce(self, text: str) -> None:
        self.step = next(self.steps)
        self.out(f"Step {self.step}/{self.total} : {text.splitlines()[0] if text else text}")

    def _vertex(self, text: str) -> int | None:
        """Start the plain progress's vertex of the stage's next step."""
        if self.plain is None:
            return None
        from .progress import vertex_label

        done, total = self.stage_steps
        self.stage_steps = (done + 1, total)
        return self.plain.start(vertex_label(self.stage_label, done + 1, total, text))

    def _run_stage(self, stage: Stage) -> State:
        from .progress import VERTEX_COMMANDS

        self.stage_label = (stage.name or f"stage-{stage.index}") if self.several else ""
        self.stage_steps = (0, 1 + sum(1 for i in stage.instructions
                                       if i.cmd in VERTEX_COMMANDS))
        text = f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name else "")
        self._announce(text)
        vertex = self.vertex = self._vertex(text)
        state = self._from(stage)
        if vertex is not None:
            self.plain.done(vertex)
        for instruction in stage.instructions:
            self._announce(instruction.original)
            vertex = self.vertex = self._vertex(instruction.original) \
                if instruction.cmd in VERTEX_COMMANDS else None
            self.hit = False
            try:
                state = self._dispatch(state, instruction)
            except LaminaError as error:
                if vertex is not None:
                    self.plain.error(vertex, str(error))
                raise
            if vertex is not None:
                (self.plain.cached if self.hit else self.plain.done)(vertex)
        return state

    def _from(self, stage: Stage) -> State:
        if stage.base_stage is not None:
            base = self.stage_states[stage.base_stage]
            state = State(base.image_id, list(base.chains), json.loads(json.dumps(base.doc)),
                          shell=list(base.shell), raw=base.raw)
        elif stage.base.lower() == "scratch":
            doc = {"architecture": "amd64", "os": "linux",
                   "config": {"Env": [DEFAULT_PATH]},
                   "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            state = State(None, [], doc)
            return state
        else:
            image_id = self._find_image(stage.base)
            if self.options.pull:
                image_id = self._pull(stage.base, image_id)
            if image_id is None:
                raise NotFound(
                    f"Dockerfile:{stage.line}: FROM {stage.base}: no such image in this store: "
                    f"get it with `lamina pull {stage.base}`, `lamina load -i ARCHIVE` or "
                    f"`lamina import ROOTFS.tar {stage.base}`")
            state = self._state_of(image_id)
        state.shell = list(state.config.get("Shell") or ["/bin/sh", "-c"])
        env = list(state.config.get("Env") or [])
        if not any(item.startswith("PATH=") for item in env):  # as Docker and BuildKit do
            state.config["Env"] = [DEFAULT_PATH] + env
        if state.image_id is not None:  # None: a stage that is an empty scratch
            self.out(f" ---> {state.image_id[7:19]}")
        triggers = state.config.get("OnBuild") or []
        if triggers:
            state = self._triggers(state, triggers, stage)
        return state

    def _pull_image(self, reference: str) -> str:
        """Pull ``reference``; what the pull wrote goes again if it fails (lamina.claims)."""
        from lamina.claims import abandon
        from lamina.transfer.pull import pull

        try:
            return pull(self.images, reference)
        except BaseException:
            abandon(self.store)
            raise

    def _pull(self, reference: str, local: str | None) -> str | None:
        try:
            return self._pull_image(reference)
        except (ImportError, LaminaError) as error:
            if local is not None:
                self.out(f"{reference} is a local image: using it ({error})"
                         if not isinstance(error, ImportError) else
                         f"{reference} is a local image (no registry client to pull with)")
                return local
            if isinstance(error, ImportError):
                return None
            raise

    def _triggers(self, state: State, triggers: list[str], stage: Stage) -> State:
        self.out(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
        text = f"FROM {state.image_id}\n" + "\n".join(triggers) + "\n"
        try:
            (trigger_stage,) = plan(parse(text), {}, base_env=self._base_env)
        except DockerfileError as error:
            raise DockerfileError(stage.line, f"ONBUILD trigger: {error.reason}") from None
        # the new image does not inherit the triggers it ran
        state.config["OnBuild"] = None
        for instruction in trigger_stage.instructions:
            self.out(f" ---> Running trigger: {instruction.original.splitlines()[0]}")
            state = self._dispatch(state, instruction)
        return state

    # ------------------------------------------------------------------ steps
    def _dispatch(self, state: State, ins: ResolvedInstruction) -> State:
        handler = getattr(self, "_do_" + ins.cmd, None)
        if handler is None:
            raise DockerfileError(ins.line, f"unknown instruction: {ins.cmd.upper()}")
        for flag in _UNSUPPORTED.get(ins.cmd, ()):
            if ins.flags.get(flag) not in (None, "false", []):
                raise DockerfileError(ins.line, f"{ins.cmd.upper()} --{flag} is not supported "
                                                "by lamina's builder (a BuildKit feature)")
        try:
            return handler(state, ins)
        except DockerfileError:
            raise
        except BuildError:
            raise
        except LaminaError as error:  # same class, the step in front
            try:
                located = type(error)(f"Dockerfile:{ins.line}: {error}")
            except TypeError:
                raise error from None
            raise located from None

    def _cached(self, state: State, key: str) -> State | None:
        if self.options.no_cache:
            return None
        for _attempt in range(3):  # a concurrent prune may remove the state found meanwhile:
            try:  # looked up again, it is stored again from the recorded config
                image_id = cache.lookup(self.images, key)
                remote = image_id is None and bool(self.remote)
                if remote:  # a --cache-from's state, stored here and remembered
                    image_id = self._remote_hit(key)
                if image_id is None:
                    return None
                new = self._state_of(image_id)
                if remote:
                    with self.store.tx():
                        cache.record(self.db, key, state.image_id, image_id, new.chains,
                                     new.raw)
                break
            except NotFound:
                continue
        else:
            return None
        self.hit = True
        self._remember(key, state.image_id, new)
        self.out(" ---> Using cache (CACHED)")
        self.out(f" ---> {image_id[7:19]}")
        new.cmd_set = state.cmd_set
        new.shell = list(new.config.get("Shell") or ["/bin/sh", "-c"])
        return new

    def _metadata(self, state: State, ins: ResolvedInstruction, created_by: str, change,
                  extra: str = "") -> State:
        """A step that only edits the config: ``change(config)``; history says ``created_by``."""
        key = cache.step_key(state.image_id, created_by + extra)
        hit = self._cached(state, key)
        if hit is not None:
            if ins.cmd == "cmd":
                hit.cmd_set = True
            return hit
        new = self._copy_state(state)
        change(new.config)
        if ins.cmd == "cmd":
            new.cmd_set = True
        return self._commit(new, created_by, None, key, parent_id=state.image_id)

    @staticmethod
    def _copy_state(state: State) -> State:
        return State(state.image_id, list(state.chains), json.loads(json.dumps(state.doc)),
                     state.cmd_set, list(state.shell), state.raw)

    def _commit(self, state: State, created_by: str, layer, key: str | None,
                parent_id: str | None = None, add_history: bool = True) -> State:
        """Store ``state`` (plus ``layer``: (staging key, facts, blob)) as an image; record it."""
        from lamina.image import MAX_LAYERS, dumps, rfc3339

        now = rfc3339()
        doc = state.doc
        doc["created"] = now
        chains = list(state.chains)
        if layer is not None:
            if len(chains) + 1 > MAX_LAYERS:
                self._drop(layer)
                raise BuildError(f"Step {self.step}/{self.total}: the image would have "
                                 f"{len(chains) + 1} layers; an image may have at most "
                                 f"{MAX_LAYERS}")
            doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            doc["rootfs"]["diff_ids"] = list(doc["rootfs"]["diff_ids"]) + [layer[1]["diff_id"]]
            chains.append(layer[1]["chain_id"])
        if add_history:
            entry = {"created": now, "created_by": created_by}
            if layer is None:
                entry["empty_layer"] = True
            doc["history"] = list(doc.get("history") or []) + [entry]
        ordered = {k: doc[k] for k in ("created", "author", "architecture", "os", "config",
                                       "rootfs", "history") if k in doc}
        ordered.update({k: v for k, v in doc.items() if k not in ordered})
        config = dumps(ordered)
        try:
            with self.store.tx():
                if layer is not None:
                    self.layers.commit(layer[0], layer[1], layer[2])
                image_id = self.images.add(config, chains, None)
                if key is not None:
                    cache.record(self.db, key, parent_id, image_id, chains, config)
                self._lease(chains)
        except BaseException:
            if layer is not None:
                self._drop(layer)
            raise
        self.out(f" ---> {image_id[7:19]}")
        new = State(image_id, chains, ordered, state.cmd_set, list(state.shell), config)
        if key is not None:
            self._remember(key, parent_id, new)
        return new

    def _store_again(self, state: State) -> None:
        """Inside a transaction: store ``state`` again if an ``image prune -a`` or ``system
        prune`` removed it (untagged) since its step; the build's leases kept its layers."""
        if self.images.row(state.image_id) is None:
            self.images.add(state.raw, state.chains, None)

    def _lease(self, chains: list[str]) -> None:
        """Inside a transaction: lease the layers of a state just stored (lamina.leases), so
        that a concurrent prune removing the untagged state leaves them until the build ends."""
        from lamina import leases

        leases.add(self.db, chains)
        self.leased += chains

    def _drop(self, layer) -> None:
        staged = layer[0]
        self.layers.discard(staged)

    def _layer_from_tar(self, state: State, write, sources: dict | None = None) -> tuple:
        """Extract the layer tar that ``write(out)`` writes on the state's chain as it is
        written, keeping its tar-split record instead of the tar (staged, committed later by
        :meth:`_commit`); returns (staging key, facts, (digest, size, media type)).
        ``sources``: see :meth:`lamina.layers.LayerStore.add_written`."""
        return self.layers.add_written(state.chains[-1] if state.chains else None, write,
                                       sources)

    # ------------------------------------------------------------------ metadata instructions
    def _do_env(self, state, ins):
        pairs = list(zip(ins.args[0::2], ins.args[1::2]))
        created_by = _nop(state) + " ENV " + " ".join(f"{k}={v}" for k, v in pairs)

        def change(config):
            for key, value in pairs:
                _set_env(config, key, value)
        return self._metadata(state, ins, created_by, change)

    def _do_label(self, state, ins):
        pairs = list(zip(ins.args[0::2], ins.args[1::2]))
        created_by = _nop(state) + " LABEL " + " ".join(f"{k}={v}" for k, v in pairs)

        def change(config):
            labels = dict(config.get("Labels") or {})
            labels.update(pairs)
            config["Labels"] = labels
        return self._metadata(state, ins, created_by, change)

    def _do_maintainer(self, state, ins):
        """MAINTAINER sets the config's author, as Docker's does, and a ``maintainer`` label."""
        name = ins.args[0] if ins.args else ""
        created_by = _nop(state) + " MAINTAINER " + name
        key = cache.step_key(state.image_id, created_by)
        hit = self._cached(state, key)
        if hit is not None:
            return hit
        new = self._copy_state(state)
        new.doc["author"] = name
        labels = dict(new.config.get("Labels") or {})
        labels["maintainer"] = name
        new.config["Labels"] = labels
        return self._commit(new, created_by, None, key, parent_id=state.image_id)

    def _do_arg(self, state, ins):
        text = ins.original.split(None, 1)[1] if " " in ins.original.strip() else ""
        return self._metadata(state, ins, _nop(state) + " ARG " + text, lambda config: None)

    def _do_expose(self, state, ins):
        ports = _expand_ports(ins.args)
        created_by = _nop(state) + " EXPOSE " + " ".join(sorted(ins.args))  # sorted, as Docker

        def change(config):
            exposed = dict(config.get("ExposedPorts") or {})
            exposed.update({p: {} for p in ports})
            config["ExposedPorts"] = exposed
        return self._metadata(state, ins, created_by, change)

    def _do_volume(self, state, ins):
        volumes = list(ins.args)
        created_by = _nop(state) + " VOLUME [" + " ".join(volumes) + "]"

        def change(config):
            existing = dict(config.get("Volumes") or {})
            existing.update({v: {} for v in volumes})
            config["Volumes"] = existing
        return self._metadata(state, ins, created_by, change)

    def _do_user(self, state, ins):
        user = ins.args[0]
        return self._metadata(state, ins, _nop(state) + " USER " + user,
                              lambda config: config.__setitem__("User", user))

    def _do_stopsignal(self, state, ins):
        signal = ins.args[0]
        return self._metadata(state, ins, _nop(state) + " STOPSIGNAL " + signal,
                              lambda config: config.__setitem__("StopSignal", signal))

    def _command(self, state: State, ins: ResolvedInstruction) -> list[str]:
        if ins.json:
            return list(ins.args)
        return list(state.shell) + [" ".join(ins.args)]

    def _do_cmd(self, state, ins):
        command = self._command(state, ins)
        return self._metadata(state, ins, _nop(state) + " CMD " + _go_quote_list(command),
                              lambda config: config.__setitem__("Cmd", command))

    def _do_entrypoint(self, state, ins):
        entrypoint = self._command(state, ins)
        if not ins.json and ins.args == [""]:
            entrypoint = []
        cmd_set = state.cmd_set

        def change(config):
            config["Entrypoint"] = entrypoint or None
            if not cmd_set:  # Docker: ENTRYPOINT resets a CMD inherited from the base
                config["Cmd"] = None
        return self._metadata(state, ins, _nop(state) + " ENTRYPOINT " + _go_quote_list(entrypoint),
                              change, extra=f"\0cmd_set={cmd_set}")

    def _do_shell(self, state, ins):
        shell = list(ins.args)
        prefix = " ".join(shell) + " #(nop) "  # Docker writes the new shell's #(nop)
        new = self._metadata(state, ins, prefix + " SHELL [" + " ".join(shell) + "]",
                             lambda config: config.__setitem__("Shell", shell))
        new.shell = shell
        return new

    def _do_onbuild(self, state, ins):
        trigger = ins.args[0] if ins.args else ""
        first, _, rest = trigger.partition(" ")
        trigger = first.upper() + (" " + rest if rest else "")

        def change(config):
            config["OnBuild"] = list(config.get("OnBuild") or []) + [trigger]
        return self._metadata(state, ins, _nop(state) + " ONBUILD " + trigger, change)

    def _do_healthcheck(self, state, ins):
        from lamina.builder.dockerfile import parse_flags  # noqa: F401  (flags are parsed already)

        kind = ins.args[0].upper()
        if kind == "NONE":
            health = {"Test": ["NONE"]}
            text = '&{["NONE"] "0s" "0s" "0s" \'\\x00\'}'
        else:
            test = (["CMD"] + list(ins.args[1:])) if ins.json else ["CMD-SHELL", ins.args[1]]
            health = {"Test": test}
            durations = []
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                              ("start-period", "StartPeriod"),
                              ("start-interval", "StartInterval")):
                value = ins.flags.get(flag)
                seconds = parse_duration(value) if isinstance(value, str) else 0.0
                if seconds:
                    health[key] = round(seconds * 1e9)
                if key != "StartInterval":  # not in Docker 20.10's HealthConfig
                    durations.append(seconds)
            retries = int(ins.flags.get("retries") or 0)
            if retries:
                health["Retries"] = retries
            text = "&{" + _go_quote_list(test) + " " + " ".join(
                f'"{go_duration(s)}"' for s in durations) + f" '\\x{retries:02x}'" + "}"
        return self._metadata(state, ins, _nop(state) + " HEALTHCHECK " + text,
                              lambda config: config.__setitem__("Healthcheck", health))

    # ------------------------------------------------------------------ WORKDIR
    def _do_workdir(self, state, ins):
        path = ins.args[0]
        current = state.config.get("WorkingDir") or "/"
        workdir = posixpath.normpath(posixpath.join(current, path)) if not path.startswith("/") \
            else posixpath.normpath(path)
        workdir = "/" + workdir.lstrip("/")
        created_by = _nop(state) + "WORKDIR " + workdir
        key = cache.step_key(state.image_id, created_by)
        hit = self._cached(state, key)
        if hit is not None:
            return hit
        new = self._copy_state(state)
        new.config["WorkingDir"] = workdir
        tree = self._tree(state)
        try:
            resolved, entry = tree.resolve(workdir)
        except InvalidArgument as error:
            raise BuildError(f"Dockerfile:{ins.line}: WORKDIR {workdir}: {error}") from None
        layer = None
        if entry is None:
            user = state.config.get("User") or ""
            from .copy import CopyPlan, write_layer

            owner = (0, 0)
            if user and user not in ("root", "0", "0:0"):
                # BuildKit makes a missing WORKDIR owned by the USER in effect
                from .copy import parse_chown

                try:
                    owner = parse_chown(user, tree, "WORKDIR")
                except NotFound:
                    owner = (0, 0)
            copy_plan = CopyPlan(resolved.lstrip("/"), *owner)
            copy_plan.now_ns = time.time_ns()
            from .copy import CopyEntry, FakeStat

            fake = FakeStat(os.stat_result((0o40755, 0, 0, 1, owner[0], owner[1], 0, 0, 0, 0)),
                            mtime_ns=copy_plan.now_ns)
            copy_plan.add(CopyEntry(resolved.lstrip("/"), fake, self._scratch_dir()))
            layer = self._layer_from_tar(state, lambda out: write_layer(copy_plan, tree, out))
        return self._commit(new, created_by, layer, key, parent_id=state.image_id)

    # ------------------------------------------------------------------ COPY and ADD
    def _scratch_dir(self) -> str:
        if self.tmp is None:
            import tempfile

            base = os.path.join(self.store.root, "tmp")
            os.makedirs(base, exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix="build-", dir=base)
        return self.tmp

    def _do_copy(self, state, ins):
        return self._copy(state, ins, "COPY")

    def _do_add(self, state, ins):
        return self._copy(state, ins, "ADD")

    def _copy(self, state: State, ins: ResolvedInstruction, what: str) -> State:
        from .copy import content_digest, plan_copy, write_layer

        *sources, dest = ins.args
        flags = ins.flags
        heredocs: dict[str, str] = {}
        downloads: dict[str, tuple] = {}
        for heredoc in ins.heredocs:
            word = next((s for s in sources if s.lstrip("0123456789").lstrip("<").lstrip("-")
                         .strip("'\"") == heredoc.name), None)
            if word is None:
                continue
            path = os.path.join(self._scratch_dir(), f"heredoc-{len(heredocs)}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(heredoc.content)
            sources[sources.index(word)] = heredoc.name
            heredocs[heredoc.name] = path
        source_tree = None
        source_label = ""
        reference = flags.get("from")
        if isinstance(reference, str) and reference:
            if ins.from_stage is not None:
                source_state = self.stage_states[ins.from_stage]
            else:
                image_id = self._find_image(reference)
                if image_id is None:
                    raise NotFound(f"COPY --from={reference}: no such stage or image in this "
                                   f"store: get it with `lamina pull {reference}`")
                source_state = self._state_of(image_id)
            source_tree = self._tree(source_state)
            source_label = f"--from={source_state.image_id or 'scratch'} "
        context = self.context
        kept_git = False  # ADD --keep-git-dir of a repository: keyed by its commit
        if what == "ADD" and sources and reference in (None, "", []):
            from .gitsource import parse_git_ref

            repositories = [parse_git_ref(source) for source in sources]
            if any(repositories):
                if len(sources) != 1:
                    raise InvalidArgument("ADD: a git repository must be the only source")
                kept_git = flags.get("keep-git-dir") == "true"
                context, sources, source_label = self._git_source(repositories[0], kept_git)
        checksum = flags.get("checksum") if what == "ADD" else None
        if checksum and not all(s.startswith(("http://", "https://")) for s in sources):
            raise InvalidArgument("checksum can't be specified for non-HTTP(S) sources")
        for source in sources:
            if source.startswith(("http://", "https://")):
                if what == "COPY":
                    raise InvalidArgument("source can't be a URL for COPY")
                downloads[source] = self._download(source, dest)
                if checksum:  # verified before any layer is written
                    _verify_checksum(downloads[source][0], checksum, source)
        link = flags.get("link") == "true"
        tree = self._tree(state)
        if link:  # the layer is made as on an empty root: independent of the layers below
            tree = LayerTree([], self.store.snaps.fmt)
            if any(not part.isdigit() for part in (flags.get("chown") or "0").split(":")):
                tree = self._tree(state)  # user and group names: from the image's files
        copy_plan = plan_copy(
            what=what, sources=sources, dest=dest,
            workdir=state.config.get("WorkingDir") or "/", tree=tree,
            context=context if source_tree is None else None,
            chown=flags.get("chown") or None, chmod=flags.get("chmod") or None,
            source_tree=source_tree, heredocs=heredocs, downloads=downloads,
            exclude=list(flags.get("exclude") or []), parents=flags.get("parents") == "true")
        try:
            # a kept .git differs from clone to clone (its index's times, its logs): the commit
            # names the content instead
            digest = content_digest(copy_plan) if not kept_git else \
                cache.step_key(None, source_label)
            kinds = copy_plan.kinds
            kind = "multi" if len(kinds) != 1 else kinds[0]
            chown = flags.get("chown") or ""  # Docker keeps the flag, glued to the digest
            created_by = (f"{_nop(state)}{what} {'--chown=' + chown if chown else ''}"
                          f"{kind}:{digest} in {dest} ")
            extra = f"\0{source_label}{flags.get('chown', '')}\0{flags.get('chmod', '')}" + \
                "".join(f"\0exclude={p}" for p in flags.get("exclude") or []) + \
                ("\0parents" if flags.get("parents") == "true" else "") + \
                ("\0link" if link else "")
            key = cache.step_key(state.image_id, created_by + extra, digest)
            hit = self._cached(state, key)
            if hit is not None:
                return hit
            link_key = cache.step_key("link", created_by + extra, digest) if link else None
            layer = self._linked_layer(state, link_key) if link_key else None
            if layer is None:
                empty = LayerTree([], self.store.snaps.fmt)
                layer = self._layer_from_tar(
                    state, lambda out: write_layer(copy_plan, empty if link else tree, out))
        finally:
            copy_plan.close()
        new = self._commit(self._copy_state(state), created_by, layer, key,
                           parent_id=state.image_id)
        if link_key is not None:  # the same COPY --link on any other base reuses this layer
            with self.store.tx():
                cache.record(self.db, link_key, None, new.image_id, new.chains, new.raw)
        return new

    def _linked_layer(self, state: State, link_key: str):
        """``COPY --link`` made before on another base: its layer's tar, as it is (given back by
        the layer store from its snapshot and tar-split record), applied on ``state`` (staged
        as :meth:`_layer_from_tar` does), or None."""
        if self.options.no_cache:
            return None
        chains = cache.result_chains(self.db, link_key)
        row = self.layers.get(chains[-1]) if chains else None
        if row is None:
            return None
        blob = (row["blob_digest"], row["blob_size"], row["media_type"])
        try:
            stream = self.layers.tar_reader(chains[-1])
            try:
                staged, facts = self.layers.add(state.chains[-1] if state.chains else None,
                                                stream, row["diff_id"])
            finally:
                stream.close()
        except (LaminaError, OSError):
            return None  # the layer went meanwhile: made again
        self.out(" ---> Using the linked layer of an earlier build (--link)")
        return staged, facts, blob

    def _git_source(self, source, keep_git_dir: bool) -> tuple[Context, list[str], str]:
        """Clone a repository into the scratch dir: (its files as a context, the source to
        copy, what the cache key holds of it)."""
        from .gitsource import checkout

        where = os.path.join(self._scratch_dir(), f"git-{len(os.listdir(self.tmp))}")
        root, commit = checkout(source, where, keep_git_dir)
        self.out(f" ---> {source.remote} at {commit[:12]}")
        label = f"git={source.remote}@{commit}:{source.subdir}:{keep_git_dir} "
        return Context(root, ""), ["."], label

    def _download(self, url: str, dest: str) -> tuple[str, str, float]:
        """Fetch ``url`` into the scratch dir: (path, file name, mtime from Last-Modified)."""
        import email.utils
        import shutil
        import urllib.parse
        import urllib.request

        name = posixpath.basename(urllib.parse.urlparse(url).path) or "download"
        path = os.path.join(self._scratch_dir(), f"download-{len(os.listdir(self.tmp))}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
                modified = response.headers.get("Last-Modified")
        except OSError as error:
            raise NotFound(f"ADD {url}: download failed: {error}") from None
        mtime = 0.0
        if modified:
            try:
                mtime = email.utils.parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = 0.0
        return path, name, mtime

    # ------------------------------------------------------------------ RUN
    def _do_run(self, state, ins):
        config = state.config
        if ins.json:
            argv = list(ins.args)
        else:
            script = ins.args[0] if ins.args else ""
            if len(ins.heredocs) == 1 and script.strip().lstrip("-").startswith("<<") and \
                    script.strip().split("<<", 1)[1].lstrip("-").strip("'\"") == \
                    ins.heredocs[0].name:
                script = ins.heredocs[0].content  # RUN <<EOF: the body is the script
            elif ins.heredocs:
                script = script + "\n" + "".join(
                    h.content + h.name + "\n" for h in ins.heredocs)
            argv = list(state.shell) + [script]
        image_env = _env_dict(config.get("Env"))
        build_args = sorted((k, v) for k, v in ins.env.items() if k not in image_env)
        recorded = [(k, v) for k, v in build_args if k not in PROXY_ARGS]  # never in history
        shown = list(argv)
        if recorded:
            shown = [f"|{len(recorded)}"] + [f"{k}={v}" for k, v in recorded] + shown
        created_by = " ".join(shown)
        network = ins.flags.get("network") or self.options.network or "default"
        extra = f"\0network={network}"
        from .mounts import StepMounts, parse_mount

        workdir = config.get("WorkingDir") or "/"
        mounts = [parse_mount(text, ins.line) for text in ins.flags.get("mount", [])]
        mounts = [m if not m.target or m.target.startswith("/") else  # relative to WORKDIR
                  dataclasses.replace(m, target=posixpath.normpath(posixpath.join(workdir,
                                                                                   m.target)))
                  for m in mounts]
        step = StepMounts(self.store.root, self._scratch_dir(), self.options.secrets)
        helpers: list[str] = []  # containers that give a stage's or an image's files to a mount
        try:
            sources = self._mount_sources(ins, mounts, step, helpers)
            if mounts:  # what the mounts are, and the content of context binds; never a secret's
                extra += "\0mounts=" + "\0".join(
                    m.key_text() + "\0" + sources.get(i, ("", ""))[1]
                    for i, m in enumerate(mounts))
            key = cache.step_key(state.image_id, created_by + extra)
            hit = self._cached(state, key)
            if hit is not None:
                return hit
            for i, m in enumerate(mounts):
                if m.type == "bind":
                    step.add_bind(sources[i][0], m.target, m.readonly)
                elif m.type == "cache":
                    step.cache(m, lambda i=i: sources[i][0])
                elif m.type == "tmpfs":
                    step.tmpfs(m)
                elif m.type == "secret" and m.id in self.options.secrets:
                    step.secret(m)
            env = list(config.get("Env") or [])
            if not any(e.startswith("PATH=") for e in env):
                env.insert(0, DEFAULT_PATH)
            env += [f"{k}={v}" for k, v in build_args] + step.env
            tree = self._tree(state)
            made = []  # mount points runc will make: each target the image lacks, and its
            for m in mounts:  # parents up to the first the image has
                path = m.target
                while path not in ("", "/") and tree.lookup(path) is None:
                    made.append(path)
                    path = posixpath.dirname(path)
            layer = self._run_container(state, ins, argv, env, network, step.oci, made)
        finally:
            step.close()
            for cid in helpers:
                try:
                    self.containers.rm(cid, force=True)
                except LaminaError:
                    pass
        new = self._copy_state(state)
        return self._commit(new, created_by, layer, key, parent_id=state.image_id)

    def _mount_sources(self, ins: ResolvedInstruction, mounts, step, helpers: list[str]) -> dict:
        """For each bind mount and each cache mount with ``from``: (host path of its source,
        what the cache key holds of it: the content digest of a context path, the ID of a stage
        or image)."""
        from lamina.rootpath import resolve_in_root

        from .mounts import copy_context_subtree

        out = {}
        for i, m in enumerate(mounts):
            if m.type == "bind" and not m.from_:
                rel = posixpath.normpath("/" + (m.source or ".")).lstrip("/") or "."
                if not os.path.lexists(self.context.host(rel)):
                    raise NotFound(f"RUN --mount: bind source {m.source!r} not found in the "
                                   "build context")
                if m.readonly and self.context.matcher is None:
                    # nothing of it is excluded: the context's own files, bound read-only
                    out[i] = (self.context.host(rel),
                              copy_context_subtree(self.context, rel, None))
                    continue
                copy = os.path.join(step.temp_dir("bind-"), "source")
                out[i] = (copy, copy_context_subtree(self.context, rel, copy, link=m.readonly))
            elif m.type in ("bind", "cache") and m.from_:
                stage = ins.mount_stages.get(m.from_)
                if stage is not None:
                    source_state = self.stage_states[stage]
                else:
                    image_id = self._find_image(m.from_)
                    if image_id is None:
                        raise NotFound(f"RUN --mount from={m.from_}: no such stage or image in "
                                       f"this store: get it with `lamina pull {m.from_}`")
                    source_state = self._state_of(image_id)
                if source_state.image_id is None:
                    source_state = self._commit(source_state, "", None, None, add_history=False)
                cid = self.containers.create(source_state.image_id, command=["true"], used=True)
                helpers.append(cid)
                root = self.containers.mount(cid)
                path = resolve_in_root(root, "/" + (m.source or "").lstrip("/"))
                if m.type == "bind" and not os.path.lexists(path):
                    raise NotFound(f"RUN --mount from={m.from_}: {m.source or '/'} not found")
                out[i] = (path, source_state.image_id)
        return out

    def _run_container(self, state: State, ins: ResolvedInstruction, argv: list[str],
                       env: list[str], network: str, mounts: list[dict] | None = None,
                       mount_points: list[str] = ()):
        try:
            from lamina.runtime.process import run_in_container
        except ImportError:
            raise BuildError(f"Dockerfile:{ins.line}: RUN needs lamina.runtime, which this "
                             "installation does not have") from None
        from lamina import differ

        image_id = state.image_id
        if image_id is None:  # RUN on an empty scratch state: store it first
            image_id = self._commit(state, "", None, None, add_history=False).image_id
        for attempt in range(3):
            try:
                cid = self.containers.create(image_id, command=argv, used=True)  # no prune takes it
                break
            except NotFound:  # the untagged state was pruned meanwhile: store it again
                if attempt == 2 or state.image_id is None:
                    raise
                with self.store.tx():
                    self._store_again(state)
        try:
            self.out(f" ---> Running in {cid[:12]}")
            config = state.config
            quiet = relay = None
            if self.options.quiet or self.options.progress == "quiet":
                quiet = os.open(os.devnull, os.O_WRONLY)
            elif self.plain is not None:  # each output line as "#N 0.123 line"
                quiet, relay = self.plain.relay(self.vertex or 0)
            try:
                streams = {"stdout": quiet, "stderr": quiet} if quiet is not None else {
                    name: fd for name, fd in (("stdout", self.options.stdout),
                                              ("stderr", self.options.stderr)) if fd is not None}
                code = run_in_container(
                    self.containers, cid, argv, env, config.get("WorkingDir") or "/",
                    config.get("User") or "", "host" if network == "default" else network,
                    # Docker's RUN sees its build container's ID (on the host's network: the
                    # host's name, as Docker's --network=host)
                    hostname=None if network == "host" else cid[:12], mounts=mounts,
                    extra_hosts=self.options.extra_hosts, **streams)
            finally:
                if quiet is not None:
                    os.close(quiet)
                if relay is not None:
                    relay.join()
            if code != 0:
                raise BuildError(
                    f"Step {self.step}/{self.total} : The command '{' '.join(argv)}' returned a "
                    f"non-zero code: {code}", code)
            self._remove_mount_points(cid, mount_points)
            found = differ.changes(self.store.snaps, cid)
            if not found:
                return None
            from lamina.layertar import GivenSources

            # the RUN's files become the layer's (hard links): its container goes right after
            # and its processes are gone, so nothing is copied and removing it frees nothing
            sources = GivenSources()
            return self._layer_from_tar(
                state, differ.diff_writer(self.store.snaps, cid, sources, found), sources)
        finally:  # out may fail (the API's client went away): the container goes all the same
            try:
                self.out(f"Removing intermediate container {cid[:12]}")
            finally:
                try:
                    self.containers.rm(cid, force=True)
                except LaminaError:
                    pass


    def _remove_mount_points(self, cid: str, paths: list[str]) -> None:
        """Remove from the container's own layer the mount points ``paths`` that the runtime
        made (paths the image lacks), deepest first, each only if still empty."""
        top = self.store.snaps.dir(cid)
        for path in sorted(set(paths), key=lambda p: -p.count("/")):
            host = os.path.join(top, path.lstrip("/"))
            try:
                if os.path.isdir(host) and not os.path.islink(host):
                    os.rmdir(host)  # fails unless empty: the RUN wrote there
                elif os.path.isfile(host) and os.path.getsize(host) == 0:
                    os.unlink(host)
            except OSError:
                continue


def _verify_checksum(path: str, expected: str, url: str) -> None:
    """``ADD --checksum=sha256:HEX URL``: the download must have that digest."""
    import hashlib

    algorithm, _, wanted = expected.partition(":")
    if algorithm not in ("sha256", "sha384", "sha512") or not wanted:
        raise InvalidArgument(f"invalid checksum digest format {expected!r}: expected "
                              "sha256:<hex>")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != wanted.lower():
        raise InvalidArgument(f"ADD {url}: digest mismatch: expected {expected}, got "
                              f"{algorithm}:{digest.hexdigest()}")


def _full_name(tag: str) -> str:
    """``app:1`` as BuildKit names it: ``docker.io/library/app:1``."""
    first = tag.split("/", 1)[0]
    if "/" not in tag:
        return "docker.io/library/" + tag
    if "." in first or ":" in first or first == "localhost":
        return tag
    return "docker.io/" + tag


def stage_needs(stage: Stage) -> set[int]:
    """The stages ``stage`` builds on or takes files from (FROM, COPY --from, RUN --mount
    from=)."""
    needs = set() if stage.base_stage is None else {stage.base_stage}
    for ins in stage.instructions:
        if ins.from_stage is not None:
            needs.add(ins.from_stage)
        needs.update(ins.mount_stages.values())
    return needs


def build(containers: ContainerStore, options: BuildOptions, out=print) -> str:
    """Build ``options.dockerfile`` in ``options.context``; returns the image ID."""
    return Builder(containers, options, out).run()
