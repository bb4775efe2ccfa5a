"""Model benchmark measured as llama-bench does (tools/llama-bench).

For each test: one warm-up run (it also pays the JIT compile, reported apart), then `reps`
timed repetitions. A pp test is one prefill of n_prompt random tokens; a tg test is n_gen
decode steps of one random token each. Tokenization and sampling are not timed. With
depth > 0 the cache is first filled with `depth` random tokens once and truncated back to
`depth` before each repetition, so every repetition starts from the same cache.

t/s is the mean ± sample standard deviation (n - 1) of the per-repetition tokens/s, as
llama-bench. Extra figures: KV cache MiB (allocated), peak RSS, and in tg the weight bytes
read per token (every weight matrix once, the tied embedding counted as the output matrix)
divided by the time per token.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .errors import TinyLLMError, UsageError, show
from .quants.types import GGMLType

# llama.cpp's llama_model_ftype_name
FTYPE_NAMES = {
    0: "all F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K - Medium",
    11: "Q3_K - Small",
    12: "Q3_K - Medium",
    13: "Q3_K - Large",
    14: "Q4_K - Small",
    15: "Q4_K - Medium",
    16: "Q5_K - Small",
    17: "Q5_K - Medium",
    18: "Q6_K",
    32: "BF16",
}


def ftype_name(file_type) -> str:
    if file_type is None:
        return "unknown"
    if isinstance(file_type, (bool, np.bool_)) or not isinstance(file_type, (int, np.integer)):
        return f"not a file type: {show(file_type)}"  # a corrupt file's value, quoted short
    return FTYPE_NAMES.get(int(file_type), f"file type {int(file_type)}")


def format_size(nbytes: int) -> str:
    """llama-bench's size column: MiB below 1 GiB, else GiB."""
    return f"{nbytes / 2**20:.2f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:.2f} GiB"


def format_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def param_label(n: int) -> str:
    """Short size label such as 270M or 7B (used when general.size_label is absent)."""
    return f"{n / 1e9:.0f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


@dataclass
class ModelSummary:
    desc: str  # "gemma3 270M Q4_K - Medium", as llama-bench's model column
    size: int  # bytes of all tensors
    n_params: int
    weight_bytes_per_token: int  # bytes of weight matrices read to decode one token


def _plain(text: str) -> str:
    """A metadata string as it is when short and printable, else quoted by errors.show."""
    return text if text.isprintable() and len(text) <= 60 else show(text)


def summarize(gguf) -> ModelSummary:
    """Model column, size and parameter count from a GGUFFile, as llama.cpp computes them."""
    tensors = list(gguf.tensors.values())
    size = sum(int(t.nbytes) for t in tensors)
    n_params = sum(int(np.prod(t.shape)) for t in tensors)
    names = {t.name for t in tensors}
    per_token = 0
    for t in tensors:
        if len(t.shape) != 2:
            continue
        if t.name == "token_embd.weight":
            # a lookup reads one row; a tied output head reads the whole matrix
            per_token += int(t.nbytes) if "output.weight" not in names else int(t.nbytes) // int(t.shape[0])
        else:
            per_token += int(t.nbytes)
    md = gguf.metadata
    label = md.get("general.size_label")
    label = _plain(label) if isinstance(label, str) and label else param_label(n_params)
    arch = _plain(gguf.arch) if isinstance(gguf.arch, str) and gguf.arch else "unknown"
    desc = f"{arch} {label} {ftype_name(md.get('general.file_type'))}"
    return ModelSummary(desc=desc, size=size, n_params=n_params, weight_bytes_per_token=per_token)


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024  # Linux reports KiB


