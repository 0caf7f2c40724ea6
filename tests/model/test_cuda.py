"""On a GPU, the Triton serving path (no autograd) must agree with the CPU reference path."""

from __future__ import annotations

import copy

import pytest
import torch

from cl.model import ModelConfig, MoETransformer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("int8", [False, True])
def test_gpu_serving_matches_cpu(cfg: ModelConfig, randomize_adapter, tokens, int8: bool) -> None:
    torch.manual_seed(0)
    cpu = MoETransformer(cfg.replace(int8_experts=int8)).eval()
    for slot in (0, 2):
        randomize_adapter(cpu, slot, std=0.1)
    gpu = copy.deepcopy(cpu).cuda()
    t, f = tokens(4, 12), torch.randn(4, cfg.n_features)
    ids = torch.tensor([0, 2, -1, 0])
    with torch.no_grad():  # no autograd graph -> the kernels may take their Triton path
        pairs = [
            (cpu(tokens=t, adapter_ids=ids, head="lm"), gpu(tokens=t.cuda(), adapter_ids=ids.cuda(), head="lm")),
            (cpu(features=f, adapter_ids=ids), gpu(features=f.cuda(), adapter_ids=ids.cuda())),
        ]
    for a, b in pairs:
        rel = (a - b.cpu()).norm() / a.norm()
        assert rel < 1e-2, rel


def test_gpu_generation_runs(cfg: ModelConfig, tokens) -> None:
    torch.manual_seed(0)
    model = MoETransformer(cfg).cuda().eval()
    prompts = tokens(3, 5).cuda()
    a = model.generate(prompts, max_new_tokens=8, temperature=0.9, seed=4, stop_at_eos=False)
    b = model.generate(prompts, max_new_tokens=8, temperature=0.9, seed=4, stop_at_eos=False)
    assert a.shape == (3, 13) and torch.equal(a, b)
