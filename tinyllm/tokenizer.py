"""SPM tokenizer built from the GGUF vocabulary, with llama.cpp's rules (architectures.md §4).

The merge itself runs in sentencepiece: a BPE ModelProto is rebuilt from the GGUF tokens,
scores and types (§4.5) and loaded from memory. Everything llama.cpp does around the merge
is done here, because sentencepiece does it differently:
- special tokens are split out of the text first, longest first (§4.2 A): USER_DEFINED
  always, CONTROL/UNKNOWN only with parse_special. They are matched against the raw text,
  so a user-defined "  " (two real spaces, Gemma id 138) is matched as llama.cpp does;
- the " " prefix (add_space_prefix) goes at the start and after every special token (§4.2 B);
- BOS/EOS are added per add_bos_token / add_eos_token;
- decoding follows llama.cpp's token_to_piece / detokenize (§4.4), not sentencepiece's.

The proto is encoded by hand (a few fields of the wire format), which needs no protobuf
package and builds Gemma's 262,144 pieces in ~0.1 s.
"""
from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from enum import IntEnum
from typing import Iterable

import numpy as np

from .errors import TokenizerError, UsageError
from .gguf_io import StringArray


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values; sentencepiece's piece types use the same numbers."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# llama.cpp (llama-vocab.cpp `load`): texts that make a token EOT when no eot id is given,
# and texts that always mark end of generation. Both are forced to CONTROL.
EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)
EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
)
SUPPORTED_MODELS = ("llama",)  # SentencePiece-style BPE ("SPM")

SPACE = "\u2581"  # ▁, sentencepiece's escaped space
SPACE_UTF8 = SPACE.encode("utf-8")
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6


