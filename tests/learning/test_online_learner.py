"""The online learner on synthetic streams: learning, drift, preferences, replay, state.

Every test uses the seeded tiny base and a seeded stream, so the numbers are reproducible;
the bounds are generous (chance on this stream is ~0.29, the majority class).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from cl.config import ConfigError, LearnerConfig, ModelSection
from cl.learning.example import Example, encode_examples
from cl.learning.objectives import SupervisedLoss, score_tokens
from cl.learning.online_learner import OnlineLearner, StepReport
from cl.model.base_model import build_base_model


def window_accuracy(before: dict, after: dict) -> float:
    """Prequential accuracy over the label events between two ``metrics()`` readings."""
    correct = after["prequential_accuracy"] * after["events_seen"]
    earlier = before["prequential_accuracy"] * before["events_seen"] if before["events_seen"] else 0.0
    return (correct - earlier) / (after["events_seen"] - before["events_seen"])


def champion(synth, y: np.ndarray, right: float) -> np.ndarray:
    """Served labels of a champion that is right with probability ``right``."""
    wrong = (y + synth.rng.integers(1, 4, len(y))) % 4
    return np.where(synth.rng.random(len(y)) < right, y, wrong)


def test_prequential_accuracy_rises_well_above_chance(synth, make_learner, helpers):
    learner = make_learner(batch_size=64)  # a step costs about the same for 16 or 64 rows; 16 learns as well
    X, y = synth.sample(1536)
    majority = np.bincount(y).max() / len(y)
    helpers.feed(learner, synth.labels(X[:1024], y[:1024]), batch=64)
    middle = learner.metrics()
    reports = helpers.feed(learner, synth.labels(X[1024:], y[1024:]), batch=64)
    end = learner.metrics()
    assert end["events_seen"] == 1536 and reports[-1].events_seen == 1536 == learner.events_seen
    assert end["prequential_accuracy"] > majority + 0.2, end  # all 1536 events, the start included
    assert window_accuracy(middle, end) > 0.58, (window_accuracy(middle, end), majority)
    assert end["replay_size"] == 1536 and end["served_error_rate"] == pytest.approx(np.mean(y[-200:] != 0))
    assert math.isnan(end["positive_rate"]) and end["lr"] == learner.config.lr
    assert 0 <= end["expert_max_violation"] < 3 and 0 < end["loss_ema"] < 2


def test_label_remap_is_detected_and_accuracy_recovers(synth, make_learner):
    """Classes are permuted at event 800: the served error jumps, ADWIN fires, the learner re-learns.

    Replay slows the recovery (the buffer still holds the old concept), hence ratio 0.5.
    """
    learner = make_learner(batch_size=32, replay_ratio=0.5, boost_factor=2.0, boost_events=400)
    X1, y1 = synth.sample(800)
    X2, y2 = synth.sample(1152, perm=[1, 2, 3, 0])
    old = (X2 @ synth.W).argmax(1)  # the champion still answers the old concept
    first = _feed(learner, synth.labels(X1, y1, champion(synth, y1, 0.85)), batch=32)
    assert not any(r.drift for r in first)
    readings, drift_at = [learner.metrics()], []
    for i in range(0, 1152, 32):
        report = learner.learn(synth.labels(X2[i : i + 32], y2[i : i + 32], champion(synth, old[i : i + 32], 0.85)))
        if report.drift:
            drift_at.append(i)
            assert report.actions[:2] == ("reset", "boost_lr") and learner.metrics()["lr"] == 2 * learner.config.lr
        if i in (352, 1120):
            readings.append(learner.metrics())
    assert drift_at and drift_at[0] < 100, drift_at  # within ~100 events of the change
    just_after, recovered = window_accuracy(readings[0], readings[1]), window_accuracy(readings[1], readings[2])
    assert recovered > 0.45 and recovered > just_after + 0.15, (just_after, recovered)
    assert learner.metrics()["drifts"] == len(drift_at)


def _feed(learner, examples, batch=16):
    return [learner.learn(examples[i : i + batch]) for i in range(0, len(examples), batch)]


@pytest.mark.parametrize("thumbs_up", [True, False])
def test_kto_thumbs_move_the_served_label(synth, make_learner, helpers, thumbs_up):
    """Thumbs up on the served label raise its probability; thumbs down lower it."""
    learner = make_learner(preference_loss="kto", kto_beta=0.1)
    X, y = synth.sample(320)
    Xt, yt = synth.sample(400)
    served, served_t = (y, yt) if thumbs_up else ((y + 1) % 4, (yt + 1) % 4)
    before = helpers.predict_proba(learner, Xt)[np.arange(400), served_t].mean()
    reports = helpers.feed(learner, synth.thumbs(X, served, [thumbs_up] * 320))
    after = helpers.predict_proba(learner, Xt)[np.arange(400), served_t].mean()
    assert (after > before + 0.05) if thumbs_up else (after < before - 0.05), (before, after)
    assert learner.metrics()["positive_rate"] == float(thumbs_up)
    assert all(r.errors == [int(not thumbs_up)] * 16 for r in reports)
    assert all(0 < r.loss < 1 for r in reports)  # KTO's loss is bounded by lambda = 1


def test_rwl_thumbs_move_the_served_label(synth, make_learner, helpers):
    learner = make_learner(preference_loss="rwl")
    X, y = synth.sample(160)
    Xt, yt = synth.sample(400)
    before = helpers.predict_proba(learner, Xt)[np.arange(400), (yt + 1) % 4].mean()
    helpers.feed(learner, synth.thumbs(X, (y + 1) % 4, [False] * 160))
    after = helpers.predict_proba(learner, Xt)[np.arange(400), (yt + 1) % 4].mean()
    assert after < before - 0.05, (before, after)


def test_replay_reduces_forgetting(synth, helpers):
    """Task A (inputs around +3 e0, teacher W), then task B (around -3 e0, another teacher)."""
    shift = np.zeros(8)
    shift[0] = 3.0
    W2 = synth.rng.normal(size=(8, 4))
    XA, yA = synth.sample(480, mean=shift)
    XB, yB = synth.sample(640, mean=-shift, W=W2)
    XtA, ytA = synth.sample(400, mean=shift)
    accuracy = {}
    for ratio in (0.0, 1.0):
        config = helpers.config(replay_ratio=ratio, drift_detector="none", batch_size=32)
        learner = OnlineLearner(build_base_model(ModelSection()), config, seed=1)
        helpers.feed(learner, synth.labels(XA, yA), batch=32)
        learned = float((helpers.predict(learner, XtA) == ytA).mean())
        helpers.feed(learner, synth.labels(XB, yB), batch=32)
        accuracy[ratio] = (learned, float((helpers.predict(learner, XtA) == ytA).mean()))
    assert accuracy[0.0][0] > 0.5 and accuracy[1.0][0] > 0.5, accuracy  # both learned task A
    assert accuracy[1.0][1] > accuracy[0.0][1] + 0.15, accuracy  # replay kept more of it


def test_rejected_examples_are_reported_and_the_rest_learned(synth, make_learner):
    learner = make_learner()
    X, y = synth.sample(4)
    good = synth.labels(X, y)
    wrong_label = Example("bad-label", "r", "predict", "label", features=good[0].features, served_label=0, target=9)
    short = Example("bad-features", "r", "predict", "label", features=(1.0, 2.0), served_label=0, target=1)
    before = learner.model.adapter_state(0)
    report = learner.learn([good[0], wrong_label, good[1], short, "junk", good[2], good[3]])
    assert report.n_events == 4 and report.events_seen == 4 and len(report.errors) == 4
    ids = [event_id for event_id, _ in report.rejected]
    assert ids == ["bad-label", "bad-features", "?"]
    assert "label 9 is out of range: the model has n_labels=4" in report.rejected[0][1]
    assert "features has 2 values but the model takes n_features=8" in report.rejected[1][1]
    assert math.isfinite(report.loss)
    after = learner.model.adapter_state(0)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the good ones were learned
    assert learner.metrics()["events_rejected"] == 3
    empty = learner.learn([wrong_label])
    assert empty.n_events == 0 and math.isnan(empty.loss) and empty.errors == []


def test_neutral_ratings_count_but_teach_nothing(synth, make_learner):
    learner = make_learner()
    X, y = synth.sample(8)
    before = learner.model.adapter_state(0)
    report = learner.learn(synth.thumbs(X, y, [None] * 8))
    assert report.n_events == 8 and report.errors == [] and math.isnan(report.loss)
    assert all(torch.equal(before[k], v) for k, v in learner.model.adapter_state(0).items())
    assert learner.metrics()["replay_size"] == 0 and math.isnan(learner.metrics()["positive_rate"])


def test_learner_trains_only_its_slot_and_leaves_the_model_in_eval(synth, make_learner):
    learner = OnlineLearner(build_base_model(ModelSection(), n_adapter_slots=3), LearnerConfig(lr=5e-3), slot=1)
    model = learner.model
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    others = [model.adapter_state(0), model.adapter_state(2)]
    X, y = synth.sample(64)
    examples = synth.labels(X[:32], y[:32]) + synth.thumbs(X[32:], y[32:], [True, False] * 16)
    examples += [
        Example("g1", "r", "generate", "correction", text="hi", served_text="yo", correction="hello"),
        Example("g2", "r", "generate", "thumbs", text="hi", served_text="yo", desirable=False),
        Example("t1", "r", "predict", "label", text="some text", served_label=1, target=2),
    ]
    for i in range(0, len(examples), 16):
        assert learner.learn(examples[i : i + 16]).n_events > 0
        assert not model.training
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if n in base)
    for slot, state in zip((0, 2), others):
        assert all(torch.equal(state[k], v) for k, v in model.adapter_state(slot).items()), slot


def test_generate_corrections_are_learned(make_learner):
    """A correction repeated a few times becomes more likely under the lm head."""
    learner = make_learner(replay_ratio=0.0)

    def nll() -> float:
        ex = Example(
            "x", "r", "generate", "correction", text="capital of France?", served_text="Rome", correction="Paris"
        )
        (batch,) = encode_examples([ex], learner.model.config.max_seq_len)
        with torch.no_grad():
            logits = learner.model(tokens=batch.tokens, adapter_ids=torch.tensor([0]), head="lm")
        return float(SupervisedLoss()(score_tokens(logits, batch.targets, batch.mask))[0])

    start = nll()
    for step in range(8):
        learner.learn(
            [
                Example(
                    f"e{step}-{i}",
                    "r",
                    "generate",
                    "correction",
                    text="capital of France?",
                    served_text="Rome",
                    correction="Paris",
                )
                for i in range(4)
            ]
        )
    assert nll() < start - 0.5, (start, nll())


# ---- drift actions --------------------------------------------------------------------


def _error_jump(synth, n_right: int, n_wrong: int) -> list[Example]:
    """Label feedback whose served label is right ``n_right`` times, then wrong: a drift."""
    X, y = synth.sample(n_right + n_wrong)
    served = np.concatenate([y[:n_right], (y[n_right:] + 1) % 4])
    return synth.labels(X, y, served)


def test_boost_lr_raises_then_restores_the_learning_rate(synth, make_learner):
    learner = make_learner(drift_actions="boost_lr,reset", boost_factor=3.0, boost_events=64)
    lr = learner.config.lr
    reports = _feed(learner, _error_jump(synth, 320, 192))
    boosted = [i for i, r in enumerate(reports) if "boost_lr" in r.actions]
    assert boosted, [r.errors for r in reports]
    k = boosted[0]
    assert reports[k].lr == lr and reports[k + 1].lr == pytest.approx(3 * lr)
    restored = next(i for i, r in enumerate(reports) if "lr_restored" in r.actions)
    assert restored == k + 4  # 64 events = 4 micro-batches after the drift
    assert all(r.lr == pytest.approx(3 * lr) for r in reports[k + 1 : restored + 1])
    assert reports[restored + 1].lr == lr and learner.metrics()["lr"] == lr
    assert learner.metrics()["drifts"] >= 1


def test_branch_action_restarts_from_the_source(synth, make_learner):
    source = build_base_model(ModelSection())
    with torch.no_grad():
        for p in source.adapter_parameters():
            p.normal_(0.0, 0.05)
    champion_state = source.adapter_state(0)
    calls = []

    def branch_source():
        calls.append(1)
        return champion_state

    learner = make_learner(drift_actions="branch", branch_source=branch_source)
    examples = _error_jump(synth, 320, 96)
    for i in range(0, len(examples), 16):
        report = learner.learn(examples[i : i + 16])
        if report.drift:
            break
    assert report.actions == ("branch",) and len(calls) == 1
    # the branch follows this step's update, so the slot now holds the source exactly
    assert all(torch.equal(champion_state[k], t) for k, t in learner.model.adapter_state(0).items())
    assert learner.state_dict()["optimizer"]["state"] == {}  # a fresh optimizer
    assert learner.state_dict()["detector"]["width"] == 0  # a fresh detector
    assert learner.metrics()["replay_size"] == i + 16  # the buffer is kept
    learner.branch_from(None)  # a fresh adapter: B = 0, so it equals the base
    fresh = learner.model.adapter_state(0)
    assert all(not t.any() for n, t in fresh.items() if n.endswith(("lora_b", "b13", "b2")))
    assert learner.learn(examples[-16:]).n_events == 16


# ---- state ----------------------------------------------------------------------------


def _mixed_stream(synth, n: int) -> list[Example]:
    """Labels (served right 70% of the time, then always wrong), thumbs, 3-star ratings, generations."""
    X, y = synth.sample(n)
    half = n // 2
    served = np.concatenate([champion(synth, y[:half], 0.7), (y[half:] + 1) % 4])
    out = []
    for i, ex in enumerate(synth.labels(X, y, served)):
        if i % 5 == 3:
            ex = synth.thumbs(X[i : i + 1], served[i : i + 1], [bool(served[i] == y[i])])[0]
        elif i % 11 == 7:
            ex = synth.thumbs(X[i : i + 1], served[i : i + 1], [None])[0]
        elif i % 13 == 5:
            ex = Example(
                ex.event_id,
                ex.request_id,
                "generate",
                "correction",
                text=f"q{i}",
                served_text="a",
                correction=f"b{i % 3}",
            )
        out.append(ex)
    return out


@pytest.mark.parametrize("replay", ["reservoir", "class_balanced", "loss_prioritised"])
def test_state_round_trip_resumes_exactly(synth, make_learner, replay):
    """Learn A, snapshot through torch.save / torch.load(weights_only=True), learn B twice."""
    cfg = dict(replay=replay, replay_capacity=64, drift_actions="boost_lr,reset", boost_events=200)
    stream_a, stream_b = _mixed_stream(synth, 224), _mixed_stream(synth, 96)
    learner = make_learner(seed=3, **cfg)
    reports_a = _feed(learner, stream_a)
    assert any(r.drift for r in reports_a), "stream A should end inside an lr boost"
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    snapshot = torch.load(buffer, weights_only=True)

    assert learner.metrics()["lr"] == learner.config.boost_factor * learner.config.lr  # A ends inside the boost window
    reports_b = _feed(learner, stream_b)
    restored = make_learner(seed=99, **cfg)  # the seed does not matter: the snapshot carries the state
    restored.load_state_dict(snapshot)
    reports_r = _feed(restored, stream_b)

    assert [(r.loss, r.errors, r.actions, r.lr) for r in reports_b] == [
        (r.loss, r.errors, r.actions, r.lr) for r in reports_r
    ]
    a, b = learner.model.adapter_state(0), restored.model.adapter_state(0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    m, n = learner.metrics(), restored.metrics()
    assert m.keys() == n.keys()
    assert all(m[k] == n[k] or (math.isnan(m[k]) and math.isnan(n[k])) for k in m), (m, n)
    s, t = learner.state_dict(), restored.state_dict()
    assert s["replay"] == t["replay"] and s["stats"] == t["stats"] and s["rng"] == t["rng"]


def test_state_dict_is_a_snapshot_not_a_view(synth, make_learner):
    learner = make_learner()
    X, y = synth.sample(32)
    _feed(learner, synth.labels(X, y))
    state = learner.state_dict()
    frozen = {k: v.clone() for k, v in state["adapter"].items()}
    moments = [v["exp_avg"].clone() for v in state["optimizer"]["state"].values()]
    _feed(learner, synth.labels(X, y))
    assert all(torch.equal(frozen[k], v) for k, v in state["adapter"].items())
    assert all(torch.equal(m, v["exp_avg"]) for m, v in zip(moments, state["optimizer"]["state"].values()))


def test_load_state_dict_names_what_does_not_fit(make_learner):
    state = make_learner().state_dict()
    with pytest.raises(ValueError, match=r"missing \['rng'\]"):
        make_learner().load_state_dict({k: v for k, v in state.items() if k != "rng"})
    with pytest.raises(ValueError, match="config.drift_detector='none'; use the snapshot's setting"):
        make_learner(drift_detector="none").load_state_dict(state)
    with pytest.raises(ValueError, match="capacity"):
        make_learner(replay_capacity=10).load_state_dict(state)


def test_constructor_checks_config_and_slot():
    model = build_base_model(ModelSection())
    with pytest.raises(ConfigError) as err:
        OnlineLearner(model, LearnerConfig(lr=-1.0, replay="fifo"))
    assert len(err.value.problems) == 2
    with pytest.raises(ValueError, match="slot=1 is not an adapter slot of this model; use 0..0"):
        OnlineLearner(model, LearnerConfig(), slot=1)


def test_step_report_fields(synth, make_learner):
    learner = make_learner(replay_ratio=0.5)
    X, y = synth.sample(32)
    learner.learn(synth.labels(X[:16], y[:16]))
    report = learner.learn(synth.labels(X[16:], y[16:], served=y[16:]))
    assert isinstance(report, StepReport)
    assert report.n_events == 16 and report.n_replayed == 8 and report.errors == [0] * 16
    assert report.drift is False and report.actions == () and report.rejected == ()
    assert report.events_seen == 32 and report.lr == learner.config.lr


def test_held_out_feedback_is_watched_but_never_learned(synth, make_learner):
    from cl.learning.eval_set import is_held_out

    learner = make_learner(holdout_fraction=0.5)
    X, y = synth.sample(64)
    examples = synth.labels(X, y)
    held = [ex for ex in examples if is_held_out(ex.event_id, 0.5)]
    assert 0 < len(held) < len(examples)
    report = learner.learn(examples)
    assert learner.events_seen == 64 and len(report.errors) == 64  # all tested, for drift
    assert learner.metrics()["replay_size"] == 64 - len(held)  # the held-out ones were not trained on
    before = learner.model.adapter_state(0)
    learner.learn(held)
    after = learner.model.adapter_state(0)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_learner_on_a_hugging_face_checkpoint_learns_corrections_with_its_tokenizer(tmp_path):
    """The same loop on a pretrained checkpoint: its BPE tokens in, a correction becomes likelier,
    and texts of other tokenizations (no BOS in the vocabulary's sense, padding outside it) work."""
    from cl.testing.tiny_checkpoints import build_tiny_checkpoint

    directory = build_tiny_checkpoint("olmoe", tmp_path / "olmoe")
    model = build_base_model(ModelSection(checkpoint=str(directory), n_features=0), n_adapter_slots=1)
    learner = OnlineLearner(model, LearnerConfig(replay_ratio=0.0, lr=1e-2), seed=0)
    ex = Example("x", "r", "generate", "correction", text="how are you?", served_text="lazy", correction="fine")

    def nll() -> float:
        (batch,) = encode_examples([ex], model.config.max_seq_len, model.tokenizer)
        assert int(batch.tokens.max()) <= model.config.vocab_size  # BPE ids (and padding) of the checkpoint
        with torch.no_grad():
            logits = model(tokens=batch.tokens, adapter_ids=torch.tensor([0]), head="lm")
        return float(SupervisedLoss()(score_tokens(logits, batch.targets, batch.mask))[0])

    start = nll()
    for step in range(6):
        learner.learn(
            [
                Example(
                    f"e{step}-{i}", "r", "generate", "correction", text=ex.text, served_text="lazy", correction="fine"
                )
                for i in range(4)
            ]
            + [Example(f"p{step}", "r", "predict", "label", text="the quick brown fox", served_label=0, target=2)]
        )
    assert nll() < start - 0.5, (start, nll())
