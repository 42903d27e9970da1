"""Hostile and broken inputs, generated in memory (nothing binary is committed).

Each entry is a name and a function returning bytes. ``TARS`` are layer tars for ``import``
(tests/test_cli.py and tests/test_layertar.py have the basic cases: ``..``, absolute paths,
symlink-then-write, hard links out, ``.wh.``, truncated and garbage tars, truncated gzip; these
add what they lack). ``ARCHIVES`` are image archives for ``load`` (tests/test_archive.py has
wrong diff_id, missing layer, truncated, not a tar, no manifest, bad OCI digest).
"""

import gzip
import hashlib
import io
import json
import tarfile

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def tar(*members) -> bytes:
    """members: (name, kind, extra): file (data), dir, symlink/link (target), fifo, char."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if kind == "file":
                data = extra or b""
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "block":
                info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 7, 0
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _noise(n: int) -> bytes:
    import random

    return random.Random(n).randbytes(n)


def _bad_crc(gz: bytes) -> bytes:
    return gz[:-8] + b"\0\0\0\0" + gz[-4:]


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(data)


def _pax_size_lie() -> bytes:
    """A member whose PAX header declares a petabyte of data, followed by 512 bytes."""
    info = tarfile.TarInfo("huge")
    info.size = 512
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"size": str(10**15)}) as tf:
        tf.addfile(info, io.BytesIO(b"z" * 512))
    return buf.getvalue()


def zeros_tar_header(size: int) -> bytes:
    info = tarfile.TarInfo("zeros")
    info.size = size
    return info.tobuf(format=tarfile.PAX_FORMAT)


def gzip_bomb(size: int) -> bytes:
    """A gzip layer of one file of ``size`` zero bytes (about 1000:1)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        _write_zeros_tar(gz, size)
    return out.getvalue()


def zstd_bomb(size: int) -> bytes:
    """A zstd layer of one file of ``size`` zero bytes (zstd goes far past 1000:1)."""
    import zstandard

    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as w:
        _write_zeros_tar(w, size)
    return out.getvalue()


def _write_zeros_tar(out, size: int) -> None:
    """A tar of one file of ``size`` zero bytes into the writer ``out``, 1 MiB at a time."""
    out.write(zeros_tar_header(size))
    block = bytes(1 << 20)
    left = size
    while left:
        out.write(block[:min(left, len(block))])
        left -= min(left, len(block))
    out.write(bytes(-size % 512 + 1024))


TARS = {
    # whiteouts of the root, of "." and ".." at the top
    "whiteout-dot-at-root": lambda: tar((".wh..", "file", b"")),
    "whiteout-dotdot-at-root": lambda: tar((".wh...", "file", b"")),
    "whiteout-dot-slash-root": lambda: tar(("./.wh..", "file", b"")),
    "whiteout-of-whiteout": lambda: tar(("a/.wh..wh.x", "file", b"")),
    # symlinks and links that lead out
    "symlink-chain-then-write": lambda: tar(("a", "symlink", "b"), ("b", "symlink", "/etc"),
                                            ("a/escaped", "file", b"x")),
    "dir-replaced-by-symlink": lambda: tar(("d", "dir", None), ("d", "symlink", "/tmp"),
                                           ("d/escaped", "file", b"x")),
    "hardlink-through-symlink": lambda: tar(("s", "symlink", "/etc"),
                                            ("pw", "link", "s/passwd")),
    "hardlink-to-dir": lambda: tar(("d", "dir", None), ("h", "link", "d")),
    # sizes and structure
    "pax-size-petabyte": _pax_size_lie,
    "header-checksum-wrong": lambda: tar(("a", "file", b"x"))[:148] + b"0000000\0"
    + tar(("a", "file", b"x"))[156:],
    "negative-size": lambda: tar(("a", "file", b"x"))[:124] + b"-0000000001\0"
    + tar(("a", "file", b"x"))[136:],
    # compression
    "garbage-gzip": lambda: b"\x1f\x8b\x08\x00" + bytes(range(256)) * 20,
    "gzip-bad-crc": lambda: _bad_crc(gzip.compress(tar(("a", "file", b"y" * 5000)), mtime=0)),
    "truncated-zstd": lambda: _zstd(tar(("a", "file", _noise(100_000))))[:50_000],
    "garbage-zstd": lambda: ZSTD_MAGIC + bytes(range(256)) * 20,
    "zstd-of-garbage": lambda: _zstd(bytes(range(256)) * 40),
    "zstd-bomb-default-limit": lambda: zstd_bomb(64 << 20),
}

# Accepted on purpose (the format allows them), but handled safely: the last entry wins.
DUPLICATES = {
    "file-twice": (tar(("a", "file", b"first"), ("a", "file", b"second")), {"a": b"second"}),
    "dir-then-file": (tar(("a", "dir", None), ("a/x", "file", b"1"), ("a", "file", b"f")),
                      {"a": b"f"}),
    "symlink-then-file": (tar(("a", "symlink", "/etc/passwd"), ("a", "file", b"mine")),
                          {"a": b"mine"}),
}


