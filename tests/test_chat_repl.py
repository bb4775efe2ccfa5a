"""The chat REPL, driven through prompt-toolkit's pipe input (scripted fake model: exact and
fast), then through a real pseudo-terminal with pexpect on a tiny GGUF model, and (slow) on
the real Gemma 3 270M. The assertions are on what the screen shows."""
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chat_fakes import GREEDY, FakeModel
from tinyllm.chat import templates
from tinyllm.chat.repl import Repl, needs_more, run_piped, unwrap
from tinyllm.chat.session import ChatSession

UP, ENTER, CTRL_C, CTRL_D, CTRL_R, TAB = "\x1b[A", "\r", "\x03", "\x04", "\x12", "\t"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
# A new prompt on a terminal: prompt-toolkit turns bracketed paste on as it draws ">>> " (and
# redraws ">>> text" when a line is sent, so ">>>" alone would match the old line too).
PROMPT = "\x1b[?2004h"


def make(replies=("Hi there!", "Fine.", "Third."), n_ctx=512, template="gemma", **kw):
    m = FakeModel(list(replies), n_ctx=n_ctx)
    return ChatSession(m, templates.builtin(template), params=GREEDY, **kw), m


def drive(session, chunks, history=None, **kw):
    """Run the REPL, typing `chunks` one after another (a short pause between them, as a person
    would leave; Tab completion runs in the background). Returns (exit code, screen text)."""
    out = io.StringIO()
    with create_pipe_input() as inp:
        repl = Repl(session, out=out, input=inp, output=DummyOutput(), history=history, **kw)
        done = threading.Event()

        def typist():
            for c in chunks:
                time.sleep(0.3 if c == TAB else 0.05)
                inp.send_text(c)
            # a test that forgot to leave must not hang the run
            if not done.wait(20):
                inp.send_text(CTRL_C + "/bye" + ENTER)

        t = threading.Thread(target=typist, daemon=True)
        t.start()
        rc = repl.run()
        done.set()
    return rc, out.getvalue()


def test_first_compile_is_announced_before_the_prompt():
    """A model whose kernels still need compiling is warmed up before the first prompt, and a
    long compile is reported, so the first message is not followed by a silent pause."""
    s, m = make()
    m.compile_seconds = None
    m.warmup = lambda notice=None: setattr(m, "compile_seconds", 21.5) or 21.5
    rc, screen = drive(s, ["/bye" + ENTER])
    lines = screen.splitlines()
    assert rc == 0 and m.compile_seconds == 21.5
    assert lines[2] == "kernels compiled in 21.5 s (cached for the next runs)"


# ---- input ----


def test_welcome_two_turns_and_footers():
    s, m = make()
    rc, screen = drive(s, ["Hello" + ENTER, "How are you?" + ENTER, "/bye" + ENTER])
    assert rc == 0
    lines = screen.splitlines()
    assert lines[0].startswith("tinyllm chat · fake.gguf (gemma3) · context 512 tokens · template: built-in gemma")
    assert "/help" in lines[1] and "/bye" in lines[1]
    first = len(m.tokenizer.encode("<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"))
    second = len(
        m.tokenizer.encode("<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n", add_bos=False)
    )
    # the footer starts on its own line although the reply did not end with a newline
    assert f"Hi there!\n[ prefill {first} tok, " in screen
    assert f"Fine.\n[ prefill {second} tok, " in screen
    assert f"reply 9 tok, " in screen and f"context {first + 9}/512 ]" in screen
    assert f"context {first + 9 + second + 5}/512 ]" in screen


def test_verbose_off_hides_footer():
    s, _ = make()
    _, screen = drive(s, ["/set verbose off" + ENTER, "Hello" + ENTER, "/bye" + ENTER])
    assert "Hi there!" in screen and "[ prefill" not in screen


