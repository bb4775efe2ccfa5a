"""Write tests/data/golden/quant/edges.npy and edges.json: rows that sit exactly on the quantizers'
thresholds, and the bytes llama-quantize makes of them for every type it quantizes without an
importance matrix.

    python tests/data/make_edges_golden.py /path/to/llama.cpp/build/bin/llama-quantize

The rows (float32, 256 values each) are tests/test_quantizers.py's edge rows plus:
- a Q6_K super-block whose largest sub-block scale is exactly float32(1e-15), GROUP_MAX_EPS:
  ggml zeroes a block only when the scale is *below* it, so this block keeps its levels and
  stores the int8 scale -128 next to d = 0 (found by a search over one value's ulps with
  make_qx_quants_ref, then confirmed by llama-quantize's own bytes);
- for each group threshold (1e-15, GROUP_MAX_EPS; 1e-12, IQ1_S; 1e-8, IQ3_XXS; 1e-7, IQ1_M):
  a row whose every 16-value group has its largest magnitude exactly at it, and the same row
  one ulp below (llama-quantize makes IQ3_XXS and IQ1 only with an importance matrix, so here
  those rows try the other types at those magnitudes);
- a normal row with one 16-value group at exactly 1e-15 and one 32-value block one ulp below;
- rows of 16- and 32-value groups each followed by its negation; the 16-groups on Q3_K's grid,
  so that two sub-block scales are exactly c and -c and "the first largest" alone decides the
  super-block's scale (the c are distinct powers of two: the largest pair is unique).

They are the first rows of blk.0.attn_q.weight of a one-layer llama model (zeros elsewhere);
`llama-quantize --pure MODEL OUT TYPE` quantizes it and edges.json keeps, per type, the sha256 of
each row's bytes (hex). test_quantizers.py quantizes edges.npy with tinyllm and compares.
"""
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.data.make_rules_golden import metadata_of, tensors_of  # noqa: E402
from tests.test_quantizers import edge_rows  # noqa: E402
from tinyllm.gguf_io import write_gguf  # noqa: E402
from tinyllm.quants.fit import make_qx_quants_ref  # noqa: E402
from tinyllm.quants.types import GGMLType, row_nbytes  # noqa: E402

OUT = Path(__file__).resolve().parent / "golden" / "quant"
TYPES = ["Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
         "IQ3_S"]
F32 = np.float32
N = 256


def q6_k_tie() -> np.ndarray:
    """A super-block whose only live 16-group fits to |scale| == float32(1e-15) exactly."""
    rng = np.random.default_rng(1)
    target = F32(1e-15)
    for _ in range(100):
        group = (rng.uniform(-1, 1, 16) * 3.2e-14).astype(F32)
        group[0] = F32(3.2e-14 * 1.0001)
        cand = np.tile(group, (200_000, 1))
        bits = group[:1].view(np.uint32).astype(np.int64) + np.arange(-100_000, 100_000)
        cand[:, 0] = bits.astype(np.uint32).view(F32)
        scale, _ = make_qx_quants_ref(cand, 32, 1, None)
        hit = np.nonzero(np.abs(scale) == target)[0]
        if hit.size:
            row = np.zeros(N, F32)
            row[:16] = cand[hit[0]]
            return row
    raise SystemExit("no Q6_K tie found")


def at_threshold(eps: float, below: bool, rng) -> np.ndarray:
    e = F32(eps)
    if below:
        e = np.nextafter(e, F32(0), dtype=F32)
    row = (rng.uniform(-1, 1, N) * e).astype(F32)
    groups = row.reshape(-1, 16)
    groups[np.arange(16), rng.integers(0, 16, 16)] = e * np.where(rng.random(16) < 0.5, F32(-1), F32(1))
    return row


def threshold_rows() -> np.ndarray:
    rng = np.random.default_rng(2)
    rows = [q6_k_tie()]
    for eps in (1e-15, 1e-12, 1e-8, 1e-7):
        rows += [at_threshold(eps, False, rng), at_threshold(eps, True, rng)]
    mixed = rng.standard_normal(N).astype(F32)
    mixed[16:32] = at_threshold(1e-15, False, rng)[:16]
    mixed[64:96] = at_threshold(1e-15, True, rng)[:32]
    rows.append(mixed)
    # 16-groups on Q3_K's grid (c * l, l in -4..3, -4 the one largest), each followed by its
    # negation: both fit exactly, to scales c and -c, so the super-block's largest scale is a tie
    # in magnitude that only "the first wins" settles (c a power of two: every sum is exact)
    pattern = np.array([-4, 3, -3, 2, -2, 1, -1, 0, 3, 2, 1, 0, -1, -2, -3, 1], F32)
    c = F32(2.0) ** np.array([-3, -1, -2, -4, -1, -5, -3, -2], F32)
    pairs = (c[:, None] * pattern[None]).astype(F32)
    rows.append(np.stack([pairs, -pairs], axis=1).reshape(N))
    half = rng.standard_normal((N // 64, 32)).astype(F32)  # the same pairing for 32-groups
    rows.append(np.stack([half, -half], axis=1).reshape(N))
    return np.array(rows, F32)


def main(quantize: str) -> None:
    rows = np.concatenate([edge_rows(N), threshold_rows()]).astype(F32)
    spec = ("llama", 1, 4, 4, N, N, 0, False)
    ts = tensors_of(*spec)
    md, vt = metadata_of(*spec[:7])
    out = {"llama_cpp": "build 0c1e570 (ggml 0.25.3): llama-quantize --pure", "rows": len(rows), "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "edges-f32.gguf"
        tensors = []
        for name, shape in ts:
            data = np.zeros(shape, F32)
            if name == "blk.0.attn_q.weight":
                data[: len(rows)] = rows
            elif len(shape) == 1:
                data[:] = 1.0
            tensors.append((name, GGMLType.F32, shape, data))
        write_gguf(model, md, tensors, value_types=vt)
        for t in TYPES:
            dst = Path(tmp) / f"edges-{t}.gguf"
            r = subprocess.run([quantize, "--pure", str(model), str(dst), t], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"llama-quantize {t} failed:\n{r.stderr[-2000:]}")
            tensor = next(x for x in gguf.GGUFReader(dst).tensors if x.name == "blk.0.attn_q.weight")
            assert tensor.tensor_type.name == t, (t, tensor.tensor_type.name)
            nb = row_nbytes(GGMLType[t], N)
            raw = np.asarray(tensor.data).view(np.uint8).reshape(-1, nb)[: len(rows)]
            out["types"][t] = [hashlib.sha256(r.tobytes()).hexdigest() for r in raw]
    np.save(OUT / "edges.npy", rows)
    (OUT / "edges.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT / 'edges.npy'} and edges.json: {len(rows)} rows x {len(TYPES)} types")


if __name__ == "__main__":
    main(sys.argv[1])
