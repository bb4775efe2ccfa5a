"""Quality of a (quantized) model against a base model's saved log-probabilities, as
llama-perplexity computes it (`--kl-divergence-base FILE [--kl-divergence]`; tools/perplexity/
perplexity.cpp, `kl_divergence` and the `log_softmax` overloads).

The base file (llama-perplexity's format, little-endian; both tools read each other's files):

    "_logits_"                   8 bytes
    n_ctx, n_vocab, n_chunk      int32 each
    tokens                       int32 [n_chunk * n_ctx]: the text's tokens (BOS first), as tokenized
    per chunk, per scored position (n_ctx - 1 - n_ctx // 2 of them), nv = 2*((n_vocab+1)//2) + 4 uint16:
        [0:2] float32 scale   [2:4] float32 min_log_prob   [4:4+n_vocab] uint16 q   (rest 0)
        log p[i] = scale * q[i] + min_log_prob; logits below max - 16 are stored as q = 0

Writing it is a perplexity run (tinyllm.perplexity.perplexity(..., save_log_probs=FILE)); the
KL run reads the tokens from the file, evaluates the same chunks with the model and, per
scored position, compares with the base: KL(base || model), the negative log-likelihoods of
both, whether the most probable token is the same, and Δp = p(token) - p_base(token). The
arithmetic follows llama.cpp's types (float32 per position, sums in double), so the figures
agree with llama-perplexity's to float rounding.
"""
from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic_file import TempOutput
from .errors import UsageError

MAGIC = b"_logits_"
HEADER = struct.Struct("<8siii")  # magic, n_ctx, n_vocab, n_chunk
LOG_P_RANGE = np.float32(16)  # log-probabilities below max - 16 are not resolved
ROW_ELEMENTS = 1 << 22  # positions per NumPy block: about this many (position, token) values


