"""Batched inference for serving: many requests, many adapter versions, one forward pass.

A serving replica validates each request on its own (:func:`check_predict`,
:func:`check_generate`), resolves its model version to an adapter slot, then runs the
whole batch at once with a per-row adapter id, so the champion's and the challenger's
requests share one forward pass:

* :func:`predict_batch` classifies feature vectors and texts (one forward per input kind),
  returning the label and the class probabilities of every row.
* :func:`generate_batch` continues prompts with the ``lm`` head, one ``generate`` call per
  group of rows that share their generation parameters (prompts left-padded).

Every check raises :class:`InputError`, a ``ValueError`` that names the request field,
the limit and the fix, so the HTTP edge can answer 422 pointing at the field.

Example:
    >>> from cl.model.base_model import build_base_model
    >>> from cl.config import ModelSection
    >>> model = build_base_model(ModelSection(n_features=3, n_labels=2), n_adapter_slots=2)
    >>> limits = Limits(max_text_chars=100, max_new_tokens=8)
    >>> items = [PredictItem(features=(0.5, -1.0, 2.0)), PredictItem(text="hello", slot=1)]
    >>> for item in items:
    ...     check_predict(item, model.config, limits)
    >>> [len(p.probabilities) for p in predict_batch(model, items)]
    [2, 2]
    >>> check_predict(PredictItem(features=(1.0,)), model.config, limits)
    Traceback (most recent call last):
    ...
    cl.serving.inference.InputError: features: got 1 value, but the model reads n_features=3; send exactly 3 numbers
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cl.config import ServeConfig
from cl.model import ByteTokenizer, ModelConfig, MoETransformer
from cl.model.tokenizer import Tokenizer

__all__ = [
    "GenerateItem",
    "InputError",
    "Limits",
    "PredictItem",
    "Prediction",
    "check_generate",
    "check_predict",
    "generate_batch",
    "predict_batch",
]

_BYTES = ByteTokenizer()


class InputError(ValueError):
    """One request field is not servable; the message names the field, the limit and the fix.

    Attributes:
        field: The request field, e.g. ``"features"`` or ``"max_new_tokens"``.
        message: What is wrong and how to fix it (without the field name).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.field, self.message))


@dataclass(frozen=True)
class Limits:
    """Request limits a deployment enforces on top of the model's own (``[serve]`` config).

    Attributes:
        max_text_chars: Longest ``text`` / ``prompt``, in characters.
        max_new_tokens: Most tokens one generate request may ask for.
    """

    max_text_chars: int = 4096
    max_new_tokens: int = 256

    @classmethod
    def from_serve(cls, serve: ServeConfig) -> Limits:
        """The limits in ``config.serve``."""
        return cls(max_text_chars=serve.max_text_chars, max_new_tokens=serve.max_new_tokens)


@dataclass(frozen=True)
class PredictItem:
    """One classification request: exactly one of ``text`` or ``features``, and its adapter slot.

    Attributes:
        text: Text to classify.
        features: Numeric feature vector of length ``n_features``.
        slot: Adapter slot, ``-1`` for the base alone.
    """

    text: str | None = None
    features: Sequence[float] | None = None
    slot: int = -1


@dataclass(frozen=True)
class GenerateItem:
    """One generation request and its adapter slot.

    Attributes:
        prompt: Text to continue.
        slot: Adapter slot, ``-1`` for the base alone.
        max_new_tokens: At most this many new tokens (bytes).
        temperature: 0 for greedy decoding, > 0 to sample.
        top_p: Nucleus sampling threshold in ``(0, 1]``.
        seed: With sampling, the same seed gives the same text.
    """

    prompt: str
    slot: int = -1
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Prediction:
    """The classification of one row.

    Attributes:
        label: The most probable class.
        probabilities: Probability of each class, indexed by label.
    """

    label: int
    probabilities: list[float]


# ---- validation ---------------------------------------------------------------------


