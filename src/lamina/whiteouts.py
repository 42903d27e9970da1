"""Whiteouts: how a layer says that a name of the layers below it is deleted.

A layer holds only its own changes, so a deletion, and a directory that replaces (rather than
merges with) the directory below it, need markers. lamina meets three encodings of them, and this
module is the only place that knows them:

* OCI layer tars: an empty file ``.wh.NAME`` deletes ``NAME`` of its directory; an empty file
  ``.wh..wh..opq`` makes its directory *opaque* (it hides everything the lower layers have there).
  Every name starting with ``.wh.`` is therefore reserved, and a name must leave room for the
  prefix (:data:`MAX_NAME`).
* AUFS branches (``lamina.union``'s on-disk format): the tar's encoding kept as it is, as real
  files. Names starting with ``.wh..wh.`` other than the opaque marker are AUFS's private files
  (``.wh..wh.plnk``, and lamina's copy-up temporaries): neither entries nor whiteouts.
* overlayfs: a whiteout is a character device 0/0 named ``NAME``; an opaque directory carries the
  xattr ``trusted.overlay.opaque=y``. Every ``trusted.overlay.*`` xattr is overlayfs' private
  bookkeeping and never leaves the host. In a user namespace (a rootless store, mounted with
  ``userxattr``) the prefix is ``user.overlay.`` instead: ``trusted.*`` is the host root's alone.

Name functions take ``str`` or ``bytes`` and return the same type (layer tars are handled as
bytes). ``typing`` is not imported: this module is on the start-up path of most commands.
"""

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_PRIVATE_PREFIX = ".wh..wh."
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OVERLAY_XATTR_PREFIX = "user.overlay."

MAX_NAME = 255 - len(WHITEOUT_PREFIX)
"""The longest name a layer can delete: its whiteout must fit in 255 bytes (AUFS has the same)."""

_PREFIX = {str: WHITEOUT_PREFIX, bytes: WHITEOUT_PREFIX.encode()}
_PRIVATE = {str: AUFS_PRIVATE_PREFIX, bytes: AUFS_PRIVATE_PREFIX.encode()}
_OPAQUE = {str: OPAQUE_MARKER, bytes: OPAQUE_MARKER.encode()}
_SLASH = {str: "/", bytes: b"/"}


# ----------------------------------------------------------------------------- names (tar, AUFS)


def is_reserved_name(name: str | bytes) -> bool:
    """Whether ``name`` starts with ``.wh.``: a whiteout, the opaque marker or an AUFS private
    file, never an entry of the tree itself."""
    return name.startswith(_PREFIX[type(name)])


def is_whiteout_name(name: str | bytes) -> bool:
    """Whether ``name`` is a whiteout ``.wh.NAME`` (not the opaque marker, not AUFS private)."""
    kind = type(name)
    return name.startswith(_PREFIX[kind]) and not name.startswith(_PRIVATE[kind])


def is_opaque_marker(name: str | bytes) -> bool:
    """Whether ``name`` is ``.wh..wh..opq``, the marker of an opaque directory."""
    return name == _OPAQUE[type(name)]


def whited_out(name: str | bytes) -> str | bytes:
    """The name that the whiteout ``.wh.NAME`` deletes: ``NAME``."""
    return name[len(WHITEOUT_PREFIX):]


def whiteout_name(name: str | bytes) -> str | bytes:
    """The whiteout that deletes ``name``: ``.wh.NAME``."""
    return _PREFIX[type(name)] + name


def whiteout_path(path: str | bytes) -> str | bytes:
    """The whiteout of the last component of ``path``: ``a/b`` -> ``a/.wh.b``."""
    parent, slash, name = path.rpartition(_SLASH[type(path)])
    return parent + slash + whiteout_name(name)


def opaque_marker_path(directory: str | bytes) -> str | bytes:
    """The opaque marker of ``directory`` (``DIR/.wh..wh..opq``; the bare marker for ``""``)."""
    kind = type(directory)
    return directory + _SLASH[kind] + _OPAQUE[kind] if directory else _OPAQUE[kind]


# ----------------------------------------------------------------------------- AUFS branches


def is_aufs_opaque(directory: str | bytes) -> bool:
    """Whether the branch directory ``directory`` holds the opaque marker."""
    return os.path.lexists(opaque_marker_path(directory))


def set_aufs_opaque(directory: str) -> None:
    """Make the branch directory ``directory`` opaque (an empty marker file, mode 0600)."""
    _create_empty(opaque_marker_path(directory))


def has_aufs_whiteout(directory: str, name: str) -> bool:
    """Whether the branch directory ``directory`` deletes ``name``."""
    return os.path.lexists(directory + "/" + whiteout_name(name))


def make_aufs_whiteout(directory: str, name: str) -> None:
    """Delete ``name`` in the branch directory ``directory`` (an empty whiteout file, 0600)."""
    _create_empty(directory + "/" + whiteout_name(name))


def remove_aufs_whiteout(directory: str, name: str) -> bool:
    """Remove ``name``'s whiteout from the branch directory ``directory``; True if there was one."""
    try:
        os.unlink(directory + "/" + whiteout_name(name))
        return True
    except FileNotFoundError:
        return False


def _create_empty(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


# ----------------------------------------------------------------------------- overlayfs


def is_overlay_whiteout(st: os.stat_result) -> bool:
    """Whether the entry of ``st`` (an lstat) is an overlay whiteout: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_overlay_whiteout(path: str | bytes) -> None:
    """Create the overlay whiteout ``path`` (mode 0600, owned by the caller)."""
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def overlay_xattr_prefix() -> str:
    """``trusted.overlay.`` for the host's root, ``user.overlay.`` in a user namespace (where
    overlayfs is mounted with ``userxattr``)."""
    from .userns import in_user_namespace

    return USER_OVERLAY_XATTR_PREFIX if in_user_namespace() else OVERLAY_XATTR_PREFIX


def is_overlay_opaque(path: str | bytes) -> bool:
    """Whether the directory ``path`` is marked opaque for overlayfs."""
    try:
        return os.getxattr(path, overlay_xattr_prefix() + "opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def set_overlay_opaque(path: str | bytes) -> None:
    """Mark the directory ``path`` opaque for overlayfs."""
    os.setxattr(path, overlay_xattr_prefix() + "opaque", b"y", follow_symlinks=False)


def is_overlay_private_xattr(name: str) -> bool:
    """Whether the xattr ``name`` is overlayfs' own (``trusted.overlay.*``, or ``user.overlay.*``
    in a user namespace): never copied, never written to a layer tar, never compared."""
    return name.startswith(OVERLAY_XATTR_PREFIX) or (
        name.startswith(USER_OVERLAY_XATTR_PREFIX) and name.startswith(overlay_xattr_prefix()))
