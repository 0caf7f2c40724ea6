"""A training example: one feedback event joined to the request it rates, as plain data.

An :class:`Example` is what the learner trains on and what the replay buffer keeps. It is
a frozen dataclass of plain values (str, int, float, bool, None and tuples of floats), so
it pickles, and :meth:`Example.to_dict` / :meth:`Example.from_dict` turn it into JSON-able
data and back for snapshots.

Which loss an example gets follows from its ``signal``:

=============  =========  ===================================================  ===============
signal         kind       what is learned                                      ``target``
=============  =========  ===================================================  ===============
``label``      predict    cross-entropy towards ``target`` (classify head)     the label
``correction`` predict    same, when the correction is an integer label        the parsed int
``correction`` generate   teacher-forced likelihood of ``correction`` (lm)     ``None``
``thumbs``     either     preference on the served output (KTO or RWL)         ``None``
``rating``     either     same; 4-5 desirable, 1-2 undesirable, 3 neutral      ``None``
=============  =========  ===================================================  ===============

Example:
    >>> from cl.events import FeedbackEvent, RequestEvent
    >>> req = RequestEvent(request_id="r1", kind="predict", input={"features": [0.5, -1.0]},
    ...                    output={"label": 2}, model_version="3", arm="champion")
    >>> ex = Example.from_join(req, FeedbackEvent(request_id="r1", correction="1", event_id="f1"))
    >>> ex.signal, ex.target, ex.served_label, ex.user_error
    ('correction', 1, 2, 1)
    >>> Example.from_dict(ex.to_dict()) == ex
    True
    >>> Example.from_join(req, FeedbackEvent(request_id="r1", correction="cat"))
    Traceback (most recent call last):
    ...
    ValueError: correction 'cat' on a predict request is not a class label; send {"label": <int>} ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cl.events import FEEDBACK_SIGNALS, FeedbackEvent, RequestEvent
from cl.model.config import ModelConfig
from cl.model.tokenizer import ByteTokenizer, Tokenizer

__all__ = ["Example", "ModelBatch", "check_example", "encode_examples"]


@dataclass(frozen=True)
class Example:
    """One trainable feedback event joined to its request.

    Attributes:
        event_id: The feedback event's id (the dedupe key).
        request_id: The request the feedback rates.
        kind: ``"predict"`` (classify head) or ``"generate"`` (lm head).
        signal: ``"label"``, ``"correction"``, ``"thumbs"`` or ``"rating"``.
        features: The numeric input, or ``None`` for a text input.
        text: The text input (prompt), or ``None`` for a feature input.
        served_label: The label the service answered (predict), else ``None``.
        served_text: The text the service answered (generate), else ``None``.
        target: The correct label (a label, or a predict correction), else ``None``.
        correction: The wanted text (a generate correction), else ``None``.
        desirable: ``True``/``False`` for thumbs and ratings (3 stars: ``None``), else ``None``.
        user_id: Who gave the feedback (or, failing that, who asked), if known.
        model_version: The version that served the request.
        ts: The feedback's time, unix seconds.
    """

    event_id: str
    request_id: str
    kind: str
    signal: str
    features: tuple[float, ...] | None = None
    text: str | None = None
    served_label: int | None = None
    served_text: str | None = None
    target: int | None = None
    correction: str | None = None
    desirable: bool | None = None
    user_id: str | None = None
    model_version: str = ""
    ts: float = 0.0

    @classmethod
    def from_join(cls, request: RequestEvent, feedback: FeedbackEvent) -> Example:
        """Join a feedback event to the request it rates.

        Args:
            request: The served request from ``cl.requests``.
            feedback: The user's feedback from ``cl.feedback``.

        Returns:
            The example; a 3-star rating gives one with ``desirable=None`` (nothing to learn,
            but the learner still counts it).

        Raises:
            ValueError: The pair cannot be trained on; the message names the field and the
                fix, and is meant as the dead letter's reason.
        """
        if request.request_id != feedback.request_id:
            raise ValueError(
                f"feedback.request_id {feedback.request_id!r} does not match request.request_id "
                f"{request.request_id!r}; join feedback to the request it names"
            )
        signal = feedback.signal
        target: int | None = None
        correction: str | None = None
        if request.kind == "predict":
            if signal == "label":
                target = feedback.label
            elif signal == "correction":
                target = _parse_label(feedback.correction)
        elif request.input.text is None:
            raise ValueError(
                f"generate request {request.request_id!r} has a features input; generation needs "
                "a text prompt, so log generate requests with input.text"
            )
        elif signal == "label":
            raise ValueError(
                f"label {feedback.label} rates a generate request {request.request_id!r}; "
                'labels are for predict requests, send {"correction": "<wanted text>"} instead'
            )
        elif signal == "correction":
            correction = feedback.correction
        features = request.input.features
        return cls(
            event_id=feedback.event_id,
            request_id=request.request_id,
            kind=request.kind,
            signal=signal,
            features=None if features is None else tuple(float(v) for v in features),
            text=request.input.text,
            served_label=request.output.label,
            served_text=request.output.text,
            target=target,
            correction=correction,
            desirable=feedback.desirable,
            user_id=feedback.user_id if feedback.user_id is not None else request.user_id,
            model_version=request.model_version,
            ts=float(feedback.ts),
        )

    @property
    def is_preference(self) -> bool:
        """Whether this is a thumbs / rating on the served output (else a supervised target)."""
        return self.signal in ("thumbs", "rating")

    @property
    def trainable(self) -> bool:
        """Whether there is anything to learn (False only for a neutral 3-star rating)."""
        return not self.is_preference or self.desirable is not None

    @property
    def user_error(self) -> int | None:
        """The error the user experienced with the served output: 1 wrong, 0 right.

        A label target counts ``served_label != target``, a generate correction
        ``served_text != correction``, a thumbs / rating ``not desirable``; a 3-star rating
        says nothing (``None``).
        """
        if self.target is not None:
            return int(self.served_label != self.target)
        if self.correction is not None:
            return int(self.served_text != self.correction)
        if self.desirable is None:
            return None
        return int(not self.desirable)

    @property
    def replay_label(self) -> int | str:
        """The class a class-balanced replay buffer files this example under.

        The target label for supervised classification, ``"desirable"`` /
        ``"undesirable"`` for preferences and ``"correction"`` for generate corrections
        (strings, so that ``True`` never shares a class with label ``1``).
        """
        if self.target is not None:
            return self.target
        if self.is_preference:
            return "desirable" if self.desirable else "undesirable"
        return "correction"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able data (``features`` as a list) that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        if self.features is not None:
            out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        """Rebuild an example from :meth:`to_dict` output.

        Raises:
            ValueError: Unknown or missing keys; the message lists them.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        required = {"event_id", "request_id", "kind", "signal"}
        unknown, missing = sorted(set(data) - known), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(
                f"not an Example dict: unknown keys {unknown}, missing keys {missing}; "
                "pass the output of Example.to_dict()"
            )
        values = dict(data)
        if values.get("features") is not None:
            values["features"] = tuple(float(v) for v in values["features"])
        return cls(**values)


