"""One exception root for everything a user can get wrong; `cli.main` prints these as one line."""


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
