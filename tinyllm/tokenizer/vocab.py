"""The tokenizer as llama.cpp builds it from a GGUF vocabulary (architectures.md §4), for both
SPM ('llama') and byte-level BPE ('gpt2', 'gemma4') vocabularies.

What every vocabulary shares lives here: the token texts, types and ids, llama.cpp's rules by
token text (special_tokens.py), splitting special tokens out of the text before the merges
(§4.2 A), BOS/EOS, and detokenization (§4.4). The merges themselves are an engine's: spm.py
(sentencepiece) or bpe.py (byte-level BPE after llama.cpp's pre-tokenizer).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Iterable

import numpy as np

from ..errors import TokenizerError, UsageError, show  # noqa: F401 (show: re-exported)
from ..gguf_io import StringArray
from .special_tokens import apply_text_rules, strip_attributes
from .stream import StreamDecoder
from .token_types import TokenType

MODELS = {"llama": "SPM", "gpt2": "byte-level BPE", "gemma4": "SPM-style BPE"}
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6
_C_SPACE = " \t\n\v\f\r"  # C isspace(), what llama.cpp's LSTRIP/RSTRIP take
_BYTE_TOKEN = re.compile(rb"<0x[0-9A-Fa-f]{2}>")


class Tokenizer:
    """llama.cpp-compatible tokenizer. Build it with `Tokenizer.from_gguf(file)`; the
    constructor takes the vocabulary itself (its defaults are an SPM vocabulary's).

    Attributes: model ('llama', 'gpt2', 'gemma4'), pre (the BPE pre-tokenizer, or None), n_vocab,
    bos_id, eos_id, eot_id, eom_id, unk_id, pad_id (or None), eog_ids (end-of-generation ids),
    add_bos, add_eos, add_space_prefix, clean_spaces, tokens (token texts), types (np.int32
    TokenType per id, after llama.cpp's overrides), scores, source.
    """

    def __init__(
        self,
        tokens: "Sequence[str] | StringArray",
        scores: np.ndarray | None = None,
        types: np.ndarray | None = None,
        *,
        model: str = "llama",
        merges: "Sequence[str] | StringArray | None" = None,
        pre: str | None = None,
        bos_id: int | None = 1,
        eos_id: int | None = 2,
        unk_id: int | None = 0,
        eot_id: int | None = None,
        eom_id: int | None = None,
        pad_id: int | None = None,
        fim_ids: dict[str, int] | None = None,
        extra_eog_ids: Iterable[int] = (),
        add_bos: bool = True,
        add_eos: bool = False,
        add_space_prefix: bool = True,
        name: str = "",
        arch: str = "",
        source: str = "vocabulary",
    ):
        self.source = source
        if model not in MODELS:
            raise TokenizerError(f"{source}: tokenizer model {show(model)} is not supported (supported: "
                                 + ", ".join(f"{m} ({k})" for m, k in MODELS.items()) + ")")
        self.model = model
        n = len(tokens)
        if n == 0:
            raise TokenizerError(f"{source}: the vocabulary is empty")
        # all texts as one UTF-8 bytes object (a GGUF's StringArray is used as it is)
        strings = tokens if isinstance(tokens, StringArray) else StringArray.from_strings(tokens)
        lens = strings.lengths()
        if not lens.all():  # llama.cpp renames empty token texts so that every text maps to one id
            strings = StringArray.from_strings(t if t else f"[EMPTY_{i}]" for i, t in enumerate(strings))
            lens = strings.lengths()
        self._strings = strings
        self._blob, self._lens = np.frombuffer(strings.data, np.uint8), lens  # for fast lookups
        self._starts = strings.ends - lens
        self.n_vocab = n
        self.scores = _array("tokenizer.ggml.scores", "scores", scores, np.float32, n, source, 0.0)
        types = _array("tokenizer.ggml.token_type", "token types", types, np.int32, n, source, TokenType.NORMAL)
        bad = np.flatnonzero((types < 0) | (types > TokenType.BYTE))
        if bad.size:
            i = int(bad[0])
            raise TokenizerError(
                f"{source}: token {i} ({show(self.tokens[i])}) has token type {types[i]}, not one of 0..6"
            )
        self._check_byte_tokens(types)
        self.add_bos, self.add_eos, self.add_space_prefix = bool(add_bos), bool(add_eos), bool(add_space_prefix)

        def check(key, v):
            if v is None or v < 0:
                return None
            if v >= n:
                raise TokenizerError(f"{source}: {key} {v} is out of range (vocabulary has {n} tokens)")
            return int(v)

        self.bos_id = check("bos_token_id", bos_id)
        self.eos_id = check("eos_token_id", eos_id)
        self.unk_id = check("unknown_token_id", unk_id)
        self.pad_id = check("padding_token_id", pad_id)
        ids = {"eos": self.eos_id, "eot": check("eot_token_id", eot_id), "eom": check("eom_token_id", eom_id)}
        for key, v in (fim_ids or {}).items():
            ids[key] = check(f"{key}_token_id", v)
        extra = [check("end-of-generation id", i) for i in extra_eog_ids]

        # llama.cpp's rules by text (§4.1): EOT/EOM/FIM detection, the EOG set, forced types
        eog = apply_text_rules(self._find, lambda i: self.tokens[i], types, ids)
        self.eot_id, self.eom_id = ids["eot"], ids["eom"]
        self.fim_ids = {k: v for k, v in ids.items() if k.startswith("fim_") and v is not None}
        self.eog_ids: set[int] = eog | {i for i in extra if i is not None}
        self.types = types
        self._type_list = types.tolist()  # plain ints: piece_bytes runs once per generated token
        self._lstrip, self._rstrip = strip_attributes(name, pre or "", arch, types, self._find)

        # special tokens, longest text (in bytes) first; ties in id order
        special = np.flatnonzero(np.isin(types, (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)))
        order = sorted(special.tolist(), key=lambda i: (-self._lens[i], i))
        user = set(np.flatnonzero(types == TokenType.USER_DEFINED).tolist())
        self._special_all = _prefix_groups([(self.tokens[i], i) for i in order])
        self._special_user = _prefix_groups([(self.tokens[i], i) for i in order if i in user])

        if model == "llama":
            from .spm import SpmEngine

            if merges is not None:
                raise TokenizerError(f"{source}: an SPM ('llama') vocabulary has no merges")
            self.pre = None
            self.clean_spaces = False
            self._engine = SpmEngine(self)
        else:
            from .bpe import BpeEngine
            from .pretokenizers import pre_tokenizer

            self.pre = pre_tokenizer("gemma4" if model == "gemma4" else pre, source)
            self.clean_spaces = self.pre.clean_spaces
            self._engine = BpeEngine(self, merges)
        self._pieces: dict[int, bytes] = {}

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """Build from a GGUFFile (or a path): SPM ('llama') and BPE ('gpt2', 'gemma4')
        vocabularies; others raise TokenizerError."""
        from .metadata import tokenizer_from_gguf

        return tokenizer_from_gguf(cls, gguf_file)

    @classmethod
    def from_metadata(cls, metadata: dict, source: str = "vocabulary") -> "Tokenizer":
        """Build from GGUF metadata (key -> value, as GGUFFile.metadata holds it)."""
        from .metadata import tokenizer_from_metadata

        return tokenizer_from_metadata(cls, metadata, source)

    @property
    def tokens(self) -> StringArray:
        """The token texts (a read-only sequence of str, indexed by id)."""
        return self._strings

    def _check_byte_tokens(self, types: np.ndarray):
        for i in np.flatnonzero(types == TokenType.BYTE).tolist():
            raw = self._strings.item_bytes(i)
            if not _BYTE_TOKEN.fullmatch(raw):
                raise TokenizerError(
                    f"{self.source}: tokenizer.ggml.tokens[{i}] = {show(self.tokens[i])} has token type BYTE "
                    f"but is not a byte token <0xXX>"
                )

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as llama.cpp's `tokenize(text, add_special=add_bos, parse_special)`.

        add_bos: add BOS (and EOS) as the vocabulary asks (add_bos_token / add_eos_token).
        parse_special: control-token texts in `text` (e.g. "<start_of_turn>") become their ids;
        user-defined tokens are always matched.
        """
        if not isinstance(text, str):
            raise UsageError(f"encode() takes a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            # a lone surrogate (e.g. from errors="surrogateescape") is the only way a str can fail
            raise UsageError(
                f"cannot tokenize text with a lone surrogate U+{ord(text[e.start]):04X} at index {e.start} "
                f"(not valid Unicode); decode the input with errors='replace'"
            ) from None
        frags = self._split_special(text, parse_special)
        out = [self.bos_id] if add_bos and self.add_bos and self.bos_id is not None else []
        out.extend(self._engine.encode(frags))
        if add_bos and self.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _split_special(self, text: str, parse_special: bool) -> list:
        """llama.cpp's tokenizer_st_partition: raw str fragments and int token ids."""
        if not text:
            return []
        groups = self._special_all if parse_special else self._special_user
        present = _present(groups, text)
        frags: list = [text]
        for _, tok, tid in present:
            strip = (tid in self._lstrip, tid in self._rstrip)
            new: list = []
            for frag in frags:
                if isinstance(frag, int) or tok not in frag:
                    new.append(frag)
                elif strip != (False, False):
                    new.extend(_partition_stripping(frag, tok, tid, *strip))
                else:
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
        text (SPM: ▁ as space; byte-level BPE: the bytes its characters stand for),
        USER_DEFINED their text; CONTROL/UNKNOWN give b"" unless special."""
        i = self._check_id(token_id)
        t = self._type_list[i]
        if t == _NORMAL:
            piece = self._pieces.get(i)
            if piece is None:
                piece = self._pieces[i] = self._engine.normal_piece(self._strings.item_bytes(i))
            return piece
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
        text = b"".join(parts)
        return clean_up_spaces(text) if self.clean_spaces else text

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of `ids`; control tokens (BOS, <end_of_turn>) are dropped unless special."""
        return self.decode_bytes(ids, special).decode("utf-8", "replace")

    def stream(self, special: bool = False) -> StreamDecoder:
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

    def describe(self) -> str:
        """'gpt2 (byte-level BPE), pre-tokenizer qwen2' and the like, for `tinyllm info`."""
        what = f"{self.model} ({MODELS[self.model]})"
        return what if self.pre is None else f"{what}, pre-tokenizer {self.pre.name} ({self.pre.kind})"

    def __repr__(self) -> str:
        pre = "" if self.pre is None else f", pre={self.pre.name!r}"
        return (f"Tokenizer({self.source!r}, model={self.model!r}{pre}, n_vocab={self.n_vocab}, "
                f"bos={self.bos_id}, eos={self.eos_id})")


def _array(key: str, what: str, values, dtype, n: int, source: str, fill) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype)
    arr = np.asarray(values) if isinstance(values, (np.ndarray, list, tuple)) else None
    if arr is None or arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TokenizerError(f"{source}: {key} must be an array of numbers, got {show(values)}")
    if arr.shape != (n,):
        raise TokenizerError(f"{source}: {n} tokens but {arr.size} {what} ({key})")
    if dtype == np.int32 and not np.issubdtype(arr.dtype, np.integer):
        raise TokenizerError(f"{source}: {key} must hold integers, got {arr.dtype}")
    return np.array(arr, dtype)


def _partition_stripping(frag: str, tok: str, tid: int, lstrip: bool, rstrip: bool) -> list:
    """tokenizer_st_partition for a token with LSTRIP/RSTRIP: whitespace left of a match
    (LSTRIP) or right of it (RSTRIP) goes with the token; the search goes on in what is left."""
    out: list = []
    while True:
        j = frag.find(tok)
        if j < 0:
            if frag:
                out.append(frag)
            return out
        left = frag[:j].rstrip(_C_SPACE) if lstrip else frag[:j]
        if left:
            out.append(left)
        out.append(tid)
        frag = frag[j + len(tok):]
        if rstrip:
            frag = frag.lstrip(_C_SPACE)


def _present(groups: dict[str, list[tuple[int, str, int]]], text: str) -> list[tuple[int, str, int]]:
    """The special tokens that occur in `text`, in rank order. Only those matter: Gemma has
    6,414 special tokens in 59 groups by their first 3 characters (6,243 are "<unused…>"), so
    the groups are tested first; in a big group (Gemma's "<unused…>", Qwen2's 290 "[PAD…]")
    only the places where its prefix occurs are looked at, not the whole text per token."""
    present = []
    for key, members in groups.items():
        if key not in text:
            continue
        if len(members) <= 8:
            present.extend(m for m in members if m[1] in text)
            continue
        starts = []
        p = text.find(key)
        while p >= 0:
            starts.append(p)
            p = text.find(key, p + 1)
        found: dict[int, set[str]] = {}  # text length -> the texts of that length at the starts
        for m in members:
            n = len(m[1])
            if n not in found:
                found[n] = {text[p : p + n] for p in starts}
            if m[1] in found[n]:
                present.append(m)
    present.sort()
    return present


def _prefix_groups(specials: list[tuple[str, int]]) -> dict[str, list[tuple[int, str, int]]]:
    """Special tokens grouped by their first 3 characters, each as (rank, text, id) where
    rank is the position in llama.cpp's longest-first order."""
    groups: dict[str, list] = {}
    for rank, (text, tid) in enumerate(specials):
        groups.setdefault(text[:3], []).append((rank, text, tid))
    return groups


_SPACE_BEFORE_PUNCT = re.compile(rb" (?=[?!.,])")
_LONE_APOSTROPHE = re.compile(rb" ' ")
_SPACE_BEFORE_CONTRACTION = re.compile(rb" (?='(?:[sm]|[rv]e))")


def clean_up_spaces(text: bytes) -> bytes:
    """llama.cpp detokenize's clean_spaces passes, in order: no space before ? ! . , ;
    " ' " becomes "'"; no space before 's 'm 're 've (but before 't 'd 'll)."""
    text = _SPACE_BEFORE_PUNCT.sub(b"", text)
    text = _LONE_APOSTROPHE.sub(b"'", text)
    return _SPACE_BEFORE_CONTRACTION.sub(b"", text)
