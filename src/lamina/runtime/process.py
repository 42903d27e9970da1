"""One process in a container: its bundle, the runtime command that runs it, its output.

:func:`prepare_bundle` writes ``config.json`` (the OCI spec, :mod:`lamina.runtime.oci`) for a
command in a container; :func:`pump` runs the runtime command and copies the process's output
until it ends (:func:`pump_tty` when the process has a terminal, :mod:`lamina.runtime.console`).
The container's own process runs this way under its owner (:mod:`lamina.runtime.monitor`); the
other processes are :func:`exec_process` (``exec``: ``runc exec`` in a running container) and
:func:`run_in_container` (a Dockerfile ``RUN``: a command of its own in a created container).
"""

from __future__ import annotations

import _signal  # signal's C half: signal's enums import enum, a cost to create and start
import os

from .. import cjson
from ..errors import FailedPrecondition, InvalidArgument
from ..rootpath import resolve_in_root
from . import cgroups, resources, rootless, security
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
from .users import group_ids

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
              _signal.SIGUSR2)


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

        previous = {s: _signal.signal(s, forward) for s in _FORWARDED}
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
            _signal.signal(s, handler)
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
    from . import console

    pid, master = start_with_terminal(runtime, args, pid_file=pid_file, runtime_log=runtime_log)
    try:
        if on_started is not None:
            on_started(pid)
        return console.relay(master, pid, output, stdin=stdin, terminal=terminal,
                             forward_signals=forward_signals)
    finally:
        os.close(master)


