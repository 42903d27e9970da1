"""lamina build: real Dockerfiles on a real store, checked through the images they make."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import stat
import tarfile
import threading

import pytest

from lamina import Engine
from lamina.builder import BuildError, BuildOptions, build
from lamina.errors import InvalidArgument, LaminaError, NotFound

from .conftest import needs_root

pytestmark = needs_root

try:
    import lamina.runtime.oci  # noqa: F401

    HAVE_RUNTIME = True
except ImportError:
    HAVE_RUNTIME = False
needs_runtime = pytest.mark.skipif(not HAVE_RUNTIME, reason="lamina.runtime (RUN support) is "
                                   "not in this checkout yet")


@pytest.fixture
def store(store_root, busybox_tar):
    engine = Engine(root=store_root, driver="overlay2")
    engine.import_image(busybox_tar, "busybox:latest")
    yield engine
    engine.close()


@pytest.fixture
def ctx(tmp_path):
    root = tmp_path / "ctx"
    root.mkdir()
    return root


def write(root, files: dict) -> None:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)


def do_build(engine, ctx, dockerfile, **options):
    lines: list[str] = []
    image_id = build(engine.container_store, BuildOptions(context=str(ctx), dockerfile=dockerfile, **options),
                     out=lines.append)
    return image_id, lines


def config_of(engine, image_id) -> dict:
    return json.loads(engine.content.read(image_id))


class Mounted:
    """The merged root of an image (a container created and mounted for the test)."""

    def __init__(self, engine, image_id):
        self.engine = engine
        self.cid = engine.create(image_id)
        self.root = engine.mount(self.cid)

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def read(self, rel: str) -> str:
        with open(self.path(rel)) as f:
            return f.read()

    def stat(self, rel: str):
        return os.lstat(self.path(rel))

    def close(self):
        self.engine.umount(self.cid)
        self.engine.rm(self.cid)


@pytest.fixture
def mounted(store):
    opened = []

    def open_(image_id):
        m = Mounted(store, image_id)
        opened.append(m)
        return m

    yield open_
    for m in opened:
        m.close()


# ---------------------------------------------------------------------------- metadata
def test_every_metadata_instruction_lands_in_the_config(store, ctx):
    image_id, lines = do_build(store, ctx, """\
FROM busybox
LABEL a=b "c d"=e
ENV X=1 Y="2 3"
ENV Z $X-z
EXPOSE 80 90/udp 7000-7001
VOLUME /data /more
VOLUME ["/json"]
USER 1000:1000
STOPSIGNAL SIGKILL
HEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost
ONBUILD RUN echo triggered
MAINTAINER Jane <jane@example.com>
SHELL ["/bin/sh", "-ec"]
CMD ["sh"]
""", tags=["meta:1"])
    doc = config_of(store, image_id)
    config = doc["config"]
    assert config["Labels"] == {"a": "b", "c d": "e", "maintainer": "Jane <jane@example.com>"}
    assert doc["author"] == "Jane <jane@example.com>"
    # the base has no PATH: the build adds Docker's default first, as Docker does
    assert config["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "X=1", "Y=2 3", "Z=1-z"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "90/udp": {}, "7000/tcp": {}, "7001/tcp": {}}
    assert config["Volumes"] == {"/data": {}, "/more": {}, "/json": {}}
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGKILL"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                     "Interval": 5_000_000_000, "Retries": 3}
    assert config["OnBuild"] == ["RUN echo triggered"]
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["Cmd"] == ["sh"]
    # one history entry per instruction after FROM, none of them a layer
    history = doc["history"][1:]
    assert len(history) == 13 and all(h["empty_layer"] for h in history)
    assert all(h["created"] for h in history)
    by = [h["created_by"] for h in history]
    assert by[0] == "/bin/sh -c #(nop)  LABEL a=b c d=e"
    assert by[1] == "/bin/sh -c #(nop)  ENV X=1 Y=2 3"
    assert by[-1] == '/bin/sh -ec #(nop)  CMD ["sh"]'  # after SHELL, as Docker
    assert "/bin/sh -c #(nop)  VOLUME [/data /more]" in by
    assert "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q localhost\"] \"5s\" " \
           "\"0s\" \"0s\" '\\x03'}" in by
    assert len(doc["rootfs"]["diff_ids"]) == 1  # the base's layer only
    assert lines[0] == "Step 1/14 : FROM busybox"
    assert lines[-2:] == [f"Successfully built {image_id[7:19]}", "Successfully tagged meta:1"]


def test_cmd_entrypoint_combination_rules(store, ctx):
    _base, _ = do_build(store, ctx, 'FROM busybox\nCMD ["base-cmd"]\n', tags=["withcmd"])
    # ENTRYPOINT after an inherited CMD resets it (Docker's rule) ...
    image, _ = do_build(store, ctx, 'FROM withcmd\nENTRYPOINT ["/bin/echo"]\n')
    config = config_of(store, image)["config"]
    assert config["Entrypoint"] == ["/bin/echo"] and config["Cmd"] is None
    # ... but not a CMD set in the same stage, whatever the order
    image, _ = do_build(store, ctx, 'FROM withcmd\nCMD ["x"]\nENTRYPOINT ["/bin/echo"]\n')
    config = config_of(store, image)["config"]
    assert config["Entrypoint"] == ["/bin/echo"] and config["Cmd"] == ["x"]
    # shell forms go through the SHELL in effect
    image, _ = do_build(store, ctx, 'FROM busybox\nSHELL ["/bin/ash", "-c"]\n'
                                    'ENTRYPOINT exec top\nCMD echo hi\n')
    config = config_of(store, image)["config"]
    assert config["Entrypoint"] == ["/bin/ash", "-c", "exec top"]
    assert config["Cmd"] == ["/bin/ash", "-c", "echo hi"]
    history = config_of(store, image)["history"]
    # the history entry starts with the SHELL in effect, as Docker's
    assert history[-1]["created_by"] == '/bin/ash -c #(nop)  CMD ["/bin/ash" "-c" "echo hi"]'


def test_arg_build_arg_and_variable_rules(store, ctx):
    write(ctx, {"v1.txt": "one\n"})
    image, lines = do_build(store, ctx, """\
