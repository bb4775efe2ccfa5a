"""Computing an importance matrix from a model and a text, as llama-imatrix does
(kquants-family.md §6.1; llama.cpp tools/imatrix/imatrix.cpp, `compute_imatrix` and
`IMatrixCollector`).

1. Tokenize the text with BOS (special tokens parsed only with parse_special).
2. Evaluate chunks of n_ctx tokens, as llama-perplexity does: cache cleared, the first token
   replaced by BOS, batches of n_batch tokens, the logits of every position kept.
3. Every matmul whose input has >= 16 rows and whose weight name starts with `blk.` (or is
   `output.weight` with process_output) adds, per input column j, x[t, j]² of each row t in
   token order, in float32, to that weight's sums, and the row count to its count.
4. The chunk count is the largest count // n_ctx; every output_frequency chunks `on_save`
   gets the matrix so far (llama-imatrix rewrites its output file then).
5. Unless compute_ppl is off, the running perplexity of each chunk as llama-perplexity scores
   it (second half of the chunk).

    result = compute_imatrix(model, text, n_ctx=512, dataset="calibration.txt")
    result.imatrix.save("imatrix.gguf")

llama-imatrix evaluates n_batch // n_ctx chunks side by side when -b > -c (its default -b 2048
with -c 512); tinyllm runs one chunk at a time, which gives the same rows to the same matmuls
(the sums agree to float rounding) except where llama.cpp's micro-batches of several chunks
would let a matmul with fewer than 16 rows per chunk pass the 16-row test.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import QuantizationError, UsageError
from ..jit import jit_exact
from .imatrix import Imatrix, ImatrixEntry

MIN_ROWS = 16  # llama-imatrix ignores matmuls of smaller batches


@jit_exact
def _add_squares(acc, x):
    """acc (n,) float32 += x[t]² for t = 0.. in order, x (T, n) float32 (no FMA, as imatrix.cpp)."""
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            acc[j] += x[t, j] * x[t, j]


class ImatrixCollector:
    """Accumulates Σx² per input column of the matmuls it is shown (call it as a matmul observer,
    see tinyllm.model.forward.observe_matmuls), and the row counts; a dense weight has one matrix
    (nmat = 1). `add(imatrix)` merges a file first, as llama-imatrix's --in-file does."""

    def __init__(self, chunk_size: int, *, process_output: bool = False, output_frequency: int = 10,
                 on_save: Callable[[Imatrix], None] | None = None, datasets=()):
        if chunk_size < 1:
            raise UsageError(f"imatrix chunk size must be >= 1, got {chunk_size}")
        if output_frequency < 1:
            raise UsageError(f"imatrix output frequency must be >= 1 chunk, got {output_frequency}")
        self.chunk_size = int(chunk_size)
        self.process_output = bool(process_output)
        self.output_frequency = int(output_frequency)
        self.on_save = on_save
        self.sums: dict[str, np.ndarray] = {}  # name -> float32 (nmat, ne0)
        self.counts: dict[str, np.ndarray] = {}  # name -> int64 (nmat,)
        self.datasets: list[str] = []  # of the files merged by add()
        self.new_datasets = list(datasets)  # the texts this collector sees, recorded after those
        self.last_chunk = 0

    def wants(self, name: str, n_rows: int) -> bool:
        """llama-imatrix's "ask" test for a dense matmul."""
        return n_rows >= MIN_ROWS and (name.startswith("blk.") or (self.process_output and name == "output.weight"))

    def __call__(self, name: str, x: np.ndarray) -> None:
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if not self.wants(name, x.shape[0]):
            return
        if x.dtype != np.float32:
            raise QuantizationError(f"imatrix: the input of {name} is {x.dtype}, not float32")
        ne0 = x.shape[1]
        sums, counts = self.sums.get(name), self.counts.get(name)
        if counts is not None and counts.size > 1 and (counts == counts[0]).all():
            counts = self.counts[name] = counts[:1].copy()  # one count per dense tensor
        if sums is None:
            sums = self.sums[name] = np.zeros((1, ne0), np.float32)
            counts = self.counts[name] = np.zeros(1, np.int64)
        elif sums.size != ne0:
            raise QuantizationError(f"imatrix entry {name}: {sums.size} values, but the matmul input has {ne0} columns")
        acc = sums.reshape(-1)
        _add_squares(acc, np.ascontiguousarray(x))
        if not np.isfinite(acc).all():
            raise QuantizationError(f"imatrix entry {name}: non-finite sums of squares (the activations overflow)")
        counts += x.shape[0]
        for c in counts:
            n_chunk = int(c) // self.chunk_size
            if n_chunk > self.last_chunk:
                step = n_chunk - self.last_chunk
                self.last_chunk = n_chunk
                if (self.last_chunk % self.output_frequency) // step == 0 and self.on_save is not None:
                    self.on_save(self.imatrix())

    def add(self, im: Imatrix) -> None:
        """Merge a loaded imatrix (llama-imatrix `--in-file`): GGUF sums and counts are added;
        a legacy file's values (mean·ncall) are scaled back by this collector's chunk size."""
        for name, e in im.entries.items():
            values = np.asarray(e.sums, np.float32).reshape(-1)
            got = self.sums.get(name)
            if e.legacy:
                if got is None:
                    self.sums[name] = np.zeros((1, values.size), np.float32)
                    self.counts[name] = np.zeros(1, np.int64)
                elif got.size != values.size:
                    raise QuantizationError(f"{im.path}: imatrix entry {name} has {values.size} values, expected {got.size}")
                acc = self.sums[name].reshape(-1)
                acc += values * np.float32(self.chunk_size)
                self.counts[name] += int(np.asarray(e.counts).reshape(-1)[0]) * self.chunk_size
                continue
            counts = np.asarray(e.counts, np.int64).reshape(-1)
            if got is None:
                self.sums[name] = np.zeros((counts.size, values.size // max(counts.size, 1)), np.float32)
            elif got.size != values.size:
                raise QuantizationError(f"{im.path}: imatrix entry {name} has {values.size} values, expected {got.size}")
            have = self.counts.get(name)
            if have is None:
                have = np.zeros(counts.size, np.int64)
            elif have.size == 1 and counts.size > 1:
                have = np.full(counts.size, have[0], np.int64)
            elif have.size != counts.size:
                raise QuantizationError(f"{im.path}: imatrix entry {name} has {counts.size} counts, expected {have.size}")
            self.counts[name] = have + counts
            acc = self.sums[name].reshape(-1)
            acc += values
        self.datasets.extend(im.datasets)
        max_count = max((int(c.max()) for c in self.counts.values() if c.size), default=0)
        self.last_chunk = max_count // self.chunk_size

    def imatrix(self) -> Imatrix:
        """The matrix so far (copies), as llama-imatrix saves it."""
        entries = {
            name: ImatrixEntry(self.sums[name].copy(), self.counts[name].copy())
            for name in sorted(self.sums)
        }
        return Imatrix(None, entries, self.datasets + self.new_datasets, self.last_chunk, self.chunk_size)


@dataclass
class ImatrixResult:
    imatrix: Imatrix
    n_ctx: int
    n_batch: int
    n_chunks: int
    n_tokens: int  # tokens of the whole text (with BOS)
    ppl: float = float("nan")  # NaN with compute_ppl off
    ppl_err: float = float("nan")
    running: list[float] = field(default_factory=list)  # PPL after each chunk
    seconds: float = 0.0


def compute_imatrix(
    model,
    text: str,
    *,
    n_ctx: int = 512,
    n_chunks: int = -1,
    n_batch: int | None = None,
    process_output: bool = False,
    parse_special: bool = False,
    compute_ppl: bool = True,
    dataset: str | None = None,
    in_files: tuple = (),
    output_frequency: int = 10,
    on_save: Callable[[Imatrix], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> ImatrixResult:
    """Importance matrix of `model` over `text` as llama-imatrix computes it (see the module doc).

    dataset: the name recorded in imatrix.datasets (llama-imatrix records the -f path);
    in_files: Imatrix objects (load_imatrix) merged first; on_save(imatrix) every
    output_frequency chunks; on_start(n_tokens, n_chunks) once tokenized;
    progress(chunk_index, n_chunks, running_ppl (NaN without compute_ppl), seconds) per chunk."""
    from ..model.forward import observe_matmuls
    from ..perplexity import eval_chunk, token_nll

    if isinstance(n_ctx, bool) or int(n_ctx) != n_ctx or n_ctx < 4:
        raise UsageError(f"imatrix context must be an integer >= 4, got {n_ctx!r}")
    n_ctx = int(n_ctx)
    if int(model.kv.n_ctx) < n_ctx:
        raise UsageError(f"the model was loaded with n_ctx {model.kv.n_ctx}, smaller than the chunk size {n_ctx}")
    n_batch = n_ctx if n_batch is None else min(int(n_batch), n_ctx)
    if n_batch < 1:
        raise UsageError(f"batch size must be >= 1, got {n_batch}")
    tok = model.tokenizer
    tokens = np.asarray(tok.encode(text, add_bos=True, parse_special=parse_special), dtype=np.int32)
    if len(tokens) < 2 * n_ctx:
        raise UsageError(
            f"you need at least {2 * n_ctx} tokens for a context of {n_ctx} tokens; the text has {len(tokens)} tokens"
        )
    n_max = len(tokens) // n_ctx
    if n_chunks is not None and n_chunks >= 0:
        if n_chunks == 0:
            raise UsageError("--chunks must be at least 1 (or -1 for all)")
        n_max = min(int(n_chunks), n_max)
    collector = ImatrixCollector(
        n_ctx, process_output=process_output, output_frequency=output_frequency, on_save=on_save,
        datasets=[dataset] if dataset else [],
    )
    for im in in_files:
        collector.add(im)
    if on_start is not None:
        on_start(len(tokens), n_max)
    model.warmup()  # compiles with 1- and 2-token batches, which the collector would skip anyway

    first = n_ctx // 2
    nll_sum = nll2_sum = 0.0
    count = 0
    running: list[float] = []
    t0 = time.perf_counter()
    with observe_matmuls(model, collector):
        for i in range(n_max):
            start = i * n_ctx
            logits = eval_chunk(model, tokens[start:start + n_ctx], n_batch)
            ppl = float("nan")
            if compute_ppl:
                nll = token_nll(logits[first:n_ctx - 1], tokens[start + first + 1:start + n_ctx])
                nll_sum += float(nll.sum())
                nll2_sum += float((nll * nll).sum())
                count += len(nll)
                ppl = math.exp(nll_sum / count)
                running.append(ppl)
            if progress is not None:
                progress(i, n_max, ppl, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    ppl = err = float("nan")
    if compute_ppl and count:
        mean = nll_sum / count
        var = nll2_sum / count - mean * mean
        ppl = math.exp(mean)
        err = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else float("nan")
    return ImatrixResult(collector.imatrix(), n_ctx, n_batch, n_max, len(tokens), ppl, err, running, seconds)


def combine_imatrix(in_files, chunk_size: int) -> Imatrix:
    """llama-imatrix --in-file A --in-file B without a text: the files merged (sums and counts
    added; legacy files scaled by chunk_size), chunk count = largest count // chunk_size."""
    if not in_files:
        raise UsageError("combining importance matrices needs at least one input file")
    collector = ImatrixCollector(chunk_size)
    for im in in_files:
        collector.add(im)
    return collector.imatrix()
