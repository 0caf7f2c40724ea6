"""Our loader against ``transformers`` on tiny random checkpoints that ``transformers`` built.

For each family and both on-disk expert layouts: the same logits (fp32 tolerance), the same
top-k experts per layer, and the same 20 greedy tokens with and without our KV cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cl.config import ModelSection
from cl.model import MoETransformer
from cl.model.base_model import build_base_model, build_tokenizer
from cl.model.checkpoint import FAMILIES, CheckpointError, read_checkpoint_config
from cl.testing.tiny_checkpoints import build_tiny_checkpoint, load_reference

PROMPTS = [
    "hello world, how are you today?",
    "a mixture of experts",
    "0123 +-*/ (quotes)",
]
LAYOUTS = [pytest.param(False, id="per-expert"), pytest.param(True, id="fused")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        (family, fused): build_tiny_checkpoint(family, root / f"{family}-{'fused' if fused else 'split'}", fused=fused)
        for family in FAMILIES
        for fused in (False, True)
    }


def _ours(directory: Path, slots: int = 2) -> MoETransformer:
    return build_base_model(ModelSection(checkpoint=str(directory), n_features=0, n_labels=3), slots)


def _router_choices(module: torch.nn.Module, kind: str) -> list[torch.Tensor]:
    """Register hooks that record each layer's chosen experts, as sorted ``(N, k)`` ids."""
    seen: list[torch.Tensor] = []

    def hook(_mod: object, _inp: object, out: tuple[torch.Tensor, ...]) -> None:
        seen.append(
            out[-1 if kind == "hf" else 1].reshape(-1, out[-1 if kind == "hf" else 1].shape[-1]).sort(-1).values
        )

    for name, sub in module.named_modules():
        if (kind == "hf" and name.endswith((".mlp.gate", ".block_sparse_moe.gate"))) or (
            kind == "ours" and name.endswith(".moe.router")
        ):
            sub.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("fused", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_experts_match_transformers(checkpoints: dict, family: str, fused: bool) -> None:
    directory = checkpoints[(family, fused)]
    ref, ours = load_reference(directory), _ours(directory)
    hf_choices, our_choices = _router_choices(ref, "hf"), _router_choices(ours, "ours")
    n_moe = len(ours.routers())
    assert n_moe >= 1
    for prompt in PROMPTS:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        hf_choices.clear(), our_choices.clear()
        with torch.no_grad():
            expected = ref(ids).logits  # (1, T, V)
            got = ours(tokens=ids, head="lm")
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
        assert len(our_choices) == len(hf_choices) == n_moe  # every MoE layer, once
        for mine, theirs in zip(our_choices, hf_choices):
            assert torch.equal(mine, theirs)
        with torch.no_grad():  # a fresh adapter in a slot answers as the base
            torch.testing.assert_close(
                ours(tokens=ids, head="lm", adapter_ids=torch.tensor([1])), expected, atol=2e-5, rtol=1e-4
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_matches_one_row_at_a_time(checkpoints: dict, family: str) -> None:
    directory = checkpoints[(family, False)]
    ref, ours = load_reference(directory), _ours(directory)
    tokens = ours.tokenizer.batch(PROMPTS, pad_side="left")  # pad id = vocab_size: no real token
    assert int(tokens.max()) == ours.config.vocab_size
    with torch.no_grad():
        batched = ours(tokens=tokens, head="lm")
        for row, prompt in enumerate(PROMPTS):
            ids = torch.tensor([ours.tokenizer.encode(prompt)])
            n = ids.shape[1]
            torch.testing.assert_close(batched[row, -n:], ref(ids).logits[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_transformers_with_and_without_cache(checkpoints: dict, family: str) -> None:
    import transformers

    directory = checkpoints[(family, True)]
    ref, ours = load_reference(directory), _ours(directory)
    for prompt in PROMPTS[:2]:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        expected = ref.generate(
            ids,
            attention_mask=torch.ones_like(ids),  # else it takes BOS (id 0) for padding
            generation_config=transformers.GenerationConfig(
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=ours.tokenizer.eos_id,
                pad_token_id=ours.tokenizer.eos_id,
            ),  # both stop at EOS
            use_cache=True,
        )
        for use_cache in (True, False):
            got = ours.generate(ids, max_new_tokens=20, use_cache=use_cache)
            assert got.tolist() == expected.tolist(), f"use_cache={use_cache}"


def test_mixtral_sliding_window_matches_transformers(tmp_path: Path) -> None:
    directory = build_tiny_checkpoint("mixtral", tmp_path / "windowed", sliding_window=4)
    ref, ours = load_reference(directory), _ours(directory)
    assert ours.config.sliding_window == 4
    ids = torch.tensor([ours.tokenizer.encode(PROMPTS[0])])
    assert ids.shape[1] > 8
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens=ids, head="lm"), ref(ids).logits, atol=2e-5, rtol=1e-4)
    expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert ours.generate(ids, max_new_tokens=12).tolist() == expected.tolist()


def test_tokenizer_matches_transformers_and_reads_the_chat_template(checkpoints: dict) -> None:
    import transformers

    directory = checkpoints[("qwen3_moe", False)]
    ours = build_tokenizer(ModelSection(checkpoint=str(directory)))
    theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
    for text in PROMPTS + ["héllo wörld ✓"]:
        assert ours.encode(text, bos=False) == theirs.encode(text, add_special_tokens=False)
        assert ours.decode(ours.encode(text)) == text
    assert ours.chat_template and "<|im_start|>" in ours.chat_template
    assert ours.eos_id == theirs.convert_tokens_to_ids("<|im_end|>")
    assert ours.pad_id == ours.vocab_size  # padding outside the vocabulary


def test_classify_head_on_a_checkpoint_is_the_same_in_every_process(checkpoints: dict) -> None:
    directory = checkpoints[("olmoe", False)]
    one, three = _ours(directory, 1), _ours(directory, 3)
    tokens = one.tokenizer.batch(PROMPTS, pad_side="right")
    with torch.no_grad():
        a, b = one(tokens=tokens, head="classify"), three(tokens=tokens, head="classify")
    assert a.shape == (3, 3)
    torch.testing.assert_close(a, b)
    assert one.config.pool == "mean" and one.config.cls_id is None


def test_base_version_names_the_checkpoint_and_changes_with_its_weights(checkpoints: dict, tmp_path: Path) -> None:
    directory = checkpoints[("mixtral", False)]
    copy = shutil.copytree(directory, tmp_path / "copy")
    a, b = ModelSection(checkpoint=str(directory)), ModelSection(checkpoint=str(copy))
    assert a.base_version.startswith("ckpt") and a.base_version == b.base_version
    build_tiny_checkpoint("mixtral", copy, seed=1)  # same shapes, other weights
    assert ModelSection(checkpoint=str(copy)).base_version != a.base_version


# ---- errors before anything is deployed -------------------------------------------------


def _edit_config(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"model_type": "llama"}, "model_type='llama'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_type='yarn'"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"quantization_config": {"quant_method": "fp8"}}, "quantization_config"),
        ({"use_sliding_window": True}, "use_sliding_window"),
    ],
)
def test_unsupported_config_fields_are_named(checkpoints: dict, tmp_path: Path, changes: dict, named: str) -> None:
    directory = _edit_config(checkpoints[("qwen3_moe", False)], tmp_path / "edited", **changes)
    with pytest.raises(CheckpointError, match=named.replace("(", r"\(").replace("[", r"\[")):
        read_checkpoint_config(directory)


