"""PNG plots of a :mod:`benchmarks.train` report: loss curves and loss vs learning rate per workload, and the
W4 width sweep (validation loss vs learning rate for every width, best learning rate vs width)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _grid(r: dict[str, Any]) -> tuple[list[float], list[float]]:
    points = [(g["lr"], g["final_val_loss"]) for g in r["grid"] if g["final_val_loss"] is not None]
    return [p[0] for p in points], [p[1] for p in points]


def workload_plot(name: str, w: dict[str, Any], path: Path) -> None:
    """Left: seed-mean validation loss vs step at each optimizer's best lr (band: min–max over seeds), with
    tuned AdamW's final loss dashed. Right: final validation loss vs learning rate on seed 0."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for oname, r in w["optimizers"].items():
        curves = np.array([s["val_loss"] for s in r["seed_runs"] if not s["diverged"]])
        if len(curves) == 0:
            continue
        steps = r["steps"][: curves.shape[1]]
        line = ax.plot(steps, curves.mean(0), label=f"{oname} (lr {r['best_lr']:.3g})")[0]
        ax.fill_between(steps, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        bx.plot(*_grid(r), "o-", color=line.get_color(), label=oname)
        bx.axvline(r["best_lr"], color=line.get_color(), ls=":", lw=1)
        if "target_val_loss" in r and oname == "optax.adamw":
            ax.axhline(r["target_val_loss"], color="k", ls="--", lw=1, label="tuned AdamW final")
    ax.set(xlabel="step", ylabel="validation loss", yscale="log", title=f"{name}: mean over {w['seeds']} seeds")
    bx.set(
        xlabel="learning rate",
        ylabel="final validation loss (seed 0)",
        xscale="log",
        yscale="log",
        title="learning-rate grid",
    )
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def width_plot(widths: dict[int, dict[str, Any]], path: Path) -> None:
    """One panel per optimizer: final validation loss vs learning rate, a line per width (star: best);
    last panel: best learning rate vs width."""
    names = list(next(iter(widths.values()))["optimizers"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.6))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    for ax, oname in zip(axes, names, strict=False):
        for color, (width, w) in zip(colors, sorted(widths.items()), strict=True):
            r = w["optimizers"][oname]
            lrs, losses = _grid(r)
            ax.plot(lrs, losses, "o-", ms=3, color=color, label=f"width {width}")
            best = [g["final_val_loss"] for g in r["grid"] if g["lr"] == r["best_lr"]][0]
            ax.plot([r["best_lr"]], [best], "*", ms=12, color=color)
        ax.set(title=oname, xlabel="learning rate", xscale="log", yscale="log")
    axes[0].set_ylabel("final validation loss")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for oname in names:
        ws = sorted(widths)
        ax.plot(ws, [widths[x]["optimizers"][oname]["best_lr"] for x in ws], "o-", label=oname)
    ax.set(title="best learning rate", xlabel="width", xscale="log", yscale="log")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: dict[str, Any], out: Path, suite: str) -> list[Path]:
    """Writes ``train_<suite>_<workload>.png`` per workload and ``train_<suite>_w4_widths.png``."""
    written = []
    widths = {}
    for name, w in report["workloads"].items():
        if name.startswith("w4_width_"):
            widths[int(name.rsplit("_", 1)[1])] = w
            continue
        path = out / f"train_{suite}_{name}.png"
        workload_plot(name, w, path)
        written.append(path)
    if widths:
        path = out / f"train_{suite}_w4_widths.png"
        width_plot(widths, path)
        written.append(path)
    return written
