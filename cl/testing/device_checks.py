"""Checks that a replica serves and a learner learns on a device: the CUDA test and ``bench.gpu_check``.

Both run the same two checks, so what the device check reports is what the test asserts:

* :func:`check_serving` places a replica's model (``place_for_serving``) on the device in the
  serving dtype, loads float32 CPU adapters into its slots (they must land on the model's device
  and dtype), and compares :mod:`cl.serving.inference`'s predictions, and the logits, with the
  float32 CPU model's, within the dtype's tolerance; a generate batch must run too.
* :func:`check_learning` places a learner's model (``place_for_training``: bfloat16 base, float32
  adapters) and takes a few :class:`~cl.learning.online_learner.OnlineLearner` steps: the loss is
  finite, the adapter gradients are float32 and not all zero, the adapter moved, and the snapshot
  is float32 on the CPU.

On the CPU (``bench.gpu_check --dry-run``) the learning check casts the base to bfloat16 and wraps
the steps in CPU autocast itself, so the same mixed-precision path runs without a GPU.

Example:
    >>> import torch
    >>> check_serving(torch.device("cpu"), torch.float32).passed
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cl.config import LearnerConfig, ModelSection
from cl.learning.example import Example
from cl.learning.online_learner import OnlineLearner
from cl.model.base_model import build_base_model
from cl.serving.inference import GenerateItem, PredictItem, generate_batch, predict_batch
from cl.serving.placement import TRAINING_DTYPE, place_for_serving, place_for_training

__all__ = ["SECTION", "CheckResult", "check_learning", "check_serving", "serving_tolerance"]

SECTION = ModelSection(preset="tiny", seed=0, n_features=6, n_labels=3, lora_rank=4)
"""The tiny base both checks build (1-2 layers: seconds on a CPU)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its name, pass or fail, what it found and its figures."""

    name: str
    passed: bool
    detail: str
    figures: dict[str, float] = field(default_factory=dict)


def serving_tolerance(dtype: torch.dtype) -> float:
    """Largest ``|logits - ref| / |ref|`` (norms) accepted for a model in ``dtype`` against float32.

    Half precision keeps 8 (bfloat16) or 11 (float16) mantissa bits: a rounding of ~4e-3 per op,
    compounding over the layers; float32 on another device differs by reduction order only.
    """
    return {torch.bfloat16: 5e-2, torch.float16: 1e-2}.get(dtype, 1e-3)


def _random_adapter(template: dict[str, torch.Tensor], seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32) * scale for k, v in template.items()}


def check_serving(device: torch.device, dtype: torch.dtype, section: ModelSection = SECTION) -> CheckResult:
    """A replica's model on ``device`` in ``dtype`` answers like the float32 CPU model.

    Args:
        device: Where the replica runs.
        dtype: The serving dtype (``serve.dtype`` resolved).
        section: The ``[model]`` to build.

    Returns:
        The :class:`CheckResult`; its figures are ``logits_rel_err``, ``max_prob_diff`` and
        ``label_agreement``.
    """
    slots = 2
    ref = build_base_model(section, n_adapter_slots=slots)  # float32, CPU
    model = place_for_serving(build_base_model(section, n_adapter_slots=slots), device, dtype)
    for slot in range(slots):
        state = _random_adapter(ref.adapter_state(slot), seed=slot + 1)
        ref.load_adapter_state(slot, state)
        model.load_adapter_state(slot, state)  # float32 CPU tensors into a slot on the device
    problems = []
    banks = {k: t for k, t in model.adapter_state(0).items()}
    misplaced = {k: (str(t.device), str(t.dtype)) for k, t in banks.items() if t.device.type != device.type}
    if misplaced:
        problems.append(f"adapter tensors not on {device}: {misplaced}")
    low = {k: str(t.dtype) for k, t in banks.items() if not k.endswith("balance_bias") and t.dtype != dtype}
    if low:
        problems.append(f"adapter tensors not in {dtype}: {low}")
    if any(t.dtype != torch.float32 for k, t in banks.items() if k.endswith("balance_bias")):
        problems.append("the routers' balance bias left float32")

    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, section.n_features, generator=g)
    texts = ["hello", "a longer sentence to classify", "x", "GPU replicas", "bf16", "?"]
    ids = [0, 1, -1, 0, 1, -1]
    items = [PredictItem(features=tuple(f.tolist()), slot=s) for f, s in zip(features, ids)]
    items += [PredictItem(text=t, slot=s) for t, s in zip(texts, ids)]
    want, got = predict_batch(ref, items), predict_batch(model, items)
    prob_diff = max(abs(a - b) for w, h in zip(want, got) for a, b in zip(w.probabilities, h.probabilities))
    agreement = sum(w.label == h.label for w, h in zip(want, got)) / len(items)

    with torch.inference_mode():
        ref_logits = ref(features=features, adapter_ids=torch.tensor(ids), head="classify")  # (B, C)
        dev_logits = model(features=features.to(device, dtype), adapter_ids=torch.tensor(ids, device=device))
    rel = ((dev_logits.float().cpu() - ref_logits).norm() / ref_logits.norm()).item()
    tol = serving_tolerance(dtype)
    if not rel <= tol:
        problems.append(f"logits differ from float32 CPU by {rel:.2e} (relative), above {tol:.0e}")

    prompts = [GenerateItem(prompt=t, slot=s, max_new_tokens=4) for t, s in zip(texts[:3], ids[:3])]
    texts_out = generate_batch(model, prompts)
    if len(texts_out) != len(prompts) or not all(isinstance(t, str) for t in texts_out):
        problems.append(f"generate_batch answered {texts_out!r} for {len(prompts)} prompts")
    figures = {"logits_rel_err": rel, "tolerance": tol, "max_prob_diff": prob_diff, "label_agreement": agreement}
    detail = "; ".join(problems) or (
        f"logits within {rel:.1e} of float32 CPU (tolerance {tol:.0e}), probabilities within {prob_diff:.1e}, "
        f"{agreement:.0%} labels agree, generate ran"
    )
    return CheckResult(
        f"serving on {device.type} in {str(dtype).removeprefix('torch.')}", not problems, detail, figures
    )


def _examples(section: ModelSection, n: int, seed: int) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        features = tuple(torch.randn(section.n_features, generator=g).tolist())
        target = int(torch.randint(0, section.n_labels, (1,), generator=g))
        out.append(Example(f"e{seed}-{i}", f"r{seed}-{i}", "predict", "label", features=features, target=target))
    out.append(Example(f"t{seed}", f"rt{seed}", "predict", "label", text="some text", target=1))
    out.append(
        Example(
            f"g{seed}", f"rg{seed}", "generate", "thumbs", text="hi", served_text=" there", desirable=bool(seed % 2)
        )
    )
    return out


def check_learning(device: torch.device, steps: int = 3, section: ModelSection = SECTION) -> CheckResult:
    """A learner on ``device`` takes mixed-precision steps with float32 adapter masters.

    Args:
        device: Where the learner runs (CUDA: bfloat16 autocast; CPU: the same under CPU autocast).
        steps: Optimizer steps to take.
        section: The ``[model]`` to build.

    Returns:
        The :class:`CheckResult`; its figures are ``loss`` (the last step's) and ``adapter_change``.
    """
    model = place_for_training(build_base_model(section, n_adapter_slots=1), device)
    cpu_autocast = device.type != "cuda"
    if cpu_autocast:  # what place_for_training does on CUDA, so that the dry run covers the same path
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(TRAINING_DTYPE)
    learner = OnlineLearner(model, LearnerConfig(batch_size=8, replay_ratio=0.0, drift_detector="none"))
    before = {k: v.clone() for k, v in model.adapter_state(0).items()}
    problems, losses = [], []
    for step in range(steps):
        if cpu_autocast:
            with torch.autocast(device_type="cpu", dtype=TRAINING_DTYPE):
                report = learner.learn(_examples(section, 8, seed=step))
        else:
            report = learner.learn(_examples(section, 8, seed=step))
        losses.append(report.loss)
        if report.rejected:
            problems.append(f"examples rejected: {report.rejected}")
    params = model.adapter_parameters()
    base = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    grads = [p.grad for p in params if p.grad is not None]
    if any(p.dtype != torch.float32 or p.device.type != device.type for p in params):
        problems.append("adapter parameters are not float32 on the device")
    if any(p.dtype != TRAINING_DTYPE for p in base):
        problems.append(f"the frozen base is not {TRAINING_DTYPE}")
    if not grads or any(g.dtype != torch.float32 for g in grads):
        problems.append(f"adapter gradients are not float32: {sorted({str(g.dtype) for g in grads})}")
    elif not all(bool(torch.isfinite(g).all()) for g in grads) or not any(bool(g.abs().sum() > 0) for g in grads):
        problems.append("adapter gradients are not finite, or all zero")
    if not all(loss == loss and abs(loss) != float("inf") for loss in losses):
        problems.append(f"losses are not finite: {losses}")
    after = model.adapter_state(0)
    change = max((after[k].float().cpu() - before[k].float().cpu()).abs().max().item() for k in before)
    if not change > 0:
        problems.append("the adapter did not change")
    snapshot = learner.state_dict()["adapter"]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in snapshot.values()):
        problems.append("the snapshot's adapter is not float32 on the CPU")
    figures = {"loss": losses[-1], "adapter_change": change}
    detail = "; ".join(problems) or (
        f"{steps} steps, losses {', '.join(f'{x:.3f}' for x in losses)}; float32 adapter grads, "
        f"{str(TRAINING_DTYPE).removeprefix('torch.')} base, adapter moved by up to {change:.1e}, "
        "snapshot float32 on CPU"
    )
    return CheckResult(f"learning on {device.type} (bf16 autocast)", not problems, detail, figures)