def test_multiline_block_backslash_and_paste_are_one_message_each():
    s, _ = make()
    drive(
        s,
        [
            '"""first' + ENTER, "second" + ENTER, 'third"""' + ENTER,
            "one\\" + ENTER, "two" + ENTER,
            PASTE_START + "pasted 1\npasted 2\n" + PASTE_END, ENTER,
            "/bye" + ENTER,
        ],
    )
    users = [m["content"] for m in s.messages if m["role"] == "user"]
    assert users == ["first\nsecond\nthird", "one\ntwo", "pasted 1\npasted 2\n"]


def test_block_helpers():
    assert needs_more('"""abc') and not needs_more('"""abc"""') and not needs_more("abc")
    assert needs_more('/system """be') and not needs_more('/system """be"""')
    assert unwrap('"""a\nb"""') == "a\nb" and unwrap("plain") == "plain"


def test_ctrl_c_at_prompt_hints_and_clears_line():
    s, _ = make()
    rc, screen = drive(s, [CTRL_C, "half typed", CTRL_C, "/bye" + ENTER])
    assert rc == 0
    assert "(Use Ctrl+D or /bye to leave.)" in screen
    assert s.messages == []  # the half-typed line was dropped, not sent


def test_ctrl_d_leaves():
    s, _ = make()
    rc, screen = drive(s, ["Hello" + ENTER, CTRL_D])
    assert rc == 0 and screen.rstrip().endswith("bye")


def test_history_is_kept_and_recalled(tmp_path):
    hist = tmp_path / "state" / "tinyllm" / "history"
    s, _ = make()
    drive(s, ["first question" + ENTER, "/bye" + ENTER], history=hist)
    assert "first question" in hist.read_text()
    # a new REPL: Up twice (past /bye) brings the question back; Ctrl+R finds it by a word
    s2, _ = make()
    drive(s2, [UP, UP, ENTER, CTRL_R, "question", ENTER, ENTER, "/bye" + ENTER], history=hist)
    assert [m["content"] for m in s2.messages if m["role"] == "user"] == ["first question", "first question"]


def test_tab_completes_commands():
    s, _ = make()
    _, screen = drive(s, ["/he", TAB, ENTER, "/sh", TAB, "in", TAB, ENTER, "/bye" + ENTER])
    assert "/regen" in screen and "start a new conversation" in screen  # /help ran
    assert "  model      fake.gguf" in screen  # /show info ran


# ---- replies ----


def test_ctrl_c_during_reply_stops_it_and_keeps_it():
    s, m = make(replies=["x" * 400, "ok"])
    forward = m.forward

    def forward_then_interrupt(ids):
        if m.kv.n_past == 40:  # mid-reply, as a person pressing Ctrl+C would
            os.kill(os.getpid(), signal.SIGINT)
        return forward(ids)

    m.forward = forward_then_interrupt
    rc, screen = drive(s, ["Go" + ENTER, "next" + ENTER, "/bye" + ENTER])
    partial = s.messages[1]["content"]
    assert 0 < len(partial) < 400 and set(partial) == {"x"}
    assert f"{partial}\n[ prefill" in screen and "stopped ]" in screen
    assert s.messages[3]["content"] == "ok"  # the conversation went on
    assert m.cached() == s.cached


def test_context_full_says_so_and_offers_clear():
    s, _ = make(replies=["y" * 200], n_ctx=64)
    _, screen = drive(s, ["Q" + ENTER, "again" + ENTER, "/clear" + ENTER, "/bye" + ENTER])
    assert "context full (64 of 64 tokens): /clear starts a new conversation" in screen
    assert "needs" in screen and "n_ctx is 64" in screen  # the next message could not fit
    assert "(new conversation; KV cache cleared)" in screen


def test_regen_and_stats():
    s, _ = make(replies=["one", "two"])
    _, screen = drive(s, ["/stats" + ENTER, "/regen" + ENTER, "Q" + ENTER, "/regen" + ENTER, "/stats" + ENTER,
                          "/bye" + ENTER])
    assert "no reply yet" in screen
    assert "error: nothing to regenerate" in screen
    assert "one\n" in screen and "two\n" in screen
    assert s.messages == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "two"}]
    assert "  prompt     1 tokens prefilled (" in screen  # regen re-fed one prompt token
    assert "  stop       eos; context" in screen


