"""Importance-matrix files, as llama-imatrix writes and llama-quantize reads them
(kquants-family.md §6.2, §6.3).

GGUF format: `general.type` = "imatrix", `imatrix.datasets` (strings), `imatrix.chunk_count`
and `imatrix.chunk_size` (u32); per weight `<name>` two F32 tensors, `<name>.in_sum2`
(ggml [ne0, nmat]: the raw sums of x² per input column) and `<name>.counts` ([1, nmat]), 1-D
when nmat is 1 (ggml drops trailing 1s). save_imatrix writes the bytes llama-imatrix writes.
Legacy format (`.dat`): int32 entry count; per entry int32 name length, name, int32 ncall,
int32 nval, float32 values = mean(x²) * ncall; then int32 chunk count, int32 length + dataset.
A legacy entry is kept as stored (sums = those values, counts = [ncall], legacy=True), so
that combining files (`tinyllm imatrix --in-file`) rebuilds the raw sums as llama-imatrix does.

    save_imatrix(path, entries, datasets, chunk_count, chunk_size)   entries: name -> ImatrixEntry
    save_imatrix_legacy(path, entries, datasets, chunk_count, chunk_size)   the .dat format
    load_imatrix(path) -> Imatrix     .weights(name): float32 mean of x² per column, as llama-quantize uses
    select_entries(imatrix, include, exclude) -> Imatrix   llama-quantize's --include/--exclude-weights

Computing one from a model and a text: tinyllm/quantization/imatrix_collect.py.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic_file import atomic_write
from ..errors import QuantizationError, UsageError
from ..gguf_io import GGUFFile, GGUFValueType, write_gguf
from ..quants.types import GGMLType

_SUM2, _COUNTS = ".in_sum2", ".counts"


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # float32 (nmat, ne0): Σ x² per input column (per expert for MoE)
    counts: np.ndarray  # (nmat,) activation rows accumulated
    legacy: bool = False  # from a .dat file: sums hold mean(x²)·ncall, counts [ncall]

    def weights(self) -> np.ndarray:
        """llama-quantize's quant_weights, flat (nmat*ne0,) float32: sums / count, 1 where the count
        is not > 0 (a never-routed expert); for a legacy entry values / ncall (unchanged when
        ncall <= 0)."""
        sums = np.asarray(self.sums, np.float32)
        if self.legacy:
            ncall = int(np.asarray(self.counts).reshape(-1)[0]) if np.size(self.counts) else 0
            return (sums / np.float32(ncall) if ncall > 0 else sums).astype(np.float32).reshape(-1)
        c = np.asarray(self.counts, np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(c > 0, sums / np.where(c > 0, c, 1), np.float32(1))
        return w.astype(np.float32).reshape(-1)


@dataclass
class Imatrix:
    path: Path | None  # None for one computed in memory (compute_imatrix)
    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False  # read from a legacy .dat file (chunk_size is then 0)

    def save(self, path) -> None:
        """Write as llama-imatrix's GGUF format (save_imatrix); a legacy Imatrix cannot be saved as is."""
        if self.legacy:
            raise QuantizationError(f"{self.path}: a legacy imatrix must be combined (tinyllm imatrix --in-file) before saving")
        save_imatrix(path, self.entries, self.datasets, self.chunk_count, self.chunk_size)

    def weights(self, name: str) -> np.ndarray | None:
        e = self.entries.get(name)
        return None if e is None else e.weights()


def save_imatrix(path, entries: dict[str, ImatrixEntry], datasets=(), chunk_count: int = 0, chunk_size: int = 0) -> None:
    """Write the GGUF imatrix format, entries sorted by name as llama-imatrix does; atomic."""
    metadata = {
        "general.type": "imatrix",
        "imatrix.datasets": list(datasets),
        "imatrix.chunk_count": int(chunk_count),
        "imatrix.chunk_size": int(chunk_size),
    }
    value_types = {
        "imatrix.datasets": (GGUFValueType.ARRAY, GGUFValueType.STRING),
        "imatrix.chunk_count": (GGUFValueType.UINT32, None),
        "imatrix.chunk_size": (GGUFValueType.UINT32, None),
    }
    tensors = []
    for name in sorted(entries):
        e = entries[name]
        sums = np.ascontiguousarray(e.sums, np.float32)
        counts = np.asarray(e.counts, np.float32).reshape(-1, 1)
        if sums.ndim != 2 or counts.shape[0] != sums.shape[0]:
            raise QuantizationError(f"imatrix entry {name}: sums {sums.shape} do not match counts {counts.shape}")
        if sums.size == 0:
            continue  # llama-imatrix writes no tensors for an entry without values
        # ggml drops trailing dimensions of 1: a dense weight's tensors are 1-D, as llama-imatrix's
        one = sums.shape[0] == 1
        tensors.append((name + _SUM2, GGMLType.F32, sums.shape[1:] if one else sums.shape, sums))
        tensors.append((name + _COUNTS, GGMLType.F32, (1,) if one else counts.shape, counts))
    try:
        write_gguf(path, metadata, tensors, value_types=value_types)
    except OSError as e:
        raise QuantizationError(f"{path}: cannot write imatrix file: {e.strerror or e}") from None


