"""``RUN --mount``: BuildKit's mount types, parsed (pure) and made for one RUN step.

- ``type=cache``: a directory kept in the store (``build-mounts/``) from build to build, under its
  ``id`` (default: the target). ``sharing=shared`` lets concurrent builds use it together,
  ``locked`` makes them wait, ``private`` gives a busy cache's second user a fresh empty one.
  ``from``/``source`` seed a new cache from a stage or image; ``mode``/``uid``/``gid`` are its
  root directory's. ``lamina system df`` counts these caches in its Build Cache row;
  ``builder prune`` and ``system prune`` remove them.
- ``type=bind``: a path of the context (``.dockerignore`` applied), of a stage or of an image
  (``from``); read-only unless ``rw``, and writes are thrown away with the step.
- ``type=tmpfs``: an empty tmpfs (``size``).
- ``type=secret``: a secret given to the build (``lamina build --secret id=ID,src=FILE|env=VAR``)
  as a read-only file (default ``/run/secrets/ID``), or an environment variable (``env=``). Its
  bytes are never written to the store: a file is bind-mounted from where it is, an env value is
  written under /dev/shm for the step only; the cache key holds its id, never its content.
- ``type=ssh``: refused: lamina does not forward an SSH agent.

Mount points that the runtime had to create in the container's root (the target of a mount onto
a path the image lacks) are removed again before the step's layer is taken, as BuildKit does.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass

from lamina.cachemounts import cache_dir

from .dockerfile import DockerfileError

__all__ = ["Mount", "StepMounts", "check_mounts", "copy_context_subtree", "parse_mount"]
_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARINGS = ("shared", "private", "locked")
_KEYS = {"type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro",
         "readwrite", "rw", "id", "sharing", "required", "size", "mode", "uid", "gid", "env"}
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


@dataclass(frozen=True)
class Mount:
    """One ``--mount`` of a RUN (see the module docstring)."""

    type: str
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = False
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool | None = None
    env: str = ""

    def key_text(self) -> str:
        """What the step's cache key holds of this mount (never a secret's content)."""
        fields = [self.type, self.target, self.source, self.from_, str(self.readonly), self.id,
                  self.sharing, str(self.mode), str(self.uid), str(self.gid), str(self.size),
                  self.env]
        return ",".join(fields)


def _bool(value: str, key: str, line: int) -> bool:
    lowered = value.lower()
    if lowered in ("", "true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise DockerfileError(line, f"invalid value for {key}: {value}")


def _size(value: str, line: int) -> int:
    import re

    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", value.strip().lower())
    if found is None:
        raise DockerfileError(line, f"invalid size: {value}")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def _int(value: str, key: str, line: int, base: int = 10) -> int:
    try:
        return int(value, base)
    except ValueError:
        raise DockerfileError(line, f"invalid value for {key}: {value}") from None


def parse_mount(text: str, line: int) -> Mount:
    """``type=cache,target=/x,...`` -> :class:`Mount`, by BuildKit's rules; a bad field raises
    :class:`DockerfileError` naming ``line``."""
    values: dict[str, object] = {"type": "bind"}
    for field in text.split(","):
        field = field.strip()
        if not field:
            continue
        key, has_value, value = field.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise DockerfileError(line, f"unexpected key '{key}' in '{field}'")
        if key == "type":
            if value not in _TYPES:
                raise DockerfileError(line, f"unsupported mount type \"{value}\"")
            values["type"] = value
        elif key in ("readonly", "ro"):
            values["readonly"] = _bool(value, key, line)
        elif key in ("readwrite", "rw"):
            values["readonly"] = not _bool(value, key, line)
        elif key == "required":
            values["required"] = _bool(value, key, line)
        elif not has_value:
            raise DockerfileError(line, f"invalid field '{field}' must be a key=value pair")
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key == "from":
            values["from_"] = value
        elif key == "sharing":
            if value not in _SHARINGS:
                raise DockerfileError(line, f"unsupported sharing value \"{value}\"")
            values["sharing"] = value
        elif key == "size":
            values["size"] = _size(value, line)
        elif key == "mode":
            values["mode"] = _int(value, key, line, 8)
        elif key in ("uid", "gid"):
            values[key] = _int(value, key, line)
        else:  # id, env
            values[key] = value
    kind = str(values["type"])
    target = str(values.get("target") or "")
    if kind == "secret":
        secret_id = str(values.get("id") or (posixpath.basename(target) if target else ""))
        if not secret_id:
            raise DockerfileError(line, "secret mount requires an id or a target")
        values["id"] = secret_id
        if not target and not values.get("env"):
            target = "/run/secrets/" + secret_id
    elif kind == "ssh":
        target = target or "/run/buildkit/ssh_agent.0"
    if not target and not (kind == "secret" and values.get("env")):
        raise DockerfileError(line, f"mount type \"{kind}\" requires a target")
    values["target"] = posixpath.normpath(target) if target else ""  # relative: to WORKDIR
    if kind == "cache" and not values.get("id"):
        values["id"] = values["target"]
    if "size" in values and kind != "tmpfs":
        raise DockerfileError(line, "size is only valid for tmpfs mounts")
    if "sharing" in values and kind != "cache":
        raise DockerfileError(line, "sharing is only valid for cache mounts")
    if kind == "bind" and "readonly" not in values:
        values["readonly"] = True  # a bind is read-only unless rw
    return Mount(**values)  # type: ignore[arg-type]


def check_mounts(mounts_by_line: list[tuple[int, list[Mount]]], secrets: dict,
                 context_root: str) -> None:
    """Everything about a build's mounts that can be wrong before anything is built: a cache id
    used with two sharings, a bind source outside the context, a secret not given, ssh."""
    sharing: dict[str, str] = {}
    for line, mounts in mounts_by_line:
        for m in mounts:
            if m.type == "cache":
                seen = sharing.setdefault(m.id, m.sharing)
                if seen != m.sharing:
                    raise DockerfileError(line, f"cache mount id \"{m.id}\" is used with "
                                                f"sharing={seen} and sharing={m.sharing}")
            elif m.type == "bind" and not m.from_:
                source = posixpath.normpath(m.source or ".")
                if source == ".." or source.startswith("../") or \
                        not _inside(context_root, source):
                    raise DockerfileError(line, f"bind mount source \"{m.source}\" is outside "
                                                "the build context")
            elif m.type == "secret" and m.id not in secrets and m.required is not False:
                raise DockerfileError(line, f"secret {m.id} not found: give it with "
                                            f"`lamina build --secret id={m.id},src=FILE`")
            elif m.type == "ssh":
                raise DockerfileError(line, "RUN --mount=type=ssh needs an SSH agent, and "
                                            "lamina build does not forward one")


def _inside(root: str, rel: str) -> bool:
    """Does ``rel`` stay inside ``root`` with its symlinks resolved?"""
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, rel.lstrip("/")))
    return path == root or path.startswith(root + os.sep)


class StepMounts:
    """The mounts of one RUN: ``oci`` (the runtime spec's mounts) once :meth:`prepare` ran;
    :meth:`close` unlocks, unmounts and removes everything temporary."""

    def __init__(self, store_root: str, scratch: str, secrets: dict) -> None:
        self.store_root = store_root
        self.scratch = scratch
        self.secrets = secrets
        self.oci: list[dict] = []
        self.env: list[str] = []
        self.locks: list[int] = []
        self.temporary: list[str] = []

    def add_bind(self, source: str, target: str, readonly: bool) -> None:
        self.oci.append({"destination": target, "type": "bind", "source": source,
                         "options": ["rbind", "rprivate"] + (["ro"] if readonly else [])})

    def temp_dir(self, prefix: str) -> str:
        import tempfile

        path = tempfile.mkdtemp(prefix=prefix, dir=self.scratch)
        self.temporary.append(path)
        return path

    def cache(self, m: Mount, seed) -> None:
        """Mount the cache ``m``; ``seed()`` gives the host path of its ``from``/``source``."""
        import fcntl

        path = cache_dir(self.store_root, m.id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.locks.append(fd)
        if m.sharing == "locked":
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif m.sharing == "private":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # in use: this step gets a fresh one of its own
                path = self.temp_dir("private-cache-")
                os.chmod(path, 0o755 if m.mode is None else m.mode)
                self.add_bind(path, m.target, m.readonly)
                return
        else:
            fcntl.flock(fd, fcntl.LOCK_SH)  # shared: only a prune is kept out
        if not os.path.isdir(path):
            fresh = path + ".new"
            shutil.rmtree(fresh, ignore_errors=True)
            source = seed() if m.from_ else None
            if source is not None and os.path.isdir(source):
                shutil.copytree(source, fresh, symlinks=True)
            else:
                os.mkdir(fresh)
            os.chmod(fresh, 0o755 if m.mode is None else m.mode)
            os.chown(fresh, m.uid or 0, m.gid or 0)
            os.rename(fresh, path)
        self.add_bind(path, m.target, m.readonly)

    def secret(self, m: Mount) -> None:
        kind, value = self.secrets[m.id]
        if kind == "env":
            data = os.environ.get(value, "").encode()
        else:
            with open(value, "rb") as f:
                data = f.read()
        if m.env:
            self.env.append(f"{m.env}={data.decode('utf-8', 'replace')}")
        if not m.target:
            return
        if kind == "file" and m.mode is None and m.uid is None and m.gid is None:
            self.add_bind(os.path.realpath(value), m.target, True)
            return
        import tempfile  # outside the store: /dev/shm, a tmpfs, never on disk

        holder = tempfile.mkdtemp(prefix="lamina-secret-",
                                  dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.temporary.append(holder)
        path = os.path.join(holder, "secret")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, 0o400 if m.mode is None else m.mode)
        os.chown(path, m.uid or 0, m.gid or 0)
        self.add_bind(path, m.target, True)

    def tmpfs(self, m: Mount) -> None:
        options = ["nosuid", "nodev", "mode=1777"]
        if m.size:
            options.append(f"size={m.size}")
        self.oci.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                         "options": options})

    def close(self) -> None:
        from lamina.fsutil import remove_tree

        for fd in self.locks:
            os.close(fd)  # the flock goes with it
        self.locks.clear()
        for path in self.temporary:
            remove_tree(path)
        self.temporary.clear()


def copy_context_subtree(context, rel: str, dest: str | None, link: bool = False) -> str:
    """Copy the context's ``rel`` (``.dockerignore`` applied) to ``dest``; returns a digest of
    what was copied (names, modes, link targets, contents), for the step's cache key.
    ``dest`` None: the digest only (the context itself is bound, read-only); ``link``: files
    are hard links to the context's (for a read-only bind; a copy where links cannot be)."""
    digest = hashlib.sha256()
    host = context.host(rel)
    st = os.stat(host)
    if not stat.S_ISDIR(st.st_mode):
        if dest is not None:
            _place(host, dest, link)
        with open(host, "rb") as f:
            digest.update(f.read())
        return digest.hexdigest()
    if dest is not None:
        os.makedirs(dest, exist_ok=True)
    for below, path, est in context.walk(rel):
        target = os.path.join(dest, below) if dest is not None else None
        digest.update(f"{below}\0{est.st_mode}\0".encode("utf-8", "surrogateescape"))
        if stat.S_ISDIR(est.st_mode):
            if target is not None:
                os.makedirs(target, exist_ok=True)
                os.chmod(target, stat.S_IMODE(est.st_mode))
        elif stat.S_ISLNK(est.st_mode):
            link_target = os.readlink(path)
            digest.update(link_target.encode("utf-8", "surrogateescape"))
            if target is not None:
                os.symlink(link_target, target)
        elif stat.S_ISREG(est.st_mode):
            if target is not None:
                _place(path, target, link)
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()
    os.makedirs(dest, exist_ok=True)
    for below, path, est in context.walk(rel):
        target = os.path.join(dest, below)
        digest.update(f"{below}\0{est.st_mode}\0".encode("utf-8", "surrogateescape"))
        if stat.S_ISDIR(est.st_mode):
            os.makedirs(target, exist_ok=True)
            os.chmod(target, stat.S_IMODE(est.st_mode))
        elif stat.S_ISLNK(est.st_mode):
            link = os.readlink(path)
            digest.update(link.encode("utf-8", "surrogateescape"))
            os.symlink(link, target)
        elif stat.S_ISREG(est.st_mode):
            shutil.copy2(path, target)
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _place(source: str, target: str, link: bool) -> None:
    if link:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links refused: a copy
            pass
    shutil.copy2(source, target)
