"""Every example runs end to end at a tiny size and its loss goes down; the Colab notebook's code cells run in order.

The examples are scripts, not package modules: they are loaded from ``examples/`` by path and their ``main(argv)``
is called in-process (one JAX import for all). Notebook cells tagged ``skip-execution`` (the Colab ``%pip install``)
are skipped; every other code cell is executed with ``exec`` in one namespace, at the size the notebook picks on
CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from pathlib import Path

import matplotlib
import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SKIP_TAG = "skip-execution"


@functools.cache
def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flax linen modules are dataclasses: they look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_nnx_mlp_trains():  # Scion with NNX runs in the notebook test
    result = _load("nnx_mlp").main(
        ["--optimizer", "muon", "--lr", "0.2", "--width", "16", "--steps", "25", "--batch", "32"]
    )
    assert math.isfinite(result["train_loss"])
    assert result["train_loss"] < 0.7 * result["first_loss"], result
    assert result["test_accuracy"] > 0.5, result  # ten classes: chance is 0.1


@pytest.mark.slow
def test_equinox_cnn_trains():
    result = _load("equinox_cnn").main(["--optimizer", "muon", "--lr", "0.05", "--steps", "30", "--batch", "64"])
    assert math.isfinite(result["train_loss"])
    assert result["train_loss"] < 0.7 * result["first_loss"], result
    assert result["test_accuracy"] > 0.5, result  # ten classes: chance is 0.1


@pytest.mark.slow
def test_linen_char_transformer_trains_on_builtin_text():
    args = ["--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "16", "--batch", "8"]
    result = _load("linen_char_transformer").main([*args, "--steps", "40", "--lr", "0.05"])
    assert math.isfinite(result["val_loss"])
    assert result["train_loss"] < result["uniform_loss"] - 0.5, result  # it learnt more than the alphabet


def test_linen_char_transformer_rejects_a_too_short_text(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be", encoding="utf-8")
    with pytest.raises(ValueError, match="seq-len 16"):
        _load("linen_char_transformer").main(["--text", str(short), "--seq-len", "16"])


@pytest.mark.slow
def test_demo_digits_runs(monkeypatch, tmp_path, capsys):
    out = tmp_path / "demo.png"
    monkeypatch.setattr(sys, "argv", ["demo_digits.py", "--steps", "3", "--batch", "16", "--out", str(out)])
    _load("demo_digits").main()
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and out.exists()  # header, rule and one row per optimizer; the loss plot
    assert "peak lr" in table[0] and "| optax.adamw | 0.003 |" in table[2]  # the learning rates it used
    assert "vs adamw: ms/step ÷ optax.adamw's ms/step" in printed and f"loss curves: {out}" in printed


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu(monkeypatch, capsys):
    matplotlib.use("Agg")
    monkeypatch.setenv("NORMOPT_TINY", "1")
    notebook = nbformat.read(EXAMPLES / "colab_tpu.ipynb", as_version=4)
    nbformat.validate(notebook)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    skipped = [c for c in cells if SKIP_TAG in c.metadata.get("tags", [])]
    assert len(skipped) == 1 and "pip install" in skipped[0].source  # only the Colab install cell is skipped
    namespace: dict = {}
    for index, cell in enumerate(c for c in cells if c not in skipped):
        exec(compile(cell.source, f"colab_tpu.ipynb[code cell {index}]", "exec"), namespace)
    assert namespace["TINY"]
    assert "NO TPU FOUND — running a tiny CPU configuration" in capsys.readouterr().out  # said loudly, not silently
    results = namespace["results"]
    assert len(results) == len(namespace["OPTIMIZERS"]) * len(namespace["WIDTHS"]) * len(namespace["LEARNING_RATES"])
    assert all(math.isfinite(loss) for losses, _ in results.values() for loss in losses)
