"""The first-run compile (tinyllm.model.compile_ahead): matmul kernels compile in forked
workers with exactly the signatures the runtime calls, everything else in the dry forward
pass, so that after warmup() nothing compiles again; a second process loads it all from the
cache and skips the workers; a terminal sees a progress line, erased afterwards."""
import io
import json
import os
import subprocess
import sys
import textwrap

import time

import numpy as np
import pytest

from tinyllm import load
from tinyllm.model import compile_ahead as ca
from tinyllm.quants.registry import TYPES

from tinymodels import make_tiny_model

PROBE = textwrap.dedent(
    """
    import json, sys
    from numba.core import event
    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    event.register("numba:compile", Listener())
    import tinyllm
    from tinyllm.model import compile_ahead as ca
    from tinyllm.sampling import SamplingParams

    calls = []
    real = ca.start
    ca.start = lambda *a, **k: calls.append(r := real(*a, **k)) or r
    m = tinyllm.load(sys.argv[1], n_ctx=64)
    m.warmup()
    n_warmup = len(compiled)
    text = tinyllm.generate(m, [1, 2, 3], max_tokens=4, params=SamplingParams(temperature=0)).read()
    print(json.dumps({"warmup": compiled[:n_warmup], "after": compiled[n_warmup:], "workers_ran": any(c is not None for c in calls)}))
    """
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("ahead")
    return make_tiny_model(d, "llama", "Q4_K")


def probe(path, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), TINYLLM_COMPILE_AHEAD="1")
    r = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="compiles nothing with the JIT off")
def test_first_run_compiles_matmuls_in_workers_and_nothing_after_warmup(model_path, tmp_path):
    m = load(model_path, n_ctx=64)
    kernels = {TYPES[t].kernels[s].py_func.__qualname__ for t in {w.type for _, w in m.weights.matrices()}
               for s in ("portable", "avx2")}  # fmt: skip
    cold = probe(model_path, tmp_path)
    assert cold["workers_ran"]
    assert cold["warmup"], "a first run with an empty cache compiled nothing in this process"
    assert not kernels & set(cold["warmup"]), "a matmul kernel compiled in the main process, not in a worker"
    assert cold["after"] == [], "kernels compiled after warmup: the first reply would stall"
    warm = probe(model_path, tmp_path)
    assert warm == {"warmup": [], "after": [], "workers_ran": False}


@pytest.mark.parametrize("wtype, overrides", [
    ("Q4_K", {"tensor_types": {"token_embd": "Q6_K", "blk.1.ffn_down": "Q8_0"}}),  # token_embd: rows only
    ("Q8_0", {"tensor_types": {"output": "F16", "blk.0.attn_v": "Q5_0"}}),
    ("F32", {}),
    ("Q4_1", {"tied": True}),  # token_embd is the output matrix too
    ("IQ4_XS", {"n_embd": 256, "head_dim": 64, "n_ff": 512}),
])
def test_jobs_from_sampled_rows_have_the_runtime_signatures(tmp_path, wtype, overrides):
    """The workers start before the weights are repacked, from one tile of each weight type's
    rows: their jobs must hold exactly the (kernel, signature) pairs that matmul calls on the
    loaded model's matrices at 1 and 2 tokens, one job per kernel."""
    from tinyllm.quants.matmul import kernel_calls

    path = make_tiny_model(tmp_path, "llama", wtype, **overrides)
    m = load(path, n_ctx=64)
    jobs = ca.matmul_jobs(ca.sample_matrices(m.gguf, m.config))
    got = {(j.kernel.py_func.__qualname__, j.kernel.py_func.__module__, s) for j in jobs for s in j.sigs}
    want = set()
    w = m.weights
    for mat in [w.output] + [v for lw in w.blk for v in vars(lw).values() if hasattr(v, "spec")]:
        for T in (1, 2):
            for kernel, args in kernel_calls(mat, T):
                want.add((kernel.py_func.__qualname__, kernel.py_func.__module__,
                          tuple(kernel.typeof_pyval(a) for a in args)))
    assert got == want
    assert len({id(j.kernel) for j in jobs}) == len(jobs)
    assert {s.type for s in ca.sample_matrices(m.gguf, m.config)} == {mat.type for _, mat in m.weights.matrices()
                                                                       if mat is not w.token_embd or w.tied}


def test_a_file_that_fails_to_load_stops_its_workers(tmp_path, monkeypatch):
    """Workers forked at the header are stopped when the rest of the load fails."""
    from tinyllm.errors import ModelError
    from tinyllm.model import weights as wmod

    started = []
    real = ca.start
    monkeypatch.setattr(ca, "warm_marker", lambda *a: tmp_path / "no-marker")
    monkeypatch.setattr(ca, "can_fork_workers", lambda: True)
    monkeypatch.setattr(ca, "start", lambda *a: started.append(real(*a)) or started[-1])

    def broken(*a, **k):
        raise ModelError("broken on purpose")

    monkeypatch.setattr("tinyllm.model.core.Weights", broken)
    path = make_tiny_model(tmp_path, "llama", "Q4_K")
    with pytest.raises(ModelError, match="broken on purpose"):
        load(path, n_ctx=64)
    assert started and started[0] is not None
    assert all(not p.is_alive() for p, _ in started[0].work.workers)