ARG BASE=busybox
FROM $BASE
ARG VERSION=v0
ARG UNSET
ENV FROM_ARG=${VERSION} DEFAULTED=${UNSET:-fallback} ALT=${VERSION:+set}
ENV VERSION=env-wins
LABEL version=$VERSION single='$VERSION' escaped=\\$VERSION
COPY ${VERSION_FILE:-v1.txt} /opt/
""", build_args={"VERSION": "v1", "NOT_DECLARED": "x"})
    config = config_of(store, image)["config"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["FROM_ARG"] == "v1" and env["DEFAULTED"] == "fallback" and env["ALT"] == "set"
    assert env["VERSION"] == "env-wins"
    assert "UNSET" not in env
    assert config["Labels"] == {"version": "env-wins", "single": "$VERSION",
                                "escaped": "$VERSION"}
    assert any("[Warning] One or more build-args [NOT_DECLARED]" in line for line in lines)


def test_from_by_id_and_digest_and_missing_image(store, ctx):
    base = store.image_store.resolve("busybox")
    image, _ = do_build(store, ctx, f"FROM {base}\nLABEL x=1\n")
    manifest = store.image_store.row(base)["manifest_digest"]
    image2, _ = do_build(store, ctx, f"FROM busybox@{manifest}\nLABEL x=1\n")
    assert image == image2
    with pytest.raises(NotFound) as info:
        do_build(store, ctx, "FROM nosuch:1.0\nLABEL x=1\n")
    message = str(info.value)
    assert "lamina pull nosuch:1.0" in message and "lamina load" in message \
        and "lamina import" in message


def test_scratch_and_pull_on_local_image(store, ctx):
    write(ctx, {"hello": "hi\n"})
    image, _ = do_build(store, ctx, "FROM scratch\nCOPY hello /\n")
    doc = config_of(store, image)
    assert len(doc["rootfs"]["diff_ids"]) == 1
    assert doc["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    image, lines = do_build(store, ctx, "FROM busybox\nLABEL x=1\n", pull=True)
    assert any("busybox" in line and "local" in line for line in lines)


def test_onbuild_triggers_run_when_used_as_a_base(store, ctx):
    write(ctx, {"trigger.txt": "from the child's context\n"})
    do_build(store, ctx, "FROM busybox\nONBUILD COPY trigger.txt /triggered/\n"
                         "ONBUILD LABEL triggered=yes\n", tags=["parent"])
    child, lines = do_build(store, ctx, "FROM parent\nLABEL child=1\n")
    assert "# Executing 2 build triggers" in lines
    doc = config_of(store, child)
    assert doc["config"]["Labels"] == {"triggered": "yes", "child": "1"}
    assert not doc["config"].get("OnBuild")  # triggers are not inherited
    assert len(doc["rootfs"]["diff_ids"]) == 2


# ---------------------------------------------------------------------------- COPY / ADD
def test_copy_directory_semantics(store, ctx, mounted):
    write(ctx, {"dir/a": "a", "dir/sub/b": "b", "file.txt": "f", "one.md": "1", "two.md": "2"})
    os.chmod(ctx / "dir", 0o750)
    os.chmod(ctx / "file.txt", 0o640)
    os.utime(ctx / "file.txt", (1_000_000_000, 1_000_000_000))
    image, _ = do_build(store, ctx, """\
