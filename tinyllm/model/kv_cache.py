"""The KV cache (architectures.md §3): preallocated per layer, f16 by default, f32 or q8_0 selectable.

Layout: per cache group an array K[layer, cell, kv_head, row] (and V alike); one cell holds one
token, its KV heads head-major. A `row` is d values (f32 as float32, f16 as uint16 bits) or
d/32 Q8_0 blocks of 34 bytes (uint8). Token position p lives in cell p % n_cells.

Models with sliding-window layers (Gemma 3) get two groups, as llama.cpp's iswa cache:
- "non-SWA": the full-attention layers, n_ctx cells;
- "SWA": the sliding layers, PAD_256(min(n_ctx, n_swa + n_ubatch)) cells (§3.3), used as a ring
  buffer. A ubatch of up to n_ubatch tokens plus the n_swa positions its first token still sees
  fit in it, so no cell is overwritten while a query can see it.
n_ctx itself is rounded up to a multiple of 256, as llama.cpp does (§3.2).
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ContextFullError, UsageError
from ..jit import get_threads
from . import ops

KV_TYPES = ("f16", "f32", "q8_0")
MIB = 1024 * 1024
PARALLEL_MIN_KEYS = 1024  # decode attention over fewer (keys x KV heads) runs on one thread


def pad_256(n: int) -> int:
    return (n + 255) // 256 * 256


def physical_memory() -> int:
    """Bytes of RAM of this machine (a KV cache larger than that can never be filled)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: numpy's own MemoryError is still caught


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def kv_row_nbytes(kv_type: str, n: int) -> int:
    """ggml row_size of n values: f32 4n, f16 2n, q8_0 n/32·34."""
    return {"f32": 4 * n, "f16": 2 * n, "q8_0": n // 32 * 34}[kv_type]


@dataclass
class KVGroupUsage:
    name: str  # "non-SWA" or "SWA" ("" for a cache with one group)
    layers: int
    cells: int
    cells_used: int
    window: int  # 0 = full attention
    mib_used: float
    mib_allocated: float


@dataclass
class KVUsage:
    tokens_used: int
    n_ctx: int
    mib_used: float
    mib_allocated: float
    groups: list[KVGroupUsage] = field(default_factory=list)


class KVGroup:
    """The K and V arrays of the layers that share one cell count and window."""

    def __init__(self, name, layers, n_cells, window, n_head_kv, head_dim, kv_type):
        self.name = name
        self.layers = list(layers)  # model layer indices, in order
        self.n_cells = n_cells
        self.window = window
        self.kv_type = kv_type
        n = len(self.layers)
        if kv_type == "f32":
            shape, dtype = (n, n_cells, n_head_kv, head_dim), np.float32
        elif kv_type == "f16":
            shape, dtype = (n, n_cells, n_head_kv, head_dim), np.uint16
        else:
            shape, dtype = (n, n_cells, n_head_kv, head_dim // 32 * 34), np.uint8
        # zeros: untouched pages cost no memory until a token is written there
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.row_nbytes = kv_row_nbytes(kv_type, n_head_kv * head_dim)  # bytes of one cell, one layer

    @property
    def k_nbytes(self) -> int:
        return self.row_nbytes * self.n_cells * len(self.layers)

    @property
    def nbytes(self) -> int:
        return 2 * self.k_nbytes


class KVCache:
    """Preallocated K/V storage for every layer; `n_past` tokens (positions 0..n_past-1) are held."""

    def __init__(self, config, n_ctx: int = 4096, kv_type: str = "f16", n_ubatch: int = 512):
        if kv_type not in KV_TYPES:
            raise UsageError(f"KV cache type {kv_type!r} is not supported (supported: {', '.join(KV_TYPES)})")
        if int(n_ctx) < 1:
            raise UsageError(f"n_ctx must be at least 1, got {n_ctx}")
        if int(n_ubatch) < 1:
            raise UsageError(f"n_ubatch must be at least 1, got {n_ubatch}")
        d = config.head_dim
        if kv_type == "q8_0" and d % 32:
            raise UsageError(f"KV cache type q8_0 needs a head size that is a multiple of 32, got {d}")
        self.kv_type = kv_type
        self.n_ctx = pad_256(int(n_ctx))
        self.n_ubatch = int(n_ubatch)
        self.n_head_kv = config.n_head_kv
        self.head_dim = d
        self.n_past = 0
        swa = [il for il in range(config.n_layer) if config.swa_layers[il]]
        full = [il for il in range(config.n_layer) if not config.swa_layers[il]]
        self.iswa = bool(swa) and config.n_swa > 0
        if self.iswa:
            n_swa_cells = pad_256(min(self.n_ctx, config.n_swa + self.n_ubatch))
            plan = [("non-SWA", full, self.n_ctx, 0), ("SWA", swa, n_swa_cells, config.n_swa)]
        else:
            plan = [("", range(config.n_layer), self.n_ctx, 0)]
        row = kv_row_nbytes(kv_type, config.n_head_kv * d)
        need = sum(2 * row * cells * len(layers) for _, layers, cells, _ in plan)
        if need > physical_memory():
            raise UsageError(self._too_big(config, need, f"more than the {format_bytes(physical_memory())} of "
                                                         "memory of this machine"))
        try:
            self.groups = [KVGroup(name, layers, cells, window, config.n_head_kv, d, kv_type)
                           for name, layers, cells, window in plan]
        except MemoryError:
            raise UsageError(self._too_big(config, need, "which could not be allocated")) from None
        self._where = {}
        for g in self.groups:
            for slot, il in enumerate(g.layers):
                self._where[il] = (g, slot)
        # A ubatch may not overwrite ring cells its own first query still sees.
        self.max_ubatch = min(
            [self.n_ubatch] + [g.n_cells - g.window + 1 for g in self.groups if g.window and g.n_cells < self.n_ctx]
        )
        # decode attention: partial results of (key chunk, KV head) tasks, sized once
        group = config.n_head // config.n_head_kv
        self._max_chunks = 8
        n_tasks = self._max_chunks * config.n_head_kv
        self._part_o = np.empty((n_tasks, group, d), np.float32)
        self._part_ml = np.empty((n_tasks, group, 2), np.float32)

    def _too_big(self, config, need: int, why: str) -> str:
        return (
            f"a KV cache of n_ctx {self.n_ctx} tokens ({self.kv_type}) would need {format_bytes(need)}, {why}; "
            f"the model was trained with a context of {config.n_ctx_train} tokens: lower the context size (-c)"
        )

    # -- sizes and reports ------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self.groups)

    def report(self) -> list[str]:
        """The cache's size as llama.cpp logs it (§3.2, §3.3)."""
        lines = []
        for g in self.groups:
            if self.iswa:
                label = "non-SWA" if g.name == "non-SWA" else "    SWA"
                lines.append(f"llama_kv_cache_iswa: creating {label} KV cache, size = {g.n_cells} cells")
            k = g.k_nbytes / MIB
            lines.append(f"llama_kv_cache: {'CPU':>10s} KV buffer size = {2 * k:8.2f} MiB")
            lines.append(
                f"llama_kv_cache: size = {2 * k:7.2f} MiB ({g.n_cells:6d} cells, {len(g.layers):3d} layers, "
                f"{1:2d}/{1} seqs), K ({self.kv_type}): {k:7.2f} MiB, V ({self.kv_type}): {k:7.2f} MiB"
            )
        return lines

    def usage(self) -> KVUsage:
        """Tokens used of n_ctx and MiB used of MiB allocated, with each group apart."""
        groups = []
        for g in self.groups:
            used = min(self.n_past, g.n_cells)
            groups.append(
                KVGroupUsage(
                    name=g.name,
                    layers=len(g.layers),
                    cells=g.n_cells,
                    cells_used=used,
                    window=g.window,
                    mib_used=g.nbytes * used / g.n_cells / MIB,
                    mib_allocated=g.nbytes / MIB,
                )
            )
        return KVUsage(
            tokens_used=self.n_past,
            n_ctx=self.n_ctx,
            mib_used=sum(g.mib_used for g in groups),
            mib_allocated=self.nbytes / MIB,
            groups=groups,
        )

    # -- state ------------------------------------------------------------------------------

    def check_room(self, n_new: int):
        if self.n_past + n_new > self.n_ctx:
            raise ContextFullError(
                f"context full: {self.n_past} tokens in the KV cache + {n_new} new tokens "
                f"> n_ctx {self.n_ctx}"
            )

    def reset(self):
        self.n_past = 0

    def truncate(self, n_past: int):
        """Keep positions 0..n_past-1 and drop the rest.

        Full-attention layers keep every position, so any n_past <= the current one works.
        A sliding-window ring only still holds the last n_cells positions: going back is
        possible while the n_swa - 1 positions before n_past have not been overwritten,
        i.e. n_past - (n_swa - 1) >= current n_past - n_cells; otherwise UsageError
        (reset and prefill again instead)."""
        n_past = int(n_past)
        if not 0 <= n_past <= self.n_past:
            raise UsageError(f"cannot truncate the KV cache to {n_past} tokens: it holds {self.n_past}")
        for g in self.groups:
            if g.window and n_past > 0:
                oldest_kept = self.n_past - g.n_cells  # older positions were overwritten in the ring
                if n_past - (g.window - 1) < oldest_kept:
                    raise UsageError(
                        f"cannot truncate the KV cache from {self.n_past} to {n_past} tokens: the sliding-window "
                        f"layers keep only the last {g.n_cells} positions and need the {g.window - 1} before "
                        f"position {n_past}; the earliest possible is {oldest_kept + g.window - 1}"
                    )
        self.n_past = n_past

    # -- per layer ----------------------------------------------------------------------------

    def store(self, il: int, k: np.ndarray, v: np.ndarray, pos0: int):
        """Write k, v (T, Hkv, d) float32 of layer il at positions pos0..pos0+T-1."""
        g, slot = self._where[il]
        kc, vc = g.k[slot], g.v[slot]
        if self.kv_type == "f16":
            ops.store_f16(kc, k, pos0)
            ops.store_f16(vc, v, pos0)
        elif self.kv_type == "f32":
            ops.store_f32(kc, k, pos0)
            ops.store_f32(vc, v, pos0)
        else:
            for src, dst in ((k, kc), (v, vc)):
                qs, d = _quantize_q8_0(src.reshape(src.shape[0], -1))
                ops.store_q8_0(dst, qs, d, pos0)

    def attend(self, il: int, out: np.ndarray, q: np.ndarray, pos0: int, kq_scale: float):
        """out (T, H, d) = softmax(q·K^T·kq_scale + mask)·V over the cached positions of layer il."""
        g, slot = self._where[il]
        if q.shape[0] > 1:
            ops.attn_prefill(out, q, g.k[slot], g.v[slot], pos0, g.window, kq_scale)
            return
        n_keys = pos0 + 1 if not g.window else min(pos0 + 1, g.window)
        threads = get_threads()
        # a parallel region costs tens of µs to start: worth it only for long ranges of keys
        if threads == 1 or n_keys * self.n_head_kv < PARALLEL_MIN_KEYS:
            ops.attn_decode_serial(out[0], q[0], g.k[slot], g.v[slot], pos0, g.window, kq_scale,
                                   self._part_o, self._part_ml)
            return
        n_chunk = min(self._max_chunks, -(-2 * threads // self.n_head_kv), max(1, n_keys // ops.KEY_TILE))
        ops.attn_decode(out[0], q[0], g.k[slot], g.v[slot], pos0, g.window, kq_scale,
                        self._part_o, self._part_ml, n_chunk)


def _quantize_q8_0(x: np.ndarray):
    """Rows x (T, n) -> (qs int8 (T, n), d float32 (T, n/32)) with the CPU backend's activation-side
    Q8_0 quantizer (kquants.md §3.9), which llama.cpp also uses to write a q8_0 cache."""
    from ..quants.act import Q8_0, quantize_act

    qs, d, _ = quantize_act(Q8_0, np.ascontiguousarray(x, dtype=np.float32))
    return qs, d
