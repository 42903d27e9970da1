"""`system df` is honest: its rows (images, containers, volumes, build cache, the store's own
overhead) add up to `du -sb` of the store's root, each layer is counted once, and `-v` shows
every layer with what it shares."""

import os
import subprocess

from lamina import Engine

from .conftest import needs_root

pytestmark = needs_root


def du(path: str) -> int:
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def populated(engine, busybox_tar):
    engine.import_image(busybox_tar, "busybox")
    engine.create("busybox", name="c1")
    root = engine.mount("c1")
    os.makedirs(os.path.join(root, "big", "dir"))
    for i in range(20):
        with open(os.path.join(root, "big", "dir", f"f{i}"), "wb") as f:
            f.write(os.urandom(50_000))
    engine.umount("c1")
    engine.commit("c1", "derived")
    engine.create("derived", name="c2")
    from lamina.volumes import data_dir

    engine.volume_create("data")
    with open(os.path.join(data_dir(engine.store, "data"), "v"), "wb") as f:
        f.write(b"v" * 300_000)
    return engine


def test_the_rows_add_up_to_du_of_the_store(store_root, driver, busybox_tar):
    from lamina.analyze import analyze

    engine = populated(Engine(root=store_root, driver=driver), busybox_tar)
    analyze(engine.image_store, "derived")  # keeps the layers' listings: in the database
    assert engine.db.execute("SELECT count(*) FROM layer_listings").fetchone()[0] == 2
    df = engine.system_df()
    rows = {s["Type"]: s for s in df["Summary"]}
    assert set(rows) == {"Images", "Containers", "Local Volumes", "Build Cache",
                         "Store Overhead"}
    total = sum(s["Size"] for s in df["Summary"])
    on_disk = du(store_root)
    assert abs(total - on_disk) <= on_disk * 0.01, (total, on_disk, df["Overhead"])
    # layers once: the images row is the layers' bytes, not the images' sizes added up
    assert rows["Images"]["Size"] == sum(layer["Size"] for layer in df["Layers"])
    assert rows["Images"]["Size"] < sum(i["Size"] for i in df["Images"])
    # the store keeps no layer tar: its blobs are configs and manifests (a few kB)
    assert df["Overhead"]["Blobs"] < 64 << 10
    assert df["Overhead"]["Records"] == len(df["Layers"]) == 2
    engine.close()


def test_verbose_shows_layers_shared_and_unique(lamina, busybox_tar):
    engine = populated(Engine(root=lamina.root, driver=lamina.driver), busybox_tar)
    base = engine.image_store.layer_rows(engine.image_store.resolve("busybox"))[0]["chain_id"]
    engine.close()
    out = lamina("system", "df", "-v").stdout
    assert "Layers space usage:" in out and "Store overhead:" in out
    line = next(line for line in out.splitlines() if line.startswith(base[7:19]))
    assert line.split()[3] == "2"  # IMAGES: busybox and derived share it
    assert "tar-split records (2)" in out
    table = lamina("system", "df").stdout
    assert table.splitlines()[-1].startswith("Store Overhead")


def test_sizes_come_from_the_layers_records_not_a_walk(store_root, busybox_tar):
    """What df says of a layer was measured when it was stored: writing into a committed
    layer's directory (damage) changes nothing in df, and `system check` is what sees it."""
    engine = Engine(root=store_root, driver="overlay2")
    engine.import_image(busybox_tar, "busybox")
    before = engine.system_df()["Summary"][0]["Size"]
    chain = engine.image_store.layer_rows(engine.image_store.resolve("busybox"))[0]["chain_id"]
    with open(os.path.join(engine.store.snaps.dir(chain), "bin", "busybox"), "ab") as f:
        f.write(b"x" * 10_000)
    assert engine.system_df()["Summary"][0]["Size"] == before
    assert [f.kind for f in engine.check()] == ["damaged layer files (do not match their record)"]
    engine.close()
