"""Mutant generation (from the source, by AST) and the runner (one pytest per mutant on a
temporary copy of the package).

A mutant is one small edit of one function: the source segment of one expression node is
replaced by the unparsed mutated node (in parentheses), so the rest of the file keeps its
bytes. Operators, each one edit:

    cmp     flip a comparison boundary or sense:  <  <=,  >  >=,  == !=
    binop   + -,  * /  (// *),  >> <<,  & |,  | ^,  % //
    const   an int n -> n + 1; a float c -> 0.0 (c != 0) or 1.0 (c == 0)
    range   range(a, b) -> range(a, b - 1) and range(a + 1, b); range(n) -> range(n - 1)
    index   x[i] -> x[i + 1] for a Name or arithmetic index (the first index of a tuple)
    neg     -x -> x
    field   b["d"] -> b["dmin"]: a structured field name swapped for another of the module

plus a hand list (targets.HAND) of textual edits that matter most (the known mutants).
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Mutant:
    module: str  # path relative to ROOT, e.g. tinyllm/quants/q6_k.py
    function: str
    line: int
    kind: str
    desc: str
    start: tuple[int, int]  # (line, col) 1-based line, 0-based col, of the replaced segment
    end: tuple[int, int]
    new: str
    jit: bool = False  # True: run with the JIT on (AVX2 code); else NUMBA_DISABLE_JIT=1

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line}:{self.function}:{self.kind}:{self.desc}"

    def apply(self, src: str) -> str:
        lines = src.splitlines(keepends=True)
        offs = [0]
        for ln in lines:
            offs.append(offs[-1] + len(ln))
        # ast columns are UTF-8 byte offsets; the project's source is ASCII in code lines
        a = offs[self.start[0] - 1] + _char_col(lines[self.start[0] - 1], self.start[1])
        b = offs[self.end[0] - 1] + _char_col(lines[self.end[0] - 1], self.end[1])
        return src[:a] + self.new + src[b:]


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode()[:byte_col].decode(errors="ignore"))


CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
BIN_SWAP = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.RShift: ast.LShift, ast.LShift: ast.RShift, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitXor,
    ast.BitXor: ast.BitOr, ast.Mod: ast.FloorDiv,
}
OP_TEXT = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.RShift: ">>", ast.LShift: "<<",
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.Mod: "%",
}


def _seg(node) -> tuple[tuple[int, int], tuple[int, int]]:
    return (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)


def _paren(node) -> str:
    return "(" + ast.unparse(node) + ")"


def _is_docstring(parents, node) -> bool:
    p = parents.get(id(node))
    return isinstance(p, ast.Expr)


def _annotations(fn) -> set[int]:
    """ids of nodes inside annotations and decorators (not mutated)."""
    skip = set()
    roots = list(fn.decorator_list)
    if fn.returns is not None:
        roots.append(fn.returns)
    for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs:
        if a.annotation is not None:
            roots.append(a.annotation)
    for r in roots:
        skip.update(id(n) for n in ast.walk(r))
    return skip


def mutants_of_function(module: str, fn: ast.FunctionDef, fields: list[str], jit: bool) -> list[Mutant]:
    out: list[Mutant] = []
    parents = {id(c): p for p in ast.walk(fn) for c in ast.iter_child_nodes(p)}
    skip = _annotations(fn)
    # defaults of arguments are part of the signature: mutated too (they are behaviour)

    def add(node, kind, desc, new_node_or_text):
        s, e = _seg(node)
        new = new_node_or_text if isinstance(new_node_or_text, str) else _paren(new_node_or_text)
        out.append(Mutant(module, fn.name, node.lineno, kind, desc, s, e, new, jit))

    for node in ast.walk(fn):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in CMP_SWAP:
                    m = _copy(node)
                    m.ops[i] = CMP_SWAP[type(op)]()
                    add(node, "cmp", f"{OP_TEXT[type(op)]} -> {OP_TEXT[CMP_SWAP[type(op)]]}", m)
        elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
            m = _copy(node)
            m.op = BIN_SWAP[type(node.op)]()
            add(node, "binop", f"{OP_TEXT[type(node.op)]} -> {OP_TEXT[type(m.op)]}", m)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not _is_docstring(parents, node):
            v = node.value
            nv = v + 1 if isinstance(v, int) else (0.0 if v != 0 else 1.0)
            add(node, "const", f"{v!r} -> {nv!r}", ast.Constant(nv))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("range", "prange"):
            a = node.args
            if len(a) == 1:
                m = _copy(node)
                m.args[0] = ast.BinOp(_copy(a[0]), ast.Sub(), ast.Constant(1))
                add(node, "range", f"{ast.unparse(node)} -> stop - 1", m)
            elif len(a) >= 2:
                m = _copy(node)
                m.args[1] = ast.BinOp(_copy(a[1]), ast.Sub(), ast.Constant(1))
                add(node, "range", f"{ast.unparse(node)} -> stop - 1", m)
                m = _copy(node)
                m.args[0] = ast.BinOp(_copy(a[0]), ast.Add(), ast.Constant(1))
                add(node, "range", f"{ast.unparse(node)} -> start + 1", m)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            sl = node.slice
            idx = sl.elts[0] if isinstance(sl, ast.Tuple) and sl.elts else sl
            if isinstance(idx, ast.Constant) and isinstance(idx.value, str) and idx.value in fields and len(fields) > 1:
                other = fields[(fields.index(idx.value) + 1) % len(fields)]
                add(idx, "field", f"[{idx.value!r}] -> [{other!r}]", ast.Constant(other))
            elif isinstance(idx, (ast.Name, ast.BinOp)):
                add(idx, "index", f"[{ast.unparse(idx)}] -> [+1]", ast.BinOp(_copy(idx), ast.Add(), ast.Constant(1)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            add(node, "neg", f"-{ast.unparse(node.operand)} -> +", _copy(node.operand))
    return out


def _copy(node):
    return ast.parse(ast.unparse(node), mode="eval").body if not isinstance(node, ast.expr_context) else node


def block_fields(tree: ast.Module) -> list[str]:
    """Field names of structured dtypes the module declares: ("d", np.float16) tuples."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) >= 2 and isinstance(node.elts[0], ast.Constant):
            v = node.elts[0].value
            if isinstance(v, str) and v.isidentifier() and v not in names and isinstance(node.elts[1], (ast.Attribute, ast.Name, ast.Constant)):
                names.append(v)
    return names


