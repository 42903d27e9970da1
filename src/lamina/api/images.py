"""Engine API: images (list, inspect, history, tag, delete, prune), moving them (pull and import
through ``/images/create``, push, save as ``get``, load), ``/build`` with the legacy builder's
stream, ``/commit``, ``/auth`` and ``/distribution/{name}/json``.

Every handler calls the Engine the CLI uses (``engine.pull``, ``engine.push``, ``engine.save``,
``engine.load``, ``engine.build``, ``engine.commit``...); this module only translates: query
parameters in, Docker's documents and JSON progress lines out. lamina's transfer progress calls
(add, advance, status, message) become Docker's ``{"status", "progressDetail", "id"}`` lines;
the builder's output lines become ``{"stream"}`` lines, RUN's output read from pipes
(``BuildOptions.stdout/stderr``) in between, stderr in red as Docker marks it.

A streamed answer starts with its first line, as Docker's does: an error before it is an HTTP
error (``404 {"message": ...}`` for an image the registry does not have, which the docker CLI's
``run`` relies on), an error after it is an ``{"errorDetail": ..., "error": ...}`` line.

Docker's image config holds what a container was configured with; lamina's import and commit
keep the base's. An import or commit through the API therefore writes its image in two steps:
lamina's, then the same layers with Docker's config (the ``changes`` applied, a commit's
container config merged as Docker merges it) added with :meth:`Engine.add_image`, and lamina's
first image removed again.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from functools import lru_cache

from ..errors import FailedPrecondition, InvalidArgument, LaminaError, NotFound, Unavailable
from ..events import labels_match
from .server import ApiError, route, version_tuple

_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_ZERO_TIME = "0001-01-01T00:00:00Z"
# Docker's container.Config as image inspect shows ContainerConfig (struct order; the fields
# marked omitempty there are added only when set)
_CONTAINER_CONFIG = (("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False),
                     ("AttachStdout", False), ("AttachStderr", False), ("ExposedPorts", None),
                     ("Tty", False), ("OpenStdin", False), ("StdinOnce", False), ("Env", None),
                     ("Cmd", None), ("Healthcheck", None), ("ArgsEscaped", None), ("Image", ""),
                     ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None),
                     ("NetworkDisabled", None), ("MacAddress", None), ("OnBuild", None),
                     ("Labels", None), ("StopSignal", None), ("StopTimeout", None),
                     ("Shell", None))
_OMITTED_WHEN_EMPTY = {"ExposedPorts", "Healthcheck", "ArgsEscaped", "NetworkDisabled",
                       "MacAddress", "StopSignal", "StopTimeout", "Shell"}
# the image config's own fields (Docker's DockerOCIImageConfig), and the container fields API
# versions before 1.50 still show in inspect's Config with their zero values
_IMAGE_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                      "Labels", "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")
_LEGACY_CONFIG = {"AttachStderr": False, "AttachStdin": False, "AttachStdout": False,
                  "Cmd": None, "Domainname": "", "Entrypoint": None, "Env": None, "Hostname": "",
                  "Image": "", "Labels": None, "OnBuild": None, "OpenStdin": False,
                  "StdinOnce": False, "Tty": False, "User": "", "Volumes": None,
                  "WorkingDir": ""}


def _before(request, version: str) -> bool:
    return version_tuple(request.version) < version_tuple(version)


# ------------------------------------------------------------------------------ references
@lru_cache(maxsize=1024)
def _familiar(name: str) -> str:
    """``busybox`` -> ``busybox:latest``, ``docker.io/library/x:1`` -> ``x:1`` (Docker's
    familiar form, as its messages and tags show a reference); anything else as given. Kept
    for the names seen: ``docker images`` asks it for every tag on every call."""
    from ..reference import parse_reference

    try:
        ref = parse_reference(name)
    except InvalidArgument:
        return name
    return f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"


def _tag_reference(repo: str | None, tag: str | None) -> str | None:
    """``repo`` and ``tag`` query parameters as one familiar ``NAME:TAG`` (None without a repo),
    refused with Docker's messages."""
    from ..reference import parse_reference

    if not repo:
        return None
    if tag and not _TAG.match(tag):
        raise ApiError(400, "invalid tag format")
    try:
        ref = parse_reference(repo)
    except InvalidArgument:
        if repo != repo.lower():
            raise ApiError(400, "invalid reference format: repository name must be lowercase") \
                from None
        raise ApiError(400, "invalid reference format") from None
    if ref.digest and not tag:
        raise ApiError(400, "refusing to create a tag with a digest reference")
    if ref.name == "sha256":
        raise ApiError(400, "refusing to create an ambiguous tag using digest algorithm as name")
    return f"{ref.name}:{tag or ref.tag or 'latest'}"


def _image_id(engine, name: str) -> str:
    """The ID of the image ``name`` (a tag, an ID or its prefix, or ``NAME@DIGEST``); 404 with
    Docker's message otherwise."""
    if "@" in name:
        digest = name.rpartition("@")[2]
        found = engine.image_store.by_digest(digest)
        if found:
            return found
        wanted = _familiar(name)
        for row in engine.image_store.rows():
            if wanted in engine.image_store.repo_digests(row["manifest_digest"]):
                return row["id"]
        raise NotFound(f"No such image: {wanted}")
    try:
        return engine.image_store.resolve(name)
    except NotFound:
        familiar = _familiar(name)  # docker.io/library/busybox is busybox:latest
    try:
        return engine.image_store.resolve(familiar)
    except (NotFound, InvalidArgument):
        raise NotFound(f"No such image: {familiar}") from None


