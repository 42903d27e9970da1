"""``lamina cp``: copy between a container's root and the host, with Docker's rules.

Both sides are file systems with one small interface: :class:`RootedFS` (a real directory seen as
a root: every symlink, absolute or relative, and every ``..`` is resolved inside it, so nothing is
read or written outside it) and :class:`lamina.union.UnionView` (a union container, no mount
needed). The host is ``RootedFS("/")``.

Docker's rules (``docker cp``), for SRC and DEST:

* SRC a file: DEST missing -> saved as DEST (its parent must exist); DEST a file -> overwritten;
  DEST a directory -> copied into it under SRC's name; DEST ending in ``/`` must be a directory.
* SRC a directory: DEST missing -> created with SRC's contents (its parent must exist); DEST a
  file -> error; DEST a directory -> SRC copied into it, or only SRC's contents for ``SRC/.``.
* SRC ending in ``/`` or ``/.`` must be a directory. Symlinks are copied as symlinks (``-L``
  follows SRC itself). Modes, times, xattrs and hard links inside the tree are kept; ownership is
  root's in a container and preserved from it (as root) on the host, or kept with ``-a``.
"""

import errno
import functools
import os
import stat

from .errors import InvalidArgument, LaminaError, NotFound
from .rootpath import RootDir


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class RootedFS:
    """A real directory ``root`` as a file system of its own: paths are inside it.

    Every path is opened inside the root by :class:`lamina.rootpath.RootDir` (openat2(2) with
    ``RESOLVE_IN_ROOT`` where the kernel has it): each component, symlinks and ``..`` are resolved
    inside the root, so a running container that swaps a directory for a symlink meanwhile cannot
    send a write outside it. Operations then act on the opened entry or on a name in its opened
    parent, never on a path walked again. Where openat2 is missing (Linux < 5.6) the path is
    resolved in Python first, which a concurrent swap can race.
    """

    def __init__(self, root: str):
        self._root = RootDir(root)
        self.root = self._root.path

    def close(self) -> None:
        self._root.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        """A descriptor of ``path`` opened inside the root (flags as for open(2))."""
        return self._root.open(_relative(path), flags, mode)

    def _handle(self, path: str, follow: bool) -> int:
        """An O_PATH descriptor of the entry itself (of its target if ``follow``)."""
        return self._open(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW))

    def _in_parent(self, path: str, call):
        """``call(dir_fd, name)``: ``name`` is the last component of ``path``, ``dir_fd`` its
        parent opened inside the root."""
        parent, _, name = _relative(path).rpartition("/")
        if name in (".", ".."):
            raise _err(errno.EINVAL, path)
        dir_fd = self._open(parent or "/", os.O_PATH | os.O_DIRECTORY)
        try:
            return call(dir_fd, name)
        finally:
            os.close(dir_fd)

    def _on_entry(self, path: str, follow: bool, call, on_link=None):
        """``call(proc_path)`` on the entry through its /proc/self/fd link (the opened inode,
        whatever happens to the path), or ``on_link(dir_fd, name)`` when it is a symlink."""
        fd = self._handle(path, follow)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                return on_link(path) if on_link else None
            return call(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def realpath(self, path: str) -> str:
        return self._root.resolve(path)

    def lstat(self, path):
        return self.stat(path, follow_symlinks=False)

    def stat(self, path, follow_symlinks=True):
        fd = self._handle(path, follow_symlinks)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def lexists(self, path):
        try:
            self.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def scandir(self, path):
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                return [(entry.name, entry.stat(follow_symlinks=False)) for entry in it]
        finally:
            os.close(fd)

    def readlink(self, path):
        return self._in_parent(path, lambda d, n: os.readlink(n, dir_fd=d))

    def open(self, path, flags=os.O_RDONLY, mode=0o666):
        return self._open(path, flags, mode)

    def mkdir(self, path, mode=0o777):
        self._in_parent(path, lambda d, n: os.mkdir(n, mode, dir_fd=d))

    def symlink(self, target, path):
        self._in_parent(path, lambda d, n: os.symlink(target, n, dir_fd=d))

    def link(self, src, dst, follow_symlinks=False):
        self._in_parent(src, lambda sd, sn: self._in_parent(dst, lambda dd, dn: os.link(
            sn, dn, src_dir_fd=sd, dst_dir_fd=dd, follow_symlinks=False)))

    def mknod(self, path, mode=0o600, device=0):
        self._in_parent(path, lambda d, n: os.mknod(n, mode, device, dir_fd=d))

    def unlink(self, path):
        self._in_parent(path, lambda d, n: os.unlink(n, dir_fd=d))

    def rmtree(self, path):
        import shutil

        self._in_parent(path, lambda d, n: shutil.rmtree(n, dir_fd=d))

    def chmod(self, path, mode, follow_symlinks=True):
        self._on_entry(path, follow_symlinks, lambda p: os.chmod(p, mode))  # not a symlink's

    def chown(self, path, uid, gid, follow_symlinks=True):
        self._on_entry(path, follow_symlinks, lambda p: os.chown(p, uid, gid),
                       lambda link: self._in_parent(link, lambda d, n: os.chown(
                           n, uid, gid, dir_fd=d, follow_symlinks=False)))

    def utime(self, path, times=None, *, ns=None, follow_symlinks=True):
        def at(d, n):
            if ns is not None:
                os.utime(n, ns=ns, dir_fd=d, follow_symlinks=False)
            else:
                os.utime(n, times, dir_fd=d, follow_symlinks=False)

        self._on_entry(path, follow_symlinks,
                       lambda p: os.utime(p, ns=ns) if ns is not None else os.utime(p, times),
                       lambda link: self._in_parent(link, at))

    def listxattr(self, path, follow_symlinks=True):
        return self._on_entry(path, follow_symlinks, os.listxattr, _no_xattrs) or []

    def getxattr(self, path, name, follow_symlinks=True):
        return self._on_entry(path, follow_symlinks, lambda p: os.getxattr(p, name), _no_xattrs)

    def setxattr(self, path, name, value, flags=0, follow_symlinks=True):
        self._on_entry(path, follow_symlinks, lambda p: os.setxattr(p, name, value, flags),
                       _no_xattrs)


def _no_xattrs(path: str):
    raise _err(errno.ENOTSUP, path)  # user xattrs cannot be on a symlink


def _relative(path: str) -> str:
    """``path`` as the root resolves it ("." for the root itself); a trailing ``/`` or ``/.`` is
    dropped (the caller checks kinds)."""
    return "/".join(p for p in path.split("/") if p and p != ".") or "."


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def _basename(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    return parts[-1] if parts else ""


def _lookup(fs, path: str, follow: bool):
    try:
        return fs.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return None


def copy(src_fs, src: str, dst_fs, dst: str, owner=None, follow: bool = False,
         name: str | None = None) -> None:
    """Copy ``src`` of ``src_fs`` to ``dst`` of ``dst_fs`` with Docker's rules (module docstring).

    ``owner`` is (uid, gid) for everything written, or None to keep the source's. ``name``: the
    source's name when it is not its path's base name (the root of a volume mounted at /vol).
    """
    contents_only = src.endswith("/.") or src == "."
    src_st = _lookup(src_fs, src, follow)
    if src_st is None:
        raise NotFound(f"Could not find the file {src}")
    src_is_dir = stat.S_ISDIR(src_st.st_mode)
    if (src.endswith("/") or contents_only) and not src_is_dir:
        raise InvalidArgument(f"{src}: not a directory")
    src_path = src_fs.realpath(src) if follow else src
    dst_st = _lookup(dst_fs, dst, True)
    if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
        if src_is_dir and contents_only:
            target = dst
        else:
            target = _join(dst, name or _basename(src) or "root")
    else:
        if dst_st is not None and src_is_dir:
            raise InvalidArgument(f"cannot copy a directory to a file: {dst}")
        if dst.endswith("/"):
            raise InvalidArgument(f"destination directory {dst} does not exist")
        parent = dst.rstrip("/").rpartition("/")[0] or "/"
        parent_st = _lookup(dst_fs, parent, True)
        if parent_st is None or not stat.S_ISDIR(parent_st.st_mode):
            raise NotFound(f"no such directory: {parent}")
        target = dst
    links: dict = {}
    dirs: list = []
    _copy_entry(src_fs, src_path, src_st, dst_fs, target, owner, links, dirs)
    for path, st in reversed(dirs):  # directory times last, once their children are in
        dst_fs.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(src_fs, src, st, dst_fs, dst, owner, links, dirs) -> None:
    mode = st.st_mode
    existing = _lookup(dst_fs, dst, False)
    if stat.S_ISDIR(mode):
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            dst_fs.unlink(dst)
            existing = None
        if existing is None:
            dst_fs.mkdir(dst, 0o700)
        _metadata(src_fs, src, st, dst_fs, dst, owner)
        dirs.append((dst, st))
        for name, child in sorted(src_fs.scandir(src)):
            _copy_entry(src_fs, _join(src, name), child, dst_fs, _join(dst, name), owner, links,
                        dirs)
        return
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise InvalidArgument(f"cannot overwrite directory {dst} with a non-directory")
        dst_fs.unlink(dst)  # replaced, never written through (it may be a hard link)
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links:
        dst_fs.link(links[key], dst)
        return
    if stat.S_ISREG(mode):
        sfd = src_fs.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            dfd = dst_fs.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _copy_data(sfd, dfd, st.st_size)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
    elif stat.S_ISLNK(mode):
        dst_fs.symlink(src_fs.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        dst_fs.mknod(dst, mode, st.st_rdev)
    else:
        return  # sockets are not copied
    if st.st_nlink > 1:
        links[key] = dst
    _metadata(src_fs, src, st, dst_fs, dst, owner)


def _metadata(src_fs, src, st, dst_fs, dst, owner) -> None:
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    try:
        dst_fs.chown(dst, uid, gid, follow_symlinks=False)
    except PermissionError:
        pass  # an unprivileged copy keeps the copier's ownership
    if not stat.S_ISLNK(st.st_mode):
        dst_fs.chmod(dst, stat.S_IMODE(st.st_mode), follow_symlinks=False)
        try:
            names = src_fs.listxattr(src, follow_symlinks=False)
        except OSError:
            names = ()
        for name in names:
            try:
                dst_fs.setxattr(dst, name, src_fs.getxattr(src, name, follow_symlinks=False),
                                follow_symlinks=False)
            except OSError:
                pass  # a file system or user that cannot hold it: Docker drops them too
    if not stat.S_ISDIR(st.st_mode):
        dst_fs.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_data(sfd: int, dfd: int, size: int) -> None:
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(sfd, dfd, min(size - done, 1 << 30))
            if n == 0:
                break
            done += n
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while True:
        chunk = os.read(sfd, 1 << 20)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            view = view[os.write(dfd, view):]


def parse_location(arg: str) -> tuple[str | None, str]:
    """("container", "path") for ``container:path``, (None, path) for a host path (a path
    containing "/" before any ":" is a host path, as Docker decides)."""
    if arg.startswith(("/", ".")):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep or "/" in name:
        return None, arg
    if not name:
        raise InvalidArgument(f"invalid container name in {arg!r}")
    return name, path or "/"


def check_direction(src: tuple, dst: tuple) -> None:
    if (src[0] is None) == (dst[0] is None):
        raise InvalidArgument("copying between containers is not supported" if src[0] else
                              "must specify at least one container source")


def os_error(error: OSError) -> LaminaError:
    where = f": {error.filename}" if error.filename else ""
    return LaminaError(f"{error.strerror or error}{where}")


def host_path(path: str) -> str:
    """An absolute host path that keeps a trailing ``/`` or ``/.`` (they carry meaning here)."""
    return path if path.startswith("/") else os.path.join(os.getcwd(), path)


# ------------------------------------------------------------------ tar streams
# The Engine API's archive endpoints (``docker cp`` through a server): the same roots as above,
# with a tar stream on the other side instead of a host path. Paths are Docker's: absolute in
# the container, ``..`` folded lexically, a trailing ``/`` or ``/.`` kept (it carries meaning).


def archive_path(path: str) -> tuple[str, str]:
    """(the absolute path, its base name) of a path given to the archive endpoints: ``etc/``
    -> ("/etc/", "etc"), ``/etc/.`` -> ("/etc/.", "."), ``/`` -> ("/", "/")."""
    import posixpath

    clean = posixpath.normpath("/" + path.lstrip("/"))
    if clean != "/" and (path == "." or path.endswith("/.")):
        clean += "/."
    elif clean != "/" and path.endswith("/"):
        clean += "/"
    base = clean.rstrip("/").rpartition("/")[2] or "/"
    return clean, base


def archive_stat(fs, path: str) -> tuple[os.stat_result, str]:
    """What the archive endpoints report of ``path`` (see :func:`archive_path`): its lstat, or
    its target's when it ends with ``/`` or ``/.`` (which must then be a directory:
    NotADirectoryError), and for a symlink the canonical path it leads to inside the root (as
    far as it exists). FileNotFoundError when there is nothing there."""
    absolute, _ = archive_path(path)
    if absolute != "/" and absolute.endswith(("/", "/.")):
        st = fs.stat(absolute, follow_symlinks=True)
        if not stat.S_ISDIR(st.st_mode):
            raise _err(errno.ENOTDIR, absolute)
    else:
        st = fs.lstat(absolute)
    return st, fs.realpath(absolute) if stat.S_ISLNK(st.st_mode) else ""


def write_archive(fs, path: str, out, name: str | None = None) -> None:
    """Write ``path`` of ``fs`` as a tar to the binary file ``out``: a non-directory (a symlink
    itself) as one member named by its base name; a directory as its tree under its base name
    (``.`` for ``DIR/.``, ``/`` for the root), or under ``name`` when given (a volume's root
    under the name of the directory it is mounted on). Written by
    :class:`lamina.layertar.TarWriter` (numeric owners, xattrs, hard links inside the tree as
    links)."""
    from .layertar import TarWriter

    absolute, base = archive_path(path)
    base = name or base
    st, _ = archive_stat(fs, path)
    top = b"" if base == "/" else os.fsencode(base)  # the root's entry is "/", its children "/x"
    writer = TarWriter(out)
    if isinstance(fs, RootedFS):
        entries = _rooted_entries(fs, absolute, st, top)
    else:
        entries = _view_entries(fs, absolute, st, top)
    for name, real, entry_st in entries:
        writer.entry(name, real, entry_st)
    writer.finish()


def _rooted_entries(fs: RootedFS, path: str, st, top: bytes):
    """(tar name, host path, lstat) of ``path`` and, for a directory, everything below it. Each
    host path is a name in a directory held open (``/proc/self/fd/N/NAME``), so a container
    that swaps a directory for a symlink meanwhile cannot lead the reads outside its root."""
    if not stat.S_ISDIR(st.st_mode):
        parent, _, name = _relative(path).rpartition("/")
        fd = fs.open(parent or "/", os.O_PATH | os.O_DIRECTORY)
        try:
            yield top, os.fsencode(f"/proc/self/fd/{fd}/{name}"), st
        finally:
            os.close(fd)
        return
    fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield top, os.fsencode(f"/proc/self/fd/{fd}"), os.fstat(fd)
        yield from _below(fd, top + b"/")
    finally:
        os.close(fd)


def _below(dir_fd: int, prefix: bytes):
    with os.scandir(dir_fd) as it:
        found = sorted((os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in it)
    for name, st in found:
        yield prefix + name, b"/proc/self/fd/%d/%s" % (dir_fd, name), st
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dir_fd)
            try:
                yield from _below(fd, prefix + name + b"/")
            finally:
                os.close(fd)


def _view_entries(view, path: str, st, top: bytes):
    """:func:`_rooted_entries` for a union view (its branches are lamina's own directories)."""
    node = view.lookup(view.realpath(path) if stat.S_ISDIR(st.st_mode) else path)
    yield top, os.fsencode(node.real), st
    if stat.S_ISDIR(st.st_mode):
        for name, real, entry_st in view.tar_entries(path):
            yield top + b"/" + name, real, entry_st


def extract_archive(fs, directory: str, members, owner=None, keep_kinds: bool = False) -> None:
    """Write the members of a tar (:class:`lamina.layertar.TarMembers`) below ``directory`` of
    ``fs`` (an existing directory, symlinks resolved), as Docker's ``PUT archive`` does.

    Member names are relative to ``directory`` (a leading ``/`` too); a name, hard link or
    relative symlink that leads outside it is refused. Missing parents are made (0755); an
    existing directory takes a directory member's metadata, anything else in the way is
    replaced, unless ``keep_kinds`` (``noOverwriteDirNonDir``) refuses to replace a directory
    by a non-directory or the reverse. Owners are the tar's, or ``owner`` (uid, gid) for
    everything; modes, times and xattrs are the tar's. Every path is resolved by ``fs``, so
    nothing is written outside the container's root.
    """
    import posixpath

    directory = directory.rstrip("/") or "/"
    inside = directory.rstrip("/") + "/"
    dirs: list = []
    for member in members:
        name = os.fsdecode(member.name)
        clean = posixpath.normpath(name) if name else "."
        if clean == ".." or clean.startswith("../"):
            raise LaminaError(f'"{name}" is outside of "{directory}"')
        rel = clean.lstrip("/") or "."
        path = directory if rel == "." else inside + rel
        kind = chr(member.kind)
        parent = posixpath.dirname(path)
        if rel != "." and not fs.lexists(parent):
            _make_parents(fs, inside, posixpath.dirname(rel))
        existing = _lookup(fs, path, False)
        if existing is not None:
            is_dir = stat.S_ISDIR(existing.st_mode)
            if keep_kinds and is_dir and kind != "5":
                raise LaminaError(f'cannot overwrite directory "{path}" with non-directory '
                                  f'"{directory}"')
            if keep_kinds and not is_dir and kind == "5":
                raise LaminaError(f'cannot overwrite non-directory "{path}" with directory '
                                  f'"{directory}"')
            if is_dir and rel == ".":
                continue
            if not (is_dir and kind == "5"):
                (fs.rmtree if is_dir else fs.unlink)(path)
                existing = None
        uid, gid = owner if owner is not None else (member.uid, member.gid)
        if kind == "5":
            if existing is None:
                fs.mkdir(path, 0o700)
            dirs.append((path, member, uid, gid))
            continue
        if kind == "0":
            fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                members.copy_data(fd)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, member.mode)
                _set_xattrs(functools.partial(os.setxattr, fd), member.xattrs)
                os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
            finally:
                os.close(fd)
            continue
        link = os.fsdecode(member.linkname)
        if kind == "1":
            target = posixpath.normpath(inside + link)
            if not target.startswith(inside):
                raise LaminaError(f'invalid hardlink "{target}" -> "{link}"')
            fs.link(target, path)
            continue
        if kind == "2":
            target = posixpath.normpath(posixpath.join(parent, link))  # absolute: inside
            if not link.startswith("/") and not (target + "/").startswith(inside):
                raise LaminaError(f'invalid symlink "{path}" -> "{link}"')
            fs.symlink(link, path)
        elif kind in "346":
            kinds = {"3": stat.S_IFCHR, "4": stat.S_IFBLK, "6": stat.S_IFIFO}
            fs.mknod(path, kinds[kind] | 0o600, os.makedev(member.devmajor, member.devminor))
        else:
            raise LaminaError(f"unhandled tar header type {kind!r} of {name!r}")
        _member_metadata(fs, path, member, uid, gid, symlink=kind == "2")
    for path, member, uid, gid in reversed(dirs):  # parents last: their times stay the tar's
        _member_metadata(fs, path, member, uid, gid)


def _make_parents(fs, inside: str, rel_parent: str) -> None:
    path = inside.rstrip("/")
    for part in rel_parent.split("/"):
        path += "/" + part
        if not fs.lexists(path):
            fs.mkdir(path, 0o755)


def _member_metadata(fs, path: str, member, uid: int, gid: int, symlink: bool = False) -> None:
    fs.chown(path, uid, gid, follow_symlinks=False)
    if not symlink:
        fs.chmod(path, member.mode, follow_symlinks=False)
        _set_xattrs(functools.partial(fs.setxattr, path, follow_symlinks=False), member.xattrs)
    fs.utime(path, ns=(member.mtime_ns, member.mtime_ns), follow_symlinks=False)


def _set_xattrs(set_one, xattrs) -> None:
    for key, value in xattrs or ():
        try:
            set_one(key, value)
        except OSError:
            pass  # a file system or user that cannot hold it: Docker drops them too
