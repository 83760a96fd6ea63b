"""Manifold Muon (normopt.family.manifold): the Stiefel constraint holds, the step is the tangent-space steepest
descent direction (against closed forms and an independent scipy primal/dual certificate), policy cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import polar_factor
from scipy import optimize

from normopt.family.manifold import manifold_muon
from normopt.family.manifold import stiefel_direction as _direction

# One compilation per shape and method (eager while_loops recompile at every call).
stiefel_direction = jax.jit(_direction, static_argnames=("method",))


def _stiefel(rng, m, n):
    q = np.linalg.qr(rng.standard_normal((max(m, n), min(m, n))))[0]
    return q if m >= n else q.T


@functools.cache
def _problem(m, n, seed):
    """A random (W, G) of shape m × n and its certified bounds (computed once, shared by the tests)."""
    rng = np.random.default_rng(seed)
    w, g = _stiefel(rng, m, n), rng.standard_normal((m, n))
    return w, g, *_certificate(g, w)


def _certificate(g, w, starts=3, seed=0):
    """(lower, upper) bounds on max ⟨G, D⟩ over D ∈ T_W, ‖D‖_op ≤ 1, in float64, independent of normopt.

    Primal (lower): D = W Ω + W⊥ K with Ω skew (every tangent D, since [W W⊥] is orthogonal and ‖D‖_op =
    ‖[Ω; K]‖_op), maximized by SLSQP under 1 − σ_max ≥ 0 from random starts, then scaled into the ball.
    Dual (upper): min over symmetric Λ of ‖G + 2WΛ‖_* (weak duality: every Λ gives an upper bound), by Powell."""
    m, n = w.shape
    full = np.linalg.qr(np.concatenate([w, np.eye(m)[:, : m - n]], axis=1))[0]
    w_perp = full[:, n:] - w @ (w.T @ full[:, n:])
    w_perp = np.linalg.qr(w_perp)[0]
    iu, il = np.triu_indices(n, 1), np.triu_indices(n)

    def tangent(x):
        omega = np.zeros((n, n))
        omega[iu] = x[: len(iu[0])]
        return w @ (omega - omega.T) + w_perp @ x[len(iu[0]) :].reshape(m - n, n)

    def sym(x):
        lam = np.zeros((n, n))
        lam[il] = x
        return lam + lam.T - np.diag(np.diag(lam))

    rng = np.random.default_rng(seed)
    lower, upper = -np.inf, np.inf
    for _ in range(starts):
        r = optimize.minimize(
            lambda x: -np.sum(g * tangent(x)),
            0.3 * rng.standard_normal(len(iu[0]) + (m - n) * n),
            method="SLSQP",
            constraints=[{"type": "ineq", "fun": lambda x: 1 - np.linalg.norm(tangent(x), 2)}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        d = tangent(r.x)
        lower = max(lower, np.sum(g * d / max(1.0, np.linalg.norm(d, 2))))
        r = optimize.minimize(
            lambda x: np.linalg.svd(g + 2 * w @ sym(x), compute_uv=False).sum(),
            0.3 * rng.standard_normal(len(il[0])),
            method="Powell",
            options={"xtol": 1e-10, "ftol": 1e-14, "maxiter": 20000},
        )
        upper = min(upper, r.fun)
    return lower, upper


def _check_feasible(d, w, atol=1e-5):
    d, w = np.asarray(d, np.float64), np.asarray(w, np.float64)
    gram = w.T @ d + d.T @ w if w.shape[0] >= w.shape[1] else w @ d.T + d @ w.T
    np.testing.assert_allclose(gram, 0, atol=atol)
    assert np.linalg.norm(d, 2) <= 1 + atol


@pytest.mark.slow  # scipy certificates and two compilations per method: ~15 s on a loaded 2-core machine
@pytest.mark.parametrize("method", ["svd", "polar_express"])
def test_direction_matches_an_independent_optimum(method):
    """4 × 2 problems (dual smooth at the optimum): ⟨G, D⟩ lies within 1e-4 of the certified optimum, whose
    primal and dual bounds agree; D is tangent and in the unit ball. Also transposed (wide)."""
    for seed in range(2):
        w, g, lower, upper = _problem(4, 2, seed)
        assert upper - lower < 1e-5
        for gg, ww in ((g, w), (g.T, w.T)):
            d = stiefel_direction(jnp.asarray(gg, jnp.float32), jnp.asarray(ww, jnp.float32), method=method)
            _check_feasible(d, ww)
            assert lower - 1e-4 <= np.sum(gg * np.asarray(d, np.float64)) <= upper + 1e-4


@pytest.mark.slow
def test_direction_where_dual_ascent_falls_short():
    """3 × 2 problems, where the dual optimum is rank-deficient (non-smooth): D stays feasible and below the
    certified upper bound, and recovers most of the optimum (the shortfall documented in stiefel_direction)."""
    for seed in range(2):
        w, g, lower, upper = _problem(3, 2, seed)
        d = stiefel_direction(jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32), method="svd")
        _check_feasible(d, w)
        value = np.sum(g * np.asarray(d, np.float64))
        assert 0.8 * lower <= value <= upper + 1e-5


def test_closed_forms():
    """n = 1 (hypersphere): D = (g − w wᵀg)/‖·‖₂. Square W: T_W = {WΩ : Ω skew} and D* = W·msign(skew(WᵀG))
    (the polar factor of a skew matrix is skew). Batched: one call on the stack."""
    rng = np.random.default_rng(2)
    w1, g1 = _stiefel(rng, 6, 1), rng.standard_normal((6, 1))
    p = g1 - w1 @ (w1.T @ g1)
    d = stiefel_direction(jnp.asarray(g1, jnp.float32), jnp.asarray(w1, jnp.float32))
    np.testing.assert_allclose(d, p / np.linalg.norm(p), atol=1e-5)

    ws = np.stack([_stiefel(rng, 4, 4) for _ in range(2)])
    gs = rng.standard_normal((2, 4, 4))
    ref = [w @ polar_factor((w.T @ g - g.T @ w) / 2) for w, g in zip(ws, gs, strict=True)]
    for method, atol in (("svd", 1e-5), ("polar_express", 1e-4)):
        d = stiefel_direction(jnp.asarray(gs, jnp.float32), jnp.asarray(ws, jnp.float32), method=method)
        np.testing.assert_allclose(d, np.stack(ref), atol=atol)


def test_step_is_the_retracted_tangent_step():
    """u = polar(W − η·D*) − W against the float64 closed form D* of square W and numpy's polar factor."""
    rng = np.random.default_rng(3)
    w, g = _stiefel(rng, 4, 4), rng.standard_normal((4, 4))
    d = w @ polar_factor((w.T @ g - g.T @ w) / 2)
    tx = manifold_muon(0.3, beta=0.0, method="svd")
    params = {"w": jnp.asarray(w, jnp.float32)}
    u, _ = tx.update({"w": jnp.asarray(g, jnp.float32)}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], polar_factor(w - 0.3 * d) - w, atol=2e-5)


