"""``RUN --mount`` (cache, bind, tmpfs, secret, ssh), ``RUN --network`` and ``--security``: real
builds on a real store, checked through the images, the store and the RUN's own output."""

# ruff: noqa: F811  (store, ctx and mounted are test_build's fixtures, named as arguments)
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from lamina.builder.dockerfile import DockerfileError

from .conftest import needs_root, store_files
from .test_build import Mounted, ctx, do_build, mounted, store, write  # noqa: F401  (fixtures)

pytestmark = needs_root

# a stand-in for pip (busybox has none): each requirement's wheel comes from the cache when it
# is there (its bytes read are counted), else from the context's wheels/ (a bind mount) into
# the cache; "installing" writes the package's name into site-packages
PIP = """\
FROM busybox
COPY requirements.txt /app/
RUN --mount=type=cache,target=/root/.cache/pip \\
    --mount=type=bind,source=wheels,target=/wheels \\
    for r in $(cat /app/requirements.txt); do \\
      if [ -f /root/.cache/pip/$r.whl ]; then \\
        wc -c < /root/.cache/pip/$r.whl >> /app/read-from-cache; \\
      else cp /wheels/$r.whl /root/.cache/pip/ && echo $r >> /app/downloaded; fi; \\
      mkdir -p /app/site-packages && echo $r > /app/site-packages/$r; \\
    done; touch /app/read-from-cache /app/downloaded
"""


def layer_names(engine, image_id) -> set[str]:
    """Every path of every layer of an image."""
    import io

    buffer = io.BytesIO()
    engine.save([image_id], buffer)
    buffer.seek(0)
    names = set()
    with tarfile.open(fileobj=buffer) as outer:
        for member in outer:
            if member.name.endswith((".tar", "layer.tar")) or "/blobs/" in member.name:
                data = outer.extractfile(member)
                try:
                    with tarfile.open(fileobj=io.BytesIO(data.read())) as layer:
                        names.update(m.name.rstrip("/") for m in layer)
                except tarfile.TarError:
                    continue
    return names


def test_cache_mount_survives_builds_and_a_changed_requirement_reads_it(store, ctx, mounted):
    wheel_a = os.urandom(50_000)
    write(ctx, {"requirements.txt": "alpha\n", "wheels/alpha.whl": wheel_a,
                "wheels/beta.whl": os.urandom(30_000)})
    first, _ = do_build(store, ctx, PIP)
    m = mounted(first)
    assert m.read("/app/downloaded").split() == ["alpha"]
    assert m.read("/app/read-from-cache") == ""
    # the cache's files and the mount points are in no layer
    names = layer_names(store, first)
    assert not any(n.startswith(("root/.cache", "wheels")) for n in names), names
    # a changed requirement: the step runs again, alpha's bytes come from the cache
    write(ctx, {"requirements.txt": "alpha\nbeta\n"})
    second, lines = do_build(store, ctx, PIP)
    m = mounted(second)
    assert m.read("/app/downloaded").split() == ["beta"]
    assert [int(n) for n in m.read("/app/read-from-cache").split()] == [len(wheel_a)]
    assert sorted(os.listdir(m.path("/app/site-packages"))) == ["alpha", "beta"]
    # the same inputs again: the step is cached (the cache mount is not part of its key)
    again, lines = do_build(store, ctx, PIP)
    assert again == second and lines.count(" ---> Using cache (CACHED)") == 2
    # a changed file under the bind mount's source is a changed input
    write(ctx, {"wheels/beta.whl": os.urandom(10)})
    changed, lines = do_build(store, ctx, PIP)
    assert changed != second and lines.count(" ---> Using cache (CACHED)") == 1

    # system df counts the cache in Build Cache; builder prune removes it
    summary = {row["Type"]: row for row in store.system_df()["Summary"]}
    assert summary["Build Cache"]["Size"] >= len(wheel_a) + 30_000
    cache_top = os.path.join(store.root, "build-mounts")
    assert len([n for n in os.listdir(cache_top) if not n.endswith(".lock")]) == 1
    _deleted, size = store.prune_build_cache()
    assert size >= len(wheel_a) + 30_000
    assert os.listdir(cache_top) == []


def test_cache_mount_sharing_id_mode_owner_and_system_prune(store, ctx):
    dockerfile = """\
FROM busybox
RUN --mount=type=cache,id=shared-one,target=/a,mode=0700,uid=7,gid=8,sharing=locked \\
    stat -c '%a %u %g' /a > /owner && echo one > /a/f
RUN --mount=type=cache,id=shared-one,target=/b,sharing=locked cat /b/f > /seen
"""
    image, _ = do_build(store, ctx, dockerfile)
    m = Mounted(store, image)
    try:
        assert m.read("/owner").split() == ["700", "7", "8"]
        assert m.read("/seen") == "one\n"
    finally:
        m.close()
    result = store.prune_system()
    assert result["Reclaimed"] > 0
    assert os.listdir(os.path.join(store.root, "build-mounts")) == []


