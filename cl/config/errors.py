"""The one error a configuration raises, and the port check every section shares."""

from __future__ import annotations

__all__ = ["ConfigError", "port_problem"]


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
