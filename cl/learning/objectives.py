"""Feedback objectives: how a batch of scored outputs becomes one loss per example.

Learning from feedback takes two steps:

1. **Score.** Run the model and read off how likely each row's output ``y`` is:
   :func:`score_labels` for the classify head (``y`` is one label) and
   :func:`score_tokens` for the lm head (``y`` is a sequence of tokens, teacher-forced).
   For preference rows also run the frozen *reference*, which is the same model
   with adapter id ``-1`` (base only), under ``no_grad`` in eval mode, and pass its
   logits along. The result is a :class:`Scored` batch.
2. **Loss.** A :class:`FeedbackObjective` maps a ``Scored`` batch to per-example
   losses ``(B,)``. There are three:

   - :class:`SupervisedLoss`: cross-entropy towards a label, or towards a corrected
     text (mean over the correction's tokens; the prompt carries no loss).
   - :class:`KTOLoss`: Kahneman-Tversky optimisation (Ethayarajh et al., 2024) for
     unpaired thumbs / ratings on a served output.
   - :class:`RewardWeightedLoss`: likelihood for desirable outputs, unlikelihood for
     undesirable ones; the simpler alternative (``preference_loss="rwl"``).

Example:
    At the start the adapter adds nothing, so policy and reference agree, the implied
    reward is 0 and every KTO loss is ``1 - sigmoid(0) = 0.5``:

    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> scored = score_labels(logits, torch.tensor([0, 2]), ref_logits=logits,
    ...                       desirable=torch.tensor([True, False]))
    >>> KTOLoss(beta=0.1)(scored)
    tensor([0.5000, 0.5000])
    >>> SupervisedLoss()(scored).round(decimals=3)
    tensor([0.1700, 1.5510])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "PREFERENCE_LOSSES",
    "FeedbackObjective",
    "KTOLoss",
    "RewardWeightedLoss",
    "Scored",
    "SupervisedLoss",
    "make_preference_loss",
    "score_labels",
    "score_tokens",
]


@dataclass(frozen=True)
class Scored:
    """Log-likelihoods of each row's output, under the policy and (optionally) the reference.

    A classify row is a sequence of one token (its label), so both heads share one shape.

    Attributes:
        token_logp: ``(B, T)`` ``log pi(y_t | x, y_<t)`` under the policy (with grad);
            0 where ``mask`` is False.
        mask: ``(B, T)`` bool, True on the output's tokens.
        desirable: ``(B,)`` bool, the preference label (ignored by supervised losses).
        ref_logp: ``(B,)`` ``log pi_ref(y | x)`` summed over the output, no grad.
        kl: ``(B,)`` estimate of ``KL(pi(.|x) || pi_ref(.|x))``, no grad: exact over the
            labels (classify); the sum of per-token KLs along ``y`` (lm).
    """

    token_logp: torch.Tensor
    mask: torch.Tensor
    desirable: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    kl: torch.Tensor | None = None

    @property
    def logp(self) -> torch.Tensor:
        """``(B,)`` ``log pi(y | x)``: the token log-probabilities summed over the output."""
        return (self.token_logp * self.mask).sum(-1)

    def select(self, rows: torch.Tensor) -> Scored:
        """The rows picked by ``rows`` (a ``(B,)`` bool mask or an index tensor)."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows]

        return Scored(self.token_logp[rows], self.mask[rows], pick(self.desirable), pick(self.ref_logp), pick(self.kl))


def score_labels(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ref_logits: torch.Tensor | None = None,
    desirable: torch.Tensor | None = None,
) -> Scored:
    """Score one label per row from classify logits.

    Args:
        logits: ``(B, C)`` policy logits.
        labels: ``(B,)`` int64, the label to score per row (target or served label).
        ref_logits: ``(B, C)`` reference logits, or ``None`` (no reward terms).
        desirable: ``(B,)`` bool preference labels, or ``None``.

    Returns:
        A :class:`Scored` batch with ``T == 1``.
    """
    logp = logits.float().log_softmax(-1)  # (B, C)
    token_logp = logp.gather(-1, labels[:, None])  # (B, 1)
    mask = torch.ones_like(token_logp, dtype=torch.bool)  # (B, 1)
    ref_logp = kl = None
    if ref_logits is not None:
        with torch.no_grad():
            ref = ref_logits.float().log_softmax(-1)  # (B, C)
            ref_logp = ref.gather(-1, labels[:, None])[:, 0]  # (B,)
            kl = (logp.exp() * (logp - ref)).sum(-1).clamp_min(0.0)  # (B,)
    return Scored(token_logp, mask, desirable, ref_logp, kl)


