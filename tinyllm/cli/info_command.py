"""`tinyllm info MODEL`: what a GGUF holds, read from its header only (no weights touched).

Figures follow llama.cpp's print_info: parameters = elements of all tensors, size = their
bytes, BPW = size·8 / parameters; the file type is general.file_type by llama.cpp's name.
"""
from collections import Counter

from ..errors import ModelError, show
from ..printable import printable

KV_VALUE_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}


def register(sub):
    p = sub.add_parser(
        "info",
        help="architecture, parameters, tensor types, size, KV bytes per token",
        description="Show a GGUF model's architecture, parameter count, file type, tensors per "
        "type, size and bits per weight, KV cache bytes per token and context length.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="GGUF file (default: the default model)")
    p.add_argument("-m", "--model", dest="model_opt", metavar="MODEL", help=argparse_suppress())
    p.add_argument("--kv-type", default="f16", metavar="TYPE", help="KV type for the per-token figures (default f16)")
    p.set_defaults(func=run)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def describe(gguf, kv_type: str = "f16") -> list[tuple[str, str]]:
    """(label, value) lines describing the model."""
    from ..bench import format_params, format_size, ftype_name, summarize
    from ..model.config import ModelConfig
    from ..quantization.rules import type_name
    from ..tokenizer.metadata import describe_metadata

    s = summarize(gguf)
    md = gguf.metadata
    tensors = list(gguf.tensors.values())
    lines = [
        ("file", str(gguf.path)),
        ("name", str(md.get("general.name", ""))),
        ("architecture", str(gguf.arch)),
        ("file type", f"{ftype_name(md.get('general.file_type'))} (general.file_type = {md.get('general.file_type')})"),
        ("parameters", f"{format_params(s.n_params)} ({s.n_params:,})"),
        ("size", f"{format_size(s.size)} ({8 * s.size / max(s.n_params, 1):.2f} BPW)"),
    ]
    count = Counter(type_name(t.type) for t in tensors)
    nbytes = Counter()
    for t in tensors:
        nbytes[type_name(t.type)] += int(t.nbytes)
    lines.append(("tokenizer", describe_metadata(md)))
    lines.append(("tensors", str(len(tensors))))
    for name, n in sorted(count.items(), key=lambda kv: -nbytes[kv[0]]):
        lines.append((f"  {name}", f"{n:4d} tensors, {format_size(nbytes[name])}"))
    try:
        cfg = ModelConfig.from_gguf(gguf)
    except ModelError as e:
        lines.append(("runs in tinyllm", f"no: {e}"))
        ctx = md.get(f"{gguf.arch}.context_length")
        if ctx is not None:
            lines.append(("context length", f"{show(ctx)} (trained)"))
        return lines
    lines += [
        ("context length", f"{cfg.n_ctx_train} (trained)"),
        ("layers", str(cfg.n_layer)),
        ("n_embd", str(cfg.n_embd)),
        ("heads", f"{cfg.n_head} query, {cfg.n_head_kv} KV, head size {cfg.head_dim}"),
        ("n_ff", str(cfg.n_ff)),
        ("vocabulary", f"{cfg.n_vocab} ({md.get('tokenizer.ggml.model', 'no tokenizer')})"),
    ]
    per_layer = int(round(2 * cfg.n_embd_kv * KV_VALUE_BYTES[kv_type]))  # K and V of one token
    n_swa = cfg.n_swa_layers if cfg.n_swa else 0
    n_full = cfg.n_layer - n_swa
    if n_swa:
        lines.append(("sliding window", f"{cfg.n_swa} tokens on {n_swa} of {cfg.n_layer} layers"))
        lines.append(
            (
                f"KV bytes per token ({kv_type})",
                f"{per_layer * cfg.n_layer} within the window; {per_layer * n_full} beyond it "
                f"({n_full} full-attention layers x {per_layer}; the {n_swa} window layers keep only "
                f"their last {cfg.n_swa} tokens)",
            )
        )
    else:
        lines.append(
            (f"KV bytes per token ({kv_type})", f"{per_layer * cfg.n_layer} ({cfg.n_layer} layers x {per_layer})")
        )
    for n_ctx in sorted({min(4096, cfg.n_ctx_train), cfg.n_ctx_train}):
        lines.append((f"KV cache at n_ctx {n_ctx} ({kv_type})", f"{_kv_mib(cfg, n_ctx, per_layer):.2f} MiB"))
    return lines


def _kv_mib(cfg, n_ctx: int, per_layer: int) -> float:
    """llama.cpp's allocation (§3.2/§3.3): n_ctx padded to 256 cells; Gemma's window layers
    get PAD_256(min(n_ctx, n_swa + n_ubatch 512)) cells."""
    cells = -(-n_ctx // 256) * 256
    n_swa = cfg.n_swa_layers if cfg.n_swa else 0
    swa_cells = min(cells, -(-(cfg.n_swa + 512) // 256) * 256) if n_swa else 0
    return (per_layer * (cfg.n_layer - n_swa) * cells + per_layer * n_swa * swa_cells) / 2**20


def run(args):
    from ..default_model import resolve_model
    from ..gguf_io import GGUFFile
    from .options import parse_kv_type

    kv_type = parse_kv_type(args.kv_type)
    path = resolve_model(args.model or args.model_opt)
    with GGUFFile(path) as g:
        lines = describe(g, kv_type)
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(printable(f"{k:<{width}} = {v}"))  # names and tensor types come from the file
    return 0
