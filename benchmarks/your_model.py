"""Your model: normopt reading each parameter from the model's structure (``normopt.layouts``), side by side with
``optax.adamw`` and with the "names only" reading (no ``layout=``), on two models the name reader gets wrong or
that stack layers:

    python benchmarks/your_model.py                          # "full": ≈ 20 min on 2 shared CPU cores
    python benchmarks/your_model.py --suite brief            # the sizes first asked for: hours on 2 CPU cores
    python benchmarks/your_model.py --smoke --out /tmp/ym    # tiny sizes, 2 optimizers, a few steps, ≈ 1 min

Workloads:

* ``cnn``: an Equinox CNN on Fashion-MNIST (Conv2d 1→c1, 3×3 → relu → maxpool 2 → Conv2d c1→c2 → relu → maxpool 2
  → Linear → 128 → relu → Linear 128→10; torch-style ``[out, in, kh, kw]`` weights; c1, c2 = 16, 32 in "full",
  32, 64 in "brief"), batch 128; the last 5000
  training images are held out for validation (the learning rate is picked on it), test accuracy is reported.
  ``params = eqx.filter(model, eqx.is_array)``, ``layout = normopt.layouts.equinox(model)``.
* ``transformer``: a Flax NNX pre-LayerNorm causal transformer whose L = 4 blocks are created with ``nnx.vmap``
  (every block parameter has a leading layer axis) and run with ``nnx.scan``; Embed (tokens and positions),
  LayerNorm in the blocks, ``nnx.MultiHeadAttention`` (causal mask), a 4× GELU MLP, RMSNorm and a Linear head;
  character-level Shakespeare, context 64, 4 heads, d_model 64 and batch 16 in "full" (128 and 32 in "brief");
  the last 10 % of the corpus is
  validation (256 fixed random windows). ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and
  ``layout = normopt.layouts.nnx(model, example_tokens)``.

Optimizers (every argument but the learning rate at its default): ``optax.adamw``, ``normopt.muon`` and
``normopt.scion`` with the model's layout, and ``normopt.muon``/``normopt.scion`` without one (names only).

Protocol, identical for every optimizer of a workload:

* seed ``s`` gives the initial parameters and the batch order, so every optimizer starts from the same parameters
  and sees the same batches;
* one compiled training step per optimizer (``jax.jit(...).lower(...).compile()``, called from Python: XLA:CPU runs
  the CNN's convolution gradients ≈ 5× slower inside ``lax.scan``): the peak learning rate is state
  (``optax.inject_hyperparams``), so the grid and the seeds reuse the compilation;
* the learning rate is an optax warm-up cosine schedule: linear from 0 over the first 5 % of steps to the peak,
  cosine decay to 0 at the last step;
* a grid of 3 peak learning rates (powers of 2 around each optimizer's usual value, see :data:`GRIDS`) on seed 0,
  scored by validation accuracy (CNN) or validation loss (transformer); the best is rerun on seed 1 and reported
  as the mean ± half the range over the 2 seeds;
* ms/step: wall time of the compiled steps over the steps (evaluation and compilation excluded); the machine is
  shared with other jobs, so timings are noisy.

Writes ``your_model.json`` (every run) and ``your_model.md`` (table, goal check, command, date, machine) into
``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `normopt` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import normopt  # noqa: E402
from benchmarks import data as data_lib  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

SUITES: dict[str, dict[str, Any]] = {
    # "full" fits ≈ 20 min on 2 CPU cores shared with other jobs (XLA:CPU convolution gradients are slow: the brief's
    # 32/64-channel CNN took 230 ms/step and the d=128, batch-32 transformer 500-600 ms/step there); "brief" is the
    # size first asked for (several hours on the same machine).
    "full": {
        "seeds": 2,
        "cnn": dict(steps=250, chunk=50, batch=128, channels=(16, 32), hidden=128, validation=5000, test=10000),
        "transformer": dict(steps=150, chunk=50, batch=16, context=64, dim=64, depth=4, heads=4, val_windows=256),
    },
    "brief": {
        "seeds": 2,
        "cnn": dict(steps=1500, chunk=100, batch=128, channels=(32, 64), hidden=128, validation=5000, test=10000),
        "transformer": dict(steps=1000, chunk=100, batch=32, context=64, dim=128, depth=4, heads=4, val_windows=256),
    },
    "smoke": {
        "seeds": 2,
        "optimizers": ("optax.adamw [-]", "normopt.muon [model]"),
        "cnn": dict(steps=8, chunk=4, batch=16, channels=(4, 8), hidden=16, validation=200, test=200),
        "transformer": dict(steps=8, chunk=4, batch=4, context=16, dim=16, depth=2, heads=2, val_windows=8),
    },
}

GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    # peak learning rates per workload; names-only variants share their layout variant's grid. Centres: AdamW
    # ≈ 2e-3 (CNN) / 4e-3 (transformer), Muon ≈ 2e-2 (docs/recipes.md, README), Scion 2⁻⁴ on the CNN and 2⁻⁶ on
    # the transformer (benchmarks/train.py grid centre and W2's tuned value; README: 0.05).
    "cnn": {
        "optax.adamw": (2.0**-10, 2.0**-9, 2.0**-8),
        "normopt.muon": (2.0**-7, 2.0**-6, 2.0**-5),
        "normopt.scion": (2.0**-5, 2.0**-4, 2.0**-3),
    },
    "transformer": {
        "optax.adamw": (2.0**-9, 2.0**-8, 2.0**-7),
        "normopt.muon": (2.0**-7, 2.0**-6, 2.0**-5),
        "normopt.scion": (2.0**-7, 2.0**-6, 2.0**-5),
    },
}


@dataclasses.dataclass
class Optimizer:
    """One optimizer of the comparison: ``make(learning_rate)`` with a schedule, and how leaves are read."""

    name: str
    layout: str  # "model" (normopt.layouts), "names" (no layout=), "-" (not a normopt optimizer)
    make: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation]
    grid: tuple[float, ...]

    @property
    def key(self) -> str:
        return f"{self.name} [{self.layout}]"


def optimizers(workload: str, layout: normopt.layouts.Layouts, which: list[str] | None = None) -> list[Optimizer]:
    """AdamW, then Muon and Scion with the model's layout and with names only (every other argument default)."""
    grid = GRIDS[workload]
    out = [
        Optimizer("optax.adamw", "-", lambda lr: optax.adamw(lr), grid["optax.adamw"]),
        Optimizer("normopt.muon", "model", lambda lr: normopt.muon(lr, layout=layout), grid["normopt.muon"]),
        Optimizer("normopt.scion", "model", lambda lr: normopt.scion(lr, layout=layout), grid["normopt.scion"]),
        Optimizer("normopt.muon", "names", lambda lr: normopt.muon(lr), grid["normopt.muon"]),
        Optimizer("normopt.scion", "names", lambda lr: normopt.scion(lr), grid["normopt.scion"]),
    ]
    return [o for o in out if which is None or o.key in which or o.name in which]


