#!/usr/bin/env python3
"""Rootless lamina side by side: against rootless Podman (the same user, the same machine) and
against lamina as root (overlay2).

    unshare --mount --propagation private python3 bench/rootless.py [--runs N] [--no-results]
        [--only create,run,copy_up,build,namespace,network] [--before TREE]

Run as root (it makes the user ``lamina-rootless-test`` with subordinate ranges, as the tests
do: tests/rootlessuser.py); the user's commands run with its uid, gid and no other groups.

lamina runs as installed: ``python -S bin/lamina`` (the command pyproject installs) on a
byte-compiled tree (compiled first, as scripts/setup does: an uncompiled tree costs every
command its source compilation, 0.4-0.5 s of the 0.76 s a rootless create took here under
load). Rootless Podman gets a runtime directory of its own with a short path: with an
``XDG_RUNTIME_DIR`` of 40 characters or more (39 works), its ``run --rm`` waits out conmon's
20 s exit timeout (the user's runtime directory here is 42).

What it measures (each a median of N runs, engines interleaved in every round, so a load
change hits all of them alike):

* ``create``: ``create --network none IMAGE true`` (busybox), wall time of the command.
* ``run --rm``: ``run --rm --network none IMAGE true``.
* ``copy_up 1 GiB``: the first 1-byte append to a 1 GiB file of the image in a container's
  mounted root (inside ``lamina unshare``/``podman unshare`` for the rootless engines), the
  append's own time, measured in the writing process.
* ``build``: ``build --no-cache`` of a small Dockerfile (FROM busybox, COPY, RUN, CMD).
* the interpreter's own start (``python -S -c pass``, as the user and as root), which every
  lamina row includes and Podman's Go binary does not pay (the user's interpreter is this
  one's installation bound under its home, tests/rootlessuser.py).
* the user namespace: a command (``images``) that joins the store's long-lived namespace
  against one that must make it first (the pause process killed before each), and the
  ``setns`` calls alone; and the user-mode network's set-up, pasta against slirp4netns, for a
  fresh network namespace.

With ``--before TREE`` (another lamina tree, e.g. ``git archive main | tar -x -C TREE``), that
tree's lamina runs too, rootless and as root, each on a store of its own, interleaved in the same
rounds: a before/after comparison that one load change cannot tilt; its rows are printed after
the main table (RESULTS.md is then not written).

Prints a table (medians, ratios) and rewrites its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.rootlessuser import USER, make_user  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN = "<!-- bench/rootless.py: begin generated section -->"
END = "<!-- bench/rootless.py: end generated section -->"
GiB, MiB = 1 << 30, 1 << 20

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

DOCKERFILE = """FROM busybox:latest
COPY hello.txt /hello.txt
RUN echo built > /built.txt && cat /hello.txt >> /built.txt
CMD ["cat", "/built.txt"]
"""

APPEND = ("import sys, time\n"
          "t = time.perf_counter()\n"
          "with open(sys.argv[1], 'ab') as f:\n"
          "    f.write(b'x')\n"
          "print(time.perf_counter() - t)\n")


ROWS = ("create", "run", "copy_up", "build", "namespace", "network")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def big_tar(path: str) -> None:
    """A rootfs tar with one 1 GiB file (big/file: a 1 MiB random block, 1,024 times)."""
    block = os.urandom(MiB)

    class Reader:
        left = GiB

        def read(self, size=-1):
            size = self.left if size < 0 else min(size, self.left)
            self.left -= size
            return (block * (size // MiB + 1))[:size]

    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("big")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("big/file")
        info.size, info.mode = GiB, 0o644
        tar.addfile(info, Reader())


class Engine:
    """One engine's command line: ``argv(*args)`` and how to run it (as root or as the user)."""

    def __init__(self, name: str, prefix: list[str], user=None, env: dict | None = None):
        self.name, self.prefix, self.user, self.env = name, prefix, user, env or {}

    def __call__(self, *args, check=True, timeout=600) -> subprocess.CompletedProcess:
        argv = [*self.prefix, *map(str, args)]
        if self.user is not None:
            return self.user.run(argv, check=check, env=self.env, timeout=timeout)
        env = dict(os.environ, **self.env)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr[-2000:]}")
        return proc

    def timed(self, *args) -> float:
        start = time.perf_counter()
        self(*args)
        return time.perf_counter() - start


