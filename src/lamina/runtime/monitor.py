"""The life of a container's process, without a daemon.

Whoever runs a container's process owns it until it ends, like Podman's conmon: it mounts the
root, writes the bundle, runs ``runc run``, copies stdout/stderr to the container's log (Docker's
json-file format, ``<store>/containers/<id>/container.log``) and to any attached file
descriptors, records ``running`` (with its own PID and start time) and then ``exited`` with the
exit code in SQLite, and unmounts. A foreground ``lamina run`` is that owner itself; ``run -d``
and ``start`` fork a small monitor (double fork, new session) that does the same and outlives the
command. Whether a ``running`` container's owner is still alive is a cheap check of its PID and
start time (:func:`monitor_alive`): a container whose owner died shows as exited.

The other verbs talk to the runtime directly: ``stop`` and ``kill`` signal through ``runc kill``
and wait for the owner with a pidfd; ``exec`` runs ``runc exec``; ``logs`` reads the log file.
"""

from __future__ import annotations

import json
import os
import signal
import time

from ..errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound
from ..metadata import Transaction
from ..processes import start_time as process_start_time
from ..rootpath import resolve_in_root
from .oci import (
    RunConfig,
    Runtime,
    RuntimeFailure,
    failure_from_log,
    make_process,
    make_spec,
    merge_env,
    write_network_files,
)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

LOG_FILE = "container.log"
_HANDOVER = "LAMINA_HANDOVER"  # the monitor's environment: the PID whose claim it takes over
UNKNOWN_EXIT = 255  # the owner died without recording the process's exit
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


def monitor_alive(row) -> bool:
    """Whether the process that owns a running container still exists."""
    pid = row["monitor_pid"]
    return bool(pid) and process_start_time(pid) == row["monitor_start"]