def parse_grids(specs: list[str]) -> dict[str, tuple[float, ...]]:
    """``["optax.adamw=0.004,0.008", ...]`` → ``{"optax.adamw": (0.004, 0.008)}`` (grid overrides)."""
    out = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        out[name] = tuple(float(v) for v in values.split(","))
    return out


def scheduled(opt: Optimizer, steps: int) -> optax.GradientTransformation:
    """``opt`` with a warm-up cosine schedule whose peak ``peak_lr`` lives in the state (no recompilation)."""
    unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, max(1, steps // 20), steps, 0.0)

    def factory(peak_lr):
        return opt.make(lambda count: peak_lr * unit(count))

    return optax.inject_hyperparams(factory)(peak_lr=opt.grid[0])


def set_peak(opt_state: Any, lr: float) -> None:
    """Sets the peak learning rate held by :func:`scheduled`'s state (a plain array or an NNX ``OptArray``)."""
    slot = opt_state.hyperparams["peak_lr"]
    if isinstance(slot, nnx.Variable):
        slot[...] = jnp.asarray(lr, slot[...].dtype)
    else:
        opt_state.hyperparams["peak_lr"] = jnp.asarray(lr, slot.dtype)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---------------------------------------------------------------------------------------------- Equinox CNN


class CNN(eqx.Module):
    """Conv2d(1→c1, 3) → relu → maxpool 2 → Conv2d(c1→c2, 3) → relu → maxpool 2 → Linear(→hidden) → relu →
    Linear(hidden→10), on one ``side × side`` image flattened (vmap over the batch)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    side: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, channels: tuple[int, int] = (32, 64), hidden: int = 128, side: int = 28):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        flat = ((side - 2) // 2 - 2) // 2
        self.conv1 = eqx.nn.Conv2d(1, channels[0], 3, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], 3, key=k2)
        self.fc1 = eqx.nn.Linear(channels[1] * flat * flat, hidden, key=k3)
        self.fc2 = eqx.nn.Linear(hidden, 10, key=k4)
        self.side = side

    def __call__(self, x: jax.Array) -> jax.Array:
        pool = eqx.nn.MaxPool2d(2, 2)
        x = pool(jax.nn.relu(self.conv1(x.reshape(1, self.side, self.side))))
        x = pool(jax.nn.relu(self.conv2(x)))
        return self.fc2(jax.nn.relu(self.fc1(x.reshape(-1))))


def _epoch_indices(n: int, batch: int, seed: int, steps: int) -> np.ndarray:
    """Mini-batches walking through reshuffled epochs of ``n`` examples: ``[steps, batch]`` int32."""
    rng = np.random.default_rng([seed, 1])
    epochs = -(-steps * batch // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    return order[: steps * batch].reshape(steps, batch).astype(np.int32)


class CNNWorkload:
    """The Equinox CNN: plain pytrees, ``params = eqx.filter(model, eqx.is_array)``."""

    name = "cnn"
    higher_is_better = True
    metric = "test_accuracy"
    score_key = "val_accuracy"

    def __init__(self, cfg: dict[str, Any], split: dict[str, np.ndarray]):
        self.cfg = cfg
        validation, test = cfg["validation"], cfg["test"]
        x, y = split["train_images"], split["train_labels"]
        self.data = {
            "x": jnp.asarray(x[:-validation]),
            "y": jnp.asarray(y[:-validation]),
            "val_x": jnp.asarray(x[-validation:]),
            "val_y": jnp.asarray(y[-validation:]),
            "test_x": jnp.asarray(split["test_images"][:test]),
            "test_y": jnp.asarray(split["test_labels"][:test]),
        }
        self.n_train = len(x) - validation
        model = self.model(0)
        self.static = eqx.partition(model, eqx.is_array)[1]
        self.layout = normopt.layouts.equinox(model)
        self.params0 = eqx.filter(model, eqx.is_array)
        self.eval_batch = math.gcd(validation, test, 1000)
        self.sums = jax.jit(self._sums)
        self.evaluate = self._evaluate
        self.info = {
            "model": f"Equinox CNN conv{cfg['channels']} + Linear({cfg['hidden']}) + Linear(10)",
            "batch": cfg["batch"],
            "train": self.n_train,
            "validation": validation,
            "test": test,
            "params": sum(p.size for p in jax.tree.leaves(self.params0)),
        }

    def model(self, seed: int) -> CNN:
        return CNN(jax.random.key(seed), tuple(self.cfg["channels"]), self.cfg["hidden"])

    def loss(self, params: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        model = eqx.combine(params, self.static)
        return _cross_entropy(jax.vmap(model)(xs), ys)

    def _sums(self, params: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        """(summed cross-entropy, number correct) over one evaluation batch."""
        logits = jax.vmap(eqx.combine(params, self.static))(xs)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ys)
        return jnp.stack([ce.sum(), jnp.sum(jnp.argmax(logits, -1) == ys)])

    def _evaluate(self, params: Any, data: dict[str, jax.Array]) -> dict[str, float]:
        """Validation and test loss/accuracy, in batches from Python (XLA:CPU runs convolutions inside
        ``lax.map``/``lax.scan`` several times slower than at top level)."""
        out = {}
        for split in ("val", "test"):
            xs, ys, b = data[f"{split}_x"], data[f"{split}_y"], self.eval_batch
            total = sum(np.asarray(self.sums(params, xs[i : i + b], ys[i : i + b])) for i in range(0, len(xs), b))
            out[f"{split}_loss"], out[f"{split}_accuracy"] = float(total[0] / len(xs)), float(total[1] / len(xs))
        return out

    def runner(self, opt: Optimizer) -> Runner:
        tx = scheduled(opt, self.cfg["steps"])

        def step(params, opt_state, data, idx):
            loss, grads = jax.value_and_grad(self.loss)(params, data["x"][idx], data["y"][idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def start(seed: int, lr: float) -> tuple[Any, ...]:
            params = eqx.filter(self.model(seed), eqx.is_array)
            opt_state = tx.init(params)
            set_peak(opt_state, lr)
            return params, opt_state

        return Runner(self, opt, step, start, lambda carry: self.evaluate(carry[0], self.data))

    def indices(self, seed: int) -> np.ndarray:
        return _epoch_indices(self.n_train, self.cfg["batch"], seed, self.cfg["steps"])

    def describe(self, opt: Optimizer) -> list[dict]:
        return normopt.describe(self.params0, opt.make(1e-3), print_fn=None)


# -------------------------------------------------------------------------------- NNX layer-stacked transformer


class Block(nnx.Module):
    """x + attn(LN(x)) (causal), then x + MLP(LN(x)) with a 4× GELU hidden layer."""

    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.ln2(x))))


class StackedTransformer(nnx.Module):
    """Causal character model ``tokens [batch, context] → logits [batch, context, vocab]``; the ``depth`` blocks
    are one stacked module (``nnx.vmap`` at creation, ``nnx.scan`` in the forward pass)."""

    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Embed(context, dim, rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs: nnx.Rngs) -> Block:
            return Block(dim, heads, rngs)

        self.blocks = blocks(rngs)
        self.ln_f = nnx.RMSNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens) + self.pos(jnp.arange(tokens.shape[-1]))
        mask = nnx.make_causal_mask(tokens)

        @nnx.scan(in_axes=(nnx.Carry, 0, None), out_axes=nnx.Carry)
        def run(x: jax.Array, block: Block, mask: jax.Array) -> jax.Array:
            return block(x, mask)

        return self.head(self.ln_f(run(x, self.blocks, mask)))


class TransformerWorkload:
    """The NNX stacked transformer, trained through ``nnx.Optimizer(model, tx, wrt=nnx.Param)``."""

    name = "transformer"
    higher_is_better = False
    metric = "val_loss"
    score_key = "val_loss"

    def __init__(self, cfg: dict[str, Any], text: str):
        self.cfg = cfg
        tokens, vocab = data_lib.encode_chars(text)
        split = int(0.9 * len(tokens))
        ctx = cfg["context"]
        starts = np.random.default_rng(7).integers(0, len(tokens) - split - ctx - 1, cfg["val_windows"])
        self.data = {
            "train": jnp.asarray(tokens[:split]),
            "val": jnp.asarray(tokens[split:]),
            "val_starts": jnp.asarray(starts),
        }
        self.split, self.vocab = split, len(vocab)
        model = self.model(0)
        self.example = jnp.zeros((1, ctx), jnp.int32)
        self.layout = normopt.layouts.nnx(model, self.example)
        self.model_def = nnx.graphdef(model)
        self.params0 = nnx.state(model, nnx.Param)
        self.evaluate = jax.jit(self._evaluate)
        self.info = {
            "model": f"NNX transformer: {cfg['depth']} stacked blocks (nnx.vmap/nnx.scan), d={cfg['dim']}, "
            f"{cfg['heads']} heads, context {ctx}, vocab {len(vocab)}",
            "batch": cfg["batch"],
            "train_chars": split,
            "val_chars": len(tokens) - split,
            "val_windows": cfg["val_windows"],
            "params": sum(p.size for p in jax.tree.leaves(self.params0)),
        }

    def model(self, seed: int) -> StackedTransformer:
        c = self.cfg
        return StackedTransformer(self.vocab, c["context"], c["dim"], c["depth"], c["heads"], nnx.Rngs(seed))

    def windows(self, seq: jax.Array, starts: jax.Array) -> jax.Array:
        return jax.vmap(lambda s: jax.lax.dynamic_slice(seq, (s,), (self.cfg["context"] + 1,)))(starts)

    @staticmethod
    def loss(model: StackedTransformer, windows: jax.Array) -> jax.Array:
        return _cross_entropy(model(windows[:, :-1]), windows[:, 1:])

    def _evaluate(self, model_state: Any, data: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model = nnx.merge(self.model_def, model_state)
        return {"val_loss": self.loss(model, self.windows(data["val"], data["val_starts"]))}

    def runner(self, opt: Optimizer) -> Runner:
        tx = scheduled(opt, self.cfg["steps"])
        opt_def = nnx.graphdef(nnx.Optimizer(self.model(0), tx, wrt=nnx.Param))

        def step(model_state, opt_state, data, idx):
            model, optimizer = nnx.merge(self.model_def, model_state), nnx.merge(opt_def, opt_state)
            loss, grads = nnx.value_and_grad(self.loss)(model, self.windows(data["train"], idx))
            optimizer.update(model, grads)
            return nnx.state(model), nnx.state(optimizer), loss

        def start(seed: int, lr: float) -> tuple[Any, ...]:
            model = self.model(seed)
            optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
            set_peak(optimizer.opt_state, lr)
            return nnx.state(model), nnx.state(optimizer)

        return Runner(self, opt, step, start, lambda carry: self.evaluate(carry[0], self.data))

    def indices(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 2])
        shape = (self.cfg["steps"], self.cfg["batch"])
        return rng.integers(0, self.split - self.cfg["context"] - 1, shape).astype(np.int32)

    def describe(self, opt: Optimizer) -> list[dict]:
        return normopt.describe(self.params0, opt.make(1e-3), print_fn=None)


# ------------------------------------------------------------------------------------------------------ protocol


class Runner:
    """One optimizer on one workload: the training chunk compiled once, then run for any learning rate and seed."""

    def __init__(self, workload: Any, opt: Optimizer, step: Callable, start: Callable, evaluate: Callable):
        self.workload, self.opt, self.start, self.evaluate = workload, opt, start, evaluate
        params, opt_state = start(0, opt.grid[0])
        t0 = time.perf_counter()
        jitted = jax.jit(step, donate_argnums=(0, 1))
        self.step = jitted.lower(params, opt_state, workload.data, workload.indices(0)[0]).compile()
        self.compile_s = time.perf_counter() - t0

    def run(self, lr: float, seed: int) -> dict[str, Any]:
        """Trains from seed ``seed``'s initial parameters at peak learning rate ``lr``; stops on a non-finite loss."""
        cfg = self.workload.cfg
        params, opt_state = self.start(seed, lr)
        indices = self.workload.indices(seed)
        indices = indices.reshape((cfg["steps"] // cfg["chunk"], cfg["chunk"]) + indices.shape[1:])
        train, seconds, diverged = [], 0.0, False
        for chunk_indices in indices:
            t0 = time.perf_counter()
            losses = []
            for idx in chunk_indices:
                params, opt_state, loss = self.step(params, opt_state, self.workload.data, idx)
                losses.append(loss)
            losses = np.asarray(jax.device_get(losses))
            seconds += time.perf_counter() - t0
            train.append(float(losses.mean()))
            if not np.isfinite(losses).all():
                diverged = True
                break
        metrics = {} if diverged else {k: float(v) for k, v in self.evaluate((params, opt_state)).items()}
        return {
            "lr": lr,
            "seed": seed,
            "diverged": diverged or not all(math.isfinite(v) for v in metrics.values()),
            "train_loss": train,
            "ms_per_step": 1e3 * seconds / (len(train) * cfg["chunk"]),
            **metrics,
        }


def score(workload: Any, run: dict[str, Any]) -> float:
    """Higher is better: validation accuracy (CNN) or minus validation loss (transformer); -inf if diverged."""
    if run["diverged"]:
        return -math.inf
    value = run[workload.score_key]
    return value if workload.higher_is_better else -value


def benchmark(workload: Any, opts: list[Optimizer], seeds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The grid on seed 0, then the best learning rate on seeds 1..seeds-1, for every optimizer."""
    results = {}
    for opt in opts:
        runner = workload.runner(opt)
        log(f"[{workload.name}] {opt.key}: compiled in {runner.compile_s:.1f} s")
        grid = []
        for lr in opt.grid:
            grid.append(runner.run(lr, 0))
            log(f"[{workload.name}] {opt.key} lr={lr:.4g} seed=0 {_brief(workload, grid[-1])}")
        best = max(grid, key=lambda r: score(workload, r))
        seed_runs = [best]
        for seed in range(1, seeds):
            seed_runs.append(runner.run(best["lr"], seed))
            log(f"[{workload.name}] {opt.key} lr={best['lr']:.4g} seed={seed} {_brief(workload, seed_runs[-1])}")
        results[opt.key] = summarise(workload, opt, runner, grid, seed_runs)
    return {"workload": workload.name, "config": workload.cfg, "info": workload.info, "optimizers": results}


def _brief(workload: Any, run: dict[str, Any]) -> str:
    if run["diverged"]:
        return "diverged"
    return f"{workload.metric}={run[workload.metric]:.4f} ({run['ms_per_step']:.1f} ms/step)"


def _stat(values: list[float]) -> dict[str, Any]:
    """Mean ± half the range (= the standard deviation for 2 seeds); None where any run diverged."""
    if not values or not all(math.isfinite(v) for v in values):
        return {"mean": None, "spread": None, "n": len(values)}
    return {"mean": float(np.mean(values)), "spread": float(np.ptp(values) / 2), "n": len(values)}


def summarise(workload: Any, opt: Optimizer, runner: Runner, grid: list[dict], seed_runs: list[dict]) -> dict:
    best = seed_runs[0]["lr"]
    ok = not any(r["diverged"] for r in seed_runs)
    metric = [r.get(workload.metric, math.nan) for r in seed_runs] if ok else [math.nan]
    return {
        "name": opt.name,
        "layout": opt.layout,
        "grid": [
            {"lr": r["lr"], workload.score_key: r.get(workload.score_key), "diverged": r["diverged"]} for r in grid
        ],
        "best_lr": best,
        "best_on_edge": best in (min(opt.grid), max(opt.grid)),
        workload.metric: _stat(metric),
        "val_loss": _stat([r.get("val_loss", math.nan) for r in seed_runs]),
        "ms_per_step": float(np.mean([r["ms_per_step"] for r in grid + seed_runs[1:]])),
        "compile_s": runner.compile_s,
        "runs": grid + seed_runs[1:],
    }


def reading_differences(workload: Any, opts: list[Optimizer]) -> list[str]:
    """The leaves a names-only optimizer reads differently from the same optimizer given the model's layout."""
    cols = ("role", "norm", "fan_in", "fan_out", "batch_axes", "scale")
    by_key = {o.key: o for o in opts}
    lines = []
    for opt in opts:
        model = by_key.get(f"{opt.name} [model]")
        if opt.layout != "names" or model is None:
            continue
        ours = {r["path"]: r for r in workload.describe(model)}
        diffs = []
        for row in workload.describe(opt):
            mine = ours[row["path"]]
            changed = [c for c in cols if str(row[c]) != str(mine[c])]
            if changed:
                what = ", ".join(f"{c} {mine[c] or '–'} → {row[c] or '–'}" for c in changed)
                diffs.append(f"`{row['path']}` {row['shape']}: {what}")
        head = f"{workload.name}, {opt.name} names only vs layout:"
        lines.append(f"* {head} " + ("no difference" if not diffs else f"{len(diffs)} leaves differ"))
        lines += [f"  * {d}" for d in diffs]
    return lines


# -------------------------------------------------------------------------------------------------------- report


def _fmt(stat: dict[str, Any], scale: float = 1.0, digits: int = 4) -> str:
    if stat["mean"] is None:
        return "diverged"
    mean, spread = stat["mean"] * scale, stat["spread"] * scale
    return f"{mean:.{digits}g} ± {spread:.2g}" if stat["n"] > 1 else f"{mean:.{digits}g}"


def goal_check(report: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for the goals: CNN muon/scion (layout) within 2 points of AdamW's test accuracy, NNX
    stacked transformer within 5 % of AdamW's validation loss."""
    out = []
    for wname, limit in (("cnn", 2.0), ("transformer", 0.05)):
        w = report["workloads"].get(wname)
        if w is None or "optax.adamw [-]" not in w["optimizers"]:
            continue
        metric = "test_accuracy" if wname == "cnn" else "val_loss"
        ref = w["optimizers"]["optax.adamw [-]"][metric]["mean"]
        for key in ("normopt.muon [model]", "normopt.scion [model]"):
            r = w["optimizers"].get(key)
            if r is None:
                continue
            value = r[metric]["mean"]
            if wname == "cnn":
                what = f"CNN {r['name']} test acc ≥ AdamW − 2 points"
                met = None if value is None or ref is None else 100 * (value - ref) >= -limit
                got = "diverged" if met is None else f"{100 * value:.2f} % vs {100 * ref:.2f} %"
            else:
                what = f"transformer {r['name']} val loss ≤ 1.05 × AdamW"
                met = None if value is None or ref is None else value <= (1 + limit) * ref
                got = "diverged" if met is None else f"{value:.4f} vs {ref:.4f} (×{value / ref:.3f})"
            out.append((what, got, bool(met) if met is not None else False))
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| workload | optimizer | layout | best lr (grid) | metric (mean ± half-range, "
        f"{report['seeds']} seeds) | vs AdamW | ms/step | ms/step ÷ AdamW | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for wname, w in report["workloads"].items():
        ref = w["optimizers"].get("optax.adamw [-]")
        metric = "test_accuracy" if wname == "cnn" else "val_loss"
        for r in w["optimizers"].values():
            grid = ", ".join(f"{g['lr']:.3g}" for g in r["grid"])
            edge = " edge" if r["best_on_edge"] else ""
            m = r[metric]
            base = None if ref is None else ref[metric]["mean"]
            if wname == "cnn":
                value = f"test acc {_fmt(m, 100, 4)} %"
                vs = "–" if m["mean"] is None or base is None else f"{100 * (m['mean'] - base):+.2f} pts"
            else:
                value = f"val loss {_fmt(m)}"
                vs = "–" if m["mean"] is None or base is None else f"×{m['mean'] / base:.3f}"
            speed = "–" if ref is None else f"{r['ms_per_step'] / ref['ms_per_step']:.2f}"
            lines.append(
                f"| {wname} | {r['name']} | {r['layout']} | {r['best_lr']:.3g}{edge} ({grid}) | {value} | {vs} "
                f"| {r['ms_per_step']:.1f} | {speed} | {r['compile_s']:.1f} |"
            )
    lines += ["", "Grid (seed 0; CNN: validation accuracy, transformer: validation loss):", ""]
    lines += ["| workload | optimizer | layout | lr → score |", "|---|---|---|---|"]
    for wname, w in report["workloads"].items():
        for r in w["optimizers"].values():
            key = "val_accuracy" if wname == "cnn" else "val_loss"
            cells = ", ".join(
                f"{g['lr']:.3g} → {'diverged' if g['diverged'] else format(g[key], '.4f')}" for g in r["grid"]
            )
            lines.append(f"| {wname} | {r['name']} | {r['layout']} | {cells} |")
    checks = goal_check(report)
    if checks:
        lines += ["", "| goal | measured | met |", "|---|---|---|"]
        lines += [f"| {what} | {got} | {'**met**' if met else '**missed**'} |" for what, got, met in checks]
    if report.get("readings"):
        lines += ["", "How the names-only reading differs from the model's layout (`normopt.describe`):", ""]
        lines += report["readings"]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores (shared), jax {jax.__version__} on {jax.devices()[0].device_kind}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a few steps (< 60 s)")
    parser.add_argument("--suite", choices=("full", "brief"), default="full", help="sizes (see SUITES)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where your_model.{json,md} go")
    parser.add_argument("--workloads", default="cnn,transformer", help="comma-separated subset of cnn,transformer")
    parser.add_argument("--optimizers", default=None, help="comma-separated names or keys, e.g. 'optax.adamw'")
    parser.add_argument("--cnn-steps", type=int, default=None, help="override the CNN's step budget")
    parser.add_argument("--transformer-steps", type=int, default=None, help="override the transformer's steps")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument(
        "--grid", action="append", default=[], help="override a grid: NAME=lr,lr,... (name or key; repeatable)"
    )
    parser.add_argument("--data", default=None, help="Fashion-MNIST directory (else the defaults of data.py)")
    args = parser.parse_args(argv)
    suite = SUITES["smoke" if args.smoke else args.suite]
    seeds = args.seeds or suite["seeds"]
    which = suite.get("optimizers") if args.optimizers is None else args.optimizers.split(",")
    grids = parse_grids(args.grid)
    log = lambda s: print(s, flush=True)
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/your_model.py", *argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"jax": jax.__version__, "optax": optax.__version__, "normopt": normopt.__version__},
        "seeds": seeds,
        "workloads": {},
        "readings": [],
    }
    start = time.perf_counter()
    for name in args.workloads.split(","):
        cfg = dict(suite[name])
        override = args.cnn_steps if name == "cnn" else args.transformer_steps
        if override is not None:
            cfg["steps"], cfg["chunk"] = override, math.gcd(override, cfg["chunk"])
        try:
            if name == "cnn":
                workload = CNNWorkload(cfg, data_lib.fashion_mnist(args.data))
            elif name == "transformer":
                workload = TransformerWorkload(cfg, data_lib.shakespeare())
            else:
                parser.error(f"unknown workload {name!r}")
        except FileNotFoundError as e:
            sys.exit(f"error: {e}")
        opts = optimizers(name, workload.layout, which)
        for o in opts:
            o.grid = grids.get(o.key, grids.get(o.name, o.grid))
        report["readings"] += reading_differences(workload, opts)
        report["workloads"][name] = benchmark(workload, opts, seeds, log)
    report["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "your_model.json").write_text(json.dumps(report, indent=1))
    (args.out / "your_model.md").write_text(document(report))
    print(markdown(report))
    return report


def document(report: dict[str, Any]) -> str:
    """The markdown file: command, date, machine, wall time, then :func:`markdown`."""
    header = [
        "# Your model: Equinox CNN and NNX stacked transformer",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Machine: {report['machine']}  ",
        f"Wall time: {report['wall_s'] / 60:.1f} min",
        "",
        "",
    ]
    return "\n".join(header) + markdown(report) + "\n"


if __name__ == "__main__":
    main()