@pytest.mark.slow  # 100 jitted steps / several compilations: ≈ 3 s on 2 cores
def test_stays_on_the_manifold_for_100_steps():
    """Tall, wide and stacked matrices from orthogonal inits, 100 steps on random gradients in one jitted scan:
    ‖WᵀW − I‖_max (short side) stays ≤ 1e-5 at every step, and the weights do move."""
    rng = np.random.default_rng(4)
    params = {"tall": _stiefel(rng, 6, 3), "wide": _stiefel(rng, 3, 5), "stack": np.stack([_stiefel(rng, 4, 4)] * 2)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    gs = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal((100, *x.shape)), jnp.float32), params)
    tx = manifold_muon(0.1, dual_steps=20)

    def error(w):
        gram = jnp.swapaxes(w, -1, -2) @ w if w.shape[-2] >= w.shape[-1] else w @ jnp.swapaxes(w, -1, -2)
        return jnp.max(jnp.abs(gram - jnp.eye(gram.shape[-1])))

    def step(carry, g):
        p, state = carry
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
        return (p, state), jnp.max(jnp.stack([error(x) for x in jax.tree.leaves(p)]))

    (final, _), errors = jax.jit(lambda p, gs: jax.lax.scan(step, (p, tx.init(p)), gs))(params, gs)
    assert float(errors.max()) <= 1e-5
    assert float(jnp.abs(final["tall"] - params["tall"]).max()) > 0.1


@pytest.mark.slow  # 100 jitted steps / several compilations: ≈ 3 s on 2 cores
def test_policy_cases():
    """Off-manifold init: projected by the first step (polar of W − ηD). Zero gradient: exactly zero update,
    on or off the manifold. NaN: visible. Vectors: AdamW. No params: a clear error."""
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32), "b": jnp.zeros(3)}
    tx = manifold_muon(0.1, method="svd", dual_steps=10)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    state = tx.init(params)
    zero, _ = step(params, state, jax.tree.map(jnp.zeros_like, params))
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(zero))
    g = {"w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32), "b": jnp.ones(3)}
    u, _ = step(params, state, g)
    w = np.asarray(optax.apply_updates(params, u)["w"], np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(3), atol=1e-5)
    assert bool(jnp.all(u["b"] < 0)) and bool(jnp.all(u["b"] > -0.2))  # (N)Adam's first step, against g > 0
    bad, _ = step(params, state, {"w": g["w"].at[0, 0].set(jnp.nan), "b": g["b"]})
    assert not bool(jnp.all(jnp.isfinite(bad["w"])))
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(g, state)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"dual_steps": 0}, ValueError, "dual_steps"),
        ({"dual_steps": 2.5}, TypeError, "dual_steps"),
        ({"dual_steps": jnp.asarray(3)}, TypeError, "static_args"),
        ({"dual_lr": 0.0}, ValueError, "dual_lr"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"beta": 1.0}, ValueError, "beta"),
        ({"method": "polar_expres"}, ValueError, "polar_express"),
        ({"steps": 0}, ValueError, "steps"),
        ({"mu_dtype": "int8"}, ValueError, "mu_dtype"),
        ({"fallback": "head"}, TypeError, "fallback"),
        ({"adam_eps": 0.0}, ValueError, "adam_eps"),
    ],
)
def test_validation_at_construction(kwargs, error, words):
    with pytest.raises(error, match=words):
        manifold_muon(0.1, **kwargs)
