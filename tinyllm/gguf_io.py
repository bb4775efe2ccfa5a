"""Fast GGUF reading and atomic writing (architectures.md §1).

Reading: `GGUFFile(path)` parses the header once (metadata and tensor-info records) and maps
the file; each tensor's bytes are a zero-copy view of one read-only `np.memmap`. String arrays
(262,144 tokens in Gemma) are parsed in one tight pass, so opening takes milliseconds where
gguf-py's GGUFReader takes seconds. Every length read from the file is checked against the
bytes left before anything is allocated, so a corrupt file gives a GGUFError, not a hang.

Writing: `write_gguf(path, metadata, tensors)` streams tensors one by one (a tensor's data may
be a callable, so a quantizer produces it just before it is written) into a temp file beside
`path` and renames it into place only when everything was written.

File layout (little-endian):

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv    x  key:str | value_type u32 | value
    n_tens  x  name:str | n_dims u32 | ne[0..n_dims) u64 | ggml_type u32 | offset u64
    zero padding to `alignment`
    tensor data: each tensor at data_offset + offset, offsets = running sum of padded sizes
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .atomic_file import atomic_write
from .errors import GGUFError, show
from .quants.types import BLOCK_SIZES, GGMLType

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# fixed-size value types -> little-endian numpy dtype
_NP_DTYPES: dict[GGUFValueType, np.dtype] = {
    GGUFValueType.UINT8: np.dtype("u1"),
    GGUFValueType.INT8: np.dtype("i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("?"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
_STRUCTS = {
    t: struct.Struct("<" + c)
    for t, c in zip(
        (GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
         GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32, GGUFValueType.BOOL,
         GGUFValueType.UINT64, GGUFValueType.INT64, GGUFValueType.FLOAT64),
        "BbHhIif?Qqd",
    )
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")



def _id_ranges(ids) -> str:
    """[0, 1, 2, 3, 6, 7] -> '0-3, 6-7' (GGMLType's ids, for a short message)."""
    ids, out = sorted(ids), []
    for i in ids:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out)


_KNOWN_TYPE_IDS = _id_ranges(int(t) for t in GGMLType)
_FLOAT_ARRAY_DTYPES = {GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.BF16: np.uint16}


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def tensor_nbytes(t: GGMLType, ne: Iterable[int]) -> int:
    """Bytes of a tensor of type t with ggml dims ne (ne[0] a multiple of the block size)."""
    blck, size = BLOCK_SIZES[t]
    return math.prod(ne) // blck * size


class TensorInfo:
    """One tensor-info record plus zero-copy access to its bytes.

    `shape` is numpy order (token_embd: (262144, 640)); `ne` is ggml order (640, 262144).
    `offset` is absolute in the file. `data` is a read-only uint8 view (n_rows, row_nbytes).
    """

    __slots__ = ("name", "type", "shape", "ne", "offset", "nbytes", "_file")

    def __init__(self, name: str, type: GGMLType, ne: tuple[int, ...], offset: int, nbytes: int, file: "GGUFFile"):
        self.name = name
        self.type = type
        self.ne = ne
        self.shape = tuple(reversed(ne))
        self.offset = offset
        self.nbytes = nbytes
        self._file = file

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)

    @property
    def row_nbytes(self) -> int:
        return tensor_nbytes(self.type, self.ne[:1] or (1,))

    @property
    def data(self) -> np.ndarray:
        n_rows = math.prod(self.ne[1:])
        flat = self._file._data_map()[self.offset : self.offset + self.nbytes]
        return flat.reshape(n_rows, self.row_nbytes)

    def array(self) -> np.ndarray:
        """Typed zero-copy view in numpy shape: F32 -> float32, F16 -> float16, BF16 -> uint16."""
        dtype = _FLOAT_ARRAY_DTYPES.get(self.type)
        if dtype is None:
            raise GGUFError(
                f"{self._file.path}: tensor {self.name!r} is {self.type.name}; array() gives a typed "
                f"view only for F32, F16 and BF16 (use .data for the raw blocks)"
            )
        flat = self._file._data_map()[self.offset : self.offset + self.nbytes]
        return flat.view(dtype).reshape(self.shape)

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {self.type.name}, shape={self.shape}, offset={self.offset})"


