"""The online learner as a Ray Train job: ``python -m learners.online`` (or ``ray job submit``).

One ``TorchTrainer`` worker by default (``learner.workers``); each worker runs a
``FeedbackLoop`` over its share of the feedback partitions, in lockstep with the others. Ray Train restarts a failed worker group (``learner.max_failures``), and
the loop resumes from the newest snapshot, so a crash costs re-reading, never an event.

With ``learner.use_gpu`` (``"auto"``: when Ray reports a GPU) each worker asks for a GPU, or a
share of one beside the replicas (:func:`cl.serving.placement.plan_gpus`), and learns there in
bfloat16 autocast with float32 adapters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["run_online_learner", "train_loop_per_worker", "worker_resources"]


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's entry on each worker: rebuild the config, run the loop, report the result."""
    import ray.train
    import ray.train.torch
    import torch

    from cl.config import Config
    from learners.feedback_loop import FeedbackLoop, LoopLimits

    torch.set_num_threads(int(loop_config.get("torch_threads", 1)))
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if loop_config.get("use_gpu") else torch.device("cpu")
    loop = FeedbackLoop(
        Config.from_dict(loop_config["config"]),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        limits=LoopLimits(**loop_config["limits"]),
        say=lambda line: print(line, flush=True),
        device=device,
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


def worker_resources(config, gpus_reported: float) -> tuple[dict[str, float], str | None]:
    """What each learner worker asks Ray for, and the process group's backend (None: Ray's choice).

    Workers that share a GPU cannot use NCCL (one rank per GPU), so they all-reduce over gloo.

    Example:
        >>> from cl.config import load_config
        >>> worker_resources(load_config(path=None, env={}), gpus_reported=0)
        ({'CPU': 1}, None)
        >>> two = load_config(path=None, env={"CL_LEARNER_WORKERS": "2", "CL_SERVE_NUM_GPUS": "0"})
        >>> worker_resources(two, gpus_reported=1)
        ({'CPU': 1, 'GPU': 0.5}, 'gloo')
    """
    from cl.serving.placement import plan_gpus

    s, lc = config.serve, config.learner
    gpu = plan_gpus(s.num_gpus, lc.use_gpu, replicas=s.replicas, workers=lc.workers, gpus_reported=gpus_reported)
    if not gpu.per_worker:
        return {"CPU": 1}, None
    return {"CPU": 1, "GPU": gpu.per_worker}, ("gloo" if gpu.per_worker < 1 and lc.workers > 1 else None)


def run_online_learner(config, limits=None, *, max_failures: int = 3):
    """Run the learner on the configured Ray cluster until its limits; returns Ray Train's Result."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from learners.feedback_loop import LoopLimits

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or config.ray.gcs_address, log_to_driver=True)
    limits = limits or LoopLimits()
    resources, backend = worker_resources(config, ray.cluster_resources().get("GPU", 0))
    use_gpu = "GPU" in resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "limits": dataclasses.asdict(limits), "use_gpu": use_gpu},
        scaling_config=ScalingConfig(
            num_workers=config.learner.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend=backend),
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
