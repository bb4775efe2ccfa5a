"""llama.cpp's pre-tokenizer split (`unicode_regex_split`, src/unicode.cpp), exactly.

llama.cpp splits a text fragment into words with a list of regexes applied one after the
other, each to every piece the previous ones left. A regex is run one of three ways:

- a hand-written splitter, when the regex is one of a few known strings (GPT-2, Llama 3,
  Qwen2, Qwen3.5, Kimi-K2, AFMoE digits, newline runs). Here each is a Python regex over
  the *collapsed* text below, equivalent to the C++ loop step by step (tests/split_oracle.py
  holds a plain transcription of the loops; the tests compare the two);
- std::regex over the collapsed text when the regex uses \\p{..} categories: every code point
  >= 128 becomes one byte naming its class (whitespace 0x0B, number 0xD1, letter 0xD2,
  punctuation 0xD3, mark 0xD4, symbol 0xD5, other 0xD0) and \\p{X} becomes a bracket of that
  byte plus the ASCII members of X;
- std::wregex over the code points otherwise, with non-ASCII whitespace replaced by 0x0B.

Classes come from llama.cpp's own Unicode table (unicode_classes.py), not from Python's
unicodedata, which is another Unicode version. The two std::regex paths are ECMAScript
regexes in the C locale; `ecma_to_python` rewrites them for Python's re with re.ASCII, whose
\\s, \\d, \\w and \\b are the C locale's. Matching semantics are the same (leftmost-first
backtracking; a search after an empty match must not match empty at the same place).
"""
from __future__ import annotations

import functools
import re
from itertools import accumulate

import numpy as np

from .unicode_classes import RUNS

# collapsed byte per class, as llama.cpp's unicode_regex_split
COLLAPSED = {"C": 0xD0, "N": 0xD1, "L": 0xD2, "P": 0xD3, "M": 0xD4, "S": 0xD5, "W": 0x0B}
HAN_LETTER, HAN_OTHER = 0xD6, 0xD7  # Kimi-K2 only: Han code points (letters or not)
# llama.cpp's unicode_cpt_is_han
HAN_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)

# the categories llama.cpp collapses, and the ASCII members it adds to each in a bracket
CATEGORY_OF = {
    r"\p{N}": "N", r"\p{L}": "L", r"\p{P}": "P", r"\p{M}": "M", r"\p{S}": "S",
    r"\p{Lu}": "L", r"\p{Ll}": "L", r"\p{Lt}": "L", r"\p{Lm}": "L", r"\p{Lo}": "L",
}
ASCII_MEMBERS = {
    "N": "0-9",
    "L": "A-Za-z",
    "P": "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}",
    "M": "",
    "S": "\\$\\+<->^`\\|\\~",
}


@functools.cache
def code_point_classes() -> np.ndarray:
    """uint8 class letter (b'C', b'N', b'L', b'P', b'M', b'S', b'W') of every code point."""
    items = "".join(RUNS).split()
    starts = np.array([int(it[:-1], 16) for it in items] + [0x110000], np.int64)
    letters = np.frombuffer("".join(it[-1] for it in items).encode("ascii"), np.uint8)
    return np.repeat(letters, np.diff(starts))


@functools.cache
def _collapse_table(han: bool) -> np.ndarray:
    classes = code_point_classes()
    out = np.zeros(len(classes), np.uint8)
    for letter, byte in COLLAPSED.items():
        out[classes == ord(letter)] = byte
    if han:
        for lo, hi in HAN_RANGES:
            seg = slice(lo, hi + 1)
            out[seg] = np.where(classes[seg] == ord("L"), HAN_LETTER, HAN_OTHER)
    out[:128] = np.arange(128)  # ASCII stays itself
    return out


def collapse(text: str, han: bool = False) -> str:
    """One character per code point of `text`: ASCII as it is, any other code point the byte
    of its class (as a latin-1 character). `han`: Han code points get their own bytes."""
    if text.isascii():
        return text
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return _collapse_table(han)[cps].tobytes().decode("latin-1")


@functools.cache
def _wide_map() -> dict[int, int]:
    ws = np.flatnonzero(code_point_classes() == ord("W"))
    return {int(c): 0x0B for c in ws if c >= 128}


def widen(text: str) -> str:
    """The text std::wregex sees: non-ASCII whitespace replaced by 0x0B."""
    return text if text.isascii() else text.translate(_wide_map())


# -- ECMAScript (std::regex, C locale) -> Python re --------------------------------------------

_CONTROL_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}
_CLASS_ESCAPES = set("sSdDwW")


def _lit(c: str) -> str:
    """A literal character for Python's re (in or out of brackets)."""
    return "\\" + c if c.isascii() and not c.isalnum() and c != "_" else c