class _Cursor:
    """Bounds-checked little-endian reads over the mapped file; every error names the file."""

    def __init__(self, buf, size: int, path: Path):
        self.buf = buf
        self.size = size
        self.pos = 0
        self.path = path

    def fail(self, what: str):
        raise GGUFError(f"{self.path}: {what}")

    def need(self, n: int, what: str):
        if n > self.size - self.pos:
            self.fail(
                f"truncated header: {what} needs {n} bytes at offset {self.pos} "
                f"but only {self.size - self.pos} are left"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        v = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, f"{what} ({n} bytes)")
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        # surrogateescape keeps any non-UTF-8 bytes, so writing the value back is lossless
        return s.decode("utf-8", "surrogateescape")

    def string_array(self, count: int, what: str) -> "StringArray":
        # Pass 1 only finds where each string starts (~40 ms for Gemma's 262,144 tokens),
        # with no bounds checks in the loop: an overrun shows up as struct.error or as an
        # end past the file, and then a checked pass names the bad element.
        buf, pos = self.buf, self.pos
        unpack = _U64.unpack_from
        starts = [0] * count
        try:
            for i in range(count):
                pos += 8
                starts[i] = pos
                pos += unpack(buf, pos - 8)[0]
        except (struct.error, OverflowError):  # OverflowError: a length past 2**63
            pos = self.size + 1
        if pos > self.size:
            self._string_array_overrun(count, what)
        begin, self.pos = self.pos, pos
        if count == 0:
            return StringArray(b"", np.zeros(0, np.int64))
        return _string_region(buf, begin, pos, np.array(starts, dtype=np.int64))

    def _string_array_overrun(self, count: int, what: str):
        for i in range(count):
            n = self.u64(f"length of {what}[{i}]")
            self.need(n, f"{what}[{i}] ({n} bytes)")
            self.pos += n

    def scalar(self, vtype: GGUFValueType, what: str):
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        st = _STRUCTS[vtype]
        self.need(st.size, what)
        v = st.unpack_from(self.buf, self.pos)[0]
        self.pos += st.size
        if vtype == GGUFValueType.BOOL:
            return bool(v)
        return v

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        n = count * dtype.itemsize
        self.need(n, f"{what} ({count} elements)")
        # copy: metadata arrays are small and must outlive the parse map
        a = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += n
        return a


def _string_region(buf, begin: int, end: int, starts: np.ndarray) -> "StringArray":
    """The strings of one GGUF string array whose bytes start at `starts` (absolute) in
    buf[begin:end], each preceded by its u64 length, as a StringArray: the length fields are
    cut out with one mask, nothing is decoded yet."""
    region = np.frombuffer(buf, dtype=np.uint8, count=end - begin, offset=begin)
    rel = starts - begin
    lens = np.append(rel[1:] - 8, len(region)) - rel
    is_text = np.ones(len(region), dtype=bool)
    is_text[(rel[:, None] - 8 + np.arange(8)).reshape(-1)] = False
    return StringArray(region[is_text].tobytes(), lens)


