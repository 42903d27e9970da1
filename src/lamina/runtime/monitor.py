"""The life of a container's process, without a daemon.

Whoever runs a container's process owns it until it ends, like Podman's conmon (:func:`supervise`):
it mounts the root, writes the bundle, runs ``runc run``, copies stdout/stderr to the container's
log (:mod:`lamina.runtime.logs`) and to any attached file descriptors, records ``running`` (with
its own PID and start time) and then ``exited`` with the exit code in SQLite
(:mod:`lamina.runtime.ownership`), and unmounts. A foreground ``lamina run`` is that owner
itself; ``run -d`` and ``start`` fork a small monitor that does the same and outlives the
command: :func:`spawn` starts it (double fork, new session, ``python -S -m lamina.runtime``),
:func:`serve` is its main.

The owner also keeps what makes a container live on: its restart policy (after an exit it
records ``restarting`` in :mod:`lamina.runstate`, waits Docker's backoff and runs the process
again; a user's ``stop`` or ``kill`` ends that, :func:`request_stop`) and its health checks (a
thread that runs a probe each interval, :mod:`lamina.runtime.health`). A container with a
restart policy always has a detached monitor as owner, even for a foreground ``run``.
"""

from __future__ import annotations

import _signal  # signal's C half: signal's enums import enum, a cost to create and start
import os
import time

from .. import cjson
from ..errors import InvalidArgument, LaminaError, NotFound
from ..processes import start_time as process_start_time
from . import cgroups
from .logs import LOG_FILE, Output
from .oci import RunConfig, Runtime, RuntimeFailure
from .ownership import become_owner, monitor_alive, record, release
from .probes import bundle_process, exec_with_events, probe_of_container, relay_check
from .process import detached, prepare_bundle, pump, pump_tty

# How a monitor and an exit start: ``python -S`` and this, lamina/runtime/__main__.py's main
# without ``-m`` (runpy and importlib.util, some milliseconds of CPU at every start).
ENTRY = ("-c", "import sys; from lamina.runtime.__main__ import main; main(sys.argv[1:])")

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

_HANDOVER = "LAMINA_HANDOVER"  # the monitor's environment: the PID whose claim it takes over


def supervise(containers: ContainerStore, name: str, *, stdin=None, stdout_fds=(), stderr_fds=(), on_started=None,
              forward_signals: bool = False, handover: int = 0, on_first_exit=None) -> int:
    """Run the container's own process to its end, as its owner; returns the exit code.

    Output goes to the container's log and to ``stdout_fds``/``stderr_fds``; ``on_started(pid)``
    is called once the process runs (its state is ``running`` by then). ``handover``: the PID
    of a process whose claim on the container this one takes over (see
    :func:`lamina.runtime.ownership.become_owner`).

    With a restart policy (:mod:`lamina.runtime.restart`) the process is started again, in the
    same bundle, for as long as the policy says so; the attached file descriptors serve the
    first run only (Docker's attach ends at the first exit): ``on_first_exit()`` returns the
    (stdin, stdout_fds, stderr_fds) of the runs after it. A health check
    (:mod:`lamina.runtime.health`) runs beside each run."""
    row = become_owner(containers, name, handover)
    try:
        return _keep(containers, row, stdin=stdin, stdout_fds=stdout_fds, stderr_fds=stderr_fds,
                     on_started=on_started, forward_signals=forward_signals,
                     on_first_exit=on_first_exit)
    except BaseException:
        release(containers, row["id"])  # if its process never ran
        raise


