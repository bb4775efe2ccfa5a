"""tinyllm against llama.cpp's own llama-bench, interleaved in one run: pp and tg at each
thread count and depth, one tool after the other per cell, so that a change in the machine's
load moves both alike; prints tokens/s of each and the ratio.

    benchmarks/build_llama_cpp.sh        # once: llama-bench into ~/.cache/tinyllm/llama.cpp
    python benchmarks/bench_vs_llama.py [-m MODEL] [-p 256] [-n 64] [-t 1,2] [-d 0,1024,4096] [-r 3] [--rounds 2]

Both tools: llama-bench's protocol (random tokens, a warm-up run, -r timed repetitions, mean
tokens/s); tinyllm through `tinyllm bench -o json`, llama.cpp through `llama-bench -o json`.
A cell is the median over --rounds interleaved rounds, the tool order alternating; llama.cpp's
figure is the better of llama-bench's two load modes (-lm mmap, its default, and -lm none), both
shown. --rss adds the peak RSS at a 4096-token context: `tinyllm run -c 4096 -n 64` against
`llama-bench -d 4032 -n 64` (whose context is depth + n_gen) in each load mode.
"""
import argparse
import json
import statistics
import subprocess
import sys

from llama_cpp_tools import llama_bench_rows, tool


def tinyllm_rows(model, n_prompt, n_gen, threads, depth, reps):
    cmd = [sys.executable, "-m", "tinyllm", "bench", "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
           "-t", str(threads), "-d", str(depth), "-r", str(reps), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {r["test"].split(" @")[0]: r["avg_ts"] for r in json.loads(out)}


LOAD_MODES = ("mmap", "none")  # llama-bench -lm: its default maps the file; "none" reads it into memory


def llama_rows(model, n_prompt, n_gen, threads, depth, reps):
    """{test: {load mode: t/s}}: llama.cpp's figure is the better of its two load modes (on a
    VM whose page cache is mapped in small pages, reading the weights into memory decodes up to
    1.5x faster than mapping them)."""
    out = {}
    for mode in LOAD_MODES:
        for r in llama_bench_rows(model, n_prompt=n_prompt, n_gen=n_gen, threads=threads, depth=depth, reps=reps,
                                  extra=("-lm", mode)):
            out.setdefault(f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}", {})[mode] = r["avg_ts"]
    return out


def peak_rss_mib(cmd) -> float:
    """Maximum resident set size of cmd in MiB, from a Python wrapper process that runs only
    it (a child's ru_maxrss is the largest of all children waited for)."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True).stdout
    return int(out) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-p", type=int, default=256)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-d", default="0,1024,4096")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rss", action="store_true", help="also compare peak RSS (separate processes, one each)")
    args = ap.parse_args()
    if args.model is None:
        from tinyllm.default_model import default_model_path

        args.model = str(default_model_path())
    cells: dict = {}
    for rnd in range(args.rounds):
        for t in map(int, args.t.split(",")):
            for d in map(int, args.d.split(",")):
                tools = [("tinyllm", tinyllm_rows), ("llama-bench", llama_rows)]
                for name, fn in tools if rnd % 2 == 0 else tools[::-1]:
                    for test, ts in fn(args.model, args.p, args.n, t, d, args.r).items():
                        runs = ts.items() if isinstance(ts, dict) else [(name, ts)]
                        for key, v in runs:
                            cells.setdefault((test, t, d), {}).setdefault(key, []).append(v)
                print(f"round {rnd + 1}: {t} thread(s), depth {d} done", file=sys.stderr, flush=True)
    print("| test | threads | depth | tinyllm t/s | llama-bench t/s (best of -lm mmap / none) | ratio |")
    print("|---|--:|--:|--:|--:|--:|")
    for (test, t, d), v in sorted(cells.items(), key=lambda kv: (kv[0][0][:2], kv[0][1], kv[0][2])):
        a = statistics.median(v["tinyllm"])
        by_mode = {m: statistics.median(v[m]) for m in LOAD_MODES}
        best = max(by_mode, key=by_mode.get)
        b = by_mode[best]
        modes = " / ".join(f"{by_mode[m]:.1f}" for m in LOAD_MODES)
        print(f"| {test} | {t} | {d} | {a:.1f} | **{b:.1f}** ({modes}) | {a / b:.2f}x |")
    if args.rss:
        # the same context for both: llama-bench sizes its context as depth + n_gen
        ours = peak_rss_mib([sys.executable, "-m", "tinyllm", "run", "-m", args.model, "-c", "4096", "-n", "64",
                             "--ignore-eos", "-p", "Hello"])
        for mode in LOAD_MODES:
            theirs = peak_rss_mib([str(tool("llama-bench")), "-m", args.model, "-p", "0", "-n", "64", "-d", "4032",
                                   "-r", "1", "-lm", mode])
            print(f"peak RSS at a 4096-token context (tinyllm run -c 4096 -n 64 / llama-bench -d 4032 -n 64 -lm {mode}):"
                  f" {ours:.0f} MiB / {theirs:.0f} MiB = {ours / theirs:.2f}x")

if __name__ == "__main__":
    main()
