"""Chat templates: turn a conversation (a list of {"role", "content"} dicts) into prompt text.

Three kinds, all behind `ChatTemplate.render(messages, add_generation_prompt)`:
- "jinja": the GGUF's `tokenizer.chat_template`, rendered with jinja2 the way Hugging Face's
  `apply_chat_template` renders it (sandboxed environment, trim_blocks/lstrip_blocks,
  `raise_exception`, `strftime_now`, `tojson`, bos_token/eos_token, add_generation_prompt).
  A template comes from the file, so its rendering is bounded: no include/import/extends,
  RENDER_SECONDS of time (loops included), `**` and `*` results and filter widths kept small,
  MAX_OUTPUT characters of text; any failure is one ModelError naming the template's line.
- built-in formatters for the families llama.cpp recognises (spec architectures.md §6):
  "gemma", "llama2", "llama3", "chatml". `detect_family` recognises them from the Jinja text
  by the same substrings as llama.cpp's `llm_chat_detect_template`.
- "raw": no template; the conversation is the plain concatenation of its texts, so a base
  model (such as the default Gemma 3 270M, which has no template) simply continues it.

The rendered text carries no BOS: the tokenizer adds it (`encode(add_bos=True)`). A Jinja
template that starts with the BOS text has it stripped, as llama.cpp's common does, so the
prompt never gets two.
"""
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..errors import ModelError, UsageError

BUILTIN = ("gemma", "llama2", "llama3", "chatml")
# "llama-2" is how people write it; both name Meta's [INST] format with <<SYS>> (§6.3).
ALIASES = {"llama-2": "llama2", "llama-3": "llama3", "gemma3": "gemma", "gemma2": "gemma", "qwen2": "chatml"}
CHOICES = ("auto", "jinja", "raw", *BUILTIN)

# Texts of the tokens that end an assistant turn, per family (§6.2-§6.5); the tokenizer's
# EOG set (EOS, EOT, <end_of_turn>) stops generation in every case as well.
STOP_TEXTS = {
    "gemma": ("<end_of_turn>", "<eos>"),
    "llama2": ("</s>",),
    "llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    "chatml": ("<|im_end|>", "<|endoftext|>"),
    "raw": (),
}

ROLES = ("system", "user", "assistant")


def detect_family(source: str) -> str | None:
    """The built-in family llama.cpp would pick for this Jinja text, or None (same substrings
    as `llm_chat_detect_template`, limited to the families tinyllm formats itself)."""
    if "<|im_start|>" in source:
        return "chatml"
    if "[INST]" in source:
        return "llama2"
    if "<start_of_turn>" in source:
        return "gemma"
    if "<|start_header_id|>" in source and "<|end_header_id|>" in source:
        return "llama3"
    return None


def _check_messages(messages: list[dict]) -> None:
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UsageError(
                f"message {i} has role {m.get('role')!r} and content of type "
                f"{type(m.get('content')).__name__}; roles are {', '.join(ROLES)} with text content"
            )


# ---- built-in formatters (llama.cpp's hard-coded ones, §6; llama2 follows Meta's reference) ----


def render_gemma(messages: list[dict], add_generation_prompt: bool = True) -> str:
    # System text has no turn of its own: it opens the next user turn, followed by a blank line.
    out, system = [], ""
    for m in messages:
        if m["role"] == "system":
            system += m["content"].strip()
            continue
        role = "model" if m["role"] == "assistant" else m["role"]
        out.append(f"<start_of_turn>{role}\n")
        if system and role != "model":
            out.append(system + "\n\n")
            system = ""
        out.append(m["content"].strip() + "<end_of_turn>\n")
    if add_generation_prompt:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def render_llama2(messages: list[dict], add_generation_prompt: bool = True) -> str:
    # Meta's reference: [INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] ...
    # (the HF template's output minus its first BOS). llama.cpp's own "llama2-sys" differs only
    # in the spaces around the answer and the missing <s> inside the history. No generation
    # suffix: the model answers right after [/INST].
    out, system, first = [], None, True
    for m in messages:
        if m["role"] == "system":
            system = m["content"] if system is None else system + "\n" + m["content"]
        elif m["role"] == "user":
            content = m["content"]
            if system is not None:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
                system = None
            out.append(("" if first else "<s>") + "[INST] " + content.strip() + " [/INST]")
            first = False
        else:
            out.append(" " + m["content"].strip() + " </s>")
    return "".join(out)


def render_llama3(messages: list[dict], add_generation_prompt: bool = True) -> str:
    out = [f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in messages]
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def render_chatml(messages: list[dict], add_generation_prompt: bool = True) -> str:
    # ChatML does not trim content.
    out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def render_raw(messages: list[dict], add_generation_prompt: bool = True) -> str:
    return "".join(m["content"] for m in messages)


