"""generate() on tiny random models (tests/tinymodels.py).

Outside references: greedy decoding through the KV cache must equal an argmax over full
recomputes of the whole sequence; streamed text must equal the tokenizer's decode of the
generated ids. A few tests wrap the real model to script its logits (to force an EOS or a
multi-byte character) or to interrupt a forward call.
"""
import numpy as np
import pytest

from tinyllm.errors import UsageError
from tinyllm.generation import generate
from tinyllm.model import load
from tinyllm.sampling import SamplingParams

from tinymodels import make_tiny_model

GREEDY = SamplingParams(temperature=0)
PROMPT = "Hello world, the cat is"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gen"), arch="gemma3", wtype="Q8_0", seed=3)


@pytest.fixture(scope="module")
def model(tiny):
    return load(tiny, n_ctx=256, threads=1)


@pytest.fixture
def m(model):
    model.reset()
    return model


class Scripted:
    """The real model, with logits overridden per decode call by `script(step, logits)`."""

    def __init__(self, model, script=None, interrupt_at=None):
        self._m, self.script, self.interrupt_at, self.calls = model, script, interrupt_at, 0

    def __getattr__(self, name):
        return getattr(self._m, name)

    def forward(self, ids, all_logits=False):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        logits = self._m.forward(ids, all_logits)
        if self.script is not None:
            logits = self.script(self.calls - 1, logits.copy())
        return logits


def greedy_by_recompute(model, ids, n):
    """Reference: argmax of the last logits of a from-scratch forward over the whole sequence."""
    seq, out = list(ids), []
    for _ in range(n):
        model.reset()
        t = int(np.argmax(model.forward(np.array(seq, np.int32))))
        out.append(t)
        seq.append(t)
    model.reset()
    return out


def test_greedy_equals_full_recompute_and_is_deterministic(m):
    g = generate(m, PROMPT, max_tokens=10, params=GREEDY, stop_ids=())
    text = g.read()
    ids = m.tokenizer.encode(PROMPT, add_bos=True)
    assert g.tokens == greedy_by_recompute(m, ids, 10)
    g2 = generate(m, PROMPT, max_tokens=10, params=GREEDY, stop_ids=())
    assert g2.read() == text and g2.tokens == g.tokens


def test_stats_and_cache_after_length_stop(m):
    g = generate(m, PROMPT, max_tokens=7, params=GREEDY, stop_ids=())
    pieces = list(g)
    st = g.stats
    n_prompt = len(m.tokenizer.encode(PROMPT, add_bos=True))
    assert st.stop_reason == "length"
    assert st.prompt_tokens == n_prompt
    assert st.generated_tokens == len(g.tokens) == 7
    assert st.decode_steps == 6  # the first token comes from the prefill logits
    assert st.n_past == m.kv.n_past == n_prompt + 6  # the last token was never fed back
    assert st.prefill_seconds > 0 and st.prefill_tps > 0 and st.decode_tps > 0 and st.ttft_seconds > 0
    assert "".join(pieces) == g.text


def test_seed_reproducible_and_seeds_differ(m):
    p = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    runs = {}
    for seed in (1, 1, 2):
        m.reset()
        g = generate(m, PROMPT, max_tokens=24, params=p.replace(seed=seed), stop_ids=())
        g.read()
        assert g.stats.seed == seed
        runs.setdefault(seed, []).append(g.tokens)
    assert runs[1][0] == runs[1][1]
    assert runs[1][0] != runs[2][0]


def test_stops_at_eog_from_tokenizer(m):
    eos = m.tokenizer.eos_id
    assert eos in m.tokenizer.eog_ids

    def script(step, logits):
        if step == 3:  # prefill is step 0; the 4th sampled token is forced to EOS
            logits[eos] = logits.max() + 10
        return logits

    g = generate(Scripted(m, script), PROMPT, max_tokens=50, params=GREEDY)
    g.read()
    assert g.stats.stop_reason == "eos"
    assert g.stop_token == eos and eos not in g.tokens
    assert len(g.tokens) == 3