# ---- commands ----


def test_help_lists_every_command():
    s, _ = make()
    _, screen = drive(s, ["/help" + ENTER, "/?" + ENTER, "/bye" + ENTER])
    for cmd in ("/help", "/clear", "/regen", "/system", "/set", "/show", "/kv", "/stats", "/save", "/load", "/bye"):
        assert screen.count(f"  {cmd}") == 2


def test_unknown_command_says_what_is_accepted():
    s, _ = make()
    _, screen = drive(s, ["/frobnicate" + ENTER, "/bye" + ENTER])
    assert "unknown command /frobnicate; commands: /help /clear" in screen


def test_set_changes_params_and_show_lists_them():
    s, _ = make()
    _, screen = drive(s, ["/set temp 0.5" + ENTER, "/set top_k 7" + ENTER, "/set seed 42" + ENTER,
                          "/set max_tokens 100" + ENTER, "/set min_p 0" + ENTER, "/show params" + ENTER,
                          "/bye" + ENTER])
    p = s.params
    assert (p.temperature, p.top_k, p.seed, p.min_p, s.max_tokens) == (0.5, 7, 42, 0.0, 100)
    assert "  temperature    0.5" in screen and "  top_k          7" in screen and "  max_tokens     100" in screen


@pytest.mark.parametrize(
    "line,message",
    [
        ("/set temp hot", "error: /set temp takes a number, got 'hot'"),
        ("/set top_p 2", "top_p must be in [0, 1] (1 disables it), got 2.0"),
        ("/set top_k 1.5", "error: /set top_k takes an integer, got '1.5'"),
        ("/set bogus 1", "error: unknown setting 'bogus'; accepted: temp, top_k, top_p"),
        ("/set verbose maybe", "error: /set verbose takes on or off, got 'maybe'"),
        ("/set max_tokens 0", "error: /set max_tokens takes a positive integer or -1 (no limit), got 0"),
        ("/set temp", "error: /set takes NAME VALUE; names: temp, top_k"),
        ("/show nope", "error: /show takes one of: info, params, template, system; got 'nope'"),
        ("/save", "error: /save takes a file name"),
        ("/load", "error: /load takes a file name"),
    ],
)
def test_bad_values_get_one_line(line, message):
    s, _ = make()
    before = s.params
    _, screen = drive(s, [line + ENTER, "/bye" + ENTER])
    assert message in screen
    assert s.params == before


def test_show_info_template_system():
    s, _ = make()
    _, screen = drive(s, ["/show info" + ENTER, "/show template" + ENTER, "/system Be brief." + ENTER,
                          "/show system" + ENTER, "/system -" + ENTER, "/show system" + ENTER, "/bye" + ENTER])
    assert "  arch       gemma3: 2 layers, n_embd 64" in screen
    assert "template: built-in gemma" in screen
    assert repr("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n") in screen
    assert "system prompt: 'Be brief.'" in screen
    assert "(system prompt removed)" in screen and "no system prompt; /system TEXT sets one" in screen
    assert s.system is None


def test_system_prompt_reaches_the_model():
    s, m = make()
    drive(s, ['/system """You are' + ENTER, 'terse."""' + ENTER, "Hello" + ENTER, "/bye" + ENTER])
    assert m.tokenizer.decode(m.calls[0]).startswith("user\nYou are\nterse.\n\nHello")


def test_kv_and_clear():
    s, m = make()
    _, screen = drive(s, ["Hello" + ENTER, "/kv" + ENTER, "/clear" + ENTER, "/kv" + ENTER, "/bye" + ENTER])
    n = len(s.tokenizer.encode("<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n")) + 9
    assert f"KV cache (f16): 0.50 MiB allocated; {n} of 512 tokens used" in screen
    assert "KV cache (f16): 0.50 MiB allocated; 0 of 512 tokens used, 0.00 MiB" in screen
    assert s.messages == [] and m.kv.n_past == 0


