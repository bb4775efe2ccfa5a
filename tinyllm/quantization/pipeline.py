"""The `tinyllm quantize` pipeline: read a GGUF, choose each tensor's type, convert, write atomically.

    plan_file(src, type_name, **options)            -> QuantPlan   (nothing converted: --dry-run)
    quantize_file(src, dst, type_name, **options)   -> QuantizeStats

Types come from `rules` (llama-quantize's mixtures, §5); an importance matrix (`imatrix=`,
`imatrix.py`) gives each tensor that has an entry its per-column weights, switches the rules
that look at it and is named in the output's metadata, as llama-quantize does. The block code is the project's
own (the type modules of `tinyllm.quants`, bit-exact with ggml), so a Q4_K_M made here is byte-identical to
llama-quantize's. Tensors are produced one at a time, just before `write_gguf` writes them,
so memory holds one converted tensor at a time; the input stays memory-mapped.

Library code never prints: progress goes to an optional callback, fallbacks and overrides
are in the returned plan, and the summary figures are in QuantizeStats.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import GGUFError, QuantizationError, UsageError
from ..gguf_io import drop_pages
from .rules import (
    FTYPE_ALIASES,
    FTYPES,
    GGML_QNT_VERSION,
    FType,
    ModelHParams,
    QuantOptions,
    QuantPlan,
    TensorPlan,
    check_fits,
    parse_ftype,
    parse_tensor_type_override,
    plan_types,
    type_name,
)
from ..quants.types import FLOAT_TYPES, GGMLType, parse_type

# metadata llama-quantize drops (a quantized file is one shard) or rewrites at the end
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_QNT_KEY, _FTYPE_KEY = "general.quantization_version", "general.file_type"

# rows converted per step: bounds the float32 input in memory to ~64 MiB
_CHUNK_FLOATS = 16 << 20


@dataclass
class TensorDone:
    """What the progress callback gets after each tensor has been converted."""
    index: int  # 1-based position in the output
    count: int  # tensors in the file
    tensor: TensorPlan
    seconds: float  # time spent converting this tensor
    done_bytes: int  # source bytes handled so far (for a progress bar / ETA)
    total_bytes: int


@dataclass
class QuantizeStats:
    src: Path
    dst: Path | None  # None for a dry run
    plan: QuantPlan
    seconds: float  # wall time of the whole conversion and write
    file_nbytes: int  # size of the written file (0 for a dry run)
    threads: int
    imatrix: "Imatrix | None" = None  # the importance matrix used (entries after include/exclude)

    @property
    def src_nbytes(self) -> int:
        return self.plan.src_nbytes

    @property
    def dst_nbytes(self) -> int:
        return self.plan.dst_nbytes

    @property
    def src_bpw(self) -> float:
        return self.plan.bpw(self.plan.src_nbytes)

    @property
    def dst_bpw(self) -> float:
        return self.plan.bpw(self.plan.dst_nbytes)

    @property
    def n_fallback(self) -> int:
        return len(self.plan.fallbacks)


def supported_types() -> tuple[GGMLType, ...]:
    """Types tinyllm can write (the block code's quantizers, F32/F16/BF16 included)."""
    from ..quants.registry import QUANTIZE_TYPES

    return QUANTIZE_TYPES


def default_output_path(src: str | os.PathLike, ftype: FType | str) -> Path:
    """OUT beside IN when none is given: 'gemma-f32.gguf' + Q4_K_M -> 'gemma-Q4_K_M.gguf'.

    A trailing type tag in IN's name (-f32, _F16, .bf16, -Q8_0 ...) is replaced rather than
    kept, so names do not pile up tags; otherwise the tag is appended ('model-Q4_K_M.gguf').
    """
    ftype = ftype if isinstance(ftype, FType) else parse_ftype(ftype)
    src = Path(src)
    stem = src.name[:-5] if src.name.lower().endswith(".gguf") else src.name
    m = _TYPE_TAG.match(stem)
    if m:
        stem = m.group(1)
    return src.with_name(f"{stem}-{ftype.name}.gguf")


# 'name-Q4_K_M', 'name_f16', 'name.bf16': a trailing type tag (longest names first: Q4_K_M before Q4_K)
_TYPE_TAG = re.compile(
    r"(.+?)[-_.](?:%s)$" % "|".join(sorted((*FTYPES, *FTYPE_ALIASES), key=len, reverse=True)), re.IGNORECASE)


def _as_type(t) -> GGMLType | None:
    if t is None or isinstance(t, GGMLType):
        return t
    return parse_type(str(t))


def _options(pure, leave_output_tensor, output_tensor_type, token_embedding_type, tensor_types, imx=None) -> QuantOptions:
    overrides = tuple(
        parse_tensor_type_override(o) if isinstance(o, str) else (str(o[0]), _as_type(o[1]))
        for o in (tensor_types or ())
    )
    return QuantOptions(
        pure=bool(pure),
        leave_output_tensor=bool(leave_output_tensor),
        output_tensor_type=_as_type(output_tensor_type),
        token_embedding_type=_as_type(token_embedding_type),
        tensor_types=overrides,
        has_imatrix=imx is not None,
    )


def _open(src) -> "GGUFFile":
    from ..gguf_io import GGUFFile

    src = Path(src)
    if src.is_dir():
        raise GGUFError(f"{src}: is a directory, not a GGUF file")
    return GGUFFile(src)


def _plan(gf, ftype: FType, opts: QuantOptions, no_fallback: bool) -> QuantPlan:
    hp = ModelHParams.from_metadata(gf.metadata, gf.tensors)
    plan = plan_types(((t.name, t.type, t.shape) for t in gf.tensors.values()), ftype, hp, opts)
    check_fits(plan)
    from ..quants.registry import TYPES

    readable = tuple(t for t in TYPES if t != GGMLType.Q8_K)
    supported = supported_types()
    for t in plan.tensors:
        if t.converts and t.dst_type not in supported:
            names = ", ".join(type_name(s) for s in supported)
            raise QuantizationError(
                f"tensor {t.name}: tinyllm cannot write type {type_name(t.dst_type)} (supported: {names})")
        if t.converts and t.src_type not in readable:
            names = ", ".join(type_name(s) for s in readable)
            raise QuantizationError(
                f"tensor {t.name} is {type_name(t.src_type)}, which tinyllm cannot read back to float "
                f"to convert it (readable: {names})")
    if no_fallback and plan.fallbacks:
        listed = "; ".join(
            f"{t.name} (row length {t.ne[0]}: {type_name(t.fallback_from)} -> {type_name(t.dst_type)})"
            for t in plan.fallbacks)
        raise QuantizationError(
            f"{len(plan.fallbacks)} tensor(s) would need a fallback type because their rows do not fit "
            f"the block size, and --no-fallback was given: {listed}")
    return plan


def _load_imatrix(imatrix, include_weights, exclude_weights) -> "Imatrix | None":
    """The entries llama-quantize would use, or None: no file, or none left after the filters
    (llama-quantize then runs as without an imatrix). Non-finite values are refused."""
    from .imatrix import Imatrix, load_imatrix, select_entries

    if (include_weights or exclude_weights) and imatrix is None:
        raise UsageError("--include-weights / --exclude-weights need an importance matrix (--imatrix)")
    if imatrix is None:
        return None
    imx = imatrix if isinstance(imatrix, Imatrix) else load_imatrix(imatrix)
    if not isinstance(imatrix, Imatrix):
        imx.path = imatrix  # as given: llama-quantize writes the argument itself into the metadata
    imx = select_entries(imx, include_weights, exclude_weights)
    if not imx.entries:
        return None
    for name, e in imx.entries.items():
        w = e.weights()
        if not np.isfinite(w).all():
            bad = float(w[~np.isfinite(w)][0])
            raise QuantizationError(f"{imx.path}: imatrix entry {name} holds a non-finite value ({bad})")
    return imx


def _imatrix_for_tensors(plan: QuantPlan, imx, ftype: FType) -> dict:
    """tensor name -> its quant_weights for every converted tensor that gets some; refuses what
    llama-quantize refuses: a type that needs an imatrix without one (llama-quantize's list and
    every TypeSpec.needs_imatrix), and an entry whose size does not match its tensor."""
    from ..quants.registry import TYPES

    if imx is None:
        if plan.needs_imatrix:
            t = plan.needs_imatrix[0]
            raise QuantizationError(
                f"{ftype.name} needs an importance matrix (--imatrix): tensor {t.name} would be "
                f"{type_name(t.dst_type)}, which llama-quantize does not write without one")
    out = {}
    for t in plan.tensors:
        if not t.converts:
            continue
        w = None if imx is None else imx.weights(t.name)
        if w is not None:
            n_mat = t.ne[2] if len(t.ne) > 2 else 1
            if w.size != t.ne[0] * n_mat:
                if t.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
                    raise QuantizationError(
                        f"{imx.path}: imatrix entry {t.name} has {w.size} values, but the tensor needs "
                        f"{t.ne[0] * n_mat} ({t.ne[0]} columns x {n_mat} matrices)")
                w = None  # llama-quantize warns and quantizes token_embd without one
        spec = TYPES.get(t.dst_type)
        if w is None and imx is not None and t.requires_imatrix:
            raise QuantizationError(
                f"{imx.path}: no importance matrix entry for tensor {t.name}, which {type_name(t.dst_type)} "
                f"needs (a very low-bit quantization)")
        if w is None and spec is not None and spec.needs_imatrix:
            raise QuantizationError(
                f"tensor {t.name}: quantizing to {type_name(t.dst_type)} needs an importance matrix entry "
                f"for it" + ("" if imx is not None else " (--imatrix)"))
        if w is not None:
            out[t.name] = w
            t.imatrix = spec is not None and spec.uses_imatrix
    return out


def plan_file(src, type_name: str | FType, *, pure=False, leave_output_tensor=False, output_tensor_type=None,
              token_embedding_type=None, tensor_types=(), no_fallback=False, imatrix=None,
              include_weights=(), exclude_weights=()) -> QuantPlan:
    """The per-tensor types `quantize_file` would use, without converting anything (--dry-run)."""
    ftype = type_name if isinstance(type_name, FType) else parse_ftype(type_name)
    imx = _load_imatrix(imatrix, include_weights, exclude_weights)
    opts = _options(pure, leave_output_tensor, output_tensor_type, token_embedding_type, tensor_types, imx)
    with _open(src) as gf:
        return _plan(gf, ftype, opts, no_fallback)


def _check_paths(src: Path, dst: Path, force: bool) -> None:
    if dst.exists() or dst.is_symlink():
        try:
            same = os.path.samefile(src, dst)
        except OSError:
            same = False
        if same or src.resolve() == dst.resolve():
            raise UsageError(f"output {dst} is the input file; choose another output path")
        if dst.is_dir():
            raise UsageError(f"output {dst} is a directory; give a file name")
        if not force:
            raise UsageError(f"output {dst} already exists; pass --force to overwrite it")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {dst}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {dst}: directory {parent} is not writable")


def _check_requantize(src: Path, plan: QuantPlan, allow: bool) -> None:
    if allow:
        return
    for t in plan.tensors:
        if t.converts and t.src_type not in FLOAT_TYPES and t.dst_type not in FLOAT_TYPES:
            raise QuantizationError(
                f"{src}: tensor {t.name} is already quantized ({type_name(t.src_type)}); requantizing from "
                f"{type_name(t.src_type)} to {type_name(t.dst_type)} is disabled because it loses quality "
                f"compared with quantizing from F32/F16/BF16 weights. Pass --allow-requantize to do it anyway")



def _c_str127(s: str) -> str:
    """strncpy into llama-quantize's 128-byte override value: at most 127 bytes (of UTF-8)."""
    return s.encode("utf-8", "surrogateescape")[:127].decode("utf-8", "surrogateescape")


def _out_metadata(gf, ftype: FType, imx=None):
    """Input metadata with value types kept; split keys dropped; version and file_type last, as
    llama.cpp, then with an imatrix the four quantize.imatrix.* keys llama-quantize adds."""
    from ..gguf_io import GGUFValueType

    drop = set(_SPLIT_KEYS) | {_QNT_KEY, _FTYPE_KEY}
    extra = {}
    if imx is not None:  # llama-quantize's --override-kv entries: set (moved to the end) in this order
        extra["quantize.imatrix.file"] = (_c_str127(os.fsdecode(imx.path)), GGUFValueType.STRING)
        if imx.datasets:
            extra["quantize.imatrix.dataset"] = (_c_str127(str(imx.datasets[0])), GGUFValueType.STRING)
        extra["quantize.imatrix.entries_count"] = (len(imx.entries), GGUFValueType.UINT32)
        if imx.chunk_count > 0:
            extra["quantize.imatrix.chunks_count"] = (int(imx.chunk_count), GGUFValueType.UINT32)
    drop |= set(extra)
    metadata = {k: v for k, v in gf.metadata.items() if k not in drop}
    value_types = {k: v for k, v in gf.value_types.items() if k not in drop}
    metadata[_QNT_KEY] = GGML_QNT_VERSION
    metadata[_FTYPE_KEY] = ftype.file_type
    value_types[_QNT_KEY] = value_types[_FTYPE_KEY] = (GGUFValueType.UINT32, None)
    for k, (v, vt) in extra.items():
        metadata[k] = v
        value_types[k] = (vt, None)
    return metadata, value_types


def _to_f32(raw: np.ndarray, t: GGMLType, ncols: int) -> np.ndarray:
    """Rows of any readable type -> float32 rows (§3.0: F16/BF16 widen exactly, quants dequantize)."""
    if t == GGMLType.F32:
        return raw.view(np.float32)
    if t == GGMLType.F16:
        return raw.view(np.float16).astype(np.float32)
    if t == GGMLType.BF16:
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    from ..quants.registry import dequantize

    return dequantize(raw, t, (raw.shape[0], ncols))


def _bad_value(x: np.ndarray) -> tuple[int, int, float] | None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return int(r), int(c), float(x[r, c])


def convert_tensor(info, dst_type: GGMLType, threads: int | None = None, imatrix=None) -> np.ndarray:
    """One tensor's data in `dst_type`: uint8 (n_rows, row_nbytes); the mapped bytes when unchanged.

    `imatrix`: the tensor's quant_weights (ne0 per matrix: ne0 * ne2 for an expert tensor, whose
    rows of expert e use slice e), or None. Rows go through in chunks of ~64 MiB of float32,
    never across an expert boundary, and each chunk's input pages are dropped once it is
    converted, so memory holds the output plus one chunk, whatever the tensor's size.
    """
    from ..quants.registry import quantize

    raw = info.data
    if info.type == dst_type:
        return raw
    ncols = info.ne[0] if info.ne else 1
    n_rows = raw.shape[0]
    rows_per_mat = info.ne[1] if len(info.ne) > 1 else 1
    step = max(1, _CHUNK_FLOATS // max(ncols, 1))
    out = None
    r0 = 0
    while r0 < n_rows:
        mat = r0 // rows_per_mat
        r1 = min(n_rows, r0 + step, (mat + 1) * rows_per_mat)
        qw = None if imatrix is None else imatrix[mat * ncols : (mat + 1) * ncols]
        x = _to_f32(raw[r0:r1], info.type, ncols)
        try:
            q = quantize(x, dst_type, threads, imatrix=qw)
        except QuantizationError as e:
            bad = _bad_value(x)
            if bad is None:
                raise QuantizationError(f"tensor {info.name}: {e}") from None
            r, c, v = bad
            raise QuantizationError(
                f"tensor {info.name}: row {r0 + r} holds a non-finite value ({v} at column {c}); "
                f"cannot quantize to {type_name(dst_type)}") from None
        if r0 == 0 and r1 == n_rows:
            return q
        drop_pages(raw[r0:r1])
        if out is None:
            out = np.empty((n_rows, q.shape[1]), np.uint8)
        out[r0:r1] = q
        r0 = r1
    return out


def compile_quantizers(types, on_done: Callable[[int, int], None] | None = None) -> None:
    """Compile the quantizers of `types` on every core before a file's first tensor needs them
    (each compiles for seconds on a first run); on_done(done, total) after each. A no-op once a
    run has compiled them on this CPU (a warm marker in the kernel cache), or where workers
    cannot be forked: each quantizer then compiles when first called, as before."""
    from ..jit import ForkedJobs, can_fork_workers, cpu_count, touch_marker, warm_marker
    from ..quants.registry import quantize

    types = sorted({GGMLType(t) for t in types}, key=int)
    marker = warm_marker("quantize", *(t.name for t in types))
    if not types or marker.exists() or not can_fork_workers():
        return
    jobs = [lambda t=t: quantize(np.zeros((1, 256), np.float32), t, threads=1) for t in types]
    done = [0]

    def step():
        done[0] += 1
        if on_done is not None:
            on_done(done[0], len(jobs))

    if on_done is not None:
        on_done(0, len(jobs))
    with ForkedJobs(jobs, cpu_count()) as work:
        work.wait(step)
    touch_marker(marker)


def quantize_file(src, dst, type_name: str | FType, *, threads: int | None = None, pure=False,
                  leave_output_tensor=False, output_tensor_type=None, token_embedding_type=None,
                  tensor_types=(), allow_requantize=False, no_fallback=False, force=False, dry_run=False,
                  imatrix=None, include_weights=(), exclude_weights=(),
                  progress: Callable[[TensorDone], None] | None = None,
                  on_plan: Callable[[QuantPlan], None] | None = None,
                  on_compile: Callable[[int, int], None] | None = None) -> QuantizeStats:
    """Quantize (or convert to F32/F16/BF16) the GGUF `src` into `dst` with llama-quantize's mixtures.

    type_name: any llama-quantize type name (Q4_K_M, Q3_K_S, Q2_K, IQ4_XS, Q8_0, F16, ... any
    case; `tinyllm quantize --help` lists them); writing needs the block code of every type
    the mixture picks. dst None: `default_output_path(src, type)`. Options mirror
    llama-quantize's flags; see the CLI. imatrix: an importance-matrix file (GGUF or legacy
    format, or an imatrix.Imatrix), its name written as given into quantize.imatrix.file;
    include_weights / exclude_weights: keep only / drop the entries whose name contains one of
    these strings. Refuses (UsageError / QuantizationError / GGUFError, nothing written) when dst
    is src, dst exists without force, the directory cannot be written, the input is quantized
    and the output would be quantized again without allow_requantize, a fallback is needed
    under no_fallback, a tensor holds NaN/Inf, the type needs an imatrix that was not given,
    or an imatrix entry does not fit its tensor. The write is atomic: a failure or Ctrl+C
    leaves no dst and no temp file.
    `on_plan(plan)` is called once every check has passed, before the first tensor is converted;
    `on_compile(done, total)` while a first run compiles the quantizers (compile_quantizers);
    `progress(TensorDone)` after each tensor.
    """
    from ..jit import get_threads, set_threads, threads_setting

    t0 = time.perf_counter()
    ftype = type_name if isinstance(type_name, FType) else parse_ftype(type_name)
    imx = _load_imatrix(imatrix, include_weights, exclude_weights)
    opts = _options(pure, leave_output_tensor, output_tensor_type, token_embedding_type, tensor_types, imx)
    src = Path(src)
    dst = default_output_path(src, ftype) if dst is None else Path(dst)
    if not dry_run:
        _check_paths(src, dst, force)
    if threads is not None:  # validate now; quants.registry.quantize applies it per call
        old = threads_setting()
        set_threads(threads)
        set_threads(old)
    n_threads = threads if threads is not None else get_threads()
    with _open(src) as gf:
        plan = _plan(gf, ftype, opts, no_fallback)
        if dry_run:  # (llama-quantize's dry run checks no imatrix requirement either; the plan lists them)
            return QuantizeStats(src, None, plan, time.perf_counter() - t0, 0, n_threads, imx)
        weights = _imatrix_for_tensors(plan, imx, ftype)
        _check_requantize(src, plan, allow_requantize)
        if on_plan is not None:
            on_plan(plan)
        compile_quantizers({tp.dst_type for tp in plan.tensors if tp.converts and tp.dst_type != GGMLType.F32}, on_compile)
        metadata, value_types = _out_metadata(gf, ftype, imx)
        total = plan.src_nbytes
        done = [0]

        def producer(i: int, tp: TensorPlan):
            def produce():
                if i > 0:  # the previous tensor has been written by now
                    drop_pages(gf.tensors[plan.tensors[i - 1].name].data)
                ts = time.perf_counter()
                data = convert_tensor(gf.tensors[tp.name], tp.dst_type, threads, weights.get(tp.name))
                done[0] += tp.src_nbytes
                if progress is not None:
                    progress(TensorDone(i + 1, len(plan.tensors), tp, time.perf_counter() - ts, done[0], total))
                return data
            return produce

        specs = [(tp.name, tp.dst_type, tp.shape, producer(i, tp)) for i, tp in enumerate(plan.tensors)]
        from ..gguf_io import write_gguf

        try:
            write_gguf(dst, metadata, specs, value_types=value_types, alignment=gf.alignment)
        except OSError as e:
            raise GGUFError(f"cannot write {dst}: {e.strerror or e}") from None
    return QuantizeStats(src, dst, plan, time.perf_counter() - t0, dst.stat().st_size, n_threads, imx)