@dataclass
class BenchResult:
    model: str
    size: int
    n_params: int
    threads: int
    n_prompt: int
    n_gen: int
    n_depth: int
    samples_s: list[float] = field(default_factory=list)
    kv_mib: float = 0.0
    peak_rss_mib: float = 0.0
    warmup_seconds: float = 0.0
    compile_seconds: float = 0.0
    weight_bytes_per_token: int = 0
    read_gbs: float | None = None  # the machine's read bandwidth at this thread count (bandwidth.py)
    threads_auto: bool = False  # -t auto: `threads` at the start, then as many as cores are idle

    @property
    def test(self) -> str:
        name = f"pp{self.n_prompt}" if self.n_prompt else f"tg{self.n_gen}"
        return f"{name} @ d{self.n_depth}" if self.n_depth else name

    @property
    def n_tokens(self) -> int:
        return self.n_prompt + self.n_gen

    @property
    def samples_ts(self) -> list[float]:
        return [self.n_tokens / s for s in self.samples_s]

    @property
    def avg_ts(self) -> float:
        return float(np.mean(self.samples_ts)) if self.samples_s else 0.0

    @property
    def stddev_ts(self) -> float:
        ts = self.samples_ts
        return float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0

    @property
    def weight_gbs(self) -> float | None:
        """Weight bytes read per second in tg (None for pp)."""
        if self.n_prompt or not self.samples_s:
            return None
        return self.weight_bytes_per_token * self.avg_ts / 1e9

    @property
    def bandwidth_fraction(self) -> float | None:
        """tg: weight bytes read per second over the machine's read bandwidth (1.0 = the limit)."""
        gbs = self.weight_gbs
        return None if gbs is None or not self.read_gbs else gbs / self.read_gbs

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            test=self.test,
            avg_ns=int(np.mean(self.samples_s) * 1e9) if self.samples_s else 0,
            stddev_ns=int(np.std(self.samples_s, ddof=1) * 1e9) if len(self.samples_s) > 1 else 0,
            samples_ns=[int(s * 1e9) for s in self.samples_s],
            avg_ts=self.avg_ts,
            stddev_ts=self.stddev_ts,
            samples_ts=self.samples_ts,
            weight_gbs=self.weight_gbs,
            bandwidth_fraction=self.bandwidth_fraction,
        )
        return d


def _compile_seconds(model) -> float:
    return float(getattr(model, "compile_seconds", 0.0) or 0.0)


class _Tokens:
    """Random token ids (llama-bench uses std::rand() % n_vocab), BOS first on an empty cache."""

    def __init__(self, model, seed: int):
        self.rng = np.random.default_rng(seed)
        self.n_vocab = int(model.config.n_vocab)
        try:
            tok = model.tokenizer
        except TinyLLMError:  # a model file without a usable vocabulary still benchmarks
            tok = None
        self.bos = tok.bos_id if tok is not None and tok.add_bos else None

    def prompt(self, n: int, at_start: bool) -> np.ndarray:
        ids = self.rng.integers(0, self.n_vocab, size=n, dtype=np.int32)
        if at_start and self.bos is not None:
            ids[0] = self.bos
        return ids

    def one(self) -> np.ndarray:
        return self.rng.integers(0, self.n_vocab, size=1, dtype=np.int32)


def _run_test(model, toks: _Tokens, n_prompt: int, n_gen: int, depth: int) -> float:
    """One timed repetition from the prepared cache state; returns seconds."""
    t0 = time.perf_counter()
    if n_prompt:
        model.forward(toks.prompt(n_prompt, at_start=depth == 0))
    for _ in range(n_gen):
        model.forward(toks.one())
    return time.perf_counter() - t0


def _prepare(model, toks: _Tokens, depth: int, filled: list) -> None:
    """Reset the cache to `depth` tokens: fill once, later truncate back."""
    if depth == 0:
        model.reset()
    elif filled and filled[0] == depth and model.kv.n_past >= depth:
        model.truncate(depth)
    else:
        model.reset()
        model.forward(toks.prompt(depth, at_start=True))
        filled[:] = [depth]


