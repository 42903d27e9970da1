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

On a terminal (``--progress=tty``, or ``auto`` when stdout is one), :class:`Tty` draws BuildKit's
live view instead: a block redrawn ten times a second, a header with the build's time and the
steps done, a line per step with its timer (``CACHED`` and ``ERROR`` in front where they apply),
and under a running step the last lines of its output. At the end the block is drawn once more,
whole and without the running steps' output: BuildKit's final screen (``FINISHED``), followed by
the output of a step that failed.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["PROGRESS_MODES", "VERTEX_COMMANDS", "Plain", "Tty"]

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

    def close(self, failed: bool = False) -> None:
        """The build ended (``failed``: with an error); nothing more is drawn."""

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


class _Vertex:
    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.end: float | None = None
        self.state = "running"  # running, done, cached, error
        self.statuses: list[str] = []
        self.logs: list[str] = []


class Tty(Plain):
    """BuildKit's live view on the terminal ``stream`` (see the module's docstring)."""

    TAIL = 6  # output lines shown under a running step
    ERROR_TAIL = 20  # output lines of a failed step shown at the end

    def __init__(self, stream, size: tuple[int, int] | None = None) -> None:
        super().__init__(lambda line: None)
        self.stream = stream
        self.size = size
        self.vertices: dict[int, _Vertex] = {}
        self.begun = time.monotonic()
        self.drawn = 0  # lines of the block now on the screen
        self.ended = threading.Event()
        self.ticker: threading.Thread | None = None

    # the executor's calls
    def start(self, label: str) -> int:
        with self.lock:
            number = self.next
            self.next += 1
            self.vertices[number] = _Vertex(label)
            self._draw()
        if self.ticker is None:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()
        return number

    def log(self, number: int, line: str) -> None:
        with self.lock:
            vertex = self.vertices.get(number)
            if vertex is not None:
                vertex.logs.append(line)
                del vertex.logs[:-self.ERROR_TAIL]

    def status(self, number: int, text: str) -> None:
        with self.lock:
            vertex = self.vertices.get(number)
            if vertex is not None:
                vertex.statuses.append(text)
                self._draw()

    def _finish(self, number: int, state: str) -> None:
        with self.lock:
            vertex = self.vertices.get(number)
            if vertex is not None:
                vertex.state, vertex.end = state, time.monotonic()
                self._draw()

    def cached(self, number: int) -> None:
        self._finish(number, "cached")

    def done(self, number: int) -> None:
        self._finish(number, "done")

    def error(self, number: int, message: str) -> None:
        self._finish(number, "error")  # the message: the CLI's error line, after the screen

    def close(self, failed: bool = False) -> None:
        self.ended.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._draw(final=True, failed=failed)
            for vertex in self.vertices.values():
                if vertex.state == "error" and vertex.logs:
                    self.stream.write("------\n > " + vertex.label + ":\n" + "".join(
                        f"{line}\n" for line in vertex.logs) + "------\n")
            self.stream.flush()

    # drawing
    def _tick(self) -> None:
        while not self.ended.wait(0.1):
            with self.lock:
                if any(v.state == "running" for v in self.vertices.values()):
                    self._draw()

    def _lines(self, width: int, final: bool, failed: bool) -> list[str]:
        now = time.monotonic()
        finished = sum(v.state != "running" for v in self.vertices.values())
        header = f"[+] Building {now - self.begun:.1f}s ({finished}/{len(self.vertices)})"
        if final:
            header += " ERROR" if failed else " FINISHED"
        lines = [header]

        def row(text: str, seconds: float | None) -> str:
            timer = f" {seconds:.1f}s" if seconds is not None else ""
            room = max(width - len(timer) - 1, 8)
            text = text if len(text) <= room else text[:room - 3] + "..."
            return text.ljust(room) + timer

        for vertex in self.vertices.values():
            prefix = {"cached": "CACHED ", "error": "ERROR "}.get(vertex.state, "")
            seconds = 0.0 if vertex.state == "cached" else (vertex.end or now) - vertex.start
            lines.append(row(f" => {prefix}{vertex.label}", seconds))
            lines += [row(f" => => {text}", None) for text in vertex.statuses]
            if vertex.state == "running" and not final:
                lines += [row(f" => => # {line}", None) for line in vertex.logs[-self.TAIL:]]
        return lines

    def _draw(self, final: bool = False, failed: bool = False) -> None:
        """Inside the lock: the block again, over the one drawn before."""
        import shutil

        width, height = self.size or shutil.get_terminal_size()
        width -= 1  # a full line would leave some terminals waiting to wrap
        lines = self._lines(width, final, failed)
        if not final and len(lines) > height - 1:  # what fits: the header and the newest rows
            lines = [lines[0]] + lines[len(lines) - height + 2:]
        up = f"\x1b[{self.drawn}A" if self.drawn else ""
        self.stream.write("\r" + up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)


def vertex_label(stage_label: str, index: int, total: int, text: str) -> str:
    """``[build 2/3] RUN make`` (``[2/3] ...`` when the build has one stage)."""
    where = f"{stage_label} {index}/{total}" if stage_label else f"{index}/{total}"
    return f"[{where}] {text.splitlines()[0] if text else text}"
