"""Rootless lamina: one long-lived user namespace per store, which every command of a user joins.

An ordinary user cannot mount, chown or mknod, but inside a user namespace of their own they are
root over the ids mapped into it: ``0`` is the user, ``1..N`` are the user's subordinate ids from
``/etc/subuid`` and ``/etc/subgid`` (mapped by Debian's setuid ``newuidmap``/``newgidmap``, the
only privileged helpers lamina uses). Kernel overlayfs mounts there with ``userxattr``, runc runs
there in rootless mode, and a file of uid 0 in an image is owned by the user on disk.

Mounts must outlive the command that made them (``lamina mount``, a running container's root), so
the namespace (user + mount) is held by a *pause* process, ``sleep infinity`` made in it, as
Podman's pause process does. Its pid and namespace id are kept under the user's runtime
directory (``$XDG_RUNTIME_DIR/lamina``, else ``/tmp/lamina-run-UID`` as Podman's
``/tmp/podman-run-UID``), one per store. Joining is two ``setns`` calls (tens of microseconds);
making a fresh namespace per command costs two setuid helper runs (several milliseconds, measured
in bench/rootless.py) and would lose the mounts, so only the first command makes it.

With no subordinate ranges (or no ``newuidmap``) the namespace maps the user alone (``0`` only):
files of other owners in an image then belong to the user, as with Podman, which says so in a
warning; lamina says it once, when the namespace is made.
"""

import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
RANGE_SIZE_WANTED = 65536


_answer: list[bool] = []  # in_user_namespace's answer for this process: a cache, not state


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the host's (its uid map is not
    the identity over every id). Read once per process (:func:`join` forgets it)."""
    if not _answer:
        try:
            with open("/proc/self/uid_map") as f:
                fields = f.read().split()
        except OSError:
            fields = ["0", "0", "4294967295"]
        _answer.append(fields[:3] != ["0", "0", "4294967295"])
    return _answer[0]


def rootless() -> bool:
    """Whether lamina runs without the host's root: an ordinary user, or inside its namespace."""
    return os.geteuid() != 0 or in_user_namespace()


def user_data_root() -> str:
    """A user's store: ``$XDG_DATA_HOME/lamina`` (default ``~/.local/share/lamina``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "lamina")


def runtime_dir() -> str:
    """The user's runtime directory for lamina: ``$XDG_RUNTIME_DIR/lamina``, else (no login
    session, as under ``su`` or cron) ``/tmp/lamina-run-UID``, as Podman falls back to
    ``/tmp/podman-run-UID``. Made 0700; one that another user owns is refused."""
    from .errors import FailedPrecondition

    uid = host_uid()
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "lamina") if base else f"/tmp/lamina-run-{uid}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if st.st_uid != os.getuid() or not os.path.isdir(path) or os.path.islink(path):
        raise FailedPrecondition(f"the runtime directory {path} is not this user's own directory")
    return path


def host_uid() -> int:
    """This user's uid on the host, also from inside its namespace (where it is 0)."""
    if not in_user_namespace():
        return os.getuid()
    with open("/proc/self/uid_map") as f:
        for line in f:
            inside, outside, _ = (int(n) for n in line.split())
            if inside == os.getuid():
                return outside
    return os.getuid()


def subordinate_range(kind: str, user: str, uid: int) -> tuple[int, int] | None:
    """The first range of ``/etc/sub{kind}`` (``uid`` or ``gid``) for ``user`` (by name or
    number): ``(start, count)``, or None."""
    try:
        with open(f"/etc/sub{kind}") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[1].isdigit() \
                and fields[2].isdigit() and int(fields[2]) > 0:
            return int(fields[1]), int(fields[2])
    return None


