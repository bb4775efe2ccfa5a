"""Speed of the Numba quantizers: MB/s of float32 input per type at 1 and 2 threads.

    python benchmarks/bench_quantizers.py [--rows 4096] [--cols 4096] [--types Q4_K,Q6_K] [--threads 1,2]
    python benchmarks/bench_quantizers.py --gemma [--threads 2]

--gemma times the block work of an F32 -> Q4_K_M conversion of Gemma 3 270M (1.03 GB of
float32): the same tensor shapes and per-tensor types as the real file, on random data,
quantizer time only (no file reading or writing).

The matrix is random normal with a few outliers (like real weights). The first call of each
type compiles (or loads from the Numba cache) and is timed apart; each figure is the best of
--repeat runs. Wall-clock MB/s is the figure that matters; MB per CPU-second (process CPU
time) is printed beside it because it stays meaningful on a machine shared with other work.
"""
import argparse
import time

import numpy as np

DEFAULT_TYPES = "Q8_0,Q4_0,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K,F16,BF16"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--types", default=DEFAULT_TYPES)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--gemma", action="store_true", help="time the Gemma 3 270M Q4_K_M type mix")
    a = p.parse_args(argv)
    if a.gemma:
        return bench_gemma([int(t) for t in a.threads.split(",")])

    from tinyllm.jit import cpu_count
    from tinyllm.quants.registry import quantize
    from tinyllm.quants.types import parse_type

    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.cols), dtype=np.float32)
    x[rng.random(x.shape) < 0.01] *= 25
    mb = x.nbytes / 1e6
    threads = [int(t) for t in a.threads.split(",") if int(t) <= cpu_count()]
    print(f"{a.rows}x{a.cols} float32 ({mb:.0f} MB), threads {threads}")
    print(f"{'type':6} {'compile s':>9} " + " ".join(f"{f'{t}thr MB/s':>10} {'MB/cpu-s':>9}" for t in threads))
    for name in a.types.split(","):
        t = parse_type(name)
        t0 = time.perf_counter()
        quantize(x[:8], t)
        compile_s = time.perf_counter() - t0
        rates = []
        for n in threads:
            best = best_cpu = float("inf")
            for _ in range(a.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                quantize(x, t, threads=n)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            rates.append((mb / best, mb / best_cpu))
        print(f"{t.name:6} {compile_s:9.2f} " + " ".join(f"{w:10.0f} {c:9.0f}" for w, c in rates), flush=True)


# Gemma 3 270M Q4_K_M: (type, rows, row length, count) per tensor kind. ne0 = 640 is not a
# multiple of 256, so llama-quantize falls back to Q5_0 / Q8_0 for those tensors.
GEMMA_Q4_K_M = [
    ("Q8_0", 262144, 640, 1),  # token_embd (tied output: Q6_K -> Q8_0)
    ("Q5_0", 1024, 640, 18),  # attn_q
    ("Q5_0", 256, 640, 18),  # attn_k
    ("Q5_0", 256, 640, 9),  # attn_v (Q4_K -> Q5_0)
    ("Q8_0", 256, 640, 9),  # attn_v, use_more_bits layers (Q6_K -> Q8_0)
    ("Q4_K", 640, 1024, 18),  # attn_output
    ("Q5_0", 2048, 640, 36),  # ffn_gate, ffn_up
    ("Q4_K", 640, 2048, 9),  # ffn_down
    ("Q6_K", 640, 2048, 9),  # ffn_down, use_more_bits layers
]


def bench_gemma(threads: list[int]) -> None:
    from tinyllm.quants.registry import quantize
    from tinyllm.quants.types import parse_type

    rng = np.random.default_rng(0)
    for t in {k[0] for k in GEMMA_Q4_K_M}:
        quantize(rng.standard_normal((2, 2048), dtype=np.float32), parse_type(t))  # compile apart
    for n in threads:
        total = 0.0
        per_type: dict[str, float] = {}
        nbytes = 0
        for name, rows, cols, count in GEMMA_Q4_K_M:
            # one tensor of random data reused `count` times keeps memory and set-up time low
            x = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.05)
            for _ in range(count):
                t0 = time.perf_counter()
                quantize(x, parse_type(name), threads=n)
                dt = time.perf_counter() - t0
                total += dt
                per_type[name] = per_type.get(name, 0.0) + dt
                nbytes += x.nbytes
        detail = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(per_type.items()))
        print(f"{n} thread(s): {nbytes / 1e9:.2f} GB float32 in {total:.2f} s ({detail})", flush=True)


if __name__ == "__main__":
    main()
