"""Sampling chain against a plain float64 reimplementation of spec §5 (llama.cpp semantics).

The reference below is written from the spec text, with Python lists and full sorts, and
shares no code with tinyllm.sampling.
"""
import math
from collections import Counter

import numpy as np
import pytest

from tinyllm.errors import UsageError
from tinyllm.sampling import Sampler, SamplingParams

# std::uniform_real_distribution<double>(0, 1) over std::mt19937(seed), printed by a
# 6-line C++ program built with g++ 13 / libstdc++ (what llama.cpp's dist sampler draws).
CPP_UNIFORM = {
    0: [0.59284461651668263, 0.84426574425659828, 0.85794561998982988, 0.84725173738433124],
    42: [0.79654298428784598, 0.18343478789336848, 0.77969099761266125, 0.59685016158005655],
    4294967294: [0.10184899170898529, 0.94789751258733013, 0.82893340139475558, 0.37232930669741121],
}


def ref_chain(logits, history, P: SamplingParams):
    """Spec §5.2, step by step, in float64. Returns (ids, probs) in candidate order."""
    cand = [(i, float(v)) for i, v in enumerate(logits)]
    # penalties over the last repeat_last_n accepted tokens
    hist = list(history) if P.repeat_last_n < 0 else list(history)[len(history) - P.repeat_last_n:]
    if P.repeat_last_n == 0:
        hist = []
    counts = Counter(hist)
    out = []
    for i, v in cand:
        c = counts.get(i, 0)
        if c > 0:
            v = v * P.repeat_penalty if v <= 0 else v / P.repeat_penalty
            v -= c * P.frequency_penalty + P.presence_penalty
        out.append((i, v))
    cand = out
    if P.temperature <= 0:
        best = max(cand, key=lambda t: (t[1], -t[0]))
        return [best[0]], [1.0]
    is_sorted = False
    if P.top_k > 0:
        cand = sorted(cand, key=lambda t: (-t[1], t[0]))[: min(P.top_k, len(cand))]
        is_sorted = True
    if P.top_p < 1:
        if not is_sorted:
            cand = sorted(cand, key=lambda t: (-t[1], t[0]))
            is_sorted = True
        m = cand[0][1]
        w = [math.exp(v - m) for _, v in cand]
        s = sum(w)
        cum = 0.0
        for j, wj in enumerate(w):
            cum += wj / s
            if cum >= P.top_p and j + 1 >= P.min_keep:
                cand = cand[: j + 1]
                break
    if P.min_p > 0:
        m = max(v for _, v in cand)
        lim = m + math.log(P.min_p)
        if not is_sorted:
            kept = [t for t in cand if t[1] >= lim]  # id order kept
            if kept and len(kept) >= P.min_keep:
                cand = kept
            else:
                cand = sorted(cand, key=lambda t: (-t[1], t[0]))
                is_sorted = True
        if is_sorted:
            j = 1
            while j < len(cand) and not (cand[j][1] < lim and j >= P.min_keep):
                j += 1
            cand = cand[:j]
    cand = [(i, v / P.temperature) for i, v in cand]
    m = max(v for _, v in cand)
    w = [math.exp(v - m) for _, v in cand]
    s = sum(w)
    return [i for i, _ in cand], [x / s for x in w]


def ref_pick(ids, probs, u):
    """dist: first candidate whose running sum reaches u * total."""
    run = 0.0
    for i, p in zip(ids, probs):
        run += p
        if run >= u * sum(probs):
            return i
    return ids[0]


def logits_for(seed, n=3000, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * scale).astype(np.float32)


def test_defaults_are_llama_cpp_common():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    assert (p.repeat_penalty, p.repeat_last_n, p.seed) == (1.0, 64, None)
    assert (p.frequency_penalty, p.presence_penalty, p.min_keep) == (0.0, 0.0, 0)


@pytest.mark.parametrize("seed", sorted(CPP_UNIFORM))
def test_uniform_stream_is_std_mt19937(seed):
    s = Sampler(SamplingParams(seed=seed))
    assert [s.uniform() for _ in range(4)] == CPP_UNIFORM[seed]
    s.reset()
    assert s.uniform() == CPP_UNIFORM[seed][0]


CHAINS = [
    dict(),  # llama.cpp defaults
    dict(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0),  # plain softmax over the vocabulary
    dict(top_k=5, top_p=1.0, min_p=0.0),
    dict(top_k=0, top_p=0.5, min_p=0.0, temperature=1.3),
    dict(top_k=0, top_p=1.0, min_p=0.1),  # min_p on unsorted candidates keeps id order
    dict(top_k=100, top_p=0.9, min_p=0.2, temperature=0.5),
    dict(top_k=0, top_p=0.3, min_p=0.3, temperature=2.0),
    dict(top_k=50, top_p=0.2, min_p=0.0, min_keep=7),
    dict(top_k=10, min_p=0.99, min_keep=3),
    dict(top_k=3000, top_p=0.99),
]


