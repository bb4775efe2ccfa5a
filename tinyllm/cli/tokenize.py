"""`tinyllm tokenize` (placeholder: its issue is open)."""
from ..errors import UsageError


def register(sub):
    p = sub.add_parser("tokenize", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise UsageError("'tinyllm tokenize' is not built yet")
