"""Token sampling with llama.cpp's default chain (spec/architectures.md §5).

Chain, in llama.cpp `common` order:

    penalties -> top_k -> top_p -> min_p -> temperature -> dist(seed)

Truncations act on the temperature-1 logits; the temperature only reshapes the survivors
before the draw. `temperature <= 0` is greedy: the first maximum logit (after penalties).

The draw reproduces llama.cpp's RNG: `std::mt19937(seed)` with
`std::uniform_real_distribution<double>(0, 1)`, which libstdc++ builds from two 32-bit
outputs as (a + b * 2**32) / 2**64. NumPy's legacy MT19937 seeding is the same
`init_genrand`, so a seed gives the same uniform stream as llama.cpp.

Candidates are kept as (ids, logits) arrays. When top_k bounds the set, only the top k are
found (argpartition) and sorted, so a 262144-entry vocabulary costs ~1 ms per token.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import UsageError

# llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed".
DEFAULT_SEED = 0xFFFFFFFF


@dataclass
class SamplingParams:
    """Sampling settings; the defaults are llama.cpp's (`common_params_sampling`)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64  # -1: the whole history
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    min_keep: int = 0
    seed: int | None = None  # None, -1 or 0xFFFFFFFF: random

    def validate(self) -> "SamplingParams":
        """Raise UsageError naming the first bad value; returns self."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "seed":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise UsageError(f"sampling parameter {f.name} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise UsageError(f"sampling parameter {f.name} must be finite, got {v!r}")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if int(self.top_k) != self.top_k:
            raise UsageError(f"top_k must be an integer (<= 0 disables it), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise UsageError(f"top_p must be in [0, 1] (1 disables it), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise UsageError(f"min_p must be in [0, 1] (0 disables it), got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise UsageError(f"repeat_penalty must be > 0 (1 disables it), got {self.repeat_penalty}")
        if int(self.repeat_last_n) != self.repeat_last_n or self.repeat_last_n < -1:
            raise UsageError(f"repeat_last_n must be an integer >= -1 (-1: whole history), got {self.repeat_last_n}")
        if int(self.min_keep) != self.min_keep or self.min_keep < 0:
            raise UsageError(f"min_keep must be an integer >= 0, got {self.min_keep}")
        s = self.seed
        if s is not None and (
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not -1 <= s <= 0xFFFFFFFF
        ):
            raise UsageError(f"seed must be an integer in [0, 4294967295] or -1 for random, got {s!r}")
        return self

    def replace(self, **changes) -> "SamplingParams":
        return SamplingParams(**{**asdict(self), **changes})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalties_active(self) -> bool:
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0
        )


class Sampler:
    """Picks the next token from logits; remembers accepted tokens for the penalties.

    `seed` is the seed actually used (drawn at random when params.seed asks for it), so a
    run can be repeated.
    """

    def __init__(self, params: SamplingParams | None = None):
        self.params = (params or SamplingParams()).replace().validate()
        s = self.params.seed
        if s is None or s == -1 or s == DEFAULT_SEED:
            s = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
            # A drawn seed equal to the "random" sentinel would not reproduce; avoid it.
            s = s if s != DEFAULT_SEED else 0
        self.seed = int(s)
        n = self.params.repeat_last_n
        self._history: deque[int] = deque(maxlen=None if n < 0 else n)
        self.reset()

    def reset(self) -> None:
        """Forget the history and restart the random stream from the seed."""
        self._history.clear()
        # RandomState(int) seeds MT19937 with init_genrand, exactly as std::mt19937(seed).
        self._bits = np.random.RandomState(self.seed)._bit_generator

    def accept(self, token: int) -> None:
        """Record a token (prompt or generated) for the repetition penalties."""
        if self._history.maxlen != 0:
            self._history.append(int(token))

    def uniform(self) -> float:
        """Next draw of std::uniform_real_distribution<double>(0, 1) over std::mt19937."""
        a, b = (int(v) for v in self._bits.random_raw(2))
        u = (a + (b << 32)) / 2.0**64
        return u if u < 1.0 else math.nextafter(1.0, 0.0)

    def penalized(self, logits: np.ndarray) -> np.ndarray:
        """The logits after the repetition/frequency/presence penalties (a copy if changed)."""
        x = np.asarray(logits, dtype=np.float32)
        p = self.params
        if not p.penalties_active or not self._history:
            return x
        ids, counts = np.unique(np.fromiter(self._history, dtype=np.int64), return_counts=True)
        keep = (ids >= 0) & (ids < x.size)
        ids, counts = ids[keep], counts[keep]
        x = x.copy()
        v = x[ids]
        r = np.float32(p.repeat_penalty)
        v = np.where(v <= 0, v * r, v / r).astype(np.float32)
        v -= counts.astype(np.float32) * np.float32(p.frequency_penalty) + np.float32(p.presence_penalty)
        x[ids] = v
        return x

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids and probabilities the draw picks from, in llama.cpp's candidate order.

        The order matters for a seeded draw: sorted by descending logit once any step sorted
        (ties: lower id first), else in id order.
        """
        p = self.params
        x = self.penalized(logits)
        n = x.size
        if p.greedy:
            return np.array([int(np.argmax(x))]), np.ones(1)

        ids: np.ndarray | None = None  # None: the whole vocabulary in id order
        is_sorted = False
        if p.top_k > 0:
            ids = top_k_ids(x, min(int(p.top_k), n))
            is_sorted = True

        if p.top_p < 1.0:
            if not is_sorted:
                ids = np.lexsort((np.arange(n), -x))
                is_sorted = True
            lg = x[ids]
            e = np.exp((lg - lg[0]).astype(np.float32)).astype(np.float64)
            cum = np.cumsum(e / e.sum())
            reached = np.flatnonzero(cum >= p.top_p)
            if reached.size:
                size = max(int(reached[0]) + 1, p.min_keep)
                ids = ids[:size]

        if p.min_p > 0.0:
            lg = x if ids is None else x[ids]
            min_logit = np.float32(lg.max()) + np.float32(math.log(p.min_p))
            if not is_sorted:
                keep = np.flatnonzero(lg >= min_logit)
                if keep.size and keep.size >= p.min_keep:
                    ids = keep  # survivors stay in id order, as llama.cpp's unsorted path
                else:
                    ids = np.lexsort((np.arange(n), -x))
                    is_sorted = True
            if is_sorted:
                lg = x[ids]
                below = np.flatnonzero(lg[1:] < min_logit) + 1
                below = below[below >= p.min_keep]
                if below.size:
                    ids = ids[: int(below[0])]

        if ids is None:
            ids = np.arange(n)
        lg = x[ids] / np.float32(p.temperature)
        # dist: float exp, sums in double, as llama.cpp's dist sampler.
        e = np.exp((lg - lg.max()).astype(np.float32)).astype(np.float64)
        return ids, e / e.sum()

    def sample(self, logits: np.ndarray) -> int:
        """Pick the next token id. Does not accept it; call accept() with the id kept."""
        if self.params.greedy:
            return int(np.argmax(self.penalized(logits)))
        ids, probs = self.candidates(logits)
        if ids.size == 1:
            return int(ids[0])  # llama.cpp draws nothing for a single candidate
        cum = np.cumsum(probs)
        target = cum[-1] * self.uniform()
        i = int(np.searchsorted(cum, target, side="left"))
        return int(ids[i if i < ids.size else 0])


def top_k_ids(x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits, sorted by descending logit; ties go to the lower id.

    Exact, and cheaper than a full argpartition: the k largest are searched only among the
    logits within 8 of the maximum when there are at least k of them (typically a few
    hundred of a 262144-entry vocabulary); otherwise among all.
    """
    if k >= x.size:
        cand = np.arange(x.size)
    else:
        cand = np.flatnonzero(x >= x.max() - np.float32(8.0))
        if cand.size < k:
            cand = np.arange(x.size)
    xv = x[cand]
    kth = np.partition(xv, xv.size - k)[xv.size - k]  # the k-th largest value
    above = cand[xv > kth]
    ties = cand[xv == kth][: k - above.size]  # cand is in id order: lowest ids first
    top = np.concatenate([above, ties])
    return top[np.lexsort((top, -x[top]))]
