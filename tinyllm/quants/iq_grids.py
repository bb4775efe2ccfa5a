"""The lattice tables of the IQ types (kquants-family.md §2.0), read from the `gguf` package,
whose tables were checked equal to ggml-common.h's. Each is built once, on first use.

    grid(type)  uint8 (n, 8) or (n, 4): grid entry j's element magnitudes (IQ2_*, IQ3_*), or
                int8 (2048, 8) for IQ1_S / IQ1_M (values -1, 0, +1)
    KSIGNS      uint8 (128,): ksigns_iq2xs, 7-bit sign index -> 8 sign bits with even parity
    KVALUES     int8 (16,): kvalues_iq4nl, the non-linear 4-bit grid of IQ4_NL / IQ4_XS
    IQ1_DELTA   0.125, the offset IQ1_S / IQ1_M add to every grid value
"""
import functools

import numpy as np
from gguf import quants as gq

from .types import GGMLType

KSIGNS = np.frombuffer(bytes(gq.IQ2_XXS.ksigns), dtype=np.uint8).copy().reshape(128)
KVALUES = np.array(tuple(gq.IQ4_NL.kvalues), dtype=np.int8).reshape(16)
IQ1_DELTA = np.float32(0.125)

_CLASSES = {
    GGMLType.IQ2_XXS: gq.IQ2_XXS,
    GGMLType.IQ2_XS: gq.IQ2_XS,
    GGMLType.IQ2_S: gq.IQ2_S,
    GGMLType.IQ3_XXS: gq.IQ3_XXS,
    GGMLType.IQ3_S: gq.IQ3_S,
    GGMLType.IQ1_S: gq.IQ1_S,
    GGMLType.IQ1_M: gq.IQ1_S,  # IQ1_M shares IQ1_S's grid
}


@functools.cache
def grid(type: GGMLType) -> np.ndarray:
    cls = _CLASSES[GGMLType(type)]
    cls.init_grid()
    g = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    signed = type in (GGMLType.IQ1_S, GGMLType.IQ1_M)
    out = g.astype(np.int8 if signed else np.uint8)
    assert np.array_equal(out.astype(np.float32), g), type
    out.setflags(write=False)
    return out
