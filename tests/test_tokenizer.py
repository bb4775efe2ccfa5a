"""The SPM tokenizer against llama.cpp: the golden ids of the real Gemma vocabulary, and a plain
Python transcription of llama.cpp's SPM tokenizer (architectures.md §4.2, `llm_tokenizer_spm_session`)
as the oracle on random strings, for Gemma and for a small vocabulary built here."""
import heapq
import json
import random

import numpy as np
import pytest

from tinyllm.errors import TokenizerError, UsageError
from tinyllm.gguf_io import GGUFFile, write_gguf
from tinyllm.tokenizer import StreamDecoder, Tokenizer, TokenType

# -- the oracle: llama.cpp's tokenize(), transcribed ------------------------------------------


def _utf8_len(lead: int) -> int:
    return (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)[lead >> 4]


def _spm_merge(text: bytes, vocab: dict[bytes, int], scores) -> list[int]:
    """§4.2 C: merge adjacent symbols whose bytes are a vocabulary string, best score first
    (ties: leftmost), then emit ids, with <0xXX> byte tokens for what is left."""
    syms = []  # [start, n, prev, next]
    off = 0
    while off < len(text):
        n = min(_utf8_len(text[off]), len(text) - off)
        syms.append([off, n, len(syms) - 1, len(syms) + 1])
        off += n
    if syms:
        syms[-1][3] = -1
    heap = []

    def add(left, right):
        if left == -1 or right == -1:
            return
        s = text[syms[left][0] : syms[left][0] + syms[left][1] + syms[right][1]]
        tid = vocab.get(s)
        if tid is not None:
            heapq.heappush(heap, (-float(scores[tid]), left, right, len(s)))

    for i in range(1, len(syms)):
        add(i - 1, i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        a, b = syms[left], syms[right]
        if a[1] == 0 or b[1] == 0 or a[1] + b[1] != size:
            continue  # stale
        a[1] += b[1]
        b[1] = 0
        a[3] = b[3]
        if b[3] >= 0:
            syms[b[3]][2] = left
        add(a[2], left)
        add(left, a[3])
    out = []
    i = 0 if syms else -1
    while i != -1:
        piece = text[syms[i][0] : syms[i][0] + syms[i][1]]
        if piece in vocab:
            out.append(vocab[piece])
        else:
            out.extend(vocab.get(b"<0x%02X>" % c, vocab.get(bytes([c]))) for c in piece)
        i = syms[i][3]
    return out


CONTROL, UNKNOWN, USER_DEFINED = int(TokenType.CONTROL), int(TokenType.UNKNOWN), int(TokenType.USER_DEFINED)


class Oracle:
    """llama.cpp tokenize(text, add_special, parse_special) over a vocabulary whose token
    types already carry llama.cpp's CONTROL overrides (taken from the Tokenizer)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.vocab = {t.encode(): i for i, t in enumerate(tok.tokens)}
        self.types = tok.types.tolist()
        special = [i for i, t in enumerate(self.types) if t in (CONTROL, UNKNOWN, USER_DEFINED)]
        self.special = sorted(special, key=lambda i: -len(tok.tokens[i].encode()))  # stable: id order

    def __call__(self, text: str, add_special=True, parse_special=True) -> list[int]:
        tok = self.tok
        frags = [text] if text else []
        for tid in self.special:
            needle, new = tok.tokens[tid], []
            if needle not in text:
                continue  # a shortcut only: fragments are pieces of text
            if not parse_special and self.types[tid] in (CONTROL, UNKNOWN):
                continue
            for f in frags:
                if isinstance(f, int):
                    new.append(f)
                    continue
                start = 0
                while (j := f.find(needle, start)) >= 0:
                    if j > start:
                        new.append(f[start:j])
                    new.append(tid)
                    start = j + len(needle)
                if start < len(f):
                    new.append(f[start:])
            frags = new
        out = [tok.bos_id] if add_special and tok.add_bos else []
        prev_special = True
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                prev_special = True
            else:
                s = (" " if tok.add_space_prefix and prev_special else "") + f
                out += _spm_merge(s.replace(" ", "\u2581").encode(), self.vocab, tok.scores)
                prev_special = False
        if add_special and tok.add_eos:
            out.append(tok.eos_id)
        return out


ATOMS = [
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u2581", "\u2581\u2581", " \u2581", "\x00",
    "hello", "Hello", " world", "world", "held", "low", "的", "我想", "🦙", "😶‍🌫️", "✅", "é", "e\u0301",
    "<s>", "</s>", "<eos>", "<bos>", "<unk>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<0x41>",
    "<h1>", "<unused5>", "[multimodal]", "123", "3333", "«»", "—", "ing", " the", "<", ">",
]


def _random_strings(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 12))) for _ in range(n)]


# -- a small SPM vocabulary, written as a GGUF here -------------------------------------------

MERGES = ["he", "ll", "llo", "hello", "▁hello", "or", "wor", "ld", "world", "▁world", "▁w", "▁▁", "lo", "▁h"]


def _small_vocab(add_space_prefix=True, model="llama", extra=None):
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    scores = [0.0, 0.0, 0.0]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    scores += [0.0] * 256
    singles = list("▁abcdefghijklmnopqrstuvwxyzHW.,!") + ["é", "的"]
    tokens += singles
    types += [TokenType.NORMAL] * len(singles)
    scores += [-100.0 - i for i in range(len(singles))]
    tokens += MERGES
    types += [TokenType.NORMAL] * len(MERGES)
    scores += [-1.0 - i for i in range(len(MERGES))]
    tokens += ["<start_of_turn>", "<end_of_turn>", "<h1>", "  ", "<unused0>"]
    types += [TokenType.CONTROL, TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.USER_DEFINED, TokenType.CONTROL]
    scores += [0.0] * 5
    md = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": model,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": add_space_prefix,
    }
    md.update(extra or {})
    return md


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "small.gguf"
    write_gguf(path, _small_vocab(), [])
    return Tokenizer.from_gguf(GGUFFile(path))


@pytest.fixture(scope="module")
def small_tok_nospace():
    md = _small_vocab(add_space_prefix=False)
    return Tokenizer(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.scores"], md["tokenizer.ggml.token_type"],
                     bos_id=1, eos_id=2, unk_id=0, add_space_prefix=False)


def test_small_vocab_basics(small_tok):
    t = small_tok
    assert t.n_vocab == 259 + 34 + len(MERGES) + 5
    assert (t.bos_id, t.eos_id, t.unk_id, t.add_bos, t.add_eos, t.add_space_prefix) == (1, 2, 0, True, False, True)
    eot = t.token_to_id("<end_of_turn>")
    assert t.eot_id == eot and t.eog_ids == {2, eot}  # </s> is EOS; <end_of_turn> found by text
    hello = t.token_to_id("▁hello")
    assert t.encode("hello") == [1, hello]
    assert t.encode("hello", add_bos=False) == [hello]
    assert t.encode("hello world", add_bos=False) == [hello, t.token_to_id("▁world")]
    assert t.encode("") == [1] and t.encode("", add_bos=False) == []


@pytest.mark.parametrize("which", ["space_prefix", "no_space_prefix"])
def test_small_vocab_matches_oracle(small_tok, small_tok_nospace, which):
    tok = small_tok if which == "space_prefix" else small_tok_nospace
    oracle = Oracle(tok)
    for s in _random_strings(300, seed=1):
        for add_special in (True, False):
            for parse_special in (True, False):
                want = oracle(s, add_special, parse_special)
                assert tok.encode(s, add_special, parse_special) == want, (s, add_special, parse_special)


def test_special_tokens(small_tok):
    t = small_tok
    sot, eot, h1 = (t.token_to_id(x) for x in ("<start_of_turn>", "<end_of_turn>", "<h1>"))
    ids = t.encode("<start_of_turn>hello<end_of_turn>")
    # a space is prefixed after every special token (add_space_prefix), as llama.cpp does
    assert ids == [1, sot, t.token_to_id("▁hello"), eot]
    plain = t.encode("<start_of_turn>", parse_special=False)
    assert sot not in plain and len(plain) > 3
    # user-defined tokens are split out even without parse_special
    assert h1 in t.encode("a<h1>b", parse_special=False)
    assert t.encode("  ", add_bos=False) == [t.token_to_id("  ")]
    assert t.encode("<s>hello", parse_special=True)[:2] == [1, 1]  # double BOS, as llama.cpp


def test_add_eos_and_no_bos(tmp_path):
    path = tmp_path / "v.gguf"
    write_gguf(path, _small_vocab(extra={"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": True}), [])
    t = Tokenizer.from_gguf(path)
    hello = t.token_to_id("▁hello")
    assert t.encode("hello") == [hello, 2]
    assert t.encode("hello", add_bos=False) == [hello]


def test_explicit_eot_and_forced_control(tmp_path):
    md = _small_vocab(extra={"tokenizer.ggml.eot_token_id": 300})
    md["tokenizer.ggml.tokens"] = md["tokenizer.ggml.tokens"][:-1] + ["<|im_end|>"]
    md["tokenizer.ggml.token_type"][-1] = TokenType.NORMAL
    path = tmp_path / "v.gguf"
    write_gguf(path, md, [])
    t = Tokenizer.from_gguf(path)
    im_end = t.n_vocab - 1
    assert t.eot_id == 300
    assert t.eog_ids == {2, 300, im_end, t.token_to_id("<end_of_turn>")}
    assert t.types[im_end] == TokenType.CONTROL  # an EOG text is forced CONTROL, as llama.cpp
    assert t.piece(im_end) == "" and t.piece(im_end, special=True) == "<|im_end|>"


def test_round_trip(small_tok, small_tok_nospace):
    for s in ["hello world", "héllo 的 我想 🦙!", " x\tand\ttabs\n", "x" * 50, "\x00"]:
        assert small_tok.decode(small_tok.encode(s, add_bos=False)) == s
    for s in ["hello world", "héllo 的 我想 🦙!", "  two  spaces\tand\ttabs\n", "<h1>hello", "<end_of_turn>x"]:
        assert small_tok_nospace.decode(small_tok_nospace.encode(s), special=True) == "<s>" + s
    # with add_space_prefix, llama.cpp prefixes a space after every special token too
    # (user-defined "  " included), so such text does not come back unchanged
    assert small_tok.decode(small_tok.encode("a  two", add_bos=False)) == "a   two"


def test_pieces(small_tok):
    t = small_tok
    assert t.piece(t.token_to_id("▁hello")) == " hello"
    assert t.piece_bytes(3 + 0xE2) == b"\xe2"  # <0xE2>
    assert t.piece(3 + 0x41) == "A"
    assert t.piece(1) == "" and t.piece(1, special=True) == "<s>"
    assert t.piece(0) == "" and t.piece(0, special=True) == "<unk>"
    assert t.piece(t.token_to_id("  ")) == "  "  # user-defined: verbatim
    # detokenize: the first piece's prefixed space is removed, unless BOS comes first
    ids = t.encode("hello world", add_bos=False)
    assert t.decode(ids) == "hello world"
    assert t.decode([1, *ids]) == " hello world"
    assert t.decode([1, *ids], special=True) == "<s> hello world"


def test_stream_decoder_never_splits_characters(small_tok):
    t = small_tok
    for text in ["我想🦙", "a😶‍🌫️b", "ü的✅"]:
        ids = t.encode(text, add_bos=False)
        assert len(ids) > len(text)  # byte fallback: several tokens per character
        d = StreamDecoder(t)
        out = [d.push(i) for i in ids]
        assert "".join(out) + d.flush() == " " + text  # the encoder's space prefix; a stream keeps it
        assert all("\ufffd" not in piece for piece in out)
        assert "" in out  # some pushes waited for the rest of a character
    d = t.stream()
    assert d.push(3 + 0xF0) == "" and d.push(3 + 0x9F) == ""
    assert d.flush() == "\ufffd"  # an unfinished character at the end
    assert d.push(3 + 0xFF) == "\ufffd" and d.push(3 + 0x41) == "A"  # invalid byte: no stall


def test_sentencepiece_sees_the_vocabulary(small_tok):
    sp, t = small_tok._engine._sp, small_tok
    assert sp.get_piece_size() == t.n_vocab
    for i in range(t.n_vocab):
        assert sp.id_to_piece(i) == t.tokens[i]
        assert sp.get_score(i) == pytest.approx(float(t.scores[i]))
        assert sp.is_byte(i) == (t.types[i] == TokenType.BYTE)
        assert sp.is_unknown(i) == (i == t.unk_id)
        assert sp.is_control(i) == (t.types[i] == TokenType.CONTROL)


def test_token_to_id(small_tok):
    t = small_tok
    want = {text: i for i, text in enumerate(t.tokens)}
    for text in ["<unk>", "<s>", "<0x00>", "<0xFF>", "▁", "é", "的", "▁hello", "  ", "<h1>", "<unused0>"]:
        assert t.token_to_id(text) == want[text]
    assert all(t.token_to_id(x) is None for x in ["", "zz", "<0x100>", "▁hellO", "<h2>"])


def test_duplicate_texts_map_to_the_last_id():
    """llama.cpp's token_to_id keeps the last id of a repeated text; sentencepiece refuses
    repeats, so the earlier copies are hidden from it."""
    tokens = ["<unk>", "a", "b", "a", "ab", "c", "ab"]
    t = Tokenizer(tokens, types=[2, 1, 1, 1, 1, 1, 1], bos_id=None, eos_id=None, add_space_prefix=False)
    assert t.token_to_id("a") == 3 and t.token_to_id("ab") == 6
    oracle = Oracle(t)
    for s in ["a", "ab", "abcab", "ba", "cab"]:
        assert t.encode(s, add_bos=False) == oracle(s, False), s
    assert t.decode([1, 3, 4]) == "aaab"  # every copy still decodes


def test_empty_token_text_is_renamed():
    t = Tokenizer(["<unk>", "", "a"], types=[2, 1, 1], bos_id=None, eos_id=None, unk_id=0, add_space_prefix=False)
    assert t.tokens[1] == "[EMPTY_1]"
    assert t.encode("a", add_bos=False) == [2]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tokenizer.ggml.model": "gpt2"}, r"tokenizer.ggml.merges is missing \(a BPE vocabulary needs them\)"),
        ({"tokenizer.ggml.model": "rwkv"}, r"tokenizer model 'rwkv' \(RWKV\) is not supported \(supported: llama \(SPM\), gpt2"),
        ({"tokenizer.ggml.model": None}, r"no tokenizer \(tokenizer.ggml.model is missing\)"),
        ({"tokenizer.ggml.tokens": None}, r"tokenizer.ggml.tokens is missing"),
        ({"tokenizer.ggml.scores": np.zeros(5, np.float32)}, r"tokens but 5 scores"),
        ({"tokenizer.ggml.bos_token_id": 100000}, r"bos_token_id 100000 is out of range \(vocabulary has \d+ tokens\)"),
        ({"tokenizer.ggml.unknown_token_id": 999999}, r"unknown_token_id 999999 is out of range"),
        ({"tokenizer.ggml.eos_token_id": "x"}, r"eos_token_id must be an integer, got 'x'"),
    ],
)
def test_bad_vocabularies(tmp_path, change, match):
    md = _small_vocab()
    for k, v in change.items():
        if v is None:
            del md[k]
        else:
            md[k] = v
    path = tmp_path / "bad.gguf"
    write_gguf(path, md, [])
    with pytest.raises(TokenizerError, match=match) as e:
        Tokenizer.from_gguf(path)
    assert str(path) in str(e.value)


def test_unknown_token_is_required():
    with pytest.raises(TokenizerError, match=r"unknown_token_id is required"):
        Tokenizer(["a", "b"], unk_id=None, bos_id=None, eos_id=None)


def test_bad_token_type():
    with pytest.raises(TokenizerError, match=r"token 1 \('b'\) has token type 9"):
        Tokenizer(["a", "b"], types=[1, 9], bos_id=None, eos_id=None)


def test_bad_ids_and_inputs(small_tok):
    with pytest.raises(TokenizerError, match=r"token id 99999 is out of range \(vocabulary has \d+ tokens\)"):
        small_tok.decode([1, 99999])
    with pytest.raises(TokenizerError, match=r"token id -1 is out of range"):
        small_tok.piece(-1)
    with pytest.raises(UsageError, match=r"encode\(\) takes a str, got bytes"):
        small_tok.encode(b"hello")
    with pytest.raises(UsageError, match=r"lone surrogate U\+DCFF at index 1"):
        small_tok.encode("a\udcffb")


# -- the real Gemma 3 vocabulary --------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_tok(gemma_path):
    return Tokenizer.from_gguf(GGUFFile(gemma_path))


@pytest.mark.slow
def test_gemma_golden_ids(gemma_tok, golden):
    cases = json.loads((golden / "gemma" / "tokenizer.json").read_text())
    assert len(cases) >= 20
    for case in cases:
        assert gemma_tok.encode(case["text"]) == case["ids"], case["text"]


@pytest.mark.slow
def test_gemma_spec_examples(gemma_tok):
    t = gemma_tok
    assert (t.n_vocab, t.bos_id, t.eos_id, t.unk_id, t.eot_id) == (262144, 2, 1, 3, 106)
    assert (t.add_bos, t.add_eos, t.add_space_prefix) == (True, False, False)
    assert t.eog_ids == {1, 106, 212}
    assert t.encode("Hello world", add_bos=False, parse_special=False) == [9259, 1902]
    assert t.encode(" Hello", add_bos=False) == [26352]
    assert t.encode("  Hello", add_bos=False) == [138, 9259]
    assert t.encode("</s>", add_bos=False, parse_special=False) == [954, 236751, 236813]
    assert t.encode("<start_of_turn>user\nhi<end_of_turn>\n") == [2, 105, 2364, 107, 2202, 106, 107]
    assert t.decode([2, 9259, 1902]) == "Hello world"
    assert t.piece(105) == "" and t.piece(105, special=True) == "<start_of_turn>"
    assert t.piece(248) == "\n" and t.piece(26352) == " Hello"
    for i in random.Random(3).sample(range(t.n_vocab), 300) + [0, 238, 262143]:
        assert t.token_to_id(t.tokens[i]) == i  # Gemma's texts are all distinct


@pytest.mark.slow
def test_gemma_matches_oracle_on_random_strings(gemma_tok):
    oracle = Oracle(gemma_tok)
    for s in _random_strings(400, seed=2):
        for parse_special in (True, False):
            assert gemma_tok.encode(s, True, parse_special) == oracle(s, True, parse_special), (s, parse_special)


@pytest.mark.slow
def test_gemma_round_trip_and_stream(gemma_tok, golden):
    t = gemma_tok
    text = (golden / "gemma" / "apache-2.0.txt").read_text()
    for s in [text, "нещо на Български 😶‍🌫️ 我想在apple工作1314151天～", "\t\n  \n\n x"]:
        ids = t.encode(s)
        assert t.decode(ids) == s
        d = StreamDecoder(t)
        assert "".join(d.push(i) for i in ids) + d.flush() == s
    ids = t.encode(" this is 🦙.cpp", add_bos=False)
    d = StreamDecoder(t)
    assert [d.push(i) for i in ids] == [" this", " is", " ", "", "", "", "🦙", ".", "cpp"]


@pytest.mark.slow
def test_gemma_sentencepiece_sees_the_vocabulary(gemma_tok):
    sp, t = gemma_tok._engine._sp, gemma_tok
    assert sp.get_piece_size() == t.n_vocab
    ids = list(range(0, t.n_vocab, 97)) + [0, 1, 2, 3, 105, 106, 138, 212, 238, 493]
    for i in ids:
        assert sp.id_to_piece(i) == t.tokens[i]
        assert sp.get_score(i) == float(t.scores[i])
        assert sp.is_byte(i) == (t.types[i] == TokenType.BYTE)
        assert sp.is_unknown(i) == (i == 3)
