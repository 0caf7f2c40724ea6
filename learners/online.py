"""The online learner as a Ray Train job: ``python -m learners.online`` (or ``ray job submit``).

One ``TorchTrainer`` worker by default (``learner.workers``); each worker runs a
``FeedbackLoop`` over its share of the feedback partitions, in lockstep with the others. Ray Train restarts a failed worker group (``learner.max_failures``), and
the loop resumes from the newest snapshot, so a crash costs re-reading, never an event.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["run_online_learner", "train_loop_per_worker"]


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's entry on each worker: rebuild the config, run the loop, report the result."""
    import ray.train
    import torch

    from cl.config import Config
    from learners.feedback_loop import FeedbackLoop, LoopLimits

    torch.set_num_threads(int(loop_config.get("torch_threads", 1)))
    context = ray.train.get_context()
    loop = FeedbackLoop(
        Config.from_dict(loop_config["config"]),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        limits=LoopLimits(**loop_config["limits"]),
        say=lambda line: print(line, flush=True),
    )
    metrics = loop.run()
    # Ray Train keeps only metrics attached to a checkpoint; ours is a pointer to the MLflow
    # version (the real snapshot), so the driver's Result carries the final metrics.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if context.get_world_rank() == 0:
            Path(folder, "mlflow_version.json").write_text(json.dumps({"versions": loop.published, "metrics": metrics}))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def run_online_learner(config, limits=None, *, max_failures: int = 3):
    """Run the learner on the configured Ray cluster until its limits; returns Ray Train's Result."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from learners.feedback_loop import LoopLimits

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or config.ray.gcs_address, log_to_driver=True)
    limits = limits or LoopLimits()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "limits": dataclasses.asdict(limits)},
        scaling_config=ScalingConfig(num_workers=config.learner.workers, use_gpu=False),
        run_config=RunConfig(
            name=f"{config.app}-online-learner",
            storage_path=str((config.state_dir / "ray_results").resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    return trainer.fit()


def main(argv: list[str] | None = None) -> int:
    from cl.config import ConfigError, load_config
    from learners.feedback_loop import LoopLimits

    parser = argparse.ArgumentParser(prog="python -m learners.online", description=__doc__.splitlines()[0])
    parser.add_argument("--max-events", type=int, help="stop after this many events have been applied")
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds with nothing to read")
    parser.add_argument("--max-runtime", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as e:
        print(f"learner: {e}", file=sys.stderr)
        return 2
    limits = LoopLimits(max_events=args.max_events, idle_exit_s=args.idle_exit, max_runtime_s=args.max_runtime)
    result = run_online_learner(config, limits)
    print(f"learner finished: {result.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
