"""`tinyllm quantize --imatrix` (tinyllm.quantization.quantize_file(imatrix=...)) against
llama-quantize's own files made with an importance matrix: whole files byte for byte
(tensors, the quantize.imatrix.* metadata, their order and value types), with
--include-weights / --exclude-weights, per-expert weights of an 8-expert model, the CLI
flags, and every error llama-quantize raises (as a one-line error here).

Golden data: tests/data/golden/quant/manifest-imatrix.json (llama-quantize --imatrix
tests/data/golden/quant/tiny-f32.imatrix.gguf, run from the repository root: the path as typed
is written into the file, so these tests pass the same relative path from the same directory)
and manifest-moe.json (tests/data/make_moe_golden.py). See tests/data/README.md.
"""
import dataclasses
import hashlib
import importlib.util
import re
import struct

import gguf
import numpy as np
import pytest

from tinyllm.cli import main
from tinyllm.errors import GGUFError, QuantizationError, UsageError
from tinyllm.quantization import plan_file, quantize_file
from tinyllm.quantization.imatrix import ImatrixEntry, load_imatrix, save_imatrix
from tinyllm.quants.types import GGMLType as T

from conftest import DATA, ROOT

SRC = "tests/data/golden/quant/tiny-f32.gguf"
IMX = "tests/data/golden/quant/tiny-f32.imatrix.gguf"
# stem -> (type, quantize_file options)
FILES = {
    **{f"imatrix-{m}": (m, {}) for m in ("Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q5_0", "Q4_1",
                                         "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS",
                                         "IQ3_S")},
    **{f"imatrix-pure-{m}": (m, {"pure": True}) for m in ("Q2_K", "Q3_K_S", "Q4_0", "Q5_0", "Q4_1", "Q5_1",
                                                          "Q4_K_S", "Q5_K_S", "Q6_K", "IQ4_NL", "IQ4_XS",
                                                          "IQ3_S")},
    **{f"imatrix-{m}": (m, {}) for m in ("IQ3_XS", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S",
                                         "IQ1_M")},
    **{f"imatrix-pure-{m}": (m, {"pure": True}) for m in ("IQ3_XXS", "IQ2_M", "IQ1_M")},
    "imatrix-exclude-ffn_down-Q4_K_M": ("Q4_K_M", {"exclude_weights": ["ffn_down"]}),
    "imatrix-include-attn_-ffn_up-Q3_K_M": ("Q3_K_M", {"include_weights": ["attn_", "ffn_up"]}),
}
IMATRIX_KEYS = ["quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                "quantize.imatrix.chunks_count"]


@pytest.fixture
def at_root(monkeypatch):
    """Run from the repository root, as the golden files were made."""
    monkeypatch.chdir(ROOT)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def check_file(out, want):
    got = gguf.GGUFReader(out)
    for a, b in zip(want["tensors"], got.tensors, strict=True):  # per tensor first: a clear message
        assert (b.name, b.tensor_type.name) == (a["name"], a["type"])
        assert hashlib.sha256(b.data.view(np.uint8).tobytes()).hexdigest() == a["sha256"], b.name
    for key, value in want["metadata"].items():
        assert got.fields[key].contents() == value, key
    assert sha(out) == want["sha256"]


def test_manifest_lists_these_files(manifest):
    assert {k for k in manifest if k.startswith("tiny-imatrix-")} == {f"tiny-{s}" for s in FILES}


@pytest.mark.parametrize("stem", list(FILES))
def test_files_byte_identical_to_llama_quantize(manifest, tmp_path, at_root, stem):
    tname, opts = FILES[stem]
    out = tmp_path / "out.gguf"
    stats = quantize_file(SRC, out, tname, imatrix=IMX, threads=2, **opts)
    want = manifest[f"tiny-{stem}"]
    check_file(out, want)
    r = gguf.GGUFReader(out)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys[-6:] == ["general.quantization_version", "general.file_type", *IMATRIX_KEYS]
    types = [r.fields[k].types for k in IMATRIX_KEYS]
    assert types == [[gguf.GGUFValueType.STRING]] * 2 + [[gguf.GGUFValueType.UINT32]] * 2
    assert r.fields["quantize.imatrix.file"].contents() == IMX
    n_entries = 7 - ("exclude_weights" in opts) - 2 * ("include_weights" in opts)
    assert r.fields["quantize.imatrix.entries_count"].contents() == n_entries == len(stats.imatrix.entries)
    used = {t.name for t in stats.plan.tensors if t.imatrix}
    assert "token_embd.weight" not in used and "output.weight" not in used  # no entries for them
    assert len(used) >= 3


def test_legacy_imatrix_gives_the_same_tensors(manifest, tmp_path, at_root):
    """The legacy .dat format (mean x² * ncall per entry, then chunk count and dataset name)."""
    imx = load_imatrix(IMX)
    blob = [struct.pack("<i", len(imx.entries))]
    for name, e in imx.entries.items():
        mean = e.weights().astype(np.float32)
        blob += [struct.pack("<i", len(name)), name.encode(), struct.pack("<ii", 4, mean.size),
                 (mean * np.float32(4)).astype(np.float32).tobytes()]
    blob += [struct.pack("<i", 9), struct.pack("<i", 7), b"dataset"]
    dat = tmp_path / "tiny.imatrix.dat"
    dat.write_bytes(b"".join(blob))
    legacy = load_imatrix(dat)
    for name, e in imx.entries.items():  # (m*4)/4 is m again: equal weights
        np.testing.assert_array_equal(legacy.weights(name), e.weights())
    out = tmp_path / "q.gguf"
    quantize_file(SRC, out, "Q3_K_M", imatrix=dat)
    want = {t["name"]: t["sha256"] for t in manifest["tiny-imatrix-Q3_K_M"]["tensors"]}
    r = gguf.GGUFReader(out)
    for t in r.tensors:
        assert hashlib.sha256(t.data.view(np.uint8).tobytes()).hexdigest() == want[t.name], t.name
    assert r.fields["quantize.imatrix.file"].contents() == str(dat)
    assert r.fields["quantize.imatrix.dataset"].contents() == "dataset"
    assert r.fields["quantize.imatrix.chunks_count"].contents() == 9


def test_filters_leaving_nothing_mean_no_imatrix(manifest, tmp_path, at_root):
    """No entry left after --include-weights: llama-quantize runs as without an imatrix (same
    bytes, no quantize.imatrix.* keys, and the rules see no imatrix)."""
    out = tmp_path / "q.gguf"
    stats = quantize_file(SRC, out, "Q4_K_M", imatrix=IMX, include_weights=["no_such_tensor"])
    assert sha(out) == manifest["tiny-Q4_K_M"]["sha256"]
    assert stats.imatrix is None


def test_moe_per_expert_weights_byte_identical(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_moe_golden", DATA / "make_moe_golden.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    import json

    want = json.loads((DATA / "golden" / "quant" / "manifest-moe.json").read_text())
    monkeypatch.chdir(tmp_path)
    gen.build_model(tmp_path / "moe-f32.gguf")
    gen.build_imatrix(tmp_path / "moe.imatrix.gguf")
    assert sha(tmp_path / "moe-f32.gguf") == want["sources"]["model_sha256"], "the MoE model did not rebuild exactly"
    assert sha(tmp_path / "moe.imatrix.gguf") == want["sources"]["imatrix_sha256"]
    for ftype in gen.FTYPES:
        out = tmp_path / f"moe-imatrix-{ftype}.gguf"
        quantize_file("moe-f32.gguf", out, ftype, imatrix="moe.imatrix.gguf", threads=2)
        check_file(out, want[f"moe-imatrix-{ftype}"])


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_imatrix_flags(manifest, tmp_path, at_root, capsys):
    out = tmp_path / "q.gguf"
    rc = main(["quantize", "--imatrix", IMX, "--exclude-weights", "ffn_down", SRC, str(out), "q4_k_m", "-t", "2"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert sha(out) == manifest["tiny-imatrix-exclude-ffn_down-Q4_K_M"]["sha256"]
    assert f"importance matrix {IMX}: weights for 6 of 9 converted tensors" in text
    assert "  no importance weights for blk.0.ffn_down.weight" in text
    rc = main(["quantize", "--imatrix", IMX, "--include-weights", "attn_", "--include-weights", "ffn_up", SRC,
               str(out), "Q3_K_M", "--force", "-q"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert sha(out) == manifest["tiny-imatrix-include-attn_-ffn_up-Q3_K_M"]["sha256"]
    assert "no importance weights" not in text  # -q


def test_cli_imatrix_errors_are_one_line(tmp_path, at_root, capsys):
    out = tmp_path / "q.gguf"
    cases = [
        (["--imatrix", str(tmp_path / "none.imatrix"), SRC, str(out), "Q4_K_M"], r"none\.imatrix: cannot read imatrix file"),
        (["--imatrix", IMX, "--include-weights", "a", "--exclude-weights", "b", SRC, str(out), "Q4_K_M"],
         "cannot be used together"),
        (["--include-weights", "attn", SRC, str(out), "Q4_K_M"], r"need an importance matrix \(--imatrix\)"),
        ([SRC, str(out), "Q2_K_S"], r"Q2_K_S needs an importance matrix \(--imatrix\): tensor blk\.0\.attn_k\.weight"),
    ]
    for argv, msg in cases:
        rc = main(["quantize", *argv])
        text, err = capsys.readouterr()
        assert rc == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tinyllm: error: "), err
        assert re.search(msg, lines[0]), lines[0]
    assert not out.exists()


def test_cli_dry_run_warns_when_the_real_run_needs_an_imatrix(capsys, at_root):
    rc = main(["quantize", "--dry-run", SRC, "Q2_K_S"])
    text, err = capsys.readouterr()
    assert rc == 0
    assert "the real run needs an importance matrix (--imatrix): e.g. blk.0.attn_k.weight would be q2_K" in err


# --- errors -------------------------------------------------------------------------------------

def _imatrix_with(tmp_path, name, values, counts=(16,)):
    base = load_imatrix(DATA / "golden" / "quant" / "tiny-f32.imatrix.gguf")
    entries = dict(base.entries)
    entries[name] = ImatrixEntry(np.asarray(values, np.float32).reshape(len(counts), -1), np.asarray(counts))
    path = tmp_path / "custom.imatrix.gguf"
    save_imatrix(path, entries, ["custom"], 1, 16)
    return path


def test_entry_of_the_wrong_size_is_refused_except_token_embd(manifest, tmp_path, at_root):
    bad = _imatrix_with(tmp_path, "blk.0.attn_q.weight", np.ones(128))
    with pytest.raises(QuantizationError, match=r"custom\.imatrix\.gguf: imatrix entry blk\.0\.attn_q\.weight has 128 "
                                                r"values, but the tensor needs 256 \(256 columns x 1 matrices\)"):
        quantize_file(SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=bad)
    assert not (tmp_path / "q.gguf").exists()
    # token_embd: llama-quantize warns and quantizes it without one; the rest keeps its weights
    ok = _imatrix_with(tmp_path, "token_embd.weight", np.ones(100))
    out = tmp_path / "q.gguf"
    stats = quantize_file(SRC, out, "Q4_K_M", imatrix=ok)
    want = {t["name"]: t["sha256"] for t in manifest["tiny-imatrix-Q4_K_M"]["tensors"]}
    for t in gguf.GGUFReader(out).tensors:
        assert hashlib.sha256(t.data.view(np.uint8).tobytes()).hexdigest() == want[t.name], t.name
    assert not {t.name: t.imatrix for t in stats.plan.tensors}["token_embd.weight"]
    assert gguf.GGUFReader(out).fields["quantize.imatrix.entries_count"].contents() == 8


def test_non_finite_entry_and_bad_files_are_refused(tmp_path):
    nan = _imatrix_with(tmp_path, "blk.0.attn_q.weight", np.r_[np.ones(255), np.inf])
    with pytest.raises(QuantizationError, match=r"imatrix entry blk\.0\.attn_q\.weight holds a non-finite value \(inf\)"):
        quantize_file(ROOT / SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=nan)
    text = tmp_path / "notes.txt"
    text.write_text("not an importance matrix at all\n")
    with pytest.raises(QuantizationError, match=r"notes\.txt: not an imatrix file \(legacy entry count"):
        quantize_file(ROOT / SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=text)
    cut = tmp_path / "cut.imatrix.gguf"
    cut.write_bytes((ROOT / IMX).read_bytes()[:3000])
    with pytest.raises((QuantizationError, GGUFError), match=r"cut\.imatrix\.gguf"):
        quantize_file(ROOT / SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=cut)
    with pytest.raises(QuantizationError, match=r"not an imatrix file \(general\.type"):
        quantize_file(ROOT / SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=ROOT / SRC)
    with pytest.raises(UsageError, match="cannot be used together"):
        plan_file(ROOT / SRC, "Q4_K_M", imatrix=ROOT / IMX, include_weights=["a"], exclude_weights=["b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.imatrix.gguf", "cut.imatrix.gguf", "notes.txt"]


def test_low_bit_tensor_without_its_entry_is_refused(tmp_path, at_root):
    """Q2_K_S: every blk.* Q2_K tensor needs an entry (llama-quantize: "Missing importance matrix
    for tensor ... in a very low-bit quantization")."""
    with pytest.raises(QuantizationError, match=r"no importance matrix entry for tensor blk\.0\.ffn_up\.weight, which q2_K"):
        quantize_file(SRC, tmp_path / "q.gguf", "Q2_K_S", imatrix=IMX, exclude_weights=["ffn_up"])
    assert not (tmp_path / "q.gguf").exists()


def test_a_type_that_needs_an_imatrix_is_checked_generically(tmp_path, at_root, monkeypatch):
    """TypeSpec.needs_imatrix (ggml's own list: IQ2_XXS, IQ2_XS, IQ1_S) is checked for every
    converted tensor, token_embd and output included (llama-quantize would abort in ggml)."""
    from tinyllm.quants import registry

    monkeypatch.setitem(registry.TYPES, T.Q4_K, dataclasses.replace(registry.TYPES[T.Q4_K], needs_imatrix=True))
    with pytest.raises(QuantizationError, match=r"tensor token_embd\.weight: quantizing to q4_K needs an importance "
                                                r"matrix entry for it \(--imatrix\)"):
        quantize_file(SRC, tmp_path / "q.gguf", "Q4_K_M")
    with pytest.raises(QuantizationError, match=r"tensor token_embd\.weight: quantizing to q4_K needs an importance "
                                                r"matrix entry for it$"):
        quantize_file(SRC, tmp_path / "q.gguf", "Q4_K_M", imatrix=IMX)
    with pytest.raises(QuantizationError, match=r"quantizing to Q4_K needs an importance matrix \(--imatrix\)"):
        registry.quantize(np.zeros((1, 256), np.float32), T.Q4_K)


def test_long_names_are_cut_to_127_bytes_as_llama_quantize_does(tmp_path, monkeypatch):
    """llama-quantize strncpy's the path and the dataset into 128-byte override values: 127
    bytes are kept, even mid-character (checked against its output, byte for byte, with these
    very names)."""
    imx = load_imatrix(ROOT / IMX)
    name = "i" * 100 + "é" * 20 + ".gguf"  # 145 bytes: cut inside an é
    dataset = "d" * 120 + "é" * 10
    monkeypatch.chdir(tmp_path)
    save_imatrix(name, imx.entries, [dataset], 3, 16)
    quantize_file(ROOT / SRC, "q.gguf", "Q4_K_S", imatrix=name)
    r = gguf.GGUFReader("q.gguf")

    def raw(key):
        f = r.fields[key]
        return bytes(f.parts[f.data[0]])

    assert raw("quantize.imatrix.file") == name.encode()[:127]
    assert raw("quantize.imatrix.dataset") == dataset.encode()[:127]
    assert r.fields["quantize.imatrix.chunks_count"].contents() == 3