def run_bench(
    model,
    *,
    n_prompt=(256,),
    n_gen=(64,),
    depth=(0,),
    threads=(None,),
    reps: int = 5,
    warmup: bool = True,
    seed: int = 1234,
    on_result: Callable[[BenchResult], None] | None = None,
    bandwidth: bool = True,
) -> list[BenchResult]:
    """Run every (threads, depth, test) combination; tests are pp for each n_prompt > 0 and
    tg for each n_gen > 0. `on_result` is called as each result is ready. With `bandwidth`,
    tg rows carry the machine's read bandwidth (bandwidth.read_gbs: measured once per CPU and
    thread count, then cached) to show how close decode is to it."""
    from .bandwidth import read_gbs
    from .jit import set_threads, threads_setting

    if reps < 1:
        raise UsageError(f"repetitions must be >= 1, got {reps}")
    for name, vals in (("-p", n_prompt), ("-n", n_gen), ("-d", depth)):
        for v in vals:
            if int(v) != v or v < 0:
                raise UsageError(f"{name} values must be integers >= 0, got {v}")
    tests = [(int(p), 0) for p in n_prompt if p > 0] + [(0, int(n)) for n in n_gen if n > 0]
    if not tests:
        raise UsageError("nothing to run: give -p or -n greater than 0")
    n_ctx = int(model.kv.n_ctx)
    for p, n in tests:
        for d in depth:
            if d + p + n > n_ctx:
                raise UsageError(
                    f"test {'pp' if p else 'tg'}{p or n} at depth {d} needs {d + p + n} tokens of context; "
                    f"the model was loaded with n_ctx {n_ctx}"
                )
    summary = summarize(model.gguf)
    toks = _Tokens(model, seed)
    results = []
    old_threads = threads_setting()
    try:
        for th in threads:
            n_threads = set_threads(th)
            for d in depth:
                filled: list = []
                for p, n in tests:
                    r = BenchResult(
                        read_gbs=read_gbs(n_threads) if bandwidth and n else None,
                        model=summary.desc,
                        size=summary.size,
                        n_params=summary.n_params,
                        threads=n_threads,
                        threads_auto=th is None,
                        n_prompt=p,
                        n_gen=n,
                        n_depth=int(d),
                        weight_bytes_per_token=summary.weight_bytes_per_token,
                    )
                    c0 = _compile_seconds(model)
                    if warmup:
                        # llama-bench: a prompt of n_prompt for pp, one decode step for tg
                        _prepare(model, toks, int(d), filled)
                        r.warmup_seconds = _run_test(model, toks, p, 1 if n else 0, int(d))
                    for _ in range(reps):
                        _prepare(model, toks, int(d), filled)
                        r.samples_s.append(_run_test(model, toks, p, n, int(d)))
                    r.compile_seconds = _compile_seconds(model) - c0
                    r.kv_mib = model.kv.nbytes / 2**20
                    r.peak_rss_mib = peak_rss_bytes() / 2**20
                    results.append(r)
                    if on_result is not None:
                        on_result(r)
    finally:
        set_threads(old_threads)
    return results


MD_COLUMNS = ("model", "size", "params", "backend", "threads", "test", "t/s", "KV MiB", "peak RSS MiB", "weights GB/s",
              "of read BW")


def markdown_row(r: BenchResult) -> list[str]:
    gbs = r.weight_gbs
    return [
        r.model,
        format_size(r.size),
        format_params(r.n_params),
        "CPU",
        "auto" if r.threads_auto else str(r.threads),
        r.test,
        f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}",
        f"{r.kv_mib:.2f}",
        f"{r.peak_rss_mib:.1f}",
        "" if gbs is None else f"{gbs:.2f}",
        "" if r.bandwidth_fraction is None else f"{100 * r.bandwidth_fraction:.0f}% of {r.read_gbs:.1f}",
    ]


def markdown_table(rows: list[list[str]], columns=MD_COLUMNS, left=("model", "backend", "test")) -> list[str]:
    """llama-bench style markdown: text columns left-aligned, numbers right-aligned."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    right = {i for i, c in enumerate(columns) if c not in left}

    def fmt(cells):
        return "| " + " | ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))
        ) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + " |"
    return [fmt(columns), sep] + [fmt(row) for row in rows]


def kv_bytes_per_token(config, kv_type: str = "f16") -> tuple[int, int]:
    """(bytes per token of the layers that keep every token, of the sliding-window layers)."""
    per_value = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}[kv_type]
    n = int(config.n_embd_kv * per_value) * 2  # K and V
    n_swa = int(config.n_swa_layers) if config.n_swa else 0
    return n * (config.n_layer - n_swa), n * n_swa
