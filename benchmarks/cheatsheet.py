"""The optimizer family on one model: state bytes per parameter and the cost of one optimizer update.

Every optimizer (optax's classics and normopt's) is built for the same Flax MLP on scikit-learn's digits
(64 → h → h → 10, batch 128, fp32, same initial parameters and batch). For each one the script measures

* state bytes per parameter: Σ nbytes of the optimizer state's arrays / number of parameters;
* update ms: median wall time of one compiled ``tx.update`` (gradient precomputed; optimizers that need the loss,
  L-BFGS and Newton, evaluate it inside their update as they would in training), at two widths:
  h = 16 (1.5k parameters, where the full Hessian is affordable) and h = 256 (85k parameters).

Forward + backward of the same model is measured too, for scale. Results go to
``benchmarks/results/cheatsheet.json`` and ``cheatsheet.md`` (the table pasted into docs/family.md).

    python benchmarks/cheatsheet.py            # a few minutes on 2 CPU cores
    python benchmarks/cheatsheet.py --repeats 5 --widths 16   # smoke run
"""

from __future__ import annotations

import os

# One thread per pool, set before jax/numpy load: on a shared 2-core machine XLA's and OpenBLAS's thread pools
# oversubscribe the cores and LAPACK calls crawl (measured under load: eigh of a 256×256 matrix 2.6 s, pinned 12 ms).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import normopt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NEWTON_MAX_PARAMS = 10_000  # the full Hessian is n² floats: 1.5k params → 9 MB, 85k → 29 GB


class MLP(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10, name="head")(x)


# name → (factory, norm / geometry, step rule, state); factories take no arguments so each width builds afresh.
FAMILY = {
    "optax.sgd": (lambda: optax.sgd(0.1), "ℓ2", "regularized: −η g", "—"),
    "optax.sgd(momentum)": (lambda: optax.sgd(0.1, momentum=0.9), "ℓ2", "regularized on heavy-ball m", "m"),
    "optax.sgd(nesterov)": (lambda: optax.sgd(0.1, momentum=0.9, nesterov=True), "ℓ2", "regularized, Nesterov", "m"),
    "optax.adagrad": (lambda: optax.adagrad(0.1), "diag metric √Σg²", "regularized", "Σg²"),
    "optax.rmsprop": (lambda: optax.rmsprop(1e-3), "diag metric √EMA g²", "regularized", "ν"),
    "optax.adam": (lambda: optax.adam(1e-3), "diag metric √ν̂ (ℓ∞ with EMAs off)", "regularized", "count, m, ν"),
    "optax.adamw": (
        lambda: optax.adamw(1e-3, weight_decay=0.1),
        "as Adam + decoupled decay (ℓ∞ ball 1/λ)",
        "regularized + decay",
        "count, m, ν",
    ),
    "optax.lion": (lambda: optax.lion(1e-4), "ℓ∞", "constrained: −η sign(·)", "m"),
    "optax.lbfgs": (lambda: optax.lbfgs(), "quasi-Newton metric", "zoom line search", "10 (Δx, Δg) pairs"),
    "normopt.sign_sgd": (lambda: normopt.sign_sgd(1e-3), "ℓ∞", "constrained: −η sign(g)", "count, m (unused at β=0)"),
    "normopt.normalized_sgd": (
        lambda: normopt.normalized_sgd(0.1),
        "ℓ2 per leaf",
        "constrained: −η g/‖g‖",
        "count, m (unused at β=0)",
    ),
    "normopt.muon": (
        lambda: normopt.muon(0.02),
        "RMS→RMS (spectral) + AdamW on vectors",
        "constrained: −η U Vᵀ",
        "m; Adam m, ν on vectors",
    ),
    "normopt.scion": (
        lambda: normopt.scion(0.02),
        "per role: RMS→RMS, RMS→ℓ∞ head, rms vectors",
        "constrained",
        "count, m",
    ),
    "normopt.shampoo": (
        lambda: normopt.shampoo(0.1),
        "Kronecker metric L^¼ ⊗ R^¼",
        "regularized",
        "L (in²), R (out²) per matrix",
    ),
    "normopt.shampoo(beta=0)": (
        lambda: normopt.shampoo(0.1, beta=0.0),
        "spectral",
        "constrained: −η U Vᵀ",
        "L, R (overwritten each step)",
    ),
    "normopt.fadam": (lambda: normopt.fadam(1e-3), "diag Fisher √f", "natural gradient, clipped", "count, m, f"),
    "optax.sgd + normopt.prox_l1": (
        lambda: optax.chain(optax.sgd(0.1), normopt.prox_l1(0.1, strength=1e-4)),
        "ℓ2 + ℓ1 penalty",
        "proximal: soft-threshold",
        "count",
    ),
    "normopt.mirror_descent(p_norm(1.5))": (
        lambda: normopt.mirror_descent(0.1, mirror_map=normopt.mirror.p_norm(1.5)),
        "Bregman of ½‖x‖²_p",
        "mirror: ∇ψ*(∇ψ(x) − η g)",
        "—",
    ),
    "normopt.newton(diagonal)": (
        lambda: normopt.newton(damping=1e-3, structure="diagonal"),
        "diag Hessian",
        "damped Newton + backtracking",
        "(n² Hessian formed)",
    ),
    "normopt.newton(kronecker)": (
        lambda: normopt.newton(damping=1e-3, structure="kronecker"),
        "Kronecker Hessian blocks",
        "damped Newton + backtracking",
        "(n² Hessian formed)",
    ),
    "normopt.newton(full)": (
        lambda: normopt.newton(damping=1e-3),
        "Hessian ‖·‖_H",
        "damped Newton + backtracking",
        "(n² Hessian formed)",
    ),
}
NEEDS_LOSS = {"optax.lbfgs", "normopt.newton(diagonal)", "normopt.newton(kronecker)", "normopt.newton(full)"}


