"""One exception root for everything a user can get wrong; `cli.main` prints these as one line."""

from .printable import printable

SHOW_LIMIT = 60  # characters of a value quoted in a message


def show(value, limit: int = SHOW_LIMIT) -> str:
    """A value for a one-line message: repr with every control character escaped, truncated
    to `limit` characters; numpy arrays and string arrays by their length and type. A corrupt
    file's key, name or string may be megabytes of anything: quote it only through this."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and type {value.dtype}"
    if type(value).__name__ == "StringArray":  # gguf_io's; not imported here (it imports us)
        return f"an array of {len(value)} strings"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"a list of {len(value)} values"
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of megabytes would cost time before the cut
        text = repr(value)[:-1]
    else:
        text = repr(value)
    # repr escapes a str's control characters, not those of every object's repr
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TinyLLMError(Exception):
    """Base of every error tinyllm raises on purpose (bad file, bad value, unsupported model)."""


class GGUFError(TinyLLMError):
    """A GGUF file that cannot be read or written: the message names the file and the problem."""


class QuantizationError(TinyLLMError):
    """Data that cannot be quantized (NaN/Inf, a row length that does not fit the block size)."""


class ModelError(TinyLLMError):
    """A model tinyllm cannot run: unsupported architecture, missing tensor, wrong shape or type."""


class TokenizerError(TinyLLMError):
    """A vocabulary tinyllm cannot tokenize with (for example a GPT-2 BPE vocabulary)."""


class ContextFullError(TinyLLMError):
    """The prompt plus generation would pass n_ctx."""


class UsageError(TinyLLMError):
    """A bad command-line or API value: the message names the value and what is accepted."""


class ModelBusyError(UsageError):
    """A model (its KV cache) used from a second thread while another thread is generating with it."""
