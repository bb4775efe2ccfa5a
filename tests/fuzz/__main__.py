"""python -m tests.fuzz [--cases N] [--seed S] [--jobs J] [--timeout T] [--mem-mb M]

Mutated tiny GGUF models through the `info` and `run` loading path (README.md here). Prints a
summary and every failing case with its seed; exit status 1 when a case fails.

    python -m tests.fuzz                      # the CI sample: 500 cases from seed 0
    python -m tests.fuzz --cases 100000       # the full run
    python -m tests.fuzz --seed 1234 --cases 1      # one case again
    python -m tests.fuzz --cli --cases 50     # through `tinyllm info` / `tinyllm run` subprocesses
"""
from __future__ import annotations

import argparse
import sys

from . import harness


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[1])
    p.add_argument("--cases", type=int, default=500, help="number of cases (default 500, the CI sample)")
    p.add_argument("--seed", type=int, default=0, help="first seed; case i uses seed + i (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take before it counts as a hang")
    p.add_argument("--mem-mb", type=int, default=2048, help="address space a worker may add to its start-up size")
    p.add_argument("--cli", action="store_true", help="run each case as `tinyllm info` and `tinyllm run` subprocesses")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bases", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return harness.worker_main(args.bases, args.mem_mb)

    def progress(res):
        if res.cases % 500 == 0:
            print(f"... {res.cases} cases, {res.n_failures} failures", file=sys.stderr, flush=True)

    runner = harness.run_cli if args.cli else harness.run
    res = runner(range(args.seed, args.seed + args.cases), jobs=args.jobs, timeout=args.timeout,
                 mem_mb=args.mem_mb, progress=progress)
    print(harness.summary(res))
    return 1 if res.n_failures else 0


if __name__ == "__main__":
    sys.exit(main())
