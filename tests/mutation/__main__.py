"""python -m tests.mutation [--quick] [--module PATH] [--jobs N] [--list]

Mutation check of tinyllm/quants/ and tinyllm/model/ops.py (README.md here): mutants made
from the source, each run against the tests that cover its module on a temporary copy of the
package; prints the score per module and every survivor. Exit status 1 when a mutant that is
not in the README's list of equivalent mutants survives.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import re
import sys
import threading
import time
from pathlib import Path

from . import engine, targets

HERE = Path(__file__).resolve().parent


def equivalent_keys() -> set[str]:
    """Mutant keys listed as equivalent in README.md (lines `- `KEY` ...`)."""
    text = (HERE / "README.md").read_text()
    return set(re.findall(r"^- `([^`]+)`", text, flags=re.M))


def build(args) -> list[engine.Mutant]:
    mods = [m for m in targets.MODULES if not args.module or any(m.endswith(x) or x in m for x in args.module)]
    if args.module and not mods:
        sys.exit(f"no module matches {args.module}; known: {', '.join(targets.MODULES)}")
    per_fn = args.per_function if args.per_function is not None else (1 if args.quick else 3)
    out = []
    for m in mods:
        ms = engine.generate(m, exclude=targets.NOT_KERNELS.get(m, ()), jit_functions=targets.AVX2_ONLY)
        if not args.jit_mutants:
            ms = [x for x in ms if not x.jit]
        ms = engine.sample(ms, per_fn, args.seed)
        if args.quick:
            ms = ms[:: max(1, len(ms) // 3)][:3]
        out.extend(ms)
    hand = [h for h in targets.hand() if h.module in mods]
    keys = {m.key for m in out}
    out.extend(h for h in hand if h.key not in keys)
    if args.skip:
        out = _without_done(out, args.skip)
    return out


def _without_done(mutants, path: Path) -> list:
    """Leave out mutants an earlier run's .jsonl already recorded: each recorded key takes out
    one mutant with that key (keys are not unique: one line can hold several equal edits)."""
    from collections import Counter

    done = Counter(json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip())
    out = []
    for m in mutants:
        if done[m.key] > 0:
            done[m.key] -= 1
        else:
            out.append(m)
    return out


def _listed_equivalent(mutants, equivalent) -> list:
    """The mutants README.md explains as equivalent, which need not run (each would pass every
    test of its selection: the slowest kind of run). A key that names several mutants (one line,
    several equal edits) runs anyway: the README's reason may cover only some of them."""
    from collections import Counter

    n = Counter(m.key for m in mutants)
    return [m for m in mutants if m.key in equivalent and n[m.key] == 1]


def _baseline(spaces, i, mod, args):
    ws = spaces[i % len(spaces)]
    with _ws_locks[id(ws)]:
        st, secs, det = ws.run(None, targets.MODULES[mod], args.timeout * 4)
    print(f"baseline {mod}: {secs:.1f} s", flush=True)
    return None if st == "survived" else f"baseline of {mod} does not pass ({st}: {det}); fix the tests first"


