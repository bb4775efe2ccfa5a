"""`tinyllm bench` (placeholder: its issue is open)."""
from ..errors import UsageError


def register(sub):
    p = sub.add_parser("bench", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise UsageError("'tinyllm bench' is not built yet")
