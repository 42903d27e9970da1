"""Engine API: a container's files and what runs in it, beside the lifecycle of
:mod:`lamina.api.containers`: changes, export, archive (HEAD, GET, PUT: ``docker cp``), rename,
prune, top, resize and stats.

The files are the container's merged root, in any state (created, running, exited), opened by
:meth:`lamina.containers.ContainerStore.files`: every path is resolved inside that root
(:class:`lamina.copy.RootedFS`), so a symlink in the container never leads a read or a write
outside it. Tars are written by :class:`lamina.layertar.TarWriter` and read by
:class:`lamina.layertar.TarMembers`, as the CLI's ``cp``, ``export`` and ``import`` do.

A path at or under the destination of one of the container's volumes or bind mounts is read
from and written to that volume's directory, as a container sees it, whatever its state
(:meth:`lamina.containers.ContainerStore.files_at`). What still differs from Docker Engine: a
tar of a directory that holds a mount point does not descend into the volume mounted there.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..events import labels_match
from .server import ApiError, route

CHANGE_KINDS = {"C": 0, "A": 1, "D": 2}  # Docker's ChangeType: modified, added, deleted
PRUNE_FILTERS = ("label", "label!", "until")


def docker_bool(request, name: str) -> bool:
    """A boolean query parameter as Docker's ``httputils.BoolValue`` reads it: anything but
    empty, ``0``, ``no``, ``false`` and ``none`` is true."""
    value = (request.arg(name) or "").strip().lower()
    return value not in ("", "0", "no", "false", "none")


def _running_row(containers, name: str):
    """The container's row, a dead owner's state settled, waiting a little for one being
    started; FailedPrecondition (409) as Docker words it when it is not running."""
    from ..runtime.ownership import refresh, wait_past_start

    row = wait_past_start(containers, refresh(containers, containers.get(name)))
    if row["state"] != "running" or not row["pid"]:
        raise FailedPrecondition(f"Container {row['id']} is not running")
    return row


class _Buffered:
    """A binary file over a chunked response: small writes (tar headers) gathered into chunks
    of :data:`CHUNK` bytes, so a tar does not go out 512 bytes at a time."""

    CHUNK = 256 << 10

    def __init__(self, writer):
        self.writer = writer
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        if self.size >= self.CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.parts:
            self.writer.write(b"".join(self.parts))
            self.parts, self.size = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


# ----------------------------------------------------------------------------- changes, export
@route("GET", "/containers/{id}/changes")
def changes(request, id):
    """Docker's changes of the writable layer (``null`` when there are none, as Docker)."""
    found = request.engine.diff(id)
    request.send_json(200, [{"Path": c.path, "Kind": CHANGE_KINDS[c.kind]} for c in found] or None)


@route("GET", "/containers/{id}/export")
def export(request, id):
    """The container's flattened root as a tar (Docker sends it as application/octet-stream)."""
    engine = request.engine
    engine.container_store.get(id)  # a 404 before the 200
    out = _Buffered(request.start_stream("application/octet-stream"))
    engine.export(id, out)
    out.close()


# ----------------------------------------------------------------------------- archive
def _archive_path(request) -> str:
    path = request.arg("path") or ""
    if not path:
        raise ApiError(400, "bad parameter: pathcannot be empty")  # sic: Docker's words
    return path


def go_file_mode(mode: int) -> int:
    """``st_mode`` as Go's ``os.FileMode`` bits (what Docker's path stat reports): the
    permission bits, the type as Go's flags (ModeDir 1<<31, ModeSymlink 1<<27, ModeDevice
    1<<26, ModeNamedPipe 1<<25, ModeSocket 1<<24, ModeCharDevice 1<<21), and setuid 1<<23,
    setgid 1<<22, sticky 1<<20."""
    bits = stat.S_IMODE(mode) & 0o777
    kind = stat.S_IFMT(mode)
    bits |= {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFBLK: 1 << 26,
             stat.S_IFCHR: (1 << 26) | (1 << 21), stat.S_IFIFO: 1 << 25,
             stat.S_IFSOCK: 1 << 24}.get(kind, 0)
    for flag, go_flag in ((stat.S_ISUID, 1 << 23), (stat.S_ISGID, 1 << 22),
                          (stat.S_ISVTX, 1 << 20)):
        if mode & flag:
            bits |= go_flag
    return bits


