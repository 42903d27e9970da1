"""``lamina attach`` as ``docker attach``: through a real pty, output seen, input delivered, the
detach keys (ctrl-p ctrl-q, or --detach-keys) leave the container running; --sig-proxy; the
refusals (a stopped container, a terminal container without a terminal)."""

import os
import pty
import select
import signal
import subprocess
import sys
import time

from . import test_run

pytestmark = test_run.pytestmark  # root and runc
store = test_run.store  # the fixture: busybox, teardown checks


def spawn_in_pty(store, *args):
    """``lamina attach ...`` with a new pty as its stdio: (process, the pty's master)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lamina", "--root", store.root, *args],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return proc, master


def read_until(master: int, wanted: bytes, seen: bytearray, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} not seen in {bytes(seen)!r}"
        if select.select([master], [], [], left)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                assert wanted in seen, f"{wanted!r} not seen in {bytes(seen)!r}"


def state(store, name: str) -> str:
    return store("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.strip()


def test_attach_through_a_pty_input_output_and_detach_keys(store):
    store("run", "-dit", "--name", "sh", "--network", "none", "busybox", "sh")
    proc, master = spawn_in_pty(store, "attach", "sh")
    try:
        seen = bytearray()
        time.sleep(0.5)  # attached: what is typed from now on reaches the shell
        os.write(master, b"echo hi-$((40+2))\r")
        read_until(master, b"hi-42", seen)  # the shell computed it: input in, output out
        os.write(master, b"\x10\x11")  # ctrl-p ctrl-q
        assert proc.wait(20) == 1
        read_until(master, b"read escape sequence", seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert state(store, "sh") == "running 0"  # detached: the container goes on
    # again, with other keys: ctrl-p ctrl-q now reach the shell, ctrl-x detaches
    proc, master = spawn_in_pty(store, "attach", "--detach-keys", "ctrl-x", "sh")
    try:
        seen = bytearray()
        time.sleep(0.5)
        os.write(master, b"echo \x10\x11x; exit 3\r")
        assert proc.wait(20) == 3  # attach ends with the container, with its exit code
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert state(store, "sh") == "exited 3"
    proc = store("attach", "sh", check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: You cannot attach to a stopped container, start it first\n")


def test_attach_without_a_terminal_and_signal_proxy(store):
    store("run", "-dit", "--name", "tty", "--network", "none", "busybox", "sh")
    proc = store("attach", "tty", check=False, input="")
    assert (proc.returncode, proc.stderr) == (1, "Error: the input device is not a TTY\n")
    script = "trap 'echo bye; exit 7' INT; while read l; do echo \"got $l\"; done; sleep 600"
    store("run", "-di", "--name", "loop", "--network", "none", "busybox", "sh", "-c", script)
    attach = [sys.executable, "-m", "lamina", "--root", store.root, "attach"]
    proc = subprocess.Popen([*attach, "loop"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line == b"got hello\n"
        proc.send_signal(signal.SIGINT)  # --sig-proxy (the default): the container gets it
        assert proc.wait(20) == 7
        assert proc.stdout.read() == b"bye\n"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert state(store, "loop") == "exited 7"
    store("start", "loop")
    # Ctrl-C's default action, as a terminal's shell gives it (a suite started in the
    # background by a non-interactive shell would hand its children SIGINT ignored)
    proc = subprocess.Popen([*attach, "--sig-proxy=false", "--no-stdin", "loop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # the client goes, the container does not get it
    proc.wait(20)
    assert state(store, "loop") == "running 0"
    store("rm", "-f", "loop", "tty")
