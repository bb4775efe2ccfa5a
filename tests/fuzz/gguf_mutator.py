"""Structure-aware mutation of a valid GGUF file (issue #11 part 4).

A base file is parsed into a `Doc`: header fields, metadata entries and tensor-info records,
each with the values written and the fields a corrupt file can lie about (a string's length,
an array's count, a value's type code) kept apart from the bytes that follow. A mutation
edits the Doc; `Doc.serialize()` writes it back, honouring every lie. Bytes-level mutations
(truncation, flipped bytes) act on the serialized file.

    doc = Doc.parse(path)
    data, notes = mutate(doc, random.Random(seed))   # notes: what was done, for the report

The same (base file, seed) always gives the same bytes.
"""
from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tinyllm.gguf_io import GGUFFile, GGUFValueType as VT
from tinyllm.quants.types import BLOCK_SIZES, GGMLType

_FMT = {VT.UINT8: "B", VT.INT8: "b", VT.UINT16: "H", VT.INT16: "h", VT.UINT32: "I", VT.INT32: "i",
        VT.FLOAT32: "f", VT.BOOL: "?", VT.UINT64: "Q", VT.INT64: "q", VT.FLOAT64: "d"}
_INT_TYPES = (VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64)
_FLOAT_TYPES = (VT.FLOAT32, VT.FLOAT64)
_RANGES = {VT.UINT8: (0, 255), VT.INT8: (-128, 127), VT.UINT16: (0, 65535), VT.INT16: (-32768, 32767),
           VT.UINT32: (0, 2**32 - 1), VT.INT32: (-(2**31), 2**31 - 1), VT.UINT64: (0, 2**64 - 1),
           VT.INT64: (-(2**63), 2**63 - 1), VT.BOOL: (0, 1)}

HUGE_COUNTS = (2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1)
ODD_STRINGS = ("", "\x00", "<0x\xff>", "<0xZZ>", "<0x", "<0x1>", "<0x100>", "\udcff\udcfe", "\n\r\t\x1b[2J",
               "a" * 300, "\u2028", "<s>", "▁", "x" * 70_000, "{{ raise_exception('x') }}", "%s%n", "\ufeff")
SPECIAL_NUMBERS = (math.nan, math.inf, -math.inf, 0, -0.0, -1, 1, 2, 3, 1e-45, 1e38, -1e38, 2**31 - 1, 2**31,
                   2**32 - 1, -(2**31), 2**63, 2**64 - 1, 65536, 1e-30, 0.5)
# keys a model may have besides those of the base; values are drawn when one is added
EXTRA_KEYS = (
    "general.alignment", "{a}.rope.scaling.type", "{a}.rope.scaling.factor", "{a}.rope.scale_linear",
    "{a}.attention.scale", "{a}.final_logit_softcapping", "{a}.attention.sliding_window",
    "{a}.attention.sliding_window_pattern", "{a}.vocab_size", "{a}.attention.key_length",
    "{a}.attention.value_length", "{a}.rope.dimension_count", "{a}.rope.freq_base_swa",
    "{a}.attention.head_count_kv", "tokenizer.ggml.merges", "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.add_eos_token", "tokenizer.chat_template", "general.file_type", "general.name",
)
MODEL_NAMES = ("llama", "gpt2", "gemma4", "bert", "t5", "none", "", "LLAMA", "\x00")
PRE_NAMES = ("default", "llama3", "qwen2", "smollm", "gpt-2", "nonsense", "")
SCALING_TYPES = ("none", "linear", "yarn", "longrope", "", "LINEAR")
ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "gemma2", "", "gpt2")


@dataclass
class KV:
    key: str
    vtype: int  # the type the value is encoded with
    value: Any  # scalar, str, or list for arrays
    etype: int | None = None  # element type of an array
    type_code: int | None = None  # a lie: the type code written instead of vtype
    etype_code: int | None = None  # a lie: the element type code written
    count: int | None = None  # a lie: the array count written
    key_len: int | None = None  # a lie: the length written before the key
    str_len: int | None = None  # a lie: the length written before a string value
    elem_len: tuple[int, int] | None = None  # a lie: (index, length) of one string element


@dataclass
class TI:
    name: str
    ne: list[int]
    type: int
    offset: int
    n_dims: int | None = None  # a lie: the dimension count written
    name_len: int | None = None


