"""Perplexity with llama-perplexity's protocol (tools/perplexity, `perplexity()`).

1. Tokenize the whole text with BOS (special tokens not parsed, as common_tokenize does).
2. Split into n_chunks = len(tokens) // n_ctx chunks of n_ctx tokens (--chunks caps it);
   at least 2·n_ctx tokens are required.
3. Per chunk: clear the cache; replace the chunk's first token by BOS (when the vocabulary
   adds one); run it in batches of n_batch tokens, keeping every position's logits.
4. Score only the second half: positions first = n_ctx/2 .. n_ctx-2 predict the next token,
   n_ctx - 1 - first tokens per chunk. nll = -(logit[tok] - max - log Σ exp(logit - max)),
   exp in float and sums in double, as llama.cpp's log_softmax.
5. After each chunk the running PPL = exp(Σnll / count); the final estimate is
   PPL ± PPL·sqrt((mean(nll²) - mean(nll)²) / (count - 1)).
6. With save_log_probs the tokens and the scored log-probabilities go to a file in
   llama-perplexity's --kl-divergence-base format; tinyllm/kl_divergence.py compares another
   (quantized) model against such a file.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import UsageError


@dataclass
class PerplexityResult:
    ppl: float
    ppl_err: float  # llama.cpp's uncertainty (NaN when it cannot be estimated)
    n_ctx: int
    n_batch: int
    n_chunks: int
    n_tokens: int  # tokens in the whole text (with BOS)
    n_scored: int  # tokens whose log-probability was counted
    running: list[float] = field(default_factory=list)  # PPL after each chunk
    tokenize_seconds: float = 0.0
    seconds: float = 0.0  # forward + scoring
    compile_seconds: float = 0.0


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, float64. logits (T, n_vocab) float32, targets (T,)."""
    out = np.empty(len(targets), dtype=np.float64)
    for i, tok in enumerate(targets):
        row = logits[i]
        m = row.max()
        sum_exp = np.exp(row - m).sum(dtype=np.float64)
        out[i] = -(float(row[tok]) - float(m) - math.log(sum_exp))
    return out


def eval_chunk(model, chunk: np.ndarray, n_batch: int) -> np.ndarray:
    """Logits (len(chunk), n_vocab) float32 of one chunk as llama-perplexity evaluates it: cache
    cleared, the first token replaced by BOS when the vocabulary adds one, n_batch tokens per call."""
    tok = model.tokenizer
    chunk = np.array(chunk, dtype=np.int32)
    if tok.add_bos:
        chunk[0] = tok.bos_id
    model.reset()
    logits = np.empty((len(chunk), int(model.config.n_vocab)), dtype=np.float32)
    for b in range(0, len(chunk), n_batch):
        logits[b:b + n_batch] = model.forward(chunk[b:b + n_batch], all_logits=True)
    return logits


def perplexity(
    model,
    text: str,
    *,
    n_ctx: int = 256,
    n_chunks: int = -1,
    n_batch: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    save_log_probs=None,
) -> PerplexityResult:
    """Run llama-perplexity's protocol on `text`. Callbacks: on_start(n_tokens, n_chunks)
    once tokenized; progress(chunk_index, n_chunks, running_ppl) after each chunk.

    save_log_probs: a path; the tokens and every scored position's log-probabilities are written
    there in llama-perplexity's --kl-divergence-base format (tinyllm.kl_divergence), and the
    negative log-likelihoods come from that writer's float32 arithmetic, as in llama-perplexity."""
    if isinstance(n_ctx, bool) or int(n_ctx) != n_ctx or n_ctx < 4:
        raise UsageError(f"perplexity context must be an integer >= 4, got {n_ctx!r}")
    if int(model.kv.n_ctx) < n_ctx:
        raise UsageError(f"the model was loaded with n_ctx {model.kv.n_ctx}, smaller than the chunk size {n_ctx}")
    n_batch = n_ctx if n_batch is None else min(int(n_batch), n_ctx)
    if n_batch < 1:
        raise UsageError(f"batch size must be >= 1, got {n_batch}")
    tok = model.tokenizer
    t0 = time.perf_counter()
    tokens = np.asarray(tok.encode(text, add_bos=True, parse_special=False), dtype=np.int32)
    t_tokenize = time.perf_counter() - t0
    if len(tokens) < 2 * n_ctx:
        raise UsageError(
            f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of {n_ctx}; "
            f"the text has {len(tokens)} tokens"
        )
    n_max = len(tokens) // n_ctx
    if n_chunks is not None and n_chunks >= 0:
        if n_chunks == 0:
            raise UsageError("--chunks must be at least 1 (or -1 for all)")
        n_max = min(int(n_chunks), n_max)
    if on_start is not None:
        on_start(len(tokens), n_max)
    first = n_ctx // 2

    nll_sum = nll2_sum = 0.0
    count = 0
    running: list[float] = []
    c0 = float(getattr(model, "compile_seconds", 0.0) or 0.0)
    t1 = time.perf_counter()
    writer = None
    if save_log_probs is not None:
        from .kl_divergence import KLBaseWriter, compress_log_probs

        writer = KLBaseWriter(save_log_probs, n_ctx, int(model.config.n_vocab), tokens[: n_max * n_ctx])
    try:
        for i in range(n_max):
            start = i * n_ctx
            logits = eval_chunk(model, tokens[start:start + n_ctx], n_batch)
            targets = tokens[start + first + 1:start + n_ctx]
            if writer is None:
                nll = token_nll(logits[first:n_ctx - 1], targets)
            else:
                rows, nll = compress_log_probs(logits[first:n_ctx - 1], targets)
                writer.write_chunk(rows)
            nll_sum += float(nll.sum())
            nll2_sum += float((nll * nll).sum())
            count += len(nll)
            running.append(math.exp(nll_sum / count))
            if progress is not None:
                progress(i, n_max, running[-1])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t1
    compile_s = float(getattr(model, "compile_seconds", 0.0) or 0.0) - c0

    mean = nll_sum / count
    var = nll2_sum / count - mean * mean
    ppl = math.exp(mean)
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else float("nan")
    return PerplexityResult(
        ppl=ppl,
        ppl_err=err,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_chunks=n_max,
        n_tokens=len(tokens),
        n_scored=count,
        running=running,
        tokenize_seconds=t_tokenize,
        seconds=seconds - max(compile_s, 0.0),
        compile_seconds=max(compile_s, 0.0),
    )