FROM busybox
COPY dir /contents
COPY dir /etc/
COPY file.txt /renamed
COPY file.txt /newdir/
COPY file.txt /tmp
COPY *.md /docs/
WORKDIR /work
COPY file.txt .
COPY file.txt rel/
""")
    m = mounted(image)
    # a directory's contents are copied, not the directory; the destination takes its mode
    assert m.read("/contents/a") == "a" and m.read("/contents/sub/b") == "b"
    assert stat.S_IMODE(m.stat("/contents").st_mode) == 0o750
    assert m.read("/etc/a") == "a" and os.path.exists(m.path("/etc/passwd"))
    assert m.read("/renamed") == "f"
    assert m.read("/newdir/file.txt") == "f"
    assert m.read("/tmp/file.txt") == "f"  # an existing directory takes the file inside
    assert m.read("/docs/one.md") == "1" and m.read("/docs/two.md") == "2"
    assert m.read("/work/file.txt") == "f" and m.read("/work/rel/file.txt") == "f"
    st = m.stat("/renamed")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == 1_000_000_000
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(m.stat("/tmp").st_mode) == 0o1777  # untouched parent keeps its mode
    doc = config_of(store, image)
    layers = [h for h in doc["history"][1:] if not h.get("empty_layer")]
    assert len(doc["rootfs"]["diff_ids"]) == 1 + len(layers) == 10
    created = [h["created_by"] for h in doc["history"]]
    assert created[1].startswith("/bin/sh -c #(nop) COPY dir:") and \
        created[1].endswith(" in /contents ")
    assert created[3].startswith("/bin/sh -c #(nop) COPY file:")
    assert created[6].startswith("/bin/sh -c #(nop) COPY multi:")


def test_copy_several_sources_need_a_directory(store, ctx):
    write(ctx, {"a": "a", "b": "b"})
    with pytest.raises(LaminaError, match="must be a directory and end with a /"):
        do_build(store, ctx, "FROM busybox\nCOPY a b /dest\n")


def test_copy_chown_chmod_and_symlinked_destination(store, ctx, mounted):
    write(ctx, {"x/f": "f", "g": "g", "passwd": "root:x:0:0::/root:/bin/sh\napp:x:7:70::/:/bin/sh\n",
                "group": "root:x:0:\nstaff:x:50:\n"})
    base, _ = do_build(store, ctx, "FROM busybox\nCOPY g /real/\nCOPY passwd group /etc/\n",
                       tags=["withlink"])
    m0 = mounted(base)
    os.symlink("/real", m0.path("/link"))  # not in the image; commit it
    store.umount(m0.cid)
    store.commit(m0.cid, "withlink:2")
    image, _ = do_build(store, ctx, """\
