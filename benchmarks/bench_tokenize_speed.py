"""Tokenizer encode speed on about 1 MB of text: tinyllm's Tokenizer (the Python API) against
llama.cpp's llama-tokenize, for Gemma 3's SentencePiece vocabulary and SmolLM2's byte-level
BPE vocabulary; prints MB/s of each and whether the ids agree.

    python benchmarks/bench_tokenize_speed.py [-f TEXT] [--mb 1] [-r 3] [--models gemma,smollm2]

Text: -f FILE, or by default the first --mb MB of the Python standard library's own sources
(Lib/*.py sorted by name: English docstrings and comments with code, the same bytes for a given
Python version) cut at a line end. A repeated short passage would flatter tinyllm's BPE, which
merges each distinct word of a text once.
tinyllm: `Tokenizer.from_gguf` (not timed), one `encode("a")` so that lazily built tables exist,
then `encode(text)` timed (add_bos and parse_special on, as llama-tokenize's defaults); a fresh
Tokenizer for each of the -r runs, so no run reuses the words merged by the one before; the
best run counts. llama.cpp: `llama-tokenize -f FILE --ids --no-escape` (vocabulary only, no
weights), best wall time of -r runs minus the best of -r runs on an empty file (process start,
vocabulary load, context creation).
"""
import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_cpp_tools import tool  # noqa: E402


def stdlib_text(n_bytes: int) -> str:
    """The first n_bytes (or a little less, ending at a newline) of Lib/*.py, sorted by name."""
    parts, size = [], 0
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        t = p.read_text(encoding="utf-8", errors="replace")
        parts.append(t)
        size += len(t.encode("utf-8"))
        if size >= n_bytes:
            break
    data = "".join(parts).encode("utf-8")[:n_bytes]
    return data[:data.rfind(b"\n") + 1].decode("utf-8", errors="ignore")


def tinyllm_encode(model, text: str, reps: int) -> tuple[float, list[int]]:
    from tinyllm.tokenizer import Tokenizer

    best, ids = float("inf"), None
    for _ in range(reps):
        tok = Tokenizer.from_gguf(model)
        tok.encode("a")
        t0 = time.perf_counter()
        ids = tok.encode(text, add_bos=True, parse_special=True)
        best = min(best, time.perf_counter() - t0)
    return best, ids


def llama_tokenize(model, path, reps: int) -> tuple[float, list[int]]:
    best, out = float("inf"), ""
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run([str(tool("llama-tokenize")), "-m", str(model), "-f", str(path), "--ids", "--no-escape",
                            "--log-disable"], capture_output=True, text=True, check=True)
        best = min(best, time.perf_counter() - t0)
        out = r.stdout
    line = [s for s in out.splitlines() if s.startswith("[")][-1]
    return best, json.loads(line)


def main():
    from tinyllm.default_model import default_chat_model_path, default_model_path

    known = {"gemma": default_model_path, "smollm2": default_chat_model_path}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-f", "--file", type=Path, default=None, help="text to encode (default: Python's Lib/*.py)")
    ap.add_argument("--mb", type=float, default=1.0, help="MB of the default text (default: 1)")
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--models", default="gemma,smollm2", help="gemma, smollm2 or paths of GGUF files")
    args = ap.parse_args()
    if args.file:
        text, name = args.file.read_text(encoding="utf-8"), args.file.name
    else:
        text, name = stdlib_text(int(args.mb * 1e6)), "Python Lib/*.py"
    mb = len(text.encode("utf-8")) / 1e6
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyllm-tok-") as tmp:
        path, empty = Path(tmp) / "text.txt", Path(tmp) / "empty.txt"
        path.write_bytes(text.encode("utf-8"))
        empty.write_bytes(b"")
        for m in args.models.split(","):
            model = known[m]() if m in known else Path(m)
            t_tiny, ids_tiny = tinyllm_encode(model, text, args.reps)
            t_full, ids_llama = llama_tokenize(model, path, args.reps)
            t_empty, _ = llama_tokenize(model, empty, args.reps)
            t_llama = t_full - t_empty
            same = ids_tiny == ids_llama
            rows.append((m, len(ids_llama), mb / t_tiny, mb / t_llama, t_empty, same))
            print(f"{m}: tinyllm {t_tiny:.3f} s, llama-tokenize {t_full:.3f} s - {t_empty:.3f} s (empty file), "
                  f"{len(ids_tiny)} / {len(ids_llama)} tokens, ids equal: {same}", file=sys.stderr, flush=True)
    print(f"\n{mb:.3f} MB of {name}, best of {args.reps}\n")
    print("| vocabulary | tokens | tinyllm MB/s | llama-tokenize MB/s | llama.cpp load (empty file) s | ids equal |")
    print("|---|--:|--:|--:|--:|---|")
    for m, n, a, b, e, same in rows:
        print(f"| {m} | {n} | {a:.2f} | {b:.2f} | {e:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
