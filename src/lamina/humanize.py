"""Docker's ways of printing sizes and ages."""

import time

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def size(n: float, precision: int = 3) -> str:
    """Bytes with base-1000 units and ``%.3g`` (``2.16MB``), as Docker prints them."""
    value = float(n)
    i = 0
    while value >= 1000 and i < len(_UNITS) - 1:
        value /= 1000
        i += 1
    return f"{value:.{precision}g}{_UNITS[i]}"


def binary_size(n: float) -> str:
    """Bytes with base-1024 units and ``%.4g`` (``308KiB``, ``23.54GiB``): Docker's BytesSize,
    what ``stats`` prints memory in."""
    value, i = float(n), 0
    while value >= 1024 and i < len(_UNITS) - 1:
        value /= 1024
        i += 1
    return f"{value:.4g}{('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB', 'ZiB', 'YiB')[i]}"


def duration(seconds: float) -> str:
    """A rough age (``2 minutes``, ``About an hour``), as Docker's HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def ago(timestamp: float) -> str:
    return duration(time.time() - timestamp) + " ago"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded like Docker's tabwriter: three spaces between, the last left unpadded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers] + rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def status(row: dict) -> str:
    """A container's STATUS as Docker words it, from a ``ps`` row: ``Created``, ``Up 5
    seconds``, ``Exited (0) 2 minutes ago``."""
    if row["State"] == "created":
        return "Created"
    if row["State"] == "exited":
        return f"Exited ({row['ExitCode']}) {ago(row.get('FinishedAt') or row['Created'])}"
    if row["State"] in ("running", "paused"):
        paused = " (Paused)" if row["State"] == "paused" else ""
        return f"Up {duration(time.time() - row['StartedAt'])}{paused}"
    return row["State"].capitalize()
