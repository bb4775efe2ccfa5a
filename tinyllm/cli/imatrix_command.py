"""`tinyllm imatrix -m MODEL -f TEXT [-o imatrix.gguf]`: an importance matrix as llama-imatrix
computes it (tinyllm/quantization/imatrix_collect.py), for `tinyllm quantize --imatrix`.

stdout gets what llama-imatrix prints as results: the running PPL per chunk `[1]8.1234,[2]...`
and `Final estimate: PPL = X +/- Y`; notes go to stderr, with a progress bar on a terminal.
"""
import sys
import time

from . import options


def register(sub):
    p = sub.add_parser(
        "imatrix",
        help="compute an importance matrix for quantization (llama-imatrix)",
        description="Accumulate, over a calibration text, the mean square of every input column of the "
        "blk.* matmuls, as llama-imatrix does, and write it in llama.cpp's GGUF imatrix format. "
        "Without -f, the --in-file matrices are combined.",
    )
    p.add_argument("-m", "--model", metavar="MODEL", help="GGUF model file (default: Gemma 3 270M Q4_K_M)")
    p.add_argument("-f", "--file", metavar="FILE", help="calibration text")
    p.add_argument("-o", "--output", metavar="OUT", default="imatrix.gguf", help="output file (default: imatrix.gguf)")
    p.add_argument("--output-format", choices=("gguf", "dat"), default=None,
                   help="gguf, or llama.cpp's legacy dat (default: gguf, or dat when OUT ends in .dat)")
    p.add_argument("-c", "--ctx-size", dest="n_ctx", type=int, default=512, help="tokens per chunk (default: 512)")
    p.add_argument("-b", "--batch-size", dest="batch", type=int, default=None,
                   help="tokens per forward call, at most the chunk size (default: the chunk size)")
    p.add_argument("--chunks", type=int, default=-1, help="most chunks to process; -1 all (default: -1)")
    p.add_argument("--process-output", action="store_true", help="collect output.weight too")
    p.add_argument("--output-frequency", type=int, default=10, metavar="N",
                   help="write OUT every N chunks (default: 10)")
    p.add_argument("--in-file", action="append", default=[], metavar="FILE",
                   help="an imatrix (gguf or dat) to add to; repeatable")
    p.add_argument("--no-ppl", action="store_true", help="do not compute the perplexity")
    p.add_argument("--parse-special", action="store_true", help="parse special tokens in the text")
    options.add_model_args(p, ctx_default=None, model_flag=False)
    p.set_defaults(func=run)


def _saver(args):
    from ..quantization.imatrix import save_imatrix, save_imatrix_legacy

    fmt = args.output_format or ("dat" if args.output.endswith(".dat") else "gguf")
    write = save_imatrix_legacy if fmt == "dat" else save_imatrix

    def save(im):
        write(args.output, im.entries, im.datasets, im.chunk_count, im.chunk_size)

    return save


class _Bar:
    """`chunk i/n [####....] ETA` on stderr when it is a terminal, erased when done. Where the
    running `[i]PPL,` list goes to the same terminal it is the progress display (as in
    llama-imatrix), and a bar on that line would erase it."""

    def __init__(self, ppl_on_terminal: bool):
        self.on = sys.stderr.isatty() and not ppl_on_terminal

    def show(self, done: int, total: int, seconds: float):
        if not self.on:
            return
        width = 30
        fill = width * done // max(total, 1)
        eta = seconds / done * (total - done) if done else 0.0
        sys.stderr.write(f"\r\x1b[Kchunk {done}/{total} [{'#' * fill}{'.' * (width - fill)}] ETA {eta:.0f} s")
        sys.stderr.flush()

    def close(self):
        if self.on:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run(args):
    from ..errors import UsageError
    from ..quantization.imatrix import load_imatrix
    from ..quantization.imatrix_collect import combine_imatrix, compute_imatrix

    err, out = sys.stderr, sys.stdout
    if args.n_ctx < 4:
        raise UsageError(f"-c/--ctx-size must be at least 4 tokens, got {args.n_ctx}")
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"-b/--batch-size must be >= 1, got {args.batch}")
    if args.output_frequency < 1:
        raise UsageError(f"--output-frequency must be >= 1 chunk, got {args.output_frequency}")
    save = _saver(args)
    in_files = []
    for path in args.in_file:
        print(f"imatrix: loading imatrix from '{path}'", file=err)
        in_files.append(load_imatrix(path))
    if args.file is None:
        if not in_files:
            raise UsageError("give a text to compute from (-f FILE) or imatrix files to combine (--in-file)")
        im = combine_imatrix(in_files, args.n_ctx)
        save(im)
        print(f"imatrix: saved {'combined ' if len(in_files) > 1 else ''}imatrix to '{args.output}' "
              f"({len(im.entries)} entries, {im.chunk_count} chunks)", file=err)
        return 0
    text = options.read_text_file(args.file)
    model = options.load_model(args, n_ctx=args.n_ctx)
    n_batch = min(args.batch or args.n_ctx, args.n_ctx)
    print("imatrix: tokenizing the input ..", file=err)
    bar = _Bar(ppl_on_terminal=not args.no_ppl and out.isatty())

    def on_start(n_tokens, n_chunks):
        print(f"imatrix: computing over {n_chunks} chunks ({n_tokens} tokens), n_ctx={args.n_ctx}, "
              f"batch_size={n_batch}, n_seq=1", file=err, flush=True)

    def progress(i, n, ppl, seconds):
        if i == 0:
            bar.close()
            print(f"imatrix: {seconds:.2f} seconds per pass - ETA {seconds * n / 60.0:.2f} minutes", file=err, flush=True)
        if not args.no_ppl:
            bar.close()
            out.write(f"[{i + 1}]{ppl:.4f},")
            out.flush()
        bar.show(i + 1, n, seconds)

    def on_save(im):
        bar.close()
        save(im)
        print(f"\nimatrix: stored collected data after {im.chunk_count} chunks in '{args.output}'", file=err, flush=True)

    t0 = time.perf_counter()
    try:
        r = compute_imatrix(
            model, text, n_ctx=args.n_ctx, n_chunks=args.chunks, n_batch=args.batch,
            process_output=args.process_output, parse_special=args.parse_special, compute_ppl=not args.no_ppl,
            dataset=args.file, in_files=tuple(in_files), output_frequency=args.output_frequency,
            on_save=on_save, on_start=on_start, progress=progress,
        )
    finally:
        bar.close()
    out.write("\n")
    if not args.no_ppl:
        print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_err:.5f}", file=out)
    out.flush()
    save(r.imatrix)
    print(
        f"imatrix: saved '{args.output}': {len(r.imatrix.entries)} entries, {r.imatrix.chunk_count} chunks of "
        f"{r.n_ctx} tokens; {time.perf_counter() - t0:.2f} s",
        file=err,
    )
    return 0
