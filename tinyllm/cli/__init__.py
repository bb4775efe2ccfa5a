"""`tinyllm` command line: argparse subcommands, one module each under tinyllm/cli/.

This package is the only place that prints for the user and exits. Library errors
(TinyLLMError) become one line `tinyllm: error: ...` on stderr and exit code 1;
`--verbose` shows the traceback. Each subcommand module has `register(subparsers)` and
keeps its heavy imports (numba, the model) inside the function it runs, so `--help` is quick.
"""
import argparse
import importlib
import sys
import traceback

from ..errors import TinyLLMError

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


def main(argv: list[str] | None = None) -> int:
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
        print(f"tinyllm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntinyllm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tinyllm run ... | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
