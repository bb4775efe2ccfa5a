"""The GGUF fuzz harness: mutated tiny models loaded the way `tinyllm info` and `tinyllm run`
load them, in worker processes with memory and time limits (README.md here).

A worker (`python -m tests.fuzz --worker`) loads the base models once, then takes case seeds
on stdin: it builds the mutated file of each seed, loads it in-process and answers one JSON
line with the outcome. Its own process is the crash and hang guard: the parent kills a worker
that does not answer within the time limit (a hang) and restarts one that died (a crash).
Outcomes:

    ok:      success, or a TinyLLMError whose `tinyllm: error: ...` line is one line of at most
             MAX_MESSAGE characters
    failure: any other exception (MemoryError under the address-space limit included), a
             multi-line or over-long message, a warning, a crash (signal), a hang
"""
from __future__ import annotations

import json
import os
import random
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE = 300
# (arch, weight type, make_tiny_model overrides): every supported arch, block and float weights
BASES = (("llama", "Q8_0", {}), ("gemma3", "Q8_0", {}), ("qwen2", "F16", {}), ("qwen3", "Q4_0", {}),
         ("llama", "Q4_K", {"rope_freqs": True, "tied": False}))
PROMPT = "Hello world é 🙂\n<s>"


def build_bases(directory) -> list[Path]:
    """The base models, made by the tests' own helper (tinyllm quantizes and writes them), and
    one with a byte-level BPE vocabulary (gpt2, pre-tokenizer llama3) instead of the SPM one."""
    try:
        from tests.tinymodels import make_tiny_model
    except ImportError:  # run by pytest from tests/
        from tinymodels import make_tiny_model
    paths = [make_tiny_model(directory, arch=a, wtype=w, **o) for a, w, o in BASES]
    bpe = Path(directory) / "tiny-llama-bpe.gguf"
    if not bpe.exists():
        _write_bpe_variant(paths[0], bpe)
    return paths + [bpe]


def _write_bpe_variant(src: Path, dst: Path) -> None:
    from tinyllm.gguf_io import GGUFFile, write_gguf
    from tinyllm.tokenizer.bpe import BYTE_CHARS

    with GGUFFile(src) as g:
        n = len(g.metadata["tokenizer.ggml.tokens"])
        merges = ["Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ã ©"]
        tokens = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] + list(BYTE_CHARS)
        tokens += [m.replace(" ", "") for m in merges if m.replace(" ", "") not in tokens]
        tokens += [f"<|reserved_{i}|>" for i in range(n - len(tokens))]
        types = np.array([3, 3, 3] + [1] * (n - 3), np.int32)
        md = {k: v for k, v in g.metadata.items() if not k.startswith("tokenizer.")}
        md.update({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama3", "tokenizer.ggml.tokens": tokens,
                   "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
                   "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1,
                   "tokenizer.ggml.eot_token_id": 2})
        vt = {k: g.value_types[k] for k in md if k in g.value_types}
        write_gguf(dst, md, [(t.name, t.type, t.shape, np.asarray(t.data)) for t in g.tensors.values()],
                   value_types=vt)


def case(docs, seed: int) -> tuple[int, bytes, list[str]]:
    """(base index, file bytes, notes) of one case; the same seed always gives the same bytes."""
    from .gguf_mutator import mutate

    rng = random.Random(seed)
    base = rng.randrange(len(docs))
    data, notes = mutate(docs[base], rng)
    return base, data, notes


def target(path: str) -> None:
    """What the CLI does with a model file: `info` (header only), then `run` (load, tokenize,
    a first forward, sampled and greedy tokens, detokenize)."""
    from tinyllm.cli.info_command import describe
    from tinyllm.generation import generate
    from tinyllm.gguf_io import GGUFFile
    from tinyllm.model import load
    from tinyllm.sampling import SamplingParams

    with GGUFFile(path) as g:
        describe(g)
    with load(path, threads=1) as model:
        model.kv.report()
        model.tokenizer.describe()
        generate(model, PROMPT, max_tokens=3, params=SamplingParams(seed=7)).read()
        model.reset()
        generate(model, PROMPT, max_tokens=2, params=SamplingParams(temperature=0.0)).read()


def classify(exc: BaseException | None, caught: list) -> tuple[str, str]:
    """(outcome, detail) of one in-process run."""
    from tinyllm.errors import TinyLLMError

    if exc is None:
        if caught:
            w = caught[0]
            return "failure", f"warning {w.category.__name__}: {str(w.message)[:200]} at {Path(w.filename).name}:{w.lineno}"
        return "success", ""
    if isinstance(exc, TinyLLMError):
        line = f"tinyllm: error: {exc}"
        if "\n" in line or "\r" in line:
            return "failure", f"multi-line message: {line[:200]!r}"
        if len(line) > MAX_MESSAGE:
            return "failure", f"message of {len(line)} characters: {line[:200]!r}..."
        return "error", line
    tb = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(tb) if "/tinyllm/" in f.filename), tb[-1] if tb else None)
    where = f" at {Path(frame.filename).name}:{frame.lineno} ({frame.name})" if frame else ""
    return "failure", f"{type(exc).__name__}: {str(exc)[:200]}{where}"