def score_tokens(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logits: torch.Tensor | None = None,
    desirable: torch.Tensor | None = None,
) -> Scored:
    """Score a teacher-forced output sequence per row from lm logits.

    Args:
        logits: ``(B, T, V)`` policy logits; position ``t`` predicts ``targets[:, t]``.
        targets: ``(B, T)`` int64 next-token ids (anything where ``mask`` is False).
        mask: ``(B, T)`` bool, True where ``targets`` is a token of the output ``y``
            (not the prompt, not padding).
        ref_logits: ``(B, T, V)`` reference logits, or ``None``.
        desirable: ``(B,)`` bool preference labels, or ``None``.

    Returns:
        A :class:`Scored` batch.
    """
    logp = logits.float().log_softmax(-1)  # (B, T, V)
    safe = targets.masked_fill(~mask, 0)  # (B, T)
    token_logp = logp.gather(-1, safe[..., None])[..., 0] * mask  # (B, T)
    ref_logp = kl = None
    if ref_logits is not None:
        with torch.no_grad():
            ref = ref_logits.float().log_softmax(-1)  # (B, T, V)
            ref_logp = (ref.gather(-1, safe[..., None])[..., 0] * mask).sum(-1)  # (B,)
            token_kl = (logp.exp() * (logp - ref)).sum(-1)  # (B, T)
            kl = (token_kl * mask).sum(-1).clamp_min(0.0)  # (B,)
    return Scored(token_logp, mask, desirable, ref_logp, kl)


@runtime_checkable
class FeedbackObjective(Protocol):
    """Maps a :class:`Scored` batch to one loss per example.

    ``needs_reference`` says whether the batch must carry ``ref_logp`` and ``kl``
    (so the caller runs the frozen reference only when it must).
    """

    needs_reference: bool

    def __call__(self, scored: Scored) -> torch.Tensor:
        """Return ``(B,)`` per-example losses (differentiable through ``token_logp``)."""
        ...


class SupervisedLoss:
    """Cross-entropy towards the given output: ``-mean_t log pi(y_t | x, y_<t)``.

    For a label that is ``-log pi(label | x)``; for a corrected text it is the mean
    negative log-likelihood of the correction's tokens (the prompt carries no loss), so
    long and short corrections weigh the same. A row without output tokens has loss 0.
    """

    needs_reference = False

    def __call__(self, scored: Scored) -> torch.Tensor:
        n = scored.mask.sum(-1).clamp_min(1)  # (B,)
        return -scored.logp / n  # (B,)

    def __repr__(self) -> str:
        return "SupervisedLoss()"


