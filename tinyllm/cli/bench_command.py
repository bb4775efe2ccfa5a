"""`tinyllm bench`: llama-bench style pp/tg tokens/s (see tinyllm/bench.py for the method).

-p, -n, -t and -d take comma lists, as llama-bench does; every combination is run.
The table (or JSON) goes to stdout, progress to stderr.
"""
import json
import sys

from . import options


def register(sub):
    p = sub.add_parser(
        "bench",
        help="llama-bench style pp/tg tokens/s, KV MiB, peak RSS, weight GB/s",
        description="Benchmark prompt processing (pp: one prefill of -p random tokens) and text "
        "generation (tg: -n decode steps), as llama-bench: a warm-up, then -r repetitions, "
        "mean ± std tokens/s. Lists such as -t 1,2 run every combination.",
    )
    p.add_argument("-m", "--model", metavar="MODEL", help="GGUF model file (default: Gemma 3 270M Q4_K_M)")
    p.add_argument("-p", "--n-prompt", default="256", metavar="N[,N]", help="prompt tokens for pp tests; 0 skips (default: 256)")
    p.add_argument("-n", "--n-gen", default="64", metavar="N[,N]", help="decode steps for tg tests; 0 skips (default: 64)")
    p.add_argument("-r", "--repetitions", default=5, type=int, help="timed repetitions per test (default: 5)")
    p.add_argument("-t", "--threads", default="2", metavar="N[,N]",
                   help="thread counts; auto: tinyllm's default (all cores, fewer while other processes "
                        "keep cores busy) (default: 2)")
    p.add_argument("-d", "--n-depth", default="0", metavar="N[,N]", help="tokens already in the KV cache (default: 0)")
    p.add_argument("-o", "--output", default="md", metavar="md|json", help="output format (default: md)")
    p.add_argument("--kv-type", "-ctk", default="f16", metavar="TYPE", help="KV cache type: f16, f32, q8_0 (default: f16)")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    p.add_argument("--kernels", action="store_true", help="run the kernel benchmark (per weight type) instead")
    p.set_defaults(func=run)


def run(args):
    from ..errors import UsageError

    if args.output not in ("md", "json"):
        raise UsageError(f"-o/--output {args.output!r} is not supported; choose md or json")
    # range-checked before anything slow; "auto" is None, tinyllm's default setting
    threads = [options.parse_threads(None if t.strip() == "auto" else t) for t in str(args.threads).split(",")]
    if args.kernels:
        return run_kernels(args, threads)
    n_prompt = options.parse_list(args.n_prompt, "-p/--n-prompt")
    n_gen = options.parse_list(args.n_gen, "-n/--n-gen")
    depth = options.parse_list(args.n_depth, "-d/--n-depth")
    if args.repetitions < 1:
        raise UsageError(f"-r/--repetitions must be >= 1, got {args.repetitions}")
    from ..bench import markdown_row, markdown_table, run_bench

    kv_type = options.parse_kv_type(args.kv_type)
    n_ctx = max(d for d in depth) + max(max(n_prompt), max(n_gen))
    from ..default_model import resolve_model
    from ..model import load

    model = load(resolve_model(args.model), n_ctx=max(n_ctx, 1), threads=threads[0], kv_type=kv_type)
    options.warn_past_trained_context(model, n_ctx, "-d + -p/-n")
    err = sys.stderr
    seconds = model.warmup(notice=err)
    print(f"bench: kernels ready in {seconds:.2f} s (JIT compile or cache load, not counted below)", file=err, flush=True)
    if max(n_gen) > 0:
        from ..bandwidth import cached_read_gbs, read_gbs

        for n in threads:
            if cached_read_gbs(n) is None:
                print(f"bench: measuring the memory read bandwidth with {n} thread(s) (once)...", file=err, flush=True)
                print(f"bench: {read_gbs(n):.1f} GB/s", file=err, flush=True)

    def on_result(r):
        print(
            f"bench: {r.test} threads {r.threads}: {r.avg_ts:.2f} ± {r.stddev_ts:.2f} t/s "
            f"(warm-up {r.warmup_seconds:.2f} s, JIT compile {r.compile_seconds:.2f} s)",
            file=err,
            flush=True,
        )

    results = run_bench(
        model,
        n_prompt=n_prompt,
        n_gen=n_gen,
        depth=depth,
        threads=threads,
        reps=args.repetitions,
        warmup=not args.no_warmup,
        on_result=on_result,
    )
    if args.output == "json":
        json.dump([r.as_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from ..printable import printable

        for line in markdown_table([[printable(c) for c in markdown_row(r)] for r in results]):
            print(line)  # the model column comes from the file
    return 0


def run_kernels(args, threads):
    import numba

    # a kernel call is too short for the idle-core count to change within it: auto = all cores
    threads = [numba.config.NUMBA_NUM_THREADS if t is None else t for t in threads]
    from ..quants.kernel_bench import run_kernel_bench

    def on_row(row):
        print(f"bench: {row['type']} {row['n_out']}x{row['n_in']} T={row['T']} threads {row['threads']}", file=sys.stderr, flush=True)

    rows = run_kernel_bench(threads=tuple(threads), on_row=on_row)
    if args.output == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from ..bench import markdown_table

    cols = ("type", "n_out x n_in", "T", "threads", "µs/call", "GMAC/s", "weights GB/s")
    table = [
        [r["type"], f"{r['n_out']}x{r['n_in']}", str(r["T"]), str(r["threads"]),
         f"{r['seconds'] * 1e6:.1f}", f"{r['gmacs']:.2f}", f"{r['gbs']:.2f}"]
        for r in rows
    ]
    for line in markdown_table(table, columns=cols, left=("type", "n_out x n_in")):
        print(line)
    return 0
