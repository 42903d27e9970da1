"""lamina.rootpath: the same cases against the kernel's resolver (openat2 RESOLVE_IN_ROOT) and the
Python walk, which must agree on every one of them."""

import errno
import os
import stat

import pytest

from lamina.rootpath import MAX_SYMLINKS, RootDir, openat2_available, resolve_in_root, walk


@pytest.fixture(params=["openat2", "walk"])
def kernel(request) -> bool:
    if request.param == "openat2" and not openat2_available():
        pytest.skip("no openat2 on this kernel")
    return request.param == "openat2"


@pytest.fixture
def root(tmp_path) -> str:
    """A container root with links that point outside it if followed on the host."""
    top = tmp_path / "root"
    (top / "dir").mkdir(parents=True)
    (top / "dir" / "file").write_bytes(b"data")
    (top / "etc").mkdir()
    (top / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    links = {
        "a": "../../..",                    # relative, climbing past the root
        "etc/x": "/etc/passwd",             # absolute: the container's /etc/passwd
        "up": "../../../../../../tmp",      # lands on <root>/tmp, which does not exist
        "linkdir": "dir",
        "linkdir-slash": "dir/",
        "to-linkdir": "linkdir/",
        "dangling": "/nowhere/file",
        "dangling-top": "/newfile",
        "loop1": "loop2",
        "loop2": "loop1",
        "self": "self",
        "dir/back": "../etc",
        "dir/sub": "/dir",
    }
    for name, target in links.items():
        os.symlink(target, top / name)
    for i in range(MAX_SYMLINKS + 1):  # chain-0 -> chain-1 -> ... -> chain-41 -> dir/file
        os.symlink(f"chain-{i + 1}" if i < MAX_SYMLINKS else "dir/file", top / f"chain-{i}")
    return str(top)


def _same(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.lstat(path)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open(root: str, kernel: bool, path: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    with RootDir(root, use_openat2=kernel) as rooted:
        return rooted.open(path, flags, mode)


def _errno(call) -> int:
    with pytest.raises(OSError) as info:
        fd = call()
        os.close(fd)
    return info.value.errno


OPENS = [  # path, flags, the root-relative entry the descriptor must be on
    ("dir/file", os.O_RDONLY, "dir/file"),
    ("/dir/file", os.O_RDONLY, "dir/file"),
    ("", os.O_PATH, ""),
    ("/", os.O_PATH, ""),
    ("/..", os.O_PATH, ""),
    ("../../etc/passwd", os.O_RDONLY, "etc/passwd"),
    ("a", os.O_PATH, ""),
    ("a/etc/passwd", os.O_RDONLY, "etc/passwd"),
    ("etc/x", os.O_RDONLY, "etc/passwd"),
    ("dir/back/passwd", os.O_RDONLY, "etc/passwd"),
    ("dir/sub/sub/sub/file", os.O_RDONLY, "dir/file"),
    ("linkdir/file", os.O_RDONLY, "dir/file"),
    ("linkdir/../etc/passwd", os.O_RDONLY, "etc/passwd"),  # .. of the link's target
    ("dir/", os.O_PATH, "dir"),
    ("dir/.", os.O_PATH, "dir"),
    ("dir/..", os.O_PATH, ""),
    ("linkdir/", os.O_PATH | os.O_NOFOLLOW, "dir"),  # a trailing slash follows anyway
    ("linkdir", os.O_PATH | os.O_NOFOLLOW, "linkdir"),  # the link itself
    ("linkdir-slash", os.O_PATH, "dir"),
    ("to-linkdir", os.O_PATH, "dir"),
    ("to-linkdir", os.O_PATH | os.O_NOFOLLOW, "to-linkdir"),
    ("to-linkdir/", os.O_PATH | os.O_NOFOLLOW, "dir"),
    ("etc/x", os.O_PATH | os.O_NOFOLLOW, "etc/x"),
    (f"chain-{1}", os.O_RDONLY, "dir/file"),  # exactly MAX_SYMLINKS links
]


@pytest.mark.parametrize("path,flags,expected", OPENS)
def test_open_resolves_inside_the_root(root, kernel, path, flags, expected):
    fd = _open(root, kernel, path, flags)
    try:
        assert _same(fd, os.path.join(root, expected) if expected else root)
    finally:
        os.close(fd)


ERRORS = [
    ("loop1", os.O_RDONLY, errno.ELOOP),
    ("self", os.O_RDONLY, errno.ELOOP),
    ("self/x", os.O_RDONLY, errno.ELOOP),
    ("chain-0", os.O_RDONLY, errno.ELOOP),  # one link more than the budget
    ("linkdir", os.O_RDONLY | os.O_NOFOLLOW, errno.ELOOP),
    ("dangling", os.O_RDONLY, errno.ENOENT),
    ("up/x", os.O_RDONLY, errno.ENOENT),
    ("missing/x", os.O_RDONLY, errno.ENOENT),
    ("missing/../dir/file", os.O_RDONLY, errno.ENOENT),
    ("dir/file/", os.O_RDONLY, errno.ENOTDIR),
    ("dir/file/x", os.O_RDONLY, errno.ENOTDIR),
    ("dir/file/..", os.O_PATH, errno.ENOTDIR),
    ("dangling", os.O_WRONLY | os.O_CREAT, errno.ENOENT),  # /nowhere is missing in the root
    ("dangling-top", os.O_WRONLY | os.O_CREAT | os.O_EXCL, errno.EEXIST),
    ("new/", os.O_WRONLY | os.O_CREAT, errno.EISDIR),
]


@pytest.mark.parametrize("path,flags,code", ERRORS)
def test_open_errors_are_the_kernels(root, kernel, path, flags, code):
    assert _errno(lambda: _open(root, kernel, path, flags)) == code


def test_create_through_dangling_link_lands_inside(root, kernel):
    fd = _open(root, kernel, "dangling-top", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.close(fd)
    with open(os.path.join(root, "newfile"), "rb") as f:
        assert f.read() == b"x"
    assert not os.path.lexists("/newfile")  # the host's / was never written


RESOLVES = [  # path, follow, canonical path inside the root
    ("dir/file", True, "/dir/file"),
    ("/", True, "/"),
    ("..", True, "/"),
    ("a", True, "/"),
    ("a/etc/passwd", True, "/etc/passwd"),
    ("etc/x", True, "/etc/passwd"),
    ("etc/x", False, "/etc/x"),
    ("up", True, "/tmp"),
    ("up/x/y", True, "/tmp/x/y"),
    ("dangling", True, "/nowhere/file"),
    ("dangling", False, "/dangling"),
    ("missing/../dir", True, "/dir"),  # names that do not exist are kept, and .. leaves them
    ("dir/new", True, "/dir/new"),
    ("linkdir/", False, "/dir"),
    ("linkdir", False, "/linkdir"),
    ("dir/sub/back/x", True, "/etc/passwd"),
    ("chain-1", True, "/dir/file"),
]


@pytest.mark.parametrize("path,follow,expected", RESOLVES)
def test_resolve(root, kernel, path, follow, expected):
    with RootDir(root, use_openat2=kernel) as rooted:
        assert rooted.resolve(path, follow) == expected
    host = resolve_in_root(root, path, follow, use_openat2=kernel)
    assert host == (root if expected == "/" else root + expected)


@pytest.mark.parametrize("path,code", [("loop1", errno.ELOOP), ("chain-0", errno.ELOOP),
                                       ("dir/file/x", errno.ENOTDIR)])
def test_resolve_errors(root, kernel, path, code):
    with pytest.raises(OSError) as info:
        resolve_in_root(root, path, use_openat2=kernel)
    assert info.value.errno == code


def test_host_root(kernel):
    assert resolve_in_root("/", "/../etc/..", use_openat2=kernel) == "/"
    assert resolve_in_root("/", "etc", use_openat2=kernel) == "/etc"


def test_walk_over_a_tree_of_callbacks():
    """The walk knows nothing of the host: a tree in memory resolves by the same rules."""
    tree = {"": ("dir", None), "d": ("dir", None), "d/f": ("file", None),
            "l": ("link", "/d/../d/f"), "m": ("link", "m")}
    modes = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}

    def lookup(parent: str, name: str):
        key = f"{parent}/{name}".lstrip("/")
        return (key, modes[tree[key][0]]) if key in tree else None

    def readlink(key: str) -> str:
        return tree[key][1]

    assert walk("/l", "", lookup, readlink) == (["d", "f"], "d/f")
    assert walk("/l", "", lookup, readlink, follow=False) == (["l"], "l")
    assert walk("x/../d", "", lookup, readlink) == (["d"], "d")
    assert walk("x/y", "", lookup, readlink) == (["x", "y"], None)
    with pytest.raises(FileNotFoundError):
        walk("x/y", "", lookup, readlink, strict=True)
    with pytest.raises(NotADirectoryError):
        walk("d/f/g", "", lookup, readlink)
    with pytest.raises(OSError) as info:
        walk("m", "", lookup, readlink)
    assert info.value.errno == errno.ELOOP
