"""`tinyllm quantize`: float GGUF checkpoints to every llama-quantize type, byte-identical to it.

    rules.py      which type each tensor gets (llama-quantize's mixtures, fallbacks, overrides)
    imatrix.py    importance-matrix files (llama-imatrix's GGUF and legacy formats) -> per-tensor weights
    pipeline.py   read, convert tensor by tensor with the block code of `tinyllm.quants`, write atomically

`tinyllm.quantize(src, dst, "Q4_K_M")` is `quantize_file`: the package is named apart from the
function, so importing it never replaces `tinyllm.quantize` (generation.py and `tinyllm.generate` alike).
"""
from .pipeline import QuantizeStats, TensorDone, convert_tensor, default_output_path, plan_file, quantize_file, supported_types
from .rules import FTYPES, FType, QuantPlan, TensorPlan, parse_ftype

__all__ = [
    "quantize_file", "plan_file", "convert_tensor", "default_output_path", "supported_types",
    "QuantizeStats", "TensorDone", "FTYPES", "FType", "QuantPlan", "TensorPlan", "parse_ftype",
]