_RENDERERS = {
    "gemma": render_gemma,
    "llama2": render_llama2,
    "llama3": render_llama3,
    "chatml": render_chatml,
    "raw": render_raw,
}


# ---- Jinja, as Hugging Face renders it ----


def _raise_exception(message):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF's tojson keeps non-ASCII text and does not HTML-escape, unlike jinja2's built-in filter.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


RENDER_SECONDS = 2.0  # a real template renders a long conversation in milliseconds
MAX_OUTPUT = 8_000_000  # characters of rendered text (and of any one `*` result or filter width)
MAX_POWER_BITS = 4096  # `a ** b` whose result would need more bits is refused before computing it


class TemplateLimitError(Exception):
    """A chat template that passed one of the bounds above (not a jinja2 TemplateError, so that
    the system-turn fallback of ChatTemplate.render does not render it a second time)."""


def _bounded_filter(f):
    import functools

    skip = 2 if hasattr(f, "jinja_pass_arg") else 1  # (context/environment,) value, then parameters

    @functools.wraps(f)
    def bounded(*args, **kwargs):
        for a in (*args[skip:], *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_OUTPUT:
                raise TemplateLimitError(f"filter {f.__name__} got {a}; parameters above {MAX_OUTPUT} are refused")
        return f(*args, **kwargs)

    return bounded


def _bounded_environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class NoLoader(jinja2.BaseLoader):
        def get_source(self, environment, template):
            raise TemplateLimitError(
                f"it includes, imports or extends {template!r}: a chat template must be self-contained"
            )

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"**", "*"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                if right * math.log2(abs(left)) > MAX_POWER_BITS:
                    raise TemplateLimitError(f"{left} ** {right} has more than {MAX_POWER_BITS} bits")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and _is_int(n) and len(seq) * n > MAX_OUTPUT:
                        raise TemplateLimitError(f"a {type(seq).__name__} of {len(seq)} times {n} is too long")
            return super().call_binop(context, operator, left, right)

    env = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], loader=NoLoader()
    )
    env.globals.pop("lipsum", None)  # lipsum(n=10**9) is text without end
    env.filters = {k: _bounded_filter(f) for k, f in env.filters.items()}
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@lru_cache(maxsize=8)
def compile_jinja(source: str):
    """Compile a chat template as HF's `_compile_jinja_template` does (in the bounded sandbox
    above). Raises jinja2 errors."""
    return _bounded_environment().from_string(source)


def _deadline_trace(deadline: float):
    """A sys.settrace function that stops template code (loops too) past `deadline`; other
    frames are not traced."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        count += 1
        if count % 256 == 0 and time.monotonic() > deadline:
            raise TemplateLimitError(f"rendering took more than {RENDER_SECONDS:g} s")
        return local

    def call(frame, event, arg):
        return local if frame.f_code.co_filename == "<template>" else None

    return call


def render_jinja(
    source: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "", add_generation_prompt: bool = True
) -> str:
    """The template's output exactly as HF `apply_chat_template(tokenize=False)` gives it.
    Raises jinja2's TemplateError for what the template itself refuses (raise_exception, an
    undefined or unsafe name), ModelError for everything else, naming the template's line."""
    import jinja2

    chunks, n = [], 0
    old = sys.gettrace()
    sys.settrace(_deadline_trace(time.monotonic() + RENDER_SECONDS))
    try:
        for chunk in compile_jinja(source).generate(
            messages=messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt
        ):
            n += len(chunk)
            if n > MAX_OUTPUT:
                raise TemplateLimitError(f"its text passed {MAX_OUTPUT} characters")
            chunks.append(chunk)
    except jinja2.exceptions.TemplateError:
        raise
    except (Exception, RecursionError) as e:
        raise ModelError(
            f"the chat template cannot be rendered{_template_line(e)}: {_problem(e)}; "
            f"choose a built-in one with --template {'|'.join(BUILTIN)}"
        ) from None
    finally:
        sys.settrace(old)
    return "".join(chunks)


def _template_line(e: BaseException) -> str:
    line, tb = None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _problem(e: BaseException) -> str:
    if isinstance(e, TemplateLimitError):
        return str(e)
    if isinstance(e, RecursionError):
        return "it recurses without end"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


# ---- the template a chat uses ----


