"""Damped Newton: exact steps on quadratics, directions against numpy float64 Hessians, convergence with a line
search, Kronecker structure against its closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt
from normopt.family.newton import _nearest_kronecker


def _spd(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def test_one_full_newton_step_solves_a_quadratic_on_a_pytree():
    rng = np.random.default_rng(0)
    a, b = _spd(rng, 7), rng.normal(size=7)
    with jax.enable_x64(True):
        aj, bj = jnp.asarray(a), jnp.asarray(b)

        def f(p):
            x = jnp.concatenate([p["u"], p["w"].reshape(-1)])
            return 0.5 * x @ aj @ x - bj @ x

        params = {"u": jnp.ones(3), "w": jnp.ones((2, 2))}
        tx = normopt.newton(linesearch=None)
        u, _ = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p, value_fn=f))(params, tx.init(params))
        new = optax.apply_updates(params, u)
    np.testing.assert_allclose(np.concatenate([new["u"], np.ravel(new["w"])]), np.linalg.solve(a, b), atol=1e-12)


def _logistic(rng, n=40, d=4, mu=0.1):
    x = rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ rng.normal(size=d)))).astype(float)

    def f(w, xs, ys):
        z = xs @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - ys * z) + 0.5 * mu * w @ w

    def hess_np(w):
        s = 1 / (1 + np.exp(-x @ w))
        return x.T @ (x * (s * (1 - s))[:, None]) / n + mu * np.eye(d)

    return x, y, f, hess_np


@pytest.mark.parametrize("structure", ["full", "diagonal"])
def test_direction_is_damped_inverse_hessian_times_gradient(structure):
    rng = np.random.default_rng(1)
    x, y, f, hess_np = _logistic(rng)
    w, lam = rng.normal(size=4), 0.3
    with jax.enable_x64(True):
        g = jax.grad(f)(jnp.asarray(w), jnp.asarray(x), jnp.asarray(y))
        tx = normopt.scale_by_newton(damping=lam, structure=structure)
        update = jax.jit(lambda g, s, w, xs, ys: tx.update(g, s, w, value_fn=f, xs=xs, ys=ys))
        d, _ = update(g, tx.init(jnp.asarray(w)), jnp.asarray(w), jnp.asarray(x), jnp.asarray(y))
    h = hess_np(w)
    p = h + lam * np.eye(4) if structure == "full" else np.diag(np.diag(h) + lam)
    np.testing.assert_allclose(d, np.linalg.solve(p, np.asarray(g)), rtol=1e-10)


def test_damped_newton_with_line_search_converges_quadratically():
    rng = np.random.default_rng(2)
    x, y, f, _ = _logistic(rng, mu=0.01)
    with jax.enable_x64(True):
        xs, ys = jnp.asarray(x), jnp.asarray(y)
        tx = normopt.newton()
        w = jnp.full(4, 3.0)  # far from the optimum: the line search must damp the first steps
        state = tx.init(w)

        @jax.jit
        def step(w, state):
            value, g = jax.value_and_grad(f)(w, xs, ys)
            u, state = tx.update(g, state, w, value=value, grad=g, value_fn=f, xs=xs, ys=ys)
            return w + u, state, jnp.linalg.norm(g)

        norms = []
        for _ in range(12):
            w, state, gnorm = step(w, state)
            norms.append(float(gnorm))
        assert float(jnp.linalg.norm(jax.grad(f)(w, xs, ys))) < 1e-12
    k = next(i for i, v in enumerate(norms) if v < 1e-3)  # in the quadratic phase errors square
    assert norms[k + 1] < 10 * norms[k] ** 2 or norms[k + 1] < 1e-12


def test_kronecker_step_solves_a_kronecker_quadratic_in_one_step():
    rng = np.random.default_rng(3)
    a, b, c = _spd(rng, 3), _spd(rng, 4), rng.normal(size=(3, 4))
    with jax.enable_x64(True):
        aj, bj, cj = jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)

        def f(p):  # ½ tr(Wᵀ A W B) − ⟨C, W⟩ + ½‖v‖²·3 ; Hessian of W is B ⊗ A-shaped: H[i,j,k,l] = A[i,k]·B[j,l]
            return 0.5 * jnp.trace(p["w"].T @ aj @ p["w"] @ bj) - jnp.sum(cj * p["w"]) + 1.5 * p["v"] @ p["v"]

        params = {"w": jnp.zeros((3, 4)), "v": jnp.ones(2)}
        tx = normopt.newton(structure="kronecker", linesearch=None)
        u, _ = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p, value_fn=f))(params, tx.init(params))
        new = optax.apply_updates(params, u)
    np.testing.assert_allclose(new["w"], np.linalg.solve(a, c) @ np.linalg.inv(b), atol=1e-10)
    np.testing.assert_allclose(new["v"], 0.0, atol=1e-12)


def test_nearest_kronecker_is_optimal_against_perturbations():
    rng = np.random.default_rng(4)
    m, n = 2, 3
    h = rng.normal(size=(m * n, m * n))
    h = h + h.T
    with jax.enable_x64(True):
        a, b = (np.asarray(t) for t in jax.jit(_nearest_kronecker, static_argnums=(1, 2))(jnp.asarray(h), m, n))

    def err(a_, b_):
        return np.linalg.norm(h.reshape(m, n, m, n) - np.einsum("ik,jl->ijkl", a_, b_))

    best = err(a, b)
    for _ in range(200):
        da, db = 0.05 * rng.normal(size=(2, m, m)), 0.05 * rng.normal(size=(2, n, n))
        assert err(a + da[0], b + db[0]) >= best - 1e-12


def test_singular_hessian_gives_minimum_norm_step_not_nan():
    def f(w):  # flat along w[1] - w[0]
        return 0.5 * (w[0] + w[1]) ** 2

    w = jnp.array([1.0, 2.0])
    tx = normopt.scale_by_newton()
    d, _ = jax.jit(lambda w, s: tx.update(jax.grad(f)(w), s, w, value_fn=f))(w, tx.init(w))
    np.testing.assert_allclose(d, [1.5, 1.5], rtol=1e-5)  # pinv([[1,1],[1,1]]) @ [3, 3]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="unknown structure"):
        normopt.scale_by_newton(structure="block")
    with pytest.raises(ValueError, match="damping"):
        normopt.scale_by_newton(damping=-1.0)
    tx = normopt.scale_by_newton()
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
