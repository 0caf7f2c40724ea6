"""A local Ray head node with the dashboard and job server on a known port.

Started as ``ray start --head --block`` in its own process group, so stopping it stops exactly
this cluster's processes (``ray stop`` would stop every Ray cluster on the machine). With
``ray.address`` (``RAY_ADDRESS``) set, nothing is started and that cluster is used.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from cl.config import Config
from infra._private.process import free_port, read_pid, require_free_port, start_detached, wait_until
from infra.component import ComponentStatus, LocalService

_SIDE_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
)


def _version(dashboard_url: str) -> str | None:
    """The Ray version the job server reports, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{dashboard_url}/api/version", timeout=2.0) as response:
            return json.loads(response.read().decode()).get("ray_version", "?")
    except urllib.error.HTTPError as e:
        return "? (token auth)" if e.code in (401, 403) else None  # it answers; Ray's own clients send the token
    except (OSError, ValueError):
        return None


class RayHead(LocalService):
    """Manages the local Ray head, or checks the cluster named by ``ray.address``."""

    name = "ray"
    external_fix = "the cluster in RAY_ADDRESS does not answer; check it (GCS host:port or dashboard URL) or unset it"

    def __init__(self, config: Config):
        super().__init__(
            config, managed=config.ray.managed, address=f"{config.ray.gcs_address} (jobs: {config.ray.dashboard_url})"
        )
        self.ray = config.ray

    def start(self) -> None:
        if not self.managed or read_pid(self.pid_file) is not None:
            return
        require_free_port(self.ray.host, self.ray.port, "Ray", "CL_RAY_PORT")
        require_free_port(self.ray.host, self.ray.dashboard_port, "Ray dashboard", "CL_RAY_DASHBOARD_PORT")
        require_free_port(self.ray.host, self.ray.metrics_port, "Ray metrics export", "CL_RAY_METRICS_PORT")
        self.dir.mkdir(parents=True, exist_ok=True)
        ray_bin = Path(sys.executable).with_name("ray")
        argv = [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={self.ray.host}",
            f"--port={self.ray.port}",
            "--include-dashboard=true",
            f"--dashboard-host={self.ray.host}",
            f"--dashboard-port={self.ray.dashboard_port}",
            f"--metrics-export-port={self.ray.metrics_port}",
            f"--num-cpus={self.ray.num_cpus}",
            f"--object-store-memory={self.ray.object_store_mb * 1024 * 1024}",
            # Ray's side ports default to fixed numbers (52365, 10001, ...): two clusters on one
            # machine (a developer's and the test suite's) would fight over them, and the loser's
            # job agent never starts. Free ones are picked for each start.
            *(f"--{flag}={free_port()}" for flag in _SIDE_PORTS),
            "--disable-usage-stats",
        ]
        # Jobs' `python` is this environment's, and the project root is on the workers' path,
        # so entrypoints and actors import our packages and their dependencies.
        root = str(Path(__file__).resolve().parents[1])
        env = {
            # Ray turns token auth on for any cluster started while ~/.ray/auth_token exists (a
            # plain ray.init() once writes it), which would make this loopback stack depend on
            # the home directory. It stays off unless RAY_AUTH_MODE says otherwise.
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
        }
        start_detached(argv, self.log_file, self.pid_file, env=env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        # The job server answers before the node's job agent has registered; until then a
        # submit fails with "No available agent". A no-op job proves `ray job submit` works.
        wait_until(
            lambda: _version(self.ray.dashboard_url) is not None and (not self.managed or self._accepts_jobs()),
            what=f"Ray job server at {self.ray.dashboard_url}",
            timeout=timeout,
            pid_file=self.pid_file if self.managed else None,
            log_file=self.log_file if self.managed else None,
            fix=self.wait_fix(),
        )

    def _accepts_jobs(self) -> bool:
        from ray.job_submission import JobSubmissionClient

        marker = self.dir / "accepts-jobs"
        if marker.exists() and marker.read_text() == str(read_pid(self.pid_file)):
            return True
        try:
            JobSubmissionClient(self.ray.dashboard_url).submit_job(
                entrypoint="python -c pass", submission_id=f"cl-up-check-{uuid.uuid4().hex[:8]}"
            )
        except (RuntimeError, ConnectionError, OSError):
            return False
        marker.write_text(str(read_pid(self.pid_file)))
        return True

    def status(self) -> ComponentStatus:
        version = _version(self.ray.dashboard_url) if self.running() else None
        return self.make_status(version is not None, version or "")
