"""A build is a graph of stages: only what the target needs is built, independent stages at the
same time, and ``--progress=plain`` reports steps as BuildKit does."""

# ruff: noqa: F811  (store and ctx are test_build's fixtures, named as arguments)
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from lamina.builder import BuildError
from lamina.cachemounts import cache_dir

from .conftest import needs_root
from .test_build import Mounted, ctx, do_build, store, write  # noqa: F401  (fixtures)

pytestmark = needs_root

GRAPH = """\
FROM busybox AS a
RUN cat /proc/uptime > /start && sleep 2 && cat /proc/uptime > /end && echo a > /who
FROM busybox AS b
RUN cat /proc/uptime > /start && sleep 2 && cat /proc/uptime > /end && echo b > /who
FROM busybox AS unused
RUN --mount=type=cache,id=unused-stage-ran,target=/m touch /m/ran
FROM busybox
COPY --from=a /start /end /who /a/
COPY --from=b /start /end /who /b/
"""


def test_independent_stages_overlap_and_an_unused_stage_never_runs(store, ctx):
    image, lines = do_build(store, ctx, GRAPH, jobs=2)
    m = Mounted(store, image)
    try:
        # /proc/uptime is the kernel's: one clock for both stages' RUNs
        spans = {}
        for stage in ("a", "b"):
            assert m.read(f"/{stage}/who") == f"{stage}\n"  # each stage its own RUN
            spans[stage] = (float(m.read(f"/{stage}/start").split()[0]),
                            float(m.read(f"/{stage}/end").split()[0]))
    finally:
        m.close()
    (start_a, end_a), (start_b, end_b) = spans["a"], spans["b"]
    assert max(start_a, start_b) < min(end_a, end_b), spans  # the two RUNs overlapped
    assert not os.path.exists(cache_dir(store.root, "unused-stage-ran"))
    assert not any("unused" in line or "/m/ran" in line for line in lines)
    assert sum(line.startswith("Step ") for line in lines) == 7  # 3 stages, not 4


def test_one_job_builds_the_stages_one_after_the_other(store, ctx):
    image, _ = do_build(store, ctx, GRAPH.replace("sleep 2", "sleep 0.5"), jobs=1)
    m = Mounted(store, image)
    try:
        spans = [(float(m.read(f"/{s}/start").split()[0]), float(m.read(f"/{s}/end").split()[0]))
                 for s in ("a", "b")]
    finally:
        m.close()
    spans.sort()
    assert spans[0][1] <= spans[1][0]


def test_a_failing_stage_fails_the_build(store, ctx):
    with pytest.raises(BuildError, match="returned a non-zero code: 3"):
        do_build(store, ctx, "FROM busybox AS a\nRUN exit 3\nFROM busybox AS b\nRUN true\n"
                             "FROM busybox\nCOPY --from=a / /a\nCOPY --from=b / /b\n", jobs=2)


def test_progress_plain_is_buildkits(store, store_root, ctx):
    write(ctx, {"Dockerfile": "FROM busybox AS base\nENV X=1\nRUN echo hello from $X\n"
                              "FROM base\nCOPY Dockerfile /\n", })

    def build(*extra):
        return subprocess.run([sys.executable, "-m", "lamina", "--root", store_root, "build",
                               *extra, "-t", "plain:1", str(ctx)], capture_output=True,
                              text=True, check=True).stdout

    out = build("--progress=plain")
    assert re.search(r"^#1 \[base 1/2\] FROM busybox AS base$", out, re.M), out
    assert re.search(r"^#2 \[base 2/2\] RUN echo hello from \$X$", out, re.M)
    assert re.search(r"^#2 \d+\.\d{3} hello from 1$", out, re.M)
    assert re.search(r"^#2 DONE \d+\.\ds$", out, re.M)
    assert re.search(r"^#4 \[stage-1 2/2\] COPY Dockerfile /$", out, re.M)
    assert re.search(r"^#5 naming to docker.io/library/plain:1 done$", out, re.M)
    assert "Step " not in out
    again = build("--progress=plain")
    assert re.search(r"^#2 CACHED$", again, re.M) and re.search(r"^#4 CACHED$", again, re.M)
    assert build("--progress=quiet") == ""



def test_output_local_and_tar_write_the_final_stages_files(store, store_root, ctx, tmp_path):
    import tarfile

    write(ctx, {"Dockerfile": "FROM busybox AS build\nRUN mkdir /out && echo bin > /out/app && "
                              "chmod 0750 /out/app && ln -s app /out/link\n"
                              "FROM scratch\nCOPY --from=build /out /\n"})
    local = tmp_path / "local"

    def lamina(*args):
        return subprocess.run([sys.executable, "-m", "lamina", "--root", store_root, *args],
                              capture_output=True, text=True, check=True)

    lamina("build", "-q", "-t", "not-made", "--output", f"type=local,dest={local}", str(ctx))
    assert sorted(os.listdir(local)) == ["app", "link"]
    assert (local / "app").read_text() == "bin\n" and os.readlink(local / "link") == "app"
    assert os.stat(local / "app").st_mode & 0o777 == 0o750
    archive = tmp_path / "out.tar"
    lamina("build", "-q", "--output", f"type=tar,dest={archive}", str(ctx))
    with tarfile.open(archive) as tar:
        assert sorted(m.name for m in tar) == ["app", "link"]
    # no image was named
    assert "not-made" not in lamina("images", "-a").stdout
    # oci and docker: the image as an archive that load reads back
    for kind in ("oci", "docker"):
        path = tmp_path / f"{kind}.tar"
        lamina("build", "-q", "-t", f"arch:{kind}", "-o", f"type={kind},dest={path}", str(ctx))
        lamina("rmi", f"arch:{kind}")
        assert f"arch:{kind}" in lamina("load", "-i", str(path)).stdout
