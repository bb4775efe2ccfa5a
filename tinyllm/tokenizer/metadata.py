"""Reading a tokenizer from GGUF metadata (`tokenizer.ggml.*`) with llama.cpp's defaults
(`llama_vocab::impl::load`): which keys a model needs, the ids and flags it assumes when a
key is absent, and one-line errors for values of the wrong type, length or range."""
from __future__ import annotations

import os

import numpy as np

from ..errors import TokenizerError
from ..gguf_io import StringArray
from .vocab import MODELS, show

K = "tokenizer.ggml."
# the kinds llama.cpp knows and tinyllm does not tokenize (yet)
OTHER_MODELS = {"bert": "WordPiece", "t5": "Unigram", "rwkv": "RWKV", "plamo2": "PLaMo-2",
                "hybriddna": "BPE with DNA k-mers", "whitespace": "whitespace-split BPE", "no_vocab": "no vocabulary",
                "none": "no vocabulary"}
# ids a file may give besides BOS/EOS/UNK/EOT/EOM/PAD; the deprecated prefix/suffix/middle
# keys come after the fim_* ones and win, as in llama.cpp's table
FIM_KEYS = (("fim_pre", "fim_pre_token_id"), ("fim_suf", "fim_suf_token_id"), ("fim_mid", "fim_mid_token_id"),
            ("fim_pad", "fim_pad_token_id"), ("fim_rep", "fim_rep_token_id"), ("fim_sep", "fim_sep_token_id"),
            ("fim_pre", "prefix_token_id"), ("fim_suf", "suffix_token_id"), ("fim_mid", "middle_token_id"))


def tokenizer_from_gguf(cls, gguf_file):
    from ..gguf_io import GGUFFile

    if isinstance(gguf_file, (str, os.PathLike)):
        with GGUFFile(gguf_file) as f:
            return tokenizer_from_metadata(cls, f.metadata, str(f.path))
    return tokenizer_from_metadata(cls, gguf_file.metadata, str(gguf_file.path))


def tokenizer_from_metadata(cls, md: dict, source: str):
    model = md.get(K + "model")
    if model is None:
        raise TokenizerError(f"{source}: the file has no tokenizer ({K}model is missing)")
    if not isinstance(model, str):
        raise TokenizerError(f"{source}: {K}model must be a string, got {show(model)}")
    if model not in MODELS:
        kind = f" ({OTHER_MODELS[model]})" if model in OTHER_MODELS else ""
        supported = ", ".join(f"{m} ({k})" for m, k in MODELS.items())
        raise TokenizerError(f"{source}: tokenizer model {show(model)}{kind} is not supported (supported: {supported})")
    tokens = md.get(K + "tokens")
    if tokens is None or (isinstance(tokens, (list, StringArray)) and not len(tokens)):
        raise TokenizerError(f"{source}: {K}tokens is missing or empty")
    if not isinstance(tokens, StringArray) and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        raise TokenizerError(f"{source}: {K}tokens must be an array of strings, got {show(tokens)}")
    n = len(tokens)

    def get_id(key, default):
        v = md.get(K + key)
        if v is None:
            # llama.cpp drops a default id the vocabulary does not have
            return default if default is not None and 0 <= default < n else None
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TokenizerError(f"{source}: {K}{key} must be an integer, got {show(v)}")
        if not 0 <= v < n:
            raise TokenizerError(f"{source}: {K}{key} {int(v)} is out of range (vocabulary has {n} tokens)")
        return int(v)

    def get_flag(key, default):
        v = md.get(K + key)
        if v is None:
            return default
        if not isinstance(v, (bool, np.bool_)):
            raise TokenizerError(f"{source}: {K}{key} must be true or false, got {show(v)}")
        return bool(v)

    def get_str(key):
        v = md.get(key)
        if v is not None and not isinstance(v, str):
            raise TokenizerError(f"{source}: {key} must be a string, got {show(v)}")
        return v or ""

    pre = None
    merges = None
    if model == "llama":
        ids = {"bos": 1, "eos": 2, "unk": 0}
        add_bos, add_space_prefix = True, True
    else:
        from .pretokenizers import pre_tokenizer

        pre = "gemma4" if model == "gemma4" else get_str(K + "pre") or None
        p = pre_tokenizer(pre, source)
        merges = md.get(K + "merges")
        if model == "gemma4":
            ids = {"bos": None, "eos": None, "unk": None}
        else:
            ids = {"bos": None if p.no_bos else 11, "eos": 11, "unk": None}
        add_bos, add_space_prefix = p.add_bos, False
    fim = {}
    for name, key in FIM_KEYS:
        v = get_id(key, None)
        if v is not None:
            fim[name] = v
    add_bos = get_flag("add_bos_token", add_bos)
    if pre is not None and pre_tokenizer(pre, source).kind == "GEMMA4":
        add_bos = True  # llama.cpp forces it for Gemma 4
    return cls(
        tokens,
        md.get(K + "scores"),
        md.get(K + "token_type"),
        model=model,
        merges=merges,
        pre=pre,
        bos_id=get_id("bos_token_id", ids["bos"]),
        eos_id=get_id("eos_token_id", ids["eos"]),
        unk_id=get_id("unknown_token_id", ids["unk"]),
        eot_id=get_id("eot_token_id", None),
        eom_id=get_id("eom_token_id", None),
        pad_id=get_id("padding_token_id", None),
        fim_ids=fim,
        add_bos=add_bos,
        add_eos=get_flag("add_eos_token", False),
        add_space_prefix=get_flag("add_space_prefix", add_space_prefix),
        name=get_str("general.name"),
        arch=get_str("general.architecture"),
        source=source,
    )


def describe_metadata(md: dict) -> str:
    """The tokenizer a file names, for `tinyllm info`, from the metadata alone (nothing is
    built): 'gpt2 (byte-level BPE), pre-tokenizer smollm (SMOLLM)', or what is wrong with it."""
    from .pretokenizers import PRE_NAMES

    model = md.get(K + "model")
    if model is None:
        return "none (tokenizer.ggml.model is missing)"
    if not isinstance(model, str):
        return f"{K}model is {show(model)}, not a string"
    if model not in MODELS:
        kind = f" ({OTHER_MODELS[model]})" if model in OTHER_MODELS else ""
        return f"{show(model)}{kind}, not supported by tinyllm"
    what = f"{model} ({MODELS[model]})"
    if model == "llama":
        return what
    pre = "gemma4" if model == "gemma4" else md.get(K + "pre")
    if pre is None or (isinstance(pre, str) and not pre):
        return f"{what}, pre-tokenizer default (DEFAULT; the file names none)"
    if not isinstance(pre, str) or pre not in PRE_NAMES:  # an array or a number is shown, not tested for truth
        return f"{what}, pre-tokenizer {show(pre)} (unknown to llama.cpp)"
    return f"{what}, pre-tokenizer {pre} ({PRE_NAMES[pre][0]})"
