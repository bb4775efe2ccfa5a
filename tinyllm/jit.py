"""The one Numba policy of the project, where compiled kernels are cached, and the thread count.

Two decorators:
- `jit_exact`: no fastmath. Quantizers and dequantizers must reproduce ggml's float32
  arithmetic bit for bit, so no contraction into FMA and no reassociation.
- `jit_fast`: dot kernels and per-token ops. Contraction and reassociation are allowed;
  `nnan`/`ninf` are not, because attention masks use -inf.

Compiled kernels go to `<cache>/numba/<source hash>` (the cache is `$NUMBA_CACHE_DIR` when set,
else the tinyllm cache directory). Numba checks only the timestamp of the file that defines a
kernel, not of the helpers it calls from other modules; keying the directory on a hash of
every source file of the package means an edit anywhere starts a fresh cache, so a stale
kernel can never be loaded. Numba itself keys each entry on the CPU name and features.
"""
import hashlib
import os
from pathlib import Path

import numba

from .paths import cache_dir

FAST_FLAGS = frozenset({"contract", "reassoc", "nsz", "arcp", "afn"})
_PACKAGE = Path(__file__).resolve().parent


def source_hash() -> str:
    """sha256 (first 16 hex digits) of every .py file of the package, by relative path."""
    h = hashlib.sha256(numba.__version__.encode())
    for p in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(p.relative_to(_PACKAGE)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def kernel_cache_dir() -> Path:
    base = os.environ.get("NUMBA_CACHE_DIR")
    return (Path(base) if base else cache_dir() / "numba") / source_hash()


numba.config.CACHE_DIR = str(kernel_cache_dir())  # before any decorator below runs

# OpenMP threads that spin-wait for work collapse when the machine's cores are busy with other
# processes (libgomp spins 300,000 rounds by default, and decode starts ~150 parallel regions
# a token). A short bounded spin keeps the hand-off between kernels cheap on a quiet machine
# and yields the core when it is needed elsewhere (benchmarks/bench_threads.py measures both).
# A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins; libgomp reads them when it loads.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"


def jit_exact(*args, parallel=False, **kwargs):
    return numba.njit(*args, cache=True, nogil=True, error_model="numpy", parallel=parallel, **kwargs)


def jit_fast(*args, parallel=False, **kwargs):
    return numba.njit(
        *args, cache=True, nogil=True, error_model="numpy", fastmath=set(FAST_FLAGS), parallel=parallel, **kwargs
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
