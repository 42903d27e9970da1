"""``ps --filter KEY=VALUE``: Docker's container filters over ``ps`` rows (the Engine API has its
own, with the keys its clients send)."""

from ..errors import InvalidArgument
from .common import UsageError

STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")


def parse(values: list[str]) -> dict[str, list[str]]:
    """``["status=exited", "name=web"]`` -> ``{"status": ["exited"], "name": ["web"]}``."""
    out: dict[str, list[str]] = {}
    for item in values:
        key, equals, value = item.partition("=")
        if not equals:
            raise UsageError(f'invalid argument "{item}" for "-f, --filter" flag: bad format of '
                             "filter (expected name=value)")
        out.setdefault(key.strip().lower(), []).append(value)
    for value in out.get("status", ()):
        if value not in STATES:
            raise InvalidArgument(f"Invalid filter 'status={value}'")
    for value in out.get("health", ()):
        if value not in HEALTH:
            raise InvalidArgument(f"Unrecognised filter value for health: {value}")
    return out


def _labels(row: dict) -> dict:
    from .. import cjson

    return dict(cjson.loads(row.get("RunConfig") or "{}").get("labels") or ())


_TESTS = {
    "id": lambda row, v: row["ID"].startswith(v),
    "name": lambda row, v: v.lstrip("/") in row["Names"],
    "status": lambda row, v: row["State"] == v,
    "health": lambda row, v: row.get("Health", "none") == v,
    "exited": lambda row, v: row["State"] == "exited" and str(row["ExitCode"]) == v,
    "ancestor": lambda row, v: v in (row["Image"], row["ImageID"]) or row["Image"] == v + ":latest",
}


def select(rows: list[dict], filters: dict[str, list[str]]) -> list[dict]:
    """The rows every filter key accepts (one of its values matching: Docker's OR within a key,
    AND across keys)."""
    from ..events import labels_match

    for key in filters:
        if key not in _TESTS and key != "label":
            raise InvalidArgument(f"invalid filter '{key}'")  # the daemon's word: exit 1

    def accepted(row: dict) -> bool:
        for key, wanted in filters.items():
            if key == "label":
                if not labels_match(_labels(row), wanted):
                    return False
            elif not any(_TESTS[key](row, v) for v in wanted):
                return False
        return True

    return [row for row in rows if accepted(row)]
