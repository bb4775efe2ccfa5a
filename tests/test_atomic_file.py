"""Output files appear whole or not at all, for every writer (GGUF, imatrix, KL base): the
quantize CLI tests cover SIGTERM and stale temps beside a GGUF; these cover the shared code
and the two other writers."""
import functools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.atomic_file import atomic_write, remove_stale_temp_files
from tinyllm.errors import QuantizationError
from tinyllm.kl_divergence import KLBaseWriter
from tinyllm.quantization.imatrix import ImatrixEntry, load_imatrix, save_imatrix, save_imatrix_legacy


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_an_exception_leaves_the_old_target_and_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_finished_write_replaces_the_target_with_plain_permissions(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_only_temps_of_dead_processes_beside_the_same_target_are_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".m.dat.tinyllm-{dead}-x1.tmp"
    live = tmp_path / f".m.dat.tinyllm-{os.getppid()}-x2.tmp"
    other = tmp_path / f".n.dat.tinyllm-{dead}-x3.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"\0")
    assert remove_stale_temp_files(tmp_path / "m.dat") == [stale]
    assert live.exists() and other.exists()


def test_imatrix_writer_removes_stale_temps_and_round_trips(tmp_path):
    target = tmp_path / "imatrix.gguf"
    stale = tmp_path / f".imatrix.gguf.tinyllm-{_dead_pid()}-ab.tmp"
    stale.write_bytes(b"\0" * 100)
    sums = np.arange(8, dtype=np.float32).reshape(1, 8)
    save_imatrix(target, {"blk.0.attn_q.weight": ImatrixEntry(sums=sums, counts=np.array([3.0], np.float32))},
                 datasets=["t.txt"], chunk_count=1, chunk_size=8)
    assert not stale.exists()
    got = load_imatrix(target)
    assert np.array_equal(got.entries["blk.0.attn_q.weight"].sums, sums)


@pytest.mark.parametrize("name, save", [("imatrix.gguf", save_imatrix),
                                         ("imatrix.dat", functools.partial(save_imatrix_legacy, chunk_size=4))])
def test_imatrix_write_error_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch, name, save):
    import tinyllm.atomic_file

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tinyllm.atomic_file.os, "replace", full)
    entries = {"a.weight": ImatrixEntry(sums=np.ones((1, 4), np.float32), counts=np.ones(1, np.float32))}
    with pytest.raises(QuantizationError, match=rf"{re.escape(name)}: cannot write imatrix file: No space left"):
        save(tmp_path / name, entries)
    assert list(tmp_path.iterdir()) == []


def test_kl_base_appears_only_when_closed(tmp_path):
    target = tmp_path / "base.kld"
    stale = tmp_path / f".base.kld.tinyllm-{_dead_pid()}-cd.tmp"
    stale.write_bytes(b"\0")
    w = KLBaseWriter(target, n_ctx=4, n_vocab=3, tokens=np.arange(8))
    assert not stale.exists() and not target.exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    w = KLBaseWriter(target, n_ctx=4, n_vocab=3, tokens=np.arange(8))
    w.close()
    assert target.exists() and [p.name for p in tmp_path.iterdir()] == ["base.kld"]


def test_kl_base_write_error_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    from tinyllm.errors import UsageError

    w = KLBaseWriter(tmp_path / "base.kld", n_ctx=4, n_vocab=3, tokens=np.arange(8))

    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            raise OSError(28, "No space left on device")

    w._out.file.close()
    monkeypatch.setattr(w._out, "file", FullDisk())
    rows = np.zeros((2, 2), np.uint16)
    monkeypatch.setattr("tinyllm.kl_divergence.n_scored", lambda n_ctx: 2)
    monkeypatch.setattr("tinyllm.kl_divergence.row_length", lambda n_vocab: 2)
    with pytest.raises(UsageError, match=r"cannot write .*base\.kld: No space left on device"):
        w.write_chunk(rows)
    w.abort()  # perplexity() aborts again on the way out: harmless
    assert list(tmp_path.iterdir()) == []
