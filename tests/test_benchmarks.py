"""The benchmark scripts keep working: each runs in its smoke mode and its JSON line is checked
for the figures it promises (never for timings: machines here are shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _last_json_line(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=600
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_boundary_benchmark_smoke() -> None:
    result = _last_json_line("benchmarks/boundary.py", "--smoke", "--rounds", "1")
    models = {row["model"]: row for row in result["results"]}
    assert set(models) == {"mlp", "cnn"}
    for row in models.values():
        for key in ("flip_rate", "refined_rate", "median_gap", "margin_ratio", "cost_ratio"):
            assert isinstance(row[key], float | int)
        assert row["cost_ratio"] > 0
    assert models["mlp"]["flip_rate"] >= 0.9
    assert models["mlp"]["median_gap"] < 1e-4
    assert models["mlp"]["margin_ratio"] < 1e-2


@pytest.mark.parametrize("size", [("--components", "3", "--weights", "100000")])
def test_overlap_benchmark_agrees_with_pairwise_sets(size: tuple[str, ...]) -> None:
    result = _last_json_line("benchmarks/overlap.py", *size)
    assert result["max_abs_diff"] == 0.0
    assert result["components"] == 3


def test_lbmask_benchmark_smoke() -> None:
    result = _last_json_line("benchmarks/lbmask.py", "--smoke", "--rounds", "1")
    for key in ("step_ratio", "surgery_speedup_resnet18", "surgery_speedup_bert"):
        assert result[key] > 0
    for row in result["surgery"]:
        assert row["params"] < row["full_params"]  # surgery really removed parameters
    assert {row["model"] for row in result["steps"]} == {"mlp", "cnn"}
