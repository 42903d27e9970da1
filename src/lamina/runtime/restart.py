"""Restart policies (``--restart``, the Engine API's ``HostConfig.RestartPolicy``), kept by the
container's owner (:mod:`lamina.runtime.monitor`) rather than a daemon.

``no`` (the default), ``on-failure[:N]`` (after a non-zero exit, at most N times when N is
given), ``always`` and ``unless-stopped``. Between an exit and the next start the owner waits
as Docker's restart manager does: 100 ms, doubling after each restart up to one minute, back to
100 ms once the process had run for 10 s (:class:`Backoff`). A ``stop`` or ``kill`` by the user
ends the policy for the life of that owner (Docker: the container "has been manually stopped").

Without a daemon there is no start-up of the engine to restart containers on: ``always`` and
``unless-stopped`` therefore behave alike (restart after every exit until the user stops it),
and neither brings a container back after a reboot; ``lamina start`` brings it back and resets
its ``RestartCount``, as Docker's ``start`` does.
"""

from __future__ import annotations

from ..errors import InvalidArgument
from ..records import frozen

NAMES = ("no", "on-failure", "always", "unless-stopped")
FIRST_DELAY = 0.1  # seconds before the first restart
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds of running after which the delay starts again at FIRST_DELAY


@frozen
class RestartPolicy:
    name: str = "no"
    maximum_retry_count: int = 0  # on-failure only; 0: no limit

    @classmethod
    def parse(cls, text: str | None) -> RestartPolicy:
        """``no``, ``always``, ``unless-stopped``, ``on-failure`` or ``on-failure:N``, as the
        docker CLI's ``--restart`` takes them (and as :meth:`__str__` writes them)."""
        name, colon, count = (text or "no").partition(":")
        if colon and not count.lstrip("-").isdigit():
            if ":" in count:
                raise InvalidArgument(f"invalid restart policy format: {text}")
            raise InvalidArgument("maximum retry count must be an integer")
        return cls.of(name, int(count) if colon else 0)

    @classmethod
    def of(cls, name: str | None, maximum_retry_count: int = 0) -> RestartPolicy:
        """The Engine API's ``{"Name": ..., "MaximumRetryCount": ...}``, checked as Docker
        checks it."""
        name = name or "no"
        if name not in NAMES:
            raise InvalidArgument(f"invalid restart policy '{name}'")
        if maximum_retry_count < 0:
            raise InvalidArgument("maximum retry count cannot be negative")
        if maximum_retry_count and name != "on-failure":
            raise InvalidArgument(f"maximum retry count cannot be used with restart policy "
                                  f"'{name}'")
        return cls(name, maximum_retry_count)

    def __str__(self) -> str:
        return f"{self.name}:{self.maximum_retry_count}" if self.maximum_retry_count else self.name

    def to_api(self) -> dict:
        """Docker's ``HostConfig.RestartPolicy``."""
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}

    @property
    def enabled(self) -> bool:
        return self.name != "no"

    def should_restart(self, exit_code: int, restarts: int, stopped_by_user: bool) -> bool:
        """Whether a process that exited with ``exit_code``, after ``restarts`` restarts so far,
        is started again."""
        if stopped_by_user or self.name == "no":
            return False
        if self.name == "on-failure":
            limit = self.maximum_retry_count
            return exit_code != 0 and (limit == 0 or restarts < limit)
        return True


class Backoff:
    """Docker's delay before a restart: 100 ms, doubled for each restart in a row, at most a
    minute; back to 100 ms after a run of 10 s or more."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self, ran_for: float) -> float:
        """The delay before the next start of a process that ran ``ran_for`` seconds."""
        if ran_for >= RESET_AFTER or self.delay == 0:
            self.delay = FIRST_DELAY
        else:
            self.delay = min(self.delay * 2, MAX_DELAY)
        return self.delay
