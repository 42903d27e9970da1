"""``lamina cp``: Docker's ``cp`` verb (the rules live in lamina.copy)."""

from .common import open_engine

ARGS = {
    "cp": (
        ("src", None, "[CONTAINER:]SRC_PATH"),
        ("dst", None, "[CONTAINER:]DEST_PATH"),
        ("-a --archive", "bool", "Archive mode (copy all uid/gid information)"),
        ("-L --follow-link", "bool", "Always follow symbol link in SRC_PATH"),
    ),
}


def cmd_cp(opts, a):
    open_engine(opts).cp(a.src, a.dst, archive=a.archive, follow=a.follow_link)
