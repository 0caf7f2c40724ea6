"""The one error a configuration raises, and the checks several sections share."""

from __future__ import annotations

__all__ = ["ConfigError", "gpu_count_problem", "port_problem"]


class ConfigError(ValueError):
    """A configuration with one or more problems; ``problems`` lists each, naming key and fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def port_problem(key: str, value: int) -> str | None:
    """A problem naming ``key`` and the fix when ``value`` is no TCP port; else None."""
    if not 1 <= value <= 65535:
        env = "CL_" + key.replace(".", "_").upper()
        return f"{key}: port {value} is out of range; use 1-65535 (set {env} or [{key.split('.')[0]}] in cl.toml)"
    return None


def gpu_count_problem(key: str, value: float | str) -> str | None:
    """A problem naming ``key`` and the fix unless ``value`` is ``"auto"`` or a GPU count Ray accepts
    (0, a fraction below 1, or a whole number); else None."""
    env = "CL_" + key.replace(".", "_").upper()
    if isinstance(value, str):
        if value == "auto":
            return None
        return f'{key}: {value!r} is not a GPU count; use "auto", 0, a fraction such as 0.5, or a whole number ({env})'
    if value < 0:
        return f"{key}: {value:g} GPUs is negative; use 0 for the CPU, or a positive count ({env})"
    if value > 1 and not float(value).is_integer():
        return f"{key}: {value:g} GPUs: Ray takes fractions below 1 only; use {int(value)} or {int(value) + 1} ({env})"
    return None
