"""File-tree helpers shared by the drivers: apparent usage, fast metadata-exact copies, removal.

Copies keep each entry's metadata under one policy (:func:`copy_metadata`): as root everything is
kept or the copy fails; for a user without privileges the copy stays owned by that user and the
xattrs only root may set (``trusted.*``) are skipped, as the kernel's overlayfs does for an
unprivileged copy-up. Security labels (``security.*``) that the target refuses are skipped for
everyone.
"""

import errno
import os
import stat

from .whiteouts import is_overlay_private_xattr

FICLONE = 0x40049409
_CHUNK = 1 << 30


def tree_usage(root: str) -> tuple[int, int]:
    """(bytes, inodes) of the tree under ``root``, not counting ``root`` itself.

    Bytes are the apparent sizes of non-directories (what ``docker ps -s`` counts); each inode is
    counted once, so hard links do not double the size. What another process deletes during the
    walk is not counted (``ps -s`` or ``system df`` beside a ``rm`` or prune never fails on it).
    """
    size = 0
    seen = set()
    stack = [root]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except FileNotFoundError:  # removed while it was measured: it adds nothing
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                else:
                    size += st.st_size
    return size, len(seen)


def disk_usage(paths, known: dict | None = None) -> int:
    """What ``du -sb PATHS`` prints: apparent sizes of every entry under ``paths``, the
    directories themselves included, each inode once. ``known``: directories whose usage was
    measured already (path -> bytes), counted as that instead of walked again."""
    total = 0
    seen = set()
    stack = list(paths)
    known = known or {}
    while stack:
        path = stack.pop()
        if path in known:
            total += known[path]
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_nlink > 1 or stat.S_ISDIR(st.st_mode):  # only these can be met twice: a
            key = (st.st_dev, st.st_ino)  # set of every inode would grow with the tree
            if key in seen:
                continue
            seen.add(key)
        total += st.st_size
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(path) as it:
                    names = [entry.path for entry in it]
            except FileNotFoundError:
                continue
            stack.extend(names)
    return total


def copy_xattrs(src: str, dst: str) -> None:
    """Copy extended attributes (except overlayfs' private ones) without following symlinks;
    those that cannot be set are skipped as :func:`copy_metadata` says."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if is_overlay_private_xattr(name):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
        except OSError as error:
            if not (name.startswith("security.") or _unprivileged(error)):
                raise


def _unprivileged(error: OSError) -> bool:
    """Whether ``error`` is a refusal that only root would not get."""
    return error.errno == errno.EPERM and os.geteuid() != 0


def copy_file(src: str, dst: str, size: int | None = None) -> str:
    """Create ``dst`` (mode 0600, no metadata: see :func:`copy_metadata`) with the first ``size``
    bytes of the regular file ``src`` (all of them if None): a reflink where the filesystem can
    (the whole file), else ``copy_file_range`` over the data extents only (holes stay holes),
    else reads and writes. Returns the method used: "reflink", "range" or "empty"."""
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            whole = os.fstat(sfd).st_size
            size = whole if size is None else size
            if not size:
                return "empty"
            if size == whole and _reflink(sfd, dfd):
                return "reflink"
            _copy_extents(sfd, dfd, size)
            return "range"
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _reflink(sfd: int, dfd: int) -> bool:
    import fcntl

    try:
        fcntl.ioctl(dfd, FICLONE, sfd)
        return True
    except OSError:
        return False


def _copy_extents(sfd: int, dfd: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            start = os.lseek(sfd, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole is left
                break
            start = offset  # SEEK_DATA unsupported: treat everything as data
        if start >= size:
            break
        try:
            end = min(os.lseek(sfd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        _copy_range(sfd, dfd, start, end - start)
        offset = end
    os.ftruncate(dfd, size)


def _copy_range(sfd: int, dfd: int, offset: int, length: int) -> None:
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(sfd, dfd, min(length - done, _CHUNK), offset + done,
                                   offset + done)
            if n == 0:
                break
            done += n
        if done == length:
            return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while done < length:  # another filesystem or an old kernel: plain reads and writes
        chunk = os.pread(sfd, min(length - done, 1 << 20), offset + done)
        if not chunk:
            break
        os.pwrite(dfd, chunk, offset + done)
        done += len(chunk)


def copy_metadata(src_st: os.stat_result, src: str, dst: str) -> None:
    """Owner, mode (after chown, which clears setuid), xattrs and times of ``src`` onto ``dst``.

    The one policy for what cannot be set: a user other than root cannot give a file away
    (EPERM), so the copy stays that user's, and cannot set ``trusted.*`` xattrs (EPERM), which
    are skipped; a ``security.*`` label the target refuses is skipped for anyone. Any other
    error raises."""
    try:
        os.chown(dst, src_st.st_uid, src_st.st_gid, follow_symlinks=False)
    except PermissionError as error:
        if not _unprivileged(error):
            raise
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dst, stat.S_IMODE(src_st.st_mode))
    copy_xattrs(src, dst)
    os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    """Create ``dst`` as a copy of the single non-directory entry ``src`` (no metadata for dirs)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        copy_file(src, dst, st.st_size)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(dst, mode, st.st_rdev)
    elif stat.S_ISSOCK(mode):
        return
    copy_metadata(st, src, dst)


