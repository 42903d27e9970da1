"""Garbage collection: prunes reclaim exactly what `system df` said and leave nothing behind
(`system check` and its repairs: tests/test_check.py)."""

import json
import os

import pytest

from lamina import Engine

from .conftest import needs_root

pytestmark = needs_root


def populated(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="c1")
    root = engine.mount("c1")
    with open(os.path.join(root, "data"), "wb") as f:
        f.write(b"x" * 1000)
    engine.umount("c1")
    engine.commit("c1", "derived")
    engine.create("derived", name="c2")
    return engine


def test_prunes_reclaim_what_df_called_reclaimable(engine, busybox_tar):
    populated(engine, busybox_tar)
    df = {s["Type"]: s for s in engine.system_df()["Summary"]}
    ids, size = engine.prune_containers()
    assert len(ids) == 2 and size == df["Containers"]["Reclaimable"] == 1000
    df = {s["Type"]: s for s in engine.system_df()["Summary"]}
    assert df["Images"]["Reclaimable"] == df["Images"]["Size"] > 0
    lines, size = engine.prune_images(all=False)
    assert lines == [] and size == 0  # nothing dangling: both images are tagged
    lines, size = engine.prune_images(all=True)
    assert size == df["Images"]["Reclaimable"]
    assert sum(line.startswith("Untagged:") for line in lines) == 2
    # the store's data directories hold no layers or blobs any more
    assert os.listdir(os.path.join(engine.root, "blobs", "sha256")) == []
    data = os.path.join(engine.root, engine.driver)
    left = [n for n in os.listdir(data) if n not in ("l", "dir")]
    assert left == []
    for sub in ("l", "dir"):
        if os.path.isdir(os.path.join(data, sub)):
            assert os.listdir(os.path.join(data, sub)) == []
    assert engine.check() == []


def test_dangling_image_is_pruned_and_tagged_one_kept(engine, busybox_tar):
    populated(engine, busybox_tar)
    engine.rm("c2")
    engine.rmi(["derived"])
    engine.commit("c1", "again")  # a tagged image
    engine.commit("c1")           # an untagged (dangling) one
    dangling = [i for i in engine.images() if i["Tag"] == "<none>"]
    assert len(dangling) == 1
    engine.rm("c1")
    lines, size = engine.prune_images()
    assert any(dangling[0]["ID"] in line for line in lines)
    assert size == 0  # its only own layer is shared with "again"
    assert {i["Repository"] for i in engine.images()} == {"busybox", "again"}


@pytest.mark.parametrize("driver", ["overlay2"])
def test_prune_cli_asks_first(lamina, busybox_tar):
    lamina("import", busybox_tar, "busybox")
    lamina("create", "busybox")
    no = lamina("container", "prune", input="n\n")
    assert "Total reclaimed" not in no.stdout and len(lamina("ps", "-aq").stdout.split()) == 1
    yes = lamina("container", "prune", "-f")
    assert "Deleted Containers:" in yes.stdout and "Total reclaimed space: 0B" in yes.stdout
    assert lamina("ps", "-aq").stdout == ""
    out = lamina("system", "prune", "-a", "-f").stdout
    assert "Untagged: busybox:latest" in out and "Total reclaimed space: 1.98MB" in out


def test_layers_keep_no_blob_and_rmi_leaves_none(engine, busybox_tar, tmp_path):
    """An imported layer and a loaded, gzipped one are kept unpacked with their tar-split
    records: the blob store holds only configs and manifests, a manifest may list a gzipped
    blob the store does not hold, and removing the images leaves no blob."""
    from lamina.gc import referenced_blobs

    engine.import_image(busybox_tar, "busybox")
    archive = str(tmp_path / "bb.tar")
    engine.save(["busybox"], archive, fmt="oci-archive", compression="gzip")
    engine.rmi(["busybox"])
    engine.import_image(busybox_tar, "fresh")
    engine.load(archive)                       # its manifest lists the layer gzipped
    manifest = json.loads(engine.content.read(
        engine.image_store.row(engine.image_store.resolve("busybox"))["manifest_digest"]))
    gzipped = manifest["layers"][0]["digest"]
    assert gzipped not in engine.content.digests()
    images = {i["ID"] for i in engine.images()}
    kept = set(engine.content.digests())
    assert kept == referenced_blobs(engine.store) and len(kept) == 2 * len(images) == 4
    assert engine.check() == []
    engine.rmi(["busybox", "fresh"])
    assert engine.content.digests() == []
    assert engine.check() == []


def test_build_states_are_the_build_cache_row(store_root, busybox_tar, tmp_path):
    """A build's intermediate states are not images in `images` or df's Images row; they are
    the Build Cache row, kept by `image prune`, reclaimed by `system prune`."""
    from lamina.builder import BuildOptions

    engine = Engine(root=store_root, driver="overlay2")
    engine.import_image(busybox_tar, "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_bytes(b"a" * 100)
    (ctx / "b").write_bytes(b"b" * 10)
    dockerfile = "FROM busybox\nCOPY a /a\nCOPY b /b\nCMD [\"sh\"]\n"
    engine.build(BuildOptions(context=str(ctx), dockerfile=dockerfile, tags=["app"]),
                 out=lambda line: None)
    df = {s["Type"]: s for s in engine.system_df()["Summary"]}
    assert df["Images"]["TotalCount"] == len(engine.images()) == 2
    assert df["Build Cache"]["TotalCount"] >= 1
    # the COPY a state's layer is also in the final image: counted once, under Images
    assert df["Images"]["Size"] == engine.inspect_image("app")["Size"]
    assert df["Build Cache"]["Size"] == df["Build Cache"]["Reclaimable"] == 0
    lines, _ = engine.prune_images()
    assert lines == []  # dangling-image prune leaves build cache alone
    assert {s["Type"]: s for s in engine.system_df()["Summary"]}["Build Cache"]["TotalCount"] >= 1
    engine.rmi(["app"])
    df = {s["Type"]: s for s in engine.system_df()["Summary"]}
    assert df["Build Cache"]["Size"] == 110  # the COPY layers only the cached states hold now
    result = engine.prune_system()
    assert result["Reclaimed"] == 110
    df = {s["Type"]: s for s in engine.system_df()["Summary"]}
    assert df["Build Cache"]["TotalCount"] == 0 and df["Images"]["TotalCount"] == 1
    assert engine.check() == []
