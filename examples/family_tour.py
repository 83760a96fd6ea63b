"""A tour of the optimizer family in the norm view: one tiny training problem per new transformation.

1. Lasso by proximal gradient (``optax.sgd`` + ``normopt.prox_l1``) on a synthetic sparse regression: exact zeros
   off the true support, where least squares has none.
2. Exponentiated gradient (mirror descent, negative entropy) vs projected gradient (``normopt.project_simplex``)
   on simplex-constrained least squares, against the optimum found by scipy's SLSQP.
3. Damped Newton (``normopt.newton``) vs ``optax.lbfgs`` vs gradient descent on ℓ2-regularized logistic regression:
   steps to a gradient norm below 1e-8.
4. A small MLP on scikit-learn's digits with Adam, FAdam, Shampoo, Shampoo without accumulation (= spectral
   descent) and normopt.muon: train loss after the same number of full-batch steps.

    python examples/family_tour.py          # full size, ~1 minute on 2 CPU cores
    python examples/family_tour.py --tiny   # seconds (what the tests run)
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import optimize

import normopt


def _scan(tx, grad_fn, x0, steps):
    def step(carry, _):
        x, state = carry
        u, state = tx.update(grad_fn(x), state, x)
        return (optax.apply_updates(x, u), state), None

    (x, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))((x0, tx.init(x0)))
    return x


def lasso(n: int = 100, d: int = 40, k: int = 4, alpha: float = 0.05, steps: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    support = np.sort(rng.choice(d, k, replace=False))
    w_true = np.zeros(d)
    w_true[support] = rng.choice([-1, 1], k) * rng.uniform(1, 3, k)
    b = a @ w_true + 0.1 * rng.normal(size=n)
    lr = 1.0 / np.linalg.eigvalsh(a.T @ a / n).max()
    grad = jax.grad(lambda w: 0.5 * jnp.mean((jnp.asarray(a, jnp.float32) @ w - jnp.asarray(b, jnp.float32)) ** 2))
    w0 = jnp.zeros(d)
    w_lasso = np.asarray(_scan(optax.chain(optax.sgd(lr), normopt.prox_l1(lr, strength=alpha)), grad, w0, steps))
    w_ls = np.asarray(_scan(optax.sgd(lr), grad, w0, steps))
    out = {
        "support": support.tolist(),
        "lasso_support": np.flatnonzero(w_lasso).tolist(),
        "lasso_zeros": int(np.sum(w_lasso == 0)),
        "least_squares_zeros": int(np.sum(w_ls == 0)),
        "lasso_error": float(np.linalg.norm(w_lasso - w_true)),
        "least_squares_error": float(np.linalg.norm(w_ls - w_true)),
    }
    print(
        f"[lasso] true support {out['support']}, prox_l1 support {out['lasso_support']}; exact zeros: "
        f"prox_l1 {out['lasso_zeros']}/{d}, least squares {out['least_squares_zeros']}/{d}; "
        f"‖w − w*‖ {out['lasso_error']:.3f} vs {out['least_squares_error']:.3f}"
    )
    return out


def simplex_regression(n: int = 30, d: int = 10, steps: int = 1000, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    b = a @ rng.dirichlet(np.ones(d) * 0.3) + 0.1 * rng.normal(size=n)

    def objective(x):
        return 0.5 * np.mean((a @ x - b) ** 2)

    ref = optimize.minimize(
        objective,
        np.full(d, 1 / d),
        jac=lambda x: a.T @ (a @ x - b) / n,
        method="SLSQP",
        bounds=[(0, 1)] * d,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
        options={"ftol": 1e-15, "maxiter": 1000},
    ).x
    lr = 1.0 / np.linalg.eigvalsh(a.T @ a / n).max()
    grad = jax.grad(lambda x: 0.5 * jnp.mean((jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32)) ** 2))
    x0 = jnp.full(d, 1.0 / d)
    x_eg = np.asarray(_scan(normopt.exponentiated_gradient(lr), grad, x0, steps), np.float64)
    x_pgd = np.asarray(_scan(optax.chain(optax.sgd(lr), normopt.project_simplex()), grad, x0, steps), np.float64)
    out = {
        "optimum": objective(ref),
        "eg_gap": objective(x_eg) - objective(ref),
        "projected_gap": objective(x_pgd) - objective(ref),
        "eg_sum": float(x_eg.sum()),
        "eg_min": float(x_eg.min()),
    }
    print(
        f"[simplex] f* = {out['optimum']:.5f}; gap after {steps} steps: exponentiated gradient "
        f"{out['eg_gap']:.2e}, projected gradient {out['projected_gap']:.2e}"
    )
    return out


def logistic_newton(
    n: int = 200,
    d: int = 8,
    mu: float = 1e-2,
    max_steps: int = 500,
    seed: int = 2,
    names: tuple[str, ...] = ("newton", "lbfgs", "gd"),
) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ rng.normal(size=d) * 2))).astype(float)
    out = {}
    with jax.enable_x64(True):
        xs, ys = jnp.asarray(x), jnp.asarray(y)

        def f(w):
            z = xs @ w
            return jnp.mean(jnp.logaddexp(0.0, z) - ys * z) + 0.5 * mu * w @ w

        lipschitz = np.linalg.eigvalsh(x.T @ x / n).max() / 4 + mu
        optimizers = {"newton": normopt.newton(), "lbfgs": optax.lbfgs(), "gd": optax.sgd(1.0 / lipschitz)}
        for name in names:
            tx = optimizers[name]

            @jax.jit
            def step(w, state, tx=tx):
                value, g = jax.value_and_grad(f)(w)
                u, state = tx.update(g, state, w, value=value, grad=g, value_fn=f)
                return w + u, state, jnp.linalg.norm(g)

            w, state = jnp.zeros(d), tx.init(jnp.zeros(d))
            out[name] = None
            for k in range(max_steps + 1):  # the gradient is measured at the start of each step
                w, state, gnorm = step(w, state)
                if gnorm < 1e-8:
                    out[name] = k
                    break
    print(
        "[logistic] steps to ‖∇f‖ < 1e-8: "
        + ", ".join(f"{k} {v if v is not None else f'> {max_steps}'}" for k, v in out.items())
    )
    return out


class MLP(nn.Module):
    width: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10, name="head")(x)


def digits_mlp(
    steps: int = 300,
    width: int = 32,
    samples: int = 1797,
    seed: int = 0,
    names: tuple[str, ...] = ("adam", "fadam", "shampoo", "shampoo_beta0", "muon"),
) -> dict:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = jnp.asarray(data.data[:samples] / 16.0, jnp.float32)
    y = jnp.asarray(data.target[:samples])
    model = MLP(width)
    params0 = model.init(jax.random.key(seed), x[:1])

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    optimizers = {  # learning rate 0.1: the best of {1e-3, 1e-2, 1e-1} at 300 steps for every one of them
        "adam": optax.adam(0.1),
        "fadam": normopt.fadam(0.1),
        "shampoo": normopt.shampoo(0.1),
        "shampoo_beta0": normopt.shampoo(0.1, beta=0.0),
        "muon": normopt.muon(0.1),
    }
    out = {"initial": float(loss(params0))}
    for name in names:
        p = _scan(optimizers[name], jax.grad(loss), params0, steps)
        out[name] = float(loss(p))
    print(
        f"[digits MLP, {steps} full-batch steps] train loss: initial {out['initial']:.3f}; "
        + ", ".join(f"{k} {v:.4f}" for k, v in out.items() if k != "initial")
    )
    return out


def main(tiny: bool = False) -> dict:
    if tiny:
        return {
            "lasso": lasso(n=60, d=20, k=3, steps=500),
            "simplex": simplex_regression(n=20, d=6, steps=400),
            "logistic": logistic_newton(n=60, d=4, max_steps=200, names=("newton", "gd")),
            "digits": digits_mlp(steps=30, width=16, samples=300, names=("fadam", "shampoo")),
        }
    return {"lasso": lasso(), "simplex": simplex_regression(), "logistic": logistic_newton(), "digits": digits_mlp()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    main(parser.parse_args().tiny)
