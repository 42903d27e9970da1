"""A union of directory branches in user space, with AUFS's on-disk format.

A view stacks read-only *lower* branches (newest first) under an optional writable *upper* branch.
Every branch is a plain directory in the format of an OCI layer tar: a deleted name is an empty
file ``.wh.NAME`` beside it, an opaque directory (one that hides everything below it) holds a file
``.wh..wh..opq``. Names starting with ``.wh.`` are therefore reserved: they never show in the view
and cannot be created through it.

The rules, the same as AUFS's and overlayfs':

* lookup walks the path component by component, newest branch first. In one directory, a branch
  that has the name decides it; a branch with a whiteout for it hides it and everything older; a
  non-directory hides everything older; directories of the same name merge until an opaque one.
  A whiteout only ever applies to its own directory.
* reading never writes. The first change of a lower entry (open for writing, truncate, chmod,
  chown, utime, setxattr, link, rename) copies it up: its parent directories first (with their
  metadata), then the entry itself with data (reflink where the filesystem has it, else
  ``copy_file_range`` over the data extents only, so sparse files stay sparse), owner, mode,
  xattrs and times. Copy-up gives a file a new inode: other lower names of a hard-linked file keep
  the old content, as on overlayfs without ``index``.
* names are at most 251 bytes (255 less ``.wh.``), so that any of them can be whited out.
* renaming a directory that has lower contents fails with EXDEV (overlayfs without
  ``redirect_dir``); ``mv`` and ``cp`` then copy and delete. A directory made in the upper branch
  moves freely.

Lower branches are committed snapshots and never change, so their merged directories are scanned
once and kept; the upper branch is always read live, so several views (a FUSE mount and a
``lamina cp``) may write one container.

:class:`UnionView` has the ``os`` module's calls on paths inside the view (``"/etc/passwd"``,
leading slash optional); ``open`` returns a real file descriptor. ``lamina.unionfs`` serves the same
view as a FUSE mount.
"""

import errno
import os
import stat

from .fsutil import copy_file, copy_metadata
from .rootpath import walk
from .whiteouts import (
    AUFS_PRIVATE_PREFIX,
    MAX_NAME,
    has_aufs_whiteout,
    is_aufs_opaque,
    is_opaque_marker,
    is_overlay_private_xattr,
    is_reserved_name,
    is_whiteout_name,
    make_aufs_whiteout,
    remove_aufs_whiteout,
    set_aufs_opaque,
    whited_out,
)

_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFLNK = stat.S_IFLNK
_ACCMODE = os.O_WRONLY | os.O_RDWR
_lstat = os.lstat


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _check_name(name: str, path: str) -> None:
    """Names the view may create: not reserved, and short enough to be whited out later."""
    if is_reserved_name(name):
        raise _err(errno.EPERM, path)
    if len(os.fsencode(name)) > MAX_NAME:
        raise _err(errno.ENAMETOOLONG, path)


def _split(path: str) -> list[str]:
    """Components of a view path; '.' and '' dropped, '..' kept for the resolver."""
    return [part for part in path.split("/") if part and part != "."]


