"""`tinyllm quantize` (placeholder: its issue is open)."""
from ..errors import UsageError


def register(sub):
    p = sub.add_parser("quantize", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise UsageError("'tinyllm quantize' is not built yet")
