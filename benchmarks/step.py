"""Full optimizer step on an MLP 784-1024-1024-10 (batch 128): optax.adamw, optax.contrib.muon, normopt.muon.

Same parameters, same batch, each step jitted and compiled once (excluded from timing); median over repeats,
interleaved rounds so that machine noise hits every optimizer alike. Prints ratios and a markdown table and writes
benchmarks/results/step.{json,md}.

    python benchmarks/step.py            # ~1 minute on 2 CPU cores
    python benchmarks/step.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import normopt

RESULTS = Path(__file__).parent / "results"


def mlp_params(key, sizes=(784, 1024, 1024, 10)):
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        f"Dense_{i}": {"kernel": normopt.init.xavier()(k, (a, b)), "bias": jnp.zeros(b)}
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
    }


def loss_fn(params, x, y):
    h = x
    for i in range(len(params)):
        h = h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def optimizers() -> dict[str, optax.GradientTransformation]:
    return {
        "optax.adamw": optax.adamw(1e-3),
        "optax.contrib.muon": optax.contrib.muon(0.02),
        "normopt.muon (polar_express)": normopt.muon(0.02),
        "normopt.muon (jordan)": normopt.muon(0.02, method="jordan", scale="jordan"),
    }


def timed(fn, *args, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", type=Path, default=RESULTS, help="output folder (step.json, step.md)")
    args = ap.parse_args()
    rounds, repeats = (1, 2) if args.quick else (args.rounds, args.repeats)

    params = mlp_params(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((128, 784)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 128))
    grads = jax.grad(loss_fn)(params, x, y)

    fwd_bwd = jax.jit(jax.grad(loss_fn))
    runs = {}
    for name, tx in optimizers().items():
        state = tx.init(params)

        def step(p, s, tx=tx):
            g = jax.grad(loss_fn)(p, x, y)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        runs[name] = (jax.jit(step), jax.jit(tx.update), state)
        jax.block_until_ready(runs[name][0](params, state))  # compile
        jax.block_until_ready(runs[name][1](grads, state, params))
    jax.block_until_ready(fwd_bwd(params, x, y))

    step_t = {n: [] for n in runs}
    upd_t = {n: [] for n in runs}
    fb_t = []
    for _ in range(rounds):
        fb_t += timed(fwd_bwd, params, x, y, repeats=repeats)
        for name, (step, update, state) in runs.items():
            step_t[name] += timed(step, params, state, repeats=repeats)
            upd_t[name] += timed(update, grads, state, params, repeats=repeats)

    ms = lambda ts: 1e3 * float(np.median(ts))
    base = ms(step_t["optax.contrib.muon"])
    rows = [
        {
            "optimizer": n,
            "step_ms": ms(step_t[n]),
            "update_ms": ms(upd_t[n]),
            "step_vs_optax_muon": ms(step_t[n]) / base,
        }
        for n in runs
    ]
    table = [
        "| optimizer | full step (ms) | optimizer update only (ms) | step time ÷ optax.contrib.muon |",
        "|---|---|---|---|",
    ]
    table += [
        f"| {r['optimizer']} | {r['step_ms']:.1f} | {r['update_ms']:.1f} | {r['step_vs_optax_muon']:.2f}× |"
        for r in rows
    ]
    table.append(f"| forward+backward only | {ms(fb_t):.1f} | – | – |")
    print("\n".join(table))
    meta = {
        "command": "python benchmarks/step.py" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d"),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "cpu": platform.processor() or platform.machine(),
        "devices": str(jax.devices()),
        "model": "MLP 784-1024-1024-10, batch 128, fp32",
        "forward_backward_ms": ms(fb_t),
    }
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (args.out / "step.md").write_text(
            f"`{meta['command']}` — {meta['date']}, jax {meta['jax']}, {meta['cpu']}\n\n" + "\n".join(table) + "\n"
        )


if __name__ == "__main__":
    main()
