"""What a pull or push shows while it works: nothing (:class:`Silent`), Docker's plain log of
status lines when stdout is not a terminal, or a progress bar per layer (rich) on a terminal;
:func:`make_progress` picks one. Every kind has the same five methods (add, advance, status,
message, close), called from the transfer's threads."""

from __future__ import annotations

import sys
import threading

from ..digest import hex_of


def layer_key(digest: str) -> str:
    """The name a blob shows under in the progress display: its digest's first 12 hex digits,
    as Docker prints them."""
    return hex_of(digest)[:12]


class Silent:
    """Shows nothing (``--quiet``, and the default of the Python API)."""

    def add(self, key: str, total: int, status: str) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def status(self, key: str, text: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _PlainLog(Silent):
    """Docker's output when stdout is not a terminal: one line per layer status change."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self._lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def add(self, key, total, status):
        self._print(f"{key}: {status}")

    def status(self, key, text):
        self._print(f"{key}: {text}")

    def message(self, text):
        self._print(text)


class _Bars(_PlainLog):
    """A progress bar per layer (rich), for terminals."""

    def __init__(self):
        super().__init__()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), transient=False)
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def add(self, key, total, status):
        self.tasks[key] = self.progress.add_task(f"{key}: {status}", total=total or None)

    def advance(self, key, n):
        if key in self.tasks:
            self.progress.advance(self.tasks[key], n)

    def status(self, key, text):
        if key in self.tasks:
            task = self.tasks[key]
            done = (text.endswith("complete") or text.startswith("Mounted")
                    or text in ("Pushed", "Layer already exists", "Already exists"))
            kwargs = {"completed": self.progress.tasks[task].total} if done and \
                self.progress.tasks[task].total else {}
            self.progress.update(task, description=f"{key}: {text}", **kwargs)

    def message(self, text):
        self.progress.console.print(text, highlight=False)

    def close(self):
        self.progress.stop()


def make_progress(quiet: bool = False):
    """Bars on a terminal, Docker's plain log otherwise, nothing when ``quiet``."""
    if quiet:
        return Silent()
    if sys.stdout.isatty():
        try:
            return _Bars()
        except ImportError:
            pass
    return _PlainLog()
