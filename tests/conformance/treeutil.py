"""Flat-reference helpers: edit a directory tree, record it, compare two trees.

Every conformance step applies the same edits twice: through a snapshot's mount and to a plain
reference directory. ``snapshot_tree`` then records both and ``assert_same_tree`` compares them.

An edit is a tuple whose first item names the operation (paths are relative to the root)::

    ("write", path, data[, mode])     create or overwrite in place (O_TRUNC, never a new inode)
    ("append", path, data)
    ("truncate", path, size)
    ("chmod", path, mode)             mode may carry setuid, setgid and sticky bits
    ("chown", path, uid, gid)         does not follow a symlink
    ("utime", path, seconds)          atime and mtime, does not follow a symlink
    ("mkdir", path[, mode])
    ("rmtree", path)                  a tree, a file or a symlink
    ("unlink", path)
    ("symlink", path, target)
    ("hardlink", path, existing)
    ("rename", old, new)
    ("setxattr", path, name, value)
    ("mkfifo", path[, mode])

Edits that change content or create a file or symlink set its mtime to ``mtime`` (whole seconds, as
layer tars keep them), so a reference and a snapshot get identical times. Use a different ``mtime``
for each step: a full-tree differ may trust size + mtime instead of reading content.
"""

import errno
import hashlib
import os
import shutil
import stat
from collections import namedtuple

Entry = namedtuple("Entry", "type mode uid gid content xattrs mtime_ns links")
Entry.__doc__ = """One recorded path. ``mode`` is S_IMODE (setuid, setgid, sticky included);
``content`` the sha256 of a file, a symlink's target or a device number; ``mtime_ns`` only for
regular files and symlinks; ``links`` the sorted paths sharing the inode (None when alone)."""

DEFAULT_MTIME = 1_600_000_000
_OVERLAY_XATTR = "trusted.overlay."

# A v2 vfs_cap_data: magic 0x02000000 | effective, permitted = CAP_NET_BIND_SERVICE (bit 10).
CAPABILITY = (b"\x01\x00\x00\x02" + (1 << 10).to_bytes(4, "little") + bytes(4)
              + bytes(4) + bytes(4))


class LocalFS:
    """The file-system calls the helpers make, on real paths. Another object with the same
    methods (``lamina.union.UnionView``: the union driver's Python API) runs the same edits and
    records the same trees without a mount."""

    open, chmod, chown, utime, mkdir, unlink = os.open, os.chmod, os.chown, os.utime, os.mkdir, os.unlink
    symlink, link, rename, setxattr, mkfifo, truncate = (os.symlink, os.link, os.rename,
                                                         os.setxattr, os.mkfifo, os.truncate)
    readlink, listxattr, getxattr = os.readlink, os.listxattr, os.getxattr
    lexists, isdir, islink = (staticmethod(os.path.lexists), staticmethod(os.path.isdir),
                              staticmethod(os.path.islink))

    @staticmethod
    def rmtree(path: str) -> None:
        shutil.rmtree(path)

    @staticmethod
    def scandir(path: str) -> list:
        with os.scandir(path) as it:
            return [(entry.name, entry.stat(follow_symlinks=False)) for entry in it]


LOCAL = LocalFS()


def _path(root: str, rel: str) -> str:
    return os.path.join(root, rel.lstrip("/"))


def _touch(path: str, mtime: int, fs=LOCAL) -> None:
    fs.utime(path, (mtime, mtime), follow_symlinks=False)


def apply_edits(root: str, edits, mtime: int = DEFAULT_MTIME, fs=LOCAL) -> None:
    """Apply ``edits`` (see the module docstring) to the tree under ``root``, in order, through
    ``fs`` (real paths by default; see :class:`LocalFS`)."""
    for edit in edits:
        op, rel, *args = edit
        path = _path(root, rel)
        if op == "write":
            data, mode = args[0], (args[1] if len(args) > 1 else None)
            existed = fs.lexists(path)
            fd = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            if mode is not None or not existed:
                fs.chmod(path, 0o644 if mode is None else mode)
            _touch(path, mtime, fs)
        elif op == "append":
            fd = fs.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                os.write(fd, args[0])
            finally:
                os.close(fd)
            _touch(path, mtime, fs)
        elif op == "truncate":
            fs.truncate(path, args[0])
            _touch(path, mtime, fs)
        elif op == "chmod":
            fs.chmod(path, args[0])
        elif op == "chown":
            fs.chown(path, args[0], args[1], follow_symlinks=False)
        elif op == "utime":
            _touch(path, args[0], fs)
        elif op == "mkdir":
            fs.mkdir(path)
            fs.chmod(path, args[0] if args else 0o755)
        elif op == "rmtree":
            if fs.isdir(path) and not fs.islink(path):
                fs.rmtree(path)
            else:
                fs.unlink(path)
        elif op == "unlink":
            fs.unlink(path)
        elif op == "symlink":
            fs.symlink(args[0], path)
            _touch(path, mtime, fs)
        elif op == "hardlink":
            fs.link(_path(root, args[0]), path, follow_symlinks=False)
        elif op == "rename":
            fs.rename(path, _path(root, args[0]))
        elif op == "setxattr":
            fs.setxattr(path, args[0], args[1], follow_symlinks=False)
        elif op == "mkfifo":
            fs.mkfifo(path)
            fs.chmod(path, args[0] if args else 0o644)
        else:
            raise ValueError(f"unknown edit {op!r}")


def build_reference(root: str, steps) -> str:
    """Make ``root`` (created if missing, mode 0755) the result of ``steps``: (edits, mtime) pairs."""
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    for edits, mtime in steps:
        apply_edits(root, edits, mtime)
    return root