def test_warmup_progress_line_on_a_terminal_only(model_path, tmp_path, monkeypatch):
    """A first warmup (no warm marker) on a terminal writes only progress lines, then erases
    them; with the marker there (a later run) or on a pipe it writes nothing."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    import tinyllm.model.core as core

    marker = tmp_path / "warm" / "marker"
    monkeypatch.setattr(ca, "warm_marker", lambda *a: marker)
    monkeypatch.setattr(ca._Progress, "_tick", lambda self: self.stream.write("\r" + self._line() + "\x1b[K"))
    tty = Terminal()
    m = load(model_path, n_ctx=64)
    seconds = m.warmup(notice=tty)
    out = tty.getvalue()
    assert out.endswith("\r\x1b[K") and marker.exists()
    for line in out.split("\r")[1:-1]:
        assert line.startswith("compiling kernels (first run only) [") and line.endswith(" s left\x1b[K"), line
    assert m.compile_seconds == seconds >= 0 and m.kv.n_past == 0
    assert m.warmup(notice=tty) == seconds and tty.getvalue() == out  # a second warmup does nothing
    later, pipe = Terminal(), io.StringIO()
    load(model_path, n_ctx=64).warmup(notice=later)
    assert later.getvalue() == ""
    marker.unlink()
    load(model_path, n_ctx=64).warmup(notice=pipe)
    assert pipe.getvalue() == ""


def test_progress_line_estimates_from_the_work_done():
    p = ca._Progress(None, n_kernels=3, seconds=10.0)
    assert "0/3 kernels" in p._line() and "about 10 s left" in p._line()
    p.kernel_done()
    p.kernel_done()
    p.rest_done()
    p.t0 -= 3.0  # 3 s in, 3 of 4 parts done: about 1 s left
    line = p._line()
    assert "[###############     ] 2/3 kernels, about 1 s left" in line, line
    p.close()


def test_dry_forward_skips_products_only_inside_the_block(model_path):
    from tinyllm.model import forward as fw

    m = load(model_path, n_ctx=64)
    w = m.weights.blk[0].ffn_up
    x = np.ones((2, w.n_in), np.float32)
    with fw.matmuls_skipped():
        assert not fw.matmul(w, x).any()
    assert fw.matmul(w, x).any()


def test_forked_jobs_take_the_next_job_and_survive_a_failing_one(tmp_path):
    from tinyllm.jit import ForkedJobs

    def job(name, fail=False):
        def run():
            if fail:
                raise RuntimeError("boom")
            (tmp_path / name).write_text(name)
        run.size = len(name)
        return run

    jobs = [job("a"), job("bbbb"), job("cc", fail=True), job("ddd")]
    done = []
    with ForkedJobs(jobs, 2, weight=lambda j: j.size) as work:
        assert len(work.workers) == 2
        work.wait(lambda: done.append(1))
    # biggest first: bbbb, ddd, cc, a; cc fails and ends its worker, the other takes what is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "bbbb", "ddd"]
    assert len(done) == 3


def test_this_process_helps_with_the_jobs_no_worker_started(tmp_path):
    import os

    from tinyllm.jit import ForkedJobs

    def job(name, seconds=0.0):
        def run():
            time.sleep(seconds)
            (tmp_path / name).write_text(str(os.getpid()))
        return run

    jobs = [job("slow", 1.0)] + [job(f"quick{i}") for i in range(5)]
    here = []
    with ForkedJobs(jobs, 1) as work:
        time.sleep(0.3)  # the one worker is inside "slow"
        work.help(lambda: here.append(1))
        work.wait()
    pids = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert sorted(pids) == ["quick0", "quick1", "quick2", "quick3", "quick4", "slow"]
    assert pids["slow"] != str(os.getpid())
    mine = [n for n, pid in pids.items() if pid == str(os.getpid())]
    assert len(mine) == len(here) >= 4  # the worker may take one quick job after "slow", no more


@pytest.mark.parametrize("user_value, expected", [(None, 1), ("3", 3)])
def test_numba_opt_level_is_1_unless_the_user_sets_one(user_value, expected):
    # set by the package before any of its modules imports numba (a kernel module imports
    # numba first of all); a user's NUMBA_OPT wins
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_OPT"}
    if user_value:
        env["NUMBA_OPT"] = user_value
    code = "import tinyllm.quants.q4_k, numba; print(int(numba.config.OPT))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert int(out) == expected
