"""`cl export --format peft` and `cl import-adapter` against the real MLflow: out and back in as a new version."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import torch

from cl.config import load_config
from cl.model.adapters import adapter_state, banked_tensors
from cl.model.base_model import build_base_model
from cl.registry import AdapterRegistry, VersionTags
from cl.testing.tiny_checkpoints import build_tiny_checkpoint

pytestmark = pytest.mark.integration


def test_export_a_version_to_peft_and_import_it_back(stack, stack_environ, cl_command, tmp_path: Path) -> None:
    checkpoint = build_tiny_checkpoint("qwen3_moe", tmp_path / "ckpt")
    env = {
        **stack_environ,
        "CL_MODEL_CHECKPOINT": str(checkpoint),
        "CL_MLFLOW_MODEL_NAME": f"peft{uuid.uuid4().hex[:8]}-adapter",
    }
    config = load_config(path=None, env=env)
    model = build_base_model(config.model, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, bank in banked_tensors(model).items():
            if not (key.startswith("classify_head") or key.endswith("balance_bias")):
                bank[0].copy_(torch.randn(bank[0].shape, generator=g) * 0.3)
    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    original = adapter_state(model, 0)
    version = registry.publish(original, tags=VersionTags(base_version=config.model.base_version, source="online"))

    exported = cl_command(["export", version, "--format", "peft", str(tmp_path / "peft")], env)
    assert exported.returncode == 0, exported.stderr
    config_json = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (
        config_json["base_model_name_or_path"] == str(checkpoint.resolve())
        and "gate_proj" in config_json["target_modules"]
    )

    imported = cl_command(["import-adapter", str(tmp_path / "peft")], env)
    assert imported.returncode == 0, imported.stderr
    new = re.search(r"as version (\d+)", imported.stdout).group(1)
    info = registry.get_version(new)
    assert info.version_tags.source == "import" and info.version_tags.base_version == config.model.base_version
    assert info.tags["imported_from"] == str((tmp_path / "peft").resolve())
    back = registry.load_adapter(new)
    for key, value in original.items():
        if key != "classify_head.lora_a":  # not in PEFT: a fresh A (its B is zero, as it was)
            assert torch.equal(back[key], value), key

    with torch.no_grad():  # a classify head LoRA: PEFT cannot hold it
        banked_tensors(model)["classify_head.lora_b"][0].fill_(0.5)
    refused_version = registry.publish(
        adapter_state(model, 0), tags=VersionTags(base_version=config.model.base_version)
    )
    refused = cl_command(["export", refused_version, "--format", "peft", str(tmp_path / "refused")], env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "classify_head" in refused.stderr and "--drop-unsupported" in refused.stderr
