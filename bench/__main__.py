"""Run the benchmarks one after the other (`make bench`, `cl bench`).

In order: kernels on the CPU, the rollout policies (simulation), then the online loop, the
rollback reaction and the soak.

`python -m bench --only kernels,rollout` runs some of them. Those with `needs_stack` need the local
stack (`cl up`); `make bench` starts it, `cl bench` checks it first. The exit code is the first
non-zero one a benchmark returned.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple


class Benchmark(NamedTuple):
    module: str
    title: str
    needs_stack: bool


BENCHMARKS: dict[str, Benchmark] = {
    "kernels": Benchmark("bench.bench_kernels", "kernels (CPU)", False),
    "rollout": Benchmark("bench.bench_rollout", "rollout policies (simulation)", False),
    "online": Benchmark("bench.bench_online", "online loop (local stack)", True),
    "rollback": Benchmark("bench.bench_rollback_reaction", "rollback reaction (local stack)", True),
    "soak": Benchmark("bench.bench_soak", "soak (local stack)", True),
}


def select(only: str | None) -> list[str]:
    """The benchmarks a comma-separated ``--only`` names, in run order; None or "" = all.

    Raises:
        ValueError: Naming the unknown names and the valid ones.
    """
    if not only:
        return list(BENCHMARKS)
    asked = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in asked if name not in BENCHMARKS]
    if unknown or not asked:
        raise ValueError(
            f"unknown benchmark {', '.join(map(repr, unknown)) or repr(only)}; choose from {', '.join(BENCHMARKS)}"
        )
    return [name for name in BENCHMARKS if name in asked]


def run(names: list[str]) -> int:
    """Run ``names`` (from :data:`BENCHMARKS`) with their default options; the first non-zero exit code."""
    code = 0
    for i, name in enumerate(names):
        bench = BENCHMARKS[name]
        print(("\n" if i else "") + f"#### {bench.title}\n", flush=True)
        code = code or (importlib.import_module(bench.module).main([]) or 0)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated, from {','.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    try:
        names = select(args.only)
    except ValueError as e:
        parser.error(str(e))
    return run(names)


if __name__ == "__main__":
    sys.exit(main())
