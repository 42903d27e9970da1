"""The build cache: what makes a step a hit, what makes it a miss, and same-ID rebuilds."""

from __future__ import annotations

import os

import pytest

from .conftest import needs_root
from .test_build import (  # noqa: F401  (ctx, mounted and store are fixtures)
    config_of,
    ctx,
    do_build,
    mounted,
    needs_runtime,
    store,
    write,
)

pytestmark = needs_root

DOCKERFILE = """\
FROM busybox
LABEL app=demo
COPY first.txt /app/
COPY tree /app/tree/
ENV STAGE=late
COPY last.txt /app/
CMD ["sh"]
"""


def cached_steps(lines: list[str]) -> list[int]:
    """Numbers of the steps that said CACHED."""
    steps = []
    current = 0
    for line in lines:
        if line.startswith("Step "):
            current = int(line.split()[1].split("/")[0])
        elif "CACHED" in line:
            steps.append(current)
    return steps


@pytest.fixture
def project(ctx):  # noqa: F811
    write(ctx, {"first.txt": "first\n", "tree/a": "a\n", "tree/deep/b": "b\n",
                "last.txt": "last\n"})
    return ctx


def test_unchanged_rebuild_gives_the_same_image_id(store, project):  # noqa: F811
    first, lines = do_build(store, project, DOCKERFILE, tags=["app:1"])
    assert cached_steps(lines) == []
    again, lines = do_build(store, project, DOCKERFILE, tags=["app:1"])
    assert again == first
    assert cached_steps(lines) == [2, 3, 4, 5, 6, 7]
    assert f"Successfully built {first[7:19]}" in lines


def test_changed_byte_rebuilds_that_step_and_later_only(store, project):  # noqa: F811
    first, _ = do_build(store, project, DOCKERFILE)
    before = config_of(store, first)
    (project / "tree" / "deep" / "b").write_text("B\n")  # same size, one byte differs
    second, lines = do_build(store, project, DOCKERFILE)
    assert second != first
    assert cached_steps(lines) == [2, 3]  # LABEL, COPY first.txt
    after = config_of(store, second)
    # the layers below the changed step are the very same ones
    assert after["rootfs"]["diff_ids"][:2] == before["rootfs"]["diff_ids"][:2]
    assert after["rootfs"]["diff_ids"][2] != before["rootfs"]["diff_ids"][2]
    assert after["history"][:3] == before["history"][:3]
    # and the old version is still cached
    (project / "tree" / "deep" / "b").write_text("b\n")
    third, lines = do_build(store, project, DOCKERFILE)
    assert third == first and cached_steps(lines) == [2, 3, 4, 5, 6, 7]


def test_mtime_and_atime_do_not_count(store, project):  # noqa: F811
    first, _ = do_build(store, project, DOCKERFILE)
    for name in ("first.txt", "tree/a", "tree/deep/b", "last.txt", "tree"):
        os.utime(project / name, (1, 1))
    again, lines = do_build(store, project, DOCKERFILE)
    assert again == first and cached_steps(lines) == [2, 3, 4, 5, 6, 7]


def test_mode_owner_name_and_instruction_count(store, project):  # noqa: F811
    first, _ = do_build(store, project, DOCKERFILE)
    os.chmod(project / "last.txt", 0o600)
    _, lines = do_build(store, project, DOCKERFILE)
    assert cached_steps(lines) == [2, 3, 4, 5]
    os.chmod(project / "last.txt", 0o644)
    # the owner written counts: --chown is part of what the layer holds
    chowned = DOCKERFILE.replace("COPY last.txt", "COPY --chown=5:5 last.txt")
    _, lines = do_build(store, project, chowned)
    assert cached_steps(lines) == [2, 3, 4, 5]
    # a new file in a copied directory
    write(project, {"tree/new": "new\n"})
    _, lines = do_build(store, project, DOCKERFILE)
    assert cached_steps(lines) == [2, 3]
    os.unlink(project / "tree" / "new")
    # a different instruction text
    _, lines = do_build(store, project, DOCKERFILE.replace("STAGE=late", "STAGE=later"))
    assert cached_steps(lines) == [2, 3, 4]
    # the context file's owner on the host does not count (COPY writes 0:0)
    os.chown(project / "first.txt", 4321, 4321)
    again, lines = do_build(store, project, DOCKERFILE)
    assert again == first


def test_no_cache_and_dockerignore(store, project):  # noqa: F811
    first, _ = do_build(store, project, DOCKERFILE)
    fresh, lines = do_build(store, project, DOCKERFILE, no_cache=True)
    assert cached_steps(lines) == [] and fresh != first
    # a file excluded by .dockerignore cannot bust the cache
    write(project, {".dockerignore": "tree/ignored\n", "tree/ignored": "x"})
    base, _ = do_build(store, project, DOCKERFILE)
    (project / "tree" / "ignored").write_text("changed")
    again, lines = do_build(store, project, DOCKERFILE)
    assert again == base and cached_steps(lines) == [2, 3, 4, 5, 6, 7]


def test_cache_survives_rmi_and_heals_when_layers_go(store, project):  # noqa: F811
    first, _ = do_build(store, project, DOCKERFILE, tags=["app:1"])
    store.rmi(["app:1"])  # the result's config is gone; its layers are the cached states'
    again, lines = do_build(store, project, DOCKERFILE, tags=["app:1"])
    assert again == first and cached_steps(lines) == [2, 3, 4, 5, 6, 7]
    assert config_of(store, again)["history"] == config_of(store, first)["history"]
    # every state and layer removed: the cache misses instead of failing
    store.rmi(["app:1"])
    for (image_id,) in store.db.execute("SELECT DISTINCT image_id FROM build_cache").fetchall():
        if store.db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
            store.rmi([image_id], force=True)
    _, lines = do_build(store, project, DOCKERFILE)
    assert cached_steps(lines) == [2]  # LABEL: no layer of its own, only the base's


def test_multi_stage_copy_from_is_keyed_on_the_content(store, project):  # noqa: F811
    dockerfile = """\
FROM busybox AS build
COPY first.txt /out/
FROM busybox
COPY --from=build /out /result/
"""
    first, _ = do_build(store, project, dockerfile)
    again, lines = do_build(store, project, dockerfile)
    assert again == first and cached_steps(lines) == [2, 4]
    (project / "first.txt").write_text("changed\n")
    _, lines = do_build(store, project, dockerfile)
    assert cached_steps(lines) == []


@needs_runtime
def test_run_cache_depends_on_build_args_it_sees(store, project, mounted):  # noqa: F811
    dockerfile = "FROM busybox\nARG FLAVOUR=plain\nRUN echo $FLAVOUR > /flavour\n"
    first, _ = do_build(store, project, dockerfile)
    again, lines = do_build(store, project, dockerfile)
    assert again == first and cached_steps(lines) == [2, 3]
    other, lines = do_build(store, project, dockerfile, build_args={"FLAVOUR": "spicy"})
    assert cached_steps(lines) == [2]  # ARG records its default, as Docker's; RUN sees the value
    assert mounted(other).read("/flavour") == "spicy\n"
    assert config_of(store, other)["history"][-1]["created_by"] == \
        "|1 FLAVOUR=spicy /bin/sh -c echo $FLAVOUR > /flavour"