class _LowerDir:
    """A directory of the merged *lower* branches: its visible names, scanned once."""

    __slots__ = ("_child_cache", "children", "dirs", "entries")

    def __init__(self, dirs: list[str]):
        self.dirs = dirs  # real directories that merge into this one, newest first
        entries: dict[str, tuple] = {}  # name -> (real path, is_dir) or None (whited out)
        children: dict[str, list] = {}  # name -> real dirs merging into the child directory
        closed: set = set()
        for directory in dirs:
            names = []
            whiteouts = []
            opaque = False
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        name = entry.name
                        if is_reserved_name(name):
                            if is_opaque_marker(name):
                                opaque = True
                            elif is_whiteout_name(name):
                                whiteouts.append(whited_out(name))
                        else:
                            names.append((name, entry.is_dir(follow_symlinks=False)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name, is_dir in names:
                if name in closed:
                    continue
                if name not in entries:
                    entries[name] = (directory + "/" + name, is_dir)
                    if is_dir:
                        children[name] = [directory + "/" + name]
                    else:
                        closed.add(name)
                elif is_dir:
                    children[name].append(directory + "/" + name)
                else:
                    closed.add(name)  # a non-directory below a directory ends the merge
            for name in whiteouts:
                if name not in closed:
                    closed.add(name)
                    entries.setdefault(name, None)
            if opaque:
                break
        self.entries = entries
        self.children = children
        self._child_cache = None

    def child(self, name: str) -> "_LowerDir | None":
        dirs = self.children.get(name)
        if dirs is None:
            return None
        cache = self._child_cache
        if cache is None:
            cache = self._child_cache = {}
        child = cache.get(name)
        if child is None:
            child = cache[name] = _LowerDir(dirs)
        return child


class Node:
    """A looked-up entry: where it lives and how it merges.

    ``real`` is the path of the entry in its newest branch, ``upper`` whether that branch is the
    writable one, ``lower`` the merged lower directory under it (directories only, None when the
    lowers have no directory there or an upper opaque directory hides them) and ``in_lower``
    whether any lower branch shows this name (a deletion then needs a whiteout).
    """

    __slots__ = ("_st", "in_lower", "lower", "mode", "path", "real", "upper", "upper_parent")

    def __init__(self, path, real, upper, st, lower, in_lower, upper_parent, mode=None):
        self.path = path  # canonical view path, "a/b" ("" for the root)
        self.real = real
        self.upper = upper
        self._st = st  # None: lstat on first use (a merged lower directory passed through)
        self.mode = st.st_mode & _S_IFMT if st is not None else mode  # the file type bits
        self.lower = lower
        self.in_lower = in_lower
        self.upper_parent = upper_parent  # real upper dir of the parent, if it exists

    @property
    def st(self) -> os.stat_result:
        if self._st is None:
            self._st = _lstat(self.real)
        return self._st

    @property
    def is_dir(self) -> bool:
        return self.mode == _S_IFDIR


def _link_target(node: Node) -> str:
    return os.readlink(node.real)


class UnionView:
    """The merged tree of ``lowers`` (newest first) under the writable ``upper`` (or read-only)."""

    def __init__(self, lowers: list[str], upper: str | None = None):
        self.lowers = [os.path.realpath(d) for d in lowers]
        self.upper = os.path.realpath(upper) if upper is not None else None
        self._lower_root = _LowerDir(self.lowers) if self.lowers else None
        if self.upper is not None and is_aufs_opaque(self.upper):
            self._lower_root = None  # an opaque upper root hides every lower (made only by tars)
        self._lower_dirs: dict[str, _LowerDir | None] = {"": self._lower_root}

    # ------------------------------------------------------------------ lookup
    def _lower_dir(self, path: str) -> "_LowerDir | None":
        """The merged lower directory at canonical ``path`` (cached; lowers never change)."""
        cache = self._lower_dirs
        found = cache.get(path, False)
        if found is not False:
            return found
        parent, _, name = path.rpartition("/")
        above = self._lower_dir(parent)
        found = above.child(name) if above is not None else None
        cache[path] = found
        return found

    def _root(self) -> Node:
        real = self.upper if self.upper is not None else self.lowers[0]
        return Node("", real, self.upper is not None, None, self._lower_root, False, None,
                    _S_IFDIR)

    def _child(self, parent: Node, name: str) -> Node | None:
        """The entry ``name`` of the directory ``parent``, or None (absent or whited out)."""
        if is_reserved_name(name):
            return None
        path = parent.path + "/" + name if parent.path else name
        upath = parent.real if parent.upper else None  # the parent's upper directory, if any
        lower = parent.lower
        entry = lower.entries.get(name) if lower is not None else None
        if upath is not None:
            real = upath + "/" + name
            try:
                st = _lstat(real)
            except FileNotFoundError:
                if has_aufs_whiteout(upath, name):
                    return None  # whited out: nothing older shows
            else:
                child = None
                if st.st_mode & _S_IFMT == _S_IFDIR and entry is not None and entry[1] \
                        and not is_aufs_opaque(real):
                    child = lower.child(name)
                return Node(path, real, True, st, child, entry is not None, upath)
        if entry is None:
            return None
        real, is_dir = entry
        if is_dir:  # no lstat until someone asks: most are only passed through
            return Node(path, real, False, None, lower.child(name), True, upath, _S_IFDIR)
        return Node(path, real, False, _lstat(real), None, True, upath)

    def _find(self, parts: list[str]) -> Node | None:
        """Look up canonical components ``parts`` (no '..', no symlink). None if absent;
        NotADirectoryError through a non-directory."""
        node = self._root()
        for name in parts:
            if not node.is_dir:
                raise _err(errno.ENOTDIR, node.path)
            node = self._child(node, name)
            if node is None:
                return None
        return node

    def _resolve(self, path: str, follow: bool) -> tuple[list[str], Node | None]:
        """Canonical components of ``path`` and its node; symlinks (all of them in the middle,
        the last one if ``follow``) are resolved inside the view, as if it were the root."""
        return walk(path, self._root(), self._lookup, _link_target, follow)

    def _lookup(self, parent: Node, name: str) -> tuple[Node, int] | None:
        node = self._child(parent, name)
        return None if node is None else (node, node.mode)

    def _node(self, path: str, follow: bool = False) -> Node:
        node = self._resolve(path, follow)[1]
        if node is None:
            raise _err(errno.ENOENT, path)
        return node

    def lookup(self, path: str) -> Node | None:
        """The node at ``path`` (last symlink not followed), or None."""
        return self._resolve(path, False)[1]

    def realpath(self, path: str) -> str:
        """The canonical view path of ``path`` with every symlink resolved inside the view."""
        parts, _ = self._resolve(path, True)
        return "/" + "/".join(parts)

    # ------------------------------------------------------------------ reading
    def lstat(self, path: str) -> os.stat_result:
        return self._node(path).st

    def stat(self, path: str, follow_symlinks: bool = True) -> os.stat_result:
        return self._node(path, follow_symlinks).st

    def lexists(self, path: str) -> bool:
        try:
            return self._resolve(path, False)[1] is not None
        except OSError:
            return False

    def exists(self, path: str) -> bool:
        try:
            return self._resolve(path, True)[1] is not None
        except OSError:
            return False

    def isdir(self, path: str) -> bool:
        try:
            node = self._resolve(path, True)[1]
        except OSError:
            return False
        return node is not None and node.is_dir

    def islink(self, path: str) -> bool:
        try:
            node = self._resolve(path, False)[1]
        except OSError:
            return False
        return node is not None and node.mode == _S_IFLNK

    def readlink(self, path: str) -> str:
        node = self._node(path)
        if node.mode != _S_IFLNK:
            raise _err(errno.EINVAL, path)
        return os.readlink(node.real)

    def _names(self, node: Node) -> dict[str, str]:
        """Visible names of the directory ``node``: name -> real path of the entry."""
        if not node.is_dir:
            raise _err(errno.ENOTDIR, node.path)
        names: dict[str, str] = {}
        hidden: set = set()
        if node.upper:
            with os.scandir(node.real) as it:
                for entry in it:
                    name = entry.name
                    if is_reserved_name(name):
                        if is_whiteout_name(name):
                            hidden.add(whited_out(name))
                    else:
                        names[name] = entry.path
        if node.lower is not None:
            for name, entry in node.lower.entries.items():
                if entry is not None and name not in names and name not in hidden:
                    names[name] = entry[0]
        return names

    def listdir(self, path: str = "/") -> list[str]:
        """Visible names in the directory ``path`` (symlinks followed), unsorted."""
        return list(self._names(self._node(path, True)))

    def scandir(self, path: str = "/") -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of each visible entry of ``path``."""
        return [(name, _lstat(real)) for name, real in self._names(self._node(path, True)).items()]

    def listxattr(self, path: str, follow_symlinks: bool = True) -> list[str]:
        node = self._node(path, follow_symlinks)
        return [n for n in os.listxattr(node.real, follow_symlinks=False)
                if not is_overlay_private_xattr(n)]

    def getxattr(self, path: str, name: str, follow_symlinks: bool = True) -> bytes:
        return os.getxattr(self._node(path, follow_symlinks).real, name, follow_symlinks=False)

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
        """A real file descriptor on ``path``: the upper copy when opened for writing (copied up
        first), the newest branch's file otherwise. ``O_NOFOLLOW`` is honoured for the last
        component; symlinks never lead outside the view."""
        return self.open_entry(path, flags, mode)[0]

    def open_entry(self, path: str, flags: int = os.O_RDONLY,
                   mode: int = 0o666) -> tuple[int, bool]:
        """``open``, and whether the descriptor is on a lower branch's file: such a file never
        changes (a change copies it up first), so its content may be cached (the FUSE mount
        keeps the kernel's page cache of it across opens)."""
        follow = not flags & os.O_NOFOLLOW
        parts, node = self._resolve(path, follow)
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if node is None:
            if not flags & os.O_CREAT:
                raise _err(errno.ENOENT, path)
            if not parts:
                raise _err(errno.EISDIR, path)
            name = parts[-1]
            _check_name(name, path)
            parent = self._writable_parent(parts, path)
            remove_aufs_whiteout(parent, name)
            return os.open(parent + "/" + name, flags | os.O_EXCL, mode), False
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise _err(errno.EEXIST, path)
        if node.mode == _S_IFLNK:
            raise _err(errno.ELOOP, path)
        if (flags & _ACCMODE or flags & os.O_TRUNC) and not node.upper:
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            return os.open(self._copy_up(node, data=not flags & os.O_TRUNC),
                           flags & ~os.O_CREAT, mode), False
        return os.open(node.real, flags & ~os.O_CREAT, mode), not node.upper

    def read_file(self, path: str) -> bytes:
        fd = self.open(path)
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ copy_up
    def _need_upper(self, path: str) -> str:
        if self.upper is None:
            raise _err(errno.EROFS, path)
        return self.upper

    def _upper_dir(self, parts: list[str], path: str) -> str:
        """The real upper directory for the canonical directory ``parts``, copied up if needed."""
        upper = self._need_upper(path)
        if not parts:
            return upper
        node = self._find(parts)
        if node is None:
            raise _err(errno.ENOENT, path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        return node.real if node.upper else self._copy_up(node)

    def _writable_parent(self, parts: list[str], path: str) -> str:
        return self._upper_dir(parts[:-1], path)

    def copy_up(self, path: str) -> str:
        """Copy the entry at ``path`` (last symlink not followed) into the upper branch unless it
        is there already; returns its real upper path."""
        node = self._node(path)
        return node.real if node.upper else self._copy_up(node)

    def _copy_up(self, node: Node, data: bool = True) -> str:
        parts = node.path.split("/")
        parent = self._upper_dir(parts[:-1], node.path)
        target = parent + "/" + parts[-1]
        st = node.st
        kind = st.st_mode & _S_IFMT
        if kind == _S_IFDIR:
            os.mkdir(target, 0o700)
            copy_metadata(st, node.real, target)
            return target
        temp = parent + "/" + AUFS_PRIVATE_PREFIX + "copyup." + os.urandom(6).hex()
        try:
            if kind == stat.S_IFREG:
                copy_file(node.real, temp, st.st_size if data else 0)
            elif kind == _S_IFLNK:
                os.symlink(os.readlink(node.real), temp)
            else:
                os.mknod(temp, st.st_mode, st.st_rdev)
            copy_metadata(st, node.real, temp)
            os.rename(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        return target

    # ------------------------------------------------------------------ writing
    def _existing_upper(self, path: str, follow: bool) -> str:
        """The real upper path of the existing entry ``path``, copied up if needed."""
        self._need_upper(path)
        node = self._node(path, follow)
        return node.real if node.upper else self._copy_up(node, data=True)

    def chmod(self, path: str, mode: int, follow_symlinks: bool = True) -> None:
        real = self._existing_upper(path, follow_symlinks)
        if stat.S_ISLNK(os.lstat(real).st_mode):  # Linux has no mode on symlinks
            raise _err(errno.EOPNOTSUPP, path)
        os.chmod(real, mode)

    def chown(self, path: str, uid: int, gid: int, follow_symlinks: bool = True) -> None:
        os.chown(self._existing_upper(path, follow_symlinks), uid, gid, follow_symlinks=False)

    def utime(self, path: str, times=None, *, ns=None, follow_symlinks: bool = True) -> None:
        real = self._existing_upper(path, follow_symlinks)
        if ns is not None:
            os.utime(real, ns=ns, follow_symlinks=False)
        else:
            os.utime(real, times, follow_symlinks=False)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0,
                 follow_symlinks: bool = True) -> None:
        real = self._existing_upper(path, follow_symlinks)
        os.setxattr(real, name, value, flags, follow_symlinks=False)

    def removexattr(self, path: str, name: str, follow_symlinks: bool = True) -> None:
        os.removexattr(self._existing_upper(path, follow_symlinks), name, follow_symlinks=False)

    def truncate(self, path: str, length: int) -> None:
        self._need_upper(path)
        node = self._node(path, True)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
        real = node.real if node.upper else self._copy_up(node, data=length > 0)
        os.truncate(real, length)

    def _new_entry(self, path: str) -> tuple[str, str, Node | None]:
        """For creating ``path``: (real upper parent dir, name, node already there or None)."""
        self._need_upper(path)
        parts, node = self._resolve(path, False)
        if not parts:
            raise _err(errno.EEXIST, path)
        name = parts[-1]
        _check_name(name, path)
        return self._writable_parent(parts, path), name, node

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        parent, name, node = self._new_entry(path)
        if node is not None:
            raise _err(errno.EEXIST, path)
        replaced = remove_aufs_whiteout(parent, name)
        target = parent + "/" + name
        os.mkdir(target, mode)
        if replaced:  # a lower directory of that name was deleted: keep its contents hidden
            set_aufs_opaque(target)

    def symlink(self, target: str, path: str) -> None:
        parent, name, node = self._new_entry(path)
        if node is not None:
            raise _err(errno.EEXIST, path)
        remove_aufs_whiteout(parent, name)
        os.symlink(target, parent + "/" + name)

    def mknod(self, path: str, mode: int = 0o600, device: int = 0) -> None:
        parent, name, node = self._new_entry(path)
        if node is not None:
            raise _err(errno.EEXIST, path)
        remove_aufs_whiteout(parent, name)
        os.mknod(parent + "/" + name, mode, device)

    def mkfifo(self, path: str, mode: int = 0o666) -> None:
        self.mknod(path, stat.S_IFIFO | (mode & 0o7777))

    def link(self, src: str, dst: str, follow_symlinks: bool = False) -> None:
        """A new name ``dst`` for ``src``: a lower file is copied up first (as overlayfs does)."""
        node = self._node(src, follow_symlinks)
        if node.is_dir:
            raise _err(errno.EPERM, src)
        parent, name, existing = self._new_entry(dst)
        if existing is not None:
            raise _err(errno.EEXIST, dst)
        real = self._existing_upper(src, follow_symlinks)
        remove_aufs_whiteout(parent, name)
        os.link(real, parent + "/" + name, follow_symlinks=False)

    def unlink(self, path: str) -> None:
        self._need_upper(path)
        node = self._node(path)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
        self._delete(node, path)

    remove = unlink

    def _delete(self, node: Node, path: str) -> None:
        parts = node.path.split("/")
        if node.upper:
            if node.is_dir:
                _remove_branch_dir(node.real)
            else:
                os.unlink(node.real)
            parent = node.upper_parent
        else:
            parent = self._writable_parent(parts, path)
        if node.in_lower:
            make_aufs_whiteout(parent, parts[-1])

    def rmdir(self, path: str) -> None:
        self._need_upper(path)
        node = self._node(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        if not node.path:
            raise _err(errno.EBUSY, path)
        if self._names(node):
            raise _err(errno.ENOTEMPTY, path)
        self._delete(node, path)

    def rmtree(self, path: str) -> None:
        """Remove ``path`` and everything below it (a symlink itself, never its target)."""
        node = self._node(path)
        if node.is_dir:
            for name in self._names(node):
                self.rmtree(node.path + "/" + name)
            self.rmdir("/" + node.path)
        else:
            self.unlink("/" + node.path)

    def rename(self, old: str, new: str) -> None:
        """rename(2) in the view; EXDEV for a directory that has lower contents."""
        self._need_upper(old)
        src = self._node(old)
        if not src.path:
            raise _err(errno.EBUSY, old)
        new_parts, dst = self._resolve(new, False)
        if not new_parts:
            raise _err(errno.EBUSY, new)
        dst_name = new_parts[-1]
        _check_name(dst_name, new)
        if dst is not None and dst.path == src.path:
            return
        if src.is_dir:
            if src.lower is not None or not src.upper:
                raise _err(errno.EXDEV, old)
            if ("/".join(new_parts) + "/").startswith(src.path + "/"):
                raise _err(errno.EINVAL, new)
        if dst is not None:
            if dst.is_dir:
                if not src.is_dir:
                    raise _err(errno.EISDIR, new)
                if self._names(dst):
                    raise _err(errno.ENOTEMPTY, new)
            elif src.is_dir:
                raise _err(errno.ENOTDIR, new)
        dst_parent = self._writable_parent(new_parts, new)
        real = src.real if src.upper else self._copy_up(src)
        src_parent, _, src_name = real.rpartition("/")
        target = dst_parent + "/" + dst_name
        if dst is not None and dst.is_dir and dst.upper:
            _remove_branch_dir(dst.real)
        replaced = remove_aufs_whiteout(dst_parent, dst_name)
        os.rename(real, target)
        hides_lower = replaced or (dst is not None and dst.in_lower)
        if src.is_dir and hides_lower and not is_aufs_opaque(target):
            set_aufs_opaque(target)
        if src.in_lower:
            make_aufs_whiteout(src_parent, src_name)

    # ------------------------------------------------------------------ convenience
    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def walk(self, path: str = "/"):
        """(view path, lstat) of every entry below ``path``, parents before children."""
        start = self._node(path, True)
        stack = [start]
        while stack:
            node = stack.pop()
            base = "/" + node.path if node.path else ""
            for name, real in sorted(self._names(node).items()):
                st = _lstat(real)
                yield base + "/" + name, st
                if st.st_mode & _S_IFMT == _S_IFDIR:
                    child = self._find(_split(node.path) + [name])
                    if child is not None:
                        stack.append(child)

    def tar_entries(self, path: str = "/"):
        """(tar name, real path, lstat) of every entry below ``path`` as bytes, in the order of
        ``layertar.write_tree_tar`` over a mount of the view: names sorted, each directory just
        before its contents."""
        return self._tar_below(self._node(path, True), b"")

    def _tar_below(self, node: Node, prefix: bytes):
        for name, real in sorted((os.fsencode(n), r) for n, r in self._names(node).items()):
            st = _lstat(real)
            yield prefix + name, os.fsencode(real), st
            if st.st_mode & _S_IFMT == _S_IFDIR:
                child = self._find(_split(node.path) + [os.fsdecode(name)])
                yield from self._tar_below(child, prefix + name + b"/")


def write_view_tar(out, view: UnionView):
    """Write the merged tree of ``view`` as a tar to ``out`` (``lamina export`` on the union
    driver): the bytes ``layertar.write_tree_tar`` writes from a mount of it, with no mount."""
    from .layertar import TarWriter

    writer = TarWriter(out)
    for name, real, st in view.tar_entries():
        writer.entry(name, real, st)
    return writer.finish()


# ---------------------------------------------------------------------- copying


def _remove_branch_dir(path: str) -> None:
    """Remove a real upper directory that the view shows empty (it may hold whiteouts)."""
    import shutil

    shutil.rmtree(path)


# ---------------------------------------------------------------------- changes of a branch


def _xattrs(path: str) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if not is_overlay_private_xattr(name):
            try:
                out[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                pass
    return out


def branch_changes(upper: str, lowers: list[str]) -> list:
    """Docker's A/C/D changes recorded in the AUFS-format branch ``upper`` over ``lowers``
    (newest first), sorted by path: the same rules as ``changes.overlay_changes``."""
    from .changes import Change

    view = UnionView(lowers)
    out: list = []

    def walk(rel: str, lower: "_LowerDir | None") -> bool:
        real_dir = upper + ("/" + rel if rel else "")
        changed = False
        with os.scandir(real_dir) as it:
            entries = list(it)
        names = {e.name for e in entries if not is_reserved_name(e.name)}
        opaque = False
        for entry in entries:
            name = entry.name
            path = (rel + "/" if rel else "") + name
            if is_reserved_name(name):
                if is_opaque_marker(name):
                    opaque = True
                elif is_whiteout_name(name) and whited_out(name) not in names:
                    out.append(Change("D", "/" + (rel + "/" if rel else "") + whited_out(name)))
                    changed = True
                continue
            below = lower.entries.get(name) if lower is not None else None
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                out.append(Change("A" if below is None else "C", "/" + path))
                changed = True
                continue
            child = lower.child(name) if below is not None and below[1] else None
            inner = walk(path, child)  # an opaque dir still compares with what it hides
            if below is None:
                out.append(Change("A", "/" + path))
            elif inner or not below[1] or not _same_dir(below[0], entry.path, st):
                out.append(Change("C", "/" + path))
            else:
                continue
            changed = True
        if opaque and rel and lower is not None:
            for name, entry in lower.entries.items():
                if entry is not None and name not in names:
                    out.append(Change("D", "/" + rel + "/" + name))
                    changed = True
        return changed

    walk("", view._lower_root)
    out.sort(key=lambda change: change.path)
    return out


def _same_dir(old: str, new: str, new_st: os.stat_result) -> bool:
    old_st = os.lstat(old)
    return (old_st.st_mode == new_st.st_mode and old_st.st_uid == new_st.st_uid
            and old_st.st_gid == new_st.st_gid and _xattrs(old) == _xattrs(new))
