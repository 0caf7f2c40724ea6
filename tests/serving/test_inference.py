"""Batched inference: mixed adapter versions in one batch; request checks that name the field."""

from __future__ import annotations

import pytest
import torch

from cl.model.base_model import build_base_model
from cl.serving.inference import (
    GenerateItem,
    InputError,
    Limits,
    PredictItem,
    check_generate,
    check_predict,
    generate_batch,
    predict_batch,
)
from tests.serving.conftest import random_adapter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(section):
    m = build_base_model(section, n_adapter_slots=3)
    template = m.adapter_state(0)
    for slot in range(3):
        m.load_adapter_state(slot, random_adapter(template, seed=slot + 1))
    return m


def _features(n: int, f: int, seed: int = 0) -> list[tuple[float, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(f, generator=g).tolist()) for _ in range(n)]


def test_mixed_version_batch_equals_one_version_at_a_time(model):
    f = model.config.n_features
    texts = ["hello", "a much longer sentence, padded differently", "", "ünïcödé ✓"]
    slots = [-1, 0, 1, 2, 0, -1, 2, 1]
    items = [PredictItem(features=x, slot=s) for x, s in zip(_features(4, f), slots[:4])]
    items += [PredictItem(text=t, slot=s) for t, s in zip(texts, slots[4:])]
    items = [items[i] for i in (0, 4, 1, 5, 2, 6, 3, 7)]  # interleave features and text

    batched = predict_batch(model, items)
    for version in sorted(set(slots)):
        rows = [i for i, it in enumerate(items) if it.slot == version]
        alone = predict_batch(model, [items[i] for i in rows])
        for i, single in zip(rows, alone):
            assert batched[i].label == single.label
            assert batched[i].probabilities == pytest.approx(single.probabilities, abs=1e-5)
    # ... and the versions really differ: the same input under each slot.
    x = items[0]
    per_slot = [predict_batch(model, [PredictItem(features=x.features, slot=s)])[0] for s in (-1, 0, 1, 2)]
    assert len({tuple(round(p, 4) for p in r.probabilities) for r in per_slot}) == 4
    for r in batched:
        assert len(r.probabilities) == model.config.n_labels
        assert sum(r.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert r.label == max(range(len(r.probabilities)), key=r.probabilities.__getitem__)


def test_greedy_generation_batch_equals_rows_alone(model):
    items = [
        GenerateItem(prompt="hi", slot=-1, max_new_tokens=6),
        GenerateItem(prompt="a longer prompt", slot=0, max_new_tokens=6),
        GenerateItem(prompt="x", slot=1, max_new_tokens=3),
        GenerateItem(prompt="hi", slot=2, max_new_tokens=6),
    ]
    batched = generate_batch(model, items)
    alone = [generate_batch(model, [it])[0] for it in items]
    assert batched == alone
    assert all(isinstance(t, str) for t in batched)
    assert len(items[2].prompt) and len(batched[2].encode("utf-8", "replace")) <= 3 * 4


def test_seeded_sampling_does_not_depend_on_the_batch(model):
    seeded = GenerateItem(prompt="once", slot=0, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=42)
    others = [GenerateItem(prompt=p, slot=1, max_new_tokens=8, temperature=1.0, top_p=0.9) for p in ("a", "bb")]
    assert generate_batch(model, [seeded])[0] == generate_batch(model, [others[0], seeded, others[1]])[1]


LIMITS = Limits(max_text_chars=50, max_new_tokens=16)


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        (PredictItem(), "text", "exactly one of 'text' or 'features'"),
        (PredictItem(text="a", features=(1.0,)), "text", "got both"),
        (PredictItem(features=(1.0, 2.0)), "features", "n_features=6; send exactly 6 numbers"),
        (PredictItem(features=(1.0, 2.0, float("nan"), 0.0, 0.0, 0.0)), "features[2]", "not a finite number"),
        (PredictItem(text="x" * 51), "text", "limit of 50 (serve.max_text_chars)"),
    ],
)
def test_predict_checks_name_the_field(model, item, field, words):
    with pytest.raises(InputError) as info:
        check_predict(item, model.config, LIMITS)
    assert info.value.field == field
    assert words in info.value.message
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_text_over_the_model_token_budget(model):
    text = "é" * 70  # 140 UTF-8 bytes: within max_text_chars, over max_seq_len
    with pytest.raises(
        InputError, match=r"text: 141 tokens .*limit of 127 \(max_seq_len=128 minus CLS\).* at most 126 bytes"
    ):
        check_predict(PredictItem(text=text), model.config, Limits(max_text_chars=1000))
    check_predict(PredictItem(text="é" * 63), model.config, Limits(max_text_chars=1000))  # 127 tokens fit


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"max_new_tokens": 17}, "max_new_tokens", "limit of 16 (serve.max_new_tokens)"),
        ({"max_new_tokens": 0}, "max_new_tokens", "int >= 1"),
        ({"temperature": -0.5}, "temperature", ">= 0"),
        ({"top_p": 0.0}, "top_p", "(0, 1]"),
        ({"prompt": "y" * 51}, "prompt", "serve.max_text_chars"),
        ({"prompt": "y" * 45, "max_new_tokens": 16, "_model_max": True}, "prompt", None),
    ],
)
def test_generate_checks_name_the_field(model, changes, field, words):
    changes = dict(changes)
    small = changes.pop("_model_max", False)
    config = model.config.replace(max_seq_len=48) if small else model.config
    item = GenerateItem(**{"prompt": "hi", "max_new_tokens": 8, **changes})
    with pytest.raises(InputError) as info:
        check_generate(item, config, LIMITS)
    assert info.value.field == field
    if words:
        assert words in info.value.message
    else:
        assert "max_seq_len=48" in info.value.message and "ask for at most 2 new tokens" in info.value.message


def test_valid_requests_pass(model):
    check_predict(PredictItem(features=(0.0,) * 6), model.config, LIMITS)
    check_predict(PredictItem(text=""), model.config, LIMITS)
    check_generate(GenerateItem(prompt="hello", max_new_tokens=16, temperature=0.7, top_p=0.5), model.config, LIMITS)