def start_with_terminal(runtime: Runtime, args: list[str], *, pid_file: str,
                        runtime_log: str) -> tuple[int, int]:
    """Start runc's ``args`` (``run ... ID`` or ``exec ... ID``) detached with a terminal, this
    process a child subreaper (the process becomes its child); (the process's PID, the master
    end of its terminal), or RuntimeFailure."""
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
                    os.kill(pid, _signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            raise failure
        started, master = (pid, master), None
        return started
    finally:
        if master is not None:
            os.close(master)
        listener.close()


INIT_PATH = "/sbin/docker-init"  # where --init's binary is mounted, as Docker mounts it
INIT_BINARIES = ("docker-init", "tini-static", "catatonit")  # static builds: any root can run them


def init_binary() -> str:
    """The host's static init for ``--init``: Docker's ``docker-init`` (Debian's docker.io links
    it to ``tini-static``), else ``tini-static`` (Debian's tini) or ``catatonit``."""
    import shutil

    for name in INIT_BINARIES:
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    from ..errors import Unavailable

    raise Unavailable("--init needs a static init binary: apt-get install -y tini")


def prepare_bundle(containers: ContainerStore, row, config: RunConfig, rootfs: str, bundle: str,
                   argv: list[str], env: list[str] | None, workdir: str | None, user: str | None,
                   network: str, runtime_id: str, terminal: bool = False,
                   netns: str | None = None, hostname: str | None = None,
                   mounts: list[dict] | None = None, extra_hosts=(),
                   address: str | None = None, nameserver: str | None = None) -> None:
    """Write ``bundle``/config.json for ``argv`` in the container ``row`` (``netns``: the
    namespace file of a container on bridge networks; ``mounts``: more OCI mounts, a build's
    RUN --mount ones; ``address``: the container's own, named in its hosts file, where no
    network endpoint does; ``nameserver``: its network's DNS forwarder, for its resolv.conf)."""
    from .. import volumes

    image = containers.images.config(row["image_id"]).get("config") or {}
    if hostname is None:  # the host's name is its uname's (socket.gethostname), without socket
        hostname = os.uname().nodename if network == "host" else \
            config.hostname or row["id"][:12]
    env = merge_env(image.get("Env"), config.env) if env is None else list(env)
    workdir = workdir or config.workdir or image.get("WorkingDir") or "/"
    if not workdir.startswith("/"):
        raise InvalidArgument(f"the working directory {workdir!r} is invalid: it needs to be "
                              "an absolute path")
    host_dir = resolve_in_root(rootfs, workdir)
    if not os.path.isdir(host_dir):
        os.makedirs(host_dir, 0o755)  # Docker creates a missing working directory
    binds = volumes.oci_mounts(containers.store, config)
    if config.init:  # PID 1 is the init, which runs argv and reaps orphans (Docker's --init)
        argv = [INIT_PATH, "--", *argv]
        binds = [{"destination": INIT_PATH, "type": "bind", "source": init_binary(),
                  "options": ["bind", "ro"]}, *binds]
    process = make_process(rootfs, argv, env, workdir, user or config.user or image.get("User"),
                           hostname, terminal=terminal)
    if terminal and len(config.console_size) == 2 and all(config.console_size):
        # set by the runtime before the process runs (a resize once it runs may come after a
        # first `stty size`): the API's HostConfig.ConsoleSize, as docker run -it sends it
        process["consoleSize"] = {"height": config.console_size[0],
                                  "width": config.console_size[1]}
    files = write_network_files(bundle, hostname, network,
                                (*config.extra_hosts, *extra_hosts), address, nameserver)
    spec = make_spec(rootfs, process, hostname=hostname, network=network,
                     read_only=config.read_only, files=files, binds=binds + list(mounts or []),
                     cgroup=cgroups.container_path(runtime_id), netns=netns)
    propagation = volumes.rootfs_propagation(config)
    if propagation:
        spec["linux"]["rootfsPropagation"] = propagation
    confine(spec["process"], rootfs, config)
    spec["linux"]["resources"].update(resources.linux_resources(config))
    resources.shm_size(spec, config)
    security.apply(spec, config)
    rootless.fit_spec(spec)
    # 0600: the spec holds the container's environment (-e NAME=secret)
    with open(os.open(os.path.join(bundle, "config.json"),
                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        cjson.dump(spec, f)


def confine(process: dict, rootfs: str, config: RunConfig) -> None:
    """What the container's config says of each of its processes, its own and its execs' (as
    Docker gives an exec the container's): ``--group-add``, capabilities, no-new-privileges,
    ``--ulimit``."""
    if config.group_add:
        user = process["user"]
        gids = list(user.get("additionalGids") or ())
        user["additionalGids"] = gids + [g for g in group_ids(rootfs, config.group_add)
                                         if g not in gids]
    security.apply_process(process, config)
    process["rlimits"] = resources.rlimits(config, process.get("rlimits") or [])


def exec_process(containers: ContainerStore, name: str, argv: list[str], *, env=(), workdir: str | None = None,
                 user: str | None = None, stdin=None, detach: bool = False, stdout: int = 1,
                 stderr: int = 2, tty: bool = False, forward_signals: bool = True,
                 on_started=None, console_size: tuple[int, int] | None = None,
                 on_exit=None) -> int:
    """Run another process in a running container; its exit code (0 once started with
    ``detach``). ``forward_signals``: this process's signals go to it (the CLI; not from a
    thread of a server); ``on_started(pid)`` once it runs. ``on_exit(code)``, with ``detach``
    (a server's): called from a thread with its exit code when it ends; this process becomes a
    child subreaper first, so that the detached process (or its terminal's holder) is its child. Env: the container's, then ``env``; user and working dir default to the
    container's. ``tty`` gives the process a terminal, relayed to the caller's (see
    :mod:`lamina.runtime.console`); with ``detach`` too, a small detached process holds it
    (:func:`_hold_terminal`). ``console_size`` (height, width): the terminal's size from its
    start (the runtime sets it before the process runs: a size set after it started may come
    too late for a first ``stty size``)."""
    if not argv:
        raise InvalidArgument("exec needs a command")
    row = require_running(containers, name, "exec in")
    if row["paused"]:  # its processes are frozen: runc exec would wait for ever (Docker's error)
        raise FailedPrecondition(f"Container {row['id']} is paused, unpause the container "
                                 "before exec")
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
                           terminal=tty)
    if tty and console_size is None and not detach:  # the caller's terminal (lamina exec -it)
        from .console import terminal_size

        console_size = terminal_size(stdin, stdout)
    if tty and console_size and all(console_size):
        process["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
    confine(process, rootfs, config)
    bundle = containers.store.bundle_dir(cid)
    tag = os.urandom(6).hex()
    process_file = os.path.join(bundle, f"exec-{tag}.json")
    pid_file = os.path.join(bundle, f"exec-{tag}.pid")
    runtime_log = os.path.join(bundle, f"exec-{tag}.log")
    with open(process_file, "w") as f:
        cjson.dump(process, f)
    try:
        if tty and not detach:
            from .console import caller_terminal

            return pump_tty(runtime, ["exec", "--process", process_file, "--pid-file", pid_file,
                                      cid], stdin=stdin, output=Output([stdout], [stderr]),
                            pid_file=pid_file, runtime_log=runtime_log,
                            forward_signals=forward_signals, on_started=on_started,
                            terminal=caller_terminal(stdin, stdout))
        args = ["exec", "--process", process_file, "--pid-file", pid_file]
        from . import console

        if detach and on_exit is not None:
            console.become_subreaper()
        if detach and tty:
            pid, holder = _hold_terminal(runtime, [*args, cid], pid_file, runtime_log)
            console.reap_later(holder, on_exit)  # it exits with the process's exit code
            if on_started is not None:
                on_started(pid)
            return 0
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
            with open(pid_file) as f:
                pid = int(f.read().strip() or 0)
            console.reap_later(pid, on_exit)
            if on_started is not None:
                on_started(pid)
            return 0
        cmd = runtime.command(*args, cid, log=runtime_log)
        return pump(cmd, stdin=stdin, output=Output([stdout], [stderr]), pid_file=pid_file,
                    runtime_log=runtime_log, forward_signals=forward_signals,
                    on_started=on_started)
    finally:
        for path in (process_file, pid_file, runtime_log):
            if os.path.exists(path):
                os.unlink(path)


def detached(work) -> str:
    """Run ``work(notify)`` in a detached process (double fork, new session: nobody's child, so
    no caller is left with a zombie, and no terminal's hang-up reaches it); returns what it
    wrote to the file descriptor ``notify`` by the time it closed it (or exec'd or ended)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                work(write_end)
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
    return b"".join(chunks).decode(errors="replace")


def _hold_terminal(runtime: Runtime, args: list[str], pid_file: str,
                   runtime_log: str) -> tuple[int, int]:
    """``exec -d -t``: the process gets a terminal although nobody is attached. Its master end
    must stay open (a pty whose master closes hangs its process up), so a detached holder (double
    fork, new session, like the container's monitor) runs ``runc exec`` with a console socket,
    keeps the master and drains it to nowhere until the process ends, as Docker's shim drops a
    detached exec's output, and exits with the process's exit code. Returns (the process's PID,
    the holder's) once it runs."""
    import socket  # noqa: F401 - imported before the fork: the holder must not import
    import subprocess  # noqa: F401 - likewise

    from . import console  # noqa: F401 - likewise

    reply = detached(lambda notify: _serve_terminal(runtime, args, pid_file, runtime_log, notify))
    status, _, rest = reply.partition(" ")
    if status == "ok":
        pid, _, holder = rest.partition(" ")
        return int(pid), int(holder)
    code, _, message = rest.partition(" ")
    raise RuntimeFailure(message or "the terminal's holder failed", int(code) if code.isdigit() else 125)


def _serve_terminal(runtime: Runtime, args: list[str], pid_file: str, runtime_log: str,
                    notify: int) -> None:
    """The holder of :func:`_hold_terminal` (never returns: exits with the process's code)."""
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)

        def started(pid: int) -> None:
            os.write(notify, f"ok {pid} {os.getpid()}".encode())
            os.close(notify)

        code = pump_tty(runtime, args, stdin=None, output=Output(), pid_file=pid_file,
                        runtime_log=runtime_log, on_started=started)
    except BaseException as e:  # noqa: BLE001 - told to the waiting exec, if it still waits
        try:
            os.write(notify, f"error {getattr(e, 'exit_code', 125)} {e}".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def run_in_container(containers: ContainerStore, name: str, argv: list[str], env=None,
                     workdir=None, user=None, network: str = "none", stdout: int = 1,
                     stderr: int = 2, hostname: str | None = None,
                     mounts: list[dict] | None = None, extra_hosts=()) -> int:
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
    extra OCI mounts for this process (a Dockerfile's ``RUN --mount``); ``extra_hosts``:
    ``HOST:IP`` lines for its /etc/hosts (a build's ``--add-host``).

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
                       network, runtime_id, hostname=hostname, mounts=mounts,
                       extra_hosts=extra_hosts)
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