# -- the worker --------------------------------------------------------------------------------

def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_main(base_dir: str, mem_mb: int) -> int:
    from .gguf_mutator import Doc

    paths = build_bases(base_dir)  # made by the parent already: this only names them, in order
    docs = [Doc.parse(p) for p in paths]
    for p in paths:  # compile (or load from the cache) every kernel before the limits
        target(str(p))
    if mem_mb > 0 and hasattr(resource, "RLIMIT_AS"):
        limit = _vm_bytes() + mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing the library might print can garble the protocol
    tmp = tempfile.mkdtemp(prefix="tinyllm-fuzz-")
    try:
        return _serve(docs, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _serve(docs, tmp: str, out) -> int:
    # Library code never prints: whatever reaches fd 2 during a case (a Rust panic's report,
    # a C library's complaint) is what a CLI user would see, so it fails the case.
    err = open(os.path.join(tmp, "stderr"), "w+b")
    sys.stderr.flush()
    os.dup2(err.fileno(), 2)
    out.write("@@ready\n")
    out.flush()
    for line in sys.stdin:
        seed = int(line)
        path = os.path.join(tmp, f"case-{seed}.gguf")
        exc = None
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, data, _ = case(docs, seed)  # a bug here is the harness's: it ends the worker
            with open(path, "wb") as f:
                f.write(data)
            try:
                target(path)
            except BaseException as e:  # noqa: BLE001 - classifying is the point
                if isinstance(e, KeyboardInterrupt):
                    raise
                exc = e
        outcome, detail = classify(exc, list(caught))
        del exc
        sys.stderr.flush()
        if outcome != "failure" and os.fstat(err.fileno()).st_size:
            err.seek(0)
            first = err.read(300).decode("utf-8", "replace").strip().splitlines()
            outcome, detail = "failure", f"stderr output: {first[0][:200] if first else ''!r}"
        err.seek(0)
        err.truncate()
        try:
            os.unlink(path)
        except OSError:
            pass
        out.write("@@" + json.dumps({"seed": seed, "outcome": outcome, "detail": detail,
                              "seconds": round(time.perf_counter() - t0, 3)}) + "\n")
        out.flush()
    return 0


# -- the parent --------------------------------------------------------------------------------

@dataclass
class Result:
    cases: int = 0
    counts: dict = field(default_factory=dict)  # outcome -> count
    failures: list = field(default_factory=list)  # (seed, detail, notes)
    errors: dict = field(default_factory=dict)  # first words of each error message -> count
    seconds: float = 0.0
    slowest: list = field(default_factory=list)  # (seconds, seed) of the slowest cases

    @property
    def n_failures(self) -> int:
        return len(self.failures)


class _Worker:
    def __init__(self, base_dir, mem_mb, log):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1", "TINYLLM_COMPILE_AHEAD": "0",
               "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz", "--worker", "--bases", str(base_dir), "--mem-mb", str(mem_mb)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        )
        self.buf = b""

    def read_line(self, timeout: float) -> str | None:
        """The next protocol line, or None on timeout or exit."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                if line.startswith(b"@@"):
                    return line[2:].decode()
                continue
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk

    def send(self, seed: int) -> bool:
        try:
            self.proc.stdin.write(f"{seed}\n".encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run(seeds, *, jobs: int = 2, timeout: float = 30.0, mem_mb: int = 2048, progress=None) -> Result:
    """Run every seed; returns the counts and every failing case with its seed and mutations."""
    from .gguf_mutator import Doc

    t0 = time.monotonic()
    res = Result()
    seeds = list(seeds)
    lock = threading.Lock()
    queue = list(reversed(seeds))
    with tempfile.TemporaryDirectory(prefix="tinyllm-fuzz-bases-") as base_dir, \
            tempfile.TemporaryFile() as log:
        paths = build_bases(base_dir)
        docs = []

        def notes_of(seed):
            if not docs:
                docs.extend(Doc.parse(p) for p in paths)
            try:
                return case(docs, seed)[2]
            except Exception as e:  # noqa: BLE001 - the mutator's own bug: report it, go on
                return [f"the mutator itself failed: {type(e).__name__}: {e}"]

        def record(seed, outcome, detail):
            with lock:
                res.cases += 1
                res.counts[outcome] = res.counts.get(outcome, 0) + 1
                if outcome in ("crash", "hang", "failure"):
                    res.failures.append((seed, f"{outcome}: {detail}" if outcome != "failure" else detail, notes_of(seed)))
                elif outcome == "error":
                    words = detail.split(": ", 3)[-1].split()
                    head = " ".join(w for w in words[:4] if not any(ch.isdigit() for ch in w))
                    res.errors[head] = res.errors.get(head, 0) + 1
                if progress:
                    progress(res)

        def start():
            w = _Worker(base_dir, mem_mb, log)
            line = w.read_line(600.0)
            if line != "ready":
                w.kill()
                log.seek(0)
                raise RuntimeError(f"fuzz worker did not start: {log.read()[-2000:].decode(errors='replace')}")
            return w

        def drive():
            w = start()
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        seed = queue.pop()
                    if not w.send(seed):
                        w.kill()
                        w = start()
                        w.send(seed)
                    line = w.read_line(timeout)
                    if line is None:
                        code = w.proc.poll()
                        if code is None:
                            record(seed, "hang", f"no answer in {timeout:.0f} s")
                        else:
                            record(seed, "crash", f"worker exited with {code}")
                        w.kill()
                        w = start()
                        continue
                    r = json.loads(line)
                    record(r["seed"], r["outcome"], r["detail"])
                    with lock:
                        res.slowest = sorted(res.slowest + [(r["seconds"], r["seed"])], reverse=True)[:5]
            finally:
                w.proc.stdin.close()  # end of input: the worker cleans up and exits
                try:
                    w.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
                w.kill()

        threads = [threading.Thread(target=_guard(drive, res), daemon=True) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if getattr(res, "_error", None):
            raise res._error
    res.failures.sort()
    res.seconds = time.monotonic() - t0
    return res


def _report_line(line: str) -> bool:
    """A line `tinyllm run` may print before an error: its load report (the KV cache, the
    sampler seed) or a one-line warning of its own; not a traceback or a Python warning."""
    if len(line) > MAX_MESSAGE or line.startswith("tinyllm: error"):
        return False
    if line.startswith("tinyllm: warning: "):
        return True
    return not any(word in line for word in ("Traceback", "Error", "Warning", "warning", "error"))


def run_cli(seeds, *, jobs: int = 2, timeout: float = 120.0, mem_mb: int = 2048, progress=None) -> Result:
    """The same cases through the real command line, one `tinyllm info` and one `tinyllm run`
    subprocess each (RLIMIT_AS and a time limit on each): slower (the imports), for checking
    that what the in-process worker classifies is what a user sees."""
    import concurrent.futures as cf

    from .gguf_mutator import Doc

    t0 = time.monotonic()
    res = Result()
    lock = threading.Lock()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TINYLLM_COMPILE_AHEAD": "0"}

    def limit():  # a CLI process starts at about 1 GiB of address space (numba, llvmlite)
        if mem_mb > 0:
            n = (mem_mb + 2048) * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (n, n))

    with tempfile.TemporaryDirectory(prefix="tinyllm-fuzz-cli-") as tmp:
        docs = [Doc.parse(p) for p in build_bases(tmp)]

        def one(seed):
            _, data, notes = case(docs, seed)
            path = os.path.join(tmp, f"case-{seed}.gguf")
            with open(path, "wb") as f:
                f.write(data)
            outcome, detail = "success", ""
            for args in (["info", path], ["run", "-m", path, "-p", PROMPT, "-n", "3", "--seed", "7"]):
                try:
                    r = subprocess.run([sys.executable, "-m", "tinyllm", *args], capture_output=True, env=env,
                                       timeout=timeout, preexec_fn=limit, cwd=tmp)
                except subprocess.TimeoutExpired:
                    outcome, detail = "hang", f"{args[0]}: no exit in {timeout:.0f} s"
                    break
                err = r.stderr.decode("utf-8", "replace")
                if r.returncode < 0:
                    outcome, detail = "crash", f"{args[0]}: signal {-r.returncode}"
                    break
                if r.returncode == 1:
                    *before, line = err.rstrip("\n").split("\n")
                    if not line.startswith("tinyllm: error: ") or len(line) > MAX_MESSAGE or not all(map(_report_line, before)):
                        outcome, detail = "failure", f"{args[0]}: stderr {err[-300:]!r}"
                        break
                    outcome, detail = "error", line
                    break  # what info reported, run would too
                if r.returncode != 0:
                    outcome, detail = "failure", f"{args[0]}: exit {r.returncode}: {err[-300:]!r}"
                    break
            os.unlink(path)
            with lock:
                res.cases += 1
                res.counts[outcome] = res.counts.get(outcome, 0) + 1
                if outcome in ("crash", "hang", "failure"):
                    res.failures.append((seed, f"{outcome}: {detail}", notes))
                if progress:
                    progress(res)

        with cf.ThreadPoolExecutor(max(1, jobs)) as ex:
            list(ex.map(one, seeds))
    res.failures.sort()
    res.seconds = time.monotonic() - t0
    return res


def _guard(fn, res):
    def wrapped():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by run()
            res._error = e

    return wrapped


def summary(res: Result) -> str:
    lines = [f"{res.cases} cases in {res.seconds:.1f} s: "
             + ", ".join(f"{k} {v}" for k, v in sorted(res.counts.items()))
             + f"; {res.n_failures} failures"]
    if res.slowest:
        lines.append("slowest cases: " + ", ".join(f"seed {s} {t:.2f} s" for t, s in res.slowest))
    if res.errors:
        top = sorted(res.errors.items(), key=lambda kv: -kv[1])[:12]
        lines.append("most common errors: " + "; ".join(f"{k!r} x{v}" for k, v in top))
    for seed, detail, notes in res.failures:
        lines.append(f"FAIL seed {seed}: {detail}")
        lines.append(f"    mutations: {' | '.join(notes)}")
    return "\n".join(lines)
