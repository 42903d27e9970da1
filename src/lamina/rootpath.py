"""Paths inside a root, resolved the way a process chrooted there sees them.

A container's files are a tree on the host, and its symlinks are written for the container: an
absolute link ``/etc/x -> /etc/passwd`` means the container's ``/etc/passwd``, and ``..`` at its
root stays at its root. Resolving a container path on the host therefore needs a resolver that
keeps every symlink and every ``..`` inside the root. This module is that resolver, in two forms:

* the kernel's: ``openat2(2)`` with ``RESOLVE_IN_ROOT`` (Linux 5.6+) opens a path relative to a
  descriptor of the root and resolves every component inside it, atomically: a running container
  that swaps a directory for a symlink meanwhile cannot send an open outside its root.
* :func:`walk`, the same rules in Python, component by component, for kernels without openat2
  (where a concurrent swap can race). Its tree is two callbacks, so it serves trees that are not
  one real directory too: ``lamina.union`` (branches merged in memory) and
  ``lamina.builder.tree`` (an image's layer directories) resolve through it.

:class:`RootDir` holds a root open and offers both forms: :meth:`RootDir.open` (a descriptor,
flags as for open(2)) and :meth:`RootDir.resolve` (the canonical path inside the root, for callers
that need a path and may name entries that do not exist yet). :func:`resolve_in_root` and
:func:`open_in_root` are the one-call forms.

The rules, the kernel's (path_resolution(7)): a symlink in the middle of a path is always
followed, the last one unless ``O_NOFOLLOW`` (or ``O_CREAT | O_EXCL``) says otherwise, and always
when the path ends with ``/``; at most 40 symlinks are followed in one resolution, then ``ELOOP``;
a component after a non-directory is ``ENOTDIR``.
"""

import errno
import functools
import os
import stat
from collections.abc import Callable

MAX_SYMLINKS = 40  # the kernel's limit per resolution (MAXSYMLINKS)


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def components(path: str) -> list[str]:
    """The names of ``path``: empty names and ``.`` dropped, ``..`` kept."""
    return [part for part in path.split("/") if part and part != "."]


def _follows_last(path: str) -> bool:
    """Whether the kernel follows the last symlink of ``path`` whatever the flags say: it ends
    with ``/``, ``/.`` or ``/..``, so that symlink is not the last component."""
    last = path.rpartition("/")[2]
    return "/" in path and last in ("", ".", "..")


# ----------------------------------------------------------------------------- the walk


def walk(
    path: str,
    root: object,
    lookup: Callable[[object, str], tuple[object, int] | None],
    readlink: Callable[[object], str],
    follow: bool = True,
    strict: bool = False,
) -> tuple[list[str], object | None]:
    """Resolve ``path`` inside the tree whose root directory is ``root``.

    The tree is two callbacks over states (whatever stands for an entry: a host path, a merged
    node): ``lookup(directory, name)`` gives the child's state and its ``st_mode`` (or None when
    there is no such entry); ``readlink(state)`` the target of a symlink. Returns the canonical
    names of the resolved path (no symlink, no ``..``) and the state of its entry.

    ``follow``: whether a symlink as the last component is followed (see the module docstring
    for when it is anyway). When a name is missing, ``strict`` raises ENOENT unless it is the last
    one; otherwise the names that do not exist are kept as they are and the state is None (a
    ``..`` after them leads back into the tree). Raises ENOTDIR for a component after a
    non-directory (``filename2`` is that non-directory's canonical path) and ELOOP after
    :data:`MAX_SYMLINKS` symlinks; errors name ``path``.
    """
    follow_last = follow or _follows_last(path)
    todo = components(path)
    todo.reverse()
    names: list[str] = []
    states: list = [root]
    modes: list[int | None] = [stat.S_IFDIR]
    links = 0
    while todo:
        part = todo.pop()
        mode = modes[-1]
        if mode is not None and not stat.S_ISDIR(mode):  # filename2: that non-directory
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path, None,
                          "/" + "/".join(names))
        if part == "..":
            if names:
                names.pop()
                states.pop()
                modes.pop()
            continue
        found = lookup(states[-1], part) if states[-1] is not None else None
        if found is None:
            if strict and todo:
                raise _error(errno.ENOENT, path)
            names.append(part)
            states.append(None)
            modes.append(None)
            continue
        state, mode = found
        if stat.S_ISLNK(mode) and (todo or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise _error(errno.ELOOP, path)
            target = readlink(state)
            if target.startswith("/"):
                names, states, modes = [], [root], [stat.S_IFDIR]
            todo.extend(reversed(components(target)))
            continue
        names.append(part)
        states.append(state)
        modes.append(mode)
    return names, states[-1]


def _host_lookup(directory: str, name: str) -> tuple[str, int] | None:
    path = directory + "/" + name if directory != "/" else "/" + name
    try:
        return path, os.lstat(path).st_mode
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------------------- openat2(2)

SYS_OPENAT2 = 437  # the same number on every architecture of the generic syscall table
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_AT_FDCWD = -100


@functools.cache
def _syscall():
    """(libc, struct open_how): ctypes is loaded on first use only (it slows every start-up)."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    return ctypes.CDLL(None, use_errno=True), OpenHow


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): a descriptor of ``path`` relative to ``dir_fd``, resolved per ``resolve``."""
    import ctypes

    libc, open_how = _syscall()
    creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
    how = open_how(flags, mode if creates else 0, resolve)  # EINVAL: a mode with no creation
    while True:
        fd = libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd),
                          ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                          ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code), path)


