"""The `cl` command: its table, help and README agree; failures are clear messages, not tracebacks."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

from cl.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]


def _isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Nothing of ours runs on these ports: a fresh state dir and ports nobody listens on."""
    from infra._private.process import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("CL_") and k != "RAY_ADDRESS"}
    env.update(CL_STATE_DIR=str(tmp_path / "state"), CL_CACHE_DIR=str(REPO / ".cache"))
    for key in (
        "KAFKA_PORT",
        "KAFKA_CONTROLLER_PORT",
        "MLFLOW_PORT",
        "RAY_PORT",
        "RAY_DASHBOARD_PORT",
        "RAY_METRICS_PORT",
    ):
        env[f"CL_{key}"] = str(free_port())
    env.update(extra)
    return env


def test_table_help_and_readme_agree():
    help_text = build_parser().format_help()
    readme = (REPO / "README.md").read_text()
    for command in COMMANDS:
        assert command.words[0] in help_text
        assert f"cl {command.name}" in readme, f"README does not document `cl {command.name}`"
    documented = set(re.findall(r"`cl ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", readme))  # import-adapter too
    known = {c.name for c in COMMANDS} | {c.words[0] for c in COMMANDS}
    assert documented <= known, f"README documents commands the CLI lacks: {documented - known}"


def test_status_names_each_down_component_and_the_fix(tmp_path, cl_command):
    result = cl_command(["status"], _isolated_env(tmp_path))
    assert result.returncode == 1
    for name in ("kafka", "mlflow", "ray"):
        assert re.search(rf"DOWN {name}\b", result.stdout), result.stdout
    assert "cl up" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_up_refuses_a_port_in_use_with_a_clear_message(tmp_path, cl_command):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cl_command(["up"], _isolated_env(tmp_path, CL_KAFKA_PORT=str(port)))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "CL_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_without_java_says_what_to_install(tmp_path, cl_command):
    env = _isolated_env(tmp_path, PATH=str(Path(sys.executable).parent))
    result = cl_command(["up"], env)
    assert result.returncode == 1
    assert "`java` was not found" in result.stderr and "install Java 17" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_maven_fetch_is_explained(tmp_path, cl_command):
    env = _isolated_env(tmp_path, CL_CACHE_DIR=str(tmp_path / "cache"), CL_KAFKA_VERSION="0.0.0-no-such-release")
    result = cl_command(["up"], env)
    assert result.returncode == 1
    assert "Maven could not fetch org.apache.kafka:kafka_2.13:0.0.0-no-such-release" in result.stderr
    assert "fix:" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_config_is_one_error_listing_all_problems(tmp_path, cl_command):
    env = _isolated_env(tmp_path, CL_KAFKA_PORT="99999", CL_RAY_NUM_CPUS="lots")
    result = cl_command(["config", "show"], env)
    assert result.returncode == 2
    assert "2 problem(s)" in result.stderr
    assert "kafka.port" in result.stderr and "ray.num_cpus" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_prints_the_resolved_values(tmp_path, cl_command):
    env = _isolated_env(tmp_path, CL_KAFKA_TOPIC_PREFIX="shop")
    result = cl_command(["config", "show", "--json"], env)
    assert result.returncode == 0, result.stderr
    import json

    values = json.loads(result.stdout)
    assert values["kafka"]["topic_prefix"] == "shop"
    assert values["kafka"]["port"] == int(env["CL_KAFKA_PORT"])


def test_config_show_text_is_a_loadable_cl_toml(tmp_path, cl_command):
    env = _isolated_env(tmp_path, CL_KAFKA_TOPIC_PREFIX="shop")
    result = cl_command(["config", "show"], env)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "cl.toml"
    saved.write_text(result.stdout)
    from cl.config import load_config

    again = load_config(path=saved, env={})
    assert again.kafka.topic_prefix == "shop" and again.kafka.bootstrap is None
    assert again.kafka.port == int(env["CL_KAFKA_PORT"])
