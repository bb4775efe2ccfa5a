"""First-ever run against a warm run: `tinyllm run -n 32` from process start to exit, with an
empty kernel cache and then with the cache it filled, and the decode speed of each reply (a
first reply must be as fast as a later one: nothing may compile after the first token).

    python benchmarks/bench_cold_start.py [-m MODEL] [--rounds 3] [-n 32]

Each round uses a new empty NUMBA_CACHE_DIR; the model file itself is already on disk (the
default model is assembled once by `pip install`). Prints a Markdown table of the medians.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = "The capital of France is"


def timed_run(model, n, cache, extra_env=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, **(extra_env or {}))
    cmd = [sys.executable, "-m", "tinyllm", "run", "-p", PROMPT, "-n", str(n), "--temp", "0", "--ignore-eos"]
    if model:
        cmd[4:4] = ["-m", model]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    tps = float(re.search(r"eval time = .*?([\d.]+) tokens per second", r.stderr.split("prompt eval")[1]).group(1))
    jit = float(re.search(r"JIT compile = ([\d.]+) s", r.stderr).group(1))
    return wall, jit, tps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = {"cold": [], "warm": []}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="tinyllm-cold-") as cache:
            rows["cold"].append(timed_run(args.model, args.n, cache))
            rows["warm"].append(timed_run(args.model, args.n, cache))
        print(f"round {r + 1}: cold {rows['cold'][-1][0]:.1f} s, warm {rows['warm'][-1][0]:.1f} s", file=sys.stderr)
    print(f"| run | process start to exit ({args.n} tokens) | of which JIT compile / cache load | decode tokens/s |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        wall, jit, tps = (statistics.median(x) for x in zip(*v))
        print(f"| {k} | {wall:.1f} s | {jit:.1f} s | {tps:.1f} |")


if __name__ == "__main__":
    main()