class KTOLoss:
    """Kahneman-Tversky optimisation for unpaired desirable / undesirable outputs.

    With implied reward ``r = log pi(y|x) - log pi_ref(y|x)`` and reference point
    ``z = max(0, mean_batch KL(pi || pi_ref))`` (detached), the loss is
    ``lambda_d * (1 - sigmoid(beta * (r - z)))`` for a desirable output and
    ``lambda_u * (1 - sigmoid(beta * (z - r)))`` for an undesirable one
    (Ethayarajh et al., 2024, eq. 7, written as ``lambda_y - v``). ``z`` is the batch
    mean of :attr:`Scored.kl`: the exact KL over labels for classify rows, the summed
    per-token KL along the served text for lm rows (cheaper than the paper's mismatched
    pairs, and needs no extra forward pass). Policy and reference agree at the start, so
    every loss is then ``0.5 * lambda``.

    Args:
        beta: Reward scale; larger means a sharper, earlier-saturating loss.
        lambda_desirable: Weight of desirable rows.
        lambda_undesirable: Weight of undesirable rows.
    """

    needs_reference = True

    def __init__(self, beta: float = 0.1, lambda_desirable: float = 1.0, lambda_undesirable: float = 1.0) -> None:
        problems = [
            f"{name} must be a number > 0, got {value!r}"
            for name, value in (
                ("beta", beta),
                ("lambda_desirable", lambda_desirable),
                ("lambda_undesirable", lambda_undesirable),
            )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
        ]
        if problems:
            raise ValueError("KTOLoss: " + "; ".join(problems) + " (e.g. beta=0.1, lambdas=1.0)")
        self.beta = beta
        self.lambda_desirable = lambda_desirable
        self.lambda_undesirable = lambda_undesirable

    def __call__(self, scored: Scored) -> torch.Tensor:
        if scored.ref_logp is None or scored.kl is None or scored.desirable is None:
            raise ValueError(
                "KTOLoss needs ref_logp, kl and desirable; score with ref_logits= (the model with "
                "adapter_ids=-1, under no_grad in eval mode) and desirable="
            )
        reward = scored.logp - scored.ref_logp  # (B,)
        z = scored.kl.mean().clamp_min(0.0).detach() if scored.kl.numel() else reward.new_zeros(())
        good = self.lambda_desirable * (1 - torch.sigmoid(self.beta * (reward - z)))  # (B,)
        bad = self.lambda_undesirable * (1 - torch.sigmoid(self.beta * (z - reward)))  # (B,)
        return torch.where(scored.desirable, good, bad)

    def __repr__(self) -> str:
        return (
            f"KTOLoss(beta={self.beta!r}, lambda_desirable={self.lambda_desirable!r}, "
            f"lambda_undesirable={self.lambda_undesirable!r})"
        )


class RewardWeightedLoss:
    """Likelihood for desirable outputs, unlikelihood for undesirable ones.

    Desirable: ``-log pi(y|x)`` (summed over the output's tokens). Undesirable:
    ``-sum_t log(1 - pi(y_t | x, y_<t))``, the token-level unlikelihood of Welleck et
    al. (2020). For a label (one token) that is exactly ``-log(1 - pi(y|x))``. For a
    text we use tokens rather than the whole sequence because ``pi(y|x)`` of a long
    text is tiny, so ``-log(1 - pi(y|x))`` would be ~0 and teach nothing. No reference
    model is needed; unlike KTO nothing holds the policy near the base, so use a small
    learning rate.

    Args:
        eps: Floor inside ``log(1 - p)`` so an undesirable output the model is sure of
            gives a large but finite loss.
    """

    needs_reference = False

    def __init__(self, eps: float = 1e-6) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"RewardWeightedLoss: eps must be in (0, 1), got {eps!r} (e.g. 1e-6)")
        self.eps = eps

    def __call__(self, scored: Scored) -> torch.Tensor:
        if scored.desirable is None:
            raise ValueError("RewardWeightedLoss needs desirable=; score the batch with desirable= (B,) bools")
        likelihood = -scored.logp  # (B,)
        p = scored.token_logp.exp()  # (B, T)
        unlikelihood = -(torch.log((1 - p).clamp_min(self.eps)) * scored.mask).sum(-1)  # (B,)
        return torch.where(scored.desirable, likelihood, unlikelihood)

    def __repr__(self) -> str:
        return f"RewardWeightedLoss(eps={self.eps!r})"


PREFERENCE_LOSSES: tuple[str, ...] = ("kto", "rwl")


def make_preference_loss(name: str, beta: float = 0.1) -> FeedbackObjective:
    """The preference objective named by ``LearnerConfig.preference_loss``.

    Args:
        name: ``"kto"`` or ``"rwl"``.
        beta: KTO's reward scale (``LearnerConfig.kto_beta``); ignored by ``"rwl"``.

    Raises:
        ValueError: Unknown ``name``; the message lists the valid ones.
    """
    if name == "kto":
        return KTOLoss(beta=beta)
    if name == "rwl":
        return RewardWeightedLoss()
    raise ValueError(f"preference_loss {name!r} is unknown; use one of {', '.join(PREFERENCE_LOSSES)}")
