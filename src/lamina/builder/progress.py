"""What a build prints: Docker's legacy lines (``Step 2/5 : RUN ...``), or BuildKit's
``--progress=plain`` (one numbered vertex per FROM, RUN, COPY, ADD and WORKDIR), or nothing.

Plain output, as BuildKit writes it::

    #3 [build 2/3] RUN make
    #3 0.512 compiling...
    #3 DONE 2.1s

    #4 [stage-1 1/2] FROM busybox
    #4 CACHED

Stages run in parallel write through one lock, so lines never mix; a vertex's lines may
interleave with another's, each carrying its number, as BuildKit's do.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["PROGRESS_MODES", "VERTEX_COMMANDS", "Plain"]

PROGRESS_MODES = ("auto", "plain", "tty", "quiet", "legacy")
VERTEX_COMMANDS = ("from", "run", "copy", "add", "workdir")  # the steps BuildKit shows


class Plain:
    """BuildKit's plain progress on ``out`` (a callable taking one line)."""

    def __init__(self, out) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.next = 1
        self.started: dict[int, float] = {}

    def _emit(self, *lines: str) -> None:
        with self.lock:
            for line in lines:
                self.out(line)

    def start(self, label: str) -> int:
        with self.lock:
            number = self.next
            self.next += 1
            self.started[number] = time.monotonic()
        self._emit(f"#{number} {label}")
        return number

    def log(self, number: int, line: str) -> None:
        elapsed = time.monotonic() - self.started.get(number, time.monotonic())
        self._emit(f"#{number} {elapsed:.3f} {line}")

    def status(self, number: int, text: str) -> None:
        self._emit(f"#{number} {text}")

    def cached(self, number: int) -> None:
        self._emit(f"#{number} CACHED", "")

    def done(self, number: int) -> None:
        elapsed = time.monotonic() - self.started.get(number, time.monotonic())
        self._emit(f"#{number} DONE {elapsed:.1f}s", "")

    def error(self, number: int, message: str) -> None:
        self._emit(f"#{number} ERROR: {message}", "")

    def relay(self, number: int) -> tuple[int, threading.Thread]:
        """A pipe whose lines become ``#N elapsed line``: returns (write end, reader thread);
        close the write end, then join the thread."""
        read_fd, write_fd = os.pipe()

        def pump() -> None:
            with os.fdopen(read_fd, "rb") as stream:
                for raw in stream:
                    self.log(number, raw.rstrip(b"\n").decode("utf-8", "replace"))

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return write_fd, thread


def vertex_label(stage_label: str, index: int, total: int, text: str) -> str:
    """``[build 2/3] RUN make`` (``[2/3] ...`` when the build has one stage)."""
    where = f"{stage_label} {index}/{total}" if stage_label else f"{index}/{total}"
    return f"[{where}] {text.splitlines()[0] if text else text}"
