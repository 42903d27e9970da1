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
    seconds``, ``Up 2 minutes (healthy)``, ``Restarting (1) 1 second ago``, ``Exited (0) 2
    minutes ago``."""
    if row["State"] == "created":
        return "Created"
    if row["State"] == "exited":
        return f"Exited ({row['ExitCode']}) {ago(row.get('FinishedAt') or row['Created'])}"
    if row["State"] in ("running", "paused"):
        paused = " (Paused)" if row["State"] == "paused" else ""
        health = {"starting": " (health: starting)", "healthy": " (healthy)",
                  "unhealthy": " (unhealthy)"}.get(row.get("Health"), "")
        return f"Up {duration(time.time() - row['StartedAt'])}{paused}{health}"
    if row["State"] == "restarting":
        return f"Restarting ({row['ExitCode']}) {ago(row.get('FinishedAt') or row['Created'])}"
    return row["State"].capitalize()


_GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                      "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``1h30m``, ``500ms``, ``0``) in seconds; ValueError if malformed."""
    import json
    import re

    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"time: invalid duration {json.dumps(text)}")
    total = 0.0
    position = 0
    while position < len(body):
        match = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)").match(body, position)
        if match is None:
            raise ValueError(f"time: invalid duration {json.dumps(text)}")
        total += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    return -total if text.startswith("-") else total


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` for whole and fractional seconds."""
    if seconds == 0:
        return "0s"
    ns = round(seconds * 1e9)
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:g}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:g}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs
