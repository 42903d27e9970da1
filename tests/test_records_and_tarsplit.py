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


def test_a_records_headers_are_the_tars_without_its_contents():
    """image analyze lists a layer's members from its record (tarsplit.pieces, read by
    layertar.list_members): the same members, names and sizes as the tar itself gives,
    across PAX and GNU long names, a raw run longer than the record's pieces, empty, short and
    odd-sized files, and a tar cut anywhere into pieces; a file's content is left out (an int:
    its size); a damaged record, or a tar cut short, is an error, not a short listing."""
    import io
    import tarfile

    from lamina.errors import InvalidArgument
    from lamina.layertar import TarMembers, list_members, split_tar

    def listed(pieces):
        return list(zip(*list_members(pieces)))

    out = io.BytesIO()

    def add(tar, name, data=b"", **pax):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.pax_headers = len(data), 1_700_000_000, pax
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "empty")
        add(tar, "one", b"1")
        add(tar, "d/" + "long" * 60, os.urandom(513))
        add(tar, "big-pax", b"x" * 700, **{"SCHILY.xattr.user.big": "v" * (3 << 20)})
        for i in range(200):
            add(tar, f"many/f{i}", os.urandom(i * 37))
    with tarfile.open(fileobj=(gnu := io.BytesIO()), mode="w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, "g/" + "name" * 50, b"gnu")
        add(tar, "g/" + "link" * 40, b"", type=tarfile.SYMTYPE)
    for data in (out.getvalue(), gnu.getvalue()):
        record, _, _ = split_tar(io.BytesIO(data))
        want = [(m.kind, m.name, m.size) for m in TarMembers(io.BytesIO(data))]
        assert len(want) >= 2
        assert listed(tarsplit.pieces(record)) == want
        for cut in (1, 100, 511, 700, 4096):  # headers and extended data across pieces
            pieces = (data[i:i + cut] for i in range(0, min(len(data), 300_000), cut))
            if len(data) < 300_000:
                assert listed(pieces) == want
        with pytest.raises(InvalidArgument):
            listed(iter([data[:1100]]))  # in a header, or in a file
    pieces = list(tarsplit.pieces(split_tar(io.BytesIO(out.getvalue()))[0]))
    assert pieces[0][:5] == b"empty" and len(pieces[0]) == 1024  # "empty" and "one"'s header
    assert pieces[1] == 1  # "one"'s content "1": left out
    record = split_tar(io.BytesIO(out.getvalue()))[0]
    for damaged in (record[:len(record) // 2], b"not zlib", zlib.compress(b"XXXX"), record[:-3]):
        with pytest.raises(LaminaError):
            listed(tarsplit.pieces(damaged))