class StringArray(Sequence):
    """A read-only list of str kept as one UTF-8 bytes object and the end offset of each
    string; an item is decoded when it is read. GGUF string arrays are held this way, since
    262,144 Python strs (Gemma's vocabulary) cost ~20 MiB and these bytes ~2.5 MiB. Non-UTF-8
    bytes decode with surrogateescape, so writing the value back is lossless.

    Compares equal to any sequence of the same strs (`f.metadata[k] == ["a", "b"]`)."""

    def __init__(self, data: bytes, lengths: np.ndarray):
        self.data = data
        self.ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
        if len(self.ends) and self.ends[-1] != len(data):
            raise ValueError(f"string lengths sum to {int(self.ends[-1])}, but there are {len(data)} bytes")

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> "StringArray":
        enc = [s.encode("utf-8", "surrogateescape") for s in strings]
        return cls(b"".join(enc), np.array([len(b) for b in enc], dtype=np.int64))

    def lengths(self) -> np.ndarray:
        """Byte length of each string (int64)."""
        return np.diff(self.ends, prepend=0)

    def item_bytes(self, i: int) -> bytes:
        """The UTF-8 bytes of string i (0 <= i < len)."""
        return self.data[int(self.ends[i - 1]) if i else 0 : int(self.ends[i])]

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self.ends)
        if not -n <= i < n:
            raise IndexError(f"string index {i} out of range for {n} strings")
        return self.item_bytes(i % n).decode("utf-8", "surrogateescape")

    def __iter__(self):
        # pure ASCII: one decode, then slices (byte and character offsets agree)
        text = self.data.decode("ascii") if self.data.isascii() else None
        start = 0
        for end in self.ends.tolist():
            yield text[start:end] if text is not None else self.data[start:end].decode("utf-8", "surrogateescape")
            start = end

    def __eq__(self, other):
        if isinstance(other, StringArray):
            return self.data == other.data and np.array_equal(self.ends, other.ends)
        if isinstance(other, (list, tuple, Sequence)) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"StringArray([{head}{', ...' if len(self) > 3 else ''}], {len(self)} strings)"