def _check_text(field: str, text: object, limits: Limits, tokenizer: Tokenizer) -> int:
    """Check a text field's type and length; returns its token count with BOS."""
    if not isinstance(text, str):
        raise InputError(field, f"expected a string, got {type(text).__name__}")
    if len(text) > limits.max_text_chars:
        raise InputError(
            field,
            f"{len(text)} characters exceeds the limit of {limits.max_text_chars} (serve.max_text_chars); shorten it",
        )
    return tokenizer.count(text)


def _unit(tokenizer: Tokenizer) -> str:
    return "UTF-8 bytes + BOS" if isinstance(tokenizer, ByteTokenizer) else "the checkpoint's tokenizer"


def check_predict(item: PredictItem, model_config: ModelConfig, limits: Limits, tokenizer: Tokenizer = _BYTES) -> None:
    """Check that ``item`` can be classified by a model with ``model_config``.

    Args:
        item: The request (its ``slot`` is not checked here).
        model_config: The serving model's config (``n_features``, ``max_seq_len``).
        limits: The deployment's limits.
        tokenizer: The model's tokenizer (counts the text's tokens).

    Raises:
        InputError: Neither or both inputs; a feature count other than ``n_features`` or
            a non-finite value; a text over ``max_text_chars`` characters or over the
            model's token budget.
    """
    if (item.text is None) == (item.features is None):
        got = "both" if item.text is not None else "neither"
        raise InputError("text", f"set exactly one of 'text' or 'features'; got {got}")
    if item.features is not None:
        n = model_config.n_features
        if n == 0:
            raise InputError("features", "this model reads no features (model.n_features=0); send 'text' instead")
        if len(item.features) != n:
            got = f"{len(item.features)} value" + ("" if len(item.features) == 1 else "s")
            raise InputError("features", f"got {got}, but the model reads n_features={n}; send exactly {n} numbers")
        for i, value in enumerate(item.features):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"features[{i}]", f"{value!r} is not a finite number; impute missing values first")
        return
    tokens = _check_text("text", item.text, limits, tokenizer)
    cls = model_config.cls_id is not None
    budget = model_config.max_seq_len - cls  # classify prepends a CLS token where there is one
    if tokens > budget:
        raise InputError(
            "text",
            f"{tokens} tokens ({_unit(tokenizer)}) exceeds the model's limit of {budget} "
            f"(max_seq_len={model_config.max_seq_len}{' minus CLS' if cls else ''}); shorten it to at most "
            + (f"{budget - 1} bytes" if isinstance(tokenizer, ByteTokenizer) else f"{budget} tokens"),
        )


def check_generate(
    item: GenerateItem, model_config: ModelConfig, limits: Limits, tokenizer: Tokenizer = _BYTES
) -> None:
    """Check that ``item`` can be served by a model with ``model_config``.

    Args:
        item: The request (its ``slot`` is not checked here).
        model_config: The serving model's config (``max_seq_len``).
        limits: The deployment's limits.
        tokenizer: The model's tokenizer (counts the prompt's tokens).

    Raises:
        InputError: ``max_new_tokens`` out of ``[1, limits.max_new_tokens]``; a bad
            ``temperature`` or ``top_p``; a prompt over ``max_text_chars`` characters, or
            prompt tokens plus ``max_new_tokens`` over ``max_seq_len``.
    """
    m = item.max_new_tokens
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise InputError("max_new_tokens", f"{m!r} is not a token count; use an int >= 1")
    if m > limits.max_new_tokens:
        raise InputError(
            "max_new_tokens",
            f"{m} exceeds the limit of {limits.max_new_tokens} (serve.max_new_tokens); ask for fewer",
        )
    if not (isinstance(item.temperature, (int, float)) and math.isfinite(item.temperature) and item.temperature >= 0):
        raise InputError("temperature", f"{item.temperature!r} must be a finite number >= 0 (0 = greedy)")
    if not (isinstance(item.top_p, (int, float)) and 0 < item.top_p <= 1):
        raise InputError("top_p", f"{item.top_p!r} must lie in (0, 1]; use 1.0 to sample from every token")
    tokens = _check_text("prompt", item.prompt, limits, tokenizer)
    if tokens + m > model_config.max_seq_len:
        room = model_config.max_seq_len - tokens
        fix = f"ask for at most {room} new tokens or shorten the prompt" if room >= 1 else "shorten the prompt"
        raise InputError(
            "prompt",
            f"{tokens} prompt tokens ({_unit(tokenizer)}) + max_new_tokens={m} exceeds the model's "
            f"max_seq_len={model_config.max_seq_len}; {fix}",
        )


