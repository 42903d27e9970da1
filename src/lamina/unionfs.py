"""The union driver's FUSE mount: a :class:`lamina.union.UnionView` served through libfuse3.

``mount_union(mount, target)`` starts one background daemon per mount (``python -m
lamina.unionfs``) and returns once the kernel has the mount; unmounting (umount2 as root,
``fusermount3 -u`` otherwise) ends the daemon. The binding is mfusepy, a maintained ctypes binding
of libfuse3's high-level (path) API: it needs no compiler and no libfuse headers, only Debian's
``libfuse3-3``. Every operation is the view's own: the daemon adds only file handles (real file
descriptors of the branch files), the caller's ownership on new entries, and the translation to
errno.

Three things keep the daemon off the data path, where Python would cost most:

* reads are answered with ``read_buf``: a ``fuse_bufvec`` naming the branch file's descriptor
  (``FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK``), so libfuse moves the bytes itself (splice where the
  kernel allows it) and Python never holds them;
* a file opened in a lower branch keeps the kernel's page cache across opens (``keep_cache``):
  lower branches never change, since any change copies the file up first, and a file opened in the
  upper branch drops that cache again;
* listings carry each entry's attributes (readdirplus), so ``find`` or ``ls -l`` need no lookup
  per entry.
"""

import ctypes
import errno
import os
import stat
import sys

from .errors import LaminaError, Unavailable

_S_IFDIR = stat.S_IFDIR
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
READY_TIMEOUT = 10.0

# libfuse 3 constants (fuse_common.h, fuse.h)
_FUSE_BUF_IS_FD = 1 << 1
_FUSE_BUF_FD_SEEK = 1 << 2
_FUSE_CAP_SPLICE_WRITE = 1 << 7
_FUSE_CAP_SPLICE_MOVE = 1 << 8
_FUSE_READDIR_PLUS = 1 << 0
_FUSE_FILL_DIR_PLUS = 1 << 1


