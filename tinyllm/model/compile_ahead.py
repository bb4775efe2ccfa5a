"""Compile a model's kernels on every core before its first forward pass.

A first run compiles some forty Numba functions; one process does that one at a time. Here
forked worker processes compile the matmul kernels of the model's weight types (the biggest
share: one AVX2 kernel per type) into Numba's on-disk cache, while this process compiles
everything else by a forward pass whose matmuls are skipped. The real warm-up forward that
follows then only loads from the cache. The workers compile with the exact argument types the
runtime will pass (`quants.matmul.kernel_calls`), and nothing they do is needed for
correctness: a kernel a worker did not manage to compile is compiled by the warm-up as before.

Workers are forked, so they share the mapped and repacked weights; they compile and never
run a parallel kernel. Where fork is unavailable, or with one core, nothing happens here.
"""
import hashlib
import multiprocessing
import os
import threading
import time

from pathlib import Path

import llvmlite.binding as llvm
import numpy as np

from ..jit import cpu_count, kernel_cache_dir
from ..quants.matmul import kernel_calls, kernel_set
from . import forward as fw

# Rough first-compile seconds on a 2-core x86 machine, for the progress estimate only.
_KERNEL_SECONDS = 2.0
_REST_SECONDS = 6.0


def warm_marker(model) -> Path:
    """A file that exists once a warm-up of a model with these weight types, architecture and
    kernel set has filled the kernel cache on this CPU: later runs skip compile_ahead."""
    w = model.weights
    types = sorted({m.type.name for _, m in w.matrices()})
    key = "|".join([model.config.arch, kernel_set(), llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), *types])
    return kernel_cache_dir() / "warm" / hashlib.sha256(key.encode()).hexdigest()[:16]


def matmul_jobs(model) -> list[list[tuple]]:
    """The model's matmul compile work, one group per weight type: [(kernel, args), ...]."""
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


def _worker(jobs, conn):
    for group in jobs:
        for kernel, sig in group:
            try:
                kernel.compile(sig)
            except Exception as e:  # the warm-up compiles it again and reports any real error
                conn.send(("failed", f"{kernel.py_func.__qualname__}: {e}"[:200]))
                return
        conn.send(("done", len(group)))
    conn.close()


def _split(groups: list, n: int) -> list[list]:
    """Groups dealt to n workers, biggest first, each to the least loaded (one dispatcher's
    signatures always go to one worker, since Numba's cache index of a function is one file)."""
    shares = [[] for _ in range(n)]
    for g in sorted(groups, key=len, reverse=True):
        min(shares, key=lambda s: sum(map(len, s))).append(g)
    return [s for s in shares if s]


def compile_ahead(model, notice=None) -> bool:
    """Compile the model's kernels with every core; returns False where it could not (one
    core, no fork, TINYLLM_COMPILE_AHEAD=0). notice: a terminal stream for a progress line."""
    cores = cpu_count()
    if cores < 2 or "fork" not in multiprocessing.get_all_start_methods() or os.environ.get("TINYLLM_COMPILE_AHEAD") == "0":
        return False
    groups = matmul_jobs(model)
    ctx = multiprocessing.get_context("fork")
    workers = []
    for share in _split(groups, min(cores - 1, len(groups))):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(share, send), daemon=True)
        p.start()
        send.close()
        workers.append((p, recv, share))
    progress = _Progress(notice, n_kernels=len(groups), seconds=max(_REST_SECONDS, _KERNEL_SECONDS * len(groups) / len(workers)))
    try:
        with fw.matmuls_skipped():
            for T in (2, 1):
                model._forward(np.zeros(T, np.int32), False)
        model.kv.reset()
        progress.rest_done()
        for p, recv, share in workers:
            while True:
                try:
                    msg = recv.recv()
                except EOFError:
                    break
                if msg[0] == "done":
                    progress.kernel_done()
                else:
                    break
            p.join()
    finally:
        for p, _, _ in workers:
            if p.is_alive():
                p.kill()
                p.join()
        progress.close()
    return True


class _Progress:
    """One line on a terminal: what is compiling, a bar and the seconds left (estimated)."""

    def __init__(self, stream, n_kernels: int, seconds: float):
        self.stream = stream if stream is not None and stream.isatty() else None
        self.n, self.done, self.rest = n_kernels, 0, False
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
        return f"compiling kernels (first run only) [{bar:<20}] {self.done}/{self.n} weight types, about {left} s left"

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
