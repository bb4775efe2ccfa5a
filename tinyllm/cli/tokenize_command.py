"""`tinyllm tokenize`: token ids and pieces, printed as llama-tokenize prints them.

Only the tokenizer is built (from the GGUF header); no weights are touched.
"""
import sys


def register(sub):
    p = sub.add_parser(
        "tokenize",
        help="show the token ids and pieces of a text (as llama-tokenize)",
        description="Tokenize a text with the model's vocabulary. Special tokens such as "
        "<start_of_turn> in the text are parsed. Prints `id -> 'piece'` lines, or the id list with --ids.",
    )
    p.add_argument("-m", "--model", metavar="MODEL", help="GGUF model file (default: Gemma 3 270M Q4_K_M)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", metavar="TEXT", help="the text; '-' reads it from stdin")
    src.add_argument("-f", "--file", metavar="FILE", help="read the text from a file")
    src.add_argument("--stdin", action="store_true", help="read the text from stdin")
    p.add_argument("--ids", action="store_true", help="print only the ids, as [2, 818, ...]")
    p.add_argument("--no-bos", action="store_true", help="do not add the BOS token")
    p.add_argument("--no-parse-special", action="store_true", help="treat special-token text as plain text")
    p.add_argument("--show-count", action="store_true", help="print the number of tokens at the end")
    p.set_defaults(func=run)


def run(args):
    from ..default_model import resolve_model
    from ..errors import UsageError
    from ..gguf_io import GGUFFile
    from ..tokenizer import Tokenizer

    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {args.file}: {e}") from None
    elif args.stdin or args.prompt == "-":
        text = sys.stdin.read()
    elif args.prompt is not None:
        text = args.prompt
    else:
        raise UsageError("no text: give -p TEXT, -p - (stdin) or -f FILE")
    path = resolve_model(args.model)
    with GGUFFile(path) as g:
        tok = Tokenizer.from_gguf(g)
        ids = tok.encode(text, add_bos=tok.add_bos and not args.no_bos, parse_special=not args.no_parse_special)
        out = sys.stdout
        if args.ids:
            out.write("[" + ", ".join(str(i) for i in ids) + "]\n")
        else:
            vocab = g.metadata.get("tokenizer.ggml.tokens") or []
            for i in ids:
                out.write(f"{i:6d} -> '{_show(tok, vocab, i)}'\n")
        if args.show_count:
            out.write(f"Total number of tokens: {len(ids)}\n")
    return 0


def _show(tok, vocab, i: int) -> str:
    """The piece as llama-tokenize prints it; a lone byte of a multi-byte character (not
    printable by itself) is shown as its token text, e.g. <0xF0>."""
    raw = tok.piece_bytes(i, special=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return vocab[i] if i < len(vocab) else raw.decode("utf-8", "replace")