def generate(module: str, include=None, exclude=(), jit_functions=()) -> list[Mutant]:
    """Every mutant of the module's functions (top level; nested defs belong to their parent)."""
    src = (ROOT / module).read_text()
    tree = ast.parse(src)
    fields = block_fields(tree)
    out = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        if include is not None and fn.name not in include:
            continue
        if fn.name in exclude:
            continue
        jit = any(j == fn.name or (j.endswith("*") and fn.name.startswith(j[:-1])) or (j.startswith("*") and fn.name.endswith(j[1:])) for j in jit_functions)
        out.extend(mutants_of_function(module, fn, fields, jit))
    # drop mutants whose edit does not change the text (e.g. a segment unparsed the same)
    return [m for m in out if m.apply(src) != src]


def hand_mutant(module: str, function: str, old: str, new: str, why: str, jit: bool = False) -> Mutant:
    """A textual edit inside one function; `old` must occur exactly once in that function."""
    src = (ROOT / module).read_text()
    tree = ast.parse(src)
    fn = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == function)
    lines = src.splitlines(keepends=True)
    lo = (fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno) - 1
    body = "".join(lines[lo : fn.end_lineno])
    if body.count(old) != 1:
        raise SystemExit(f"hand mutant {module}:{function}: {old!r} occurs {body.count(old)} times, not once")
    at = "".join(lines[:lo]).__len__() + body.index(old)
    line = src.count("\n", 0, at) + 1
    col = at - (src.rfind("\n", 0, at) + 1)
    end_at = at + len(old)
    eline = src.count("\n", 0, end_at) + 1
    ecol = end_at - (src.rfind("\n", 0, end_at) + 1)
    byte = lambda ln, c: len(lines[ln - 1][:c].encode())  # noqa: E731
    return Mutant(module, function, line, "hand", f"{old} -> {new} ({why})", (line, byte(line, col)), (eline, byte(eline, ecol)), new, jit)


