"""``python -S -m lamina.runtime ROOT DRIVER ID FD [IN,OUT,ERR]``: the detached monitor of one
container (``... ID exited ...``: the same monitor again after its relay saw the exit). lamina
itself starts :func:`main` with ``python -S -c`` (:data:`lamina.runtime.monitor.ENTRY`): ``-m``'s
runpy costs every exit.

:func:`lamina.runtime.monitor.spawn` starts it (a fresh interpreter, double fork, new session).
It owns the container until the container's process ends (:func:`lamina.runtime.monitor.serve`)
and reports ``ok`` or ``CODE message`` on the file descriptor FD. Its Lifecycle
(:class:`lamina.runtime.Lifecycle`) lets removing a ``--rm`` container stop it if need be.
"""

import os
import sys

from ..containers import open_containers
from . import Lifecycle


def main(argv: list[str]) -> None:
    """Open the store at ROOT with DRIVER and serve container ID, reporting on FD (and copying
    the process's stdio from and to IN, OUT, ERR when given); never returns."""
    root, driver, container_id, notify = argv[:4]
    try:
        containers = open_containers(root, driver)
        containers.lifecycle = Lifecycle(containers)
    except BaseException as error:  # noqa: BLE001 - reported to the command that waits for it
        if notify == "exited":  # no command waits: the traceback goes to the monitor's log
            os.write(2, f"lamina: {error}\n".encode())
            os._exit(1)
        os.write(int(notify), f"125 {error}".encode())
        os._exit(1)
    from .monitor import serve, serve_exit

    if notify == "exited":
        serve_exit(containers, container_id, argv[4:])
        os._exit(0)
    stdio = tuple(int(fd) for fd in argv[4].split(",")) if len(argv) > 4 else (-1, -1, -1)
    serve(containers, container_id, int(notify), stdio)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
