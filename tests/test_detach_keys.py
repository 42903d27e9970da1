"""Detach keys (lamina.runtime.attach, shared by the Engine API and ``lamina attach``): Docker's
key syntax, and a filter whose output does not depend on how the client's input was split into
reads."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lamina.errors import InvalidArgument
from lamina.runtime.attach import DetachKeys
from lamina.runtime.attach import parse_keys as parse


def test_parse_docker_syntax():
    assert parse(None) == parse("") == b"\x10\x11"  # ctrl-p,ctrl-q
    assert parse("ctrl-x,x") == b"\x18x"
    assert parse("ctrl-@,ctrl-[,ctrl-_,a") == b"\x00\x1b\x1fa"
    assert parse("CTRL-A") == b"\x01"
    for bad in ("ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q", "é"):
        with pytest.raises(InvalidArgument, match="Invalid detach keys"):
            parse(bad)


def _filter(sequence: bytes, chunks: list[bytes]) -> tuple[bytes, bool]:
    keys = DetachKeys(sequence)
    out = b""
    for chunk in chunks:
        passed, detached = keys.feed(chunk)
        out += passed
        if detached:
            return out, True
    return out, False


def _reference(sequence: bytes, data: bytes) -> tuple[bytes, bool]:
    """What the client typed up to the first full sequence, without it; or all of it (the bytes
    of a sequence still incomplete at the end are held back)."""
    at = data.find(sequence)
    if at >= 0:
        return data[:at], True
    for held in range(len(sequence) - 1, 0, -1):
        if data.endswith(sequence[:held]):
            return data[:-held], False
    return data, False


@settings(max_examples=400)
@example([b"\x10\x10\x10\x11"], b"\x10\x10\x11")  # the sequence starts inside a broken one
@given(st.lists(st.binary(max_size=6).map(lambda b: bytes(x % 4 + 0x10 for x in b)), max_size=8),
       st.sampled_from([b"\x10\x11", b"\x10", b"\x10\x10\x11", b"\x11\x10\x11"]))
def test_output_is_the_input_without_the_sequence_however_it_is_split(chunks, sequence):
    assert _filter(sequence, chunks) == _reference(sequence, b"".join(chunks))
