"""Examples: the join, what can't be trained on, plain-data round trips, encoding, checks."""

from __future__ import annotations

import doctest
import json
import pickle

import pytest

import cl.learning.example
import cl.learning.objectives
import cl.learning.online_learner
from cl.events import FeedbackEvent, RequestEvent
from cl.learning.example import Example, check_example, encode_examples
from cl.model import ByteTokenizer, ModelConfig


def predict_request(**output) -> RequestEvent:
    return RequestEvent(
        request_id="r1",
        kind="predict",
        input={"features": [0.5, -1.0, 2.0]},
        output=output or {"label": 2, "probabilities": [0.1, 0.2, 0.7]},
        model_version="7",
        arm="challenger",
        user_id="asker",
    )


def generate_request() -> RequestEvent:
    return RequestEvent(
        request_id="r1",
        kind="generate",
        input={"text": "2+2="},
        output={"text": "5"},
        model_version="7",
        arm="champion",
    )


def feedback(**signal) -> FeedbackEvent:
    return FeedbackEvent(request_id="r1", event_id="f1", ts=123.5, **signal)


def test_module_doctests_run():
    for module in (cl.learning.example, cl.learning.objectives, cl.learning.online_learner):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.parametrize(
    ("request_event", "signal", "want"),
    [
        (predict_request(), {"label": 1}, dict(target=1, correction=None, desirable=None, user_error=1)),
        (predict_request(), {"label": 2}, dict(target=2, user_error=0, replay_label=2)),
        (predict_request(), {"correction": " 0 "}, dict(target=0, user_error=1)),
        (predict_request(), {"thumbs": "up"}, dict(target=None, desirable=True, user_error=0)),
        (predict_request(), {"rating": 1}, dict(desirable=False, user_error=1, replay_label="undesirable")),
        (predict_request(), {"rating": 3}, dict(desirable=None, user_error=None, trainable=False)),
        (generate_request(), {"correction": "4"}, dict(correction="4", target=None, user_error=1)),
        (generate_request(), {"correction": "5"}, dict(user_error=0, replay_label="correction")),
        (generate_request(), {"thumbs": "down"}, dict(desirable=False, is_preference=True)),
    ],
)
def test_from_join(request_event, signal, want):
    ex = Example.from_join(request_event, feedback(**signal))
    assert ex.event_id == "f1" and ex.request_id == "r1" and ex.ts == 123.5 and ex.model_version == "7"
    assert ex.signal == next(iter(signal))
    for key, value in want.items():
        assert getattr(ex, key) == value, key
    if request_event.kind == "predict":
        assert ex.features == (0.5, -1.0, 2.0) and ex.served_label == 2 and ex.text is None
        assert ex.user_id == "asker"  # the feedback carries none, so the request's
    else:
        assert ex.text == "2+2=" and ex.served_text == "5" and ex.features is None


@pytest.mark.parametrize(
    ("request_event", "signal", "match"),
    [
        (predict_request(), {"correction": "cat"}, "correction 'cat' on a predict request is not a class label"),
        (predict_request(), {"correction": "-1"}, "is not a class label"),
        (predict_request(), {"correction": "1.5"}, "is not a class label"),
        (predict_request(), {"correction": "²"}, "is not a class label"),
        (generate_request(), {"label": 1}, "labels are for predict requests"),
    ],
)
def test_untrainable_pairs_raise_naming_the_problem(request_event, signal, match):
    with pytest.raises(ValueError, match=match):
        Example.from_join(request_event, feedback(**signal))


def test_generate_with_features_input_raises():
    request = RequestEvent(
        request_id="r1",
        kind="generate",
        input={"features": [1.0]},
        output={"text": "x"},
        model_version="1",
        arm="champion",
    )
    with pytest.raises(ValueError, match="generation needs a text prompt"):
        Example.from_join(request, feedback(thumbs="up"))


def test_mismatched_request_ids_raise():
    other = FeedbackEvent(request_id="r2", thumbs="up")
    with pytest.raises(ValueError, match="feedback.request_id 'r2' does not match request.request_id 'r1'"):
        Example.from_join(predict_request(), other)