_ws_locks: dict = {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[2])
    p.add_argument("--quick", action="store_true", help="a sample (3 mutants a module and the hand list) that runs in minutes")
    p.add_argument("--module", action="append", help="only modules whose path contains this (repeatable)")
    p.add_argument("--per-function", type=int, help="mutants per function (default 3, --quick 1)")
    p.add_argument("--all", dest="per_function", action="store_const", const=10**9, help="every mutant generated")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=240, help="seconds per mutant (a hang counts as killed)")
    p.add_argument("--jit-mutants", action="store_true", help="also mutate the AVX2-only functions (JIT on: slow)")
    p.add_argument("--seed", default="15")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--baseline-only", action="store_true", help="run the unmutated selections only")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="run every selection unmutated first (default: yes, no with --quick)")
    p.add_argument("--json", type=Path, help="write every result to this file (and each as it ends to FILE.jsonl)")
    p.add_argument("--run-equivalent", action="store_true",
                   help="also run the mutants README.md lists as equivalent (by default they are counted, not run)")
    p.add_argument("--skip", type=Path, metavar="JSONL",
                   help="leave out the mutants an earlier run's .jsonl recorded (to finish a stopped run)")
    args = p.parse_args(argv)

    mutants = build(args)
    if args.list:
        for m in mutants:
            print(m.key, "jit" if m.jit else "")
        print(f"{len(mutants)} mutants")
        return 0
    equivalent = equivalent_keys()
    listed = [] if args.run_equivalent else _listed_equivalent(mutants, equivalent)
    skipped = {id(m) for m in listed}
    mutants = [m for m in mutants if id(m) not in skipped]
    print(f"{len(mutants)} mutants over {len({m.module for m in mutants})} modules, {args.jobs} jobs"
          + (f" ({len(listed)} listed as equivalent in README.md, not run)" if listed else ""), flush=True)

    spaces = [engine.Workspace() for _ in range(args.jobs)]
    for ws in spaces:
        _ws_locks[id(ws)] = threading.Lock()
    log = open(args.json.with_suffix(".jsonl"), "w") if args.json else None
    try:
        # the unmutated copy must pass every selection used, with the JIT off (--quick skips this)
        if args.baseline if args.baseline is not None else not args.quick:
            mods = sorted({m.module for m in mutants})
            with cf.ThreadPoolExecutor(args.jobs) as pool:
                runs = [pool.submit(_baseline, spaces, i, mod, args) for i, mod in enumerate(mods)]
                bad = [r.result() for r in runs if r.result()]
            if bad:
                for b in bad:
                    print(b, flush=True)
                return 2
        if args.baseline_only:
            return 0
        free = list(spaces)
        results = [(m, "equivalent", 0.0, "listed in README.md, not run") for m in listed]
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(args.jobs) as pool:
            futs = {}

            def submit(m):
                ws = free.pop()
                futs[pool.submit(ws.run, m, targets.MODULES[m.module], args.timeout)] = (m, ws)

            queue = list(mutants)
            while queue and free:
                submit(queue.pop(0))
            while futs:
                done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    m, ws = futs.pop(f)
                    free.append(ws)
                    st, secs, det = f.result()
                    results.append((m, st, secs, det))
                    if log:
                        log.write(json.dumps({"key": m.key, "status": st, "seconds": round(secs, 1), "detail": det}) + "\n")
                        log.flush()
                    mark = {"killed": ".", "timeout": "t", "error": "E", "survived": "S"}[st]
                    print(f"{mark} {secs:5.1f}s {m.key}" + (f"  [{det}]" if st in ("error",) else ""), flush=True)
                    if queue:
                        submit(queue.pop(0))
        wall = time.monotonic() - t0
    finally:
        for ws in spaces:
            ws.close()
    return report(results, equivalent, wall, args.json)


def report(results, equivalent, wall, json_path) -> int:
    per: dict[str, list[int]] = {}
    survivors = []
    for m, st, _, _ in results:
        c = per.setdefault(m.module, [0, 0, 0])
        c[1] += 1
        if st in ("killed", "timeout"):
            c[0] += 1
        elif st == "equivalent" or m.key in equivalent:
            c[2] += 1
        else:
            survivors.append(m)
    print("\nmodule                          killed/total  equivalent")
    tk = tt = te = 0
    for mod, (k, t, e) in sorted(per.items()):
        print(f"{mod:32s} {k:4d}/{t:<4d} {100 * k / max(t - e, 1):5.1f}%  {e}")
        tk, tt, te = tk + k, tt + t, te + e
    score = 100 * tk / max(tt - te, 1)
    print(f"{'all':32s} {tk:4d}/{tt:<4d} {score:5.1f}%  {te}   (score = killed / (total - equivalent)); {wall:.0f} s")
    for m, st, _, det in results:
        if st == "error":
            print(f"ERROR (counts as survived) {m.key}: {det}")
    if survivors:
        print(f"\n{len(survivors)} survivors (not in README.md's equivalent list):")
        for m in survivors:
            print(f"  {m.key}")
    if json_path:
        json_path.write_text(json.dumps([{"key": m.key, "status": st, "seconds": round(s, 1), "detail": d} for m, st, s, d in results], indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
