"""Users inside a container's root: ``-u``/``USER`` resolved by the root's own files.

As Docker does, a user is looked up in the container's ``/etc/passwd`` and ``/etc/group`` (read
through :func:`lamina.rootpath.resolve_in_root`, so a symlink cannot point outside the root), not
the host's: a numeric uid need not exist there, a name must.
"""

from __future__ import annotations

from ..errors import NotFound
from ..records import frozen
from ..rootpath import resolve_in_root


def _read_in_root(root: str, path: str) -> str:
    try:
        with open(resolve_in_root(root, path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


@frozen
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def resolve_user(root: str, spec: str | None) -> User:
    """``user``, ``uid``, ``user:group`` or ``uid:gid`` -> ids, by the container's /etc/passwd and
    /etc/group (as Docker: a numeric uid need not exist; a name must)."""
    if not spec:
        spec = "0"
    name, _, group = spec.partition(":")
    passwd = _table(_read_in_root(root, "/etc/passwd"))
    entry = None
    for row in passwd:
        if len(row) >= 4 and (row[0] == name or (name.isdigit() and row[2] == name)):
            entry = row
            break
    if entry is None and not name.isdigit():
        raise NotFound(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(name) if name.isdigit() else int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    home = entry[5] if entry is not None and len(entry) > 5 and entry[5] else "/"
    groups = _table(_read_in_root(root, "/etc/group"))
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = [row for row in groups if len(row) >= 3 and row[0] == group]
            if not match:
                raise NotFound(f"unable to find group {group}: no matching entries in group file")
            gid = int(match[0][2])
    extra = [gid]  # as Docker: the primary group is listed among the process's groups
    if entry is not None and not group:
        for row in groups:
            if (len(row) >= 4 and entry[0] in row[3].split(",") and row[2].isdigit()
                    and int(row[2]) not in extra):
                extra.append(int(row[2]))
    return User(uid, gid, tuple(extra), home)


def group_ids(root: str, groups) -> tuple[int, ...]:
    """``--group-add`` values (names or numbers) -> gids, by the container's /etc/group."""
    table = _table(_read_in_root(root, "/etc/group"))
    out = []
    for group in groups:
        if str(group).isdigit():
            out.append(int(group))
            continue
        match = [row for row in table if len(row) >= 3 and row[0] == group]
        if not match:
            raise NotFound(f"unable to find group {group}: no matching entries in group file")
        out.append(int(match[0][2]))
    return tuple(out)
