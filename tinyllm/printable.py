"""Text from a file, made safe to print on a terminal.

A GGUF's strings (general.name, tensor names, a chat template, a path) reach the terminal in
`tinyllm info`, the chat banner, progress lines and error messages. An ESC byte there would
be a terminal command (colours, cursor moves, window titles), a newline would forge lines and
U+202E would reorder them. `printable` escapes every character that is not printable, as
Python's repr does, and leaves all other text as it is.
"""
import unicodedata

KEEP_MULTILINE = "\n\t"


def printable(text, multiline: bool = False) -> str:
    """`text` with control, format and other non-printable characters as \\xNN, \\uNNNN or
    \\UNNNNNNNN (a backslash stays itself); multiline=True keeps newlines and tabs."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " " or (multiline and ch in KEEP_MULTILINE):
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":
            out.append(ch)  # other spaces (U+3000 ...) are harmless
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
