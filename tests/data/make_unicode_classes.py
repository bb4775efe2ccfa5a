"""Write tinyllm/tokenizer/unicode_classes.py: the character class of every code point as
llama.cpp's pre-tokenizer sees it, run-length encoded.

    python tests/data/make_unicode_classes.py PATH/TO/llama.cpp/src/unicode-data.cpp

llama.cpp does not ask the C library or Python for Unicode categories: it carries its own
table (src/unicode-data.cpp, generated from one UnicodeData.txt), and the pre-tokenizer
splits text by that table. Python's unicodedata is another Unicode version (3.11 has 14.0;
llama.cpp's table is newer and differs on ~5,000 code points), so the table is taken from
llama.cpp's file: the ranges of category flags and the White_Space set. The test
test_unicode_classes_match_llama_cpp rebuilds it from the same file of the llama-cpp-python
sdist the vocabulary suites come from and compares.

Classes: C other, N number, L letter, P punctuation, M mark, S symbol, W whitespace (a
whitespace code point is W whatever its category: llama.cpp tests is_whitespace first).
"""
import re
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tinyllm" / "tokenizer" / "unicode_classes.py"
N_CODEPOINTS = 0x110000
# llama.cpp's category flags (unicode.h) -> class letter; UNDEFINED, SEPARATOR, CONTROL -> C
FLAG_CLASS = {0x0001: "C", 0x0002: "N", 0x0004: "L", 0x0008: "C", 0x0010: "M", 0x0020: "P", 0x0040: "S", 0x0080: "C"}


def _table(source: str, name: str) -> str:
    start = source.index(name)
    return source[start : source.index("};", start)]


def classes_from_unicode_data(path) -> np.ndarray:
    """uint8 array of class letters (as bytes) for all 0x110000 code points."""
    src = Path(path).read_text(encoding="utf-8")
    ranges = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"\{0x([0-9A-Fa-f]+), 0x([0-9A-Fa-f]+)\}",
                                                            _table(src, "unicode_ranges_flags"))]
    if ranges[0][0] != 0 or ranges[-1][0] != N_CODEPOINTS:
        raise ValueError(f"{path}: unicode_ranges_flags does not cover 0..0x10FFFF")
    out = np.zeros(N_CODEPOINTS, np.uint8)
    for (start, flags), (end, _) in zip(ranges, ranges[1:]):
        out[start:end] = ord(FLAG_CLASS[flags & 0xFF])
    whitespace = [int(x, 16) for x in re.findall(r"0x([0-9A-Fa-f]+)", _table(src, "unicode_set_whitespace"))]
    if not (out[whitespace] == ord("C")).all():  # separators and controls: nothing is lost
        raise ValueError(f"{path}: a whitespace code point is a letter, number, mark or symbol")
    out[whitespace] = ord("W")
    return out


def runs(classes: np.ndarray) -> list[tuple[int, str]]:
    starts = np.flatnonzero(np.diff(classes, prepend=np.uint8(0)) != 0)
    return [(int(s), chr(classes[s])) for s in starts]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    table = runs(classes_from_unicode_data(sys.argv[1]))
    items = [f"{s:x}{c}" for s, c in table]
    lines = [" ".join(items[i : i + 14]) for i in range(0, len(items), 14)]
    body = "\n".join(f'    "{line} "' for line in lines)
    OUT.write_text(
        '"""Character classes of all code points as llama.cpp\'s pre-tokenizer sees them (its\n'
        "src/unicode-data.cpp, llama-cpp-python 0.3.36): written by tests/data/make_unicode_classes.py,\n"
        "do not edit. RUNS is 'START_HEX CLASS' items: the class holds from START to the next item.\n"
        "Classes: C other, N number, L letter, P punctuation, M mark, S symbol, W whitespace.\n"
        '"""\n\n'
        f"RUNS = (\n{body}\n)\n"
    )
    print(f"{OUT}: {len(table)} runs")


if __name__ == "__main__":
    main()
