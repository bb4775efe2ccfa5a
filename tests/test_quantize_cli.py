"""`tinyllm quantize` as the user sees it: lines, summary, warnings, exit codes, files left."""
import hashlib
import io
import os
import re
import signal
import subprocess
import sys

import gguf
import pytest

from tinyllm.cli import main

LINE = re.compile(
    r"^\[\s*(\d+)/\s*(\d+)\] (\S+)\s* - \[(\s*\d+,){3}\s*\d+\], type = \s*(\w+), "
    r"(converting to (\w+) \.\. size = \s*[\d.]+ MiB -> \s*[\d.]+ MiB|size = \s*[\d.]+ MiB)$")


@pytest.fixture
def f32(golden, tmp_path):
    """A private copy of tiny-f32.gguf named like a user's file."""
    p = tmp_path / "tiny-f32.gguf"
    p.write_bytes((golden / "quant" / "tiny-f32.gguf").read_bytes())
    return p


def _run(capsys, *argv):
    rc = main(["quantize", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_quantize_prints_llama_quantize_lines_and_writes_golden_bytes(capsys, manifest, f32, tmp_path):
    out_path = tmp_path / "q.gguf"
    rc, out, err = _run(capsys, f32, out_path, "q4_k_m", "-t", "2")
    assert rc == 0, err
    assert hashlib.sha256(out_path.read_bytes()).hexdigest() == manifest["tiny-Q4_K_M"]["sha256"]
    lines = out.splitlines()
    assert lines[0] == f"quantizing {f32} -> {out_path} as Q4_K_M (general.file_type 15)"
    tensor_lines = [ln for ln in lines if ln.startswith("[")]
    assert len(tensor_lines) == 12 and all(LINE.match(ln) for ln in tensor_lines), tensor_lines
    expected = [(t.name, t.tensor_type.name.lower()) for t in gguf.GGUFReader(out_path).tensors]
    seen = []
    for ln in tensor_lines:
        m = LINE.match(ln)
        seen.append((m.group(3), (m.group(7) or m.group(5)).lower()))
    assert seen == expected
    assert "[  8/ 12] blk.0.attn_v.weight" in out
    assert "type =    f32, converting to q6_K .. size =     0.12 MiB ->     0.03 MiB" in out
    assert re.search(r"^model size  = \s*3\.50 MiB \(32\.00 BPW\)$", out, re.M)
    assert re.search(r"^quant size  = \s*0\.57 MiB \(5\.19 BPW\)$", out, re.M)
    assert re.search(rf"^wrote {re.escape(str(out_path))} \(596416 bytes\) in [\d.]+ s with 2 thread\(s\)$", out, re.M)
    assert "\r" not in out + err  # not a terminal: no progress bar


def test_default_output_name_beside_input(capsys, f32, tmp_path):
    rc, out, err = _run(capsys, f32, "Q8_0")
    assert rc == 0, err
    assert (tmp_path / "tiny-Q8_0.gguf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-Q8_0.gguf", "tiny-f32.gguf"]


def test_dry_run(capsys, f32, tmp_path):
    rc, out, err = _run(capsys, f32, tmp_path / "never.gguf", "Q5_K_M", "--dry-run")
    assert rc == 0, err
    assert not (tmp_path / "never.gguf").exists()
    assert re.search(r"blk\.0\.ffn_down\.weight\s+ - \[  768,   256,     1,     1\], type =    f32, "
                     r"size =     0\.75 MiB ->     0\.15 MiB \(q6_K\)$", out, re.M)
    assert re.search(r"output_norm\.weight .*size =    0\.001 MiB$", out, re.M)
    assert "dry run: nothing written" in out
    assert "quant size  =     0.64 MiB" in out


def test_fallback_warnings_and_count(capsys, tmp_path):
    import numpy as np

    from tinyllm.gguf_io import write_gguf
    from tinyllm.quants.types import GGMLType as T

    w = np.random.default_rng(0).standard_normal((32, 288)).astype(np.float32)
    src = tmp_path / "narrow.gguf"
    write_gguf(src, {"general.architecture": "llama", "llama.block_count": 1},
               [("blk.0.attn_q.weight", T.F32, w.shape, w), ("blk.0.ffn_up.weight", T.F32, w.shape, w)])
    rc, out, err = _run(capsys, src, tmp_path / "o.gguf", "Q4_K_M")
    assert rc == 0
    assert ("warning: blk.0.attn_q.weight                  - ncols    288 not divisible by 256 "
            "(required for type    q4_K) -> falling back to    q5_0") in err
    assert "WARNING: 2 of 2 tensor(s) required fallback quantization" in out
    rc, out, err = _run(capsys, src, tmp_path / "o1.gguf", "Q4_K_M", "-q")
    assert rc == 0 and not out.count("[")
    assert err == ("warning: 2 tensor(s) have rows that do not fit their block size and fall back "
                   "(2 x q4_K -> q5_0); run without -q to list them\n")
    rc, out, err = _run(capsys, src, tmp_path / "o2.gguf", "Q4_K_M", "--no-fallback")
    assert rc == 1 and not (tmp_path / "o2.gguf").exists()
    assert err.count("\n") == 1 and err.startswith("tinyllm: error: 2 tensor(s) would need a fallback type")
    assert "blk.0.attn_q.weight (row length 288: q4_K -> q5_0)" in err


def test_override_options(capsys, f32, tmp_path):
    rc, out, err = _run(capsys, f32, tmp_path / "o.gguf", "Q4_K_M", "--tensor-type", "ffn_.*=q8_0",
                        "--tensor-type", "no_such_tensor=q4_0", "--output-tensor-type", "q8_0",
                        "--token-embedding-type", "q6_k", "--force")
    assert rc == 0, err
    assert "warning: --tensor-type 'no_such_tensor' matched no tensor" in err
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors}
    assert types["blk.0.ffn_down.weight"] == types["blk.0.ffn_up.weight"] == "Q8_0"
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == "Q6_K"  # the mixture still applies to the rest
    rc, out, err = _run(capsys, f32, tmp_path / "p.gguf", "Q4_K_M", "--pure", "--leave-output-tensor")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "p.gguf").tensors}
    assert types["output.weight"] == "F32" and types["blk.0.attn_v.weight"] == "Q4_K"


