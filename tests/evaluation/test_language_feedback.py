"""Language feedback: the rule task and judge (pure), the serving mask, then the quick protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cl.config import ModelSection
from cl.evaluation import _rule_task as task
from cl.evaluation import language_feedback as lf
from cl.evaluation.result import ProtocolResult
from cl.learning.example import check_example
from cl.model.base_model import build_base_model
from cl.model.generation import generate
from cl.model.tokenizer import ByteTokenizer


@pytest.fixture
def one_thread():
    """The protocol's thread count: on a busy 2-core machine a second thread only spin-waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(lf.TORCH_THREADS)
    yield
    torch.set_num_threads(threads)


# ---- the task and the judge ---------------------------------------------------------------


def test_rules_flip_for_family_a_only_and_come_back():
    learn, flip, back = task.default_phases(100, 50, 30)
    for n in range(10):
        a, b = task.prompt("a", n), task.prompt("b", n)
        assert task.judge(a, "3", learn) and not task.judge(a, "7", learn)
        assert task.judge(a, "7", flip) and not task.judge(a, "3", flip)  # a's rule flips
        assert task.judge(a, "3", back) and not task.judge(a, "7", back)  # and returns
        assert all(task.judge(b, "5", p) for p in (learn, flip, back))  # b's never changes
        assert not any(task.judge(b, other, p) for p in (learn, flip, back) for other in "0123456789" if other != "5")
    assert task.flip_points([learn, flip, back]) == [100, 150]
    assert (learn.traffic, flip.traffic, back.traffic) == (("a", "b"), ("a",), ("a", "b"))


def test_judge_wants_the_exact_answer():
    learn = task.default_phases(1, 1, 1)[0]
    assert [task.judge("a0>", out, learn) for out in ("3", " 3", "3 ", "33", "", "\ufffd")] == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_prompts_round_trip_and_bad_ones_are_named():
    assert task.prompt("b", 4) == "b4>" and task.parse_prompt("b4>") == ("b", 4)
    assert task.probe_prompts("a") == [f"a{n}>" for n in range(10)]
    for bad in ("c4>", "a44>", "a4", "ax>"):
        with pytest.raises(ValueError, match=f"prompt '{bad}' is not of the form"):
            task.parse_prompt(bad)


def test_prompts_follow_the_phase_traffic_and_the_seed():
    learn, flip, _ = task.default_phases(10, 10, 10)
    only_a = task.sample_prompts(flip, 500, np.random.default_rng(1))
    assert {p[0] for p in only_a} == {"a"} and {p[1] for p in only_a} == set("0123456789")
    mixed = task.sample_prompts(learn, 2000, np.random.default_rng(1))
    assert 0.45 < np.mean([p[0] == "a" for p in mixed]) < 0.55
    assert mixed == task.sample_prompts(learn, 2000, np.random.default_rng(1))


def test_a_phase_lists_all_its_problems():
    with pytest.raises(ValueError) as err:
        task.Phase("bad", 0, ("c",), {"a": "x"})
    message = str(err.value)
    assert "events=0" in message and "families" in message and "each of" in message and "'x'" in message


# ---- metrics ------------------------------------------------------------------------------


def test_sliding_rate_matches_a_direct_window_mean():
    thumbs = np.random.default_rng(0).random(50) < 0.3
    expected = [thumbs[max(0, i - 6) : i + 1].mean() for i in range(50)]
    assert np.allclose(lf.sliding_rate(thumbs, 7), expected)
    assert np.allclose(lf.sliding_rate(thumbs[:5], 7), [thumbs[: i + 1].mean() for i in range(5)])


def test_phase_rates_split_at_the_phase_boundaries():
    phases = task.default_phases(4, 2, 3)
    rates = lf.phase_rates([1, 0, 0, 1, 0, 0, 1, 1, 1], phases, window=2)
    assert rates == [
        {"all": 0.5, "first": 0.5, "last": 0.5},
        {"all": 0.0, "first": 0.0, "last": 0.0},
        {"all": 1.0, "first": 1.0, "last": 1.0},
    ]


# ---- serving and examples -----------------------------------------------------------------


def test_the_alphabet_policy_serves_only_digits_and_is_seeded(one_thread):
    model = build_base_model(ModelSection(seed=0))
    policy = lf.AlphabetPolicy(model, task.ALPHABET)
    prompts = ByteTokenizer().batch(task.probe_prompts("a") * 4, pad_side="left")  # (40, 4)
    slot0 = torch.zeros(40, dtype=torch.long)
    one = generate(policy, prompts, max_new_tokens=2, adapter_ids=slot0, temperature=1.0, seed=3)
    two = generate(policy, prompts, max_new_tokens=2, adapter_ids=slot0, temperature=1.0, seed=3)
    assert torch.equal(one, two)
    new = one[:, prompts.shape[1] :]
    assert set(new.flatten().tolist()) <= set(task.ALPHABET.encode())
    assert len(set(new[:, 0].tolist())) > 3  # a random base at temperature 1 explores
    unmasked = generate(model, prompts, max_new_tokens=2, adapter_ids=slot0, temperature=1.0, seed=3)
    assert not set(unmasked[:, prompts.shape[1] :].flatten().tolist()) <= set(task.ALPHABET.encode())
    with pytest.raises(ValueError, match="single-byte"):
        lf.AlphabetPolicy(model, "é")


