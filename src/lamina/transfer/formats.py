"""The formats images travel in: the media types of manifests, indexes, configs and layers, and
the choice of one platform's manifest from an index (pull and load both make it)."""

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)


def platform_matches(desc: dict, platform: tuple[str, str, str | None]) -> bool:
    """Whether the index entry ``desc`` is for ``platform`` (os, architecture, variant or None:
    any variant; an entry that names no variant matches every one)."""
    want_os, want_arch, want_variant = platform
    p = desc.get("platform") or {}
    if p.get("os") != want_os or p.get("architecture") != want_arch:
        return False
    return want_variant is None or p.get("variant") in (None, want_variant)
