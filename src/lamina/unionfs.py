"""The union driver's FUSE mount: a :class:`lamina.union.UnionView` served through libfuse3.

``mount_union(mount, target)`` starts one background daemon per mount (``python -m
lamina.unionfs``) and returns once the kernel has the mount; unmounting (umount2 as root,
``fusermount3 -u`` otherwise) ends the daemon. The binding is mfusepy, a maintained ctypes binding
of libfuse3's high-level (path) API: it needs no compiler and no libfuse headers, only Debian's
``libfuse3-3``. Every operation is the view's own: the daemon adds only file handles (real file
descriptors of the branch files, so reads and writes are one ``pread``/``pwrite``), the caller's
ownership on new entries, and the translation to errno.
"""

import errno
import os
import stat
import sys

from .errors import LaminaError, Unavailable

_S_IFDIR = stat.S_IFDIR
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
READY_TIMEOUT = 10.0


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

        def init(self, path):
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

        def write(self, path, data, offset, fh):
            return os.pwrite(fh, data, offset)

        def truncate(self, path, length, fh=None):
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                view.truncate(path, length)

        def flush(self, path, fh):
            return 0

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

    return UnionOperations()


def serve(lowers: list[str], upper: str | None, target: str, ready_fd: int | None = None) -> None:
    """Serve the union of ``lowers`` under ``upper`` on ``target`` until it is unmounted."""
    import logging

    import mfusepy

    from .union import UnionView

    logging.getLogger("mfusepy").addHandler(logging.NullHandler())
    logging.getLogger("mfusepy").propagate = False
    view = UnionView(lowers, upper)
    options = {"foreground": True, "nothreads": True, "use_ino": True, "readdir_ino": True,
               "default_permissions": True, "fsname": "lamina-union", "subtype": "lamina",
               "ro": upper is None}
    if os.geteuid() == 0:
        options["allow_other"] = True
        options["dev"] = True
        options["suid"] = True
    mfusepy.FUSE(_operations(view, ready_fd), target, **options)


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