def test_cache_mount_from_a_stage_seeds_a_new_cache(store, ctx, mounted):
    image, _ = do_build(store, ctx, """\
FROM busybox AS seed
RUN mkdir /s && echo seeded > /s/f
FROM busybox
RUN --mount=type=cache,id=seeded,target=/c,from=seed,source=/s cat /c/f > /got
""")
    assert mounted(image).read("/got") == "seeded\n"


def test_bind_mounts_read_only_rw_discarded_from_stage_and_image(store, ctx, mounted):
    write(ctx, {"src/f": "context file\n"})
    image, _ = do_build(store, ctx, """\
FROM busybox AS tools
RUN echo tool > /tool
FROM busybox
RUN --mount=type=bind,source=src,target=/src cat /src/f > /from-context && \\
    if touch /src/new 2>/dev/null; then echo writable; else echo read-only; fi > /ro
RUN --mount=type=bind,source=src,target=/src,rw echo changed > /src/f && cat /src/f > /rw
RUN --mount=type=bind,from=tools,source=/tool,target=/t cat /t > /from-stage
RUN --mount=type=bind,from=busybox:latest,target=/img ls /img/bin/busybox > /from-image
""")
    m = mounted(image)
    assert m.read("/from-context") == "context file\n"
    assert m.read("/ro") == "read-only\n"
    assert m.read("/rw") == "changed\n"
    assert (ctx / "src" / "f").read_text() == "context file\n"  # the write went nowhere
    assert m.read("/from-stage") == "tool\n"
    assert m.read("/from-image") == "/img/bin/busybox\n"
    assert not os.path.lexists(m.path("/src")) and not os.path.lexists(m.path("/t"))
    assert not os.path.lexists(m.path("/img"))


def test_read_only_bind_with_a_dockerignore_hides_what_it_excludes(store, ctx, mounted):
    write(ctx, {"src/f": "kept\n", "src/secret.key": "hidden\n", ".dockerignore": "**/*.key\n"})
    image, _ = do_build(store, ctx, """\
FROM busybox
RUN --mount=type=bind,source=src,target=/src ls /src > /listing && cat /src/f > /f && \\
    if echo x >> /src/f 2>/dev/null; then echo writable; else echo read-only; fi > /ro
""")
    m = mounted(image)
    assert m.read("/listing") == "f\n" and m.read("/f") == "kept\n"
    assert m.read("/ro") == "read-only\n"
    assert (ctx / "src" / "f").read_text() == "kept\n"
    assert not any(name.startswith("bind-") for _, dirs, _ in os.walk(
        os.path.join(store.root, "tmp")) for name in dirs)  # the linked copy went with the step


def test_tmpfs_mount_has_its_size_and_leaves_nothing(store, ctx, mounted):
    image, _ = do_build(store, ctx, "FROM busybox\nWORKDIR /w\n"
                                    "RUN --mount=type=tmpfs,target=scratch,size=2m "
                                    "echo x > scratch/f && df -k /w/scratch | tail -1 > /df && "
                                    "grep -c ' /w/scratch tmpfs' /proc/mounts > /n\n")
    m = mounted(image)  # a relative target is below the WORKDIR, as BuildKit's
    assert m.read("/df").split()[1] == "2048" and m.read("/n") == "1\n"
    assert not os.path.lexists(m.path("/w/scratch"))


SECRET_DOCKERFILE = """\
FROM busybox
RUN --mount=type=secret,id=token test "$(cat /run/secrets/token)" = "$EXPECT" && echo ok > /ok
RUN --mount=type=secret,id=envtoken,env=TOKEN,target=/s test "$TOKEN" = "$(cat /s)" && \\
    test -n "$TOKEN" && echo ok > /ok-env
"""


def test_secrets_reach_the_run_and_nothing_else(store, store_root, ctx, tmp_path):
    secret = "s3cr3t-" + os.urandom(12).hex()
    env_secret = "env-" + os.urandom(12).hex()
    path = tmp_path / "token"
    path.write_text(secret)
    write(ctx, {"Dockerfile": SECRET_DOCKERFILE.replace("$EXPECT", secret[:7] + "$(echo "
                                                        + secret[7:] + ")")})
    proc = subprocess.run(
        [sys.executable, "-m", "lamina", "--root", store_root, "build", "-t", "with-secret",
         "--secret", f"id=token,src={path}", "--secret", "id=envtoken,env=MY_TOKEN", str(ctx)],
        capture_output=True, text=True, env=dict(os.environ, MY_TOKEN=env_secret), check=False)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr and env_secret not in proc.stdout
    m = Mounted(store, "with-secret")
    try:
        assert m.read("/ok") == "ok\n" and m.read("/ok-env") == "ok\n"
        assert not os.path.lexists(m.path("/run/secrets")) and not os.path.lexists(m.path("/s"))
    finally:
        m.close()
    # the saved image and every file of the store: neither secret's bytes anywhere
    archive = tmp_path / "saved.tar"
    store.save(["with-secret"], str(archive))
    needles = (secret.encode(), env_secret.encode())
    assert not any(n in archive.read_bytes() for n in needles)
    for dirpath, _dirs, files in os.walk(store_root):
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                data = f.read()
            assert not any(n in data for n in needles), full