@dataclass
class Doc:
    magic: bytes
    version: int
    kvs: list[KV]
    tensors: list[TI]
    data: bytes  # the tensor data section, from the first tensor's start
    pad_to: int = 32  # padding written after the header (the base file's alignment)
    n_tensors: int | None = None  # lies: counts written
    n_kv: int | None = None
    arch: str = "llama"
    tensor_meta: dict = field(default_factory=dict)  # name -> (type, ne, relative offset, nbytes)

    @classmethod
    def parse(cls, path) -> "Doc":
        with GGUFFile(path) as g:
            kvs = []
            for key, value in g.metadata.items():
                vtype, etype = g.value_types[key]
                if vtype == VT.ARRAY:
                    value = list(value) if etype == VT.STRING else np.asarray(value).tolist()
                kvs.append(KV(key, int(vtype), value, None if etype is None else int(etype)))
            tensors = [TI(t.name, list(t.ne), int(t.type), t.offset - g.data_offset) for t in g.tensors.values()]
            meta = {t.name: (int(t.type), list(t.ne), t.offset - g.data_offset, t.nbytes) for t in g.tensors.values()}
            raw = open(path, "rb").read()
            return cls(b"GGUF", g.version, kvs, tensors, raw[g.data_offset:], g.alignment, arch=g.arch or "llama",
                       tensor_meta=meta)

    def copy(self) -> "Doc":
        kvs = [replace(k, value=list(k.value) if isinstance(k.value, list) else k.value) for k in self.kvs]
        return replace(self, kvs=kvs, tensors=[replace(t, ne=list(t.ne)) for t in self.tensors])

    def find(self, key: str) -> KV | None:
        return next((k for k in self.kvs if k.key == key), None)

    # -- writing --------------------------------------------------------------------------------

    def serialize(self) -> bytes:
        out = [self.magic, struct.pack("<I", self.version & 0xFFFFFFFF),
               _u64(len(self.tensors) if self.n_tensors is None else self.n_tensors),
               _u64(len(self.kvs) if self.n_kv is None else self.n_kv)]
        for kv in self.kvs:
            out.append(_string(kv.key, kv.key_len))
            out.append(struct.pack("<I", (kv.vtype if kv.type_code is None else kv.type_code) & 0xFFFFFFFF))
            out.append(_value(kv))
        for t in self.tensors:
            out.append(_string(t.name, t.name_len))
            out.append(struct.pack("<I", (len(t.ne) if t.n_dims is None else t.n_dims) & 0xFFFFFFFF))
            out.extend(_u64(d) for d in t.ne)
            out.append(struct.pack("<I", t.type & 0xFFFFFFFF))
            out.append(_u64(t.offset))
        head = b"".join(out)
        pad = (-len(head)) % self.pad_to if self.tensors else 0
        return head + b"\0" * pad + self.data


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n % 2**64)


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _string(s: str, lie: int | None = None) -> bytes:
    b = _enc(s)
    return _u64(len(b) if lie is None else lie) + b


def _scalar(vtype: int, v) -> bytes:
    if vtype == VT.STRING:
        return _string(str(v))
    fmt = _FMT[VT(vtype)]
    if not isinstance(v, (int, float)):  # a str element re-encoded as a number
        v = 0
    if vtype in _FLOAT_TYPES:
        try:
            return struct.pack("<" + fmt, float(v))
        except OverflowError:
            return struct.pack("<" + fmt, math.copysign(math.inf, float(v)))
    if isinstance(v, float) and not math.isfinite(v):
        v = 0
    lo, hi = _RANGES[VT(vtype)]
    return struct.pack("<" + fmt, min(max(int(v), lo), hi))


def _value(kv: KV) -> bytes:
    if kv.vtype == VT.STRING:
        return _string(str(kv.value), kv.str_len)
    if kv.vtype != VT.ARRAY:
        return _scalar(kv.vtype, kv.value)
    items = list(kv.value)
    etype = kv.etype if kv.etype is not None else VT.INT32
    head = struct.pack("<I", (etype if kv.etype_code is None else kv.etype_code) & 0xFFFFFFFF)
    head += _u64(len(items) if kv.count is None else kv.count)
    if etype == VT.STRING:
        parts = [_enc(str(s)) for s in items]
        lens = [len(p) for p in parts]
        if kv.elem_len is not None and 0 <= kv.elem_len[0] < len(parts):
            lens[kv.elem_len[0]] = kv.elem_len[1]
        return head + b"".join(_u64(n) + p for n, p in zip(lens, parts))
    if etype == VT.ARRAY:
        return head  # a nested array: the reader must refuse it before reading more
    return head + b"".join(_scalar(etype, v) for v in items)


