"""`tinyllm chat` (placeholder: its issue is open)."""
from ..errors import UsageError


def register(sub):
    p = sub.add_parser("chat", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise UsageError("'tinyllm chat' is not built yet")