def append_time(engine: Engine, container: str, mount_verb: str, python: str) -> float:
    """The first append to big/file in ``container``'s mounted root, timed inside; logs the
    overlay's mount options (its layer paths left out)."""
    options = ("grep \" $m \" /proc/self/mountinfo | sed 's/.* - //; s/lowerdir=[^,]*,//; "
               "s/upperdir=[^,]*,//; s/workdir=[^,]*,//'")
    if engine.user is None:  # root: mount directly
        m = engine("mount", container).stdout.strip()
        try:
            shown = subprocess.run(["sh", "-c", options], env={"m": m}, capture_output=True,
                                   text=True, check=False).stdout
            out = subprocess.run([python, "-c", APPEND, os.path.join(m, "big", "file")],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            engine("umount", container)
        log(f"{engine.name} mount: {shown.strip()}")
        return float(out)
    cli = " ".join(engine.prefix)
    script = (f"m=$({cli} {mount_verb} {container}) && {options} && "
              f"{python} -c \"$APPEND\" $m/big/file; {cli} umount {container} >/dev/null")
    out = engine.user.run([*engine.prefix, "unshare", "sh", "-c", script],
                          env={**engine.env, "APPEND": APPEND}).stdout.strip().splitlines()
    log(f"{engine.name} mount: {' '.join(out[:-1])}")
    return float(out[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--before", metavar="TREE",
                        help="a second lamina tree to run in the same rounds (before/after)")
    parser.add_argument("--only", default=",".join(ROWS),
                        help="comma-separated rows to measure (then RESULTS.md is not written)")
    options = parser.parse_args()
    options.only = set(options.only.split(","))
    if options.only - set(ROWS):
        parser.error(f"--only: rows are {', '.join(ROWS)}")
    if options.only != set(ROWS) or options.before:
        options.no_results = True
    if options.before and not os.path.isfile(os.path.join(options.before, "bin", "lamina")):
        parser.error(f"--before: no bin/lamina in {options.before}")
    if os.geteuid() != 0:
        raise SystemExit("run as root (it makes the test user), in a private mount namespace")
    work = tempfile.mkdtemp(prefix="lamina-bench-rootless-", dir="/var/tmp")
    os.chmod(work, 0o755)  # the user reads the image tars from here
    user, cleanup = make_user(USER)
    # Podman's runtime directory: short (see the docstring), the user's, 0700
    user.podman_runtime = tempfile.mkdtemp(prefix="pr-", dir="/var/tmp")
    os.chown(user.podman_runtime, user.uid, user.gid)
    for tree in (REPO, options.before) if options.before else (REPO,):
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(tree, "src")],
                       check=True, capture_output=True)
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        return run_all(options, work, user, samples)
    finally:
        try:
            user.run(["podman", "--root", os.path.join(user.home, "podman"), "rm", "-fa"],
                     check=False, env=podman_env(user))
            user.run(["podman", "unshare", "rm", "-rf", os.path.join(user.home, "podman")],
                     check=False, env=podman_env(user))
            pause = os.path.join(user.podman_runtime, "libpod", "tmp", "pause.pid")
            if os.path.exists(pause):  # rootless Podman's own pause process
                with open(pause) as f:
                    os.kill(int(f.read().strip()), 9)
        finally:
            cleanup()
            shutil.rmtree(user.podman_runtime, ignore_errors=True)
            subprocess.run(["sh", "-c", (f"grep -o ' {work}[^ ]*' /proc/self/mountinfo | sort -r"
                            " | xargs -r -n1 umount -l")], check=False)
            shutil.rmtree(work, ignore_errors=True)


def podman_env(user) -> dict:
    return {"CONTAINERS_CONF": os.path.join(user.home, "containers.conf"),
            "XDG_RUNTIME_DIR": user.podman_runtime}


