"""Every bad input raises ValueError saying what was expected and what came."""

from __future__ import annotations

import pytest
import torch

from cl.model import ByteTokenizer, ModelConfig, MoETransformer

PAD = ByteTokenizer.pad_id


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(tokens=torch.rand(2, 5)), r"tokens must be an integer tensor \(int64\), got dtype torch.float32"),
        (dict(tokens=torch.ones(5, dtype=torch.bool)), r"tokens must have shape \(B, T\), got shape \(5,\)"),
        (dict(tokens=torch.ones(2, 3, 4, dtype=torch.long)), r"shape \(B, T\), got shape \(2, 3, 4\)"),
        (dict(tokens=torch.zeros(2, 0, dtype=torch.long)), r"B >= 1 and T >= 1, got shape \(2, 0\)"),
        (dict(tokens=[[1, 2]]), r"tokens must be a torch.Tensor .* got list"),
        (dict(tokens=torch.tensor([[1, 260]])), r"token ids must lie in \[0, 260\).*got values in \[1, 260\]"),
        (dict(tokens=torch.tensor([[-3, 5]])), r"token ids must lie in \[0, 260\).*\[-3, 5\]"),
        (
            dict(tokens=torch.ones(1, 128, dtype=torch.long)),
            r"sequence length 128 is too long: classify adds a CLS token and max_seq_len=128, so give at most 127",
        ),
        (
            dict(tokens=torch.ones(1, 129, dtype=torch.long), head="lm"),
            r"sequence length 129 .* exceeds the limit 128 \(max_seq_len=128\)",
        ),
        (dict(features=torch.randn(2, 7)), r"features must have shape \(B, 8\) with B >= 1, got shape \(2, 7\)"),
        (dict(features=torch.randn(8)), r"features must have shape \(B, 8\).*got shape \(8,\)"),
        (dict(features=torch.ones(2, 8, dtype=torch.long)), r"floating-point tensor, got dtype torch.int64"),
        (dict(features=torch.tensor([[float("nan")] * 8])), r"features must be finite"),
        (dict(features=torch.randn(2, 8), head="lm"), r"head='lm' needs tokens="),
        (dict(tokens=torch.ones(1, 3, dtype=torch.long), features=torch.randn(1, 8)), r"exactly one of .*got both"),
        (dict(), r"exactly one of tokens= .*features= \(\(B, 8\) floats\), got neither"),
        (
            dict(tokens=torch.ones(1, 3, dtype=torch.long), head="regress"),
            r"head must be one of \('classify', 'lm'\), got 'regress'",
        ),
        (
            dict(features=torch.randn(2, 8), adapter_ids=torch.tensor([0, 4])),
            r"adapter_ids must lie in \[-1, 4\).*n_adapter_slots=4.*got values in \[0, 4\]",
        ),
        (dict(features=torch.randn(2, 8), adapter_ids=torch.tensor([-2, 0])), r"\[-1, 4\).*got values in \[-2, 0\]"),
        (
            dict(features=torch.randn(2, 8), adapter_ids=torch.tensor([0])),
            r"adapter_ids must have shape \(2,\), one per row, got \(1,\)",
        ),
        (
            dict(features=torch.randn(2, 8), adapter_ids=torch.tensor([0.0, 1.0])),
            r"adapter_ids must be an integer tensor \(int64\), got dtype torch.float32",
        ),
        (dict(features=torch.randn(2, 8), adapter_ids=[0, 1]), r"adapter_ids must be a torch.Tensor of shape \(2,\)"),
    ],
)
def test_forward_rejects(model: MoETransformer, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        model(**kwargs)


def test_features_on_a_text_only_model() -> None:
    m = MoETransformer(ModelConfig.preset("tiny", n_features=0))
    with pytest.raises(ValueError, match=r"takes no features \(config n_features=0\)"):
        m(features=torch.randn(1, 8))


def test_cache_misuse(model: MoETransformer, tokens) -> None:
    cache = model.new_cache(2, 6)
    with pytest.raises(ValueError, match="cache= only works with tokens= and head='lm'"):
        model(tokens=tokens(2, 3), cache=cache)
    with pytest.raises(ValueError, match="cache holds 2 rows but tokens have 3 rows"):
        model(tokens=tokens(3, 3), head="lm", cache=cache)
    model(tokens=tokens(2, 4), head="lm", cache=cache)
    with pytest.raises(ValueError, match=r"sequence length 7 \(cached 4 \+ new 3\) exceeds the limit 6"):
        model(tokens=tokens(2, 3), head="lm", cache=cache)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(max_new_tokens=0), r"max_new_tokens must be an int >= 1, got 0"),
        (dict(max_new_tokens=200), r"prompt length 3 \+ max_new_tokens 200 exceeds max_seq_len=128"),
        (dict(max_new_tokens=2, temperature=-1.0), r"temperature must be >= 0 .* got -1.0"),
        (dict(max_new_tokens=2, top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
        (dict(max_new_tokens=2, seed=1, generator=torch.Generator()), "seed= or generator=, not both"),
        (dict(max_new_tokens=2, adapter_ids=torch.tensor([9])), r"adapter_ids must lie in \[-1, 4\)"),
    ],
)
def test_generate_rejects(model: MoETransformer, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        model.generate(torch.tensor([[257, 104, 105]]), **kwargs)


def test_generate_rejects_right_padding(model: MoETransformer) -> None:
    with pytest.raises(ValueError, match="left-pad prompts"):
        model.generate(torch.tensor([[257, 104, PAD]]), max_new_tokens=2)
