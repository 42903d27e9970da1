"""A container process's terminal (``run -t``, ``exec -t``), as Docker and conmon give one.

runc allocates the pty inside the container and hands its master end over a unix socket
(``--console-socket``, the file descriptor in an SCM_RIGHTS message); that only works when runc
detaches, so the process is no longer runc's child. lamina makes itself a *child subreaper*
first: when ``runc run --detach`` (or ``runc exec --detach``) exits, the container's process
becomes lamina's child, and lamina reaps it and reads its exit status as it would have from runc.

While the process runs, :func:`relay` copies the master's output to the caller's file
descriptors and the container's log, and the caller's input to the master. A caller that is
itself on a terminal has it put in raw mode (the container's pty does the line editing, ^C is
a byte for the container's pty to turn into SIGINT) and restored afterwards; its window size is
set on the container's pty at the start and again on every SIGWINCH.
"""

from __future__ import annotations

import os

# socket and signal are imported where they are used: ``create`` and ``start`` load this
# module for terminal_size and a console socket's path, and socket (selectors, enum) and
# tempfile (shutil, bz2, lzma, random) cost them more than the rest of their imports.

PR_SET_CHILD_SUBREAPER = 36


_subreaper = False  # set once this process has become one (it stays one for its life)


def become_subreaper() -> None:
    """Orphaned descendants (the container's process once runc detaches) become our children."""
    global _subreaper
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    _subreaper = True


def reap_later(pid: int, on_exit=None) -> None:
    """In a process that became a subreaper (a long-lived ``lamina serve`` after its first
    terminal exec), an orphan it did not start itself (a detached exec's process, a container's
    monitor) becomes its child: wait for it in a thread, so that it does not stay a zombie.
    A zombie left in a container's PID namespace would keep the container's PID 1 from ever
    finishing its exit (the kernel waits for every process of the namespace to be reaped).
    ``on_exit(code)`` then gets its exit code (128+N when killed by signal N; 255 if it was not
    our child after all, once it has gone)."""
    if not _subreaper or pid <= 0:
        return
    import threading

    def wait() -> None:
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        except ChildProcessError:  # not ours after all (it was reparented elsewhere)
            if on_exit is None:
                return
            code = 255
            try:
                gone = os.pidfd_open(pid)
            except ProcessLookupError:
                pass
            else:
                import select

                select.select([gone], [], [])
                os.close(gone)
        if on_exit is not None:
            on_exit(128 - code if code < 0 else code)

    threading.Thread(target=wait, daemon=True, name=f"reap-{pid}").start()


class ConsoleSocket:
    """A listening unix socket for runc's ``--console-socket``, in a private directory."""

    def __init__(self, ingest: str | None = None) -> None:
        # In the store's ingest/ as <pid>-console-*, which the next command removes if this
        # process is killed; in /tmp only where that path would pass a socket path's 108 bytes.
        import socket

        if ingest is not None and len(ingest) <= 70 and os.path.isdir(ingest):
            self.dir = _private_directory(ingest, f"{os.getpid()}-console-")
        else:
            self.dir = _private_directory(os.environ.get("TMPDIR") or "/tmp", "lamina-console-")
        self.path = os.path.join(self.dir, "sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)

    def receive(self, timeout: float) -> int | None:
        """The pty master runc sent, or None when nothing came within ``timeout`` seconds."""
        import socket

        self.listener.settimeout(timeout)
        try:
            conn, _ = self.listener.accept()
        except (TimeoutError, BlockingIOError):
            return None
        with conn:
            conn.settimeout(timeout)
            _message, fds, _flags, _address = socket.recv_fds(conn, 4096, 1)
        return fds[0] if fds else None

    def close(self) -> None:
        """Stop listening and remove the socket and its directory (again: nothing)."""
        self.listener.close()
        for path in (self.path, self.dir):
            try:
                (os.unlink if path == self.path else os.rmdir)(path)
            except OSError:
                pass


def _private_directory(parent: str, prefix: str) -> str:
    """A new directory ``parent/prefix<random>`` only its owner may enter, as tempfile.mkdtemp
    makes (without tempfile's imports)."""
    while True:
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def window_size(fd: int) -> bytes | None:
    """The packed ``struct winsize`` of the terminal ``fd``; None if it is not one."""
    import fcntl
    import termios

    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def set_window_size(fd: int, size: bytes | None) -> None:
    import fcntl
    import termios

    if size is not None:
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
        except OSError:
            pass


def terminal_size(*fds: int | None) -> tuple[int, ...]:
    """(height, width) of the first of ``fds`` that is a terminal; () when none is."""
    import struct

    fd = caller_terminal(*fds)
    size = window_size(fd) if fd is not None else None
    return struct.unpack("HHHH", size)[:2] if size else ()


def caller_terminal(*fds: int | None) -> int | None:
    """The first of ``fds`` that is a terminal (whose size the container's pty takes)."""
    for fd in fds:
        if isinstance(fd, int) and fd >= 0 and os.isatty(fd):
            return fd
    return None


def relay(master: int, pid: int, output, *, stdin: int | None = None,
          terminal: int | None = None, forward_signals: bool = False) -> int:
    """Copy between the pty ``master`` and the caller until the process ``pid`` (our child:
    see :func:`become_subreaper`) ends; return its exit code (128+N when killed by signal N).

    ``output.write(1, data)`` gets what the process prints (a terminal has one stream);
    ``stdin`` is copied to the process; ``terminal`` (the caller's terminal) is put in raw mode
    meanwhile and its window size follows SIGWINCH."""
    import select
    import signal
    import termios
    import tty

    saved = None
    previous: dict = {}
    if terminal is not None:
        set_window_size(master, window_size(terminal))
        if stdin is not None and os.isatty(stdin):
            saved = termios.tcgetattr(stdin)
            tty.setraw(stdin, termios.TCSANOW)

        def resize(signum, frame):
            set_window_size(master, window_size(terminal))

        try:
            previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
        except ValueError:  # not the main thread: the size stays as it was at the start
            pass
    if forward_signals:
        def forward(signum, frame):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT,
                       signal.SIGUSR1, signal.SIGUSR2):
            try:
                previous[signum] = signal.signal(signum, forward)
            except ValueError:
                break
    exited = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(master, select.POLLIN)
        poller.register(exited, select.POLLIN)
        if stdin is not None:
            poller.register(stdin, select.POLLIN)
        master_open = True
        done = False
        while not done:
            for fd, _mask in poller.poll():
                if fd == exited:
                    done = True  # what the process printed last is drained below
                elif fd == master:
                    data = _read(master)
                    if data:
                        output.write(1, data)
                    else:  # every slave end is closed (EIO)
                        poller.unregister(master)
                        master_open = False
                else:
                    data = os.read(stdin, 65536)
                    if not data or not _write_all(master, data):
                        poller.unregister(stdin)  # end of input: a pty cannot be closed
        while master_open and _readable(master):
            data = _read(master)
            if not data:
                break
            output.write(1, data)
    finally:
        os.close(exited)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # not reparented to us (no subreaper): the status is lost
        return 255
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True


def _readable(fd: int) -> bool:
    import select

    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def set_terminal_size(pid: int, height: int, width: int) -> bool:
    """Set the window size of the terminal that is the process ``pid``'s stdin (a container
    with a tty: the pty runc made for it); False when it has none."""
    import struct

    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if window_size(fd) is None:
            return False  # a pipe or /dev/null: no terminal
        set_window_size(fd, struct.pack("HHHH", height & 0xFFFF, width & 0xFFFF, 0, 0))
        return True
    finally:
        os.close(fd)