# -- mutations ------------------------------------------------------------------------------------

def _numeric_kvs(doc: Doc) -> list[KV]:
    return [k for k in doc.kvs if k.vtype in _INT_TYPES or k.vtype in _FLOAT_TYPES or k.vtype == VT.BOOL]


def _arch_kvs(doc: Doc) -> list[KV]:
    return [k for k in doc.kvs if k.key.startswith(doc.arch + ".")]


def _pick_kv(doc: Doc, rng: random.Random, prefer=None) -> KV | None:
    pool = prefer(doc) if prefer else []
    if not pool or rng.random() < 0.2:
        pool = doc.kvs
    return rng.choice(pool) if pool else None


def m_header_count(doc, rng):
    which = rng.choice(("n_kv", "n_tensors"))
    real = len(doc.kvs) if which == "n_kv" else len(doc.tensors)
    v = rng.choice((0, real - 1, real + 1, real + 2) + HUGE_COUNTS)
    setattr(doc, which, v)
    return f"{which}={v}"


def m_version(doc, rng):
    doc.version = rng.choice((0, 1, 2, 4, 0x03000000, 0x00030000, rng.getrandbits(32)))
    return f"version={doc.version:#x}"


def m_magic(doc, rng):
    doc.magic = rng.choice((b"GGUG", b"FUGG", b"\0\0\0\0", b"GGML"))
    return f"magic={doc.magic!r}"


def m_string_len(doc, rng):
    n = rng.choice(HUGE_COUNTS + (2**63 - 1, "+1", "-1", 0, "+1000"))
    what = rng.choice(("key", "value", "tensor", "element"))

    def lie(real):
        return real + 1 if n == "+1" else real - 1 if n == "-1" else real + 1000 if n == "+1000" else n

    if what == "tensor" and doc.tensors:
        t = rng.choice(doc.tensors)
        t.name_len = max(lie(len(_enc(t.name))), 0)
        return f"name length of tensor {t.name!r}={t.name_len}"
    if what == "value":
        pool = [k for k in doc.kvs if k.vtype == VT.STRING]
        if pool:
            k = rng.choice(pool)
            k.str_len = max(lie(len(_enc(k.value))), 0)
            return f"string length of {k.key}={k.str_len}"
    if what == "element":
        pool = [k for k in doc.kvs if k.vtype == VT.ARRAY and k.etype == VT.STRING and k.value]
        if pool:
            k = rng.choice(pool)
            i = rng.randrange(len(k.value))
            k.elem_len = (i, max(lie(len(_enc(k.value[i]))), 0))
            return f"length of {k.key}[{i}]={k.elem_len[1]}"
    k = rng.choice(doc.kvs)
    k.key_len = max(lie(len(_enc(k.key))), 0)
    return f"key length of {k.key}={k.key_len}"


def m_type_code(doc, rng):
    k = _pick_kv(doc, rng, _arch_kvs)
    code = rng.choice(list(range(13)) + [13, 255, 2**31, 2**32 - 1])
    if k.vtype == VT.ARRAY and rng.random() < 0.5:
        k.etype_code = code
        return f"element type code of {k.key}={code}"
    k.type_code = code
    return f"type code of {k.key}={code}"


def _random_value(rng, doc) -> tuple[int, Any, int | None]:
    kind = rng.choice(("str", "int", "float", "bool", "iarr", "sarr", "farr", "empty", "nested", "neg", "u64"))
    if kind == "str":
        return VT.STRING, rng.choice(ODD_STRINGS + ("12", "1e5", "nan")), None
    if kind == "int":
        return rng.choice(_INT_TYPES), rng.choice(SPECIAL_NUMBERS), None
    if kind == "float":
        return rng.choice(_FLOAT_TYPES), rng.choice(SPECIAL_NUMBERS), None
    if kind == "bool":
        return VT.BOOL, rng.random() < 0.5, None
    if kind == "iarr":
        return VT.ARRAY, [rng.choice((0, 1, 4, 64, 2**31)) for _ in range(rng.choice((1, 2, 3, 6, 40)))], rng.choice(_INT_TYPES)
    if kind == "farr":
        return VT.ARRAY, [rng.choice(SPECIAL_NUMBERS) for _ in range(rng.choice((1, 3)))], VT.FLOAT32
    if kind == "sarr":
        return VT.ARRAY, [rng.choice(ODD_STRINGS) for _ in range(rng.choice((0, 1, 3)))], VT.STRING
    if kind == "empty":
        return VT.ARRAY, [], rng.choice((VT.INT32, VT.STRING, VT.FLOAT32))
    if kind == "nested":
        return VT.ARRAY, [], VT.ARRAY
    if kind == "neg":
        return VT.INT32, rng.choice((-1, -(2**31), -64)), None
    return VT.UINT64, rng.choice((2**63, 2**64 - 1, 2**32)), None


