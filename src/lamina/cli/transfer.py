"""``lamina save|load|pull|push|login|logout``: moving images between machines.

Imported only when one of these commands runs (see ``cli.LAZY_COMMANDS``), so nothing here
weighs on ``create`` or ``ps``.
"""

import sys

from .main import UsageError, _engine, _parser
from ..errors import LaminaError


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _platform(value: str | None) -> tuple[str, str, str | None]:
    if not value:
        return ("linux", "amd64", None)
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {value!r}: expected OS/ARCH[/VARIANT]")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _tls(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("true", "false"):
        raise UsageError(f"invalid value {value!r} for --tls-verify (true or false)")
    return value == "true"


def cmd_save(opts, args):
    p = _parser("save")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output")
    p.add_argument("--format", default="docker-archive",
                   choices=("docker-archive", "oci-archive", "oci-dir"))
    p.add_argument("--compression", choices=("gzip", "zstd", "none"))
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(args)
    engine = _engine(opts)
    log = (lambda line: None) if a.quiet else _log
    if a.output:
        engine.save(a.images, a.output, a.format, a.compression, log)
        return
    if a.format == "oci-dir":
        raise UsageError("--format oci-dir needs -o DIR")
    if sys.stdout.isatty():
        raise LaminaError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    engine.save(a.images, sys.stdout.buffer, a.format, a.compression, log)
    sys.stdout.buffer.flush()


def cmd_load(opts, args):
    p = _parser("load")
    p.add_argument("-i", "--input")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform")
    a = p.parse_args(args)
    engine = _engine(opts)
    source = a.input
    if source is None or source == "-":
        if sys.stdin.isatty():
            raise LaminaError("requested load from stdin, but stdin is empty")
        source = sys.stdin.buffer
    lines = engine.load(source, _platform(a.platform), (lambda line: None) if a.quiet else _log)
    for line in lines:
        print(line)


def cmd_pull(opts, args):
    p = _parser("pull")
    p.add_argument("reference")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform")
    p.add_argument("--tls-verify")
    p.add_argument("--authfile")
    p.add_argument("--jobs")
    a = p.parse_args(args)
    engine = _engine(opts)
    from ..transfer.registry import make_progress

    progress = make_progress(quiet=a.quiet)
    image_id = engine.pull(a.reference, platform=_platform(a.platform),
                           tls_verify=_tls(a.tls_verify),
                           authfile=a.authfile, progress=progress, jobs=_jobs(a.jobs, 2))
    if a.quiet:
        print(image_id)


def cmd_push(opts, args):
    p = _parser("push")
    p.add_argument("image")
    p.add_argument("destination", nargs="?")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--tls-verify")
    p.add_argument("--authfile")
    p.add_argument("--compression-format", choices=("gzip", "zstd", "none"))
    p.add_argument("--jobs")
    a = p.parse_args(args)
    engine = _engine(opts)
    from ..transfer.registry import make_progress

    progress = make_progress(quiet=a.quiet)
    digest = engine.push(a.image, a.destination, tls_verify=_tls(a.tls_verify), authfile=a.authfile,
                         compression=a.compression_format, progress=progress,
                         jobs=_jobs(a.jobs, 5))
    if a.quiet:
        print(digest)


def _jobs(value, default: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"invalid value {value!r} for --jobs: a positive number")
    return n


def cmd_login(opts, args):
    p = _parser("login")
    p.add_argument("server")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--tls-verify")
    p.add_argument("--authfile")
    a = p.parse_args(args)
    from ..transfer import auth, registry

    username = a.username
    password = a.password
    if a.password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise UsageError("login needs --username (and --password or --password-stdin)")
        username = input("Username: ")
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("login needs --password or --password-stdin")
        import getpass

        password = getpass.getpass("Password: ")
    if a.password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
    host = auth.server_key(a.server)
    registry.check_login(host, username, password, tls_verify=_tls(a.tls_verify))
    auth.store(host, username, password, a.authfile)
    print("Login Succeeded")


def cmd_logout(opts, args):
    p = _parser("logout")
    p.add_argument("server")
    p.add_argument("--authfile")
    a = p.parse_args(args)
    from ..transfer import auth

    host = auth.server_key(a.server)
    if not auth.remove(host, a.authfile):
        raise LaminaError(f"not logged in to {host}")
    print(f"Removing login credentials for {host}")

