"""Write tests/data/golden/quant/tiny-f32.imatrix.gguf: a deterministic importance matrix for
the 2-D blk.* weights of tiny-f32.gguf, in llama-imatrix's GGUF format. The golden files made
with an imatrix (`llama-quantize --imatrix tiny-f32.imatrix.gguf tiny-f32.gguf out TYPE`) use it.

    python tests/data/make_tiny_imatrix.py

Values: per input column, Σx² over 512 "tokens", spread over three orders of magnitude with a
few dominant columns, as real activations have. They come from a fixed formula, not a model,
so the file can be rebuilt exactly.
"""
from pathlib import Path

import numpy as np

from tinyllm.gguf_io import GGUFFile
from tinyllm.quantization.imatrix import ImatrixEntry, save_imatrix

HERE = Path(__file__).resolve().parent / "golden" / "quant"
N_TOKENS = 512


def column_sums(name: str, ne0: int) -> np.ndarray:
    seed = sum(name.encode())  # stable per tensor
    rng = np.random.default_rng(seed)
    mean = np.exp(rng.normal(0.0, 1.2, ne0))  # log-normal spread
    mean[rng.choice(ne0, max(1, ne0 // 64), replace=False)] *= 25.0  # outlier columns
    return (mean * N_TOKENS).astype(np.float32)[None, :]


def main() -> None:
    entries = {}
    with GGUFFile(HERE / "tiny-f32.gguf") as f:
        for name, info in f.tensors.items():
            if name.startswith("blk.") and len(info.shape) == 2:
                entries[name] = ImatrixEntry(column_sums(name, info.ne[0]), np.array([N_TOKENS]))
    save_imatrix(HERE / "tiny-f32.imatrix.gguf", entries, ["tinyllm tests/data/make_tiny_imatrix.py"], 1, N_TOKENS)


if __name__ == "__main__":
    main()