def save_imatrix_legacy(path, entries: dict[str, ImatrixEntry], datasets=(), chunk_count: int = 0, chunk_size: int = 0) -> None:
    """Write the legacy `.dat` format as llama-imatrix --output-format dat does (save_imatrix_legacy):
    entries without any data are left out; ncall = ceil(max count / chunk_size); values
    (sum / count) * ncall in float32, 1 * ncall where a matrix has count 0; the dataset written is
    the last of `datasets`. Atomic."""
    if chunk_size < 1:
        raise QuantizationError(f"{path}: the legacy imatrix format needs a chunk size >= 1, got {chunk_size}")
    out = bytearray()
    kept = [n for n in sorted(entries) if np.asarray(entries[n].counts).size and np.any(np.asarray(entries[n].counts) != 0)]
    out += struct.pack("<i", len(kept))
    for name in kept:
        e = entries[name]
        if e.legacy:
            raise QuantizationError(f"imatrix entry {name}: already in legacy form; combine it first")
        sums = np.asarray(e.sums, np.float32)
        counts = np.asarray(e.counts, np.int64).reshape(-1)
        ncall = (int(counts.max()) + chunk_size - 1) // chunk_size
        c = counts.astype(np.float32).reshape(-1, 1)
        values = np.where(c == 0, np.float32(1), sums.reshape(counts.size, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            values = (values / np.where(c == 0, np.float32(1), c)).astype(np.float32) * np.float32(ncall)
        raw = name.encode("utf-8")
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
        out += values.astype("<f4").tobytes()
    dataset = (list(datasets)[-1] if datasets else "").encode("utf-8")
    out += struct.pack("<ii", int(chunk_count), len(dataset)) + dataset
    _write_atomic(Path(path), bytes(out))


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        with atomic_write(path, fsync=False) as f:
            f.write(data)
    except OSError as e:
        raise QuantizationError(f"{path}: cannot write imatrix file: {e.strerror or e}") from None


def load_imatrix(path) -> Imatrix:
    """Read an imatrix file in GGUF or legacy format; QuantizationError names the file and the problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise QuantizationError(f"{path}: cannot read imatrix file: {e.strerror or e}") from None
    if magic == b"GGUF":
        return _load_gguf(path)
    return _load_legacy(path)


def _load_gguf(path: Path) -> Imatrix:
    with GGUFFile(path) as f:
        md = f.metadata
        if md.get("general.type") != "imatrix":
            raise QuantizationError(f"{path}: not an imatrix file (general.type is {md.get('general.type')!r:.40})")
        for key in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
            if key not in md:
                raise QuantizationError(f"{path}: imatrix metadata key {key} is missing")
        entries = {}
        for tname, info in f.tensors.items():
            if not tname.endswith(_SUM2):
                continue
            name = tname[: -len(_SUM2)]
            cinfo = f.tensors.get(name + _COUNTS)
            if cinfo is None:
                raise QuantizationError(f"{path}: imatrix entry {name} has {tname} but no {name + _COUNTS}")
            if info.type != GGMLType.F32 or cinfo.type != GGMLType.F32:
                raise QuantizationError(f"{path}: imatrix tensors of {name} must be F32")
            sums = np.array(info.array(), np.float32).reshape(-1, info.ne[0])
            counts = np.rint(np.array(cinfo.array(), np.float32).reshape(-1)).astype(np.int64)
            if counts.shape[0] != sums.shape[0]:
                raise QuantizationError(f"{path}: imatrix entry {name}: {sums.shape[0]} matrices but {counts.shape[0]} counts")
            entries[name] = ImatrixEntry(sums, counts)
        return Imatrix(path, entries, list(md["imatrix.datasets"]), int(md["imatrix.chunk_count"]), int(md["imatrix.chunk_size"]))


def _load_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise QuantizationError(f"{path}: truncated imatrix file (legacy format) at byte {pos}")
        v = struct.unpack_from(fmt, data, pos)
        pos += size
        return v

    (n_entries,) = take("<i")
    if not 1 <= n_entries <= len(data) // 16:
        raise QuantizationError(f"{path}: not an imatrix file (legacy entry count {n_entries})")
    entries = {}
    for _ in range(n_entries):
        (n,) = take("<i")
        if not 0 < n <= 4096:
            raise QuantizationError(f"{path}: bad imatrix entry name length {n}")
        name = bytes(take(f"<{n}s")[0]).decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if not 1 <= nval <= (len(data) - pos) // 4:
            raise QuantizationError(f"{path}: imatrix entry {name!r:.60} claims {nval} values")
        values = np.frombuffer(data, np.float32, nval, pos).copy()
        pos += 4 * nval
        # stored as mean * ncall; llama-quantize divides by ncall back (ImatrixEntry.weights)
        entries[name] = ImatrixEntry(values.reshape(1, -1), np.array([ncall], np.int64), legacy=True)
    chunk_count, dataset = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (n,) = take("<i")
            if 0 < n <= len(data) - pos:  # read as a C string: up to the first NUL
                dataset = [data[pos : pos + n].split(b"\0")[0].decode("utf-8", "surrogateescape")]
    return Imatrix(path, entries, dataset, chunk_count, 0, legacy=True)


def select_entries(imatrix: Imatrix, include=(), exclude=()) -> Imatrix:
    """The entries llama-quantize keeps (prepare_imatrix): without those whose name contains any
    `exclude` string, or only those whose name contains an `include` string. Giving both is
    refused, as llama-quantize does."""
    include, exclude = [str(s) for s in include or ()], [str(s) for s in exclude or ()]
    if include and exclude:
        raise UsageError("--include-weights and --exclude-weights cannot be used together")
    entries = imatrix.entries
    if exclude:
        entries = {n: e for n, e in entries.items() if not any(s in n for s in exclude)}
    if include:
        entries = {n: e for n, e in entries.items() if any(s in n for s in include)}
    return Imatrix(imatrix.path, entries, imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size, imatrix.legacy)