# ---------------------------------------------------------------------------- archives for load


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def archive(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer() -> bytes:
    return tar(("hello", "file", b"hello\n"))


def _config(diff_ids) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def _oci(manifest: dict | bytes, blobs: dict, index: bytes | None = None) -> bytes:
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    if index is None:
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(body),
            "size": len(body), "annotations": {"org.opencontainers.image.ref.name": "bad:1"}}]
        }).encode()
    members["index.json"] = index
    members["blobs/sha256/" + _sha(body)[7:]] = body
    for data in blobs:
        members["blobs/sha256/" + _sha(data)[7:]] = data
    return archive(members)


def _oci_manifest(config: bytes, layer: bytes, config_size=None, layer_size=None,
                  layer_digest=None) -> dict:
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _sha(config), "size": config_size or len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest or _sha(layer),
                        "size": layer_size or len(layer)}]}


def _archives():
    layer = _layer()
    config = _config([_sha(layer)])
    docker_manifest = json.dumps([{"Config": "c.json", "RepoTags": ["bad:1"],
                                   "Layers": ["l.tar"]}]).encode()
    return {
        "docker-manifest-not-json": archive({"manifest.json": b"[{not json",
                                             "c.json": config, "l.tar": layer}),
        "docker-config-not-json": archive({"manifest.json": docker_manifest,
                                           "c.json": b"{nope", "l.tar": layer}),
        "docker-config-no-rootfs": archive({"manifest.json": docker_manifest,
                                            "c.json": b'{"os":"linux"}', "l.tar": layer}),
        "docker-bad-repotag": archive({"manifest.json": json.dumps(
            [{"Config": "c.json", "RepoTags": ["Bad Tag!"], "Layers": ["l.tar"]}]).encode(),
            "c.json": config, "l.tar": layer}),
        "docker-layer-path-escape": archive({"manifest.json": json.dumps(
            [{"Config": "c.json", "RepoTags": ["bad:1"], "Layers": ["../../etc/passwd"]}]
        ).encode(), "c.json": config, "l.tar": layer}),
        "oci-index-not-json": _oci(_oci_manifest(config, layer), [config, layer],
                                   index=b"{index"),
        "oci-manifest-not-json": _oci(b"{manifest", [config, layer]),
        "oci-missing-layer-blob": _oci(_oci_manifest(config, layer), [config]),
        "oci-missing-config-blob": _oci(_oci_manifest(config, layer), [layer]),
        "oci-wrong-layer-size": _oci(_oci_manifest(config, layer, layer_size=len(layer) + 1),
                                     [config, layer]),
        "oci-wrong-config-size": _oci(_oci_manifest(config, layer, config_size=3),
                                      [config, layer]),
        "oci-layer-digest-mismatch": _oci(_oci_manifest(config, layer,
                                                        layer_digest="sha256:" + "ab" * 32),
                                          [config, layer]),
        "oci-malformed-digest": _oci(_oci_manifest(config, layer, layer_digest="sha256:xyz"),
                                     [config, layer]),
        "oci-config-wrong-diff-id": _oci(_oci_manifest(_config(["sha256:" + "0" * 64]), layer),
                                         [_config(["sha256:" + "0" * 64]), layer]),
    }


ARCHIVES = _archives()

BAD_REFERENCES = ["UPPER:case", "a b", "name@sha256:abc", ":tag", "repo:", "-dash", "a//b",
                  "a/../b", "x:" + "t" * 200, "tab\there", "new\nline", "ctl\x01", "../up",
                  "/abs", "name:tag:extra"]

BAD_NAMES = ["a/b", "../c", "/abs", "dot/../x", "new\nline", "ctl\x01x", "tab\tx", "-dash",
             "x" * 300, ""]
# bad volume names that Docker takes as container names (/?[a-zA-Z0-9][a-zA-Z0-9_.-]+: a
# leading / is dropped, and there is no length limit)
CONTAINER_NAMES = {"/abs", "x" * 300}

# Syntax errors: both ``build --check`` and ``build`` refuse them.
DOCKERFILES = {
    "unknown-instruction": "FROOM busybox\n",
    "from-no-args": "FROM\n",
    "unterminated-heredoc": "FROM busybox\nRUN <<EOF\necho\n",
    "bad-flag": "FROM busybox\nCOPY --nope=1 a b\n",
    "env-no-value": "FROM busybox\nENV\n",
    "only-comments": "# nothing\n",
}

# Valid syntax that BuildKit's parser accepts too; ``build`` must still fail cleanly (the base
# image does not exist) or succeed.
ODD_DOCKERFILES = {
    "arg-bad-name": "ARG 1=2\nFROM nosuchbase\n",
    "copy-from-missing-stage": "FROM base\nCOPY --from=nowhere /a /b\n",
    "nul-byte": "FROM nosuchbase\nRUN echo \0\n",
    "invalid-utf8": b"FROM nosuchbase\nRUN echo \xff\xfe\n",
}
