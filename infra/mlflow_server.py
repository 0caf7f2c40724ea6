"""The MLflow tracking server and model registry: sqlite backend, local artifact store.

Run as ``mlflow server`` from the same virtual environment, so the client and server versions
match. With ``mlflow.uri`` set, nothing is started and that server is used.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from cl.config import Config
from infra._private.process import read_pid, require_free_port, start_detached, wait_until
from infra.component import ComponentStatus, LocalService


def _get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except OSError:
        return None


class MLflowServer(LocalService):
    """Manages the local MLflow server, or checks the one named by ``mlflow.uri``."""

    name = "mlflow"
    external_fix = "the server in CL_MLFLOW_URI does not answer; check the URL or unset it to run a local one"

    def __init__(self, config: Config):
        super().__init__(config, managed=config.mlflow.managed, address=config.mlflow.tracking_uri)
        self.mlflow = config.mlflow

    def start(self) -> None:
        if not self.managed or read_pid(self.pid_file) is not None:
            return
        require_free_port(self.mlflow.host, self.mlflow.port, "MLflow", "CL_MLFLOW_PORT")
        self.dir.mkdir(parents=True, exist_ok=True)
        db = (self.dir / "mlflow.db").resolve()
        artifacts = (self.dir / "artifacts").resolve()
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            artifacts.as_uri(),
            "--host",
            self.mlflow.host,
            "--port",
            str(self.mlflow.port),
            "--workers",
            "1",
        ]
        start_detached(argv, self.log_file, self.pid_file)

    def wait_ready(self, timeout: float = 120.0) -> None:
        wait_until(
            lambda: _get(f"{self.mlflow.tracking_uri}/health") is not None,
            what=f"MLflow at {self.mlflow.tracking_uri}",
            timeout=timeout,
            pid_file=self.pid_file if self.managed else None,
            log_file=self.log_file if self.managed else None,
            fix=self.wait_fix(),
        )

    def version(self) -> str:
        return (_get(f"{self.mlflow.tracking_uri}/version") or "").strip()

    def status(self) -> ComponentStatus:
        healthy = self.running() and _get(f"{self.mlflow.tracking_uri}/health") is not None
        return self.make_status(healthy, self.version() if healthy else "")
