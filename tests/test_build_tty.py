"""``lamina build --progress=tty`` (and ``auto`` on a terminal): BuildKit's live view, seen
through a real terminal (tmux), while a step runs and on the final screen."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from .conftest import REPO, Lamina, needs_root

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("tmux") is None,
                                             reason="tmux is installed by scripts/setup")]

SRC = os.path.join(REPO, "src")


class Terminal:
    """A tmux session of 100x30 running one command."""

    def __init__(self, command: str, tmp_path) -> None:
        self.name = f"lamina-tty-{os.getpid()}-{tmp_path.name}"
        self.done = tmp_path / "exit"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "100", "-y", "30",
                        f"{command}; echo $? > {self.done}; sleep 60"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-pt", self.name], capture_output=True,
                              text=True, check=True).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while not self.done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return int(self.done.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


@pytest.fixture
def built(store_root, busybox_tar, tmp_path):
    Lamina(store_root, None)("import", busybox_tar, "busybox")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    terminals = []

    def build(dockerfile: str, *flags: str) -> Terminal:
        (ctx / "Dockerfile").write_text(dockerfile)
        command = (f"cd {tmp_path} && PYTHONPATH={SRC} unshare --mount --propagation private "
                   f"{sys.executable} -m lamina --root {store_root} build {' '.join(flags)} "
                   f"-t tty:1 {ctx}")
        where = tmp_path / f"t{len(terminals)}"
        where.mkdir()
        terminals.append(Terminal(command, where))
        return terminals[-1]

    yield build
    for terminal in terminals:
        terminal.close()


def test_live_view_then_the_final_screen(built):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    dockerfile = (f"FROM busybox\n"
                  f"RUN echo waiting for the test; until wget -q -O /dev/null "
                  f"http://127.0.0.1:{port}/; do sleep 0.1; done; echo released\n"
                  f"RUN echo two > /two\n")
    terminal = built(dockerfile, "--progress=auto")
    serving = False
    try:
        # while the first RUN waits: the header, its line with a timer, its output under it
        live = terminal.wait_for(" => => # waiting for the test")
        lines = live.splitlines()
        assert lines[0].startswith("[+] Building ") and lines[0].endswith("(1/2)"), live
        assert lines[1].startswith(" => [1/3] FROM busybox") and lines[1].endswith("s")
        assert lines[2].startswith(" => [2/3] RUN echo waiting for the test")
        assert "FINISHED" not in live and "#1 " not in live  # not the plain log
        threading.Thread(target=server.serve_forever, daemon=True).start()
        serving = True
        assert terminal.exit_code() == 0
    finally:
        if serving:
            server.shutdown()
        server.server_close()
    final = terminal.screen().splitlines()
    assert final[0].startswith("[+] Building ") and final[0].endswith("(4/4) FINISHED"), final
    rows = [line for line in final if line.startswith(" => ")]
    assert [r.split("  ")[0] for r in rows[:4]] == [
        " => [1/3] FROM busybox", rows[1].split("  ")[0], " => [3/3] RUN echo two > /two",
        " => exporting to image"]
    assert not any(" => => # " in line for line in final)  # the output collapsed away
    assert any(line.startswith(" => => naming to docker.io/library/tty:1 done") for line in final)
    assert all(len(line) < 100 for line in final)


def test_cached_steps_and_a_failure(built):
    terminal = built("FROM busybox\nRUN echo two > /two\n", "--progress=tty")
    assert terminal.exit_code() == 0
    terminal = built("FROM busybox\nRUN echo two > /two\nRUN echo broken; exit 3\n",
                     "--progress=tty")
    assert terminal.exit_code() != 0
    screen = terminal.screen()
    lines = screen.splitlines()
    assert lines[0].endswith("(3/3) ERROR"), screen
    assert any(line.startswith(" => CACHED [2/3] RUN echo two > /two") and
               line.endswith(" 0.0s") for line in lines), screen
    assert any(line.startswith(" => ERROR [3/3] RUN echo broken; exit 3") for line in lines)
    # the failed step's output, under its name, then the error's one line
    assert "------\n > [3/3] RUN echo broken; exit 3:\nbroken\n------" in screen
    assert "returned a non-zero code: 3" in screen