@pytest.mark.parametrize("dockerfile,message", [
    ("RUN --mount=type=secret,id=missing cat /run/secrets/missing",
     ("Dockerfile:3: secret missing not found: give it with `lamina build --secret "
      "id=missing,src=FILE`")),
    ("RUN --mount=type=cache,target=/c,bogus=1 true",
     "Dockerfile:3: unexpected key 'bogus' in 'bogus=1'"),
    ("RUN --mount=type=bind,source=../outside,target=/o true",
     'Dockerfile:3: bind mount source "../outside" is outside the build context'),
    (("RUN --mount=type=cache,id=c,target=/c true\n"
      "RUN --mount=type=cache,id=c,target=/c,sharing=locked true"),
     'Dockerfile:4: cache mount id "c" is used with sharing=shared and sharing=locked'),
    ("RUN --mount=type=ssh true",
     "Dockerfile:3: RUN --mount=type=ssh needs an SSH agent, and lamina build does not forward one"),
    ("RUN --mount=type=nope,target=/x true", 'Dockerfile:3: unsupported mount type "nope"'),
    ("RUN --security=insecure true",
     ("Dockerfile:3: RUN --security=insecure needs the security.insecure entitlement, which "
      "lamina build does not grant")),
])
def test_bad_mounts_are_one_line_errors_and_leave_nothing(store, store_root, ctx, dockerfile,
                                                          message):
    write(ctx, {"a": "a"})
    before = store_files(store_root)
    # the first step would be built if the checks came late: they come first
    with pytest.raises(DockerfileError) as info:
        do_build(store, ctx, "FROM busybox\nRUN echo first > /first\n" + dockerfile + "\n")
    assert str(info.value) == message
    assert store_files(store_root) == before


def test_cli_bad_mount_exit_1_one_line(store, store_root, ctx):
    write(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=cache,target=/c,nope=1 true\n"})
    proc = subprocess.run([sys.executable, "-m", "lamina", "--root", store_root, "build",
                           str(ctx)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr == "Error: Dockerfile:2: unexpected key 'nope' in 'nope=1'\n"


def test_run_network_flag_and_sandbox(store, ctx, mounted):
    image, _ = do_build(store, ctx, "FROM busybox\n"
                                    "RUN --network=none --security=sandbox ls /sys/class/net "
                                    "> /none\nRUN --network=host ls /sys/class/net > /host\n")
    m = mounted(image)
    assert m.read("/none").split() == ["lo"]
    host = m.read("/host").split()  # the host's interfaces (others may come and go meanwhile)
    assert "lo" in host and len(host) > 1 and set(host) & set(os.listdir("/sys/class/net")) - {"lo"}


def test_api_build_prune_removes_cache_mounts(api):
    """``POST /build/prune`` (docker-py's ``client.api.prune_builds``) removes cache mounts."""
    import io

    from .test_api_images import context_tar

    client = api.client()
    files = {"Dockerfile": b"FROM busybox\nRUN --mount=type=cache,id=api-cache,target=/c "
                           b"head -c 100000 /dev/zero > /c/blob\n"}
    client.images.build(fileobj=io.BytesIO(context_tar(files)), custom_context=True, tag="m:1")
    top = os.path.join(api.root, "build-mounts")
    assert [n for n in os.listdir(top) if not n.endswith(".lock")]
    result = client.api.prune_builds()
    assert result["SpaceReclaimed"] >= 100_000
    assert os.listdir(top) == []


def test_cli_system_df_and_builder_prune(store, store_root, ctx):
    write(ctx, {"Dockerfile": "FROM busybox\nRUN --mount=type=cache,target=/c "
                              "head -c 300000 /dev/zero > /c/blob\n"})

    def lamina(*args):
        return subprocess.run([sys.executable, "-m", "lamina", "--root", store_root, *args],
                              capture_output=True, text=True, check=True).stdout

    lamina("build", "-q", str(ctx))
    row = next(line for line in lamina("system", "df").splitlines()
               if line.startswith("Build Cache"))
    assert row.split()[-2:] == ["300kB", "300kB"]  # the cache mount's bytes, all reclaimable
    out = lamina("builder", "prune", "-f")
    assert out.splitlines()[-1] == "Total reclaimed space: 300kB"
    assert os.listdir(os.path.join(store_root, "build-mounts")) == []
