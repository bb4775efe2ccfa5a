"""Write tests/data/golden/rope/rope.npz: layer 0's K rows before and after llama.cpp's per-head
RMSNorm (Gemma 3) and RoPE, on the two real models, for tests/test_edges.py.

    python tests/data/make_rope_golden.py LLAMA_CPP_DIR GEMMA_GGUF SMOLLM2_GGUF

LLAMA_CPP_DIR is a llama.cpp checkout built with benchmarks/build_llama_cpp.sh (headers in
include/ and ggml/include/, libraries in build/bin/). tests/data/dump_tensors.cpp is compiled
against it in a temporary directory and run on one prompt per model; it writes the graph
tensors "Kcur-0" (the matmul output, the normed and the roped rows) to files, which this script
keeps with the rope parameters of layer 0 (Gemma's is a sliding-window layer: base 10000).
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "golden" / "rope" / "rope.npz"
PROMPT = "The capital of France is Paris, and the capital of Italy is Rome. Spain's capital is"


def build(llama: Path, tmp: Path) -> Path:
    exe = tmp / "dump_tensors"
    lib = llama / "build" / "bin"
    subprocess.run(["g++", "-O2", "-std=c++17", str(HERE / "dump_tensors.cpp"), f"-I{llama}/include",
                    f"-I{llama}/ggml/include", f"-L{lib}", "-lllama", "-lggml", "-lggml-base",
                    f"-Wl,-rpath,{lib}", "-o", str(exe)], check=True)
    return exe


def dump(exe: Path, model: Path, tmp: Path, names) -> dict[str, np.ndarray]:
    out = tmp / model.stem
    out.mkdir()
    subprocess.run([str(exe), str(model), PROMPT, str(out), *names], check=True, capture_output=True)
    return {p.name[: -len(".f32")]: np.fromfile(p, np.float32) for p in out.glob("*.f32")}


def field(reader: gguf.GGUFReader, key: str):
    f = reader.get_field(key)
    return f.parts[f.data[0]][0].item()


def main(llama: str, gemma: str, smollm2: str) -> None:
    llama, gemma, smollm2 = Path(llama), Path(gemma), Path(smollm2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exe = build(llama, tmp)
        g = dump(exe, gemma, tmp, ["Kcur-0", "Kcur_normed-0"])
        s = dump(exe, smollm2, tmp, ["Kcur-0"])
    gr, sr = gguf.GGUFReader(gemma), gguf.GGUFReader(smollm2)
    k_norm = next(t for t in gr.tensors if t.name == "blk.0.attn_k_norm.weight")
    d_g, d_s = 256, field(sr, "llama.embedding_length") // field(sr, "llama.attention.head_count")
    n_kv_s = field(sr, "llama.attention.head_count_kv")
    arrays = {
        "gemma_in": g["Kcur-0.0.MUL_MAT"].reshape(-1, 1, d_g),
        "gemma_out": g["Kcur-0.2.ROPE"].reshape(-1, 1, d_g),
        "gemma_k_norm": np.asarray(k_norm.data, np.float32).copy(),
        "gemma_base": np.float32(10000.0),  # layer 0 is a sliding-window layer
        "gemma_eps": np.float32(field(gr, "gemma3.attention.layer_norm_rms_epsilon")),
        "smollm2_in": s["Kcur-0.1.RESHAPE"].reshape(-1, n_kv_s, d_s),
        "smollm2_out": s["Kcur-0.2.ROPE"].reshape(-1, n_kv_s, d_s),
        "smollm2_base": np.float32(field(sr, "llama.rope.freq_base")),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **arrays)
    print(f"wrote {OUT}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main(*sys.argv[1:4])