FROM withlink:2
COPY --chown=app:staff --chmod=0640 x /owned/
COPY --chown=app x /primary
COPY --chown=1234 g /numeric
COPY g /link/
COPY --chmod=u+x,g-r g /symbolic
""")
    m = mounted(image)
    st = m.stat("/owned/f")
    assert (st.st_uid, st.st_gid) == (7, 50)
    assert stat.S_IMODE(st.st_mode) == 0o640
    st = m.stat("/primary/f")
    assert (st.st_uid, st.st_gid) == (7, 70)
    st = m.stat("/numeric")
    assert (st.st_uid, st.st_gid) == (1234, 1234)
    assert os.path.islink(m.path("/link")) and m.read("/real/g") == "g"
    assert stat.S_IMODE(m.stat("/symbolic").st_mode) == 0o704


def test_copy_never_leaves_the_context(store, ctx, tmp_path):
    (tmp_path / "secret").write_text("secret")
    write(ctx, {"ok": "ok"})
    os.symlink(str(tmp_path / "secret"), ctx / "escape")
    os.symlink("../secret", ctx / "relative-escape")
    for source in ("../secret", "escape", "relative-escape", "sub/../../secret"):
        with pytest.raises(LaminaError, match="outside the build context"):
            do_build(store, ctx, f"FROM busybox\nCOPY {source} /x\n")
    with pytest.raises(NotFound, match="file not found in build context"):
        do_build(store, ctx, "FROM busybox\nCOPY missing /x\n")


def test_symlinks_inside_the_context(store, ctx, mounted):
    write(ctx, {"dir/target": "t"})
    os.symlink("target", ctx / "dir" / "link")
    os.symlink("dir/target", ctx / "toplink")
    image, _ = do_build(store, ctx, "FROM busybox\nCOPY dir /d/\nCOPY toplink /copied\n")
    m = mounted(image)
    assert os.readlink(m.path("/d/link")) == "target"  # copied as a symlink
    assert not os.path.islink(m.path("/copied")) and m.read("/copied") == "t"  # followed


def test_dockerignore(store, ctx, mounted):
    write(ctx, {"keep.py": "k", "drop.pyc": "d", "sub/deep.pyc": "s", "build/out": "o",
                "build/keep-me": "km", "secret.env": "s",
                ".dockerignore": "*.pyc\nbuild\n!build/keep-me\nsecret.env\n"})
    image, _ = do_build(store, ctx, "FROM busybox\nCOPY . /app/\n")
    m = mounted(image)
    names = sorted(os.path.relpath(os.path.join(d, f), m.path("/app"))
                   for d, _, fs in os.walk(m.path("/app")) for f in fs)
    # Docker's rules, not gitignore's: *.pyc does not match sub/deep.pyc
    assert names == [".dockerignore", "build/keep-me", "keep.py", "sub/deep.pyc"]
    with pytest.raises(NotFound, match=r"excluded by \.dockerignore"):
        do_build(store, ctx, "FROM busybox\nCOPY secret.env /\n")


def test_heredocs(store, ctx, mounted):
    image, _ = do_build(store, ctx, """\
