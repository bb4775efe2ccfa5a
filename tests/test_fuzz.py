"""Hostile and malformed GGUF input (issue #11 part 4): the fixed-seed fuzz sample, and one
test per kind of corruption the first fuzzing run found. Every bad file must give one line of
TinyLLMError naming the file, the key or tensor and the value (quoted short), and nothing
sized from the file may be allocated before it is checked."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fuzz import harness
from fuzz.gguf_mutator import KV, Doc
from fuzz.gguf_mutator import VT
from tinymodels import make_tiny_model
from tinyllm.errors import GGUFError, ModelError, TinyLLMError, TokenizerError, show
from tinyllm.generation import generate
from tinyllm.gguf_io import GGUFFile
from tinyllm.model import load
from tinyllm.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = harness.MAX_MESSAGE


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return Doc.parse(make_tiny_model(tmp_path_factory.mktemp("fuzz-base"), arch="llama"))


def write(tmp_path, doc: Doc, name="bad.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(doc.serialize())
    return p


def run_target(path) -> TinyLLMError:
    """What `info` then `run` do with the file; the error it must end with."""
    with pytest.raises(TinyLLMError) as e:
        harness.target(str(path))
    line = f"tinyllm: error: {e.value}"
    assert "\n" not in line and len(line) <= MAX_LINE, line[:400]
    assert str(path) in line
    return e.value


def set_kv(doc: Doc, key: str, vtype, value, etype=None) -> Doc:
    doc = doc.copy()
    old = doc.find(key)
    if old is not None:
        doc.kvs.remove(old)
    doc.kvs.append(KV(key, vtype, value, etype))
    return doc


# -- the fixed-seed sample -------------------------------------------------------------------

def test_fuzz_sample_has_no_failures():
    res = harness.run(range(500), jobs=2, timeout=60.0)
    assert res.cases == 500
    assert res.n_failures == 0, harness.summary(res)


# -- one test per kind -------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["key", "element"])
@pytest.mark.parametrize("length", [2**63, 2**64 - 1])
def test_string_length_past_2_63(tmp_path, base, where, length):
    doc = base.copy()
    if where == "key":
        doc.kvs[3].key_len = length
    else:
        kv = doc.find("tokenizer.ggml.tokens")
        kv.elem_len = (len(kv.value) // 2, length)
    e = run_target(write(tmp_path, doc))
    assert isinstance(e, GGUFError) and str(length) in str(e)


@pytest.mark.parametrize("key, vtype, value, etype", [
    ("llama.rope.freq_base", VT.STRING, "10000", None),
    ("llama.attention.head_count", VT.ARRAY, ["4"], VT.STRING),
    ("llama.attention.layer_norm_rms_epsilon", VT.ARRAY, [0, 4, 1], VT.UINT64),
    ("llama.embedding_length", VT.FLOAT32, 64.0, None),
    ("llama.block_count", VT.BOOL, True, None),
    ("llama.context_length", VT.ARRAY, ["<s>"], VT.STRING),
    ("general.file_type", VT.STRING, "nan", None),
])
def test_metadata_of_the_wrong_type(tmp_path, base, key, vtype, value, etype):
    e = run_target(write(tmp_path, set_kv(base, key, vtype, value, etype)))
    assert isinstance(e, ModelError)
    assert key in str(e) and "not" in str(e)


def test_byte_token_that_is_not_hex(tmp_path, base):
    doc = base.copy()
    tokens = doc.find("tokenizer.ggml.tokens")
    i = tokens.value.index("<0xFF>")
    tokens.value[i] = "<0x\xff>"
    e = run_target(write(tmp_path, doc))
    assert isinstance(e, TokenizerError)
    assert f"tokenizer.ggml.tokens[{i}]" in str(e) and "<0x" in str(e)


@pytest.mark.parametrize("n", [2**31, 2**32 - 1, 2**63, 0])
def test_block_count_out_of_range(tmp_path, base, n):
    doc = set_kv(base, "llama.block_count", VT.UINT64, n)
    e = run_target(write(tmp_path, doc))  # a 2**31-entry table would be a MemoryError first
    assert isinstance(e, ModelError) and "llama.block_count" in str(e) and str(n) in str(e)


@pytest.mark.parametrize("key", ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                                 "llama.attention.scale", "llama.final_logit_softcapping"])
@pytest.mark.parametrize("value", [math.nan, 0.0, -1.0, math.inf])
def test_scales_nan_zero_negative(tmp_path, base, key, value):
    if key.endswith("softcapping") and value == 0.0:
        pytest.skip("softcapping 0 means off")
    e = run_target(write(tmp_path, set_kv(base, key, VT.FLOAT32, value)))
    assert isinstance(e, ModelError) and key in str(e) and "out of range" in str(e)


def test_rope_base_below_one_is_refused(tmp_path, base):
    # theta_i = base^(-2i/n_rot) overflows float32 for a tiny base
    e = run_target(write(tmp_path, set_kv(base, "llama.rope.freq_base", VT.FLOAT32, 1e-30)))
    assert "llama.rope.freq_base" in str(e)


def test_alignment_one_in_a_padded_file(tmp_path):
    # F32 weights: every tensor's size is a multiple of 32, so the offsets agree with alignment
    # 1 and only the padding after the header (still 32) would shift what is read
    f32 = Doc.parse(make_tiny_model(tmp_path, arch="llama", wtype="F32"))
    assert all(nbytes % 32 == 0 for _, _, _, nbytes in f32.tensor_meta.values())
    doc = set_kv(f32, "general.alignment", VT.UINT32, 1)
    unpadded = doc.copy()
    unpadded.pad_to = 1
    assert (len(unpadded.serialize()) - len(doc.data)) % 32, "no padding after the header to shift across"
    e = run_target(write(tmp_path, doc))
    assert isinstance(e, GGUFError) and "general.alignment 1" in str(e)


@pytest.mark.parametrize("alignment", [0, 3, 2**31])
def test_alignment_not_a_usable_power_of_two(tmp_path, base, alignment):
    e = run_target(write(tmp_path, set_kv(base, "general.alignment", VT.UINT32, alignment)))
    assert isinstance(e, GGUFError)


def test_huge_string_values_are_quoted_truncated(tmp_path, base):
    huge = "\x1b[2J" + "x" * 3_000_000
    for key, named in (("general.architecture", "architecture '"), ("tokenizer.ggml.model", "tokenizer model '")):
        doc = set_kv(base, key, VT.STRING, huge)
        e = run_target(write(tmp_path, doc))
        assert named in str(e)
        assert "\\x1b" in str(e) and "\x1b" not in str(e)


def test_huge_key_is_quoted_truncated(tmp_path, base):
    doc = base.copy()
    doc.kvs.append(replace_key(doc.kvs[0], "k" * 3_000_000))
    doc.kvs.append(replace_key(doc.kvs[0], "k" * 3_000_000))  # a duplicate key: the error quotes it
    e = run_target(write(tmp_path, doc))
    assert "duplicate metadata key" in str(e)


def replace_key(kv: KV, key: str) -> KV:
    from dataclasses import replace

    return replace(kv, key=key)


def test_tensor_name_with_control_characters_is_escaped(tmp_path, base):
    doc = base.copy()
    t = next(t for t in doc.tensors if t.name == "output.weight")  # optional: the model runs tied
    t.name = "evil\n\x1b[31m" + "n" * 100_000
    e = run_target(write(tmp_path, doc))
    assert "\\n" in str(e) and "\x1b" not in str(e)


@pytest.mark.parametrize("dim", [2**32, 2**62, 2**64 - 1])
def test_tensor_dims_past_the_file(tmp_path, base, dim):
    doc = base.copy()
    doc.tensors[0].ne[-1] = dim
    e = run_target(write(tmp_path, doc))
    assert isinstance(e, GGUFError)


def test_tensor_type_id_unknown(tmp_path, base):
    doc = base.copy()
    doc.tensors[0].type = 31
    e = run_target(write(tmp_path, doc))
    assert "type id 31" in str(e) and "0-3, 6-30" in str(e)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_norm_weights_are_refused_at_load(tmp_path, base, value):
    # NaN in a norm weight reaches the int8 activations of the next matmul, which make it
    # zeros: the logits would be finite and greedy decoding would give token 0 for ever
    doc = base.copy()
    _, ne, off, nbytes = doc.tensor_meta["blk.1.ffn_norm.weight"]
    data = bytearray(doc.data)
    data[off : off + nbytes] = np.full(ne[0], value, np.float32).tobytes()
    doc.data = bytes(data)
    e = run_target(write(tmp_path, doc))
    assert isinstance(e, ModelError) and "tensor blk.1.ffn_norm.weight holds NaN or Inf" in str(e)


def corrupt_scales(doc: Doc, name: str, bits: int) -> Doc:
    """Every Q8_0 block of tensor `name` gets the fp16 scale `bits`."""
    doc = doc.copy()
    _, ne, off, nbytes = doc.tensor_meta[name]
    data = bytearray(doc.data)
    for p in range(off, off + nbytes, 34):
        data[p : p + 2] = bits.to_bytes(2, "little")
    doc.data = bytes(data)
    return doc


@pytest.mark.parametrize("name, match", [
    ("output.weight", r"NaN/Inf in (\d+) of \1 logits at position 0: the weights hold NaN/Inf"),
    ("blk.1.ffn_down.weight", "NaN/Inf in the last hidden state at position 0: the weights hold NaN/Inf"),
    # int8 activations would make these NaN finite garbage: the first pass checks each matmul input
    ("blk.0.attn_q.weight", "NaN/Inf in the input of blk.0.attn_output.weight in the first forward pass"),
    ("blk.1.ffn_up.weight", "NaN/Inf in the input of blk.1.ffn_down.weight in the first forward pass"),
])
def test_nan_weights_fail_the_first_forward(tmp_path, base, name, match):
    path = write(tmp_path, corrupt_scales(base, name, 0x7E00))  # fp16 NaN
    with load(path, n_ctx=256) as model:
        with pytest.raises(ModelError, match=match) as e:
            generate(model, "Hello", max_tokens=2, params=SamplingParams(temperature=0.0)).read()
    assert len(f"tinyllm: error: {e.value}") <= MAX_LINE


def test_show_escapes_and_truncates():
    assert show("a\x00b\n") == r"'a\x00b\n'"
    s = show("\x1b" * 10_000)
    assert len(s) == 60 and s.endswith("...") and "\x1b" not in s
    assert show(np.zeros(3)) == "an array of shape (3,) and type float64"


def test_cli_prints_one_line(tmp_path, base):
    path = write(tmp_path, set_kv(base, "llama.block_count", VT.UINT64, 2**31))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "tinyllm"]
    r = subprocess.run([*run, "run", "-m", str(path), "-p", "hi", "-n", "1"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("tinyllm: error: "), r.stderr
    assert "llama.block_count = 2147483648 is out of range (supported: 1 to 512)" in r.stderr
    # info shows what it can read, and why the model does not run
    r = subprocess.run([*run, "info", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "runs in tinyllm = no: " in r.stdout and "llama.block_count = 2147483648" in r.stdout


def test_merge_whose_result_is_not_a_token_does_not_panic(tmp_path, capfd):
    # HF tokenizers' BPE builder panics (a Rust backtrace on stderr) on this merge
    bpe = tmp_path / "bpe.gguf"
    harness._write_bpe_variant(make_tiny_model(tmp_path, arch="llama"), bpe)
    doc = Doc.parse(bpe)
    doc.find("tokenizer.ggml.merges").value.insert(3, "<|reserved_11|> <|reserved_111|>")
    path = write(tmp_path, doc)
    from tinyllm.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(path)
    assert tok._engine._hf is None  # merge_word instead
    assert tok.decode(tok.encode("Hello world", add_bos=False)) == "Hello world"
    assert capfd.readouterr().err == ""


def test_nul_token_is_hidden_from_sentencepiece_silently(tmp_path, base, capfd):
    # sentencepiece would make it UNUSED too, but tell stderr so through its C++ logger
    doc = base.copy()
    doc.find("tokenizer.ggml.tokens").value[-1] = "\x00"
    from tinyllm.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(write(tmp_path, doc))
    assert tok.decode(tok.encode("Hello a\x00b", add_bos=False)) == "Hello a\x00b"  # the byte token
    assert capfd.readouterr().err == ""


def test_tiny_softcap_gives_no_warning(tmp_path, base):
    import warnings

    doc = set_kv(base, "llama.final_logit_softcapping", VT.FLOAT32, 1e-45)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        harness.target(str(write(tmp_path, doc)))


@pytest.mark.parametrize("pre", [np.array([], np.int32), np.array([1, 2], np.int32), ["llama3"], 7, ""])
def test_info_describes_a_pre_tokenizer_of_the_wrong_type(pre):
    """Fuzz seed 1,024,176: `tokenizer.ggml.pre` as an empty INT32 array made `tinyllm info`
    test an array for truth (ValueError). It is shown as what it is, or as the default when empty."""
    from tinyllm.tokenizer.metadata import describe_metadata

    text = describe_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre})
    assert text.startswith("gpt2 (byte-level BPE), pre-tokenizer ")
    assert ("default" in text) if isinstance(pre, str) else ("unknown to llama.cpp" in text)
