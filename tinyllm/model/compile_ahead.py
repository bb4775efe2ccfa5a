"""Compile a model's kernels on every core, starting while its file is still being loaded.

A first run compiles some forty Numba functions; one process does that one at a time. Here
forked worker processes (jit.ForkedJobs) compile the matmul kernels and activation quantizers
of the file's weight types (the biggest share: one AVX2 kernel per type, ~3-4 s each on
2 cores) into Numba's on-disk cache. They are forked as soon as the GGUF header is read
(`start`), before the weights are repacked, and get their argument types from a sample of
each weight type's rows (a repacked tile of the first rows: the same array types as the
whole matrix). This process then repacks the weights, compiles everything else by a forward
pass whose matmuls are skipped, and then takes the jobs no worker has started, biggest
first, so that both end together (`finish`). The warm-up forward that follows then only
loads from the cache. Nothing the workers do is needed for correctness: a kernel a worker
did not compile is compiled by the warm-up as before.

With one core, without fork, with TINYLLM_COMPILE_AHEAD=0 or with a warm cache, nothing
happens here.
"""
import threading
import time
from pathlib import Path

import numpy as np

from ..jit import ForkedJobs, can_fork_workers, cpu_count
from ..jit import warm_marker as _marker
from ..quants.matmul import QMatrix, kernel_calls, kernel_set
from ..quants.tiles import TILE
from ..quants.types import BLOCK_SIZES, QK_K
from . import forward as fw
from .weights import matrix_tensors

# Rough first-compile seconds on a 2-core x86 machine (AVX2 kernels), for the job order, which
# decides how evenly the processes end, and the progress estimate.
_KERNEL_SECONDS = 2.6  # a matmul kernel of a 32-weight block type (Q8_0 2.4 s, Q5_0 2.7 s)
_SUPERBLOCK_KERNEL_SECONDS = 4.0  # of a 256-weight super-block type (Q4_K 3.8-4.3 s, Q6_K 3.9-4.3 s)
_QUANTIZER_SECONDS = {1: 0.5, 2: 1.1}  # an activation quantizer for one token / for a prefill (parallel)
_REST_SECONDS = 6.0  # everything else, compiled by the dry forward pass


def warm_marker(arch: str, types) -> Path:
    """Exists once a warm-up of a model with this architecture, these weight types and this
    kernel set has filled the kernel cache on this CPU: later runs skip compiling ahead."""
    return _marker("model", arch, kernel_set(), *sorted({t.name for t in types}))


class Job:
    """One dispatcher's signatures, compiled in one process (Numba's cache index of a function
    is one file, which two processes must not write at once)."""

    def __init__(self, kernel, sigs, seconds: float):
        self.kernel, self.sigs, self.seconds = kernel, sigs, seconds

    def __call__(self):
        for sig in self.sigs:
            self.kernel.compile(sig)

    def __repr__(self):
        return f"Job({self.kernel.py_func.__module__}.{self.kernel.py_func.__name__}, {len(self.sigs)} signatures)"


def sample_matrices(gguf, config) -> list[QMatrix]:
    """One small QMatrix per type of the file's matmul weights (the output matrix and every
    layer's): the first tile of rows of one tensor of that type."""
    samples = {}
    for info in matrix_tensors(gguf, config, matmul_only=True):
        if info.type not in samples:
            n_out, n_in = (int(s) for s in info.shape)
            samples[info.type] = QMatrix(info.type, info.data[: min(n_out, TILE)], n_in, name=info.name)
    return [samples[t] for t in sorted(samples)]


def matmul_jobs(matrices) -> list[Job]:
    """The compile work of matmuls with these weight matrices at T = 1 and 2 tokens (decode and
    prefill take different signatures), one Job per dispatcher, with exactly the argument
    types the runtime passes (`quants.matmul.kernel_calls`)."""
    jobs = {}  # id(kernel) -> Job
    for w in matrices:
        big = BLOCK_SIZES[w.type][0] == QK_K
        for T in (1, 2):
            calls = kernel_calls(w, T)
            for i, (kernel, args) in enumerate(calls):
                if id(kernel) not in jobs:
                    matmul = i == len(calls) - 1  # the others quantize the activations
                    seconds = (_SUPERBLOCK_KERNEL_SECONDS if big else _KERNEL_SECONDS) if matmul else _QUANTIZER_SECONDS[T]
                    jobs[id(kernel)] = Job(kernel, [], seconds)
                sig = tuple(kernel.typeof_pyval(a) for a in args)
                if sig not in jobs[id(kernel)].sigs:
                    jobs[id(kernel)].sigs.append(sig)
    return list(jobs.values())


class CompileAhead:
    """Compile workers started for one model file; `finish(model)` does this process's share
    and waits for them; `close()` (Model.close, a failed load) stops them. Left alone, they
    end when their jobs do (daemon processes: at the latest when this process exits)."""

    def __init__(self, jobs: list[Job], n_workers: int):
        self.jobs = jobs
        self.work = ForkedJobs(jobs, n_workers, weight=lambda job: job.seconds)
        self.n_workers = len(self.work.workers)

    def finish(self, model, notice=None) -> None:
        """Compile the rest here (a dry forward pass), then the jobs no worker has started;
        wait for the workers. notice: a terminal stream for a progress line."""
        seconds = (sum(j.seconds for j in self.jobs) + _REST_SECONDS) / (self.n_workers + 1)
        progress = _Progress(notice, n_kernels=len(self.jobs), seconds=seconds)
        try:
            with self.work as work:
                with fw.matmuls_skipped():
                    for T in (2, 1):
                        model._forward(np.zeros(T, np.int32), False)
                model.kv.reset()
                progress.rest_done()
                work.help(progress.kernel_done)
                work.wait(progress.kernel_done)
        finally:
            progress.close()

    def close(self) -> None:
        self.work.__exit__(None, None, None)


def start(gguf, config, types) -> CompileAhead | None:
    """Fork the compile workers for this file's matmul kernels, or None where that does not pay
    or cannot be done: a warm cache (`warm_marker`), one core, no fork, TINYLLM_COMPILE_AHEAD=0,
    or a file whose matrices cannot even be sampled (the full load then says what is wrong)."""
    if not can_fork_workers() or warm_marker(config.arch, types).exists():
        return None
    try:
        jobs = matmul_jobs(sample_matrices(gguf, config))
    except Exception:
        return None
    if not jobs:
        return None
    return CompileAhead(jobs, min(cpu_count() - 1, len(jobs)))


class _Progress:
    """One line on a terminal: what is compiling, a bar and the seconds left (estimated)."""

    def __init__(self, stream, n_kernels: int, seconds: float, what: str = "kernels"):
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


__all__ = ["CompileAhead", "matmul_jobs", "sample_matrices", "start", "warm_marker"]
