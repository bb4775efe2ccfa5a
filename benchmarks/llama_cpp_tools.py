"""Where the benchmark scripts find llama.cpp's own tools (llama-bench, llama-quantize, ...).

They are built from the `llama-cpp-python==0.3.36` sdist's vendor/llama.cpp by
`benchmarks/build_llama_cpp.sh` into `$LLAMA_CPP_DIR` (default `~/.cache/tinyllm/llama.cpp`),
outside the repository; `$LLAMA_CPP_BIN` points at another build's bin/ directory instead.
"""
import os
import subprocess
import sys
from pathlib import Path


def bin_dir() -> Path:
    if os.environ.get("LLAMA_CPP_BIN"):
        return Path(os.environ["LLAMA_CPP_BIN"])
    base = Path(os.environ.get("LLAMA_CPP_DIR", Path.home() / ".cache" / "tinyllm" / "llama.cpp"))
    return base / "build" / "bin"


def tool(name: str) -> Path:
    path = bin_dir() / name
    if not path.is_file():
        sys.exit(f"{path} not found: run benchmarks/build_llama_cpp.sh first (or set LLAMA_CPP_BIN)")
    return path


def llama_bench_rows(model, *, n_prompt=0, n_gen=0, threads=2, depth=0, reps=3, extra=()) -> list[dict]:
    """llama-bench's JSON rows (avg_ts, stddev_ts, n_prompt, n_gen, n_depth, n_threads...)."""
    import json

    cmd = [str(tool("llama-bench")), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
           "-d", str(depth), "-r", str(reps), "-o", "json", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)
