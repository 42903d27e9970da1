"""``ADD`` of a git repository (BuildKit's forms), from a real repository served by real servers:
git's dumb HTTP protocol (``update-server-info`` behind Python's http.server) and ``git daemon``."""

# ruff: noqa: F811  (store and ctx are test_build's fixtures, named as arguments)
from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from lamina.builder.gitsource import GitRef, parse_git_ref
from lamina.errors import NotFound, Unavailable

from .conftest import needs_root
from .test_build import Mounted, config_of, ctx, do_build, store  # noqa: F401  (fixtures)

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("git") is None,
                                             reason="git is installed by scripts/setup")]


def git(*args, cwd=None, **extra) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", **extra)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A repository (main: two commits, tag v1 on the first; branch feature), bare under srv/,
    served over dumb HTTP and by git daemon; yields (http URL, git URL, facts)."""
    work = tmp_path_factory.mktemp("git")
    repo = work / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "sub").mkdir()
    (repo / "README").write_text("first\n")
    (repo / "sub" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(repo / "sub" / "tool.sh", 0o755)
    os.symlink("sub/tool.sh", repo / "link")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "one", cwd=repo, GIT_COMMITTER_DATE="2020-01-02T03:04:05Z")
    git("tag", "v1", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "README").write_text("second\n")
    (repo / "sub" / "new").write_text("new\n")
    git("commit", "-qam", "two", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "three", cwd=repo)
    git("checkout", "-qb", "feature", first, cwd=repo)
    (repo / "README").write_text("feature\n")
    git("commit", "-qam", "feature", cwd=repo)
    feature = git("rev-parse", "HEAD", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    srv = work / "srv"
    srv.mkdir()
    git("clone", "-q", "--bare", str(repo), str(srv / "repo.git"))
    git("update-server-info", cwd=srv / "repo.git")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(srv))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all",
                               f"--base-path={srv}", "--listen=127.0.0.1", f"--port={port}",
                               str(srv)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield (f"http://127.0.0.1:{server.server_address[1]}/repo.git", f"git://127.0.0.1:{port}/repo.git",
           {"first": first, "feature": feature, "first_time": 1577934245})
    server.shutdown()
    server.server_close()
    daemon.terminate()
    daemon.wait()


def test_buildkits_forms_are_recognised():
    assert parse_git_ref("https://github.com/moby/buildkit.git#v0.10.1:docs") == GitRef(
        "https://github.com/moby/buildkit.git", "v0.10.1", "docs")
    assert parse_git_ref("git@github.com:moby/buildkit.git") == GitRef(
        "git@github.com:moby/buildkit.git")
    assert parse_git_ref("ssh://git@host/x/y#main") == GitRef("ssh://git@host/x/y", "main")
    assert parse_git_ref("git://host/y.git#:a/../b") == GitRef("git://host/y.git", "", "b")
    # an http(s) URL is a repository only when its path ends in .git; a context path never is
    assert parse_git_ref("https://example.com/archive.tar.gz") is None
    assert parse_git_ref("https://example.com/repo") is None
    assert parse_git_ref("src/app.git") is None and parse_git_ref("user@host") is None


def test_add_a_repository_over_dumb_http(store, ctx, served):
    url, _, facts = served
    image, _ = do_build(store, ctx, f"""\
FROM busybox
ADD {url} /all
ADD {url}#v1:sub /sub-v1
ADD --keep-git-dir=true {url}#feature /kept
""")
    m = Mounted(store, image)
    try:
        assert m.read("/all/README") == "second\n"  # the remote's HEAD: main
        assert m.read("/all/sub/new") == "new\n"
        assert not os.path.lexists(m.path("/all/.git"))
        assert stat.S_IMODE(m.stat("/all/sub/tool.sh").st_mode) == 0o755
        assert os.readlink(m.path("/all/link")) == "sub/tool.sh"
        assert sorted(os.listdir(m.path("/sub-v1"))) == ["tool.sh"]  # v1's sub, no "new"
        assert m.stat("/sub-v1/tool.sh").st_mtime == facts["first_time"]  # the commit's time
        assert m.read("/kept/README") == "feature\n"
        assert git("rev-parse", "HEAD", cwd=m.path("/kept")) == facts["feature"]
    finally:
        m.close()
    # the same commits again: every ADD from the cache
    _, again = do_build(store, ctx, f"FROM busybox\nADD {url} /all\nADD {url}#v1:sub /sub-v1\n"
                                    f"ADD --keep-git-dir=true {url}#feature /kept\n")
    assert sum("Using cache" in line for line in again) == 3


def test_add_by_commit_from_git_daemon_makes_the_same_layer(store, ctx, served):
    _, daemon_url, facts = served
    dockerfile = f"FROM busybox\nADD {daemon_url}#{facts['first']} /src\n"
    first, _ = do_build(store, ctx, dockerfile)
    second, _ = do_build(store, ctx, dockerfile, no_cache=True)
    m = Mounted(store, first)
    try:
        assert m.read("/src/README") == "first\n"
    finally:
        m.close()
    layers = [config_of(store, i)["rootfs"]["diff_ids"][-1] for i in (first, second)]
    assert layers[0] == layers[1]  # a commit gives one layer, byte for byte


def test_bad_git_sources_are_one_line_errors(store, ctx, served):
    url, _, _ = served
    with pytest.raises(NotFound, match=r"^Dockerfile:2: git repository .*: no branch, tag or "
                                       r"commit 'nope'$"):
        do_build(store, ctx, f"FROM busybox\nADD {url}#nope /x\n")
    with pytest.raises(NotFound, match="no directory 'missing'"):
        do_build(store, ctx, f"FROM busybox\nADD {url}#main:missing /x\n")
    with pytest.raises(Unavailable, match=r"^Dockerfile:2: failed to fetch git repository "
                                          r"http://127\.0\.0\.1:1/none\.git: .*"):
        do_build(store, ctx, "FROM busybox\nADD http://127.0.0.1:1/none.git /x\n")
    (ctx / "f").write_text("f")
    with pytest.raises(Exception, match="a git repository must be the only source"):
        do_build(store, ctx, f"FROM busybox\nADD f {url} /x/\n")
    # the clones went with the failed builds
    assert os.listdir(os.path.join(store.root, "tmp")) == []
