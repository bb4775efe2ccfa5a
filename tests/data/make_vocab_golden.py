"""Write tests/data/golden/vocab/llama_cpp_vocab.json.gz: what llama.cpp itself does with each
vocabulary of its test suites (and SmolLM2's), beyond the suites' plain ids: BOS/EOS and
their add flags, the end-of-generation set, ids with and without BOS and special-token
parsing (chat-template texts made of each vocabulary's own special tokens), detokenized
text, token pieces, and the plain ids of random texts (random_texts(): pieces of every
character class the pre-tokenizers tell apart).

    LLAMA_CPP_PY=/path/to/llama_cpp_python-0.3.36 python tests/data/make_vocab_golden.py \\
        MODELS_DIR [SmolLM2-135M-Instruct.Q4_1.gguf]

MODELS_DIR holds ggml-vocab-*.gguf (llama.cpp's models/ folder; the tests take the same files
out of the llama-cpp-python 0.3.36 sdist). llama.cpp is reached through llama-cpp-python's
ctypes bindings (benchmarks/llama_cpp_vocab.py) with its libllama built from the same sdist.
Bytes that are not UTF-8 are stored with surrogateescape (json writes them as \\udcXX).
"""
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from llama_cpp_vocab import LlamaVocab  # noqa: E402

OUT = ROOT / "tests" / "data" / "golden" / "vocab" / "llama_cpp_vocab.json.gz"
VOCABS = ("llama-spm", "phi-3", "baichuan", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4",
          "gpt-2", "llama-bpe", "mpt", "qwen2", "qwen35", "refact", "starcoder", "aquila", "gpt-neox")
TEXTS = (
    "Hello world", " Hello world", "Hello  world   !", "\n\n\nabc\r\n\tdef ", "don't stop: I'm sure we'll", "HELLO'S 'tis",
    "1234567890 3.14159 1,000,000", "🦙 llama 😶‍🌫️ ✅", "我想在日本語のテキスト 한국어", "éèê ñ ß ﬁ", "   ", "\t",
    "a\u00a0b\u2003c", "<s> </s> <unk> <pad>", "x = [1, 2]; // comment\nif (a != b) { return; }", "Is it ? yes , no . ok !",
    "it 's he 're ' quoted ' 'll",
)
# pieces of random texts: every class the pre-tokenizers tell apart (letters of several
# scripts, marks, digits of several systems, punctuation, symbols, all kinds of whitespace,
# contractions in both cases, control characters, emoji)
ATOMS = (
    "a", "Z", "hello", " world", "THE", "'s", "'S", "'ll", "'LL", "'re", "'t", "'", "\"", "é", "e\u0301", "ß", "ǅ",
    "Ωμέγα", "привет", "我想", "日本語", "カタカナ", "ひらがな", "한국어", "ㄱ", "مرحبا", "नमस्ते", "ไทย", "ᄀ",
    "1", "12", "123", "1234", "12345", "٣٤", "１２３", "½", "²", "Ⅻ", ".", ",", "!", "?", "...", "-", "_", "(", ")",
    "[", "]", "{", "}", "/", "\\", "#", "$", "%", "+", "<", "=", ">", "^", "`", "|", "~", "€", "©", "°", "…", "—",
    "«", "»", "“", "”", "。", "，", "、", "！", "：", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", "\x0b",
    "\x0c", "\x85", "\u00a0", "\u2003", "\u3000", "\u2028", "\x00", "\x1b", "🦙", "😶‍🌫️", "👍🏽", "✅", "\u200d",
    "\ufeff", "<|im_start|>", "<s>", "▁", "Ġ", "ĊĊ",
)
N_RANDOM = 60


def random_texts(seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 16))) for _ in range(N_RANDOM)]


ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED = 1 << 1, 1 << 3, 1 << 4  # llama_token_attr


def text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def specials(v: LlamaVocab) -> list[int]:
    L = v.L
    out = []
    for i in range(v.n_vocab):
        if L.llama_vocab_get_attr(v.vocab, i) & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            out.append(i)
    return out


def texts_for(v: LlamaVocab, special: list[int]) -> list[str]:
    """The shared texts, and chat-like texts made of this vocabulary's own special tokens."""
    names = [text(v.L.llama_vocab_get_text(v.vocab, i)) for i in special[:400]]
    names = [n for n in names if n and "\n" not in n][:12]
    out = list(TEXTS)
    if names:
        a, b = names[0], names[min(1, len(names) - 1)]
        out.append(f"{a}user\nWhat is 2+2?{b}\n{a}assistant\n")
        out.append(" ".join(names))
        out.append("".join(names))
        out.append("".join(f"  {n}  x{k}" for k, n in enumerate(names)))
    for s in ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
              "<|endoftext|><|im_start|> <|im_end|>"):
        if s not in out:
            out.append(s)
    return out


def record(path: Path) -> dict:
    v = LlamaVocab(path)
    try:
        special = specials(v)
        n = v.n_vocab
        step = max(1, n // 100)
        piece_ids = sorted(set(special[:100]) | set(range(0, n, step)) | set(range(min(n, 280))))
        cases = []
        for t in texts_for(v, special):
            case = {"text": t}
            for add in (False, True):
                for parse in (False, True):
                    case[f"ids_add{int(add)}_parse{int(parse)}"] = v.tokenize(t, add, parse)
            ids = case["ids_add1_parse1"]
            case["detok"] = text(v.detokenize(ids, False, False))
            case["detok_special"] = text(v.detokenize(ids, False, True))
            cases.append(case)
        rand = [v.tokenize(t, False, False) for t in random_texts()]
        return {
            "n_vocab": n,
            "random": rand,
            "add_bos": v.add_bos,
            "add_eos": v.add_eos,
            "ids": v.special_ids(),
            "eog": sorted(v.eog_ids()),
            "cases": cases,
            "pieces": {str(i): [text(v.piece(i, False)), text(v.piece(i, True))] for i in piece_ids},
        }
    finally:
        v.close()


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    models = Path(sys.argv[1])
    vocabs = {name: record(models / f"ggml-vocab-{name}.gguf") for name in VOCABS}
    if len(sys.argv) == 3:
        vocabs["SmolLM2-135M-Instruct"] = record(Path(sys.argv[2]))
    out = {"random_texts": random_texts(), "vocabs": vocabs}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    raw = (json.dumps(out, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
    OUT.write_bytes(gzip.compress(raw, mtime=0))
    print(f"{OUT}: {len(vocabs)} vocabularies, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