@functools.cache
def openat2_available() -> bool:
    """Whether the kernel has openat2 (Linux 5.6+, and not filtered out by seccomp)."""
    try:
        os.close(openat2(_AT_FDCWD, "/", os.O_PATH | os.O_CLOEXEC))
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EPERM):
            return False
        raise
    return True


# ----------------------------------------------------------------------------- a real root


class RootDir:
    """The directory ``path`` held open as a root.

    ``use_openat2`` chooses the resolver: the kernel's (the default where it has openat2) or
    :func:`walk` (the default elsewhere). Both give the same answers; only the kernel's is
    atomic.
    """

    fd = -1

    def __init__(self, path: str, use_openat2: bool | None = None):
        self.path = os.path.realpath(path)
        self.kernel = openat2_available() if use_openat2 is None else use_openat2
        self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
        """A descriptor of ``path`` opened inside the root (flags as for open(2); close-on-exec
        always). Without openat2 the path is resolved by :func:`walk`, then opened with
        ``O_NOFOLLOW``."""
        flags |= os.O_CLOEXEC
        if self.kernel:
            return openat2(self.fd, path.lstrip("/") or ".", flags, mode,
                           RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        exclusive = flags & os.O_CREAT and flags & os.O_EXCL  # never follows, as open(2)
        follow = not (flags & os.O_NOFOLLOW or exclusive)
        names, _ = walk(path, self.path, _host_lookup, os.readlink, follow, strict=True)
        real = self._host(names)
        if _follows_last(path) and names:
            real += "/"  # the kernel then checks that it is a directory (ENOTDIR, EISDIR)
        return os.open(real, flags | os.O_NOFOLLOW, mode)

    def resolve(self, path: str, follow: bool = True) -> str:
        """The canonical path (``/a/b``) of ``path`` inside the root, symlinks resolved (the
        last one if ``follow``). Names that do not exist are kept as they are, so the path of
        something still to be made can be resolved (a dangling symlink leads to its target)."""
        if self.kernel:
            try:
                flags = os.O_PATH | (0 if follow else os.O_NOFOLLOW)
                fd = self.open(path, flags)
                try:
                    real = os.readlink(f"/proc/self/fd/{fd}")
                finally:
                    os.close(fd)
            except (FileNotFoundError, NotADirectoryError):
                pass  # not there (yet): the walk names it
            else:
                if real == self.path:
                    return "/"
                inside = real[len(self.path):] if self.path != "/" else real
                if real.startswith(self.path) and inside.startswith("/"):
                    return inside
        names, _ = walk(path, self.path, _host_lookup, os.readlink, follow)
        return "/" + "/".join(names)

    def host_path(self, path: str, follow: bool = True) -> str:
        """The host path of ``path`` inside the root (:meth:`resolve`, joined to the root)."""
        return self._host(components(self.resolve(path, follow)))

    def _host(self, names: list[str]) -> str:
        if not names:
            return self.path
        return self.path.rstrip("/") + "/" + "/".join(names)


def resolve_in_root(root: str, path: str, follow: bool = True,
                    use_openat2: bool | None = None) -> str:
    """The host path of ``path`` inside the tree ``root``, as a process chrooted there sees it
    (see :meth:`RootDir.resolve`: names that do not exist yet are kept)."""
    with RootDir(root, use_openat2) as rooted:
        names = components(rooted.resolve(path, follow))
    base = root.rstrip("/")
    return base + "/" + "/".join(names) if names else (root if base else "/")


def open_in_root(root: str, path: str, flags: int = os.O_RDONLY, mode: int = 0o666,
                 use_openat2: bool | None = None) -> int:
    """A descriptor of ``path`` opened inside the tree ``root`` (see :meth:`RootDir.open`)."""
    with RootDir(root, use_openat2) as rooted:
        return rooted.open(path, flags, mode)
