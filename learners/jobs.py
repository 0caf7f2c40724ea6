"""Submit learners to the Ray cluster as jobs (what ``cl learn`` does), with the service's config."""

from __future__ import annotations

import time
from pathlib import Path

from cl.config import Config

__all__ = ["submit_learner", "write_job_config"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_job_config(config: Config) -> Path:
    """Write the config, with absolute paths, where a job can read it (``CL_CONFIG``)."""
    values = config.to_dict()
    values["state_dir"] = str(config.state_dir.resolve())
    values["cache_dir"] = str(config.cache_dir.resolve())
    path = config.state_dir.resolve() / "job-config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Config.from_dict(values).to_toml())
    return path


def submit_learner(config: Config, *, max_events: int | None = None, idle_exit_s: float | None = None) -> str:
    """Start ``python -m learners.online`` as a Ray job; returns its submission id.

    A learner already running for this app is left alone and its id returned: two learners on
    one consumer group would each publish versions from half the stream.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(config.ray.dashboard_url)
    prefix = f"{config.app}-learner-"
    for job in client.list_jobs():
        if (job.submission_id or "").startswith(prefix) and job.status in (JobStatus.PENDING, JobStatus.RUNNING):
            return job.submission_id
    args = ["python", "-m", "learners.online"]
    if max_events is not None:
        args += ["--max-events", str(max_events)]
    if idle_exit_s is not None:
        args += ["--idle-exit", str(idle_exit_s)]
    return client.submit_job(
        entrypoint=" ".join(args),
        submission_id=f"{prefix}{int(time.time())}",
        runtime_env={"env_vars": {"CL_CONFIG": str(write_job_config(config)), "PYTHONPATH": str(REPO_ROOT)}},
    )
