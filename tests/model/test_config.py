"""ModelConfig: presets, validation reporting every problem, dict round trip."""

from __future__ import annotations

import pytest

from cl.model import LORA_TARGETS, PRESETS, ModelConfig, ModelConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid(name: str) -> None:
    cfg = ModelConfig.preset(name)
    assert cfg.d_model % cfg.n_heads == 0
    assert cfg.top_k <= cfg.n_experts


def test_tiny_is_the_default_and_small() -> None:
    cfg = ModelConfig()
    assert cfg == ModelConfig.preset("tiny")
    assert cfg.n_layers <= 2 and cfg.d_model <= 64 and cfg.n_experts == 4


def test_preset_overrides_apply() -> None:
    cfg = ModelConfig.preset("small", n_labels=7, lora_rank=2)
    assert (cfg.n_labels, cfg.lora_rank, cfg.d_model) == (7, 2, 256)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ModelConfigError) as info:
        ModelConfig(
            d_model=30,
            n_heads=4,
            top_k=9,
            pool="max",
            lora_targets=("q", "ffn"),
            balance_rate=-1.0,
            sliding_window=0,
            router_score="relu",
            n_labels=0,
        )
    err = info.value
    assert isinstance(err, ValueError)
    text = str(err)
    for field in (
        "d_model",
        "top_k",
        "pool",
        "lora_targets",
        "balance_rate",
        "sliding_window",
        "router_score",
        "n_labels",
    ):
        assert field in text, f"{field} missing from:\n{text}"
    assert len(err.problems) == 8
    assert "'ffn'" in text  # names the bad target and lists the valid ones
    assert str(LORA_TARGETS) in text


def test_odd_head_dim_is_rejected_with_fix() -> None:
    with pytest.raises(ModelConfigError, match="head_dim.*odd.*RoPE"):
        ModelConfig(d_model=30, n_heads=2)


def test_small_vocab_is_rejected() -> None:
    with pytest.raises(ModelConfigError, match="vocab_size=100.*>= 260"):
        ModelConfig(vocab_size=100)


def test_wrong_types_are_reported() -> None:
    with pytest.raises(ModelConfigError) as info:
        ModelConfig(n_layers="2", shared_expert="yes")  # type: ignore[arg-type]
    assert "n_layers='2' must be an int" in str(info.value)
    assert "shared_expert='yes' must be True or False" in str(info.value)


def test_unknown_preset_and_unknown_field() -> None:
    with pytest.raises(ModelConfigError, match="preset='huge' is unknown"):
        ModelConfig.preset("huge")
    with pytest.raises(ModelConfigError, match="'d_modle' is not a ModelConfig field"):
        ModelConfig.from_dict({"d_modle": 3})


def test_dict_round_trip_and_list_targets() -> None:
    cfg = ModelConfig.preset("tiny", lora_targets=["q", "v"], sliding_window=16)
    assert cfg.lora_targets == ("q", "v")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.has_lora("q") and not cfg.has_lora("router")
    assert not cfg.replace(lora_rank=0).has_lora("q")
