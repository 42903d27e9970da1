"""lamina serve answers in Docker's shapes: the scenario of tests/test_apischema.py (the one whose
replies from Docker Engine prove the fixtures) run against a real ``lamina serve`` on a fresh,
empty store, and every reply of every operation that tests/data/api/schemas.json describes
checked against the same fixtures, with the same expected statuses on the way.

A reply that does not fit names the step, the operation and the JSON path, as apischema does:
``lamina's reply (running, size=1) does not fit the fixture: ContainerInspect 200: $.State.Pid``."""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.apiserver import Server
from tests.conftest import remove_bridges

from .test_apischema import (
    OPERATIONS,
    Engine,
    assert_interesting_cases,
    assert_replies_fit,
    run_scenario,
)
from .test_registry import start_registry, stop

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("docker-registry") is None,
    reason="needs root and docker-registry (scripts/setup installs docker-registry)")


@pytest.fixture(scope="module")
def replies(busybox_tar):
    """lamina serve's replies, {operation: [(what, status, decoded body), ...]}, from one run of
    the scenario on a store of its own (removed afterwards, with whatever it left mounted)."""
    base = tempfile.mkdtemp(prefix="lamina-apischema-", dir="/var/tmp")
    root = os.path.join(base, "store")
    work = os.path.join(base, "registry")
    os.mkdir(root)
    os.mkdir(work)
    server = Server(root, os.path.join(base, "api.sock"))
    registry = None
    try:
        server.start()
        registry_host, registry = start_registry(work)
        try:
            recorded = run_scenario(Engine(server.socket), busybox_tar, registry_host)
        except AssertionError as e:  # a step's status was not Docker's
            raise AssertionError(f"{e}\nserver log: {server.log_text()[-3000:]}") from e
        yield recorded
    finally:
        if registry is not None:
            stop(registry)
        server.stop()
        for cid in server.lamina("ps", "-a", "-q", "--no-trunc", check=False).stdout.split():
            server.lamina("rm", "-f", cid, check=False)
        remove_bridges(root)
        unmount_all = f"grep -o ' {base}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
        subprocess.run(["sh", "-c", unmount_all], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_lamina_replies_fit(replies, operation):
    assert_replies_fit(replies, operation, "lamina")


def test_scenario_covers_the_interesting_cases(replies):
    """lamina's replies hold the cases the fixtures are about, as Docker's do: changes of all
    three kinds and none at all, an exec's ExitCode null then 2, volume and bind mounts, volumes'
    UsageData, prunes with and without something to delete, a directory's and a symlink's mode
    bits, errors 400, 404, 409 and 500. Events: of containers, images and volumes; not of networks
    yet (a container joins none or host without the connect and disconnect Docker sends)."""
    assert_interesting_cases(replies, {"container", "image", "volume"})
