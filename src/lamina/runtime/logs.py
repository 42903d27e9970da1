"""The container's log: its process's output in Docker's json-file format.

The owner of a container's process (:mod:`lamina.runtime.monitor`) copies the process's
stdout/stderr through :class:`Output` to any attached file descriptors and to
``<store>/containers/<id>/container.log``, one JSON object a line (``log``, ``stream``, ``time``);
:func:`logs` reads them back.
"""

from __future__ import annotations

import os
import time

from .. import cjson
from .ownership import refresh

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from ..containers import ContainerStore

LOG_FILE = "container.log"


class Output:
    """Delivers a process's output chunks to file descriptors and a json-file log."""

    def __init__(self, stdout_fds=(), stderr_fds=(), log: str | None = None):
        self.fds = {1: list(stdout_fds), 2: list(stderr_fds)}
        self.log = open(log, "ab", buffering=0) if log else None  # noqa: SIM115 - closed by close()

    def write(self, stream: int, data: bytes) -> None:
        for fd in list(self.fds[stream]):
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                self.fds[stream].remove(fd)  # a closed reader does not stop the container
        if self.log is not None:
            stamp = _stamp(time.time())
            name = "stdout" if stream == 1 else "stderr"
            lines = data.decode("utf-8", "surrogateescape").splitlines(keepends=True)
            self.log.write("".join(
                cjson.dumps({"log": line, "stream": name, "time": stamp}) + "\n"
                for line in lines).encode())

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def entries(containers: ContainerStore, name: str, *, follow: bool = False,
            tail: int | None = None, since: float = 0, until: float = 0, stop=None):
    """The container's logged output as (stream, bytes, time text) tuples, stream 1 or 2,
    oldest first; the last ``tail`` lines only; those logged at or after ``since`` and before
    ``until`` (unix seconds, 0: no bound). With ``follow``, keep yielding until the process
    ends (or ``stop()`` says so)."""
    row = containers.get(name)
    path = os.path.join(containers.store.bundle_dir(row["id"]), LOG_FILE)
    since_text = _stamp(since) if since else ""
    until_text = _stamp(until) if until else ""

    def decode(lines):
        for line in lines:
            try:
                entry = cjson.loads(line)
            except ValueError:
                continue
            stamp = entry.get("time", "")
            if (since_text and stamp < since_text) or (until_text and stamp >= until_text):
                continue
            yield (2 if entry.get("stream") == "stderr" else 1,
                   entry["log"].encode("utf-8", "surrogateescape"), stamp)

    try:
        f = open(path, "rb")  # noqa: SIM115 - the with below
    except FileNotFoundError:
        return
    with f:
        lines = f.readlines()
        if tail is not None and tail >= 0:
            lines = lines[-tail:] if tail > 0 else []
        yield from decode(lines)
        if not follow:
            return
        partial = b""
        while True:
            chunk = f.read()
            if chunk:
                partial += chunk
                *done, partial = partial.split(b"\n")
                yield from decode(done)
                continue
            row = refresh(containers, containers.get(row["id"]))
            if row["state"] != "running" or (stop is not None and stop()):
                yield from decode((partial + f.read()).split(b"\n"))
                return
            time.sleep(0.1)


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"


def logs(containers: ContainerStore, name: str, *, follow: bool = False, tail: int | None = None,
         timestamps: bool = False, stdout: int = 1, stderr: int = 2) -> None:
    """Write the container's logged output to ``stdout``/``stderr``; with ``follow``, keep
    writing until the process ends."""
    fds = {1: stdout, 2: stderr}
    for stream, data, stamp in entries(containers, name, follow=follow, tail=tail):
        if timestamps:
            data = stamp.encode() + b" " + data
        view = memoryview(data)
        while view:
            view = view[os.write(fds[stream], view):]
