"""ggml tensor types: ids, block sizes and bytes per block (kquants.md §0.5, kquants-family.md §0)."""
from enum import IntEnum

from ..errors import UsageError

QK_K = 256  # weights per K-quant / IQ super-block
QK8_0 = 32  # weights per Q8_0 / Q5_0 / Q4_0 / Q4_1 / Q5_1 / IQ4_NL block


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30


# type -> (weights per block, bytes per block)
BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.BF16: (1, 2),
    GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 36),
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66),
    GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82),
    GGMLType.IQ4_XS: (256, 136),
    GGMLType.IQ1_M: (256, 56),
}

FLOAT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)


def block_size(t: GGMLType) -> int:
    return BLOCK_SIZES[t][0]


def row_nbytes(t: GGMLType, n: int) -> int:
    """Bytes of one row of n weights; n must be a multiple of the block size."""
    blck, nbytes = BLOCK_SIZES[t]
    return n // blck * nbytes


def bits_per_weight(t: GGMLType) -> float:
    blck, nbytes = BLOCK_SIZES[t]
    return 8.0 * nbytes / blck


def parse_type(name: str) -> GGMLType:
    """'q4_k' / 'Q4_K' -> GGMLType.Q4_K, with a one-line error listing the known names."""
    try:
        return GGMLType[name.strip().upper()]
    except KeyError:
        known = ", ".join(t.name for t in GGMLType)
        raise UsageError(f"unknown tensor type {name!r:.40}; known types: {known}") from None
