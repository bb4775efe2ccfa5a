"""The `tinyllm chat` REPL: prompt-toolkit input, streamed replies, slash commands.

It only presents. The conversation lives in `ChatSession` (session.py) and generation is the
library call `tinyllm.generation.generate`; this module reads lines, writes text and handles keys.

Input: Enter sends. A line ending in `\\` continues on the next line; a message that opens
with `\"\"\"` goes on until the closing `\"\"\"`. A bracketed paste stays one message. History is
kept in `$XDG_STATE_HOME/tinyllm/history` (up/down, Ctrl+R search). Tab completes commands.
Keys: Ctrl+C stops a reply (the partial reply is kept) or clears the line; Ctrl+D leaves.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..errors import ContextFullError, TinyLLMError, UsageError
from ..printable import printable
from .session import ChatSession

PROMPT = ">>> "
CONTINUATION = "... "
BLOCK = '"""'

COMMANDS = {
    "/help": ("", "show this help (also /?)"),
    "/clear": ("", "start a new conversation (empties the KV cache)"),
    "/regen": ("", "generate the last reply again"),
    "/system": ("[TEXT|-]", "set the system prompt (no TEXT: show it; -: remove it)"),
    "/set": ("NAME VALUE", "set temp, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, max_tokens, verbose on|off"),
    "/show": ("info|params|template|system", "show the model, the settings, the chat template or the system prompt"),
    "/kv": ("", "KV cache: allocated and used MiB, cells used of n_ctx"),
    "/stats": ("", "figures of the last reply"),
    "/read": ("FILE [TEXT]", "send a text file as your message (TEXT, if given, goes before it)"),
    "/save": ("FILE", "save the conversation as JSON"),
    "/load": ("FILE", "load a conversation saved with /save"),
    "/bye": ("", "leave (also /exit, Ctrl+D)"),
}
ALIASES = {"/?": "/help", "/exit": "/bye", "/quit": "/bye"}
SETTINGS = {
    # name -> (SamplingParams field or session attribute, parser)
    "temp": ("temperature", float),
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "seed": ("seed", int),
    "max_tokens": ("max_tokens", int),
    "verbose": ("verbose", None),
}
SHOW = ("info", "params", "template", "system")


def history_path() -> Path:
    """Where the input history is kept: $XDG_STATE_HOME/tinyllm/history (~/.local/state/...)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "tinyllm" / "history"


def needs_more(text: str) -> bool:
    """Whether Enter should start a new line instead of sending: an open \"\"\" block."""
    body = text.split(" ", 1)[1] if text.startswith("/") and " " in text else text
    return body.lstrip().startswith(BLOCK) and body.count(BLOCK) % 2 == 1


def unwrap(text: str) -> str:
    """The message inside a \"\"\" block (or the text as typed)."""
    s = text.strip()
    if s.startswith(BLOCK):
        s = s[len(BLOCK) :]
        if s.endswith(BLOCK):
            s = s[: -len(BLOCK)]
        return s.strip("\n")
    return text


class SlashCompleter:
    """Completes command names, /set names and /show topics (prompt-toolkit Completer)."""

    def __new__(cls):
        from prompt_toolkit.completion import Completer, Completion

        class _C(Completer):
            def get_completions(self, document, complete_event):
                text = document.text_before_cursor
                if not text.startswith("/") or "\n" in text:
                    return
                if " " not in text:
                    for name in list(COMMANDS) + list(ALIASES):
                        if name.startswith(text):
                            yield Completion(name + " " if COMMANDS.get(name, ("",))[0] else name,
                                             start_position=-len(text), display_meta=COMMANDS.get(name, ("", ""))[1])
                    return
                cmd, rest = text.split(" ", 1)
                if " " in rest:
                    return
                options = {"/set": [k for k in SETTINGS if k != "temperature"], "/show": list(SHOW)}.get(cmd, [])
                for opt in options:
                    if opt.startswith(rest):
                        yield Completion(opt, start_position=-len(rest))

        return _C()


