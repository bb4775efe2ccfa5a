"""Tokenizers built from a GGUF vocabulary, tokenizing exactly as llama.cpp does.

    tok = Tokenizer.from_gguf("model.gguf")
    ids = tok.encode("Hello", add_bos=True, parse_special=True)
    text = tok.decode(ids)

Modules: vocab (the Tokenizer: ids, special tokens, BOS/EOS, detokenization), metadata
(reading `tokenizer.ggml.*` with llama.cpp's defaults), special_tokens (llama.cpp's rules by
token text: EOG, FIM, forced types), spm (SentencePiece-style vocabularies), bpe (byte-level
BPE), pretokenizers (`tokenizer.ggml.pre` names and their regexes), unicode_split (llama.cpp's
regex split), unicode_classes (its Unicode table), stream (StreamDecoder), token_types.
"""
from .stream import StreamDecoder
from .token_types import TokenType
from .vocab import Tokenizer

__all__ = ["Tokenizer", "StreamDecoder", "TokenType"]
