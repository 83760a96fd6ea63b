"""The classics through optax, read as norms (Bernstein & Newhouse 2024), checked against closed forms; plus the
implicit-bias and family-tour examples at tiny size."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Flax modules (dataclasses) look themselves up there
    spec.loader.exec_module(module)
    return module


def _grads(steps=4, shape=(3, 4), seed=0):
    return [np.random.default_rng(seed + t).normal(size=shape) for t in range(steps)]


def _run(tx, grads, x0=None):
    """Updates of ``tx`` for a sequence of gradients (params start at x0, default zeros), float64."""
    with jax.enable_x64(True):
        x = jnp.zeros(grads[0].shape) if x0 is None else jnp.asarray(x0)
        state, out = tx.init(x), []
        for g in grads:
            u, state = tx.update(jnp.asarray(g), state, x)
            x = x + u
            out.append(np.asarray(u))
    return out


def test_sgd_is_regularized_l2_steepest_descent():
    grads = _grads()
    for a, b in zip(
        _run(optax.sgd(0.3), grads), _run(normopt.steepest_descent(0.3, "l2", mode="regularized"), grads), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_normalized_sgd_is_constrained_l2_steepest_descent():
    (g,) = _grads(1)
    (u,) = _run(normopt.normalized_sgd(0.3), [g])
    np.testing.assert_allclose(u, -0.3 * g / np.linalg.norm(g), rtol=1e-12)


@pytest.mark.parametrize(
    "classic",
    [
        optax.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0),  # h₁ = g₁²: −η g/|g|
        optax.adam(0.1, b1=0.9, b2=0.999, eps=0.0),  # bias correction: m̂₁ = g₁, v̂₁ = g₁²
        optax.rmsprop(0.1, decay=0.0, eps=0.0),  # ν₁ = g₁²
    ],
    ids=["adagrad", "adam", "rmsprop"],
)
def test_first_step_of_the_adaptive_classics_is_sign_descent(classic):
    """Adagrad, Adam and RMSProp (decay 0) all start as steepest descent under ℓ∞: normopt.sign_sgd's step."""
    (g,) = _grads(1)
    (u,) = _run(classic, [g])
    (sign,) = _run(normopt.sign_sgd(0.1), [g])
    np.testing.assert_allclose(u, sign, rtol=1e-12)
    np.testing.assert_allclose(sign, -0.1 * np.sign(g), rtol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 1e-12])
