"""``lamina serve``: the Docker Engine API on a socket, over the store the CLI uses."""

import os
import sys

from .common import UsageError

ARGS: dict[str, tuple] = {}  # verb -> its flags and positionals (see common.Parser)

ARGS["serve"] = (
    ("-H --socket", "string", ("Where to listen: unix:///PATH or tcp://127.0.0.1:PORT (default "
                               "unix:///run/lamina/docker.sock for root, "
                               "unix://$XDG_RUNTIME_DIR/lamina/docker.sock for others)")),
    ("-t --timeout", "int", ("Seconds without a connection after which the server ends (0: "
                             "never; default 0, 5 when started by systemd socket activation)")),
    ("--group", "string", "Group that may use the unix socket (mode 0660; default: 0600)"),
    ("--tls", "bool", "Serve TLS on a TCP address (needs --tlscert and --tlskey)"),
    ("--tlscert", "string", "TLS certificate file"),
    ("--tlskey", "string", "TLS key file"),
    ("--tlscacert", "string", "Trust client certificates signed by this CA only"),
    ("--tlsverify", "bool", "Require a client certificate signed by --tlscacert (implies --tls)"),
    ("--print-unit", "bool", "Print systemd socket and service units for this store, and exit"),
    ("--log-requests", "bool", "Log each request to stderr"),
)


def default_socket() -> str:
    from ..userns import host_uid, rootless

    if not rootless():
        return "unix:///run/lamina/docker.sock"
    # a user's command runs in its store's namespace, as uid 0 there: the host uid names the dir
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{host_uid()}"
    return f"unix://{runtime_dir}/lamina/docker.sock"


def cmd_serve(opts, a):
    from ..store import default_root

    root = os.path.abspath(opts.root or os.environ.get("LAMINA_ROOT") or default_root())
    address = a.socket or default_socket()
    if a.print_unit:
        print(units(root, address))
        return
    tls = None
    if a.tls or a.tlsverify:
        from ..api.server import tls_context

        if not a.tlscert or not a.tlskey:
            raise UsageError("--tls needs --tlscert and --tlskey")
        tls = tls_context(a.tlscert, a.tlskey, a.tlscacert, a.tlsverify)
    elif address.startswith("unix://") and (a.tlscert or a.tlskey):
        raise UsageError("TLS files are for a tcp:// address with --tls")
    try:
        timeout = float(a.timeout) if a.timeout is not None else (
            5 if os.environ.get("LISTEN_FDS") else 0)
    except ValueError:
        raise UsageError(f"invalid --timeout {a.timeout!r}: a number of seconds") from None
    if timeout < 0:
        raise UsageError("--timeout must be 0 or more seconds")
    from ..api.main import serve
    from ..engine import Engine

    Engine(root, opts.driver).close()  # open (or create) the store first: its errors are one line

    def ready(server):
        sys.stderr.write(f"lamina serve: API listening on {address} (store {root})\n")
        sys.stderr.flush()

    serve(address, root, opts.driver, timeout=timeout, group=a.group, tls=tls,
          verbose=a.log_requests, ready=ready)


def units(root: str, address: str) -> str:
    """A systemd socket unit and the service it starts (socket activation, idle exit)."""
    lamina = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "lamina"
    path = address[len("unix://"):] if address.startswith("unix://") else None
    listen = f"ListenStream={path}" if path else f"ListenStream={address[len('tcp://'):]}"
    return f"""# /etc/systemd/system/lamina.socket
[Unit]
Description=lamina Engine API socket

[Socket]
{listen}
SocketMode=0600

[Install]
WantedBy=sockets.target

# /etc/systemd/system/lamina.service
[Unit]
Description=lamina Engine API service
Requires=lamina.socket
After=lamina.socket

[Service]
Type=exec
ExecStart={lamina} --root {root} serve --socket {address} --timeout 5
KillMode=process
"""