class _StopRequests:
    """A user's ``stop`` or ``kill`` of a container with a restart policy: the command sends
    its owner :data:`STOP_SIGNAL` (see :func:`request_stop`), which ends the policy and cuts
    short a wait before a restart."""

    def __init__(self) -> None:
        self.requested = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        try:
            self.previous = _signal.signal(STOP_SIGNAL, self._handle)
        except ValueError:  # not the main thread: only the runtime's stop reaches the process
            self.previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, less if a stop comes."""
        import select

        if not self.requested:
            select.select([self.wake_r], [], [], seconds)

    def close(self) -> None:
        if self.previous is not None:
            _signal.signal(STOP_SIGNAL, self.previous)
        os.close(self.wake_r)
        os.close(self.wake_w)


STOP_SIGNAL = _signal.SIGUSR1


def request_stop(row) -> None:
    """Tell the owner of the container ``row`` that the user stops it: no more restarts (only
    owners of containers with a restart policy listen for this)."""
    from .restart import RestartPolicy

    if not RestartPolicy.parse(RunConfig.from_json(row["run_config"]).restart).enabled:
        return
    if row["monitor_pid"] and monitor_alive(row):
        try:
            os.kill(row["monitor_pid"], STOP_SIGNAL)
        except ProcessLookupError:
            pass


def _keep(containers: ContainerStore, row, *, stdin, stdout_fds, stderr_fds, on_started,
          forward_signals, on_first_exit) -> int:
    from .. import runstate
    from .health import initial
    from .restart import Backoff, RestartPolicy

    cid = row["id"]
    config = RunConfig.from_json(row["run_config"])
    policy = RestartPolicy.parse(config.restart)
    probe = probe_of_container(containers, row, config)
    bundle = containers.store.bundle_dir(cid)
    os.makedirs(bundle, exist_ok=True)
    keeper = None
    if policy.enabled or probe is not None:
        previous = runstate.read(bundle).get("Health")
        keeper = runstate.Keeper(bundle, {"RestartCount": 0, "Restarting": False,
                                          **({"Health": initial(previous)} if probe else {})})
        runstate.drop_relayed(bundle)  # a relay's of an earlier run: in `previous` now
    stops = _StopRequests() if policy.enabled else None
    backoff = Backoff()
    restarts = 0
    try:
        while True:
            began = time.monotonic()
            checks = []

            def started(pid: int, first: bool = restarts == 0, checks: list = checks,
                        row=row) -> None:
                if on_started is not None and first:
                    on_started(pid)
                if probe is not None:
                    checks.append(_start_checks(containers, row, runtime_name=config.runtime,
                                                probe=probe, keeper=keeper, pid=pid))

            try:
                code = _supervise(containers, row, stdin=stdin, stdout_fds=stdout_fds,
                                  stderr_fds=stderr_fds, on_started=started,
                                  forward_signals=forward_signals)
            except RuntimeFailure as e:
                if restarts == 0:
                    raise
                code = e.exit_code  # a restart that could not start: the end
                _ended(containers, row, code, keeper, final=True)
                return code
            finally:
                for monitor in checks:
                    monitor.stop()
            if restarts == 0:
                stdin, stdout_fds, stderr_fds = (on_first_exit() if on_first_exit is not None
                                                 else (None, [], []))
            restarts = _after_exit(containers, row, code, policy, restarts, stops, keeper,
                                   backoff, began)
            if restarts is None:
                return code
            if probe is not None:
                keeper.update(lambda doc: doc.update(Health=initial(doc.get("Health"))))
            row = containers.get(cid)
    finally:
        if stops is not None:
            stops.close()


def _after_exit(containers: ContainerStore, row, code: int, policy, restarts: int, stops,
                keeper, backoff, began: float) -> int | None:
    """After the process's exit (with ``restarts`` restarts so far, its run begun at
    ``began``, monotonic): record it; None if that is the end, else wait the backoff and return
    the number of restarts with the next one."""
    from .restart import RestartPolicy

    stopped = stops is not None and stops.requested
    if stops is not None:  # `update --restart` since it started (lamina.runtime.control)
        try:
            policy = RestartPolicy.parse(RunConfig.from_json(
                containers.get(row["id"])["run_config"]).restart)
        except NotFound:
            pass
    if not policy.should_restart(code, restarts, stopped):
        _ended(containers, row, code, keeper, final=True)
        return None
    restarts += 1
    _ended(containers, row, code, keeper, final=False, restarts=restarts)
    stops.sleep(backoff.next(time.monotonic() - began))
    if stops.requested:
        _ended(containers, row, code, keeper, final=True)
        return None
    return restarts


def _ended(containers: ContainerStore, row, code: int, keeper, *, final: bool,
           restarts: int = 0) -> None:
    """Record an exit: ``exited`` when it is the last, else ``restarting`` (the row stays
    ``running``, owned, with no process, and the run state says it is waiting)."""
    if final:
        record(containers, row["id"], state="exited", exit_code=code, finished=time.time(), pid=0)
        if keeper is not None:
            keeper.update(lambda doc: doc.update(Restarting=False))
    else:
        record(containers, row["id"], exit_code=code, finished=time.time(), pid=0)
        keeper.update(lambda doc: doc.update(Restarting=True, RestartCount=restarts))
    containers.event("die", row, exitCode=code)


def _start_checks(containers: ContainerStore, row, *, runtime_name, probe, keeper, pid: int):
    """Start the health checks of the process that has just started (see
    :mod:`lamina.runtime.health`); returns their monitor, to stop when the process ends."""
    from .health import HealthMonitor

    runtime = Runtime(containers.store.root, runtime_name)
    bundle = containers.store.bundle_dir(row["id"])
    process = bundle_process(bundle)

    def run_probe(argv, timeout):
        return exec_with_events(containers, row, runtime, process, argv, timeout)

    def update(change):
        keeper.update(lambda doc: change(doc["Health"]))

    def on_status(status):
        containers.event(f"health_status: {status}", row)

    from ..processes import start_time

    started = start_time(pid)
    # a probe that fails because the process has just ended is not counted: the exit decides
    # (the owner stops the checks only once the network and mounts are undone)
    monitor = HealthMonitor(probe, run_probe, update, on_status, time.time(),
                            alive=lambda: start_time(pid) == started)
    monitor.start()
    return monitor


def _prepare(containers: ContainerStore, row, config: RunConfig, runtime: Runtime, rootfs: str,
             bundle: str, argv: list[str]):
    """Before the runtime runs the container's process: its networks joined, its bundle
    written, what a dead owner left behind removed; (the Sandbox or None, the pid file, the
    runtime's log)."""
    cid = row["id"]
    sandbox = None
    network = config.network
    if network not in ("none", "host"):
        from .network import join

        sandbox = join(containers, row, config)
        if sandbox.netns is None:
            network = "none"  # its networks were all disconnected
    try:
        prepare_bundle(containers, row, config, rootfs, bundle, argv, None, None, None,
                       network, cid, terminal=config.tty,
                       netns=sandbox.netns if sandbox is not None else None,
                       address=sandbox.address if sandbox is not None else None,
                       nameserver=sandbox.nameserver if sandbox is not None else None)
        if sandbox is not None and sandbox.netns:
            from ..endpoints import publish_hosts

            publish_hosts(containers.store, cid)
    except BaseException:
        if sandbox is not None:
            from .network import leave

            leave(containers, cid, sandbox)
        raise
    runtime.delete(cid)  # state left by an owner that died
    pid_file = os.path.join(bundle, "pid")
    runtime_log = os.path.join(bundle, "runtime.log")
    for path in (pid_file, runtime_log):
        if os.path.exists(path):
            os.unlink(path)
    return sandbox, pid_file, runtime_log


def _begin(containers: ContainerStore, row):
    """The first steps of a run: (its RunConfig, its Runtime, its argv, its bundle, whether its
    root was mounted before, its root mounted now)."""
    config = RunConfig.from_json(row["run_config"])
    runtime = Runtime(containers.store.root, config.runtime)
    argv = cjson.loads(row["command"])
    if not argv:
        raise InvalidArgument("No command specified")
    bundle = containers.store.bundle_dir(row["id"])
    os.makedirs(bundle, exist_ok=True)
    was_mounted = os.path.ismount(containers.store.mount_target(row["id"]))
    return config, runtime, argv, bundle, was_mounted, containers.mount(row["id"])


def _record_started(containers: ContainerStore, row, pid: int) -> None:
    """The process ``pid`` runs, owned by this process."""
    me = os.getpid()
    record(containers, row["id"], state="running", pid=pid, monitor_pid=me,
           monitor_start=process_start_time(me), started=time.time(), exit_code=0,
           oom_killed=0, paused=0)
    containers.event("start", row)


def _supervise(containers: ContainerStore, row, *, stdin, stdout_fds, stderr_fds, on_started, forward_signals) -> int:
    cid = row["id"]
    config, runtime, argv, bundle, was_mounted, rootfs = _begin(containers, row)
    output = None
    sandbox = None
    try:
        sandbox, pid_file, runtime_log = _prepare(containers, row, config, runtime, rootfs,
                                                  bundle, argv)
        output = Output(stdout_fds, stderr_fds, os.path.join(bundle, LOG_FILE))

        def started(pid: int) -> None:
            _record_started(containers, row, pid)
            if on_started is not None:
                on_started(pid)

        # --keep: runc leaves the cgroup until the delete below, for its OOM count to be read
        args = ["run", *(() if config.tty else ("--keep",)), "--bundle", bundle, "--pid-file",
                pid_file, cid]
        try:
            if config.tty:
                from .console import caller_terminal

                code = pump_tty(runtime, args, stdin=stdin, output=output, pid_file=pid_file,
                                runtime_log=runtime_log, on_started=started,
                                forward_signals=forward_signals,
                                terminal=caller_terminal(stdin, *stdout_fds))
            else:
                code = pump(runtime.command(*args, log=runtime_log), stdin=stdin,
                            output=output, pid_file=pid_file, runtime_log=runtime_log,
                            on_started=started, forward_signals=forward_signals)
        except RuntimeFailure as e:
            runtime.delete(cid)
            record(containers, cid, state="created", exit_code=e.exit_code)
            raise
        oom_killed = cgroups.oom_kills(cgroups.container_dirs(cid, containers.store.root)) > 0
        runtime.delete(cid)
    finally:
        if output is not None:
            output.close()
        if sandbox is not None:
            from .network import leave

            runtime.delete(cid)  # no process may hold the namespace's ports any more
            leave(containers, cid, sandbox)
        if not was_mounted:
            containers.umount(cid)
    if oom_killed:
        record(containers, cid, oom_killed=1)
    return code  # the caller records the exit (supervise: exited, or restarting)


def remove_after_run(containers: ContainerStore, name: str) -> None:
    """``--rm``: the container, its bundle and its anonymous volumes go. One that another
    process (a ``container prune``) removed once it had exited is done."""
    from .. import volumes

    try:
        cid = containers.get(name)["id"]
    except NotFound:
        return
    anonymous = volumes.anonymous_of(containers.store, cid)
    try:
        containers.rm(cid, force=True)
    except NotFound:
        pass
    for volume in anonymous:
        volumes.remove(containers.store, volume)


def spawn(containers: ContainerStore, name: str, stdio: tuple[int, int, int] | None = None) -> str:
    """Start the container's process under a detached monitor; return once the process runs
    (or raise what stopped it from starting). Returns the container ID.

    A container this process has claimed (``run -d`` creates it claimed) is handed over: the
    monitor takes the claim in the transaction that makes it its own (``LAMINA_HANDOVER``), so
    the container is owned by a live process throughout. If the monitor fails before that, the
    claim is still this process's, for the caller to give back
    (:func:`lamina.runtime.ownership.release`).

    ``stdio``: (stdin, stdout, stderr) file descriptors, -1 for none, that the monitor inherits
    and uses besides the log (an API server attaches its clients through pipes this way; when
    the server goes, the monitor's writes fail and it goes on with the log alone)."""
    row = containers.get(name)
    mine = not row["pid"] and row["monitor_pid"] == os.getpid()
    if row["state"] == "running" and monitor_alive(row) and not mine:
        return row["id"]
    import sys

    # A fresh interpreter: SQLite connections must not cross a fork, and the double fork (the
    # monitor is nobody's child) keeps a long-lived caller free of zombies.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = package_parent + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop(_HANDOVER, None)
    if row["state"] == "running" and mine:
        env[_HANDOVER] = str(os.getpid())

    def monitor(notify: int) -> None:
        argv = [sys.executable, "-S", *ENTRY, containers.store.root, containers.store.driver,
                row["id"], str(notify)]
        if stdio is not None:
            argv.append(",".join(str(fd) for fd in stdio))
        os.set_inheritable(notify, True)
        for fd in stdio or ():
            if fd >= 0:
                os.set_inheritable(fd, True)
        os.execve(sys.executable, argv, env)

    reply = detached(monitor)
    if reply.startswith("ok"):
        from .console import reap_later

        reap_later(containers.get(row["id"])["monitor_pid"])  # ours if we are a subreaper
        return row["id"]
    code, _, message = reply.partition(" ")
    if not code.isdigit():
        raise LaminaError(f"the monitor of {row['name']} failed before starting it")
    raise RuntimeFailure(message, int(code))


STDIN_FIFO = "stdin"  # in the bundle: the standard input of a -i container nobody attached to


def open_stdin(containers: ContainerStore, container_id: str) -> int | None:
    """A file descriptor that writes to the standard input of the running -i container, or None
    when it has none to write to (not -i, attached at its start, or not running: a FIFO that
    no monitor holds open refuses a writer)."""
    try:
        fd = os.open(os.path.join(containers.store.bundle_dir(container_id), STDIN_FIFO),
                     os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    os.set_blocking(fd, True)
    return fd


def _stdin_fifo(bundle: str) -> int:
    """-i with nobody attached: stdin stays open, as Docker keeps it (a `cat` waits rather than
    ending at once). It is a FIFO in the bundle, opened read-write so that it never reads
    end-of-file while the monitor lives, and a client that attaches later writes into it
    (:func:`open_stdin`); one for all the runs of a restart policy."""
    fifo = os.path.join(bundle, STDIN_FIFO)
    if os.path.lexists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    return os.open(fifo, os.O_RDWR)


def serve(containers: ContainerStore, container_id: str, notify: int,
          stdio: tuple[int, int, int] = (-1, -1, -1)) -> None:
    """The monitor process (``python -m lamina.runtime ROOT DRIVER ID FD [IN,OUT,ERR]``): own the
    container until its process ends; write ``ok`` or ``CODE message`` to the file descriptor FD.
    With ``LAMINA_HANDOVER=PID`` in its environment, it takes over the claim of PID
    (:func:`spawn`). IN, OUT and ERR (-1: none) are the attached stdio of :func:`spawn`.

    Once the process runs, the monitor becomes the small relay (:mod:`lamina.runtime.relay`)
    unless no relay could be built; the relay runs the health check's probes
    (:func:`lamina.runtime.probes.relay_check`) and gives the exit back to :func:`serve_exit`."""
    os.set_inheritable(notify, False)  # neither runc nor the container may hold it open
    stdin, stdout, stderr = stdio
    for fd in stdio:
        if fd >= 0:
            os.set_inheritable(fd, False)  # runc gets them as its stdio only (pump's Popen)
    handover = os.environ.pop(_HANDOVER, "")
    bundle = containers.store.bundle_dir(container_id)
    os.makedirs(bundle, exist_ok=True)
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(os.path.join(bundle, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    row = containers.get(container_id)
    open_stdin = RunConfig.from_json(row["run_config"]).open_stdin
    kept_open = []

    def stdin_fifo() -> int:
        if not kept_open:
            kept_open.append(_stdin_fifo(bundle))
        return kept_open[0]

    if stdin < 0 and open_stdin:
        stdin = stdin_fifo()
    state = {"notified": False}

    def first_exit():
        """Restarts run with nobody attached (Docker's attach ends at the first exit)."""
        for fd in {fd for fd in stdio if fd >= 0}:  # one pipe may be both stdout and stderr
            os.close(fd)
        if not open_stdin:
            return None, [], []
        return stdin_fifo(), [], []

    def started(pid: int) -> None:
        os.write(notify, b"ok\n")
        os.close(notify)
        state["notified"] = True

    try:
        relay = _relay_for(containers, row)
        if relay is not None:  # becomes the relay (or raises): what follows is not reached
            _serve_relayed(containers, container_id, relay, stdin=stdin if stdin >= 0 else None,
                           clients=(stdout, stderr), fifo=kept_open[0] if kept_open else -1,
                           handover=int(handover) if handover.isdigit() else 0,
                           on_started=started)
        supervise(containers, container_id, on_started=started,
                  stdin=stdin if stdin >= 0 else None,
                  stdout_fds=[stdout] if stdout >= 0 else [],
                  stderr_fds=[stderr] if stderr >= 0 else [],
                  handover=int(handover) if handover.isdigit() else 0, on_first_exit=first_exit)
    except BaseException as e:  # noqa: BLE001 - report it to the waiting command, then leave
        if not state["notified"]:
            code = getattr(e, "exit_code", 125) if isinstance(e, LaminaError) else 125
            os.write(notify, f"{code} {e}".encode())
            os.close(notify)
            state["notified"] = True
        else:
            import traceback

            traceback.print_exc()
        return
    if RunConfig.from_json(containers.get(container_id)["run_config"]).auto_remove:
        remove_after_run(containers, container_id)


def _relay_for(containers: ContainerStore, row) -> str | None:
    """The relay that this container's monitor becomes once its process runs; None when the
    monitor stays a Python process (no relay built)."""
    from .relay import binary

    return binary()


def _serve_relayed(containers: ContainerStore, name: str, relay: str, *, stdin, clients, fifo,
                   handover: int, on_started) -> None:
    """As :func:`supervise` up to the process's start, then become the relay (never returns
    then; :func:`serve_exit` takes over at the exit)."""
    from .. import runstate
    from .restart import RestartPolicy

    row = become_owner(containers, name, handover)
    try:
        config = RunConfig.from_json(row["run_config"])
        stops = None
        state = {}
        bundle = containers.store.bundle_dir(row["id"])
        if RestartPolicy.parse(config.restart).enabled:
            state.update(RestartCount=0, Restarting=False)
            stops = _StopRequests()
        if probe_of_container(containers, row, config) is not None:
            from .health import initial

            state["Health"] = initial(runstate.read(bundle).get("Health"))
        if state:
            runstate.write(bundle, state)
            runstate.drop_relayed(bundle)  # a relay's of an earlier run: in the state now
        _run_relayed(containers, row, relay, stdin=stdin, clients=clients, fifo=fifo,
                     restarts=0, delay=0.0, stops=stops, on_started=on_started)
    except BaseException:
        release(containers, row["id"])  # if its process never ran
        raise


def _run_relayed(containers: ContainerStore, row, relay: str, *, stdin, clients, fifo: int,
                 restarts: int, delay: float, stops, on_started=None) -> None:
    """Start the container's process detached (this process its subreaper), record it
    running, and replace this process with the relay, which runs :func:`serve_exit` at the
    exit with what it needs to go on: the restarts so far, the backoff's delay, when this run
    began, whether the root was mounted before, the stdin FIFO's file descriptor."""
    import sys

    from .process import start_with_terminal
    from .relay import command, start

    began = time.monotonic()
    cid = row["id"]
    config, runtime, argv, bundle, was_mounted, rootfs = _begin(containers, row)
    sandbox = None
    try:
        sandbox, pid_file, runtime_log = _prepare(containers, row, config, runtime, rootfs,
                                                  bundle, argv)
        try:
            if config.tty:
                pid, master = start_with_terminal(
                    runtime, ["run", "--bundle", bundle, "--pid-file", pid_file, cid],
                    pid_file=pid_file, runtime_log=runtime_log)
                output, passed = None, [master, *([stdin] if stdin is not None else [])]
            else:
                master = None
                pid, *output = start(runtime, cid, bundle, stdin=stdin, pid_file=pid_file,
                                     runtime_log=runtime_log)
                passed = list(output)
        except RuntimeFailure as e:
            runtime.delete(cid)
            record(containers, cid, state="created", exit_code=e.exit_code)
            raise
    except BaseException:
        if sandbox is not None:
            from .network import leave

            runtime.delete(cid)
            leave(containers, cid, sandbox)
        if not was_mounted:
            containers.umount(cid)
        raise
    _record_started(containers, row, pid)
    if on_started is not None:
        on_started(pid)
    monitor = [sys.executable, "-S", *ENTRY, containers.store.root, containers.store.driver, cid]
    then = [*monitor, "exited", str(restarts), repr(delay), repr(began),
            "1" if was_mounted else "0", str(fifo)]
    probe = probe_of_container(containers, row, config)
    check = relay_check(containers, row, runtime, probe, time.time()) if probe is not None else []
    argv = command(relay, pid, os.path.join(bundle, LOG_FILE), master=master,
                   output=tuple(output) if output else None, stdin=stdin, clients=clients,
                   keep=[fifo] if fifo >= 0 else [], then=then, check=check)
    held = sandbox.kept_fds() if sandbox is not None else []  # e.g. published ports stay taken
    if output and stops is None and probe is None:  # nothing but the exit left to watch
        code = _ended_within(pid, output, clients, os.path.join(bundle, LOG_FILE), GRACE)
        if code is not None:  # ended at once (`run --rm IMAGE true`): no relay, nor a new start
            for fd in {*output, *(fd for fd in clients if fd >= 0), *held}:
                os.close(fd)
            serve_exit(containers, cid, [*then[len(monitor) + 1:], str(code)])
            os._exit(0)
    for fd in [*passed, *(fd for fd in clients if fd >= 0), *([fifo] if fifo >= 0 else []),
               *held]:
        os.set_inheritable(fd, True)
    # A user's stop from here on stays pending for serve_exit (blocked signals survive exec)
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {STOP_SIGNAL})
    if stops is not None and stops.requested:
        os.kill(os.getpid(), STOP_SIGNAL)
    os.execv(relay, argv)


GRACE = 0.25  # seconds a monitor waits for a process that ends at once before it is the relay


def _ended_within(pid: int, output, clients, log: str, grace: float) -> int | None:
    """Wait up to ``grace`` seconds for the process ``pid`` (this process's child) to end,
    copying its output (the pipes ``output``: stdout, stderr) to the log and the attached
    ``clients`` meanwhile, as the relay does. Its exit code once all its output is copied; None
    if it still runs (the relay takes over the pipes, and what was copied stays copied). A
    process that ends at once so costs no relay and no second interpreter start to record its
    exit."""
    import select

    from .logs import Output

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    sink = Output([clients[0]] if clients[0] >= 0 else [],
                  [clients[1]] if clients[1] >= 0 else [], log)
    streams = {output[0]: 1, output[1]: 2}

    def copy(fd: int) -> bool:
        data = os.read(fd, 65536)
        if data:
            sink.write(streams[fd], data)
        return bool(data)

    try:
        poller = select.poll()
        for fd in (pidfd, *streams):
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + grace
        ended = False
        while not ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    ended = True
                elif not copy(fd):
                    poller.unregister(fd)
                    del streams[fd]
        status = os.waitpid(pid, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        open_ = list(streams)  # what it wrote before it ended is still in the pipes
        while open_:
            ready = select.select(open_, [], [], 0.5)[0]
            if not ready:
                break  # what holds a pipe is not the process
            open_ = [fd for fd in open_ if fd not in ready or copy(fd)]
        return 128 - code if code < 0 else code
    finally:
        os.close(pidfd)
        sink.close()


def serve_exit(containers: ContainerStore, container_id: str, args: list[str]) -> None:
    """The monitor again once its relay saw the process end (``python -m lamina.runtime ROOT
    DRIVER ID exited RESTARTS DELAY BEGAN WAS_MOUNTED FIFO CODE``, see :func:`_run_relayed`):
    what :func:`supervise` does after an exit: the process's runtime state, networks and mount
    undone, the exit recorded, a restart under the restart policy (and the relay again), the
    removal of a ``--rm`` container."""
    from .. import runstate
    from .relay import binary
    from .restart import Backoff, RestartPolicy

    restarts, delay, began = int(args[0]), float(args[1]), float(args[2])
    was_mounted, fifo, code = args[3] == "1", int(args[4]), int(args[5])
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    try:
        row = containers.get(container_id)
    except NotFound:  # removed by force meanwhile
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {STOP_SIGNAL})
        return
    config = RunConfig.from_json(row["run_config"])
    policy = RestartPolicy.parse(config.restart)
    stops = _StopRequests() if policy.enabled else None
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {STOP_SIGNAL})
    runtime = Runtime(containers.store.root, config.runtime)
    cid = row["id"]
    oom_killed = cgroups.oom_kills(cgroups.container_dirs(cid, containers.store.root)) > 0
    runtime.delete(cid)
    if config.network not in ("none", "host"):
        from .network import leave

        leave(containers, cid, None)
    if not was_mounted:
        containers.umount(cid)
    if oom_killed:
        record(containers, cid, oom_killed=1)
    bundle = containers.store.bundle_dir(cid)
    runstate.fold(bundle)  # the relay's health, into the state that outlives it
    keeper = None
    if policy.enabled:
        keeper = runstate.Keeper(bundle, {"RestartCount": restarts, "Restarting": False,
                                          **runstate.read(bundle)})
    backoff = Backoff()
    backoff.delay = delay
    restarts = _after_exit(containers, row, code, policy, restarts, stops, keeper, backoff,
                           began)
    if restarts is not None:
        if probe_of_container(containers, row, config) is not None:
            from .health import initial

            keeper.update(lambda doc: doc.update(Health=initial(doc.get("Health"))))
        relay = binary()
        if fifo < 0 and config.open_stdin:
            fifo = _stdin_fifo(bundle)
        try:
            if relay is None:
                raise RuntimeFailure("the monitor's relay is gone")
            _run_relayed(containers, containers.get(cid), relay,
                         stdin=fifo if fifo >= 0 else None, clients=(-1, -1), fifo=fifo,
                         restarts=restarts, delay=backoff.delay, stops=stops)
        except LaminaError as e:  # a restart that could not start: the end
            _ended(containers, containers.get(cid), getattr(e, "exit_code", 125), keeper,
                   final=True)
    if config.auto_remove:
        remove_after_run(containers, cid)
