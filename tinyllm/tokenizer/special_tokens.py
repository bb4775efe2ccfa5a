"""llama.cpp's special-token rules by token text (`llama_vocab::impl::load`): which tokens end a
turn or a generation, which FIM tokens it recognizes, the token types it forces, and the
strip attributes it gives some models' special tokens. GGUF files do not carry these; llama.cpp
finds them by text, and so does tinyllm.

Where several of a list's texts are in one vocabulary, llama.cpp takes whichever its hash map
yields first; tinyllm takes the first in list order. Only which id is called "eot" (or
"fim_pad"...) can differ: every EOT text is also an EOG text, so the EOG set is the same.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .token_types import TokenType

# id key -> texts that give it when the file names no such id (each found token becomes CONTROL)
DETECTED = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
            "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# texts that always end a generation (each found token becomes CONTROL)
EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
)
# gpt-oss: always rendered, matched even without parse_special
ALWAYS_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")
EOT_TEXTS = DETECTED["eot"]


def apply_text_rules(
    find: Callable[[str], int | None], text_of: Callable[[int], str], types: np.ndarray, ids: dict[str, int | None]
) -> set[int]:
    """llama.cpp's rules by text, in its order. `ids` (eos, eot, eom, fim_* -> id or None, from
    the file) gets the ids found by text; `types` (int32 per token) gets the forced types.
    Returns the end-of-generation ids. find: text -> id or None; text_of: id -> text."""
    for key, texts in DETECTED.items():
        if ids.get(key) is None:
            for text in texts:
                i = find(text)
                if i is not None:
                    ids[key] = i
                    types[i] = TokenType.CONTROL
                    break
    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids.get(k) is not None}
    for text in EOG_TEXTS:
        i = find(text)
        if i is not None:
            eog.add(i)
            types[i] = TokenType.CONTROL
    for text in ALWAYS_USER_DEFINED:
        i = find(text)
        if i is not None:
            types[i] = TokenType.USER_DEFINED
    eog |= {ids[k] for k in ("eos", "eot", "eom") if ids.get(k) is not None}

    by_text = {text_of(i): i for i in sorted(eog)}
    # o200k_harmony and solar-open: <|end|> ends a message, not the generation
    has_call = "<|call|>" in by_text or "<|calls|>" in by_text
    if "<|end|>" in by_text and has_call and ("<|return|>" in by_text or "<|flush|>" in by_text):
        end = by_text["<|end|>"]
        eog.discard(end)
        types[end] = TokenType.USER_DEFINED
    # Gemma 4 and PLaMo: </s> is an ordinary token there
    if "</s>" in by_text and ("<|tool_response>" in by_text or "<|plamo:eos|>" in by_text):
        s = by_text["</s>"]
        eog.discard(s)
        types[s] = TokenType.NORMAL
    return eog


def strip_attributes(name: str, pre: str, arch: str, types: np.ndarray, find: Callable[[str], int | None]) -> tuple[set[int], set[int]]:
    """llama.cpp's per-model LSTRIP / RSTRIP token attributes (set by general.name,
    tokenizer.ggml.pre or general.architecture): (lstrip ids, rstrip ids). A stripping special
    token takes the whitespace on that side of it when it is split out of a text."""
    name = name.lower()
    lstrip: set[int] = set()
    rstrip: set[int] = set()
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
        s in arch for s in ("nomic-bert-moe", "jina-bert-v3")
    ):
        i = find("<mask>")
        if i is not None:
            lstrip.add(i)
    elif "phi-3" in name or "phi3" in name:
        special = np.isin(types, (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN))
        rstrip.update(np.flatnonzero(special).tolist())
        for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
            i = find(text)
            if i is not None:
                (rstrip.add if on else rstrip.discard)(i)
    elif "modern-bert" in name:
        i = find("[MASK]")
        if i is not None:
            lstrip.add(i)
    return lstrip, rstrip