def _xattrs(path: str, fs=LOCAL) -> tuple:
    try:
        names = fs.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    pairs = []
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR):
            continue
        pairs.append((name, fs.getxattr(path, name, follow_symlinks=False)))
    return tuple(pairs)


def _file_hash(path: str, fs=LOCAL) -> str:
    digest = hashlib.sha256()
    with open(fs.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_tree(root: str, fs=LOCAL) -> dict:
    """Record every path under ``root`` (not ``root`` itself) as an :class:`Entry`, keyed "/a/b"
    (read through ``fs``, see :class:`LocalFS`)."""
    entries = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [(root.rstrip("/"), "")]
    while stack:
        directory, rel = stack.pop()
        for name, st in fs.scandir(directory or "/"):
            path = rel + "/" + name
            child_path = directory + "/" + name
            mode = st.st_mode
            mtime = None
            if stat.S_ISDIR(mode):
                kind, content = "dir", None
                stack.append((child_path, path))
            elif stat.S_ISREG(mode):
                kind, content, mtime = "file", _file_hash(child_path, fs), st.st_mtime_ns
                inodes.setdefault((st.st_dev, st.st_ino), []).append(path)
            elif stat.S_ISLNK(mode):
                kind, content, mtime = "symlink", fs.readlink(child_path), st.st_mtime_ns
            elif stat.S_ISFIFO(mode):
                kind, content = "fifo", None
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = "chr" if stat.S_ISCHR(mode) else "blk"
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                kind, content = "socket", None
            entries[path] = Entry(kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, content,
                                  _xattrs(child_path, fs), mtime, None)
    for paths in inodes.values():
        if len(paths) > 1:
            group = tuple(sorted(paths))
            for path in paths:
                entries[path] = entries[path]._replace(links=group)
    return entries


def _describe(entry: Entry) -> str:
    fields = [entry.type, oct(entry.mode), f"{entry.uid}:{entry.gid}"]
    if entry.content is not None:
        content = entry.content
        fields.append(content[:12] if entry.type == "file" else repr(content))
    if entry.xattrs:
        fields.append("xattrs=" + ",".join(name for name, _ in entry.xattrs))
    if entry.mtime_ns is not None:
        fields.append(f"mtime={entry.mtime_ns}")
    if entry.links:
        fields.append("links=" + ",".join(entry.links))
    return " ".join(fields)


def tree_diff(a, b) -> list[str]:
    """Human-readable differences between two trees (paths or ``snapshot_tree`` results)."""
    a = snapshot_tree(a) if isinstance(a, str) else a
    b = snapshot_tree(b) if isinstance(b, str) else b
    lines = []
    for path in sorted(a.keys() | b.keys()):
        left, right = a.get(path), b.get(path)
        if left == right:
            continue
        if right is None:
            lines.append(f"- {path}: {_describe(left)}  (only in the first tree)")
        elif left is None:
            lines.append(f"+ {path}: {_describe(right)}  (only in the second tree)")
        else:
            changed = [f"{field}: {getattr(left, field)!r} != {getattr(right, field)!r}"
                       for field in Entry._fields if getattr(left, field) != getattr(right, field)]
            lines.append(f"~ {path}: " + "; ".join(changed))
    return lines


def assert_same_tree(a, b, what: str = "trees") -> None:
    """Fail with a per-path diff unless ``a`` and ``b`` (paths or snapshots) hold the same tree."""
    lines = tree_diff(a, b)
    if lines:
        shown = lines[:40] + ([f"... and {len(lines) - 40} more"] if len(lines) > 40 else [])
        raise AssertionError(f"{what} differ:\n  " + "\n  ".join(shown))


# A base layer that carries every kind of metadata a layer must keep. Owners are set before modes:
# chown(2) of a regular file clears setuid, setgid and file capabilities, even for root.
RICH_BASE = [
    ("mkdir", "bin"),
    ("write", "bin/busybox", b"\x7fELF busybox" * 200, 0o755),
    ("hardlink", "bin/ls", "bin/busybox"),
    ("symlink", "bin/sh", "busybox"),
    ("write", "bin/su", b"\x7fELF su", 0o4755),
    ("write", "bin/wall", b"\x7fELF wall", 0o755),
    ("chown", "bin/wall", 0, 5),
    ("chmod", "bin/wall", 0o2755),
    ("write", "bin/ping", b"\x7fELF ping", 0o755),
    ("setxattr", "bin/ping", "security.capability", CAPABILITY),
    ("mkdir", "etc"),
    ("write", "etc/hostname", b"base\n"),
    ("setxattr", "etc/hostname", "user.comment", b"\x00binary\xff"),
    ("write", "etc/shadow", b"root:*:19000::::::\n", 0o640),
    ("chown", "etc/shadow", 0, 42),
    ("symlink", "etc/localtime", "/usr/share/zoneinfo/UTC"),
    ("symlink", "etc/mtab", "../proc/self/mounts"),
    ("mkdir", "tmp", 0o1777),
    ("mkfifo", "tmp/fifo", 0o620),
    ("mkdir", "root", 0o700),
    ("mkdir", "home"),
    ("mkdir", "home/user", 0o750),
    ("chown", "home/user", 1000, 1000),
    ("write", "home/user/.profile", b"export PS1='$ '\n", 0o600),
    ("chown", "home/user/.profile", 1000, 1000),
    ("mkdir", "srv", 0o2775),
    ("chown", "srv", 0, 50),
    ("setxattr", "srv", "user.dir", b"yes"),
    ("mkdir", "empty"),
    ("mkdir", "var"),
    ("mkdir", "var/empty", 0o711),
    ("write", "var/zero", b""),
]
