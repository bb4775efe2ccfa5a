"""`tinyllm perplexity`: llama-perplexity's protocol and output (see tinyllm/perplexity.py and
tinyllm/kl_divergence.py).

stdout gets what llama-perplexity prints as results: the running PPL per chunk
`[1]8.1234,[2]...` and `Final estimate: PPL = X +/- Y`; with --kl-divergence its per-chunk table
and the perplexity, KL divergence and token probability statistics. Notes go to stderr.

    tinyllm perplexity -m f32.gguf -f text.txt --kl-divergence-base base.kld      # save the base
    tinyllm perplexity -m q4_k_m.gguf --kl-divergence-base base.kld --kl-divergence
"""
import sys

from . import options

MIN_STATS = 100  # llama-perplexity prints no statistics over fewer positions


def register(sub):
    p = sub.add_parser(
        "perplexity",
        help="perplexity of a text file, or KL divergence against a base model (llama-perplexity)",
        description="Perplexity over a text file as llama-perplexity computes it: chunks of -c tokens, "
        "each starting with BOS, scoring the second half of each chunk. --kl-divergence-base FILE also "
        "saves the log-probabilities; adding --kl-divergence compares the model against such a file instead.",
    )
    p.add_argument("-m", "--model", metavar="MODEL", help="GGUF model file (default: Gemma 3 270M Q4_K_M)")
    p.add_argument("-f", "--file", metavar="FILE", help="text file to score (not needed with --kl-divergence)")
    p.add_argument("-c", "--ctx-size", dest="n_ctx", type=int, default=256,
                   help="tokens per chunk (default: 256; with --kl-divergence the base file's)")
    p.add_argument("--chunks", type=int, default=-1, help="most chunks to score; -1 all (default: -1)")
    p.add_argument("-b", "--batch-size", dest="batch", type=int, default=None,
                   help="tokens per forward call (default: the chunk size)")
    p.add_argument("--kl-divergence-base", metavar="FILE",
                   help="file of the base model's log-probabilities (llama-perplexity's format): written, "
                   "or read with --kl-divergence")
    p.add_argument("--kl-divergence", action="store_true",
                   help="compare the model with the --kl-divergence-base file (KL divergence, Δp, same top token)")
    options.add_model_args(p, ctx_default=None, model_flag=False)
    p.set_defaults(func=run)


def run(args):
    from ..errors import UsageError

    if args.n_ctx < 4:
        raise UsageError(f"-c/--ctx-size must be at least 4 tokens, got {args.n_ctx}")
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"-b/--batch-size must be >= 1, got {args.batch}")
    if args.kl_divergence:
        if not args.kl_divergence_base:
            raise UsageError("--kl-divergence needs --kl-divergence-base FILE (the base model's log-probabilities)")
        return _kl_divergence(args)
    if args.file is None:
        raise UsageError("give the text to score with -f FILE")
    return _perplexity(args)


def _perplexity(args):
    from ..perplexity import perplexity

    text = options.read_text_file(args.file)
    model = options.load_model(args, n_ctx=args.n_ctx)
    err, out = sys.stderr, sys.stdout
    n_batch = min(args.batch or args.n_ctx, args.n_ctx)
    if args.kl_divergence_base:
        print(f"perplexity: saving all logits to {args.kl_divergence_base}", file=err)
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

    r = perplexity(model, text, n_ctx=args.n_ctx, n_chunks=args.chunks, n_batch=args.batch, progress=progress,
                   on_start=on_start, save_log_probs=args.kl_divergence_base)
    out.write("\n")
    print(
        f"perplexity: {r.n_tokens} tokens, {r.n_chunks} chunks, {r.n_scored} scored; "
        f"{r.seconds:.2f} s ({r.n_chunks * r.n_ctx / max(r.seconds, 1e-9):.1f} tokens/s), "
        f"JIT compile {r.compile_seconds:.2f} s",
        file=err,
    )
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_err:.5f}", file=out)
    return 0


TABLE_HEADER = "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p"


def format_row(row) -> str:
    """One line of llama-perplexity's running KL table."""
    return (
        f"{row.chunk:4d}"
        f"    {row.ppl[0]:9.4f} ± {row.ppl[1]:9.4f}"
        f"    {row.ln_ppl_ratio[0]:10.5f} ± {row.ln_ppl_ratio[1]:10.5f}"
        f"    {row.kld[0]:10.5f} ± {row.kld[1]:10.5f}"
        f"    {100 * row.rms_dp[0]:6.3f} ± {100 * row.rms_dp[1]:6.3f} %"
        f"    {100 * row.same_top[0]:6.3f} ± {100 * row.same_top[1]:6.3f} %"
    )


