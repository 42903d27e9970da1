"""Health checks: the image's ``HEALTHCHECK``, ``--health-*`` on run and create, the Engine API's
``Config.Healthcheck``; run by the container's owner (:mod:`lamina.runtime.monitor`) as an exec
in the container, with Docker's semantics.

A check is Docker's ``HealthConfig``: ``Test`` (``["CMD", argv...]``, ``["CMD-SHELL", line]``,
``["NONE"]``; empty: the image's), ``Interval``, ``Timeout``, ``StartPeriod`` in nanoseconds and
``Retries`` (0: the defaults, 30 s, 30 s, 0 and 3). The first probe runs one interval after the
start, then one every interval. A probe that exits 0 makes the container ``healthy`` and ends
the failing streak; any other result (an exit code, a timeout: ``-1``) adds to the streak, except
while the container is still ``starting`` within its start period, and ``Retries`` failures in a
row make it ``unhealthy``. The last five probes are kept (``Log``: Start, End, ExitCode, Output:
the first 4096 bytes, with ``...`` after them when there were more). Each change of status is a
``health_status: STATUS`` event. On every (re)start the status is ``starting`` again and the
streak 0; the log is kept.

The state lives in the container's run state (:mod:`lamina.runstate`), where ``ps`` and
``inspect`` read it. A relayed container's probes are run by ``lamina-relay`` itself
(``relay.c``, which applies these same rules: :func:`lamina.runtime.probes.relay_check`);
a Python owner's, by :class:`HealthMonitor`, a thread of the owner that sleeps between probes
(no polling): one ``runc exec`` per interval is its whole cost.
"""

from __future__ import annotations

import os
import time

from .. import cjson
from ..errors import InvalidArgument
from ..humanize import go_duration, parse_duration
from ..runstate import MAX_LOG_ENTRIES

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096
MINIMUM = 0.001  # seconds: Docker refuses a non-zero interval, timeout or start period below it
_NS = 1_000_000_000


def duration_flag(flag: str, value: str | None) -> int:
    """A ``--health-*`` duration (Go syntax: ``1s``, ``500ms``, ``1m30s``) in nanoseconds."""
    if value is None:
        return 0
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise InvalidArgument(f'invalid argument "{value}" for "{flag}" flag: {e}') from None
    if seconds < 0:
        raise InvalidArgument(f"{flag} cannot be negative")
    return round(seconds * _NS)


def from_flags(cmd: str | None = None, interval: str | None = None, timeout: str | None = None,
               retries: int | None = None, start_period: str | None = None,
               disabled: bool = False) -> dict | None:
    """The check that ``--health-cmd`` and friends ask for, as the docker CLI builds it; None
    when none of them was given (the image's stays)."""
    given = cmd is not None or interval is not None or timeout is not None or \
        retries is not None or start_period is not None
    if disabled:
        if given:
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    if retries is not None and retries < 0:
        raise InvalidArgument("--health-retries cannot be negative")
    check = {"Test": ["CMD-SHELL", cmd] if cmd else [],
             "Interval": duration_flag("--health-interval", interval),
             "Timeout": duration_flag("--health-timeout", timeout),
             "StartPeriod": duration_flag("--health-start-period", start_period),
             "Retries": retries or 0}
    return {key: value for key, value in check.items() if value}  # Docker's omitempty


def validate(check: dict | None) -> None:
    """Docker's checks of an Engine API ``Config.Healthcheck``."""
    if not check:
        return
    if not isinstance(check, dict):
        raise InvalidArgument("Healthcheck must be an object")
    test = check.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(word, str) for word in test):
        raise InvalidArgument("Healthcheck.Test must be a list of strings")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidArgument(f"unknown healthcheck type {test[0]!r} (want NONE, CMD or CMD-SHELL)")
    for key in ("Interval", "Timeout", "StartPeriod"):
        value = check.get(key) or 0
        if not isinstance(value, int):
            raise InvalidArgument(f"Healthcheck.{key} must be an integer of nanoseconds")
        if value and value < MINIMUM * _NS:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than 1ms")
    retries = check.get("Retries") or 0
    if not isinstance(retries, int) or retries < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")


def merge(image: dict | None, user: dict | None) -> dict | None:
    """The container's check: the user's, with what it leaves empty (zero) taken from the
    image's, as Docker merges them at create."""
    if not user:
        return dict(image) if image else None
    merged = dict(user)
    if image:
        if not merged.get("Test"):
            merged["Test"] = image.get("Test") or []
        for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
            if not merged.get(key) and image.get(key):
                merged[key] = image[key]
    return merged


class Probe:
    """An active check: the argv to run in the container and its timing (seconds)."""

    def __init__(self, argv: list[str], check: dict):
        self.argv = argv
        self.interval = (check.get("Interval") or 0) / _NS or DEFAULT_INTERVAL
        self.timeout = (check.get("Timeout") or 0) / _NS or DEFAULT_TIMEOUT
        self.start_period = (check.get("StartPeriod") or 0) / _NS
        self.retries = check.get("Retries") or DEFAULT_RETRIES


