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
    build the same base without shipping its weights; ``base_version`` names it.
    """

    preset: str = "tiny"
    seed: int = 0
    n_features: int = 8
    n_labels: int = 4
    lora_rank: int = 4
    base_weights: str = (
        ""  # a safetensors file of trained base weights (`learners.retrain --train-base`); "" = the seeded base
    )

    @property
    def base_version(self) -> str:
        seeded = f"{self.preset}-f{self.n_features}-l{self.n_labels}-r{self.lora_rank}-seed{self.seed}"
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
        return out


def _file_digest(path: str) -> str:
    """The first 12 hex digits of the file's sha256 (cached by path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
