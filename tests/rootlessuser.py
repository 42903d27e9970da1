"""A real unprivileged user for the rootless tests, made by the test set-up (the tests run as root).
The fixture ``rootless_user`` is registered in tests/conftest.py for every test module:

    def test_x(rootless_user):
        rootless_user.lamina("images")            # python -m lamina as that user, its own store
        rootless_user.run(["id", "-u"])            # any command as that user

The user ``lamina-rootless-test`` is created with ``useradd`` (if missing) and given subordinate
uid and gid ranges in ``/etc/subuid`` and ``/etc/subgid``; each session gets a fresh home under
/var/tmp (so a fresh store, ``~/.local/share/lamina``) and a runtime directory (its
``XDG_RUNTIME_DIR``). Commands run with the user's uid, gid and no other groups, through
``subprocess``'s ``user=``/``group=`` (no PAM, no login session: like a cron job's or ``su``'s).
At the end the pause processes of the user's namespaces are killed and the home is removed.
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = "lamina-rootless-test"
SUB_START, SUB_COUNT = 300000, 65536


def ensure_user(name: str, subordinate: bool = True) -> pwd.struct_passwd:
    """The user ``name``, made if missing, with (or without) subordinate id ranges."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/bin/sh", name], check=True)
        entry = pwd.getpwnam(name)
    for kind, flag, drop in (("uid", "--add-subuids", "--del-subuids"),
                             ("gid", "--add-subgids", "--del-subgids")):
        if not os.path.exists(f"/etc/sub{kind}"):  # a fresh machine may have neither file
            os.close(os.open(f"/etc/sub{kind}", os.O_WRONLY | os.O_CREAT, 0o644))
        try:
            with open(f"/etc/sub{kind}") as f:
                rows = [line.split(":") for line in f.read().splitlines()]
        except FileNotFoundError:
            rows = []
        mine = [r for r in rows if r[0] in (name, str(entry.pw_uid)) and len(r) == 3]
        if subordinate and not mine:
            start = SUB_START + (entry.pw_uid % 100) * SUB_COUNT
            subprocess.run(["usermod", flag, f"{start}-{start + SUB_COUNT - 1}", name], check=True)
        elif not subordinate:
            for _, start, count in mine:
                subprocess.run(["usermod", drop, f"{start}-{int(start) + int(count) - 1}", name],
                               check=True)
    return entry


def subordinate_start(name: str, kind: str = "uid") -> int:
    with open(f"/etc/sub{kind}") as f:
        for line in f:
            fields = line.strip().split(":")
            if fields[0] == name:
                return int(fields[1])
    raise LookupError(name)


def python_for(uid: int, gid: int, scratch: str) -> tuple[str, list[str]]:
    """An interpreter the user can run with lamina's dependencies, and the directories of
    those to add to its path: this one, or (when it lives where the user cannot enter, as a
    pyenv under /root) this one's installation bound read-only at ``scratch`` (the tests run in
    a private mount namespace, which the user's commands share); its libpython is then found
    through LD_LIBRARY_PATH (see :class:`User`), not the binary's RPATH under /root."""
    import site

    try:
        probe = subprocess.run([sys.executable, "-c", "import httpx, pytest"], user=uid,
                               group=gid, extra_groups=[], capture_output=True, check=False)
        if probe.returncode == 0:
            return sys.executable, []
    except PermissionError:
        pass
    prefix = os.path.realpath(sys.base_prefix)
    os.makedirs(scratch, exist_ok=True)
    subprocess.run(["mount", "--bind", "-o", "ro", prefix, scratch], check=True)
    packages = [os.path.join(scratch, os.path.relpath(os.path.realpath(p), prefix))
                for p in site.getsitepackages() if os.path.realpath(p).startswith(prefix + "/")]
    return os.path.join(scratch, os.path.relpath(os.path.realpath(sys.executable), prefix)), packages


class User:
    """An ordinary user with a home of its own, running lamina (this worktree's) and commands."""

    def __init__(self, entry: pwd.struct_passwd, home: str):
        self.name, self.uid, self.gid, self.home = entry.pw_name, entry.pw_uid, entry.pw_gid, home
        self.python, packages = python_for(self.uid, self.gid, os.path.join(home, "python"))
        self.pythonpath = ":".join([os.path.join(REPO, "src"), *packages])
        bound = os.path.join(home, "python", "lib")
        self.runtime_dir = os.path.join(home, "run")
        self.store = os.path.join(home, ".local", "share", "lamina")
        self.env = {"HOME": home, "USER": self.name, "LOGNAME": self.name,
                    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    "XDG_RUNTIME_DIR": self.runtime_dir, "LANG": "C.UTF-8",
                    "PYTHONPATH": self.pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
        if packages:
            self.env["LD_LIBRARY_PATH"] = bound

    def run(self, argv, check=True, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
        """``argv`` as this user (cwd: its home); ``env`` adds to or (value None) removes from
        the user's environment."""
        full = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full,
                              cwd=self.home, user=self.uid, group=self.gid, extra_groups=[],
                              input=input, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} as {self.name} failed "
                                 f"({proc.returncode}): {proc.stderr}")
        return proc

    def lamina(self, *args, check=True, env=None, input=None, timeout=120):
        """``python -m lamina ARGS`` as this user, on its default store unless ``--root``."""
        return self.run([self.python, "-m", "lamina", *args], check=check, env=env,
                        input=input, timeout=timeout)

    def give(self, path: str) -> str:
        """A copy of the file ``path`` in the user's home, readable by the user."""
        target = os.path.join(self.home, os.path.basename(path))
        shutil.copyfile(path, target)
        os.chown(target, self.uid, self.gid)
        return target

    def stop_namespaces(self) -> None:
        """Kill the pause processes that hold the user's namespaces (found by their state files
        in every runtime directory the user had)."""
        for base in (os.path.join(self.runtime_dir, "lamina"), f"/tmp/lamina-run-{self.uid}"):
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in names:
                if not name.startswith("ns-") or "." in name:
                    continue
                try:
                    with open(os.path.join(base, name)) as f:
                        pid = int(f.read().split()[0])
                    if os.stat(f"/proc/{pid}").st_uid == self.uid:
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
            if base.startswith("/tmp/"):
                shutil.rmtree(base, ignore_errors=True)


def make_user(name: str, subordinate: bool = True):
    """(User, cleanup) for ``name`` with a fresh home under /var/tmp."""
    entry = ensure_user(name, subordinate)
    home = tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp")
    os.chmod(home, 0o755)
    os.mkdir(os.path.join(home, "run"), 0o700)
    for path in (home, os.path.join(home, "run")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    user = User(entry, home)

    def cleanup():
        user.stop_namespaces()
        with open("/proc/self/mountinfo") as f:  # mounts the tests made as root in the home
            targets = [line.split()[4] for line in f if f" {home}/" in line]
        for target in sorted(targets, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(home, ignore_errors=True)

    return user, cleanup


@pytest.fixture(scope="session")
def rootless_user():
    """The session's unprivileged user (with subordinate ranges) and its fresh home."""
    user, cleanup = make_user(USER)
    yield user
    cleanup()