class GGUFFile:
    """A parsed, memory-mapped GGUF file (architectures.md §1). Use as a context manager.

    Attributes: path, version, alignment, data_offset (absolute start of the tensor data),
    metadata (key -> int/float/bool/str, StringArray (a read-only list of str) for string arrays, np.ndarray for numeric
    arrays), value_types (key -> (GGUFValueType, element GGUFValueType or None)), tensors
    (name -> TensorInfo, in file order), arch (general.architecture or None).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._map: np.memmap | None = None
        self._closed = False
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 24:
                    raise GGUFError(f"{self.path}: truncated header: file is {size} bytes, a GGUF header needs 24")
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    self._parse(_Cursor(mm, size, self.path), size)
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot read file: {e.strerror or e}") from None

    # -- parsing ------------------------------------------------------------------------------

    def _parse(self, c: _Cursor, size: int):
        magic = c.buf[0:4]
        if magic != GGUF_MAGIC:
            c.fail(f"not a GGUF file: magic is {magic!r}, expected b'GGUF'")
        c.pos = 4
        version = c.u32("version")
        if version & 0xFFFF == 0:
            c.fail(
                f"big-endian GGUF files are not supported (version field reads {version:#x}); "
                f"only little-endian GGUF v2/v3 is"
            )
        if version not in (2, 3):
            c.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
        self.version = version
        n_tensors = c.u64("tensor count")
        n_kv = c.u64("metadata count")
        # smallest possible records: kv = key len 8 + type 4 + 1-byte value; tensor = 8+4+4+8
        for count, what, least in ((n_kv, "metadata count", 13), (n_tensors, "tensor count", 24)):
            if count * least > size - c.pos:
                c.fail(
                    f"truncated or corrupt header: {what} {count} needs at least {count * least} bytes, "
                    f"but only {size - c.pos} are left"
                )

        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}
        for i in range(n_kv):
            key = c.string(f"key of metadata entry {i}")
            if key in self.metadata:
                c.fail(f"duplicate metadata key {show(key)}")
            vtype = self._value_type(c, c.u32(f"type of {show(key)}"), key)
            if vtype == GGUFValueType.ARRAY:
                etype = self._value_type(c, c.u32(f"element type of {show(key)}"), key)
                count = c.u64(f"element count of {show(key)}")
                if etype == GGUFValueType.ARRAY:
                    c.fail(f"metadata {show(key)} is a nested array, which is not supported")
                min_size = 8 if etype == GGUFValueType.STRING else _NP_DTYPES[etype].itemsize
                if count * min_size > size - c.pos:
                    c.fail(
                        f"truncated or corrupt header: metadata {show(key)} claims {count} elements of "
                        f"{etype.name}, more than the {size - c.pos} bytes left in the file"
                    )
                if etype == GGUFValueType.STRING:
                    value = c.string_array(count, key)
                else:
                    value = c.array(_NP_DTYPES[etype], count, key)
                self.value_types[key] = (vtype, etype)
            else:
                value = c.scalar(vtype, f"value of {show(key)}")
                self.value_types[key] = (vtype, None)
            self.metadata[key] = value

        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.metadata:
            a = self.metadata["general.alignment"]
            if self.value_types["general.alignment"][0] != GGUFValueType.UINT32 or a <= 0 or a & (a - 1):
                c.fail(f"general.alignment must be a uint32 power of two, got {show(a)}")
            self.alignment = a

        infos = []
        for i in range(n_tensors):
            name = c.string(f"name of tensor {i}")
            n_dims = c.u32(f"n_dims of tensor {show(name)}")
            if n_dims > MAX_DIMS:
                c.fail(f"tensor {show(name)} has {n_dims} dimensions (at most {MAX_DIMS} supported)")
            ne = tuple(c.u64(f"dims of tensor {show(name)}") for _ in range(n_dims))
            type_id = c.u32(f"type of tensor {show(name)}")
            offset = c.u64(f"offset of tensor {show(name)}")
            infos.append((name, ne, type_id, offset))
        self.data_offset = _align(c.pos, self.alignment) if n_tensors else c.pos

        self.tensors: dict[str, TensorInfo] = {}
        expected = 0
        for name, ne, type_id, offset in infos:
            if name in self.tensors:
                c.fail(f"duplicate tensor name {show(name)}")
            try:
                ttype = GGMLType(type_id)
            except ValueError:
                c.fail(f"tensor {show(name)} has unknown or unsupported ggml type id {type_id} (known: {_KNOWN_TYPE_IDS})")
            blck = BLOCK_SIZES[ttype][0]
            row = ne[0] if ne else 1
            if row % blck:
                c.fail(
                    f"tensor {show(name)} of type {ttype.name} has row length ne[0]={row}, "
                    f"not a multiple of the block size {blck}"
                )
            if any(d >= 1 << 62 for d in ne) or math.prod(ne) >= 1 << 62:
                c.fail(f"tensor {show(name)} has absurd dimensions {list(ne)}")
            nbytes = tensor_nbytes(ttype, ne)
            if offset != expected:
                c.fail(
                    f"tensor {show(name)} has data offset {offset}, expected {expected} "
                    f"(offsets must be the running sum of sizes padded to {self.alignment})"
                )
            start = self.data_offset + offset
            if nbytes and start >= size:
                c.fail(f"tensor {show(name)} starts at byte {start}, past the end of the file ({size} bytes)")
            if start + nbytes > size:
                c.fail(
                    f"truncated tensor data: tensor {show(name)} needs bytes {start}..{start + nbytes} "
                    f"but the file has only {size} bytes"
                )
            self.tensors[name] = TensorInfo(name, ttype, ne, start, nbytes, self)
            expected = _align(offset + nbytes, self.alignment)
        if infos and size - (self.data_offset + expected) >= self.alignment:
            # Writers pad the data to the alignment and stop: more bytes after the last tensor
            # mean the data was laid out with another alignment (or offsets), and reading it
            # as declared would read shifted bytes.
            c.fail(
                f"the tensor data ends at byte {self.data_offset + expected} but the file has {size} bytes; "
                f"general.alignment {self.alignment} does not match how the data was written"
            )

    def _value_type(self, c: _Cursor, code: int, key: str) -> GGUFValueType:
        try:
            return GGUFValueType(code)
        except ValueError:
            c.fail(f"metadata {show(key)} has unknown value type {code} (known: 0..12)")

    # -- access -------------------------------------------------------------------------------

    def _data_map(self) -> np.memmap:
        if self._map is None:
            if self._closed:
                raise GGUFError(f"{self.path}: file is closed")
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map

    @property
    def arch(self) -> str | None:
        return self.metadata.get("general.architecture")

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def close(self):
        # Views handed out keep their own reference to the map, so they stay valid;
        # new views can no longer be made.
        self._map = None
        self._closed = True

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, arch={self.arch!r}, {len(self.tensors)} tensors, {len(self.metadata)} keys)"


# -- writing ----------------------------------------------------------------------------------

_NP_TO_VALUE_TYPE = {dt: t for t, dt in _NP_DTYPES.items()}


def _infer_scalar_type(value, key: str) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, np.generic):
        vt = _NP_TO_VALUE_TYPE.get(value.dtype.newbyteorder("<") if value.dtype.itemsize > 1 else value.dtype)
        if vt is None:
            raise GGUFError(f"metadata {show(key)}: unsupported numpy type {value.dtype}")
        return vt
    if isinstance(value, int):
        # llama.cpp reads counts and token ids as uint32, so that is the default for ints
        if 0 <= value < 1 << 32:
            return GGUFValueType.UINT32
        if -(1 << 31) <= value < 0:
            return GGUFValueType.INT32
        if 0 <= value < 1 << 64:
            return GGUFValueType.UINT64
        if -(1 << 63) <= value < 0:
            return GGUFValueType.INT64
        raise GGUFError(f"metadata {show(key)}: integer {value} does not fit 64 bits")
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    raise GGUFError(f"metadata {show(key)}: cannot store a value of type {type(value).__name__}")


def _infer_type(value, key: str) -> tuple[GGUFValueType, GGUFValueType | None]:
    if isinstance(value, np.ndarray):
        dt = value.dtype
        vt = _NP_TO_VALUE_TYPE.get(dt.newbyteorder("<") if dt.itemsize > 1 else dt)
        if vt is None:
            raise GGUFError(f"metadata {show(key)}: unsupported array dtype {dt}")
        return GGUFValueType.ARRAY, vt
    if isinstance(value, StringArray):
        return GGUFValueType.ARRAY, GGUFValueType.STRING
    if isinstance(value, (list, tuple)):
        if not value:
            raise GGUFError(f"metadata {show(key)}: cannot infer the element type of an empty list; give value_types")
        first = value[0]
        if isinstance(first, str):
            return GGUFValueType.ARRAY, GGUFValueType.STRING
        if isinstance(first, (bool, np.bool_)):
            return GGUFValueType.ARRAY, GGUFValueType.BOOL
        if isinstance(first, (int, np.integer)):
            return GGUFValueType.ARRAY, GGUFValueType.INT32  # as gguf-py does
        if isinstance(first, (float, np.floating)):
            return GGUFValueType.ARRAY, GGUFValueType.FLOAT32
        raise GGUFError(f"metadata {show(key)}: cannot store a list of {type(first).__name__}")
    return _infer_scalar_type(value, key), None


def _encode_string(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return _U64.pack(len(b)) + b


def _encode_string_array(a: StringArray) -> bytes:
    """Each string as u64 length + bytes, for all of them at once (the inverse of _string_region)."""
    lens = a.lengths()
    out = np.empty(8 * len(lens) + len(a.data), np.uint8)
    is_len = np.zeros(len(out), dtype=bool)
    field_at = np.arange(len(lens)) * 8 + (a.ends - lens)
    is_len[(field_at[:, None] + np.arange(8)).reshape(-1)] = True
    out[is_len] = lens.astype("<u8").view(np.uint8)
    out[~is_len] = np.frombuffer(a.data, np.uint8)
    return out.tobytes()


def _encode_value(key: str, value, vtype: GGUFValueType, etype: GGUFValueType | None) -> bytes:
    try:
        if vtype == GGUFValueType.STRING:
            if not isinstance(value, str):
                raise TypeError(f"expected str, got {type(value).__name__}")
            return _encode_string(value)
        if vtype == GGUFValueType.ARRAY:
            if etype is None or etype == GGUFValueType.ARRAY:
                raise TypeError(f"array element type {etype!r} is not supported")
            if etype == GGUFValueType.STRING and isinstance(value, StringArray):
                return _U32.pack(etype) + _U64.pack(len(value)) + _encode_string_array(value)
            if etype == GGUFValueType.STRING:
                items = list(value)
                return _U32.pack(etype) + _U64.pack(len(items)) + b"".join(_encode_string(s) for s in items)
            arr = np.asarray(value)
            if arr.ndim != 1:
                raise TypeError(f"arrays must be 1-D, got shape {arr.shape}")
            dt = _NP_DTYPES[etype]
            conv = arr.astype(dt)
            if etype != GGUFValueType.BOOL and np.issubdtype(dt, np.integer) and not np.array_equal(conv, arr):
                raise TypeError(f"values do not fit {etype.name}")
            return _U32.pack(etype) + _U64.pack(len(conv)) + conv.tobytes()
        if vtype == GGUFValueType.BOOL:
            return b"\x01" if value else b"\x00"
        st = _STRUCTS[vtype]
        if np.issubdtype(_NP_DTYPES[vtype], np.integer) and int(value) != value:
            raise TypeError(f"{value!r} is not an integer")
        return st.pack(value)
    except (TypeError, ValueError, OverflowError, struct.error, KeyError) as e:
        raise GGUFError(f"metadata {show(key)}: cannot write {value!r:.80} as {vtype.name}: {e}") from None


TensorSpec = tuple[str, GGMLType, tuple[int, ...], "np.ndarray | Callable[[], np.ndarray]"]


def write_gguf(
    path: str | os.PathLike,
    metadata: dict[str, Any],
    tensors: list[TensorSpec],
    *,
    value_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] | None = None,
    alignment: int | None = None,
) -> None:
    """Write a GGUF v3 file atomically.

    metadata: key -> value, written in dict order. Types come from `value_types` when given
    (e.g. `GGUFFile.value_types`, to copy a file's metadata exactly); otherwise inferred:
    bool -> BOOL, int -> UINT32 (INT32 if negative, 64-bit if large), float -> FLOAT32,
    str -> STRING, list[str] -> ARRAY of STRING, list of ints -> ARRAY of INT32, list of floats
    -> ARRAY of FLOAT32, np.ndarray -> ARRAY of its dtype.
    tensors: (name, GGMLType, shape in numpy order, data or a callable returning data), in file
    order. Data is an array of exactly the tensor's bytes (raw uint8 blocks, or float32/float16
    for F32/F16); callables are called one by one just before their tensor is written.
    alignment: data alignment; default `general.alignment` from metadata, else 32.
    On any exception (KeyboardInterrupt included) the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    value_types = value_types or {}
    md_align = metadata.get("general.alignment")
    if alignment is None:
        alignment = int(md_align) if md_align is not None else DEFAULT_ALIGNMENT
    elif md_align is not None and int(md_align) != alignment:
        raise GGUFError(f"{path}: alignment={alignment} conflicts with general.alignment={md_align} in the metadata")
    if alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"{path}: alignment must be a power of two, got {alignment}")
    metadata = dict(metadata)
    if alignment != DEFAULT_ALIGNMENT and md_align is None:
        metadata["general.alignment"] = alignment
        value_types = {**value_types, "general.alignment": (GGUFValueType.UINT32, None)}

    # header + metadata + tensor infos are built in memory first: their size fixes data_offset
    kv = []
    for key, value in metadata.items():
        if key in value_types:
            vtype, etype = value_types[key]
            vtype = GGUFValueType(vtype)
            etype = None if etype is None else GGUFValueType(etype)
        else:
            vtype, etype = _infer_type(value, key)
        if key == "general.alignment" and vtype != GGUFValueType.UINT32:
            raise GGUFError(f"{path}: general.alignment must be UINT32, got {vtype.name}")
        kv.append(_encode_string(key) + _U32.pack(vtype) + _encode_value(key, value, vtype, etype))

    infos = []
    layout = []  # (name, type, shape, nbytes, data)
    offset = 0
    seen = set()
    for spec in tensors:
        try:
            name, ttype, shape, data = spec
        except (TypeError, ValueError):
            raise GGUFError(f"{path}: a tensor entry must be (name, type, shape, data), got {spec!r:.80}") from None
        if name in seen:
            raise GGUFError(f"{path}: duplicate tensor name {show(name)}")
        seen.add(name)
        try:
            ttype = GGMLType(ttype)
        except ValueError:
            raise GGUFError(f"{path}: tensor {show(name)} has unsupported type {ttype!r}") from None
        shape = tuple(int(d) for d in shape)
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise GGUFError(f"{path}: tensor {show(name)} has bad shape {shape} (at most {MAX_DIMS} dims, none negative)")
        ne = tuple(reversed(shape))
        blck = BLOCK_SIZES[ttype][0]
        if (ne[0] if ne else 1) % blck:
            raise GGUFError(
                f"{path}: tensor {show(name)} of type {ttype.name} has row length {ne[0]}, "
                f"not a multiple of the block size {blck}"
            )
        nbytes = tensor_nbytes(ttype, ne)
        infos.append(
            _encode_string(name)
            + _U32.pack(len(ne))
            + b"".join(_U64.pack(d) for d in ne)
            + _U32.pack(ttype)
            + _U64.pack(offset)
        )
        layout.append((name, ttype, shape, nbytes, data))
        offset = _align(offset + nbytes, alignment)

    header = GGUF_MAGIC + _U32.pack(GGUF_VERSION) + _U64.pack(len(infos)) + _U64.pack(len(kv))
    head = header + b"".join(kv) + b"".join(infos)

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(head)
        if layout:
            f.write(b"\0" * (_align(len(head), alignment) - len(head)))
        for name, ttype, shape, nbytes, data in layout:
            if callable(data):
                data = data()
            buf = _tensor_bytes(path, name, ttype, shape, nbytes, data)
            f.write(buf)
            f.write(b"\0" * (_align(nbytes, alignment) - nbytes))


