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
