"""SmolLM2 135M Instruct in tinyllm and in llama.cpp, prompt by prompt: the token ids of the
ChatML prompt (`tinyllm tokenize --ids` against `llama-tokenize --ids`) and the greedy
continuation (`tinyllm run --temp 0` against llama.cpp's `llama-simple`, a greedy sampler).

    benchmarks/build_llama_cpp.sh        # once; then: cmake --build DIR/build --target llama-simple
    python benchmarks/bench_smollm2_vs_llama.py [-m MODEL] [-n 64] [-t 2] [--prompt TEXT ...]

Each user message is rendered once by the GGUF's own chat template (tinyllm.chat.templates,
the Jinja source in `tokenizer.chat_template`) and that same text goes to both tools. Both add
BOS only if the vocabulary asks for it (`tokenizer.ggml.add_bos_token`; SmolLM2's says no) and
both parse special-token texts such as `<|im_start|>`, so like is compared with like. Both stop
at an end-of-generation token (`<|im_end|>`) or after -n tokens. llama-simple echoes the prompt
(its tokens' pieces) before the continuation; that echo is cut off. Trailing newlines are not
compared (both tools end the output with one).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_cpp_tools import tool  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Name three primary colors.",
    "Translate 'good morning' into French and Spanish.",
]


def run(cmd, stdin=None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=stdin)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return r


def render(model, message: str) -> str:
    from tinyllm.chat.templates import choose
    from tinyllm.gguf_io import GGUFFile

    template, _ = choose(GGUFFile(model).metadata, "jinja", origin=str(model))
    return template.render([{"role": "user", "content": message}], add_generation_prompt=True)


def ids_line(out: str) -> list[int]:
    line = [s for s in out.splitlines() if s.startswith("[")][-1]
    return json.loads(line)


def tinyllm_ids(model, text):
    return ids_line(run([sys.executable, "-m", "tinyllm", "tokenize", "-m", model, "--ids", "-p", text]).stdout)


def llama_ids(model, text):
    return ids_line(run([tool("llama-tokenize"), "-m", model, "--ids", "--no-escape", "--log-disable",
                         "-p", text]).stdout)


def tinyllm_greedy(model, text, n, threads):
    r = run([sys.executable, "-m", "tinyllm", "run", "-m", model, "--temp", "0", "-n", n, "-t", threads, "-p", text])
    return r.stdout.rstrip("\n")


def llama_greedy(model, text, n, threads):
    out = run([tool("llama-simple"), "-m", model, "-n", n, text]).stdout
    at = out.find(text)
    if at < 0:
        sys.exit(f"llama-simple did not echo the prompt:\n{out[:500]}")
    return out[at + len(text):].rstrip("\n")


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF with a chat template (default: SmolLM2 135M Q4_1)")
    ap.add_argument("-n", type=int, default=64, help="most tokens to generate (default: 64)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--prompt", action="append", help="a user message (repeatable; default: five questions)")
    args = ap.parse_args()
    if args.model is None:
        from tinyllm.default_model import default_chat_model_path

        args.model = default_chat_model_path()
    rows = []
    for msg in args.prompt or PROMPTS:
        text = render(args.model, msg)
        ti, li = tinyllm_ids(args.model, text), llama_ids(args.model, text)
        tg, lg = tinyllm_greedy(args.model, text, args.n, args.threads), llama_greedy(args.model, text, args.n, args.threads)
        rows.append((msg, ti, li, tg, lg))
        print(f"--- {msg!r}\nprompt: {text!r}\ntinyllm ids   ({len(ti)}): {ti}\nllama.cpp ids ({len(li)}): {li}\n"
              f"tinyllm greedy:   {tg!r}\nllama.cpp greedy: {lg!r}\n", file=sys.stderr, flush=True)
    print(f"\n{Path(args.model).name}, greedy, -n {args.n}\n")
    print("| prompt | prompt tokens | ids equal | greedy text equal | first difference (char) | tinyllm greedy text |")
    print("|---|--:|---|---|--:|---|")
    for msg, ti, li, tg, lg in rows:
        diff = "" if tg == lg else str(first_difference(tg, lg))
        shown = tg.replace("\n", "⏎").replace("|", "\\|")
        print(f"| {msg} | {len(ti)} | {'yes' if ti == li else 'NO'} | {'yes' if tg == lg else 'NO'} | {diff} | {shown} |")
    if any(ti != li or tg != lg for _, ti, li, tg, lg in rows):
        for msg, ti, li, tg, lg in rows:
            if ti != li:
                print(f"\nids differ for {msg!r}:\n  tinyllm   {ti}\n  llama.cpp {li}")
            if tg != lg:
                print(f"\ngreedy text differs for {msg!r}:\n  tinyllm   {tg!r}\n  llama.cpp {lg!r}")


if __name__ == "__main__":
    main()
