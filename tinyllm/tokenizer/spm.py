"""The SPM engine: merges of a sentencepiece-style vocabulary (`tokenizer.ggml.model` 'llama'),
with llama.cpp's rules around them (architectures.md §4).

The merge itself runs in sentencepiece: a BPE ModelProto is rebuilt from the GGUF tokens,
scores and types (§4.5) and loaded from memory. What llama.cpp does around the merge is done
by tinyllm, because sentencepiece does it differently: special tokens are split out first
(vocab.py), the " " prefix (add_space_prefix) goes at the start and after every special
token (§4.2 B), and decoding follows llama.cpp's token_to_piece (§4.4).

The proto is encoded by hand (a few fields of the wire format), which needs no protobuf
package and builds Gemma's 262,144 pieces in ~0.1 s.
"""
from __future__ import annotations

import numpy as np

from ..errors import TokenizerError
from ..gguf_io import StringArray
from .token_types import TokenType

SPACE = "\u2581"  # ▁, sentencepiece's escaped space
SPACE_UTF8 = SPACE.encode("utf-8")


class SpmEngine:
    """sentencepiece over the vocabulary of a Tokenizer (which splits out special tokens)."""

    def __init__(self, tok):
        if tok.unk_id is None:
            raise TokenizerError(f"{tok.source}: unknown_token_id is required (sentencepiece needs an unknown token)")
        self.tok = tok
        self._sp = self._build_sentencepiece()

    def _build_sentencepiece(self):
        import sentencepiece

        tok = self.tok
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(_model_proto(tok))
            return sp
        except (RuntimeError, OSError) as e:
            if "already defined" not in str(e):
                raise TokenizerError(f"{tok.source}: sentencepiece rejected the vocabulary: {e}") from None
        # A text that occurs twice: llama.cpp maps it to its last id, so earlier copies are
        # hidden from sentencepiece (found only now: hashing all texts up front costs ~0.1 s).
        last = dict(zip(tok.tokens, range(tok.n_vocab)))
        hidden = {i for i, t in enumerate(tok.tokens) if last[t] != i}
        try:
            sp.LoadFromSerializedProto(_model_proto(tok, hidden))
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"{tok.source}: sentencepiece rejected the vocabulary: {e}") from None
        return sp

    def encode(self, frags: list) -> list[int]:
        """Ids of the fragments (raw text str, or a special token's id) in order; llama.cpp
        prefixes " " to a raw fragment at the start and after every special token."""
        raw, prev_special = [], True
        for f in frags:
            if isinstance(f, str):
                raw.append(" " + f if self.tok.add_space_prefix and prev_special else f)
            prev_special = isinstance(f, int)
        merged = iter(self._sp_encode(raw))
        out = []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
            else:
                out.extend(next(merged))
        return out

    def _sp_encode(self, raw: list[str]) -> list[list[int]]:
        if not raw:
            return []
        try:
            return self._sp.encode(raw)
        except (RuntimeError, TypeError) as e:
            raise TokenizerError(f"{self.tok.source}: sentencepiece could not encode {raw[0][:40]!r}: {e}") from None

    @staticmethod
    def normal_piece(raw: bytes) -> bytes:
        """A NORMAL token's text with ▁ as space."""
        return raw.replace(SPACE_UTF8, b" ")


