"""GGUF reading and writing, checked against gguf-py (GGUFReader / GGUFWriter) as the outside
reference, plus one corrupted file per error path."""
import os
import struct

import gguf
import numpy as np
import pytest

from tinyllm.errors import GGUFError
from tinyllm.gguf_io import GGUFFile, GGUFValueType, StringArray, write_gguf
from tinyllm.quants.types import GGMLType

VT = GGUFValueType

METADATA = {
    "general.architecture": "llama",
    "general.name": "tiny ünïcode",
    "llama.context_length": 128,
    "llama.block_count": 1,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
    "llama.rope.freq_base": 10000.0,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "▁hi", "a b"],
    "tokenizer.ggml.scores": np.array([0.0, 0.0, 0.0, -1.5, -2.25], dtype=np.float32),
    "tokenizer.ggml.token_type": np.array([2, 3, 3, 1, 4], dtype=np.int32),
    "some.i8": -3,
    "some.u64": 1 << 40,
    "some.f64": 0.1,
    "some.i16_array": np.array([-1, 2, 3], dtype=np.int16),
    "some.bool_array": np.array([True, False, True]),
}
TYPES = {
    "some.i8": (VT.INT8, None),
    "some.u64": (VT.UINT64, None),
    "some.f64": (VT.FLOAT64, None),
}


def _tensors(rng):
    q8 = rng.integers(0, 256, size=(3, 2 * 34), dtype=np.uint8)  # 3 rows of 64 Q8_0 weights
    q4k = rng.integers(0, 256, size=(2, 144), dtype=np.uint8)  # 2 rows of 256 Q4_K weights
    return [
        ("a.weight", GGMLType.F32, (2, 3, 32), rng.standard_normal((2, 3, 32)).astype(np.float32)),
        ("b.weight", GGMLType.Q8_0, (3, 64), q8),
        ("c.weight", GGMLType.F16, (5,), rng.standard_normal(5).astype(np.float16)),
        ("d.weight", GGMLType.Q4_K, (2, 256), q4k),
        ("e.weight", GGMLType.BF16, (2, 8), rng.integers(0, 1 << 16, size=(2, 8), dtype=np.uint16)),
    ]


@pytest.fixture
def small(tmp_path):
    """A small valid file written by write_gguf; returns (path, tensors)."""
    path = tmp_path / "small.gguf"
    tensors = _tensors(np.random.default_rng(0))
    write_gguf(path, METADATA, tensors, value_types=TYPES)
    return path, tensors


