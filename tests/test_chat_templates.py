"""Chat templates against outside references: the exact strings of spec architectures.md §6,
llama.cpp's own expected outputs (tests/test-chat-template.cpp, conversation below), and
jinja2 renderings of the real Hugging Face templates of each family (written out here)."""
import jinja2
import jinja2.sandbox
import pytest

from tinyllm.chat import templates as T
from tinyllm.errors import ModelError, UsageError

# llama.cpp tests/test-chat-template.cpp: its conversation, with the padded assistant turn
# that shows which formatters trim.
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]
NO_SYSTEM = CONVERSATION[1:]

# ---- the real HF templates (tokenizer_config.json chat_template of each model) ----

# google/gemma-3-*-it
HF_GEMMA3 = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# google/gemma-2-2b-it (llama.cpp models/templates/google-gemma-2-2b-it.jinja): no system role.
HF_GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# meta-llama/Llama-2-7b-chat-hf
HF_LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct
HF_LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# teknium/OpenHermes-2.5 (plain ChatML) and Qwen/Qwen2-7B-Instruct (ChatML + default system)
HF_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
    "+ '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HF_QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOKENS = {
    "gemma": ("<bos>", "<eos>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>"),
    "chatml": ("", "<|im_end|>"),
}


def hf_render(source, messages, family, add_generation_prompt=True):
    """What HF apply_chat_template(tokenize=False) gives, rendered with plain jinja2 here, then
    the leading BOS removed (tinyllm's tokenizer adds it)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    bos, eos = TOKENS[family]
    text = env.from_string(source).render(
        messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt
    )
    return text[len(bos) :] if bos and text.startswith(bos) else text


# ---- spec §6: exact strings ----


def test_gemma_spec_string():
    msgs = [{"role": "user", "content": "Hi"}]
    assert T.render_gemma(msgs) == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_llama2_spec_meta_reference():
    msgs = [
        {"role": "system", "content": "{sys}"},
        {"role": "user", "content": "{user}"},
        {"role": "assistant", "content": "{answer}"},
        {"role": "user", "content": "{user2}"},
    ]
    # spec §6.3, Meta's reference format, without the leading <s> the tokenizer adds
    ref = "<s>[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user2} [/INST]"
    assert "<s>" + T.render_llama2(msgs) == ref


def test_llama3_spec_string():
    msgs = [{"role": "user", "content": " Hi "}]
    assert T.render_llama3(msgs) == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_chatml_spec_string_keeps_spaces():
    msgs = [{"role": "user", "content": " Hi "}]
    assert T.render_chatml(msgs) == "<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n"


# ---- llama.cpp's expected outputs for its built-in formatters (test-chat-template.cpp) ----


def test_gemma_matches_llama_cpp_builtin():
    assert T.render_gemma(CONVERSATION) == (
        "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there"
        "<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
        "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"
    )


def test_chatml_matches_llama_cpp_builtin():
    assert T.render_chatml(CONVERSATION) == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
        "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_matches_llama_cpp_builtin():
    h = "<|start_header_id|>{}<|end_header_id|>\n\n"
    expected = (
        h.format("system") + "You are a helpful assistant<|eot_id|>" + h.format("user") + "Hello<|eot_id|>"
        + h.format("assistant") + "Hi there<|eot_id|>" + h.format("user") + "Who are you<|eot_id|>"
        + h.format("assistant") + "I am an assistant<|eot_id|>" + h.format("user") + "Another question<|eot_id|>"
        + h.format("assistant")
    )
    assert T.render_llama3(CONVERSATION) == expected


# ---- built-ins equal the jinja2 rendering of the real HF templates ----

CASES = [
    pytest.param("gemma", HF_GEMMA3, CONVERSATION, id="gemma3-sys"),
    pytest.param("gemma", HF_GEMMA3, NO_SYSTEM, id="gemma3"),
    pytest.param("gemma", HF_GEMMA2, NO_SYSTEM, id="gemma2"),
    pytest.param("llama2", HF_LLAMA2, CONVERSATION, id="llama2-sys"),
    pytest.param("llama2", HF_LLAMA2, NO_SYSTEM, id="llama2"),
    pytest.param("llama3", HF_LLAMA3, CONVERSATION, id="llama3"),
    pytest.param("chatml", HF_CHATML, CONVERSATION, id="chatml"),
    pytest.param("chatml", HF_QWEN2, CONVERSATION, id="qwen2"),
]


@pytest.mark.parametrize("family,source,messages", CASES)
@pytest.mark.parametrize("gen", [True, False])
def test_builtin_equals_hf_jinja(family, source, messages, gen):
    msgs = messages if gen else messages[:-1]  # end on an assistant turn when no generation prompt
    expected = hf_render(source, msgs, family, add_generation_prompt=gen)
    assert T.builtin(family).render(msgs, add_generation_prompt=gen) == expected


@pytest.mark.parametrize("family,source,messages", CASES)
def test_jinja_template_equals_hf_jinja(family, source, messages):
    bos, eos = TOKENS[family]
    tmpl = T.from_jinja(source, bos_token=bos, eos_token=eos)
    assert tmpl.name == "jinja" and tmpl.family == family
    assert tmpl.render(messages) == hf_render(source, messages, family)
    assert not tmpl.render(messages).startswith(bos) or not bos


@pytest.mark.parametrize("family,source", [pytest.param(*c.values[:2], id=c.id) for c in CASES])
def test_detect_family_like_llama_cpp(family, source):
    assert T.detect_family(source) == family


def test_detect_family_unknown():
    assert T.detect_family("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None


def test_stop_texts_per_family():
    assert "<end_of_turn>" in T.builtin("gemma").stop_texts
    assert "<|eot_id|>" in T.builtin("llama3").stop_texts
    assert "<|im_end|>" in T.builtin("chatml").stop_texts
    assert T.builtin("llama-2").name == "llama2"
    tmpl = T.from_jinja(HF_GEMMA3, bos_token="<bos>", eos_token="<eos>")
    assert tmpl.stop_texts[0] == "<end_of_turn>"


# ---- Jinja environment as HF sets it up ----


def test_gemma2_system_folded_into_first_user_turn():
    tmpl = T.from_jinja(HF_GEMMA2, bos_token="<bos>", eos_token="<eos>")
    out = tmpl.render(CONVERSATION[:2])
    assert out == "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\n"


def test_raise_exception_becomes_usage_error():
    tmpl = T.from_jinja(HF_GEMMA3, bos_token="<bos>")
    bad = [{"role": "assistant", "content": "x"}]
    with pytest.raises(UsageError, match="Conversation roles must alternate"):
        tmpl.render(bad)


def test_tojson_keeps_unicode_and_strftime_now_exists():
    src = "{{ messages[0]['content'] | tojson }} {{ strftime_now('%Y') | length }}"
    out = T.from_jinja(src).render([{"role": "user", "content": "héllo <b>"}])
    assert out == '"héllo <b>" 4'


def test_sandbox_is_immutable():
    src = "{{ messages.append({'role': 'user', 'content': 'x'}) }}"
    with pytest.raises(UsageError, match="refused"):
        T.from_jinja(src).render([{"role": "user", "content": "a"}])


def test_trim_and_lstrip_blocks_as_hf():
    src = "{% for m in messages %}\n    {% if true %}\n{{ m['content'] }}\n    {% endif %}\n{% endfor %}"
    assert T.from_jinja(src).render([{"role": "user", "content": "a"}]) == "a\n"


def test_bad_role_names_it():
    with pytest.raises(UsageError, match="'robot'"):
        T.builtin("chatml").render([{"role": "robot", "content": "x"}])


def test_raw_concatenates():
    msgs = [{"role": "system", "content": "Once "}, {"role": "user", "content": "upon"}, {"role": "assistant", "content": " a time"}]
    assert T.builtin("raw").render(msgs) == "Once upon a time"
    assert T.builtin("raw").is_raw


# ---- choosing a template ----


def test_choose_auto_without_template_is_raw_with_notice():
    tmpl, notice = T.choose({}, "auto")
    assert tmpl.is_raw and "no chat template" in notice


def test_choose_auto_uses_gguf_template():
    tmpl, notice = T.choose({"tokenizer.chat_template": HF_LLAMA3}, "auto", bos_token="<|begin_of_text|>")
    assert tmpl.name == "jinja" and tmpl.family == "llama3" and notice is None


def test_choose_builtin_overrides_gguf():
    tmpl, _ = T.choose({"tokenizer.chat_template": HF_LLAMA3}, "chatml")
    assert tmpl.name == "chatml"


def test_choose_jinja_without_template_names_model():
    with pytest.raises(UsageError, match="m.gguf has no tokenizer.chat_template"):
        T.choose({}, "jinja", origin="m.gguf")


def test_choose_unknown_name():
    with pytest.raises(UsageError, match="'vicuna'.*gemma"):
        T.choose({}, "vicuna")


def test_choose_file(tmp_path):
    p = tmp_path / "t.jinja"
    p.write_text(HF_CHATML)
    tmpl, _ = T.choose({}, str(p))
    assert tmpl.family == "chatml"
    with pytest.raises(UsageError, match="missing.jinja"):
        T.choose({}, str(tmp_path / "missing.jinja"))


def test_bad_jinja_is_model_error_naming_origin():
    with pytest.raises(ModelError, match=r"m\.gguf: chat template does not parse \(line 1"):
        T.choose({"tokenizer.chat_template": "{% for x in %}"}, "auto", origin="m.gguf")


# ---- hostile templates: one line each, and none of them hangs ----

HOSTILE = {
    "include": ('{% include "other.jinja" %}', r"includes, imports or extends 'other\.jinja'"),
    "import": ('{% import "macros.jinja" as m %}{{ m.f() }}', r"includes, imports or extends 'macros\.jinja'"),
    "extends": ('{% extends "base.jinja" %}', r"includes, imports or extends 'base\.jinja'"),
    "from_import": ('{% from "m.jinja" import f %}', r"includes, imports or extends 'm\.jinja'"),
    "range": ("{% for i in range(10**9) %}{% endfor %}", r"OverflowError: Range too big"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", r"recurses without end"),
    "division": ("{{ messages | length }}\n{{ 1/0 }}", r"\(line 2\): ZeroDivisionError: division by zero"),
    "nested_loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     r"rendering took more than"),
    "nested_string_loops": ('{% for i in "x" * 100000 %}{% for j in "x" * 100000 %}{% endfor %}{% endfor %}',
                            r"rendering took more than"),
    "power": ("{{ 10**100000000 }}", r"10 \*\* 100000000 has more than 4096 bits"),
    "repeat": ('{{ "x" * 1000000000 }}', r"a str of 1 times 1000000000 is too long"),
    "output": ('{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}', r"its text passed 8000000 characters"),
    "filter_width": ('{{ "x" | center(1000000000) }}', r"filter do_center got 1000000000"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_templates_are_one_model_error_at_load(monkeypatch, case):
    monkeypatch.setattr(T, "RENDER_SECONDS", 0.5)
    source, problem = HOSTILE[case]
    with pytest.raises(ModelError, match=problem) as e:
        T.from_jinja(source, origin="evil.gguf")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("evil.gguf: the chat template cannot be rendered")
    assert "--template" in msg


@pytest.mark.parametrize("case", ["division", "nested_loops", "power", "include"])
def test_a_template_that_fails_only_on_some_conversations_fails_in_render(monkeypatch, case):
    """Hidden behind a condition the load-time probe does not meet: render() says it, once."""
    monkeypatch.setattr(T, "RENDER_SECONDS", 0.5)
    source, problem = HOSTILE[case]
    t = T.from_jinja("{% if messages | length > 1 %}" + source + "{% endif %}ok", origin="evil.gguf")
    assert t.render([{"role": "user", "content": "Hi"}]) == "ok"
    with pytest.raises(ModelError, match=problem) as e:
        t.render(CONVERSATION)  # a system turn: no second try with the system turn folded in
    assert "\n" not in str(e.value)


def test_lipsum_is_not_there_to_write_endless_text():
    with pytest.raises(UsageError, match="'lipsum' is undefined"):
        T.from_jinja("{{ lipsum(1000000000) }}").render(NO_SYSTEM)


def test_the_render_bound_leaves_an_outer_trace_function_in_place():
    import sys

    calls = []

    def tracer(frame, event, arg):
        calls.append(event)
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        T.from_jinja(HF_GEMMA3).render(NO_SYSTEM)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(old)