def test_save_then_load(tmp_path):
    s, _ = make()
    f = tmp_path / "conv.json"
    _, screen = drive(s, ["Hello" + ENTER, f"/save {f}" + ENTER, "/bye" + ENTER])
    assert f"(saved 2 messages to {f})" in screen
    assert json.loads(f.read_text())["messages"][1] == {"role": "assistant", "content": "Hi there!"}

    s2, m2 = make(replies=["Welcome back."])
    _, screen = drive(s2, [f"/load {f}" + ENTER, "Again" + ENTER, f"/load {tmp_path}/missing.json" + ENTER,
                           "/bye" + ENTER])
    assert f"(loaded 2 messages from {f}" in screen and "  model: Hi there!" in screen
    assert "Welcome back." in screen
    assert [x["content"] for x in s2.messages] == ["Hello", "Hi there!", "Again", "Welcome back."]
    assert m2.tokenizer.decode(m2.calls[0]).startswith("user\nHello")  # the loaded turns were prefilled
    assert f"error: cannot read {tmp_path}/missing.json" in screen


def test_read_sends_a_file_as_the_message(tmp_path):
    notes = tmp_path / "my notes.txt"
    notes.write_text("line one\nline two\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01")
    s, m = make()
    _, screen = drive(s, [f'/read "{notes}" Summarize this:' + ENTER, f"/read {tmp_path}/missing.txt" + ENTER,
                          f"/read {tmp_path}/blob.bin" + ENTER, "/read" + ENTER, "/bye" + ENTER])
    assert f"(sending {notes}: 17 characters)" in screen and "Hi there!" in screen
    assert [x["content"] for x in s.messages] == ["Summarize this:\n\nline one\nline two", "Hi there!"]
    assert m.tokenizer.decode(m.calls[0]).startswith("user\nSummarize this:\n\nline one\nline two")
    assert f"error: cannot read {tmp_path}/missing.txt: No such file or directory" in screen
    assert f"error: {tmp_path}/blob.bin is not a text file" in screen
    assert "error: /read takes a file name" in screen


def test_raw_mode():
    s, m = make(replies=[" upon a time"], template="raw")
    _, screen = drive(s, ["Once" + ENTER, "/bye" + ENTER])
    assert " upon a time\n[ prefill 5 tok" in screen


def test_run_piped():
    s, _ = make()
    out, err = io.StringIO(), io.StringIO()
    assert run_piped(s, "Hello\n", out=out, err=err) == 0
    assert out.getvalue() == "Hi there!\n"
    assert err.getvalue().startswith("[ prefill ")
    assert s.messages[0]["content"] == "Hello"


# ---- a real terminal (pexpect) and a piped stdin, through the CLI on a tiny model ----

import pexpect  # noqa: E402  (in the [test] extra: a missing pexpect fails the run, never skips it)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    from tinymodels import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("repl"), arch="gemma3", wtype="Q8_0", seed=0)


def spawn(args, tmp_path, timeout=120):
    # pexpect's terminal answers no cursor-position requests: tell prompt-toolkit not to ask
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), NO_COLOR="1", TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(
        sys.executable, ["-m", "tinyllm", "chat", *args], env=env, encoding="utf-8", timeout=timeout,
        dimensions=(40, 200),
    )
    return child