def _tensor_bytes(path: Path, name: str, ttype: GGMLType, shape, nbytes: int, data) -> memoryview:
    if not isinstance(data, np.ndarray):
        raise GGUFError(f"{path}: tensor {show(name)}: data must be a numpy array, got {type(data).__name__}")
    if ttype in _FLOAT_ARRAY_DTYPES and data.dtype != np.uint8:
        want = np.dtype(_FLOAT_ARRAY_DTYPES[ttype])
        if data.dtype != want:
            raise GGUFError(f"{path}: tensor {show(name)} is {ttype.name} but its data is {data.dtype} (need {want} or raw uint8)")
        data = data.astype(want.newbyteorder("<"), copy=False)
    if data.nbytes != nbytes:
        raise GGUFError(
            f"{path}: tensor {show(name)} ({ttype.name}, shape {shape}) needs {nbytes} bytes of data, got {data.nbytes}"
        )
    return memoryview(np.ascontiguousarray(data)).cast("B")


def drop_pages(view: np.ndarray) -> None:
    """Done with (part of) a mapped tensor: drop its pages from this process, so that RSS does
    not keep counting bytes already used (a repacked weight, a converted tensor). The data stays
    in the page cache and on disk; touching it again just maps it back."""
    root = view  # the array made directly on the mmap (slices of an np.memmap are np.memmaps too)
    while root is not None and not isinstance(getattr(root, "base", None), mmap.mmap):
        root = root.base
    if root is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    mm = root.base
    # np.memmap maps from an allocation-granularity boundary; its array starts `skew` bytes in
    skew = getattr(root, "offset", 0) % mmap.ALLOCATIONGRANULARITY
    addr = lambda a: a.__array_interface__["data"][0]
    start = addr(view) - addr(root) + skew
    end = start + view.nbytes
    start -= start % mmap.PAGESIZE
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):
        pass  # only an optimisation
