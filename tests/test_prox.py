"""prox_l1 and projection steps against closed forms and brute-force minimisation (float64 references)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize

import normopt
from normopt.family.prox import soft_threshold


def test_soft_threshold_is_the_prox_of_l1_by_brute_force():
    grid = np.linspace(-4, 4, 80001)  # spacing 1e-4
    for y in (-2.5, -0.3, 0.0, 0.2, 1.7):
        for tau in (0.0, 0.5, 1.0):
            brute = grid[np.argmin(tau * np.abs(grid) + 0.5 * (grid - y) ** 2)]
            assert abs(float(soft_threshold(jnp.float32(y), tau)) - brute) <= 1e-4


def test_prox_l1_after_sgd_is_ista_step_with_scheduled_threshold():
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(2, 6))
    lam, schedule = 0.3, optax.exponential_decay(0.5, 1, 0.5)
    tx = optax.chain(optax.sgd(schedule), normopt.prox_l1(schedule, strength=lam))
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(x)}
        state = tx.init(params)
        for t in range(3):
            u, state = tx.update({"w": jnp.asarray(g)}, state, params)
            eta = 0.5 * 0.5**t
            y = np.asarray(params["w"]) - eta * g
            expected = np.sign(y) * np.maximum(np.abs(y) - eta * lam, 0)
            params = optax.apply_updates(params, u)
            np.testing.assert_allclose(params["w"], expected, rtol=0, atol=1e-7)  # the schedule is fp32


def _brute_projection(y, constraints, bounds=None):
    res = optimize.minimize(
        lambda p: 0.5 * np.sum((p - y) ** 2),
        np.zeros_like(y),
        jac=lambda p: p - y,
        constraints=constraints,
        bounds=bounds,
        method="SLSQP",
        options={"ftol": 1e-14},
    )
    return res.x


@pytest.mark.parametrize("which", ["l2", "linf", "l1", "simplex"])
def test_projections_are_nearest_points_by_brute_force(which):
    rng = np.random.default_rng(1)
    x, u = rng.normal(size=(2, 5))
    y = x + u
    radius = 0.7
    tx, constraints, bounds = {
        "l2": (normopt.project_l2_ball(radius), [{"type": "ineq", "fun": lambda p: radius**2 - p @ p}], None),
        "linf": (normopt.project_linf_ball(radius), [], [(-radius, radius)] * 5),
        "l1": (normopt.project_l1_ball(radius), [{"type": "ineq", "fun": lambda p: radius - np.abs(p).sum()}], None),
        "simplex": (normopt.project_simplex(1.0), [{"type": "eq", "fun": lambda p: p.sum() - 1}], [(0, None)] * 5),
    }[which]
    with jax.enable_x64(True):
        step, _ = tx.update(jnp.asarray(u), tx.init(jnp.asarray(x)), jnp.asarray(x))
        projected = x + np.asarray(step)
    np.testing.assert_allclose(projected, _brute_projection(y, constraints, bounds), atol=2e-5)


def test_projection_covers_the_whole_tree_as_one_vector():
    params = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[0.0, 4.0]])}
    tx = normopt.project_l2_ball(1.0)
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_allclose(new["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [[0.0, 0.8]], rtol=1e-6)


def test_lasso_by_ista_matches_sklearn_and_is_sparse():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(2)
    n, d = 60, 20
    a = rng.normal(size=(n, d))
    w_true = np.zeros(d)
    w_true[[1, 7, 13]] = [2.0, -3.0, 1.5]
    b = a @ w_true + 0.05 * rng.normal(size=n)
    alpha = 0.1
    ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(a, b).coef_
    lr = 1.0 / np.linalg.eigvalsh(a.T @ a / n).max()
    tx = optax.chain(optax.sgd(lr), normopt.prox_l1(lr, strength=alpha))
    with jax.enable_x64(True):
        aj, bj = jnp.asarray(a), jnp.asarray(b)
        grad = jax.grad(lambda w: 0.5 * jnp.mean((aj @ w - bj) ** 2))

        def step(carry, _):
            w, state = carry
            u, state = tx.update(grad(w), state, w)
            return (w + u, state), None

        w0 = jnp.zeros(d)
        (w, _), _ = jax.lax.scan(step, (w0, tx.init(w0)), None, length=3000)
    np.testing.assert_allclose(w, ref, atol=1e-6)
    assert set(np.flatnonzero(np.asarray(w))) == {1, 7, 13}  # exact zeros off the support


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"prox_l1: strength must lie in \[0, inf\), got -1.0"):
        normopt.prox_l1(1.0, strength=-1.0)
    tx = normopt.prox_l1(1.0, strength=0.1)
    with pytest.raises(ValueError, match="with params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    tx = normopt.project_simplex()
    with pytest.raises(ValueError, match="with params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
