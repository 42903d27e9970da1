"""``lamina image analyze``: each layer's added/changed/removed entries, the wasted bytes, the
largest wasted paths and dive's efficiency, from real images stored by lamina's Engine."""

import io
import json
import tarfile

import pytest

from lamina.analyze import analyze

from .conftest import needs_root


def _tar(entries) -> bytes:
    """A layer tar: (name, bytes) for a file, (name, None) for a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# on busybox: each step's tar, with the history entry Docker would write for it
STEPS = [
    ("COPY w /w", [("w", None), ("w/big", b"b" * 1000), ("w/keep", b"k" * 10),
                   ("w/gone", b"g" * 500), ("w/cache", None), ("w/cache/a", b"a" * 300),
                   ("w/cache/b", b"c" * 200)]),
    ("RUN overwrite", [("w", None), ("w/big", b"B" * 400)]),
    ("RUN rm /w/gone", [("w", None), ("w/.wh.gone", b"")]),
    ("COPY again", [("w", None), ("w/keep", b"k" * 10), ("w/new", b"n" * 50)]),
    ("RUN rm -rf /w/cache && mkdir /w/cache", [("w/cache", None), ("w/cache/.wh..wh..opq", b""),
                                                ("w/cache/c", b"c" * 7)]),
]


def busybox_bytes(busybox_tar: str) -> int:
    with tarfile.open(busybox_tar) as tar:
        return sum(m.size for m in tar if m.isreg())


def make_image(engine, busybox_tar, tag="wasteful:1") -> str:
    from lamina.digest import sha256_bytes
    from lamina.image import MEDIA_LAYER, dumps

    base = engine.import_image(busybox_tar, "busybox:latest")
    doc = engine.image_store.config(base)
    layers = [(r["blob_digest"], r["blob_size"], r["media_type"])
              for r in engine.image_store.layer_rows(base)]
    history = list(doc.get("history", []))
    history.append({"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True})
    for created_by, entries in STEPS:
        blob = _tar(entries)
        digest = engine.content.put(blob)
        layers.append((digest, len(blob), MEDIA_LAYER))
        doc["rootfs"]["diff_ids"].append(sha256_bytes(blob))
        history.append({"created_by": created_by})
    doc["history"] = history
    return engine.add_image(dumps(doc), layers, [tag])


def test_layers_wasted_bytes_and_efficiency(engine, busybox_tar):
    make_image(engine, busybox_tar)
    report = analyze(engine.image_store, "wasteful:1", top=3)
    base, *steps = report["layers"]
    assert base["changed"] == base["removed"] == base["wasted"] == 0 and base["added"] > 100
    assert [(s["created_by"], s["added"], s["changed"], s["removed"]) for s in steps] == [
        ("COPY w /w", 7, 0, 0),  # w, big, keep, gone, cache, cache/a, cache/b
        ("RUN overwrite", 0, 1, 0),  # w listed again over a directory: not a change
        ("RUN rm /w/gone", 0, 0, 1),
        ("COPY again", 1, 1, 0),
        ("RUN rm -rf /w/cache && mkdir /w/cache", 1, 0, 2),  # opaque: a and b hidden, c added
    ]
    # every hidden copy is the first step's: big 1000, gone 500, a 300, b 200, keep 10
    assert [s["wasted"] for s in steps] == [2010, 0, 0, 0, 0]
    assert report["wasted_bytes"] == 2010 and report["wasted_paths"] == 5
    assert report["top"] == [{"path": "/w/big", "count": 2, "wasted": 1000},
                             {"path": "/w/gone", "count": 1, "wasted": 500},
                             {"path": "/w/cache/a", "count": 1, "wasted": 300}]
    assert report["size"] == sum(r["size"] for r in engine.image_store.layer_rows(report["image"]))
    # dive's figure: per path the smallest occurrence over the sum of all (a deletion occurs
    # with the size it deletes): big 400/1400, keep 10/20, gone 500/1000, a 300/600, b 200/400,
    # new 50/50, c 7/7, each busybox file once
    busybox = busybox_bytes(busybox_tar)
    assert report["efficiency"] == pytest.approx((busybox + 1467) / (busybox + 3477), abs=1e-12)


@needs_root  # mounts the container's root
def test_a_committed_container_layer(engine, busybox_tar):
    import os

    engine.import_image(busybox_tar, "busybox:latest")
    engine.create("busybox", name="c1")
    root = engine.mount("c1")
    with open(os.path.join(root, "hello"), "wb") as f:
        f.write(b"x" * 4096)
    os.unlink(os.path.join(root, "bin/busybox"))
    engine.umount("c1")
    engine.commit("c1", "committed:1")
    report = analyze(engine.image_store, "committed:1")
    top = report["layers"][-1]
    assert (top["added"], top["removed"]) == (1, 1)
    with tarfile.open(busybox_tar) as tar:
        binary = next(m.size for m in tar if m.name.lstrip("./") == "bin/busybox")
    assert report["wasted_bytes"] == binary > 0
    assert report["top"] == [{"path": "/bin/busybox", "count": 1, "wasted": binary}]


def test_cli_table_json_and_ci(store_root, busybox_tar, lamina, driver):
    from lamina import Engine

    engine = Engine(root=store_root, driver=driver)
    make_image(engine, busybox_tar)
    engine.close()

    out = lamina("image", "analyze", "wasteful:1").stdout
    assert "RUN rm -rf /w/cache && mkdir /w/cache" in out and "ENV A=1" not in out
    assert "Wasted space:      2.01kB (5 paths)" in out
    assert "/w/big" in out and "/w/keep" in out
    doc = json.loads(lamina("image", "analyze", "--format", "json", "--top", "1",
                            "wasteful:1").stdout)
    assert set(doc) >= {"layers", "wasted_bytes", "efficiency", "top"}
    assert doc["wasted_bytes"] == 2010 and len(doc["top"]) == 1 and len(doc["layers"]) == 6

    passed = lamina("image", "analyze", "--ci", "--lowest-efficiency", "0.5",
                    "--highest-wasted-bytes", "2.1kB", "wasteful:1")
    assert passed.returncode == 0
    assert "PASS: lowest-efficiency" in passed.stdout and "Result: PASS" in passed.stdout
    failed = lamina("image", "analyze", "--ci", "--lowest-efficiency", "0.5",
                    "--highest-wasted-bytes", "2KB", "wasteful:1", check=False)
    assert failed.returncode == 1
    assert "FAIL: highest-wasted-bytes" in failed.stdout and "Result: FAIL" in failed.stdout
    strict = lamina("image", "analyze", "--ci", "--lowest-efficiency", "1", "wasteful:1",
                    check=False)
    assert strict.returncode == 1 and "FAIL: lowest-efficiency" in strict.stdout


def test_cli_bad_input(lamina):
    missing = lamina("image", "analyze", "nosuch:1", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: No such image: nosuch:1"
    size = lamina("image", "analyze", "--highest-wasted-bytes", "lots", "x", check=False)
    assert size.returncode == 125 and "Traceback" not in size.stderr
    assert len(size.stderr.strip().splitlines()) == 1


def _stack(engine, busybox_tar, steps, tag) -> None:
    """An image of busybox and one layer per (created_by, entries) of ``steps``."""
    from lamina.digest import sha256_bytes
    from lamina.image import MEDIA_LAYER, dumps

    base = engine.import_image(busybox_tar, "busybox:latest")
    doc = engine.image_store.config(base)
    layers = [(r["blob_digest"], r["blob_size"], r["media_type"])
              for r in engine.image_store.layer_rows(base)]
    for created_by, entries in steps:
        blob = _tar(entries)
        layers.append((engine.content.put(blob), len(blob), MEDIA_LAYER))
        doc["rootfs"]["diff_ids"].append(sha256_bytes(blob))
        doc["history"].append({"created_by": created_by})
    engine.add_image(dumps(doc), layers, [tag])


def test_a_file_over_a_directory_and_an_opaque_root(engine, busybox_tar):
    """A file that replaces a directory hides what the directory held (wasted, not removed);
    an opaque marker at the root hides every lower entry."""
    _stack(engine, busybox_tar, [
        ("ADD p", [("p", None), ("p/q", None), ("p/q/f", b"f" * 100), ("p/g", b"g" * 30)]),
        ("RUN rm -rf /p && echo > /p", [("p", b"p" * 7)]),
        ("RUN wipe", [(".wh..wh..opq", b""), ("n", b"n" * 5)]),
    ], "over:1")
    report = analyze(engine.image_store, "over:1")
    base, add, over, wipe = report["layers"]
    busybox = busybox_bytes(busybox_tar)
    assert (add["added"], add["changed"], add["removed"], add["wasted"]) == (4, 0, 0, 130)
    assert (over["added"], over["changed"], over["removed"], over["wasted"]) == (0, 1, 0, 7)
    assert (wipe["added"], wipe["removed"]) == (1, base["added"] + 1)  # busybox's and p
    assert base["wasted"] == busybox and report["wasted_bytes"] == busybox + 137
    # per path, smallest occurrence over all: each busybox file added then deleted, f and g
    # added then hidden, p added then deleted, n once
    assert report["efficiency"] == pytest.approx((busybox + 142) / (2 * busybox + 279),
                                                 abs=1e-12)


def test_each_layers_listing_is_kept_and_goes_with_the_layer(engine, busybox_tar):
    """The first analysis keeps each layer's listing in the store; later ones read it (the
    same report), a damaged one is made again from the layer's record, and removing the
    image's layers removes their listings."""
    from lamina.analyze import decode_listing

    make_image(engine, busybox_tar)
    db = engine.db
    first = analyze(engine.image_store, "wasteful:1")
    chains = [r["chain_id"] for r in engine.image_store.layer_rows(first["image"])]
    kept = dict(db.execute("SELECT chain_id, listing FROM layer_listings").fetchall())
    assert set(kept) == set(chains) and all(decode_listing(v) is not None for v in kept.values())
    assert analyze(engine.image_store, "wasteful:1") == first
    with engine.store.tx():
        db.execute("UPDATE layer_listings SET listing = ? WHERE chain_id = ?",
                   (b"not a listing", chains[-1]))
    assert analyze(engine.image_store, "wasteful:1") == first
    assert db.execute("SELECT listing FROM layer_listings WHERE chain_id = ?",
                      (chains[-1],)).fetchone()[0] == kept[chains[-1]]
    engine.rmi(["wasteful:1", "busybox:latest"])
    assert db.execute("SELECT count(*) FROM layer_listings").fetchone()[0] == 0