def _parse_label(correction: str | None) -> int:
    """A predict correction as a class label; raise naming the value otherwise."""
    text = (correction or "").strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(
            f"correction {correction!r} on a predict request is not a class label; "
            'send {"label": <int>} (or a correction that is a non-negative integer such as "2")'
        )
    return int(text)


def check_example(ex: Any, config: ModelConfig) -> str | None:
    """Why a model with ``config`` cannot learn from ``ex``, or ``None`` if it can.

    The learner skips such examples and reports the reason, for the dead-letter topic.

    Args:
        ex: The candidate example.
        config: The model's configuration (``n_features``, ``n_labels``).

    Returns:
        A reason naming the field and the fix, or ``None``.
    """
    if not isinstance(ex, Example):
        return f"expected an Example, got {type(ex).__name__}; build one with Example.from_join"
    if ex.kind not in ("predict", "generate"):
        return f"kind {ex.kind!r} is unknown; use 'predict' or 'generate'"
    if ex.signal not in FEEDBACK_SIGNALS:
        return f"signal {ex.signal!r} is unknown; use one of {', '.join(FEEDBACK_SIGNALS)}"
    if ex.kind == "generate":
        if ex.text is None:
            return "a generate example needs a text prompt (input.text); features cannot prompt the lm head"
        if ex.target is not None:
            return f"label {ex.target} on a generate request; send a correction text instead"
        if (ex.served_text if ex.is_preference else ex.correction) in (None, ""):
            what = "served text" if ex.is_preference else "correction"
            return f"the {what} is empty, so there is no output to learn from"
        return None
    if (ex.features is None) == (ex.text is None):
        return "a predict example needs exactly one of features or text"
    if ex.features is not None:
        if len(ex.features) != config.n_features:
            return (
                f"features has {len(ex.features)} values but the model takes n_features="
                f"{config.n_features}; send vectors of that length"
            )
        if not all(math.isfinite(v) for v in ex.features):
            return "features contains NaN or infinity; send finite numbers"
    label, what = (ex.served_label, "served label") if ex.is_preference else (ex.target, "label")
    if label is None or isinstance(label, bool) or not isinstance(label, int):
        return f"{what} is missing or not an int ({label!r})"
    if not 0 <= label < config.n_labels:
        return (
            f"{what} {label} is out of range: the model has n_labels={config.n_labels} "
            f"(labels 0..{config.n_labels - 1}); fix the {what} or the model's n_labels"
        )
    return None


