"""`tinyllm quantize IN.gguf [OUT.gguf] TYPE`: llama-quantize's mixtures, in Python."""
import sys
import time

from ..errors import UsageError
from ..printable import printable

TYPES_HELP = """\
types (any case; approximate bits per weight on Llama-3-8B):
  Q4_K_M  ~4.9 bpw  Q4_K; Q6_K for output and half of attn_v/ffn_down (the usual choice)
  Q4_K_S  ~4.6 bpw  Q4_K; Q5_K for the first attn_v/ffn_down layers
  Q5_K_M  ~5.7 bpw  Q5_K; Q6_K for output and half of attn_v/ffn_down
  Q5_K_S  ~5.5 bpw  Q5_K; Q6_K for output
  Q6_K    ~6.6 bpw  Q6_K everywhere
  Q8_0    ~8.5 bpw  Q8_0 everywhere (nearly lossless)
  Q3_K_L, Q3_K_M (alias Q3_K), Q3_K_S  ~4.3/3.9/3.6 bpw  Q3_K with Q4_K-Q5_K where it matters
  Q2_K    ~3.2 bpw  Q2_K with Q3_K for attn_v/attn_output/ffn_down; Q2_K_S needs --imatrix
  Q5_0, Q4_0, Q5_1, Q4_1  legacy 32-weight blocks
  IQ4_XS, IQ4_NL, IQ3_M, IQ3_S, IQ3_XS, IQ3_XXS, IQ2_M, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S
                    llama.cpp's i-quant mixtures (the XXS/XS/IQ2/IQ1 ones need --imatrix)
  F16, BF16, F32    float copies (dequantizes a quantized input)
--imatrix FILE (llama-imatrix's output) weighs each tensor's columns by the mean squared
activation, as llama-quantize does; tensors without an entry are quantized without one.
Rows whose length is not a multiple of 256 fall back as llama.cpp does
(Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, Q2_K/Q3_K->Q4_0, IQ types->IQ4_NL, F16 if not even a
multiple of 32); --no-fallback refuses. 1-D tensors and norms keep their type. Without OUT
the file is written beside IN, named after IN and TYPE (model-f32.gguf -> model-Q4_K_M.gguf).
"""


def register(sub):
    import argparse

    p = sub.add_parser(
        "quantize",
        help="quantize a GGUF model (Q4_K_M, Q8_0, ...) or convert it to F16/BF16/F32",
        description="Quantize a GGUF model with llama-quantize's per-tensor mixtures, byte-identical to llama.cpp.",
        epilog=TYPES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="tinyllm quantize [options] IN.gguf [OUT.gguf] TYPE",
    )
    p.add_argument("paths", nargs="+", metavar="IN.gguf [OUT.gguf] TYPE", help="input, optional output, type")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--pure", action="store_true", help="no mixture: every 2-D weight in the default type")
    p.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight in its input type")
    p.add_argument("--output-tensor-type", metavar="T", help="type for output.weight (e.g. q8_0)")
    p.add_argument("--token-embedding-type", metavar="T", help="type for token_embd.weight (e.g. q8_0)")
    p.add_argument("--tensor-type", metavar="REGEX=T", action="append", default=[],
                   help="type for tensors whose name matches REGEX (first match wins; repeatable)")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (llama-imatrix's .gguf or legacy .dat)")
    p.add_argument("--include-weights", metavar="NAME", action="append", default=[],
                   help="use the imatrix only for tensors whose name contains NAME (repeatable)")
    p.add_argument("--exclude-weights", metavar="NAME", action="append", default=[],
                   help="do not use the imatrix for tensors whose name contains NAME (repeatable)")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow quantizing an already quantized input (loses quality)")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of falling back when rows do not fit the block size")
    p.add_argument("--dry-run", action="store_true", help="show each tensor's type and the final size; write nothing")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-tensor lines, only warnings and the summary")
    p.set_defaults(func=run)


def _mib(n: int) -> float:
    return n / 1024.0 / 1024.0