FROM busybox
ARG WHO=world
COPY <<EOF /greeting
hello ${WHO}
EOF
COPY <<-"EOT" /raw
\t$WHO stays
\tEOT
""")
    m = mounted(image)
    assert m.read("/greeting") == "hello world\n"
    assert m.read("/raw") == "$WHO stays\n"
    assert stat.S_IMODE(m.stat("/greeting").st_mode) == 0o644


def _tar_bytes(files: dict, compress=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mode = 0o751
            info.uid = 42
            info.mtime = 1_234_567_890
            tf.addfile(info, io.BytesIO(body))
    data = buf.getvalue()
    if compress == "gz":
        return gzip.compress(data)
    if compress == "bz2":
        import bz2

        return bz2.compress(data)
    if compress == "xz":
        import lzma

        return lzma.compress(data)
    return data


def test_add_extracts_local_archives(store, ctx, mounted):
    for kind in ("plain", "gz", "bz2", "xz"):
        write(ctx, {f"a-{kind}.tar": _tar_bytes({f"{kind}/inside": kind.encode()},
                                                 None if kind == "plain" else kind)})
    write(ctx, {"not-a-tar.gz": gzip.compress(b"just gzip")})
    image, _ = do_build(store, ctx, "FROM busybox\nADD a-*.tar /x/\nADD not-a-tar.gz /y/\n"
                                    "COPY a-gz.tar /z/\n")
    m = mounted(image)
    for kind in ("plain", "gz", "bz2", "xz"):
        assert m.read(f"/x/{kind}/inside") == kind
    st = m.stat("/x/gz/inside")
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_uid == 42 and st.st_mtime == 1_234_567_890
    with open(m.path("/y/not-a-tar.gz"), "rb") as f:
        assert gzip.decompress(f.read()) == b"just gzip"
    assert os.path.isfile(m.path("/z/a-gz.tar"))  # COPY never extracts


def test_add_url_from_a_loopback_server(store, ctx, mounted, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "payload.bin").write_bytes(b"downloaded bytes")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/payload.bin"
        image, _ = do_build(store, ctx, f"FROM busybox\nADD {url} /dl/\nADD {url} /named\n")
        m = mounted(image)
        assert m.read("/dl/payload.bin") == "downloaded bytes"
        assert stat.S_IMODE(m.stat("/named").st_mode) == 0o600
        with pytest.raises(LaminaError, match="URL"):
            do_build(store, ctx, f"FROM busybox\nCOPY {url} /x\n")
        # ADD --checksum: the download is checked before any layer is written
        import hashlib

        good = "sha256:" + hashlib.sha256(b"downloaded bytes").hexdigest()
        image, _ = do_build(store, ctx, f"FROM busybox\nADD --checksum={good} {url} /sum\n")
        assert mounted(image).read("/sum") == "downloaded bytes"
        bad = "sha256:" + "0" * 64
        layers_before = len(store.layer_store.sizes())
        with pytest.raises(InvalidArgument, match=f"Dockerfile:2: ADD {url}: digest mismatch: "
                                                  f"expected {bad}, got {good}"):
            do_build(store, ctx, f"FROM busybox\nADD --checksum={bad} {url} /sum\n")
        assert len(store.layer_store.sizes()) == layers_before
        write(ctx, {"local": "x"})
        with pytest.raises(InvalidArgument, match="checksum can't be specified for non-HTTP"):
            do_build(store, ctx, f"FROM busybox\nADD --checksum={good} local /x\n")
    finally:
        server.shutdown()


def test_workdir_created_when_missing(store, ctx, mounted):
    image, _ = do_build(store, ctx, "FROM busybox\nWORKDIR /a/b\nWORKDIR c\nWORKDIR /tmp\n")
    doc = config_of(store, image)
    assert doc["config"]["WorkingDir"] == "/tmp"
    layers = [not h.get("empty_layer") for h in doc["history"][1:]]
    assert layers == [True, True, False]  # /tmp exists already: no layer
    m = mounted(image)
    assert os.path.isdir(m.path("/a/b/c"))


# ---------------------------------------------------------------------------- multi-stage
def test_multi_stage_target_and_copy_from(store, ctx, mounted):
    write(ctx, {"src.txt": "source\n"})
    dockerfile = """\
FROM busybox AS builder
COPY src.txt /build/out.txt
LABEL stage=builder

FROM busybox AS unused
COPY src.txt /never

