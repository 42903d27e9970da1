"""Every OCI document lamina writes validates against the OCI image-spec JSON schemas (draft-04,
from Debian's golang-github-opencontainers-image-spec-dev, which scripts/setup installs): the
store's index.json and oci-layout, and the manifest and config of imported, committed, built,
loaded and saved images."""

import json
import os

import pytest

from lamina import Engine

from .conftest import needs_root

pytestmark = needs_root

SCHEMAS = "/usr/share/gocode/src/github.com/opencontainers/image-spec/schema"
SCHEMA_PACKAGE = "golang-github-opencontainers-image-spec-dev"


@pytest.fixture(scope="module")
def validators():
    from jsonschema import Draft4Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT4

    if not os.path.isdir(SCHEMAS):
        pytest.fail(f"no {SCHEMAS}: install the Debian package {SCHEMA_PACKAGE} (scripts/setup)")
    docs = {}
    for name in os.listdir(SCHEMAS):
        if name.endswith(".json"):
            with open(os.path.join(SCHEMAS, name)) as f:
                docs[name] = json.load(f)
    resources = []
    for name, doc in docs.items():
        # draft-04 whatever "$schema" says (Debian's copy names the draft with https://)
        resource = DRAFT4.create_resource(doc)
        # A schema's relative $refs ("defs.json#...") resolve against its id, which is under
        # .../schema/ for some files and .../schema/image/ for others, and defs-descriptor.json
        # has no id at all: every file is registered under both bases.
        for base in ("https://opencontainers.org/schema/",
                     "https://opencontainers.org/schema/image/"):
            resources.append((base + name, resource))
        if "id" in doc:
            resources.append((doc["id"], resource))
    registry = Registry().with_resources(resources)

    def make(name):
        return Draft4Validator(docs[name], registry=registry)

    return {"index": make("image-index-schema.json"), "manifest": make("image-manifest-schema.json"),
            "config": make("config-schema.json"), "layout": make("image-layout-schema.json")}


def assert_valid(validator, doc, what):
    errors = sorted(validator.iter_errors(doc), key=str)
    assert not errors, f"{what}: " + "; ".join(e.message for e in errors[:5])


def check_layout(validators, root: str) -> int:
    """Validate a layout directory's oci-layout, index.json and every manifest/config it lists."""
    with open(os.path.join(root, "oci-layout")) as f:
        assert_valid(validators["layout"], json.load(f), "oci-layout")
    with open(os.path.join(root, "index.json")) as f:
        index = json.load(f)
    assert_valid(validators["index"], index, "index.json")
    checked = 0
    for desc in index["manifests"]:
        path = os.path.join(root, "blobs", *desc["digest"].split(":"))
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
        assert_valid(validators["manifest"], manifest, desc["digest"])
        cfg_path = os.path.join(root, "blobs", *manifest["config"]["digest"].split(":"))
        with open(cfg_path, "rb") as f:
            assert_valid(validators["config"], json.loads(f.read()), manifest["config"]["digest"])
        checked += 1
    return checked


def test_store_and_saved_layouts_validate(validators, store_root, busybox_tar, tmp_path):
    from lamina.builder import BuildOptions

    engine = Engine(root=store_root, driver="overlay2")
    engine.import_image(busybox_tar, "busybox")
    cid = engine.create("busybox", name="ctr")
    root = engine.mount(cid)
    with open(os.path.join(root, "f"), "w") as f:
        f.write("x")
    engine.umount(cid)
    engine.commit("ctr", "committed:1", message="m", author="a")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("a")
    engine.build(BuildOptions(context=str(ctx), tags=["built:1"], dockerfile=(
        'FROM busybox\nENV A=1\nCOPY a /a\nEXPOSE 80/tcp\nVOLUME /data\nUSER 1000\n'
        'HEALTHCHECK CMD true\nLABEL k=v\nSTOPSIGNAL SIGTERM\nCMD ["sh"]\n')), out=lambda line: None)
    assert check_layout(validators, store_root) == 3
    for fmt in ("oci-dir",):
        out = str(tmp_path / "saved")
        engine.save(["busybox", "committed:1", "built:1"], out, fmt=fmt, compression="gzip")
        assert check_layout(validators, out) == 3
        other = Engine(root=str(tmp_path / "other"), driver="vfs")
        other.load(out)
        assert check_layout(validators, other.root) == 3


def test_the_validators_reject_broken_documents(validators):
    """The schemas, $refs included, really are applied (so a pass above means something)."""
    good = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + "a" * 64, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + "b" * 64, "size": 3}]}
    assert list(validators["manifest"].iter_errors(good)) == []
    bad_digest = json.loads(json.dumps(good))
    bad_digest["layers"][0]["digest"] = "no digest here"    # checked through defs-descriptor.json
    bad_size = json.loads(json.dumps(good))
    bad_size["config"]["size"] = "2"
    for doc in (bad_digest, bad_size, {**good, "schemaVersion": 3}):
        assert list(validators["manifest"].iter_errors(doc)), doc
    assert list(validators["config"].iter_errors({"architecture": "amd64", "os": "linux",
                                                  "rootfs": {"type": "layers", "diff_ids": 7}}))
