"""Compile a model's kernels on every core before its first forward pass.

A first run compiles some forty Numba functions; one process does that one at a time. Here
forked worker processes (jit.ForkedJobs) compile the matmul kernels of the model's weight
types (the biggest share: one AVX2 kernel per type) into Numba's on-disk cache, while this
process compiles everything else by a forward pass whose matmuls are skipped, and then takes
the weight types no worker has started (on 2 cores: Gemma's four types took one worker 13.8 s
while this process was done after 5.4 s). The warm-up forward that follows then only loads
from the cache. The workers compile with the exact
argument types the runtime will pass (`quants.matmul.kernel_calls`); nothing they do is needed
for correctness: a kernel a worker did not compile is compiled by the warm-up as before.

Workers are forked, so they share the mapped and repacked weights; they compile and never
run a parallel kernel. With one core or without fork nothing happens here.
"""
import threading
import time

import numpy as np

from ..jit import ForkedJobs, can_fork_workers, cpu_count
from ..jit import warm_marker as _marker
from ..quants.matmul import kernel_calls, kernel_set
from . import forward as fw

# Rough first-compile seconds on a 2-core x86 machine, for the progress estimate only.
_KERNEL_SECONDS = 2.0
_REST_SECONDS = 6.0


def warm_marker(model):
    """Exists once a warm-up of a model with this architecture, these weight types and this
    kernel set has filled the kernel cache on this CPU: later runs skip compile_ahead."""
    types = sorted({m.type.name for _, m in model.weights.matrices()})
    return _marker("model", model.config.arch, kernel_set(), *types)


def matmul_jobs(model) -> list[list[tuple]]:
    """The model's matmul compile work, one group per weight type: [(kernel, signature), ...]
    (one dispatcher's signatures always in one group: Numba's cache index of a function is
    one file, which two workers must not write at once)."""
    w = model.weights
    mats = {m.type: m for m in [w.output] + [v for lw in w.blk for v in vars(lw).values()] if hasattr(m, "spec")}
    groups, seen = [], set()
    for t in sorted(mats):
        group = []
        for T in (1, 2):
            for kernel, args in kernel_calls(mats[t], T):
                sig = tuple(kernel.typeof_pyval(a) for a in args)
                if (id(kernel), sig) not in seen:
                    seen.add((id(kernel), sig))
                    group.append((kernel, sig))
        groups.append(group)
    return groups


def _compile_group(group):
    return lambda: [kernel.compile(sig) for kernel, sig in group]


def compile_ahead(model, notice=None) -> bool:
    """Compile the model's kernels with every core; returns False where it could not (one
    core, no fork, TINYLLM_COMPILE_AHEAD=0). notice: a terminal stream for a progress line."""
    if not can_fork_workers():
        return False
    groups = matmul_jobs(model)
    n = min(cpu_count() - 1, len(groups))
    progress = _Progress(notice, n_kernels=len(groups), seconds=max(_REST_SECONDS, _KERNEL_SECONDS * len(groups) / n))
    try:
        with ForkedJobs([_compile_group(g) for g in groups], n) as work:
            with fw.matmuls_skipped():
                for T in (2, 1):
                    model._forward(np.zeros(T, np.int32), False)
            model.kv.reset()
            progress.rest_done()
            work.help(progress.kernel_done)  # then take the weight types no worker has started
            work.wait(progress.kernel_done)
    finally:
        progress.close()
    return True


class _Progress:
    """One line on a terminal: what is compiling, a bar and the seconds left (estimated)."""

    def __init__(self, stream, n_kernels: int, seconds: float, what: str = "weight types"):
        self.stream = stream if stream is not None and stream.isatty() else None
        self.n, self.done, self.rest, self.what = n_kernels, 0, False, what
        self.t0, self.estimate = time.perf_counter(), seconds
        self._stop = threading.Event()
        if self.stream:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def kernel_done(self):
        self.done += 1

    def rest_done(self):
        self.rest = True

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        parts = self.done + self.rest
        frac = min(0.99, max(elapsed / self.estimate, parts / (self.n + 1)))
        left = max(1, round(elapsed / frac - elapsed)) if frac > 0.05 else round(self.estimate)
        bar = "#" * int(frac * 20)
        return f"compiling kernels (first run only) [{bar:<20}] {self.done}/{self.n} {self.what}, about {left} s left"

    def _tick(self):
        while not self._stop.wait(0.25):
            self.stream.write("\r" + self._line() + "\x1b[K")
            self.stream.flush()

    def close(self):
        if self.stream:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()


__all__ = ["compile_ahead", "matmul_jobs", "warm_marker"]