@pytest.mark.parametrize("chain", range(len(CHAINS)))
@pytest.mark.parametrize("seed", [1, 2])
def test_chain_matches_float64_reference(chain, seed):
    P = SamplingParams(**CHAINS[chain], seed=seed)
    x = logits_for(seed)
    ids, probs = Sampler(P).candidates(x)
    rids, rprobs = ref_chain(x, [], P)
    assert ids.tolist() == rids  # the kept set and its order are exact
    np.testing.assert_allclose(probs, rprobs, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("chain", [0, 1, 4, 5])
def test_seeded_draws_follow_std_mt19937_stream(chain):
    # With the C++-drawn uniforms, the reference inverse-CDF pick equals Sampler.sample.
    for seed, us in CPP_UNIFORM.items():
        P = SamplingParams(**CHAINS[chain], seed=seed)
        s = Sampler(P)
        for t, u in enumerate(us):
            x = logits_for(100 + t, scale=1.0)
            rids, rprobs = ref_chain(x, [], P)
            assert s.sample(x) == ref_pick(rids, rprobs, u)


def test_same_seed_same_tokens_different_seed_differs():
    x = logits_for(7, scale=0.5)
    P = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0)
    a = [Sampler(P.replace(seed=3)).sample(x) for _ in range(3)]
    assert len(set(a)) == 1
    s1, s2 = Sampler(P.replace(seed=3)), Sampler(P.replace(seed=4))
    seq1 = [s1.sample(x) for _ in range(30)]
    seq2 = [s2.sample(x) for _ in range(30)]
    assert seq1 != seq2
    s1.reset()
    assert [s1.sample(x) for _ in range(30)] == seq1


def test_random_seed_is_recorded_and_replays():
    x = logits_for(8, scale=0.5)
    P = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0)
    s = Sampler(P)  # seed None: drawn at random
    seq = [s.sample(x) for _ in range(20)]
    assert 0 <= s.seed < 0xFFFFFFFF
    again = Sampler(P.replace(seed=s.seed))
    assert [again.sample(x) for _ in range(20)] == seq


def test_empirical_frequencies_match_distribution():
    x = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -9.0], dtype=np.float32)
    P = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=0.7, seed=11)
    s = Sampler(P)
    n = 20000
    hist = np.bincount([s.sample(x) for _ in range(n)], minlength=x.size) / n
    _, rprobs = ref_chain(x, [], P)
    np.testing.assert_allclose(hist, rprobs, atol=0.012)


def test_greedy_is_argmax_first_on_ties():
    x = logits_for(3)
    assert Sampler(SamplingParams(temperature=0)).sample(x) == int(np.argmax(x.astype(np.float64)))
    tie = np.zeros(10, dtype=np.float32)
    tie[[4, 7]] = 5.0
    assert Sampler(SamplingParams(temperature=0)).sample(tie) == 4


def test_repetition_penalty_llama_semantics():
    # positive logits are divided, negative ones multiplied; only the last n tokens count
    x = np.array([4.0, -2.0, 3.0, 1.0, 0.0], dtype=np.float32)
    P = SamplingParams(repeat_penalty=2.0, repeat_last_n=3, temperature=0)
    s = Sampler(P)
    for t in [2, 0, 1, 0]:  # token 2 has left the window of 3
        s.accept(t)
    y = s.penalized(x)
    np.testing.assert_array_equal(y, np.array([2.0, -4.0, 3.0, 1.0, 0.0], dtype=np.float32))
    assert s.sample(x) == 2  # greedy now prefers the unpenalized 3.0 over 4.0/2
    assert Sampler(P).sample(x) == 0  # nothing accepted: no penalty


@pytest.mark.parametrize("last_n", [-1, 0, 5, 64])
def test_penalties_match_reference(last_n):
    P = SamplingParams(
        repeat_penalty=1.3, repeat_last_n=last_n, frequency_penalty=0.2, presence_penalty=0.4,
        top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, seed=0,
    )
    x = logits_for(5, n=200)
    hist = np.random.default_rng(5).integers(0, 40, size=90).tolist()
    s = Sampler(P)
    for t in hist:
        s.accept(t)
    ids, probs = s.candidates(x)
    rids, rprobs = ref_chain(x, hist, P)
    assert ids.tolist() == rids
    np.testing.assert_allclose(probs, rprobs, rtol=2e-5, atol=1e-12)


def test_top_k_on_full_gemma_size_vocabulary():
    x = logits_for(9, n=262144)
    ids, _ = Sampler(SamplingParams(top_p=1.0, min_p=0.0)).candidates(x)
    order = np.argsort(-x.astype(np.float64), kind="stable")
    assert ids.tolist() == order[:40].tolist()


def test_minus_inf_logits_never_sampled():
    x = np.full(50, -np.inf, dtype=np.float32)
    x[[3, 9]] = [1.0, 1.5]
    P = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, seed=1)
    s = Sampler(P)
    assert {s.sample(x) for _ in range(50)} <= {3, 9}


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -0.5),
        ("temperature", float("nan")),
        ("top_p", 1.5),
        ("min_p", -0.1),
        ("top_k", 2.5),
        ("repeat_penalty", 0.0),
        ("repeat_last_n", -2),
        ("min_keep", -1),
        ("seed", 2**32),
        ("seed", "abc"),
        ("top_k", "many"),
    ],
)
def test_bad_params_raise_usage_error_naming_value(field, value):
    with pytest.raises(UsageError) as e:
        Sampler(SamplingParams(**{field: value}))
    assert field in str(e.value) and str(value) in str(e.value)


@pytest.mark.parametrize("spread", [0.01, 3.0, 30.0])
def test_top_k_exact_with_ties_and_any_spread(spread):
    # ties at the k-th value go to the lower ids, as a stable sort does
    rng = np.random.default_rng(int(spread * 100))
    x = np.round(rng.standard_normal(50000) * spread, 1).astype(np.float32)
    for k in (1, 40, 1000, 50000):
        ids, _ = Sampler(SamplingParams(top_k=k, top_p=1.0, min_p=0.0)).candidates(x)
        assert ids.tolist() == np.argsort(-x.astype(np.float64), kind="stable")[:k].tolist()
