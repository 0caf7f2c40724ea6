"""The local stack as one thing: bring every part up, check it, take it down.

Each part is started only when the config does not point at an existing service of its kind.
"""

from __future__ import annotations

from typing import Callable

from cl.config import Config
from infra.component import Component, ComponentStatus
from infra.kafka_broker import KafkaBroker
from infra.mlflow_server import MLflowServer
from infra.ray_head import RayHead

__all__ = ["components", "up", "down", "status"]


def components(config: Config) -> list[Component]:
    """The stack's parts, in start-up order."""
    return [KafkaBroker(config), MLflowServer(config), RayHead(config)]


def up(config: Config, say: Callable[[str], None] = print) -> list[ComponentStatus]:
    """Start what is missing, wait until every part answers, create the topics.

    Idempotent: parts already running are left alone. Processes are launched first and
    awaited afterwards, so their start-ups overlap.

    Raises:
        StackError: naming the part that failed and what to do.
    """
    parts = components(config)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if part.managed:
            say(f"starting {part.name} ...")
        part.start()
    for part in parts:
        part.wait_ready()
        say(f"{part.name} is up")
    created = KafkaBroker(config).create_topics()
    if created:
        say(f"created topics: {', '.join(created)}")
    return [part.status() for part in parts]


def down(config: Config, say: Callable[[str], None] = print) -> None:
    """Stop the parts this stack started (external services are left alone), in reverse order."""
    for part in reversed(components(config)):
        if part.managed:
            part.stop()
            say(f"{part.name} stopped")


def status(config: Config) -> list[ComponentStatus]:
    return [part.status() for part in components(config)]