class Tokenizer:
    """llama.cpp-compatible SPM tokenizer. Build it with `Tokenizer.from_gguf(file)`.

    Attributes: n_vocab, bos_id, eos_id, eot_id (or None), unk_id, pad_id (or None),
    eog_ids (set of end-of-generation ids), add_bos, add_eos, add_space_prefix,
    tokens (token texts), types (np.int32 TokenType per id, after llama.cpp's overrides).
    """

    def __init__(
        self,
        tokens: "Sequence[str] | StringArray",
        scores: np.ndarray | None = None,
        types: np.ndarray | None = None,
        *,
        bos_id: int | None = 1,
        eos_id: int | None = 2,
        unk_id: int = 0,
        eot_id: int | None = None,
        eom_id: int | None = None,
        pad_id: int | None = None,
        extra_eog_ids: Iterable[int] = (),
        add_bos: bool = True,
        add_eos: bool = False,
        add_space_prefix: bool = True,
        source: str = "vocabulary",
    ):
        n = len(tokens)
        if n == 0:
            raise TokenizerError(f"{source}: the vocabulary is empty")
        self.source = source
        # all texts as one UTF-8 bytes object (a GGUF's StringArray is used as it is)
        strings = tokens if isinstance(tokens, StringArray) else StringArray.from_strings(tokens)
        lens = strings.lengths()
        if not lens.all():  # llama.cpp renames empty token texts so that every text maps to one id
            strings = StringArray.from_strings(t if t else f"[EMPTY_{i}]" for i, t in enumerate(strings))
            lens = strings.lengths()
        self._strings = strings
        self._blob, self._lens = np.frombuffer(strings.data, np.uint8), lens  # for fast lookups
        self._starts = strings.ends - lens
        self.scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, np.float32)
        types = np.full(n, TokenType.NORMAL, np.int32) if types is None else np.array(types, np.int32)
        for what, arr in (("scores", self.scores), ("token types", types)):
            if arr.shape != (n,):
                raise TokenizerError(f"{source}: {n} tokens but {arr.size} {what}")
        bad = np.flatnonzero((types < 0) | (types > TokenType.BYTE))
        if bad.size:
            i = int(bad[0])
            raise TokenizerError(
                f"{source}: token {i} ({self.tokens[i]!r}) has token type {types[i]}, not one of 0..6"
            )
        self.n_vocab = n
        self.add_bos, self.add_eos, self.add_space_prefix = bool(add_bos), bool(add_eos), bool(add_space_prefix)

        def check(name, v, optional=True):
            if optional and (v is None or v < 0):
                return None
            if v is None:
                raise TokenizerError(f"{source}: {name} is required (sentencepiece needs an unknown token)")
            if not 0 <= v < n:
                raise TokenizerError(f"{source}: {name} {v} is out of range (vocabulary has {n} tokens)")
            return int(v)

        self.bos_id = check("bos_token_id", bos_id)
        self.eos_id = check("eos_token_id", eos_id)
        self.unk_id = check("unknown_token_id", unk_id, optional=False)
        self.pad_id = check("padding_token_id", pad_id)
        self.eot_id = check("eot_token_id", eot_id)
        self.eom_id = check("eom_token_id", eom_id)
        extra = [check("end-of-generation id", i) for i in extra_eog_ids]

        # llama.cpp's overrides by text (§4.1): EOT detection, the EOG set, forced CONTROL
        if self.eot_id is None:
            for t in EOT_TEXTS:
                i = self._find(t)
                if i is not None:
                    self.eot_id = i
                    types[i] = TokenType.CONTROL
                    break
        eog = {i for i in (self.eos_id, self.eot_id, self.eom_id, *extra) if i is not None}
        for t in EOG_TEXTS:
            i = self._find(t)
            if i is not None:
                eog.add(i)
                types[i] = TokenType.CONTROL
        self.eog_ids: set[int] = eog
        self.types = types
        self._type_list = types.tolist()  # plain ints: piece_bytes runs once per generated token

        # special tokens, longest text (in bytes) first; ties in id order
        special = np.flatnonzero(np.isin(types, (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)))
        order = sorted(special.tolist(), key=lambda i: (-self._lens[i], i))
        user = set(np.flatnonzero(types == TokenType.USER_DEFINED).tolist())
        self._special_all = _prefix_groups([(self.tokens[i], i) for i in order])
        self._special_user = _prefix_groups([(self.tokens[i], i) for i in order if i in user])

        self._sp = self._build_sentencepiece()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """Build from a GGUFFile (or a path). Only SPM vocabularies (`tokenizer.ggml.model`
        'llama') are supported; others raise TokenizerError."""
        from .gguf_io import GGUFFile

        if isinstance(gguf_file, (str, os.PathLike)):
            with GGUFFile(gguf_file) as f:
                return cls.from_gguf(f)
        md = gguf_file.metadata
        source = str(gguf_file.path)
        model = md.get("tokenizer.ggml.model")
        if model is None:
            raise TokenizerError(f"{source}: the file has no tokenizer (tokenizer.ggml.model is missing)")
        if model not in SUPPORTED_MODELS:
            kind = {"gpt2": " (GPT-2-style byte-level BPE)", "bert": " (WordPiece)", "t5": " (Unigram)"}.get(model, "")
            raise TokenizerError(
                f"{source}: tokenizer model {model!r}{kind} is not supported yet (supported: llama/SPM)"
            )
        tokens = md.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (list, StringArray)) or not tokens:
            raise TokenizerError(f"{source}: tokenizer.ggml.tokens is missing or empty")

        def get_id(key, default):
            v = md.get(f"tokenizer.ggml.{key}", default)
            if v is not None and not isinstance(v, (int, np.integer)):
                raise TokenizerError(f"{source}: tokenizer.ggml.{key} must be an integer, got {v!r}")
            return None if v is None else int(v)

        extra = [get_id(k, None) for k in ("fim_pad_token_id", "fim_rep_token_id", "fim_sep_token_id")]
        return cls(
            tokens,
            md.get("tokenizer.ggml.scores"),
            md.get("tokenizer.ggml.token_type"),
            bos_id=get_id("bos_token_id", 1),
            eos_id=get_id("eos_token_id", 2),
            unk_id=get_id("unknown_token_id", 0),
            eot_id=get_id("eot_token_id", None),
            eom_id=get_id("eom_token_id", None),
            pad_id=get_id("padding_token_id", None),
            extra_eog_ids=[i for i in extra if i is not None],
            add_bos=bool(md.get("tokenizer.ggml.add_bos_token", True)),
            add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(md.get("tokenizer.ggml.add_space_prefix", True)),
            source=source,
        )

    @property
    def tokens(self) -> StringArray:
        """The token texts (a read-only sequence of str, indexed by id)."""
        return self._strings

    def _build_sentencepiece(self):
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(_model_proto(self))
            return sp
        except (RuntimeError, OSError) as e:
            if "already defined" not in str(e):
                raise TokenizerError(f"{self.source}: sentencepiece rejected the vocabulary: {e}") from None
        # A text that occurs twice: llama.cpp maps it to its last id, so earlier copies are
        # hidden from sentencepiece (found only now: hashing all texts up front costs ~0.1 s).
        last = dict(zip(self.tokens, range(self.n_vocab)))
        hidden = {i for i, t in enumerate(self.tokens) if last[t] != i}
        try:
            sp.LoadFromSerializedProto(_model_proto(self, hidden))
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"{self.source}: sentencepiece rejected the vocabulary: {e}") from None
        return sp

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as llama.cpp's `tokenize(text, add_special=add_bos, parse_special)`.

        add_bos: add BOS (and EOS) as the vocabulary asks (add_bos_token / add_eos_token).
        parse_special: control-token texts in `text` (e.g. "<start_of_turn>") become their ids;
        user-defined tokens are always matched.
        """
        if not isinstance(text, str):
            raise UsageError(f"encode() takes a str, got {type(text).__name__}")
        frags = self._split_special(text, parse_special)
        # llama.cpp prefixes " " to a raw fragment at the start and after every special token
        raw, prev_special = [], True
        for f in frags:
            if isinstance(f, str):
                raw.append(" " + f if self.add_space_prefix and prev_special else f)
            prev_special = isinstance(f, int)
        merged = iter(self._sp_encode(raw, text))
        out = [self.bos_id] if add_bos and self.add_bos and self.bos_id is not None else []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
            else:
                out.extend(next(merged))
        if add_bos and self.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _sp_encode(self, raw: list[str], text: str) -> list[list[int]]:
        if not raw:
            return []
        try:
            return self._sp.encode(raw)
        except (RuntimeError, TypeError):
            pass
        # sentencepiece takes only valid Unicode; a lone surrogate (e.g. from
        # errors="surrogateescape") is the only way a str can fail to be
        bad = next((i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF), None)
        if bad is None:
            raise TokenizerError(f"{self.source}: sentencepiece could not encode {text[:40]!r}")
        raise UsageError(
            f"cannot tokenize text with a lone surrogate U+{ord(text[bad]):04X} at index {bad} "
            f"(not valid Unicode); decode the input with errors='replace'"
        )

    def _split_special(self, text: str, parse_special: bool) -> list:
        """llama.cpp's tokenizer_st_partition: raw str fragments and int token ids."""
        if not text:
            return []
        groups = self._special_all if parse_special else self._special_user
        # Only tokens that occur in the text matter. Gemma has 6,414 special tokens in 59
        # groups by their first 3 characters (6,243 are "<unused…>"): test the groups first.
        present = [m for key, members in groups.items() if key in text for m in members if m[1] in text]
        present.sort()
        frags: list = [text]
        for _, tok, tid in present:
            new: list = []
            for frag in frags:
                if isinstance(frag, int) or tok not in frag:
                    new.append(frag)
                    continue
                parts = frag.split(tok)
                for j, part in enumerate(parts):
                    if j:
                        new.append(tid)
                    if part:
                        new.append(part)
            frags = new
        return frags

    # -- decoding ---------------------------------------------------------------------------

    def _check_id(self, i) -> int:
        if isinstance(i, (int, np.integer)) and 0 <= i < self.n_vocab:
            return int(i)
        raise TokenizerError(f"{self.source}: token id {i!r} is out of range (vocabulary has {self.n_vocab} tokens)")

    def piece_bytes(self, token_id: int, special: bool = False) -> bytes:
        """llama.cpp token_to_piece as bytes: BYTE tokens give their byte, NORMAL tokens their
        text with ▁ as space, USER_DEFINED their text; CONTROL/UNKNOWN give b"" unless special."""
        i = self._check_id(token_id)
        t = self._type_list[i]
        if t == _NORMAL:
            return self._strings.item_bytes(i).replace(SPACE_UTF8, b" ")
        if t == _BYTE:
            return bytes((int(self._strings.item_bytes(i)[3:5], 16),))
        if t == _USER_DEFINED or (special and (t == _CONTROL or t == _UNKNOWN)):
            return self._strings.item_bytes(i)
        return b""  # CONTROL/UNKNOWN without special; UNUSED and UNDEFINED always

    def piece(self, token_id: int, special: bool = False) -> str:
        """The text of one token (llama.cpp token_to_piece); a lone byte of a multi-byte
        character decodes to U+FFFD, so stream with StreamDecoder instead."""
        return self.piece_bytes(token_id, special).decode("utf-8", "replace")

    def decode_bytes(self, ids: Iterable[int], special: bool = False) -> bytes:
        """llama.cpp detokenize(ids, remove_special=False, unparse_special=special)."""
        parts = [self.piece_bytes(i, special) for i in ids]
        if parts and self.add_space_prefix and parts[0].startswith(b" "):
            parts[0] = parts[0][1:]  # the space the encoder prefixed (lstrip=1 on the first token)
        return b"".join(parts)

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of `ids`; control tokens (BOS, <end_of_turn>) are dropped unless special."""
        return self.decode_bytes(ids, special).decode("utf-8", "replace")

    def stream(self, special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, special)

    def token_to_id(self, text: str) -> int | None:
        """The id of the token whose text is exactly `text`, or None."""
        return self._find(text)

    def _find(self, text: str) -> int | None:
        # Compares bytes with numpy: a dict of 262,144 texts would cost ~0.1 s to build.
        # A repeated text maps to its last id, as in llama.cpp.
        b = np.frombuffer(text.encode("utf-8", "surrogateescape"), dtype=np.uint8)
        if len(b) == 0:
            return None
        cand = np.flatnonzero(self._lens == len(b))
        cand = cand[self._blob[self._starts[cand]] == b[0]]
        if len(cand) and len(b) > 1:
            cand = cand[(self._blob[self._starts[cand, None] + np.arange(1, len(b))] == b[1:]).all(axis=1)]
        return int(cand[-1]) if len(cand) else None

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, n_vocab={self.n_vocab}, bos={self.bos_id}, eos={self.eos_id})"


def _prefix_groups(specials: list[tuple[str, int]]) -> dict[str, list[tuple[int, str, int]]]:
    """Special tokens grouped by their first 3 characters, each as (rank, text, id) where
    rank is the position in llama.cpp's longest-first order."""
    groups: dict[str, list] = {}
    for rank, (text, tid) in enumerate(specials):
        groups.setdefault(text[:3], []).append((rank, text, tid))
    return groups


class StreamDecoder:
    """Turns token ids into text as they come, never splitting a UTF-8 character: bytes of an
    unfinished character wait for the next token; invalid bytes become U+FFFD."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
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


def _model_proto(tok: Tokenizer, hidden: set[int] = frozenset()) -> bytes:
    # sentencepiece needs exactly one UNKNOWN piece (Gemma types <unk> CONTROL), and must not
    # match user-defined tokens itself: we split them out of the raw text as llama.cpp does,
    # so they are plain pieces here (with their real spaces they never match escaped text).
    ptypes = tok.types.copy()
    ptypes[ptypes == TokenType.UNKNOWN] = TokenType.CONTROL
    ptypes[(ptypes == TokenType.USER_DEFINED) | (ptypes == TokenType.UNDEFINED)] = TokenType.NORMAL
    ptypes[tok.unk_id] = TokenType.UNKNOWN
    has_bytes = bool((ptypes == TokenType.BYTE).any())
    blob, n = tok._blob, tok._lens
    if hidden:  # duplicate texts: renamed to something no text contains, and never matched
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
