"""``lamina save|load|pull|push|login|logout``: moving images between machines.

Imported only when one of these commands runs (see ``VERBS`` in cli.main), so nothing here
weighs on ``create`` or ``ps``.
"""

import sys

from ..errors import LaminaError
from .common import UsageError, open_engine

ARGS = {
    "save": (
        ("images", "+", "IMAGE [IMAGE...]"),
        ("--compression", ("gzip", "zstd", "none"), "Compression of the layers"),
        ("--format", ("docker-archive", "oci-archive", "oci-dir"), "Format of the archive",
         "docker-archive"),
        ("-o --output", "string", "Write to a file (a directory for oci-dir), instead of STDOUT"),
        ("-q --quiet", "bool", "Suppress the progress output"),
    ),
    "load": (
        ("-i --input", "string", "Read from tar archive file, instead of STDIN"),
        ("--platform", "string",
         "Platform to load from a multi-platform archive (OS/ARCH[/VARIANT]; default linux/amd64)"),
        ("-q --quiet", "bool", "Suppress the load output"),
    ),
    "pull": (
        ("reference", None, "NAME[:TAG|@DIGEST]"),
        ("--authfile", "string", "Path of the authentication file"),
        ("--jobs", "int", "Layers to download at once (default 2)"),
        ("--platform", "string",
         "Pull this platform's image (OS/ARCH[/VARIANT]; default linux/amd64)"),
        ("-q --quiet", "bool", "Suppress verbose output; print the image ID"),
        ("--tls-verify", "string", "Require HTTPS and verify certificates: true or false"),
    ),
    "push": (
        ("image", None, "NAME[:TAG]"),
        ("destination", "?", "[DESTINATION]"),
        ("--authfile", "string", "Path of the authentication file"),
        ("--compression-format", ("gzip", "zstd", "none"), "Compression of the pushed layers"),
        ("--jobs", "int", "Layers to upload at once (default 5)"),
        ("-q --quiet", "bool", "Suppress verbose output; print the manifest digest"),
        ("--tls-verify", "string", "Require HTTPS and verify certificates: true or false"),
    ),
    "login": (
        ("server", None, "SERVER"),
        ("--authfile", "string", "Path of the authentication file"),
        ("-p --password", "string", "Password"),
        ("--password-stdin", "bool", "Take the password from stdin"),
        ("--tls-verify", "string", "Require HTTPS and verify certificates: true or false"),
        ("-u --username", "string", "Username"),
    ),
    "logout": (
        ("server", None, "SERVER"),
        ("--authfile", "string", "Path of the authentication file"),
    ),
}


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


def cmd_save(opts, a):
    engine = open_engine(opts)
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


def cmd_load(opts, a):
    engine = open_engine(opts)
    source = a.input
    if source is None or source == "-":
        if sys.stdin.isatty():
            raise LaminaError("requested load from stdin, but stdin is empty")
        source = sys.stdin.buffer
    lines = engine.load(source, _platform(a.platform), (lambda line: None) if a.quiet else _log)
    for line in lines:
        print(line)


def cmd_pull(opts, a):
    engine = open_engine(opts)
    from ..transfer.progress import make_progress

    progress = make_progress(quiet=a.quiet)
    image_id = engine.pull(a.reference, platform=_platform(a.platform),
                           tls_verify=_tls(a.tls_verify),
                           authfile=a.authfile, progress=progress, jobs=_jobs(a.jobs, 2))
    if a.quiet:
        print(image_id)


def cmd_push(opts, a):
    engine = open_engine(opts)
    from ..transfer.progress import make_progress

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


def cmd_login(opts, a):
    from ..transfer import auth

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
    auth.check_login(host, username, password, tls_verify=_tls(a.tls_verify))
    auth.store(host, username, password, a.authfile)
    print("Login Succeeded")


def cmd_logout(opts, a):
    from ..transfer import auth

    host = auth.server_key(a.server)
    if not auth.remove(host, a.authfile):
        raise LaminaError(f"not logged in to {host}")
    print(f"Removing login credentials for {host}")

