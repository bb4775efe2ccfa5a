"""The one Numba policy of the project, and the thread count.

Two decorators:
- `jit_exact`: no fastmath. Quantizers and dequantizers must reproduce ggml's float32
  arithmetic bit for bit, so no contraction into FMA and no reassociation.
- `jit_fast`: dot kernels and per-token ops. Contraction and reassociation are allowed;
  `nnan`/`ninf` are not, because attention masks use -inf.
"""
import os

import numba

_FAST_FLAGS = {"contract", "reassoc", "nsz", "arcp", "afn"}


def jit_exact(*args, parallel=False, **kwargs):
    return numba.njit(*args, cache=True, nogil=True, error_model="numpy", parallel=parallel, **kwargs)


def jit_fast(*args, parallel=False, **kwargs):
    return numba.njit(
        *args, cache=True, nogil=True, error_model="numpy", fastmath=_FAST_FLAGS, parallel=parallel, **kwargs
    )


def set_threads(n: int | None) -> int:
    """Set the number of threads the parallel kernels use; None means all cores. Returns the count."""
    limit = numba.config.NUMBA_NUM_THREADS
    n = limit if n is None else int(n)
    if not 1 <= n <= limit:
        from .errors import UsageError

        raise UsageError(f"threads must be between 1 and {limit}, got {n}")
    numba.set_num_threads(n)
    return n


def get_threads() -> int:
    return numba.get_num_threads()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