FROM scratch
COPY --from=builder /build /artifacts
COPY --from=0 /build/out.txt /again.txt
COPY --from=busybox /etc/passwd /passwd
"""
    image, lines = do_build(store, ctx, dockerfile, tags=["final"])
    assert not any("COPY src.txt /never" in line for line in lines)  # not needed, not built
    m = mounted(image)
    assert m.read("/artifacts/out.txt") == "source\n" and m.read("/again.txt") == "source\n"
    assert "root:x:0:0" in m.read("/passwd")
    assert config_of(store, image)["config"].get("Labels") is None
    derived, _ = do_build(store, ctx, "FROM busybox AS base\nENV FROM_BASE=1\n"
                                      "COPY src.txt /base.txt\nFROM base\nLABEL derived=1\n")
    doc = config_of(store, derived)
    assert "FROM_BASE=1" in doc["config"]["Env"] and doc["config"]["Labels"] == {"derived": "1"}
    assert len(doc["rootfs"]["diff_ids"]) == 2
    target, lines = do_build(store, ctx, dockerfile, target="builder")
    assert config_of(store, target)["config"]["Labels"] == {"stage": "builder"}
    assert all("scratch" not in line for line in lines)


# ---------------------------------------------------------------------------- errors
def test_syntax_error_names_the_line(store, ctx, lamina_cli):
    write(ctx, {"Dockerfile": "FROM busybox\nLABEL ok=1\nCOPY onlyone\n"})
    proc = lamina_cli("build", "--check", str(ctx), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Dockerfile:3: COPY requires at least two arguments, but " \
                                  "only one was provided. Destination could not be determined"
    write(ctx, {"Dockerfile": "FROM busybox\nLABEL ok=1\n"})
    proc = lamina_cli("build", "--check", str(ctx))
    assert proc.returncode == 0
    write(ctx, {"Dockerfile": "FROM busybox\nNOPE x\n"})
    proc = lamina_cli("build", str(ctx), check=False)
    assert proc.returncode == 1 and "Dockerfile:2: unknown instruction: NOPE" in proc.stderr


def test_too_many_layers(store, ctx, monkeypatch):
    import lamina.image

    monkeypatch.setattr(lamina.image, "MAX_LAYERS", 3)  # the check, without 500 steps
    write(ctx, {"f": "x"})
    dockerfile = "FROM busybox\n" + "COPY f /f\n" * 3
    with pytest.raises(BuildError, match="at most 3"):
        do_build(store, ctx, dockerfile)


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def lamina_cli(store):
    from .conftest import Lamina

    return Lamina(store.root, None)


def test_cli_build_tags_output_and_stdin_dockerfile(store, ctx, lamina_cli):
    write(ctx, {"a": "a"})
    proc = lamina_cli("build", "-t", "one:1", "--tag=two", "-f", "-", str(ctx),
                      input="FROM busybox\nCOPY a /a\nCMD [\"sh\"]\n")
    out = proc.stdout.splitlines()
    assert out[0] == "Step 1/3 : FROM busybox"
    assert out[2] == "Step 2/3 : COPY a /a"
    assert out[-2:] == ["Successfully tagged one:1", "Successfully tagged two:latest"]
    proc = lamina_cli("build", "-q", "-t", "one:1", "-f", "-", str(ctx),
                      input="FROM busybox\nCOPY a /a\nCMD [\"sh\"]\n")
    assert proc.stdout.strip() == store.image_store.resolve("one:1")
    # intermediate states are hidden, shown with -a
    listed = lamina_cli("images").stdout
    assert listed.count("<none>") == 0
    assert lamina_cli("images", "-a").stdout.count("<none>") >= 1


# ---------------------------------------------------------------------------- RUN
@needs_runtime
def test_run_shell_exec_env_workdir_user(store, ctx, mounted):
    image, _lines = do_build(store, ctx, """\
FROM busybox
ARG BUILD_ONLY=b
ENV E=env
WORKDIR /w
RUN echo "$E $BUILD_ONLY $(pwd) $(id -u)" > /w/out
RUN ["/bin/sh", "-c", "echo exec > /w/exec"]
USER 1000
RUN id -u > /tmp/uid
RUN <<EOF
echo heredoc > /tmp/heredoc
EOF
RUN true
""")
    assert not store.containers(all=True)  # the RUN containers are gone
    m = mounted(image)
    assert m.read("/w/out") == "env b /w 0\n"
    assert m.read("/w/exec") == "exec\n"
    assert m.read("/tmp/uid") == "1000\n"
    assert m.read("/tmp/heredoc") == "heredoc\n"
    history = config_of(store, image)["history"]
    assert history[4]["created_by"] == '|1 BUILD_ONLY=b /bin/sh -c echo "$E $BUILD_ONLY ' \
                                       '$(pwd) $(id -u)" > /w/out'
    assert history[-1].get("empty_layer") is True  # RUN true changes nothing


@needs_runtime
def test_a_run_layer_is_made_of_its_containers_files_not_copies(store, ctx):
    """A RUN's layer takes its container's files by hard link (the container goes right after):
    the layer's file is the inode the RUN wrote (overlayfs shows an upper file's own inode
    number), with one link once the container is gone; a file the RUN copied up keeps none of
    overlayfs' xattrs; two names of one file stay one inode; the layer gives back its tar."""
    import hashlib

    image, _ = do_build(store, ctx, """\
FROM busybox
RUN mkdir /d && head -c 300000 /dev/urandom > /d/big && echo small > /d/small \
    && ln /d/small /d/twin && echo more >> /etc/passwd && stat -c %i /d/big > /d/ino
""")
    top = store.image_store.layer_rows(image)[-1]["chain_id"]
    layer = store.store.snaps.dir(top)
    big = os.stat(os.path.join(layer, "d", "big"))
    with open(os.path.join(layer, "d", "ino")) as f:
        assert big.st_ino == int(f.read())
    assert big.st_nlink == 1 and big.st_size == 300000
    small, twin = (os.stat(os.path.join(layer, "d", n)) for n in ("small", "twin"))
    assert small.st_ino == twin.st_ino and small.st_nlink == 2
    passwd = os.path.join(layer, "etc", "passwd")
    with open(passwd) as f:
        assert f.read().endswith("more\n")
    assert not [k for k in os.listxattr(passwd) if ".overlay." in k]
    tar = io.BytesIO()
    store.layer_store.write_tar(top, tar)
    diff_id = config_of(store, image)["rootfs"]["diff_ids"][-1]
    assert "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest() == diff_id
    assert store.check() == []


