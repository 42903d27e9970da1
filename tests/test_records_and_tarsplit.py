"""Frozen records (lamina.records, what RunConfig and friends use instead of dataclasses) and
tar-split records made and read as streams (lamina.tarsplit: never the whole decompressed
record in memory)."""

import os
import subprocess
import sys
import zlib

import pytest

from lamina import tarsplit
from lamina.errors import LaminaError
from lamina.records import FrozenInstanceError, as_dict, frozen
from lamina.runtime.oci import RunConfig


@frozen
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


def test_a_frozen_record_behaves_as_a_frozen_dataclass():
    p = Point(1, tags=("a",))
    assert (p.x, p.y, p.tags) == (1, 0, ("a",))
    assert p == Point(x=1, y=0, tags=("a",)) and hash(p) == hash(Point(1, 0, ("a",)))
    assert p != Point(2) and repr(p) == "Point(x=1, y=0, tags=('a',))"
    assert as_dict(p) == {"x": 1, "y": 0, "tags": ("a",)} and Point.FIELDS == ("x", "y", "tags")
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    for bad in (lambda: Point(), lambda: Point(1, 2, (), 4), lambda: Point(1, z=3),
                lambda: Point(1, x=1)):
        with pytest.raises(TypeError):
            bad()
    assert Point(**{**p.__dict__, "y": 5}) == Point(1, 5, ("a",))  # how lamina copies one


def test_run_config_round_trips_and_commands_do_not_import_dataclasses():
    config = RunConfig(env=("A=1",), volumes=(("/h", "/c", True),), ports=(("", 80, 80, "tcp"),))
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig.from_json('{"tty": true, "unknown": 1}') == RunConfig(tty=True)
    code = ("import sys, lamina.runtime.ownership, lamina.reference, lamina.runtime.restart;"
            "print('dataclasses' in sys.modules)")
    import lamina

    # -S (as bin/lamina and the monitors start): no site-packages, so lamina's own directory
    src = os.path.dirname(os.path.dirname(os.path.abspath(lamina.__file__)))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": src}).stdout
    assert out == "False\n"


def test_a_tar_split_record_is_streamed_both_ways():
    recorder = tarsplit.Recorder()
    head = os.urandom(3 * tarsplit.CHUNK + 5)  # a raw run longer than a piece, incompressible
    recorder.raw(head[:100])
    recorder.raw(head[100:])
    recorder.file(b"a/b", 7, 1234)
    recorder.raw(b"\0" * 1024)
    record = recorder.finish()
    ops = list(tarsplit.ops(record))
    raws = [op for op in ops if op[0] == b"R"]
    assert all(len(op[1]) <= tarsplit.CHUNK for op in raws)
    first = ops.index((b"F", b"a/b", 7, 1234))
    assert b"".join(op[1] for op in ops[:first]) == head
    assert b"".join(op[1] for op in ops[first + 1:]) == b"\0" * 1024
    assert list(tarsplit.files(record)) == [(b"a/b", 7, 1234)]
    for damaged in (record[:-20], b"not zlib", zlib.compress(b"XXXX")):
        with pytest.raises(LaminaError):
            list(tarsplit.ops(damaged))
