"""``ADD`` of a git repository, as BuildKit accepts it: ``ADD https://host/repo.git#ref:subdir
/dst``, ``git@host:owner/repo.git``, ``ssh://`` and ``git://`` URLs (an ``http(s)`` URL is a
repository only when its path ends in ``.git``). The fragment names a branch, tag or commit
(default: the remote's HEAD) and a directory of the repository to copy (default: all of it).

The repository is cloned with the ``git`` command (its transports, credentials and ssh agent are
the user's), the commit checked out, and its files are then a directory source like the build
context's: copied into the destination, without ``.git`` unless ``--keep-git-dir=true``. Every
file gets the commit's time as its mtime, so the same commit always makes the same layer (on any
machine: a cache exported with ``--cache-to`` hits on another).
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from dataclasses import dataclass

from lamina.errors import InvalidArgument, NotFound, Unavailable

__all__ = ["GitRef", "checkout", "parse_git_ref"]

_SCP_LIKE = re.compile(r"^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:(?!//)")


@dataclass(frozen=True)
class GitRef:
    remote: str
    ref: str = ""  # a branch, tag or commit; "": the remote's HEAD
    subdir: str = ""


def parse_git_ref(text: str) -> GitRef | None:
    """The repository ``text`` names, or None when it is not a git source."""
    remote, _, fragment = text.partition("#")
    lower = remote.lower()
    if lower.startswith(("http://", "https://")):
        if not remote.split("?", 1)[0].endswith(".git"):
            return None
    elif not (lower.startswith(("git://", "ssh://")) or _SCP_LIKE.match(remote)):
        return None
    ref, _, subdir = fragment.partition(":")
    if subdir:
        subdir = posixpath.normpath("/" + subdir).lstrip("/")
    return GitRef(remote, ref, "" if subdir == "." else subdir)


def _git(args: list[str], cwd: str | None = None) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")
    try:
        proc = subprocess.run(["git", "-c", "advice.detachedHead=false", *args], cwd=cwd,
                              env=env, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise NotFound("ADD of a git repository needs the git command, which is not "
                       "installed") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise Unavailable(lines[-1].removeprefix("fatal: ") if lines else
                          f"git {args[0]} failed with status {proc.returncode}")
    return proc.stdout.strip()


def checkout(source: GitRef, dest: str, keep_git_dir: bool) -> tuple[str, str]:
    """Clone ``source`` into the new directory ``dest`` at its ref; returns (the directory to
    copy: ``dest`` or its subdir, the commit's full hash)."""
    try:
        _git(["clone", "--quiet", "--no-checkout", "--", source.remote, dest])
    except Unavailable as error:
        raise Unavailable(f"failed to fetch git repository {source.remote}: {error}") from None
    commit = ""
    for candidate in ([source.ref, f"origin/{source.ref}", f"refs/tags/{source.ref}"]
                      if source.ref else ["HEAD"]):
        try:
            commit = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], dest)
            break
        except Unavailable:
            continue
    if not commit:
        raise NotFound(f"git repository {source.remote}: no branch, tag or commit "
                       f"{source.ref!r}")
    _git(["checkout", "--quiet", "--detach", commit], dest)
    when = float(_git(["show", "-s", "--format=%ct", commit], dest))
    if not keep_git_dir:
        import shutil

        shutil.rmtree(os.path.join(dest, ".git"))
    root = os.path.join(dest, source.subdir) if source.subdir else dest
    if source.subdir and not os.path.realpath(root).startswith(os.path.realpath(dest) + os.sep):
        raise InvalidArgument(f"git repository {source.remote}: {source.subdir!r} leaves the "
                              "repository")
    if not os.path.isdir(root):
        raise NotFound(f"git repository {source.remote}: no directory {source.subdir!r} at "
                       f"{commit[:12]}")
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(dest, (when, when))
    return root, commit
