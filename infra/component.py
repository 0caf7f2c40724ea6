"""What every local service manager (Kafka, MLflow, Ray) offers the stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cl.config import Config
from infra._private.process import read_pid, stop_process


@dataclass(frozen=True)
class ComponentStatus:
    """One line of ``cl status``."""

    name: str
    address: str
    healthy: bool
    version: str = ""
    managed: bool = True
    detail: str = ""
    fix: str = ""

    def line(self) -> str:
        mark = "up  " if self.healthy else "DOWN"
        where = "local" if self.managed else "external"
        text = f"{mark} {self.name:<7} {self.address:<28} {self.version:<10} ({where})"
        if self.detail:
            text += f"  {self.detail}"
        if not self.healthy and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


class Component(Protocol):
    """A service the stack can start (when managed), wait for, check and stop."""

    name: str

    @property
    def managed(self) -> bool: ...

    def start(self) -> None:
        """Launch the process if managed and not already running; returns without waiting."""

    def wait_ready(self) -> None:
        """Block until the service answers; raise StackError naming the fix otherwise."""

    def status(self) -> ComponentStatus: ...

    def stop(self) -> None: ...


class LocalService:
    """What the three managers share: a state folder, a pid file, a log, and the status line.

    Args:
        config: the service config.
        managed: whether ``cl up`` runs this service (False: an external one is configured).
        address: where it answers, for ``cl status``.
    """

    name = ""
    external_fix = ""  # what to check when an external service does not answer

    def __init__(self, config: Config, *, managed: bool, address: str):
        self.config = config
        self.managed = managed
        self.address = address
        self.dir: Path = config.state_dir / self.name
        self.pid_file = self.dir / f"{self.name}.pid"
        self.log_file = self.dir / f"{self.name}.log"

    def running(self) -> bool:
        """True when it is external (we cannot see its process) or our process is alive."""
        return not self.managed or read_pid(self.pid_file) is not None

    def wait_fix(self) -> str:
        return f"see {self.log_file}; `cl down && cl up` restarts it" if self.managed else self.external_fix

    def make_status(self, healthy: bool, version: str = "") -> ComponentStatus:
        if healthy:
            fix = ""
        elif self.managed:
            fix = f"run `cl up` to start it (its log: {self.log_file})"
        else:
            fix = self.external_fix
        return ComponentStatus(
            self.name, self.address, healthy, version, self.managed, "" if healthy else "not answering", fix
        )

    def stop(self) -> None:
        if self.managed:
            stop_process(self.pid_file, timeout=30)
