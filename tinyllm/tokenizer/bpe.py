"""The BPE engine: `tokenizer.ggml.model` 'gpt2' (byte-level BPE: Llama 3, Qwen, SmolLM2,
DeepSeek, StarCoder, Phi...) and 'gemma4' (SPM-style BPE over raw UTF-8), as llama.cpp's
llm_tokenizer_bpe_session tokenizes them.

A raw fragment (special tokens are already split out, vocab.py) is cut into words by the
pre-tokenizer of `tokenizer.ggml.pre` (unicode_split.py); each word is mapped to GPT-2's byte
characters (byte-level vocabularies) and merged on its own: the adjacent pair of symbols
with the lowest merge rank goes first, the leftmost on a tie; a final symbol that is not a
token becomes byte tokens (its bytes' characters, or <0xXX> tokens for raw UTF-8).

The merge runs in Hugging Face's `tokenizers` (Rust), whose BPE is this algorithm, when the
vocabulary is one it accepts: every merge's two parts and their concatenation are tokens, and
every byte has its token. Otherwise (hand-made or damaged vocabularies) `merge_word`, a plain
transcription of llama.cpp's loop, does it.
"""
from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Sequence

import numpy as np

from ..errors import TokenizerError
from ..gguf_io import StringArray
from .unicode_split import Splitter
from .vocab import show

SPACE = "\u2581"
CACHE_WORDS = 200_000  # distinct words whose ids are kept between calls


