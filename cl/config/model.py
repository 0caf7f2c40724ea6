"""Which frozen base the service serves and learns on (``[model]``)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelSection"]


@dataclass
class ModelSection:
    """Which frozen base model the service serves and learns on top of.

    The base is built from ``preset`` and initialised from ``seed``, so learners and replicas
    build the same base without shipping its weights; ``base_version`` names it. With
    ``checkpoint`` (a Hugging Face model directory, ``CL_MODEL_CHECKPOINT``) the base is that
    pretrained model instead, and ``preset`` is not used.
    """

    preset: str = "tiny"
    seed: int = 0
    n_features: int = 8
    n_labels: int = 4
    lora_rank: int = 4
    base_weights: str = (
        ""  # a safetensors file of trained base weights (`learners.retrain --train-base`); "" = the seeded base
    )
    checkpoint: str = ""  # a Hugging Face model directory to serve instead of the preset; "" = the preset

    @property
    def base_version(self) -> str:
        base = f"ckpt{_checkpoint_digest(self.checkpoint)}" if self.checkpoint else self.preset
        seeded = f"{base}-f{self.n_features}-l{self.n_labels}-r{self.lora_rank}-seed{self.seed}"
        return f"{seeded}-w{_file_digest(self.base_weights)}" if self.base_weights else seeded

    def problems(self) -> list[str]:
        out = []
        if self.n_labels < 2:
            out.append(f"model.n_labels: {self.n_labels} is too few classes; use 2 or more")
        if self.n_features < 0:
            out.append(f"model.n_features: {self.n_features} is negative; use 0 (text only) or more")
        if self.lora_rank < 1:
            out.append(f"model.lora_rank: {self.lora_rank} leaves nothing to learn; use 1 or more")
        if self.base_weights and not Path(self.base_weights).is_file():
            out.append(
                f'model.base_weights: {self.base_weights} is not a file; give the path a base training printed, or "" for the seeded base'
            )
        if self.checkpoint and not (Path(self.checkpoint) / "config.json").is_file():
            out.append(
                f"model.checkpoint: {self.checkpoint} has no config.json; give a Hugging Face model directory "
                '(config.json, *.safetensors, tokenizer.json), or "" for the preset'
            )
        elif self.checkpoint:
            out += _checkpoint_problems(self)
        return out


def _checkpoint_problems(section: ModelSection) -> list[str]:
    """Everything about a checkpoint that can be told before a replica loads it: its config
    fields, its weight files and a tokenizer that fits the vocabulary."""
    from cl.model.base_model import base_model_config, build_tokenizer
    from cl.model.checkpoint import weight_files

    try:
        base_model_config(section)
        weight_files(Path(section.checkpoint))
        build_tokenizer(section)
    except ValueError as e:  # CheckpointError and ModelConfigError, each naming the field
        return [str(e)]
    return []


def _checkpoint_digest(directory: str) -> str:
    """12 hex digits naming a checkpoint: its config, tokenizer and weight-file headers, and
    1 MiB read at 16 places of every weight file (hashing every byte of a 60 GB model at each
    start would take minutes; this changes when any file is rewritten with other values)."""
    root = Path(directory)
    files = (
        sorted(p for p in root.iterdir() if p.suffix in (".json", ".safetensors", ".jinja")) if root.is_dir() else []
    )
    stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _sampled_digest(stats)


@functools.lru_cache(maxsize=8)
def _sampled_digest(stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, size, _ in stats:
        h.update(Path(path).name.encode())
        with open(path, "rb") as f:
            if not path.endswith(".safetensors") or size <= 16 << 20:
                h.update(f.read())
                continue
            for i in range(16):
                f.seek(i * (size - (1 << 20)) // 15)
                h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def _file_digest(path: str) -> str:
    """The first 12 hex digits of the file's sha256 (cached by path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
