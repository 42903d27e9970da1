"""``lamina cp``: Docker's ``cp`` verb (the rules live in lamina.copy)."""

from .main import _engine, _parser


def cmd_cp(opts, args):
    p = _parser("cp")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-a", "--archive", action="store_true")
    p.add_argument("-L", "--follow-link", action="store_true")
    a = p.parse_args(args)
    _engine(opts).cp(a.src, a.dst, archive=a.archive, follow=a.follow_link)