def test_adam_with_both_emas_off_is_sign_descent(eps):
    grads = _grads(4)
    for a, b in zip(
        _run(optax.adam(0.1, b1=0.0, b2=0.0, eps=eps), grads), _run(normopt.sign_sgd(0.1), grads), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def test_weight_decay_equals_l2_under_sgd_but_not_under_adam():
    """Decoupled decay (normopt's weight_decay) read against the classics: under SGD it is an L2 term in the
    gradient; AdamW's first step is sign descent with decoupled decay, which Adam + L2 is not."""
    w0, g, lr, lam = np.array([1.0, 1.0]), np.array([1e-3, 1.0]), 0.1, 0.5

    def first_step(tx, l2):
        with jax.enable_x64(True):
            x = jnp.asarray(w0)
            u, _ = tx.update(jnp.asarray(g + (lam * w0 if l2 else 0.0)), tx.init(x), x)
        return np.asarray(u)

    # SGD: the L2 gradient λw and decoupled decay λw give the same step −η(g + λw).
    sgd_l2 = first_step(optax.sgd(lr), True)
    sgdw = first_step(normopt.steepest_descent(lr, "l2", mode="regularized", weight_decay=lam), False)
    np.testing.assert_allclose(sgd_l2, -lr * (g + lam * w0), rtol=1e-12)
    np.testing.assert_allclose(sgdw, sgd_l2, rtol=1e-12)
    # Adam: the L2 term is divided by √v̂ with the gradient (first step: −η·sign(g + λw)); AdamW adds −ηλw outside,
    # exactly as sign descent with decoupled decay does.
    adam_l2 = first_step(optax.adam(lr, eps=0.0), True)
    adamw = first_step(optax.adamw(lr, eps=0.0, weight_decay=lam), False)
    sign_w = first_step(normopt.sign_sgd(lr, weight_decay=lam), False)
    np.testing.assert_allclose(adam_l2, -lr * np.sign(g + lam * w0), rtol=1e-12)
    np.testing.assert_allclose(sign_w, -lr * (np.sign(g) + lam * w0), rtol=1e-12)
    np.testing.assert_allclose(adamw, sign_w, rtol=1e-12)
    assert np.abs(adam_l2 - adamw).min() > 0.04  # both coordinates differ by ηλw = 0.05


def test_adamw_solves_a_box_constrained_problem_and_adam_l2_a_penalised_one():
    """f = ½‖w − c‖²: Adam + L2 → argmin f + λ/2‖w‖² = c/(1 + λ); AdamW → argmin f s.t. ‖w‖∞ ≤ 1/λ = clip(c, ±1/λ)
    (the ℓ∞ implicit constraint of decoupled decay; Xie & Li 2024, "Implicit bias of AdamW"), and so does its
    norm reading, normopt.sign_sgd with decoupled decay (steepest descent under ℓ∞)."""
    c, lam, steps = np.array([0.5, 4.0, -3.5]), 0.5, 3000
    lr = 0.01  # constant: the iterates then hover within ~lr of the limit
    box = np.clip(c, -1 / lam, 1 / lam)
    expected = {"l2": c / (1 + lam), "decoupled": box, "sign_sgd": box}
    txs = {
        "l2": optax.chain(optax.add_decayed_weights(lam), optax.adam(lr, b2=0.99)),
        "decoupled": optax.adamw(lr, b2=0.99, weight_decay=lam),
        "sign_sgd": normopt.sign_sgd(lr, weight_decay=lam),
    }
    for name, tx in txs.items():

        def step(carry, _, tx=tx):
            w, state = carry
            u, state = tx.update(w - jnp.asarray(c, jnp.float32), state, w)
            return (w + u, state), None

        w0 = jnp.zeros(3)
        (w, _), _ = jax.jit(
            lambda s, tx=tx, step=step, w0=w0: jax.lax.scan(step, (w0, tx.init(w0)), None, length=s), static_argnums=0
        )(steps)
        np.testing.assert_allclose(w, expected[name], atol=2e-2)
    assert np.abs(expected["l2"] - expected["decoupled"]).min() > 0.15


def test_schedules_are_followed_step_by_step():
    """optax schedules drive normopt's learning rate: sign descent on a fixed gradient moves by exactly the
    scheduled step, −η_t·sign(g), and η_t is the closed form of each schedule."""
    t = np.arange(0, 120)
    tc = np.minimum(t, 100)
    schedules = {
        "piecewise": (
            optax.piecewise_constant_schedule(1.0, {30: 0.1, 80: 0.5}),
            np.where(t < 30, 1.0, np.where(t < 80, 0.1, 0.05)),
        ),
        "exponential": (optax.exponential_decay(2.0, transition_steps=10, decay_rate=0.5), 2.0 * 0.5 ** (t / 10)),
        "staircase": (
            optax.exponential_decay(2.0, transition_steps=10, decay_rate=0.5, staircase=True),
            2.0 * 0.5 ** (t // 10),
        ),
        "cosine": (
            optax.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1),
            0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * tc / 100)),
        ),
        "warmup_cosine": (
            optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=20, decay_steps=100, end_value=0.0),
            np.where(t < 20, t / 20, 0.5 * (1 + np.cos(np.pi * np.minimum(t - 20, 80) / 80))),
        ),
    }
    g = jnp.array([0.3, -2.0, 0.0])
    for name, (schedule, expected) in schedules.items():
        tx = normopt.sign_sgd(schedule)

        def step(state, _, tx=tx):
            u, state = tx.update(g, state)
            return state, u

        _, updates = jax.lax.scan(step, tx.init(g), None, length=len(t))
        np.testing.assert_allclose(updates, -expected[:, None] * np.sign(g), rtol=1e-5, atol=1e-6, err_msg=name)


def test_implicit_bias_gd_is_pinv_and_sign_descent_is_flatter(tmp_path):
    out = tmp_path / "implicit_bias.png"
    res = _load("implicit_bias").main(n=6, d=18, steps=3000, out=str(out))
    assert out.stat().st_size > 0
    np.testing.assert_allclose(res["gd"], res["pinv"], atol=1e-8)
    table = res["table"]
    assert table["sign"]["residual"] < 1e-4  # sign descent also solves A x = b ...
    assert table["sign"]["l2"] > 1.02 * table["pinv"]["l2"]  # ... but not with the minimum ℓ2 norm
    assert table["min_linf"]["linf"] - 1e-9 <= table["sign"]["linf"] < table["pinv"]["linf"]  # flatter than A⁺b


@pytest.mark.slow  # the family-tour example, end to end
def test_family_tour_tiny():
    res = _load("family_tour").main(tiny=True)
    lasso = res["lasso"]
    assert lasso["lasso_support"] == lasso["support"] and lasso["least_squares_zeros"] == 0
    simplex = res["simplex"]
    assert abs(simplex["eg_sum"] - 1) < 1e-5 and simplex["eg_min"] > 0 and simplex["eg_gap"] < 1e-3
    assert res["logistic"]["newton"] is not None and res["logistic"]["newton"] < res["logistic"]["gd"] / 5
    digits = res["digits"]
    assert all(np.isfinite(v) and v < 0.5 * digits["initial"] for k, v in digits.items() if k != "initial")
