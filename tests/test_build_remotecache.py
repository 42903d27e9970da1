"""Caches that travel: machine A builds with ``--cache-to``, machine B (another store, empty but
for the base image) builds the same Dockerfile with ``--cache-from`` and runs no RUN; through
Debian's docker-registry (whose access log counts the blobs B fetched) and a local directory."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from lamina import Engine
from lamina.cachemounts import cache_dir

from .conftest import Lamina, needs_root, remove_bridges, store_files
from .test_registry import start_registry, stop

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("docker-registry") is None,
                                             reason="docker-registry is installed by scripts/setup")]

# every RUN leaves a mark in its store's cache mount (outside any layer): a RUN that ran shows
DOCKERFILE = """\
FROM {base}
RUN --mount=type=cache,id=marks,target=/marks echo one > /one && touch /marks/one
RUN --mount=type=cache,id=marks,target=/marks echo two > /two && touch /marks/two
ENV STAGE=done
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("cache-registry"))
    host, proc = start_registry(work)
    yield host, os.path.join(work, "registry.log")
    stop(proc)


@pytest.fixture
def machines(tmp_path, busybox_tar, registry):
    """Stores A and B (overlay2), both with the same base image, pulled from the registry."""
    host, _ = registry
    base = f"{host}/base/busybox:1"
    roots = [str(tmp_path / "a"), f"/var/tmp/{tmp_path.name}-b"]
    a = Engine(root=roots[0], driver="overlay2")
    a.import_image(busybox_tar, base)
    a.push(base)
    a.close()
    b = Engine(root=roots[1], driver="overlay2")
    b.pull(base)
    b.close()
    yield Lamina(roots[0], None), Lamina(roots[1], None), base
    for root in roots:
        os.system(f"grep -o ' {root}[^ ]*' /proc/self/mountinfo | sort -r | "
                  "xargs -r -n1 umount -l")
        remove_bridges(root)  # its RUN steps' default network
        shutil.rmtree(root, ignore_errors=True)


def context(tmp_path, text: str) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return str(ctx)


def blob_gets(log: str, repository: str) -> list[str]:
    with open(log, errors="replace") as f:
        return re.findall(rf'"GET /v2/{re.escape(repository)}/blobs/(sha256:[0-9a-f]+)', f.read())


def ran(lamina: Lamina) -> set[str]:
    marks = cache_dir(lamina.root, "marks")
    return set(os.listdir(marks)) if os.path.isdir(marks) else set()


def image_id(lamina: Lamina, name: str) -> str:
    return json.loads(lamina("image", "inspect", name).stdout)[0]["Id"]


def test_min_exports_the_final_images_steps_and_max_every_step():
    from lamina.builder.remotecache import Step, select_steps

    def step(key, parent, image):
        return Step(key, parent, image, (), b"{}")

    # stage "builder": b1 -> b2; final stage: f1 -> f2 (built on the base image, copies from b2)
    steps = {s.key: s for s in (step("b1", None, "B1"), step("b2", "b1", "B2"),
                                step("f1", None, "F1"), step("f2", "f1", "F2"))}
    assert [s.key for s in select_steps(steps, "F2", "min")] == ["f1", "f2"]
    assert [s.key for s in select_steps(steps, "F2", "max")] == ["b1", "b2", "f1", "f2"]
    # a parent always comes before its child, whatever the order the steps were made in
    shuffled = {k: steps[k] for k in ("f2", "b2", "f1", "b1")}
    order = [s.key for s in select_steps(shuffled, "F2", "max")]
    assert order.index("f1") < order.index("f2") and order.index("b1") < order.index("b2")


def raw_config(lamina: Lamina, image: str) -> dict:
    engine = Engine(root=lamina.root)
    try:
        return json.loads(engine.content.read(image_id(lamina, image)))
    finally:
        engine.close()


