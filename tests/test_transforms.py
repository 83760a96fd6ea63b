"""normopt.dualize and normopt.momentum as optax transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import polar_factor

import normopt
from normopt import norms


def tree(rng):
    return {
        "w": jnp.asarray(rng.standard_normal((6, 4)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(4), jnp.float32),
    }


def test_dualize_in_chain_under_jit(rng):
    params, grads = tree(rng), tree(rng)
    spec = {"w": norms.rms_to_rms(method="svd"), "b": norms.rms()}
    tx = optax.chain(normopt.dualize(spec), optax.scale(-0.1))
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    g = np.asarray(grads["w"], np.float64)
    np.testing.assert_allclose(u["w"], -0.1 * np.sqrt(4 / 6) * polar_factor(g), rtol=1e-4, atol=1e-6)
    b = np.asarray(grads["b"], np.float64)
    np.testing.assert_allclose(u["b"], -0.1 * 2 * b / np.linalg.norm(b), rtol=1e-5)


def test_callable_and_none_rules(rng):
    params = tree(rng)
    seen = []

    def rule(path, leaf):
        seen.append(path)
        return norms.linf() if path == ("w",) else None

    u, _ = normopt.dualize(rule).update(params, optax.EmptyState())
    np.testing.assert_array_equal(u["w"], jnp.sign(params["w"]))
    np.testing.assert_array_equal(u["b"], params["b"])  # None: identity
    assert ("b",) in seen


def test_regularized_l2_is_sgd(rng):
    params, grads = tree(rng), tree(rng)
    sd = normopt.steepest_descent(0.3, norms.l2(), mode="regularized")
    u, _ = sd.update(grads, sd.init(params), params)
    ref, _ = optax.sgd(0.3).update(grads, optax.sgd(0.3).init(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u, ref)


def test_regularized_step_is_dual_norm_times_direction(rng):
    """Δ = −η·‖g‖*·dualize(g) per leaf; with a weighted max norm one global ‖g‖* = Σ ‖g_l‖*/w_l."""
    grads = tree(rng)
    g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
    u, _ = normopt.dualize(norms.linf(), "regularized").update(grads, optax.EmptyState())
    for k in g:
        np.testing.assert_allclose(u[k], np.abs(g[k]).sum() * np.sign(g[k]), rtol=1e-5)
    wm = norms.weighted_max(norms.linf(), {"w": 2.0, "b": 4.0})
    u, _ = normopt.dualize(wm, "regularized").update(grads, optax.EmptyState())
    total = np.abs(g["w"]).sum() / 2 + np.abs(g["b"]).sum() / 4
    np.testing.assert_allclose(u["w"], total * np.sign(g["w"]) / 2, rtol=1e-5)
    np.testing.assert_allclose(u["b"], total * np.sign(g["b"]) / 4, rtol=1e-5)


def test_sign_sgd_and_normalized_sgd_steps(rng):
    params, grads = tree(rng), tree(rng)
    for tx, expect in [
        (normopt.sign_sgd(0.05), lambda g: -0.05 * np.sign(g)),
        (normopt.normalized_sgd(0.05), lambda g: -0.05 * g / np.linalg.norm(g)),
    ]:
        u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        for k in grads:
            np.testing.assert_allclose(u[k], expect(np.asarray(grads[k], np.float64)), rtol=1e-5)


def test_momentum_matches_its_definition(rng):
    beta = 0.9
    gs = [tree(rng) for _ in range(4)]
    for nesterov in (False, True):
        tx = normopt.momentum(beta, nesterov=nesterov)
        s = tx.init(gs[0])
        m = 0.0
        for t, g in enumerate(gs, start=1):
            u, s = tx.update(g, s)
            w = np.asarray(g["w"], np.float64)
            m = beta * m + (1 - beta) * w
            expect = m / (1 - beta**t)
            if nesterov:
                expect = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * w / (1 - beta**t)
            np.testing.assert_allclose(u["w"], expect, rtol=1e-5)
        assert int(s.count) == 4


def test_momentum_zero_beta_is_identity(rng):
    g = tree(rng)
    tx = normopt.momentum(0.0, nesterov=True)
    u, _ = tx.update(g, tx.init(g))
    jax.tree.map(np.testing.assert_array_equal, u, g)


def test_errors():
    with pytest.raises(ValueError, match="unknown mode 'prox'"):
        normopt.dualize(norms.l2(), mode="prox")
    tx = normopt.dualize(norms.spectral())
    with pytest.raises(ValueError, match="bias.*shape \\(3,\\).*vector norm"):
        tx.init({"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(3)})
    with pytest.raises(TypeError, match="count.*int32"):
        normopt.dualize(norms.l2()).init({"count": jnp.zeros((), jnp.int32)})