@dataclass
class ChatTemplate:
    """How a conversation becomes prompt text, and which token texts end a reply.

    `name` is "jinja", "raw" or a built-in family; `family` is the built-in family of a Jinja
    template when recognised (None otherwise); `source` the Jinja text."""

    name: str
    source: str | None = None
    family: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    strip_bos: bool = True
    stop_texts: tuple[str, ...] = field(default=())

    @property
    def is_raw(self) -> bool:
        return self.name == "raw"

    def describe(self) -> str:
        if self.name == "jinja":
            fam = f"recognised as {self.family}" if self.family else "family not recognised"
            return f"the model's Jinja chat template ({fam})"
        if self.is_raw:
            return "raw (no template: plain text completion)"
        return f"built-in {self.name}"

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Prompt text for `messages` (no BOS). Raises UsageError for a conversation the template
        refuses (its own raise_exception), naming the template's message."""
        _check_messages(messages)
        if self.name != "jinja":
            return _RENDERERS[self.name](messages, add_generation_prompt)
        import jinja2

        try:
            text = render_jinja(
                self.source,
                messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
            )
        except jinja2.exceptions.TemplateError as e:
            # Templates that refuse a system role (Gemma 2): fold it into the first user turn,
            # as llama.cpp's common does for templates without system support.
            if messages and messages[0]["role"] == "system" and len(messages) > 1 and messages[1]["role"] == "user":
                merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
                try:
                    text = render_jinja(
                        self.source,
                        merged + list(messages[2:]),
                        bos_token=self.bos_token,
                        eos_token=self.eos_token,
                        add_generation_prompt=add_generation_prompt,
                    )
                except jinja2.exceptions.TemplateError:
                    raise UsageError(f"the model's chat template refused the conversation: {e}") from None
            else:
                raise UsageError(f"the model's chat template refused the conversation: {e}") from None
        if self.strip_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text


def builtin(name: str) -> ChatTemplate:
    """A built-in template by name ("gemma", "llama2"/"llama-2", "llama3", "chatml", "raw")."""
    key = ALIASES.get(name, name)
    if key not in _RENDERERS:
        raise UsageError(f"unknown chat template {name!r}; accepted: {', '.join(CHOICES)} or a .jinja file")
    return ChatTemplate(name=key, stop_texts=STOP_TEXTS[key])


def from_jinja(source: str, *, bos_token: str = "", eos_token: str = "", origin: str = "template") -> ChatTemplate:
    """A template from Jinja source; a syntax error is a ModelError naming `origin` and the line."""
    import jinja2

    try:
        compile_jinja(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ModelError(
            f"{origin}: chat template does not parse (line {e.lineno}: {e.message}); "
            f"choose a built-in one with --template {'|'.join(BUILTIN)}"
        ) from None
    except (Exception, RecursionError) as e:
        raise ModelError(
            f"{origin}: chat template does not compile ({_problem(e)}); "
            f"choose a built-in one with --template {'|'.join(BUILTIN)}"
        ) from None
    try:  # a template that fails on every conversation is found before the first message
        render_jinja(source, [{"role": "user", "content": "Hi"}], bos_token=bos_token, eos_token=eos_token)
    except ModelError as e:
        raise ModelError(f"{origin}: {e}") from None
    except jinja2.exceptions.TemplateError:
        pass  # what the template refuses depends on the conversation; render() reports it
    family = detect_family(source)
    stops = STOP_TEXTS.get(family, ()) if family else ()
    if eos_token and eos_token not in stops:
        stops = (*stops, eos_token)
    return ChatTemplate(
        name="jinja", source=source, family=family, bos_token=bos_token, eos_token=eos_token, stop_texts=stops
    )


def choose(
    metadata: dict, name: str | None = "auto", *, bos_token: str = "", eos_token: str = "", origin: str = "model"
) -> tuple[ChatTemplate, str | None]:
    """The template a chat uses, and a one-line notice for the user (or None).

    name: "auto" (the GGUF's template if it has one, else raw completion with a notice),
    "jinja" (the GGUF's template; an error if it has none), "raw", a built-in name, or the
    path of a .jinja file."""
    name = name or "auto"
    source = metadata.get("tokenizer.chat_template")
    if name == "auto":
        if source:
            return from_jinja(source, bos_token=bos_token, eos_token=eos_token, origin=origin), None
        return builtin("raw"), (
            "this model has no chat template: plain completion mode (the model continues your text); "
            f"--template {'|'.join(BUILTIN)} forces a chat format"
        )
    if name == "jinja":
        if not source:
            raise UsageError(
                f"{origin} has no tokenizer.chat_template; choose --template {'|'.join(BUILTIN)} or raw"
            )
        return from_jinja(source, bos_token=bos_token, eos_token=eos_token, origin=origin), None
    if name.endswith(".jinja") or "/" in name:
        p = Path(name)
        if not p.is_file():
            raise UsageError(f"chat template file {name} not found")
        return from_jinja(p.read_text(encoding="utf-8"), bos_token=bos_token, eos_token=eos_token, origin=str(p)), None
    return builtin(name), None
