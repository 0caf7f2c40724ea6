"""Where the model runs and in which dtype: the GPU plan, the device, the dtype, and the placing."""

from __future__ import annotations

import pytest
import torch

from cl.model.base_model import build_base_model
from cl.serving.placement import (
    GpuPlan,
    cpu_state,
    place_for_serving,
    place_for_training,
    plan_gpus,
    resolve_device,
    resolve_dtype,
    training_autocast,
)
from cl.testing.device_checks import check_serving


@pytest.mark.parametrize(
    ("num_gpus", "use_gpu", "replicas", "workers", "gpus", "want"),
    [
        ("auto", "auto", 1, 1, 0, (0.0, 0.0)),  # no GPU: today's CPU behaviour
        ("auto", "auto", 1, 1, 1, (0.5, 0.5)),  # one GPU shared by the replica and the learner
        ("auto", "auto", 2, 2, 8, (1.0, 1.0)),  # enough for a whole one each, never more
        ("auto", False, 3, 1, 1, (1 / 3, 0.0)),  # the learner stays on the CPU: the replicas share
        (1, "auto", 1, 2, 1, (1.0, 0.0)),  # nothing left for the learner: CPU
        (0.25, "auto", 2, 1, 1, (0.25, 0.5)),  # the learner gets what the replicas leave
        ("auto", True, 1, 1, 1, (0.0, 1.0)),  # an explicit whole GPU per worker comes first
        (0, True, 1, 2, 0, (0.0, 1.0)),  # explicit settings are taken as given, GPUs or not
    ],
)
def test_plan_gpus(num_gpus, use_gpu, replicas, workers, gpus, want):
    plan = plan_gpus(num_gpus, use_gpu, replicas=replicas, workers=workers, gpus_reported=gpus)
    assert plan == pytest.approx(GpuPlan(*want))


@pytest.mark.parametrize(
    ("gpus", "visible", "want"),
    [("auto", 0, "cpu"), ("auto", 1, "cuda"), (0, 4, "cpu"), (0.0, 1, "cpu"), (0.5, 1, "cuda"), (2, 2, "cuda")]
    + [(True, 1, "cuda"), (False, 1, "cpu")],
)
def test_resolve_device(gpus, visible, want):
    assert resolve_device(gpus, gpus_visible=visible) == torch.device(want)


def test_a_gpu_asked_for_but_not_visible_is_a_clear_error():
    with pytest.raises(ValueError, match=r"sees no CUDA device; set serve.num_gpus = 0"):
        resolve_device(1, gpus_visible=0)


@pytest.mark.parametrize(
    ("setting", "device", "want"),
    [
        ("auto", "cuda", torch.bfloat16),
        ("auto", "cpu", torch.float32),
        ("float16", "cuda", torch.float16),
        ("bfloat16", "cpu", torch.bfloat16),
        ("float32", "cuda", torch.float32),
    ],
)
def test_resolve_dtype(setting, device, want):
    assert resolve_dtype(setting, torch.device(device)) == want


def test_an_unknown_dtype_names_the_valid_ones():
    with pytest.raises(ValueError, match="bfloat16, float16, float32"):
        resolve_dtype("int8", torch.device("cpu"))


def test_serving_placement_casts_everything_but_the_router_bookkeeping(section):
    model = place_for_serving(build_base_model(section, n_adapter_slots=2), torch.device("cpu"), torch.bfloat16)
    assert model.dtype == torch.bfloat16
    state = model.adapter_state(1)
    assert all(t.dtype == torch.bfloat16 for k, t in state.items() if not k.endswith("balance_bias"))
    assert all(t.dtype == torch.float32 for k, t in state.items() if k.endswith("balance_bias"))
    model.load_adapter_state(0, {k: torch.ones_like(v, dtype=torch.float32) for k, v in state.items()})
    assert all(t.dtype == state[k].dtype for k, t in model.adapter_state(0).items())  # lands in the bank's dtype


def test_serving_in_bfloat16_matches_float32_within_its_tolerance():
    result = check_serving(torch.device("cpu"), torch.bfloat16)
    assert result.passed, result.detail


def test_training_placement_on_the_cpu_changes_nothing(section):
    model = build_base_model(section)
    before = {n: p.dtype for n, p in model.named_parameters()}
    place_for_training(model, torch.device("cpu"))
    assert {n: p.dtype for n, p in model.named_parameters()} == before
    with training_autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_state_detaches_and_widens_half_floats():
    w = torch.ones(2, dtype=torch.bfloat16, requires_grad=True)
    state = cpu_state({"a": w, "opt": [{"step": torch.tensor(3.0)}, (torch.ones(1, dtype=torch.int64),)], "n": 4})
    assert state["a"].dtype == torch.float32 and not state["a"].requires_grad
    assert state["opt"][0]["step"].item() == 3.0 and state["opt"][1][0].dtype == torch.int64
    assert state["n"] == 4
