"""Write the manifest of llama.cpp's quantized golden files: per file its sha256, and per
tensor its type, shape and sha256, so the tests can check tinyllm's output against
llama-quantize's bytes without carrying 18 MB of quantized files.

    python tests/data/hash_gguf.py DIR/tiny-*.gguf > tests/data/golden/quant/manifest.json

DIR is where `llama-quantize tiny-f32.gguf tiny-<MIX>.gguf <MIX>` (and `--pure`) wrote
their files; see tests/data/README.md for how they were made.
"""
import hashlib
import json
import sys
from pathlib import Path

import gguf

# what llama-quantize --imatrix adds (absent from files made without one)
IMATRIX_KEYS = ("quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                "quantize.imatrix.chunks_count")


def describe(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    md = {}
    for key in ("general.file_type", "general.quantization_version", *IMATRIX_KEYS):
        f = r.fields.get(key)
        if f is not None:
            md[key] = f.contents()
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "metadata": md,
        "tensors": [
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "shape": [int(n) for n in reversed(t.shape.tolist())],
                "sha256": hashlib.sha256(bytes(t.data.reshape(-1).view("u1"))).hexdigest(),
            }
            for t in r.tensors
        ],
    }


def main(paths: list[str]) -> None:
    files = {Path(p).name[: -len(".gguf")]: describe(Path(p)) for p in sorted(paths)}
    json.dump(files, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