def m_wrong_type(doc, rng):
    k = _pick_kv(doc, rng, _arch_kvs)
    k.vtype, k.value, k.etype = _random_value(rng, doc)
    k.type_code = k.etype_code = k.count = k.str_len = k.elem_len = None
    return f"{k.key} := {VT(k.vtype).name}{'/' + VT(k.etype).name if k.etype is not None else ''} {_short(k.value)}"


def m_special_number(doc, rng):
    k = _pick_kv(doc, rng, lambda d: [x for x in _numeric_kvs(d) if x.key.startswith(d.arch + ".")])
    v = rng.choice(SPECIAL_NUMBERS)
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)) and k.vtype not in _FLOAT_TYPES:
        k.vtype = rng.choice(_FLOAT_TYPES)
    elif k.vtype in _INT_TYPES and not _RANGES[VT(k.vtype)][0] <= v <= _RANGES[VT(k.vtype)][1]:
        k.vtype = VT.INT64 if v < 0 else VT.UINT64
    elif k.vtype not in _INT_TYPES and k.vtype not in _FLOAT_TYPES:
        k.vtype = VT.FLOAT32 if isinstance(v, float) else VT.UINT32 if 0 <= v < 2**32 else VT.INT64 if v < 0 else VT.UINT64
        k.etype = None
    k.value = v
    return f"{k.key} := {VT(k.vtype).name} {v!r}"


def m_array_count(doc, rng):
    pool = [k for k in doc.kvs if k.vtype == VT.ARRAY]
    if not pool:
        return m_wrong_type(doc, rng)
    k = rng.choice(pool)
    n = len(k.value)
    k.count = rng.choice((0, n - 1, n + 1, n * 2) + HUGE_COUNTS)
    k.count = max(k.count, 0)
    return f"count of {k.key}={k.count}"


