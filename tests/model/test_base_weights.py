"""A trained base saved as safetensors builds the same model everywhere: its router bias too."""

from __future__ import annotations

import dataclasses

import torch

from cl.config import ModelSection
from cl.learning.base_training import train_base
from cl.learning.example import Example
from cl.model.base_model import BASE_BIAS, base_state, build_base_model, save_base_weights


def _examples(n: int, section: ModelSection) -> list[Example]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, section.n_features, generator=g)
    labels = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return [
        Example(f"e{i}", f"r{i}", "predict", "label", features=tuple(x[i].tolist()), target=int(labels[i]))
        for i in range(n)
    ]


def test_a_trained_base_rebuilds_exactly_with_its_bias_row_for_any_number_of_slots(tmp_path):
    section = ModelSection(preset="tiny", seed=1, n_features=6, n_labels=4, lora_rank=4)
    trained = build_base_model(section)
    train_base(trained, _examples(96, section), epochs=2, batch_size=32, say=lambda line: None)
    biases = [row for k, row in base_state(trained).items() if k.endswith(BASE_BIAS)]
    assert biases and any(row.abs().sum() > 0 for row in biases), "training did not move the base's routing bias"

    path = save_base_weights(trained, tmp_path / "base.safetensors")
    probe = torch.randn(16, section.n_features, generator=torch.Generator().manual_seed(9))
    want = trained(features=probe, adapter_ids=torch.full((16,), -1), head="classify")
    for slots in (1, 3):
        rebuilt = build_base_model(dataclasses.replace(section, base_weights=str(path)), n_adapter_slots=slots)
        got = rebuilt(features=probe, adapter_ids=torch.full((16,), -1), head="classify")
        torch.testing.assert_close(got, want)
        fresh = rebuilt(features=probe, adapter_ids=torch.zeros(16, dtype=torch.long), head="classify")
        torch.testing.assert_close(fresh, want)  # an empty adapter slot starts from the base, bias included
