"""Build the same Dockerfile with Docker Engine (legacy builder) and with lamina, and reduce each
result to comparable facts: the image config, the history rows, every layer's tar members and the
flattened root of a container made from the image.

Docker is a private dockerd (bench/peers.py) on its own /var/tmp directory; lamina builds in this
process on its own store. Both start from the same busybox rootfs, imported by each.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_TAG = "busybox:diff"

# config keys that describe the image (the rest of a Docker config is the container's: Hostname,
# Image, AttachStdin... which Docker's legacy builder leaves over from its build container)
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
               "Volumes", "Shell", "OnBuild", "StopSignal", "Healthcheck")


@dataclass
class Built:
    """One engine's result: ok, or the error's last line."""

    ok: bool
    error: str = ""
    image: str = ""
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    layers: list = field(default_factory=list)  # one list of member tuples per layer
    root: list = field(default_factory=list)


def write_context(path: str, files: dict) -> None:
    """``files``: relative path -> str/bytes content, or a tuple
    ("dir", mode) | ("file", content, mode) | ("symlink", target) | ("hardlink", other) |
    ("fifo",)."""
    os.makedirs(path, exist_ok=True)
    later = []
    for name in sorted(files):
        spec = files[name]
        full = os.path.join(path, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if isinstance(spec, (str, bytes)):
            spec = ("file", spec, 0o644)
        kind = spec[0]
        if kind == "dir":
            os.makedirs(full, exist_ok=True)
            later.append((full, spec[1]))
        elif kind == "file":
            data = spec[1].encode() if isinstance(spec[1], str) else spec[1]
            with open(full, "wb") as f:
                f.write(data)
            os.chmod(full, spec[2])
        elif kind == "symlink":
            os.symlink(spec[1], full)
        elif kind == "hardlink":
            os.link(os.path.join(path, spec[1]), full)
        elif kind == "fifo":
            os.mkfifo(full)
        else:
            raise ValueError(kind)
    for full, mode in later:  # after their contents were written
        os.chmod(full, mode)


def members(stream) -> list[tuple]:
    """The facts of every member of a tar: (path, type, mode, uid, gid, size, sha256, link)."""
    out = []
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            name = info.name
            if name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/")
            if not name or name == ".":
                continue
            digest = ""
            if info.isreg():
                digest = hashlib.sha256(tar.extractfile(info).read()).hexdigest()[:16]
            kind = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
                    tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
                    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
                    tarfile.FIFOTYPE: "fifo"}.get(info.type, repr(info.type))
            link = info.linkname if kind in ("symlink", "hardlink") else ""
            if kind == "hardlink":
                link = link[2:] if link.startswith("./") else link
            device = f"{info.devmajor}:{info.devminor}" if kind in ("char", "block") else ""
            out.append((name, kind, oct(info.mode & 0o7777), info.uid, info.gid,
                        info.size if kind == "file" else 0, digest, link or device))
    return sorted(out)


def _clean_config(doc: dict) -> dict:
    config = doc.get("config") or {}
    clean = {k: config[k] for k in CONFIG_KEYS if config.get(k) not in (None, "", [], {})}
    for key in ("author", "architecture", "os"):
        if doc.get(key):
            clean[key] = doc[key]
    return clean


# ``COPY file:<hex> in /dst``: each engine's own content hash of the sources. Docker's is a
# tarsum (v1) of the context files' tar headers, user and group *names* looked up on the daemon's
# host included; lamina's is its own digest of what it copies. Both are opaque cache keys that
# Docker never compares across engines, so the test compares the kind (file, dir, multi) only.
COPY_DIGEST = re.compile(r"(file|dir|multi):[0-9a-f]{64}")


def _history(doc: dict) -> list[tuple]:
    """The rows the build wrote (the first is the base's import, which each engine words its
    own way)."""
    return [(COPY_DIGEST.sub(r"\1:<digest>", h.get("created_by", "")),
             bool(h.get("empty_layer")), h.get("comment", ""))
            for h in (doc.get("history") or [])[1:]]


# What Docker's init layer has and lamina's has not, on purpose: ``/.dockerenv`` is Docker's own
# marker (Podman writes ``/run/.containerenv`` instead: a tool that looks for it wants Docker);
# ``/dev/console``, ``/dev/pts`` and ``/dev/shm`` are mount points that the runtime makes in the
# container's /dev tmpfs, so placeholders for them on the image's root are never seen inside.
DOCKER_ONLY_ROOT = {".dockerenv", "dev/console", "dev/pts", "dev/shm"}


def container_root(rows: list[tuple]) -> list[tuple]:
    return [row for row in rows if row[0] not in DOCKER_ONLY_ROOT]


def read_archive(path: str) -> tuple[dict, list, list]:
    """A docker-archive's (config, history, layers' members) of its one image."""
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        (entry,) = manifest
        doc = json.load(tar.extractfile(entry["Config"]))
        layers = [members(io.BytesIO(tar.extractfile(name).read())) for name in entry["Layers"]]
    return _clean_config(doc), _history(doc), layers


class DockerSide:
    """A private dockerd holding BASE_TAG."""

    def __init__(self, base, busybox_tar: str) -> None:
        sys.path.insert(0, os.path.join(REPO, "bench"))
        import peers

        self.peers = peers
        self.dockerd = peers.Docker(base)
        self.dockerd.start()
        self.env = dict(self.dockerd.env, DOCKER_BUILDKIT="0")
        self.docker("import", busybox_tar, BASE_TAG)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              check=False, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
        return proc

    def build(self, context: str, tag: str, args: list[str], work: str,
              network: str | None) -> Built:
        network_args = [f"--network={network}"] if network else []
        proc = self.docker("build", "-q", *network_args, "-t", tag, *args, context, check=False)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()
                     and "DEPRECATED" not in line and "legacy builder" not in line
                     and "BuildKit" not in line and "buildx" not in line
                     and not line.startswith("  ")]
            return Built(False, lines[-1] if lines else proc.stderr)
        archive = os.path.join(work, "docker.tar")
        self.docker("save", "-o", archive, tag)
        config, history, layers = read_archive(archive)
        cid = self.docker("create", tag, "true").stdout.strip()  # goes with the dockerd
        export = subprocess.run(["docker", "export", cid], env=self.env, capture_output=True,
                                check=True, timeout=300).stdout
        image = proc.stdout.strip()
        return Built(True, image=image, config=config, history=history, layers=layers,
                     root=container_root(members(io.BytesIO(export))))

    def stop(self) -> None:
        self.dockerd.cleanup()


class LaminaSide:
    """lamina's Engine on a store of its own, holding BASE_TAG."""

    def __init__(self, root: str, busybox_tar: str) -> None:
        from lamina import Engine

        self.engine = Engine(root=root)
        self.engine.import_image(busybox_tar, BASE_TAG)

    def build(self, context: str, tag: str, build_args: dict, work: str,
              network: str | None) -> Built:
        from lamina.builder import BuildOptions
        from lamina.errors import LaminaError

        with open(os.path.join(context, "Dockerfile"), "rb") as f:
            dockerfile = f.read()
        with open(os.path.join(work, "lamina.log"), "w") as log:
            try:
                image = self.engine.build(BuildOptions(
                    context=context, dockerfile=dockerfile, tags=[tag], build_args=build_args,
                    network=network, stdout=log.fileno(), stderr=log.fileno()),
                    out=lambda line: print(line, file=log))
            except LaminaError as error:
                return Built(False, str(error))
        archive = os.path.join(work, "lamina.tar")
        self.engine.save([tag], archive)
        config, history, layers = read_archive(archive)
        cid = self.engine.create(tag, command=["true"])
        try:
            buffer = io.BytesIO()
            self.engine.export(cid, buffer)
        finally:
            self.engine.rm(cid, force=True)
        buffer.seek(0)
        return Built(True, image=image, config=config, history=history, layers=layers,
                     root=members(buffer))

    def close(self) -> None:
        self.engine.close()


_ERROR_PREFIXES = re.compile(
    r"^(Error response from daemon: |dockerfile parse error (on )?line \d+: |Dockerfile:\d+: |"
    r"Step \d+/\d+ : )+")


def error_message(text: str) -> str:
    """An error's own words, without what each engine puts in front (lamina ``Dockerfile:N:``
    and ``Step N/M :``, Docker ``Error response from daemon:`` and ``dockerfile parse error line
    N:``)."""
    return _ERROR_PREFIXES.sub("", re.sub(r"\x1b\[[0-9;]*m", "", text).strip())


def diff_rows(ours: list, theirs: list) -> str:
    """A unified diff of two lists of rows, ``-`` lamina, ``+`` docker (empty: the same)."""
    import difflib

    if ours == theirs:
        return ""
    return "\n".join(difflib.unified_diff([repr(r) for r in ours], [repr(r) for r in theirs],
                                          "lamina", "docker", lineterm="", n=1))
