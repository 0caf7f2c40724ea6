"""Shared fixtures. ``stack`` brings up the real Kafka, MLflow and Ray for the whole session.

The stack runs on free ports in a temporary state directory and is torn down at the end.
Services named by ``CL_KAFKA_BOOTSTRAP``, ``CL_MLFLOW_URI`` or ``RAY_ADDRESS`` are reused
instead of started (then topics get a ``cltest`` prefix, so a real cluster's are untouched).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def stack_env(state_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Settings for a private local stack on free ports; services named in ``environ`` are reused."""
    from infra._private.process import free_port

    environ = dict(os.environ if environ is None else environ)
    ports = ["SERVE_PORT"]
    if not environ.get("CL_KAFKA_BOOTSTRAP"):
        ports += ["KAFKA_PORT", "KAFKA_CONTROLLER_PORT"]
    if not environ.get("CL_MLFLOW_URI"):
        ports += ["MLFLOW_PORT"]
    if not environ.get("RAY_ADDRESS"):
        ports += ["RAY_PORT", "RAY_DASHBOARD_PORT", "RAY_METRICS_PORT"]
    env = {f"CL_{name}": str(free_port()) for name in ports}
    env.update(CL_STATE_DIR=str(state_dir), CL_CACHE_DIR=str(REPO / ".cache"), CL_KAFKA_TOPIC_PREFIX="cltest")
    # Auth is on by default; tests of other features call the API without keys, and the
    # tests of access control (tests/serve/test_access.py) turn it back on.
    env.setdefault("CL_AUTH_ENABLED", environ.get("CL_AUTH_ENABLED", "false"))
    return env


@pytest.fixture(scope="session")
def stack_environ(tmp_path_factory) -> dict[str, str]:
    """The full environment (os.environ + the stack's CL_* settings) for CLI subprocesses."""
    return {**os.environ, **stack_env(tmp_path_factory.mktemp("stack"))}


@pytest.fixture(scope="session")
def stack(stack_environ):
    """The running stack's ``Config``; everything it started is stopped after the session."""
    from cl.config import load_config
    from infra.stack import down, up

    config = load_config(path=None, env=stack_environ)
    try:
        up(config, say=lambda line: print(f"[stack] {line}", file=sys.stderr))
        yield config
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # a driver left connected to a stopped cluster kills its process after 60 s
        down(config, say=lambda line: print(f"[stack] {line}", file=sys.stderr))


@pytest.fixture(scope="session")
def cl_command():
    """Run the real ``cl`` console command: ``cl_command(args, env) -> CompletedProcess``."""
    import subprocess

    cl_bin = Path(sys.executable).with_name("cl")

    def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(cl_bin), *args], env=env, capture_output=True, text=True, timeout=timeout)

    return run
