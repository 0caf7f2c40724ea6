"""Build, deploy and take down the serving application on a Ray cluster.

Example (against a running stack, e.g. after ``cl up``)::

    from cl.config import load_config
    from serve import deploy, shutdown

    config = load_config()
    url = deploy(config)          # e.g. "http://127.0.0.1:8000"
    ...                           # POST {url}/v1/predict
    shutdown(config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import serve

from cl.config import Config, ConfigError, load_config
from cl.serving.placement import plan_gpus
from serve._private.status_board import kill_board
from serve.ingress import Ingress
from serve.replica import ModelReplica
from serve.rollout_controller import kill_controller

__all__ = ["app_from_env", "base_url", "build_app", "connect", "deploy", "replica_gpus", "shutdown"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_app(config: Config, *, batching: bool = True) -> serve.Application:
    """The application graph: ``Ingress`` -> ``ModelReplica`` configured from ``config``.

    Args:
        config: The service config (``serve`` sizes the replicas, their GPUs and their batches).
        batching: Use the replicas' dynamic batching; ``False`` runs each request alone
            (for benchmarks).

    Returns:
        An application for ``serve.run``.
    """
    values = config.to_dict()
    # Replicas run in other working directories: give them absolute paths (keys, audit, state).
    values["state_dir"] = str(config.state_dir.resolve())
    for name in ("keys_file", "audit_file"):
        if values["auth"][name]:
            values["auth"][name] = str(Path(values["auth"][name]).resolve())
    s = config.serve
    # "auto" becomes a number here, where Ray's GPUs are known; the replicas read that number.
    gpus = replica_gpus(config)
    values["serve"]["num_gpus"] = gpus
    replica = ModelReplica.options(
        num_replicas=s.replicas,
        ray_actor_options={"num_cpus": s.replica_num_cpus, "num_gpus": gpus},
        # Let enough requests reach a replica to fill a batch (Serve's default is 5).
        max_ongoing_requests=max(8, 2 * s.max_batch_size),
    ).bind(values)
    return Ingress.options(
        ray_actor_options={"num_cpus": 0},  # I/O-bound: parsing, routing, Kafka
        max_ongoing_requests=max(64, 4 * s.max_batch_size * s.replicas),
    ).bind(replica, values, batching)


def replica_gpus(config: Config) -> float:
    """The GPUs one model replica asks Ray for: ``serve.num_gpus``, with ``"auto"`` resolved
    against the GPUs of the cluster this process is connected to (none when it is not)."""
    reported = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    return plan_gpus(
        config.serve.num_gpus,
        config.learner.use_gpu,
        replicas=config.serve.replicas,
        workers=config.learner.workers,
        gpus_reported=reported,
    ).per_replica


def app_from_env(args: dict[str, Any]) -> serve.Application:
    """The application configured like every other process: ``CL_*`` variables and ``CL_CONFIG``.

    What a Serve config file deploys, e.g. KubeRay's ``RayService`` (``infra/k8s/rayservice.yaml``)::

        applications:
          - name: cl                          # = config.app
            import_path: serve.app:app_from_env
            args: {CL_SERVE_MAX_BATCH_SIZE: "64"}   # optional; wins over the environment

    Args:
        args: The config file's ``args``: ``CL_*`` names and values, over ``os.environ``.

    Returns:
        :func:`build_app` of the resulting config.

    Raises:
        ConfigError: an argument is not a ``CL_*`` name, or the config has problems.
    """
    bad = sorted(str(k) for k in args if not str(k).startswith("CL_"))
    if bad:
        raise ConfigError(
            [f"serve.app:app_from_env args {bad}: not configuration variables; name them CL_<SECTION>_<KEY>"]
        )
    return build_app(load_config(env={**os.environ, **{str(k): str(v) for k, v in args.items()}}))


def base_url(config: Config) -> str:
    """Where the application answers: ``http://<serve.host>:<serve.port>``."""
    return f"http://{config.serve.host}:{config.serve.port}"


def connect(config: Config) -> None:
    """Join the Ray cluster at ``config.ray.gcs_address`` unless this process already has."""
    if not ray.is_initialized():
        ray.init(
            address=config.ray.gcs_address,
            # Workers import our packages from the project root (the local head also has it).
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
            log_to_driver=False,
        )


def deploy(config: Config, *, blocking: bool = False, batching: bool = True) -> str:
    """Run the application as ``config.app`` at route prefix ``/`` and return its base URL.

    Starts Serve's HTTP proxy on ``serve.host:serve.port`` if Serve is not running yet;
    redeploying updates the application in place.

    Args:
        config: The service config.
        blocking: Block until interrupted (for ``cl serve``-style foreground use).
        batching: See :func:`build_app`.

    Returns:
        The base URL, e.g. ``http://127.0.0.1:8000``.
    """
    connect(config)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_app(config, batching=batching), name=config.app, route_prefix="/", blocking=blocking)
    return base_url(config)


def shutdown(config: Config) -> None:
    """Delete the application ``config.app``, its status board and rollout controller; stop Serve
    if nothing else runs."""
    connect(config)
    serve.delete(config.app)
    kill_board(config.app)
    kill_controller(config.app)
    remaining: dict[str, Any] = serve.status().applications
    if not remaining:
        serve.shutdown()
