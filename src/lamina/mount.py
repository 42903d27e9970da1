"""Mount descriptions and the mount(2)/umount2(2) calls, made through ctypes.

A snapshotter describes how to see a snapshot as a list of :class:`Mount`; whoever needs the tree
mounts it (or, for a single bind mount, just uses the directory). Overlay options may be relative to
``Mount.cwd``: that is how a stack of 128 lowers fits the kernel's one-page option limit. Past that
page, an overlay is mounted through the new mount API (``fsopen``/``fsconfig`` with one
``lowerdir+`` per layer, Linux 6.5 and later), which has no page limit: the kernel's own limit of
:data:`OVERLAY_MAX_STACK` lowers applies. An older kernel stops at :data:`CLASSIC_MAX_LOWERS`.
"""

import _thread
import os

from .errors import InvalidArgument, LaminaError, Unavailable
from .userns import in_user_namespace

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2
PAGE_LIMIT = 4095
OVERLAY_MAX_STACK = 500  # the kernel's OVL_MAX_STACK: lowers one overlay mount may stack
CLASSIC_MAX_LOWERS = 128  # Docker's limit, and what one page of short-link options holds
# the new mount API's system calls (the same numbers on every architecture since Linux 5.2)
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY = 1
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100
# An overlay mount with short lower paths changes the process's working directory for the call:
# threads that mount at once (a build's parallel stages, lamina serve's requests) take turns.
# (threading.Lock is this; importing threading for it cost every command a millisecond or more)
_CWD_LOCK = _thread.allocate_lock()

_libc = None


def _lib():
    global _libc  # one handle per process: a cache, not state
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class Mount:
    """One mount: ``type`` (overlay, bind), ``source``, ``options`` and the dir they are relative to."""

    __slots__ = ("cwd", "options", "source", "type")

    def __init__(self, type: str, source: str, options: tuple = (), cwd: str | None = None):
        self.type = type
        self.source = source
        self.options = tuple(options)
        self.cwd = cwd

    def __repr__(self) -> str:
        return f"Mount({self.type!r}, {self.source!r}, {self.options!r}, cwd={self.cwd!r})"

    def _option(self, name: str) -> str | None:
        for opt in self.options:
            if opt.startswith(name + "="):
                return opt[len(name) + 1:]
        return None

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") or self.cwd is None else os.path.join(self.cwd, path)

    @property
    def readonly(self) -> bool:
        return "ro" in self.options or (self.type == "overlay" and self._option("upperdir") is None)

    def upper(self) -> str | None:
        """The writable directory: overlay's upperdir, or the source of a read-write bind mount."""
        if self.type == "bind":
            return None if self.readonly else self.source
        upper = self._option("upperdir")
        return self._absolute(upper) if upper else None

    def lowers(self) -> list[str]:
        """Read-only layer directories, newest first (for a bind mount: the source, when read-only)."""
        if self.type == "bind":
            return [self.source] if self.readonly else []
        lower = self._option("lowerdir") or ""
        return [self._absolute(p) for p in lower.split(":") if p]


def lowers_one_by_one() -> bool:
    """Whether this kernel takes overlay lowers one by one (``fsconfig(lowerdir+)``, Linux 6.5),
    so that a stack is not bound by the page that classic mount options must fit in."""
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (6, 5)
    except (IndexError, ValueError):
        return False


def overlay_stack_limit() -> int:
    """How many lowers one overlay mount may stack here: the kernel's 500 where lowers can be
    given one by one, else Docker's 128 (short links of 128 layers fit one page)."""
    return OVERLAY_MAX_STACK if lowers_one_by_one() else CLASSIC_MAX_LOWERS


