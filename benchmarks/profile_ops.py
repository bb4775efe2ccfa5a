"""Where the time of a decode step or a prefill goes, per op: every matmul (by weight type,
tensor and shape), each activation quantizer, attention, K/V stores and the per-token ops.

    python benchmarks/profile_ops.py [-m MODEL] [-t THREADS] [-n 64] [-d DEPTH] [-p 0]

Each op is timed around its Python call (perf_counter), so a row includes its dispatch and
the start of its parallel region; "other" is what no wrapped op accounts for (the Python of
the forward pass). Shares are of the wall time of the timed steps. On a shared machine the
figures move with the load: compare rows of one run, not runs.
"""
import argparse
import collections
import os
import sys
import time

import numpy as np

import tinyllm
from tinyllm.model import forward as fw
from tinyllm.model import kv_cache, ops
from tinyllm.quants import matmul as qm

OPS = ("rms_norm", "add_rms_norm", "geglu", "swiglu", "head_norm_rope", "rope_table")


class Timers:
    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.outer = 0.0  # time inside wrapped ops that no other wrapped op encloses
        self.depth = 0

    def wrap(self, key_of, fn):
        def timed(*a, **k):
            self.depth += 1
            t = time.perf_counter()
            try:
                r = fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                self.depth -= 1
            key = key_of(*a, **k)
            self.seconds[key] += dt
            self.calls[key] += 1
            if self.depth == 0:
                self.outer += dt
            return r

        return timed

    def reset(self):
        self.seconds.clear()
        self.calls.clear()
        self.outer = 0.0


def _tensor(w):
    parts = w.name.split(".")
    return parts[-2] if len(parts) > 2 else parts[0]


def install(timers: Timers):
    """Wrap the ops the forward pass calls (module attributes, so the forward pass sees them)."""
    fw._quants_matmul = timers.wrap(lambda w, *a, **k: f"matmul {w.type.name} {_tensor(w)} {w.n_out}x{w.n_in}", fw._quants_matmul)
    qm.quantize_act = timers.wrap(lambda kind, x: f"quantize activations {kind}", qm.quantize_act)
    for name in OPS:
        setattr(ops, name, timers.wrap(lambda *a, _n=name: f"op {_n}", getattr(ops, name)))
    for meth in ("attend", "store"):
        setattr(kv_cache.KVCache, meth, timers.wrap(lambda *a, _n=meth: f"kv {_n}", getattr(kv_cache.KVCache, meth)))


def report(timers: Timers, total: float, steps: int, unit: str):
    print(f"{'op':56} {unit:>12} {'share':>6} {'calls/step':>10}")
    # a matmul row includes the activation quantization it ran itself (also a row of its own)
    inner = timers.outer
    for k, v in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        print(f"{k:56} {v / steps * 1e3:12.3f} {100 * v / total:5.1f}% {timers.calls[k] / steps:10.0f}")
    print(f"{'other (Python of the forward pass)':56} {(total - inner) / steps * 1e3:12.3f} {100 * (total - inner) / total:5.1f}%")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-n", type=int, default=64, help="decode steps to time (0: none)")
    ap.add_argument("-d", "--depth", type=int, default=0, help="tokens in the KV cache before decoding")
    ap.add_argument("-p", type=int, default=0, help="prefill length to time instead of decode (0: decode)")
    a = ap.parse_args(argv)
    m = tinyllm.load(a.model, threads=a.threads, n_ctx=max(4096, a.depth + a.n + a.p + 16))
    m.warmup()
    timers = Timers()
    install(timers)
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if a.p:
        toks = rng.integers(0, 1000, a.p)
        m.forward(toks)
        m.reset()
        timers.reset()
        t0 = time.perf_counter()
        for _ in range(3):
            m.forward(toks)
            m.reset()
        total = time.perf_counter() - t0
        print(f"# pp{a.p}, {a.threads} thread(s): {3 * a.p / total:.1f} tokens/s, load average {load:.2f}")
        report(timers, total, 3, "ms/prefill")
        return 0
    if a.depth:
        m.forward(rng.integers(0, 1000, a.depth))
    m.forward([1])
    timers.reset()
    t0 = time.perf_counter()
    for _ in range(a.n):
        m.forward([int(rng.integers(0, 1000))])
    total = time.perf_counter() - t0
    print(f"# tg{a.n} at depth {a.depth}, {a.threads} thread(s): {a.n / total:.1f} tokens/s, load average {load:.2f}")
    report(timers, total, a.n, "ms/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
