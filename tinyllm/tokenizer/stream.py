"""Streaming detokenization: text as token ids arrive, never splitting a UTF-8 character."""
from __future__ import annotations

import codecs


class StreamDecoder:
    """Turns token ids into text as they come, never splitting a UTF-8 character: bytes of an
    unfinished character wait for the next token; invalid bytes become U+FFFD. Works on the
    tokenizer's piece bytes, so SPM byte tokens (<0xE6>) and byte-level BPE pieces (a
    character's bytes spread over several tokens) stream alike."""

    def __init__(self, tokenizer, special: bool = False):
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.piece_bytes(token_id, self.special))

    def flush(self) -> str:
        """Whatever is left (an unfinished character becomes U+FFFD); the decoder is reset."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out
