"""Speed of the Numba quantizers: MB/s of float32 input per type at 1 and 2 threads.

    python benchmarks/bench_quantizers.py [--rows 4096] [--cols 4096] [--types Q4_K,Q6_K] [--threads 1,2]

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
    a = p.parse_args(argv)

    from tinyllm.jit import cpu_count
    from tinyllm.quants.quantize import quantize
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


if __name__ == "__main__":
    main()