def _same_value(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype
    return type(a) is type(b) and a == b


# -- reading and writing --------------------------------------------------------------------


def test_round_trip(small):
    path, tensors = small
    with GGUFFile(path) as f:
        assert f.version == 3 and f.alignment == 32 and f.arch == "llama"
        assert list(f.metadata) == list(METADATA)
        for k, v in METADATA.items():
            if isinstance(v, float):
                want = float(np.float64(v)) if k == "some.f64" else float(np.float32(v))
                assert f.metadata[k] == want, k
            elif isinstance(v, np.ndarray):
                assert _same_value(f.metadata[k], v), k
            elif isinstance(v, list):  # string arrays: a compact read-only list
                assert isinstance(f.metadata[k], StringArray) and f.metadata[k] == v, k
            else:
                assert f.metadata[k] == v and type(f.metadata[k]) is type(v), k
        assert f.value_types["llama.context_length"] == (VT.UINT32, None)
        assert f.value_types["some.i8"] == (VT.INT8, None)
        assert f.value_types["tokenizer.ggml.tokens"] == (VT.ARRAY, VT.STRING)
        assert f.value_types["some.bool_array"] == (VT.ARRAY, VT.BOOL)
        assert list(f.tensors) == [t[0] for t in tensors]
        for name, ttype, shape, data in tensors:
            t = f.tensors[name]
            assert t.type == ttype and t.shape == shape and t.ne == tuple(reversed(shape))
            assert (t.offset - f.data_offset) % 32 == 0 and f.data_offset % 32 == 0
            assert np.array_equal(t.data.reshape(-1), data.view(np.uint8).reshape(-1))
        assert f.tensors["b.weight"].data.shape == (3, 68)
        assert f.tensors["a.weight"].data.shape == (6, 128)
        assert np.array_equal(f.tensors["a.weight"].array(), tensors[0][3])
        assert np.array_equal(f.tensors["c.weight"].array(), tensors[2][3])
        e = f.tensors["e.weight"].array()
        assert e.dtype == np.uint16 and np.array_equal(e, tensors[4][3])
        assert not f.tensors["a.weight"].data.flags.writeable


def test_views_are_zero_copy_memmaps(small):
    path, _ = small
    f = GGUFFile(path)
    v = f.tensors["b.weight"].data
    assert isinstance(v, np.memmap)
    assert np.shares_memory(v, f.tensors["b.weight"].data)  # two accesses, one mapping: no copies
    arr = f.tensors["a.weight"].array()
    want = np.array(arr)
    f.close()
    assert np.array_equal(arr, want)  # views handed out stay valid after close
    with pytest.raises(GGUFError, match=r"small.gguf: file is closed"):
        f.tensors["a.weight"].data


def test_written_file_matches_gguf_py_reader(small):
    """gguf-py's GGUFReader is the outside reference for the byte layout."""
    path, tensors = small
    r = gguf.GGUFReader(path)
    ours = GGUFFile(path)
    assert r.data_offset == ours.data_offset and r.alignment == ours.alignment
    for k in METADATA:
        field = r.fields[k]
        assert VT(field.types[0]) == ours.value_types[k][0], k
        want = field.contents()
        got = ours.metadata[k]
        if isinstance(got, np.ndarray):
            got = got.tolist()
        if isinstance(want, float):
            assert want == pytest.approx(got, rel=0, abs=0), k
        else:
            assert want == got, k
    assert [t.name for t in r.tensors] == [t[0] for t in tensors]
    for rt, (name, ttype, shape, data) in zip(r.tensors, tensors):
        t = ours.tensors[name]
        assert int(rt.tensor_type) == ttype
        assert list(rt.shape) == list(t.ne)
        assert rt.data_offset == t.offset and rt.n_bytes == t.nbytes
        assert np.array_equal(np.asarray(rt.data).view(np.uint8).reshape(-1), data.view(np.uint8).reshape(-1))


def test_reads_file_written_by_gguf_py(tmp_path):
    path = tmp_path / "ref.gguf"
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("llama.context_length", 64)
    w.add_float32("llama.rope.freq_base", 500000.0)
    w.add_token_list(["a", "b", "ç"])
    w.add_array("x.ints", [1, -2, 3])
    w.add_custom_alignment(64)
    f32 = rng.standard_normal((4, 32)).astype(np.float32)
    raw = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("f", f32)
    w.add_tensor("q", raw, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = GGUFFile(path)
    assert f.alignment == 64 and f.data_offset % 64 == 0
    assert f.metadata["llama.context_length"] == 64
    assert f.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ç"]
    assert f.metadata["x.ints"].tolist() == [1, -2, 3]
    assert f.tensors["q"].type == GGMLType.Q8_0 and f.tensors["q"].shape == (2, 64)
    assert np.array_equal(f.tensors["f"].array(), f32)
    assert np.array_equal(f.tensors["q"].data, raw)
    r = gguf.GGUFReader(path)
    assert [t.data_offset for t in r.tensors] == [t.offset for t in f.tensors.values()]


def test_golden_quant_file_matches_gguf_py(llama_cpp_file):
    path = llama_cpp_file("Q4_K_M")  # llama-quantize's bytes
    _compare_with_reader(GGUFFile(path), gguf.GGUFReader(path))


def _compare_with_reader(ours: GGUFFile, r: gguf.GGUFReader):
    assert r.data_offset == ours.data_offset and r.alignment == ours.alignment
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == list(ours.metadata)
    for k in keys:
        field = r.fields[k]
        assert [VT(t) for t in field.types] == [t for t in ours.value_types[k] if t is not None], k
        got = ours.metadata[k]
        if field.types[0] == gguf.GGUFValueType.ARRAY and field.types[1] != gguf.GGUFValueType.STRING:
            want = np.concatenate([field.parts[i] for i in field.data]) if field.data else np.array([])
            assert np.array_equal(want, got) and want.dtype == got.dtype, k
        else:
            assert field.contents() == got, k
    assert [t.name for t in r.tensors] == list(ours.tensors)
    for rt in r.tensors:
        t = ours.tensors[rt.name]
        assert int(rt.tensor_type) == t.type and list(rt.shape) == list(t.ne)
        assert rt.data_offset == t.offset and rt.n_bytes == t.nbytes
        assert np.array_equal(np.asarray(rt.data).view(np.uint8).reshape(-1)[:4096], t.data.reshape(-1)[:4096])


@pytest.mark.slow
def test_gemma_matches_gguf_py(gemma_path):
    """The real 262,144-token file: the same metadata and tensor infos as GGUFReader (~20 s there)."""
    ours = GGUFFile(gemma_path)
    assert len(ours.tensors) == 236 and len(ours.metadata) == 33
    assert ours.data_offset == 6525120
    assert ours.tensors["token_embd.weight"].shape == (262144, 640)
    assert ours.tensors["token_embd.weight"].data.shape == (262144, 680)
    _compare_with_reader(ours, gguf.GGUFReader(gemma_path))


def test_custom_alignment(tmp_path):
    path = tmp_path / "a64.gguf"
    t = [("x", GGMLType.F32, (3,), np.ones(3, np.float32)), ("y", GGMLType.F32, (5,), np.zeros(5, np.float32))]
    write_gguf(path, {"general.architecture": "llama"}, t, alignment=64)
    f = GGUFFile(path)
    assert f.alignment == 64 and f.metadata["general.alignment"] == 64
    assert f.data_offset % 64 == 0 and f.tensors["y"].offset - f.data_offset == 64
    assert gguf.GGUFReader(path).tensors[1].data_offset == f.tensors["y"].offset


def test_copy_preserves_value_types(small, tmp_path):
    """What `tinyllm quantize` does: copy metadata with its exact types."""
    src = GGUFFile(small[0])
    out = tmp_path / "copy.gguf"
    write_gguf(out, src.metadata, [(t.name, t.type, t.shape, t.data) for t in src.tensors.values()],
               value_types=src.value_types)
    assert out.read_bytes() == small[0].read_bytes()


def test_inferred_types(tmp_path):
    path = tmp_path / "inf.gguf"
    md = {"u": 5, "neg": -5, "big": 1 << 40, "f": 0.5, "b": False, "s": "x", "ls": ["p", "q"],
          "li": [1, 2], "lf": [0.5, 1.5], "arr": np.arange(3, dtype=np.uint8)}
    write_gguf(path, md, [])
    f = GGUFFile(path)
    assert {k: f.value_types[k] for k in md} == {
        "u": (VT.UINT32, None), "neg": (VT.INT32, None), "big": (VT.UINT64, None),
        "f": (VT.FLOAT32, None), "b": (VT.BOOL, None), "s": (VT.STRING, None),
        "ls": (VT.ARRAY, VT.STRING), "li": (VT.ARRAY, VT.INT32), "lf": (VT.ARRAY, VT.FLOAT32),
        "arr": (VT.ARRAY, VT.UINT8),
    }
    assert f.tensors == {} and f.data_offset == os.path.getsize(path)
    assert gguf.GGUFReader(path).fields["ls"].contents() == ["p", "q"]


def test_streamed_tensors_are_produced_in_order(tmp_path):
    calls = []

    def make(i):
        def produce():
            calls.append(i)
            return np.full(4, i, np.float32)
        return produce

    write_gguf(tmp_path / "s.gguf", {}, [(f"t{i}", GGMLType.F32, (4,), make(i)) for i in range(3)])
    assert calls == [0, 1, 2]
    f = GGUFFile(tmp_path / "s.gguf")
    assert [f.tensors[f"t{i}"].array()[0] for i in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_write_is_atomic(tmp_path, exc):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"old contents")

    def boom():
        raise exc("stop")

    tensors = [("a", GGMLType.F32, (4,), np.zeros(4, np.float32)), ("b", GGMLType.F32, (4,), boom)]
    with pytest.raises(exc):
        write_gguf(path, {"general.architecture": "llama"}, tensors)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.gguf"]


# -- write errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensors, md, types, match",
    [
        ([("a", GGMLType.Q8_0, (2, 48), np.zeros((2, 51), np.uint8))], {}, None, r"'a'.*row length 48.*block size 32"),
        ([("a", GGMLType.Q8_0, (2, 64), np.zeros((2, 60), np.uint8))], {}, None, r"'a'.*needs 136 bytes.*got 120"),
        ([("a", GGMLType.F32, (4,), np.zeros(4, np.float64))], {}, None, r"'a'.*float64"),
        ([("a", GGMLType.F32, (4,), [0.0] * 4)], {}, None, r"'a'.*numpy array"),
        ([("a", 99, (4,), np.zeros(4, np.float32))], {}, None, r"'a'.*unsupported type 99"),
        ([("a", GGMLType.F32, (1,), np.zeros(1, np.float32))] * 2, {}, None, r"duplicate tensor name 'a'"),
        ([], {"k": 300}, {"k": (VT.UINT8, None)}, r"'k'.*300.*UINT8"),
        ([], {"k": "x"}, {"k": (VT.UINT32, None)}, r"'k'.*UINT32"),
        ([], {"k": [1, 2.5]}, {"k": (VT.ARRAY, VT.INT32)}, r"'k'.*INT32"),
        ([], {"k": []}, None, r"'k'.*empty list"),
        ([], {"k": object()}, None, r"'k'.*object"),
        ([], {"general.alignment": 64}, None, r"alignment=16 conflicts"),
        ([], {}, None, r"power of two, got 48"),
    ],
)
def test_write_errors(tmp_path, tensors, md, types, match):
    path = tmp_path / "bad.gguf"
    align = 16 if "general.alignment" in md else (48 if "power" in match else None)
    with pytest.raises(GGUFError, match=match):
        write_gguf(path, md, tensors, value_types=types, alignment=align)
    assert not path.exists() and os.listdir(tmp_path) == []


# -- malformed files ------------------------------------------------------------------------


def _tensor_record_offset(buf: bytes, name: str) -> int:
    """Byte offset of the n_dims field of tensor `name`'s info record."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    i = buf.index(needle, 24)
    return i + len(needle)


def _key_value_offset(buf: bytes, key: str) -> int:
    """Byte offset of the value-type field of metadata `key`."""
    needle = struct.pack("<Q", len(key)) + key.encode()
    return buf.index(needle, 24) + len(needle)


def _patch(buf: bytes, at: int, fmt: str, value) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def _broken(small, tmp_path, mutate) -> str:
    buf = small[0].read_bytes()
    f = GGUFFile(small[0])
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(mutate(buf, f))
    return bad


def _expect(bad, match):
    with pytest.raises(GGUFError, match=match) as e:
        GGUFFile(bad)
    assert str(bad) in str(e.value)


CASES = {
    "magic": (lambda b, f: b"GGML" + b[4:], r"not a GGUF file.*GGML"),
    "version 1": (lambda b, f: _patch(b, 4, "<I", 1), r"unsupported GGUF version 1 \(supported: 2, 3\)"),
    "version 4": (lambda b, f: _patch(b, 4, "<I", 4), r"unsupported GGUF version 4"),
    "big-endian": (lambda b, f: _patch(b, 4, ">I", 3), r"big-endian"),
    "empty file": (lambda b, f: b"", r"truncated header: file is 0 bytes"),
    "cut in kv": (
        lambda b, f: b[: _key_value_offset(b, "tokenizer.ggml.tokens") + 30],
        r"truncated .*header.*tokenizer.ggml.tokens",
    ),
    "cut in tensor infos": (lambda b, f: b[: _tensor_record_offset(b, "d.weight") + 6], r"truncated header.*'d.weight'"),
    "huge tensor count": (lambda b, f: _patch(b, 8, "<Q", 1 << 40), r"tensor count 1099511627776 needs at least"),
    "huge kv count": (lambda b, f: _patch(b, 16, "<Q", 1 << 40), r"metadata count 1099511627776 needs at least"),
    "huge string": (lambda b, f: _patch(b, 24, "<Q", 1 << 40), r"1099511627776 bytes"),
    "huge array": (
        lambda b, f: _patch(b, _key_value_offset(b, "tokenizer.ggml.scores") + 8, "<Q", 1 << 40),
        r"'tokenizer.ggml.scores' claims 1099511627776 elements",
    ),
    "huge string array": (
        lambda b, f: _patch(b, _key_value_offset(b, "tokenizer.ggml.tokens") + 8, "<Q", 1 << 40),
        r"'tokenizer.ggml.tokens' claims 1099511627776 elements",
    ),
    "huge token length": (
        lambda b, f: _patch(b, _key_value_offset(b, "tokenizer.ggml.tokens") + 16, "<Q", 1 << 40),
        r"tokenizer.ggml.tokens\[0\] \(1099511627776 bytes\)",
    ),
    "unknown value type": (
        lambda b, f: _patch(b, _key_value_offset(b, "llama.block_count"), "<I", 77),
        r"'llama.block_count' has unknown value type 77",
    ),
    "nested array": (
        lambda b, f: _patch(b, _key_value_offset(b, "tokenizer.ggml.scores") + 4, "<I", 9),
        r"'tokenizer.ggml.scores' is a nested array",
    ),
    "unknown tensor type": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "b.weight") + 4 + 16, "<I", 33),
        r"tensor 'b.weight' has unknown or unsupported ggml type id 33",
    ),
    "row length vs block": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "b.weight") + 4, "<Q", 48),
        r"tensor 'b.weight' of type Q8_0 has row length ne\[0\]=48, not a multiple of the block size 32",
    ),
    "too many dims": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "a.weight"), "<I", 5),
        r"'a.weight' has 5 dimensions",
    ),
    "absurd dims": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "a.weight") + 4, "<Q", 1 << 63),
        r"'a.weight' has absurd dimensions",
    ),
    "offset not running sum": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "c.weight") + 4 + 8 + 4, "<Q", 4096),
        r"'c.weight' has data offset 4096, expected 992 \(offsets must be the running sum",
    ),
    "reordered offsets": (
        lambda b, f: _patch(b, _tensor_record_offset(b, "a.weight") + 4 + 24 + 4, "<Q", 32),
        r"'a.weight' has data offset 32, expected 0",
    ),
    "truncated tensor data": (
        lambda b, f: b[:-10],
        r"truncated tensor data: tensor 'e.weight'",
    ),
    "tensor past end of file": (
        lambda b, f: b[: f.tensors["e.weight"].offset],
        r"tensor 'e.weight' starts at byte \d+, past the end of the file",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed(small, tmp_path, case):
    mutate, match = CASES[case]
    _expect(_broken(small, tmp_path, mutate), match)


def test_every_truncation_point_is_an_error(small, tmp_path):
    """Cutting the header anywhere gives a GGUFError, never another exception."""
    buf = small[0].read_bytes()
    f = GGUFFile(small[0])
    bad = tmp_path / "cut.gguf"
    for n in range(0, f.data_offset, 7):
        bad.write_bytes(buf[:n])
        with pytest.raises(GGUFError, match="truncated|past the end") as e:
            GGUFFile(bad)
        assert str(bad) in str(e.value)


def test_duplicate_key_and_bad_alignment(tmp_path):
    path = tmp_path / "dup.gguf"
    write_gguf(path, {"k.aa": 1, "k.bb": 2}, [])
    path.write_bytes(path.read_bytes().replace(b"k.bb", b"k.aa"))
    _expect(path, r"duplicate metadata key 'k.aa'")
    path2 = tmp_path / "align.gguf"
    write_gguf(path2, {"general.alignment": 64}, [("x", GGMLType.F32, (1,), np.zeros(1, np.float32))])
    b = path2.read_bytes()
    path2.write_bytes(_patch(b, _key_value_offset(b, "general.alignment") + 4, "<I", 48))
    _expect(path2, r"general.alignment must be a uint32 power of two, got 48")


def test_duplicate_tensor_name(tmp_path):
    path = tmp_path / "dupt.gguf"
    write_gguf(path, {}, [("xa", GGMLType.F32, (8,), np.zeros(8, np.float32)),
                          ("xb", GGMLType.F32, (8,), np.zeros(8, np.float32))])
    path.write_bytes(path.read_bytes().replace(b"xb", b"xa"))
    _expect(path, r"duplicate tensor name 'xa'")


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.gguf", r"cannot read file")


def test_array_of_quantized_tensor_is_an_error(small):
    f = GGUFFile(small[0])
    with pytest.raises(GGUFError, match=r"'b.weight' is Q8_0.*F32, F16 and BF16"):
        f.tensors["b.weight"].array()


@pytest.mark.parametrize(
    "tokens",
    [
        ["", "a", "", "ü€😀", "▁x", ""],  # empty strings and 1-4 byte characters
        ["a\0b", "c", ""],  # a NUL inside a string: the bulk decoder's separator is taken
        ["ok", b"\xff\xfe".decode("utf-8", "surrogateescape"), "é"],  # not UTF-8: kept byte-exact
        ["\x80".encode("latin-1").decode("utf-8", "surrogateescape") + "x", "y"],  # stray continuation byte
    ],
)
def test_string_arrays_decode_like_gguf_py(tmp_path, tokens):
    path = tmp_path / "s.gguf"
    write_gguf(path, {"t": tokens}, [])
    f = GGUFFile(path)
    assert f.metadata["t"] == tokens
    field = gguf.GGUFReader(path).fields["t"]
    raw = [bytes(field.parts[i]) for i in field.data]
    assert raw == [t.encode("utf-8", "surrogateescape") for t in tokens]


def test_string_arrays_are_compact_read_only_lists(tmp_path):
    """String arrays come back as StringArray: one bytes object, items decoded on access; it
    reads like the list gguf-py gives and writes back byte for byte."""
    texts = ["<unk>", "", "▁hé", "a\0b", "ç" * 3, "x"]
    raw = ["ok", "bad\udcff"]  # a non-UTF-8 byte survives as a surrogate escape
    path = tmp_path / "s.gguf"
    write_gguf(path, {"t.texts": texts, "t.raw": raw}, [])
    f = GGUFFile(path)
    a = f.metadata["t.texts"]
    assert isinstance(a, StringArray) and len(a) == 6
    assert a == texts and texts == a and list(a) == texts and a[:2] == texts[:2]
    assert a[2] == "▁hé" and a[-1] == "x" and a.item_bytes(2) == "▁hé".encode()
    assert a != texts[:-1] and a != texts[:-1] + ["y"]
    with pytest.raises(IndexError):
        a[6]
    assert f.metadata["t.raw"] == raw and f.metadata["t.raw"].item_bytes(1) == b"bad\xff"
    r = gguf.GGUFReader(path)
    field = r.fields["t.texts"]
    assert [bytes(field.parts[i]).decode() for i in field.data] == texts
    copy = tmp_path / "copy.gguf"
    write_gguf(copy, dict(f.metadata), [], value_types=f.value_types)
    assert copy.read_bytes() == path.read_bytes()
    empty = tmp_path / "e.gguf"
    write_gguf(empty, {"t.none": StringArray.from_strings([])}, [], value_types={"t.none": (VT.ARRAY, VT.STRING)})
    assert GGUFFile(empty).metadata["t.none"] == []
