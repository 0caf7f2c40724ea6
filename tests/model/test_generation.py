"""Generation: seeded reproducibility, KV cache == recomputation, EOS, padding."""

from __future__ import annotations

import pytest
import torch

from cl.model import ByteTokenizer, MoETransformer, generate, sample_next
from cl.model.generation import generate_steps


@pytest.fixture
def prompts(tok: ByteTokenizer) -> torch.Tensor:
    return tok.batch(["Hello, wor", "ab", "The quick brown"], pad_side="left")


def test_same_seed_same_output_other_seed_differs(model: MoETransformer, prompts: torch.Tensor) -> None:
    kw = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, stop_at_eos=False)
    a = model.generate(prompts, seed=11, **kw)
    b = model.generate(prompts, seed=11, **kw)
    c = model.generate(prompts, seed=12, **kw)
    assert a.shape == (3, prompts.shape[1] + 12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, : prompts.shape[1]], prompts)


def test_generator_argument_matches_seed(model: MoETransformer, prompts: torch.Tensor) -> None:
    kw = dict(max_new_tokens=6, temperature=0.7, stop_at_eos=False)
    a = model.generate(prompts, seed=5, **kw)
    b = model.generate(prompts, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, b)


@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_kv_cache_equals_recomputation(model: MoETransformer, prompts: torch.Tensor, temperature: float) -> None:
    ids = torch.tensor([0, -1, 2])
    kw = dict(max_new_tokens=10, temperature=temperature, seed=3, adapter_ids=ids, stop_at_eos=False)
    with_cache = generate(model, prompts, use_cache=True, **kw)
    without = generate(model, prompts, use_cache=False, **kw)
    assert torch.equal(with_cache, without)