def sample(mutants: list[Mutant], per_function: int | None, seed: str) -> list[Mutant]:
    """At most per_function mutants of each function, chosen deterministically (spread over kinds)."""
    if per_function is None:
        return mutants
    by_fn: dict[tuple[str, str], list[Mutant]] = {}
    for m in mutants:
        by_fn.setdefault((m.module, m.function), []).append(m)
    out = []
    for (mod, fn), ms in by_fn.items():
        rng = random.Random(hashlib.sha256(f"{seed}:{mod}:{fn}".encode()).hexdigest())
        if len(ms) <= per_function:
            out.extend(ms)
            continue
        kinds: dict[str, list[Mutant]] = {}
        for m in ms:
            kinds.setdefault(m.kind, []).append(m)
        for v in kinds.values():
            rng.shuffle(v)
        chosen = []
        while len(chosen) < per_function:  # round-robin over kinds
            for k in sorted(kinds):
                if kinds[k] and len(chosen) < per_function:
                    chosen.append(kinds[k].pop())
        out.extend(sorted(chosen, key=lambda m: m.line))
    return out


# -- running ------------------------------------------------------------------------------------


class Workspace:
    """A temporary copy of the package and the tests; one mutant applied at a time."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="tinyllm-mutant-"))
        shutil.copytree(ROOT / "tinyllm", self.dir / "tinyllm", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", self.dir / "tests", ignore=shutil.ignore_patterns("__pycache__", "data", "mutation"))
        os.symlink(ROOT / "tests" / "data", self.dir / "tests" / "data")
        shutil.copy(ROOT / "pyproject.toml", self.dir / "pyproject.toml")

    def run(self, mutant: Mutant | None, selections: list[list[str]], timeout: float) -> tuple[str, float, str]:
        """('killed' | 'survived' | 'timeout' | 'error', seconds, detail)."""
        t0 = time.monotonic()
        target = self.dir / mutant.module if mutant else None
        original = target.read_text() if target else None
        try:
            if mutant:
                target.write_text(mutant.apply(original))
            env = dict(os.environ, PYTHONPATH=str(self.dir), PYTHONDONTWRITEBYTECODE="1")
            env.pop("NUMBA_CACHE_DIR", None)  # conftest makes a fresh one per run
            if mutant is None or not mutant.jit:
                env["NUMBA_DISABLE_JIT"] = "1"
            else:
                env.pop("NUMBA_DISABLE_JIT", None)
            for sel in selections:
                cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-m", "not slow", *sel]
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    return "timeout", time.monotonic() - t0, " ".join(sel)
                try:
                    r = subprocess.run(cmd, cwd=self.dir, env=env, capture_output=True, text=True, timeout=left)
                except subprocess.TimeoutExpired:
                    return "timeout", time.monotonic() - t0, " ".join(sel)
                if r.returncode == 5:
                    return "error", time.monotonic() - t0, f"no test selected by {' '.join(sel)}"
                if r.returncode != 0:
                    tail = [ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
                    return "killed", time.monotonic() - t0, (tail[0] if tail else r.stdout.strip().splitlines()[-1:] or [""])[0][:160]
            return "survived", time.monotonic() - t0, ""
        finally:
            if mutant:
                target.write_text(original)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
