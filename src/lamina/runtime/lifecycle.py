"""The verbs on a container's process: run, start, stop, kill, wait.

``run`` and ``start`` run the process under its owner (:mod:`lamina.runtime.monitor`): this
command itself in the foreground, a detached monitor otherwise. The other verbs talk to the
runtime directly: ``stop`` and ``kill`` signal through ``runc kill`` and wait for the owner with
a pidfd. (``create`` is :mod:`lamina.runtime.creation`, ``exec`` :mod:`lamina.runtime.process`,
``logs`` :mod:`lamina.runtime.logs`.)
"""

from __future__ import annotations

import _signal  # signal's C half: signal's enums import enum, a cost to create and start
import os
import time

from ..errors import InvalidArgument, LaminaError
from ..processes import start_time as process_start_time
from .creation import create
from .monitor import remove_after_run, request_stop, spawn, supervise
from .oci import RunConfig, Runtime
from .ownership import refresh, release, require_running, wait_past_start

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore


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
    import signal  # its Signals enum: the signal names there are

    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {value}") from None


def stop(containers: ContainerStore, name: str, timeout: float = 10) -> str:
    """Docker's stop: the image's StopSignal (SIGTERM), then SIGKILL after ``timeout`` seconds."""
    row = wait_past_start(containers, refresh(containers, containers.get(name)))
    if row["state"] != "running":
        return row["id"]
    runtime = Runtime(containers.store.root, RunConfig.from_json(row["run_config"]).runtime)
    image = containers.images.config(row["image_id"]).get("config") or {}
    number = signal_number(image.get("StopSignal") or "SIGTERM")
    request_stop(row)  # no restart after this (and none while it waits to restart)
    runtime.kill(row["id"], number)
    containers.event("kill", row, signal=number)
    _thaw(containers, row)
    if not _wait_owner(row, timeout):
        runtime.kill(row["id"], _signal.SIGKILL, all=True)
        containers.event("kill", row, signal=int(_signal.SIGKILL))
        if not _wait_owner(row, 30):
            raise LaminaError(f"container {row['name']} did not stop")
    containers.event("stop", row)
    return row["id"]


def kill(containers: ContainerStore, name: str, sig: str | int = "KILL") -> str:
    """Send a signal to the container's main process (it need not end)."""
    number = signal_number(sig)
    row = require_running(containers, name, "kill", restarting_too=True)
    request_stop(row)  # Docker: a user's kill ends the restart policy too
    Runtime(containers.store.root, RunConfig.from_json(row["run_config"]).runtime).kill(row["id"], number)
    containers.event("kill", row, signal=number)
    _thaw(containers, row)
    return row["id"]


def _thaw(containers: ContainerStore, row) -> None:
    """A paused container that was sent a signal is thawed, to receive it (Docker's stop and
    kill work on paused containers)."""
    if row["paused"]:
        from .control import resume

        resume(containers, row)


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
    if row["state"] == "running" and _restarts(row):
        return _next_exit(containers, row)
    while row["state"] == "running":  # again if the owner handed it over (run -d, spawn)
        _wait_owner(row, None)
        row = refresh(containers, containers.get(row["id"]))
    return row["exit_code"]


def _next_exit(containers: ContainerStore, row) -> int:
    """A container with a restart policy: its next exit, whether a restart follows or not
    (Docker's wait returns when the container stops running, restarting included). While its
    process runs this sleeps on it (a pidfd, as on the owner); then the row is read every 20 ms
    until the owner has recorded the exit (well within the shortest wait before a restart)."""
    finished, waited = row["finished"], 0
    while row["state"] == "running":
        if row["finished"] != finished and not row["pid"]:
            return row["exit_code"]
        if row["pid"] and row["pid"] != waited:
            _wait_process(row["pid"], row)
            waited = row["pid"]
        else:  # being started, or ended and not yet recorded
            _wait_owner(row, 0.02)
        row = refresh(containers, containers.get(row["id"]))
    return row["exit_code"]


def _wait_process(pid: int, row) -> None:
    """Until the process ``pid`` (the container's) or the container's owner has ended."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            owner = os.pidfd_open(row["monitor_pid"])
        except ProcessLookupError:
            return
        try:
            poller.register(owner, select.POLLIN)
            poller.poll()
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def _follow_first_run(containers: ContainerStore, cid: str, stdin, stdout: int,
                      stderr: int) -> int:
    """A container with a restart policy, attached: its detached monitor runs it (and goes on
    restarting it) while this command shows its first run, as the docker CLI does; signals to
    this command are ``kill``s of the container, which end the policy (Docker's sig-proxy)."""
    import fcntl

    early: list[int] = []  # signals that came before the process ran: sent once it runs
    running = []

    def forward(signum, frame):
        if not running:
            early.append(signum)
            return
        try:
            kill(containers, cid, signum)
        except LaminaError:
            pass

    previous = {s: _signal.signal(s, forward) for s in (_signal.SIGINT, _signal.SIGTERM)}
    try:
        # copies above 2: the monitor makes its own 0, 1 and 2 /dev/null and its log
        stdio = tuple(-1 if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                      for fd in (stdin, stdout, stderr))
        try:
            spawn(containers, cid, stdio=stdio)
        finally:
            for fd in stdio:
                if fd >= 0:
                    os.close(fd)
        running.append(True)
        for signum in early:
            forward(signum, None)
        return wait(containers, cid)
    finally:
        for s, handler in previous.items():
            _signal.signal(s, handler)


def _restarts(row) -> bool:
    from .restart import RestartPolicy

    return RestartPolicy.parse(RunConfig.from_json(row["run_config"]).restart).enabled


def run(containers: ContainerStore, image: str, command: list[str] | None = None, *, name: str | None = None,
        entrypoint: list[str] | None = None, config: RunConfig | None = None,
        detach: bool = False, stdin=None, stdout: int = 1, stderr: int = 2):
    """Create a container from ``image`` and run it; see ``Engine.run``."""
    config = config or RunConfig()
    cid = create(containers, image, command, name=name, entrypoint=entrypoint, config=config,
                 keep_claim=True)
    if detach:
        try:
            return spawn(containers, cid), None
        except BaseException as e:
            release(containers, cid)  # the monitor failed before taking it over
            if config.auto_remove and isinstance(e, LaminaError):
                remove_after_run(containers, cid)
            raise
    if _restarts(containers.get(cid)):
        try:
            return cid, _follow_first_run(containers, cid, stdin, stdout, stderr)
        except BaseException:
            release(containers, cid)  # the monitor failed before taking it over
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
          stderr: int = 2, stdio: tuple[int, int, int] | None = None):
    """Start a created or exited container; see ``Engine.start``. ``stdio``: file descriptors
    (stdin, stdout, stderr; -1 for none) that its detached monitor copies the process's
    input from and output to, besides the log (an API server's attached clients)."""
    row = refresh(containers, containers.get(name))
    if row["state"] == "running":
        return row["id"], None
    if not attach:
        return spawn(containers, row["id"], stdio=stdio), None
    if _restarts(row):
        return row["id"], _follow_first_run(containers, row["id"], stdin, stdout, stderr)
    try:
        code = supervise(containers, row["id"], stdin=stdin, stdout_fds=[stdout],
                         stderr_fds=[stderr], forward_signals=True)
    finally:
        if RunConfig.from_json(row["run_config"]).auto_remove:
            remove_after_run(containers, row["id"])
    return row["id"], code
