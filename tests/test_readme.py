"""The README's code blocks run as written on a fresh clone: every ```sh and ```python block,
except those right after a `<!-- not run: REASON -->` line (commands that install, open an
interactive terminal or name the user's own files). Shell blocks run line by line in bash;
python blocks in a fresh interpreter. Both run in an empty directory holding a link to the
repository's tests/ (where the README's example data lives), so nothing is written into the
checkout. On the real default model, so marked slow."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>sh|python)\n(?P<body>.*?)```", re.S)


def blocks():
    out = []
    for m in BLOCK.finditer(README):
        if m["before"].startswith("<!-- not run"):
            continue
        line = README[: m.start("body")].count("\n") + 1
        out.append(pytest.param(m["lang"], m["body"], id=f"line{line}-{m['lang']}"))
    return out


def test_the_readme_has_runnable_blocks_and_says_why_others_do_not_run():
    assert len(blocks()) >= 4
    for m in BLOCK.finditer(README):
        if m["before"].startswith("<!-- not run"):
            assert re.match(r"<!-- not run: \S.* -->$", m["before"]), m["before"]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("lang,body", blocks())
def test_readme_block_runs(lang, body, workdir):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if lang == "python":
        cmd = [sys.executable, "-c", body]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", body]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