# ---- batched forward passes -----------------------------------------------------------


def _adapter_ids(slots: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(slots), dtype=torch.long, device=device)  # (B,)


def predict_batch(model: MoETransformer, items: Sequence[PredictItem]) -> list[Prediction]:
    """Classify every item in one forward per input kind, each row with its own adapter.

    Items must have passed :func:`check_predict`.

    Args:
        model: The serving model; its adapter slots hold what the items' ``slot`` name.
        items: Requests, in any mix of features and text and of slots.

    Returns:
        One :class:`Prediction` per item, in order.
    """
    out: list[Prediction | None] = [None] * len(items)
    feature_rows = [i for i, it in enumerate(items) if it.features is not None]
    text_rows = [i for i, it in enumerate(items) if it.features is None]
    with torch.inference_mode():
        if feature_rows:
            x = torch.tensor(
                [list(map(float, items[i].features)) for i in feature_rows],  # type: ignore[arg-type]
                dtype=model.dtype,
                device=model.device,
            )  # (B, F)
            ids = _adapter_ids([items[i].slot for i in feature_rows], model.device)
            _fill(out, feature_rows, model(features=x, adapter_ids=ids, head="classify"))
        if text_rows:
            tokens = model.tokenizer.batch([items[i].text for i in text_rows], pad_side="right")  # (B, T)
            ids = _adapter_ids([items[i].slot for i in text_rows], model.device)
            _fill(out, text_rows, model(tokens=tokens, adapter_ids=ids, head="classify"))
    return out  # type: ignore[return-value]


def _fill(out: list[Prediction | None], rows: list[int], logits: torch.Tensor) -> None:
    probs = torch.softmax(logits.float(), dim=-1)  # (B, n_labels)
    labels = probs.argmax(-1).tolist()
    for row, label, p in zip(rows, labels, probs.tolist()):
        out[row] = Prediction(label=int(label), probabilities=[min(1.0, max(0.0, float(v))) for v in p])


def _generation_key(index: int, item: GenerateItem) -> tuple[object, ...]:
    """Rows with equal keys are generated together.

    Greedy rows group by ``max_new_tokens`` alone. Seeded sampling runs alone, so that a
    seed gives the same text whatever else is in the batch; unseeded sampling groups by
    its parameters.
    """
    if item.temperature == 0:
        return (item.max_new_tokens, 0.0, 1.0, None)
    if item.seed is not None:
        return (item.max_new_tokens, item.temperature, item.top_p, ("alone", index))
    return (item.max_new_tokens, item.temperature, item.top_p, None)


def generate_batch(model: MoETransformer, items: Sequence[GenerateItem]) -> list[str]:
    """Continue every prompt, batching rows that share generation parameters.

    Items must have passed :func:`check_generate`. Each group is one left-padded
    ``generate`` call with a per-row adapter id.

    Args:
        model: The serving model; its adapter slots hold what the items' ``slot`` name.
        items: Requests, in any mix of slots and parameters.

    Returns:
        The generated text of each item (without its prompt), in order.
    """
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(_generation_key(i, item), []).append(i)
    out = [""] * len(items)
    with torch.inference_mode():
        for rows in groups.values():
            first = items[rows[0]]
            tokens = model.tokenizer.batch([items[i].prompt for i in rows], pad_side="left")  # (B, T)
            seq = model.generate(
                tokens,
                max_new_tokens=first.max_new_tokens,
                adapter_ids=_adapter_ids([items[i].slot for i in rows], model.device),
                temperature=float(first.temperature),
                top_p=float(first.top_p),
                seed=first.seed if first.temperature > 0 else None,
            )  # (B, T + n)
            new = seq[:, tokens.shape[1] :].cpu()  # (B, n)
            for row, ids in zip(rows, new):
                out[row] = model.tokenizer.decode(ids)
    return out
