"""ChatSession: incremental prefill, regen, cancel, context full/shift, save/load.

Most tests use a scripted fake model whose KV cache records the token at every position, so
the checks are exact: after each turn the cache must hold the tokenization of the rendered
conversation, and each turn must have prefilled only the tokens after the shared prefix.
The last tests run the same flows on a tiny random GGUF model through the real runtime."""
import json

import pytest

from chat_fakes import EOS, GREEDY, FakeModel
from tinyllm.chat import templates
from tinyllm.chat.session import ChatSession
from tinyllm.errors import ContextFullError, UsageError

def session(replies, n_ctx=512, window=None, template="gemma", **kw):
    m = FakeModel(replies, n_ctx=n_ctx, window=window)
    return ChatSession(m, templates.builtin(template), params=GREEDY, **kw), m


def expected_cache(s, m):
    """The rendered conversation's tokens without the generation prompt's closing: the cache
    holds everything up to the last reply's final token (its <end_of_turn> is never fed)."""
    text = s.template.render(s.conversation(), add_generation_prompt=False)
    ids = m.tokenizer.encode(text)
    assert ids[-2:] == m.tokenizer.encode("<end_of_turn>\n", add_bos=False)
    return ids[:-2]


def test_two_turns_prefill_only_new_tokens():
    s, m = session(["Hi there!", "I am fine."])
    r1 = s.ask("Hello")
    assert "".join(r1) == "Hi there!"
    first = m.tokenizer.encode("<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n")
    assert m.calls[0] == first
    assert r1.stats.prompt_tokens == len(first) and r1.stats.reused_tokens == 0
    assert r1.stats.stop_reason == "eos" and r1.stats.generated_tokens == len("Hi there!")
    assert m.cached() == s.cached == expected_cache(s, m)

    n_calls = len(m.calls)
    r2 = s.ask("How are you?")
    assert r2.read() == "I am fine."
    new = m.tokenizer.encode(
        "<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n", add_bos=False
    )
    assert m.calls[n_calls] == new  # only this turn's tokens were prefilled
    assert r2.stats.prompt_tokens == len(new)
    assert r2.stats.reused_tokens == len(first) + len("Hi there!")
    assert m.cached() == s.cached == expected_cache(s, m)
    assert [x["role"] for x in s.messages] == ["user", "assistant", "user", "assistant"]
    assert m.resets == 0


def test_regen_truncates_to_the_prompt():
    s, m = session(["first answer", "second answer"])
    s.ask("Q").read()
    prompt = m.tokenizer.encode("<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n")
    r = s.regen()
    assert r.read() == "second answer"
    assert m.calls[-len("second answer") - 1] == prompt[-1:]  # re-fed the prompt's last token only
    assert r.stats.prompt_tokens == 1 and r.stats.reused_tokens == len(prompt) - 1
    assert s.messages[-1] == {"role": "assistant", "content": "second answer"}
    assert len(s.messages) == 2
    assert m.cached() == s.cached == expected_cache(s, m)


def test_regen_without_reply_is_an_error():
    s, _ = session([])
    with pytest.raises(UsageError, match="nothing to regenerate"):
        s.regen()


def test_sliding_window_refusal_restarts_from_empty_cache():
    s, m = session(["a long answer here", "again"], window=5)
    s.ask("Q").read()
    r = s.regen()
    assert r.read() == "again"
    assert m.resets == 1
    prompt = m.tokenizer.encode("<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n")
    assert r.stats.prompt_tokens == len(prompt) and r.stats.reused_tokens == 0
    assert m.cached() == expected_cache(s, m)


def test_system_prompt_change_reprefills_from_divergence():
    s, m = session(["x", "y"])
    s.ask("Q").read()
    s.set_system("Be brief.")
    r = s.ask("R")
    r.read()
    # Gemma puts the system text inside the first user turn, right after "<start_of_turn>user\n"
    shared = len(m.tokenizer.encode("<start_of_turn>user\n"))
    assert r.stats.reused_tokens == shared
    assert m.cached() == expected_cache(s, m)
    assert s.render().startswith("<start_of_turn>user\nBe brief.\n\nQ")