# ------------------------------------------------------------------------------ documents
def image_summaries(engine, containers_count: dict | None = None, shared: bool = False, *,
                    all: bool = False, filters: dict | None = None,
                    version: str | None = None) -> list[dict]:
    """Docker's ImageSummary of each image ``docker images`` lists (``all``: the build's
    intermediate states too), newest first. ``containers_count`` (image ID -> containers)
    fills ``Containers`` (else -1); ``shared`` computes ``SharedSize`` (the bytes of layers
    other images use too; else -1). ``filters``: Docker's dangling, label, reference, before,
    since and until. ``version``: the client's API version (VirtualSize before 1.44, ``<none>``
    names before 1.43)."""
    images = engine.image_store
    filters = {k: v for k, v in (filters or {}).items() if v}
    for key in filters:
        if key not in ("dangling", "label", "reference", "before", "since", "until"):
            raise ApiError(400, f"invalid filter '{key}'")
    dangling = _bool_filter(filters, "dangling")
    rows = images.rows()
    hidden = set() if all else images.build_states()
    newest = _time_bound(engine, filters.get("before", []), min) if "before" in filters else None
    until = _until(filters.get("until", []))
    if until is not None:
        newest = until if newest is None else min(newest, until)
    oldest = _time_bound(engine, filters.get("since", []), max) if "since" in filters else None
    patterns = filters.get("reference", [])
    usage: dict[str, int] = {}
    if shared:
        for _, chain in images.all_layer_links():
            usage[chain] = usage.get(chain, 0) + 1
    out = []
    for row in rows:
        image_id = row["id"]
        exact = _created(row["created"])
        if (newest is not None and exact >= newest) or (oldest is not None and exact <= oldest):
            continue
        all_tags = images.tags(image_id)
        if not all_tags and image_id in hidden:
            continue
        tags = [_familiar(t) for t in all_tags]
        digests = images.repo_digests(row["manifest_digest"])
        if patterns:
            tags = [t for t in tags if _reference_matches(patterns, t)]
            digests = [d for d in digests if _reference_matches(patterns, d)]
            if not tags and not digests:
                continue
        if dangling is True and all_tags:
            continue
        if dangling is False and not all_tags:
            continue
        try:
            config = images.shared_config(image_id)
        except NotFound:  # removed by another process meanwhile
            continue
        labels = (config.get("config") or {}).get("Labels") or {}
        if "label" in filters and not labels_match(labels, filters["label"]):
            continue
        doc = {"Containers": -1 if containers_count is None else containers_count.get(image_id, 0),
               "Created": int(exact), "Id": image_id, "Labels": labels,
               "ParentId": config.get("parent") or "",
               "RepoDigests": digests, "RepoTags": tags, "SharedSize": -1, "Size": row["size"]}
        if shared:
            doc["SharedSize"] = 0
            for layer in images.layer_rows(image_id):
                if usage.get(layer["chain_id"], 0) > 1:
                    doc["SharedSize"] += layer["size"]
        if version is not None and version_tuple(version) < (1, 43) and not tags and not digests:
            doc["RepoTags"], doc["RepoDigests"] = ["<none>:<none>"], ["<none>@<none>"]
        if version is not None and version_tuple(version) < (1, 44):
            doc["VirtualSize"] = doc["Size"]
        out.append(doc)
    out.sort(key=lambda d: d["Created"], reverse=True)
    return out


@lru_cache(maxsize=1024)
def _created(text: str) -> float:
    """An image row's creation time in seconds (parsed once for each image seen)."""
    from ..image import parse_rfc3339

    return parse_rfc3339(text)


def _bool_filter(filters: dict, key: str) -> bool | None:
    values = filters.get(key)
    if not values:
        return None
    value = values[-1].lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ApiError(400, f"invalid filter '{key}={values[-1]}'")


def _time_bound(engine, names: list[str], pick) -> float:
    """The creation time of the images ``names`` (the earliest or latest, ``pick``)."""
    from ..image import parse_rfc3339

    times = []
    for name in names:
        image_id = _image_id(engine, name)
        times.append(parse_rfc3339(engine.image_store.row(image_id)["created"]))
    return pick(times)


def _until(values: list[str]) -> float | None:
    """Docker's ``until`` filter: a Unix time, an RFC 3339 date or a duration before now."""
    if not values:
        return None
    from ..image import parse_rfc3339

    bounds = []
    for value in values:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
        if m:
            scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
            bounds.append(time.time() - float(m.group(1)) * scale[m.group(2)])
        elif re.fullmatch(r"\d+(\.\d+)?", value):
            bounds.append(float(value))
        elif parse_rfc3339(value):
            bounds.append(parse_rfc3339(value))
        else:
            raise ApiError(400, f"invalid filter 'until={value}'")
    return min(bounds)


def _path_match(pattern: str, text: str) -> bool:
    """Go's path.Match: shell patterns whose ``*`` and ``?`` stop at ``/``."""
    from fnmatch import fnmatchcase

    parts, words = pattern.replace("[^", "[!").split("/"), text.split("/")
    return len(parts) == len(words) and all(fnmatchcase(w, p) for w, p in zip(words, parts,
                                                                              strict=True))


def _reference_matches(patterns: list[str], reference: str) -> bool:
    """Docker's reference filter: the pattern matches the whole familiar reference or its name."""
    name = reference.partition("@")[0]
    if ":" in name.rpartition("/")[2]:
        name = name.rpartition(":")[0]
    return any(_path_match(p, reference) or _path_match(p, name) for p in patterns)


@route("GET", "/images/json")
def list_images(request):
    filters = request.filters()
    if _before(request, "1.41") and request.arg("filter"):
        filters.setdefault("reference", []).append(request.arg("filter"))
    shared = request.flag("shared-size") and not _before(request, "1.42")
    engine = request.engine
    with engine.store.reading():
        return image_summaries(engine, None, shared, all=request.flag("all"), filters=filters,
                               version=request.version)


def inspect_document(engine, name: str, version: str) -> dict:
    """Docker's ImageInspect for API ``version``: lamina's document, with Docker's zero values
    for what lamina does not keep."""
    images = engine.image_store
    image_id = _image_id(engine, name)
    row = images.row(image_id)
    if row is None:
        raise NotFound(f"No such image: {name}")  # removed by another process meanwhile
    config = images.shared_config(image_id)  # not ImageStore.inspect: it reads config and manifest again
    doc = {"Id": image_id, "RepoTags": [_familiar(t) for t in images.tags(image_id)],
           "RepoDigests": images.repo_digests(row["manifest_digest"])}
    doc.update(_from_config(image_id, config, version))
    doc["Size"] = row["size"]
    if version_tuple(version) < (1, 44):
        doc["VirtualSize"] = row["size"]
    top = row["top_layer"]
    doc.update({"GraphDriver": {"Data": {"Dir": engine.store.snaps.dir(top)} if top else None,
                                "Name": engine.store.driver},
                "RootFS": {"Type": "layers"},
                "Metadata": {"LastTagTime": _ZERO_TIME}})
    layers = (config.get("rootfs") or {}).get("diff_ids") or []
    if layers:
        doc["RootFS"]["Layers"] = layers
    return doc


_FROM_CONFIG: dict[tuple[str, str], dict] = {}  # (image ID, API version) -> its fields


