"""PolarGrad (Lau, Long & Su 2025) is regularized spectral steepest descent: −η·‖M‖_*·U Vᵀ of the momentum M,
checked against a float64 re-implementation of the paper's momentum-first update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import polar_factor

import normopt


def polargrad_reference(grads, lr, beta):
    """M ← βM + (1 − β)G; step −lr·tr(H)·U with U H = polar(M), tr(H) = ‖M‖_* (float64)."""
    m = np.zeros_like(grads[0])
    out = []
    for g in grads:
        m = beta * m + (1 - beta) * g
        out.append(-lr * np.linalg.svd(m, compute_uv=False).sum() * polar_factor(m))
    return out


def test_polargrad_matches_the_papers_update():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((12, 7)) for _ in range(3)]
    params = {"w": jnp.zeros((12, 7), jnp.float32)}
    tx = normopt.polargrad(0.01, beta=0.9, method="svd")
    state = tx.init(params)
    for g, want in zip(grads, polargrad_reference(grads, 0.01, 0.9), strict=True):
        got, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        np.testing.assert_allclose(np.asarray(got["w"], np.float64), want, rtol=2e-5, atol=1e-7)


def test_polargrad_is_regularized_muon_and_differs_from_muon():
    g = {"w": jax.random.normal(jax.random.key(1), (8, 8))}
    a = normopt.polargrad(0.01, method="svd")
    b = normopt.muon(0.01, method="svd", scale="none", mode="regularized", debias=False, nesterov=False)
    c = normopt.muon(0.01, method="svd", scale="none", debias=False, nesterov=False)
    ua, ub, uc = (tx.update(g, tx.init(g), g)[0]["w"] for tx in (a, b, c))
    np.testing.assert_allclose(ua, ub, rtol=1e-6)
    nuclear = float(jnp.linalg.svd((1 - 0.95) * g["w"], compute_uv=False).sum())
    np.testing.assert_allclose(ua, nuclear * uc, rtol=1e-5, atol=1e-8)  # the nuclear-norm scaling is the difference


def test_zero_gradient_zero_step_and_nan_stays_visible():
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    tx = normopt.polargrad(0.1)
    zero, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(zero))
    bad = {"w": jnp.ones((4, 3)).at[0, 0].set(jnp.nan), "b": jnp.ones(3)}
    u, _ = tx.update(bad, tx.init(params), params)
    assert not bool(jnp.all(jnp.isfinite(u["w"])))


def test_polargrad_composes_with_optax_wrappers_and_keeps_dtypes():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.bfloat16)}
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    for tx in (
        optax.chain(optax.clip_by_global_norm(1.0), normopt.polargrad(0.1)),
        optax.inject_hyperparams(normopt.polargrad)(learning_rate=0.1),
        optax.MultiSteps(normopt.polargrad(0.1), 2),
        optax.apply_if_finite(normopt.polargrad(0.1), 3),
    ):
        u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(jnp.bfloat16)}
    rows = {r["path"]: r["norm"] for r in normopt.describe(params, normopt.polargrad(0.1), print_fn=None)}
    assert rows == {"b": "adamw", "w": "spectral"}


@pytest.mark.parametrize(("kwargs", "match"), [({"beta": 1.0}, "beta"), ({"weight_decay": -1.0}, "weight_decay")])
def test_polargrad_validates_arguments_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        normopt.polargrad(0.1, **kwargs)
