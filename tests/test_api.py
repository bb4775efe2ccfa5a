"""The package API (tinyllm/__init__.py): `tinyllm.load`, `tinyllm.generate` and `tinyllm.quantize`
stay the functions however often they are called and whatever submodules were imported.

Importing a submodule sets it as an attribute of its package, so a submodule named like one of
these functions would replace it after its first import; no module may share their names."""
import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import tinyllm
from tinyllm.sampling import SamplingParams

from tinymodels import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TINY_F32 = ROOT / "tests" / "data" / "golden" / "quant" / "tiny-f32.gguf"
API = ("load", "generate", "quantize")


def all_submodules() -> list[str]:
    # tinyllm.__main__ would run the command line
    return [m.name for m in pkgutil.walk_packages(tinyllm.__path__, "tinyllm.") if not m.name.endswith("__main__")]


def test_no_submodule_is_named_like_a_function_of_the_api():
    names = {n.split(".")[1] for n in all_submodules()}
    assert not names & set(API)


def test_api_functions_survive_importing_every_submodule_and_work_twice(tmp_path):
    for name in all_submodules():
        importlib.import_module(name)
    for name in API:
        assert isinstance(getattr(tinyllm, name), types.FunctionType), name
    model = tinyllm.load(make_tiny_model(tmp_path), n_ctx=64, threads=1)
    greedy = SamplingParams(temperature=0)
    first = tinyllm.generate(model, [1, 2, 3], max_tokens=4, params=greedy).read()
    model.reset()
    assert tinyllm.generate(model, [1, 2, 3], max_tokens=4, params=greedy).read() == first
    for i in range(2):
        stats = tinyllm.quantize(TINY_F32, tmp_path / f"q{i}.gguf", "Q8_0", threads=1)
        assert stats.dst.exists()
    assert (tmp_path / "q0.gguf").read_bytes() == (tmp_path / "q1.gguf").read_bytes()
    for name in API:
        assert isinstance(getattr(tinyllm, name), types.FunctionType), name


def test_generate_twice_in_a_fresh_process(tmp_path):
    path = make_tiny_model(tmp_path)
    code = textwrap.dedent(
        f"""
        import tinyllm
        from tinyllm.sampling import SamplingParams
        m = tinyllm.load({str(path)!r}, n_ctx=64, threads=1)
        p = SamplingParams(temperature=0)
        a = tinyllm.generate(m, [1, 2, 3], max_tokens=3, params=p).read()
        m.reset()
        b = tinyllm.generate(m, [1, 2, 3], max_tokens=3, params=p).read()
        tinyllm.quantize({str(TINY_F32)!r}, {str(tmp_path / "a.gguf")!r}, "Q8_0")
        tinyllm.quantize({str(TINY_F32)!r}, {str(tmp_path / "b.gguf")!r}, "Q8_0")
        assert a == b, (a, b)
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