def test_stop_ids_replace_the_default_set(m):
    p = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=9)
    ref = generate(m, PROMPT, max_tokens=8, params=p, stop_ids=())
    ref.read()
    k = next(i for i, t in enumerate(ref.tokens) if t not in ref.tokens[:i] and i > 0)
    m.reset()
    g = generate(m, PROMPT, max_tokens=8, params=p, stop_ids={ref.tokens[k]})
    g.read()
    assert g.stats.stop_reason == "eos" and g.tokens == ref.tokens[:k]


def test_context_overflow_during_generation_stops_cleanly(m):
    n_ctx = m.kv.n_ctx
    ids = [m.tokenizer.bos_id] + [int(t) for t in np.random.default_rng(0).integers(10, m.config.n_vocab, n_ctx - 5)]
    g = generate(m, ids, max_tokens=50, params=GREEDY, stop_ids=())
    g.read()
    st = g.stats
    assert st.stop_reason == "context"
    assert m.kv.n_past == n_ctx and st.n_past == n_ctx
    assert len(g.tokens) == 5  # 4 fed back fill the cache; the 5th was sampled but not evaluated
    assert st.n_ctx == n_ctx and st.tokens_needed == n_ctx - 4 + 50


def test_prompt_longer_than_context_gives_context_stop(m):
    ids = [m.tokenizer.bos_id] * (m.kv.n_ctx + 1)
    g = generate(m, ids, max_tokens=5, params=GREEDY)
    assert list(g) == []
    assert g.stats.stop_reason == "context" and g.tokens == [] and m.kv.n_past == 0
    assert g.stats.tokens_needed == m.kv.n_ctx + 1 + 5


def test_token_prompt_continues_the_cache(m):
    # Prefilling A then B (as the chat does) equals prefilling A+B at once.
    a = m.tokenizer.encode("Hello world", add_bos=True)
    b = m.tokenizer.encode(", the cat is", add_bos=False)
    one = generate(m, a + b, max_tokens=6, params=GREEDY, stop_ids=())
    one.read()
    m.reset()
    first = generate(m, a, max_tokens=0, params=GREEDY)
    assert first.read() == "" and first.stats.stop_reason == "length" and m.kv.n_past == len(a)
    two = generate(m, b, max_tokens=6, params=GREEDY, stop_ids=())
    two.read()
    assert two.stats.prompt_tokens == len(b)
    assert two.tokens == one.tokens


def test_text_prompt_adds_bos_only_on_empty_cache(m):
    g = generate(m, "Hello", max_tokens=0)
    g.read()
    n1 = m.kv.n_past
    assert n1 == len(m.tokenizer.encode("Hello", add_bos=True))
    g = generate(m, "Hello", max_tokens=0)
    g.read()
    assert m.kv.n_past - n1 == len(m.tokenizer.encode("Hello", add_bos=False))


def test_streamed_pieces_join_to_decode(m):
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=5)
    g = generate(m, PROMPT, max_tokens=40, params=p, stop_ids=())
    pieces = list(g)
    assert "".join(pieces) == m.tokenizer.decode(g.tokens)


def test_multibyte_characters_stream_intact(m):
    text = "é😀中"
    target = [t for t in m.tokenizer.encode(text, add_bos=False)]
    assert len(target) > len(text)  # byte-fallback tokens: characters span several tokens

    def script(step, logits):
        if step < len(target):
            logits[target[step]] = logits.max() + 10
        return logits

    seen = []
    g = generate(Scripted(m, script), PROMPT, max_tokens=len(target), params=GREEDY, stop_ids=(),
                 on_token=lambda tid, piece: seen.append((tid, piece)))
    pieces = list(g)
    assert g.tokens == target
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert [t for t, _ in seen] == target and "".join(p for _, p in seen) == text


def test_cancel_keeps_partial_text(m):
    g = generate(m, PROMPT, max_tokens=30, params=GREEDY, stop_ids=())
    got = []
    for piece in g:
        got.append(piece)
        if len(g.tokens) == 3:
            g.cancel()
    assert g.stats.stop_reason == "cancelled"
    assert len(g.tokens) == 3 and g.text == "".join(got)


