"""Processes named by PID: alive or not, and which one (a PID with its start time).

Every crash-safety record of lamina names a process: a staging snapshot, a blob claim, a lease,
a container's use or its monitor. The record counts while that process lives; the next command
drops the records of dead ones. A bare PID is enough for records that last as long as one
command; a container's owner lives long enough for its PID to be reused, so it is named by PID
and start time together.
"""

import os


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts as alive) and has not
    exited: a zombie, dead but not yet reaped by its parent, holds nothing any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_time(pid) is not None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the PID, names one process.
    None when there is no such process, or it has exited (a zombie, state Z, or X): where PID 1
    does not reap orphans (some containers' inits), a killed owner stays a zombie for ever."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def same_process(pid: int, started: int | None) -> bool:
    """Whether the process that was ``pid``, started at ``started``, still runs."""
    return bool(pid) and pid > 0 and start_time(pid) == started


def find_program(name: str) -> str | None:
    """The path of the executable ``name`` (a name looked up on ``$PATH``, or a path), None
    if there is none: ``shutil.which`` for commands on the hot path, without importing shutil
    (which imports bz2, lzma and fnmatch: milliseconds of every create and run)."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or os.curdir, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