def test_plain_data_round_trips():
    for ex in (
        Example.from_join(predict_request(), feedback(label=1)),
        Example.from_join(generate_request(), feedback(correction="4")),
    ):
        data = ex.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert Example.from_dict(json.loads(json.dumps(data))) == ex
        assert pickle.loads(pickle.dumps(ex)) == ex
        with pytest.raises(AttributeError):
            ex.target = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\], missing keys \['signal'\]"):
        Example.from_dict({"event_id": "e", "request_id": "r", "kind": "predict", "colour": 1})


def test_check_example_names_field_and_fix():
    cfg = ModelConfig.preset("tiny", n_features=3, n_labels=3)
    ok = Example.from_join(predict_request(), feedback(label=1))
    assert check_example(ok, cfg) is None
    bad = [
        (
            Example("e", "r", "predict", "label", features=(1.0, 2.0), target=0),
            "features has 2 values but the model takes n_features=3",
        ),
        (Example("e", "r", "predict", "label", features=(1.0, float("nan"), 0.0), target=0), "NaN"),
        (
            Example("e", "r", "predict", "label", features=(1.0, 2.0, 3.0), target=3),
            "label 3 is out of range: the model has n_labels=3",
        ),
        (
            Example("e", "r", "predict", "thumbs", text="hi", served_label=5, desirable=True),
            "served label 5 is out of range",
        ),
        (
            Example("e", "r", "generate", "thumbs", text="hi", served_text="", desirable=True),
            "the served text is empty",
        ),
        (Example("e", "r", "predict", "label", target=0), "exactly one of features or text"),
        (Example("e", "r", "classify", "label", text="x", target=0), "kind 'classify' is unknown"),
        (
            Example("e", "r", "generate", "thumbs", features=(1.0,), served_text="a", desirable=True),
            "a generate example needs a text prompt",
        ),
        ({"event_id": "e"}, "expected an Example, got dict"),
    ]
    for ex, reason in bad:
        assert reason in check_example(ex, cfg)


def test_encoding_groups_by_input_and_masks_only_the_output():
    tok = ByteTokenizer()
    exs = [
        Example("a", "r", "generate", "correction", text="2+2=", served_text="5", correction="4"),
        Example("b", "r", "predict", "label", features=(0.0,) * 8, target=1),
        Example("c", "r", "predict", "thumbs", text="good", served_label=2, desirable=False),
        Example("d", "r", "generate", "thumbs", text="hi", served_text="yo", desirable=True),
    ]
    feats, text, lm = encode_examples(exs, max_seq_len=128)
    assert (feats.rows, text.rows, lm.rows) == ([1], [2], [0, 3])
    assert feats.targets.tolist() == [1] and text.targets.tolist() == [2]  # target / served label
    assert text.tokens[0].tolist() == tok.encode("good") and text.preference.tolist() == [True]
    # correction: the output is "4" + EOS; served text: "yo" without EOS
    assert lm.targets[0][lm.mask[0]].tolist() == [ord("4"), tok.eos_id]
    assert lm.targets[1][lm.mask[1]].tolist() == [ord("y"), ord("o")]
    assert lm.tokens[0, :5].tolist() == tok.encode("2+2=")  # BOS + prompt
    assert lm.desirable.tolist() == [False, True] and lm.preference.tolist() == [False, True]


def test_encoding_truncates_long_rows_to_max_seq_len():
    long = Example("a", "r", "generate", "correction", text="p" * 300, served_text="x", correction="c" * 40)
    (lm,) = encode_examples([long], max_seq_len=32)
    assert lm.tokens.shape == (1, 32)
    assert int(lm.mask.sum()) == 31  # the correction's start survives; the prompt's end is kept
    assert lm.tokens[0, 0] == ByteTokenizer.bos_id
    (text,) = encode_examples([Example("b", "r", "predict", "label", text="t" * 300, target=0)], max_seq_len=32)
    assert text.tokens.shape == (1, 31)  # room for the CLS token classify adds
