"""`tinyllm run`: one-shot generation. The text streams to stdout; the KV cache report and
the timings go to stderr, so `tinyllm run -p ... > out.txt` keeps only the text."""
import sys

from . import options


def register(sub):
    p = sub.add_parser(
        "run",
        help="generate text from a prompt (streams to stdout; stats on stderr)",
        description="Generate a continuation of a prompt. Text goes to stdout as it is generated; "
        "the KV cache report and timings go to stderr.",
    )
    options.add_model_args(p, positional=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt; '-' reads it from stdin")
    src.add_argument("-f", "--file", metavar="FILE", help="read the prompt from a file")
    p.add_argument(
        "-n", "--max-tokens", "--n-predict", dest="max_tokens", type=int, default=256,
        help="most tokens to generate; -1 until end of text or a full context (default: 256)",
    )
    p.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    p.add_argument("--no-bos", action="store_true", help="do not add the BOS token to the prompt")
    p.add_argument("--ignore-eos", action="store_true", help="go on past end-of-text tokens (until -n or a full context)")
    options.add_sampling_args(p)
    p.set_defaults(func=run)


def read_prompt(args) -> str:
    from ..errors import UsageError

    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read prompt file {args.file}: {e}") from None
    if args.prompt is None:
        raise UsageError("no prompt: give -p TEXT, -p - to read stdin, or -f FILE")
    if args.prompt == "-":
        return sys.stdin.read()
    return args.prompt


def run(args):
    from ..errors import ContextFullError, UsageError
    from ..generation import generate

    if args.max_tokens < -1:
        raise UsageError(f"-n/--max-tokens must be >= -1 (-1: no limit), got {args.max_tokens}")
    params = options.sampling_params(args)
    prompt = read_prompt(args)
    model = options.load_model(args)
    err = sys.stderr
    model.warmup(notice=err)  # before generating: a first-run compile is announced, not silent
    gen = generate(
        model,
        prompt,
        max_tokens=args.max_tokens,
        params=params,
        add_bos=False if args.no_bos else None,
        stop_ids=() if args.ignore_eos else None,
    )
    st = gen.stats
    if st.prompt_tokens + model.kv.n_past > model.kv.n_ctx:
        needed = st.prompt_tokens + max(args.max_tokens, 0)
        raise ContextFullError(
            f"the prompt is {st.prompt_tokens} tokens but the context holds {model.kv.n_ctx} (-c); "
            f"this request needs {needed}: raise it with -c {_round_up(needed)}"
        )
    for line in model.kv.report():
        print(line, file=err)
    if not params.greedy:
        print(f"sampler seed: {gen.sampler.seed}", file=err)
    out = sys.stdout
    if args.echo:
        out.write(prompt)
        out.flush()
    text_ended_with_newline = True
    try:
        for piece in gen:
            out.write(piece)
            out.flush()
            text_ended_with_newline = piece.endswith("\n")
    except KeyboardInterrupt:
        # Ctrl+C between two pieces: stop cleanly, keep what was printed, show the stats.
        gen.cancel()
        for piece in gen:
            out.write(piece)
            text_ended_with_newline = piece.endswith("\n")
    if not text_ended_with_newline or args.echo and not gen.text:
        out.write("\n")
        out.flush()
    print_stats(gen, model, err)
    return 130 if st.stop_reason == "cancelled" else 0


def _round_up(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def print_stats(gen, model, err) -> None:
    """llama.cpp-like perf lines (common_perf_print) plus the stop reason and cache use."""
    st = gen.stats
    pe_ms = st.prefill_seconds * 1e3
    print(
        f"prompt eval time = {pe_ms:10.2f} ms / {st.prompt_tokens:5d} tokens "
        f"({pe_ms / max(st.prompt_tokens, 1):8.2f} ms per token, {st.prefill_tps:8.2f} tokens per second)",
        file=err,
    )
    ev_ms = st.decode_seconds * 1e3
    print(
        f"       eval time = {ev_ms:10.2f} ms / {st.decode_steps:5d} runs   "
        f"({ev_ms / max(st.decode_steps, 1):8.2f} ms per token, {st.decode_tps:8.2f} tokens per second)",
        file=err,
    )
    print(
        f"time to first token = {st.ttft_seconds * 1e3:.2f} ms; JIT compile = {model.compile_seconds:.2f} s "
        f"(not counted above)",
        file=err,
    )
    reason = {
        "eos": "end of text",
        "length": f"reached -n {gen.max_tokens}",
        "context": "context full",
        "cancelled": "interrupted",
    }.get(st.stop_reason, str(st.stop_reason))
    u = model.kv.usage()
    print(
        f"stop: {reason}; generated {st.generated_tokens} tokens; KV cache {st.n_past} / {st.n_ctx} tokens "
        f"({u.mib_used:.2f} MiB used of {u.mib_allocated:.2f} MiB)",
        file=err,
    )
    if st.stop_reason == "context" and gen.max_tokens < 0:
        print(f"tinyllm: context full (n_ctx = {st.n_ctx}); raise it with -c for longer output", file=err)
    elif st.stop_reason == "context":
        print(
            f"tinyllm: context full (n_ctx = {st.n_ctx}): this request needed {st.tokens_needed} tokens; "
            f"raise it with -c {_round_up(st.tokens_needed)}",
            file=err,
        )
