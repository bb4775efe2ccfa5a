"""Kernel benchmark: GMAC/s and GB/s of weight bytes for every weight type, decode and prefill.

`run_kernel_bench()` returns rows (dicts); `tinyllm bench --kernels` and
`benchmarks/bench_kernels.py` print them. Weights are random blocks with finite scales;
decode cycles through enough copies of a matrix to exceed the last-level cache, so the
GB/s figure is main-memory bandwidth, not cache bandwidth. Nothing here prints.
"""
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..jit import set_threads, threads_setting
from .iq1_m import BLOCK as IQ1_M_BLOCK
from .matmul import QMatrix, matmul
from .registry import MATMUL_TYPES, TYPES
from .types import BLOCK_SIZES, FLOAT_TYPES, GGMLType, row_nbytes

DEFAULT_TYPES = tuple(t.name for t in MATMUL_TYPES)  # every type the runtime multiplies
# (n_out, n_in) per case; Gemma 3's tied output matrix is the largest single decode read
SQUARE = (2048, 2048)
GEMMA_OUTPUT = (262144, 640)
CACHE_BYTES = 96 << 20  # decode rotates over copies totalling at least this (L3 here is 32 MiB)


@dataclass
class KernelBenchRow:
    type: str
    n_out: int
    n_in: int
    T: int  # activation rows: 1 = decode, > 1 = prefill
    threads: int
    seconds: float  # best time of one matmul call
    gmacs: float  # 1e9 multiply-adds per second
    gbs: float  # 1e9 bytes of (GGUF-sized) weights per second

    def as_dict(self):
        return asdict(self)


def random_blocks(wtype, n_out: int, n_in: int, seed: int = 0) -> np.ndarray:
    """Random block bytes (n_out, row_nbytes): random quant bytes, and every fp16 field of the
    block layout (d, dmin, m; IQ1_M's d in its scales) a finite scale in [0, 0.01)."""
    wtype = GGMLType(wtype)
    rng = np.random.default_rng(seed)
    blck, nbytes = BLOCK_SIZES[wtype]
    nb = n_in // blck
    raw = rng.integers(0, 256, (n_out, nb, nbytes), dtype=np.uint8)
    block = TYPES[wtype].block
    for name in block.names:
        if block.fields[name][0] == np.dtype("<f2"):
            off = block.fields[name][1]
            scale = (rng.random((n_out, nb), dtype=np.float32) * np.float32(0.01)).astype("<f2")
            raw[:, :, off : off + 2] = scale.view(np.uint8).reshape(n_out, nb, 2)
    if wtype == GGMLType.IQ1_M:  # its fp16 d is spread over the top nibbles of the 4 scale words
        sc = raw.reshape(-1).view(IQ1_M_BLOCK)["scales"]
        bits = (rng.random(sc.shape[0], dtype=np.float32) * np.float32(0.01)).astype("<f2").view(np.uint16)
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 15) << 12)
    return raw.reshape(n_out, row_nbytes(wtype, n_in))


def random_qmatrix(wtype, n_out: int, n_in: int, seed: int = 0) -> QMatrix:
    """A QMatrix of random blocks (random_blocks), or of random float weights."""
    wtype = GGMLType(wtype)
    rng = np.random.default_rng(seed)
    if wtype in FLOAT_TYPES:
        w = rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(0.05)
        if wtype == GGMLType.F32:
            raw = w.view(np.uint8)
        elif wtype == GGMLType.F16:
            raw = w.astype(np.float16).view(np.uint8)
        else:
            raw = (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return QMatrix(wtype, raw.reshape(n_out, -1), n_in, name=f"random-{wtype.name}")
    return QMatrix(wtype, random_blocks(wtype, n_out, n_in, seed), n_in, name=f"random-{wtype.name}")


def _time_calls(mats, x, out, min_calls: int, min_seconds: float) -> float:
    """Best per-call time over rounds that each touch every matrix once."""
    best = np.inf
    calls = 0
    t_start = time.perf_counter()
    while calls < min_calls or time.perf_counter() - t_start < min_seconds:
        t0 = time.perf_counter()
        for w in mats:
            matmul(w, x, out)
        best = min(best, (time.perf_counter() - t0) / len(mats))
        calls += len(mats)
    return best


def bench_case(wtype, n_out, n_in, T, threads, *, min_seconds=0.5, seed=0, mats=None) -> KernelBenchRow:
    wtype = GGMLType(wtype) if not isinstance(wtype, str) else GGMLType[wtype]
    if mats is None:
        w = random_qmatrix(wtype, n_out, n_in, seed)
        copies = 1 if T > 1 else max(1, -(-CACHE_BYTES // w.nbytes))
        mats = [w] + [random_qmatrix(wtype, n_out, n_in, seed + i + 1) for i in range(copies - 1)]
    x = np.random.default_rng(seed).standard_normal((T, n_in), dtype=np.float32)
    out = np.empty((T, n_out), np.float32)
    old = threads_setting()
    set_threads(threads)
    try:
        matmul(mats[0], x, out)  # compile / warm up
        sec = _time_calls(mats, x, out, min_calls=3, min_seconds=min_seconds)
    finally:
        set_threads(old)
    macs = n_out * n_in * T
    return KernelBenchRow(wtype.name, n_out, n_in, T, threads, sec, macs / sec / 1e9, mats[0].nbytes / sec / 1e9)


def run_kernel_bench(
    types=DEFAULT_TYPES, threads=(1, 2), prefill_T: int = 64, gemma_output: bool = True, min_seconds: float = 0.5, on_row=None
) -> list[dict]:
    """Decode (T=1) and prefill (T=prefill_T) of a 2048x2048 matrix per type, at each thread
    count, plus Gemma 3's 262144x640 Q8_0 output matrix. `on_row(row_dict)` is called as
    each row is measured (for progress); returns all rows as dicts."""
    rows = []
    cases = []
    for name in types:
        wtype = GGMLType[name.upper()]
        cases.append((wtype, *SQUARE))
    if gemma_output:
        cases.append((GGMLType.Q8_0, *GEMMA_OUTPUT))
    for wtype, n_out, n_in in cases:
        w = random_qmatrix(wtype, n_out, n_in, 0)
        copies = max(1, -(-CACHE_BYTES // w.nbytes))
        decode_mats = [w] + [random_qmatrix(wtype, n_out, n_in, i + 1) for i in range(copies - 1)]
        for T, mats in ((1, decode_mats), (prefill_T, [w])):
            if T > 1 and n_out > 65536:
                continue  # the output matrix only sees the last token of a prompt
            for th in threads:
                row = bench_case(wtype, n_out, n_in, T, th, min_seconds=min_seconds, mats=mats).as_dict()
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows
