"""Byte-level BPE (and everything around the merges) against llama.cpp's own outputs:
tests/data/golden/vocab/llama_cpp_vocab.json.gz (tests/data/make_vocab_golden.py) holds, for
every vocabulary of llama.cpp's suites and SmolLM2's, what llama.cpp gives for BOS/EOS and
their add flags, the end-of-generation set, ids with/without BOS and special-token parsing,
detokenized text, pieces, and the ids of random texts. Then the fast path (HF tokenizers)
against merge_word, the transcription of llama.cpp's loop; streaming; hostile vocabularies."""
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from tinyllm.errors import TokenizerError
from tinyllm.gguf_io import write_gguf
from tinyllm.tokenizer import Tokenizer, TokenType
from tinyllm.tokenizer.bpe import BYTE_CHARS, byte_encode, merge_word
from tinyllm.tokenizer.special_tokens import DETECTED

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "vocab" / "llama_cpp_vocab.json.gz"
SMOLLM2 = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def golden_vocab() -> dict:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")  # as the golden file stores bytes


def _check_against_llama_cpp(tok: Tokenizer, g: dict, random_texts: list[str]):
    assert tok.n_vocab == g["n_vocab"]
    assert (tok.add_bos, tok.add_eos) == (g["add_bos"], g["add_eos"])
    mine = {"bos": tok.bos_id, "eos": tok.eos_id, "eot": tok.eot_id, "pad": tok.pad_id}
    mine.update({k: tok.fim_ids.get(k) for k in ("fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")})
    for key, want in g["ids"].items():
        if key == "eot" and mine[key] != want:
            # several EOT texts in one vocabulary (SmolLM2: <|endoftext|> and <|im_end|>):
            # llama.cpp takes the first its hash map yields, tinyllm the first in its list
            texts = {tok.tokens[mine[key]], tok.tokens[want]}
            assert texts <= set(DETECTED["eot"]), (mine[key], want)
            continue
        assert mine[key] == want, key
    assert tok.eog_ids == set(g["eog"])
    failed = []
    for case in g["cases"]:
        text = case["text"]
        for add in (0, 1):
            for parse in (0, 1):
                got = tok.encode(text, add_bos=bool(add), parse_special=bool(parse))
                if got != case[f"ids_add{add}_parse{parse}"]:
                    failed.append(f"encode({text!r}, add_bos={add}, parse_special={parse}): {got[:12]}")
        ids = case["ids_add1_parse1"]
        if _text(tok.decode_bytes(ids)) != case["detok"]:
            failed.append(f"decode({text!r})")
        if _text(tok.decode_bytes(ids, special=True)) != case["detok_special"]:
            failed.append(f"decode({text!r}, special=True)")
    for i, (plain, special) in g["pieces"].items():
        if [_text(tok.piece_bytes(int(i))), _text(tok.piece_bytes(int(i), special=True))] != [plain, special]:
            failed.append(f"piece {i}")
    for text, want in zip(random_texts, g["random"], strict=True):
        if tok.encode(text, add_bos=False, parse_special=False) != want:
            failed.append(f"random text {text!r}")
    assert not failed, f"{len(failed)} differences from llama.cpp:\n" + "\n".join(failed[:10])


VOCABS = ("llama-spm", "phi-3", "baichuan", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4",
          "gpt-2", "llama-bpe", "mpt", "qwen2", "qwen35", "refact", "starcoder", "aquila", "gpt-neox")


def test_golden_file_has_every_vocab(golden_vocab):
    assert set(golden_vocab["vocabs"]) == set(VOCABS) | {SMOLLM2}
    assert len(golden_vocab["random_texts"]) == 60


@pytest.mark.parametrize("name", VOCABS)
def test_matches_llama_cpp(llama_cpp_files, golden_vocab, name):
    tok = Tokenizer.from_gguf(llama_cpp_files / "models" / f"ggml-vocab-{name}.gguf")
    _check_against_llama_cpp(tok, golden_vocab["vocabs"][name], golden_vocab["random_texts"])


