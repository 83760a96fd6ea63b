"""Smoke tests of the benchmark scripts run as a user would: in a subprocess, writing into a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a script folder, not installed

from benchmarks import data as data_lib  # noqa: E402


def _require_data() -> None:
    try:
        data_lib.fashion_mnist()
        data_lib.shakespeare()
    except FileNotFoundError as e:
        pytest.skip(f"benchmark data not installed: {e}")


@pytest.mark.slow  # compiles 4 training steps (≈ 1 min on 2 CPU cores)
def test_your_model_smoke(tmp_path):
    _require_data()
    script = ROOT / "benchmarks" / "your_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = (tmp_path / "your_model.md").read_text()
    assert "| cnn | normopt.muon | model |" in table and "| transformer | optax.adamw | - |" in table
    report = json.loads((tmp_path / "your_model.json").read_text())
    assert set(report["workloads"]) == {"cnn", "transformer"}
    for w in report["workloads"].values():
        for r in w["optimizers"].values():
            assert len(r["grid"]) == 3 and len(r["runs"]) == 3 + report["seeds"] - 1


@pytest.mark.slow  # trains a 1-layer char model for 20 steps with 3 optimizers (≈ 40 s on 2 CPU cores)
def test_leaderboard_smoke(tmp_path):
    try:
        data_lib.shakespeare()
    except FileNotFoundError as e:
        pytest.skip(f"benchmark data not installed: {e}")
    names = "optax.adamw,optax.contrib.muon,normopt.muon"
    done = subprocess.run(
        [sys.executable, "benchmarks/leaderboard.py", "--size", "smoke", "--optimizers", names, "--grid", "2"]
        + ["--timing-rounds", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "leaderboard_smoke.json").read_text())
    adamw = report["workload"]["optimizers"]["optax.adamw"]
    assert report["target"] == pytest.approx(adamw["val_curve_mean"][-1])  # the target is tuned AdamW's final loss
    ranked = [row["optimizer"] for row in report["ranking"]]
    assert sorted(ranked) == sorted(names.split(","))
    steps = [row["steps_to_target"] for row in report["ranking"]]
    reached = [s for s in steps if s is not None]
    assert reached == sorted(reached) and steps[: len(reached)] == reached  # ranked by steps, "never" last
    assert all(t["median"] > 0 for t in report["timing"].values())
    assert (
        "| 1 |" in (tmp_path / "leaderboard_smoke.md").read_text()
        and (tmp_path / "leaderboard_smoke.png").stat().st_size
    )