def test_registry_cache_from_another_store_runs_no_run(machines, registry, tmp_path):
    a, b, base = machines
    host, log = registry
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    a("build", "--progress=plain", "--cache-to", f"type=registry,ref={host}/cache/app:1,mode=max",
      "-t", "app:1", ctx)
    assert ran(a) == {"one", "two"}

    # the registry holds BuildKit's cache manifest: a cacheconfig and the two built layers
    from lamina.transfer.http import Client

    with Client(host, ["repository:cache/app:pull", "repository:base/busybox:pull"]) as client:
        manifest, _, _ = client.get_manifest("cache/app", "1")
        base_manifest, _, _ = client.get_manifest("base/busybox", "1")
    doc = json.loads(manifest)
    assert doc["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
    assert all(d["mediaType"].endswith("+gzip") for d in doc["layers"])
    assert len(doc["layers"]) == 3  # busybox's own layer, then the two RUNs'
    # the base's layer is the registry's own blob (mounted from base/busybox, not made again)
    assert doc["layers"][0]["digest"] == json.loads(base_manifest)["layers"][0]["digest"]

    before = len(blob_gets(log, "cache/app"))
    out = b("build", "--progress=plain", "--cache-from", f"type=registry,ref={host}/cache/app:1",
            "-t", "app:1", ctx).stdout
    assert ran(b) == set()  # no RUN ran on B
    runs = re.findall(r"^#(\d+) \[\d/\d\] RUN", out, re.M)
    assert len(runs) == 2 and all(f"#{n} CACHED" in out for n in runs), out
    assert image_id(b, "app:1") == image_id(a, "app:1")  # the very same image
    fetched = blob_gets(log, "cache/app")[before:]
    # the cache config and the two RUN layers; busybox's layer B had already
    assert len(fetched) == 3 and len(set(fetched)) == 3, fetched
    root = b("run", "--rm", "app:1", "cat", "/one", "/two").stdout
    assert root == "one\ntwo\n"


def test_a_hit_fetches_only_the_layers_it_needs(machines, registry, tmp_path):
    a, b, base = machines
    host, log = registry
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    a("build", "--cache-to", f"type=registry,ref={host}/cache/partial:1", "-t", "app:1", ctx)
    layers = json.loads(a("image", "inspect", "app:1").stdout)[0]["RootFS"]["Layers"]
    # B's Dockerfile shares the first RUN only: the second RUN's layer is never fetched
    changed = DOCKERFILE.format(base=base).replace("echo two", "echo TWO")
    before = len(blob_gets(log, "cache/partial"))
    b("build", "--cache-from", f"{host}/cache/partial:1", "-t", "app:2",
      context(tmp_path, changed))
    assert ran(b) == {"two"}
    fetched = blob_gets(log, "cache/partial")[before:]
    assert len(fetched) == 2, fetched  # the cache config and the first RUN's layer
    b_layers = json.loads(b("image", "inspect", "app:2").stdout)[0]["RootFS"]["Layers"]
    assert b_layers[:2] == layers[:2] and b_layers[2] != layers[2]


def test_local_cache_and_its_format(machines, tmp_path):
    a, b, base = machines
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    dest = tmp_path / "cache"
    a("build", "--cache-to", f"type=local,dest={dest}", "-t", "app:1", ctx)
    index = json.loads((dest / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"

    def blob(digest):
        return (dest / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    assert [d["digest"] for d in manifest["layers"]] == [layer["blob"] for layer in
                                                         config["layers"]]
    # each layer links to the one below; each step (ENV too: its state has the same top
    # layer) to the step before it
    assert [layer["parent"] for layer in config["layers"]] == [-1, 0, 1]
    assert [r.get("layers", [{}])[0].get("layer") for r in config["records"]] == [1, 2, 2]
    assert [r.get("inputs") for r in config["records"]][1:] == [
        [[{"selector": "", "link": 0}]], [[{"selector": "", "link": 1}]]]

    out = b("build", "--cache-from", f"type=local,src={dest}", "-t", "app:1", ctx).stdout
    assert ran(b) == set() and out.count("Using cache") == 3
    assert image_id(b, "app:1") == image_id(a, "app:1")


def test_inline_cache_travels_with_the_image(machines, registry, tmp_path):
    a, b, base = machines
    host, _ = registry
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    image = f"{host}/app/inline:1"
    a("build", "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", image, ctx)
    raw = raw_config(a, image)
    assert "moby.buildkit.cache.v0" in raw  # BuildKit's field, in the config pushed
    a("push", image)
    out = b("build", "--cache-from", image, "-t", "app:1", ctx).stdout
    assert ran(b) == set() and out.count("Using cache") == 3, out
    built = raw_config(b, "app:1")
    del raw["moby.buildkit.cache.v0"]
    assert built == raw  # the image A built, before its cache went in


def test_bad_cache_options_are_one_line_errors(machines, tmp_path):
    a, _b, base = machines
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    before = store_files(a.root)
    for flag, value, message in (
            ("--cache-to", "type=s3,bucket=x", "unsupported cache type 's3'"),
            ("--cache-to", "type=local", "type=local needs dest=DIR"),
            ("--cache-from", "type=local", "type=local needs src=DIR"),
            ("--cache-to", "type=registry,mode=max", "type=registry needs ref=REF"),
            ("--cache-to", "type=registry,ref=x/y,mode=all", "invalid mode 'all'"),
            ("--cache-from", "type=local,src=/x,colour=red", "unknown option 'colour'"),
            ("--cache-from", "type=inline", "type=inline is for --cache-to")):
        proc = a("build", flag, value, ctx, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (value, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert store_files(a.root) == before


def test_an_unreadable_cache_from_is_a_warning(machines, tmp_path):
    a, _b, base = machines
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    proc = a("build", "--progress=plain", "--cache-from", "type=registry,ref=127.0.0.1:1/no/such",
             "--cache-from", f"type=local,src={tmp_path}/missing", "-t", "app:1", ctx)
    assert proc.stdout.count("WARNING: failed to import cache") == 2, proc.stdout
    assert ran(a) == {"one", "two"}


def test_a_cache_that_cannot_be_written_is_a_one_line_error(machines, tmp_path):
    a, _b, base = machines
    ctx = context(tmp_path, DOCKERFILE.format(base=base))
    unwritable = "failed to export cache to local:/proc/lamina-cache"
    for value, message in (("type=local,dest=/proc/lamina-cache", unwritable),
                           ("type=registry,ref=127.0.0.1:1/no/such", "cannot reach registry")):
        proc = a("build", "-q", "--cache-to", value, ctx, check=False)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1

