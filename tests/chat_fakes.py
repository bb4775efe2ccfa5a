"""A scripted fake model for the chat tests: character-level vocabulary with Gemma's special
tokens, a KV cache that records the token at every position, and replies read from a script."""
import numpy as np

from tinyllm.errors import ContextFullError, UsageError
from tinyllm.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
EOS, BOS, EOT = 1, 2, 5


class FakeTokenizer:
    """Character-level vocabulary with Gemma's special tokens first."""

    def __init__(self):
        self.tokens = SPECIALS + [chr(c) for c in range(32, 127)] + ["\n"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.bos_id, self.eos_id, self.add_bos = BOS, EOS, True
        self.eog_ids = {EOS, EOT}
        self.n_vocab = len(self.tokens)

    def encode(self, text, add_bos=True, parse_special=True):
        out = [BOS] if add_bos else []
        i = 0
        while i < len(text):
            for s in SPECIALS:
                if parse_special and text.startswith(s, i):
                    out.append(self.ids[s])
                    i += len(s)
                    break
            else:
                out.append(self.ids[text[i]])
                i += 1
        return out

    def decode(self, ids):
        return "".join(self.tokens[i] for i in ids if i >= len(SPECIALS))

    def token_to_id(self, text):
        return self.ids.get(text)

    def stream(self):
        tok = self

        class D:
            def push(self, i):
                return tok.decode([i])

            def flush(self):
                return ""

        return D()


class FakeKV:
    kv_type = "f16"

    def __init__(self, n_ctx):
        self.n_ctx, self.n_past = n_ctx, 0

    def usage(self):
        from types import SimpleNamespace

        # 1 KiB per cell, one group (the fields of tinyllm.model KVCache.usage())
        return SimpleNamespace(
            tokens_used=self.n_past, n_ctx=self.n_ctx, mib_used=self.n_past / 1024, mib_allocated=self.n_ctx / 1024,
            groups=[],
        )


class FakeModel:
    """Replies with the scripted texts, one per reply, then <end_of_turn>. `window`: truncation
    further back than this many tokens fails, as a sliding-window ring would."""

    def __init__(self, replies, n_ctx=512, window=None):
        self.tokenizer = FakeTokenizer()
        self.gguf = type("G", (), {"metadata": {"tokenizer.ggml.tokens": self.tokenizer.tokens}})()
        self.config = type(
            "C",
            (),
            dict(n_vocab=self.tokenizer.n_vocab, arch="gemma3", n_layer=2, n_embd=64, n_head=2, n_head_kv=1,
                 head_dim=32, n_ff=128, n_ctx_train=n_ctx, n_swa=0, swa_layers=(False, False)),
        )()
        self.kv = FakeKV(n_ctx)
        self.path = "fake.gguf"
        self.replies = [list(self.tokenizer.encode(r, add_bos=False)) + [EOT] for r in replies]
        self.seq = []  # token at each cache position
        self.calls = []  # token lists given to forward
        self.window = window
        self.resets = 0
        self._script = []

    def reset(self):
        self.kv.n_past = 0
        self.resets += 1

    def truncate(self, n):
        if self.window is not None and self.kv.n_past - n > self.window:
            raise UsageError(f"cannot truncate the KV cache to {n}")
        self.kv.n_past = n

    def forward(self, ids):
        ids = [int(t) for t in ids]
        if self.kv.n_past + len(ids) > self.kv.n_ctx:
            raise ContextFullError("full")
        self.calls.append(ids)
        self.seq = self.seq[: self.kv.n_past] + ids
        self.kv.n_past += len(ids)
        if len(ids) > 1 or not self._script:  # a prefill starts the next scripted reply
            self._script = list(self.replies.pop(0)) if self.replies else [EOT]
        nxt = self._script.pop(0) if self._script else EOT
        logits = np.zeros(self.tokenizer.n_vocab, np.float32)
        logits[nxt] = 10.0
        return logits

    def cached(self):
        return self.seq[: self.kv.n_past]


