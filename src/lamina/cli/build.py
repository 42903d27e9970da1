"""``lamina build``: the CLI of :mod:`lamina.builder`, with the legacy Docker builder's output."""

from __future__ import annotations

import os
import sys

from ..errors import NotFound
from .common import UsageError, confirm, open_engine, reclaimed

ARGS = {
    "build": (
        ("context", None, "PATH"),
        ("--add-host", "list", "Add a custom host-to-IP mapping (host:ip) for RUN"),
        ("--build-arg", "list", "Set a build-time variable (NAME=VALUE; NAME: from the env)"),
        ("--cache-from", "list", "Cache source: type=local,src=DIR, type=registry,ref=REF or REF"),
        ("--cache-to", "list", "Cache destination: type=local|registry|inline (dest=, ref=, mode=)"),
        ("--check", "bool", "Only check the Dockerfile, build nothing"),
        ("-f --file", "string", "Name of the Dockerfile (default PATH/Dockerfile; '-': STDIN)"),
        ("--network", ("none", "host", "default"), "Network of RUN instructions ('default': host)"),
        ("--no-cache", "bool", "Do not use cache when building the image"),
        ("--pull", "bool", "Always attempt to pull a newer version of the image"),
        ("-o --output", "string", "type=local|tar,dest=PATH: files, no image; type=oci|docker"),
        ("--progress", ("auto", "plain", "tty", "quiet"),
         "BuildKit's steps: plain, tty (live), auto (tty on a terminal); none: Docker's lines"),
        ("-q --quiet", "bool", "Suppress the build output and print image ID on success"),
        ("--secret", "list", "Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR"),
        ("-t --tag", "list", "Name and optionally a tag (NAME[:TAG]); may be repeated"),
        ("--target", "string", "Set the target build stage to build"),
    ),
}


def _read_dockerfile(context: str, name: str | None) -> str | bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = name or os.path.join(context, "Dockerfile")
    if name and not os.path.isabs(name) and not os.path.exists(name):
        path = os.path.join(context, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise NotFound(f"unable to prepare context: unable to evaluate symlinks in Dockerfile "
                       f"path: lstat {os.path.abspath(path)}: no such file or directory") from None


def parse_secret(text: str) -> tuple[str, tuple[str, str]]:
    """``id=ID,src=FILE`` / ``id=ID,env=VAR`` (``type=file|env``, ``source=``) as buildx reads
    them: (id, ("file", path) or ("env", name)). Only a file's path is kept, never its bytes."""
    fields = {}
    for field in text.split(","):
        key, eq, value = field.partition("=")
        if not eq or key not in ("id", "src", "source", "env", "type"):
            raise UsageError(f"invalid secret {text!r}: unexpected key {key!r}")
        fields[key] = value
    secret_id = fields.get("id")
    if not secret_id:
        raise UsageError(f"invalid secret {text!r}: it needs an id=")
    path = fields.get("src") or fields.get("source")
    kind = fields.get("type") or ("env" if "env" in fields and not path else "file")
    if kind == "env":
        name = fields.get("env") or path or secret_id
        if name not in os.environ:
            raise UsageError(f"secret {secret_id}: environment variable {name} is not set")
        return secret_id, ("env", name)
    if not path:
        if secret_id in os.environ:
            return secret_id, ("env", secret_id)
        raise UsageError(f"invalid secret {text!r}: it needs src=FILE or env=VAR")
    if not os.path.isfile(path):
        raise UsageError(f"secret {secret_id}: {path}: no such file")
    return secret_id, ("file", os.path.abspath(path))


def _progress_mode(flag: str | None) -> str:
    """No flag: Docker's legacy lines; ``auto``: BuildKit's live view on a terminal, its plain
    log elsewhere (as ``docker buildx build --progress=auto``)."""
    if flag is None:
        return "legacy"
    if flag == "auto":
        return "tty" if sys.stdout.isatty() else "plain"
    return flag


def cmd_build(opts, a):
    if a.context != "-" and not os.path.isdir(a.context):
        raise UsageError(f"unable to prepare context: path {a.context!r} not found")
    text = _read_dockerfile(a.context, a.file)
    if a.check:
        from ..builder.dockerfile import DockerfileError
        from ..builder.plan import check

        try:
            check(text)
        except DockerfileError as error:
            print(error, file=sys.stderr)
            sys.stdout.flush()
            os._exit(1)
        return
    build_args = {}
    for item in a.build_arg:
        key, eq, value = item.partition("=")
        if not eq:  # --build-arg NAME takes the value from the environment, as Docker's
            if key not in os.environ:
                continue
            value = os.environ[key]
        build_args[key] = value
    secrets = dict(parse_secret(item) for item in a.secret)
    output = None
    if a.output:
        from ..builder.output import parse_output

        output = parse_output(a.output)
        if output == ("tar", "-"):
            a.quiet = True  # stdout is the tar
    from ..builder import BuildOptions
    from ..runtime.oci import parse_extra_host

    cache_to = cache_from = ()
    if a.cache_to or a.cache_from:
        from ..builder.remotecache import parse_cache_spec

        cache_to = tuple(parse_cache_spec(item, export=True) for item in a.cache_to)
        cache_from = tuple(parse_cache_spec(item, export=False) for item in a.cache_from)

    extra_hosts = tuple(parse_extra_host(item) for item in a.add_host)
    engine = open_engine(opts)
    options = BuildOptions(context=a.context, dockerfile=text, tags=a.tag, build_args=build_args,
                           target=a.target, no_cache=a.no_cache, pull=a.pull,
                           network=a.network, quiet=a.quiet, secrets=secrets, output=output,
                           extra_hosts=extra_hosts, cache_to=cache_to, cache_from=cache_from,
                           progress=_progress_mode(a.progress))

    def out(line: str) -> None:
        print(line, flush=True)

    image_id = engine.build(options, out=out)
    if a.quiet and output != ("tar", "-"):
        print(image_id)


ARGS["builder prune"] = (("-f --force", "bool", "Do not prompt for confirmation"),)


def cmd_builder_prune(opts, a):
    if not confirm(a.force, "  - all dangling build cache"):
        return
    engine = open_engine(opts)
    deleted, size = engine.prune_build_cache()
    if deleted:
        print("Deleted build cache objects:\n" + "\n".join(i[7:] for i in deleted))
    reclaimed(size)