def probe_of(check_json: str, image_config: dict) -> Probe | None:
    """The probe of a container whose check is ``check_json`` (its RunConfig's, the image's
    already merged in at create); None when it has none or ``NONE``."""
    check = cjson.loads(check_json) if check_json else image_config.get("Healthcheck")
    test = (check or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        shell = image_config.get("Shell") or ["/bin/sh", "-c"]
        argv = list(shell) + list(test[1:])
    else:
        argv = list(test[1:])
    if not argv:
        return None
    return Probe(argv, check)


def initial(previous: dict | None) -> dict:
    """The health at a (re)start: ``starting``, no failures, the log kept (Docker's)."""
    log = list((previous or {}).get("Log") or [])
    return {"Status": "starting", "FailingStreak": 0, "Log": log}


def record(health: dict, probe: Probe, result: dict, started: float) -> str | None:
    """Add ``result`` (a Log entry; ``start`` its time in seconds) to ``health``; the new status
    when it changed, else None."""
    before = health["Status"]
    health["Log"] = (health.get("Log") or [])[-(MAX_LOG_ENTRIES - 1):] + [result["entry"]]
    if result["entry"]["ExitCode"] == 0:
        health["FailingStreak"] = 0
        health["Status"] = "healthy"
    elif not (before == "starting" and result["start"] - started < probe.start_period):
        health["FailingStreak"] = health.get("FailingStreak", 0) + 1
        if health["FailingStreak"] >= probe.retries:
            health["Status"] = "unhealthy"
    return health["Status"] if health["Status"] != before else None


def timed_out(timeout: float) -> str:
    """Docker's output of a probe that ran past its timeout."""
    return f"Health check exceeded timeout ({go_duration(timeout)})"


class HealthMonitor:
    """The thread that runs ``probe`` every interval while the container's process runs.

    ``run_probe(argv, timeout)`` runs one probe and returns ``(exit code, output)``;
    ``update(change)`` applies ``change(health)`` to the owner's run state under its lock and
    saves it; ``on_status(status)`` is told each new status (the event)."""

    def __init__(self, probe: Probe, run_probe, update, on_status, started: float,
                 alive=None):
        self.alive = alive  # () -> whether the container's process still runs
        self.probe = probe
        self.run_probe = run_probe
        self.update = update
        self.on_status = on_status
        self.started = started
        import threading  # here: every run imports this module, few have a health check

        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="health", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """End the loop (a probe under way is waited for, at most its timeout)."""
        import threading

        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(self.probe.timeout + 5)

    def _loop(self) -> None:
        from ..image import rfc3339

        while not self.stopping.wait(self.probe.interval):
            start = time.time()
            try:
                code, output = self.run_probe(self.probe.argv, self.probe.timeout)
            except Exception as e:  # noqa: BLE001 - a probe that cannot run is a failed one
                code, output = -1, str(e)
            if self.stopping.is_set() or (code != 0 and self.alive is not None
                                          and not self.alive()):
                return  # the process ended meanwhile: its exit decides, not this probe
            end = time.time()
            entry = {"Start": rfc3339(start), "End": rfc3339(end), "ExitCode": code,
                     "Output": output}
            status = self._record(entry, start)
            if status:
                self.on_status(status)

    def _record(self, entry: dict, start: float) -> str | None:
        changed = []
        self.update(lambda health: changed.append(
            record(health, self.probe, {"entry": entry, "start": start}, self.started)))
        return changed[0] if changed else None


def exec_probe(runtime, container_id: str, bundle: str, process: dict, argv: list[str],
               timeout: float) -> tuple[int, str]:
    """Run ``argv`` in the running container as ``runc exec`` with the container's user, env
    and working directory (``process``, the spec's process of the container); its exit code and
    output as Docker keeps it (:func:`limited`). Past ``timeout`` the probe is killed and the
    result is Docker's ``-1``."""
    from .oci import failure_from_log

    tag = os.urandom(6).hex()
    paths = {name: os.path.join(bundle, f"health-{tag}.{name}") for name in ("json", "pid", "log")}
    with open(paths["json"], "w") as f:
        cjson.dump({**process, "args": list(argv), "terminal": False}, f)
    try:
        code, output = _spawn_and_read(
            runtime.command("exec", "--process", paths["json"], "--pid-file", paths["pid"],
                            container_id, log=paths["log"]), timeout, paths["pid"])
        if code is None:
            return -1, timed_out(timeout)
        if not os.path.exists(paths["pid"]):  # runc never started it
            failure = failure_from_log(paths["log"])
            return -1, str(failure) if failure else limited(output)
        return code, limited(output)
    finally:
        for path in paths.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def limited(output: bytes) -> str:
    """A probe's output as Docker's health log keeps it: the first :data:`MAX_OUTPUT` bytes
    (what is not UTF-8 replaced, as Go's JSON does), ``...`` after them when there was more."""
    kept = output[:MAX_OUTPUT].decode(errors="replace")
    return kept + "..." if len(output) > MAX_OUTPUT else kept


def _spawn_and_read(command: list[str], timeout: float, pid_file: str) -> tuple[int | None, bytes]:
    """Run ``command`` with no input and its stdout and stderr into one pipe; (its exit status,
    as subprocess gives it, and what it wrote), or (None, what it wrote) when it was still
    running after ``timeout`` seconds: then the process named in ``pid_file`` (the probe in the
    container) and the command itself are killed, and the command is waited for."""
    import select
    import signal

    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.posix_spawnp(command[0], command, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, write_end, 1),
            (os.POSIX_SPAWN_DUP2, write_end, 2)], setsigmask=(),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # as a fresh process has them
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
        os.close(devnull)
    chunks = []
    deadline = time.monotonic() + timeout
    timed_out_ = False
    try:
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and not timed_out_:
                # the probe's process, and runc, which may be waiting only for what holds the
                # output open (a background child of the probe): it copies it to its end
                timed_out_ = True
                try:
                    with open(pid_file) as f:
                        target = int(f.read().strip() or 0)
                    if target > 0:
                        os.kill(target, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
                os.kill(pid, signal.SIGKILL)
            if not poller.poll(None if timed_out_ else max(1, int(left * 1000) + 1)):
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    status = os.waitpid(pid, 0)[1]
    if timed_out_:
        return None, b"".join(chunks)
    code = os.waitstatus_to_exitcode(status)  # -N for a signal, as subprocess's returncode
    return code, b"".join(chunks)
