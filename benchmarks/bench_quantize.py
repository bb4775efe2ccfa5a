"""Time `tinyllm quantize` F32 -> Q4_K_M on Gemma 3 270M, beside llama-quantize's 4.0 s (2 threads).

    python benchmarks/bench_quantize.py [SRC_F32.gguf] [--type Q4_K_M] [--threads 1 2] [--repeat 3]

Without SRC it uses /tmp/gemma-f32.gguf, making it first from the default model
(`tinyllm quantize gemma-3-270m-q4_k_m.gguf /tmp/gemma-f32.gguf F32`, i.e. dequantized).
The kernels are compiled / loaded from the Numba cache in a warm-up run that is reported
apart. Each timed run is a whole `quantize_file` (read, convert, write, fsync, rename);
the per-type lines split the conversion time by output type. The machine is shared, so the
load average is printed with the figures: compare runs made at the same time.
"""
import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

LLAMA_QUANTIZE_SECONDS = 4.0  # golden/README.md: llama-quantize F32 -> Q4_K_M of this model, 2 threads


def make_f32(path: Path) -> None:
    from tinyllm.default_model import resolve_model
    from tinyllm.quantization import quantize_file

    src = resolve_model(None)
    t = time.perf_counter()
    quantize_file(src, path, "F32", force=True)
    print(f"made {path} from {src.name} in {time.perf_counter() - t:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default="/tmp/gemma-f32.gguf", help="F32 (or F16/BF16) GGUF input")
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from tinyllm.quantization import quantize_file

    src = Path(args.src)
    if not src.exists():
        make_f32(src)
    out_dir = Path(tempfile.mkdtemp(prefix="bench-quantize-", dir=src.parent))
    dst = out_dir / "out.gguf"
    try:
        t = time.perf_counter()
        quantize_file(src, dst, args.type, force=True)
        print(f"warm-up run (Numba compile or cache load + first read of the input): {time.perf_counter() - t:.2f} s")
        in_gb = src.stat().st_size / 1e9
        for threads in args.threads:
            times, by_type = [], collections.defaultdict(float)
            for _ in range(args.repeat):
                per = collections.defaultdict(float)
                stats = quantize_file(src, dst, args.type, threads=threads, force=True,
                                      progress=lambda ev: per.__setitem__(ev.tensor.dst_type.name,
                                                                          per[ev.tensor.dst_type.name] + ev.seconds))
                times.append(stats.seconds)
                if stats.seconds == min(times):
                    by_type = per
            best, med = min(times), statistics.median(times)
            print(f"{args.type} threads={threads}: best {best:5.2f} s  median {med:5.2f} s  "
                  f"({in_gb / best:.2f} GB/s of input; llama-quantize 2 threads: {LLAMA_QUANTIZE_SECONDS:.1f} s, "
                  f"ratio {best / LLAMA_QUANTIZE_SECONDS:.2f})  load avg {os.getloadavg()[0]:.2f}")
            conv = sum(by_type.values())
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]) if v > 0.005)
            print(f"    converting {conv:.2f} s ({parts}); reading headers, writing and fsync {best - conv:.2f} s")
        print(f"input {src} ({in_gb:.2f} GB) -> {stats.dst_nbytes / 2**20:.1f} MiB ({stats.dst_bpw:.2f} BPW), "
              f"{stats.n_fallback} fallbacks")
    finally:
        dst.unlink(missing_ok=True)
        out_dir.rmdir()


if __name__ == "__main__":
    main()
