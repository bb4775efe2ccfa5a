"""Model: config + quantized weights + KV cache + forward pass of one GGUF file."""
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import ModelBusyError, ModelError, UsageError
from ..jit import follow_idle_cores, restart_idle_watch, touch_marker
from . import forward as fw
from . import ops
from . import compile_ahead
from .config import ModelConfig
from .kv_cache import KVCache
from .weights import Weights, matrix_tensors


class Model:
    """A loaded model. `forward(tokens)` appends tokens at position kv.n_past and returns logits.

    Attributes: config (ModelConfig), gguf (GGUFFile), path, weights (Weights), kv (KVCache),
    tokenizer (built on first access), compile_seconds (JIT compile / cache-load time of the
    kernels, measured apart by `warmup()`, which the first forward runs if nobody did).
    """

    def __init__(self, gguf, config: ModelConfig, n_ctx: int = 4096, kv_type: str = "f16", n_ubatch: int = 512):
        self.gguf = gguf
        self.path = Path(gguf.path)
        self.config = config
        self.weight_types = frozenset(t.type for t in matrix_tensors(gguf, config))
        # a first run: workers compile the matmul kernels while the weights are repacked here
        self._ahead = compile_ahead.start(gguf, config, self.weight_types)
        try:
            self.weights = Weights(gguf, config)
            self.kv = KVCache(config, n_ctx=n_ctx, kv_type=kv_type, n_ubatch=n_ubatch)
            half = config.n_rot // 2
            rf = self.weights.rope_freqs if config.arch == "llama" else None
            self.rope_factors = np.ascontiguousarray(rf, np.float32) if rf is not None else np.ones(half, np.float32)
            if not (np.isfinite(self.rope_factors).all() and (self.rope_factors > 0).all()):
                raise ModelError(f"{self.path}: tensor rope_freqs.weight holds values that are not finite and > 0 "
                                 f"(it divides the RoPE frequencies)")
            self.no_norm = np.ones(config.head_dim, np.float32)
            self.gelu_table = ops.gelu_fp16_table() if config.arch == "gemma3" else np.zeros(1, np.float32)
            self._decode = fw.Scratch(config, 1)
        except BaseException:
            self._stop_compiling()
            raise
        self._tokenizer = None
        self.compile_seconds = None
        # One KV cache: one generation at a time. `_user` is (thread, generation) from the
        # generation's start to its end; `_running` is held during each forward call.
        self._guard = threading.Lock()
        self._user = None
        self._running = threading.Lock()

    # -- convenience ------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from ..tokenizer import Tokenizer

            self._tokenizer = Tokenizer.from_gguf(self.gguf)
        return self._tokenizer

    @property
    def n_ctx(self) -> int:
        return self.kv.n_ctx

    @property
    def n_past(self) -> int:
        return self.kv.n_past

    def weight_nbytes(self) -> int:
        """Bytes of weight blocks one decode step reads (every matrix once)."""
        return sum(m.nbytes for _, m in self.weights.matrices())

    def reset(self):
        """Forget every cached token."""
        self._check_user()
        self.kv.reset()

    def truncate(self, n_past: int):
        """Keep the first n_past cached positions (see KVCache.truncate for the sliding-window limit)."""
        self._check_user()
        self.kv.truncate(n_past)

    def close(self):
        self._stop_compiling()
        self.gguf.close()

    def _stop_compiling(self):
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        c = self.config
        return f"Model({self.path.name}: {c.arch}, {c.n_layer} layers, n_embd {c.n_embd}, n_ctx {self.kv.n_ctx}, KV {self.kv.kv_type})"

    # -- one user at a time -----------------------------------------------------------------

    def claim_kv(self, generation) -> None:
        """Make `generation` the user of the KV cache until release_kv(generation). Raises
        ModelBusyError while a generation of another (live) thread is unfinished; in the same
        thread a new generation supersedes an unfinished one (which then refuses to go on).
        The holder claiming again moves the claim to the calling thread (a generation made in
        one thread may be iterated in another)."""
        me = threading.current_thread()
        with self._guard:
            if self._user is None or self._user[1] is not generation:
                self._check_user(me)
            self._user = (me, generation)  # its own claim again: the thread iterating it now

    def release_kv(self, generation) -> None:
        with self._guard:
            if self._user is not None and self._user[1] is generation:
                self._user = None

    def kv_user(self):
        """The generation that holds the KV cache now, or None."""
        u = self._user
        return None if u is None else u[1]

    def _check_user(self, me=None) -> None:
        me = me or threading.current_thread()
        u = self._user
        if u is not None and u[0] is not me and u[0].is_alive() and not getattr(u[1], "done", False):
            raise ModelBusyError(
                f"{self.path.name} is generating in another thread ({u[0].name}): a model and its KV "
                "cache serve one generation at a time; load the model once per thread (the weights "
                "are memory-mapped and shared) or wait for that generation to end"
            )

    # -- forward ----------------------------------------------------------------------------

    def warmup(self, notice=None) -> float:
        """Compile (or load from Numba's cache) every kernel the forward pass uses, for decode and
        prefill, and return the seconds that took. A first run compiles on every core
        (compile_ahead); then a 2-token prefill and a 1-token decode run twice, and the first
        run's extra time counts too. The cache is left empty.

        notice: a text stream; when it is a terminal, a first run shows a progress line there
        (erased afterwards)."""
        if self.compile_seconds is not None:
            return self.compile_seconds
        if self.kv.n_past:
            raise UsageError("warmup() must run before the first forward (the KV cache is not empty)")
        t0 = time.perf_counter()
        marker = compile_ahead.warm_marker(self.config.arch, self.weight_types)
        workers, self._ahead = self._ahead, None
        if workers is not None:
            workers.finish(self, notice)
        line = workers is None and not marker.exists() and notice is not None and notice.isatty()
        ahead = time.perf_counter() - t0
        if line:  # one process compiles everything: say so while it does
            notice.write("compiling kernels (first run only, one core: about 30 s)...")
            notice.flush()
        runs = []
        try:
            for i in range(2):
                t0 = time.perf_counter()
                if i == 0:
                    self._watched_forward(np.zeros(2, np.int32))
                else:
                    self._forward(np.zeros(2, np.int32), False)
                self._forward(np.zeros(1, np.int32), False)
                runs.append(time.perf_counter() - t0)
                self.kv.reset()
        finally:
            if line:
                notice.write("\r\x1b[K")
                notice.flush()
        self.compile_seconds = ahead + max(0.0, runs[0] - runs[1])
        touch_marker(marker)
        restart_idle_watch()  # the compile workers were ours, not another process's load
        return self.compile_seconds

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Run tokens (int ids) at positions kv.n_past.. and cache their K/V.

        Returns float32 logits of the last token (n_vocab,), or of every token (T, n_vocab)
        with all_logits. Raises ContextFullError when n_past + T > n_ctx (nothing is run)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or tokens.size == 0 or not np.issubdtype(tokens.dtype, np.integer):
            raise UsageError(f"forward takes a non-empty 1-D array of token ids, got {tokens.dtype} {tokens.shape}")
        V = self.config.n_vocab
        bad = (tokens < 0) | (tokens >= V)
        if bad.any():
            raise UsageError(f"token id {int(tokens[bad][0])} is out of range for a vocabulary of {V} tokens")
        self._check_user()
        if not self._running.acquire(blocking=False):
            raise ModelBusyError(
                f"{self.path.name}: forward() is running in another thread; a model and its KV cache "
                "serve one caller at a time (load the model once per thread)"
            )
        try:
            self.kv.check_room(len(tokens))
            if self.compile_seconds is None:
                self.warmup()
            pos0 = self.kv.n_past
            logits = self._forward(tokens.astype(np.int32), all_logits)
            # NaN/Inf would reach the sampler as a silent garbage token (or an IndexError)
            if not _finite(logits):
                bad = int((~np.isfinite(logits)).sum())
                raise ModelError(self._nonfinite_message(f"{bad} of {logits.size} logits", pos0))
            return logits
        finally:
            self._running.release()

    def _watched_forward(self, tokens: np.ndarray):
        """The model's first forward pass, with the input of every matmul checked for NaN/Inf:
        the int8 activations of the next matmul would turn them into finite garbage (NaN block
        scales in attn_q give a model that runs and answers nonsense), so this is where a
        corrupt tensor shows. Later passes check only the last hidden state and the logits."""
        def check(name, x):
            if not np.isfinite(x.sum(dtype=np.float64)):
                c = self.config
                raise ModelError(
                    f"{self.path}: NaN/Inf in the input of {name} in the first forward pass: the tensors "
                    f"before it hold NaN/Inf or huge values, or metadata is out of range (eps {c.norm_eps:g}, "
                    f"attention scale {c.attn_scale:g})"
                )

        try:
            watch = fw.observe_matmuls(self, check)
            watch.__enter__()
        except UsageError:  # already observed (imatrix): run unwatched
            return self._forward(tokens, False)
        try:
            return self._forward(tokens, False)
        finally:
            watch.__exit__(None, None, None)

    def _nonfinite_message(self, what: str, pos0: int) -> str:
        """One line for a forward pass that met NaN/Inf (the float tensors are checked at load)."""
        c = self.config
        return (f"{self.path}: NaN/Inf in {what} at position {pos0}: the weights hold NaN/Inf or huge values, "
                f"or metadata is out of range (freq_base {c.rope_base:g}, eps {c.norm_eps:g}, "
                f"attention scale {c.attn_scale:g}, softcap {c.final_logit_softcap:g})")

    def _forward(self, tokens: np.ndarray, all_logits: bool) -> np.ndarray:
        step = self.kv.max_ubatch
        outs = []
        for s in range(0, len(tokens), step):
            follow_idle_cores()  # the default thread count: fewer while other processes hold cores
            chunk = tokens[s : s + step]
            T = len(chunk)
            buf = self._decode if T == 1 else fw.Scratch(self.config, T)
            pos0 = self.kv.n_past
            fw.embed(self, buf, chunk)
            fw.forward_layers(self, buf, pos0)
            # int8 activations turn NaN into garbage, so the logits alone may look finite
            if not _finite(buf.x):
                raise ModelError(self._nonfinite_message("the last hidden state", pos0))
            self.kv.n_past = pos0 + T
            if all_logits:
                outs.append(fw.output_logits(self, buf.x))
            elif s + step >= len(tokens):
                outs.append(fw.output_logits(self, buf.x[T - 1 :])[0])
        return np.concatenate(outs) if all_logits else outs[0]


def _finite(a: np.ndarray) -> bool:
    """No NaN or Inf in a: max and min propagate NaN, allocate nothing, and cost ~60 µs for
    262,144 logits (a float64 sum costs 270 µs, np.isfinite a bool array of a's size)."""
    return bool(np.isfinite(a.max()) and np.isfinite(a.min()))
