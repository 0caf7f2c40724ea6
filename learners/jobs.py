"""Submit learners and retrains to the Ray cluster as jobs (``cl learn``, ``cl retrain``), with the service's config."""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

from cl.config import Config

__all__ = ["follow_job", "submit_learner", "submit_retrain", "write_job_config"]

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
    args = []
    if max_events is not None:
        args += ["--max-events", str(max_events)]
    if idle_exit_s is not None:
        args += ["--idle-exit", str(idle_exit_s)]
    return _submit(client, config, "learners.online", args, f"{prefix}{int(time.time())}")


def submit_retrain(config: Config, args: list[str]) -> str:
    """Start ``python -m learners.retrain <args>`` as a Ray job; returns its submission id."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(config.ray.dashboard_url)
    return _submit(client, config, "learners.retrain", args, f"{config.app}-retrain-{int(time.time() * 1000)}")


def _submit(client, config: Config, module: str, args: list[str], submission_id: str) -> str:  # noqa: ANN001
    return client.submit_job(
        entrypoint=" ".join(["python", "-m", module, *(shlex.quote(a) for a in args)]),
        submission_id=submission_id,
        runtime_env={"env_vars": {"CL_CONFIG": str(write_job_config(config)), "PYTHONPATH": str(REPO_ROOT)}},
    )


def follow_job(config: Config, submission_id: str, say=print) -> str:  # noqa: ANN001
    """Print the job's log lines as they come (Ray streams them) until it ends; returns its final
    status (``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(config.ray.dashboard_url)

    async def tail() -> None:
        pending = ""  # a chunk may end mid-line
        async for chunk in client.tail_job_logs(submission_id):
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                say(line)
        if pending:
            say(pending)

    asyncio.run(tail())  # the stream closes when the job ends
    while (status := client.get_job_status(submission_id)) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        time.sleep(0.2)
    return str(status.value)
