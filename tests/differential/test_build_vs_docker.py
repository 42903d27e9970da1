"""Differential tests: each Dockerfile below is built by Docker Engine (Debian's docker.io on a
private socket, legacy builder) and by lamina, and the two images must agree on their config,
their history rows, every layer's tar members (path, type, mode, owner, size, content, link
target) and the root of a container made from them. A failing build must fail in both, with the
same message.

Where lamina differs from Docker on purpose, the case says so in ``DELIBERATE`` with the reason;
nothing else may differ.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..conftest import remove_bridges
from .harness import BASE_TAG, DockerSide, LaminaSide, diff_rows, error_message, write_context

B = f"FROM {BASE_TAG}\n"


def _tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, 7, 8, 1e9
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()

# name -> (Dockerfile, context files, build args)
CASES: dict[str, tuple[str, dict, dict]] = {
    "metadata": (B + 'LABEL a=1 "b c"="d e"\nEXPOSE 80 53/udp\nVOLUME /data\nSTOPSIGNAL SIGTERM\n'
                 'CMD ["sh"]\nENTRYPOINT ["/bin/sh", "-c"]\nUSER 1000:1000\n', {}, {}),
    "default-path": (B + "LABEL x=1\n", {}, {}),
    "env-expansion": (B + "ENV A=one B=\"two words\"\nENV C=${A}-$B D=${UNSET:-dflt} "
                      "E=${A:+set}\nWORKDIR /w/$A\nLABEL l=$C\nRUN echo \"$C $D $E\" > out\n",
                      {}, {}),
    "arg-expansion": ("ARG V=1\n" + B + "ARG V\nARG W=w\nARG X\nENV E=$V-$W\n"
                      "RUN echo $V $W $X > /args\n", {}, {"X": "given", "V": "2"}),
    "hostname-host-network-arg": (B + "ARG HOST\nRUN test \"$(hostname)\" = \"$HOST\" && echo ok > /h\n",
                                  {}, {"HOST": os.uname().nodename}),
    "copy-rules": (B + "COPY a.txt /dst/\nCOPY dir /dir-contents/\nCOPY a.txt dir /multi/\n"
                   "COPY *.txt /glob/\nCOPY a.txt /renamed\nWORKDIR /wd\nCOPY a.txt rel/\n",
                   {"a.txt": "a\n", "b.txt": ("file", "b\n", 0o755),
                    "dir/x": "x\n", "dir/sub/y": ("file", "y\n", 0o600),
                    "dir/link": ("symlink", "x"), "dir/sub": ("dir", 0o750)}, {}),
    "copy-into-0700": (B + "RUN mkdir -m 0700 /exists\nCOPY dir /exists/\n",
                       {"dir/f": "f\n"}, {}),
    "copy-chown-user-unknown": (B + "COPY --chown=daemon a.txt /a\n", {"a.txt": "a"}, {}),
    "copy-chown": (B + "COPY --chown=1000:1000 a.txt /a\nCOPY --chown=root:root dir /d/\n",
                   {"a.txt": "a\n", "dir/f": "f\n"}, {}),
    "copy-empty-continuations": (B + "COPY \\\n\\\n\n", {}, {}),
    "shell": (B + 'SHELL ["/bin/sh", "-ec"]\nENV X=1\nRUN echo $0 > /shell\nCOPY a.txt /\n'
              'CMD echo hi\n', {"a.txt": "a\n"}, {}),
    # on the default network a RUN's hostname is its build container's short ID
    "hostname": (B + "RUN test \"$(hostname)\" = \"$(cat /etc/hostname)\" && "
                 "hostname | grep -qx '[0-9a-f]\\{12\\}' && echo ok > /h\n", {}, {}),
    "mtab": (B + "RUN readlink /etc/mtab > /mtab.txt\n", {}, {}),
    "deletions": (B + "RUN mkdir -p /d/sub && echo 1 > /d/sub/f && echo 2 > /d/g\n"
                  "RUN rm -rf /d/sub && rm /bin/vi\nRUN rm -rf /d && mkdir /d && echo 3 > /d/h\n",
                  {}, {}),
    "hardlinks": (B + "COPY dir /h/\nRUN echo data > /x && ln /x /y\n",
                  {"dir/a": "same\n", "dir/b": ("hardlink", "dir/a")}, {}),
    "special-files": (B + "RUN mkfifo /fifo && mknod /null2 c 1 3 && chmod 4755 /bin/busybox\n",
                      {}, {}),
    "multi-stage": ("FROM " + BASE_TAG + " AS one\nRUN echo one > /one\n"
                    "FROM one AS two\nRUN echo two > /two\n"
                    "FROM " + BASE_TAG + "\nCOPY --from=two /one /two /got/\n", {}, {}),
    "onbuild": (B + "ONBUILD RUN echo triggered > /t\nONBUILD ENV T=1\n", {}, {}),
    "onbuild-triggered": ("FROM " + BASE_TAG + " AS parent\nONBUILD RUN echo t > /t\n"
                          "ONBUILD COPY a.txt /from-trigger\nFROM parent\nRUN cat /t\n",
                          {"a.txt": "a"}, {}),
    "shell-workdir-copy-chown": (B + 'SHELL ["/bin/sh", "-xc"]\nWORKDIR /w\n'
                                 "COPY --chown=1:2 a.txt .\nRUN ls -ln a.txt > listing\n",
                                 {"a.txt": "a"}, {}),
    "opaque-dir": (B + "RUN mkdir -p /o/a /o/b && echo 1 > /o/a/f\n"
                   "RUN rm -rf /o && mkdir -p /o/c && echo 2 > /o/c/g\n", {}, {}),
    "user-workdir": (B + "RUN echo app:x:1001:1001::/home/app:/bin/sh >> /etc/passwd && "
                     "mkdir -p /home/app && chown 1001 /home/app\nUSER app\nWORKDIR /home/app\n"
                     "RUN touch mine\nUSER root\nWORKDIR ../other\n", {}, {}),
    "dockerignore": (B + "COPY . /ctx/\n",
                     {".dockerignore": "*.log\n!keep.log\nsub/**/*.tmp\n", "a.log": "x",
                      "keep.log": "k", "sub/deep/x.tmp": "t", "sub/deep/y": "y"}, {}),
    "run-fails": (B + "RUN exit 3\n", {}, {}),
    "copy-missing": (B + "COPY nope /\n", {}, {}),
    "copy-chown-group-unknown": (B + "COPY --chown=0:nogroup a.txt /a\n", {"a.txt": "a"}, {}),
    "unknown-instruction": (B + "NOPE x\n", {}, {}),
    "env-no-value": (B + "ENV\n", {}, {}),
    "copy-from-unknown-stage": (B + "COPY --from=nowhere /x /x\n", {}, {}),
    "copy-setuid": (B + "COPY f /f\n", {"f": ("file", "f", 0o4711)}, {}),
    "run-no-change": (B + "RUN true\nRUN echo x > /x && rm /x\n", {}, {}),
    "add-archive": (B + "ADD a.tar /untar/\nADD b.txt /b.txt\nADD dir /addeddir\n",
                    {"a.tar": ("file", _tar({"in/one": b"1\n", "two": b"22\n"}), 0o644),
                     "b.txt": "b", "dir/c": "c"}, {}),
    "copy-symlinks": (B + "RUN mkdir /real && ln -s /real /via\nCOPY a.txt /via/\n"
                      "COPY link /link\nCOPY dirlink/ /dl/\n",
                      {"a.txt": "a", "link": ("symlink", "a.txt"), "target/t": "t",
                       "dirlink": ("symlink", "target")}, {}),
    "env-legacy-forms": (B + "ENV K value with spaces\nENV A=1 B=$A\nENV C=\"$A\" D='$A'\n"
                         "ENV E=${A}\\$A\n", {}, {}),
    "arg-in-from": ("ARG TAG=diff\nFROM busybox:$TAG\nARG TAG\nRUN echo $TAG > /tag\n", {}, {}),
    "workdir-user": (B + "RUN echo w:x:1002:1002::/:/bin/sh >> /etc/passwd\nUSER w\n"
                     "WORKDIR /made/by/user\n", {}, {}),
    "cmd-entrypoint": (B + "CMD [\"a\"]\nENTRYPOINT e f\nCMD c d\n"
                       "HEALTHCHECK --interval=5s --retries=2 CMD true\n", {}, {}),
    "dockerignore-dockerfile": (B + "COPY . /all/\n",
                                {".dockerignore": "Dockerfile\n.dockerignore\n*/skip\n",
                                 "keep": "k", "d/skip": "s", "d/keep": "k"}, {}),
    "modes": (B + "COPY . /m/\nRUN chmod 2755 /m/d && chmod 1777 /m/t && chown 5:6 /m/f\n",
              {"f": ("file", "f", 0o711), "d/x": "x", "t/y": "y", "ro": ("file", "r", 0o400)},
              {}),
}

# a case -> how lamina differs from Docker on purpose, and why (the test then checks only that
# both succeed or both fail)
DELIBERATE: dict[str, str] = {
    "copy-from-unknown-stage": "Docker pulls an image it does not have from Docker Hub, so its "
    "answer depends on the network (here a DNS error); lamina pulls nothing it was not asked to "
    "and says how to get the image",
    "workdir-user": "a WORKDIR that does not exist is made owned by the USER in effect, as "
    "BuildKit does (checked with Docker 20.10's BuildKit; the legacy builder makes it root's, "
    "which the USER then cannot write to)",
    "copy-setuid": "Docker's legacy builder loses a copied file's setuid and setgid bits, a side "
    "effect of the chown(2) it makes on every copied file; lamina keeps the source's mode, as "
    "BuildKit (Docker's default builder since 23.0) does (checked with Docker 20.10's BuildKit: "
    "4711 stays 4711)",
}

# the cases whose build must fail (in both engines, with the same message); any other case must
# build
FAILING = {"run-fails", "copy-missing", "copy-chown-group-unknown", "copy-chown-user-unknown",
           "unknown-instruction",
           "env-no-value", "copy-from-unknown-stage", "copy-empty-continuations"}

# cases built on the default network (the others: --network=host, as every RUN here)
DEFAULT_NETWORK = {"hostname"}


@pytest.fixture(scope="module")
def engines(busybox_tar):
    if shutil.which("dockerd") is None:
        pytest.fail("Docker Engine is not installed: scripts/setup installs docker.io")
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="lamina-diff-", dir="/var/tmp"))
    docker = lamina = pool = None
    try:
        docker = DockerSide(base, busybox_tar)
        lamina = LaminaSide(str(base / "lamina"), busybox_tar)
        # Docker builds every case in the background, two at a time, while the tests build
        # them with lamina one by one: the module takes about the longer of the two, not the sum
        pool = ThreadPoolExecutor(2)
        theirs = {}
        for name in sorted(CASES):
            dockerfile, files, build_args = CASES[name]
            context = str(base / "contexts" / name)
            write_context(context, dict(files, Dockerfile=dockerfile))
            work = str(base / "work" / name)
            os.makedirs(work)
            args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
            network = None if name in DEFAULT_NETWORK else "host"
            theirs[name] = (context, pool.submit(docker.build, context, f"diff-{name}", args,
                                                 work, network))
        yield theirs, lamina
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if lamina is not None:
            lamina.close()
            remove_bridges(str(base / "lamina"))  # the default network of DEFAULT_NETWORK's cases
        if docker is not None:
            docker.stop()
        docker_peers = __import__("peers")
        docker_peers.remove_tree(base)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_docker(engines, name, tmp_path):
    docker_builds, lamina = engines
    context, docker_result = docker_builds[name]
    network = None if name in DEFAULT_NETWORK else "host"
    ours = lamina.build(context, f"diff-{name}", CASES[name][2], str(tmp_path), network=network)
    theirs = docker_result.result()
    assert ours.ok == theirs.ok, (ours.error, theirs.error)
    assert theirs.ok == (name not in FAILING), theirs.error  # the case tests what it says
    if name in DELIBERATE:
        return
    if not theirs.ok:
        assert error_message(ours.error) == error_message(theirs.error)
        return
    assert ours.config == theirs.config
    problems = []
    history = diff_rows(ours.history, theirs.history)
    if history:
        problems.append("history:\n" + history)
    if len(ours.layers) != len(theirs.layers):
        problems.append(f"{len(ours.layers)} layers, docker {len(theirs.layers)}")
    for index, (mine, other) in enumerate(zip(ours.layers, theirs.layers)):
        layer = diff_rows(mine, other)
        if layer:
            problems.append(f"layer {index}:\n{layer}")
    root = diff_rows(ours.root, theirs.root)
    if root:
        problems.append("container root:\n" + root)
    assert not problems, "\n".join(problems)
