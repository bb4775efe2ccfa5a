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
    """Set the number of threads the parallel kernels use. None, the default, means all cores
    while the machine is quiet and fewer while other processes keep cores busy (the count
    follows the idle cores between forward steps: follow_idle_cores). Returns the count now."""
    global _follow
    limit = max_threads()
    count = limit if n is None else check_threads(n)
    numba.set_num_threads(count)
    _follow = _idle_watch(limit) if n is None else None
    return count


def max_threads() -> int:
    """The most threads the parallel kernels can use (Numba's pool size)."""
    return numba.config.NUMBA_NUM_THREADS


def check_threads(n) -> int:
    """n as a thread count, or UsageError when it is outside 1..max_threads(); sets nothing."""
    count, limit = int(n), max_threads()
    if not 1 <= count <= limit:
        from .errors import UsageError

        raise UsageError(f"threads must be between 1 and {limit}, got {n}")
    return count


def get_threads() -> int:
    """The thread count the parallel kernels use now."""
    return numba.get_num_threads()


def threads_setting() -> int | None:
    """What set_threads was given last: a count, or None while the count follows the idle
    cores; set_threads(threads_setting()) restores it."""
    return None if _follow is not None else numba.get_num_threads()


def follow_idle_cores() -> None:
    """Between forward steps: with the default setting, every quarter second, use as many
    threads as other processes leave cores idle (tinyllm.idle_cores; on two cores with two
    busy processes beside it, decode at two threads ran 5x slower than at one)."""
    if _follow is not None:
        n = _follow.poll()
        if n is not None and n != numba.get_num_threads():
            numba.set_num_threads(n)


def restart_idle_watch() -> None:
    """Start the idle-core measurement afresh (after child processes' work that is ours, e.g.
    compile workers)."""
    if _follow is not None:
        _follow.restart()


def _idle_watch(limit: int):
    if limit < 2:
        return None
    from .idle_cores import IdleCores

    return IdleCores(limit)


_follow = _idle_watch(numba.config.NUMBA_NUM_THREADS)  # the default: follow the idle cores


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def warm_marker(*parts: str) -> Path:
    """A file in the kernel cache that says "the kernels for these parts are compiled on this
    CPU": a first run creates it after compiling, later runs see it and skip compiling ahead."""
    import llvmlite.binding as llvm

    key = "|".join([llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), *parts])
    return kernel_cache_dir() / "warm" / hashlib.sha256(key.encode()).hexdigest()[:16]


def touch_marker(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        pass  # a read-only cache only costs the next run a compile check


def can_fork_workers() -> bool:
    """Compiling in forked workers pays where there is a second core and fork (POSIX);
    TINYLLM_COMPILE_AHEAD=0 turns it off."""
    import multiprocessing

    return (cpu_count() >= 2 and "fork" in multiprocessing.get_all_start_methods()
            and os.environ.get("TINYLLM_COMPILE_AHEAD") != "0")


class ForkedJobs:
    """Zero-argument callables (compile jobs) run in up to n forked worker processes, biggest
    first (`weight(job)`): each worker takes the next job no one has started, and so may this
    process, once it has nothing else to do (`help`). A worker's results are its side effects
    on Numba's on-disk cache; a job that raises ends its worker quietly (the others go on),
    since whatever it failed to compile is compiled again where it is needed. Use as a context
    manager; the exit kills any worker still running.

        with ForkedJobs(jobs, n) as work:
            ...                      # this process goes on meanwhile
            work.help(on_done)       # optional: take the jobs not started yet here
            work.wait(on_done)       # on_done() once per finished job
    """

    def __init__(self, jobs, n: int, weight=lambda job: 1.0):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.jobs = sorted(jobs, key=weight, reverse=True)
        self._next = ctx.Value("l", 0)  # index of the next job to start, in shared memory
        self.workers = []
        for _ in range(max(1, min(n, len(self.jobs))) if self.jobs else 0):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=self._work, args=(send,), daemon=True)
            p.start()
            send.close()
            self.workers.append((p, recv))

    def _claim(self):
        with self._next.get_lock():
            i = self._next.value
            if i >= len(self.jobs):
                return None
            self._next.value = i + 1
        return self.jobs[i]

    def _work(self, conn):
        while (job := self._claim()) is not None:
            try:
                job()
            except Exception:
                return
            conn.send(1)

    def help(self, on_done=None) -> None:
        """Run here, one by one, the jobs no worker has started; a job that raises is passed
        over (what it failed to compile is compiled where it is needed)."""
        while (job := self._claim()) is not None:
            try:
                job()
            except Exception:
                continue
            if on_done is not None:
                on_done()

    def wait(self, on_done=None) -> None:
        for p, recv in self.workers:
            while True:
                try:
                    recv.recv()
                except EOFError:
                    break
                if on_done is not None:
                    on_done()
            p.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p, _ in self.workers:
            if p.is_alive():
                p.kill()
                p.join()
