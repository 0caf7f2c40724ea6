"""``python -m bench.gpu_check``: a clear exit without a GPU, and a dry run of all its logic on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench.gpu_check import _syncs, cuda_test_paths, default_out, goals, peak_gbps

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_cuda_it_says_so_and_exits_2():
    done = _run(env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("no CUDA device: ") and "--dry-run" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_dry_run_exercises_every_part_on_the_cpu(tmp_path):
    done = _run("--dry-run", env={"OUT": str(tmp_path), "CL_KERNELS_CHECK_IDS": "1"}, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "**all checks passed**" in report
    for part in ("## CUDA tests", "## Kernels against", "## A replica serving", "## Fused MoE", "## Multi-LoRA"):
        assert part in report
    assert "serving on cpu in float16 (Triton interpreter) | pass" in report
    assert "learning on cpu (bf16 autocast) | pass" in report
    assert "goal NOT met" in done.stdout or "goal met" in done.stdout


def test_the_cuda_tests_are_found_by_their_guards():
    paths = cuda_test_paths()
    assert "tests/kernels" in paths  # its conftest adds the CUDA cases to every kernel test
    assert "tests/model/test_cuda.py" in paths and "tests/serving/test_cuda_replica.py" in paths
    assert not any(p.startswith(("tests/kernels/", "tests/integration")) for p in paths)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA A100-SXM4-80GB", None),
    ],
)
def test_the_roofline_comes_from_the_device_name(name, peak):
    assert peak_gbps(name) == peak


def test_the_report_goes_to_out_when_it_is_set(tmp_path):
    assert default_out({"OUT": str(tmp_path)}) == tmp_path / "gpu_check.md"
    assert default_out({}) == Path("gpu_check.md")


def test_goals_are_judged_at_decode_sizes():
    def row(T, ratio, pct, weights="float"):
        return {"T": T, "weights": weights, "loop_over_triton": ratio, "pct_peak": pct}

    rows = [row(1, 9.0, 70.0), row(64, 6.0, 61.0), row(64, 1.0, 10.0, "int8"), row(4096, 1.0, 5.0)]
    assert [met for _, met, _ in goals(rows, 4.5, 32, peak=3350.0)] == [True, True, True]
    rows[1] = row(64, 4.9, 59.0)
    assert [met for _, met, _ in goals(rows, 3.9, 32, peak=3350.0)] == [False, False, False]
    assert "pass --peak-gbps" in goals(rows, 5.0, 32, peak=None)[1][2]


def test_syncs_are_counted_at_the_line_of_ours_that_caused_them():
    def serve_a_batch():
        warnings.warn("called a synchronizing CUDA operation")  # what torch warns in sync debug mode
        warnings.warn("something else")

    modes = []
    where = _syncs(lambda: [serve_a_batch() for _ in range(3)], set_mode=modes.append)
    assert modes == ["warn", "default"]
    [(line, n)] = where.items()
    assert line.startswith("tests/bench/test_gpu_check.py:") and n == 3