def _shape(ne) -> str:
    dims = list(ne) + [1] * (4 - len(ne))
    return ", ".join(f"{d:5d}" for d in dims)


class _Progress:
    """Per-tensor lines on stdout; on a terminal a bar with ETA on stderr stays below them."""

    def __init__(self, plan, quiet: bool):
        self.count = len(plan.tensors)
        self.width = max(3, len(str(self.count)))
        self.name_width = min(36, max((len(t.name) for t in plan.tensors), default=0))
        self.quiet = quiet
        self.bar = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def line(self, i: int, t, tail: str) -> str:
        from ..quantization.rules import type_name

        w = self.width
        return (f"[{i:{w}d}/{self.count:{w}d}] {printable(t.name):<{self.name_width}} - [{_shape(t.ne)}], "
                f"type = {type_name(t.src_type):>6}, {tail}")

    def __call__(self, ev) -> None:
        from ..quantization.rules import type_name

        t = ev.tensor
        if t.converts:
            tail = (f"converting to {type_name(t.dst_type)} .. "
                    f"size = {_mib(t.src_nbytes):8.2f} MiB -> {_mib(t.dst_nbytes):8.2f} MiB")
        else:
            tail = f"size = {_mib(t.src_nbytes):8.3f} MiB"
        self._clear()
        if not self.quiet:
            print(self.line(ev.index, t, tail), flush=True)
        if self.bar:
            self._draw(ev)

    def compiling(self, done: int, total: int) -> None:
        """A first run compiles the quantizers before the first tensor: say so."""
        if not self.bar:
            if done == 0:
                print(f"compiling {total} quantizer(s) (first run only)...", file=sys.stderr, flush=True)
            return
        n = 30 * done // max(total, 1)
        sys.stderr.write(f"\r\033[Kcompiling quantizers (first run only) [{'#' * n}{'.' * (30 - n)}] {done}/{total}")
        sys.stderr.flush()

    def _draw(self, ev) -> None:
        frac = ev.done_bytes / ev.total_bytes if ev.total_bytes else 1.0
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        n = int(30 * frac)
        sys.stderr.write(f"\r[{'#' * n}{'.' * (30 - n)}] {100 * frac:3.0f}%  {ev.index}/{ev.count} tensors  "
                         f"{elapsed:5.1f}s  ETA {eta:4.1f}s")
        sys.stderr.flush()

    def _clear(self) -> None:
        if self.bar:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def finish(self) -> None:
        self._clear()


def _split_paths(paths):
    if len(paths) == 2:
        return paths[0], None, paths[1]
    if len(paths) == 3:
        return paths[0], paths[1], paths[2]
    raise UsageError(f"expected IN.gguf [OUT.gguf] TYPE, got {len(paths)} argument(s): {' '.join(paths)}")


def _warn(msg: str) -> None:
    print(f"warning: {printable(msg)}", file=sys.stderr)


