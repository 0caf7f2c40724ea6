"""LoRA adapter bank: zero init, merging, safetensors, mixed batches, frozen base, size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cl.model import LoRALinear, ModelConfig, MoETransformer
from cl.model.adapters import banked_tensors


def test_fresh_adapters_give_exactly_the_base(model: MoETransformer, cfg: ModelConfig, tokens) -> None:
    t, f = tokens(4, 8), torch.randn(4, cfg.n_features)
    ids = torch.tensor([0, 1, 2, 3])
    assert torch.equal(model(tokens=t, adapter_ids=ids), model(tokens=t))
    assert torch.equal(model(tokens=t, adapter_ids=ids, head="lm"), model(tokens=t, head="lm"))
    assert torch.equal(model(features=f, adapter_ids=ids), model(features=f))


def test_random_adapter_changes_the_output(model: MoETransformer, cfg: ModelConfig, randomize_adapter) -> None:
    f = torch.randn(3, cfg.n_features)
    base = model(features=f)
    randomize_adapter(model, 2)
    ids = torch.full((3,), 2)
    assert (model(features=f, adapter_ids=ids) - base).abs().amax() > 1e-3
    assert torch.equal(model(features=f, adapter_ids=torch.full((3,), 1)), base)  # other slots untouched


def test_merged_equals_unmerged(model: MoETransformer, cfg: ModelConfig, randomize_adapter, tokens) -> None:
    randomize_adapter(model, 1)
    t, f = tokens(3, 7, seed=2), torch.randn(3, cfg.n_features)
    ids = torch.full((3,), 1)
    before_cls = model(tokens=t, adapter_ids=ids)
    before_lm = model(tokens=t, adapter_ids=ids, head="lm")
    before_feat = model(features=f, adapter_ids=ids)
    base_before = model(features=f)
    model.merge_adapter(1)
    assert (model(features=f) - base_before).abs().amax() > 1e-3  # the base really changed
    torch.testing.assert_close(model(tokens=t), before_cls, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(tokens=t, head="lm"), before_lm, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(features=f), before_feat, rtol=1e-4, atol=1e-5)
    # The merged slot now adds nothing on top of the new base.
    torch.testing.assert_close(model(features=f, adapter_ids=ids), model(features=f), rtol=0, atol=1e-6)


def test_lora_linear_merge_matches_dense_delta() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(7, 5, n_slots=3, rank=2, alpha=6.0, bias=True)
    with torch.no_grad():
        layer.lora_b.normal_()
    x, ids = torch.randn(4, 7), torch.full((4,), 2)
    expected = x @ (layer.weight + 3.0 * layer.lora_b[2] @ layer.lora_a[2]).T + layer.bias
    torch.testing.assert_close(layer(x, ids), expected)
    layer.merge_adapter(2)
    torch.testing.assert_close(layer(x, None), expected)


def test_state_round_trip_through_safetensors(
    model: MoETransformer, cfg: ModelConfig, randomize_adapter, tmp_path: Path
) -> None:
    randomize_adapter(model, 0)
    f = torch.randn(3, cfg.n_features)
    expected = model(features=f, adapter_ids=torch.zeros(3, dtype=torch.long))
    path = tmp_path / "adapter.safetensors"
    model.save_adapter(path, 0, metadata={"run_id": "abc"})

    torch.manual_seed(99)  # a different base would give different outputs, so reuse the base
    other = MoETransformer(cfg).eval()
    other.load_state_dict(model.state_dict())
    other.reset_adapter(0)
    other.reset_adapter(3)
    meta = other.load_adapter(path, 3)
    assert meta["run_id"] == "abc" and meta["format"] == "cl-adapter/1"
    torch.testing.assert_close(other(features=f, adapter_ids=torch.full((3,), 3)), expected)
    for key, value in model.adapter_state(0).items():
        assert torch.equal(other.adapter_state(3)[key], value), key


def test_adapter_state_is_a_copy_with_one_slot(model: MoETransformer, cfg: ModelConfig) -> None:
    state = model.adapter_state(1)
    banks = banked_tensors(model)
    assert set(state) == set(banks)
    for key, value in state.items():
        assert value.shape == banks[key].shape[1:]
    assert any(k.endswith("attn.q.lora_a") for k in state)
    assert any(k.endswith("moe.a13") for k in state)
    assert any(k.endswith("router.proj.lora_b") for k in state)
    assert any(k.endswith("router.balance_bias") for k in state)
    assert "classify_head.lora_a" in state and "lm_head.lora_b" in state
    next(iter(state.values())).add_(1.0)  # mutating the copy must not touch the model
    assert torch.equal(model.adapter_state(1)[next(iter(state))], next(iter(banks.values()))[1])


def test_shape_mismatch_names_the_key(model: MoETransformer, tmp_path: Path) -> None:
    state = model.adapter_state(0)
    state["blocks.0.attn.q.lora_a"] = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.q\.lora_a: expected shape \(4, 32\), got \(5, 5\)"):
        model.load_adapter_state(1, state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"format": "cl-adapter/1", "lora_rank": "4", "lora_alpha": "8.0"})
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.q\.lora_a"):
        model.load_adapter(path, 1)


def test_missing_and_unexpected_keys_are_listed(model: MoETransformer) -> None:
    state = model.adapter_state(0)
    del state["lm_head.lora_b"]
    state["bogus"] = torch.randn(2)
    with pytest.raises(ValueError, match=r"missing keys \['lm_head.lora_b'\].*unexpected keys \['bogus'\]"):
        model.load_adapter_state(0, state)


def test_rank_mismatch_is_rejected(model: MoETransformer, cfg: ModelConfig, tmp_path: Path) -> None:
    other = MoETransformer(cfg.replace(lora_rank=2, lora_alpha=8.0))
    path = tmp_path / "rank2.safetensors"
    other.save_adapter(path, 0)
    assert set(load_file(str(path))) == set(model.adapter_state(0))
    with pytest.raises(ValueError, match="lora_rank=2.*model has lora_rank=4"):
        model.load_adapter(path, 0)


def test_mixed_adapter_batch_equals_rows_run_alone(
    model: MoETransformer, cfg: ModelConfig, randomize_adapter, tokens
) -> None:
    for slot in (0, 1, 2):
        randomize_adapter(model, slot)
    ids = torch.tensor([0, 1, -1, 2, 1])
    t, f = tokens(5, 6, seed=9), torch.randn(5, cfg.n_features)
    outs = {
        "cls": model(tokens=t, adapter_ids=ids),
        "lm": model(tokens=t, adapter_ids=ids, head="lm"),
        "feat": model(features=f, adapter_ids=ids),
    }
    for i in range(5):
        one = ids[i : i + 1]
        torch.testing.assert_close(
            model(tokens=t[i : i + 1], adapter_ids=one), outs["cls"][i : i + 1], rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            model(tokens=t[i : i + 1], adapter_ids=one, head="lm"), outs["lm"][i : i + 1], rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            model(features=f[i : i + 1], adapter_ids=one), outs["feat"][i : i + 1], rtol=1e-4, atol=1e-5
        )
    # and the rows really differ by adapter (else the test proves nothing)
    assert (outs["feat"][1] - model(features=f[1:2])[0]).abs().amax() > 1e-3


def test_gradients_reach_only_adapter_parameters(model: MoETransformer, cfg: ModelConfig, tokens) -> None:
    model.train()
    trainable = {id(p) for p in model.adapter_parameters()}
    assert trainable and all(p.requires_grad == (id(p) in trainable) for p in model.parameters())
    ids = torch.zeros(4, dtype=torch.long)
    loss = model(features=torch.randn(4, cfg.n_features), adapter_ids=ids).logsumexp(-1).mean()
    loss = loss + model(tokens=tokens(4, 6), adapter_ids=ids, head="lm").logsumexp(-1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, name
            assert torch.count_nonzero(p.grad[1:]) == 0, f"{name}: a slot other than 0 got gradient"
        else:
            assert p.grad is None, f"base parameter {name} got a gradient"
    b_grads = [p.grad[0].abs().sum() for n, p in model.named_parameters() if n.endswith(("lora_b", "b13", "b2"))]
    assert all(g > 0 for g in b_grads)  # every B of slot 0 learns (A's gradient is 0 while B is 0)


def test_training_step_changes_slot_but_not_base(model: MoETransformer, cfg: ModelConfig) -> None:
    f = torch.randn(4, cfg.n_features)
    base_before = model(features=f)
    opt = torch.optim.SGD(model.adapter_parameters(), lr=1.0)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(features=f, adapter_ids=torch.zeros(4, dtype=torch.long))[:, 0].sum().backward()
        opt.step()
    model.eval()
    assert torch.equal(model(features=f), base_before)
    assert (model(features=f, adapter_ids=torch.zeros(4, dtype=torch.long)) - base_before).abs().amax() > 1e-4


def test_adapter_fraction_is_small_at_default_rank() -> None:
    with torch.device("meta"):
        small = MoETransformer(ModelConfig.preset("small"))
        base = MoETransformer(ModelConfig.preset("base", n_layers=2))
    assert 0 < small.adapter_fraction() < 0.05
    assert 0 < base.adapter_fraction() < 0.03


def test_adapter_fraction_counts_rank(cfg: ModelConfig) -> None:
    small = MoETransformer(cfg.replace(lora_rank=2)).adapter_fraction()
    big = MoETransformer(cfg.replace(lora_rank=8)).adapter_fraction()
    assert 3.5 < big / small < 4.5


def test_bad_slot_numbers(model: MoETransformer) -> None:
    for bad in (-1, 4, 1.0):
        with pytest.raises(ValueError, match=r"slot must be an int in \[0, 4\)"):
            model.adapter_state(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slot must be"):
        model.merge_adapter(7)


def test_lora_targets_subset(cfg: ModelConfig) -> None:
    m = MoETransformer(cfg.replace(lora_targets=("q", "v")))
    keys = set(m.adapter_state(0))
    assert any(k.endswith("attn.q.lora_a") for k in keys) and not any(k.endswith("moe.a13") for k in keys)
    no_lora = MoETransformer(cfg.replace(lora_rank=0))
    assert set(no_lora.adapter_state(0)) == {f"blocks.{i}.moe.router.balance_bias" for i in range(cfg.n_layers)}
