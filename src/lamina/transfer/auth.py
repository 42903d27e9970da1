"""Registry credentials in Docker's ``config.json`` shape: ``{"auths": {HOST: {"auth": B64}}}``.

The file lamina writes is ``--authfile``, else ``$LAMINA_AUTH_FILE``, else ``$REGISTRY_AUTH_FILE``
(Podman's variable), else ``~/.config/lamina/auth.json``; it is created with mode 0600 and
replaced atomically. When it has no entry for a host, ``~/.docker/config.json`` (or
``$DOCKER_CONFIG/config.json``) is read too, so a ``docker login`` is honoured.
:func:`check_login` asks the registry whether credentials are good before they are stored.
"""

import base64
import json
import os

from ..errors import FailedPrecondition, InvalidArgument

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def default_path() -> str:
    for variable in ("LAMINA_AUTH_FILE", "REGISTRY_AUTH_FILE"):
        if os.environ.get(variable):
            return os.environ[variable]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "lamina", "auth.json")


def _docker_path() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def server_key(server: str) -> str:
    """The key a server is stored under: its host[:port]; Docker Hub under Docker's own key."""
    host = server
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    if not host:
        raise InvalidArgument(f"invalid registry {server!r}")
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB_KEY
    return host


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read credentials file {path}: {e}") from None
    return doc if isinstance(doc, dict) else {}


def _write(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(doc, indent="\t").encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def store(host: str, username: str, password: str, path: str | None = None) -> None:
    """Remember credentials for ``host``."""
    path = path or default_path()
    doc = _read(path)
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    doc.setdefault("auths", {})[host] = {"auth": token}
    _write(path, doc)


def remove(host: str, path: str | None = None) -> bool:
    """Forget ``host``; False when there was nothing to forget."""
    path = path or default_path()
    doc = _read(path)
    if host not in doc.get("auths", {}):
        return False
    del doc["auths"][host]
    _write(path, doc)
    return True


def lookup(host: str, path: str | None = None) -> tuple[str, str] | None:
    """(username, password) for ``host`` or None."""
    key = server_key(host)
    for candidate in ([path] if path else [default_path(), _docker_path()]):
        entry = (_read(candidate).get("auths") or {}).get(key)
        if entry and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(f"malformed credentials for {key} in {candidate}") from None
            return user, password
    return None


def check_login(host: str, username: str, password: str, tls_verify: bool | None = None) -> None:
    """Raise unless ``username``/``password`` are accepted by the registry at ``host``."""
    from .http import Client, registry_error  # the network, only for a login

    api = "registry-1.docker.io" if host.startswith("https://index.docker.io") else host
    with Client(api, [], (username, password), tls_verify) as client:
        client.ping()
        resp = client.send("GET", "/v2/")
        resp.close()
        if resp.status_code == 401:
            raise FailedPrecondition(f"login to {host} failed: unauthorized: incorrect username "
                                     "or password")
        if resp.status_code >= 400 and resp.status_code != 404:
            raise registry_error(resp, f"login to {host}")
