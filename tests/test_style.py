"""The code is laid out by ``ruff format`` and passes ``ruff check`` (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = [sys.executable, "-m", "ruff"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUFF, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_code_is_formatted():
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff format .`:\n{done.stdout}{done.stderr}"


def test_the_code_passes_the_linter():
    done = ruff("check", "--output-format", "concise", ".")
    assert done.returncode == 0, f"run `.venv/bin/ruff check --fix .`:\n{done.stdout}{done.stderr}"


def test_the_formatter_would_catch_a_badly_laid_out_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = {  'a':1 }\n")
    done = subprocess.run(
        [*RUFF, "format", "--check", "--config", str(REPO / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "bad.py" in done.stdout
