"""Decode and prefill tokens/s on a quiet and on a busy machine, for each threading setting,
beside llama-bench: the measurements behind tinyllm's default threading (tinyllm/jit.py).

    python benchmarks/bench_threads.py [-m MODEL] [-t 1,2] [--rounds 2] [--busy 2]

"busy" runs --busy other CPU-bound processes (a Python busy loop each) during the test, as a
shared machine has. Each round runs every setting once, in an interleaved order, so that a
change in the machine's load moves all of them alike; a cell is the median over rounds of
`tinyllm bench`'s mean tokens/s (-p 64 -n 32 -r 3). Settings are environment variables read
when the Numba threading layer starts; "tinyllm default" is what tinyllm sets itself, and its
"auto" row is the default thread count (`-t auto`: all cores, fewer while other processes keep
cores busy), which is what `tinyllm run` and `chat` use without -t.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager

from llama_cpp_tools import llama_bench_rows

SETTINGS = {
    "tinyllm default": {},
    "omp, GOMP_SPINCOUNT=300000 (libgomp's default)": {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "300000"},
    "omp, GOMP_SPINCOUNT=100000": {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "100000"},
    "omp, GOMP_SPINCOUNT=10000": {"NUMBA_THREADING_LAYER": "omp", "GOMP_SPINCOUNT": "10000"},
    "omp, OMP_WAIT_POLICY=active": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "active"},
    "omp, OMP_WAIT_POLICY=passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}
KEYS = ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@contextmanager
def busy(n):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def tinyllm_bench(model, threads, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "tinyllm", "bench", "-p", "64", "-n", "32", "-r", "3", "-t", str(threads), "-o", "json"]
    if model:
        cmd[4:4] = ["-m", model]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return {r["test"]: r["avg_ts"] for r in json.loads(out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF file (default: tinyllm's default model)")
    ap.add_argument("-t", "--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", type=int, default=2, help="CPU-bound processes in the busy case")
    ap.add_argument("--no-llama", action="store_true", help="skip llama-bench")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    model = args.model
    if model is None:
        from tinyllm.default_model import default_model_path

        model = str(default_model_path())
    cells: dict[tuple, list] = {}
    for r in range(args.rounds):
        for load in ("quiet", "busy"):
            with busy(args.busy if load == "busy" else 0):
                order = list(SETTINGS.items())
                order = order[r % len(order):] + order[: r % len(order)]
                for name, env in order:
                    # "auto": tinyllm's default, all cores and fewer while others keep cores busy
                    for t in threads + (["auto"] if name == "tinyllm default" else []):
                        for test, ts in tinyllm_bench(model, t, env).items():
                            cells.setdefault((load, test, "tinyllm " + name, t), []).append(ts)
                if not args.no_llama:
                    for t in threads:
                        for row in llama_bench_rows(model, n_prompt=64, n_gen=32, threads=t, reps=3):
                            test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
                            cells.setdefault((load, test, "llama-bench", t), []).append(row["avg_ts"])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print("| load | test | setting | threads | tokens/s |")
    print("|---|---|---|---|---|")
    for (load, test, name, t), v in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0]))):
        print(f"| {load} | {test} | {name} | {t} | {statistics.median(v):.1f} |")


if __name__ == "__main__":
    main()