class _FuseBuf(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


class _FuseBufvec(ctypes.Structure):
    """struct fuse_bufvec with its one inline buffer (mfusepy declares ``buf`` as a pointer)."""

    _fields_ = [("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("buf", _FuseBuf * 1)]


def _stat_dict(st: os.stat_result) -> dict:
    return {"st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
            "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": st.st_size,
            "st_rdev": st.st_rdev, "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}


def _operations(view, ready_fd: int | None):
    """The mfusepy Operations object serving ``view``."""
    import mfusepy

    euid = os.geteuid()

    class UnionOperations(mfusepy.Operations):
        use_ns = True

        def init_with_config(self, conn, config):
            if conn is not None:  # let libfuse splice a descriptor's data to the kernel
                conn.want |= conn.capable & (_FUSE_CAP_SPLICE_WRITE | _FUSE_CAP_SPLICE_MOVE)
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)

        def _owner(self, path: str, directory: bool = False) -> None:
            uid, gid, _ = mfusepy.fuse_get_context()
            if uid == euid and gid == os.getegid():
                return
            real = view.lookup(path).real
            parent_setgid = os.lstat(os.path.dirname(real)).st_mode & stat.S_ISGID
            os.chown(real, uid, -1 if parent_setgid else gid, follow_symlinks=False)

        # -- reading
        def getattr(self, path, fh=None):
            if fh is not None:
                return _stat_dict(os.fstat(fh))
            return _stat_dict(view.lstat(path))

        def readlink(self, path):
            return view.readlink(path)

        def readdir(self, path, fh):
            # (name, attrs, 0): libfuse would send inode 0 for bare names, which hides them
            st = view.stat(path)
            out = [(".", {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0),
                   ("..", {"st_mode": _S_IFDIR, "st_ino": 1}, 0)]
            for name, child in view.scandir(path):
                out.append((name, {"st_mode": child.st_mode, "st_ino": child.st_ino}, 0))
            return out

        def getxattr(self, path, name, position=0):
            try:
                return view.getxattr(path, name, follow_symlinks=False)
            except OSError as error:
                if error.errno == errno.ENODATA:
                    raise mfusepy.FuseOSError(errno.ENODATA) from None
                raise

        def listxattr(self, path):
            return view.listxattr(path, follow_symlinks=False)

        def statfs(self, path):
            sv = os.statvfs(view.upper or view.lowers[0])
            return {key: getattr(sv, key) for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                "f_favail", "f_namemax")}

        # -- files
        def open(self, path, flags):
            return view.open(path, flags | os.O_NOFOLLOW)

        def create(self, path, mode, flags=os.O_WRONLY):
            fd = view.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            self._owner(path)
            return fd

        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        # served by _fuse_class()'s own methods; defined here so that mfusepy registers them
        def read_buf(self, path, bufpp, size, offset, fh):
            raise AssertionError("unreachable")  # pragma: no cover

        def opendir(self, path):
            raise AssertionError("unreachable")  # pragma: no cover

        def releasedir(self, path, fh):
            raise AssertionError("unreachable")  # pragma: no cover

        def write(self, path, data, offset, fh):
            return os.pwrite(fh, data, offset)

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                view.truncate(path, length)

        def fsync(self, path, datasync, fh):
            (os.fdatasync if datasync else os.fsync)(fh)

        def release(self, path, fh):
            os.close(fh)

        # -- metadata
        def chmod(self, path, mode):
            view.chmod(path, stat.S_IMODE(mode), follow_symlinks=False)

        def chown(self, path, uid, gid):
            view.chown(path, uid, gid, follow_symlinks=False)

        def utimens(self, path, times=None):
            if times is None:
                view.utime(path, None, follow_symlinks=False)
                return
            atime, mtime = times
            if _UTIME_OMIT in (atime, mtime) or _UTIME_NOW in (atime, mtime):
                import time

                st = view.lstat(path)
                now = time.time_ns()
                atime = st.st_atime_ns if atime == _UTIME_OMIT else now if atime == _UTIME_NOW else atime
                mtime = st.st_mtime_ns if mtime == _UTIME_OMIT else now if mtime == _UTIME_NOW else mtime
            view.utime(path, ns=(atime, mtime), follow_symlinks=False)

        def setxattr(self, path, name, value, options, position=0):
            view.setxattr(path, name, value, options, follow_symlinks=False)

        def removexattr(self, path, name):
            view.removexattr(path, name, follow_symlinks=False)

        # -- names
        def mkdir(self, path, mode):
            view.mkdir(path, mode)
            self._owner(path, True)

        def mknod(self, path, mode, dev):
            view.mknod(path, mode, dev)
            self._owner(path)

        def symlink(self, target, source):
            view.symlink(source, target)
            self._owner(target)

        def link(self, target, source):
            view.link(source, target)

        def unlink(self, path):
            view.unlink(path)

        def rmdir(self, path):
            view.rmdir(path)

        def rename(self, old, new):
            view.rename(old, new)

    operations = UnionOperations()
    operations.view = view
    return operations


_X86_64_STAT = {"st_dev": 0, "st_ino": 8, "st_nlink": 16, "st_mode": 24, "st_uid": 28,
                "st_gid": 32, "st_rdev": 40, "st_size": 48, "st_blksize": 56, "st_blocks": 64,
                "st_atimespec": 72, "st_mtimespec": 88, "st_ctimespec": 104}


def _stat_packer(c_stat):
    """A function turning an ``os.stat_result`` into the bytes of mfusepy's ``c_stat``: one
    struct.pack where the layout is x86_64's, field by field through ctypes elsewhere."""
    import struct

    offsets = {name: getattr(c_stat, name).offset for name, *_ in c_stat._fields_}
    if ctypes.sizeof(c_stat) == 144 and all(offsets.get(k) == v for k, v in _X86_64_STAT.items()):
        pack = struct.Struct("=3Q3I4xQ3q6q24x").pack
        second = 1_000_000_000

        def packed(st: os.stat_result) -> bytes:
            a, m, c = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
            return pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid,
                        st.st_rdev, st.st_size, st.st_blksize, st.st_blocks, a // second,
                        a % second, m // second, m % second, c // second, c % second)

        return packed

    def by_field(st: os.stat_result) -> bytes:
        out = c_stat()
        for name in ("st_dev", "st_ino", "st_nlink", "st_mode", "st_uid", "st_gid", "st_rdev",
                     "st_size", "st_blksize", "st_blocks"):
            setattr(out, name, getattr(st, name))
        for name in ("st_atime", "st_mtime", "st_ctime"):
            spec = getattr(out, name + "spec")
            spec.tv_sec, spec.tv_nsec = divmod(getattr(st, name + "_ns"), 1_000_000_000)
        return bytes(out)

    return by_field


def _fuse_class():
    """mfusepy.FUSE with the busy callbacks replaced by direct ones: ``open`` sets
    ``keep_cache`` for lower files, ``read_buf`` hands libfuse the descriptor, ``getattr`` packs
    the C struct in one go, and directories are listed once per open handle and answered with
    full attributes when the kernel asks for readdirplus."""
    import mfusepy

    c_stat = mfusepy.c_stat
    pack_stat = _stat_packer(c_stat)
    stat_size = ctypes.sizeof(c_stat)
    from_bytes = c_stat.from_buffer_copy
    libc = ctypes.CDLL(None)
    malloc = libc.malloc
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    vec_size = ctypes.sizeof(_FuseBufvec)
    vec_pointer = ctypes.POINTER(mfusepy.fuse_bufvec)
    fd_flags = _FUSE_BUF_IS_FD | _FUSE_BUF_FD_SEEK

    class UnionFUSE(mfusepy.FUSE):
        def __init__(self, *args, **kwargs):
            self._listings: dict[int, list] = {}  # open directory handle -> its entries
            self._next_dir = 0
            super().__init__(*args, **kwargs)

        def _path(self, path: bytes) -> str:
            return path.decode(self.encoding, self.errors)

        def open(self, path, fip):
            fi = fip.contents
            fi.fh, lower = self.operations.view.open_entry(self._path(path),
                                                           fi.flags | os.O_NOFOLLOW)
            if lower:
                fi.keep_cache = 1
            return 0

        def read_buf(self, path, bufpp, size, offset, fip):
            # libfuse frees the vector with free() after replying; the descriptor stays ours
            address = malloc(vec_size)
            if not address:
                return -errno.ENOMEM
            vec = _FuseBufvec.from_address(address)
            vec.count, vec.idx, vec.off = 1, 0, 0
            buf = vec.buf[0]
            buf.size, buf.flags, buf.mem, buf.fd, buf.pos = (size, fd_flags, None,
                                                             fip.contents.fh, offset)
            bufpp[0] = ctypes.cast(address, vec_pointer)
            return 0

        def fgetattr(self, path, buf, fip):
            if fip:
                st = os.fstat(fip.contents.fh)
            else:
                st = self.operations.view.lstat(self._path(path))
            ctypes.memmove(buf, pack_stat(st), stat_size)
            return 0

        def opendir(self, path, fip):
            self.operations.view.stat(self._path(path))  # ENOENT, ENOTDIR as for any open
            self._next_dir += 1
            fip.contents.fh = self._next_dir
            return 0

        def releasedir(self, path, fip):
            self._listings.pop(fip.contents.fh, None)
            return 0

        def _listing(self, path: bytes, handle: int) -> list:
            """(name, attributes, packed stat) of ".", ".." and every visible entry."""
            view = self.operations.view
            name = self._path(path)
            st = view.stat(name)
            out = [(b".", (st.st_mode, st.st_ino), None), (b"..", (_S_IFDIR, 1), None)]
            encoding, errors = self.encoding, self.errors
            for child, child_st in view.scandir(name):
                out.append((child.encode(encoding, errors), (child_st.st_mode, child_st.st_ino),
                            pack_stat(child_st)))
            self._listings[handle] = out
            return out

        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
            # Each entry carries its position as offset, so libfuse hands the kernel full
            # attributes (libfuse 3.14 drops readdirplus attributes of offset-0 entries); the
            # kernel resumes at a later offset, served from the handle's listing.
            handle = fip.contents.fh
            entries = self._listings.get(handle) if offset else None
            if entries is None:
                entries = self._listing(path, handle)
            plus = flags & _FUSE_READDIR_PLUS
            entry = c_stat()
            for position in range(offset, len(entries)):
                name, (mode, ino), packed = entries[position]
                if plus and packed is not None:
                    if filler(buf, name, from_bytes(packed), position + 1, _FUSE_FILL_DIR_PLUS):
                        break
                else:
                    entry.st_mode, entry.st_ino = mode, ino
                    if filler(buf, name, entry, position + 1, 0):
                        break
            return 0

    return UnionFUSE


def serve(lowers: list[str], upper: str | None, target: str, ready_fd: int | None = None) -> None:
    """Serve the union of ``lowers`` under ``upper`` on ``target`` until it is unmounted."""
    import logging

    from .union import UnionView

    logging.getLogger("mfusepy").addHandler(logging.NullHandler())
    logging.getLogger("mfusepy").propagate = False
    view = UnionView(lowers, upper)
    options = {"foreground": True, "nothreads": True, "use_ino": True, "readdir_ino": True,
               "default_permissions": True, "fsname": "lamina-union", "subtype": "lamina",
               "ro": upper is None}
    if os.geteuid() == 0:
        options["allow_other"] = True
        from .userns import in_user_namespace

        if not in_user_namespace():  # a user namespace's mounts are nodev, nosuid by force
            options["dev"] = True
            options["suid"] = True
    _fuse_class()(_operations(view, ready_fd), target, **options)


def mount_union(mount, target: str) -> None:
    """Start the FUSE daemon for ``mount`` (a Mount of type "union") on ``target``; return once
    the mount is live. The daemon outlives the caller and exits when ``target`` is unmounted."""
    import select
    import subprocess
    import tempfile

    if not os.path.exists("/dev/fuse"):
        raise Unavailable("the union driver's mount needs /dev/fuse")
    lowers = mount.lowers()
    upper = mount.upper()
    args = [sys.executable, "-m", "lamina.unionfs", "--lowerdir", ":".join(lowers)]
    if upper is not None:
        args += ["--upperdir", upper]
    args.append(target)
    read_end, write_end = os.pipe()
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args + ["--ready-fd", str(write_end)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, pass_fds=(write_end,),
                                start_new_session=True, env=env, close_fds=True)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
            ok = bool(ready) and os.read(read_end, 1) == b"1"
        finally:
            os.close(read_end)
        if not ok:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.seek(0)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
            reason = lines[-1] if lines else "no output"
            raise LaminaError(f"union mount on {target} failed: {reason}")


def unmount_union(target: str) -> None:
    """Unmount a union FUSE mount as a user who may not umount2(2) it: ``fusermount3 -u``."""
    import subprocess

    proc = subprocess.run(["fusermount3", "-u", target], check=False, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise LaminaError(f"umount {target}: {proc.stderr.strip() or 'fusermount3 failed'}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    lowers: list[str] = []
    upper = None
    ready_fd = None
    target = None
    while argv:
        arg = argv.pop(0)
        if arg == "--lowerdir":
            lowers = [d for d in argv.pop(0).split(":") if d]
        elif arg == "--upperdir":
            upper = argv.pop(0)
        elif arg == "--ready-fd":
            ready_fd = int(argv.pop(0))
        else:
            target = arg
    if target is None:
        print("usage: python -m lamina.unionfs --lowerdir A:B [--upperdir U] TARGET",
              file=sys.stderr)
        sys.exit(2)
    try:
        serve(lowers, upper, target, ready_fd)
    except Exception as error:  # noqa: BLE001 - reported to mount_union through stderr
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