@pytest.fixture(scope="module")
def smollm2_tok():
    from tinyllm.default_model import default_chat_model_path

    return Tokenizer.from_gguf(default_chat_model_path())


@pytest.mark.slow
def test_smollm2_matches_llama_cpp(smollm2_tok, golden_vocab):
    """The default chat model's vocabulary (gpt2, pre-tokenizer smollm; some bytes have no token)."""
    tok = smollm2_tok
    assert (tok.model, tok.pre.name, tok.describe()) == ("gpt2", "smollm", "gpt2 (byte-level BPE), pre-tokenizer smollm (SMOLLM)")
    assert tok._engine._unsafe is not None  # the words HF must not merge exist here
    _check_against_llama_cpp(tok, golden_vocab["vocabs"][SMOLLM2], golden_vocab["random_texts"])


@pytest.mark.slow
def test_smollm2_chatml(smollm2_tok):
    tok = smollm2_tok
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    assert ids[0] == im_start and ids.count(im_start) == 2 and ids.count(im_end) == 1
    assert tok.is_eog(im_end) and tok.decode(ids) == "user\nHi\nassistant\n"


# -- the fast path against llama.cpp's loop ---------------------------------------------------


@pytest.mark.parametrize("name", ["gpt-2", "qwen2", "llama-bpe", "gemma-4"])
def test_fast_path_equals_merge_word(llama_cpp_files, name):
    """HF's BPE over distinct words, the word cache and merge_word (llama.cpp's loop
    transcribed) give the same ids, word by word, on random words."""
    tok = Tokenizer.from_gguf(llama_cpp_files / "models" / f"ggml-vocab-{name}.gguf")
    engine = tok._engine
    assert engine._hf is not None
    rng = random.Random(3)
    chars = "abcdefghijklmnopqrstuvwxyzABCDE  éß我想🦙\n\t'.,0123456789"
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    for text in texts:
        fast = engine.encode_text(text)
        slow = [i for w in engine.split(text.replace(" ", "\u2581") if engine.escape else text)
                for i in engine._merge_word(w)]
        assert fast == slow, text
    assert engine.encode_text(texts[0]) == engine.encode_text(texts[0])  # from the cache


def _byte_vocab(missing: str = "", merges=("h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d")):
    """A byte-level vocabulary: every byte character but `missing`, then the merges' results."""
    tokens = [c for c in BYTE_CHARS if c not in missing]
    for m in merges:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += ["<|endoftext|>", "<|im_start|>"]
    types = [TokenType.NORMAL] * (len(tokens) - 2) + [TokenType.CONTROL] * 2
    return {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.bos_token_id": len(tokens) - 2,
        "tokenizer.ggml.eos_token_id": len(tokens) - 2,
    }


def test_words_with_a_byte_without_token():
    """A byte with no token (SmolLM2 has none for 0x04, 0xC0, ...) stays a symbol that blocks
    merges across it, then is dropped, as in llama.cpp; HF would merge across it."""
    md = _byte_vocab(missing=BYTE_CHARS[0x04] + BYTE_CHARS[0xC3])
    tok = Tokenizer.from_metadata(md, "v.gguf")
    engine = tok._engine
    assert engine._hf is not None and engine._unsafe is not None
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(md["tokenizer.ggml.merges"])}
    vocab = {t: i for i, t in enumerate(md["tokenizer.ggml.tokens"])}
    he, hello = tok.token_to_id("he"), tok.token_to_id("hello")
    assert tok.encode("hello", add_bos=False) == [hello]
    assert tok.encode("h\x04ello", add_bos=False) == [tok.token_to_id("h"), tok.token_to_id("e"), tok.token_to_id("ll"),
                                                      tok.token_to_id("o")]
    # é is C3 A9: its first byte has no token and is dropped, its second stays
    assert tok.encode("hé", add_bos=False) == [tok.token_to_id("h"), tok.token_to_id(BYTE_CHARS[0xA9])]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(["h", "e", "l", "o", " ", "w", "r", "d", "\x04", "é", "x"]) for _ in range(rng.randint(1, 20)))
        want = [i for w in engine.split(text) for i in merge_word(byte_encode(w), ranks, vocab)]
        assert tok.encode(text, add_bos=False) == want, text
    assert he not in tok.encode("h\x04e", add_bos=False)


