"""The [rollout] config section: defaults, file, environment, round trips and clear problems."""

from pathlib import Path

import pytest

from cl.config import Config, ConfigError, RolloutConfig, load_config


def test_defaults_and_steps():
    cfg = load_config(path=None, env={})
    assert cfg.rollout == RolloutConfig()
    assert cfg.rollout.steps == (0.1, 0.5, 1.0)


def test_environment_and_file_set_rollout_keys(tmp_path: Path):
    f = tmp_path / "cl.toml"
    f.write_text('[rollout]\nalpha = 0.02\ncanary_steps = "0.2,1.0"\n')
    cfg = load_config(path=f, env={"CL_ROLLOUT_MIN_STEP_EVENTS": "500", "CL_ROLLOUT_ALPHA": "0.005"})
    assert cfg.rollout.alpha == 0.005  # the environment beats the file
    assert cfg.rollout.steps == (0.2, 1.0) and cfg.rollout.min_step_events == 500


def test_to_dict_from_dict_and_to_toml_round_trip(tmp_path: Path):
    cfg = load_config(path=None, env={"CL_ROLLOUT_NEGATIVE_MARGIN": "0.2", "CL_ROLLOUT_CANARY_STEPS": "0.05,0.25,1.0"})
    assert Config.from_dict(cfg.to_dict()).rollout == cfg.rollout
    f = tmp_path / "cl.toml"
    f.write_text(cfg.to_toml())
    assert "[rollout]" in cfg.to_toml()
    assert load_config(path=f, env={}).rollout == cfg.rollout


def test_bad_values_are_all_reported_with_key_and_fix():
    env = {
        "CL_ROLLOUT_ALPHA": "0",
        "CL_ROLLOUT_CANARY_STEPS": "0.5,0.2",
        "CL_ROLLOUT_MIN_EVENTS": "0",
        "CL_ROLLOUT_MIXING_SD": "-1",
        "CL_ROLLOUT_MAX_ERROR_RATE": "1.5",
        "CL_ROLLOUT_FORGETTING_MAX_DROP": "2",
        "CL_ROLLOUT_MEMORY_USERS": "lots",
    }
    with pytest.raises(ConfigError) as err:
        load_config(path=None, env=env)
    text = str(err.value)
    for key in (
        "alpha",
        "canary_steps",
        "min_events",
        "mixing_sd",
        "max_error_rate",
        "forgetting_max_drop",
        "memory_users",
    ):
        assert f"rollout.{key}" in text, key
    assert "CL_ROLLOUT_MEMORY_USERS" in text and "use e.g. '0.1,0.5,1.0'" in text
    assert len(err.value.problems) == 7


@pytest.mark.parametrize("steps", ["0.1,0.5", "abc", "", "0,1.0", "0.5,0.5,1.0"])
def test_canary_steps_must_rise_and_end_at_one(steps):
    (problem,) = RolloutConfig(canary_steps=steps).problems()
    assert problem.startswith("rollout.canary_steps:")
