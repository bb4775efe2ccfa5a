"""llama.cpp's pp/tg tokens/s on this machine, measured as `tinyllm bench` measures ours, so the
two can be compared in one session (the golden figures come from another machine).

llama.cpp is reached through llama-cpp-python, which builds it from source; keep it out of
tinyllm's environment:

    python -m venv /tmp/lcpp && CMAKE_ARGS="-DGGML_NATIVE=ON" /tmp/lcpp/bin/pip install llama-cpp-python numpy
    /tmp/lcpp/bin/python benchmarks/bench_llama_cpp.py -m MODEL.gguf [-p 256] [-n 64] [-t 1,2] [-d 0,1024] [-r 5]

Protocol (llama-bench's): random tokens, one warm-up run, then -r repetitions, mean ± sample
std of tokens/s. pp = one llama_decode of the whole prompt (n_batch 512); tg = one decode per
token. With -d the cache is filled with DEPTH tokens first and cut back to DEPTH before each
repetition. Logits of the last token only, no sampling.
"""
import argparse
import statistics
import time

import numpy as np
from llama_cpp import Llama


def timed(llm, depth_tokens, run):
    """Seconds of run() with the cache holding exactly depth_tokens (eval drops cells past n_tokens)."""
    if llm.n_tokens < len(depth_tokens) or list(llm.input_ids[: len(depth_tokens)]) != depth_tokens:
        llm.reset()
        if depth_tokens:
            llm.eval(depth_tokens)
    llm.n_tokens = len(depth_tokens)
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def bench(model, n_prompt, n_gen, threads, depth, reps):
    rng = np.random.default_rng(0)
    llm = Llama(model, n_ctx=depth + max(n_prompt, n_gen) + 8, n_threads=threads, n_threads_batch=threads,
                n_batch=512, n_ubatch=512, logits_all=False, verbose=False)
    vocab = llm.n_vocab()
    depth_tokens = [int(t) for t in rng.integers(1, vocab, depth)]
    rows = []
    for kind, n in (("pp", n_prompt), ("tg", n_gen)):
        if not n:
            continue
        toks = [int(t) for t in rng.integers(1, vocab, n)]
        if kind == "pp":
            def run():
                llm.eval(toks)
        else:
            def run():
                for t in toks:
                    llm.eval([t])
        timed(llm, depth_tokens, run)  # warm-up
        ts = [n / timed(llm, depth_tokens, run) for _ in range(reps)]
        sd = statistics.stdev(ts) if len(ts) > 1 else 0.0
        test = f"{kind}{n}" + (f" @ d{depth}" if depth else "")
        rows.append((threads, test, statistics.mean(ts), sd))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-p", default=256, type=int)
    ap.add_argument("-n", default=64, type=int)
    ap.add_argument("-t", default="1,2")
    ap.add_argument("-d", default="0")
    ap.add_argument("-r", default=5, type=int)
    a = ap.parse_args()
    print("| engine    | threads | test          |           t/s |")
    print("| --------- | ------: | ------------- | ------------: |")
    for depth in (int(d) for d in a.d.split(",")):
        for threads in (int(t) for t in a.t.split(",")):
            for th, test, mean, sd in bench(a.model, a.p if not depth else 0, a.n, threads, depth, a.r):
                print(f"| llama.cpp | {th:7d} | {test:13s} | {mean:7.2f} ± {sd:4.2f} |", flush=True)


if __name__ == "__main__":
    main()