def test_examples_are_thumbs_or_thumbs_up_as_corrections():
    prompts, outputs, thumbs = ["a1>", "b2>", "a3>"], ["3", "4", "3"], [True, False, True]
    sft, kto = lf.METHODS[0], lf.METHODS[2]
    assert sft.ups_only and kto.preference_loss == "kto"
    prefs = lf._examples(kto, prompts, outputs, thumbs, first=10)
    assert [(e.event_id, e.signal, e.text, e.served_text, e.desirable) for e in prefs] == [
        ("e10", "thumbs", "a1>", "3", True),
        ("e11", "thumbs", "b2>", "4", False),
        ("e12", "thumbs", "a3>", "3", True),
    ]
    ups = lf._examples(sft, prompts, outputs, thumbs, first=10)
    assert [(e.event_id, e.signal, e.correction) for e in ups] == [
        ("e10", "correction", "3"),
        ("e12", "correction", "3"),
    ]  # thumbs-down dropped
    config = build_base_model(ModelSection(seed=0)).config
    assert all(e.kind == "generate" and check_example(e, config) is None for e in prefs + ups)


def test_same_seed_same_run(one_thread):
    phases = task.default_phases(32, 16, 16)
    stream = [task.sample_prompts(p, p.events, np.random.default_rng(5)) for p in phases]
    progress = lf.Progress(lambda line: None, lf.NAME)
    one, two = (lf._train(lf.METHODS[3], phases, stream, 5, 16, progress) for _ in range(2))
    assert len(one.thumbs) == 64 and np.array_equal(one.thumbs, two.thumbs) and one.probes == two.probes
    assert [e for e, _ in one.probes] == [0, 16, 32, 48, 64]


def test_methods_differ_only_in_objective_and_replay():
    configs = {m.name: m.learner_config() for m in lf.METHODS}
    assert [c.preference_loss for c in configs.values()] == ["kto", "rwl", "kto", "kto"]
    assert [c.replay_ratio for c in configs.values()] == [0.0, 0.0, 0.0, 1.0]
    shared = {(c.lr, c.batch_size, c.kto_beta, c.drift_detector, c.holdout_fraction) for c in configs.values()}
    assert shared == {(5e-3, 16, 0.1, "none", 0.0)}


# ---- the quick protocol, end to end ---------------------------------------------------------


@pytest.fixture(scope="module")
def quick() -> ProtocolResult:
    return lf.run(quick=True, say=lambda line: None)


def _rows(result: ProtocolResult, starts: str) -> dict[str, dict]:
    table = next(t for t in result.tables if t.title.startswith(starts))
    return {row[0]: dict(zip(table.columns, row)) for row in table.rows}


def test_quick_run_has_its_tables_figure_and_settings(quick):
    assert (quick.name, quick.title, quick.quick, quick.goals) == (
        "language_feedback",
        "Language feedback (tiny MoE LM, rule-based judge)",
        True,
        [],
    )
    assert len(quick.tables) == 4 and all(len(t.rows) == len(lf.METHODS) for t in quick.tables)  # one seed
    assert [f.stem for f in quick.figures] == ["positive_rate", "positive_rate_per_seed"]
    axes = quick.figures[0].figure.axes
    assert len(axes) == 2 and len(axes[0].lines) == len(lf.METHODS) + 2  # curves + two flip lines
    assert all(len(ax.lines) == 1 + 2 for ax in quick.figures[1].figure.axes)  # one seed + two flip lines
    assert quick.settings["size"] == "quick"
    assert quick.settings["seeds (each: base model, prompts, sampling, learners)"] == [0]
    assert "SFT on thumbs-up" in quick.summary


def test_rates_are_rates(quick):
    for starts in ("Positive-feedback rate", "Forgetting", "Per seed"):
        for row in _rows(quick, starts).values():
            values = [v for k, v in row.items() if k not in ("method", "seed") and not k.startswith("forgetting")]
            assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values), row
    for row in _rows(quick, "Forgetting").values():
        assert -1.0 <= row["forgetting (before - after)"] <= 1.0
    means, seeds = _rows(quick, "Positive-feedback rate"), _rows(quick, "Per seed")  # one seed: the same numbers
    assert all(means[m]["flip: positive rate"] == seeds[m]["flip: positive rate"] for m in means)
    for row in _rows(quick, "Time per event").values():
        assert row["total"] == pytest.approx(row["serve"] + row["learn"]) and row["serve"] > 0


def test_every_method_learns_in_the_first_phase(quick):
    """At chance one served digit in ten is right; the last window of phase 1 beats the first."""
    window = lf.SIZES[True]["window"]
    for name, row in _rows(quick, "Positive-feedback rate").items():
        assert row[f"learn: last {window}"] > row[f"learn: first {window}"] + 0.15, (name, row)
        assert row[f"learn: first {window}"] < 0.2, (name, row)


def test_thumbs_up_only_learns_nothing_without_a_thumbs_up(quick):
    """With no "up" in the flip phase SFT gets no example, so family b's answer cannot move.

    (With the fixed seed the flip phase indeed has no "up" at quick size.)
    """
    rates = _rows(quick, "Positive-feedback rate")["SFT on thumbs-up"]
    forgetting = _rows(quick, "Forgetting")["SFT on thumbs-up"]
    assert rates["flip: positive rate"] > 0.0 or forgetting["forgetting (before - after)"] == 0.0