def test_merges_whose_result_is_not_a_token():
    """llama.cpp merges by rank whatever the result; a symbol that is not a token becomes the
    tokens of its bytes. HF refuses such merges, so merge_word does all the work."""
    md = _byte_vocab(merges=("h e", "l l"))
    md["tokenizer.ggml.tokens"] = [t for t in md["tokenizer.ggml.tokens"] if t != "ll"]
    md["tokenizer.ggml.token_type"] = md["tokenizer.ggml.token_type"][:-1]
    md["tokenizer.ggml.bos_token_id"] -= 1
    md["tokenizer.ggml.eos_token_id"] -= 1
    tok = Tokenizer.from_metadata(md, "v.gguf")
    assert tok._engine._hf is None
    he, l_ = tok.token_to_id("he"), tok.token_to_id("l")
    assert tok.encode("hell", add_bos=False) == [he, l_, l_]


def test_bpe_pieces_and_stream():
    tok = Tokenizer.from_metadata(_byte_vocab(), "v.gguf")
    world = tok.token_to_id("Ġworld")
    assert tok.piece_bytes(world) == b" world" and tok.piece(world) == " world"
    ids = tok.encode("hello world 🦙 我", add_bos=False)
    assert tok.decode(ids) == "hello world 🦙 我"
    d = tok.stream()
    out = [d.push(i) for i in ids]
    assert "".join(out) + d.flush() == "hello world 🦙 我"
    assert "" in out and all("\ufffd" not in p for p in out)  # bytes of 🦙 waited for each other
    eot = tok.token_to_id("<|endoftext|>")
    assert tok.piece(eot) == "" and tok.piece(eot, special=True) == "<|endoftext|>"
    assert tok.encode("<|endoftext|>hello", add_bos=False) == [eot, tok.token_to_id("hello")]
    assert eot not in tok.encode("<|endoftext|>", add_bos=False, parse_special=False)


def test_bpe_add_bos_and_eos_from_metadata():
    md = _byte_vocab()
    assert Tokenizer.from_metadata(md, "v").add_bos is False  # gpt-2: llama.cpp's default
    md["tokenizer.ggml.pre"] = "llama-bpe"
    assert Tokenizer.from_metadata(md, "v").add_bos is True  # llama3 pre-tokenizers add BOS
    md["tokenizer.ggml.add_bos_token"] = False
    md["tokenizer.ggml.add_eos_token"] = True
    tok = Tokenizer.from_metadata(md, "v")
    hello, eos = tok.token_to_id("hello"), tok.eos_id
    assert tok.encode("hello") == [hello, eos] and tok.encode("hello", add_bos=False) == [hello]
    del md["tokenizer.ggml.bos_token_id"]
    md["tokenizer.ggml.add_bos_token"] = True
    assert Tokenizer.from_metadata(md, "v").bos_id == 11  # llama.cpp's BPE default id


# -- hostile vocabularies: one line naming the key and the value -------------------------------

