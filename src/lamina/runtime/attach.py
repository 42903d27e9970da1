"""Attaching to a running container (``lamina attach``, the Engine API's attach and exec), and
detach keys: the key sequence that ends an attached client's session without touching the
process (Docker's default ``ctrl-p,ctrl-q``).

A client's input passes through :class:`DetachKeys` on its way to the process: bytes that could
begin the sequence are held back until the next byte decides, so a completed sequence never
reaches the process and an incomplete one is passed on whole once it is broken.

:func:`attach` is the CLI's: the container's output from now on comes from its log (what its
monitor writes), its input goes into the FIFO its monitor holds for a ``-i`` container
(:func:`lamina.runtime.monitor.open_stdin`); nothing of the monitor changes while someone is
attached, so attaching and detaching cannot disturb the process.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from ..errors import FailedPrecondition, InvalidArgument, LaminaError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

DEFAULT_KEYS = "ctrl-p,ctrl-q"
# ctrl-@ is NUL, ctrl-a..ctrl-z are 1..26, then ctrl-[ ctrl-\ ctrl-] ctrl-^ ctrl-_ (27..31)
_CONTROL = "@abcdefghijklmnopqrstuvwxyz[\\]^_"
# what a non-tty attach passes on to the container (Docker's sig-proxy forwards these and more)
PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")


def parse_keys(spec: str | None) -> bytes:
    """``"ctrl-p,ctrl-q"`` -> ``b"\\x10\\x11"``; each key is one character or ``ctrl-X``.
    An empty or missing spec is Docker's default; anything else unknown is refused."""
    spec = spec or DEFAULT_KEYS
    out = bytearray()
    for key in spec.split(","):
        lowered = key.strip().lower()
        if len(key) == 1:
            out.append(ord(key))
        elif lowered.startswith("ctrl-") and len(lowered) == 6 and lowered[5] in _CONTROL:
            out.append(_CONTROL.index(lowered[5]))
        else:
            raise InvalidArgument(f"Invalid detach keys ({spec}) provided")
    if not out or any(b > 127 for b in out):
        raise InvalidArgument(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachKeys:
    """Filters a client's input: :meth:`feed` returns the bytes to pass on and whether the
    sequence was completed (then nothing after it is passed on)."""

    def __init__(self, sequence: bytes):
        self.sequence = sequence
        self.held = b""  # the input's end that is a beginning of the sequence

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        sequence = self.sequence
        for byte in data:
            held = self.held + bytes((byte,))
            if held == sequence:
                self.held = b""
                return bytes(out), True
            # keep the longest end of what is held that could still begin the sequence (a
            # broken "p p" of "p p q" may be the start of another), pass on what is before it
            keep = next((n for n in range(len(held), 0, -1) if sequence.startswith(held[-n:])), 0)
            out += held[:len(held) - keep]
            self.held = held[len(held) - keep:]
        return bytes(out), False


class Detached(LaminaError):
    """The detach keys were typed: the session ends, the container goes on (Docker's words and
    status)."""


class NotATerminal(LaminaError):
    """A terminal container's input must be a terminal (Docker's status 1)."""


def attach(containers: ContainerStore, name: str, *, stdin: int | None = 0, stdout: int = 1,
           stderr: int = 2, keys: str | None = None, sig_proxy: bool = True) -> int:
    """Attach the caller's ``stdin`` (None: none), ``stdout`` and ``stderr`` to the running
    container ``name`` until its process ends (its exit code is returned) or the detach keys
    are typed (:class:`Detached`). A terminal container gets the caller's terminal in raw
    mode; a container without one gets the signals of :data:`PROXIED` (``sig_proxy``)."""
    from .logs import entries
    from .monitor import open_stdin
    from .oci import RunConfig
    from .ownership import refresh

    sequence = parse_keys(keys)
    row = refresh(containers, containers.get(name))
    if row["state"] != "running":
        raise FailedPrecondition("You cannot attach to a stopped container, start it first")
    if row["paused"]:
        raise FailedPrecondition("You cannot attach to a paused container, unpause it first")
    config = RunConfig.from_json(row["run_config"])
    cid = row["id"]
    if not config.open_stdin:
        stdin = None
    if stdin is not None and config.tty and not os.isatty(stdin):
        raise NotATerminal("the input device is not a TTY")
    detached = threading.Event()
    pending: list[int] = []
    fifo = open_stdin(containers, cid) if stdin is not None else None
    restore = _raw(stdin) if stdin is not None and config.tty else None
    previous = {}
    if sig_proxy and not config.tty:
        for sig in PROXIED:
            number = getattr(signal, sig)
            previous[number] = signal.signal(number, lambda signum, frame: pending.append(signum))

    def forward() -> bool:
        """Send the signals caught meanwhile; whether the session should end (detached)."""
        from .lifecycle import kill

        while pending:
            try:
                kill(containers, cid, pending.pop(0))
            except LaminaError:
                pass  # it has just ended
        return detached.is_set()

    since = time.time()  # output from now on, whenever the log is opened (no race with input)
    if fifo is not None:
        threading.Thread(target=_relay, args=(stdin, fifo, DetachKeys(sequence), detached),
                         daemon=True, name="attach-stdin").start()
    try:
        for stream, data, _ in entries(containers, cid, follow=True, since=since, stop=forward):
            _write_all(stderr if stream == 2 and not config.tty else stdout, data)
            if forward():
                break
    finally:
        if restore is not None:
            restore()
        for number, handler in previous.items():
            signal.signal(number, handler)
    if detached.is_set():
        raise Detached("read escape sequence")
    from .lifecycle import wait

    return wait(containers, cid)


def _relay(stdin: int, fifo: int, keys: DetachKeys, detached: threading.Event) -> None:
    """Copy the caller's input into the container's stdin FIFO through the detach keys, until
    the input ends or the keys are typed."""
    try:
        while True:
            data = os.read(stdin, 65536)
            if not data:
                return
            data, done = keys.feed(data)
            if data:
                os.write(fifo, data)
            if done:
                detached.set()
                return
    except OSError:
        return  # the container is gone (EPIPE) or the input was closed under us
    finally:
        os.close(fifo)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _raw(fd: int):
    """Put the terminal ``fd`` in raw mode; returns what restores it."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)