def go_time(ns: int) -> str:
    """Nanoseconds since the epoch as Go marshals a UTC ``time.Time`` (RFC 3339, the fraction's
    trailing zeros dropped)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def go_json(doc) -> str:
    """JSON as Go's encoder writes it: compact, UTF-8, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def path_stat_header(name: str, st: os.stat_result, link_target: str) -> str:
    """The ``X-Docker-Container-Path-Stat`` header: base64 of the path's stat as JSON."""
    doc = {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
           "mtime": go_time(st.st_mtime_ns), "linkTarget": link_target}
    return base64.b64encode(go_json(doc).encode()).decode()


def _stat(fs, path: str, container: str, follow: bool = False, shown: str | None = None):
    """(stat, link target) of ``path`` (lamina.copy.archive_stat, or the target's with
    ``follow``); 404 as Docker words it when there is nothing there (naming ``shown``, the
    path the client asked for), 500 with the system's error (Go's words) otherwise."""
    from .. import copy

    absolute, _ = copy.archive_path(path)
    try:
        if follow:
            return fs.stat(absolute, follow_symlinks=True), ""
        return copy.archive_stat(fs, path)
    except FileNotFoundError:
        raise NotFound(f"Could not find the file {shown or path} in container "
                       f"{container}") from None
    except OSError as error:
        reason = (error.strerror or str(error))
        raise ApiError(500, f"{'stat' if follow else 'lstat'} {absolute}: "
                            f"{reason[:1].lower()}{reason[1:]}") from None


@route("GET", "/containers/{id}/archive")
def get_archive(request, id):
    """HEAD: the path's stat in ``X-Docker-Container-Path-Stat``. GET: that and a tar of the
    path (a directory as its tree under its base name: lamina.copy.write_archive)."""
    from .. import copy

    asked = _archive_path(request)
    out = None
    with request.engine.container_store.files_at(id, asked) as (_, fs, path, name, _):
        st, target = _stat(fs, path, id, shown=asked)
        headers = {"X-Docker-Container-Path-Stat": path_stat_header(name, st, target)}
        if request.method != "HEAD":
            out = _Buffered(request.start_stream("application/x-tar", headers=headers))
            try:
                copy.write_archive(fs, path, out, name=name)
            except OSError as error:
                raise copy.os_error(error) from None  # mid-stream: the client sees the tar cut
            out.flush()
    # the answer ends once the root is given back: a client's next call finds it as it was
    if out is None:
        request.send_empty(200, headers)
    else:
        out.close()


@route("PUT", "/containers/{id}/archive")
def put_archive(request, id):
    """Extract the request's tar (plain, gzip, bzip2, xz or zstd) into the directory ``path``
    (symlinks resolved inside the container): lamina.copy.extract_archive's rules. 404 if the
    directory is missing, 400 if it is not a directory or the container's root is read-only."""
    from .. import copy
    from ..layertar import TarMembers, open_layer_stream

    asked = _archive_path(request)
    keep_kinds = docker_bool(request, "noOverwriteDirNonDir")
    with request.engine.container_store.files_at(id, asked) as (row, fs, path, _, mounted_on):
        st, _ = _stat(fs, path, id, follow=True, shown=asked)
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument("extraction point is not a directory")
        directory = fs.realpath(copy.archive_path(path)[0])
        run = json.loads(row["run_config"] or "{}")
        _check_writable(run, (mounted_on + directory).rstrip("/") or "/")
        owner = _container_user(request, row, fs, run) if docker_bool(request, "copyUIDGID") \
            else None
        try:
            members = TarMembers(open_layer_stream(request.body_reader()))
            copy.extract_archive(fs, directory, members, owner, keep_kinds)
        except OSError as error:
            raise copy.os_error(error) from None
        except InvalidArgument as error:  # not a tar, or a broken one: Docker's 500
            raise ApiError(500, f"Error processing tar file: {error}") from None
    request.send_empty(200)


def _check_writable(run: dict, directory: str) -> None:
    """Docker's rule: under a volume, the volume must be writable; elsewhere the root must (a
    500 with Docker's words either way: plain errors in its daemon)."""
    best = None
    for _, destination, read_only in run.get("volumes", ()):
        dest = destination.rstrip("/") or "/"
        under = directory == dest or directory.startswith(dest.rstrip("/") + "/")
        if under and (best is None or len(dest) > len(best[0])):
            best = (dest, read_only)
    if best is not None:
        if best[1]:
            raise ApiError(500, "mounted volume is marked read-only")
        return
    if run.get("read_only"):
        raise ApiError(500, "container rootfs is marked read-only")