def _escape(p: str, i: int, in_class: bool) -> tuple[str, bool, int]:
    """The escape at p[i] (a backslash): (python text, is a class escape, next index)."""
    if i + 1 >= len(p):
        raise ValueError("trailing backslash")
    c = p[i + 1]
    if c in _CLASS_ESCAPES:
        return "\\" + c, True, i + 2
    if c in "bB" and not in_class:
        return "\\" + c, True, i + 2
    if c == "b":  # backspace inside brackets, as in Python
        return "\\x08", False, i + 2
    if c in _CONTROL_ESCAPES:
        return _lit(_CONTROL_ESCAPES[c]), False, i + 2
    if c == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", p[i + 2 : i + 4]):
        return _lit(chr(int(p[i + 2 : i + 4], 16))), False, i + 4
    if c == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", p[i + 2 : i + 6]):
        return _lit(chr(int(p[i + 2 : i + 6], 16))), False, i + 6
    if c.isdigit() or c.isalpha():
        raise ValueError(f"unsupported escape \\{c}")
    return _lit(c), False, i + 2


def ecma_to_python(p: str) -> str:
    """Rewrite an ECMAScript regex for Python's re (compiled with re.ASCII): `$` is the end
    of input, `.` excludes \\r and \\n, bracket members are re-escaped so that Python reads
    them as ECMAScript does."""
    out: list[str] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            text, _, i = _escape(p, i, False)
            out.append(text)
        elif c == "[":
            i += 1
            neg = i < n and p[i] == "^"
            i += neg
            items: list[str] = []
            while i < n and p[i] != "]":
                if p[i] == "\\":
                    lo, is_class, i = _escape(p, i, True)
                else:
                    lo, is_class, i = _lit(p[i]), False, i + 1
                if not is_class and i + 1 < n and p[i] == "-" and p[i + 1] != "]":
                    if p[i + 1] == "\\":
                        hi, hi_class, j = _escape(p, i + 1, True)
                        if hi_class:
                            raise ValueError("a class escape ends a range")
                    else:
                        hi, j = _lit(p[i + 1]), i + 2
                    items.append(f"{lo}-{hi}")
                    i = j
                else:
                    items.append(lo)
            if i >= n:
                raise ValueError("unterminated bracket")
            i += 1
            if items:
                out.append(("[^" if neg else "[") + "".join(items) + "]")
            else:  # ECMAScript's [] matches nothing, [^] any character
                out.append(r"[\s\S]" if neg else "(?!)")
        elif c == "$":
            out.append(r"\Z")
            i += 1
        elif c == "^":
            out.append(r"\A")
            i += 1
        elif c == ".":
            out.append(r"[^\n\r]")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def collapse_regex(expr: str) -> str:
    """llama.cpp's rewrite of \\p{X} for the collapsed text: a bracket of X's byte and its
    ASCII members (no extra bracket inside one). Its bracket tracking is kept as it is."""
    out: list[str] = []
    inside = False
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            out.append("[")
            inside = True
        elif inside and c == "]" and expr[i - 1] != "\\":
            out.append("]")
            inside = False
        elif c == "\\" and i + 3 < n and expr[i + 1] == "p" and expr[i + 2] == "{":
            close = expr.find("}", i + 3)
            cat = CATEGORY_OF.get(expr[i : close + 1]) if 0 <= close <= i + 10 else None
            if cat is None:
                out.append(c)
            else:
                body = chr(COLLAPSED[cat]) + ASCII_MEMBERS[cat]
                out.append(body if inside else f"[{body}]")
                i = close
        else:
            out.append(c)
        i += 1
    return "".join(out)


# -- the hand-written splitters, as regexes over the collapsed text ----------------------------

_L, _N, _M = "A-Za-z\xd2", "0-9\xd1", "\xd4"
_CONTRACTION_CI = "'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])"  # unicode_tolower is ASCII here
_ANY = r"|[\s\S]"  # the loops' "no match: one character" (unreachable, kept for safety)

CUSTOM_PATTERNS = {
    "gpt2": rf"'(?:[stmd]|re|ve|ll)| ?[{_L}]+| ?[{_N}]+| ?[^\s{_L}{_N}]+|\s+(?!\S)|\s+" + _ANY,
    "llama3": rf"{_CONTRACTION_CI}|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]{{1,3}}| ?[^\s{_L}{_N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" + _ANY,
    "qwen2": rf"{_CONTRACTION_CI}|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]| ?[^\s{_L}{_N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" + _ANY,
    "qwen35": (
        rf"{_CONTRACTION_CI}|[^\r\n{_L}{_N}]?[{_L}{_M}]+|[{_N}]| ?[^\s{_L}{_M}{_N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" + _ANY
    ),
    # on the Han-marked collapsed text: \xd6 Han letter, \xd7 other Han code point
    "kimi_k2": (
        rf"[\xd6\xd7]+|[^\r\n{_L}\xd6{_N}]?[{_L}]+(?:{_CONTRACTION_CI})?|[{_N}]{{1,3}}"
        rf"| ?[^\s{_L}\xd6{_N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" + _ANY
    ),
    "newlines": r"[^\n]+|\n+",
}