def row_length(n_vocab: int) -> int:
    """uint16 per stored position: 4 (two float32) + n_vocab rounded up to even."""
    return 2 * ((n_vocab + 1) // 2) + 4


def n_scored(n_ctx: int) -> int:
    """Positions scored per chunk: n_ctx/2 .. n_ctx-2."""
    return n_ctx - 1 - n_ctx // 2


def _sum_exp(logits: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """Σ expf(logit - max) per row in double, as llama.cpp (exp in float32, sum in double)."""
    return np.exp(logits - mx[:, None]).sum(axis=1, dtype=np.float64)


def compress_log_probs(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the base file for logits (T, n_vocab) float32, and the negative log-likelihood
    (T,) of each target, as llama-perplexity writes them (the float32 arithmetic of its writer)."""
    logits = np.ascontiguousarray(logits, np.float32)
    T, V = logits.shape
    out = np.zeros((T, row_length(V)), np.uint16)
    nll = np.empty(T, np.float64)
    block = max(1, ROW_ELEMENTS // max(V, 1))
    for s in range(0, T, block):
        x = logits[s:s + block]
        mx = x.max(axis=1)
        mn = np.maximum(x.min(axis=1), mx - LOG_P_RANGE)
        lse = np.log(_sum_exp(x, mx)).astype(np.float32)
        min_log_prob = (mn - mx) - lse
        scale = (mx - mn) / np.float32(65535)
        with np.errstate(divide="ignore"):
            inv = np.where(scale != 0, np.float32(1) / np.where(scale != 0, scale, 1), 0).astype(np.float32)
        q = np.rint(inv[:, None] * (x - mn[:, None])).astype(np.int64) & 0xFFFF  # nearest_int, stored as uint16
        q[x <= mn[:, None]] = 0
        rows = out[s:s + block]
        rows[:, 0:2] = scale.astype("<f4").reshape(-1, 1).view(np.uint16)
        rows[:, 2:4] = min_log_prob.astype("<f4").reshape(-1, 1).view(np.uint16)
        rows[:, 4:4 + V] = q
        tok = np.asarray(targets[s:s + block], np.int64)
        nll[s:s + block] = ((mx + lse) - x[np.arange(len(x)), tok]).astype(np.float32)
    return out, nll


def unpack_rows(rows: np.ndarray, n_vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale (T,), min_log_prob (T,), q (T, n_vocab) uint16) of stored rows (T, nv) uint16."""
    rows = np.ascontiguousarray(rows, np.uint16)
    scale = rows[:, 0:2].copy().view("<f4").reshape(-1).astype(np.float32)
    min_log_prob = rows[:, 2:4].copy().view("<f4").reshape(-1).astype(np.float32)
    return scale, min_log_prob, rows[:, 4:4 + n_vocab]


class KLBaseWriter:
    """Writes a base file: header and tokens first, then one chunk's rows at a time; the file
    appears under its name only when close() is reached without an error."""

    def __init__(self, path, n_ctx: int, n_vocab: int, tokens: np.ndarray):
        self.path = Path(path)
        try:
            self._out = TempOutput(self.path)
        except OSError as e:
            raise self._cannot_write(e) from None
        self.n_ctx, self.n_vocab = int(n_ctx), int(n_vocab)
        tokens = np.asarray(tokens, "<i4")
        n_chunk = len(tokens) // self.n_ctx
        self._write(HEADER.pack(MAGIC, self.n_ctx, self.n_vocab, n_chunk) + tokens[: n_chunk * self.n_ctx].tobytes())

    def write_chunk(self, rows: np.ndarray) -> None:
        if rows.shape != (n_scored(self.n_ctx), row_length(self.n_vocab)):
            raise UsageError(f"{self.path}: a chunk has {n_scored(self.n_ctx)} rows of {row_length(self.n_vocab)}, got {rows.shape}")
        self._write(np.ascontiguousarray(rows, "<u2").tobytes())

    def close(self) -> None:
        try:
            self._out.publish(fsync=False)  # the base is remade from the model if a crash loses it
        except OSError as e:
            self._out.discard()
            raise self._cannot_write(e) from None

    def abort(self) -> None:
        self._out.discard()

    def _write(self, data: bytes) -> None:
        try:
            self._out.file.write(data)
        except OSError as e:
            self._out.discard()
            raise self._cannot_write(e) from None

    def _cannot_write(self, e: OSError) -> UsageError:
        return UsageError(f"cannot write {self.path}: {e.strerror or e}")


@dataclass
class KLBase:
    """A base file opened for reading: header, tokens, and chunk(i) -> rows (n_scored, nv) uint16."""

    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 (n_chunk * n_ctx,)
    _rows: np.ndarray  # memory-mapped uint16 (n_chunk, n_scored, nv)

    def chunk(self, i: int) -> np.ndarray:
        return np.asarray(self._rows[i])


def read_kl_base(path) -> KLBase:
    """Open a base file written by llama-perplexity or tinyllm; UsageError names the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if len(head) < 8 or head[:8] != MAGIC:
        raise UsageError(f"{path} does not look like a file of log-probabilities (no '_logits_' header)")
    if len(head) < HEADER.size:
        raise UsageError(f"{path}: truncated header ({len(head)} bytes)")
    _, n_ctx, n_vocab, n_chunk = HEADER.unpack(head)
    if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
        raise UsageError(f"{path}: bad header: n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}")
    n_tok = n_ctx * n_chunk
    rows_at = HEADER.size + 4 * n_tok
    need = rows_at + 2 * n_chunk * n_scored(n_ctx) * row_length(n_vocab)
    if size < need:
        raise UsageError(
            f"{path}: truncated: {n_chunk} chunks of n_ctx {n_ctx} over {n_vocab} tokens need {need} bytes, the file has {size}"
        )
    tokens = np.fromfile(path, "<i4", n_tok, offset=HEADER.size).astype(np.int32)
    rows = np.memmap(path, "<u2", "r", rows_at, (n_chunk, n_scored(n_ctx), row_length(n_vocab)))
    return KLBase(path, n_ctx, n_vocab, n_chunk, tokens, rows)


@dataclass
class KLSums:
    """llama.cpp's kl_divergence_result: running sums over the scored positions."""

    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    max_p_diff: float = 0.0
    n_same_top: int = 0
    count: int = 0

    def add(self, logits: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score positions: logits (T, n_vocab) float32 of the model, rows (T, nv) of the base,
        targets (T,). Returns (KLD (T,) float32, Δp (T,) float32)."""
        logits = np.ascontiguousarray(logits, np.float32)
        T, V = logits.shape
        kld_out = np.empty(T, np.float32)
        dp_out = np.empty(T, np.float32)
        block = max(1, ROW_ELEMENTS // max(V, 1))
        for s in range(0, T, block):
            x = logits[s:s + block]
            n = len(x)
            r = np.arange(n)
            tok = np.asarray(targets[s:s + block], np.int64)
            scale, min_lp, q = unpack_rows(rows[s:s + block], V)
            imax = x.argmax(axis=1)
            mx = x[r, imax]
            lse = np.log(_sum_exp(x, mx)).astype(np.float32)
            nll = (mx + lse) - x[r, tok]
            nll_base = -(scale * q[r, tok].astype(np.float32) + min_lp)
            self.sum_nll += float(nll.sum(dtype=np.float64))
            self.sum_nll2 += float((nll * nll).sum(dtype=np.float64))
            self.sum_nll_base += float(nll_base.sum(dtype=np.float64))
            self.sum_nll_base2 += float((nll_base * nll_base).sum(dtype=np.float64))
            self.sum_nll_nll_base += float((nll * nll_base).sum(dtype=np.float64))
            log_p_base = scale[:, None] * q.astype(np.float32) + min_lp[:, None]  # (n, V)
            imax_base = log_p_base.argmax(axis=1)
            terms = np.exp(log_p_base) * ((log_p_base - x) + (mx + lse)[:, None])
            kld = np.where(log_p_base > -LOG_P_RANGE, terms, np.float32(0)).sum(axis=1, dtype=np.float64)
            self.sum_kld += float(kld.sum())
            self.sum_kld2 += float((kld * kld).sum())
            self.count += n
            self.n_same_top += int((imax == imax_base).sum())
            p_diff = np.exp(-nll) - np.exp(-nll_base)
            p_diff2 = (p_diff * p_diff).astype(np.float64)
            self.sum_p_diff += float(p_diff.sum(dtype=np.float64))
            self.sum_p_diff2 += float(p_diff2.sum())
            self.sum_p_diff4 += float((p_diff2 * p_diff2).sum())
            self.max_p_diff = max(self.max_p_diff, float(np.abs(p_diff).max()))
            kld_out[s:s + n] = kld
            dp_out[s:s + n] = p_diff
        return kld_out, dp_out


def mean_and_uncertainty(total: float, total2: float, count: int) -> tuple[float, float]:
    """llama.cpp's: mean and its standard error (0 unless the variance is positive and count > 10)."""
    if count < 1:
        return 0.0, 0.0
    f = total / count
    df = total2 / count - f * f
    return f, (math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0)


def covariance(sum_a: float, sum_b: float, sum_ab: float, count: int) -> float:
    """llama.cpp's covariance of the means (0 under 10 values)."""
    if count < 10:
        return 0.0
    return (sum_ab / count - (sum_a / count) * (sum_b / count)) / (count - 1)


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * (1 if b >= 0 else -1)


@dataclass
class KLRow:
    """The running figures llama-perplexity prints after each chunk (value, uncertainty)."""

    chunk: int
    ppl: tuple[float, float]
    ln_ppl_ratio: tuple[float, float]
    kld: tuple[float, float]
    rms_dp: tuple[float, float]  # fractions (llama prints percent)
    same_top: tuple[float, float]


def running_row(chunk: int, k: KLSums) -> KLRow:
    log_ppl = mean_and_uncertainty(k.sum_nll, k.sum_nll2, k.count)
    log_base = mean_and_uncertainty(k.sum_nll_base, k.sum_nll_base2, k.count)
    cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count)
    ppl = math.exp(log_ppl[0])
    ratio = (log_ppl[0] - log_base[0], math.sqrt(max(0.0, log_ppl[1] ** 2 + log_base[1] ** 2 - 2.0 * cov)))
    mse = mean_and_uncertainty(k.sum_p_diff2, k.sum_p_diff4, k.count)
    rms = math.sqrt(mse[0])
    top = k.n_same_top / k.count
    return KLRow(
        chunk,
        (ppl, ppl * log_ppl[1]),
        ratio,
        mean_and_uncertainty(k.sum_kld, k.sum_kld2, k.count),
        (rms, _div(0.5, rms) * mse[1]),
        (top, math.sqrt(max(0.0, _div(top * (1 - top), k.count - 1)))),
    )


def percentile(values: np.ndarray, fraction: float) -> float:
    """llama.cpp's linear-interpolated percentile of sorted float32 values, in float32."""
    f = np.float32(fraction)
    if f <= 0:
        return float(values[0])
    if f >= 1:
        return float(values[-1])
    p = np.float32(f * np.float32(len(values) - 1))
    ip = int(p)
    p = np.float32(p - np.float32(ip))
    return float((np.float32(1) - p) * values[ip] + p * values[min(ip + 1, len(values) - 1)])


def median(values: np.ndarray) -> float:
    n = len(values)
    return float(np.float32(0.5) * (values[n // 2] + values[n // 2 - 1])) if n % 2 == 0 else float(values[n // 2])


KLD_PERCENTILES = (0.999, 0.990, 0.950, 0.900, 0.100, 0.050, 0.010, 0.001)  # plus max, median, min
DP_PERCENTILES = (0.999, 0.990, 0.950, 0.900, 0.750, 0.250, 0.100, 0.050, 0.010, 0.001)


@dataclass
class KLDivergenceResult:
    """What llama-perplexity --kl-divergence reports (its final block needs >= 100 positions).

    Pairs are (value, uncertainty). Probabilities and Δp are fractions (llama prints percent)."""

    base_path: Path
    n_ctx: int
    n_chunks: int
    count: int  # positions scored
    sums: KLSums
    rows: list[KLRow]  # the running table, one row per chunk
    ppl: tuple[float, float]  # PPL(Q)
    ppl_base: tuple[float, float]  # PPL(base), from the stored log-probabilities
    cor_ln_ppl: float  # correlation of ln PPL(Q) and ln PPL(base)
    ln_ppl_ratio: tuple[float, float]  # mean ln(PPL(Q)/PPL(base))
    ppl_ratio: tuple[float, float]  # PPL(Q)/PPL(base)
    ppl_diff: tuple[float, float]  # PPL(Q)-PPL(base), the Δppl
    kld: tuple[float, float]  # mean KL divergence
    kld_max: float
    kld_median: float
    kld_min: float
    kld_percentiles: dict[float, float]  # fraction -> value (99.9%, 99%, 95%, 90%, 10%, 5%, 1%, 0.1%)
    dp: tuple[float, float]  # mean Δp
    dp_max: float
    dp_median: float
    dp_min: float
    dp_percentiles: dict[float, float]
    rms_dp: tuple[float, float]
    same_top: tuple[float, float]  # fraction of positions whose most probable token is the same
    kld_values: np.ndarray = field(repr=False, default=None)  # float32 per position, in order
    dp_values: np.ndarray = field(repr=False, default=None)
    seconds: float = 0.0


def summarize(base_path, n_ctx: int, n_chunks: int, k: KLSums, rows: list[KLRow], kld_values, dp_values,
              seconds: float = 0.0) -> KLDivergenceResult:
    """The final statistics llama-perplexity prints (the `====== ... statistics ======` blocks)."""
    ks, ds = np.sort(kld_values), np.sort(dp_values)
    log_ppl = mean_and_uncertainty(k.sum_nll, k.sum_nll2, k.count)
    log_base = mean_and_uncertainty(k.sum_nll_base, k.sum_nll_base2, k.count)
    cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count)
    ppl = math.exp(log_ppl[0])
    ppl_base = math.exp(log_base[0])
    ppl_unc, base_unc = ppl * log_ppl[1], ppl_base * log_base[1]
    ratio = log_ppl[0] - log_base[0]
    ratio_unc = math.sqrt(max(0.0, log_ppl[1] ** 2 + log_base[1] ** 2 - 2.0 * cov))
    ppl_cov = ppl * ppl_base * cov
    mse = mean_and_uncertainty(k.sum_p_diff2, k.sum_p_diff4, k.count)
    rms = math.sqrt(mse[0])
    top = _div(k.n_same_top, k.count)
    empty = len(ks) == 0
    return KLDivergenceResult(
        base_path=Path(base_path), n_ctx=n_ctx, n_chunks=n_chunks, count=k.count, sums=k, rows=rows,
        ppl=(ppl, ppl_unc), ppl_base=(ppl_base, base_unc),
        cor_ln_ppl=_div(cov, log_ppl[1] * log_base[1]),
        ln_ppl_ratio=(ratio, ratio_unc),
        ppl_ratio=(math.exp(ratio), math.exp(ratio) * ratio_unc),
        ppl_diff=(ppl - ppl_base, math.sqrt(max(0.0, ppl_unc ** 2 + base_unc ** 2 - 2.0 * ppl_cov))),
        kld=mean_and_uncertainty(k.sum_kld, k.sum_kld2, k.count),
        kld_max=math.nan if empty else float(ks[-1]),
        kld_median=math.nan if empty else median(ks),
        kld_min=math.nan if empty else float(ks[0]),
        kld_percentiles={} if empty else {f: percentile(ks, f) for f in KLD_PERCENTILES},
        dp=mean_and_uncertainty(k.sum_p_diff, k.sum_p_diff2, k.count),
        dp_max=math.nan if empty else float(ds[-1]),
        dp_median=math.nan if empty else median(ds),
        dp_min=math.nan if empty else float(ds[0]),
        dp_percentiles={} if empty else {f: percentile(ds, f) for f in DP_PERCENTILES},
        rms_dp=(rms, _div(0.5, rms) * mse[1]),
        same_top=(top, math.sqrt(max(0.0, _div(top * (1 - top), k.count - 1)))),
        kld_values=np.asarray(kld_values, np.float32), dp_values=np.asarray(dp_values, np.float32),
        seconds=seconds,
    )


def kl_divergence(
    model,
    base,
    *,
    n_batch: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    progress: Callable[[KLRow, int, float], None] | None = None,
) -> KLDivergenceResult:
    """Compare `model` with a base file (path or KLBase) over the file's own tokens and chunks.

    on_start(n_chunks, n_ctx) once the file is read; progress(row, n_chunks, seconds) after each chunk."""
    from .perplexity import eval_chunk

    base = base if isinstance(base, KLBase) else read_kl_base(base)
    V = int(model.config.n_vocab)
    if base.n_vocab != V:
        raise UsageError(f"{base.path}: the base log-probabilities are over {base.n_vocab} tokens, the model has {V}")
    n_ctx = base.n_ctx
    if int(model.kv.n_ctx) < n_ctx:
        raise UsageError(f"{base.path} was computed with n_ctx {n_ctx}; the model was loaded with {model.kv.n_ctx}")
    n_batch = n_ctx if n_batch is None else min(int(n_batch), n_ctx)
    if n_batch < 1:
        raise UsageError(f"batch size must be >= 1, got {n_batch}")
    if int(base.tokens.max(initial=0)) >= V or int(base.tokens.min(initial=0)) < 0:
        raise UsageError(f"{base.path}: token ids out of range for a vocabulary of {V} tokens")
    if on_start is not None:
        on_start(base.n_chunk, n_ctx)
    first = n_ctx // 2
    k = KLSums()
    rows: list[KLRow] = []
    klds, dps = [], []
    t0 = time.perf_counter()
    for i in range(base.n_chunk):
        start = i * n_ctx
        logits = eval_chunk(model, base.tokens[start:start + n_ctx], n_batch)
        kld, dp = k.add(logits[first:n_ctx - 1], base.chunk(i), base.tokens[start + first + 1:start + n_ctx])
        klds.append(kld)
        dps.append(dp)
        rows.append(running_row(i + 1, k))
        if progress is not None:
            progress(rows[-1], base.n_chunk, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    return summarize(base.path, n_ctx, base.n_chunk, k, rows, np.concatenate(klds), np.concatenate(dps), seconds)
