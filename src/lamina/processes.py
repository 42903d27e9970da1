"""Processes named by PID: alive or not, and which one (a PID with its start time).

Every crash-safety record of lamina names a process: a staging snapshot, a blob claim, a lease,
a container's use or its monitor. The record counts while that process lives; the next command
drops the records of dead ones. A bare PID is enough for records that last as long as one
command; a container's owner lives long enough for its PID to be reused, so it is named by PID
and start time together.
"""

import os


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the PID, names one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def same_process(pid: int, started: int | None) -> bool:
    """Whether the process that was ``pid``, started at ``started``, still runs."""
    return bool(pid) and pid > 0 and start_time(pid) == started
