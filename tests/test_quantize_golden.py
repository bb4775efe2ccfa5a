"""Both quantizers (NumPy reference and Numba) give llama.cpp's bytes for every tensor of the
golden files made by llama-quantize from tiny-f32.gguf (golden/README.md, quant/).

The files are read with gguf-py's GGUFReader, an outside reader, so this test does not
depend on tinyllm's own GGUF code.
"""
import gguf
import numpy as np
import pytest

from tinyllm.quants.quantize import quantize
from tinyllm.quants.reference import quantize_ref
from tinyllm.quants.types import GGMLType

PURE = {"Q4_0": GGMLType.Q4_0, "Q5_0": GGMLType.Q5_0, "Q8_0": GGMLType.Q8_0,
        "Q4_K_S": GGMLType.Q4_K, "Q5_K_S": GGMLType.Q5_K, "Q6_K": GGMLType.Q6_K}  # fmt: skip
MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0"]


@pytest.fixture(scope="module")
def source(golden):
    """tensor name -> float32 rows (n_rows, ne0) of tiny-f32.gguf."""
    reader = gguf.GGUFReader(golden / "quant" / "tiny-f32.gguf")
    out = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        x = np.asarray(t.data, dtype=np.float32)
        out[t.name] = x.reshape(-1, int(t.shape[0]))
    return out


def golden_tensors(path):
    """(name, GGMLType, bytes (n_rows, row_nbytes)) for every tensor of a golden file."""
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        data = np.asarray(t.data)
        n_rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
        yield t.name, GGMLType(int(t.tensor_type)), data.view(np.uint8).reshape(n_rows, -1)


@pytest.mark.parametrize("quantizer", [quantize_ref, quantize], ids=["numpy", "numba"])
@pytest.mark.parametrize("mix", list(PURE))
def test_pure_files_byte_identical(golden, source, mix, quantizer):
    n_2d = 0
    for name, t, expected in golden_tensors(golden / "quant" / f"tiny-pure-{mix}.gguf"):
        x = source[name]
        if x.shape[0] == 1:  # 1-D norms stay F32
            assert t == GGMLType.F32
            continue
        assert t == PURE[mix], name
        got = quantizer(x, t)
        assert got.shape == expected.shape, name
        bad = np.nonzero((got != expected).any(axis=1))[0]
        assert bad.size == 0, f"{name}: rows {bad[:10].tolist()} differ from llama.cpp"
        n_2d += 1
    assert n_2d == 9


@pytest.mark.parametrize("mix", MIXES)
def test_mixture_files_every_tensor_byte_identical(golden, source, mix):
    """The per-tensor type is the mixture's choice (tested with the mixture rules); the bytes
    for that type must be llama.cpp's, including F32 tensors passed through."""
    types = set()
    for name, t, expected in golden_tensors(golden / "quant" / f"tiny-{mix}.gguf"):
        got = quantize(source[name], t)
        assert np.array_equal(got, expected), f"{name} as {t.name}"
        types.add(t)
    assert len(types - {GGMLType.F32}) >= 1
