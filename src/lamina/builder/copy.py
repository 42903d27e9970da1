"""COPY and ADD as layer tars, written directly: no container, no mount, one pass over the sources.

:func:`plan_copy` turns one resolved COPY/ADD into the list of entries the new layer holds, by
Docker's rules (legacy builder, the one Docker 20.10 runs without BuildKit):

- ``COPY dir /dest`` copies the *contents* of ``dir``; a new ``/dest`` takes ``dir``'s mode and
  mtime, an existing directory ``/dest`` keeps its mode and owner (as Docker's untar does).
- A file goes to ``/dest/NAME`` when ``/dest`` ends with ``/`` or is an existing directory of the
  image, else it becomes ``/dest``. Several sources (or a pattern) need a ``/dest/``.
- A relative ``/dest`` is relative to WORKDIR; symlinks in ``/dest`` are followed inside the
  image's root; missing parents are made 0755, owned by the ``--chown`` owner.
- Every file is owned by ``--chown`` (default 0:0); modes are the sources' (or ``--chmod``);
  mtimes are the sources'.
- ADD extracts local tar archives (plain, gzip, bzip2, xz) into ``/dest`` with their own owners,
  modes and times, and downloads http(s) URLs (mode 0600, mtime from Last-Modified).

:func:`content_digest` hashes what the layer will hold (names, types, bytes, modes, owners; not
mtimes): the build cache's key for the step. :func:`write_layer` writes the layer tar, with the
destination's existing parent directories as they are in the image (so the layer, applied on
its parent, changes nothing else).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import time
from dataclasses import dataclass

from lamina.errors import InvalidArgument, NotFound

from .context import Context, has_magic
from .tree import LayerTree

__all__ = ["CopyEntry", "FakeStat", "content_digest", "parse_chmod", "plan_copy", "tree_walk",
           "write_layer"]


class FakeStat:
    """The metadata a layer entry is written with (an ``os.stat_result`` look-alike)."""

    __slots__ = (
        "st_dev",
        "st_gid",
        "st_ino",
        "st_mode",
        "st_mtime_ns",
        "st_nlink",
        "st_rdev",
        "st_size",
        "st_uid",
    )

    def __init__(self, st, mode: int | None = None, uid: int | None = None,
                 gid: int | None = None, mtime_ns: int | None = None) -> None:
        self.st_mode = st.st_mode if mode is None else (stat.S_IFMT(st.st_mode) | mode)
        self.st_uid = st.st_uid if uid is None else uid
        self.st_gid = st.st_gid if gid is None else gid
        self.st_mtime_ns = st.st_mtime_ns if mtime_ns is None else mtime_ns
        self.st_size = st.st_size
        self.st_nlink = st.st_nlink
        self.st_rdev = st.st_rdev
        self.st_dev = st.st_dev
        self.st_ino = st.st_ino


@dataclass
class CopyEntry:
    """One entry of the new layer: written from ``host`` (a file) or ``member`` (an archive's)."""

    name: str  # path in the image, no leading slash
    st: FakeStat
    host: str | None = None
    member: tuple | None = None  # (tarfile.TarFile, TarInfo)
    linkname: str = ""  # hard link target inside the layer (archives)


# ------------------------------------------------------------------------------- chown, chmod
def parse_chmod(text: str) -> tuple[int | None, list]:
    """``--chmod``: an octal mode, or symbolic clauses (``u+x,g-w``) applied per entry."""
    if not text:
        return None, []
    if text.isdigit():
        return int(text, 8) & 0o7777, []
    clauses = []
    for clause in text.split(","):
        for op in "+-=":
            if op in clause:
                who, _, perms = clause.partition(op)
                clauses.append((who or "a", op, perms))
                break
        else:
            raise InvalidArgument(f"invalid chmod parameter {text!r}")
    return None, clauses


def _apply_symbolic(mode: int, clauses: list, is_dir: bool) -> int:
    for who, op, perms in clauses:
        bits = 0
        shifts = {"u": 6, "g": 3, "o": 0}
        targets = "ugo" if "a" in who else who
        for t in targets:
            for p in perms:
                if p in "rwx" or (p == "X" and (is_dir or mode & 0o111)):
                    bits |= {"r": 4, "w": 2, "x": 1, "X": 1}[p] << shifts[t]
                elif p == "s":
                    bits |= {"u": 0o4000, "g": 0o2000}.get(t, 0)
                elif p == "t":
                    bits |= 0o1000
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mask = 0
            for t in targets:
                mask |= 0o7 << shifts[t]
            mode = (mode & ~mask) | bits
    return mode


def _lookup_id(tree: LayerTree, path: str, name: str) -> tuple[int, int] | None:
    data = tree.read(path)
    if data is None:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            try:
                return int(fields[2]), int(fields[3]) if len(fields) > 3 and fields[3] else -1
            except ValueError:
                return None
    return None


def parse_chown(text: str, tree: LayerTree, what: str = "COPY") -> tuple[int, int]:
    """``--chown=user[:group]`` (names looked up in the image's /etc/passwd and /etc/group)."""
    user, _, group = text.partition(":")
    if user.isdigit():
        uid, primary = int(user), int(user)
    else:
        found = _lookup_id(tree, "/etc/passwd", user)
        if found is None:
            raise NotFound("unable to convert uid/gid chown string to host mapping: can't "
                           f"find uid for user {user}: no such user: {user}")
        uid, primary = found
    if not group:
        return uid, primary
    if group.isdigit():
        return uid, int(group)
    found = _lookup_id(tree, "/etc/group", group)
    if found is None:
        raise NotFound("unable to convert uid/gid chown string to host mapping: can't "
                       f"find gid for group {group}: no such group: {group}")
    return uid, found[0]


# ------------------------------------------------------------------------------- the plan
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _archive_kind(path: str) -> bool:
    """Is ``path`` a tar archive, maybe compressed (gzip, bzip2, xz)? Sniffed, as Docker does."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if any(head.startswith(m) for m in _ARCHIVE_MAGIC):
        import tarfile

        try:
            with tarfile.open(path, "r:*") as tf:
                return tf.next() is not None
        except (tarfile.TarError, OSError, EOFError):
            return False
    return len(head) == 512 and head[257:262] == b"ustar"


class CopyPlan:
    """The entries of one COPY/ADD layer and what the cache needs to know about them."""

    def __init__(self, dest_root: str, uid: int, gid: int) -> None:
        self.entries: dict[str, CopyEntry] = {}
        self.dest_root = dest_root  # the resolved destination (no leading slash)
        self.uid = uid
        self.gid = gid
        self.open_archives: list = []
        self.kinds: list[str] = []  # "file", "dir" per source, for Docker's created_by

    def add(self, entry: CopyEntry) -> None:
        if not entry.name:
            return  # the image's root directory keeps its own metadata
        previous = self.entries.get(entry.name)
        if previous is not None and stat.S_ISDIR(previous.st.st_mode) and \
                not stat.S_ISDIR(entry.st.st_mode):
            prefix = entry.name + "/"
            for name in [n for n in self.entries if n.startswith(prefix)]:
                del self.entries[name]
        self.entries[entry.name] = entry

    def close(self) -> None:
        for tf in self.open_archives:
            tf.close()
        self.open_archives.clear()


def _join(dest: str, name: str) -> str:
    return posixpath.join(dest, name) if dest else name


def plan_copy(
    *,
    what: str,
    sources: list[str],
    dest: str,
    workdir: str,
    tree: LayerTree,
    context: Context | None,
    chown: str | None,
    chmod: str | None,
    source_tree: LayerTree | None = None,
    heredocs: dict | None = None,
    downloads: dict | None = None,
    now: float | None = None,
    exclude: list[str] | None = None,
    parents: bool = False,
) -> CopyPlan:
    """The entries of a COPY/ADD (see the module docstring). ``source_tree`` replaces the
    context for ``--from``; ``heredocs`` maps a source word to a temp file holding its body;
    ``downloads`` maps a URL to (temp file, name, mtime). ``exclude``: ``--exclude`` patterns
    (.dockerignore's syntax), matched against each source path and each path below a copied
    directory (relative to that directory). ``parents`` (``COPY --parents``): each context
    source keeps its path below the context (or below a ``/./`` in the source), under ``dest``."""
    from .dockerignore import Matcher

    excluder = Matcher(list(exclude)) if exclude else None
    heredocs = heredocs or {}
    downloads = downloads or {}
    uid, gid = parse_chown(chown, tree, what) if chown else (0, 0)
    octal, clauses = parse_chmod(chmod or "")

    def mode_of(st) -> int | None:
        if octal is not None:
            return octal
        if clauses:
            return _apply_symbolic(stat.S_IMODE(st.st_mode), clauses, stat.S_ISDIR(st.st_mode))
        return None

    ends_slash = dest.endswith(("/", "/.")) or dest in (".", "")
    absolute = dest if dest.startswith("/") else posixpath.join("/", workdir or "/", dest)
    resolved, existing = tree.resolve(posixpath.normpath(absolute))
    dest_is_dir = existing is not None and existing.is_dir
    many = len(sources) > 1 or any(has_magic(s) for s in sources if s not in heredocs
                                   and s not in downloads)
    root = resolved.lstrip("/")
    plan = CopyPlan(root, uid, gid)
    now_ns = int((now if now is not None else time.time()) * 1e9)

    expanded: list[tuple[str, str, str]] = []  # (kind, source word, host path or context rel)
    for source in sources:
        if source in heredocs or source in downloads:
            expanded.append(("data", source, ""))
            continue
        if source_tree is not None:
            path = source if source.startswith("/") else "/" + source
            found, entry = source_tree.resolve(posixpath.normpath(path))
            if entry is None:
                raise NotFound(f"{what} failed: stat {source}: file does not exist in the "
                               "source image")
            expanded.append(("tree", source, found))
            continue
        assert context is not None
        matches = context.sources(source, what)
        if len(matches) > 1:
            many = True
        if excluder is not None:
            matches = [rel for rel in matches if not excluder.matches(rel)]
        for rel in matches:
            expanded.append(("context", source, rel))
    if many and not ends_slash and not dest_is_dir:
        raise InvalidArgument(f"When using {what} with more than one source file, the "
                              "destination must be a directory and end with a /")

    def file_target(name: str) -> str:
        if ends_slash or dest_is_dir:
            return _join(root, name)
        return root

    for kind, source, ref in expanded:
        if kind == "data":
            if source in heredocs:
                host = heredocs[source]
                name = source
                mtime = 0
                base_mode = 0o644
            else:
                host, name, mtime = downloads[source]
                base_mode = 0o600
            st = os.lstat(host)
            fake = FakeStat(st, mode=base_mode if octal is None and not clauses else None,
                            uid=uid, gid=gid, mtime_ns=int(mtime * 1e9))
            if octal is not None or clauses:
                fake.st_mode = stat.S_IFREG | (mode_of(fake) or base_mode)
            fake.st_nlink = 1
            plan.add(CopyEntry(file_target(name), fake, host))
            plan.kinds.append("file")
            continue
        if kind == "tree":
            entry_path = ref
            st = os.lstat(_tree_host(source_tree, entry_path))
            host = _tree_host(source_tree, entry_path)
            base_name = posixpath.basename(entry_path) or "/"
        else:
            host = os.path.realpath(context.host(ref))
            st = os.stat(host)
            base_name = posixpath.basename(ref) if ref != "." else ""
        kept = _kept_path(source, ref) if parents and kind == "context" else ""
        if stat.S_ISDIR(st.st_mode):
            plan.kinds.append("dir")
            top_name = _join(root, kept) if kept else root
            if dest_is_dir and not kept:  # Docker keeps an existing directory as it is
                top = FakeStat(existing.st, mtime_ns=now_ns)  # (a 0700 stays 0700)
                plan.add(CopyEntry(root, top, existing.host))
            else:
                plan.add(CopyEntry(top_name, FakeStat(st, mode=mode_of(st), uid=uid, gid=gid),
                                   host))
            if kind == "tree":
                walker = tree_walk(source_tree, entry_path)
            else:
                walker = context.walk(ref)
            for below, path, est in walker:
                if excluder is not None and excluder.matches(below):
                    continue
                plan.add(CopyEntry(_join(top_name, below),
                                   FakeStat(est, mode=mode_of(est), uid=uid, gid=gid), path))
            continue
        plan.kinds.append("file")
        if what == "ADD" and kind == "context" and _archive_kind(host):
            _add_archive(plan, host, root)
            continue
        target = _join(root, kept) if kept else file_target(base_name)
        plan.add(CopyEntry(target, FakeStat(st, mode=mode_of(st), uid=uid, gid=gid), host))
    plan.now_ns = now_ns
    return plan


def _kept_path(source: str, rel: str) -> str:
    """``COPY --parents``: what of the context path ``rel`` (matched by ``source``) stays under
    the destination: all of it, or what follows a ``/./`` pivot in ``source``."""
    cleaned = source.lstrip("/")
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    if "/./" in cleaned:
        depth = posixpath.normpath(cleaned.split("/./", 1)[0]).count("/") + 1
        return "/".join(rel.split("/")[depth:])
    return "" if rel in ("", ".") else rel


def _tree_host(tree: LayerTree, path: str) -> str:
    entry = tree.resolve(path, follow_last=False)[1]
    if entry is None:
        raise NotFound(f"{path} does not exist in the source image")
    return entry.host


def tree_walk(tree: LayerTree, top: str):
    """Entries below ``top`` of a merged image tree, parents first (whiteouts honoured)."""
    def visit(path: str, inner: str):
        names = set()
        for layer in tree.layers:
            directory = os.path.join(layer, path.lstrip("/"))
            try:
                names.update(os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
        for name in sorted(names):
            full = posixpath.join(path, name)
            entry = tree.resolve(full, follow_last=False)[1]
            if entry is None:
                continue
            yield inner + name, entry.host, entry.st
            if entry.is_dir:
                yield from visit(full, inner + name + "/")

    yield from visit(top, "")


def _add_archive(plan: CopyPlan, path: str, root: str) -> None:
    import tarfile

    tf = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by CopyPlan.close
    plan.open_archives.append(tf)
    for member in tf:
        name = posixpath.normpath("/" + member.name).lstrip("/")
        if not name or name == ".":
            continue
        if posixpath.normpath(member.name).startswith("../"):
            raise InvalidArgument(f"ADD {os.path.basename(path)}: archive member {member.name!r} "
                                  "leaves the destination")
        if (member.isdev() or not (member.isfile() or member.isdir() or member.issym()
                                  or member.islnk() or member.isfifo())) and not member.isdev():
            continue
        kind = (stat.S_IFDIR if member.isdir() else stat.S_IFLNK if member.issym() else
                stat.S_IFIFO if member.isfifo() else stat.S_IFCHR if member.ischr() else
                stat.S_IFBLK if member.isblk() else stat.S_IFREG)
        fake = FakeStat(os.stat_result((kind | (member.mode & 0o7777), 0, 0, 1, member.uid,
                                        member.gid, member.size if member.isfile() else 0,
                                        0, 0, 0)), mtime_ns=int(member.mtime) * 1_000_000_000)
        fake.st_rdev = os.makedev(member.devmajor, member.devminor) if member.isdev() else 0
        link = ""
        if member.islnk():
            link = _join(root, posixpath.normpath("/" + member.linkname).lstrip("/"))
        plan.add(CopyEntry(_join(root, name), fake, None, (tf, member), link))


# ------------------------------------------------------------------------------- cache key
def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_digest(plan: CopyPlan) -> str:
    """sha256 over what the layer will hold: names, types, modes, owners, sizes, bytes and link
    targets, never mtimes (a touched file keeps its cache)."""
    h = hashlib.sha256()
    for name in sorted(plan.entries):
        entry = plan.entries[name]
        st = entry.st
        mode = st.st_mode
        line = f"{name}\0{mode:o}\0{st.st_uid}\0{st.st_gid}\0"
        if stat.S_ISREG(mode):
            if entry.linkname:
                line += "hardlink:" + entry.linkname
            elif entry.member is not None:
                tf, member = entry.member
                f = tf.extractfile(member)
                line += hashlib.file_digest(f, "sha256").hexdigest() if f else ""
            else:
                line += _file_digest(entry.host)
        elif stat.S_ISLNK(mode):
            line += entry.member[1].linkname if entry.member else os.readlink(entry.host)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            line += f"{st.st_rdev}"
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


# ------------------------------------------------------------------------------- the layer tar
def write_layer(plan: CopyPlan, tree: LayerTree, out):
    """Write the layer tar of ``plan`` to ``out``; returns layertar.TarStats."""
    from lamina.layertar import ZERO_BLOCK, TarWriter, tar_header

    writer = TarWriter(out)
    names = sorted(plan.entries, key=lambda n: n.split("/"))
    emitted: set[str] = set()
    now_ns = plan.now_ns

    def ensure_parents(name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in emitted or parent in plan.entries:
                continue
            emitted.add(parent)
            existing = tree.lookup("/" + parent)
            if existing is not None and existing.is_dir:
                # the image's own directory, unchanged but for its mtime where a name is added
                direct = depth == len(parts)
                writer.entry(parent.encode(), existing.host.encode(),
                             FakeStat(existing.st, mtime_ns=now_ns if direct else None))
            else:
                writer.out.write(tar_header(parent.encode() + b"/", b"5", 0o755, plan.uid,
                                         plan.gid, now_ns // 1_000_000_000))
                writer.inodes += 1

    for name in names:
        entry = plan.entries[name]
        ensure_parents(name)
        emitted.add(name)
        if entry.member is None:
            writer.entry(name.encode("utf-8", "surrogateescape"),
                         entry.host.encode("utf-8", "surrogateescape"), entry.st)
            continue
        tf, member = entry.member
        st = entry.st
        mode = st.st_mode
        perms = stat.S_IMODE(mode)
        encoded = name.encode("utf-8", "surrogateescape")
        seconds = st.st_mtime_ns // 1_000_000_000
        writer.inodes += 1
        if entry.linkname:
            writer.out.write(tar_header(encoded, b"1", perms, st.st_uid, st.st_gid, seconds,
                                     linkname=entry.linkname.encode()))
        elif stat.S_ISDIR(mode):
            writer.out.write(tar_header(encoded + b"/", b"5", perms, st.st_uid, st.st_gid, seconds))
        elif stat.S_ISLNK(mode):
            writer.out.write(tar_header(encoded, b"2", perms, st.st_uid, st.st_gid, seconds,
                                     linkname=member.linkname.encode()))
        elif stat.S_ISREG(mode):
            writer.out.write(tar_header(encoded, b"0", perms, st.st_uid, st.st_gid, seconds,
                                     member.size))
            f = tf.extractfile(member)
            remaining = member.size
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    raise InvalidArgument(f"archive member {member.name!r} is truncated")
                writer.out.write(chunk)
                remaining -= len(chunk)
            if member.size % 512:
                writer.out.write(ZERO_BLOCK[: -member.size % 512])
            writer.size += member.size
        else:
            kind = b"6" if stat.S_ISFIFO(mode) else b"3" if stat.S_ISCHR(mode) else b"4"
            writer.out.write(tar_header(encoded, kind, perms, st.st_uid, st.st_gid, seconds,
                                     device=st.st_rdev))
    return writer.finish()