def test_cancel_keeps_partial_reply_and_conversation_goes_on():
    s, m = session(["abcdefghij", "ok"])
    r = s.ask("Q")
    got = ""
    for piece in r:
        got += piece
        if len(got) == 3:
            r.cancel()
    assert got == "abc" and r.stats.stop_reason == "cancelled"
    assert s.messages[-1] == {"role": "assistant", "content": "abc"}
    r2 = s.ask("more")
    assert r2.read() == "ok"
    assert m.cached() == expected_cache(s, m)


def test_max_tokens_limits_reply():
    s, m = session(["abcdefghij"], max_tokens=4)
    r = s.ask("Q")
    assert r.read() == "abcd" and r.stats.stop_reason == "length"


def test_context_full_stops_and_keeps_conversation():
    s, m = session(["x" * 200], n_ctx=64)
    r = s.ask("Q")
    text = r.read()
    assert r.stats.stop_reason == "context"
    assert m.kv.n_past == 64 and r.stats.n_past == 64
    assert s.messages[-1]["content"] == text and len(text) > 0
    # The next message cannot fit: the conversation is left as it was.
    before = list(s.messages)
    with pytest.raises(ContextFullError, match=r"needs \d+ tokens and n_ctx is 64"):
        s.ask("again")
    assert s.messages == before


def test_context_shift_drops_oldest_turns_and_goes_on():
    s, m = session(["a" * 20, "b" * 20, "c" * 60], n_ctx=96, context_shift=True)
    s.ask("one").read()
    s.ask("two").read()
    r = s.ask("three")
    text = r.read()
    assert text == "c" * 60  # the reply went on past the full context
    assert r.stats.stop_reason == "eos" and r.stats.shifted_turns >= 2
    assert s.messages[0]["content"] != "one"
    assert s.messages[-1] == {"role": "assistant", "content": "c" * 60}
    assert m.cached() == expected_cache(s, m)
    assert m.kv.n_past <= 96


def test_context_shift_when_the_new_message_does_not_fit():
    s, m = session(["a" * 30, "ok"], n_ctx=64, context_shift=True)
    s.ask("one").read()
    r = s.ask("x" * 20)
    assert r.read() == "ok"
    assert [x["content"] for x in s.messages] == ["x" * 20, "ok"]
    assert m.cached() == expected_cache(s, m)


def test_message_too_long_even_alone():
    s, _ = session([], n_ctx=32, context_shift=True)
    r = s.ask("y" * 40)
    with pytest.raises(ContextFullError, match="the last message alone needs"):
        r.read()


def test_clear_resets_cache_and_messages():
    s, m = session(["x", "y"], system="sys")
    s.ask("Q").read()
    s.clear()
    assert s.messages == [] and m.kv.n_past == 0 and s.cached == [] and s.system == "sys"
    r = s.ask("Q2")
    r.read()
    assert r.stats.reused_tokens == 0


def test_stop_text_not_in_eog_is_stripped():
    s, m = session(["done"], template="chatml")
    # ChatML's <|im_end|> is not in this vocabulary: it comes out as text and is cut.
    m.replies = [m.tokenizer.encode("done<|im_end|>more", add_bos=False) + [EOS]]
    r = s.ask("Q")
    pieces = list(r)
    assert "".join(pieces) == "done" and r.stats.stop_reason == "eos"
    assert s.messages[-1]["content"] == "done"
    # A text that only starts like a stop text is shown in the end.
    s2, m2 = session([], template="chatml")
    m2.replies = [m2.tokenizer.encode("a<|im", add_bos=False) + [EOS]]
    assert "".join(s2.ask("Q")) == "a<|im"


def test_raw_mode_concatenates():
    s, m = session([" upon a time"], template="raw")
    assert s.ask("Once").read() == " upon a time"
    assert m.calls[0] == m.tokenizer.encode("Once")
    assert m.cached() == m.tokenizer.encode("Once upon a time")


def test_save_and_load_round_trip(tmp_path):
    s, m = session(["Hi!", "Sure."], system="Be kind.")
    s.ask("Hello").read()
    p = s.save(tmp_path / "c.json")
    data = json.loads(p.read_text())
    assert data["format"] == "tinyllm-chat" and data["system"] == "Be kind."
    assert data["messages"] == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]

    s2, m2 = session(["Sure."])
    assert s2.load(p) == 2
    assert s2.messages == s.messages and s2.system == "Be kind."
    r = s2.ask("Again?")
    assert r.read() == "Sure."
    assert m2.cached() == expected_cache(s2, m2)  # the loaded conversation was prefilled