BAD = [
    ({"tokenizer.ggml.tokens": ["<0x\udcff>"] + list(BYTE_CHARS[1:]) + ["he"],
      "tokenizer.ggml.token_type": np.array([6] + [1] * 256, np.int32),
      "tokenizer.ggml.merges": ["h e"], "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 1},
     r"tokenizer.ggml.tokens\[0\] = '<0x\\udcff>' has token type BYTE but is not a byte token <0xXX>"),
    ({"tokenizer.ggml.tokens": np.arange(5, dtype=np.int32)},
     r"tokenizer.ggml.tokens must be an array of strings, got an array of shape \(5,\) and type int32"),
    ({"tokenizer.ggml.tokens": "abc"}, r"tokenizer.ggml.tokens must be an array of strings, got 'abc'"),
    ({"tokenizer.ggml.token_type": np.zeros(3, np.int32)}, r"\d+ tokens but 3 token types \(tokenizer.ggml.token_type\)"),
    ({"tokenizer.ggml.token_type": ["x", "y"]}, r"tokenizer.ggml.token_type must be an array of numbers, got an array of 2 strings"),
    ({"tokenizer.ggml.token_type": "NORMAL"}, r"tokenizer.ggml.token_type must be an array of numbers, got 'NORMAL'"),
    ({"tokenizer.ggml.scores": ["a"]}, r"tokenizer.ggml.scores must be an array of numbers, got an array of 1 strings"),
    ({"tokenizer.ggml.merges": ["h e", "he"]}, r"tokenizer.ggml.merges\[1\] = 'he' is not two tokens separated by a space"),
    ({"tokenizer.ggml.merges": ["h\x1b[31m"]}, r"tokenizer.ggml.merges\[0\] = 'h\\x1b\[31m' is not two tokens"),
    ({"tokenizer.ggml.merges": np.arange(3, dtype=np.int32)}, r"tokenizer.ggml.merges must be an array of strings, got an array"),
    ({"tokenizer.ggml.merges": "h e"}, r"tokenizer.ggml.merges must be an array of strings, got 'h e'"),
    ({"tokenizer.ggml.merges": None}, r"tokenizer.ggml.merges is missing \(a BPE vocabulary needs them\)"),
    ({"tokenizer.ggml.bos_token_id": 10**6}, r"tokenizer.ggml.bos_token_id 1000000 is out of range \(vocabulary has \d+ tokens\)"),
    ({"tokenizer.ggml.eos_token_id": 999}, r"tokenizer.ggml.eos_token_id 999 is out of range"),
    ({"tokenizer.ggml.eot_token_id": 300}, r"tokenizer.ggml.eot_token_id 300 is out of range"),
    ({"tokenizer.ggml.padding_token_id": 1.5}, r"tokenizer.ggml.padding_token_id must be an integer, got 1.5"),
    ({"tokenizer.ggml.fim_pre_token_id": 70000}, r"tokenizer.ggml.fim_pre_token_id 70000 is out of range"),
    ({"tokenizer.ggml.prefix_token_id": "x" * 100}, r"tokenizer.ggml.prefix_token_id must be an integer, got 'xxxx.*\.\.\.$"),
    ({"tokenizer.ggml.add_bos_token": 1}, r"tokenizer.ggml.add_bos_token must be true or false, got 1"),
    ({"tokenizer.ggml.pre": 7}, r"tokenizer.ggml.pre must be a string, got 7"),
    ({"tokenizer.ggml.pre": "llama-bpe\n\x1b[0m" * 20}, r"tokenizer.ggml.pre = 'llama-bpe\\n\\x1b\[0m.*\.\.\. is not a pre-tokenizer llama.cpp knows"),
    ({"tokenizer.ggml.model": "t5"}, r"tokenizer model 't5' \(Unigram\) is not supported \(supported: llama \(SPM\), gpt2"),
    ({"tokenizer.ggml.model": "x\n" * 40}, r"tokenizer model 'x\\nx\\n.*\.\.\. is not supported"),
]


@pytest.mark.parametrize("change, match", BAD)
def test_hostile_vocabularies(tmp_path, change, match):
    md = _byte_vocab()
    for k, v in change.items():
        if v is None:
            del md[k]
        else:
            md[k] = v
    path = tmp_path / "bad.gguf"
    write_gguf(path, md, [])
    with pytest.raises(TokenizerError, match=match) as e:
        Tokenizer.from_gguf(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and "\x1b" not in msg and len(msg) < len(str(path)) + 250
