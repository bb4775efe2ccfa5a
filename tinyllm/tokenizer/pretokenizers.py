"""llama.cpp's pre-tokenizers: which `tokenizer.ggml.pre` names it accepts, the
LLAMA_VOCAB_PRE_TYPE each selects with the options `llama_vocab::impl::load` sets for it, and
the regex list each type splits text with (the llm_tokenizer_bpe constructor). The regexes
are llama.cpp's strings exactly: unicode_split recognizes some of them by their text and runs
its hand-written splitters for those, as llama.cpp does.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TokenizerError
from .vocab import show

# pre-tokenizer type -> the regexes llama.cpp applies in order
REGEXES: dict[str, tuple[str, ...]] = {
    'LLAMA3': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'JAIS2': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
    ),
    **dict.fromkeys(('DBRX', 'SMAUG'), (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    )),
    'DEEPSEEK_LLM': (
        '[\r\n]',
        r'\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+',
        '\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+',
        r'\s+$',
        '[一-龥ࠀ-一가-\ud7ff]+',
        r'\p{N}+',
    ),
    **dict.fromkeys(('DEEPSEEK3_LLM', 'HUNYUAN_DENSE', 'JOYAI_LLM', 'HY_V4'), (
        r'\p{N}{1,3}',
        '[一-龥\u3040-ゟ゠-ヿ]+',
        '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+',
    )),
    'SPARK2_5': (
        r'\p{N}{1,3}',
        '[一-龥\u3040-ゟ゠-ヿ]+',
        '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+',
        r'\p{N}',
    ),
    'YOUTU': (
        '[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥\u3040-ゟ゠-ヿ]+',
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'DEEPSEEK_CODER': (
        '[\r\n]',
        r'\s?\p{L}+',
        r'\s?\p{P}+',
        '[一-龥ࠀ-一가-\ud7ff]+',
        r'\p{N}',
    ),
    'FALCON': (
        r'[\p{P}\$\+<=>\^~\|`]+',
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        '[0-9][0-9][0-9]',
    ),
    **dict.fromkeys(('STARCODER', 'REFACT', 'COMMAND_R', 'SMOLLM', 'CODESHELL', 'EXAONE', 'MINERVA', 'MELLUM2'), (
        r'\p{N}',
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    )),
    **dict.fromkeys(('GPT2', 'MPT', 'OLMO', 'JAIS', 'TRILLION', 'GRANITE_DOCLING'), (
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    )),
    **dict.fromkeys(('STABLELM2', 'QWEN2', 'HUNYUAN', 'SOLAR_OPEN'), (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    )),
    'QWEN35': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    **dict.fromkeys(('PORO', 'BLOOM', 'GPT3_FINNISH'), (
        r' ?[^(\s|.,!?…。，、।۔،)]+',
    )),
    'CHATGLM4': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'VIKING': (
        r' ?[^(\s|.,!?…。，、।۔،)]+',
        r'\p{N}',
    ),
    'TEKKEN': (
        r'[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+',
    ),
    'CHAMELEON': (
        '<sentinel:[0-9]+>',
        '(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z',
        r'([\t\n]|    |  )',
        r'\p{N}',
        r'[\p{P}!-/:-@\[-`{-~]',
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    ),
    **dict.fromkeys(('GPT4O', 'MINIMAX_M2'), (
        r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    )),
    'GRANITE_EMB_MULTI': (
        r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'TINY_AYA': (
        r'\d{1,3}(?=(?:\d{3})*\b)',
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'KIMI_K2': (
        r'\p{Han}+',
    ),
    'SUPERBPE': (
        r'\p{N}+',
        r'(?=(\d{3})+(?!\d))',
    ),
    'BAILINGMOE': (
        r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    ),
    'SEED_CODER': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'UFAKZEKA': (
        r'[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+',
    ),
    'GROK_2': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'AFMOE': (
        r'\p{AFMoE_digits}',
        '[一-鿿㐀-䶿豈-\ufaff\u3040-ゟ゠-ヿ･-ﾟ⼀-\u2fdfเ-\u0e7f\u0e80-\u0effក-\u17ffက-႟ꩠ-ꩿꧠ-\ua9ff가-\ud7afᄀ-ᇿ]+',
        '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
    ),
    'LAGUNA': (
        r'[^\n]+|[\n]+',
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'EXAONE_MOE': (
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
    ),
    'GEMMA4': (
        r'[^\n]+|[\n]+',
    ),
    'SARVAM_MOE': (
        r'[^\n]+|[\n]+',
    ),
    'MINICPM5': (
        r'\p{N}{1,3}',
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    'WHITESPACE': (
        r'\S+',
    ),
    'DEFAULT': (
        r'[\p{P}\$\+<=>\^~\|]+',
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        r'\p{N}+',
        '[0-9][0-9][0-9]',
    ),
}
# types whose words go to the merges as raw UTF-8 (byte_encode = false): SPM-style BPE
RAW_UTF8 = frozenset({"GEMMA4", "SARVAM_MOE", "WHITESPACE"})


@dataclass(frozen=True)
class PreTokenizer:
    """What a `tokenizer.ggml.pre` name means to llama.cpp.

    kind: the LLAMA_VOCAB_PRE_TYPE (without the prefix); regexes: its split regexes;
    byte_encode: words are mapped to GPT-2 byte characters before merging;
    ignore_merges: a word that is a whole token is that token (Llama 3, Tekken, GLM-4...);
    clean_spaces: detokenize removes the space before ?!., and in " 's" style contractions;
    add_bos: the default of add_bos_token when the file does not set it;
    escape_whitespaces: spaces become U+2581 before splitting (SPM-style BPE);
    no_bos: the default BOS id is dropped (ChatGLM, GLM-4), unless the file names one.
    """

    name: str
    kind: str
    ignore_merges: bool = False
    clean_spaces: bool = True
    add_bos: bool = False
    escape_whitespaces: bool = False
    no_bos: bool = False

    @property
    def regexes(self) -> tuple[str, ...]:
        return REGEXES[self.kind]

    @property
    def byte_encode(self) -> bool:
        return self.kind not in RAW_UTF8


def _names(kind: str, names: str, **options) -> dict[str, tuple[str, dict]]:
    return {n: (kind, options) for n in names.split()}


# tokenizer.ggml.pre -> (type, options), in the order of llama.cpp's load()
PRE_NAMES: dict[str, tuple[str, dict]] = {
    **_names("DEFAULT", "default"),
    **_names("MINICPM5", "minicpm5", ignore_merges=True),
    **_names("LLAMA3", "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
             ignore_merges=True, add_bos=True),
    **_names("DEEPSEEK_LLM", "deepseek-llm", clean_spaces=False),
    **_names("DEEPSEEK_CODER", "deepseek-coder", clean_spaces=False),
    **_names("DEEPSEEK3_LLM", "deepseek-v3", clean_spaces=False),
    **_names("SPARK2_5", "spark2_5", clean_spaces=False),
    **_names("YOUTU", "youtu", clean_spaces=False, ignore_merges=True),
    **_names("FALCON", "falcon"),
    **_names("MPT", "mpt"),
    **_names("STARCODER", "starcoder"),
    **_names("GPT2", "gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert"),
    **_names("JAIS2", "jais-2"),
    **_names("GEMMA4", "gemma4 granite-embed-multi-311m", escape_whitespaces=True),
    **_names("SARVAM_MOE", "sarvam-moe", escape_whitespaces=True, clean_spaces=False),
    **_names("GPT2", "jina-v1-en jina-v2-code roberta-bpe"),  # llama.cpp also sets add_sep (not used to tokenize)
    **_names("WHITESPACE", "whitespace"),
    **_names("REFACT", "refact"),
    **_names("COMMAND_R", "command-r", clean_spaces=False),
    **_names("QWEN2", "qwen2 deepseek-r1-qwen kormo f2llmv2", clean_spaces=False),
    **_names("QWEN35", "qwen35", clean_spaces=False),
    **_names("STABLELM2", "stablelm2"),
    **_names("OLMO", "olmo"),
    **_names("DBRX", "dbrx"),
    **_names("SMAUG", "smaug-bpe"),
    **_names("PORO", "poro-chat", clean_spaces=False),
    **_names("CHATGLM4", "chatglm-bpe", no_bos=True),
    **_names("CHATGLM4", "glm4 glm5", no_bos=True, ignore_merges=True),
    **_names("VIKING", "viking", clean_spaces=False),
    **_names("JAIS", "jais"),
    **_names("TEKKEN", "tekken", clean_spaces=False, ignore_merges=True, add_bos=True),
    **_names("SMOLLM", "smollm", clean_spaces=False),
    **_names("CODESHELL", "codeshell"),
    **_names("BLOOM", "bloom"),
    **_names("GPT3_FINNISH", "gpt3-finnish"),
    **_names("EXAONE", "exaone"),
    **_names("GPT2", "exaone4"),
    **_names("EXAONE_MOE", "exaone-moe"),
    **_names("CHAMELEON", "chameleon", add_bos=True, clean_spaces=False),
    **_names("MINERVA", "minerva-7b"),
    **_names("QWEN2", "megrez"),
    **_names("GPT4O", "gpt-4o llama4 kanana2 talkie", clean_spaces=False),
    **_names("GRANITE_EMB_MULTI", "granite-embed-multi-97m", clean_spaces=False, ignore_merges=True),
    **_names("TINY_AYA", "tiny_aya cohere2moe", clean_spaces=False),
    **_names("SUPERBPE", "superbpe", clean_spaces=False),
    **_names("TRILLION", "trillion", clean_spaces=False),
    **_names("GRANITE_DOCLING", "granite-docling", clean_spaces=False),
    **_names("BAILINGMOE", "bailingmoe bailingmoe2 llada-moe", clean_spaces=False),
    **_names("SEED_CODER", "seed-coder", clean_spaces=False),
    **_names("HUNYUAN", "hunyuan", clean_spaces=False),
    **_names("HUNYUAN_DENSE", "hunyuan-dense", clean_spaces=False),
    **_names("HY_V4", "hy_v4", clean_spaces=False),
    **_names("JOYAI_LLM", "joyai-llm", clean_spaces=False),
    **_names("KIMI_K2", "kimi-k2", clean_spaces=False),
    **_names("UFAKZEKA", "ufakzeka", clean_spaces=False),
    **_names("GROK_2", "grok-2", clean_spaces=False),
    **_names("AFMOE", "afmoe", clean_spaces=False),
    **_names("LAGUNA", "laguna", clean_spaces=False),
    **_names("MINIMAX_M2", "minimax-m2", clean_spaces=False),
    **_names("SOLAR_OPEN", "solar-open", clean_spaces=False),
    **_names("MELLUM2", "mellum2"),
}


def pre_tokenizer(name: str | None, source: str = "vocabulary") -> PreTokenizer:
    """The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = name (None or "": llama.cpp's
    'default', with its warning that quality will suffer)."""
    if not name:
        return PreTokenizer("default", "DEFAULT")
    entry = PRE_NAMES.get(name)
    if entry is None:
        shown = show(name)
        raise TokenizerError(
            f"{source}: tokenizer.ggml.pre = {shown} is not a pre-tokenizer llama.cpp knows "
            f"({len(PRE_NAMES)} names such as llama-bpe, qwen2, gpt-2, smollm; all in tinyllm.tokenizer.pretokenizers)"
        )
    kind, options = entry
    return PreTokenizer(name, kind, **options)