# -- the sentencepiece ModelProto, by hand (§4.5) ---------------------------------------------
#
# ModelProto    1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
# SentencePiece 1: piece (string)   2: score (float)   3: type (enum, = GGUF token_type)
# TrainerSpec   3: model_type (2 = BPE)   4: vocab_size   35: byte_fallback
#               40: unk_id   41: bos_id   42: eos_id   43: pad_id
# NormalizerSpec 1: name   3: add_dummy_prefix   4: remove_extra_whitespaces   5: escape_whitespaces


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int32 fields are 10-byte two's-complement varints
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field_varint(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _field_bytes(field: int, b: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(b)) + b


def _varint_len(v: np.ndarray) -> np.ndarray:
    n = np.ones_like(v)
    for k in range(1, 5):
        n += v >= 1 << (7 * k)
    return n


def _put_varints(out: np.ndarray, pos: np.ndarray, v: np.ndarray, vlen: np.ndarray):
    """Write varint v[i] (vlen[i] bytes, at most 5) at out[pos[i]:], for all i at once."""
    for k in range(int(vlen.max())):
        m = vlen > k
        byte = (v[m] >> (7 * k)) & 0x7F
        out[pos[m] + k] = byte | np.where(vlen[m] > k + 1, 0x80, 0)


def _model_proto(tok, hidden: set[int] = frozenset()) -> bytes:
    # sentencepiece needs exactly one UNKNOWN piece (Gemma types <unk> CONTROL), and must not
    # match user-defined tokens itself: we split them out of the raw text as llama.cpp does,
    # so they are plain pieces here (with their real spaces they never match escaped text).
    ptypes = tok.types.copy()
    ptypes[ptypes == TokenType.UNKNOWN] = TokenType.CONTROL
    ptypes[(ptypes == TokenType.USER_DEFINED) | (ptypes == TokenType.UNDEFINED)] = TokenType.NORMAL
    ptypes[tok.unk_id] = TokenType.UNKNOWN
    has_bytes = bool((ptypes == TokenType.BYTE).any())
    blob, n = tok._blob, tok._lens
    if has_bytes:
        # sentencepiece makes a piece "\0" UNUSED when byte_fallback is on, and says so on
        # stderr through its C++ logger: hidden here instead, it stays unmatched, silently
        one = np.flatnonzero(n == 1)
        nul = one[np.asarray(blob)[np.cumsum(n)[one] - 1] == 0]
        hidden = set(hidden) | set(nul[nul != tok.unk_id].tolist())
    if hidden:  # duplicate texts (and "\0"): renamed to something no text contains, never matched
        ptypes[sorted(hidden)] = TokenType.CONTROL
        renamed = StringArray.from_strings(f"\u2402dup{i}\u2402" if i in hidden else t for i, t in enumerate(tok.tokens))
        blob, n = np.frombuffer(renamed.data, np.uint8), renamed.lengths()

    # Each piece, built for all 262,144 at once with numpy (a Python loop takes ~0.5 s):
    #   0x0A varint(body) | body = 0x0A varint(n) text[n] | 0x15 score:f32 | 0x18 type
    n_len = _varint_len(n)
    body = 1 + n_len + n + 5 + 2
    body_len = _varint_len(body)
    size = 1 + body_len + body
    start = np.zeros(len(n), dtype=np.int64)
    np.cumsum(size[:-1], out=start[1:])
    out = np.empty(int(size.sum()), dtype=np.uint8)
    out[start] = 0x0A
    _put_varints(out, start + 1, body, body_len)
    p = start + 1 + body_len
    out[p] = 0x0A
    _put_varints(out, p + 1, n, n_len)
    text_at = p + 1 + n_len
    text_off = np.zeros(len(n), dtype=np.int64)
    np.cumsum(n[:-1], out=text_off[1:])
    out[np.arange(len(blob)) + np.repeat(text_at - text_off, n)] = blob
    q = text_at + n
    out[q] = 0x15
    out[q[:, None] + np.arange(1, 5)] = tok.scores.astype("<f4").view(np.uint8).reshape(-1, 4)
    out[q + 5] = 0x18
    out[q + 6] = ptypes
    trainer = b"".join((
        _field_varint(3, 2),
        _field_varint(4, tok.n_vocab),
        _field_varint(35, int(has_bytes)),
        _field_varint(40, tok.unk_id),
        _field_varint(41, -1 if tok.bos_id is None else tok.bos_id),
        _field_varint(42, -1 if tok.eos_id is None else tok.eos_id),
        _field_varint(43, -1 if tok.pad_id is None else tok.pad_id),
    ))
    normalizer = b"".join((
        _field_bytes(1, b"identity"),
        _field_varint(3, 0),  # the space prefix is added by encode(), llama.cpp's way
        _field_varint(4, 0),
        _field_varint(5, 1),
    ))
    return out.tobytes() + _field_bytes(2, trainer) + _field_bytes(3, normalizer)