@pytest.mark.parametrize(
    "content,match",
    [
        ("not json", "not valid JSON"),
        ('{"messages": []}', 'no "format": "tinyllm-chat"'),
        ('{"format": "tinyllm-chat", "version": 9, "messages": []}', "version 9"),
        ('{"format": "tinyllm-chat", "version": 1, "messages": {}}', '"messages" must be a list'),
        ('{"format": "tinyllm-chat", "version": 1, "messages": [{"role": "bot", "content": "x"}]}', "message 0.*bot"),
        ('{"format": "tinyllm-chat", "version": 1, "messages": [], "system": 3}', '"system" must be text'),
    ],
)
def test_load_errors_name_file_and_value(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    s, _ = session([])
    with pytest.raises(UsageError, match=match) as e:
        s.load(p)
    assert "bad.json" in str(e.value)


def test_load_missing_file(tmp_path):
    s, _ = session([])
    with pytest.raises(UsageError, match="nothere.json"):
        s.load(tmp_path / "nothere.json")


def test_save_to_missing_directory(tmp_path):
    s, _ = session([])
    with pytest.raises(UsageError, match="no/such/dir/c.json"):
        s.save(tmp_path / "no" / "such" / "dir" / "c.json")


# ---- the same flows on a tiny random GGUF through the real runtime ----


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    from tinymodels import make_tiny_model

    import tinyllm.model

    path = make_tiny_model(tmp_path_factory.mktemp("chat"), arch="gemma3", wtype="Q8_0", seed=0)
    return tinyllm.model.load(path, n_ctx=256)


def test_tiny_model_second_turn_reuses_the_cache(tiny_gemma):
    model = tiny_gemma
    model.reset()
    s = ChatSession(model, templates.builtin("gemma"), params=GREEDY, max_tokens=8)
    r1 = s.ask("Hello")
    r1.read()
    assert r1.stats.prompt_tokens == len(s.tokens(s.messages[:1]))
    assert r1.stats.generated_tokens == 8 or r1.stats.stop_reason == "eos"
    r2 = s.ask("world")
    text2 = r2.read()
    full = s.tokens(s.messages[:3])
    assert r2.stats.reused_tokens + r2.stats.prompt_tokens == len(full)
    assert r2.stats.reused_tokens >= len(s.tokens(s.messages[:1]))  # at least the first prompt was reused
    assert model.kv.n_past == len(s.cached) and s.cached[: len(full)] == full

    # The same conversation prefilled from an empty cache gives the same greedy reply.
    fresh = ChatSession(model, templates.builtin("gemma"), params=GREEDY, max_tokens=8)
    fresh.messages = [dict(m) for m in s.messages[:2]]
    model.reset()
    r3 = fresh.ask("world")
    assert r3.read() == text2
    assert r3.stats.prompt_tokens == len(full) and r3.stats.reused_tokens == 0


@pytest.mark.slow
def test_chatml_prompt_of_the_default_chat_model_is_llama_cpps():
    """SmolLM2's BOS is <|im_start|> and its vocabulary adds no BOS: the template's first
    <|im_start|> is the prompt's own first token, not a BOS to strip (llama.cpp strips a
    template's leading BOS only where the vocabulary adds one). Rendered text and ids against
    llama-tokenize's (tests/data/golden/smollm2/chat-prompts.json)."""
    from pathlib import Path

    import tinyllm
    from tinyllm.default_model import default_chat_model_path

    golden = json.loads((Path(__file__).parent / "data" / "golden" / "smollm2" / "chat-prompts.json").read_text())
    model = tinyllm.load(default_chat_model_path(), n_ctx=256)
    template, _ = templates.choose(model.gguf.metadata, "auto", origin="SmolLM2")
    s = ChatSession(model, template)
    for case in golden["cases"]:
        messages = [{"role": "user", "content": case["message"]}]
        assert s.render(messages) == case["text"]
        assert s.tokens(messages) == case["ids"], case["message"]
