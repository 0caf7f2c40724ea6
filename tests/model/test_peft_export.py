"""Our adapters as PEFT LoRA directories: ``peft`` on the ``transformers`` model answers as our slot.

Tiny random checkpoints built by ``transformers`` (see ``test_checkpoints.py``); the adapter in
the slot is random and non-zero everywhere PEFT can hold it (attention, router, every expert,
shared experts, dense MLPs, lm head), so a mis-mapped or mis-scaled tensor changes the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cl.config import ModelSection
from cl.model import MoETransformer
from cl.model.adapters import adapter_state, banked_tensors
from cl.model.base_model import build_base_model
from cl.model.peft_export import WEIGHTS_FILE, PeftFormatError, export_peft, import_peft
from cl.testing.tiny_checkpoints import build_tiny_checkpoint, load_reference

peft = pytest.importorskip("peft")

PROMPTS = ["hello world, how are you today?", "a mixture of experts"]
# qwen2_moe: shared expert + a dense block; mixtral: its own names; deepseek_v3: MLA, shared, dense.
EXPORTED = ("qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("peft-checkpoints")
    return {family: build_tiny_checkpoint(family, root / family) for family in EXPORTED}


def _ours(directory: Path, lora_rank: int = 4) -> MoETransformer:
    return build_base_model(ModelSection(checkpoint=str(directory), n_features=0, lora_rank=lora_rank), 2)


def _randomize(model: MoETransformer, slot: int, seed: int = 0, everything: bool = False) -> None:
    """Random A and B in ``slot`` for every target PEFT holds (``everything``: the classify head and
    the balance bias too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, bank in banked_tensors(model).items():
            if everything or not (key.startswith("classify_head") or key.endswith("balance_bias")):
                bank[slot].copy_(torch.randn(bank[slot].shape, generator=g) * 0.3)


def _assert_same_logits(peft_model: torch.nn.Module, ours: MoETransformer, slot: int) -> None:
    for prompt in PROMPTS:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        with torch.no_grad():
            expected = peft_model(ids).logits  # (1, T, V)
            got = ours(tokens=ids, head="lm", adapter_ids=torch.tensor([slot]))
            base = ours(tokens=ids, head="lm")
        assert (got - base).abs().max() > 1.0  # the adapter matters
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", EXPORTED)
def test_peft_on_transformers_answers_as_our_slot(checkpoints: dict, family: str, tmp_path: Path) -> None:
    ours = _ours(checkpoints[family])
    _randomize(ours, 1)
    done = export_peft(ours, 1, tmp_path / "peft", str(checkpoints[family]))
    assert done.family == family and done.dropped == ()
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and "lm_head" in config["target_modules"]
    peft_model = peft.PeftModel.from_pretrained(load_reference(checkpoints[family]), str(tmp_path / "peft")).eval()
    _assert_same_logits(peft_model, ours, 1)


@pytest.mark.parametrize("family", EXPORTED)
def test_export_then_import_gives_the_same_adapter(checkpoints: dict, family: str, tmp_path: Path) -> None:
    ours = _ours(checkpoints[family])
    _randomize(ours, 1)
    export_peft(ours, 1, tmp_path / "peft", str(checkpoints[family]))
    import_peft(ours, 0, tmp_path / "peft")  # family from base_model_name_or_path
    before, after = adapter_state(ours, 1), adapter_state(ours, 0)
    for key in before:  # the classify head is not in PEFT: it starts fresh (B zero, as it was)
        if key != "classify_head.lora_a":
            assert torch.equal(before[key], after[key]), key


def test_keys_use_peft_names_per_expert(checkpoints: dict, tmp_path: Path) -> None:
    from safetensors import safe_open

    ours = _ours(checkpoints["mixtral"])
    export_peft(ours, 0, tmp_path / "peft", "mistralai/Mixtral-8x7B-v0.1", family="mixtral")
    with safe_open(str(tmp_path / "peft" / WEIGHTS_FILE), framework="pt") as f:
        keys = set(f.keys())
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.block_sparse_moe.experts.3.w3.lora_B.weight" in keys
    assert "base_model.model.model.layers.0.block_sparse_moe.gate.lora_A.weight" in keys
    assert "base_model.model.lm_head.lora_B.weight" in keys


def test_import_reads_peft_fused_expert_parameters(checkpoints: dict, tmp_path: Path) -> None:
    """An adapter trained with PEFT on transformers v5 (``target_parameters`` on the fused experts),
    at another alpha than ours: folded into B."""
    ref = load_reference(checkpoints["qwen3_moe"])
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "o_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    )
    peft_model = peft.get_peft_model(ref, config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    peft_model.save_pretrained(str(tmp_path / "native"))
    ours = _ours(checkpoints["qwen3_moe"])
    done = import_peft(ours, 1, tmp_path / "native", family="qwen3_moe")
    assert "mlp.experts.gate_up_proj" in done.target_modules
    _assert_same_logits(peft_model.eval(), ours, 1)


def test_unsupported_targets_are_refused_unless_dropped(checkpoints: dict, tmp_path: Path) -> None:
    ours = _ours(checkpoints["qwen3_moe"])
    _randomize(ours, 1, everything=True)
    with pytest.raises(PeftFormatError) as refused:
        export_peft(ours, 1, tmp_path / "peft", str(checkpoints["qwen3_moe"]))
    for named in ("classify_head (", "blocks.1.moe.router.balance_bias (", "drop_unsupported=True"):
        assert named in str(refused.value)
    assert not (tmp_path / "peft").exists()
    done = export_peft(ours, 1, tmp_path / "peft", str(checkpoints["qwen3_moe"]), drop_unsupported=True)
    assert any(d.startswith("classify_head") for d in done.dropped)
    assert sum("balance_bias" in d for d in done.dropped) == 2  # one per MoE layer


def test_import_refuses_what_our_slot_cannot_hold_and_leaves_it_untouched(checkpoints: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ours = _ours(checkpoints["qwen3_moe"])
    _randomize(ours, 1)
    export_peft(ours, 1, tmp_path / "peft", str(checkpoints["qwen3_moe"]))
    kept = adapter_state(ours, 1)

    with pytest.raises(
        PeftFormatError, match=r"rank r=4 but this model has model.lora_rank=2; set model.lora_rank = 4"
    ):
        import_peft(_ours(checkpoints["qwen3_moe"], lora_rank=2), 0, tmp_path / "peft")

    tensors = load_file(str(tmp_path / "peft" / WEIGHTS_FILE))
    up_a = "base_model.model.model.layers.0.mlp.experts.2.up_proj.lora_A.weight"
    tensors[up_a] = tensors[up_a] + 1.0  # gate and up of expert 2 no longer share A
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.ones(4, 320)
    save_file(tensors, str(tmp_path / "peft" / WEIGHTS_FILE))
    with pytest.raises(PeftFormatError) as refused:
        import_peft(ours, 1, tmp_path / "peft")
    message = str(refused.value)
    assert "experts.2.gate_proj and model.layers.0.mlp.experts.2.up_proj have different lora_A" in message
    assert "twice our rank" in message and "embed_tokens" in message and "drop_unsupported" in message
    for key, value in adapter_state(ours, 1).items():
        assert torch.equal(value, kept[key]), key
