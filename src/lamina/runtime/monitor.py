"""The life of a container's process, without a daemon.

Whoever runs a container's process owns it until it ends, like Podman's conmon (:func:`supervise`):
it mounts the root, writes the bundle, runs ``runc run``, copies stdout/stderr to the container's
log (:mod:`lamina.runtime.logs`) and to any attached file descriptors, records ``running`` (with
its own PID and start time) and then ``exited`` with the exit code in SQLite
(:mod:`lamina.runtime.ownership`), and unmounts. A foreground ``lamina run`` is that owner
itself; ``run -d`` and ``start`` fork a small monitor that does the same and outlives the
command: :func:`spawn` starts it (double fork, new session, ``python -S -m lamina.runtime``),
:func:`serve` is its main.
"""

from __future__ import annotations

import json
import os
import signal
import time

from ..errors import InvalidArgument, LaminaError, NotFound
from ..processes import start_time as process_start_time
from . import cgroups
from .logs import LOG_FILE, Output
from .oci import RunConfig, Runtime, RuntimeFailure
from .ownership import become_owner, monitor_alive, record, release
from .process import prepare_bundle, pump, pump_tty

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

_HANDOVER = "LAMINA_HANDOVER"  # the monitor's environment: the PID whose claim it takes over


def supervise(containers: ContainerStore, name: str, *, stdin=None, stdout_fds=(), stderr_fds=(), on_started=None,
              forward_signals: bool = False, handover: int = 0) -> int:
    """Run the container's own process to its end, as its owner; returns the exit code.

    Output goes to the container's log and to ``stdout_fds``/``stderr_fds``; ``on_started(pid)``
    is called once the process runs (its state is ``running`` by then). ``handover``: the PID
    of a process whose claim on the container this one takes over (see
    :func:`lamina.runtime.ownership.become_owner`)."""
    row = become_owner(containers, name, handover)
    try:
        return _supervise(containers, row, stdin=stdin, stdout_fds=stdout_fds, stderr_fds=stderr_fds,
                          on_started=on_started, forward_signals=forward_signals)
    except BaseException:
        release(containers, row["id"])  # if its process never ran
        raise


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
        prepare_bundle(containers, row, config, rootfs, bundle, argv, None, None, None,
                       config.network, cid, terminal=config.tty)
        runtime.delete(cid)  # state left by an owner that died
        pid_file = os.path.join(bundle, "pid")
        runtime_log = os.path.join(bundle, "runtime.log")
        for path in (pid_file, runtime_log):
            if os.path.exists(path):
                os.unlink(path)
        output = Output(stdout_fds, stderr_fds, os.path.join(bundle, LOG_FILE))
        me = os.getpid()

        def started(pid: int) -> None:
            record(containers, cid, state="running", pid=pid, monitor_pid=me,
                   monitor_start=process_start_time(me), started=time.time(), exit_code=0,
                   oom_killed=0, paused=0)
            containers.event("start", row)
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
        oom_killed = cgroups.oom_kills(cgroups.cgroup_dirs_of_path(cgroups.container_path(cid))) > 0
        runtime.delete(cid)
    finally:
        if output is not None:
            output.close()
        if not was_mounted:
            containers.umount(cid)
    record(containers, cid, state="exited", exit_code=code, finished=time.time(), pid=0,
           oom_killed=int(oom_killed))
    containers.event("die", row, exitCode=code)
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

    read_end, write_end = os.pipe()
    # A fresh interpreter: SQLite connections must not cross a fork, and the double fork (the
    # monitor is nobody's child) keeps a long-lived caller free of zombies.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = package_parent + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop(_HANDOVER, None)
    if row["state"] == "running" and mine:
        env[_HANDOVER] = str(os.getpid())
    argv = [sys.executable, "-S", "-m", "lamina.runtime", containers.store.root,
            containers.store.driver, row["id"], str(write_end)]
    if stdio is not None:
        argv.append(",".join(str(fd) for fd in stdio))
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                os.set_inheritable(write_end, True)
                for fd in stdio or ():
                    if fd >= 0:
                        os.set_inheritable(fd, True)
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


def serve(containers: ContainerStore, container_id: str, notify: int,
          stdio: tuple[int, int, int] = (-1, -1, -1)) -> None:
    """The monitor process (``python -m lamina.runtime ROOT DRIVER ID FD [IN,OUT,ERR]``): own the
    container until its process ends; write ``ok`` or ``CODE message`` to the file descriptor FD.
    With ``LAMINA_HANDOVER=PID`` in its environment, it takes over the claim of PID
    (:func:`spawn`). IN, OUT and ERR (-1: none) are the attached stdio of :func:`spawn`."""
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if stdin < 0 and RunConfig.from_json(containers.get(container_id)["run_config"]).open_stdin:
        # -i with nobody attached: stdin stays open, as Docker keeps it (a `cat` waits rather
        # than ending at once); the write end lives as long as this monitor
        stdin, _keep_open = os.pipe()
    state = {"notified": False}

    def started(pid: int) -> None:
        os.write(notify, b"ok\n")
        os.close(notify)
        state["notified"] = True

    try:
        supervise(containers, container_id, on_started=started,
                  stdin=stdin if stdin >= 0 else None,
                  stdout_fds=[stdout] if stdout >= 0 else [],
                  stderr_fds=[stderr] if stderr >= 0 else [],
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