def _gpt2_bytes() -> list[str]:
    """GPT-2's byte -> character map: printable latin-1 bytes are themselves, the other 68
    take the code points 256, 257, ... in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


BYTE_CHARS = _gpt2_bytes()  # byte -> its character
CHAR_BYTES = {c: b for b, c in enumerate(BYTE_CHARS)}  # character -> its byte
_BYTE_TABLE = {b: c for b, c in enumerate(BYTE_CHARS)}


def byte_encode(word: str) -> str:
    """A word as the characters of its UTF-8 bytes (what byte-level tokens are made of)."""
    return word.encode("utf-8").decode("latin-1").translate(_BYTE_TABLE)


@functools.cache
def splitter(exprs: tuple[str, ...]) -> Splitter:
    return Splitter(exprs)


def texts_of(strings: StringArray) -> list[str]:
    """The strings of a StringArray as a list, decoding the bytes once (a per-item decode of
    150,000 non-ASCII texts costs ~3x more). Invalid UTF-8 decodes with surrogateescape."""
    data = strings.data
    b = np.frombuffer(data, np.uint8)
    ends = strings.ends
    starts = ends - strings.lengths()
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        return list(strings)
    lead = (b & 0xC0) != 0x80
    if len(b) and not lead[starts[starts < len(b)]].all():
        return list(strings)  # a text starts inside a character: decode one by one
    chars = np.zeros(len(b) + 1, np.int64)
    np.cumsum(lead, out=chars[1:])
    return [whole[a:e] for a, e in zip(chars[starts].tolist(), chars[ends].tolist())]


def parse_merges(merges, source: str) -> list[tuple[str, str]]:
    """`tokenizer.ggml.merges` as (left, right) pairs in rank order, a repeated pair keeping
    its first rank (llama.cpp's bpe_ranks.emplace). Each merge is "LEFT RIGHT", split at the
    first space after its first character."""
    if isinstance(merges, StringArray):
        items = texts_of(merges)
    elif isinstance(merges, (list, tuple)) and all(isinstance(m, str) for m in merges):
        items = list(merges)
    else:
        raise TokenizerError(f"{source}: tokenizer.ggml.merges must be an array of strings, got {show(merges)}")
    pairs = []
    for i, m in enumerate(items):
        j = m.find(" ", 1)
        if j < 0 or j == len(m) - 1:
            raise TokenizerError(
                f"{source}: tokenizer.ggml.merges[{i}] = {show(m)} is not two tokens separated by a space"
            )
        pairs.append((m[:j], m[j + 1 :]))
    if len(set(pairs)) != len(pairs):
        pairs = list(dict.fromkeys(pairs))
    return pairs


class BpeEngine:
    """Byte-level (or raw UTF-8) BPE over the vocabulary of a Tokenizer."""

    def __init__(self, tok, merges: "Sequence[str] | StringArray | None"):
        self.tok = tok
        pre = tok.pre
        if merges is None:
            if pre.kind != "KIMI_K2":  # llama.cpp: Kimi-K2 files may come without merges
                raise TokenizerError(f"{tok.source}: tokenizer.ggml.merges is missing (a BPE vocabulary needs them)")
            merges = []
        self.pairs = parse_merges(merges, tok.source)
        self.byte_encode = pre.byte_encode
        self.escape = pre.escape_whitespaces
        self.ignore_merges = pre.ignore_merges
        self.newline_words = pre.kind == "GEMMA4"  # llama.cpp: a word of newlines that is a token is that token
        self.split = splitter(pre.regexes).split
        texts = texts_of(tok.tokens)
        self.vocab = dict(zip(texts, range(tok.n_vocab)))  # a repeated text: its last id, as llama.cpp
        self._unsafe = None  # bytes of words HF must not merge (set by _build_hf)
        self._hf = self._build_hf()
        self._ranks = None  # for merge_word, built when needed
        self._cache: dict[str, tuple[int, ...]] = {}  # word -> ids

    # -- the fast path: Hugging Face tokenizers ----------------------------------------------

    def _build_hf(self):
        """HF's BPE over the vocabulary, or None where it would not merge as llama.cpp does."""
        if self.byte_encode:
            # a byte with no token: HF drops its character before merging, llama.cpp keeps it as
            # a symbol that blocks merges across it (and drops it after). Words with such a
            # byte go to merge_word; SmolLM2 lacks 0x04, 0xC0, 0xF5..., for instance.
            missing = bytes(b for b, c in enumerate(BYTE_CHARS) if c not in self.vocab)
            self._unsafe = re.compile(b"[" + b"".join(b"\\x%02x" % b for b in missing) + b"]") if missing else None
        elif not all(f"<0x{b:02X}>" in self.vocab for b in range(256)):
            return None  # raw UTF-8 vocabularies without every byte token: merge_word only
        vocab = self.vocab
        if not all(a in vocab and b in vocab and a + b in vocab for a, b in self.pairs):
            # a merge whose parts or result are not tokens: merge_word handles it (HF errs on
            # some such vocabularies, and panics with a backtrace on stderr on others)
            return None
        try:
            from tokenizers import Tokenizer as HFTokenizer
            from tokenizers import models, pre_tokenizers
        except ImportError:  # pragma: no cover - a declared dependency
            return None
        try:
            bpe = models.BPE(
                vocab=self.vocab, merges=self.pairs, ignore_merges=self.ignore_merges,
                byte_fallback=not self.byte_encode, fuse_unk=False,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - pyo3's PanicException is a BaseException
            return None  # whatever else HF refuses: merge_word handles it
        hf = HFTokenizer(bpe)
        if self.byte_encode:
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return hf

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, frags: list) -> list[int]:
        out: list[int] = []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
            else:
                out.extend(self.encode_text(f))
        return out

    def encode_text(self, text: str) -> list[int]:
        """Ids of one raw fragment (no special tokens in it are parsed). Each distinct word is
        merged once (words repeat: 1 MB of English or code has ~15,000 distinct words in
        ~200,000); the ids of words seen before come from a bounded cache."""
        if self.escape:
            text = text.replace(" ", SPACE)
        words = self.split(text)
        cache = self._cache
        distinct = dict.fromkeys(words)
        if len(cache) + len(distinct) > CACHE_WORDS:
            cache.clear()
        new = [w for w in distinct if w not in cache]
        if new:
            self._merge_words(new)
        out: list[int] = []
        for w in words:
            out += cache[w]
        return out

    def _merge_words(self, words: list[str]):
        """Merge each word and put its ids in the cache."""
        cache, vocab = self._cache, self.vocab
        hf_words = []
        for w in words:
            if self.newline_words and w.strip("\n") == "" and w in vocab:
                cache[w] = (vocab[w],)  # llama.cpp (Gemma 4): a run of newlines that is a token
            elif self._hf is None or (self._unsafe is not None and self._unsafe.search(w.encode("utf-8"))):
                cache[w] = tuple(self._merge_word(w))
            else:
                hf_words.append(w)
        if not hf_words:
            return
        try:
            enc = self._hf.encode(hf_words, is_pretokenized=True, add_special_tokens=False)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - a panic inside HF on a hostile vocabulary
            self._hf = None  # merge_word from now on: slower, never wrong
            for w in hf_words:
                cache[w] = tuple(self._merge_word(w))
            return
        ids, word_ids = enc.ids, enc.word_ids
        start = 0
        for k in range(1, len(ids) + 1):  # a word's ids are consecutive, in word order
            if k == len(ids) or word_ids[k] != word_ids[start]:
                cache[hf_words[word_ids[start]]] = tuple(ids[start:k])
                start = k
        for w in hf_words:  # a word that gave no ids (every byte without a token)
            cache.setdefault(w, ())

    def _merge_word(self, word: str) -> list[int]:
        if self._ranks is None:
            self._ranks = {p: r for r, p in reversed(list(enumerate(self.pairs)))}
        symbols = byte_encode(word) if self.byte_encode else word
        return merge_word(symbols, self._ranks, self.vocab, self.byte_encode,
                          self.ignore_merges, self.newline_words)

    # -- decoding ---------------------------------------------------------------------------

    def normal_piece(self, raw: bytes) -> bytes:
        """A NORMAL token's bytes: SPM-style BPE unescapes ▁; otherwise each character is the
        byte it stands for (llama_decode_text)."""
        if self.escape:
            return raw.replace(SPACE.encode(), b" ")
        return decode_byte_chars(raw)


def decode_byte_chars(raw: bytes) -> bytes:
    """llama.cpp's llama_decode_text: the byte each character of a byte-level token stands
    for; a character outside GPT-2's map becomes "[UNK_BYTE_0x<its UTF-8 hex><the token>]"."""
    text = raw.decode("utf-8", "surrogateescape")
    try:
        return bytes(CHAR_BYTES[c] for c in text)
    except KeyError:
        pass
    out = bytearray()
    for c in _code_points(raw):
        b = CHAR_BYTES.get(c)
        if b is not None:
            out.append(b)
        else:
            out += b"[UNK_BYTE_0x" + c.encode("utf-8", "surrogatepass").hex().encode() + raw + b"]"
    return bytes(out)


def _code_points(raw: bytes) -> list[str]:
    """llama.cpp's unicode_cpts_from_utf8: invalid UTF-8 gives U+FFFD per bad byte."""
    out, i, n = [], 0, len(raw)
    while i < n:
        b = raw[i]
        size = 1 if b < 0x80 else 2 if b >> 5 == 6 else 3 if b >> 4 == 14 else 4 if b >> 3 == 30 else 0
        chunk = raw[i : i + size]
        if size and len(chunk) == size and all(x >> 6 == 2 for x in chunk[1:]):
            try:
                out.append(chunk.decode("utf-8"))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        i += 1
    return out


def merge_word(word: str, ranks: dict[tuple[str, str], int], vocab: dict[str, int], byte_level: bool = True,
               ignore_merges: bool = False, newline_words: bool = False) -> list[int]:
    """llama.cpp's llm_tokenizer_bpe_session::tokenize for one word (already byte-encoded when
    byte_level), transcribed: merge the adjacent pair with the lowest rank (leftmost on a tie)
    until none is left, then look up the symbols; a symbol that is not a token becomes the
    tokens of its bytes, and a byte with no token is dropped."""
    if not word:
        return []
    if (ignore_merges or (newline_words and word.strip("\n") == "")) and word in vocab:
        return [vocab[word]]
    syms = list(word)  # symbol texts; "" once merged into its left neighbour
    prev = list(range(-1, len(syms) - 1))
    nxt = list(range(1, len(syms) + 1))
    nxt[-1] = -1
    heap: list[tuple[int, int, int, str]] = []

    def add(left: int, right: int):
        if left == -1 or right == -1:
            return
        rank = ranks.get((syms[left], syms[right]))
        if rank is not None:
            heapq.heappush(heap, (rank, left, right, syms[left] + syms[right]))

    for i in range(1, len(syms)):
        add(i - 1, i)
    while heap:
        _, left, right, text = heapq.heappop(heap)
        if not syms[left] or not syms[right] or syms[left] + syms[right] != text:
            continue  # outdated
        syms[left], syms[right] = text, ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        add(prev[left], left)
        add(left, nxt[left])
    out: list[int] = []
    for s in syms:
        if not s:
            continue
        tid = vocab.get(s)
        if tid is not None:
            out.append(tid)
            continue
        for b in s.encode("utf-8", "surrogateescape"):
            key = bytes((b,)).decode("utf-8", "surrogateescape") if byte_level else f"<0x{b:02X}>"
            tid = vocab.get(key)
            if tid is not None:
                out.append(tid)
    return out
