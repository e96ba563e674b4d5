"""Run kubelab's benchmarks: ``python bench/run.py [NAME_SUBSTRING ...] [--check]``.

Each benchmark prints its baseline and subject figures and their ratio; ``--check`` exits 1 when a
ratio is over the target its issue names. See bench/harness.py for how a benchmark is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Benchmark, run_all  # noqa: E402


def discover() -> list[Benchmark]:
    found: list[Benchmark] = []
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.extend(getattr(module, "BENCHMARKS", []))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="run only benchmarks whose name contains one of these")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio is over its target")
    parser.add_argument("--repeat", type=int, help="override each benchmark's repeat count")
    args = parser.parse_args(argv)
    benchmarks = [b for b in discover() if not args.names or any(n in b.name for n in args.names)]
    if not benchmarks:
        print("no benchmark matches", file=sys.stderr)
        return 2
    if args.repeat:
        for b in benchmarks:
            b.repeat = args.repeat
    results = run_all(benchmarks)
    for r in results:
        print(r.line())
    over = [r.name for r in results if r.ok is False]
    if over:
        print(f"over target: {', '.join(over)}")
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
