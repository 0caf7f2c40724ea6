"""Our adapters in PEFT's LoRA format and back: ``adapter_config.json`` + ``adapter_model.safetensors``.

So an adapter learned here runs on ``transformers`` with ``peft.PeftModel.from_pretrained``, and
a PEFT LoRA trained elsewhere can be served here. Plain json and safetensors: neither
``transformers`` nor ``peft`` is imported. Names are those of a checkpoint's ``model.layers.*``
(``base_model.model.`` + module + ``.lora_A.weight``), one rank and alpha for every target:

=================  ==================================================================
ours               PEFT module (``target_modules`` leaf)
=================  ==================================================================
attn.q/k/v/o       ``self_attn.q_proj/k_proj/v_proj/o_proj``; MLA: ``q_b_proj`` (or
                   ``q_proj``), ``kv_a_proj_with_mqa``, ``kv_b_proj``, ``o_proj``
moe.router         ``mlp.gate`` (PEFT wraps the router's weight parameter)
moe.a13/b13, a2/b2 per expert, 2-D: ``mlp.experts.{e}.gate_proj/up_proj/down_proj``
                   (Mixtral: ``block_sparse_moe.experts.{e}.w1/w3/w2``)
moe.shared, mlp    ``mlp.shared_expert(s).*_proj``, a dense block's ``mlp.*_proj``
lm_head            ``lm_head``
=================  ==================================================================

The experts are written one 2-D module per expert, the layout PEFT's checkpoints have always
had: on ``transformers`` v5, which keeps experts fused as ``experts.gate_up_proj (E, 2F, d)``,
PEFT fuses them on load (gate and up become one rank-2r LoRA with a block-diagonal B, the same
scale). Our fused ``w13`` LoRA has one A for gate and up, so it is exact as two modules that
share that A. Reading back accepts that layout and PEFT's own fused one (``target_parameters``
on ``experts.gate_up_proj``/``down_proj``, one A per expert as ours). Our classify head and a
slot's own router balance bias have no PEFT counterpart: a non-zero one is refused unless
dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from cl.model.adapters import adapter_state, banked_tensors, load_adapter_state, reset_adapter

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "PeftFormatError", "PeftTransfer", "export_peft", "import_peft"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."

# Per family: the MoE block's name, its experts' (gate, up, down) and the shared expert's name.
_MOE_NAMES: dict[str, tuple[str, tuple[str, str, str], str | None]] = {
    "qwen3_moe": ("mlp", ("gate_proj", "up_proj", "down_proj"), None),
    "qwen2_moe": ("mlp", ("gate_proj", "up_proj", "down_proj"), "shared_expert"),
    "olmoe": ("mlp", ("gate_proj", "up_proj", "down_proj"), None),
    "mixtral": ("block_sparse_moe", ("w1", "w3", "w2"), None),
    "deepseek_v3": ("mlp", ("gate_proj", "up_proj", "down_proj"), "shared_experts"),
}
_SWIGLU = ("gate_proj", "up_proj", "down_proj")
# PEFT options whose adapters are not plain ``scale * B @ A`` deltas on the weights we could hold.
_UNSUPPORTED_OPTIONS = (
    "use_dora",
    "lora_bias",
    "fan_in_fan_out",
    "modules_to_save",
    "layer_replication",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "arrow_config",
    "use_qalora",
    "use_bdlora",
    "kasa_config",
    "velora_config",
    "monteclora_config",
)


class PeftFormatError(ValueError):
    """An adapter cannot move between our format and PEFT's; the message names the targets and the fix."""


@dataclass(frozen=True)
class PeftTransfer:
    """What :func:`export_peft` wrote or :func:`import_peft` read.

    Attributes:
        directory: The PEFT adapter directory.
        family: The checkpoint family (``model_type``) whose names were used.
        target_modules: PEFT's ``target_modules`` (leaf names).
        dropped: What had a non-zero delta but was left out (ours on export, PEFT's on import).
    """

    directory: Path
    family: str
    target_modules: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class _Link:
    """One PEFT 2-D LoRA module and where its A and B live in our adapter state.

    ``expert`` indexes dim 0 of expert banks; ``half`` picks the gate (0) or up (1) rows of a
    fused gate/up B; ``shape`` is the module's ``(out, in)``.
    """

    peft: str
    leaf: str
    a: str
    b: str
    expert: int | None
    half: int | None
    shape: tuple[int, int]