@pytest.mark.parametrize("argv, message", [
    (["{f32}", "{f32}", "q8_0", "--force"], r"output .*tiny-f32\.gguf is the input file"),
    (["{f32}", "{tmp}/exists.gguf", "q8_0"], r"exists\.gguf already exists; pass --force"),
    (["{f32}", "{tmp}/o.gguf", "Q9_K"], r"unknown quantization type 'Q9_K'; supported: F32, F16"),
    (["{f32}", "q8_0", "extra", "args"], r"expected IN\.gguf \[OUT\.gguf\] TYPE, got 4"),
    (["{f32}", "{tmp}/o.gguf", "q8_0", "--tensor-type", "attn_v"], r"bad --tensor-type 'attn_v'"),
    (["{f32}", "{tmp}/o.gguf", "q8_0", "--output-tensor-type", "q7_x"], r"unknown tensor type 'q7_x'"),
    (["{tmp}/missing.gguf", "{tmp}/o.gguf", "q8_0"], r"missing\.gguf: cannot read file"),
    (["{f32}", "{tmp}/nodir/o.gguf", "q8_0"], r"directory .*nodir does not exist"),
    (["{f32}", "{tmp}/o.gguf", "q8_0", "-t", "999"], r"threads must be between 1 and \d+, got 999"),
    (["{q8_0}", "{tmp}/o.gguf", "q4_k_m"],
     r"already quantized \(q8_0\); requantizing from q8_0 to q6_K is disabled .*Pass --allow-requantize"),
])
def test_errors_are_one_line(capsys, f32, tmp_path, llama_cpp_file, argv, message):
    (tmp_path / "exists.gguf").write_bytes(b"x")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(f32=f32, tmp=tmp_path, q8_0=llama_cpp_file("Q8_0")) for a in argv]
    rc, out, err = _run(capsys, *argv)
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("tinyllm: error: "), err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "exists.gguf").read_bytes() == b"x"


