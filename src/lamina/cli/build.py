"""``lamina build``: the CLI of :mod:`lamina.builder`, with the legacy Docker builder's output."""

from __future__ import annotations

import os
import sys

from .main import UsageError, _engine, _Parser
from ..errors import NotFound


class _Repeated(_Parser):
    """``_Parser`` plus flags that may be given many times (``-t``, ``--build-arg``)."""

    REPEATED = ("-t", "--tag", "--build-arg")

    def parse_args(self, args: list[str]):
        repeated: dict[str, list[str]] = {"tag": [], "build_arg": []}
        rest: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            name, eq, value = arg.partition("=")
            if name in self.REPEATED:
                if not eq:
                    if i + 1 >= len(args):
                        self._fail(f"flag needs an argument: {name}")
                    value = args[i + 1]
                    i += 1
                repeated["build_arg" if name == "--build-arg" else "tag"].append(value)
            elif arg == "--":
                rest.extend(args[i:])
                break
            else:
                rest.append(arg)
            i += 1
        ns = super().parse_args(rest)
        ns.tag = repeated["tag"]
        ns.build_arg = repeated["build_arg"]
        return ns


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


def cmd_build(opts, args):
    p = _Repeated("build")
    p.add_argument("-f", "--file")
    p.add_argument("--target")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--pull", action="store_true")
    p.add_argument("--network", choices=("none", "host", "default"))
    p.add_argument("--check", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("context")
    p.flags.update({"-t": ("tag", False, None), "--tag": ("tag", False, None),
                    "--build-arg": ("build_arg", False, None)})
    a = p.parse_args(args)
    if a.context != "-" and not os.path.isdir(a.context):
        raise UsageError(f"unable to prepare context: path {a.context!r} not found")
    text = _read_dockerfile(a.context, a.file)
    if a.check:
        from ..builder.dockerfile import DockerfileError, check

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
    from ..builder import BuildOptions

    engine = _engine(opts)
    options = BuildOptions(context=a.context, dockerfile=text, tags=a.tag, build_args=build_args,
                           target=a.target, no_cache=a.no_cache, pull=a.pull,
                           network=a.network, quiet=a.quiet)

    def out(line: str) -> None:
        print(line, flush=True)

    image_id = engine.build(options, out=out)
    if a.quiet:
        print(image_id)
