"""FAdam against a float64 numpy transcription of Hwang 2024, Algorithm 1 (with the paper's ρ_t recursion)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt


def _fadam_reference(theta, grads, lr, b1, b2, eps, clip, p, wd):
    """Algorithm 1 of arXiv:2405.12807 in numpy float64, per leaf; returns the parameters after each step."""
    theta = {k: v.copy() for k, v in theta.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    f = {k: np.zeros_like(v) for k, v in theta.items()}
    out = []
    for t, g_all in enumerate(grads, start=1):
        rho = b2 * (1 - b2 ** (t - 1)) / (1 - b2**t)
        for k in theta:
            g = g_all[k]
            f[k] = rho * f[k] + (1 - rho) * g * g
            eps_t = eps * min(1.0, np.sqrt(np.mean(g * g)))
            denom = f[k] ** p + eps_t
            nat = g / denom
            nat = nat / max(1.0, np.sqrt(np.mean(nat**2)) / clip)
            m[k] = b1 * m[k] + (1 - b1) * nat
            gw = theta[k] / denom
            gw = gw / max(1.0, np.sqrt(np.mean(gw**2)) / clip)
            theta[k] = theta[k] - lr * (m[k] + wd * gw)
        out.append({k: v.copy() for k, v in theta.items()})
    return out


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_matches_algorithm_1_over_several_steps(p):
    rng = np.random.default_rng(0)
    theta = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    # gradients of very different scales per step, so that both clips and the adaptive epsilon act
    grads = [{k: rng.normal(size=v.shape) * s for k, v in theta.items()} for s in (1.0, 0.01, 5.0, 0.3, 1e-3)]
    kw = dict(b1=0.8, b2=0.9, eps=1e-3, clip=0.7, p=p, wd=0.2)
    expected = _fadam_reference(theta, grads, 0.1, **kw)
    with jax.enable_x64(True):
        tx = normopt.fadam(0.1, b1=0.8, b2=0.9, eps=1e-3, clip=0.7, p=p, weight_decay=0.2)
        params = jax.tree.map(jnp.asarray, theta)
        state = tx.init(params)
        for g, exp in zip(grads, expected, strict=True):
            u, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
            params = optax.apply_updates(params, u)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), params, exp)


def test_first_step_without_momentum_clip_eps_is_sign_descent():
    g = {"w": jnp.array([[0.3, -2.0], [1e-4, -5.0]]), "b": jnp.array([-0.1, 7.0])}
    tx = normopt.scale_by_fadam(b1=0.0, eps=0.0, clip=jnp.inf)
    u, _ = tx.update(g, tx.init(g))
    jax.tree.map(lambda a, x: np.testing.assert_allclose(a, normopt.norms.linf().dualize(x), rtol=1e-5), u, g)


def test_zero_gradient_gives_zero_update_not_nan():
    tx = normopt.fadam(0.1, weight_decay=0.1)
    params = {"w": jnp.ones(3)}
    u, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
    np.testing.assert_array_equal(u["w"], 0.0)


def test_weight_decay_needs_params():
    tx = normopt.fadam(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    tx = normopt.fadam(0.1)  # a literal 0 needs none, and the params would not change the update
    g, params = jnp.array([0.5, -2.0]), jnp.array([3.0, 4.0])
    without, _ = tx.update(g, tx.init(params))
    with_params, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_array_equal(without, with_params)
    assert bool(jnp.all(jnp.isfinite(without))) and bool(jnp.all(jnp.sign(without) == -jnp.sign(g)))


@pytest.mark.parametrize(
    "factory,kwargs",
    [
        (normopt.fadam, dict(learning_rate=0.1, b1=0.5, clip=0.3, weight_decay=0.1)),
        (normopt.shampoo, dict(learning_rate=0.1, beta=0.5, eps=1e-3, weight_decay=0.1)),
        (normopt.prox_l1, dict(strength=0.2, learning_rate=0.5)),
    ],
)
def test_hyperparameters_may_arrive_traced(factory, kwargs):
    params = {"w": jnp.arange(6.0).reshape(3, 2) / 5 - 0.4, "b": jnp.array([0.5, -0.05])}
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    plain, injected = factory(**kwargs), optax.inject_hyperparams(factory)(**kwargs)
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_injected, _ = injected.update(grads, injected.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u_plain, u_injected)
