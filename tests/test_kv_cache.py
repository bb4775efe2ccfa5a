"""KV cache sizes and logs against llama.cpp's formulas and captured output (spec §3.2, §3.3),
live usage, and truncation limits of the sliding-window ring."""
import dataclasses

import numpy as np
import pytest

from tinymodels import make_tiny_model
from tinyllm.errors import UsageError
from tinyllm.gguf_io import GGUFFile
from tinyllm.model import KVCache, ModelConfig, load

MIB = 1024 * 1024


def llama_config(n_layer, n_head, n_head_kv, head_dim, **kw):
    base = dict(arch="llama", n_embd=n_head * head_dim, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                head_dim=head_dim, n_ff=4 * n_head * head_dim, n_vocab=32000, n_ctx_train=4096, norm_eps=1e-5,
                n_rot=head_dim, rope_neox=False, rope_base=1e4, rope_scale=1.0, rope_base_swa=1e4, n_swa=0,
                swa_layers=(False,) * n_layer, attn_scale=head_dim**-0.5, embd_scale=1.0, final_logit_softcap=0.0)
    base.update(kw)
    return ModelConfig(**base)


def spec_bytes(kv_type, n_embd_kv, cells, layers):
    """§3.2: row_size(type, Hkv·d) · kv_size · layers, for K (V is the same)."""
    row = {"f32": 4 * n_embd_kv, "f16": 2 * n_embd_kv, "q8_0": n_embd_kv // 32 * 34}[kv_type]
    return row * cells * layers


def test_llama2_7b_size_line_matches_spec():
    kv = KVCache(llama_config(32, 32, 32, 128), n_ctx=4096)
    assert kv.report() == [
        "llama_kv_cache:        CPU KV buffer size =  2048.00 MiB",
        "llama_kv_cache: size = 2048.00 MiB (  4096 cells,  32 layers,  1/1 seqs), K (f16): 1024.00 MiB, V (f16): 1024.00 MiB",
    ]
    assert kv.nbytes == 2 * spec_bytes("f16", 4096, 4096, 32)


def test_tinyllama_size_matches_spec():
    kv = KVCache(llama_config(22, 32, 4, 64), n_ctx=2048)  # 256 values per cell per layer
    assert kv.nbytes == 44 * MIB
    assert "size =   44.00 MiB (  2048 cells,  22 layers,  1/1 seqs), K (f16):   22.00 MiB, V (f16):   22.00 MiB" in kv.report()[1]


@pytest.mark.parametrize("kv_type", ["f16", "f32", "q8_0"])
@pytest.mark.parametrize("n_ctx,cells", [(1, 256), (256, 256), (1000, 1024), (4096, 4096)])
def test_sizes_follow_the_formula(kv_type, n_ctx, cells):
    cfg = llama_config(3, 8, 2, 64)
    kv = KVCache(cfg, n_ctx=n_ctx, kv_type=kv_type)
    assert kv.n_ctx == cells  # rounded up to a multiple of 256
    k = spec_bytes(kv_type, 128, cells, 3)
    assert kv.nbytes == 2 * k
    g = kv.groups[0]
    assert g.k.nbytes == g.v.nbytes == k  # the arrays really hold that many bytes
    assert f"K ({kv_type}): {k / MIB:7.2f} MiB, V ({kv_type}): {k / MIB:7.2f} MiB" in kv.report()[1]


def gemma_like(n_layer=18, n_swa=512):
    return llama_config(n_layer, 4, 1, 256, arch="gemma3", n_embd=640, rope_neox=True, n_swa=n_swa,
                        swa_layers=tuple(il % 6 < 5 for il in range(n_layer)))


# (n_ctx, kv_type) -> (non-SWA cells, MiB), (SWA cells, MiB) llama.cpp printed for Gemma 3 270M (§3.3)
GEMMA_LOGS = {
    (512, "f16"): ((512, 1.50), (512, 7.50)),
    (4096, "f16"): ((4096, 12.00), (1024, 15.00)),
    (2048, "f16"): ((2048, 6.00), (1024, 15.00)),
    (1000, "q8_0"): ((1024, 1.59), (1024, 7.97)),
}


def check_gemma_logs(cfg):
    for (n_ctx, kv_type), ((base_cells, base_mib), (swa_cells, swa_mib)) in GEMMA_LOGS.items():
        lines = KVCache(cfg, n_ctx=n_ctx, kv_type=kv_type).report()
        assert len(lines) == 6
        assert lines[0] == f"llama_kv_cache_iswa: creating non-SWA KV cache, size = {base_cells} cells"
        assert lines[1] == f"llama_kv_cache:        CPU KV buffer size = {base_mib:8.2f} MiB"
        assert lines[2].startswith(f"llama_kv_cache: size = {base_mib:7.2f} MiB ({base_cells:6d} cells,   3 layers,  1/1 seqs)")
        assert lines[3] == f"llama_kv_cache_iswa: creating     SWA KV cache, size = {swa_cells} cells"
        assert lines[5].startswith(f"llama_kv_cache: size = {swa_mib:7.2f} MiB ({swa_cells:6d} cells,  15 layers,  1/1 seqs)")
    q8 = KVCache(cfg, n_ctx=1000, kv_type="q8_0").report()
    assert q8[2].endswith("K (q8_0):    0.80 MiB, V (q8_0):    0.80 MiB")
    assert KVCache(cfg, n_ctx=512).report()[2] == (
        "llama_kv_cache: size =    1.50 MiB (   512 cells,   3 layers,  1/1 seqs), K (f16):    0.75 MiB, V (f16):    0.75 MiB"
    )  # the example line of §3.3, verbatim


def test_iswa_layout_gemma_like_config():
    check_gemma_logs(gemma_like())
    kv = KVCache(gemma_like(), n_ctx=4096)
    base, swa = kv.groups
    assert base.layers == [5, 11, 17] and swa.layers == [il for il in range(18) if il % 6 != 5]
    assert (base.n_cells, swa.n_cells, swa.window) == (4096, 1024, 512)
    assert kv.nbytes == 2 * (spec_bytes("f16", 256, 4096, 3) + spec_bytes("f16", 256, 1024, 15))
    # the SWA size formula PAD_256(min(n_ctx, n_swa + n_ubatch)) with other ubatches
    assert KVCache(gemma_like(), n_ctx=4096, n_ubatch=64).groups[1].n_cells == 768
    assert KVCache(gemma_like(), n_ctx=300, n_ubatch=64).groups[1].n_cells == 512


@pytest.mark.slow
def test_iswa_layout_on_the_real_gemma_config(gemma_path):
    with GGUFFile(gemma_path) as g:
        cfg = ModelConfig.from_gguf(g)
    assert cfg.n_swa == 512 and sum(cfg.swa_layers) == 15 and cfg.n_embd_kv == 256
    check_gemma_logs(cfg)


def test_usage_is_live(tmp_path):
    m = load(make_tiny_model(tmp_path, "gemma3", "Q8_0"), n_ctx=1024, n_ubatch=64)
    u = m.kv.usage()
    assert (u.tokens_used, u.n_ctx, u.mib_used) == (0, 1024, 0.0)
    assert u.mib_allocated == pytest.approx(m.kv.nbytes / MIB)
    assert [g.name for g in u.groups] == ["non-SWA", "SWA"]
    base, swa = u.groups
    assert (base.cells, base.layers, swa.cells, swa.layers, swa.window) == (1024, 1, 256, 5, 8)
    m.forward(np.arange(300, dtype=np.int32) % m.config.n_vocab)
    u = m.kv.usage()
    base, swa = u.groups
    assert u.tokens_used == 300 and base.cells_used == 300 and swa.cells_used == 256  # the ring is full
    assert base.mib_used == pytest.approx(base.mib_allocated * 300 / 1024)
    assert swa.mib_used == pytest.approx(swa.mib_allocated)
    assert u.mib_used == pytest.approx(base.mib_used + swa.mib_used)
    m.reset()
    assert m.kv.usage().tokens_used == 0


def test_truncate_limits_of_the_ring(tmp_path):
    m = load(make_tiny_model(tmp_path, "gemma3", "F32"), n_ctx=1024, n_ubatch=64, kv_type="f32")
    ring = m.kv.groups[1].n_cells  # 256 cells, window 8
    toks = np.random.default_rng(0).integers(0, m.config.n_vocab, 400).astype(np.int32)
    m.forward(toks[:300])
    # positions 300-256 = 44.. are still in the ring; a query at n needs n-7..n-1
    m.truncate(51)
    assert m.kv.n_past == 51
    got = m.forward(toks[51:60], all_logits=True)
    m.reset()
    want = m.forward(toks[:60], all_logits=True)[51:]
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    m.forward(toks[60:300])
    with pytest.raises(UsageError) as e:
        m.truncate(50)
    assert "300" in str(e.value) and "50" in str(e.value) and str(ring) in str(e.value)
    assert m.kv.n_past == 300
    m.truncate(0)  # forgetting everything is always possible
    assert m.kv.n_past == 0


def test_full_attention_truncates_anywhere(tmp_path):
    m = load(make_tiny_model(tmp_path, "llama", "Q8_0"), n_ctx=256)
    m.forward(np.arange(200, dtype=np.int32) % m.config.n_vocab)
    m.truncate(1)
    assert m.kv.n_past == 1
    with pytest.raises(UsageError, match="-1"):
        m.truncate(-1)


def test_bad_cache_arguments():
    cfg = llama_config(2, 4, 2, 16)
    with pytest.raises(UsageError, match="q4_0"):
        KVCache(cfg, kv_type="q4_0")
    with pytest.raises(UsageError, match="0"):
        KVCache(cfg, n_ctx=0)
    with pytest.raises(UsageError, match="16"):
        KVCache(cfg, kv_type="q8_0")
    KVCache(dataclasses.replace(cfg, head_dim=32), kv_type="q8_0")


def test_a_cache_larger_than_the_machine_is_one_error_before_allocating(monkeypatch):
    """-c 1000000000 used to be numpy's MemoryError traceback: the size is computed first."""
    from tinyllm.model import kv_cache

    cfg = llama_config(2, 4, 2, 16, n_ctx_train=2048)
    need = 2 * spec_bytes("f16", 32, pad_cells(10**9), 2)
    allocated = []
    monkeypatch.setattr(kv_cache.np, "zeros", lambda *a, **k: allocated.append(a) or np.empty(0))
    with pytest.raises(UsageError) as e:
        KVCache(cfg, n_ctx=10**9)
    msg = str(e.value)
    assert "\n" not in msg and not allocated
    assert f"n_ctx {pad_cells(10**9)}" in msg and kv_cache.format_bytes(need) in msg
    assert "trained with a context of 2048 tokens" in msg and "-c" in msg


def test_a_cache_that_fits_the_ram_but_not_the_allocator_is_the_same_error(monkeypatch):
    from tinyllm.model import kv_cache

    def zeros(*a, **k):
        raise MemoryError("Unable to allocate 12.0 GiB")

    monkeypatch.setattr(kv_cache.np, "zeros", zeros)
    with pytest.raises(UsageError, match=r"n_ctx 4096 tokens \(f16\) would need 1\.0 MiB, which could not be allocated; .*trained with a context of 4096"):
        KVCache(llama_config(2, 4, 2, 16), n_ctx=4096)


def test_machine_memory_bounds_the_cache(monkeypatch):
    from tinyllm.model import kv_cache

    cfg = llama_config(2, 4, 2, 16)
    monkeypatch.setattr(kv_cache, "physical_memory", lambda: 2 * spec_bytes("f16", 32, 1024, 2))
    assert KVCache(cfg, n_ctx=1024).nbytes == 2 * spec_bytes("f16", 32, 1024, 2)  # exactly fits
    with pytest.raises(UsageError, match=r"would need 320\.0 KiB, more than the 256\.0 KiB of memory"):
        KVCache(cfg, n_ctx=1280)


def pad_cells(n):
    return -(-n // 256) * 256
