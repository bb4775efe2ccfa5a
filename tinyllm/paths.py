"""Where tinyllm keeps what it makes once per machine: the assembled default models and the
compiled kernels. `$TINYLLM_CACHE`, else `$XDG_CACHE_HOME/tinyllm`, else `~/.cache/tinyllm`."""
import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("TINYLLM_CACHE"):
        return Path(os.environ["TINYLLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinyllm"