class Repl:
    """One chat screen over a ChatSession. `out` receives everything shown besides the prompt
    line itself (replies, footers, command output); `input`/`output` are prompt-toolkit's."""

    def __init__(self, session: ChatSession, *, out=None, input=None, output=None, history: Path | None = None,
                 notice: str | None = None, verbose: bool = True, kv_type: str = "f16", threads: int | None = None):
        self.session = session
        self.out = out if out is not None else sys.stdout
        self.verbose = verbose
        self.notice = notice
        self.kv_type = kv_type
        self.threads = threads
        self._at_line_start = True
        self._color = hasattr(self.out, "isatty") and self.out.isatty() and not os.environ.get("NO_COLOR")
        self._pt_input, self._pt_output = input, output
        self._history_file = history
        self._prompt = None

    # ---- output ----
    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def line(self, text: str = "", style: str | None = None) -> None:
        """A line of our own; it starts on a fresh line even after a reply cut mid-line."""
        if not self._at_line_start:
            self.write("\n")
        if style and self._color:
            code = {"dim": "2", "bold": "1", "error": "31", "notice": "33"}[style]
            text = f"\x1b[{code}m{text}\x1b[0m"
        self.write(text + "\n")

    # ---- input ----
    def _make_prompt(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.filters import is_searching
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        hist = InMemoryHistory()
        if self._history_file is not None:
            try:
                self._history_file.parent.mkdir(parents=True, exist_ok=True)
                hist = FileHistory(str(self._history_file))
            except OSError:
                pass  # a read-only home: history for this run only

        kb = KeyBindings()

        # In Ctrl+R search, Enter and Ctrl+C keep prompt-toolkit's meaning (accept, abort).
        @kb.add("enter", filter=~is_searching)
        def _enter(event):
            buf = event.current_buffer
            if buf.complete_state and buf.complete_state.current_completion:
                buf.apply_completion(buf.complete_state.current_completion)
                return
            text = buf.document.text_before_cursor
            if text.endswith("\\") and buf.document.is_cursor_at_the_end:
                buf.delete_before_cursor(1)
                buf.insert_text("\n")
            elif needs_more(buf.text) and buf.document.is_cursor_at_the_end:
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        @kb.add("c-c", filter=~is_searching)
        def _ctrl_c(event):
            buf = event.current_buffer
            if buf.text:
                buf.reset()  # like a shell: drop the line, stay at the prompt
            else:
                event.app.exit(exception=KeyboardInterrupt())

        return PromptSession(
            PROMPT,
            multiline=True,  # Enter is ours (above); prompt-toolkit's Meta+Enter is not needed
            prompt_continuation=lambda width, line_number, wrap_count: CONTINUATION.rjust(width),
            history=hist,
            completer=SlashCompleter(),
            complete_while_typing=False,
            key_bindings=kb,
            input=self._pt_input,
            output=self._pt_output,
        )

    def read(self) -> str:
        if self._prompt is None:
            self._prompt = self._make_prompt()
        return self._prompt.prompt()

    # ---- the loop ----
    def welcome(self) -> None:
        s = self.session
        m = s.model
        name = os.path.basename(str(getattr(m, "path", "model")))
        arch = getattr(m.config, "arch", "?")
        self.line(printable(f"tinyllm chat · {name} ({arch}) · context {s.n_ctx} tokens · "
                            f"template: {s.template.describe()}"))
        if self.notice:
            self.line(printable(self.notice), "notice")
        self.line("Type a message and press Enter. /help lists the commands; Ctrl+D or /bye leaves.", "dim")

    def warm_up(self) -> None:
        """Compile (first run) or load the kernels before the first prompt, saying so, so that
        the ~20 s of a first-ever compile is not a silent pause after the first message."""
        m = self.session.model
        if getattr(m, "compile_seconds", 0.0) is not None or not hasattr(m, "warmup"):
            return
        seconds = m.warmup(notice=self.out if hasattr(self.out, "isatty") else None)
        if seconds >= 2.0:
            self.line(f"kernels compiled in {seconds:.1f} s (cached for the next runs)", "dim")

    def run(self) -> int:
        self.welcome()
        self.warm_up()
        while True:
            try:
                text = self.read()
            except KeyboardInterrupt:
                self.line("(Use Ctrl+D or /bye to leave.)", "dim")
                continue
            except EOFError:
                self.line("bye")
                return 0
            if not text.strip():
                continue
            if text.lstrip().startswith("/"):
                try:
                    if self.command(text.strip()) == "bye":
                        return 0
                except KeyboardInterrupt:
                    self.line("(interrupted)", "dim")
                continue
            self.reply(lambda: self.session.ask(unwrap(text)))

    # ---- replies ----
    @contextmanager
    def _ctrl_c_cancels(self):
        """From Enter to the end of a reply, the first Ctrl+C stops the reply (once it exists;
        before that, as soon as it does); a second one interrupts for real."""
        state = {"reply": None, "n": 0}

        def handler(signum, frame):
            state["n"] += 1
            if state["n"] > 1:
                raise KeyboardInterrupt
            if state["reply"] is not None:
                state["reply"].cancel()

        try:
            old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            old = None
        try:
            yield state
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def reply(self, start) -> None:
        with self._ctrl_c_cancels() as state:
            try:
                reply = start()
            except ContextFullError as e:
                self.line(str(e), "error")
                return
            except TinyLLMError as e:
                self.line(printable(f"error: {e}"), "error")
                return
            except KeyboardInterrupt:
                self.line("(interrupted)", "dim")
                return
            state["reply"] = reply
            if state["n"]:
                reply.cancel()
            try:
                for piece in reply:
                    self.write(piece)
            except KeyboardInterrupt:
                reply.cancel()
                for piece in reply:  # let it finish cleanly (no more tokens once cancelled)
                    self.write(piece)
            except TinyLLMError as e:
                self.line(printable(f"error: {e}"), "error")
                return
        st = reply.stats
        if not self._at_line_start:
            self.write("\n")
        if st.stop_reason == "context":
            self.line(
                f"context full ({st.n_past} of {st.n_ctx} tokens): /clear starts a new conversation "
                "(or restart with a larger -c, or with --context-shift)",
                "error",
            )
        if st.shifted_turns:
            self.line(f"(context shift: dropped the {st.shifted_turns} oldest messages)", "dim")
        if self.verbose:
            self.line(self.footer(st), "dim")

    def footer(self, st) -> str:
        parts = [
            f"prefill {st.prompt_tokens} tok, {st.prefill_tps:.1f} tok/s",
            f"reply {st.generated_tokens} tok, {st.decode_tps:.1f} tok/s",
            f"context {st.n_past}/{st.n_ctx}",
        ]
        if st.compile_seconds >= 0.05:
            parts.append(f"JIT {st.compile_seconds:.1f} s")
        why = {"cancelled": "stopped", "length": "max_tokens reached"}.get(st.stop_reason)
        if why:
            parts.append(why)
        return "[ " + " · ".join(parts) + " ]"

    # ---- commands ----
    def command(self, text: str) -> str | None:
        name, _, arg = text.partition(" ")
        name = ALIASES.get(name.lower(), name.lower())
        arg = arg.strip()
        handler = getattr(self, "cmd_" + name[1:], None) if name in COMMANDS else None
        if handler is None:
            self.line(f"unknown command {name}; commands: {' '.join(COMMANDS)} (/help explains them)", "error")
            return None
        try:
            return handler(arg)
        except TinyLLMError as e:
            self.line(printable(f"error: {e}"), "error")
        return None

    def cmd_help(self, arg):
        width = max(len(f"{k} {a}".strip()) for k, (a, _) in COMMANDS.items())
        for k, (a, h) in COMMANDS.items():
            self.line(f"  {f'{k} {a}'.strip():<{width}}  {h}")
        self.line('  Enter sends; end a line with \\ to go on, or wrap a message in """ ... """.')
        self.line("  Ctrl+C stops a reply; Up/Down and Ctrl+R search the history; Tab completes commands.")

    def cmd_bye(self, arg):
        return "bye"

    def cmd_clear(self, arg):
        self.session.clear()
        self.line("(new conversation; KV cache cleared)", "dim")

    def cmd_regen(self, arg):
        self.reply(self.session.regen)

    def cmd_system(self, arg):
        s = self.session
        if not arg:
            self.line(f"system prompt: {s.system!r}" if s.system else "no system prompt; /system TEXT sets one")
            return
        if arg == "-":
            s.set_system(None)
            self.line("(system prompt removed)", "dim")
            return
        s.set_system(unwrap(arg))
        self.line("(system prompt set; it applies from the next reply)", "dim")

    def cmd_set(self, arg):
        s = self.session
        parts = arg.split(None, 1)
        if len(parts) != 2:
            raise UsageError(f"/set takes NAME VALUE; names: {', '.join(k for k in SETTINGS if k != 'temperature')}")
        key, value = parts[0].lower(), parts[1].strip()
        if key not in SETTINGS:
            raise UsageError(
                f"unknown setting {key!r}; accepted: {', '.join(k for k in SETTINGS if k != 'temperature')}"
            )
        field, kind = SETTINGS[key]
        if field == "verbose":
            if value.lower() not in ("on", "off"):
                raise UsageError(f"/set verbose takes on or off, got {value!r}")
            self.verbose = value.lower() == "on"
            self.line(f"(verbose {value.lower()})", "dim")
            return
        try:
            v = kind(value)
        except ValueError:
            raise UsageError(f"/set {key} takes {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if field == "max_tokens":
            if v < -1 or v == 0:
                raise UsageError(f"/set max_tokens takes a positive integer or -1 (no limit), got {v}")
            s.max_tokens = v
        else:
            if field == "seed" and v == -1:
                v = None
            s.params = s.params.replace(**{field: v}).validate()
        self.line(f"({key} = {value})", "dim")

    def cmd_show(self, arg):
        s = self.session
        topic = arg.lower()
        if topic == "info":
            m, c = s.model, s.model.config
            path = str(getattr(m, "path", "?"))
            size = ""
            try:
                size = f", {os.path.getsize(path) / 2**20:.1f} MiB"
            except OSError:
                pass
            self.line(printable(f"  model      {path}{size}"))
            self.line(f"  arch       {c.arch}: {c.n_layer} layers, n_embd {c.n_embd}, "
                      f"{c.n_head} heads ({c.n_head_kv} KV) of {c.head_dim}, n_ff {c.n_ff}, vocab {c.n_vocab}")
            swa = getattr(c, "n_swa", 0)
            if swa:
                layers = getattr(c, "swa_layers", ())
                self.line(f"  window     {swa} tokens on {sum(bool(x) for x in layers)} of {c.n_layer} layers")
            self.line(f"  context    {s.n_ctx} tokens (trained {c.n_ctx_train}); KV cache {self.kv_type}")
            self.line(f"  template   {s.template.describe()}")
            if self.threads:
                self.line(f"  threads    {self.threads}")
        elif topic == "params":
            p = asdict(s.params)
            for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed"):
                self.line(f"  {k:<15}{p[k] if p[k] is not None else 'random'}")
            self.line(f"  {'max_tokens':<15}{s.max_tokens if s.max_tokens >= 0 else 'no limit (-1)'}")
            self.line(f"  {'context_shift':<15}{'on' if s.context_shift else 'off'}")
            self.line(f"  {'verbose':<15}{'on' if self.verbose else 'off'}")
        elif topic == "template":
            t = s.template
            self.line(f"template: {t.describe()}")
            if t.source:
                self.line(printable(t.source.rstrip("\n"), multiline=True))
            elif not t.is_raw:
                example = t.render([{"role": "user", "content": "Hi"}])
                self.line("a user turn \"Hi\" renders as: " + repr(example))
            if s.stop_ids:
                self.line(f"a reply ends at token ids {sorted(s.stop_ids)}")
        elif topic == "system":
            self.cmd_system("")
        else:
            raise UsageError(f"/show takes one of: {', '.join(SHOW)}; got {arg!r}" if arg else
                             f"/show takes one of: {', '.join(SHOW)}")

    def cmd_kv(self, arg):
        for line in kv_lines(self.session.model, self.kv_type):
            self.line("  " + line)

    def cmd_stats(self, arg):
        r = self.session.last
        if r is None or r.stats.stop_reason is None:
            self.line("no reply yet")
            return
        st = r.stats
        self.line(f"  prompt     {st.prompt_tokens} tokens prefilled ({st.reused_tokens} reused from the KV cache) "
                  f"in {st.prefill_seconds * 1e3:.1f} ms: {st.prefill_tps:.1f} tok/s")
        self.line(f"  reply      {st.generated_tokens} tokens in {st.decode_seconds * 1e3:.1f} ms: "
                  f"{st.decode_tps:.1f} tok/s")
        self.line(f"  first token after {st.ttft_seconds * 1e3:.1f} ms; JIT compile {st.compile_seconds:.2f} s "
                  "(not in the figures above)")
        self.line(f"  stop       {st.stop_reason}; context {st.n_past}/{st.n_ctx} tokens")

    def cmd_save(self, arg):
        if not arg:
            raise UsageError("/save takes a file name, e.g. /save chat.json")
        p = self.session.save(_path_arg(arg))
        self.line(f"(saved {len(self.session.messages)} messages to {p})", "dim")

    def cmd_read(self, arg):
        if not arg:
            raise UsageError("/read takes a file name, then optionally text to put before the file")
        path, text = _split_path(arg)
        try:
            data = Path(path).expanduser().read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
        if b"\0" in data:
            raise UsageError(f"{path} is not a text file")
        body = data.decode("utf-8", "replace").strip("\n")
        if not body.strip():
            raise UsageError(f"{path} is empty")
        self.line(f"(sending {path}: {len(body)} characters)", "dim")
        message = f"{text}\n\n{body}" if text else body
        self.reply(lambda: self.session.ask(message))

    def cmd_load(self, arg):
        if not arg:
            raise UsageError("/load takes a file name saved with /save")
        n = self.session.load(_path_arg(arg))
        self.line(f"(loaded {n} messages from {arg}; the next reply continues that conversation)", "dim")
        for m in self.session.messages[-2:]:
            who = "you" if m["role"] == "user" else "model"
            text = m["content"] if len(m["content"]) <= 200 else m["content"][:200] + "…"
            self.line(f"  {who}: {text}", "dim")


def _split_path(arg: str) -> tuple[str, str]:
    """'FILE rest of the line' -> (FILE, rest); FILE may be quoted to hold spaces."""
    if arg[:1] in "'\"":
        end = arg.find(arg[0], 1)
        if end > 0:
            return arg[1:end], arg[end + 1 :].strip()
    path, _, rest = arg.partition(" ")
    return path, rest.strip()


def _path_arg(arg: str) -> str:
    try:
        parts = shlex.split(arg)
    except ValueError:
        parts = [arg]
    return parts[0] if len(parts) == 1 else arg


def kv_lines(model, kv_type: str = "f16") -> list[str]:
    """/kv text from the model's KVCache.usage(); sliding-window layers shown apart."""
    kv = model.kv
    u = kv.usage()
    kv_type = getattr(kv, "kv_type", kv_type)
    lines = [
        f"KV cache ({kv_type}): {u.mib_allocated:.2f} MiB allocated; {u.tokens_used} of {u.n_ctx} tokens used, "
        f"{u.mib_used:.2f} MiB"
    ]
    groups = list(getattr(u, "groups", None) or [])
    if len(groups) > 1:
        for g in groups:
            what = f"window layers (ring, window {g.window})" if g.window else "full-attention layers"
            lines.append(
                f"  {what}: {g.layers} layers, {g.cells} cells, {g.mib_allocated:.2f} MiB; "
                f"{g.cells_used} cells used, {g.mib_used:.2f} MiB"
            )
    return lines


def run_piped(session: ChatSession, text: str, *, out=None, err=None, verbose: bool = True) -> int:
    """Not a terminal: answer `text` once, reply on `out`, footer on `err`; never wait for keys."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    reply = session.ask(unwrap(text.strip("\n")) if text.strip() else text)
    ended = True
    for piece in reply:
        out.write(piece)
        out.flush()
        ended = piece.endswith("\n")
    if not ended:
        out.write("\n")
        out.flush()
    st = reply.stats
    if st.stop_reason == "context":
        print(f"tinyllm: context full ({st.n_past} of {st.n_ctx} tokens); raise it with -c", file=err)
    if verbose:
        print(Repl.footer(None, st), file=err)
    return 130 if st.stop_reason == "cancelled" else 0
