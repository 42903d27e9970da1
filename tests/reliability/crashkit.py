"""Tools for the reliability harnesses: run the real ``lamina`` command, kill it, fingerprint a
store byte for byte, and make test inputs in a temporary directory.

A store's fingerprint is read straight from its SQLite file and its directories (no Engine, so
no recovery runs while we look): every tag, image (manifest, config and their blob bytes), layer
(blob bytes and the full tree of its snapshot: names, types, modes, owners, sizes, mtimes, xattrs,
link targets, file contents) and container (its writable layer's tree). Comparing the
fingerprints taken before and after a killed command shows whether anything committed before the
kill was touched.
"""

import hashlib
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time

LONG = bool(os.environ.get("LAMINA_LONG"))


def lamina_cmd(root: str, driver: str | None, *args) -> list[str]:
    cmd = [sys.executable, "-m", "lamina", "--root", root]
    if driver:
        cmd += ["--driver", driver]
    return cmd + [str(a) for a in args]


def run(root, driver, *args, check=True, input=None, env=None, timeout=300):
    proc = subprocess.run(lamina_cmd(root, driver, *args), capture_output=True, input=input,
                          env=env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lamina {' '.join(map(str, args))} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def run_and_kill(root, driver, args, delay: float, stdin=None) -> tuple[bool, int]:
    """Start ``lamina ARGS``, SIGKILL it after ``delay`` seconds; (killed?, returncode)."""
    proc = subprocess.Popen(lamina_cmd(root, driver, *args), stdin=stdin or subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if not killed and proc.returncode != 0:
        raise AssertionError(f"lamina {' '.join(map(str, args))} failed on its own "
                             f"({proc.returncode}): {err}")
    return killed, proc.returncode


def timed(root, driver, *args, **kw) -> float:
    started = time.monotonic()
    run(root, driver, *args, **kw)
    return time.monotonic() - started


# ---------------------------------------------------------------------------- fingerprints


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def tree_hash(top: str) -> str:
    """A hash of everything in the tree ``top``: paths, types, modes, owners, sizes, mtimes of
    non-directories, xattrs, link targets, device numbers and file contents."""
    h = hashlib.sha256()
    if not os.path.isdir(top):
        return "missing"
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            fields = [rel, oct(st.st_mode), st.st_uid, st.st_gid]
            if not os.path.isdir(path) or os.path.islink(path):
                fields += [st.st_size, st.st_mtime_ns, st.st_nlink]
            try:
                fields.append(sorted((k, os.getxattr(path, k, follow_symlinks=False))
                                     for k in os.listxattr(path, follow_symlinks=False)))
            except OSError:
                pass
            if os.path.islink(path):
                fields.append(os.readlink(path))
            elif os.path.isfile(path):
                fields.append(_file_hash(path))
            elif not os.path.isdir(path):
                fields.append(st.st_rdev)
            h.update(repr(fields).encode() + b"\n")
    return h.hexdigest()


def _blob(root: str, digest: str) -> str:
    path = os.path.join(root, "blobs", "sha256", digest.split(":", 1)[-1])
    return _file_hash(path) if os.path.exists(path) else "missing"


def fingerprint(root: str) -> dict:
    """{("tag", name) | ("image", id) | ("layer", chain) | ("container", id): value}."""
    db = sqlite3.connect(f"file:{os.path.join(root, 'lamina.db')}?mode=ro", uri=True, timeout=60)
    db.row_factory = sqlite3.Row
    try:
        driver = db.execute("SELECT value FROM settings WHERE key = 'driver'").fetchone()[0]
        dirs = {}
        for r in db.execute("SELECT key, id FROM snapshots"):
            if driver == "overlay2":
                dirs[r["key"]] = os.path.join(root, "overlay2", r["id"], "diff")
            else:
                dirs[r["key"]] = os.path.join(root, driver, "dir", r["id"])
        out = {}
        for r in db.execute("SELECT name, image_id FROM tags"):
            out[("tag", r["name"])] = r["image_id"]
        for r in db.execute("SELECT * FROM images"):
            chains = [c[0] for c in db.execute(
                "SELECT chain_id FROM image_layers WHERE image_id = ? ORDER BY position",
                (r["id"],))]
            out[("image", r["id"])] = (r["manifest_digest"], _blob(root, r["manifest_digest"]),
                                       _blob(root, r["id"]), tuple(chains), r["size"])
        for r in db.execute("SELECT * FROM layers"):
            out[("layer", r["chain_id"])] = (r["blob_digest"], _blob(root, r["blob_digest"]),
                                             r["size"], tree_hash(dirs.get(r["chain_id"], "")))
        for r in db.execute("SELECT id, name, image_id FROM containers"):
            out[("container", r["id"])] = (r["name"], r["image_id"],
                                           tree_hash(dirs.get(r["id"], "")))
        for r in db.execute("SELECT name FROM volumes"):
            out[("volume", r["name"])] = tree_hash(os.path.join(root, "volumes", r["name"],
                                                                "_data"))
        return out
    finally:
        db.close()


def compare(before: dict, after: dict, may_go=lambda key: False) -> list[str]:
    """What changed from ``before`` to ``after`` that should not have: anything altered, or gone
    unless ``may_go(key)`` allows it. New objects are the business of ``system check``."""
    problems = []
    for key, value in before.items():
        if key not in after:
            if not may_go(key):
                problems.append(f"{key} is gone")
        elif after[key] != value:
            problems.append(f"{key} changed: {value} -> {after[key]}")
    return problems


def store_mounts(root: str) -> list[str]:
    """Mount points under the store ``root`` in this mount namespace (/proc/self/mountinfo)."""
    real = os.path.realpath(root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(real)]


def orphan_volume_dirs(root: str) -> list[str]:
    """Directories under ``volumes/`` that have no volume row."""
    db = sqlite3.connect(f"file:{os.path.join(root, 'lamina.db')}?mode=ro", uri=True, timeout=60)
    try:
        rows = {r[0] for r in db.execute("SELECT name FROM volumes")}
    finally:
        db.close()
    try:
        names = os.listdir(os.path.join(root, "volumes"))
    except FileNotFoundError:
        return []
    return sorted(set(names) - rows)


def check_clean(root: str, driver: str | None) -> None:
    proc = run(root, driver, "system", "check", check=False)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0 and out.strip() == "No problems found", \
        f"system check found problems:\n{out}"


def leftovers(root: str) -> list[str]:
    """What a finished command should not leave in the store and ``system check`` may not look
    for: anything in ``ingest/`` (only live processes have files there), temporary files beside
    ``index.json``, a directory under ``containers/`` or ``mounts/`` without its container, one
    under ``volumes/`` without its volume. Read without an Engine (no recovery runs)."""
    db = sqlite3.connect(f"file:{os.path.join(root, 'lamina.db')}?mode=ro", uri=True, timeout=60)
    try:
        ids = {r[0] for r in db.execute("SELECT id FROM containers")}
    finally:
        db.close()
    found = [f"ingest/{n}" for n in _names(os.path.join(root, "ingest"))]
    found += [n for n in _names(root) if ".tmp" in n]
    for sub in ("containers", "mounts"):
        found += [f"{sub}/{n}" for n in _names(os.path.join(root, sub)) if n not in ids]
    return found + [f"volumes/{n}" for n in orphan_volume_dirs(root)]


def _names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------- inputs


def make_tree_tar(path: str, files: int, size: int, seed: int, extra: bytes = b"") -> str:
    """A layer tar of ``files`` regular files of ``size`` random bytes in a few directories,
    plus one unique file holding ``extra`` (so two tars with different ``extra`` differ)."""
    rnd = random.Random(seed)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(max(1, files // 200)):
            info = tarfile.TarInfo(f"d{d}")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for i in range(files):
            data = rnd.randbytes(size)
            info = tarfile.TarInfo(f"d{i % max(1, files // 200)}/f{i}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_600_000_000 + i
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("unique")
        info.size = len(extra)
        tar.addfile(info, io.BytesIO(extra))
    return path


def write_files(top: str, count: int, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    os.makedirs(os.path.join(top, "data"), exist_ok=True)
    for i in range(count):
        with open(os.path.join(top, "data", f"w{seed}-{i}"), "wb") as f:
            f.write(rnd.randbytes(size))
