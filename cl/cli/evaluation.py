"""Commands that measure: the evaluation protocols, the service report, the profiler, the benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cl.config import Config

__all__ = ["batch_sizes", "bench", "eval_protocols", "profile", "report"]


def eval_protocols(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl.evaluation.suite import PROTOCOLS, check_names, run_suite

    try:
        names = check_names(args.only.split(",")) if args.only else list(PROTOCOLS)
    except ValueError as e:
        print(f"cl eval: --only: {e}", file=sys.stderr)
        return 2
    from streams.eval_feed import EvalFeed

    results = run_suite(
        names, quick=args.quick, out=Path(args.out), config=config, feeds=lambda stream: EvalFeed(config, stream)
    )
    missed = [f"{r.name}: {g.name}" for r in results for g in r.goals if not g.met]
    print(
        f"\nreports in {args.out}/ (index: {args.out}/README.md)"
        + (f"; goals not met: {', '.join(missed)}" if missed else "")
    )
    return 0


def report(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl.evaluation.report import write_index, write_report
    from cl.evaluation.service_report import ServiceHistory, service_report
    from cl.events import LifecycleEvent
    from streams import EventTail

    tail = EventTail(config.kafka.bootstrap_servers, config.topics.events, LifecycleEvent, from_beginning=True)
    try:
        history = ServiceHistory.from_events(tail.read_to_end(), config.mlflow.model_name)
    finally:
        tail.close()
    out = Path(args.out)
    path = write_report(service_report(history, config.mlflow.model_name), out, written_by="cl report")
    write_index(out)
    print(f"service report: {path} (index: {out}/README.md)")
    return 0


def profile(config: Config, args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from cl.model.base_model import base_model_config
    from cl.serving.profiling import format_table, profile_model

    # --preset wins over model.checkpoint; a checkpoint is profiled with its own shapes.
    section = dataclasses.replace(config.model, preset=args.preset, checkpoint="") if args.preset else config.model
    preset = f"checkpoint {Path(section.checkpoint).name}" if section.checkpoint else section.preset
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [n for group in args.batch_size or [[1, 8, 32]] for n in group]
    # The replica's model: [model] with the preset asked for, and its bank of serve.adapter_cache_size slots.
    slots = max(args.adapters, config.serve.adapter_cache_size)

    def say(line: str) -> None:
        print(f"cl profile: {line}", file=sys.stderr, flush=True)

    say(f"preset {preset} on {device}, batch sizes {sizes}, {args.warmup} + {args.iters} iterations each")
    try:  # ModelConfigError (an unknown preset names the known ones) is a ValueError too
        model_cfg = base_model_config(section, n_adapter_slots=slots)
        rows = profile_model(
            model_cfg,
            sizes,
            seq_len=args.seq_len,
            new_tokens=args.new_tokens,
            adapters=args.adapters,
            iters=args.iters,
            warmup=args.warmup,
            device=device,
            progress=say,
        )
    except ValueError as e:
        print(f"cl profile: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"preset": preset, **r.to_dict()} for r in rows], indent=2))
        return 0
    r = rows[0]
    print(
        f"preset {preset} ({r.parameters:,} parameters) on {r.device} ({r.threads} torch threads); seq_len {r.seq_len}, "
        f"{r.new_tokens} new tokens; {f'{args.adapters} adapters mixed per batch' if args.adapters else 'base only'}; "
        f"{r.warmup} warm-up + {r.iters} timed iterations\n"
        f"peak MB: {r.memory}\n"
    )
    print(format_table(rows))
    return 0


def batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of batch sizes; give ints >= 1, e.g. 1,8,32")
    return sizes


def bench(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "bench" / "__main__.py").is_file():
        print(f"cl bench: no bench/ beside {checkout / 'cl'}; run it from a source checkout", file=sys.stderr)
        return 1
    if str(checkout) not in sys.path:  # bench/ is not an installed package
        sys.path.insert(0, str(checkout))
    from bench.__main__ import BENCHMARKS, run, select
    from infra.stack import status

    try:
        names = select(args.only)
    except ValueError as e:
        print(f"cl bench: --only: {e}", file=sys.stderr)
        return 2
    stacked = [n for n in names if BENCHMARKS[n].needs_stack]
    down = [s for s in status(config) if not s.healthy] if stacked else []
    if down:
        print(
            f"cl bench: {', '.join(stacked)} {'needs' if len(stacked) == 1 else 'need'} the local stack, and "
            f"{', '.join(s.name for s in down)} {'is' if len(down) == 1 else 'are'} down: start it with `cl up` "
            "(or run `make bench`, which does), then run `cl bench` again; "
            f"`cl bench --only kernels,rollout` needs no stack.",
            file=sys.stderr,
        )
        for s in down:
            print("  " + s.line(), file=sys.stderr)
        return 1
    if args.config:  # the benchmarks read the config themselves
        os.environ["CL_CONFIG"] = args.config
    return run(names)
