"""sha256 digests as the OCI image spec writes them, and chain IDs."""

import hashlib
import re

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    """Whether ``value`` is a well-formed sha256 digest."""
    return bool(_DIGEST.match(value))


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``."""
    return digest.split(":", 1)[1]


def chain_id(parent: str | None, diff_id: str) -> str:
    """The chain ID of layer ``diff_id`` stacked on the chain ``parent`` (None: the bottom):
    ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    return diff_id if parent is None else sha256_bytes(f"{parent} {diff_id}".encode())


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Chain IDs of a layer stack, bottom first (see :func:`chain_id`)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(chain_id(out[-1] if out else None, diff_id))
    return out
