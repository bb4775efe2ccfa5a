"""Options shared by the runtime commands (run, bench, perplexity; chat may reuse them).

Values users often get wrong (-t, --kv-type) are parsed here rather than by argparse, so a
bad value is one line `tinyllm: error: ...` with exit code 1, like every other error.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import UsageError

KV_TYPES = ("f16", "f32", "q8_0")


DEFAULT_MODEL_HELP = "Gemma 3 270M Q4_K_M"
DEFAULT_CHAT_MODEL_HELP = "SmolLM2 135M Instruct Q4_1"


def add_model_args(p: argparse.ArgumentParser, *, ctx_default: int | None = 4096, model_flag: bool = True,
                   positional: bool = False, default_help: str = DEFAULT_MODEL_HELP) -> None:
    """-m/--model (and with positional=True a MODEL argument meaning the same), -t, -c, --kv-type."""
    if positional:
        p.add_argument("model_arg", nargs="?", metavar="MODEL", help=f"GGUF model file (default: {default_help})")
    if model_flag:
        p.add_argument("-m", "--model", metavar="MODEL", help=f"GGUF model file (default: {default_help})")
    p.add_argument("-t", "--threads", metavar="N", help="threads for the kernels (default: all cores)")
    if ctx_default is not None:
        p.add_argument(
            "-c", "--ctx-size", dest="n_ctx", metavar="N", type=int, default=ctx_default,
            help=f"context size in tokens (default: {ctx_default})",
        )
    p.add_argument(
        "--kv-type", "-ctk", default="f16", metavar="TYPE",
        help=f"KV cache type: {', '.join(KV_TYPES)} (default: f16)",
    )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (llama.cpp defaults)")
    g.add_argument("--temp", type=float, default=0.8, help="temperature; 0 is greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40, help="top-k; <= 0 disables (default: 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p; 1 disables (default: 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p; 0 disables (default: 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty; 1 disables (default: 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64, help="tokens the penalty looks back; -1 all (default: 64)")
    g.add_argument("--seed", type=int, default=None, help="random seed; -1 or unset picks one (default: random)")


def parse_threads(value) -> int | None:
    """'-t' value -> int or None (the default: follow the idle cores); range-checked here,
    set by whoever runs the work."""
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise UsageError(f"-t/--threads must be a positive integer, got {value!r}") from None
    from ..jit import check_threads, cpu_count, max_threads

    if n < 1:
        raise UsageError(f"-t/--threads must be a positive integer, got {value!r}")
    try:
        return check_threads(n)
    except UsageError:
        raise UsageError(
            f"-t/--threads {n} is more than this machine allows (1 to {max_threads()}; {cpu_count()} cores)"
        ) from None


def parse_list(value, name: str, *, minimum: int = 0) -> list[int]:
    """'256' or '128,256' -> [ints] (llama-bench style comma lists)."""
    out = []
    for part in str(value).split(","):
        try:
            v = int(part.strip())
        except ValueError:
            raise UsageError(f"{name} takes integers separated by commas, got {value!r}") from None
        if v < minimum:
            raise UsageError(f"{name} values must be >= {minimum}, got {v}")
        out.append(v)
    return out


def parse_kv_type(value: str) -> str:
    v = str(value).strip().lower()
    if v not in KV_TYPES:
        raise UsageError(f"--kv-type {value!r} is not supported; choose one of: {', '.join(KV_TYPES)}")
    return v


def check_ctx(n_ctx: int) -> int:
    if n_ctx < 1:
        raise UsageError(f"-c/--ctx-size must be a positive number of tokens, got {n_ctx}")
    return n_ctx


def read_text_file(path) -> str:
    """A -f text as llama.cpp's tools read it: the bytes as they are (no newline translation),
    less one trailing newline."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    return text[:-1] if text.endswith("\n") else text


def model_arg(args):
    """The model named by -m or the MODEL argument (giving both, different, is an error)."""
    flag, pos = getattr(args, "model", None), getattr(args, "model_arg", None)
    if flag is not None and pos is not None and flag != pos:
        raise UsageError(f"two models given: {pos} and -m {flag}")
    return flag if flag is not None else pos


def load_model(args, *, n_ctx: int | None = None, chat: bool = False):
    """Validate the shared options, then load the model (the slow part comes last); without
    -m, the default model (chat: the default chat model)."""
    from ..default_model import resolve_model

    threads = parse_threads(getattr(args, "threads", None))
    kv_type = parse_kv_type(getattr(args, "kv_type", "f16"))
    n_ctx = check_ctx(n_ctx if n_ctx is not None else args.n_ctx)
    path = resolve_model(model_arg(args), chat=chat)
    from ..model import load

    model = load(path, n_ctx=n_ctx, threads=threads, kv_type=kv_type)
    warn_past_trained_context(model, n_ctx)
    return model


def warn_past_trained_context(model, n_ctx: int, flag: str = "-c") -> None:
    """One line on stderr when -c passes the context the model was trained with (it runs, but
    positions past it were never seen in training)."""
    trained = int(model.config.n_ctx_train)
    if 0 < trained < n_ctx:
        print(
            f"tinyllm: warning: a context of {n_ctx} tokens ({flag}) is beyond the model's trained context of {trained} tokens; "
            "text past that may degrade",
            file=sys.stderr,
        )


def sampling_params(args):
    from ..sampling import SamplingParams

    return SamplingParams(
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        seed=args.seed,
    ).validate()
