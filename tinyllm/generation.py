"""Text generation: prefill the prompt in one forward call, then decode token by token.

    gen = generate(model, "The capital of France is", max_tokens=32)
    for piece in gen:          # text pieces as they are generated (never a split UTF-8 char)
        ...
    gen.stats                  # GenerationStats: prefill/decode tokens/s, TTFT, stop reason

What the KV cache holds afterwards (as llama.cpp): everything it held before, the prompt, and
every generated token except the last one sampled, which was never fed back. An end-of-
generation token (EOS, <end_of_turn>, ...) is never evaluated and is not in `.tokens`; it is
kept in `.stop_token`. `stats.n_past` is the cache length at the end.

Timing: `prefill_seconds` is the prompt's forward call; `decode_seconds` adds up each decode
step (forward + sampling + detokenizing), leaving out the caller's time between pieces.
JIT compilation met on the way (Model.compile_seconds grows) is reported as
`compile_seconds` and subtracted from the phase it happened in.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import ContextFullError, UsageError
from .sampling import Sampler, SamplingParams

STOP_REASONS = ("eos", "length", "context", "cancelled")


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # tokens prefilled by this call
    prefill_seconds: float = 0.0
    generated_tokens: int = 0  # tokens in .tokens (an end-of-generation token not counted)
    decode_steps: int = 0  # forward calls on one token
    decode_seconds: float = 0.0
    ttft_seconds: float = 0.0  # from the call to the first sampled token, compile time excluded
    compile_seconds: float = 0.0
    stop_reason: str | None = None  # one of STOP_REASONS once finished
    n_past: int = 0  # tokens in the KV cache at the end
    n_ctx: int = 0
    tokens_needed: int = 0  # what the request needed of the context (cache + prompt + max_tokens)
    seed: int | None = None

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "prefill_tps": self.prefill_tps, "decode_tps": self.decode_tps}


class Generation:
    """An in-progress generation; iterate it for text pieces. See the module docstring."""

    def __init__(
        self,
        model,
        prompt: str | Sequence[int],
        *,
        max_tokens: int,
        params: SamplingParams | None,
        add_bos: bool | None,
        stop_ids,
        on_token: Callable[[int, str], None] | None,
        sampler: Sampler | None,
    ):
        self.model = model
        self.stats = GenerationStats()
        # The KV cache is this generation's from now to its end (ModelBusyError if another
        # thread's generation holds it); models without claim_kv (test fakes) are not shared.
        self._claim = getattr(model, "claim_kv", None)
        self._release = getattr(model, "release_kv", None)
        if self._claim is not None:
            self._claim(self)
        try:
            self._setup(prompt, max_tokens, params, add_bos, stop_ids, on_token, sampler)
        except BaseException:
            self._release_kv()
            raise

    def _setup(self, prompt, max_tokens, params, add_bos, stop_ids, on_token, sampler):
        model = self.model
        self.tokenizer = model.tokenizer
        if isinstance(prompt, str):
            if add_bos is None:
                # A BOS belongs at the start of a sequence only, not in the middle of a cache.
                add_bos = bool(self.tokenizer.add_bos) and model.kv.n_past == 0
            ids = self.tokenizer.encode(prompt, add_bos=add_bos)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise UsageError("empty prompt: give at least one token to prefill")
        n_vocab = int(model.config.n_vocab)
        bad = [t for t in ids if not 0 <= t < n_vocab]
        if bad:
            raise UsageError(f"prompt token id {bad[0]} is outside the vocabulary [0, {n_vocab})")
        if isinstance(max_tokens, bool) or int(max_tokens) != max_tokens:
            raise UsageError(f"max_tokens must be an integer (-1: until the context is full), got {max_tokens!r}")
        self.max_tokens = int(max_tokens)
        self.prompt_ids = ids
        self.sampler = sampler if sampler is not None else Sampler(params)
        self.stop_ids = frozenset(int(t) for t in (self.tokenizer.eog_ids if stop_ids is None else stop_ids))
        self.on_token = on_token
        self.tokens: list[int] = []
        self.stop_token: int | None = None
        self.text = ""
        self.stats = GenerationStats(prompt_tokens=len(ids), seed=self.sampler.seed)
        self._cancelled = False
        self._it = self._run()

    # -- public ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._it)

    def cancel(self) -> None:
        """Stop before the next token (safe to call from a signal handler or another thread)."""
        self._cancelled = True

    def read(self) -> str:
        """Run to the end and return the whole generated text."""
        for _ in self:
            pass
        return self.text

    @property
    def done(self) -> bool:
        return self.stats.stop_reason is not None

    # -- internals ---------------------------------------------------------------------
    def _release_kv(self) -> None:
        if self._release is not None:
            self._release(self)

    def _forward(self, ids: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Logits of the last token, wall seconds, and compile seconds spent inside."""
        if self._claim is not None:
            if self.model.kv_user() is not self:
                raise UsageError(
                    "this generation was superseded by a later one on the same model (the KV cache now "
                    "holds that one's tokens); finish or cancel a generation before starting the next"
                )
            self._claim(self)  # the thread that iterates it holds the cache
        c0 = float(getattr(self.model, "compile_seconds", 0.0) or 0.0)
        t0 = time.perf_counter()
        logits = self.model.forward(ids)
        dt = time.perf_counter() - t0
        dc = float(getattr(self.model, "compile_seconds", 0.0) or 0.0) - c0
        dc = min(max(dc, 0.0), dt)
        self.stats.compile_seconds += dc
        return logits, dt - dc, dc

    def _finish(self, reason: str, decoder) -> Iterator[str]:
        self.stats.stop_reason = reason
        self.stats.generated_tokens = len(self.tokens)
        self.stats.n_past = int(self.model.kv.n_past)
        self._release_kv()
        tail = decoder.flush() if decoder is not None else ""
        if tail:
            self.text += tail
            yield tail

    def _run(self) -> Iterator[str]:
        st = self.stats
        kv = self.model.kv
        st.n_ctx = n_ctx = int(kv.n_ctx)
        n_past0 = int(kv.n_past)
        want = self.max_tokens if self.max_tokens >= 0 else n_ctx
        st.tokens_needed = n_past0 + len(self.prompt_ids) + max(want, 1 if self.max_tokens else 0)
        decoder = None
        t_start = time.perf_counter()
        compile_before_first = 0.0
        try:
            if n_past0 + len(self.prompt_ids) > n_ctx:
                yield from self._finish("context", None)
                return
            for t in self.prompt_ids:
                self.sampler.accept(t)
            if self._cancelled:
                yield from self._finish("cancelled", None)
                return
            try:
                logits, st.prefill_seconds, compile_before_first = self._forward(
                    np.asarray(self.prompt_ids, dtype=np.int32)
                )
            except ContextFullError:
                yield from self._finish("context", None)
                return
            if self.max_tokens == 0:
                yield from self._finish("length", None)
                return
            decoder = self.tokenizer.stream()
            step_start = time.perf_counter()
            step_compile = 0.0
            while True:
                if self._cancelled:
                    yield from self._finish("cancelled", decoder)
                    return
                tid = self.sampler.sample(logits)
                self.sampler.accept(tid)
                if not self.tokens and self.stop_token is None:
                    st.ttft_seconds = time.perf_counter() - t_start - compile_before_first
                if tid in self.stop_ids:
                    self.stop_token = tid
                    if st.decode_steps:
                        st.decode_seconds += time.perf_counter() - step_start - step_compile
                    yield from self._finish("eos", decoder)
                    return
                self.tokens.append(tid)
                piece = decoder.push(tid)
                if st.decode_steps:
                    st.decode_seconds += time.perf_counter() - step_start - step_compile
                if self.on_token is not None:
                    self.on_token(tid, piece)
                if piece:
                    self.text += piece
                    yield piece
                if self.max_tokens >= 0 and len(self.tokens) >= self.max_tokens:
                    yield from self._finish("length", decoder)
                    return
                if kv.n_past + 1 > n_ctx:
                    yield from self._finish("context", decoder)
                    return
                if self._cancelled:
                    yield from self._finish("cancelled", decoder)
                    return
                step_start = time.perf_counter()
                try:
                    logits, _, step_compile = self._forward(np.array([tid], dtype=np.int32))
                except ContextFullError:
                    yield from self._finish("context", decoder)
                    return
                st.decode_steps += 1
        except KeyboardInterrupt:
            # Ctrl+C ends the generation cleanly; the text so far is kept.
            if st.stop_reason is None:
                yield from self._finish("cancelled", decoder)
        finally:
            self._release_kv()  # also when an error or close() ends it early


def generate(
    model,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 256,
    params: SamplingParams | None = None,
    add_bos: bool | None = None,
    stop_ids=None,
    on_token: Callable[[int, str], None] | None = None,
    sampler: Sampler | None = None,
) -> Generation:
    """Start generating after `prompt`; iterate the result for text pieces.

    prompt: text (tokenized with special tokens parsed; BOS added when `add_bos` is None,
        the tokenizer adds one and the cache is empty) or a list of NEW token ids to prefill
        after what the KV cache already holds.
    max_tokens: most tokens to generate; -1 runs until an end-of-generation token or a full
        context.
    params: SamplingParams (llama.cpp defaults); or pass a `sampler` to keep its history and
        random stream across calls.
    stop_ids: token ids that end the generation; None means the tokenizer's EOG set.
    on_token: called as on_token(token_id, text_piece) for each generated token.
    """
    return Generation(
        model,
        prompt,
        max_tokens=max_tokens,
        params=params,
        add_bos=add_bos,
        stop_ids=stop_ids,
        on_token=on_token,
        sampler=sampler,
    )
