"""A/C/D changes of a layer, the list ``docker diff`` prints and layer tars are made from.

Two sources:

* ``overlay_changes``: an overlay-format upper dir already holds only the changes; the lowers are
  consulted only to tell "added" from "changed", through the same merged view the kernel builds
  (newest lower first, whiteouts and opaque dirs hide what is below them).
* ``tree_changes``: two full trees (plain format) compared entry by entry.

Directories follow Docker: a directory is reported as C when its own metadata changed or when
anything below it changed, so every change comes with its chain of parent directories, which is
what a layer tar made from the list needs. The root itself is never reported.
"""

import os
import stat
from collections import namedtuple

from .whiteouts import is_overlay_opaque, is_overlay_private_xattr, is_overlay_whiteout

Change = namedtuple("Change", "kind path")
Change.__doc__ = 'A change: kind "A" (added), "C" (changed) or "D" (deleted); absolute path.'


def _xattrs(path: str) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values = {}
    for name in names:
        if is_overlay_private_xattr(name):
            continue
        try:
            values[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            pass
    return values


def _scandir(path: str) -> dict:
    with os.scandir(path) as it:
        return {entry.name: entry for entry in it}


def _same_owner_mode_xattrs(old_path: str, old, new_path: str, new) -> bool:
    return (
        old.st_mode == new.st_mode
        and old.st_uid == new.st_uid
        and old.st_gid == new.st_gid
        and _xattrs(old_path) == _xattrs(new_path)
    )


# ----------------------------------------------------------------------------- overlay format


def _lower_child(active: list, rel: str):
    """Look ``rel`` up in the merged view of ``active`` (lower dirs, newest first, that hold
    its parent as a merged directory).

    Returns (lstat or None, the lower dirs that merge ``rel`` as a directory).
    """
    found = None
    merged = []
    for lower in active:
        path = lower + rel
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if is_overlay_whiteout(st):
            break
        if not stat.S_ISDIR(st.st_mode):
            if found is None:
                found = st
            break  # a non-directory hides everything older
        if found is None:
            found = st
        merged.append(lower)
        if is_overlay_opaque(path):
            break
    return found, merged


def _lower_names(merged: list, rel: str) -> set:
    """Names visible in the merged lower directory ``rel``."""
    visible = {}
    for lower in merged:
        try:
            entries = _scandir(lower + rel)
        except OSError:
            continue
        for name, entry in entries.items():
            if name not in visible:
                visible[name] = not is_overlay_whiteout(entry.stat(follow_symlinks=False))
    return {name for name, shown in visible.items() if shown}


def _overlay_dir(upper: str, rel: str, merged: list, out: list) -> bool:
    """Report the changes below upper dir ``rel``; True if there is any."""
    entries = _scandir(upper + rel)
    changed = False
    for name, entry in entries.items():
        path = rel + "/" + name
        st = entry.stat(follow_symlinks=False)
        if is_overlay_whiteout(st):
            out.append(Change("D", path))
            changed = True
            continue
        lower_st, lower_merged = _lower_child(merged, path) if merged else (None, [])
        if not stat.S_ISDIR(st.st_mode):
            out.append(Change("A" if lower_st is None else "C", path))
            changed = True
            continue
        inner = _overlay_dir(upper, path, lower_merged, out)
        if lower_st is None:
            out.append(Change("A", path))
        elif (
            inner
            or not stat.S_ISDIR(lower_st.st_mode)
            or not _same_owner_mode_xattrs(lower_merged[0] + path, lower_st, entry.path, st)
        ):
            out.append(Change("C", path))
        else:
            continue
        changed = True
    if merged and rel and is_overlay_opaque(upper + rel):
        for name in _lower_names(merged, rel) - entries.keys():
            out.append(Change("D", rel + "/" + name))
            changed = True
    return changed


def overlay_changes(upper: str, lowers: list[str]) -> list[Change]:
    """Changes recorded in the overlay-format layer dir ``upper`` on top of ``lowers``
    (overlay-format layer dirs, newest first), sorted by path.

    A char device 0/0 is D. Other entries are A if the merged lower view lacks them, else C; an
    unchanged directory (same mode, owner and xattrs, nothing changed below) is not reported.
    An opaque upper directory also reports as D each lower entry it hides and does not re-create.
    """
    upper = upper.rstrip("/") or "/"
    lowers = [lower.rstrip("/") for lower in lowers]
    out = []
    _overlay_dir(upper, "", lowers, out)
    out.sort(key=lambda change: change.path)
    return out


# ----------------------------------------------------------------------------- full trees


def _added_below(path: str, rel: str, out: list) -> None:
    for name, entry in _scandir(path).items():
        child = rel + "/" + name
        out.append(Change("A", child))
        if entry.is_dir(follow_symlinks=False):
            _added_below(entry.path, child, out)


def _same_file(old_path: str, old, new_path: str, new) -> bool:
    if (
        old.st_mode != new.st_mode
        or old.st_uid != new.st_uid
        or old.st_gid != new.st_gid
        or old.st_size != new.st_size
        or old.st_mtime_ns != new.st_mtime_ns
        or old.st_rdev != new.st_rdev
        or (not stat.S_ISDIR(new.st_mode) and old.st_nlink != new.st_nlink)
    ):
        return False  # a new hard link to an old file changes both names
    if stat.S_ISLNK(new.st_mode) and os.readlink(old_path) != os.readlink(new_path):
        return False
    return _xattrs(old_path) == _xattrs(new_path)


def _tree_dir(old_dir: str, new_dir: str, rel: str, out: list) -> bool:
    old_entries = _scandir(old_dir)
    changed = False
    for name, entry in _scandir(new_dir).items():
        path = rel + "/" + name
        new = entry.stat(follow_symlinks=False)
        new_is_dir = stat.S_ISDIR(new.st_mode)
        old_entry = old_entries.pop(name, None)
        if old_entry is None:
            out.append(Change("A", path))
            if new_is_dir:
                _added_below(entry.path, path, out)
            changed = True
            continue
        old = old_entry.stat(follow_symlinks=False)
        old_is_dir = stat.S_ISDIR(old.st_mode)
        if new_is_dir and old_is_dir:
            inner = _tree_dir(old_entry.path, entry.path, path, out)
            if inner or not _same_owner_mode_xattrs(old_entry.path, old, entry.path, new):
                out.append(Change("C", path))
                changed = True
            continue
        if new_is_dir != old_is_dir:
            out.append(Change("C", path))
            if new_is_dir:
                _added_below(entry.path, path, out)
            changed = True
            continue
        if not _same_file(old_entry.path, old, entry.path, new):
            out.append(Change("C", path))
            changed = True
    for name in old_entries:
        out.append(Change("D", rel + "/" + name))
        changed = True
    return changed


def tree_changes(parent: str | None, child: str) -> list[Change]:
    """Changes turning the full tree ``parent`` (None: an empty tree) into ``child``, sorted.

    Non-directories compare type, mode, owner, size, mtime_ns, symlink target, rdev and xattrs
    (content is not read: same size and mtime_ns count as unchanged). A deleted subtree is one D
    for its top. See the module docstring for directories.
    """
    child = child.rstrip("/") or "/"
    out = []
    if parent is None:
        _added_below(child, "", out)
    else:
        _tree_dir(parent.rstrip("/") or "/", child, "", out)
    out.sort(key=lambda change: change.path)
    return out