def id_maps() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], str | None]:
    """(uid map, gid map, warning) of a user's namespace: ``(inside, outside, count)`` rows,
    the user as 0 and the subordinate range from 1; a warning when there is no range to map."""
    import pwd
    import shutil

    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    uids, gids = [(0, uid, 1)], [(0, gid, 1)]
    sub_u, sub_g = subordinate_range("uid", user, uid), subordinate_range("gid", user, uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    if sub_u and sub_g and helpers:
        uids.append((1, sub_u[0], sub_u[1]))
        gids.append((1, sub_g[0], sub_g[1]))
        return uids, gids, None
    why = ("newuidmap/newgidmap are missing (Debian package uidmap)" if not helpers
           else f"no subordinate uid/gid range for {user} in /etc/subuid and /etc/subgid")
    return uids, gids, (f"{why}: using a single-id mapping, so every file of an image belongs "
                        "to you and images whose files need other owners may not work")


# ----------------------------------------------------------------------------- making and joining

def _syscall(name: str):
    """libc's ``name`` (a function of int arguments returning an int, errno kept), called
    through ``_ctypes``, the C module ctypes wraps: every rootless command joins its namespace
    with two ``setns`` calls, and importing ``ctypes`` itself (which builds all its types) cost
    9-25 ms here under load against 1.3-2.6 ms for ``_ctypes`` (bench/RESULTS.md, rootless)."""
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    return Function(_ctypes.dlsym(_ctypes.dlopen(None, os.RTLD_NOW), name))


def _check(result: int, what: str) -> None:
    if result != 0:
        import _ctypes

        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def state_file(root: str) -> str:
    """Where the pause process of the store ``root`` is recorded: ``PID USERNS-ID ROOT``
    (named by a CRC of the root, which the file repeats: zlib is imported already, hashlib
    would cost every command a few milliseconds)."""
    import zlib

    return os.path.join(runtime_dir(), f"ns-{zlib.crc32(root.encode()):08x}")


def _alive_namespace(path: str, root: str) -> int | None:
    """The pid of the pause process recorded at ``path`` for ``root`` if it still holds its
    namespace."""
    try:
        with open(path) as f:
            pid_text, ns_id, recorded = f.read().rstrip("\n").split(" ", 2)
        if recorded != root:
            return None
        pid = int(pid_text)
        # a pause process that died keeps its user namespace link until reaped, not its mounts
        if os.readlink(f"/proc/{pid}/ns/user") == ns_id and os.readlink(f"/proc/{pid}/ns/mnt"):
            return pid
        return None
    except (OSError, ValueError):
        return None


def join(pid: int) -> None:
    """Enter the user and mount namespaces of ``pid`` (this process must be single-threaded):
    afterwards ``geteuid()`` is 0 and the store's mounts are visible."""
    setns = _syscall("setns")
    for kind, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS)):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(setns(fd, flag), f"cannot join the user namespace of {pid} ({kind})")
        finally:
            os.close(fd)
    _answer.clear()
    os.chdir(os.getcwd())  # re-resolve the working directory in the joined mount namespace


def create() -> tuple[int, str | None]:
    """Make a pause process in a new user + mount namespace with the user's id maps; returns
    (its pid, a warning or None). The pause process is a grandchild (double fork), so it never
    waits on this command, and it ignores the terminal's signals (own session)."""
    from .errors import Unavailable

    uids, gids, warning = id_maps()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle child: forks the pause process and leaves
        try:
            os.setsid()
            pause = os.fork()
            if pause == 0:
                _pause_process(ready_w, go_r, len(uids) == 1)
            os.write(pid_w, str(pause).encode())
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.close(pid_w)
    os.waitpid(middle, 0)
    pid = int(os.read(pid_r, 32) or b"0")
    os.close(pid_r)
    status = os.read(ready_r, 256)
    os.close(ready_r)
    if not pid or status != b"ok":
        os.close(go_w)
        raise Unavailable("cannot make a user namespace: " + (status.decode() or "it died"))
    try:
        if len(uids) > 1:
            import subprocess

            for tool, rows in (("newuidmap", uids), ("newgidmap", gids)):
                args = [tool, str(pid)] + [str(n) for row in rows for n in row]
                done = subprocess.run(args, check=False, capture_output=True, text=True)
                if done.returncode != 0:
                    raise Unavailable(f"{tool} failed: {done.stderr.strip() or done.returncode}")
        os.write(go_w, b"go")
    except BaseException:
        os.kill(pid, 9)
        raise
    finally:
        os.close(go_w)
    return pid, warning


def _pause_process(ready_w: int, go_r: int, single: bool) -> None:
    """The pause process: unshare, let the parent map ids (or map the user alone itself), then
    become ``sleep infinity``. Never returns."""
    try:
        uid, gid = os.getuid(), os.getgid()  # before unshare: afterwards unmapped (65534)
        try:
            _check(_syscall("unshare")(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
        except OSError as e:
            os.write(ready_w, f"unshare: {e.strerror}".encode())
            os._exit(1)
        if single:  # a process may map its own ids into its new namespace
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
        os.write(ready_w, b"ok")
        os.close(ready_w)
        if os.read(go_r, 2) != b"go":
            os._exit(1)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.chdir("/")
        os.execvp("sleep", ["sleep", "infinity"])
    finally:
        os._exit(1)


def enter(root: str) -> str | None:
    """Join the long-lived namespace of the store ``root``, making it first if no live one is
    recorded; returns a warning to print (a single-id mapping) or None. Two commands that start
    together make one namespace: the second waits on the first's lock."""
    import fcntl

    path = state_file(root)
    pid = _alive_namespace(path, root)
    warning = None
    if pid is None:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            pid = _alive_namespace(path, root)
            if pid is None:
                pid, warning = create()
                temp = f"{path}.{os.getpid()}"
                with open(temp, "w") as f:
                    f.write(f"{pid} {os.readlink(f'/proc/{pid}/ns/user')} {root}\n")
                os.rename(temp, path)
        finally:
            os.close(fd)
    join(pid)
    return warning


def pause_pid(root: str) -> int | None:
    """The pause process of the store ``root``, if one is alive."""
    return _alive_namespace(state_file(root), root)
