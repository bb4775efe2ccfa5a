"""`tinyllm` command line: argparse subcommands, one module each under tinyllm/cli/.

This package is the only place that prints for the user and exits. Library errors
(TinyLLMError) become one line `tinyllm: error: ...` on stderr and exit code 1;
`--verbose` shows the traceback. Each subcommand module has `register(subparsers)` and
keeps its heavy imports (numba, the model) inside the function it runs, so `--help` is quick.
"""
import argparse
import importlib
import signal
import sys
import threading
import traceback

from ..errors import TinyLLMError
from ..printable import printable

COMMANDS = ["chat", "run", "bench", "perplexity", "quantize", "imatrix", "info", "tokenize"]  # module cli/<name>_command.py each


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyllm", description="A minimal CPU runtime for LLaMA-style GGUF models."
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}_command").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanups run (write_gguf removes its temp file)."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    old = signal.signal(signal.SIGTERM, _on_sigterm)  # like Ctrl+C: clean up, one line, exit 143
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, old)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # `tinyllm` alone opens the chat on the default model, as `ollama run` would.
        args = parser.parse_args(["chat", *([] if argv is None else argv)])
    try:
        return args.func(args) or 0
    except TinyLLMError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"tinyllm: error: {printable(e)}", file=sys.stderr)  # it may quote the file
        return 1
    except KeyboardInterrupt:
        print("\ntinyllm: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("tinyllm: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # `tinyllm run ... | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
