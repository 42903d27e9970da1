"""Image references as Docker reads them: ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]``."""

from .digest import is_digest
from .errors import InvalidArgument
from .records import frozen

DOCKER_HUB = "docker.io"


@frozen
class Reference:
    """``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`` split as Docker does (``busybox`` is
    ``docker.io/library/busybox:latest``)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``user/app``, ``host:5000/app``."""
        if self.registry == DOCKER_HUB:
            repo = self.repository
            return repo.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    def local_tag(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


# patterns compiled (and cached) by re in parse_reference: image inspect imports this module
# for Reference.name and parses nothing
_COMPONENT = r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"
_TAG = r"^[\w][\w.-]{0,127}$"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"


def parse_reference(text: str) -> Reference:
    """Parse an image reference; ``docker://`` in front is accepted (Podman's transports)."""
    import re

    ref = text.removeprefix("docker://")
    digest = None
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        if not is_digest(digest):
            raise InvalidArgument(f"invalid reference format: bad digest in {text!r}")
    tag = None
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1:]
        if not re.match(_TAG, tag):
            raise InvalidArgument(f"invalid reference format: bad tag in {text!r}")
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, ref
        if "/" not in repository:
            repository = "library/" + repository
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if not re.match(_HOST, registry):  # e.g. "../x": never hand a bad host name to the resolver
        raise InvalidArgument(f"invalid reference format: bad registry host in {text!r}")
    if not repository or not all(re.match(_COMPONENT, c) for c in repository.split("/")):
        if repository != repository.lower():
            raise InvalidArgument(
                f"invalid reference format: repository name must be lowercase: {text!r}")
        raise InvalidArgument(f"invalid reference format: {text!r}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
