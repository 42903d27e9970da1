"""Engine API: exec (create, start hijacked or detached, inspect, resize).

An exec instance lives in the server's memory, as Docker keeps them in its daemon: created,
started once, then inspected for its exit code. Its process runs through
:func:`lamina.runtime.process.exec_process` (``runc exec``), as ``lamina exec`` runs it.
"""

from __future__ import annotations

import os
import socket
import threading

from ..errors import FailedPrecondition, NotFound
from ..runtime.attach import DetachKeys
from ..runtime.attach import parse_keys as detach_keys
from ..runtime.oci import RuntimeFailure
from .containers import console_size, frame_header, relay_input
from .server import ApiError, go_fields, route, status_of

EXEC_FIELDS = ("AttachStdin", "AttachStdout", "AttachStderr", "ConsoleSize", "DetachKeys",
               "Tty", "Env", "Cmd", "Privileged", "User", "WorkingDir")
READY_WAIT = 10.0  # seconds a resize waits for its exec to start, as Docker's daemon waits
_execs: dict[str, dict] = {}
_lock = threading.Lock()


def _get(exec_id: str) -> dict:
    with _lock:
        found = _execs.get(exec_id)
    if found is None:
        raise NotFound(f"No such exec instance: {exec_id}")
    return found


@route("POST", "/containers/{id}/exec")
def create(request, id):
    from ..runtime.ownership import require_running

    body = request.json({})
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    body = go_fields(body, dict.fromkeys(EXEC_FIELDS))  # docker-py sends "detachKeys"
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
    containers = request.engine.container_store
    try:
        row = require_running(containers, id, "exec in")
    except FailedPrecondition:
        raise FailedPrecondition(f"container {containers.get(id)['id']} is not running") from None
    detach_keys(body.get("DetachKeys"))  # refused now, not when it starts
    exec_id = os.urandom(32).hex()
    with _lock:
        _execs[exec_id] = {
            "ID": exec_id, "Running": False, "ExitCode": None, "ProcessConfig": {
                "tty": bool(body.get("Tty")), "entrypoint": cmd[0], "arguments": cmd[1:],
                "privileged": bool(body.get("Privileged")),
                **({"user": body["User"]} if body.get("User") else {})},  # Docker's omitempty
            "OpenStdin": bool(body.get("AttachStdin")), "OpenStderr": bool(body.get("AttachStderr")),
            "OpenStdout": bool(body.get("AttachStdout")), "CanRemove": False,
            "ContainerID": row["id"], "DetachKeys": body.get("DetachKeys") or "", "Pid": 0,
            "env": body.get("Env") or [], "workdir": body.get("WorkingDir") or None,
            "started": False, "console_size": console_size(body.get("ConsoleSize")) or None,
            "ready": threading.Event(),  # set once its process runs, or its start failed
        }
    containers.event(f"exec_create: {' '.join(cmd)}", row, execID=exec_id)
    request.send_json(201, {"Id": exec_id})


@route("GET", "/exec/{id}/json")
def inspect(request, id):
    found = _get(id)
    return {k: v for k, v in found.items() if k[0].isupper()}  # lower-case keys are ours


@route("POST", "/exec/{id}/resize")
def resize(request, id):
    """Set the size of the exec's terminal (the pty runc made for it: its process is woken with
    SIGWINCH), as Docker answers it (checked against Docker Engine 20.10): a resize waits for
    the exec to start, 10 s at the most, then 500 "timeout waiting for exec session ready";
    once it has started, 200 whether it has a terminal or not, and "no such exec" (404) when
    its process has ended or never ran. A size given before the start is also handed to the
    start, which sets it before the process runs (Docker's comes after: a first ``stty size``
    may miss it)."""
    from ..runtime.console import set_terminal_size

    found = _get(id)
    height, width = request.atoi("h"), request.atoi("w")
    tty = found["ProcessConfig"]["tty"]
    with _lock:
        if tty and not found["started"]:
            found["size"] = (height, width)  # for the start to give the runtime
    waited = not found["ready"].is_set()
    if waited:
        request.release_gate()  # waiting on the client's start
        if not found["ready"].wait(READY_WAIT):
            with _lock:
                if found.get("size") == (height, width) and not found["started"]:
                    del found["size"]  # a resize that failed does not size a later start
            raise ApiError(500, "timeout waiting for exec session ready")
    pid = found["Pid"]
    if waited and tty and pid and found.get("size") == (height, width):
        request.send_empty(200)  # the start gave its process this size: done, ended since or not
        return
    if not pid or not os.path.exists(f"/proc/{pid}"):
        raise ApiError(404, "no such exec")
    if tty:
        set_terminal_size(pid, height, width)
    request.send_empty(200)


