"""Where a decode step and a prefill of the model go: matmul per weight type, attention, the
other per-token ops, and Python overhead (the rest). Also prefill tokens/s and peak RSS.

    python benchmarks/bench_model.py [-m MODEL] [-t THREADS] [-n DECODE_TOKENS] [-p PROMPT_TOKENS] [-c N_CTX]

Each op is timed by wrapping it (perf_counter around the call), so the wrappers add ~1 µs per
call; "python + overhead" is the wall time of the step minus every timed op.
"""
import argparse
import collections
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyllm.model import forward as fw  # noqa: E402
from tinyllm.model import kv_cache, load, ops  # noqa: E402


def timed(times, key, real):
    """real, its wall time added to times[key] (key: a string, or a function of the arguments)."""
    def wrapped(*a, **k):
        t0 = time.perf_counter()
        r = real(*a, **k)
        times[key(*a) if callable(key) else key] += time.perf_counter() - t0
        return r

    return wrapped


def instrument(times):
    """Wrap the matmuls (keyed by weight type; those that share an input, as matmuls() runs
    them, too), the activation quantizers, the cache's attend/store and forward's ops."""
    fw._quants_matmul = timed(times, lambda w, *a: f"matmul {w.type.name}", fw._quants_matmul)
    fw.quantize_activations = timed(times, "quantize activations", fw.quantize_activations)
    fw.get_rows = timed(times, "get_rows", fw.get_rows)
    for name, key in (("attend", "attention"), ("store", "kv store")):
        setattr(kv_cache.KVCache, name, timed(times, key, getattr(kv_cache.KVCache, name)))

    class TimedOps:
        def __getattr__(self, name):
            real = getattr(ops, name)
            return timed(times, f"op {name}", real) if callable(real) else real

    fw.ops = TimedOps()


def report(title, times, wall, n):
    print(f"\n{title}: {wall / n * 1e3:.2f} ms per {'token' if n > 1 else 'call'} ({n} runs)")
    total = 0.0
    for k, v in sorted(times.items(), key=lambda kv: -kv[1]):
        total += v
        print(f"  {k:24s} {v / n * 1e3:8.3f} ms  {100 * v / wall:5.1f} %")
    rest = wall - total
    print(f"  {'python + overhead':24s} {rest / n * 1e3:8.3f} ms  {100 * rest / wall:5.1f} %")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("-n", type=int, default=32, help="decode steps")
    ap.add_argument("-p", type=int, default=256, help="prompt tokens")
    ap.add_argument("-c", type=int, default=4096, help="n_ctx")
    args = ap.parse_args()

    t0 = time.perf_counter()
    m = load(args.model, n_ctx=args.c, threads=args.threads)
    print(f"load: {time.perf_counter() - t0:.2f} s   {m}")
    print("\n".join(m.kv.report()))
    t0 = time.perf_counter()
    m.warmup()
    print(f"warmup: {time.perf_counter() - t0:.2f} s (compile {m.compile_seconds:.2f} s)")
    rng = np.random.default_rng(0)
    prompt = rng.integers(1000, m.config.n_vocab // 2, args.p).astype(np.int32)

    # prefill, untimed ops first
    t0 = time.perf_counter()
    m.forward(prompt)
    pp = time.perf_counter() - t0
    print(f"\nprefill {args.p} tokens: {pp:.2f} s = {args.p / pp:.1f} tokens/s")
    t0 = time.perf_counter()
    for _ in range(args.n):
        m.forward(rng.integers(1000, 50000, 1).astype(np.int32))
    tg = time.perf_counter() - t0
    gbs = m.weight_nbytes() * args.n / tg / 1e9
    print(f"decode {args.n} tokens: {tg / args.n * 1e3:.2f} ms/token = {args.n / tg:.1f} tokens/s, "
          f"weights read at {gbs:.1f} GB/s")

    times = collections.defaultdict(float)
    instrument(times)
    m.reset()
    t0 = time.perf_counter()
    m.forward(prompt)
    report(f"prefill {args.p} (instrumented)", times, time.perf_counter() - t0, 1)
    times.clear()
    t0 = time.perf_counter()
    for _ in range(args.n):
        m.forward(rng.integers(1000, 50000, 1).astype(np.int32))
    report("decode (instrumented)", times, time.perf_counter() - t0, args.n)
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
          f"file {m.path.stat().st_size / 2**20:.0f} MiB, KV {m.kv.nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