def _links(model: nn.Module, family: str) -> list[_Link]:
    """Every PEFT module of ``family``'s checkpoint that one of our LoRA targets corresponds to."""
    if family not in _MOE_NAMES:
        raise PeftFormatError(f"family {family!r} has no PEFT mapping; supported: {', '.join(_MOE_NAMES)}")
    cfg = model.config
    moe_name, parts, shared_name = _MOE_NAMES[family]
    out: list[_Link] = []

    def linear(peft: str, ours: str) -> None:
        m = model.get_submodule(ours)
        out.append(_Link(peft, peft.rsplit(".", 1)[-1], f"{ours}.lora_a", f"{ours}.lora_b", None, None, m.weight.shape))

    def swiglu(peft: str, ours: str, names: tuple[str, str, str]) -> None:
        w13 = model.get_submodule(f"{ours}.w13")
        shape = (w13.out_features // 2, w13.in_features)
        for half, leaf in enumerate(names[:2]):
            out.append(_Link(f"{peft}.{leaf}", leaf, f"{ours}.w13.lora_a", f"{ours}.w13.lora_b", None, half, shape))
        linear(f"{peft}.{names[2]}", f"{ours}.w2")

    q = "q_b_proj" if cfg.q_lora_rank else "q_proj"
    attention = {"q": q, "k": "kv_a_proj_with_mqa", "v": "kv_b_proj"} if cfg.is_mla else {}
    for layer, block in enumerate(model.blocks):
        p, o = f"model.layers.{layer}", f"blocks.{layer}"
        for ours in ("q", "k", "v", "o"):
            linear(f"{p}.self_attn.{attention.get(ours, ours + '_proj')}", f"{o}.attn.{ours}")
        if block.moe is None:
            swiglu(f"{p}.mlp", f"{o}.mlp", _SWIGLU)
            continue
        linear(f"{p}.{moe_name}.gate", f"{o}.moe.router.proj")
        E, two_f, d = block.moe.w13.shape
        for e in range(E):
            x = f"{p}.{moe_name}.experts.{e}"
            out.append(_Link(f"{x}.{parts[0]}", parts[0], f"{o}.moe.a13", f"{o}.moe.b13", e, 0, (two_f // 2, d)))
            out.append(_Link(f"{x}.{parts[1]}", parts[1], f"{o}.moe.a13", f"{o}.moe.b13", e, 1, (two_f // 2, d)))
            out.append(_Link(f"{x}.{parts[2]}", parts[2], f"{o}.moe.a2", f"{o}.moe.b2", e, None, (d, two_f // 2)))
        if block.moe.shared is not None:
            swiglu(f"{p}.mlp.{shared_name}", f"{o}.moe.shared", _SWIGLU)
    linear("lm_head", "lm_head")
    return out


def _rows(t: torch.Tensor, link: _Link) -> torch.Tensor:
    """The view of a bank's one-slot tensor that ``link`` reads or writes."""
    t = t if link.expert is None else t[link.expert]
    if link.half is None:
        return t
    n = t.shape[0] // 2
    return t[link.half * n : (link.half + 1) * n]


def _unsupported(model: nn.Module, state: dict[str, torch.Tensor], used: set[str]) -> list[str]:
    """Our adapter tensors no link carries that change something: LoRA with B @ A != 0, or a
    slot's balance bias that differs from the base's."""
    found = []
    for key in sorted(set(state) - used):
        module, _, name = key.rpartition(".")
        if name == "balance_bias":
            if not torch.equal(state[key], model.get_submodule(module).balance_bias[0].to(state[key])):
                found.append(f"{key} (this slot's router balance bias; PEFT has no per-adapter routing bias)")
        elif name == "lora_a" and torch.count_nonzero(state[f"{module}.lora_b"] @ state[key]):
            found.append(f"{module} (LoRA on a layer the checkpoint does not have)")
        elif name not in ("lora_a", "lora_b") and torch.count_nonzero(state[key]):
            found.append(key)
    return found


def _family(family: str | None, base: str | None) -> str:
    if family:
        return family
    path = Path(base or "") / "config.json"
    if base and path.is_file():
        return str(json.loads(path.read_text()).get("model_type"))
    raise PeftFormatError(
        f"cannot tell the checkpoint family: {path} not found; pass family= (the checkpoint's model_type)"
    )


def export_peft(
    model: nn.Module,
    slot: int,
    directory: str | Path,
    base_model_name_or_path: str,
    *,
    family: str | None = None,
    drop_unsupported: bool = False,
) -> PeftTransfer:
    """Write ``slot``'s adapter as a PEFT LoRA directory for ``base_model_name_or_path``.

    Args:
        model: A model built from a checkpoint (:func:`cl.model.base_model.build_base_model`).
        slot: The adapter slot to export.
        directory: Where to write ``adapter_config.json`` and ``adapter_model.safetensors``.
        base_model_name_or_path: The checkpoint (a directory or a hub name), recorded in the config.
        family: The checkpoint's ``model_type``; read from ``<base_model_name_or_path>/config.json`` if None.
        drop_unsupported: Leave out targets PEFT cannot express (our classify head LoRA, the slot's
            router balance bias) instead of refusing; the export then differs from the slot there.

    Returns:
        What was written, and what was dropped.

    Raises:
        PeftFormatError: The slot changes such a target and ``drop_unsupported`` is False, or the
            family is unknown.
    """
    fam = _family(family, base_model_name_or_path)
    state = adapter_state(model, slot)
    links = _links(model, fam)
    used = {k for link in links for k in (link.a, link.b)}
    dropped = _unsupported(model, state, used)
    if dropped and not drop_unsupported:
        raise PeftFormatError(
            f"slot {slot} changes what PEFT cannot express for {fam}: {'; '.join(dropped)}. "
            "Export with drop_unsupported=True (cl export --drop-unsupported) to leave them out; "
            "the PEFT model then answers as this slot would without them"
        )
    leaves = sorted({link.leaf for link in links if link.a in state})
    tensors: dict[str, torch.Tensor] = {}
    for link in links:
        if link.leaf not in leaves:
            continue
        name = _PREFIX + link.peft
        if link.a in state:  # else PEFT wraps the module anyway (same leaf name): write a zero delta
            a = state[link.a] if link.expert is None else state[link.a][link.expert]
            b = _rows(state[link.b], link)
        else:
            a = torch.zeros(model.config.lora_rank, link.shape[1])
            b = torch.zeros(link.shape[0], model.config.lora_rank)
        tensors[f"{name}.lora_A.weight"] = a.detach().cpu().clone().contiguous()
        tensors[f"{name}.lora_B.weight"] = b.detach().cpu().clone().contiguous()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    alpha = model.config.lora_alpha
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model_name_or_path),
        "r": model.config.lora_rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "target_modules": leaves,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return PeftTransfer(out, fam, tuple(leaves), tuple(dropped))


# ---- import ---------------------------------------------------------------------------------

_FUSED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts((?:\.base_layer)*)$")
_LORA_KEY = re.compile(r"^(.+)\.lora_(A|B)\.weight$")


def _norm(path: str) -> str:
    """Mixtral's v4 names (``block_sparse_moe``) and v5 names (``mlp``) are the same module."""
    return path.replace(".block_sparse_moe.", ".mlp.")


def _pattern(patterns: dict[str, Any] | None, keys: list[str], default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup (a regex matched at the end of a module name)."""
    for pattern, value in (patterns or {}).items():
        if any(re.match(rf"(.*\.)?({pattern})$", key) for key in keys):
            return value
    return default


def _read(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise PeftFormatError(f"{config_path} not found; give a PEFT LoRA directory (adapter_config.json + weights)")
    if not weights.is_file():
        hint = (
            " (adapter_model.bin: load it with peft and save_pretrained it again)"
            if (directory / "adapter_model.bin").is_file()
            else ""
        )
        raise PeftFormatError(f"{weights} not found; only safetensors weights are read{hint}")
    config = json.loads(config_path.read_text())
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type={config.get('peft_type')!r}: only LORA adapters can be imported")
    problems += [f"{k}={config[k]!r} is not plain LoRA" for k in _UNSUPPORTED_OPTIONS if config.get(k)]
    if problems:
        raise PeftFormatError(f"{config_path}: " + "; ".join(problems))
    with safe_open(str(weights), framework="pt") as f:
        return config, {k: f.get_tensor(k) for k in f.keys()}


def _live(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a LoRA pair may change its layer (both factors non-zero)."""
    return bool(torch.count_nonzero(a)) and bool(torch.count_nonzero(b))


def _peft_scale(config: dict[str, Any], keys: list[str], r: int, problems: list[str]) -> float:
    """The scale PEFT gives the module named by ``keys``: ``alpha / r`` (``/ sqrt(r)`` with rsLoRA)."""
    r_cfg = _pattern(config.get("rank_pattern"), keys, config.get("r", r))
    if r_cfg != r:
        problems.append(f"{keys[0]}: its tensors have rank {r} but the config says r={r_cfg}")
    alpha = float(_pattern(config.get("alpha_pattern"), keys, config.get("lora_alpha", 8)))
    return alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def _linear(link: _Link, a: torch.Tensor, b: torch.Tensor, rank: int, problems: list[str]) -> list[tuple]:
    if a.shape != (rank, link.shape[1]) or b.shape != (link.shape[0], rank):
        problems.append(
            f"misfit: {link.peft}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}; ours needs "
            f"{(rank, link.shape[1])} and {(link.shape[0], rank)}"
        )
        return []
    return [(link, a, b)]


def _fused(model: nn.Module, layer: int, path: str, a: torch.Tensor, b: torch.Tensor, rank: int, problems: list[str]):
    """PEFT's own fused expert LoRA (``target_parameters``) as per-expert links, or None if this
    block has no expert LoRA. A is ``(E*r, in)`` with row ``e*r + j``, B ``(out, r*E)`` with column
    ``j*E + e``; the shapes tell ``gate_up_proj`` from ``down_proj`` (they cannot agree on both)."""
    block = model.blocks[layer] if layer < len(model.blocks) else None
    if block is None or block.moe is None or block.moe.a13 is None:
        return None
    E, two_f, d = block.moe.w13.shape
    names = {(d, two_f): ("a13", "b13"), (two_f // 2, d): ("a2", "b2")}.get((a.shape[1], b.shape[0]))
    if names is None or a.shape[0] != E * rank or b.shape[1] != E * rank:
        problems.append(
            f"{path}: lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} fit neither experts.gate_up_proj nor "
            f"experts.down_proj of {E} experts at rank {rank} (model.lora_rank)"
        )
        return []
    a_e = a.reshape(E, rank, a.shape[1])  # (E, r, in)
    b_e = b.reshape(b.shape[0], rank, E).permute(2, 0, 1)  # (E, out, r)
    o = f"blocks.{layer}.moe"
    shape = (b.shape[0], a.shape[1])
    return [
        (_Link(path, "experts", f"{o}.{names[0]}", f"{o}.{names[1]}", e, None, shape), a_e[e], b_e[e]) for e in range(E)
    ]


def import_peft(
    model: nn.Module,
    slot: int,
    directory: str | Path,
    *,
    family: str | None = None,
    drop_unsupported: bool = False,
) -> PeftTransfer:
    """Read a PEFT LoRA directory into ``slot``; nothing changes if a check fails.

    Our targets the adapter does not cover start fresh (random A, zero B), and the slot's
    balance bias is the base's. A PEFT scale other than ours (alpha, rsLoRA) is folded into B.

    Args:
        model: A model built from the checkpoint the adapter was trained on.
        slot: The slot to fill.
        directory: A directory with ``adapter_config.json`` and ``adapter_model.safetensors``.
        family: The checkpoint's ``model_type``; if None, read from the adapter's
            ``base_model_name_or_path`` when that is a local directory.
        drop_unsupported: Skip PEFT modules we have no LoRA for instead of refusing.

    Returns:
        What was read, and which PEFT modules with a non-zero delta were dropped.

    Raises:
        PeftFormatError: Not a LoRA directory, a rank other than ours, a shape that does not fit
            (another base), modules we cannot hold, or gate and up projections of one expert with
            different A matrices (our fused gate/up LoRA has one A, so that is not exact at our rank).
    """
    directory = Path(directory)
    config, tensors = _read(directory)
    fam = _family(family, config.get("base_model_name_or_path"))
    rank, scale = model.config.lora_rank, model.config.lora_scale
    if config.get("r", rank) != rank and not config.get("rank_pattern"):
        raise PeftFormatError(
            f"{directory}: the adapter has rank r={config['r']} but this model has model.lora_rank={rank}; "
            f"set model.lora_rank = {config['r']} (every one of our targets has one rank)"
        )
    banks = banked_tensors(model)
    links = {_norm(link.peft): link for link in _links(model, fam) if link.a in banks}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    odd: list[str] = []
    for key, t in tensors.items():
        m = _LORA_KEY.match(key.removeprefix(_PREFIX))
        if m is not None:
            pairs.setdefault(_norm(m.group(1)), {})[m.group(2)] = t
        elif torch.count_nonzero(t):
            odd.append(key)
    problems: list[str] = []
    a_writes: dict[tuple[str, int | None], list[tuple[str, torch.Tensor, bool]]] = {}
    b_writes: list[tuple[_Link, torch.Tensor]] = []
    for path, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            problems.append(f"{path} has lora_{''.join(ab)} without its partner")
            continue
        a, b = ab["A"], ab["B"]
        fused = _FUSED.match(path)
        found = _fused(model, int(fused.group(1)), path, a, b, rank, problems) if fused else None
        if found is None and path in links:
            found = _linear(links[path], a, b, rank, problems)
        if found is None:
            if _live(a, b):
                odd.append(path)
            continue
        keys = [f"{path.replace('.base_layer', '')}.{p}" for p in ("gate_up_proj", "down_proj")] if fused else []
        factor = _peft_scale(config, keys + [path, f"{path}.weight"], rank, problems) / scale if found else 1.0
        for link, a_e, b_e in found:
            a_writes.setdefault((link.a, link.expert), []).append((link.peft, a_e, bool(torch.count_nonzero(b_e))))
            b_writes.append((link, b_e if factor == 1.0 else b_e * factor))
    chosen: dict[tuple[str, int | None], torch.Tensor] = {}
    for (key, expert), candidates in a_writes.items():
        live = [c for c in candidates if c[2]] or candidates[:1]
        if any(not torch.equal(live[0][1], c[1]) for c in live[1:]):
            problems.append(
                f"{' and '.join(c[0] for c in live)} have different lora_A; our gate and up projections share "
                "one A (the fused w13), so this adapter is exact only at twice our rank"
            )
        chosen[(key, expert)] = live[0][1]
    if odd and not drop_unsupported:
        problems.append(
            f"PEFT modules this model has no LoRA for: {', '.join(odd[:6])}{' ...' if len(odd) > 6 else ''}; "
            "import with drop_unsupported=True (cl import-adapter --drop-unsupported) to leave them out"
        )
    if problems:
        misfit = [p.removeprefix("misfit: ") for p in problems if p.startswith("misfit: ")]
        if misfit:
            problems = [p for p in problems if not p.startswith("misfit: ")] + [
                f"{len(misfit)} modules have shapes this base does not have, e.g. {'; '.join(misfit[:2])}: was it "
                f"trained on another base (it names {config.get('base_model_name_or_path')!r})?"
            ]
        raise PeftFormatError(f"{directory} does not fit this model: " + "; ".join(problems[:6]))
    reset_adapter(model, slot)
    state = adapter_state(model, slot)
    for (key, expert), a in chosen.items():
        (state[key] if expert is None else state[key][expert]).copy_(a)
    for link, b in b_writes:
        _rows(state[link.b], link).copy_(b)
    load_adapter_state(model, slot, state)
    targets = config.get("target_modules") or ()
    leaves = sorted({*([targets] if isinstance(targets, str) else targets), *(config.get("target_parameters") or ())})
    return PeftTransfer(directory, fam, tuple(leaves), tuple(odd))