def test_terminal_session_on_tiny_model(tiny_chat_model, tmp_path):
    # Greedy: this random model never says <end_of_turn> to the story request, so that reply
    # is still streaming whenever Ctrl+C comes.
    c = spawn(["-m", str(tiny_chat_model), "--template", "gemma", "-c", "4096", "--temp", "0", "-n", "8"], tmp_path)
    try:
        c.expect("context 4096 tokens")
        c.expect_exact(PROMPT)
        c.sendline("Hello")
        c.expect(r"\[ prefill (\d+) tok, [\d.]+ tok/s · reply 8 tok, [\d.]+ tok/s · context (\d+)/4096")
        first_prefill, ctx = int(c.match.group(1)), int(c.match.group(2))
        c.expect_exact(PROMPT)
        c.sendline("/kv")
        c.expect(rf"KV cache \(f16\): [\d.]+ MiB allocated; {ctx} of 4096 tokens used")
        c.expect(r"window layers \(ring, window 8\)")
        c.expect_exact(PROMPT)
        c.sendline("/set max_tokens -1")
        c.expect_exact(PROMPT)
        c.sendline("Tell me a long story")
        c.expect_exact("\x1b[?2004l")  # the prompt has handed the terminal back: the reply is on its way
        c.expect(r"[^\x1b]{10}")  # reply text is streaming (it runs until the context is full)
        c.sendcontrol("c")
        c.expect(r"\[ prefill (\d+) tok, [\d.]+ tok/s · reply (\d+) tok, [\d.]+ tok/s · context (\d+)/4096.*stopped \]")
        p2, r2, ctx2 = map(int, c.match.groups())
        assert 0 < r2 < 4000
        # the first turn stayed in the cache: context = reused + prefilled + reply tokens fed back
        assert ctx2 - p2 - r2 >= first_prefill - 1
        c.expect_exact(PROMPT)
        c.sendline("/save " + str(tmp_path / "c.json"))
        c.expect(r"saved 4 messages")
        c.expect_exact(PROMPT)
        c.sendline("/clear")
        c.expect("KV cache cleared")
        c.expect_exact(PROMPT)
        c.send("/lo")
        c.send(TAB)
        time.sleep(0.5)
        c.sendline(str(tmp_path / "c.json"))
        c.expect("loaded 4 messages")
        c.expect_exact(PROMPT)
        c.send(CTRL_C)
        c.expect(r"Use Ctrl\+D or /bye to leave")
        c.expect_exact(PROMPT)
        c.send(CTRL_R)
        c.send("long st")
        c.expect(r"Tell me a \S*long st\S*ory")  # found in the history (the match is highlighted)
        c.send(ENTER)  # accept the search: the story request is back in the line
        time.sleep(0.3)
        c.send(CTRL_C)  # ... and dropped again
        time.sleep(0.3)
        c.sendline("/bye")
        c.expect(pexpect.EOF)
    finally:
        c.close(force=True)
    assert c.exitstatus == 0
    hist = (tmp_path / "state" / "tinyllm" / "history").read_text()
    assert "+Hello" in hist and "+Tell me a long story" in hist and "+/load " in hist
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert len(saved["messages"][3]["content"]) > 0, saved  # the stopped reply was kept


