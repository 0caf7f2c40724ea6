"""Reading the config: defaults, then a TOML file, then ``CL_*`` environment variables.

Every problem is collected and reported at once in one ``ConfigError``.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from cl.config.errors import ConfigError
from cl.config.service import SECTIONS, Config

__all__ = ["env_values", "load_config", "load_config_values"]

_ALIASES = {"RAY_ADDRESS": ("ray", "address")}
# CL_* variables read elsewhere, not configuration keys.
_OTHER_ENV = {"CL_CONFIG", "CL_KERNELS", "CL_API_KEY", "CL_FAILPOINTS"}


def _convert(raw: Any, base: Any) -> Any:
    """``raw`` as a ``base`` (bool, int, float, Path or str); raises ValueError or TypeError if it is not one."""
    if base is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if base is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        return int(raw)
    if base is float:
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    if base is Path:
        return Path(str(raw))
    if base is str:
        if not isinstance(raw, (str, int, float)):
            raise ValueError
        return str(raw)
    return raw


def _coerce(key: str, raw: Any, typ: Any, problems: list[str], env_name: str | None) -> Any:
    """Convert ``raw`` (a TOML value or an environment string) to ``typ``; record a problem if it can't.

    A union such as ``float | str`` (a number or ``"auto"``) takes the first member that fits, in order.
    """
    where = f"environment variable {env_name}" if env_name else "cl.toml"
    args = typing.get_args(typ)
    union = typing.get_origin(typ) in (typing.Union, types.UnionType)
    if union and type(None) in args and (raw is None or raw == ""):
        return None
    members = [a for a in args if a is not type(None)] if union else [typ]
    for base in members:
        try:
            return _convert(raw, base)
        except (TypeError, ValueError):
            continue
    expected = " or ".join(getattr(m, "__name__", str(m)) for m in members)
    problems.append(f"{key}: expected {expected}, got {raw!r} (from {where}); fix the value")
    return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(target: dict, cls: type, values: Mapping[str, Any], prefix: str, problems: list[str], env: bool) -> None:
    hints = _hints(cls)
    for key, raw in values.items():
        dotted = f"{prefix}{key}"
        env_name = ("CL_" + dotted.replace(".", "_").upper()) if env else None
        if key not in hints or key in SECTIONS and not prefix:
            valid = ", ".join(k for k in hints if k not in SECTIONS or prefix)
            problems.append(f"{dotted}: unknown key; valid keys here are: {valid}")
            continue
        value = _coerce(dotted, raw, hints[key], problems, env_name)
        if value is not None or raw in (None, ""):
            target[key] = value


def env_values(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Group ``CL_*`` variables by section: {"": top-level, "kafka": {...}, ...}."""
    out: dict[str, dict[str, str]] = {"": {}}
    for name, value in env.items():
        if name in _ALIASES:
            section, key = _ALIASES[name]
            out.setdefault(section, {})[key] = value
            continue
        if not name.startswith("CL_") or name in _OTHER_ENV:
            continue
        rest = name[3:].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), "")
        key = rest[len(section) + 1 :] if section else rest
        if not section and key not in _hints(Config):
            continue  # CL_* variables of other tools are not ours to judge
        out.setdefault(section, {})[key] = value
    return out


def load_config(path: str | Path | None = "auto", env: Mapping[str, str] | None = None) -> Config:
    """Build the config from defaults, a TOML file and the environment.

    Args:
        path: TOML file; ``"auto"`` means ``$CL_CONFIG`` or ``./cl.toml`` if present; None: no file.
        env: environment mapping (default ``os.environ``).

    Returns:
        A validated ``Config``.

    Raises:
        ConfigError: listing every problem at once, each with its key and fix.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    file_values: dict[str, Any] = {}
    if path == "auto":
        path = env.get("CL_CONFIG") or ("cl.toml" if Path("cl.toml").exists() else None)
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            problems.append(f"config file {path}: not found; create it or unset CL_CONFIG")
        except tomllib.TOMLDecodeError as e:
            problems.append(f"config file {path}: not valid TOML ({e}); fix the syntax")

    return _build(file_values, env, problems)


def load_config_values(values: Mapping[str, Any]) -> Config:
    """A config from a mapping shaped like ``cl.toml`` (no environment); see ``Config.from_dict``."""
    return _build(dict(values), {}, [])


def _build(file_values: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> Config:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    file_top = {k: v for k, v in file_values.items() if k not in SECTIONS}
    _apply(top, Config, file_top, "", problems, env=False)
    for s, cls in SECTIONS.items():
        raw = file_values.get(s, {})
        if not isinstance(raw, dict):
            problems.append(f"{s}: expected a [{s}] table in cl.toml, got {raw!r}")
            continue
        _apply(sections[s], cls, raw, f"{s}.", problems, env=False)
    from_env = env_values(env)
    _apply(top, Config, from_env.pop(""), "", problems, env=True)
    for s, values in from_env.items():
        _apply(sections[s], SECTIONS[s], values, f"{s}.", problems, env=True)

    built = {s: cls(**sections[s]) for s, cls in SECTIONS.items()}
    if problems:
        # Still validate ranges so the user sees every problem at once.
        try:
            Config(**top, **built)
        except ConfigError as e:
            problems += e.problems
        raise ConfigError(problems)
    return Config(**top, **built)
