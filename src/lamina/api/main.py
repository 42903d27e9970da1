"""Running ``lamina serve``: the handler modules loaded, a server listening until it is told to
stop (SIGTERM, SIGINT) or has been idle for its timeout."""

from __future__ import annotations

import os
import signal
import threading

from .server import listen, systemd_socket


def load_handlers() -> None:
    """Import every handler module: each registers its routes with :func:`lamina.api.server.route`."""
    from . import (  # noqa: F401
        container_files,
        containers,
        events,
        execs,
        images,
        networks,
        system,
        volumes,
    )


def serve(address: str, root: str, driver: str | None = None, *, timeout: float = 0,
          group: str | None = None, tls=None, verbose: bool = False, ready=None) -> None:
    """Serve the Engine API for the store at ``root`` until idle for ``timeout`` seconds (0:
    until killed). ``ready(server)`` is called once it listens."""
    load_handlers()
    inherited = systemd_socket()
    server = listen(address, group=group, tls=tls, inherited=inherited)
    server.init_state(root, driver, timeout, verbose)
    path = address[len("unix://"):] if address.startswith("unix://") and inherited is None else None

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server.watch_idle()
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if path is not None:
            try:
                if os.path.exists(path):
                    os.unlink(path)
            except OSError:
                pass