@needs_runtime
def test_failing_run_stops_the_build_and_leaves_nothing(store, ctx):
    before_images = store.images(all=True)
    before_snapshots = {r[0] for r in store.db.execute("SELECT key FROM snapshots")}
    before_blobs = set(store.content.digests())
    with pytest.raises(BuildError) as info:
        do_build(store, ctx, "FROM busybox\nRUN echo partial > /f && exit 3\nLABEL never=1\n",
                 tags=["broken"])
    assert info.value.exit_code == 3
    assert "returned a non-zero code: 3" in str(info.value) and "Step 2/3" in str(info.value)
    assert store.images(all=True) == before_images
    assert not store.containers(all=True)
    snapshots = {r[0] for r in store.db.execute("SELECT key FROM snapshots")}
    # only the base's shared init layer (engine.create's, reused by every container) is new
    assert all(key.endswith("-init") for key in snapshots - before_snapshots)
    assert set(store.content.digests()) == before_blobs
    scratch = os.path.join(store.root, "tmp")
    assert not os.path.isdir(scratch) or not os.listdir(scratch)


@needs_runtime
def test_run_network_none(store, ctx, mounted):
    image, _ = do_build(store, ctx, "FROM busybox\n"
                                    "RUN --network=none ls /sys/class/net > /ifaces\n")
    m = mounted(image)
    assert m.read("/ifaces").split() == ["lo"]


def test_copy_exclude(store, ctx, mounted):
    write(ctx, {"app/main.py": "m", "app/notes.md": "n", "app/sub/deep.md": "d",
                "app/sub/keep.py": "k", "app/tests/t.py": "t", "top.md": "x", "top.py": "y"})
    image, _ = do_build(store, ctx, "FROM busybox\n"
                                    "COPY --exclude=*.md --exclude=**/*.md --exclude=tests "
                                    "app /app/\nCOPY --exclude=*.md *.py *.md /top/\n")
    m = mounted(image)
    found = sorted(os.path.relpath(os.path.join(d, f), m.path("/app"))
                   for d, _, files in os.walk(m.path("/app")) for f in files)
    assert found == ["main.py", "sub/keep.py"]
    assert os.listdir(m.path("/top")) == ["top.py"]
    # the excludes are part of the step: another list is another layer
    again, lines = do_build(store, ctx, "FROM busybox\nCOPY --exclude=tests app /app/\n")
    assert not any("Using cache" in line for line in lines)
    assert os.path.exists(mounted(again).path("/app/notes.md"))


def test_copy_link_layer_survives_a_change_below(store, ctx, mounted):
    write(ctx, {"data/a": "a" * 5000, "data/sub/b": "b"})
    dockerfile = ("FROM busybox\nARG V\nRUN echo $V > /below\nRUN mkdir -m 0700 /data\n"
                  "COPY --link data /data/\n")
    first, _ = do_build(store, ctx, dockerfile, build_args={"V": "1"})
    second, lines = do_build(store, ctx, dockerfile, build_args={"V": "2"})
    assert first != second
    assert " ---> Using the linked layer of an earlier build (--link)" in lines
    ids = [config_of(store, i)["rootfs"]["diff_ids"] for i in (first, second)]
    assert ids[0][-1] == ids[1][-1] and ids[0][-3] != ids[1][-3]  # same layer, new base
    m = mounted(second)
    assert m.read("/below") == "2\n" and m.read("/data/sub/b") == "b"
    # made as on an empty root: /data is the layer's own directory (0755), not the image's 0700
    assert stat.S_IMODE(m.stat("/data").st_mode) == 0o755