def _syscall(number: int, *args) -> int:
    import ctypes

    ret = _lib().syscall(ctypes.c_long(number), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _fs_messages(fd: int) -> str:
    """What the kernel logged on an fs context (``e overlay: ...`` lines), for an error."""
    lines = []
    while True:
        try:
            lines.append(os.read(fd, 1024).decode(errors="replace").strip())
        except OSError:  # ENODATA: no more messages
            return "; ".join(line for line in lines if line)


def _mount_overlay_by_layer(m: "Mount", target: str, extra: tuple = ()) -> None:
    """Mount the overlay ``m`` through the new mount API: each lower its own ``lowerdir+``, as an
    absolute path, so any stack the kernel allows fits (no one-page option string)."""
    import ctypes

    fd = _syscall(SYS_FSOPEN, b"overlay", ctypes.c_uint(FSOPEN_CLOEXEC))
    try:
        try:
            for opt in (*m.options, *extra):
                key, has_value, value = opt.partition("=")
                if key == "ro":
                    continue
                if key == "lowerdir":
                    settings = [("lowerdir+", m._absolute(p)) for p in value.split(":") if p]
                elif key in ("upperdir", "workdir"):
                    settings = [(key, m._absolute(value))]
                else:
                    settings = [(key, value if has_value else None)]
                for name, setting in settings:
                    kind = FSCONFIG_SET_STRING if setting is not None else FSCONFIG_SET_FLAG
                    _syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(kind), name.encode(),
                             setting.encode() if setting is not None else None, ctypes.c_int(0))
            _syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_CMD_CREATE), None,
                     None, ctypes.c_int(0))
        except OSError as error:
            if error.errno == 1:  # EPERM
                raise Unavailable(f"mounting {target} needs root (or a user namespace)") from None
            detail = _fs_messages(fd) or error.strerror
            raise LaminaError(f"mount overlay on {target}: {detail}") from None
        attrs = MOUNT_ATTR_RDONLY if "ro" in m.options else 0
        mfd = _syscall(SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                       ctypes.c_uint(attrs))
        try:
            _syscall(SYS_MOVE_MOUNT, ctypes.c_int(mfd), b"", ctypes.c_int(AT_FDCWD),
                     target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def _call_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    import ctypes

    lib = _lib()
    ret = lib.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if ret != 0:
        err = ctypes.get_errno()
        if err == 1:  # EPERM
            raise Unavailable(f"mounting {target} needs root (or a user namespace): {os.strerror(err)}")
        raise LaminaError(f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def mount_all(mounts: list["Mount"], target: str) -> None:
    """Mount ``mounts`` on ``target``, in order."""
    for m in mounts:
        if m.type == "overlay":
            # in a user namespace trusted.* is the host root's: use user.overlay.* instead
            extra = ("userxattr",) if in_user_namespace() and "userxattr" not in m.options else ()
            data = ",".join(o for o in (*m.options, *extra) if o != "ro")
            work = m._option("workdir")
            if work and not os.path.isdir(m._absolute(work)):
                os.mkdir(m._absolute(work), 0o700)  # overlayfs needs it; made on first mount
            if len(data) > PAGE_LIMIT:
                # mount(2) would succeed and silently truncate the options (MACHINE.md)
                if not lowers_one_by_one():
                    raise InvalidArgument(
                        f"overlay options are {len(data)} bytes, over the {PAGE_LIMIT}-byte page"
                        f" limit: this kernel stacks at most {CLASSIC_MAX_LOWERS} layers (Linux"
                        " 6.5 or later takes more)")
                _mount_overlay_by_layer(m, target, extra)
                continue
            with _CWD_LOCK:
                old = None
                if m.cwd:
                    old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
                    os.chdir(m.cwd)
                try:
                    flags = MS_RDONLY if "ro" in m.options else 0
                    _call_mount("overlay", target, "overlay", flags, data)
                finally:
                    if old is not None:
                        os.fchdir(old)
                        os.close(old)
        elif m.type == "bind":
            _call_mount(m.source, target, None, MS_BIND | MS_REC, None)
            if "ro" in m.options:
                _call_mount("none", target, None, MS_BIND | MS_REC | MS_RDONLY | MS_REMOUNT, None)
        elif m.type == "union":  # the union driver: a FUSE daemon (lamina.unionfs)
            from .unionfs import mount_union

            mount_union(m, target)
        else:
            raise InvalidArgument(f"unknown mount type {m.type!r}")


def unmount(target: str, detach: bool = False) -> None:
    """Unmount ``target``; a target that is not mounted is left alone."""
    import ctypes
    import errno

    # Not os.path.ismount: it misses a bind mount of a directory from the same file system
    # (same st_dev as the parent), which is what a vfs snapshot or a one-layer view mounts.
    if _lib().umount2(target.encode(), MNT_DETACH if detach else 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not a mount point, or no such path
            return
        if err == errno.EPERM and os.geteuid() != 0:  # a user's own FUSE mount (union driver)
            from .unionfs import unmount_union

            return unmount_union(target)
        raise LaminaError(f"umount {target}: {os.strerror(err)}")
