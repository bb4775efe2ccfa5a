"""`tinyllm quantize`: float GGUF checkpoints to every llama-quantize type, byte-identical to it.

    rules.py      which type each tensor gets (llama-quantize's mixtures, fallbacks, overrides)
    imatrix.py    importance-matrix files (llama-imatrix's GGUF and legacy formats) -> per-tensor weights
    pipeline.py   read, convert tensor by tensor with the block code of `tinyllm.quants`, write atomically

The package itself is callable, so `tinyllm.quantize(src, dst, "Q4_K_M")` is
`tinyllm.quantize.quantize_file(src, dst, "Q4_K_M")` however often it is called (importing a
submodule `tinyllm.quantize` would otherwise replace a function of that name on the package).
"""
import sys
import types

from .pipeline import QuantizeStats, TensorDone, convert_tensor, default_output_path, plan_file, quantize_file, supported_types
from .rules import FTYPES, FType, QuantPlan, TensorPlan, parse_ftype


class _CallableModule(types.ModuleType):
    def __call__(self, src, dst, type_name, **kwargs) -> QuantizeStats:
        """Quantize a float GGUF file as llama-quantize does; see quantize_file."""
        return quantize_file(src, dst, type_name, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "quantize_file", "plan_file", "convert_tensor", "default_output_path", "supported_types",
    "QuantizeStats", "TensorDone", "FTYPES", "FType", "QuantPlan", "TensorPlan", "parse_ftype",
]
