"""Fuzzing with hypothesis: the tar reader, the archive (manifest, config, index) reader and the
Dockerfile parser raise nothing but LaminaError subclasses on mutated valid inputs, and the tar
reader never writes outside its target.

Budget: a short profile by default (``LAMINA_FUZZ_EXAMPLES``, default 150 examples per target);
``LAMINA_LONG=1`` runs 3000 per target. A failure prints the falsifying example; hypothesis keeps
no database here (``database=None``), so reproduce with the printed bytes or ``--hypothesis-seed``.
"""

import glob
import gzip
import io
import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.errors import LaminaError
from lamina.layertar import apply_tar, open_layer_stream

from ..conftest import needs_root
from . import corpus
from . import crashkit as ck

EXAMPLES = int(os.environ.get("LAMINA_FUZZ_EXAMPLES", "3000" if ck.LONG else "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
# The Dockerfile parser's own cases (tests/test_dockerfile.py), valid and invalid, seed its fuzzer
DOCKERFILE_CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "data", "dockerfile")


# ---------------------------------------------------------------------------- seeds


def _seed_tars() -> list[bytes]:
    rich = corpus.tar(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0::/:/bin/sh\n"),
                      ("etc/link", "symlink", "passwd"), ("etc/hard", "link", "etc/passwd"),
                      ("etc/.wh.gone", "file", b""), ("opq/.wh..wh..opq", "file", b""),
                      ("dev/null", "char", None), ("pipe", "fifo", None),
                      ("long/" + "n" * 150, "file", b"long name"),
                      ("big", "file", bytes(range(256)) * 20))
    plain = corpus.tar(("a", "file", b"hello"), ("d", "dir", None), ("d/b", "file", b"x" * 700))
    return [rich, plain, gzip.compress(rich, mtime=0), corpus._zstd(plain)]


SEEDS = _seed_tars()


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0, 0x2F, 0x2E, 0x30, 0x35, 0x37, 0xFF, 0x78]))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 1024))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            block = at - at % 512
            data[block:block] = data[block:block + 512]
    if draw(st.booleans()):  # make mutated headers pass their checksum, to get past it
        _fix_checksums(data)
    return bytes(data)


def _fix_checksums(data: bytearray) -> None:
    for start in range(0, len(data) - 511, 512):
        if data[start + 257:start + 262] == b"ustar":
            block = data[start:start + 512]
            block[148:156] = b" " * 8
            data[start + 148:start + 156] = b"%06o\0 " % sum(block)


# ---------------------------------------------------------------------------- tar reader


@needs_root  # overlay format whiteouts are char devices; trusted.* xattrs
@FUZZ
@given(data=mutated(SEEDS), fmt=st.sampled_from(["plain", "overlay"]))
def test_tar_reader_raises_only_lamina_errors(data, fmt):
    arena = tempfile.mkdtemp(prefix="lamina-fuzz-", dir="/var/tmp")
    try:
        root = os.path.join(arena, "root")
        outside = os.path.join(arena, "outside")
        os.mkdir(root)
        os.mkdir(outside)
        with open(os.path.join(outside, "keep"), "wb") as f:
            f.write(b"sentinel")
        try:
            apply_tar(open_layer_stream(io.BytesIO(data)), root, fmt)
        except LaminaError as e:
            assert "\n" not in str(e)
        assert sorted(os.listdir(arena)) == ["outside", "root"]
        assert os.listdir(outside) == ["keep"]
        with open(os.path.join(outside, "keep"), "rb") as f:
            assert f.read() == b"sentinel"
    finally:
        shutil.rmtree(arena)


# ---------------------------------------------------------------------------- archives


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.text(max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


ARCHIVE_SEEDS = [corpus.ARCHIVES["oci-wrong-config-size"], corpus.ARCHIVES["docker-bad-repotag"]]


def _good_archives() -> list[bytes]:
    layer = corpus.tar(("hello", "file", b"hello\n"))
    config = corpus._config([corpus._sha(layer)])
    docker = corpus.archive({"manifest.json": json.dumps([{"Config": "c.json",
                                                           "RepoTags": ["fz:1"],
                                                           "Layers": ["l.tar"]}]).encode(),
                             "c.json": config, "l.tar": layer})
    oci = corpus._oci(corpus._oci_manifest(config, layer), [config, layer])
    return [docker, oci]


GOOD_ARCHIVES = _good_archives()


@st.composite
def json_swapped(draw):
    """A good archive with one JSON document (manifest.json, index.json, a config or manifest
    blob) replaced: a random JSON value, or the document with one key's value replaced."""
    import tarfile

    data = draw(st.sampled_from(GOOD_ARCHIVES))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf}
    jsons = sorted(name for name, body in members.items() if body[:1] in (b"{", b"["))
    name = draw(st.sampled_from(jsons))
    doc = json.loads(members[name])
    if isinstance(doc, dict) and doc and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(doc)))
        doc[key] = draw(_json_values())
    elif isinstance(doc, list) and doc and isinstance(doc[0], dict) and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(doc[0])))
        doc[0][key] = draw(_json_values())
    else:
        doc = draw(_json_values())
    members[name] = json.dumps(doc).encode()
    return corpus.archive(members)


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory):
    from lamina import Engine

    engine = Engine(root=str(tmp_path_factory.mktemp("fuzz-store")), driver="vfs")
    yield engine
    engine.close()


def _load(engine, data: bytes) -> None:
    try:
        engine.load(io.BytesIO(data))
    except LaminaError as e:
        assert "\n" not in str(e), str(e)


@FUZZ
@given(data=mutated(GOOD_ARCHIVES + ARCHIVE_SEEDS))
def test_archive_reader_bytes(fuzz_engine, data):
    _load(fuzz_engine, data)


@FUZZ
@given(data=json_swapped())
def test_archive_reader_documents(fuzz_engine, data):
    _load(fuzz_engine, data)


def test_fuzzed_store_is_consistent(fuzz_engine):
    """After everything the fuzzers loaded (or refused), the store checks clean."""
    assert [str(f) for f in fuzz_engine.check()] == []


# ---------------------------------------------------------------------------- Dockerfiles


def _dockerfiles() -> list[bytes]:
    paths = sorted(glob.glob(os.path.join(DOCKERFILE_CASES, "*.Dockerfile"))
                   + glob.glob(os.path.join(DOCKERFILE_CASES, "invalid", "*.Dockerfile")))
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


DOCKERFILES = _dockerfiles()


def test_dockerfile_seeds_present():
    assert len(DOCKERFILES) > 100


@st.composite
def mutated_text(draw):
    text = bytearray(draw(st.sampled_from(DOCKERFILES)))
    for _ in range(draw(st.integers(1, 6))):
        if not text:
            text += b"FROM x\n"
        at = draw(st.integers(0, len(text)))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            text[at:at] = draw(st.sampled_from([b"\\", b"\n", b"<<EOF", b"$", b"${", b"[\"",
                                               b"\"", b"'", b"#", b" \\\n", b"--from=", b"\0",
                                               b"\xff", b"ARG ", b"FROM ", b"COPY ", b"\t"]))
        elif choice == 1:
            del text[at:at + draw(st.integers(1, 40))]
        elif choice == 2:
            text[at:at] = draw(st.binary(max_size=16))
        else:
            text[at:at] = draw(st.text(max_size=16)).encode()
    return bytes(text)


@FUZZ
@given(text=mutated_text())
def test_dockerfile_parser_raises_only_lamina_errors(text):
    from lamina.builder.dockerfile import parse
    from lamina.builder.plan import check

    for fn in (parse, check):
        try:
            fn(text)
        except LaminaError as e:
            assert str(e)
