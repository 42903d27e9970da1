"""Detach keys: the key sequence that ends an attached client's session without touching the
process (Docker's default ``ctrl-p,ctrl-q``).

A client's input passes through :class:`DetachKeys` on its way to the process: bytes that could
begin the sequence are held back until the next byte decides, so a completed sequence never
reaches the process and an incomplete one is passed on whole once it is broken."""

from __future__ import annotations

from .server import ApiError

DEFAULT = "ctrl-p,ctrl-q"
# ctrl-@ is NUL, ctrl-a..ctrl-z are 1..26, then ctrl-[ ctrl-\ ctrl-] ctrl-^ ctrl-_ (27..31)
_CONTROL = "@abcdefghijklmnopqrstuvwxyz[\\]^_"


def parse(spec: str | None) -> bytes:
    """``"ctrl-p,ctrl-q"`` -> ``b"\\x10\\x11"``; each key is one character or ``ctrl-X``.
    An empty or missing spec is Docker's default; anything else unknown is a 400."""
    spec = spec or DEFAULT
    out = bytearray()
    for key in spec.split(","):
        lowered = key.strip().lower()
        if len(key) == 1:
            out.append(ord(key))
        elif lowered.startswith("ctrl-") and len(lowered) == 6 and lowered[5] in _CONTROL:
            out.append(_CONTROL.index(lowered[5]))
        else:
            raise ApiError(400, f"Invalid detach keys ({spec}) provided")
    if not out or any(b > 127 for b in out):
        raise ApiError(400, f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachKeys:
    """Filters a client's input: :meth:`feed` returns the bytes to pass on and whether the
    sequence was completed (then nothing after it is passed on)."""

    def __init__(self, sequence: bytes):
        self.sequence = sequence
        self.held = b""  # the input's end that is a beginning of the sequence

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        sequence = self.sequence
        for byte in data:
            held = self.held + bytes((byte,))
            if held == sequence:
                self.held = b""
                return bytes(out), True
            # keep the longest end of what is held that could still begin the sequence (a
            # broken "p p" of "p p q" may be the start of another), pass on what is before it
            keep = next((n for n in range(len(held), 0, -1) if sequence.startswith(held[-n:])), 0)
            out += held[:len(held) - keep]
            self.held = held[len(held) - keep:]
        return bytes(out), False
