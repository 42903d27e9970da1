"""The flags of ``run`` and ``create`` that keep a container alive without a daemon: its restart
policy, its health check and ``--init`` (see :mod:`lamina.runtime.restart`,
:mod:`lamina.runtime.health`). Data and one small function: ``create`` imports this on its
hot path."""

FLAGS = (
    ("--health-cmd", "string", "Command to run to check health"),
    ("--health-interval", "duration", "Time between running the check (ms|s|m|h) (default 0s)"),
    ("--health-retries", "int", "Consecutive failures needed to report unhealthy"),
    ("--health-start-period", "duration", ("Start period for the container to initialize before "
     "starting health-retries countdown (ms|s|m|h) (default 0s)")),
    ("--health-timeout", "duration", ("Maximum time to allow one check to run (ms|s|m|h) "
     "(default 0s)")),
    ("--init", "bool", ("Run an init inside the container that forwards signals and reaps "
     "processes")),
    ("--no-healthcheck", "bool", "Disable any container-specified HEALTHCHECK"),
    ("--restart", "string", "Restart policy to apply when a container exits", "no"),
)


def given(a) -> bool:
    """Whether any of these flags was given (``create`` takes its lean path when none was)."""
    return (a.restart != "no" or a.init or a.no_healthcheck or a.health_cmd is not None or
            a.health_interval is not None or a.health_retries is not None or
            a.health_start_period is not None or a.health_timeout is not None)


def options(a) -> dict:
    """The RunConfig fields these flags set; InvalidArgument for a bad value (exit 125)."""
    if not given(a):
        return {}  # the defaults, without importing the modules that check them
    from .. import cjson
    from ..errors import InvalidArgument
    from ..runtime.health import from_flags
    from ..runtime.restart import RestartPolicy

    if a.health_retries is not None and not a.health_retries.lstrip("-").isdigit():
        raise InvalidArgument(f'invalid argument "{a.health_retries}" for "--health-retries" '
                              "flag: strconv.ParseInt: parsing "
                              f'"{a.health_retries}": invalid syntax')
    check = from_flags(a.health_cmd, a.health_interval, a.health_timeout,
                       None if a.health_retries is None else int(a.health_retries),
                       a.health_start_period, a.no_healthcheck)
    policy = RestartPolicy.parse(a.restart)
    if policy.enabled and getattr(a, "rm", False):
        raise InvalidArgument("Conflicting options: --restart and --rm")
    return {"restart": str(policy), "init": a.init,
            "healthcheck": cjson.dumps(check) if check else ""}
