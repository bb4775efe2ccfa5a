"""The machine's memory read bandwidth, measured once per CPU and thread count and cached, so
that `tinyllm bench` can say how close decode comes to the limit (decode reads every weight
once a token: tokens/s cannot pass bandwidth / weight bytes).

A STREAM-style read, in a separate process: every thread sums its share of a buffer twice the
size of the last-level cache (256 MiB at least: some servers have L3 caches of ~500 MiB, which
hold a small model whole) as 64-bit integers; the best of five passes counts. Cached in
`<cache>/bandwidth.json` under the CPU name, thread count and buffer size. A decode figure above
100% means the weights were read from the cache, not from memory.
"""
import json
import time

import numpy as np
from numba import prange

from .jit import get_threads, jit_fast
from .paths import cache_dir

MIN_PROBE_BYTES = 256 << 20
MAX_PROBE_BYTES = 2 << 30


def last_level_cache_bytes() -> int:
    """The largest CPU cache sysfs lists (0 where it lists none)."""
    from pathlib import Path

    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return best


def probe_bytes() -> int:
    return min(MAX_PROBE_BYTES, max(MIN_PROBE_BYTES, 2 * last_level_cache_bytes()))


@jit_fast(parallel=True)
def _read_all(buf, chunks):
    """Σ of buf (uint64) read once, in `chunks` parts, one per thread at a time."""
    n = buf.size
    step = (n + chunks - 1) // chunks
    part = np.zeros(chunks, np.uint64)
    for c in prange(chunks):
        # a slice's sum, which vectorizes: an element-by-element loop read 5.7 GB/s on a core
        # that reads 27 (NumPy's sum, and decode's own weight streaming, saw more than the probe)
        part[c] = buf[c * step : min(n, (c + 1) * step)].sum()
    return part.sum()


def measure_read_gbs(threads: int | None = None, nbytes: int | None = None, passes: int = 5) -> float:
    """Read bandwidth in GB/s (1e9 bytes/s) with the current (or given) thread count."""
    from .jit import set_threads, threads_setting

    nbytes = probe_bytes() if nbytes is None else nbytes
    old = threads_setting()
    if threads is not None:
        set_threads(threads)
    try:
        buf = np.ones(nbytes // 8, np.uint64)  # written, so every page is real memory
        n = get_threads()
        _read_all(buf[:1024], n)  # compile / load
        best = float("inf")
        for _ in range(passes):
            t0 = time.perf_counter()
            _read_all(buf, n * 4)
            best = min(best, time.perf_counter() - t0)
        return buf.nbytes / best / 1e9
    finally:
        set_threads(old)


def _measure_in_a_new_process(n: int) -> float:
    """measure_read_gbs(n) in a fresh interpreter, so that the probe's buffer never counts in
    this process's peak RSS (which bench reports)."""
    import subprocess
    import sys

    from .errors import TinyLLMError

    r = subprocess.run([sys.executable, "-m", "tinyllm.bandwidth", str(n)], capture_output=True, text=True)
    try:
        return float(r.stdout.strip())
    except ValueError:
        raise TinyLLMError(f"the memory bandwidth probe failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}") from None


QUIET_LOAD = 0.25  # cores' worth of other processes' load above which a probe is not cached


def _cache(threads):
    import llvmlite.binding as llvm

    n = threads if threads is not None else get_threads()
    try:
        cached = json.loads((cache_dir() / "bandwidth.json").read_text())
    except (OSError, ValueError):
        cached = {}
    key = f"{llvm.get_host_cpu_name()}|{n}|{probe_bytes() >> 20} MiB"
    return n, key, cached if isinstance(cached, dict) else {}


def cached_read_gbs(threads: int | None = None) -> float | None:
    """The cached figure of read_gbs, or None when it has not been measured here yet."""
    _, key, cached = _cache(threads)
    v = cached.get(key)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


def read_gbs(threads: int | None = None) -> float:
    """measure_read_gbs, cached per CPU and thread count (a figure measured while other
    processes kept a quarter core or more busy is returned but not cached)."""
    known = cached_read_gbs(threads)
    if known is not None:
        return known
    from .idle_cores import IdleCores

    n, key, cached = _cache(threads)
    watch = IdleCores(n)
    gbs = _measure_in_a_new_process(n)
    others = watch.others()
    if others is not None and others > QUIET_LOAD:
        return gbs  # other processes shared the cores or the memory bus: measure again next time
    cached[key] = gbs
    path = cache_dir() / "bandwidth.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return gbs


if __name__ == "__main__":
    import sys

    print(measure_read_gbs(int(sys.argv[1])))
