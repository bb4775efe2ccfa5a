"""Print the dot-kernel benchmark table: GMAC/s and GB/s of weight bytes, decode and prefill.

    python benchmarks/bench_kernels.py [--types Q4_K,Q8_0] [--threads 1,2] [--T 64] [--no-gemma]

Other engineers share the cores: check `uptime` and repeat; figures under load are lower bounds.
"""
import argparse
import os
import sys
import time

from tinyllm.jit import cpu_count
from tinyllm.quants.kernel_bench import DEFAULT_TYPES, run_kernel_bench


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default=",".join(DEFAULT_TYPES), help="comma-separated weight types")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--T", type=int, default=64, help="activation rows of the prefill case")
    p.add_argument("--seconds", type=float, default=0.5, help="minimum timing per case")
    p.add_argument("--no-gemma", action="store_true", help="skip Gemma 3's 262144x640 Q8_0 output matrix")
    a = p.parse_args(argv)
    threads = tuple(int(t) for t in a.threads.split(","))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {cpu_count()} cores, load average {load:.2f} at start")
    print(f"{'type':6} {'n_out x n_in':>14} {'T':>4} {'thr':>3} {'ms/call':>9} {'GMAC/s':>8} {'GB/s':>7}")

    def show(r):
        shape = f"{r['n_out']}x{r['n_in']}"
        print(
            f"{r['type']:6} {shape:>14} {r['T']:>4} {r['threads']:>3} {r['seconds'] * 1e3:>9.3f}"
            f" {r['gmacs']:>8.2f} {r['gbs']:>7.2f}",
            flush=True,
        )

    t0 = time.perf_counter()
    run_kernel_bench(
        types=a.types.split(","), threads=threads, prefill_T=a.T, gemma_output=not a.no_gemma, min_seconds=a.seconds,
        on_row=show,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {time.perf_counter() - t0:.0f} s, load average {load:.2f} at end")


if __name__ == "__main__":
    sys.exit(main())
