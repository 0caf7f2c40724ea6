"""What a model replica does with each cl.events announcement (ModelReplica._handle), without Ray or Kafka."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cl.config import Config
from cl.events import LifecycleEvent
from cl.lifecycle import DriftDetected, Promoted, RolledBack, VersionPublished
from serve.replica import ModelReplica


class Server:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_published(self, version: str, base_version: str | None = None) -> bool:
        self.calls.append(("on_published", version, base_version))
        return False

    def refresh(self) -> str:
        self.calls.append(("refresh",))
        return "base"


def handle(event: LifecycleEvent, *, serve_new_versions: bool = True) -> list[tuple]:
    config = Config.from_dict({"mlflow": {"model_name": "mine"}, "serve": {"serve_new_versions": serve_new_versions}})
    replica = SimpleNamespace(config=config, server=Server())
    ModelReplica.func_or_class._handle(replica, event)
    return replica.server.calls


def test_a_published_version_of_this_model_is_prefetched_with_its_base():
    event = VersionPublished(version="7", model_name="mine", base_version="seed-0").to_event()
    assert handle(event) == [("on_published", "7", "seed-0")]
    minimal = LifecycleEvent(type="version_published", payload={"version": 8})  # names no model, no base
    assert handle(minimal) == [("on_published", "8", None)]


def test_another_models_news_and_other_types_are_ignored():
    assert handle(VersionPublished(version="7", model_name="theirs").to_event()) == []
    assert handle(Promoted(version="7", model_name="theirs").to_event(), serve_new_versions=False) == []
    assert handle(DriftDetected(events_seen=3).to_event()) == []
    assert handle(LifecycleEvent(type="audit", payload={"model_name": "mine"})) == []


@pytest.mark.parametrize("cls", [Promoted, RolledBack])
def test_a_rollout_decision_refreshes_only_a_replica_that_follows_the_champion(cls):
    event = cls(action="promote", version="7", model_name="mine").to_event()
    assert handle(event, serve_new_versions=False) == [("refresh",)]
    assert handle(event, serve_new_versions=True) == []


def test_an_announcement_without_a_version_is_skipped_with_a_warning(caplog):
    event = LifecycleEvent(type="version_published", payload={"model_name": "mine"})
    with caplog.at_level("WARNING", logger="ray.serve"):
        assert handle(event) == []
    assert "payload.version: field required" in caplog.text