def run(args):
    from ..quantization.rules import parse_ftype, type_name
    from ..quantization.pipeline import default_output_path, quantize_file

    src, dst, tname = _split_paths(args.paths)
    ftype = parse_ftype(tname)
    if dst is None and not args.dry_run:
        dst = default_output_path(src, ftype)
    options = dict(
        pure=args.pure, leave_output_tensor=args.leave_output_tensor, output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type, tensor_types=args.tensor_type, no_fallback=args.no_fallback,
        threads=args.threads, imatrix=args.imatrix, include_weights=args.include_weights,
        exclude_weights=args.exclude_weights,
    )
    if args.dry_run:
        stats = quantize_file(src, dst, ftype, dry_run=True, **options)
        plan = stats.plan
        _report_plan(plan, args)
        prog = _Progress(plan, args.quiet)
        for i, t in enumerate(plan.tensors if not args.quiet else [], 1):
            if t.converts:
                tail = (f"size = {_mib(t.src_nbytes):8.2f} MiB -> {_mib(t.dst_nbytes):8.2f} MiB "
                        f"({type_name(t.dst_type)})")
            else:
                tail = f"size = {_mib(t.src_nbytes):8.3f} MiB"
            print(prog.line(i, t, tail))
        if _requantized(plan) and not args.allow_requantize:
            _warn(f"the input is quantized ({type_name(_requantized(plan)[0].src_type)}); "
                  f"the real run needs --allow-requantize")
        if plan.needs_imatrix and stats.imatrix is None:
            _warn(f"the real run needs an importance matrix (--imatrix): e.g. {plan.needs_imatrix[0].name} "
                  f"would be {type_name(plan.needs_imatrix[0].dst_type)}")
    else:
        progress = []

        def on_plan(plan):
            # every check has passed: show the warnings, then one line per tensor as it is done
            _report_plan(plan, args)
            print(f"quantizing {src} -> {dst} as {ftype.name} (general.file_type {ftype.file_type})", flush=True)
            _report_imatrix(plan, args)
            progress.append(_Progress(plan, args.quiet))

        try:
            stats = quantize_file(src, dst, ftype, allow_requantize=args.allow_requantize, force=args.force,
                                  on_plan=on_plan, progress=lambda ev: progress[0](ev),
                                  on_compile=lambda done, total: progress[0].compiling(done, total), **options)
        finally:
            if progress:
                progress[0].finish()
        plan = stats.plan
    print(f"model size  = {_mib(plan.src_nbytes):8.2f} MiB ({plan.bpw(plan.src_nbytes):.2f} BPW)")
    print(f"quant size  = {_mib(plan.dst_nbytes):8.2f} MiB ({plan.bpw(plan.dst_nbytes):.2f} BPW)")
    if plan.fallbacks:
        print(f"WARNING: {len(plan.fallbacks)} of {len(plan.tensors)} tensor(s) required fallback quantization")
    if args.dry_run:
        print("dry run: nothing written")
    else:
        print(f"wrote {stats.dst} ({stats.file_nbytes} bytes) in {stats.seconds:.2f} s "
              f"with {stats.threads} thread(s)")
    return 0


def _report_imatrix(plan, args) -> None:
    """Which converted tensors get importance weights (llama-quantize logs the others one by one)."""
    if args.imatrix is None:
        return
    converted = [t for t in plan.tensors if t.converts]
    used = [t for t in converted if t.imatrix]
    print(f"importance matrix {args.imatrix}: weights for {len(used)} of {len(converted)} converted tensors",
          flush=True)
    if not used and (args.include_weights or args.exclude_weights):
        _warn("--include-weights / --exclude-weights left no entry of the importance matrix: "
              "quantizing as without one")
    if not args.quiet:
        for t in converted:
            if not t.imatrix:
                print(f"  no importance weights for {printable(t.name)}", flush=True)


def _requantized(plan):
    from ..quants.types import FLOAT_TYPES

    return [t for t in plan.tensors if t.converts and t.src_type not in FLOAT_TYPES and t.dst_type not in FLOAT_TYPES]


def _report_plan(plan, args) -> None:
    from ..quantization.rules import block_size, type_name

    if args.quiet and plan.fallbacks:
        from collections import Counter

        kinds = Counter((type_name(t.fallback_from), type_name(t.dst_type)) for t in plan.fallbacks)
        listed = ", ".join(f"{n} x {a} -> {b}" for (a, b), n in kinds.items())
        _warn(f"{len(plan.fallbacks)} tensor(s) have rows that do not fit their block size and fall back "
              f"({listed}); run without -q to list them")
    for t in plan.fallbacks if not args.quiet else ():
        _warn(f"{t.name:<36} - ncols {t.ne[0]:6d} not divisible by {block_size(t.fallback_from):3d} "
              f"(required for type {type_name(t.fallback_from):>7}) -> falling back to {type_name(t.dst_type):>7}")
    for p in plan.unmatched_overrides:
        _warn(f"--tensor-type {p!r} matched no tensor")
    if args.allow_requantize and not args.dry_run and _requantized(plan):
        _warn("requantizing an already quantized model: this can severely reduce quality compared with "
              "quantizing from 16-bit or 32-bit weights")
