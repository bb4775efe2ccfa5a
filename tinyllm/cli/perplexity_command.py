"""`tinyllm perplexity`: llama-perplexity's protocol and output (see tinyllm/perplexity.py).

stdout gets what llama-perplexity prints as results: the running PPL per chunk
`[1]8.1234,[2]...` and `Final estimate: PPL = X +/- Y`; progress notes go to stderr.
"""
import sys

from . import options


def register(sub):
    p = sub.add_parser(
        "perplexity",
        help="perplexity of a text file (llama-perplexity's protocol)",
        description="Perplexity over a text file as llama-perplexity computes it: chunks of -c tokens, "
        "each starting with BOS, scoring the second half of each chunk.",
    )
    p.add_argument("-m", "--model", metavar="MODEL", help="GGUF model file (default: Gemma 3 270M Q4_K_M)")
    p.add_argument("-f", "--file", metavar="FILE", required=True, help="text file to score")
    p.add_argument("-c", "--ctx-size", dest="n_ctx", type=int, default=256, help="tokens per chunk (default: 256)")
    p.add_argument("--chunks", type=int, default=-1, help="most chunks to score; -1 all (default: -1)")
    p.add_argument("-b", "--batch-size", dest="batch", type=int, default=None,
                   help="tokens per forward call (default: the chunk size)")
    options.add_model_args(p, ctx_default=None, model_flag=False)
    p.set_defaults(func=run)


def run(args):
    from ..errors import UsageError
    from ..perplexity import perplexity

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.file}: {e}") from None
    if args.n_ctx < 4:
        raise UsageError(f"-c/--ctx-size must be at least 4 tokens, got {args.n_ctx}")
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"-b/--batch-size must be >= 1, got {args.batch}")
    model = options.load_model(args, n_ctx=args.n_ctx)
    err, out = sys.stderr, sys.stdout
    n_batch = min(args.batch or args.n_ctx, args.n_ctx)
    print("perplexity: tokenizing the input ..", file=err)

    def on_start(n_tokens, n_chunks):
        print(
            f"perplexity: calculating perplexity over {n_chunks} chunks ({n_tokens} tokens), "
            f"n_ctx={args.n_ctx}, batch_size={n_batch}",
            file=err,
            flush=True,
        )

    def progress(i, n, ppl):
        out.write(f"[{i + 1}]{ppl:.4f},")
        out.flush()

    r = perplexity(model, text, n_ctx=args.n_ctx, n_chunks=args.chunks, n_batch=args.batch, progress=progress, on_start=on_start)
    out.write("\n")
    print(
        f"perplexity: {r.n_tokens} tokens, {r.n_chunks} chunks, {r.n_scored} scored; "
        f"{r.seconds:.2f} s ({r.n_chunks * r.n_ctx / max(r.seconds, 1e-9):.1f} tokens/s), "
        f"JIT compile {r.compile_seconds:.2f} s",
        file=err,
    )
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_err:.5f}", file=out)
    return 0
