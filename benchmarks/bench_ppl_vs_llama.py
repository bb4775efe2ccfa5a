"""Perplexity of the same files in llama.cpp and in tinyllm: each quantization type made by
llama-quantize from one F16 base, then scored by llama-perplexity and by `tinyllm perplexity`
on the same text with the same chunks; prints type | llama.cpp PPL | tinyllm PPL | diff %.

    benchmarks/build_llama_cpp.sh        # once: llama-quantize, llama-imatrix, llama-perplexity
    python benchmarks/bench_ppl_vs_llama.py [--models gemma,smollm2] [--types Q4_0,Q6_K,...]
                                            [-c 256] [--chunks 6] [-t 2] [--llama-batch 128] [--keep DIR]

Both tools score a file the same way (chunks of -c tokens starting with BOS, the second half of
each chunk scored), so on the same file the two figures differ only by arithmetic: the goal is
every type within 1 %. The bases: PyPI has no float Gemma 3 270M or SmolLM2 135M, so each base is
the packaged file (Gemma Q4_K_M, SmolLM2 Q4_1) widened to F16 by `llama-quantize
--allow-requantize`; what matters here is that both tools read the same quantized file. The
low-bit IQ types (IQ3_S and below) get an importance matrix from llama-imatrix on the same text.
Neither model's n_embd (Gemma 640, SmolLM2 576) divides into 256-blocks, so llama-quantize gives
the tensors with rows of n_embd its fallback types (Q5_0, Q4_0, IQ4_NL, ...): a K or IQ row
measures a mixture (Gemma Q4_K_M: 81 Q5_0, 27 Q4_K, 9 Q6_K and 10 Q8_0 tensors).
How close is close: the activations of a quantized matmul are rounded to 8-bit blocks, so a
last-bit difference in a sum (another summation order, another batch size) can flip a rounding
and grow through the layers. llama.cpp differs from itself that way: on Gemma's Q8_0 file,
llama-perplexity at -b 32 against its own default batch gives a mean KLD of 0.0028 and 96.5 %
same top token, as far apart as tinyllm and llama.cpp are (0.0028, 97.4 %); on the F16 file
(no activation rounding) tinyllm and llama.cpp agree to a KLD of 0.000002. --llama-batch B
adds a second llama-perplexity run at -b B -ub B, a column showing that spread per type.
Text: tests/data/golden/gemma/apache-2.0.txt (11 KB of English). Work files go to a temporary
directory unless --keep names one.
"""
import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llama_cpp_tools import tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "tests" / "data" / "golden" / "gemma" / "apache-2.0.txt"
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS",
         "IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"]
NEEDS_IMATRIX = {"IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"}
PPL = re.compile(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)")


def _models():
    from tinyllm.default_model import default_chat_model_path, default_model_path

    return {"gemma": default_model_path, "smollm2": default_chat_model_path}


def run(cmd) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout + r.stderr


def final_ppl(out: str) -> tuple[float, float]:
    m = PPL.search(out)
    if m is None:
        sys.exit(f"no 'Final estimate' in:\n{out[-2000:]}")
    return float(m.group(1)), float(m.group(2))


def llama_ppl(model, text, n_ctx, chunks, threads, batch=None):
    t0 = time.perf_counter()
    extra = ["-b", batch, "-ub", batch] if batch else []
    out = run([tool("llama-perplexity"), "-m", model, "-f", text, "-c", n_ctx, "--chunks", chunks, "-t", threads, *extra])
    return (*final_ppl(out), time.perf_counter() - t0)


def tinyllm_ppl(model, text, n_ctx, chunks, threads):
    t0 = time.perf_counter()
    out = run([sys.executable, "-m", "tinyllm", "perplexity", "-m", model, "-f", text, "-c", n_ctx,
               "--chunks", chunks, "-t", threads])
    return (*final_ppl(out), time.perf_counter() - t0)


def bench_model(name, src, types, args, tmp):
    base = tmp / f"{name}-F16.gguf"
    if not base.exists():
        run([tool("llama-quantize"), "--allow-requantize", src, base, "F16"])
    imatrix = tmp / f"{name}-imatrix.gguf"
    rows = []
    for t in ["F16", *types]:
        out = base if t == "F16" else tmp / f"{name}-{t}.gguf"
        if not out.exists():
            extra = []
            if t in NEEDS_IMATRIX:
                if not imatrix.exists():
                    run([tool("llama-imatrix"), "-m", base, "-f", args.text, "-c", args.c, "-t", args.threads,
                         "-o", imatrix])
                extra = ["--imatrix", imatrix]
            run([tool("llama-quantize"), *extra, base, out, t])
        lp, le, lt = llama_ppl(out, args.text, args.c, args.chunks, args.threads)
        tp, te, tt = tinyllm_ppl(out, args.text, args.c, args.chunks, args.threads)
        diff = 100 * (tp - lp) / lp
        bp = llama_ppl(out, args.text, args.c, args.chunks, args.threads, args.llama_batch)[0] if args.llama_batch else None
        rows.append((name, t, lp, le, tp, diff, bp))
        again = f", llama.cpp -b {args.llama_batch} {bp:.4f}" if bp else ""
        print(f"{name} {t}: llama.cpp {lp:.4f} +/- {le:.4f} ({lt:.0f} s), tinyllm {tp:.4f} ({tt:.0f} s), "
              f"diff {diff:+.3f} %{again}", file=sys.stderr, flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gemma,smollm2", help="gemma, smollm2 or paths of GGUF files")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("-f", "--text", type=Path, default=TEXT)
    ap.add_argument("-c", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--llama-batch", type=int, default=None, metavar="B",
                    help="also run llama-perplexity with -b B -ub B: how far llama.cpp moves by itself")
    ap.add_argument("--keep", type=Path, default=None, help="keep work files (bases, quantized files) here")
    args = ap.parse_args()
    known = _models()
    types = args.types.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyllm-ppl-") as tmp:
        tmp = args.keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        for m in args.models.split(","):
            src = known[m]() if m in known else Path(m)
            name = m if m in known else Path(m).stem
            rows += bench_model(name, src, types, args, tmp)
    print(f"\n-c {args.c}, {args.chunks} chunks of {args.text.name}, {args.threads} threads\n")
    b = args.llama_batch
    extra = f" llama.cpp -b {b} PPL | its diff % |" if b else ""
    print(f"| model | type | llama.cpp PPL | tinyllm PPL | diff % |{extra}")
    print("|---|---|--:|--:|--:|" + ("--:|--:|" if b else ""))
    for name, t, lp, le, tp, diff, bp in rows:
        flag = "" if abs(diff) <= 1 else " **>1 %**"
        again = f" {bp:.4f} | {100 * (bp - lp) / lp:+.3f} |" if bp else ""
        print(f"| {name} | {t} | {lp:.4f} ± {le:.3f} | {tp:.4f} | {diff:+.3f}{flag} |{again}")


if __name__ == "__main__":
    main()
