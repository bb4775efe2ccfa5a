"""Both quantizers (NumPy twin and Numba) give llama.cpp's bytes for every tensor of the files
llama-quantize made from tiny-f32.gguf, without and with an importance matrix: each tensor's
type and sha256 are in the manifests (tests/data/golden/quant/manifest*.json), so this test
carries no quantized file.

tiny-f32.gguf is read with gguf-py's GGUFReader, an outside reader, so this test does not
depend on tinyllm's own GGUF code.
"""
import hashlib

import gguf
import numpy as np
import pytest

from tinyllm.errors import QuantizationError
from tinyllm.quantization.imatrix import load_imatrix
from tinyllm.quants.registry import TYPES, quantize, quantize_ref
from tinyllm.quants.types import GGMLType

PURE = {"Q4_0": GGMLType.Q4_0, "Q4_1": GGMLType.Q4_1, "Q5_0": GGMLType.Q5_0, "Q5_1": GGMLType.Q5_1,
        "Q8_0": GGMLType.Q8_0, "Q4_K_S": GGMLType.Q4_K, "Q5_K_S": GGMLType.Q5_K, "Q6_K": GGMLType.Q6_K,
        "Q2_K": GGMLType.Q2_K, "Q3_K_S": GGMLType.Q3_K, "IQ4_NL": GGMLType.IQ4_NL, "IQ4_XS": GGMLType.IQ4_XS,
        "IQ3_S": GGMLType.IQ3_S}  # fmt: skip
MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_1", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS",
         "IQ3_S", "IQ3_M"]
# llama-quantize --imatrix tiny-f32.imatrix.gguf [--pure] [--include-/--exclude-weights ...]: stem -> filters
IMATRIX_FILES = {
    **{f"imatrix-{m}": {} for m in ("Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q5_0", "Q4_1", "Q5_1", "Q4_K_S",
                                    "Q4_K_M", "Q5_K_M", "Q6_K")},
    **{f"imatrix-pure-{m}": {} for m in ("Q2_K", "Q3_K_S", "Q4_0", "Q5_0", "Q4_1", "Q5_1", "Q4_K_S", "Q5_K_S", "Q6_K")},
    **{f"imatrix-{p}{m}": {} for p in ("", "pure-") for m in ("IQ4_NL", "IQ4_XS", "IQ3_S")},
    **{f"imatrix-{m}": {} for m in ("IQ3_XS", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M")},
    **{f"imatrix-pure-{m}": {} for m in ("IQ3_XXS", "IQ2_M", "IQ1_M")},
    "imatrix-exclude-ffn_down-Q4_K_M": {"exclude": ["ffn_down"]},
    "imatrix-include-attn_-ffn_up-Q3_K_M": {"include": ["attn_", "ffn_up"]},
}


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


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).tobytes()).hexdigest()


@pytest.mark.parametrize("quantizer", [quantize_ref, quantize], ids=["numpy", "numba"])
@pytest.mark.parametrize("mix", list(PURE))
def test_pure_files_byte_identical(manifest, source, mix, quantizer):
    n_2d = 0
    for t in manifest[f"tiny-pure-{mix}"]["tensors"]:
        x = source[t["name"]]
        if x.shape[0] == 1:  # 1-D norms stay F32
            assert t["type"] == "F32"
            continue
        assert t["type"] == PURE[mix].name, t["name"]
        got = quantizer(x, PURE[mix])
        assert sha256(got) == t["sha256"], f"{t['name']}: {PURE[mix].name} bytes differ from llama.cpp's"
        n_2d += 1
    assert n_2d == 9


@pytest.mark.parametrize("mix", MIXES)
def test_mixture_files_every_tensor_byte_identical(manifest, source, mix):
    """The per-tensor type is the mixture's choice (tested with the mixture rules); the bytes
    for that type must be llama.cpp's, including F32 tensors passed through."""
    types = set()
    for t in manifest[f"tiny-{mix}"]["tensors"]:
        wtype = GGMLType[t["type"]]
        got = quantize(source[t["name"]], wtype)
        assert sha256(got) == t["sha256"], f"{t['name']} as {wtype.name}"
        types.add(wtype)
    assert len(types - {GGMLType.F32}) >= 1


@pytest.fixture(scope="module")
def imatrix(golden):
    from tinyllm.quantization.imatrix import load_imatrix

    return load_imatrix(golden / "quant" / "tiny-f32.imatrix.gguf")


def test_imatrix_manifest_lists_every_file(manifest):
    assert {k for k in manifest if k.startswith("tiny-imatrix-")} == {f"tiny-{s}" for s in IMATRIX_FILES}


@pytest.mark.parametrize("quantizer", [quantize_ref, quantize], ids=["numpy", "numba"])
@pytest.mark.parametrize("stem", list(IMATRIX_FILES))
def test_imatrix_files_every_tensor_byte_identical(manifest, source, imatrix, stem, quantizer):
    """Each tensor quantized with its entry's quant_weights (none for token_embd and output,
    which the imatrix lacks, nor for the entries the filters drop) gives llama.cpp's bytes."""
    from tinyllm.quantization.imatrix import select_entries

    f = IMATRIX_FILES[stem]
    imx = select_entries(imatrix, f.get("include", ()), f.get("exclude", ()))
    with_weights = 0
    for t in manifest[f"tiny-{stem}"]["tensors"]:
        wtype = GGMLType[t["type"]]
        x = source[t["name"]]
        if wtype == GGMLType.F32:
            continue
        qw = imx.weights(t["name"])
        got = quantizer(x, wtype, imatrix=qw)
        assert sha256(got) == t["sha256"], f"{t['name']} as {wtype.name} ({'with' if qw is not None else 'without'} imatrix)"
        if qw is not None and wtype != GGMLType.Q8_0:
            with_weights += 1
            if TYPES[wtype].needs_imatrix:  # IQ2_XXS, IQ2_XS, IQ1_S: ggml refuses them without one
                with pytest.raises(QuantizationError, match="needs an importance matrix"):
                    quantizer(x, wtype)
            else:
                assert sha256(quantizer(x, wtype)) != t["sha256"]  # the weights did change these bytes
    assert with_weights >= 3
