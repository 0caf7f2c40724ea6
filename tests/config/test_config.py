"""The typed config: defaults, file, environment, and errors that list every problem."""

from pathlib import Path

import pytest

from cl.config import ConfigError, load_config


def test_defaults_give_a_local_setup():
    cfg = load_config(path=None, env={})
    assert cfg.kafka.managed and cfg.mlflow.managed and cfg.ray.managed
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert cfg.ray.dashboard_url == "http://127.0.0.1:8265"
    assert cfg.mlflow.model_name == "cl-adapter"
    assert [cfg.topics.requests, cfg.topics.feedback, cfg.topics.dlq, cfg.topics.events] == [
        "cl.requests",
        "cl.feedback",
        "cl.feedback.dlq",
        "cl.events",
    ]


def test_file_then_environment_precedence(tmp_path: Path):
    f = tmp_path / "cl.toml"
    f.write_text('app = "shop"\n[kafka]\nport = 9300\ntopic_prefix = "shop"\n[ray]\nnum_cpus = 8\n')
    cfg = load_config(path=f, env={"CL_KAFKA_PORT": "9400", "CL_STATE_DIR": str(tmp_path)})
    assert cfg.kafka.port == 9400  # environment beats the file
    assert cfg.kafka.topic_prefix == "shop" and cfg.ray.num_cpus == 8
    assert cfg.mlflow.model_name == "shop-adapter"
    assert cfg.state_dir == tmp_path
    assert cfg.topics.feedback == "shop.feedback"


def test_existing_services_are_used_not_started():
    cfg = load_config(
        path=None,
        env={
            "CL_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "CL_MLFLOW_URI": "http://mlflow:5000",
            "RAY_ADDRESS": "http://head:8265",
        },
    )
    assert not (cfg.kafka.managed or cfg.mlflow.managed or cfg.ray.managed)
    assert cfg.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert cfg.mlflow.tracking_uri == "http://mlflow:5000"
    assert cfg.ray.dashboard_url == "http://head:8265"


def test_a_bad_config_lists_every_problem_with_key_and_fix(tmp_path: Path):
    f = tmp_path / "cl.toml"
    f.write_text('[kafka]\nport = 70000\nbogus = 1\n[mlflow]\nport = "abc"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path=f, env={"CL_RAY_NUM_CPUS": "many", "CL_SERVE_PORT": "0"})
    problems = err.value.problems
    text = str(err.value)
    assert len(problems) == 5, problems
    for key in ("kafka.port", "kafka.bogus", "mlflow.port", "ray.num_cpus", "serve.port"):
        assert key in text
    assert "valid keys here are" in text  # the unknown key says what would be valid
    assert "CL_RAY_NUM_CPUS" in text  # an environment problem names its variable
    assert "1-65535" in text


def test_unknown_cl_variables_of_other_tools_are_ignored_but_section_typos_are_not():
    load_config(path=None, env={"CL_KERNELS": "torch", "CL_SOMETHING_ELSE": "x"})
    with pytest.raises(ConfigError, match="kafka.prot"):
        load_config(path=None, env={"CL_KAFKA_PROT": "1"})


def test_missing_and_malformed_files_are_reported(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(path=tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path=bad, env={})


def test_learner_workers_come_from_the_environment_and_zero_is_refused():
    assert load_config(path=None, env={"CL_LEARNER_WORKERS": "2"}).learner.workers == 2
    with pytest.raises(ConfigError, match="learner.workers"):
        load_config(path=None, env={"CL_LEARNER_WORKERS": "0"})


def test_gpu_settings_default_to_auto_and_come_from_the_environment():
    cfg = load_config(path=None, env={})
    assert (cfg.serve.num_gpus, cfg.serve.dtype, cfg.learner.use_gpu) == ("auto", "auto", "auto")
    env = {"CL_SERVE_NUM_GPUS": "0.5", "CL_SERVE_DTYPE": "float16", "CL_LEARNER_USE_GPU": "false"}
    cfg = load_config(path=None, env=env)
    assert (cfg.serve.num_gpus, cfg.serve.dtype, cfg.learner.use_gpu) == (0.5, "float16", False)
    assert load_config(path=None, env={"CL_LEARNER_USE_GPU": "auto", "CL_SERVE_NUM_GPUS": "2"}).serve.num_gpus == 2.0


def test_gpu_settings_from_the_file_survive_a_round_trip(tmp_path: Path):
    f = tmp_path / "cl.toml"
    f.write_text('[serve]\nnum_gpus = 1\ndtype = "bfloat16"\n[learner]\nuse_gpu = true\n')
    cfg = load_config(path=f, env={})
    assert (cfg.serve.num_gpus, cfg.serve.dtype, cfg.learner.use_gpu) == (1.0, "bfloat16", True)
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert load_config(path=again, env={}).to_dict() == cfg.to_dict()


def test_bad_gpu_settings_name_the_field_and_the_fix():
    env = {"CL_SERVE_NUM_GPUS": "many", "CL_SERVE_DTYPE": "int4", "CL_LEARNER_USE_GPU": "sometimes"}
    with pytest.raises(ConfigError) as err:
        load_config(path=None, env=env)
    text = str(err.value)
    assert len(err.value.problems) == 3, err.value.problems
    assert "serve.num_gpus: 'many' is not a GPU count" in text and "CL_SERVE_NUM_GPUS" in text
    assert "serve.dtype: 'int4' is unknown; use auto, bfloat16, float16, float32" in text
    assert "learner.use_gpu: 'sometimes' is unknown; use true, false or \"auto\"" in text
    for value, fix in (("-1", "negative"), ("1.5", "use 1 or 2")):
        with pytest.raises(ConfigError, match=fix):
            load_config(path=None, env={"CL_SERVE_NUM_GPUS": value})