def _container_user(request, row, fs, run: dict):
    """``copyUIDGID``: the (uid, gid) of the container's user, looked up in its own
    /etc/passwd; None (the tar's owners) when it has none, as Docker."""
    from ..copy import RootedFS
    from ..runtime.users import resolve_user

    image = request.engine.container_store.images.config(row["image_id"]).get("config") or {}
    user = run.get("user") or image.get("User") or ""
    if not user or not isinstance(fs, RootedFS):
        return None
    found = resolve_user(fs.root, user)
    return found.uid, found.gid


# ----------------------------------------------------------------------------- rename, prune
@route("POST", "/containers/{id}/rename")
def rename(request, id):
    request.engine.container_store.rename(id, request.arg("name") or "")


def prune_filter(engine, filters: dict[str, list[str]]):
    """The containers ``POST /containers/prune`` may remove, as a predicate on ``ps`` rows
    (``until``: created before; ``label``: every one of them matches; ``label!``: not every
    one of them matches); None when nothing is filtered."""
    for key in filters:
        if key not in PRUNE_FILTERS:
            raise ApiError(400, f"invalid filter '{key}'")
    until = None
    if filters.get("until"):
        if len(filters["until"]) > 1:
            raise ApiError(400, "more than one until filter specified")
        until = parse_until(filters["until"][0])
    wanted, unwanted = filters.get("label") or [], filters.get("label!") or []
    if until is None and not wanted and not unwanted:
        return None
    images = engine.container_store.images
    image_labels: dict[str, dict] = {}

    def labels_of(row) -> dict:
        if row["ImageID"] not in image_labels:
            config = images.config(row["ImageID"]).get("config") or {}
            image_labels[row["ImageID"]] = config.get("Labels") or {}
        run = json.loads(row.get("RunConfig") or "{}")
        return {**image_labels[row["ImageID"]], **dict(run.get("labels") or ())}

    def accepts(row) -> bool:
        if until is not None and row["Created"] > until:
            return False
        if not wanted and not unwanted:
            return True
        labels = labels_of(row)
        if not labels_match(labels, wanted):
            return False
        return not (unwanted and labels_match(labels, unwanted))

    return accepts


def parse_until(value: str) -> float:
    """An ``until`` filter as Docker reads it: a Go duration back from now (``10m``, ``1h30m``),
    Unix seconds (``1700000000.5``), or an RFC 3339 time or date (UTC when no zone is given)."""
    import calendar
    import re

    from ..builder.dockerfile import parse_duration
    from ..image import parse_rfc3339

    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        return parse_rfc3339(value)
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?)?", value)
    if m:
        numbers = [int(g or 0) for g in m.groups()[:6]]
        return calendar.timegm((*numbers, 0, 0, 0)) + float(m.group(7) or 0)
    raise ApiError(400, "invalid value for 'until' filter: failed to parse value as time or "
                        f"duration: {json.dumps(value)}")


@route("POST", "/containers/prune")
def prune(request):
    engine = request.engine
    only = prune_filter(engine, request.filters())
    removed, size = engine.prune_containers(only)
    return {"ContainersDeleted": removed or None, "SpaceReclaimed": size}


# ----------------------------------------------------------------------------- top, resize
def _check_ps_args(ps_args: str) -> None:
    """Refuse a ``-o`` field renamed to a header starting with PID unless it is the pid field:
    the processes are picked out of ps's output by its PID column."""
    import re

    for field, header in re.findall(r"\s+([^\s]*)=\s*(PID[^\s]*)", ps_args):
        if field != "pid":
            raise ApiError(500, f'specifying "{field}={header}" is not allowed')


def container_pids(containers, row) -> set[int]:
    """The processes of a running container (its init and its execs): the runtime's ``ps``,
    which reads the container's cgroup."""
    import subprocess

    from ..runtime.oci import RunConfig, Runtime

    runtime = Runtime(containers.store.root, RunConfig.from_json(row["run_config"]).runtime)
    proc = subprocess.run(runtime.command("ps", "--format", "json", row["id"]),
                          capture_output=True, check=False, stdin=subprocess.DEVNULL)
    try:
        pids = json.loads(proc.stdout or b"null") if proc.returncode == 0 else None
    except ValueError:
        pids = None
    if not isinstance(pids, list):
        return {row["pid"]}  # the runtime forgot it meanwhile: its init is all we know
    return {int(p) for p in pids}


