"""One process in a container: its bundle, the runtime command that runs it, its output.

:func:`prepare_bundle` writes ``config.json`` (the OCI spec, :mod:`lamina.runtime.oci`) for a
command in a container; :func:`pump` runs the runtime command and copies the process's output
until it ends (:func:`pump_tty` when the process has a terminal, :mod:`lamina.runtime.console`).
The container's own process runs this way under its owner (:mod:`lamina.runtime.monitor`); the
other processes are :func:`exec_process` (``exec``: ``runc exec`` in a running container) and
:func:`run_in_container` (a Dockerfile ``RUN``: a command of its own in a created container).
"""

from __future__ import annotations

import json
import os
import signal

from ..errors import FailedPrecondition, InvalidArgument
from ..rootpath import resolve_in_root
from .logs import Output
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
from .ownership import monitor_alive, require_running

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


def pump(cmd: list[str], *, stdin, output: Output, pid_file: str, runtime_log: str,
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


def pump_tty(runtime: Runtime, args: list[str], *, stdin, output: Output, pid_file: str,
             runtime_log: str, on_started=None, forward_signals: bool = False,
             terminal: int | None = None) -> int:
    """As :func:`pump`, for a process with a terminal (``run -t``, ``exec -t``): ``args`` is
    runc's ``run ... ID`` or ``exec ... ID``; runc detaches and hands over the pty's master
    through ``--console-socket``, and :func:`lamina.runtime.console.relay` copies it until the
    process, now our child, ends. ``terminal`` is the caller's (raw mode, window size)."""
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


def prepare_bundle(containers: ContainerStore, row, config: RunConfig, rootfs: str, bundle: str,
                   argv: list[str], env: list[str] | None, workdir: str | None, user: str | None,
                   network: str, runtime_id: str, terminal: bool = False,
                   hostname: str | None = None, mounts: list[dict] | None = None) -> None:
    """Write ``bundle``/config.json for ``argv`` in the container ``row``."""
    import socket

    from .. import volumes

    image = containers.images.config(row["image_id"]).get("config") or {}
    if hostname is None:
        hostname = socket.gethostname() if network == "host" else \
            config.hostname or row["id"][:12]
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
                     binds=volumes.oci_mounts(containers.store, config) + list(mounts or []),
                     cgroup=f"/lamina/{runtime_id}")
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)


def exec_process(containers: ContainerStore, name: str, argv: list[str], *, env=(), workdir: str | None = None,
                 user: str | None = None, stdin=None, detach: bool = False, stdout: int = 1,
                 stderr: int = 2, tty: bool = False, forward_signals: bool = True,
                 on_started=None) -> int:
    """Run another process in a running container; its exit code (0 once started with
    ``detach``). ``forward_signals``: this process's signals go to it (the CLI; not from a
    thread of a server); ``on_started(pid)`` once it runs. Env: the container's, then ``env``; user and working dir default to the
    container's. ``tty`` gives the process a terminal (not with ``detach``: nobody would hold
    it), relayed to the caller's (see :mod:`lamina.runtime.console`)."""
    if not argv:
        raise InvalidArgument("exec needs a command")
    row = require_running(containers, name, "exec in")
    cid = row["id"]
    config = RunConfig.from_json(row["run_config"])
    runtime = Runtime(containers.store.root, config.runtime)
    image = containers.images.config(row["image_id"]).get("config") or {}
    rootfs = containers.mount(cid)
    hostname = config.hostname or row["id"][:12]
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

            return pump_tty(runtime, ["exec", "--process", process_file, "--pid-file", pid_file,
                                      cid], stdin=stdin, output=Output([stdout], [stderr]),
                            pid_file=pid_file, runtime_log=runtime_log,
                            forward_signals=forward_signals, on_started=on_started,
                            terminal=caller_terminal(stdin, stdout))
        args = ["exec", "--process", process_file, "--pid-file", pid_file]
        if detach:
            # The process keeps runc's stdio: /dev/null, so that nothing waits for it to close
            # them (a pipe would hold this command until the process ended). Docker drops a
            # detached exec's output too.
            import subprocess

            proc = subprocess.run(runtime.command(*args, "--detach", cid, log=runtime_log),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, check=False)
            if proc.returncode != 0:
                raise failure_from_log(runtime_log) or RuntimeFailure(
                    f"the runtime exited with status {proc.returncode}")
            if on_started is not None:
                with open(pid_file) as f:
                    on_started(int(f.read().strip() or 0))
            return 0
        cmd = runtime.command(*args, cid, log=runtime_log)
        return pump(cmd, stdin=stdin, output=Output([stdout], [stderr]), pid_file=pid_file,
                    runtime_log=runtime_log, forward_signals=forward_signals,
                    on_started=on_started)
    finally:
        for path in (process_file, pid_file, runtime_log):
            if os.path.exists(path):
                os.unlink(path)


def run_in_container(containers: ContainerStore, name: str, argv: list[str], env=None,
                     workdir=None, user=None, network: str = "none", stdout: int = 1,
                     stderr: int = 2, hostname: str | None = None,
                     mounts: list[dict] | None = None) -> int:
    """Run ``argv`` in the (created, not running) container ``container_id``; return its exit code.

    This is what a Dockerfile ``RUN`` step uses. The container's merged root is mounted (and
    unmounted again unless it was mounted before); ``env`` (``KEY=VALUE``, replacing the image's
    Env entirely when given, else the image's Env is used), ``workdir`` (created when missing, as
    Docker does), ``user`` (``name``, ``uid``, ``user:group``) and ``network`` (``none`` or
    ``host``) apply to this process only; nothing is recorded in the container's state or logs.
    Stdin is /dev/null; stdout and stderr are streamed to the file descriptors ``stdout`` and
    ``stderr`` (the caller's by default) while the process runs. Files the process writes land in
    the container's writable layer, ready for ``Engine.commit``. ``hostname``: the process's
    (default: the host's with ``network="host"``, else the container's short ID); ``mounts``:
    extra OCI mounts for this process (a Dockerfile's ``RUN --mount``).

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
        prepare_bundle(containers, row, config, rootfs, bundle, list(argv), env, workdir, user,
                       network, runtime_id, hostname=hostname, mounts=mounts)
        pid_file = os.path.join(bundle, "pid")
        runtime_log = os.path.join(bundle, "runtime.log")
        cmd = runtime.command("run", "--bundle", bundle, "--pid-file", pid_file, runtime_id,
                              log=runtime_log)
        return pump(cmd, stdin=None, output=Output([stdout], [stderr]), pid_file=pid_file,
                    runtime_log=runtime_log)
    finally:
        runtime.delete(runtime_id)
        if not was_mounted:
            containers.umount(cid)
        from ..fsutil import remove_tree

        remove_tree(bundle)
