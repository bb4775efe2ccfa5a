"""How many of this process's cores other processes leave idle, from /proc (Linux).

Parallel kernels hand work to their threads ~150 times a token; when another process holds a
core, the thread scheduled behind it makes every hand-off wait for a time slice, and decode at
two threads on two busy cores ran at a fifth of one thread's speed (benchmarks/bench_threads.py).
`IdleCores.poll()` compares the CPU time all processes used on our cores (/proc/stat) with the
time this process used (/proc/self/stat, all its threads) over the last interval: the rest is
other processes' load, and the thread count that fits beside it is what tinyllm's default
setting uses (tinyllm.jit.follow_idle_cores).
"""
import os
import time

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (/proc/stat, after "cpuN")
MARGIN = 0.25  # a thread count t fits when at least t - MARGIN cores are idle


def _cores_busy_ticks(cores: frozenset) -> int:
    """Clock ticks all processes spent on these CPUs (busy states, steal included: on a VM a
    stolen tick is a core someone else had)."""
    total = 0
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu") or not line[3:4].isdigit():
                continue
            parts = line.split()
            if int(parts[0][3:]) in cores:
                values = parts[1:]
                total += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
    return total


def _own_ticks() -> int:
    """CPU time of this process, every thread, and of its children it has waited for (utime,
    stime, cutime, cstime: fields 14-17 of /proc/self/stat)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces
    return sum(int(v) for v in fields[11:15])


class IdleCores:
    """Samples the load of other processes every `interval` seconds; poll() returns the thread
    count that fits beside it (1..max_threads), or None between samples and where /proc cannot
    be read (then nothing changes)."""

    def __init__(self, max_threads: int, interval: float = 0.25):
        self.max_threads = max(1, int(max_threads))
        self.interval = interval
        try:
            self.cores = frozenset(os.sched_getaffinity(0))
            self.hz = os.sysconf("SC_CLK_TCK")
            self._last = self._sample()
        except (OSError, ValueError, AttributeError, IndexError):
            self._last = None

    def _sample(self):
        return time.monotonic(), _cores_busy_ticks(self.cores), _own_ticks()

    def restart(self):
        """Start a new interval now (after work of child processes, e.g. compile workers,
        that should not count as other processes' load)."""
        if self._last is not None:
            try:
                self._last = self._sample()
            except (OSError, ValueError, IndexError):
                self._last = None

    def others(self) -> float | None:
        """Cores' worth of other processes' load since the last sample (and sample anew), or
        None where /proc cannot be read or under a hundredth of a second has passed."""
        if self._last is None:
            return None
        t0, busy0, own0 = self._last
        if time.monotonic() - t0 < 0.01:
            return None
        try:
            self._last = t1, busy1, own1 = self._sample()
        except (OSError, ValueError, IndexError):
            self._last = None
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (self.hz * (t1 - t0))

    def poll(self) -> int | None:
        if self._last is None or time.monotonic() - self._last[0] < self.interval:
            return None
        others = self.others()
        return None if others is None else fitting_threads(len(self.cores), others, self.max_threads)


def fitting_threads(n_cores: int, others: float, max_threads: int) -> int:
    """Threads that fit on n_cores beside `others` cores' worth of other processes' load."""
    idle = n_cores - others
    return max(1, min(max_threads, int(idle + MARGIN)))


__all__ = ["IdleCores", "fitting_threads"]