def test_piped_stdin_answers_once(tiny_chat_model, tmp_path):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    p = subprocess.run(
        [sys.executable, "-m", "tinyllm", "chat", "-m", str(tiny_chat_model), "--template", "gemma", "-n", "5",
         "--temp", "0"],
        input="Hello\n", capture_output=True, text=True, timeout=300, env=env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("\n") and len(p.stdout) > 1
    assert "[ prefill " in p.stderr and "reply 5 tok" in p.stderr
    assert not (tmp_path / "state" / "tinyllm" / "history").exists()  # no REPL ran


def test_no_template_model_notice(tiny_chat_model, tmp_path):
    c = spawn(["-m", str(tiny_chat_model), "-n", "3"], tmp_path)
    try:
        c.expect("template: raw")
        c.expect("no chat template: plain completion mode")
        c.expect_exact(PROMPT)
        c.sendcontrol("d")
        c.expect(pexpect.EOF)
    finally:
        c.close(force=True)
    assert c.exitstatus == 0


def test_cli_errors_are_one_line(tiny_chat_model, tmp_path):
    for args, message in [
        (["--template", "vicuna"], "unknown chat template 'vicuna'"),
        (["--raw", "--template", "gemma"], "--raw and --template gemma contradict"),
        (["-n", "0"], "-n/--max-tokens must be a positive integer or -1"),
    ]:
        p = subprocess.run(
            [sys.executable, "-m", "tinyllm", "chat", "-m", str(tiny_chat_model), *args],
            input="Hello\n", capture_output=True, text=True, timeout=300,
        )
        assert p.returncode == 1 and p.stderr.startswith("tinyllm: error: ") and message in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


# ---- the real Gemma 3 270M (slow) ----


@pytest.mark.slow
def test_gemma_terminal_session(gemma_path, golden, tmp_path):
    case = json.loads((golden / "gemma" / "greedy.json").read_text())[0]
    # llama.cpp's greedy continuation up to its 5th token, a measured near-tie (test_gemma_e2e)
    first_tokens = " the capital of the"
    assert case["completion"].startswith(first_tokens)
    c = spawn(["-m", str(gemma_path), "-c", "2048", "--temp", "0", "-n", "32"], tmp_path, timeout=120)
    try:
        c.expect("gemma-3-270m-q4_k_m.gguf \\(gemma3\\) · context 2048 tokens · template: raw")
        c.expect("no chat template: plain completion mode")
        c.expect_exact(PROMPT)
        c.sendline(case["prompt"])
        c.expect_exact(first_tokens)  # plain completion mode: the prompt continued
        c.expect(r"\[ prefill (\d+) tok, [\d.]+ tok/s · reply (\d+) tok, [\d.]+ tok/s · context (\d+)/2048")
        p1, r1, ctx1 = map(int, c.match.groups())
        assert ctx1 == p1 + r1 - 1 or ctx1 == p1 + r1  # the last sampled token is not fed back
        c.expect_exact(PROMPT)
        c.sendline(" The capital of Germany is")
        c.expect(r"\[ prefill (\d+) tok, [\d.]+ tok/s · reply \d+ tok, [\d.]+ tok/s · context (\d+)/2048")
        p2, ctx2 = int(c.match.group(1)), int(c.match.group(2))
        assert p2 < 20 and ctx2 > ctx1  # the second turn prefilled only its own tokens
        c.expect_exact(PROMPT)
        c.sendline("/kv")
        c.expect(r"KV cache \(f16\): 21\.00 MiB allocated; (\d+) of 2048 tokens used")
        c.expect(r"full-attention layers: 3 layers, 2048 cells, 6\.00 MiB")
        c.expect(r"window layers \(ring, window 512\): 15 layers, 1024 cells, 15\.00 MiB")
        c.expect_exact(PROMPT)
        c.sendline("/save " + str(tmp_path / "g.json"))
        c.expect("saved 4 messages")
        c.expect_exact(PROMPT)
        c.sendline("/clear")
        c.expect("KV cache cleared")
        c.expect_exact(PROMPT)
        c.sendline("/set max_tokens 2000")
        c.expect_exact(PROMPT)
        c.sendline("Once upon a time")
        c.expect_exact("\x1b[?2004l")  # the prompt has handed the terminal back
        c.expect(r"\S+ \S+ \S+ \S+ \S+")  # reply text is streaming
        c.sendcontrol("c")
        c.expect(r"reply (\d+) tok, .*stopped \]")
        assert int(c.match.group(1)) < 2000
        c.expect_exact(PROMPT)
        c.sendline("/set max_tokens 32")  # the recalled turn below must end well within the timeout
        c.expect_exact(PROMPT)
        c.sendline("/load " + str(tmp_path / "g.json"))
        c.expect("loaded 4 messages")
        c.expect_exact(PROMPT)
        # history, newest first: /load, /set, Once upon a time, /set, /clear, /save, /kv, Germany
        for _ in range(8):
            c.send(UP)
            time.sleep(0.3)
        c.send(ENTER)  # recalled " The capital of Germany is"
        c.expect(r"\[ prefill (\d+) tok")
        assert int(c.match.group(1)) > p1  # after /load the whole conversation is prefilled
        c.expect_exact(PROMPT)
        c.sendline("/bye")
        c.expect(pexpect.EOF)
    finally:
        c.close(force=True)
    assert c.exitstatus == 0
    saved = json.loads(Path(tmp_path / "g.json").read_text())
    assert saved["messages"][0]["content"] == "The capital of France is"