# ---------------------------------------------------------------------------------- output
class _Output:
    """Delivers a process's output chunks to file descriptors and a json-file log."""

    def __init__(self, stdout_fds=(), stderr_fds=(), log: str | None = None):
        self.fds = {1: list(stdout_fds), 2: list(stderr_fds)}
        self.log = open(log, "ab", buffering=0) if log else None  # noqa: SIM115 - closed by close()

    def write(self, stream: int, data: bytes) -> None:
        for fd in list(self.fds[stream]):
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                self.fds[stream].remove(fd)  # a closed reader does not stop the container
        if self.log is not None:
            now = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
            name = "stdout" if stream == 1 else "stderr"
            lines = data.decode("utf-8", "surrogateescape").splitlines(keepends=True)
            self.log.write("".join(
                json.dumps({"log": line, "stream": name, "time": stamp}) + "\n"
                for line in lines).encode())

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _pump(cmd: list[str], *, stdin, output: _Output, pid_file: str, runtime_log: str,
          on_started=None, forward_signals: bool = False) -> int:
    """Run the runtime command ``cmd`` and copy its (the container's) output until it ends.

    The runtime writes the process's PID to ``pid_file`` once the process runs; until then,
    stderr is held back, because the runtime reports its own errors there. Returns the exit code;
    raises RuntimeFailure when the process never started."""
    import selectors
    import subprocess

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=out_w, stderr=err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    previous = {}
    if forward_signals:
        def forward(signum, frame):
            try:
                os.kill(proc.pid, signum)  # runc passes it on to the container's process
            except ProcessLookupError:
                pass

        previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    held: list[bytes] = []
    started = False

    def check_started() -> bool:
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return False
        if on_started is not None:
            on_started(pid)
        for chunk in held:
            output.write(2, chunk)
        held.clear()
        return True

    try:
        sel = selectors.DefaultSelector()
        sel.register(out_r, selectors.EVENT_READ, 1)
        sel.register(err_r, selectors.EVENT_READ, 2)
        wait = 0.001
        while sel.get_map():
            events = sel.select(None if started else wait)
            wait = min(wait * 2, 0.02)
            if not started:
                started = check_started()
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    continue
                if key.data == 2 and not started:
                    held.append(data)
                else:
                    output.write(key.data, data)
        code = proc.wait()
        if not started:
            started = check_started()
        if not started:
            failure = failure_from_log(runtime_log)
            if failure is None:
                text = b"".join(held).decode(errors="replace").strip()
                failure = RuntimeFailure(text.splitlines()[-1] if text else
                                         f"the runtime exited with status {code}")
            raise failure
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(out_r)
        os.close(err_r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pump_tty(runtime: Runtime, args: list[str], *, stdin, output: _Output, pid_file: str,
              runtime_log: str, on_started=None, forward_signals: bool = False,
              terminal: int | None = None) -> int:
    """As :func:`_pump`, for a process with a terminal (``run -t``, ``exec -t``): ``args`` is
    runc's ``run ... ID`` or ``exec ... ID``; runc detaches and hands over the pty's master
    through ``--console-socket``, and :func:`lamina.console.relay` copies it until the process,
    now our child, ends. ``terminal`` is the caller's (raw mode, window size)."""
    import subprocess

    from . import console

    console.become_subreaper()
    listener = console.ConsoleSocket(runtime.ingest)
    master = None
    try:
        cmd = runtime.command(args[0], "--detach", "--console-socket", listener.path, *args[1:],
                              log=runtime_log)
        proc = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        master = listener.receive(0.1 if proc.returncode else 10)
        listener.close()  # runc has handed over the terminal (or never will): nothing to keep
        try:
            with open(pid_file) as f:
                pid = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if proc.returncode != 0 or not pid or master is None:
            failure = failure_from_log(runtime_log)
            if failure is None:
                text = proc.stderr.decode(errors="replace").strip()
                failure = RuntimeFailure(text.splitlines()[-1] if text else
                                         "the runtime did not hand over the terminal")
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            raise failure
        if on_started is not None:
            on_started(pid)
        return console.relay(master, pid, output, stdin=stdin, terminal=terminal,
                             forward_signals=forward_signals)
    finally:
        if master is not None:
            os.close(master)
        listener.close()


# ---------------------------------------------------------------------------------- the main process
def _prepare(containers: ContainerStore, row, config: RunConfig, rootfs: str, bundle: str, argv: list[str],
             env: list[str] | None, workdir: str | None, user: str | None, network: str,
             runtime_id: str, terminal: bool = False) -> None:
    """Write ``bundle``/config.json for ``argv`` in the container ``row``."""
    import socket

    from .. import volumes

    image = containers.images.config(row["image_id"]).get("config") or {}
    hostname = socket.gethostname() if network == "host" else row["id"][:12]
    env = merge_env(image.get("Env"), config.env) if env is None else list(env)
    workdir = workdir or config.workdir or image.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise InvalidArgument(f"the working directory {workdir!r} is invalid: it needs to be "
                              "an absolute path")
    host_dir = resolve_in_root(rootfs, workdir)
    if not os.path.isdir(host_dir):
        os.makedirs(host_dir, 0o755)  # Docker creates a missing working directory
    process = make_process(rootfs, argv, env, workdir, user or config.user or image.get("User"),
                           hostname, terminal=terminal)
    files = write_network_files(bundle, hostname, network)
    spec = make_spec(rootfs, process, hostname=hostname, network=network,
                     read_only=config.read_only, files=files,
                     binds=volumes.oci_mounts(containers.store, config), cgroup=f"/lamina/{runtime_id}")
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)


def _record(containers: ContainerStore, container_id: str, **columns) -> None:
    sets = ", ".join(f"{k} = ?" for k in columns)
    with Transaction(containers.db):
        containers.db.execute(f"UPDATE containers SET {sets} WHERE id = ?",
                          (*columns.values(), container_id))