def test_missing_files_and_mismatched_tokenizers_are_clear_errors(checkpoints: dict, tmp_path: Path) -> None:
    src = checkpoints[("qwen2_moe", False)]
    no_weights = shutil.copytree(src, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        _ours(no_weights)
    with pytest.raises(CheckpointError, match="config.json"):
        read_checkpoint_config(tmp_path)
    no_tok = shutil.copytree(src, tmp_path / "no_tok")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json not found"):
        _ours(no_tok)
    small = _edit_config(src, tmp_path / "small_vocab", vocab_size=280)
    with pytest.raises(CheckpointError, match="vocab_size=280"):
        build_tokenizer(ModelSection(checkpoint=str(small)))
    assert any("checkpoint" in p for p in ModelSection(checkpoint=str(tmp_path / "nowhere")).problems())


def test_a_missing_or_extra_tensor_is_named(checkpoints: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = checkpoints[("deepseek_v3", False)]
    for name, edit in (
        ("missing", lambda t: t.pop("model.layers.1.self_attn.kv_b_proj.weight")),
        ("extra", lambda t: t.__setitem__("model.layers.0.mlp.router_noise.weight", torch.zeros(2))),
    ):
        directory = shutil.copytree(src, tmp_path / name)
        tensors = load_file(str(directory / "model.safetensors"))
        edit(tensors)
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match="kv_b_proj|attn.v|router_noise"):
            _ours(directory)