# llama.cpp's unicode_regex_split_custom: regex text -> hand-written splitter
CUSTOM_EXPRS = {
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)": "gpt2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama3",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama3",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen35",
    r"\p{Han}+": "kimi_k2",
    r"\p{AFMoE_digits}": "afmoe_digits",
    r"[^\n]+|[\n]+": "newlines",
    r"\d{1,3}(?=(?:\d{3})*\b)": "afmoe_digits",  # tiny_aya: llama.cpp reuses the AFMoE splitter
}

_NUMBER_RUN = re.compile(f"[{_N}]+")


class _Step:
    """One regex of a pre-tokenizer: how to run it on the text's pieces."""

    def __init__(self, expr: str):
        self.expr = expr
        self.custom = CUSTOM_EXPRS.get(expr)
        self.subject = "collapsed"
        self.pattern = None
        self.slice = False  # run on a copy of each piece (\b, \B, ^ must see piece edges)
        if self.custom == "afmoe_digits":
            return
        if self.custom is not None:
            self.pattern = re.compile(CUSTOM_PATTERNS[self.custom], re.ASCII)
            self.subject = "han" if self.custom == "kimi_k2" else "collapsed"
            return
        if any(cat in expr for cat in CATEGORY_OF):
            if not expr.isascii():
                raise ValueError("a regex with both unicode categories and non-ASCII characters")
            source = ecma_to_python(collapse_regex(expr))
        else:
            self.subject = "wide"
            source = ecma_to_python(expr)
        self.pattern = re.compile(source, re.ASCII)
        self.slice = bool(re.search(r"\\[bB]|\\A", source))

    def pieces(self, subject: str, start: int, end: int) -> list[int]:
        """End offsets of the pieces this regex cuts subject[start:end] into (empty pieces
        are dropped: they hold no text and give no tokens)."""
        if self.custom == "afmoe_digits":
            return _afmoe_digits(subject, start, end)
        if self.custom is not None:  # the loops cover every character
            if start == 0 and end == len(subject):
                return list(accumulate(map(len, self.pattern.findall(subject))))
            return [m.end() for m in self.pattern.finditer(subject, start, end)]
        # std::regex_iterator: matches, and the unmatched text between them, are pieces
        ends: list[int] = []
        last = start
        if self.slice:
            found = ((start + m.start(), start + m.end()) for m in self.pattern.finditer(subject[start:end]))
        else:
            found = (m.span() for m in self.pattern.finditer(subject, start, end))
        for a, b in found:
            if a > last:
                ends.append(a)
            if b > a:
                ends.append(b)
            last = b
        if last < end:
            ends.append(end)
        return ends


def _afmoe_digits(subject: str, start: int, end: int) -> list[int]:
    """llama.cpp's AFMoE digit splitter: a run of numbers is cut into groups of three from the
    right; the text before a run goes with the run's first group; text after the last run is
    one piece."""
    ends: list[int] = []
    for m in _NUMBER_RUN.finditer(subject, start, end):
        a, b = m.span()
        first = a + ((b - a) % 3 or 3)
        ends.extend(range(first, b + 1, 3))
    if not ends or ends[-1] < end:
        ends.append(end)
    return ends


class Splitter:
    """A pre-tokenizer: llama.cpp's regex list for one LLAMA_VOCAB_PRE_TYPE, compiled."""

    def __init__(self, exprs: tuple[str, ...]):
        self.exprs = tuple(exprs)
        self.steps = [_Step(e) for e in self.exprs]

    def split(self, text: str) -> list[str]:
        """The words of `text`, in order; together they are `text`."""
        if not text:
            return []
        subjects: dict[str, str] = {}
        bounds = [len(text)]  # end offset of each piece
        for step in self.steps:
            kind = step.subject
            if kind not in subjects:
                subjects[kind] = (
                    collapse(text) if kind == "collapsed" else collapse(text, han=True) if kind == "han" else widen(text)
                )
            subject = subjects[kind]
            new: list[int] = []
            start = 0
            for end in bounds:
                new.extend(step.pieces(subject, start, end))
                start = end
            bounds = new
        words = []
        start = 0
        for end in bounds:
            words.append(text[start:end])
            start = end
        return words