def supervise(containers: ContainerStore, name: str, *, stdin=None, stdout_fds=(), stderr_fds=(), on_started=None,
              forward_signals: bool = False, handover: int = 0) -> int:
    """Run the container's own process to its end, as its owner; returns the exit code.

    Output goes to the container's log and to ``stdout_fds``/``stderr_fds``; ``on_started(pid)``
    is called once the process runs (its state is ``running`` by then). ``handover``: the PID
    of a process whose claim on the container this one takes over (see :func:`become_owner`)."""
    row = become_owner(containers, name, handover)
    try:
        return _supervise(containers, row, stdin=stdin, stdout_fds=stdout_fds, stderr_fds=stderr_fds,
                          on_started=on_started, forward_signals=forward_signals)
    except BaseException:
        release(containers, row["id"])  # if its process never ran
        raise


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
    (:func:`remove_after_run`). One that an ``rm`` or prune is removing is "No such container"."""
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
    with Transaction(containers.db):
        return bool(containers.db.execute(
            "UPDATE containers SET state = 'created', pid = 0, monitor_pid = 0, monitor_start = 0"
            " WHERE id = ? AND state = 'running' AND pid = 0 AND monitor_pid = ?",
            (container_id, os.getpid())).rowcount)


def _supervise(containers: ContainerStore, row, *, stdin, stdout_fds, stderr_fds, on_started, forward_signals) -> int:
    cid = row["id"]
    config = RunConfig.from_json(row["run_config"])
    runtime = Runtime(containers.store.root, config.runtime)
    argv = json.loads(row["command"])
    if not argv:
        raise InvalidArgument("No command specified")
    bundle = containers.store.bundle_dir(cid)
    os.makedirs(bundle, exist_ok=True)
    target = containers.store.mount_target(cid)
    was_mounted = os.path.ismount(target)
    rootfs = containers.mount(cid)
    output = None
    try:
        _prepare(containers, row, config, rootfs, bundle, argv, None, None, None, config.network, cid,
                 terminal=config.tty)
        runtime.delete(cid)  # state left by an owner that died
        pid_file = os.path.join(bundle, "pid")
        runtime_log = os.path.join(bundle, "runtime.log")
        for path in (pid_file, runtime_log):
            if os.path.exists(path):
                os.unlink(path)
        output = _Output(stdout_fds, stderr_fds, os.path.join(bundle, LOG_FILE))
        me = os.getpid()

        def started(pid: int) -> None:
            _record(containers, cid, state="running", pid=pid, monitor_pid=me,
                    monitor_start=process_start_time(me), started=time.time(), exit_code=0)
            if on_started is not None:
                on_started(pid)

        args = ["run", "--bundle", bundle, "--pid-file", pid_file, cid]
        try:
            if config.tty:
                from .console import caller_terminal

                code = _pump_tty(runtime, args, stdin=stdin, output=output, pid_file=pid_file,
                                 runtime_log=runtime_log, on_started=started,
                                 forward_signals=forward_signals,
                                 terminal=caller_terminal(stdin, *stdout_fds))
            else:
                code = _pump(runtime.command(*args, log=runtime_log), stdin=stdin,
                             output=output, pid_file=pid_file, runtime_log=runtime_log,
                             on_started=started, forward_signals=forward_signals)
        except RuntimeFailure as e:
            _record(containers, cid, state="created", exit_code=e.exit_code)
            raise
        runtime.delete(cid)
    finally:
        if output is not None:
            output.close()
        if not was_mounted:
            containers.umount(cid)
    _record(containers, cid, state="exited", exit_code=code, finished=time.time(), pid=0)
    return code


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


def spawn(containers: ContainerStore, name: str) -> str:
    """Start the container's process under a detached monitor; return once the process runs
    (or raise what stopped it from starting). Returns the container ID.

    A container this process has claimed (``run -d`` creates it claimed) is handed over: the
    monitor takes the claim in the transaction that makes it its own (``LAMINA_HANDOVER``), so
    the container is owned by a live process throughout. If the monitor fails before that, the
    claim is still this process's, for the caller to give back (:func:`release`)."""
    row = containers.get(name)
    mine = not row["pid"] and row["monitor_pid"] == os.getpid()
    if row["state"] == "running" and monitor_alive(row) and not mine:
        return row["id"]
    import sys

    read_end, write_end = os.pipe()
    # A fresh interpreter: SQLite connections must not cross a fork, and the double fork (the
    # monitor is nobody's child) keeps a long-lived caller free of zombies.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = package_parent + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop(_HANDOVER, None)
    if row["state"] == "running" and mine:
        env[_HANDOVER] = str(os.getpid())
    argv = [sys.executable, "-S", "-m", "lamina.runtime.monitor", containers.store.root,
            containers.store.driver, row["id"], str(write_end)]
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                os.set_inheritable(write_end, True)
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    chunks = []
    while True:
        data = os.read(read_end, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(read_end)
    reply = b"".join(chunks).decode()
    if reply.startswith("ok"):
        return row["id"]
    code, _, message = reply.partition(" ")
    if not code.isdigit():
        raise LaminaError(f"the monitor of {row['name']} failed before starting it")
    raise RuntimeFailure(message, int(code))


def _monitor_main(containers: ContainerStore, container_id: str, notify: int) -> None:
    """The monitor process (``python -m lamina.runtime.monitor ROOT DRIVER ID FD``): own the container
    until its process ends; write ``ok`` or ``CODE message`` to the file descriptor FD. With
    ``LAMINA_HANDOVER=PID`` in its environment, it takes over the claim of PID (:func:`spawn`)."""
    os.set_inheritable(notify, False)  # neither runc nor the container may hold it open
    handover = os.environ.pop(_HANDOVER, "")
    bundle = containers.store.bundle_dir(container_id)
    os.makedirs(bundle, exist_ok=True)
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(os.path.join(bundle, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    state = {"notified": False}

    def started(pid: int) -> None:
        os.write(notify, b"ok\n")
        os.close(notify)
        state["notified"] = True

    try:
        supervise(containers, container_id, on_started=started,
                  handover=int(handover) if handover.isdigit() else 0)
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


# ---------------------------------------------------------------------------------- other verbs
def refresh(containers: ContainerStore, row):
    """The container's row, with a dead owner's ``running`` turned into ``exited``."""
    if row["state"] == "running" and not monitor_alive(row):
        config = RunConfig.from_json(row["run_config"])
        Runtime(containers.store.root, config.runtime).delete(row["id"])
        containers.umount(row["id"])
        _record(containers, row["id"], state="exited", exit_code=UNKNOWN_EXIT, finished=time.time(),
                pid=0)
        row = containers.get(row["id"])
    return row


def _wait_owner(row, timeout: float | None) -> bool:
    """Wait until the container's owner has gone; False on timeout."""
    import select

    pid = row["monitor_pid"]
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if process_start_time(pid) != row["monitor_start"]:
            return True  # the PID names another process now
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))
    finally:
        os.close(fd)


def signal_number(value: str | int) -> int:
    """``KILL``, ``SIGKILL`` or ``9`` -> 9."""
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {value}") from None


def _past_start(containers: ContainerStore, row):
    """A container being started (claimed, its process not yet running: pid 0): wait a little
    for its process, so that stop and kill reach it rather than a runtime that knows nothing."""
    deadline = time.monotonic() + 10
    while row["state"] == "running" and not row["pid"] and time.monotonic() < deadline:
        time.sleep(0.05)
        row = refresh(containers, containers.get(row["id"]))
    return row


def _running(containers: ContainerStore, name: str, verb: str):
    row = _past_start(containers, refresh(containers, containers.get(name)))
    if row["state"] != "running":
        raise FailedPrecondition(f"Cannot {verb} container: {name}: Container {row['id']} is not "
                                 "running")
    return row


def stop(containers: ContainerStore, name: str, timeout: float = 10) -> str:
    """Docker's stop: the image's StopSignal (SIGTERM), then SIGKILL after ``timeout`` seconds."""
    row = _past_start(containers, refresh(containers, containers.get(name)))
    if row["state"] != "running":
        return row["id"]
    runtime = Runtime(containers.store.root, RunConfig.from_json(row["run_config"]).runtime)
    image = containers.images.config(row["image_id"]).get("config") or {}
    runtime.kill(row["id"], signal_number(image.get("StopSignal") or "SIGTERM"))
    if not _wait_owner(row, timeout):
        runtime.kill(row["id"], signal.SIGKILL, all=True)
        if not _wait_owner(row, 30):
            raise LaminaError(f"container {row['name']} did not stop")
    return row["id"]


def kill(containers: ContainerStore, name: str, sig: str | int = "KILL") -> str:
    """Send a signal to the container's main process (it need not end)."""
    number = signal_number(sig)
    row = _running(containers, name, "kill")
    Runtime(containers.store.root, RunConfig.from_json(row["run_config"]).runtime).kill(row["id"], number)
    return row["id"]


def wait(containers: ContainerStore, name: str) -> int:
    """Block until the container's process has ended; its exit code. A container that was
    created but never started is waited for until some other command starts it and it ends, as
    Docker does (its state is polled: whoever starts it is another process)."""
    row = refresh(containers, containers.get(name))
    delay = 0.01
    while row["state"] == "created":
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
        row = refresh(containers, containers.get(row["id"]))  # NotFound once it is removed
    while row["state"] == "running":  # again if the owner handed it over (run -d, spawn)
        _wait_owner(row, None)
        row = refresh(containers, containers.get(row["id"]))
    return row["exit_code"]


def logs(containers: ContainerStore, name: str, *, follow: bool = False, tail: int | None = None,
         timestamps: bool = False, stdout: int = 1, stderr: int = 2) -> None:
    """Write the container's logged output to ``stdout``/``stderr``; with ``follow``, keep
    writing until the process ends."""
    row = containers.get(name)
    path = os.path.join(containers.store.bundle_dir(row["id"]), LOG_FILE)
    fds = {"stdout": stdout, "stderr": stderr}

    def emit(lines) -> None:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            data = entry["log"].encode("utf-8", "surrogateescape")
            if timestamps:
                data = entry["time"].encode() + b" " + data
            fd = fds.get(entry.get("stream"), stdout)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

    try:
        f = open(path, "rb")  # noqa: SIM115 - the with below
    except FileNotFoundError:
        return
    with f:
        lines = f.readlines()
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        emit(lines)
        if not follow:
            return
        partial = b""
        while True:
            chunk = f.read()
            if chunk:
                partial += chunk
                *done, partial = partial.split(b"\n")
                emit(done)
                continue
            row = refresh(containers, containers.get(row["id"]))
            if row["state"] != "running":
                emit((partial + f.read()).split(b"\n"))
                return
            time.sleep(0.1)


def exec_process(containers: ContainerStore, name: str, argv: list[str], *, env=(), workdir: str | None = None,
                 user: str | None = None, stdin=None, detach: bool = False, stdout: int = 1,
                 stderr: int = 2, tty: bool = False) -> int:
    """Run another process in a running container; its exit code (0 once started with
    ``detach``). Env: the container's, then ``env``; user and working dir default to the
    container's. ``tty`` gives the process a terminal (not with ``detach``: nobody would hold
    it), relayed to the caller's (see :mod:`lamina.console`)."""
    if not argv:
        raise InvalidArgument("exec needs a command")
    row = _running(containers, name, "exec in")
    cid = row["id"]
    config = RunConfig.from_json(row["run_config"])
    runtime = Runtime(containers.store.root, config.runtime)
    image = containers.images.config(row["image_id"]).get("config") or {}
    rootfs = containers.mount(cid)
    hostname = row["id"][:12]
    import socket

    if config.network == "host":
        hostname = socket.gethostname()
    process = make_process(rootfs, argv, merge_env(image.get("Env"), config.env, env),
                           workdir or config.workdir or image.get("WorkingDir") or "/",
                           user or config.user or image.get("User"), hostname,
                           terminal=tty and not detach)
    bundle = containers.store.bundle_dir(cid)
    tag = os.urandom(6).hex()
    process_file = os.path.join(bundle, f"exec-{tag}.json")
    pid_file = os.path.join(bundle, f"exec-{tag}.pid")
    runtime_log = os.path.join(bundle, f"exec-{tag}.log")
    with open(process_file, "w") as f:
        json.dump(process, f)
    try:
        if tty and not detach:
            from .console import caller_terminal

            return _pump_tty(runtime, ["exec", "--process", process_file, "--pid-file", pid_file,
                                       cid], stdin=stdin, output=_Output([stdout], [stderr]),
                             pid_file=pid_file, runtime_log=runtime_log, forward_signals=True,
                             terminal=caller_terminal(stdin, stdout))
        args = ["exec", "--process", process_file, "--pid-file", pid_file]
        if detach:
            args.append("--detach")
        cmd = runtime.command(*args, cid, log=runtime_log)
        output = _Output([] if detach else [stdout], [] if detach else [stderr])
        return _pump(cmd, stdin=stdin, output=output, pid_file=pid_file, runtime_log=runtime_log,
                     forward_signals=not detach)
    finally:
        for path in (process_file, pid_file, runtime_log):
            if os.path.exists(path):
                os.unlink(path)


def run_in_container(containers: ContainerStore, name: str, argv: list[str], env=None,
                     workdir=None, user=None, network: str = "none", stdout: int = 1,
                     stderr: int = 2) -> int:
    """Run ``argv`` in the (created, not running) container ``container_id``; return its exit code.

    This is what a Dockerfile ``RUN`` step uses. The container's merged root is mounted (and
    unmounted again unless it was mounted before); ``env`` (``KEY=VALUE``, replacing the image's
    Env entirely when given, else the image's Env is used), ``workdir`` (created when missing, as
    Docker does), ``user`` (``name``, ``uid``, ``user:group``) and ``network`` (``none`` or
    ``host``) apply to this process only; nothing is recorded in the container's state or logs.
    Stdin is /dev/null; stdout and stderr are streamed to the file descriptors ``stdout`` and
    ``stderr`` (the caller's by default) while the process runs. Files the process writes land in
    the container's writable layer, ready for ``Engine.commit``.

    Raises :class:`RuntimeFailure` (exit_code 127 for a missing executable, 126 when it cannot be
    executed, 125 for other runtime errors) when the process could not be started, and
    ``NotFound`` for an unknown container or user. A process killed by signal N returns 128+N.
    """
    row = containers.get(name)
    if row["state"] == "running" and monitor_alive(row):
        raise FailedPrecondition(f"container {row['name']} is running")
    cid = row["id"]
    config = RunConfig.from_json(row["run_config"])
    runtime = Runtime(containers.store.root, config.runtime)
    runtime_id = f"{cid[:16]}-{os.urandom(6).hex()}"
    bundle = os.path.join(containers.store.bundle_dir(cid), runtime_id)
    os.makedirs(bundle)
    target = containers.store.mount_target(cid)
    was_mounted = os.path.ismount(target)
    rootfs = containers.mount(cid)
    try:
        _prepare(containers, row, config, rootfs, bundle, list(argv), env, workdir, user, network,
                 runtime_id)
        pid_file = os.path.join(bundle, "pid")
        runtime_log = os.path.join(bundle, "runtime.log")
        cmd = runtime.command("run", "--bundle", bundle, "--pid-file", pid_file, runtime_id,
                              log=runtime_log)
        return _pump(cmd, stdin=None, output=_Output([stdout], [stderr]), pid_file=pid_file,
                     runtime_log=runtime_log)
    finally:
        runtime.delete(runtime_id)
        if not was_mounted:
            containers.umount(cid)
        from ..fsutil import remove_tree

        remove_tree(bundle)



# ---------------------------------------------------------------------------------- run and start
def run(containers: ContainerStore, image: str, command: list[str] | None = None, *, name: str | None = None,
        entrypoint: list[str] | None = None, config: RunConfig | None = None,
        detach: bool = False, stdin=None, stdout: int = 1, stderr: int = 2):
    """Create a container from ``image`` and run it; see ``Engine.run``."""
    from .. import volumes
    from .oci import NETWORKS, combine_command

    config = config or RunConfig()
    if config.network not in NETWORKS:
        raise InvalidArgument(f"network {config.network!r} is not supported (choose from "
                              f"{', '.join(NETWORKS)}; lamina has no bridge network)")
    if config.workdir is not None and not config.workdir.startswith("/"):
        raise InvalidArgument(f"the working directory {config.workdir!r} is invalid: it needs to "
                              "be an absolute path")
    Runtime(containers.store.root, config.runtime)  # a missing runtime fails before anything is made
    image_config = containers.images.config(containers.images.resolve(image)).get("config") or {}
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
                resolved = volumes.attach(containers.store, cid, config.volumes, rootfs)
            finally:
                if rootfs == target:
                    containers.umount(cid)
            config = RunConfig(**{**config.__dict__, "volumes": resolved})
        _record(containers, cid, run_config=config.to_json())
    except BaseException:
        release(containers, cid)
        containers.rm(cid, force=True)
        raise
    if detach:
        try:
            return spawn(containers, cid), None
        except BaseException as e:
            release(containers, cid)  # the monitor failed before taking it over
            if config.auto_remove and isinstance(e, LaminaError):
                remove_after_run(containers, cid)
            raise
    try:
        code = supervise(containers, cid, stdin=stdin, stdout_fds=[stdout], stderr_fds=[stderr],
                         forward_signals=True)
    except BaseException:
        release(containers, cid)  # supervise failed before its own claim (it gives that back)
        raise
    finally:
        if config.auto_remove:
            remove_after_run(containers, cid)
    return cid, code


def start(containers: ContainerStore, name: str, *, attach: bool = False, stdin=None, stdout: int = 1,
          stderr: int = 2):
    """Start a created or exited container; see ``Engine.start``."""
    row = refresh(containers, containers.get(name))
    if row["state"] == "running":
        return row["id"], None
    if not attach:
        return spawn(containers, row["id"]), None
    try:
        code = supervise(containers, row["id"], stdin=stdin, stdout_fds=[stdout],
                         stderr_fds=[stderr], forward_signals=True)
    finally:
        if RunConfig.from_json(row["run_config"]).auto_remove:
            remove_after_run(containers, row["id"])
    return row["id"], code


class Lifecycle:
    """What container removal needs of the runtime (see :class:`lamina.containers.Lifecycle`)."""

    def __init__(self, containers: ContainerStore):
        self.containers = containers

    def refresh(self, row):
        return refresh(self.containers, row)

    def stop(self, container_id: str, timeout: float) -> None:
        stop(self.containers, container_id, timeout)


if __name__ == "__main__":
    import sys

    from ..containers import open_containers

    _root, _driver, _container, _fd = sys.argv[1:5]
    try:
        _containers = open_containers(_root, _driver)
        _containers.lifecycle = Lifecycle(_containers)
    except BaseException as _error:  # noqa: BLE001
        os.write(int(_fd), f"125 {_error}".encode())
        os._exit(1)
    _monitor_main(_containers, _container, int(_fd))
    os._exit(0)