def test_copy_parents(store, ctx, mounted):
    write(ctx, {"src/a/one.txt": "1", "src/b/two.txt": "2", "src/b/deep/three.txt": "3",
                "lib/pkg/mod.py": "m"})
    image, _ = do_build(store, ctx, "FROM busybox\nCOPY --parents src/*/*.txt /out/\n"
                                    "COPY --parents ./lib/./pkg /pivot/\n"
                                    "COPY --parents src/b /whole/\n")
    m = mounted(image)
    assert m.read("/out/src/a/one.txt") == "1" and m.read("/out/src/b/two.txt") == "2"
    assert not os.path.exists(m.path("/out/one.txt"))
    assert m.read("/pivot/pkg/mod.py") == "m"
    assert m.read("/whole/src/b/deep/three.txt") == "3"


def test_buildkit_only_flags_are_refused_with_the_line(store, ctx):
    write(ctx, {"a": "a"})
    with pytest.raises(InvalidArgument, match="Dockerfile:2: ADD --unpack is not supported"):
        do_build(store, ctx, "FROM busybox\nADD --unpack=true a /x/\n")


def test_vfs_store_builds_too(store_root, busybox_tar, ctx, tmp_path):
    write(ctx, {"dir/a": "a", "f": "f"})
    engine = Engine(root=store_root, driver="vfs")
    try:
        engine.import_image(busybox_tar, "busybox:latest")
        dockerfile = "FROM busybox\nCOPY dir /etc/\nCOPY f /tmp/\nWORKDIR /new\n"
        image, _ = do_build(engine, ctx, dockerfile)
        again, _ = do_build(engine, ctx, dockerfile)
        assert again == image
        m = Mounted(engine, image)
        try:
            assert m.read("/etc/a") == "a" and m.read("/tmp/f") == "f"
            assert os.path.exists(m.path("/etc/passwd")) and os.path.isdir(m.path("/new"))
            assert stat.S_IMODE(m.stat("/tmp").st_mode) == 0o1777
        finally:
            m.close()
    finally:
        engine.close()


def test_prunes_racing_builds_never_fail_them(store, ctx, store_root):
    """A build's states are untagged until its last step's image is tagged: `image prune -a`
    and `system prune -a` run in a loop by other processes meanwhile may remove any of them,
    yet no build fails (the build's leases keep the layers, the final image is stored again
    and tagged in one transaction) and the store stays consistent."""
    import subprocess
    import sys

    stop = os.path.join(str(ctx), "..", "stop")
    lamina = f"{sys.executable} -m lamina --root {store_root} --driver overlay2"
    loop = (f"while [ ! -e {stop} ]; do {lamina} image prune -a -f >/dev/null; "
            f"{lamina} system prune -a -f >/dev/null; done")
    pruners = [subprocess.Popen(["sh", "-c", loop], stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for round in range(40):
            write(ctx, {"f": f"round {round // 2}\n"})  # every other build is all cached
            image_id, lines = do_build(  # FROM scratch: the prunes remove every base image
                store, ctx, "FROM scratch\nCOPY f /f\nENV R=1\nLABEL x=y\nCMD [\"sh\"]\n",
                tags=[f"raced:{round}"])
            assert image_id.startswith("sha256:")
            assert lines[-1] == f"Successfully tagged raced:{round}"
    finally:
        open(stop, "w").close()
        for proc in pruners:
            proc.wait(timeout=60)
    for proc in pruners:
        assert b"Traceback" not in proc.stderr.read()
    store.content.release_claims()  # as Engine.build does
    fresh = Engine(root=store_root, driver="overlay2")  # finishes the prunes' deferred deletions
    try:
        assert [str(finding) for finding in fresh.check()] == []
    finally:
        fresh.close()


def test_rmi_of_a_build_result_prints_the_image_lines_and_keeps_the_build_cache(store, ctx):
    """`rmi` of a built image prints Docker's lines for the image itself (Untagged, Deleted);
    its intermediate states are lamina's build cache, so they stay (Docker's legacy builder
    would delete them) and the same build is all cached again, with the same image ID."""
    write(ctx, {"a": "a" * 100})
    dockerfile = "FROM busybox\nCOPY a /a\nENV X=1\nCMD [\"sh\"]\n"
    image_id, _ = do_build(store, ctx, dockerfile, tags=["app"])
    assert store.rmi(["app"]) == ["Untagged: app:latest", f"Deleted: {image_id}"]
    states = store.image_store.build_states()
    assert states and image_id not in states
    again, lines = do_build(store, ctx, dockerfile, tags=["app"])
    assert again == image_id
    assert sum(line == " ---> Using cache (CACHED)" for line in lines) == 3
