"""Image references, configs and manifests as the OCI image spec defines them.

Configs and manifests are built once as bytes and kept as those exact bytes: an image's ID is the
digest of its config bytes, never of a re-serialisation.
"""

import json
import re
import time

from .errors import InvalidArgument

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MAX_LAYERS = 500  # the kernel's overlay stack (Docker stops at 125); a driver may stack fewer

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
# patterns, compiled by re (and cached there) on first use: create and run never parse a
# reference, and compiling these two cost every command that imports this module 0.6-0.8 ms
_REPO = rf"^{_HOST}{_COMPONENT}(?:/{_COMPONENT})*$"
_TAG = r"^[\w][\w.-]{0,127}$"


def parse_reference(ref: str) -> tuple[str, str]:
    """``NAME[:TAG]`` -> (repository, tag); the tag defaults to ``latest``."""
    if not ref or len(ref) > 255 or any(ord(c) < 33 for c in ref):
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    repo, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        repo, tag = ref[:colon], ref[colon + 1:]
    if "@" in ref or not re.match(_REPO, repo) or not re.match(_TAG, tag) or len(repo) > 255:
        if repo != repo.lower():
            raise InvalidArgument(f"invalid reference format: repository name must be lowercase: {ref!r}")
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    return repo, tag


def normalize(ref: str) -> str:
    """``NAME[:TAG]`` -> ``NAME:TAG``."""
    repo, tag = parse_reference(ref)
    return f"{repo}:{tag}"


def rfc3339(ts: float | None = None) -> str:
    """A UTC timestamp as the image spec writes it."""
    ts = time.time() if ts is None else ts
    t = time.gmtime(ts)
    frac = f"{ts % 1:.9f}"[1:].rstrip("0").rstrip(".")
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + frac + "Z"


def parse_rfc3339(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp (fractions kept); 0 when unparsable."""
    import calendar

    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value or "")
    if not m:
        return 0.0
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    if m.group(8) != "Z":
        sign = 1 if m.group(8)[0] == "+" else -1
        secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
    return secs + float(m.group(7) or 0)


def dumps(doc: dict) -> bytes:
    """Canonical-enough JSON bytes: compact, keys in insertion order."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def make_config(diff_ids: list[str], history: list[dict], config: dict | None = None,
                created: str | None = None, architecture: str = "amd64") -> bytes:
    """An image config for a layer stack."""
    if len(diff_ids) > MAX_LAYERS:
        raise InvalidArgument(f"an image may have at most {MAX_LAYERS} layers; this one would have {len(diff_ids)}")
    doc = {
        "created": created or rfc3339(),
        "architecture": architecture,
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history,
    }
    return dumps(doc)


def make_manifest(config_digest: str, config_size: int, layers: list[dict]) -> bytes:
    """An OCI image manifest; ``layers`` are descriptors (mediaType, digest, size)."""
    return dumps({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    })


def merge_env(*layers) -> list[str]:
    """``KEY=VALUE`` lists, later ones winning by key, first-seen order kept (the image's Env,
    then a container's, then an exec's). A bare ``KEY`` (an Engine API client's ``{"KEY": None}``)
    stays bare, as Docker keeps it in ``Config.Env``; :func:`process_env` drops it."""
    out: dict[str, str | None] = {}
    for layer in layers:
        for item in layer or ():
            key, eq, value = item.partition("=")
            out[key] = value if eq else None
    return [k if v is None else f"{k}={v}" for k, v in out.items()]


def process_env(env: list[str]) -> list[str]:
    """The environment a process gets: a bare ``KEY`` unsets KEY (Docker's rule), so it is left
    out rather than passed on as an entry without ``=``."""
    return [item for item in env if "=" in item]


def command_line(argv: list[str]) -> str:
    """A command as Docker's listings show it: its words joined by spaces, a word that holds a
    space in single quotes (nothing else is quoted)."""
    return " ".join(f"'{word}'" if " " in word else word for word in argv)
