"""What is mutated and which tests may kill it: module -> pytest selections, functions left
out (with why), functions that need the JIT (AVX2 intrinsics), and the hand list."""
from __future__ import annotations

from .engine import hand_mutant

KB = "tests/test_block_code.py"
KQ = "tests/test_quantizers.py"
KK = "tests/test_kernels.py"
KF = "tests/test_fit.py"
KE = "tests/test_edges.py"
KM = "tests/test_model.py"
K16 = "tests/test_fp16.py"
KG = "tests/test_quantize_golden.py"


def _golden(*mixes: str) -> list[str]:
    """llama-quantize's bytes for the pure files of these mixes, through the NumPy twins (a few
    seconds each with the JIT off): the twin-against-Numba tests cannot see a mutant of block
    code that both share (kscales' packing, rounding helpers)."""
    return [KG, "-k", "test_pure_files_byte_identical and numpy and (" + " or ".join(mixes) + ")"]


_PURE = {"Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S", "Q3_K": "Q3_K_S"}  # the pure file of each type's mix
_GOLDEN_TYPES = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS", "IQ3_S"}

# Functions only the AVX2 kernels run: mutated with the JIT on (their tests compile them).
AVX2_ONLY = ("*avx2", "mm_avx2", "kmin_avx2", "h2f_block", "avx2_chunks", "store_tile", "sum8_*", "widen_f16x16")

# Not mutated: error-message formatting, dispatch tables, bench helpers (not kernels).
NOT_KERNELS = {
    "tinyllm/quants/blocks.py": {"nonfinite_error", "overflow_error", "quiet", "as_rows"},
    "tinyllm/quants/matmul.py": {"set_kernel_set", "kernel_set"},
    "tinyllm/quants/fp16.py": {"as_f32", "as_u32"},  # llvmlite codegen of a bitcast
    "tinyllm/quants/floats.py": {"_spec"},
    "tinyllm/model/ops.py": {"load_row", "_load_row_impl"},  # typing-time dispatch (JIT-off twin in the module)
}


def _type(name: str) -> list[list[str]]:
    """The tests of one ggml type, cheapest first (-x stops at the first failure)."""
    k = f"{name} or {name.lower()}"
    golden = [_golden(_PURE.get(name, name))] if name in _GOLDEN_TYPES else []
    return [[KE, KB, KQ, "-k", k], *golden, [KK, "-k", k]]


MODULES: dict[str, list[list[str]]] = {
    "tinyllm/quants/fp16.py": [[K16], [KE, "-k", "fp16 or F16 or subnormal or nonfinite"], [KB, "-k", "F16 or BF16 or bf16 or subnormal"]],
    "tinyllm/quants/rounding.py": [[KB, "-k", "nearest_int or roundf or q8_0_act"], _golden("Q4_0", "Q4_1", "Q8_0", "Q6_K"), [KQ, "-k", "nearest_int or Q4_0 or Q8_0 or Q6_K or Q3_K or IQ4_NL"]],
    "tinyllm/quants/fit.py": [[KE, "-k", "trial or winning"], _golden("Q4_K_S", "Q6_K", "Q2_K", "Q3_K_S", "Q4_1"), [KQ, "-k", "(twin or fit or lanes) and not Q8_K"], [KF]],
    "tinyllm/quants/kscales.py": [[KB, "-k", "Q4_K or Q5_K or Q3_K or q4_K"], _golden("Q4_K_S", "Q5_K_S", "Q3_K_S"), [KQ, "-k", "Q4_K or Q5_K or Q3_K"]],
    "tinyllm/quants/act.py": [[KK, "-k", "activation or q8_1 or Q8_K or q8_K"], [KB, "-k", "q8_K or q8_0_act or Q8_K"]],
    "tinyllm/quants/blocks.py": [[KE, "-k", "not softmax and not rms"], [KQ, "-k", "not Q8_K"], [KB]],
    "tinyllm/quants/tiles.py": [[KK, "-k", "random_blocks or get_rows or matmul"]],
    # (the golden-file and Gemma cases take ~8 minutes with the JIT off; random blocks cover every type)
    "tinyllm/quants/matmul.py": [[KK, "-k", "not llama_cpp and not gemma"]],
    "tinyllm/quants/floats.py": [[KB, KQ, KK, "-k", "F16 or BF16 or F32 or bf16"]],
    # iq4_nl.py holds the block code of both IQ4 types (iq4_block, best_index)
    "tinyllm/quants/iq4_nl.py": [[KE, KB, KQ, "-k", "IQ4_NL or iq4_nl or IQ4_XS or iq4_xs or best_index"],
                                 _golden("IQ4_NL", "IQ4_XS"), [KK, "-k", "IQ4_NL or IQ4_XS"]],
    "tinyllm/quants/iq4_xs.py": _type("IQ4_XS"),
    "tinyllm/quants/q2_k.py": _type("Q2_K"),
    "tinyllm/quants/q3_k.py": _type("Q3_K"),
    "tinyllm/quants/q4_0.py": [[KE, KB, KQ, "-k", "Q4_0 or q4_0 or Q5_0 or Q8_0"], _golden("Q4_0", "Q5_0"), [KK, "-k", "Q4_0 or q4_0"]],
    "tinyllm/quants/q4_1.py": [[KE, KB, KQ, "-k", "Q4_1 or q4_1 or Q5_1"], _golden("Q4_1", "Q5_1"), [KK, "-k", "Q4_1 or q4_1 or Q5_1"]],
    "tinyllm/quants/q4_k.py": [[KE, KB, KQ, "-k", "Q4_K or q4_K or Q5_K"], _golden("Q4_K_S", "Q5_K_S"), [KK, "-k", "Q4_K or Q5_K"]],
    "tinyllm/quants/q5_0.py": _type("Q5_0"),
    "tinyllm/quants/q5_1.py": _type("Q5_1"),
    "tinyllm/quants/q5_k.py": _type("Q5_K"),
    "tinyllm/quants/q6_k.py": _type("Q6_K"),
    "tinyllm/quants/q8_0.py": _type("Q8_0"),
    # Q8_K's quantizer on a subnormal-max block computes int(rint(Inf)): Numba wraps, Python raises
    # (JIT-off runs cannot use that test); its kernels' activations are act.py's, tested there
    "tinyllm/quants/q8_k.py": [[KB, KK, "-k", "Q8_K or q8_K"]],
    "tinyllm/model/ops.py": [[KE, "-k", "rms or softmax or head_norm or fma32 or four_query or ring_cell or geglu"],
                             [KM, "-k", "ops_match or attention_kernels"]],
}


def hand() -> list:
    """The mutants issue #15 names, and others that a kernel test must never miss."""
    return [
        hand_mutant("tinyllm/quants/fp16.py", "f16_row_to_f32", "em >= np.uint32(0x7C00)", "em > np.uint32(0x7C00)", "Inf widened as a finite value"),
        hand_mutant("tinyllm/quants/fit.py", "make_qx_quants_ref", "range(-9, 10)", "range(-9, 9)", "twin misses its last trial"),
        hand_mutant("tinyllm/quants/fit.py", "qx_lanes", "range(-9, 10)", "range(-9, 9)", "lane fit (Q6_K) misses its last trial"),
        hand_mutant("tinyllm/quants/fit.py", "qx_lanes", "range(-9, 10)", "range(-8, 10)", "lane fit (Q6_K) misses its first trial"),
        # rms_norm, add_rms_norm and head_norm_rope all take their scale from _rms_scale
        hand_mutant("tinyllm/model/ops.py", "_rms_scale", "np.float32(eps)", "np.float32(0.0)", "eps dropped"),
    ]