def copy_tree(src: str, dst: str, link_files: bool = False) -> None:
    """Copy the tree ``src`` into the existing empty directory ``dst``, metadata-exact.

    Hard links inside the tree stay hard links; file data is reflinked where possible. Directory
    metadata is applied after the children are in place, so their mtimes survive. With
    ``link_files`` every regular file is a hard link to ``src``'s (for a tree that never changes).
    """
    links: dict[tuple[int, int], str] = {}
    dirs = [(src, dst, os.lstat(src))]
    stack = [(src, dst)]
    while stack:
        sdir, ddir = stack.pop()
        with os.scandir(sdir) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                target = os.path.join(ddir, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(target, 0o700)
                    dirs.append((entry.path, target, st))
                    stack.append((entry.path, target))
                    continue
                if link_files and stat.S_ISREG(st.st_mode):
                    os.link(entry.path, target)
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = links.get(key)
                    if first is not None:
                        os.link(first, target)
                        continue
                    links[key] = target
                copy_entry(entry.path, target, st)
    for sdir, ddir, st in reversed(dirs):
        copy_metadata(st, sdir, ddir)


def remove_tree(path: str) -> None:
    """Remove ``path`` (a tree, a file, a symlink, or nothing). Idempotent: a removal cut short by
    a crash is finished by calling it again (the snapshotter's ``trash`` table does); what another
    process removes meanwhile is no error. Symlinks are removed, never followed. (Not
    shutil.rmtree: importing shutil imports bz2, lzma and fnmatch, milliseconds of every ``rm``.)"""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            _empty_directory(fd)
        finally:
            os.close(fd)
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _empty_directory(dir_fd: int) -> None:
    """Remove everything in the directory open as ``dir_fd``, depth first, by names relative to
    it (a directory renamed or replaced by a symlink meanwhile cannot send it elsewhere)."""
    with os.scandir(dir_fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in names:
        try:
            if not is_dir:
                os.unlink(name, dir_fd=dir_fd)
                continue
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _empty_directory(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=dir_fd)
        except FileNotFoundError:  # another process finishing the same removal
            pass


def output_file(path: str):
    """Open a file that appears at ``path`` complete or not at all (``save -o``, ``export -o``),
    as a context manager.

    The bytes go to an unnamed file (O_TMPFILE) in the target's directory, linked in under
    ``path`` only when the body finished: a SIGKILL leaves nothing behind, because the kernel frees
    an unnamed file with its last descriptor. Where the file system has no O_TMPFILE, a named
    ``PATH.lamina-PID`` beside the target is used and renamed, as before."""
    import contextlib  # here: this module is on every command's path (create's), contextlib not

    return contextlib.contextmanager(_output_file)(path)


def _output_file(path: str):
    import errno

    if os.path.isdir(path):  # said before the work, and naming the target, not a staged name
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    directory = os.path.dirname(os.path.abspath(path))
    pid = os.getpid()
    try:
        if not os.path.isdir("/proc/self/fd"):  # no /proc: no way to link an unnamed file in
            raise OSError(errno.EOPNOTSUPP, "no /proc")
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        tmp = f"{path}.lamina-{pid}"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    with os.fdopen(fd, "wb") as f:
        yield f
        f.flush()
        # linkat(AT_SYMLINK_FOLLOW) on the descriptor's /proc link; os.link only calls linkat
        # (and not link(2), which would not follow) when a dir_fd is given
        proc = f"/proc/self/fd/{fd}"
        dfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            name = os.path.basename(path)
            try:
                os.link(proc, name, dst_dir_fd=dfd, follow_symlinks=True)  # a new name: atomic
            except FileExistsError:  # replace: link beside it, then rename over (as rename(2))
                tmp = f"{name}.lamina-{pid}"
                os.link(proc, tmp, dst_dir_fd=dfd, follow_symlinks=True)
                try:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    os.unlink(tmp, dir_fd=dfd)
                    raise
        finally:
            os.close(dfd)


class Readable:
    """A file-like reader made of its ``read(n)`` alone: ``readinto`` and ``drain`` on top (for
    readers that wrap another stream: a tee, an HTTP request body)."""

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end, dropping what comes."""
        while self.read(1 << 20):
            pass