def _from_config(image_id: str, config: dict, version: str) -> dict:
    """The fields of an image's inspect that its config alone decides (Parent to OsVersion, in
    Docker's order), made once for each image and API version: the config never changes (the
    ID is its digest). For reading only."""
    found = _FROM_CONFIG.get((image_id, version))
    if found is not None:
        return found
    history = config.get("history") or [{}]
    image_config = dict(_LEGACY_CONFIG)  # Go marshals a map: keys sorted
    image_config.update(_image_config(config.get("config") or {}))
    doc = {"Parent": config.get("parent", ""),
           "Comment": config.get("comment") or history[-1].get("comment", ""),
           "Created": config.get("created", "")}
    if not doc["Created"]:
        del doc["Created"]
        if version_tuple(version) < (1, 44):
            doc["Created"] = _ZERO_TIME
    if config.get("container"):
        doc["Container"] = config["container"]
    if version_tuple(version) < (1, 45):
        doc["ContainerConfig"] = _container_config(config.get("container_config") or {})
    doc.update({"DockerVersion": config.get("docker_version", ""),
                "Author": config.get("author", ""),
                "Config": dict(sorted(image_config.items())),
                "Architecture": config.get("architecture", "")})
    if config.get("variant"):
        doc["Variant"] = config["variant"]
    doc["Os"] = config.get("os", "")
    if config.get("os.version"):
        doc["OsVersion"] = config["os.version"]
    if len(_FROM_CONFIG) >= 1024:
        _FROM_CONFIG.clear()
    _FROM_CONFIG[(image_id, version)] = doc
    return doc


def _container_config(given: dict) -> dict:
    out = {}
    for key, zero in _CONTAINER_CONFIG:
        value = given.get(key, zero)
        if key in _OMITTED_WHEN_EMPTY and value in (None, "", False, [], {}, 0):
            continue
        out[key] = value
    return out


@route("GET", "/images/{name:.+}/json")
def inspect_image(request, name):
    engine = request.engine
    with engine.store.reading():
        return inspect_document(engine, name, request.version)


@route("GET", "/images/{name:.+}/history")
def image_history(request, name):
    """Newest first; as Docker's, the rows down an image's parents (a commit's: its container's
    image) show those images' IDs and tags, the others ``<missing>``."""
    engine = request.engine
    images = engine.image_store
    image_id = _image_id(engine, name)
    out = []
    current: str | None = image_id
    for row in engine.history(image_id):
        out.append({"Comment": row["Comment"], "Created": int(row["Created"]),
                    "CreatedBy": row["CreatedBy"], "Id": current or "<missing>",
                    "Size": row["Size"],
                    "Tags": [_familiar(t) for t in images.tags(current)] or None
                    if current else None})
        if current is not None:
            try:
                parent = images.config(current).get("parent") or None
            except NotFound:
                parent = None
            current = parent if parent and images.row(parent) is not None else None
    return out


@route("POST", "/images/{name:.+}/tag")
def tag_image(request, name):
    target = _tag_reference(request.arg("repo"), request.arg("tag"))
    if target is None:
        raise ApiError(400, "invalid reference format")
    engine = request.engine
    image_id = _image_id(engine, name)
    engine.tag(image_id, target)
    request.send_empty(201)


# ---------------------------------------------------------------------------- delete, prune
def _removal_records(lines: list[str]) -> list[dict]:
    """lamina's ``Untagged: X`` / ``Deleted: Y`` lines as Docker's DeleteResponse items."""
    out = []
    for line in lines:
        kind, _, what = line.partition(": ")
        out.append({kind: _familiar(what) if kind == "Untagged" else what})
    return out


@route("DELETE", "/images/{name:.+}")
def delete_image(request, name):
    engine = request.engine
    force = request.flag("force")
    image_id = _image_id(engine, name)
    by_id = image_id.startswith(name) or image_id[7:].startswith(name)
    if by_id:  # Docker's words when containers use an image named by its ID
        users = [c for c in engine.containers(all=True) if c["ImageID"] == image_id]
        running = [c for c in users if c["State"] in ("running", "paused", "restarting")]
        if running:
            raise FailedPrecondition(
                f"conflict: unable to delete {image_id[7:19]} (cannot be forced) - image is being "
                f"used by running container {running[0]['ID'][:12]}")
        if users and not force:
            raise FailedPrecondition(
                f"conflict: unable to delete {image_id[7:19]} (must be forced) - image is being "
                f"used by stopped container {users[0]['ID'][:12]}")
        name = image_id
    elif "@" in name:
        name = image_id
    return _removal_records(engine.rmi([name], force=force))


@route("POST", "/images/prune")
def prune_images(request):
    filters = {k: v for k, v in request.filters().items() if v}
    for key in filters:
        if key not in ("dangling", "until", "label", "label!"):
            raise ApiError(400, f"invalid filter '{key}'")
    dangling = _bool_filter(filters, "dangling")
    everything = dangling is False
    engine = request.engine
    if not (set(filters) - {"dangling"}):
        lines, reclaimed = engine.prune_images(all=everything)
        return {"ImagesDeleted": _removal_records(lines) or None, "SpaceReclaimed": reclaimed}
    # with label or until: the images chosen here, removed one by one as rmi -f would
    from ..image import parse_rfc3339

    images = engine.image_store
    until = _until(filters.get("until", []))
    keep = images.build_states()
    lines: list[str] = []
    reclaimed = 0
    for image_id in images.unused(dangling_only=not everything):
        row = images.row(image_id)
        if row is None or image_id in keep:
            continue
        if until is not None and parse_rfc3339(row["created"]) >= until:
            continue
        labels = (images.config(image_id).get("config") or {}).get("Labels") or {}
        if "label" in filters and not labels_match(labels, filters["label"]):
            continue
        if "label!" in filters and any(labels_match(labels, [item])
                                       for item in filters["label!"]):
            continue
        sizes = {r["chain_id"]: r["size"] for r in images.layer_rows(image_id)}
        try:
            removed = engine.rmi([image_id], force=True)
        except NotFound:
            continue
        lines += removed
        reclaimed += sum(sizes.get(line[len("Deleted: "):], 0) for line in removed)
    return {"ImagesDeleted": _removal_records(lines) or None, "SpaceReclaimed": reclaimed}


