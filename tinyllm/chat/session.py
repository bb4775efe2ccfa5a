"""Conversation state for `tinyllm chat`: messages, what the KV cache holds, incremental prefill.

Each turn renders the whole conversation with the template and tokenizes it, compares the
tokens with those already in the KV cache (`cached`), truncates the cache where they first
differ, and prefills only the rest. So a second turn prefills just its own new tokens, and
/regen, /system or /load re-prefill only from the first token that changed.

    session = ChatSession(model, template)
    reply = session.ask("Hello")
    for piece in reply:          # text as it is generated
        ...
    reply.stats                  # TurnStats: new tokens prefilled, reused, tokens/s, context used

When the context fills up, a reply stops with stop_reason "context" and the conversation is
kept (the caller offers /clear); with `context_shift=True` the oldest turns are dropped
instead, the kept ones re-prefilled, and the reply goes on.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ContextFullError, TinyLLMError, UsageError
from ..sampling import Sampler, SamplingParams
from .templates import ChatTemplate

SAVE_FORMAT = "tinyllm-chat"
SAVE_VERSION = 1


@dataclass
class TurnStats:
    """Figures of one reply, over all the generate calls it took (more than one after a shift)."""

    prompt_tokens: int = 0  # new tokens prefilled for this reply
    reused_tokens: int = 0  # prompt tokens already in the KV cache, not prefilled again
    prefill_seconds: float = 0.0
    generated_tokens: int = 0
    decode_steps: int = 0
    decode_seconds: float = 0.0
    ttft_seconds: float = 0.0
    compile_seconds: float = 0.0
    stop_reason: str | None = None
    n_past: int = 0  # KV cache tokens after the reply
    n_ctx: int = 0
    shifted_turns: int = 0  # messages dropped by the context shift during this reply

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def add(self, gs) -> None:
        """Add a GenerationStats."""
        first = self.prompt_tokens == 0 and self.generated_tokens == 0
        self.prompt_tokens += gs.prompt_tokens
        self.prefill_seconds += gs.prefill_seconds
        self.generated_tokens += gs.generated_tokens
        self.decode_steps += gs.decode_steps
        self.decode_seconds += gs.decode_seconds
        self.compile_seconds += gs.compile_seconds
        if first:
            self.ttft_seconds = gs.ttft_seconds
        self.stop_reason = gs.stop_reason
        self.n_past, self.n_ctx = gs.n_past, gs.n_ctx


class Reply:
    """One assistant reply; iterate it for text pieces. Generation happens while iterating.

    `text` is the reply so far; `stats` its TurnStats; `cancel()` stops it before the next
    token (safe from a signal handler). When iteration ends the reply is in the conversation,
    partial or not."""

    def __init__(self, session: "ChatSession"):
        self.session = session
        self.text = ""
        self.tokens: list[int] = []
        self.stats = TurnStats(n_ctx=session.n_ctx)
        self._gen = None
        self._cancelled = False
        self._it = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._it)

    def cancel(self) -> None:
        self._cancelled = True
        if self._gen is not None:
            self._gen.cancel()

    def read(self) -> str:
        for _ in self:
            pass
        return self.text

    @property
    def done(self) -> bool:
        return self.stats.stop_reason is not None

    def _run(self):
        s = self.session
        from ..generation import generate

        sampler = Sampler(s.params)
        budget = s.max_tokens
        prompt = s._prepare(self)  # token ids of the conversation, ending with the generation prompt
        try:
            while True:
                new = s._sync(prompt, self)
                want = budget - len(self.tokens) if budget >= 0 else -1
                self._gen = gen = generate(
                    s.model, new, max_tokens=want, add_bos=False, stop_ids=s.stop_ids, sampler=sampler
                )
                if self._cancelled:
                    gen.cancel()
                held, hit = "", False
                for piece in gen:
                    # Stop texts that are not tokens of the vocabulary end the reply as text:
                    # hold back what could be the start of one, cut at a complete one.
                    held, out, hit = _split_stop(held + piece, s.template.stop_texts)
                    if out:
                        self.text += out
                        yield out
                    if hit:
                        gen.cancel()
                if held and not hit:
                    self.text += held
                    yield held
                self.stats.add(gen.stats)
                if hit:
                    self.stats.stop_reason = "eos"
                    gen.stats.stop_reason = "eos"
                if gen.stats.stop_reason == "cancelled" and gen.stats.prefill_seconds == 0 and not gen.tokens:
                    # Ctrl+C may have landed inside the prefill's forward call: do not trust
                    # the cache; the next turn prefills from the start.
                    s.model.reset()
                s.cached = (prompt + gen.tokens)[: s.model.kv.n_past]
                self.tokens += gen.tokens
                if gen.stats.stop_reason != "context" or not s.context_shift or self._cancelled:
                    break
                # Context shift: drop the oldest turns, keep this reply's tokens so far, go on.
                prompt = s._shift(self)
        except KeyboardInterrupt:
            # Interrupted inside a forward call: the cache may hold a half-written step, so the
            # next turn starts from an empty cache. The partial reply is kept.
            s.model.reset()
            s.cached = []
            self.stats.stop_reason = "cancelled"
        finally:
            if self.stats.stop_reason is None:
                self.stats.stop_reason = "cancelled"
            self.stats.n_past = int(s.model.kv.n_past)
            s._finish(self)


@dataclass
class ChatSession:
    """A conversation with a loaded model through a chat template (see module docstring).

    messages: user and assistant turns as {"role", "content"} dicts (the system prompt is kept
    apart in `system` and put first when rendering). cached: the token ids the KV cache holds,
    always `model.kv.n_past` long."""

    model: object
    template: ChatTemplate
    system: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = -1  # -1: until end of turn or a full context
    context_shift: bool = False
    messages: list[dict] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    last: Reply | None = None

    def __post_init__(self):
        self.tokenizer = tok = self.model.tokenizer
        t = self.template
        if t.name == "jinja":
            # Jinja templates write {{ bos_token }} themselves; render() strips it again where
            # the tokenizer adds BOS (as llama.cpp does). Where it adds none, a leading BOS text
            # is the prompt's own first token: SmolLM2's BOS is the <|im_start|> that opens
            # every ChatML prompt.
            t.bos_token = t.bos_token or self._text(tok.bos_id)
            t.eos_token = t.eos_token or self._text(tok.eos_id)
            t.strip_bos = bool(tok.add_bos)
        self.stop_ids = frozenset(tok.eog_ids) | {
            i for i in (tok.token_to_id(s) for s in t.stop_texts) if i is not None
        }
        self.cached = list(self.cached)[: self.model.kv.n_past]

    def _text(self, token_id) -> str:
        tokens = self.tokenizer.tokens
        return tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else ""

    # ---- queries ----
    @property
    def n_ctx(self) -> int:
        return int(self.model.kv.n_ctx)

    @property
    def n_past(self) -> int:
        return int(self.model.kv.n_past)

    def conversation(self, messages: list[dict] | None = None) -> list[dict]:
        msgs = self.messages if messages is None else messages
        return ([{"role": "system", "content": self.system}] if self.system else []) + list(msgs)

    def render(self, messages: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        return self.template.render(self.conversation(messages), add_generation_prompt)

    def tokens(self, messages: list[dict] | None = None, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation, BOS included when the vocabulary adds one."""
        text = self.render(messages, add_generation_prompt)
        return list(self.tokenizer.encode(text, add_bos=bool(self.tokenizer.add_bos), parse_special=True))

    # ---- actions ----
    def ask(self, text: str) -> Reply:
        """Add a user turn and start the reply (generation runs while the Reply is iterated).
        Raises ContextFullError, leaving the conversation as it was, when the conversation no
        longer fits and context shift is off."""
        if self.messages and self.messages[-1]["role"] == "user":
            # A user turn whose reply never started (an error): replace it.
            self.messages.pop()
        self.messages.append({"role": "user", "content": text})
        try:
            self.last = Reply(self)
            self._check_fits()
        except BaseException:
            self.messages.pop()
            raise
        return self.last

    def regen(self) -> Reply:
        """Drop the last reply and generate it again."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise UsageError("nothing to regenerate: the conversation has no reply yet")
        old = self.messages.pop()
        try:
            self.last = Reply(self)
            self._check_fits()
        except BaseException:
            self.messages.append(old)
            raise
        return self.last

    def clear(self) -> None:
        """A new conversation (the system prompt stays); the KV cache is emptied."""
        self.messages.clear()
        self.model.reset()
        self.cached = []
        self.last = None

    def set_system(self, text: str | None) -> None:
        # The cache is not touched: the next turn re-prefills from the first changed token.
        self.system = text or None

    # ---- save / load ----
    def to_dict(self) -> dict:
        return {
            "format": SAVE_FORMAT,
            "version": SAVE_VERSION,
            "model": os.path.basename(str(getattr(self.model, "path", ""))),
            "template": self.template.name if self.template.name != "jinja" else f"jinja ({self.template.family})",
            "system": self.system,
            "messages": [dict(m) for m in self.messages],
            "params": asdict(self.params),
            "max_tokens": self.max_tokens,
        }

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path).expanduser()
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, p)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"cannot save the conversation to {p}: {e.strerror or e}") from None
        return p

    def load(self, path: str | os.PathLike) -> int:
        """Replace the conversation with the one saved in `path`; returns the message count.
        Sampling settings stay as they are. The cache is kept: the next turn prefills from the
        first token where the loaded conversation differs."""
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"cannot read {p}: {e.strerror or e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"{p} is not a saved conversation: not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != SAVE_FORMAT:
            raise UsageError(f"{p} is not a saved conversation: no \"format\": \"{SAVE_FORMAT}\" field")
        if data.get("version") != SAVE_VERSION:
            raise UsageError(f"{p}: saved conversation version {data.get('version')!r}; supported: {SAVE_VERSION}")
        msgs = data.get("messages")
        if not isinstance(msgs, list):
            raise UsageError(f"{p}: \"messages\" must be a list of {{role, content}} objects")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(
                m.get("content"), str
            ):
                raise UsageError(
                    f"{p}: message {i} is {json.dumps(m, ensure_ascii=False)[:60]}; "
                    "expected {\"role\": \"user\"|\"assistant\", \"content\": text}"
                )
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise UsageError(f"{p}: \"system\" must be text or null, got {type(system).__name__}")
        self.messages = [{"role": m["role"], "content": m["content"]} for m in msgs]
        self.system = system or None
        self.last = None
        return len(self.messages)

    # ---- internals used by Reply ----
    def _check_fits(self) -> None:
        """Render now so a template error or a conversation that cannot fit is raised by ask()."""
        self.last._prompt = self.tokens()
        n = len(self.last._prompt)
        if n >= self.n_ctx and not self.context_shift:
            raise ContextFullError(
                f"context full: the conversation needs {n} tokens and n_ctx is {self.n_ctx}; "
                "/clear starts a new conversation (or restart with a larger -c, or --context-shift)"
            )

    def _prepare(self, reply: Reply) -> list[int]:
        prompt = getattr(reply, "_prompt", None) or self.tokens()
        if len(prompt) >= self.n_ctx:
            prompt = self._shift(reply, pending_user=True)
        return prompt

    def _sync(self, prompt: list[int], reply: Reply) -> list[int]:
        """Make the KV cache hold the longest cached prefix of `prompt`; return what to prefill."""
        cached = self.cached
        n = min(len(cached), len(prompt))
        p = 0
        while p < n and cached[p] == prompt[p]:
            p += 1
        if p == len(prompt):
            p -= 1  # the last prompt token must be evaluated again to get logits
        if p < self.model.kv.n_past:
            if p == 0:
                self.model.reset()
            else:
                try:
                    self.model.truncate(p)
                except (TinyLLMError, ValueError):
                    # A sliding-window cache cannot go back further than its window: start over.
                    self.model.reset()
                    p = 0
        self.cached = list(prompt[:p])
        reply.stats.reused_tokens += p if reply.stats.prompt_tokens == 0 else 0
        return list(prompt[p:])

    def _shift(self, reply: Reply, pending_user: bool = False) -> list[int]:
        """Drop the oldest turns until the conversation (plus the reply so far) takes at most
        half the context, as llama.cpp's shift discards half; returns the new prompt ids."""
        partial = list(reply.tokens)
        keep = list(self.messages)
        target = self.n_ctx // 2
        dropped = 0

        def ids(msgs):
            return self.tokens(msgs) + partial

        prompt = ids(keep)
        # Turns go in user/assistant pairs; the last user message always stays.
        while len(prompt) > target and len(keep) > 1:
            keep = keep[2:] if len(keep) > 2 else keep[1:]
            dropped += 1
            prompt = ids(keep)
        if len(prompt) >= self.n_ctx:
            raise ContextFullError(
                f"context full: the last message alone needs {len(prompt)} tokens and n_ctx is {self.n_ctx}"
            )
        if dropped:
            gone = len(self.messages) - len(keep)
            self.messages[:] = keep
            reply.stats.shifted_turns += gone
        return prompt

    def _finish(self, reply: Reply) -> None:
        self.messages.append({"role": "assistant", "content": reply.text})


def _split_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(held back, safe to show, stop text found) for the text generated since the last call."""
    stops = [t for t in stops if t]
    if not stops:
        return "", text, False
    cut = min((i for i in (text.find(t) for t in stops) if i >= 0), default=-1)
    if cut >= 0:
        return "", text[:cut], True
    keep = 0
    for t in stops:
        for n in range(min(len(t) - 1, len(text)), keep, -1):
            if text.endswith(t[:n]):
                keep = n
                break
    return text[len(text) - keep :], text[: len(text) - keep], False
