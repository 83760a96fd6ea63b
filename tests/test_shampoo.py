"""Shampoo: without accumulation it is spectral descent (U Vᵀ, Bernstein & Newhouse 2024); with accumulation it
matches a float64 reference built on scipy's fractional_matrix_power."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import polar_factor
from scipy.linalg import fractional_matrix_power

import normopt


@pytest.mark.parametrize("shape,rank", [((4, 4), 4), ((6, 3), 3), ((3, 6), 3), ((5, 5), 2)])
def test_without_accumulation_shampoo_is_u_vt(shape, rank):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(shape[0], rank)) @ rng.normal(size=(rank, shape[1]))
    with jax.enable_x64(True):
        tx = normopt.scale_by_shampoo(beta=0.0, eps=0.0)
        state = tx.init(jnp.asarray(g))
        update = jax.jit(tx.update)
        for _ in range(2):  # the second step must not remember the first
            u, state = update(jnp.asarray(g), state)
    np.testing.assert_allclose(u, polar_factor(g, rtol=1e-10), atol=1e-8)


def test_without_accumulation_shampoo_equals_normopt_spectral_descent():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(2, 5, 3))), "b": jnp.asarray(rng.normal(size=4))}
    grads = jax.tree.map(lambda x: x * 1.7 - 0.2, params)
    with jax.enable_x64(True):
        params, grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (params, grads))
        sh = normopt.shampoo(0.1, beta=0.0, eps=0.0)
        sd = normopt.steepest_descent(0.1, {"w": normopt.norms.spectral(method="svd"), "b": normopt.norms.linf()})
        u_sh, _ = jax.jit(sh.update)(grads, sh.init(params), params)
        u_sd, _ = jax.jit(sd.update)(grads, sd.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-9), u_sh, u_sd)


def test_accumulated_shampoo_matches_fractional_matrix_powers():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(4, 3)) for _ in range(3)]
    v_grads = [rng.normal(size=5) for _ in range(3)]
    beta, eps, lr, wd = 0.9, 1e-3, 0.5, 0.01
    w, v = rng.normal(size=(4, 3)), rng.normal(size=5)
    left, right, h = np.zeros((4, 4)), np.zeros((3, 3)), np.zeros(5)
    with jax.enable_x64(True):
        tx = normopt.shampoo(lr, beta=beta, eps=eps, weight_decay=wd)
        params = {"w": jnp.asarray(w), "v": jnp.asarray(v)}
        state = tx.init(params)
        update = jax.jit(tx.update)
        for g, gv in zip(grads, v_grads, strict=True):
            left, right, h = beta * left + g @ g.T, beta * right + g.T @ g, beta * h + gv**2

            def root(m):
                return fractional_matrix_power(m + eps * np.linalg.eigvalsh(m).max() * np.eye(len(m)), -0.25).real

            w = w - lr * (root(left) @ g @ root(right) + wd * w)
            v = v - lr * (gv / np.sqrt(h + eps * h.max()) + wd * v)
            u, state = update({"w": jnp.asarray(g), "v": jnp.asarray(gv)}, state, params)
            params = optax.apply_updates(params, u)
            np.testing.assert_allclose(params["w"], w, rtol=1e-10)
            np.testing.assert_allclose(params["v"], v, rtol=1e-10)


def test_batch_axes_are_separate_matrices_and_zero_is_zero():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(3, 4, 2))
    g[1] = 0.0
    tx = normopt.scale_by_shampoo(beta=0.0, eps=0.0)
    with jax.enable_x64(True):
        u, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(jnp.asarray(g)))
    for i in (0, 2):
        np.testing.assert_allclose(u[i], polar_factor(g[i], rtol=1e-10), atol=1e-8)
    np.testing.assert_array_equal(u[1], 0.0)


def test_state_shapes_are_the_kronecker_factors():
    tx = normopt.scale_by_shampoo(dims=normopt.MatrixDims.conv(4))
    state = tx.init({"conv": jnp.zeros((3, 3, 2, 8)), "b": jnp.zeros(8)})
    assert state.left["conv"].shape == (18, 18) and state.right["conv"].shape == (8, 8)
    assert state.left["b"].shape == (8,)