def m_array_elements(doc, rng):
    pool = [k for k in doc.kvs if k.vtype == VT.ARRAY and k.value]
    if not pool:
        return m_wrong_type(doc, rng)
    k = rng.choice(pool)
    k.value = list(k.value)
    op = rng.choice(("set", "set", "shorten", "extend", "retype"))
    if op == "shorten":
        cut = rng.choice((1, 2, len(k.value) // 2, len(k.value)))
        del k.value[len(k.value) - cut:]
        return f"{k.key}: last {cut} elements dropped"
    if op == "extend":
        k.value += k.value[: rng.choice((1, 5))]
        return f"{k.key}: extended to {len(k.value)}"
    if op == "retype":
        k.etype = rng.choice([t for t in _INT_TYPES + _FLOAT_TYPES if t != k.etype] + [VT.STRING])
        if k.etype == VT.STRING:
            k.value = [str(v) for v in k.value]
        elif k.etype not in _FLOAT_TYPES:
            k.value = [v if isinstance(v, (int, bool)) else 0 for v in k.value]
        return f"{k.key}: elements re-encoded as {VT(k.etype).name}"
    i = rng.randrange(len(k.value))
    if k.etype == VT.STRING:
        k.value[i] = rng.choice(ODD_STRINGS + tuple(k.value[:3]))
    elif k.etype in _FLOAT_TYPES:
        k.value[i] = rng.choice((math.nan, math.inf, -math.inf, 1e38))
    else:
        lo, hi = _RANGES.get(VT(k.etype), (0, 1))
        k.value[i] = rng.choice((lo, hi, 0, 5, 7, 8, 255, -1 if lo < 0 else hi))
    return f"{k.key}[{i}] := {_short(k.value[i])}"


def m_vocab(doc, rng):
    """Well-formed but hostile vocabularies: duplicate token texts, merges of random or unknown
    tokens, duplicate merges, specials of another type."""
    tokens = doc.find("tokenizer.ggml.tokens")
    if tokens is None or tokens.vtype != VT.ARRAY or tokens.etype != VT.STRING or len(tokens.value) < 2:
        return m_array_elements(doc, rng)
    tok = tokens.value
    op = rng.choice(("dup_token", "merge_random", "merge_unknown", "dup_merge", "type_of", "empty_token"))
    if op == "dup_token":
        i, j = rng.randrange(len(tok)), rng.randrange(len(tok))
        tok[i] = tok[j]
        return f"tokens[{i}] := tokens[{j}] {_short(tok[j])}"
    if op == "empty_token":
        i = rng.randrange(len(tok))
        tok[i] = ""
        return f"tokens[{i}] := ''"
    if op == "type_of":
        types = doc.find("tokenizer.ggml.token_type")
        if types is None or types.vtype != VT.ARRAY or not types.value:
            return m_array_elements(doc, rng)
        types.value = list(types.value)
        i = rng.randrange(min(len(types.value), 8) if rng.random() < 0.5 else len(types.value))
        types.value[i] = rng.choice((1, 2, 3, 4, 5, 6))
        return f"token_type[{i}] := {types.value[i]}"
    merges = doc.find("tokenizer.ggml.merges")
    if merges is None or merges.vtype != VT.ARRAY or merges.etype != VT.STRING:
        merges = KV("tokenizer.ggml.merges", VT.ARRAY, [], VT.STRING)
        doc.kvs.append(merges)
    merges.value = list(merges.value)
    if op == "merge_random":
        m = f"{rng.choice(tok)} {rng.choice(tok)}"
    elif op == "merge_unknown":
        m = rng.choice(("zz qq", "\u0120 \u0120", "\udcff \udcfe", "<s> </s>", "a  b", " a", "a ", "\u00e9 \u00e9"))
    else:
        m = rng.choice(merges.value) if merges.value else "a b"
    merges.value.insert(rng.randrange(len(merges.value) + 1), m)
    return f"merge {_short(m)} added"


def m_drop_kv(doc, rng):
    k = _pick_kv(doc, rng, _arch_kvs)
    doc.kvs.remove(k)
    return f"dropped {k.key}"


def m_duplicate_kv(doc, rng):
    k = rng.choice(doc.kvs)
    doc.kvs.insert(rng.randrange(len(doc.kvs) + 1), replace(k))
    return f"duplicated {k.key}"


def m_add_kv(doc, rng):
    key = rng.choice(EXTRA_KEYS).format(a=doc.arch)
    old = doc.find(key)
    if old is not None:
        doc.kvs.remove(old)
    if key.endswith("scaling.type"):
        kv = KV(key, VT.STRING, rng.choice(SCALING_TYPES))
    elif key == "tokenizer.ggml.merges":
        kv = KV(key, VT.ARRAY, [rng.choice(("a b", "ab", "", "▁ t", "a b c")) for _ in range(rng.choice((0, 1, 5)))], VT.STRING)
    elif key.endswith(("_token", "add_eos_token")):
        kv = KV(key, VT.BOOL, rng.random() < 0.5)
    elif rng.random() < 0.3:
        vtype, value, etype = _random_value(rng, doc)
        kv = KV(key, vtype, value, etype)
    elif key == "general.alignment":
        kv = KV(key, VT.UINT32, rng.choice((0, 1, 2, 3, 8, 16, 32, 64, 4096, 2**31, 2**32 - 1)))
    else:
        v = rng.choice(SPECIAL_NUMBERS)
        kv = KV(key, VT.FLOAT32 if isinstance(v, float) else VT.UINT32 if 0 <= v < 2**32 else VT.INT64, v)
    doc.kvs.insert(rng.randrange(len(doc.kvs) + 1), kv)
    return f"{key} := {VT(kv.vtype).name} {_short(kv.value)}"


def m_alignment(doc, rng):
    old = doc.find("general.alignment")
    if old is not None:
        doc.kvs.remove(old)
    v = rng.choice((0, 1, 1, 2, 3, 16, 64, 256, 4096, 2**31, 2**32 - 1))
    vtype = VT.UINT32 if rng.random() < 0.85 else rng.choice((VT.UINT64, VT.INT32, VT.STRING, VT.FLOAT32))
    doc.kvs.insert(rng.randrange(len(doc.kvs) + 1), KV("general.alignment", vtype, v if vtype != VT.STRING else str(v)))
    return f"general.alignment := {VT(vtype).name} {v}"


def m_tokenizer_value(doc, rng):
    key, choices = rng.choice((("tokenizer.ggml.model", MODEL_NAMES), ("tokenizer.ggml.pre", PRE_NAMES),
                               ("general.architecture", ARCHS)))
    k = doc.find(key)
    v = rng.choice(choices)
    if k is None:
        doc.kvs.append(KV(key, VT.STRING, v))
    else:
        k.vtype, k.value, k.etype = VT.STRING, v, None
    return f"{key} := {v!r}"


def m_token_id(doc, rng):
    key = rng.choice(("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "eot_token_id"))
    k = doc.find("tokenizer.ggml." + key)
    tokens = doc.find("tokenizer.ggml.tokens")  # an earlier mutation may have made it a number
    n = len(tokens.value) if tokens is not None and isinstance(tokens.value, (list, str)) else 0
    v = rng.choice((n, n - 1, n + 1, 2**32 - 1, 0, 2**31))
    vtype = rng.choice((VT.UINT32, VT.UINT32, VT.INT32, VT.UINT64))
    v = v if _RANGES[vtype][0] <= v <= _RANGES[vtype][1] else -1
    if k is None:
        doc.kvs.append(KV("tokenizer.ggml." + key, vtype, v))
    else:
        k.vtype, k.value, k.etype = vtype, v, None
    return f"tokenizer.ggml.{key} := {v}"


def m_tensor_dims(doc, rng):
    if not doc.tensors:
        return m_header_count(doc, rng)
    t = rng.choice(doc.tensors)
    op = rng.choice(("dim", "dim", "n_dims_lie", "add", "drop", "swap"))
    if op == "n_dims_lie":
        t.n_dims = rng.choice((0, 1, 3, 5, 2**32 - 1))
        return f"n_dims of {t.name} := {t.n_dims}"
    if op == "add":
        t.ne.append(rng.choice((1, 2)))
        return f"{t.name}: ne={t.ne}"
    if op == "drop" and t.ne:
        t.ne.pop()
        return f"{t.name}: ne={t.ne}"
    if op == "swap" and len(t.ne) > 1:
        t.ne.reverse()
        return f"{t.name}: ne={t.ne}"
    if not t.ne:
        t.ne.append(1)
    i = rng.randrange(len(t.ne))
    d = t.ne[i]
    t.ne[i] = rng.choice((0, 1, d * 2, d // 2, d + 1, d + 32, d + 256, 2**32, 2**62, 2**63, 2**64 - 1))
    return f"{t.name}: ne[{i}] {d} -> {t.ne[i]}"


def m_tensor_type(doc, rng):
    if not doc.tensors:
        return m_header_count(doc, rng)
    t = rng.choice(doc.tensors)
    t.type = rng.choice([int(x) for x in GGMLType] + [4, 5, 31, 39, 2**32 - 1])
    return f"type of {t.name} := {t.type}"


def m_tensor_type_same_size(doc, rng):
    """A type whose blocks have the same size (F16/BF16, Q4_0/IQ4_NL, Q3_K/IQ3_S, ...): the
    file stays consistent and the kernels read the blocks as the other type."""
    by_size = {}
    for t, (blck, size) in BLOCK_SIZES.items():
        by_size.setdefault(size / blck, []).append(int(t))

    def per_weight(t):
        blck, size = BLOCK_SIZES.get(GGMLType(t), (1, 0)) if t in GGMLType._value2member_map_ else (1, 0)
        return size / blck

    pool = [t for t in doc.tensors if len(by_size.get(per_weight(t.type), [])) > 1]
    if not pool:
        return m_tensor_type(doc, rng)
    t = rng.choice(pool)
    t.type = rng.choice([x for x in by_size[per_weight(t.type)] if x != t.type])
    return f"type of {t.name} := {GGMLType(t.type).name} (same size)"


def m_tensor_offset(doc, rng):
    if not doc.tensors:
        return m_header_count(doc, rng)
    t = rng.choice(doc.tensors)
    other = rng.choice(doc.tensors).offset
    t.offset = rng.choice((t.offset + 1, t.offset - 1, t.offset + 32, 0, other, 2**63, 2**64 - 1, len(doc.data)))
    t.offset %= 2**64
    return f"offset of {t.name} := {t.offset}"


def m_tensor_name(doc, rng):
    if not doc.tensors:
        return m_header_count(doc, rng)
    t = rng.choice(doc.tensors)
    op = rng.choice(("dup", "rename", "drop", "odd"))
    if op == "dup":
        t.name = rng.choice(doc.tensors).name
    elif op == "rename":
        t.name = rng.choice(("blk.99.attn_q.weight", "blk.-1.ffn_up.weight", "output.weight", "x", "rope_freqs.weight"))
    elif op == "drop":
        doc.tensors.remove(t)
        return f"dropped tensor info {t.name}"
    else:
        t.name = rng.choice(ODD_STRINGS)
    return f"tensor renamed to {_short(t.name)}"


def m_tensor_data(doc, rng):
    """NaN / Inf / huge values in a tensor's data (F32 vectors, or the fp16 scales of blocks)."""
    if not doc.tensor_meta:
        return m_header_count(doc, rng)
    name = rng.choice(sorted(doc.tensor_meta))
    ttype, ne, off, nbytes = doc.tensor_meta[name]
    data = bytearray(doc.data)
    what = rng.choice(("nan", "inf", "huge", "zero", "random"))
    if what == "random":
        r = random.Random(rng.getrandbits(32))
        data[off : off + nbytes] = bytes(r.getrandbits(8) for _ in range(nbytes))
        doc.data = bytes(data)
        return f"data of {name} := random bytes"
    if ttype == GGMLType.F32:
        v = {"nan": math.nan, "inf": math.inf, "huge": 3e38, "zero": 0.0}[what]
        fill = struct.pack("<f", v)
        every = rng.choice((1, 7))
        for p in range(off, off + nbytes, 4 * every):
            data[p : p + 4] = fill
    else:
        bits = {"nan": 0x7E00, "inf": 0x7C00, "huge": 0x7BFF, "zero": 0}[what]
        blck, bsize = BLOCK_SIZES[GGMLType(ttype)]
        step = 2 if blck == 1 else bsize  # F16/BF16 every value; blocks: their leading fp16 scale
        for p in range(off, off + nbytes, step):
            data[p : p + 2] = struct.pack("<H", bits)
    doc.data = bytes(data)
    return f"data of {name} := {what}"


MUTATIONS = {  # name -> (function, weight)
    "header_count": (m_header_count, 3), "version": (m_version, 1), "magic": (m_magic, 1),
    "string_len": (m_string_len, 6), "type_code": (m_type_code, 5), "wrong_type": (m_wrong_type, 12),
    "special_number": (m_special_number, 16), "array_count": (m_array_count, 4),
    "array_elements": (m_array_elements, 10), "vocab": (m_vocab, 8), "drop_kv": (m_drop_kv, 5), "duplicate_kv": (m_duplicate_kv, 2),
    "add_kv": (m_add_kv, 10), "alignment": (m_alignment, 4), "tokenizer_value": (m_tokenizer_value, 4),
    "token_id": (m_token_id, 4), "tensor_dims": (m_tensor_dims, 6), "tensor_type": (m_tensor_type, 4),
    "tensor_type_same_size": (m_tensor_type_same_size, 4),
    "tensor_offset": (m_tensor_offset, 3), "tensor_name": (m_tensor_name, 3), "tensor_data": (m_tensor_data, 5),
}
BYTE_MUTATIONS = ("truncate", "flip", "append")


def _short(v, n: int = 40) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def mutate(doc: Doc, rng: random.Random) -> tuple[bytes, list[str]]:
    """1-3 structural mutations of a copy of doc (sometimes followed by a bytes-level one)."""
    doc = doc.copy()
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    notes = []
    for _ in range(rng.choices((1, 2, 3), (6, 3, 1))[0]):
        name = rng.choices(names, weights)[0]
        notes.append(f"{name}: {MUTATIONS[name][0](doc, rng)}")
    data = doc.serialize()
    if rng.random() < 0.08:
        op = rng.choice(BYTE_MUTATIONS)
        if op == "truncate":
            cut = rng.randrange(len(data))
            data = data[:cut]
            notes.append(f"truncated to {cut} bytes")
        elif op == "append":
            data += bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 31, 100))))
            notes.append("garbage appended")
        else:
            b = bytearray(data)
            head = min(len(b), 4096)  # the header: where a flip changes the structure
            for _ in range(rng.choice((1, 2, 8))):
                p = rng.randrange(head)
                b[p] ^= 1 << rng.randrange(8)
            data = bytes(b)
            notes.append("bytes flipped in the header")
    return data, notes