def run_all(options, work: str, user, samples) -> int:
    busybox = os.path.join(work, "busybox.tar")
    subprocess.run([os.path.join(REPO, "examples", "busybox-rootfs.sh"), busybox], check=True,
                   capture_output=True)
    big = os.path.join(work, "big.tar")
    log("writing the 1 GiB image tar")
    big_tar(big)
    for path in (busybox, big):
        os.chmod(path, 0o644)
    with open(os.path.join(user.home, "containers.conf"), "w") as f:
        f.write(CONTAINERS_CONF)
    context = os.path.join(user.home, "context")
    os.mkdir(context)
    for name, text in (("Dockerfile", DOCKERFILE), ("hello.txt", "hello\n")):
        with open(os.path.join(context, name), "w") as f:
            f.write(text)
    for path in (os.path.join(user.home, "containers.conf"), context,
                 os.path.join(context, "Dockerfile"), os.path.join(context, "hello.txt")):
        os.chown(path, user.uid, user.gid)
    python = user.python
    command = os.path.join(REPO, "bin", "lamina")  # what users run: python -S, no site
    lamina = Engine("lamina rootless", [python, "-S", command], user)
    podman = Engine("podman rootless", ["podman", "--root", os.path.join(user.home, "podman"),
                                        "--storage-driver", "overlay"], user, podman_env(user))
    root_store = os.path.join(work, "root-store")
    rootful = Engine("lamina root", [sys.executable, "-S", command, "--root", root_store],
                     env={"PYTHONPATH": os.path.join(REPO, "src")})
    engines = [lamina, podman, rootful]
    if options.before:  # the other tree's lamina, each on a store of its own
        tree = os.path.abspath(options.before)
        source = os.path.join(tree, "src")
        pythonpath = user.pythonpath.replace(os.path.join(REPO, "src"), source, 1)
        engines += [Engine("lamina rootless (before)",
                           [python, "-S", os.path.join(tree, "bin", "lamina"), "--root",
                            os.path.join(user.home, "store-before")], user,
                           {"PYTHONPATH": pythonpath}),
                    Engine("lamina root (before)",
                           [sys.executable, "-S", os.path.join(tree, "bin", "lamina"), "--root",
                            os.path.join(work, "root-store-before")], env={"PYTHONPATH": source})]
    log("importing the images")
    for engine in engines:
        engine("import", busybox, "busybox:latest")
        if "copy_up" in options.only:
            engine("import", big, "big:latest")
    info = podman("info", "--format", "{{.Store.GraphDriverName}} {{.Host.RemoteSocket.Path}}")
    log(f"podman rootless driver: {info.stdout.split()[0]}")

    def sample(bench: str, engine: Engine, value: float) -> None:
        samples.setdefault((bench, engine.name), []).append(value)
        log(f"{bench} / {engine.name}: {value:.4f}")

    for round_ in range(options.runs):
        log(f"round {round_ + 1}/{options.runs}, load average {load()}")
        # each engine first, second, third... in turn: what one leaves to the disk (a deleted
        # 1 GiB upper file, its writeback) weighs on the next one alike
        turn = round_ % len(engines)
        for engine in engines[turn:] + engines[:turn]:
            name = f"bench-{round_}"
            if "create" in options.only:
                sample("create", engine, engine.timed("create", "--network", "none", "--name",
                                                      name, "busybox:latest", "true"))
                engine("rm", name)
            if "run" in options.only:
                sample("run --rm", engine, engine.timed("run", "--rm", "--network", "none",
                                                        "busybox:latest", "true"))
            if "copy_up" in options.only:
                big_name = f"big-{round_}"
                engine("create", "--network", "none", "--name", big_name, "big:latest", "true")
                sample("copy_up 1 GiB", engine, append_time(engine, big_name, "mount", python))
                engine("rm", big_name)
            if "build" in options.only:
                tag = f"bench-build:{round_}"
                sample("build", engine, engine.timed("build", "--no-cache", "--network", "none",
                                                     "-t", tag, context))
                engine("rmi", tag)
        for engine, argv in ((lamina, [python, "-S", "-c", "pass"]),
                             (rootful, [sys.executable, "-S", "-c", "pass"])):
            start = time.perf_counter()
            if engine.user is not None:
                engine.user.run(argv)
            else:
                subprocess.run(argv, check=True)
            sample("python -S -c pass", engine, time.perf_counter() - start)
    if "namespace" in options.only:
        namespace_figures(user, lamina, samples, options.runs)
    if "network" in options.only:
        network_figures(user, lamina, samples, options.runs)
    text = report(samples, options.runs, podman)
    print(text)
    if not options.no_results:
        write_results(text)
    return 0


def namespace_figures(user, lamina: Engine, samples, runs: int) -> None:
    """A command that joins the store's namespace against one that makes it first."""
    probe = ("import sys, time\n"
             "from lamina import userns\n"
             "pid = userns.pause_pid(sys.argv[1])\n"
             "t = time.perf_counter(); userns.join(pid); print(time.perf_counter() - t)\n")
    for _ in range(runs):
        lamina("images")
        start = time.perf_counter()
        lamina("images")
        samples.setdefault(("images, joining the namespace", "lamina rootless"), []).append(
            time.perf_counter() - start)
        user.stop_namespaces()
        start = time.perf_counter()
        lamina("images")
        samples.setdefault(("images, making the namespace", "lamina rootless"), []).append(
            time.perf_counter() - start)
        out = user.run([user.python, "-c", probe, user.store]).stdout
        samples.setdefault(("join: _ctypes loaded, 2 setns calls, in-process", "lamina rootless"), []).append(float(out))