def test_keyboard_interrupt_inside_forward_ends_cleanly(m):
    g = generate(Scripted(m, interrupt_at=4), PROMPT, max_tokens=30, params=GREEDY, stop_ids=())
    text = g.read()  # no exception escapes
    assert g.stats.stop_reason == "cancelled"
    assert len(g.tokens) == 3 and text == g.text


@pytest.mark.parametrize(
    "prompt,kwargs,needle",
    [
        ([], {}, "empty prompt"),
        ([5, 10**7], {}, "10000000"),
        ([5], {"max_tokens": 2.5}, "2.5"),
    ],
)
def test_bad_arguments_raise_usage_error(m, prompt, kwargs, needle):
    with pytest.raises(UsageError) as e:
        generate(m, prompt, **kwargs)
    assert needle in str(e.value)


# -- one generation at a time on a model ------------------------------------------------------

def test_a_second_thread_gets_model_busy_while_a_generation_runs(m):
    """Two threads on one KV cache used to garble both outputs: the second is refused, in one
    line naming the other thread, and the first one's text is what it is alone."""
    import threading

    from tinyllm.errors import ModelBusyError

    ids = m.tokenizer.encode(PROMPT)
    alone = generate(m, ids, max_tokens=8, params=GREEDY).read()
    m.reset()
    started, tried, refused = threading.Event(), threading.Event(), []

    def on_token(tid, piece):
        started.set()
        tried.wait(60)

    def other():
        started.wait(60)
        for attempt in (lambda: generate(m, ids, max_tokens=8, params=GREEDY), lambda: m.forward(ids),
                        m.reset, lambda: m.truncate(0)):
            try:
                attempt()
            except ModelBusyError as e:
                refused.append(str(e))
        tried.set()

    t = threading.Thread(target=other, name="other-thread")
    t.start()
    text = generate(m, ids, max_tokens=8, params=GREEDY, on_token=on_token).read()
    t.join(60)
    assert text == alone
    assert len(refused) == 4 and all("\n" not in r for r in refused)
    assert "another thread (MainThread)" in refused[0] and "one generation at a time" in refused[0]
    # once that generation has ended, the other thread may use the model
    out = []
    t = threading.Thread(target=lambda: (m.reset(), out.append(generate(m, ids, max_tokens=8, params=GREEDY).read())))
    t.start()
    t.join(60)
    assert out == [alone]


def test_two_threads_racing_each_get_the_true_text_or_model_busy(m):
    import threading

    from tinyllm.errors import ModelBusyError

    ids = m.tokenizer.encode(PROMPT)
    alone = generate(m, ids, max_tokens=12, params=GREEDY).read()
    barrier, results = threading.Barrier(2), []

    def worker():
        barrier.wait()
        for _ in range(3):
            try:
                g = generate(m, ids, max_tokens=12, params=GREEDY)
            except ModelBusyError:
                results.append("busy")
                continue
            m.kv.reset()  # the cache is this generation's own now
            results.append(g.read())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 6 and set(results) <= {alone, "busy"} and alone in results


def test_a_later_generation_in_the_same_thread_supersedes_an_unfinished_one(m):
    ids = m.tokenizer.encode(PROMPT)
    g1 = generate(m, ids, max_tokens=8, params=GREEDY)
    next(g1)
    m.reset()
    g2 = generate(m, ids, max_tokens=8, params=GREEDY)
    assert g2.read()
    with pytest.raises(UsageError, match="superseded by a later one"):
        g1.read()


def test_a_generation_made_in_one_thread_may_be_iterated_in_another(m):
    import threading

    ids = m.tokenizer.encode(PROMPT)
    alone = generate(m, ids, max_tokens=8, params=GREEDY).read()
    m.reset()
    g, out = generate(m, ids, max_tokens=8, params=GREEDY), []
    t = threading.Thread(target=lambda: out.append(g.read()))
    t.start()
    t.join(60)
    assert out == [alone]
