"""Write tests/data/golden/quant/manifest-moe.json: llama-quantize's files, with an importance
matrix, of a one-layer 8-expert llama model whose weights and imatrix come from an integer
hash (bit-reproducible anywhere), so the test rebuilds both instead of carrying 6 MB.

    python tests/data/make_moe_golden.py /path/to/llama.cpp/build/bin/llama-quantize

The imatrix has a different scale per expert and one never-routed expert (count 0, whose
weights llama-quantize sets to 1), so the per-expert slicing of quant_weights shows in the
bytes. The manifest records the sha256 of the rebuilt model and imatrix (the test checks its
rebuild against them) and, per file, what tests/data/hash_gguf.py records.
"""
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyllm.gguf_io import GGUFValueType, write_gguf
from tinyllm.quantization.imatrix import ImatrixEntry, save_imatrix
from tinyllm.quants.types import GGMLType

HERE = Path(__file__).resolve().parent
OUT = HERE / "golden" / "quant" / "manifest-moe.json"
N_EMBD, N_FF, N_EXPERT, N_HEAD, N_HEAD_KV = 256, 256, 8, 4, 4
FTYPES = ("Q4_K_M", "Q2_K", "Q6_K")


def hashed(shape, seed: int) -> np.ndarray:
    """Values in [-0.5, 0.5) from an integer hash of (index, seed): the same bits on any machine."""
    n = int(np.prod(shape))
    u = (np.arange(n, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(seed) * np.uint64(40503)) % np.uint64(2**32)
    u ^= u >> np.uint64(13)
    u = (u * np.uint64(0x5BD1E995)) % np.uint64(2**32)
    u ^= u >> np.uint64(15)
    return (u.astype(np.float64) / 2.0**32 - 0.5).reshape(shape)


def tensors() -> list[tuple[str, tuple, np.ndarray]]:
    kv = N_HEAD_KV * (N_EMBD // N_HEAD)
    ts = [("token_embd.weight", (256, N_EMBD)), ("output_norm.weight", (N_EMBD,)), ("output.weight", (256, N_EMBD)),
          ("blk.0.attn_norm.weight", (N_EMBD,)), ("blk.0.attn_q.weight", (N_EMBD, N_EMBD)),
          ("blk.0.attn_k.weight", (kv, N_EMBD)), ("blk.0.attn_v.weight", (kv, N_EMBD)),
          ("blk.0.attn_output.weight", (N_EMBD, N_EMBD)), ("blk.0.ffn_norm.weight", (N_EMBD,)),
          ("blk.0.ffn_gate_inp.weight", (N_EXPERT, N_EMBD)),
          ("blk.0.ffn_gate_exps.weight", (N_EXPERT, N_FF, N_EMBD)),
          ("blk.0.ffn_up_exps.weight", (N_EXPERT, N_FF, N_EMBD)),
          ("blk.0.ffn_down_exps.weight", (N_EXPERT, N_EMBD, N_FF))]
    out = []
    for k, (name, shape) in enumerate(ts):
        x = hashed(shape, 1000 + k)
        if len(shape) == 3:  # experts at different scales
            x = x * (np.arange(1, N_EXPERT + 1, dtype=np.float64) * 0.02).reshape(-1, 1, 1)
        elif len(shape) == 1:
            x = 1.0 + 0.1 * x
        else:
            x = 0.05 * x
        out.append((name, GGMLType.F32, shape, x.astype(np.float32)))
    return out


def build_model(path: Path) -> None:
    md = {"general.architecture": "llama", "general.name": "moe-golden", "llama.context_length": 256,
          "llama.embedding_length": N_EMBD, "llama.block_count": 1, "llama.feed_forward_length": N_FF,
          "llama.attention.head_count": N_HEAD, "llama.attention.head_count_kv": N_HEAD_KV,
          "llama.expert_count": N_EXPERT, "llama.expert_used_count": 2,
          "llama.attention.layer_norm_rms_epsilon": 1e-5}
    vt = {k: (GGUFValueType.UINT32, None) for k in md if k.startswith("llama.")}
    vt["llama.attention.layer_norm_rms_epsilon"] = (GGUFValueType.FLOAT32, None)
    write_gguf(path, md, tensors(), value_types=vt)


def build_imatrix(path: Path) -> None:
    entries = {}
    for k, (name, _, shape, _) in enumerate(tensors()):
        if not name.startswith("blk.") or len(shape) < 2 or "gate_inp" in name:
            continue
        nmat = shape[0] if len(shape) == 3 else 1
        sums = (np.exp(3.0 * hashed((nmat, shape[-1]), 2000 + k)) * 100.0).astype(np.float32)
        counts = np.full(nmat, 64, np.int64)
        if nmat > 1:
            sums *= np.arange(1, nmat + 1, dtype=np.float32)[:, None]
            counts[-1] = 0  # a never-routed expert
        entries[name] = ImatrixEntry(sums, counts)
    save_imatrix(path, entries, ["moe-golden"], 1, 64)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(quantize: str) -> None:
    sys.path.insert(0, str(HERE))
    from hash_gguf import describe

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model, imx = Path(tmp) / "moe-f32.gguf", Path(tmp) / "moe.imatrix.gguf"
        build_model(model)
        build_imatrix(imx)
        out["sources"] = {"model_sha256": sha256(model), "imatrix_sha256": sha256(imx)}
        for ftype in FTYPES:
            q = Path(tmp) / f"moe-imatrix-{ftype}.gguf"
            # run in tmp with relative names: quantize.imatrix.file is the argument as given
            subprocess.run([quantize, "--imatrix", imx.name, model.name, q.name, ftype, "2"], cwd=tmp, check=True,
                           capture_output=True)
            out[f"moe-imatrix-{ftype}"] = describe(q)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