def test_allow_requantize_warns_about_quality(capsys, llama_cpp_file, tmp_path):
    rc, out, err = _run(capsys, llama_cpp_file("Q8_0"), tmp_path / "o.gguf", "Q4_K_M",
                        "--allow-requantize")
    assert rc == 0
    assert "warning: requantizing an already quantized model: this can severely reduce quality" in err


def test_progress_bar_on_a_terminal(capsys, f32, tmp_path, monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    tty = TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["quantize", str(f32), str(tmp_path / "o.gguf"), "Q6_K"]) == 0
    bar = tty.getvalue()
    assert re.search(r"\r\[#{30}\] 100%  12/12 tensors\s+[\d.]+s  ETA\s+0\.0s", bar), bar
    assert bar.count("\r\033[K") >= 12  # the bar is cleared before each tensor line and at the end
    assert bar.endswith("\r\033[K")


def test_help_lists_types_and_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("Q4_K_M", "Q5_K_S", "BF16", "--allow-requantize", "--no-fallback", "--dry-run",
                 "--tensor-type", "--leave-output-tensor", "--token-embedding-type", "--force"):
        assert word in out


def test_console_script_in_a_subprocess(f32, tmp_path, manifest):
    """The real entry point, with stdout/stderr as pipes: plain lines, exit code 0."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "tinyllm", "quantize", str(f32), str(tmp_path / "o.gguf"), "Q8_0"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr
    assert hashlib.sha256((tmp_path / "o.gguf").read_bytes()).hexdigest() == manifest["tiny-Q8_0"]["sha256"]


SLOW_QUANTIZE = """
import sys, time
import tinyllm.quantization.pipeline as pipeline
from tinyllm.cli import main

real = pipeline.convert_tensor

def slow(*a, **k):  # a slow conversion, so that the signal lands mid-write
    time.sleep(0.2)
    return real(*a, **k)

pipeline.convert_tensor = slow
sys.exit(main(["quantize", *sys.argv[1:]]))
"""


def test_sigterm_mid_write_leaves_no_temp_file_and_exits_143(f32, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = subprocess.Popen([sys.executable, "-c", SLOW_QUANTIZE, str(f32), str(out_dir / "o.gguf"), "Q8_0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        for line in p.stdout:  # the first tensor written: the temp file exists and is growing
            if re.match(r"\[\s*1/", line):
                break
        temps = [f.name for f in out_dir.iterdir()]
        assert len(temps) == 1 and re.fullmatch(rf"\.o\.gguf\.tinyllm-{p.pid}-\w+\.tmp", temps[0]), temps
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143
    assert err.strip().splitlines() == ["tinyllm: terminated (SIGTERM)"]
    assert list(out_dir.iterdir()) == []


def test_temp_files_of_dead_processes_are_removed_by_the_next_write(capsys, f32, tmp_path):
    """SIGKILL cannot be caught: the next write beside the same output removes what it left."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".o.gguf.tinyllm-{dead_pid}-abc123.tmp"
    live = tmp_path / f".o.gguf.tinyllm-{os.getppid()}-def456.tmp"  # a running process: kept
    other_output = tmp_path / f".x.gguf.tinyllm-{dead_pid}-abc123.tmp"  # beside another output: kept
    not_ours = tmp_path / ".o.gguf.abc123.tmp"  # not our name pattern: kept
    for f in (stale, live, other_output, not_ours):
        f.write_bytes(b"\0" * 1000)
    rc, out, err = _run(capsys, f32, tmp_path / "o.gguf", "Q8_0")
    assert rc == 0, err
    assert not stale.exists()
    assert live.exists() and other_output.exists() and not_ours.exists()
    assert (tmp_path / "o.gguf").exists()