def format_statistics(r) -> list[str]:
    """The three statistics blocks llama-perplexity prints after the table."""
    kp, dp = r.kld_percentiles, r.dp_percentiles
    lines = [
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {r.ppl[0]:10.6f} ± {r.ppl[1]:10.6f}",
        f"Mean PPL(base)                : {r.ppl_base[0]:10.6f} ± {r.ppl_base[1]:10.6f}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * r.cor_ln_ppl:6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {r.ln_ppl_ratio[0]:10.6f} ± {r.ln_ppl_ratio[1]:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {r.ppl_ratio[0]:10.6f} ± {r.ppl_ratio[1]:10.6f}",
        f"Mean PPL(Q)-PPL(base)         : {r.ppl_diff[0]:10.6f} ± {r.ppl_diff[1]:10.6f}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {r.kld[0]:10.6f} ± {r.kld[1]:10.6f}",
        f"Maximum KLD: {r.kld_max:10.6f}",
        f"99.9%   KLD: {kp[0.999]:10.6f}",
        f"99.0%   KLD: {kp[0.990]:10.6f}",
        f"95.0%   KLD: {kp[0.950]:10.6f}",
        f"90.0%   KLD: {kp[0.900]:10.6f}",
        f"Median  KLD: {r.kld_median:10.6f}",
        f"10.0%   KLD: {kp[0.100]:10.6f}",
        f" 5.0%   KLD: {kp[0.050]:10.6f}",
        f" 1.0%   KLD: {kp[0.010]:10.6f}",
        f" 0.1%   KLD: {kp[0.001]:10.6f}",
        f"Minimum KLD: {r.kld_min:10.6f}",
        "",
        "====== Token probability statistics ======",
        f"Mean    Δp: {100 * r.dp[0]:6.3f} ± {100 * r.dp[1]:5.3f} %",
        f"Maximum Δp: {100 * r.dp_max:6.3f}%",
    ]
    for f, label in ((0.999, "99.9"), (0.990, "99.0"), (0.950, "95.0"), (0.900, "90.0"), (0.750, "75.0")):
        lines.append(f"{label}%   Δp: {100 * dp[f]:6.3f}%")
    lines.append(f"Median  Δp: {100 * r.dp_median:6.3f}%")
    for f, label in ((0.250, "25.0"), (0.100, "10.0"), (0.050, " 5.0"), (0.010, " 1.0"), (0.001, " 0.1")):
        lines.append(f"{label}%   Δp: {100 * dp[f]:6.3f}%")
    lines += [
        f"Minimum Δp: {100 * r.dp_min:6.3f}%",
        f"RMS Δp    : {100 * r.rms_dp[0]:6.3f} ± {100 * r.rms_dp[1]:5.3f} %",
        f"Same top p: {100 * r.same_top[0]:6.3f} ± {100 * r.same_top[1]:5.3f} %",
    ]
    return lines


def _kl_divergence(args):
    from ..kl_divergence import kl_divergence, read_kl_base

    base = read_kl_base(args.kl_divergence_base)
    model = options.load_model(args, n_ctx=max(args.n_ctx, base.n_ctx))
    err, out = sys.stderr, sys.stdout
    n_batch = min(args.batch or base.n_ctx, base.n_ctx)

    def on_start(n_chunks, n_ctx):
        print(f"kl_divergence: computing over {n_chunks} chunks, n_ctx={n_ctx}, batch_size={n_batch}, n_seq=1",
              file=err, flush=True)

    def progress(row, n_chunks, seconds):
        if row.chunk == 1:
            print(f"kl_divergence: {seconds:.2f} seconds per pass - ETA {seconds * n_chunks / 60.0:.2f} minutes",
                  file=err, flush=True)
            print("\n" + TABLE_HEADER, file=out)
        print(format_row(row), file=out, flush=True)

    r = kl_divergence(model, base, n_batch=args.batch, on_start=on_start, progress=progress)
    print(file=out)
    if r.count < MIN_STATS:
        print(f"kl_divergence: {r.count} positions scored; statistics need at least {MIN_STATS}, as in llama-perplexity",
              file=err)
        return 0
    print("\n".join(format_statistics(r)), file=out)
    return 0