def ps_table(output: str, pids: set[int]) -> dict:
    """``ps`` output as Docker's top answer: the header's words as Titles, the lines of
    ``pids`` (and the thread lines after them) as Processes, the last column with its spaces."""
    lines = output.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise ApiError(500, "Couldn't find PID field in ps output")
    column = titles.index("PID")
    processes, keep_threads = [], False
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= column:
            continue
        if fields[column] == "-":  # a thread of the process above (ps -L, -T, m)
            if keep_threads:
                processes.append(_row(fields, len(titles)))
            continue
        try:
            pid = int(fields[column])
        except ValueError:
            raise ApiError(500, f"Unexpected pid '{fields[column]}'") from None
        keep_threads = pid in pids
        if keep_threads:
            processes.append(_row(fields, len(titles)))
    return {"Processes": processes, "Titles": titles}


def _row(fields: list[str], width: int) -> list[str]:
    return fields[:width - 1] + [" ".join(fields[width - 1:])]


@route("GET", "/containers/{id}/top")
def top(request, id):
    """The container's processes as the host's ``ps`` shows them (``ps_args``, default
    ``-ef``), as Docker does: ps is run on the host, its lines kept for the container's pids."""
    import subprocess

    ps_args = request.arg("ps_args") or "-ef"
    _check_ps_args(ps_args)
    containers = request.engine.container_store
    row = _running_row(containers, id)
    pids = container_pids(containers, row)
    args = ps_args.split(" ")
    request.release_gate()
    proc = subprocess.run(["ps", *args, "-q", ",".join(str(p) for p in sorted(pids))],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:  # some options (f) do not go with -q: all processes, then filtered
        proc = subprocess.run(["ps", *args], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            first = (proc.stderr.splitlines() or [f"exit status {proc.returncode}"])[0]
            raise ApiError(500, f"ps: {first}")
    return ps_table(proc.stdout, pids)


@route("POST", "/containers/{id}/resize")
def resize(request, id):
    """Set the size of a running container's terminal; a container without one answers 200
    and nothing changes, as Docker."""
    from ..runtime.console import set_terminal_size

    height, width = request.atoi("h"), request.atoi("w")
    containers = request.engine.container_store
    row = _running_row(containers, id)
    if json.loads(row["run_config"] or "{}").get("tty"):
        set_terminal_size(row["pid"], height, width)
    request.send_empty(200)



# ----------------------------------------------------------------------------- stats
NEVER = "0001-01-01T00:00:00Z"  # Go's zero time, what Docker sends for "no sample"


def stats_sample(containers, row, previous: dict | None) -> dict:
    """One ``GET /containers/{id}/stats`` document for the container ``row``, read from the
    cgroup of its process (v1 or v2, whatever this host has); ``previous`` is the sample before
    it (its CPU becomes ``precpu_stats``). A container that does not run gets Docker's zeros."""
    from ..runtime import cgroups

    doc = {"read": NEVER, "preread": NEVER, "pids_stats": {}, "blkio_stats":
           dict.fromkeys(cgroups.BLKIO_KEYS), "num_procs": 0, "storage_stats": {},
           "cpu_stats": cgroups.zero_cpu(), "precpu_stats": cgroups.zero_cpu(),
           "memory_stats": {}, "name": "/" + row["name"], "id": row["id"]}
    dirs = (cgroups.running_dirs(containers.store.root, row["id"], row["pid"])
            if row["state"] == "running" and row["pid"] else {})
    if not dirs:
        return doc
    from ..runtime.control import interfaces

    doc.update(read=go_time(time.time_ns()), **cgroups.usage(dirs))
    if json.loads(row["run_config"] or "{}").get("network") != "host":
        doc["networks"] = interfaces(row["pid"])
    if previous is not None and previous["read"] != NEVER:
        doc["preread"], doc["precpu_stats"] = previous["read"], previous["cpu_stats"]
    return doc


@route("GET", "/containers/{id}/stats")
def stats(request, id):
    """Resource use from the container's cgroup: one document (``stream=false``: two samples a
    second apart, so that a CPU share can be computed, unless ``one-shot``) or one a second
    while it runs (``stream=true``, the default)."""
    from ..runtime.ownership import refresh

    containers = request.engine.container_store
    row = refresh(containers, containers.get(id))
    stream = request.arg("stream") is None or docker_bool(request, "stream")
    if not stream:
        first = stats_sample(containers, row, None)
        if docker_bool(request, "one-shot") or first["read"] == NEVER:
            return first
        request.release_gate()
        time.sleep(1)
        return stats_sample(containers, row, first)
    writer = request.start_stream()
    previous = None
    try:
        while True:
            previous = stats_sample(containers, row, previous)
            writer.json(previous)
            if previous["read"] == NEVER:
                break
            time.sleep(1)
            row = refresh(containers, containers.get(row["id"]))
    except (NotFound, OSError):
        pass  # removed, or the client went away
    writer.close()
