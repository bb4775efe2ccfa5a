"""llama.cpp's tokenizer through ctypes (llama-cpp-python's low-level bindings), for the scripts
that compare tinyllm with llama.cpp. A model is loaded vocab-only: no weights are read.

Two ways to reach llama.cpp:
- an installed llama-cpp-python (`pip install llama-cpp-python` builds it); or
- llama-cpp-python's source tree with llama.cpp built in it: set LLAMA_CPP_PY=/path/to/
  llama_cpp_python-0.3.36 (its llama_cpp/ bindings are used; the library is taken from
  $LLAMA_CPP_LIB_PATH, by default vendor/llama.cpp/build/bin under that tree). Only the
  ctypes module is imported, so the high-level package's extra dependencies are not needed.
"""
from __future__ import annotations

import ctypes
import os
import sys
import types
from pathlib import Path


def bindings():
    """The llama_cpp.llama_cpp ctypes module, with llama.cpp's logging silenced."""
    src = os.environ.get("LLAMA_CPP_PY")
    if src and "llama_cpp" not in sys.modules:
        os.environ.setdefault("LLAMA_CPP_LIB_PATH", str(Path(src) / "vendor" / "llama.cpp" / "build" / "bin"))
        pkg = types.ModuleType("llama_cpp")
        pkg.__path__ = [str(Path(src) / "llama_cpp")]
        sys.modules["llama_cpp"] = pkg
    import llama_cpp.llama_cpp as L

    if not getattr(L, "_tinyllm_quiet", False):
        L._tinyllm_log_cb = L.llama_log_callback(lambda level, text, data: None)
        L.llama_log_set(L._tinyllm_log_cb, ctypes.c_void_p(0))
        L.llama_backend_init()
        L._tinyllm_quiet = True
    return L


class LlamaVocab:
    """A GGUF file's vocabulary in llama.cpp."""

    def __init__(self, path):
        L = self.L = bindings()
        params = L.llama_model_default_params()
        params.vocab_only = True
        self.model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.add_eos = bool(L.llama_vocab_get_add_eos(self.vocab))

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        while True:
            buf = (self.L.llama_token * n_max)()
            n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, n_max, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            n_max = -n

    def detokenize(self, ids: list[int], remove_special: bool = False, unparse_special: bool = False) -> bytes:
        arr = (self.L.llama_token * max(len(ids), 1))(*ids)
        size = 16 + 8 * len(ids)
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self.L.llama_detokenize(self.vocab, arr, len(ids), buf, size, remove_special, unparse_special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def piece(self, token: int, special: bool = False) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def special_ids(self) -> dict[str, int | None]:
        """BOS, EOS, EOT, PAD and the FIM ids llama.cpp settled on (None where it has none)."""
        out = {}
        for key in ("bos", "eos", "eot", "pad", "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep"):
            v = getattr(self.L, f"llama_vocab_{key}")(self.vocab)
            out[key] = None if v < 0 else int(v)
        return out

    def is_eog(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    def eog_ids(self) -> set[int]:
        return {i for i in range(self.n_vocab) if self.is_eog(i)}

    def close(self):
        if self.model:
            self.L.llama_model_free(self.model)
            self.model = None