# ------------------------------------------------------------------------------ streams
def _json_line(doc) -> bytes:
    """One line of a JSON stream as Go's encoder writes it: compact, ``<``, ``>`` and ``&``
    escaped (``" ---\\u003e 1a2b..."``)."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            + "\n").encode()


class _Stream:
    """A JSON-lines answer that starts with its first document (before it, an error is still an
    HTTP error, as Docker's is before its output is flushed); documents may come from any
    thread."""

    def __init__(self, request):
        self.request = request
        self.writer = None
        self.lock = threading.RLock()

    @property
    def started(self) -> bool:
        return self.writer is not None

    def send(self, doc) -> None:
        with self.lock:
            if self.writer is None:
                self.writer = self.request.start_stream("application/json")
            self.writer.write(_json_line(doc))

    def fail(self, error: BaseException, code: int | None = None) -> None:
        message = str(error) or type(error).__name__
        detail = {"message": message} if code is None else {"code": code, "message": message}
        self.send({"errorDetail": detail, "error": message})

    def close(self) -> None:
        with self.lock:
            if self.writer is None:
                self.writer = self.request.start_stream("application/json")
            self.writer.close()


def _run_streaming(stream: _Stream, work, code_of=lambda error: None) -> None:
    """``work()``; its error is an HTTP error if nothing was sent yet, else the stream's last
    line."""
    try:
        work()
    except (BrokenPipeError, ConnectionResetError):
        raise
    except (LaminaError, ApiError) as error:
        if not stream.started:
            raise
        stream.fail(error, code_of(error))
    except Exception as error:  # a bug or an OS error: still the client's line
        if not stream.started:
            raise
        import sys
        import traceback

        sys.stderr.write("".join(traceback.format_exception(error)))
        stream.fail(error)
    stream.close()


def _human(n: float) -> str:
    """go-units' HumanSize: decimal units, four significant digits (``1.069MB``)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.4g}{units[i]}"


def _bar(current: int, total: int) -> str:
    """The ``progress`` text of Docker's JSON progress: a 50-column bar and the numbers."""
    if total <= 0:
        return f"{_human(current):>8}"
    filled = min(50, int(current / total * 100) // 2)
    numbers = f"{_human(current):>8}" if current > total else \
        f"{_human(current):>8}/{_human(total)}"
    return f"[{'=' * filled}>{' ' * (50 - filled)}] {numbers}"


class _Progress:
    """lamina.transfer's progress calls (add, advance, status, message, close) as Docker's JSON
    progress lines. Layers show under ``names.get(key, key)``; ``messages(text)`` gets the
    transfer's free-text lines."""

    INTERVAL = 0.1  # seconds between two byte counts of one layer

    def __init__(self, send, messages, names: dict | None = None):
        self.send = send
        self.messages = messages
        self.names = names or {}
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.state: dict[str, str] = {}
        self.shown: dict[str, float] = {}

    def add(self, key: str, total: int, status: str) -> None:
        self.totals[key], self.done[key] = total, 0
        self.send({"status": status, "progressDetail": {}, "id": self.names.get(key, key)})

    def status(self, key: str, text: str) -> None:
        self.state[key] = text
        if text in ("Downloading", "Pushing"):
            return  # the first byte count says it, with the numbers, as Docker's
        self.send({"status": text, "progressDetail": {}, "id": self.names.get(key, key)})

    def advance(self, key: str, n: int) -> None:
        done = self.done[key] = self.done.get(key, 0) + n
        total = self.totals.get(key, 0)
        now = time.monotonic()
        if now - self.shown.get(key, 0.0) < self.INTERVAL and done < total:
            return
        self.shown[key] = now
        self.send({"status": self.state.get(key, "Downloading"),
                   "progressDetail": {"current": done, "total": total},
                   "progress": _bar(done, total), "id": self.names.get(key, key)})

    def message(self, text: str) -> None:
        self.messages(text)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ credentials
def _auth_header(request) -> dict | None:
    """The X-Registry-Auth header (base64url JSON: username, password, serveraddress,
    identitytoken), or None; an unreadable one is ignored, as Docker ignores it."""
    doc = _base64_json(request.headers.get("X-Registry-Auth") or "")
    return doc if isinstance(doc, dict) else None


def _base64_json(text: str):
    """A header's base64url (or plain base64) JSON document; None when it is not one."""
    import base64
    import binascii

    text = text.strip()
    if not text:
        return None
    padded = text + "=" * (-len(text) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return json.loads(decode(padded))
        except (ValueError, binascii.Error):
            continue
    return None


class _Credentials:
    """A client's registry credentials as an auth file of their own for one transfer (the
    transfer code reads credentials from a file, as after ``lamina login``), removed after it.
    Without credentials in the request, the server's own logins apply (authfile None)."""

    def __init__(self, engine, auth: dict | None, registry: str):
        self.path = None
        self.engine = engine
        self.auth = auth or {}
        self.registry = registry

    def __enter__(self) -> str | None:
        from ..transfer import auth as auth_files

        username = self.auth.get("username") or ""
        password = self.auth.get("password") or ""
        if not username and not password:  # an identitytoken alone: lamina has no OAuth flow
            return None
        ingest = self.engine.content.ingest
        self.path = os.path.join(ingest, f"{os.getpid()}-auth-{os.urandom(6).hex()}.json")
        auth_files.store(auth_files.server_key(self.registry), username, password, self.path)
        return self.path

    def __exit__(self, *exc) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


@route("POST", "/auth")
def login(request):
    """Check credentials against the registry as ``lamina login`` does (nothing is stored: the
    client keeps them and sends them with each pull and push)."""
    from ..transfer import auth

    doc = request.json({}) or {}
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid JSON in the request body")
    username, password = doc.get("username") or "", doc.get("password") or ""
    server = doc.get("serveraddress") or auth.DOCKER_HUB_KEY
    request.release_gate()  # the registry's time, not the interpreter's
    try:
        auth.check_login(auth.server_key(server), username, password)
    except FailedPrecondition as error:
        raise ApiError(401, str(error)) from None
    except Unavailable as error:
        raise ApiError(500, str(error)) from None
    return {"Status": "Login Succeeded", "IdentityToken": ""}


# ------------------------------------------------------------------------------ pull, import
def _platform(request) -> tuple[str, str, str | None]:
    text = request.arg("platform") or ""
    if not text:
        return ("linux", "amd64", None)
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ApiError(400, f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


@route("POST", "/images/create")
def create_image(request):
    if request.arg("fromImage"):
        return _pull(request)
    source = request.arg("fromSrc")
    if source is None:
        raise ApiError(400, "fromImage or fromSrc is required")
    if source != "-":
        raise ApiError(400, f"importing from a URL is not supported by lamina ({source}): send "
                            "the archive as the request body (fromSrc=-)")
    return _import(request)


def _pull_reference(request) -> str:
    image = request.arg("fromImage") or ""
    tag = request.arg("tag") or ""
    if image.endswith(":") and not tag:
        raise ApiError(400, "pulling every tag of a repository is not supported by lamina")
    image = image.rstrip(":")
    if tag:
        from ..reference import parse_reference

        try:
            ref = parse_reference(image)
        except InvalidArgument as error:
            raise ApiError(400, str(error)) from None
        image = f"{ref.name}@{tag}" if tag.startswith("sha256:") else f"{ref.name}:{tag}"
    return image


def _pull(request):
    from ..reference import parse_reference

    try:
        ref = parse_reference(_pull_reference(request))
    except InvalidArgument as error:
        raise ApiError(400, str(error)) from None
    if ref.name == "scratch":
        raise ApiError(403, "'scratch' is a reserved name")
    engine = request.engine
    platform = _platform(request)
    request.release_gate()  # the registry's time, not the interpreter's
    stream = _Stream(request)
    _run_streaming(stream, lambda: _pull_showing(engine, ref, platform, _auth_header(request),
                                                 stream))


def _pull_showing(engine, ref, platform, auth: dict | None, stream: _Stream) -> str:
    """Pull ``ref`` with Docker's progress lines on ``stream``; returns the image ID.

    Docker's first line comes once the manifest is found (a missing image is a 404), and an
    image that is up to date shows no layer lines. lamina's pull says neither, so the first line
    waits for the first layer's, and a pull of a name the store has holds its layer lines back
    until it knows (for a few seconds at most: then the pull is shown as it goes)."""
    old = None
    try:
        old = engine.image_store.by_digest(ref.digest) if ref.digest else \
            engine.image_store.resolve(ref.local_tag())
    except (NotFound, InvalidArgument):
        pass
    lock = threading.Lock()
    pending = [{"status": f"Pulling from {ref.repository}", "id": ref.tag or ref.digest}]
    held: list[dict] = []
    digest_line: list[dict] = []
    hold_until = time.monotonic() + (5.0 if old is not None else 0.0)

    def send(doc) -> None:
        with lock:
            if time.monotonic() < hold_until:
                held.append(doc)
                return
            for line in pending + held + [doc]:
                stream.send(line)
            pending.clear()
            held.clear()

    def messages(text: str) -> None:
        if text.startswith("Digest: "):
            digest_line.append({"status": text})

    with _Credentials(engine, auth, ref.registry) as authfile:
        try:
            image_id = engine.pull(str(ref), platform=platform, authfile=authfile,
                                   progress=_Progress(send, messages))
        except NotFound as error:
            raise NotFound(_pull_error(ref, str(error))) from None
        except Unavailable as error:
            raise ApiError(500, str(error)) from None
    with lock:
        for line in pending + (held if image_id != old else []) + digest_line:
            stream.send(line)
        verdict = "Downloaded newer image" if image_id != old else "Image is up to date"
        stream.send({"status": f"Status: {verdict} for {ref}"})
    return image_id


def _pull_error(ref, message: str) -> str:
    """lamina's ``manifest REPO:TAG: DETAIL`` as Docker words it: ``manifest for REF not
    found: DETAIL``."""
    if message.startswith("manifest "):
        detail = message.split(": ", 1)[1] if ": " in message else message
        return f"manifest for {ref} not found: {detail}"
    return message


def _parse_changes(changes: list[str]) -> list:
    """Dockerfile lines a commit or import applies to its config (Docker's change commands),
    as resolved instructions; 400 for anything else."""
    from ..builder.dockerfile import DockerfileError, parse

    allowed = {"cmd", "entrypoint", "healthcheck", "env", "expose", "label", "onbuild",
               "stopsignal", "user", "volume", "workdir"}
    lines = [c for c in changes if c.strip()]
    if not lines:
        return []
    try:
        df = parse("\n".join(lines) + "\n")
    except DockerfileError as error:
        raise ApiError(400, error.reason) from None
    for node in df.instructions:
        if node.cmd not in allowed:
            raise ApiError(400, f"{node.cmd} is not a valid change command")
    return df.instructions


def _apply_changes(config: dict, instructions: list) -> dict:
    """``config`` (Docker's container config of an image) with the change commands applied, as
    the legacy builder would apply them; variables are expanded with the config's Env."""
    import posixpath

    from ..builder.dockerfile import DockerfileError, parse, parse_duration
    from ..builder.plan import plan

    config = json.loads(json.dumps(config))
    cmd_set = False
    for node in instructions:  # one at a time: each sees the Env the ones before it set
        env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
        try:
            (stage,) = plan(parse(f"FROM base\n{node.original}\n"), {},
                            base_env=lambda _ref, env=env: env)
        except DockerfileError as error:
            raise ApiError(400, error.reason) from None
        ins = stage.instructions[0]
        args = list(ins.args)
        shell = config.get("Shell") or ["/bin/sh", "-c"]
        command = args if ins.json else list(shell) + [" ".join(args)]
        if ins.cmd == "cmd":
            config["Cmd"], cmd_set = command, True
        elif ins.cmd == "entrypoint":  # resets a CMD the changes did not set, as Docker's
            config["Entrypoint"] = command if (ins.json or args != [""]) else None
            if not cmd_set:
                config["Cmd"] = None
        elif ins.cmd in ("env", "label"):
            pairs = list(zip(args[0::2], args[1::2], strict=False))
            if ins.cmd == "env":
                merged = dict(e.partition("=")[::2] for e in config.get("Env") or [])
                merged.update(pairs)
                config["Env"] = [f"{k}={v}" for k, v in merged.items()]
            else:
                config["Labels"] = {**(config.get("Labels") or {}), **dict(pairs)}
        elif ins.cmd == "expose":
            ports = {}
            for word in args:
                number, _, proto = word.partition("/")
                ports[f"{number}/{(proto or 'tcp').lower()}"] = {}
            config["ExposedPorts"] = {**(config.get("ExposedPorts") or {}), **ports}
        elif ins.cmd == "volume":
            config["Volumes"] = {**(config.get("Volumes") or {}), **{v: {} for v in args}}
        elif ins.cmd == "onbuild":
            config["OnBuild"] = list(config.get("OnBuild") or []) + args[:1]
        elif ins.cmd in ("user", "stopsignal"):
            config["User" if ins.cmd == "user" else "StopSignal"] = args[0]
        elif ins.cmd == "workdir":
            config["WorkingDir"] = posixpath.join(config.get("WorkingDir") or "/", args[0])
        elif ins.cmd == "healthcheck":
            if args[0].upper() == "NONE":
                config["Healthcheck"] = {"Test": ["NONE"]}
                continue
            health = {"Test": (["CMD"] + args[1:]) if ins.json else ["CMD-SHELL", args[1]]}
            for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                              ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
                if isinstance(ins.flags.get(flag), str):
                    health[key] = round(parse_duration(ins.flags[flag]) * 1e9)
            if ins.flags.get("retries"):
                health["Retries"] = int(ins.flags["retries"])
            config["Healthcheck"] = health
    return config


def _with_config(engine, image_id: str, edit, tag: str | None) -> str:
    """The image ``image_id``'s layers again under a config ``edit(doc)`` changed, tagged
    ``tag``; ``image_id`` (which the caller made just now and nobody named) goes. Returns the new
    image's ID."""
    from ..image import dumps

    images = engine.image_store
    try:
        doc = json.loads(engine.content.read(image_id))
        edit(doc)
        manifest = json.loads(engine.content.read(images.row(image_id)["manifest_digest"]))
        layers = [(d["digest"], int(d["size"]), d["mediaType"]) for d in manifest["layers"]]
        new_id = engine.add_image(dumps(doc), layers, [tag] if tag else [])
    finally:
        engine.content.release_claims()
    if new_id != image_id:
        try:
            engine.rmi([image_id])
        except LaminaError:
            pass  # a tag or a container on it meanwhile: it stays, as any image would
    return new_id


def _image_config(config: dict) -> dict:
    """A container config reduced to what an image config holds (Docker's image config)."""
    return {k: config[k] for k in _IMAGE_CONFIG_KEYS if config.get(k) not in (None, "", [], {})}


def _import(request):
    from ..image import rfc3339

    changes = _parse_changes(request.query.get("changes", []))
    target = _tag_reference(request.arg("repo"), request.arg("tag"))
    message = request.arg("message") or "Imported from -"
    platform = _platform(request)
    if platform[:2] != ("linux", "amd64"):
        raise ApiError(400, f"lamina imports linux/amd64 images only, not {'/'.join(platform[:2])}")
    engine = request.engine
    request.release_gate()  # reading the body: the client's time
    first = engine.import_image(request.body_reader(), None, message)

    def edit(doc: dict) -> None:  # as Docker's import writes it: no created_by, the changes
        created = doc.get("created") or rfc3339()
        doc["config"] = _image_config(_apply_changes({}, changes))
        doc["history"] = [{"created": created, "comment": message}]
        doc["comment"] = message

    try:
        image_id = _with_config(engine, first, edit, target)
    except BaseException:
        try:
            engine.rmi([first])
        except LaminaError:
            pass
        raise
    request.send_stream([_json_line({"status": image_id})])


# ------------------------------------------------------------------------------ push
@route("POST", "/images/{name:.+}/push")
def push_image(request, name):
    from ..reference import parse_reference

    tag = request.arg("tag") or ""
    engine = request.engine
    try:
        ref = parse_reference(name)
    except InvalidArgument as error:
        raise ApiError(400, str(error)) from None
    if tag and not _TAG.match(tag):
        raise ApiError(400, "invalid tag format")
    if tag or ":" in name.rpartition("/")[2]:
        targets = [f"{ref.name}:{tag or ref.tag}"]
    else:  # no tag: every tag of the repository (docker push --all-tags)
        targets = sorted(t for row in engine.image_store.rows()
                         for t in map(_familiar, engine.image_store.tags(row["id"]))
                         if t.rpartition(":")[0] == ref.name)
    for target in targets or [ref.name]:
        try:
            engine.image_store.resolve(target)
        except (NotFound, InvalidArgument):
            raise NotFound(f"An image does not exist locally with the tag: {ref.name}") from None
    request.release_gate()  # the registry's time, not the interpreter's
    stream = _Stream(request)

    def messages(text: str) -> None:
        m = re.fullmatch(r"(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)", text)
        stream.send({"status": text})
        if m:
            stream.send({"progressDetail": {}, "aux": {"Tag": m.group(1), "Digest": m.group(2),
                                                       "Size": int(m.group(3))}})

    def work() -> None:
        with _Credentials(engine, _auth_header(request), ref.registry) as authfile:
            for target in targets:
                names = _layer_names(engine, target)
                try:
                    engine.push(target, authfile=authfile,
                                progress=_Progress(stream.send, messages, names))
                except Unavailable as error:
                    raise ApiError(500, str(error)) from None

    _run_streaming(stream, work)


def _layer_names(engine, name: str) -> dict[str, str]:
    """The progress key of each stored layer blob -> the key Docker shows (its diff ID's)."""
    from ..transfer.progress import layer_key

    images = engine.image_store
    image_id = images.resolve(name)
    try:
        manifest = json.loads(engine.content.read(images.row(image_id)["manifest_digest"]))
        diff_ids = images.config(image_id)["rootfs"]["diff_ids"]
        return {layer_key(d["digest"]): layer_key(diff_id)
                for d, diff_id in zip(manifest["layers"], diff_ids, strict=False)}
    except (LaminaError, ValueError, KeyError, TypeError):
        return {}


# ------------------------------------------------------------------------------ save, load
class _Chunks:
    """A binary file over a chunked answer: writes gathered into chunks of about 1 MiB."""

    SIZE = 1 << 20

    def __init__(self, writer):
        self.writer = writer
        self.buffer = bytearray()

    def write(self, data) -> int:
        self.buffer += data
        if len(self.buffer) >= self.SIZE:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.writer.write(bytes(self.buffer))
            self.buffer.clear()


def _save(request, names: list[str]):
    engine = request.engine
    if not names:
        raise ApiError(400, "no images to save: name at least one (names=...)")
    for name in names:
        _image_id(engine, name)
    writer = request.start_stream("application/x-tar")
    out = _Chunks(writer)
    engine.save(names, out, "docker-archive")
    out.flush()
    writer.close()  # only now: a save that fails leaves the body unfinished, never a short tar


@route("GET", "/images/{name:.+}/get")
def save_image(request, name):
    _save(request, [name])


@route("GET", "/images/get")
def save_images(request):
    names = [n for value in request.query.get("names", []) for n in value.split(",") if n]
    _save(request, names)


@route("POST", "/images/load")
def load_images(request):
    engine = request.engine
    stream = _Stream(request)
    request.release_gate()  # reading the body: the client's time

    def work() -> None:
        for line in engine.load(request.body_reader()):
            stream.send({"stream": line + "\n"})

    try:
        _run_streaming(stream, work)
    except (LaminaError, ApiError) as error:  # Docker answers 200 and the error line
        stream.fail(error)
        stream.close()


# ------------------------------------------------------------------------------ commit
def _merge_config(user: dict, container: dict) -> dict:
    """Docker's commit merge: what the client's config leaves unset comes from the container's."""
    out = dict(user)
    if not out.get("User"):
        out["User"] = container.get("User") or ""
    ports = dict(out.get("ExposedPorts") or {})
    for port in container.get("ExposedPorts") or {}:
        ports.setdefault(port, {})
    out["ExposedPorts"] = ports or None
    env = list(out.get("Env") or [])
    keys = {e.partition("=")[0] for e in env}
    env += [e for e in container.get("Env") or [] if e.partition("=")[0] not in keys]
    out["Env"] = env or None
    out["Labels"] = {**(container.get("Labels") or {}), **(out.get("Labels") or {})}
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = container.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = container.get("Entrypoint")
    if out.get("Healthcheck") is None and container.get("Healthcheck") is not None:
        out["Healthcheck"] = container["Healthcheck"]
    for key in ("WorkingDir", "StopSignal"):
        if not out.get(key):
            out[key] = container.get(key)
    out["Volumes"] = {**(container.get("Volumes") or {}), **(out.get("Volumes") or {})} or None
    return out


@route("POST", "/commit")
def commit(request):
    name = request.arg("container") or ""
    target = _tag_reference(request.arg("repo"), request.arg("tag"))
    changes = _parse_changes(request.query.get("changes", []))
    body = request.json(None)
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "invalid JSON in the request body: a container config is an object")
    engine = request.engine
    try:
        container = engine.inspect_container(name)
    except NotFound:
        raise NotFound(f"No such container: {name}") from None
    own = container.get("Config") or {}
    user = _apply_changes(body if body else own, changes)
    config = _image_config(_merge_config(user, own))
    request.release_gate()  # writing the layer: the disk's time
    first = engine.commit(container["Id"], None, request.arg("comment") or "",
                          request.arg("author") or "")

    def edit(doc: dict) -> None:  # as Docker's commit: the container, its config, its image
        doc["config"] = config
        doc["container"] = container["Id"]
        doc["container_config"] = own
        doc["parent"] = container["Image"]

    image_id = _with_config(engine, first, edit, target)
    request.send_json(201, {"Id": image_id})


# ------------------------------------------------------------------------------ build
class _BuildOutput:
    """The builder's lines and its RUN steps' output (two pipes, read by threads) as Docker's
    ``{"stream"}`` lines, in the order they happened: every read of a pipe and every line is
    sent under one lock, and a line first drains what the pipes hold."""

    def __init__(self, stream: _Stream):
        import fcntl

        self.stream = stream
        self.lock = threading.Lock()
        self.pipes = []
        self.write_fds = []
        for _ in range(2):
            r, w = os.pipe()
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
            self.pipes.append(r)
            self.write_fds.append(w)
        self.threads = [threading.Thread(target=self._follow, args=(i,), daemon=True,
                                         name="build-output") for i in range(2)]
        for thread in self.threads:
            thread.start()
        self.held: list[str] = []  # "Successfully ..." lines: they follow the aux ID line
        self.gone = False  # the client went away

    @property
    def stdout(self) -> int:
        return self.write_fds[0]

    @property
    def stderr(self) -> int:
        return self.write_fds[1]

    def _drain(self, i: int) -> bool:
        """Send what pipe ``i`` holds now; False at its end."""
        while True:
            try:
                data = os.read(self.pipes[i], 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            if self.gone:
                continue  # read all the same: a RUN must never block on a full pipe
            text = data.decode(errors="replace")
            try:
                self.stream.send({"stream": text if i == 0 else f"\x1b[91m{text}\x1b[0m"})
            except OSError:  # the client went away: the builder's next line fails, and stops
                self.gone = True

    def _follow(self, i: int) -> None:
        import select

        while True:
            try:
                select.select([self.pipes[i]], [], [])
            except (OSError, ValueError):  # closed under it: the request is over
                return
            with self.lock:
                if not self._drain(i):
                    return

    def line(self, text: str) -> None:
        with self.lock:
            for i in range(2):
                self._drain(i)
            if self.gone:
                raise BrokenPipeError("the client went away")
            if text.startswith("Successfully "):
                self.held.append(text)
                return
            if text.startswith("Step "):  # Docker sends the step and its newline apart
                self.stream.send({"stream": text})
                self.stream.send({"stream": "\n"})
            else:
                self.stream.send({"stream": text + "\n"})

    def stop(self) -> None:
        """The build is over: the pipes' last bytes are sent, the readers end."""
        for fd in self.write_fds:
            os.close(fd)
        self.write_fds = []
        for thread in self.threads:  # a RUN's process that outlived its step keeps a pipe open
            thread.join(30)

    def finish(self, image_id: str, aux: bool = True) -> None:
        """The image is built: its ID (``aux``) and the lines held back for it."""
        if aux:
            self.stream.send({"aux": {"ID": image_id}})
        for text in self.held:
            self.stream.send({"stream": text + "\n"})

    def close(self) -> None:
        self.stop()
        for fd in self.pipes:
            os.close(fd)
        self.pipes = []


def _build_options(request, context: str, dockerfile: bytes, output: _BuildOutput | None):
    from ..builder import BuildOptions

    def json_arg(name: str) -> dict:
        text = request.arg(name)
        if not text:
            return {}
        try:
            doc = json.loads(text)
        except ValueError:
            raise ApiError(400, f"invalid {name}: {text!r}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, f"invalid {name}: {text!r}")
        return doc

    build_args = {k: str(v) for k, v in json_arg("buildargs").items() if v is not None}
    labels = json_arg("labels")
    if labels:  # as Docker's legacy builder: one more LABEL step at the end
        line = " ".join(f"{json.dumps(str(k))}={json.dumps(str(v))}" for k, v in labels.items())
        dockerfile = dockerfile.rstrip(b"\n") + b"\nLABEL " + line.encode() + b"\n"
    network = request.arg("networkmode") or "default"
    if network not in ("default", "host", "none"):
        network = "default"  # bridge and the like: lamina has no networks of its own
    tags = [_tag_reference(tag, None) for tag in request.query.get("t", []) if tag]
    no_cache = request.flag("nocache")
    cache_from = request.arg("cachefrom")
    if cache_from and not no_cache:  # the cache is the store's; none of the images named: none
        try:
            names = json.loads(cache_from)
        except ValueError:
            raise ApiError(400, f"invalid cachefrom: {cache_from!r}") from None
        engine = request.engine
        no_cache = bool(names) and not any(_exists(engine, str(n)) for n in names)
    return BuildOptions(
        context=context, dockerfile=dockerfile, tags=tags, build_args=build_args,
        target=request.arg("target") or None, no_cache=no_cache,
        pull=request.flag("pull"), network=network, quiet=request.flag("q"),
        stdout=output.stdout if output else None, stderr=output.stderr if output else None,
        extra_hosts=_build_extra_hosts(request))


def _build_extra_hosts(request) -> tuple[str, ...]:
    """``extrahosts`` (repeated ``HOST:IP``, or comma-separated as older clients send them)."""
    from ..runtime.oci import parse_extra_host

    values = [v for item in request.query.get("extrahosts", []) for v in item.split(",") if v]
    return tuple(parse_extra_host(v) for v in values)


def _exists(engine, name: str) -> bool:
    try:
        _image_id(engine, name)
    except (NotFound, InvalidArgument):
        return False
    return True


def _extract_context(request, engine) -> str:
    """The request body (a tar, plain or compressed) extracted into a directory of the store's
    ``ingest/`` (named for this process: removed by recovery if the server dies)."""
    from ..layertar import apply_tar, open_layer_stream

    path = os.path.join(engine.content.ingest, f"{os.getpid()}-build-{os.urandom(6).hex()}")
    os.makedirs(path, mode=0o700)
    try:
        apply_tar(_Completed(open_layer_stream(request.body_reader())), path, "plain")
    except BaseException:
        _remove_tree(path)
        raise
    return path


class _Completed:
    """A tar stream ended as a tar ends: its last block filled up and two zero blocks after it.
    The docker CLI's context for ``build -f -`` stops right after its last member's data (Go's
    reader takes that; lamina's reader, strict for layers, would not)."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0
        self.tail: bytes | None = None

    def read(self, n: int = -1) -> bytes:
        if self.tail is None:
            data = self.stream.read(n)
            if data:
                self.count += len(data)
                return data
            self.tail = bytes(-self.count % 512 + 1024)
        want = len(self.tail) if n is None or n < 0 else n
        data, self.tail = self.tail[:want], self.tail[want:]
        return data


def _remove_tree(path: str) -> None:
    from ..fsutil import remove_tree

    try:
        remove_tree(path)
    except OSError:
        pass


def _dockerfile(context: str, name: str) -> bytes:
    path = os.path.normpath(os.path.join(context, name.lstrip("/")))
    if not (path + "/").startswith(context.rstrip("/") + "/"):
        raise ApiError(400, f"the Dockerfile ({name}) must be within the build context")
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ApiError(500, f"Cannot locate specified Dockerfile: {name}") from None


def _pull_bases(engine, options, stream: _Stream, configs: dict) -> None:
    """Pull each FROM image the store does not have (Docker's builder pulls them), showing
    the pull as a pull through the API does."""
    from ..builder.dockerfile import parse
    from ..builder.plan import plan
    from ..reference import parse_reference
    from ..transfer.auth import server_key

    try:
        stages = plan(parse(options.dockerfile), options.build_args, options.target)
    except InvalidArgument:
        return  # the build itself says what is wrong, in its words
    for stage in stages:
        if stage.base_stage is not None or stage.base.lower() == "scratch":
            continue
        try:
            _image_id(engine, stage.base)
            continue
        except (NotFound, InvalidArgument):
            pass
        try:
            ref = parse_reference(stage.base)
        except InvalidArgument:
            continue
        auth = next((v for k, v in configs.items() if server_key(k) == server_key(ref.registry)),
                    None)
        _pull_showing(engine, ref, ("linux", "amd64", None), auth, stream)


@route("POST", "/build")
def build(request):
    from ..builder import BuildError

    if request.arg("remote"):
        raise ApiError(400, "remote build contexts are not supported by lamina: send the "
                            "context as the request body")
    platform = request.arg("platform") or ""
    if platform and platform.split("/")[:2] != ["linux", "amd64"]:
        raise ApiError(400, f"lamina builds for linux/amd64 only, not {platform}")
    engine = request.engine
    request.release_gate()  # a build is the runtime's and the disk's time
    context = _extract_context(request, engine)
    stream = _Stream(request)
    output = None
    try:
        # the first value, as Go's FormValue (docker-py sends a Dockerfile from outside the
        # context as two: its name in the context, then its text)
        dockerfile = _dockerfile(context, (request.query.get("dockerfile") or [""])[0]
                                 or "Dockerfile")
        output = _BuildOutput(stream)
        options = _build_options(request, context, dockerfile, output)
        configs = _registry_configs(request.headers.get("X-Registry-Config") or "")

        def work() -> None:
            _pull_bases(engine, options, stream, configs)
            try:
                image_id = engine.build(options, out=output.line)
            finally:
                output.stop()
            output.finish(image_id, aux=not options.quiet)
            if options.quiet:
                stream.send({"stream": image_id + "\n"})

        def code_of(error):
            if isinstance(error, BuildError) and getattr(error, "exit_code", 1) != 1:
                return error.exit_code
            return None

        _run_streaming(stream, _without_step(work), code_of)
    finally:
        if output is not None:
            output.close()
        _remove_tree(context)


@route("POST", "/build/prune")
def prune_build_cache(request):
    """The build cache: lamina's intermediate build states that nothing uses or names."""
    engine = request.engine
    images = engine.image_store
    unused = set(images.unused(dangling_only=True))
    deleted: list[str] = []
    reclaimed = 0
    for image_id in sorted(images.build_states() & unused):
        sizes = {r["chain_id"]: r["size"] for r in images.layer_rows(image_id)}
        try:
            removed = engine.rmi([image_id])
        except (NotFound, FailedPrecondition):
            continue  # removed, named or used meanwhile
        deleted.append(image_id[7:])
        reclaimed += sum(sizes.get(line[len("Deleted: "):], 0) for line in removed)
    from ..cachemounts import prune_caches

    reclaimed += prune_caches(engine.root)[1]  # RUN --mount=type=cache directories
    return {"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _without_step(work):
    """Docker's build errors do not name the step (the stream has just said it)."""
    from ..builder import BuildError

    def run() -> None:
        try:
            work()
        except BuildError as error:
            message = re.sub(r"^Step \d+/\d+ : ", "", str(error))
            if message != str(error):
                raise BuildError(message, error.exit_code) from None
            raise

    return run


def _registry_configs(header: str) -> dict:
    """The X-Registry-Config header: {server: {username, password, ...}} (base64url JSON)."""
    doc = _base64_json(header)
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, dict) and v.get("username")}


# ------------------------------------------------------------------------------ distribution
@route("GET", "/distribution/{name:.+}/json")
def distribution(request, name):
    """What a registry has under ``name``: the manifest's descriptor and its platforms."""
    from ..reference import parse_reference
    from ..transfer import auth as auth_files
    from ..transfer.http import Client

    try:
        ref = parse_reference(name)
    except InvalidArgument as error:
        raise ApiError(400, str(error)) from None
    engine = request.engine
    request.release_gate()
    with _Credentials(engine, _auth_header(request), ref.registry) as authfile:
        credentials = auth_files.lookup(ref.registry, authfile)
    repo = ref.repository
    try:
        with Client(ref.api_host, [f"repository:{repo}:pull"], credentials) as client:
            body, media, digest = client.get_manifest(repo, ref.digest or ref.tag)
            doc = json.loads(body)
            if "manifests" in doc:
                platforms = [m["platform"] for m in doc["manifests"]
                             if isinstance(m, dict) and isinstance(m.get("platform"), dict)]
            else:
                resp = client.send("GET", f"/v2/{repo}/blobs/{doc['config']['digest']}")
                try:
                    config = json.loads(resp.read())
                finally:
                    resp.close()
                platforms = [{k: config[k] for k in ("architecture", "os", "os.version",
                                                     "variant") if config.get(k)}]
    except Unavailable as error:
        raise ApiError(500, str(error)) from None
    except (ValueError, KeyError, TypeError):
        raise ApiError(500, f"malformed manifest for {ref}") from None
    return {"Descriptor": {"mediaType": media, "digest": digest, "size": len(body)},
            "Platforms": platforms}
