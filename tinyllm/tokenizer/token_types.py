"""Token types (`tokenizer.ggml.token_type`): llama.cpp's LLAMA_TOKEN_TYPE_* values, which
sentencepiece's piece types share."""
from enum import IntEnum


class TokenType(IntEnum):
    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6
