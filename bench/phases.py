#!/usr/bin/env python3
"""Where one lamina command spends its time: runs the command (lamina.cli.main, as bin/lamina
does) in this interpreter with the functions below timed as their modules load, and prints to
stderr, when the command leaves, each call's start (ms since this script started, i.e. after
the interpreter's own start) and duration, nested calls indented.

    PYTHONPATH=src python3 -S bench/phases.py [--wrap MODULE:QUALNAME ...] -- LAMINA-ARGS...

For example, as the rootless test user: ``python -S bench/phases.py -- create --network none
busybox true`` (bench/RESULTS.md, "Rootless create: where the time went"). A function is
wrapped right after its module has run, before any other module imports it by name, so
``from .x import f`` elsewhere gets the timed one. The wrapping itself loads importlib.util
(about 1 ms, counted before the first phase). Figures, not checks: nothing here asserts.
"""

import os
import sys
import time

START = time.perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__))
WRAP = {
    "lamina.cli.main": ["_verb", "enter_namespace"],
    "lamina.cli.common": ["open_engine"],
    "lamina.cli.containers": ["cmd_create"],
    "lamina.cli.run": ["run_config", "cmd_run"],
    "lamina.runtime.creation": ["create"],
    "lamina.runtime.control": ["settle_limits"],
    "lamina.runtime.ownership": ["record", "release"],
    "lamina.images": ["ImageStore.config", "ImageStore.resolve"],
    "lamina.containers": ["ContainerStore.create"],
    "lamina.store": ["guard", "Store.__init__"],
    "lamina.userns": ["enter", "join", "state_file", "_alive_namespace"],
}
calls: list[tuple[float, float, int, str]] = []
depth = [0]


def wrap(module, qualname: str) -> None:
    owner = module
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    function = getattr(owner, name, None)
    if function is None:  # not in this tree (an older one, say)
        return
    label = f"{module.__name__.removeprefix('lamina.')}.{qualname}"

    def timed(*args, **kwargs):
        began = time.perf_counter()
        depth[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
            calls.append((began - START, time.perf_counter() - began, depth[0], label))

    setattr(owner, name, timed)


class Finder:
    """Finds the modules of WRAP as usual, and wraps their functions once they have run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WRAP:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for qualname in WRAP[fullname]:
                wrap(module, qualname)

        spec.loader.exec_module = exec_module
        return spec


def report(status: int) -> None:
    """lamina leaves through os._exit (no atexit): print the calls, then leave."""
    lines = [f"{'start':>8} {'took':>7}  ms"]
    for began, took, level, label in sorted(calls):
        lines.append(f"{began * 1000:8.2f} {took * 1000:7.2f}  {'  ' * level}{label}")
    lines.append(f"{(time.perf_counter() - START) * 1000:8.2f}          exit")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    leave(status)


args = sys.argv[1:]
while args and args[0] == "--wrap":
    module_name, _, qualname = args[1].partition(":")
    WRAP.setdefault(module_name, []).append(qualname)
    args = args[2:]
if args[:1] == ["--"]:
    args = args[1:]
sys.meta_path.insert(0, Finder())
leave = os._exit
os._exit = report
sys.argv = [os.path.join(os.path.dirname(HERE), "bin", "lamina"), *args]
from lamina.cli.main import main  # noqa: E402 - after the finder is in place

main()
