"""The adapter registry against the real MLflow server: publish, load, aliases, checksums."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from cl.registry import AdapterIntegrityError, AdapterRegistry, VersionTags

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack) -> AdapterRegistry:
    return AdapterRegistry(stack.mlflow.tracking_uri, f"{stack.mlflow.model_name}-{uuid.uuid4().hex[:8]}")


def _adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.attn.q.lora_a": torch.randn(1, 4, 32, generator=g),
        "blocks.0.attn.q.lora_b": torch.randn(1, 32, 4, generator=g),
    }


def test_publish_load_round_trip_with_state_tags_and_metrics(registry: AdapterRegistry):
    assert registry.latest_version() is None
    run_id = registry.start_run("learner-test", params={"lr": 0.01})
    state = {"optimizer": {"step": torch.tensor(3.0)}, "offsets": {"cl.feedback:0": 12}, "events_seen": 40}
    v1 = registry.publish(
        _adapter(1),
        tags=VersionTags(events_seen=40, parent_version="", source="online"),
        metrics={"loss": 0.7},
        learner_state=state,
        run_id=run_id,
        step=40,
    )
    v2 = registry.publish(
        _adapter(2), tags={"events_seen": "80", "parent_version": v1}, run_id=run_id, step=80
    )  # a dict too
    assert (v1, v2) == ("1", "2") and registry.latest_version() == "2"

    loaded = registry.load_adapter(v1)
    for key, tensor in _adapter(1).items():
        assert torch.equal(loaded[key], tensor)
    assert registry.load_learner_state(v1)["offsets"] == {"cl.feedback:0": 12}
    assert registry.load_learner_state(v2) is None
    info = registry.get_version(v2)
    assert info.tags["parent_version"] == "1" and len(info.tags["adapter_sha256"]) == 64
    assert registry.get_version(v1).tags == {
        "events_seen": "40",
        "parent_version": "",
        "source": "online",
        "adapter_sha256": registry.get_version(v1).version_tags.adapter_sha256,
    }
    assert info.version_tags.events_seen == 80 and info.version_tags.line == "online"
    assert registry.latest_version(source="online") == "2" and registry.latest_version(source="retrain") is None
    history = registry.client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(40, 0.7)]


def test_aliases_move_and_show_in_listing(registry: AdapterRegistry):
    v1 = registry.publish(_adapter(1), tags={})
    v2 = registry.publish(_adapter(2), tags={})
    registry.set_alias("champion", v1)
    registry.set_alias("challenger", v2)
    assert registry.alias_version("champion") == v1
    listing = {v.version: v.aliases for v in registry.list_versions()}
    assert listing == {v1: ("champion",), v2: ("challenger",)}
    registry.set_alias("champion", v2)
    registry.delete_alias("challenger")
    assert registry.alias_version("champion") == v2 and registry.alias_version("challenger") is None


def test_a_corrupted_artifact_is_refused(registry: AdapterRegistry, tmp_path: Path):
    version = registry.publish(_adapter(3), tags={})
    source = registry.client.get_model_version(registry.model_name, version).source
    run_id, path = source.removeprefix("runs:/").split("/", 1)
    # Replace the stored artifact on the server with different bytes under the same name.
    from safetensors.torch import save_file

    save_file(_adapter(4), tmp_path / "adapter.safetensors")
    registry.client.log_artifact(run_id, str(tmp_path / "adapter.safetensors"), artifact_path=path)
    with pytest.raises(AdapterIntegrityError, match="checksum"):
        registry.load_adapter(version)


def test_unknown_version_is_a_key_error(registry: AdapterRegistry):
    registry.publish(_adapter(4), tags={})
    with pytest.raises(KeyError, match="no version '99'"):
        registry.load_adapter("99")
