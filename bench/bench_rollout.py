"""Rollout policy benchmark: the mSPRT canary policy against a fixed-interval baseline, by simulation.

Seeded, pure Python (no services): each run rolls one challenger out at the first canary
share (10%) on simulated rated traffic, deciding after every request, until it is promoted,
rolled back, or ``--max-requests`` pass. Measured side by side for both policies:

1. Detection power: challenger ratings until a challenger 20 points worse is rolled back
   (0.6 vs 0.4 and 0.5 vs 0.3); median and p90.
2. False rollbacks: share of A/A runs (both arms equal) rolled back before promotion,
   with a 95% Wilson upper bound.
3. Promotion: challenger ratings and requests until a challenger 10 points better is promoted.

Usage: ``python -m bench.bench_rollout [--quick] [--runs 200] [--aa-runs 1000] [--workers N]``
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

from cl.config import RolloutConfig
from cl.rollout import CanaryPolicy, FixedIntervalPolicy, Scenario, simulate

BASELINE = {"interval_events": 100, "min_drop": 0.05, "max_failed_checks": 3}
POLICIES = ("canary (mSPRT)", "fixed interval")


def _policy(name: str, seed: int):
    rng = random.Random(seed)
    if name == POLICIES[0]:
        return CanaryPolicy("1", RolloutConfig(), rng=rng)
    return FixedIntervalPolicy("1", RolloutConfig(), rng=rng, **BASELINE)


def _one(job: tuple[str, Scenario, int]) -> tuple[str, int, int, str | None]:
    name, scenario, seed = job
    out = simulate(_policy(name, seed), scenario, seed=1_000_003 * seed + 17)
    return out.result, out.challenger_rated, out.requests, out.rule


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)])


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """Upper end of the 95% Wilson score interval for a rate of ``k`` in ``n``."""
    if n == 0:
        return float("nan")
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


def run_scenario(pool: ProcessPoolExecutor, name: str, scenario: Scenario, runs: int) -> dict:
    outs = list(pool.map(_one, [(name, scenario, s) for s in range(runs)], chunksize=max(1, runs // 32)))
    by = {r: [o for o in outs if o[0] == r] for r in ("rolled_back", "promoted", "undecided")}
    verdict = by["rolled_back"] if scenario.challenger_rate < scenario.champion_rate else by["promoted"]
    events, requests = [o[1] for o in verdict], [o[2] for o in verdict]
    return {
        "runs": runs,
        "rolled_back": len(by["rolled_back"]),
        "promoted": len(by["promoted"]),
        "undecided": len(by["undecided"]),
        "events_median": statistics.median(events) if events else float("nan"),
        "events_p90": _pct(events, 90),
        "requests_median": statistics.median(requests) if requests else float("nan"),
        "rules": sorted({o[3] for o in outs if o[0] == "rolled_back"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (100 / 200 A/A): about a quarter of the time")
    parser.add_argument("--runs", type=int, default=200, help="runs per detection and promotion scenario")
    parser.add_argument("--aa-runs", type=int, default=1000, help="A/A runs per policy")
    parser.add_argument("--max-requests", type=int, default=60_000, help="give a run up after this many requests")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    runs, aa_runs = (100, 200) if args.quick else (args.runs, args.aa_runs)
    cap = args.max_requests
    scenarios = [
        ("worse 0.6 vs 0.4", Scenario("worse", 0.6, 0.4, max_requests=cap), runs),
        ("worse 0.5 vs 0.3", Scenario("worse", 0.5, 0.3, max_requests=cap), runs),
        ("better 0.6 vs 0.7", Scenario("better", 0.6, 0.7, max_requests=cap), runs),
        ("A/A 0.6 vs 0.6", Scenario("A/A", 0.6, 0.6, max_requests=cap), aa_runs),
        ("A/A 0.9 vs 0.9", Scenario("A/A", 0.9, 0.9, max_requests=cap), aa_runs // 4),
    ]
    cfg = RolloutConfig()
    print("== rollout policies on simulated rated traffic (challenger starts at 10%; decide after every request)")
    print(f"   canary: {', '.join(f'{k}={v}' for k, v in asdict(cfg).items() if k != 'memory_users')}")
    print(f"   fixed interval: {', '.join(f'{k}={v}' for k, v in BASELINE.items())} (+ the same steps and guards)")
    header = (
        f"{'scenario':<20} {'policy':<15} {'runs':>5} {'rolled back':>12} {'promoted':>9} {'undecided':>9} "
        f"{'ch. events median':>17} {'p90':>6} {'requests median':>15}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    start = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        for label, scenario, n in scenarios:
            for name in POLICIES:
                r = results[label, name] = run_scenario(pool, name, scenario, n)
                rate = f"{r['rolled_back']} ({r['rolled_back'] / n:.1%})"
                print(
                    f"{label:<20} {name:<15} {n:>5} {rate:>12} {r['promoted']:>9} {r['undecided']:>9} "
                    f"{r['events_median']:>17.0f} {r['events_p90']:>6.0f} {r['requests_median']:>15.0f}",
                    flush=True,
                )
    print(
        f"   rolled back in A/A runs = false rollbacks; ch. events = challenger ratings until the verdict "
        f"(rollback for 'worse', promotion otherwise); "
        f"{time.perf_counter() - start:.0f} s with {args.workers} worker(s)"
    )
    print("== goals")
    for label in ("worse 0.6 vs 0.4", "worse 0.5 vs 0.3"):
        for name in POLICIES:
            r = results[label, name]
            print(
                f"   detection {label}, {name}: median {r['events_median']:.0f}, p90 {r['events_p90']:.0f} "
                f"challenger events (goal <= 200){'' if r['events_p90'] <= 200 else ' -- p90 above the goal'}"
            )
    for label in ("A/A 0.6 vs 0.6", "A/A 0.9 vs 0.9"):
        for name in POLICIES:
            r = results[label, name]
            k, n = r["rolled_back"], r["runs"]
            rules = f", rules: {', '.join(r['rules'])}" if r["rules"] else ""
            print(
                f"   false rollbacks {label}, {name}: {k}/{n} = {k / n:.2%} (95% upper bound {wilson_upper(k, n):.2%}"
                f"{rules}; goal <= 1%){'' if k / n <= 0.01 else ' -- above the goal'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
