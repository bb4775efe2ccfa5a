"""`tinyllm chat`: an interactive conversation (prompt-toolkit REPL); with stdin piped, one answer."""
import sys

from . import options


def register(sub):
    p = sub.add_parser(
        "chat",
        help="chat with a model (the default when no command is given)",
        description="Chat with a model in the terminal. Enter sends; end a line with \\ or wrap text in "
        '""" to write several lines; Ctrl+C stops a reply; /help lists the commands; Ctrl+D or /bye '
        "leaves. With stdin piped, the piped text is answered once and the command exits.",
    )
    options.add_model_args(p, positional=True, default_help=options.DEFAULT_CHAT_MODEL_HELP)
    p.add_argument(
        "-n", "--max-tokens", "--n-predict", dest="max_tokens", type=int, default=None,
        help="most tokens per reply; -1 until end of turn or a full context "
        "(default: -1 with a chat template, 256 in plain completion mode)",
    )
    options.add_sampling_args(p)
    g = p.add_argument_group("conversation")
    g.add_argument("--system", metavar="TEXT", help="system prompt")
    g.add_argument(
        "--template", metavar="NAME", default="auto",
        help="chat template: auto (the model's own, else plain completion), jinja (the model's own), "
        "gemma, llama2, llama3, chatml, raw, or a .jinja file (default: auto)",
    )
    g.add_argument("--raw", action="store_true", help="no chat template: plain text completion")
    g.add_argument(
        "--context-shift", action="store_true",
        help="when the context is full, drop the oldest turns and go on (default: stop and offer /clear)",
    )
    g.add_argument("--no-footer", action="store_true", help="no stats line after each reply (/set verbose on)")
    p.set_defaults(func=run)


def run(args):
    from ..chat import templates
    from ..chat.repl import Repl, history_path, run_piped
    from ..chat.session import ChatSession
    from ..errors import UsageError

    if args.max_tokens is not None and (args.max_tokens < -1 or args.max_tokens == 0):
        raise UsageError(f"-n/--max-tokens must be a positive integer or -1 (no limit), got {args.max_tokens}")
    if args.raw and args.template not in ("auto", "raw"):
        raise UsageError(f"--raw and --template {args.template} contradict each other; give one of them")
    params = options.sampling_params(args)
    piped = not sys.stdin.isatty()
    text = sys.stdin.read() if piped else None
    if piped and not text.strip():
        raise UsageError("stdin is not a terminal and gave no text: pipe a message, or run in a terminal")
    model = options.load_model(args, chat=True)
    template, notice = templates.choose(
        model.gguf.metadata, "raw" if args.raw else args.template, origin=str(model.path)
    )
    max_tokens = args.max_tokens if args.max_tokens is not None else (256 if template.is_raw else -1)
    session = ChatSession(
        model, template, system=args.system, params=params, max_tokens=max_tokens, context_shift=args.context_shift
    )
    if piped:
        return run_piped(session, text, verbose=not args.no_footer)
    repl = Repl(
        session,
        history=history_path(),
        notice=notice,
        verbose=not args.no_footer,
        kv_type=args.kv_type,
        threads=int(args.threads) if args.threads else None,
    )
    return repl.run()
