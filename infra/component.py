"""What every local service manager (Kafka, MLflow, Ray) offers the stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
