"""sha256 digests as the OCI image spec writes them, and chain IDs."""

_HEX = frozenset("0123456789abcdef")
SMALL = 64 << 10  # bytes: what sha256(size) hashes with the interpreter's own code


def sha256(size: int):
    """A new sha256 hash object for about ``size`` bytes. Below :data:`SMALL` (an image config,
    a manifest, a chain ID) the interpreter's built-in sha256, which imports in a fraction of a
    millisecond; otherwise OpenSSL's (hashlib), about three times faster per byte but
    milliseconds to import (it loads libcrypto): a cost every ``create`` and ``run``, which
    verify one image config, would pay for a few kilobytes."""
    if size < SMALL:
        try:
            from _sha256 import sha256 as builtin  # Python 3.11
        except ImportError:
            try:
                from _sha2 import sha256 as builtin  # 3.12 and later
            except ImportError:  # an interpreter built without it
                builtin = None
        if builtin is not None:
            return builtin()
    import hashlib

    return hashlib.sha256()


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    digest = sha256(len(data))
    digest.update(data)
    return "sha256:" + digest.hexdigest()


def is_digest(value: str) -> bool:
    """Whether ``value`` is a well-formed sha256 digest: ``sha256:`` and 64 lowercase hex digits
    (read without re, which ``image inspect`` would import for this alone)."""
    return len(value) == 71 and value.startswith("sha256:") and _HEX.issuperset(value[7:])


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