def network_figures(user, lamina: Engine, samples, runs: int) -> None:
    """Set-up of a user-mode network for a fresh namespace: pasta against slirp4netns (until
    slirp4netns says it is ready on its ready pipe), both inside the store's namespace."""
    script = r'''
import os, shutil, subprocess, sys, time
from lamina.cni import create_netns, remove_netns
path = sys.argv[1]
out = []
for tool in ("pasta", "slirp4netns"):
    if not shutil.which(tool):  # pasta: apt-get install -y passt (lamina itself uses slirp4netns)
        out.append("nan")
        continue
    create_netns(path)
    t = time.perf_counter()
    if tool == "pasta":
        subprocess.run(["pasta", "--config-net", "--quiet", "--netns", path, "-t", "none",
                        "-u", "none", "-T", "none", "-U", "none"], check=True,
                       capture_output=True)
        took = time.perf_counter() - t
    else:
        r, w = os.pipe()
        p = subprocess.Popen(["slirp4netns", "--configure", "--mtu=65520", "--netns-type=path",
                              f"--ready-fd={w}", path, "tap0"], pass_fds=(w,),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        os.read(r, 1)
        took = time.perf_counter() - t
        p.kill(); p.wait()
    remove_netns(path)
    out.append(took)
print(*out)
'''
    for _ in range(runs):
        path = os.path.join(user.home, "bench-netns")
        out = lamina("unshare", user.python, "-c", script, path).stdout.split()
        for tool, value in zip(("pasta", "slirp4netns"), out):
            if value != "nan":
                samples.setdefault(("user-mode network set-up", tool), []).append(float(value))


def report(samples, runs: int, podman: Engine) -> str:
    def med(bench, engine):
        values = samples.get((bench, engine))
        return statistics.median(values) if values else None

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    def fmt(x):
        return "-" if x is None else (f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s")

    version = podman("version", "--format", "{{.Client.Version}}", check=False).stdout.strip()
    lines = [BEGIN, "", (f"## Rootless (bench/rootless.py, {runs} rounds, medians; "
             f"{time.strftime('%Y-%m-%d', time.gmtime())})"), "",
             ("`unshare --mount --propagation private python3 bench/rootless.py --runs "
             f"{runs}` as root; the rootless engines run as the user `{USER}` (subordinate "
             f"ranges from /etc/subuid). Podman {version or '?'} rootless (runc, cgroupfs, "
             "overlay, a short XDG_RUNTIME_DIR of its own), lamina rootless (overlay2 with "
             "userxattr in its store's namespace), lamina as root (overlay2); lamina as "
             "installed: `python -S bin/lamina`, byte-compiled. Engines interleaved in every "
             "round; the machine was shared with other work."), "",
             ("| work | lamina rootless | podman rootless | lamina root | rootless/podman | "
             "rootless/root |"), "|---|---|---|---|---|---|"]
    for bench in ("create", "run --rm", "copy_up 1 GiB", "build", "python -S -c pass"):
        mine, theirs, root = (med(bench, e) for e in
                              ("lamina rootless", "podman rootless", "lamina root"))
        lines.append(f"| {bench} | {fmt(mine)} | {fmt(theirs)} | {fmt(root)} | "
                     f"{ratio(mine, theirs)} | {ratio(mine, root)} |")
    lines += ["", "| the user namespace and network | median |", "|---|---|"]
    for bench, engine in (("images, joining the namespace", "lamina rootless"),
                          ("images, making the namespace", "lamina rootless"),
                          ("join: _ctypes loaded, 2 setns calls, in-process", "lamina rootless"),
                          ("user-mode network set-up", "pasta"),
                          ("user-mode network set-up", "slirp4netns")):
        label = bench if engine == "lamina rootless" else f"{bench}: {engine}"
        lines.append(f"| {label} | {fmt(med(bench, engine))} |")
    lines += ["", END]
    if any(name.endswith("(before)") for _, name in samples):
        lines += ["", f"Before (--before) and after in the same rounds, load average {load()}:", "",
                  ("| work | rootless before | rootless after | after/before | podman | "
                   "before/podman | after/podman | root before | root after | after/before |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for bench in ("create", "run --rm", "copy_up 1 GiB", "build"):
            before, after, theirs, root_before, root_after = (
                med(bench, e) for e in ("lamina rootless (before)", "lamina rootless",
                                        "podman rootless", "lamina root (before)", "lamina root"))
            if before is None:
                continue
            lines.append(f"| {bench} | {fmt(before)} | {fmt(after)} | {ratio(after, before)} | "
                         f"{fmt(theirs)} | {ratio(before, theirs)} | {ratio(after, theirs)} | "
                         f"{fmt(root_before)} | {fmt(root_after)} | "
                         f"{ratio(root_after, root_before)} |")
    return "\n".join(lines)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_results(text: str) -> None:
    with open(RESULTS) as f:
        old = f.read()
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(RESULTS, "w") as f:
        f.write(new)


if __name__ == "__main__":
    sys.exit(main())