def _median_ms(fn, args, repeats: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def _state_bytes(state) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))


def measure(width: int, repeats: int, names: list[str]) -> dict:
    data = load_digits()
    x = jnp.asarray(data.data[:128] / 16.0, jnp.float32)
    y = jnp.asarray(data.target[:128])
    model = MLP(width)
    params = model.init(jax.random.key(0), x[:1])
    n_params = sum(p.size for p in jax.tree.leaves(params))

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = value_and_grad(params)
    out = {"width": width, "params": n_params, "fwd_bwd_ms": _median_ms(value_and_grad, (params,), repeats), "rows": {}}
    for name in names:
        if name.startswith("normopt.newton") and n_params > NEWTON_MAX_PARAMS:
            out["rows"][name] = {"state_bytes_per_param": 0.0, "update_ms": None}
            continue
        tx = FAMILY[name][0]()
        state = tx.init(params)
        if name in NEEDS_LOSS:
            update = jax.jit(lambda g, s, p, v, tx=tx: tx.update(g, s, p, value=v, grad=g, value_fn=loss))
            args = (grads, state, params, value)
        else:
            update = jax.jit(tx.update)
            args = (grads, state, params)
        ms = _median_ms(update, args, min(repeats, 3) if name.startswith("normopt.newton") else repeats)
        out["rows"][name] = {"state_bytes_per_param": _state_bytes(state) / n_params, "update_ms": ms}
        print(f"  h={width:4d} {name:40s} state {_state_bytes(state) / n_params:6.2f} B/param  update {ms:8.3f} ms")
    return out


def markdown(results: list[dict]) -> str:
    head = (
        "| optimizer | norm / geometry | step rule | state | state B/param | "
        + " | ".join(f"update ms, {r['params'] / 1000:.1f}k params (h={r['width']})" for r in results)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(results))]
    names = list(results[0]["rows"])
    for name in names:
        _, norm, step, state = FAMILY[name]
        cells = []
        for r in results:
            ms = r["rows"][name]["update_ms"]
            cells.append("n/a (n² Hessian)" if ms is None else f"{ms:.3f}")
        bpp = results[0]["rows"][name]["state_bytes_per_param"]
        lines.append(f"| `{name}` | {norm} | {step} | {state} | {bpp:.1f} | " + " | ".join(cells) + " |")
    lines.append("| *forward + backward* | | | | | " + " | ".join(f"{r['fwd_bwd_ms']:.3f}" for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,256")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated optimizer names (default: all)")
    parser.add_argument("--out", default=str(RESULTS / "cheatsheet"))
    args = parser.parse_args()
    names = [n for n in FAMILY if not args.only or n in args.only.split(",")]
    results = [measure(int(w), args.repeats, names) for w in args.widths.split(",")]
    table = markdown(results)
    print(table)
    meta = {
        "jax": jax.__version__,
        "optax": optax.__version__,
        "device": jax.devices()[0].device_kind,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
        "command": "python benchmarks/cheatsheet.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out" and v),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    Path(args.out + ".md").write_text(table + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
