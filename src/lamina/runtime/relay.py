"""The small resident part of a detached container's monitor: ``lamina-relay`` (``relay.c``).

A detached monitor (:mod:`lamina.runtime.monitor`) is a Python process only while there is
Python work to do: it starts the container's process with :func:`start` (``runc run --detach``
with this process a child subreaper, so that the process is its child and no ``runc`` stays
behind), then replaces itself with ``lamina-relay`` (:func:`command`), which keeps its PID, and
so its claim on the container, while it only waits, copies the output to the log and attached
clients and holds the stdin FIFO. When the process has ended, the relay replaces itself with the
Python monitor again (the exit command), which records the exit, restarts the process under
the container's restart policy or removes a ``--rm`` container. A relay costs about a megabyte
of resident memory, against some thirty for a Python interpreter and a foreground ``runc run``.

The relay is compiled from its source on first use with the system's C compiler (``cc``,
``scripts/setup`` installs gcc) into this package's ``__pycache__`` (``~/.cache/lamina`` where
that is read-only), named by a checksum of the source; :func:`binary` is None when it cannot be
built, and the monitor then stays a Python process throughout. A container's health check runs
from the relay too (:func:`lamina.runtime.probes.relay_check` gives it what it needs): each
interval it runs the runtime's exec of the probe itself, records the result under Docker's
rules in a file that :mod:`lamina.runstate` reads, and writes the exec and ``health_status``
events, so that a probe starts no interpreter.
"""

from __future__ import annotations

import os

from .oci import Runtime, RuntimeFailure, failure_from_log

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.c")


def binary() -> str | None:
    """The path of the compiled relay, built now if need be; None without a C compiler (or
    a place to put it)."""
    import zlib

    try:
        with open(SOURCE, "rb") as f:
            source = f.read()
    except OSError:
        return None
    name = f"lamina-relay-{zlib.crc32(source):08x}"
    places = [os.path.join(os.path.dirname(SOURCE), "__pycache__"),
              os.path.join(os.path.expanduser("~"), ".cache", "lamina")]  # a read-only install
    for directory in places:
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    import shutil

    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    for directory in places:
        built = _build(compiler, directory, name)
        if built is not None:
            return built
    return None


def _build(compiler: str, directory: str, name: str) -> str | None:
    """Compile the relay into ``directory``/``name``; None if that cannot be done there."""
    import subprocess
    import sys

    target = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        partial = f"{target}.{os.getpid()}.tmp"
        proc = subprocess.run([compiler, "-O2", "-o", partial, SOURCE], check=False,
                              stdin=subprocess.DEVNULL, capture_output=True)
        if proc.returncode != 0:
            print(f"lamina: cannot build {SOURCE}: {proc.stderr.decode(errors='replace')}",
                  file=sys.stderr)
            return None
        os.replace(partial, target)
    except OSError:
        return None
    return target


def start(runtime: Runtime, container_id: str, bundle: str, *, stdin: int | None,
          pid_file: str, runtime_log: str) -> tuple[int, int, int]:
    """``runc run --detach`` the container's process (no terminal), with ``stdin`` (None:
    /dev/null) and pipes for its stdout and stderr, this process a child subreaper so that
    the process is its child; (its PID, stdout's read end, stderr's read end), or
    RuntimeFailure."""
    import subprocess

    from .console import become_subreaper

    become_subreaper()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.run(runtime.command("run", "--detach", "--bundle", bundle,
                                              "--pid-file", pid_file, container_id,
                                              log=runtime_log),
                              stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              stdout=out_w, stderr=err_w, check=False)
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    os.close(out_w)
    os.close(err_w)
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        pid = 0
    if proc.returncode == 0 and pid:
        return pid, out_r, err_r
    try:
        os.set_blocking(err_r, False)
        try:
            text = os.read(err_r, 65536).decode(errors="replace").strip()
        except BlockingIOError:
            text = ""
    finally:
        os.close(out_r)
        os.close(err_r)
    raise failure_from_log(runtime_log) or RuntimeFailure(
        text.splitlines()[-1] if text else f"the runtime exited with status {proc.returncode}")


def command(relay: str, pid: int, log: str, *, output: tuple[int, int] | None = None,
            master: int | None = None, stdin: int | None = None,
            clients: tuple[int, int] = (-1, -1), keep=(), then: list[str],
            check: list[str] = ()) -> list[str]:
    """The relay's argv for the process ``pid``: its output from the pipes ``output`` (stdout,
    stderr) or the terminal ``master`` (with ``stdin`` copied into it), to ``log`` and the
    attached ``clients`` (stdout, stderr; -1: none); ``keep``: file descriptors the exit
    command ``then`` (the exit code is appended to it) inherits; ``check``: the options of a
    health check (:func:`lamina.runtime.probes.relay_check`)."""
    argv = [relay, "-p", str(pid), "-l", log, *check]
    if output is not None:
        argv += ["-o", str(output[0]), "-e", str(output[1])]
    if master is not None:
        argv += ["-m", str(master)]
        if stdin is not None:
            argv += ["-i", str(stdin)]
    if clients[0] >= 0:
        argv += ["-O", str(clients[0])]
    if clients[1] >= 0:
        argv += ["-E", str(clients[1])]
    for fd in keep:
        argv += ["-k", str(fd)]
    return [*argv, "--", *then]