def test_cached_logits_equal_full_forward(model: MoETransformer, randomize_adapter, tokens) -> None:
    randomize_adapter(model, 1)
    t = tokens(2, 9, seed=8)
    ids = torch.tensor([1, -1])
    full = model(tokens=t, adapter_ids=ids, head="lm")  # (B, T, V)
    cache = model.new_cache(2, 9)
    steps = [model(tokens=t[:, :5], adapter_ids=ids, head="lm", cache=cache)]
    for i in range(5, 9):
        steps.append(model(tokens=t[:, i : i + 1], adapter_ids=ids, head="lm", cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 9


def test_batched_left_padded_equals_one_row_at_a_time(model: MoETransformer, tok: ByteTokenizer) -> None:
    texts = ["short", "a much longer prompt"]
    batch = model.generate(tok.batch(texts, pad_side="left"), max_new_tokens=6, stop_at_eos=False)
    for i, text in enumerate(texts):
        alone = model.generate(tok.batch([text]), max_new_tokens=6, stop_at_eos=False)
        assert tok.decode(batch[i]) == tok.decode(alone[0])
        assert torch.equal(batch[i, -6:], alone[0, -6:])


def test_stops_at_eos_and_pads_finished_rows(model: MoETransformer, prompts: torch.Tensor) -> None:
    eos = ByteTokenizer.eos_id
    with torch.no_grad():
        model.lm_head.bias[eos] = 50.0  # make EOS overwhelmingly likely
    out = model.generate(prompts, max_new_tokens=8)
    assert out.shape[1] == prompts.shape[1] + 1  # every row finished on its first token
    assert (out[:, -1] == eos).all()


def test_finished_rows_get_pad_while_others_continue(model: MoETransformer, prompts: torch.Tensor) -> None:
    eos, pad = ByteTokenizer.eos_id, ByteTokenizer.pad_id
    with torch.no_grad():
        model.lm_head.bias[eos] = 4.7  # P(EOS) about 0.3 per step
    seen_mixed = False
    for seed in range(40):
        out = model.generate(prompts, max_new_tokens=6, temperature=1.0, seed=seed)
        gen = out[:, prompts.shape[1] :].tolist()
        ends = [row.index(eos) if eos in row else None for row in gen]
        for row, end in zip(gen, ends):
            if end is not None:
                assert all(t == pad for t in row[end + 1 :]), row
            assert pad not in row[: end if end is not None else len(row)], row
        if any(e is not None and e + 1 < len(gen[0]) for e in ends) and any(
            e is None or e + 1 == len(gen[0]) for e in ends
        ):
            seen_mixed = True  # one row finished early while another kept going
    assert seen_mixed


def test_specials_are_never_generated(model: MoETransformer, prompts: torch.Tensor) -> None:
    with torch.no_grad():
        for special in (ByteTokenizer.pad_id, ByteTokenizer.bos_id, ByteTokenizer.cls_id):
            model.lm_head.bias[special] = 30.0
    out = model.generate(prompts, max_new_tokens=5, temperature=1.0, seed=0, stop_at_eos=False)
    new = out[:, prompts.shape[1] :]
    assert not torch.isin(new, torch.tensor([ByteTokenizer.pad_id, ByteTokenizer.bos_id, ByteTokenizer.cls_id])).any()


def test_top_p_tiny_is_greedy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g)
    for top_p in (1e-6, 5.9e-47):  # the second is 0 in float32: the fuzzer's 503 (empty nucleus)
        picked = sample_next(logits, temperature=1.0, top_p=top_p, generator=g)
        assert torch.equal(picked, logits.argmax(-1))
    sampled = sample_next(logits, temperature=1.0, top_p=1.0, generator=g)
    assert not torch.equal(sampled, logits.argmax(-1))


def test_generate_restores_training_mode(model: MoETransformer, prompts: torch.Tensor) -> None:
    model.train()
    model.generate(prompts, max_new_tokens=2)
    assert model.training


def test_only_ascii_bytes_are_generated(model: MoETransformer, prompts: torch.Tensor) -> None:
    """A lone byte >= 0x80 decodes to U+FFFD and re-encodes as other bytes: feedback on it
    would train tokens that were never served, so such bytes are never sampled."""
    with torch.no_grad():
        model.lm_head.bias[0x80:0x100] = 30.0  # the model wants nothing but non-ASCII
    out = model.generate(prompts, max_new_tokens=5, temperature=1.0, seed=0, stop_at_eos=False)
    new = out[:, prompts.shape[1] :]
    assert bool(((new < 0x80) | (new == ByteTokenizer.eos_id)).all())
    text = ByteTokenizer().decode(new[0].tolist())
    assert ByteTokenizer().encode(text, bos=False, eos=False) == [
        t for t in new[0].tolist() if t != ByteTokenizer.eos_id
    ]


@pytest.mark.parametrize("temperature", [1e-30, 1e-4, 100.0])
def test_extreme_temperatures_give_tokens_not_errors(
    model: MoETransformer, prompts: torch.Tensor, temperature: float
) -> None:
    out = model.generate(prompts, max_new_tokens=3, temperature=temperature, seed=0, stop_at_eos=False)
    assert out.shape[1] == prompts.shape[1] + 3 and bool((out[:, prompts.shape[1] :] < 0x80).all())


@pytest.mark.parametrize(
    ("temperature", "use_cache", "eos_bias"), [(0.0, True, 0.0), (1.0, False, 0.0), (1.0, True, 4.7)]
)
def test_the_step_iterator_yields_the_columns_generate_appends(
    model: MoETransformer, prompts: torch.Tensor, temperature: float, use_cache: bool, eos_bias: float
) -> None:
    """What a server streams is what a whole generation returns, EOS and finished rows included."""
    with torch.no_grad():
        model.lm_head.bias[ByteTokenizer.eos_id] = eos_bias
    kw = dict(max_new_tokens=9, temperature=temperature, seed=4, adapter_ids=torch.tensor([0, -1, 1]))
    whole = generate(model, prompts, use_cache=use_cache, **kw)
    steps = list(generate_steps(model, prompts, use_cache=use_cache, **kw))
    assert all(s.shape == (3,) for s in steps)
    assert torch.equal(torch.stack(steps, dim=1), whole[:, prompts.shape[1] :])


def test_the_step_iterator_checks_at_the_call_and_restores_training_mode_when_closed(
    model: MoETransformer, prompts: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="max_seq_len"):
        generate_steps(model, prompts, max_new_tokens=10_000)  # before any step runs
    model.train()
    steps = generate_steps(model, prompts, max_new_tokens=5, stop_at_eos=False)
    next(steps)
    assert not model.training and torch.is_grad_enabled()  # no_grad does not leak out between steps
    steps.close()  # a client that went away
    assert model.training