@route("POST", "/exec/{id}/start")
def start(request, id):
    """Start the exec, once, as Docker does (checked against Docker Engine 20.10): it is
    ``Running`` from here until its process ends, a detached one too (its exit code comes when
    it ends). A second start is refused (409 "is already running", or "has already run" once it
    ended); an attached one is refused on its stream, which Docker hijacks before it looks."""
    body = request.json({}) or {}
    found = _get(id)
    with _lock:
        refused = None
        if found["ExitCode"] is not None:
            refused = f"Error: Exec command {found['ID']} has already run"
        elif found["started"]:
            refused = f"Error: Exec command {found['ID']} is already running"
        else:
            found["started"] = found["Running"] = True
    if refused is not None:
        if body.get("Detach"):
            raise FailedPrecondition(refused)
        raw = bool(body.get("Tty"))
        _tell(request.hijack(request.stream_type(raw)), refused, raw)
        return
    try:
        _start(request, found, body)
    finally:
        found["ready"].set()  # a resize waiting for a start that failed: "no such exec"


def _tell(conn, message: str, raw: bool) -> None:
    """``message`` on a hijacked exec stream, as Docker puts its errors there (on stdout); then
    the stream ends."""
    data = (message + "\r\n").encode()
    try:
        conn.sendall(data if raw else frame_header(1, len(data)) + data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _start(request, found: dict, body: dict) -> None:
    """:func:`start` of the exec ``found``, marked started."""
    from ..runtime.process import exec_process

    detach = bool(body.get("Detach"))
    tty = found["ProcessConfig"]["tty"]  # the process's terminal: the create's
    raw = bool(body.get("Tty"))  # the stream's framing: the start's, as Docker decides it
    config = found["ProcessConfig"]
    argv = [config["entrypoint"], *config["arguments"]]
    containers = request.engine.container_store
    row = containers.get(found["ContainerID"])
    containers.event(f"exec_start: {' '.join(argv)}", row, execID=found["ID"])

    def started(pid: int) -> None:
        from ..runtime.console import set_terminal_size

        with _lock:
            found["Pid"] = pid
            size = found.get("size")
        if size:
            set_terminal_size(pid, *size)
        found["ready"].set()

    def ended(code: int) -> None:
        with _lock:
            found["ExitCode"], found["Running"] = code, False
        containers.event("exec_die", row, execID=found["ID"], exitCode=code)

    with _lock:  # a resize before the start, else the create's ConsoleSize (docker exec -it's)
        size = found.get("size") or found["console_size"]
    request.release_gate()
    if detach:
        try:
            exec_process(containers, found["ContainerID"], argv, env=found["env"],
                         workdir=found["workdir"], user=config.get("user"), detach=True,
                         tty=tty, forward_signals=False, on_started=started, on_exit=ended,
                         console_size=size)
        except BaseException as error:
            with _lock:  # Docker's exit code of a start that failed
                found["ExitCode"], found["Running"] = 126, False
            if isinstance(error, RuntimeFailure):
                raise ApiError(status_of(error), _failed_start(error)) from None
            raise
        request.send_empty(200)
        return
    conn = request.hijack(request.stream_type(raw))
    stdin_r, stdin_w = os.pipe() if found["OpenStdin"] else (None, None)
    out_r, out_w = os.pipe()
    err_r, err_w = (out_r, out_w) if tty else os.pipe()
    relays = [threading.Thread(target=_copy_out, args=(out_r, conn, 1, raw), daemon=True)]
    if err_r != out_r:
        relays.append(threading.Thread(target=_copy_out, args=(err_r, conn, 2, raw), daemon=True))
    if stdin_w is not None:
        keys = DetachKeys(detach_keys(found["DetachKeys"]))
        threading.Thread(target=_copy_in, args=(conn, stdin_w, keys, found), daemon=True).start()
    for relay in relays:
        relay.start()
    code = 126
    try:
        code = exec_process(containers, found["ContainerID"], argv, env=found["env"],
                            workdir=found["workdir"], user=config.get("user"),
                            stdin=stdin_r, stdout=out_w, stderr=err_w, tty=tty,
                            forward_signals=False, on_started=started, console_size=size)
    except Exception as error:  # noqa: BLE001 - reported on the stream, as Docker does
        # Docker: the runtime's words on stdout, exit code 126, whatever the cause
        message = (_failed_start(error) + "\r\n").encode()
        try:
            conn.sendall(message if raw else frame_header(1, len(message)) + message)
        except OSError:
            pass
        code = 126
    finally:
        ended(code)
        for fd in {out_w, err_w} | ({stdin_r} if stdin_r is not None else set()):
            os.close(fd)
        if found.get("detached_stdin") is not None:
            os.close(found.pop("detached_stdin"))
        for relay in relays:
            relay.join()
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _failed_start(error: BaseException) -> str:
    """Docker's words for an exec whose process the runtime could not start."""
    return f"OCI runtime exec failed: exec failed: unable to start container process: {error}: unknown"


def _copy_out(fd: int, conn, stream: int, raw: bool) -> None:
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            try:
                conn.sendall(data if raw else frame_header(stream, len(data)) + data)
            except OSError:
                pass  # the client went: keep draining, or the process blocks on a full pipe
    finally:
        os.close(fd)


def _copy_in(conn, fd: int, keys: DetachKeys, found: dict) -> None:
    """The client's input to the process until it half-closes (stdin ends) or types the detach
    keys: then the session ends and the process goes on with stdin open, as Docker leaves it
    (:func:`start` closes ``fd`` once the process has ended)."""
    if relay_input(conn, fd, keys):
        found["detached_stdin"] = fd
        return
    os.close(fd)