# ---- from examples to model inputs ---------------------------------------------------


@dataclass(frozen=True)
class ModelBatch:
    """Rows of one input kind, ready for one forward pass.

    Attributes:
        rows: Positions of these rows in the list given to :func:`encode_examples`.
        head: ``"classify"`` or ``"lm"``.
        tokens: ``(B, T)`` int64 ids (right-padded), or ``None`` for feature rows.
        features: ``(B, n_features)`` float32, or ``None`` for token rows.
        targets: classify: ``(B,)`` int64 label to score (target, or served label for a
            preference); lm: ``(B, T)`` int64 next-token ids.
        mask: ``(B, T)`` bool, True where ``targets`` is a token of the output (lm), else ``None``.
        preference: ``(B,)`` bool, True for thumbs / rating rows.
        desirable: ``(B,)`` bool preference label (False for supervised rows).
    """

    rows: list[int]
    head: str
    tokens: torch.Tensor | None
    features: torch.Tensor | None
    targets: torch.Tensor
    mask: torch.Tensor | None
    preference: torch.Tensor
    desirable: torch.Tensor


def encode_examples(
    examples: Sequence[Example], max_seq_len: int, tokenizer: Tokenizer | None = None
) -> list[ModelBatch]:
    """Group trainable examples by input kind and encode each group as one batch.

    Feature predicts, text predicts and generates go to separate batches (they need
    separate forward passes). Texts are byte-tokenized with BOS, as served. A generate
    row is ``BOS + prompt + output`` teacher-forced, where the output is the correction
    followed by EOS (the user's whole answer) or the served text (without EOS: whether
    generation stopped there is unknown). Too long a row keeps the output's start and
    the prompt's end; classify text keeps its first ``max_seq_len - 1`` tokens (CLS).

    Args:
        examples: Trainable examples (the learner checked them against the model).
        max_seq_len: The model's ``max_seq_len``.
        tokenizer: The model's tokenizer (``model.tokenizer``); the byte tokenizer by default.

    Returns:
        One :class:`ModelBatch` per input kind present: features, text, generate.
    """
    tok = tokenizer or ByteTokenizer()
    groups: dict[str, list[int]] = {"features": [], "text": [], "lm": []}
    for i, ex in enumerate(examples):
        kind = "lm" if ex.kind == "generate" else "features" if ex.features is not None else "text"
        groups[kind].append(i)
    out = []
    for kind, rows in groups.items():
        if not rows:
            continue
        exs = [examples[i] for i in rows]
        pref = torch.tensor([e.is_preference for e in exs])  # (B,)
        good = torch.tensor([bool(e.desirable) for e in exs])  # (B,)
        if kind == "lm":
            tokens, targets, mask = _lm_rows(exs, tok, max_seq_len)
            out.append(ModelBatch(rows, "lm", tokens, None, targets, mask, pref, good))
            continue
        labels = torch.tensor([e.served_label if e.is_preference else e.target for e in exs])  # (B,)
        if kind == "features":
            feats = torch.tensor([e.features for e in exs], dtype=torch.float32)  # (B, F)
            out.append(ModelBatch(rows, "classify", None, feats, labels, None, pref, good))
        else:
            tokens = tok.batch([e.text or "" for e in exs], max_len=max_seq_len - 1)  # (B, T)
            out.append(ModelBatch(rows, "classify", tokens, None, labels, None, pref, good))
    return out


def _lm_rows(
    exs: Sequence[Example], tok: Tokenizer, max_seq_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing inputs ``(B, T)``, next-token targets ``(B, T)`` and output mask ``(B, T)``."""
    seqs, starts = [], []
    bos = [] if tok.bos_id is None else [tok.bos_id]
    for e in exs:
        answer = e.served_text if e.is_preference else e.correction
        output = tok.encode(answer or "", bos=False, eos=not e.is_preference)[: max_seq_len - 1]
        room = max_seq_len + 1 - len(output) - len(bos)  # prompt tokens that fit after BOS
        prompt = tok.encode(e.text or "", bos=False)
        prompt = prompt[len(prompt) - room :] if len(prompt) > room else prompt
        if not bos and not prompt:  # no BOS and no prompt: the first output token has nothing to follow
            prompt = output[:1]
            output = output[1:]
        seqs.append([*bos, *prompt, *output])
        starts.append(len(bos) + len(prompt))  # index in seq of the first output token
    width = max(len(s) for s in seqs) - 1
    tokens = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)  # (B, T)
    targets = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T); read only under the mask
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)  # (B, T)
    for r, (s, start) in enumerate(zip(seqs, starts)):
        n = len(s) - 1
        tokens[r, :n] = torch.tensor(s[:-1])
        targets[r, :n] = torch.tensor(s[1:])
        mask[r, start - 1 : n] = True  # position t predicts s[t + 1]
    return tokens, targets, mask
