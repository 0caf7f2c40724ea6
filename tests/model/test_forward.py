"""MoETransformer forward: shapes, masking, padding, pooling, both input kinds."""

from __future__ import annotations

import pytest
import torch

from cl.model import ByteTokenizer, ModelConfig, MoETransformer


def test_output_shapes(model: MoETransformer, cfg: ModelConfig, tokens) -> None:
    t = tokens(3, 7)
    assert model(tokens=t).shape == (3, cfg.n_labels)
    assert model(tokens=t, head="lm").shape == (3, 7, cfg.vocab_size)
    f = torch.randn(5, cfg.n_features)
    out = model(features=f, adapter_ids=torch.tensor([0, 1, -1, 2, 3]))
    assert out.shape == (5, cfg.n_labels) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_causal_lm_ignores_future_tokens(model: MoETransformer, tokens) -> None:
    t = tokens(2, 10, seed=3)
    changed = t.clone()
    changed[:, 6] = (changed[:, 6] + 17) % 256
    a, b = model(tokens=t, head="lm"), model(tokens=changed, head="lm")
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert (a[:, 6:] - b[:, 6:]).abs().amax() > 1e-4  # the change does reach later positions


def test_classify_is_bidirectional(model: MoETransformer, tokens) -> None:
    t = tokens(2, 10, seed=4)
    changed = t.clone()
    changed[:, -1] = (changed[:, -1] + 17) % 256
    assert (model(tokens=t) - model(tokens=changed)).abs().amax() > 1e-5  # CLS sees the last token


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_right_padding_does_not_change_classification(pool: str, tokens) -> None:
    torch.manual_seed(0)
    m = MoETransformer(ModelConfig.preset("tiny", pool=pool)).eval()
    t = tokens(1, 6, seed=5)
    padded = torch.cat((t, torch.full((1, 4), ByteTokenizer.pad_id)), dim=1)
    torch.testing.assert_close(m(tokens=t), m(tokens=padded), rtol=0, atol=1e-5)


def test_left_padding_does_not_change_lm_logits(model: MoETransformer, tokens) -> None:
    t = tokens(1, 6, seed=6)
    padded = torch.cat((torch.full((1, 3), ByteTokenizer.pad_id), t), dim=1)
    torch.testing.assert_close(model(tokens=t, head="lm"), model(tokens=padded, head="lm")[:, 3:], rtol=0, atol=1e-5)


def test_sliding_window_limits_the_view(tokens) -> None:
    torch.manual_seed(0)
    m = MoETransformer(ModelConfig.preset("tiny", sliding_window=3, n_layers=1)).eval()
    t = tokens(1, 10, seed=7)
    changed = t.clone()
    changed[:, 2] = (changed[:, 2] + 9) % 256
    a, b = m(tokens=t, head="lm"), m(tokens=changed, head="lm")
    # One layer, window 3: position p sees p-2..p, so token 2 reaches positions 2..4 only.
    torch.testing.assert_close(a[:, 5:], b[:, 5:], rtol=0, atol=1e-6)
    assert (a[:, 2:5] - b[:, 2:5]).abs().amax() > 1e-4


def test_features_each_matter(model: MoETransformer, cfg: ModelConfig) -> None:
    f = torch.randn(4, cfg.n_features)
    base = model(features=f)
    for j in range(cfg.n_features):
        g = f.clone()
        g[:, j] += 1.5
        assert (model(features=g) - base).abs().amax() > 1e-5, f"feature {j} has no effect"


def test_rows_are_independent(model: MoETransformer, cfg: ModelConfig) -> None:
    f = torch.randn(3, cfg.n_features)
    whole = model(features=f)
    for i in range(3):
        torch.testing.assert_close(model(features=f[i : i + 1]), whole[i : i + 1], rtol=1e-5, atol=1e-6)


def test_text_only_model_and_int32_tokens(tokens) -> None:
    torch.manual_seed(0)
    m = MoETransformer(ModelConfig.preset("tiny", n_features=0, shared_expert=False)).eval()
    t = tokens(2, 5)
    torch.testing.assert_close(m(tokens=t.int()), m(tokens=t))


def test_sliding_window_does_not_hide_features_from_cls(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    m = MoETransformer(cfg.replace(sliding_window=2, n_layers=1)).eval()
    f = torch.randn(2, cfg.n_features)
    base = m(features=f)
    g = f.clone()
    g[:, -1] += 2.0  # the last feature is n_features positions away from CLS
    assert (m(features=g) - base).abs().amax() > 1e-5
