"""The default thread count follows the idle cores (tinyllm.idle_cores, tinyllm.jit): other
processes' CPU time is read from /proc and this process's own (threads and waited-for
children) is left out; the thread count that fits beside the load is used between forward
steps; an explicit count stays fixed; the bandwidth probe is not cached when measured under load."""
import os
import subprocess
import sys
import threading
import time

import numba
import pytest

from tinyllm import bandwidth, idle_cores, jit
from tinyllm.idle_cores import IdleCores, fitting_threads

linux_proc = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")


@pytest.mark.parametrize(
    "cores, others, limit, expected",
    [(2, 0.0, 2, 2), (2, 0.2, 2, 2), (2, 0.3, 2, 1), (2, 1.0, 2, 1), (2, 2.0, 2, 1), (8, 3.0, 8, 5),
     (8, 0.0, 4, 4), (1, 0.0, 1, 1)],
)
def test_threads_that_fit_beside_the_load(cores, others, limit, expected):
    assert fitting_threads(cores, others, limit) == expected


@linux_proc
def test_other_processes_count_as_load_and_our_own_work_does_not():
    n = len(os.sched_getaffinity(0))
    watch = IdleCores(n, interval=0.0)
    # this process busy on one core (a thread of ours) and a child it waits for: both ours
    stop = time.monotonic() + 0.5
    spin = threading.Thread(target=lambda: [None for _ in iter(lambda: time.monotonic() < stop, False)])
    spin.start()
    subprocess.run([sys.executable, "-c", "import time\nt=time.monotonic()+0.4\nwhile time.monotonic()<t: pass"], check=True)
    spin.join()
    assert watch.others() < 0.5 * n + 0.5
    # every core busy with processes that are not ours (not waited for while measured)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        watch.restart()
        time.sleep(0.8)
        others = watch.others()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert others > 0.5 * n
    if n >= 2:
        assert fitting_threads(n, others, n) < n


def test_poll_waits_for_its_interval():
    watch = IdleCores(2, interval=3600)
    assert watch.poll() is None


class _FakeWatch:
    def __init__(self, answer):
        self.answer = answer

    def poll(self):
        return self.answer

    def restart(self):
        pass


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads to choose between")
def test_default_setting_follows_and_an_explicit_count_stays(monkeypatch):
    saved = jit.threads_setting()
    try:
        assert jit.set_threads(None) == numba.config.NUMBA_NUM_THREADS
        assert jit.threads_setting() is None
        monkeypatch.setattr(jit, "_follow", _FakeWatch(1))
        jit.follow_idle_cores()
        assert jit.get_threads() == 1 and jit.threads_setting() is None
        jit._follow.answer = 2
        jit.follow_idle_cores()
        assert jit.get_threads() == 2
        jit.set_threads(1)  # an explicit count: nothing follows
        assert jit.threads_setting() == 1 and jit._follow is None
        jit.follow_idle_cores()
        assert jit.get_threads() == 1
    finally:
        jit.set_threads(saved)


@pytest.mark.parametrize("others, cached", [(0.0, True), (1.0, False)])
def test_bandwidth_probe_under_load_is_not_cached(tmp_path, monkeypatch, others, cached):
    monkeypatch.setattr(bandwidth, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(bandwidth, "_measure_in_a_new_process", lambda n: 12.5)

    class Watch:
        def __init__(self, n):
            pass

        def others(self):
            return others

    monkeypatch.setattr(idle_cores, "IdleCores", Watch)
    assert bandwidth.read_gbs(1) == 12.5
    assert (bandwidth.cached_read_gbs(1) == 12.5) is cached


def test_parsing_a_thread_count_checks_it_and_changes_nothing():
    from tinyllm.cli.options import parse_threads
    from tinyllm.errors import UsageError

    saved = jit.threads_setting()
    try:
        jit.set_threads(None)
        assert parse_threads("1") == 1 and parse_threads(None) is None
        assert jit.threads_setting() is None  # still following the idle cores
        for bad in ("0", str(jit.max_threads() + 1), "two"):
            with pytest.raises(UsageError, match="-t/--threads"):
                parse_threads(bad)
        assert jit.threads_setting() is None
    finally:
        jit.set_threads(saved)
