"""``lamina build --output``: the final stage's files written out, instead of an image.

``type=local,dest=DIR`` writes them into DIR (made if missing; files there are replaced),
``type=tar,dest=FILE`` (``-`` for stdout) as one tar; ``type=oci|docker,dest=FILE`` write the
image as an OCI or docker archive (``lamina load`` and ``docker load`` read them). The files are the image's merged layers
(whiteouts applied), read straight from the layer directories: no container, so none of a
container's placeholders (``/etc/hosts``...) are added, as BuildKit's exporters do.
"""

from __future__ import annotations

import os
import shutil
import stat

from lamina.errors import InvalidArgument

from .copy import tree_walk
from .tree import LayerTree

__all__ = ["parse_output", "write_output"]


def parse_output(text: str) -> tuple[str, str]:
    """``type=local|tar|oci|docker,dest=PATH`` or a bare ``DIR`` -> (type, dest)."""
    if "=" not in text:
        return ("local", text) if text != "-" else ("tar", "-")
    fields = {}
    for field in text.split(","):
        key, eq, value = field.partition("=")
        if not eq:
            raise InvalidArgument(f"invalid output {text!r}: {field!r} is not KEY=VALUE")
        fields[key.strip()] = value
    kind = fields.pop("type", "local")
    dest = fields.pop("dest", "")
    if kind not in ("local", "tar", "oci", "docker"):
        raise InvalidArgument(f"output type {kind!r} is not supported (local, tar, oci or "
                              "docker)")
    if fields:
        raise InvalidArgument(f"invalid output {text!r}: unknown key {sorted(fields)[0]!r}")
    if not dest:
        raise InvalidArgument(f"output {kind} needs dest=")
    return kind, dest


def write_output(tree: LayerTree, kind: str, dest: str) -> None:
    """Write the files of the merged ``tree`` to ``dest`` as ``kind`` (see the module)."""
    if kind == "tar":
        from lamina.layertar import TarWriter

        if dest == "-":
            import sys

            out = sys.stdout.buffer
            _write_tar(TarWriter(out), tree)
            out.flush()
            return
        with open(dest, "wb") as out:
            _write_tar(TarWriter(out), tree)
        return
    os.makedirs(dest, exist_ok=True)
    dirs = []
    for below, host, st in tree_walk(tree, "/"):
        target = os.path.join(dest, below)
        mode = st.st_mode
        if os.path.lexists(target) and not (stat.S_ISDIR(mode) and os.path.isdir(target)
                                            and not os.path.islink(target)):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if stat.S_ISDIR(mode):
            os.makedirs(target, exist_ok=True)
            dirs.append((target, st))
            continue
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(host), target)
        elif stat.S_ISREG(mode):
            shutil.copyfile(host, target)
            os.chmod(target, stat.S_IMODE(mode))
        else:
            os.mknod(target, mode, st.st_rdev)
        os.lchown(target, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(mode):
            os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns))
    for target, st in reversed(dirs):  # after their contents: modes and times as in the image
        os.chown(target, st.st_uid, st.st_gid)
        os.chmod(target, stat.S_IMODE(st.st_mode))
        os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns))


def _write_tar(writer, tree: LayerTree) -> None:
    for below, host, st in tree_walk(tree, "/"):
        writer.entry(below.encode("utf-8", "surrogateescape"),
                     host.encode("utf-8", "surrogateescape"), st)
    writer.finish()
