"""Hyperball (MuonH / AdamH) against float64 numpy references: the formula, Levanter's rule, the sphere kept over
100 steps slice by slice, zero and NaN steps, low precision, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt
from normopt.family.hyperball import HyperballState, adamh, muonh, project_to_hyperball

SHAPES = {"w": (6, 4), "stack": (3, 5, 4), "b": (4,)}  # a matrix, a stack of 3 matrices, a vector


def _tree(rng, scale=1.0, dtype=jnp.float32):
    return {k: jnp.asarray(rng.standard_normal(s) * scale, dtype) for k, s in SHAPES.items()}


def _f64(x):
    return np.asarray(x, np.float64)


def _axes(x):
    return tuple(range(x.ndim - 2, x.ndim))  # [*batch, fan_in, fan_out]: the last two axes form the matrix


def _fro(x):
    return np.sqrt(np.sum(x**2, axis=_axes(x), keepdims=True))


def _normalize(x):
    n = _fro(x)
    return np.where(n == 0, 0.0, x / np.where(n == 0, 1.0, n))


def hyperball_reference(w, u, radius, lr):
    """The brief's formula in float64: W_new = R·normalize(W − η·R·normalize(U)); returns W_new − W."""
    moved = w - lr * radius * _normalize(u)
    return radius * _normalize(moved) - w


def levanter_step(p, u, lr):
    """Levanter's ``scale_invariant_update`` (marin-community/marin, src/levanter/optim/adamh.py @ 8485b06b6b53,
    the same in muonh.py): R is the current ‖p‖, axis 0 of a ≥ 3-D leaf is the stack axis, norms floored at
    1e-10."""
    axes = tuple(range(1, p.ndim)) if p.ndim > 2 else None
    norm = lambda x: np.sqrt(np.sum(x**2, axis=axes, keepdims=p.ndim > 2))
    p_norm = norm(p)
    new_p = p - lr * u * p_norm / np.maximum(norm(u), 1e-10)
    return new_p / np.maximum(norm(new_p), 1e-10) * p_norm - p


def _step(tx):
    """``tx.update`` jitted as ``(params, state, grads)``: one compilation instead of many eager ops."""
    return jax.jit(lambda p, s, g: tx.update(g, s, p))


MUONH, ADAMH = muonh(0.1), adamh(0.1)  # shared, with their jitted steps below: compilations dominate on CPU
MUONH_STEP, ADAMH_STEP = _step(MUONH), _step(ADAMH)


def _run(tx, params, grads_list, step=None):
    step = step or _step(tx)
    state, out = tx.init(params), []
    for g in grads_list:
        u, state = step(params, state, g)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out, state


# ----------------------------------------------------------------------------------------------- the formula
def test_matches_the_float64_formula_over_several_steps_with_a_schedule():
    rng = np.random.default_rng(0)
    params = _tree(rng)
    grads_list = [_tree(rng) for _ in range(4)]
    schedule = optax.linear_schedule(0.3, 0.05, 3)
    tx = project_to_hyperball(schedule)
    out, state = _run(tx, params, grads_list)
    w = {k: _f64(v) for k, v in params.items()}
    radius = {k: _fro(w[k]) for k in ("w", "stack")}
    for t, g in enumerate(grads_list):
        lr = float(schedule(t))
        for k in ("w", "stack"):
            w[k] = w[k] + hyperball_reference(w[k], _f64(g[k]), radius[k], lr)
        w["b"] = w["b"] - lr * _f64(g["b"])  # vectors: the plain step −η·u
        for k in SHAPES:
            np.testing.assert_allclose(out[t][k], w[k], rtol=2e-5, atol=2e-6, err_msg=f"step {t} {k}")
    assert int(state.count) == 4
    np.testing.assert_allclose(state.radius["stack"], radius["stack"], rtol=1e-6)
    assert state.radius["stack"].shape == (3, 1, 1) and state.radius["b"].shape == ()


def test_tangent_step_turns_by_arctan_eta():
    """For U ⟂ W, W_new = (W − η·R·Û)/√(1 + η²): the angle between W and W_new is arctan η."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3))
    u = rng.standard_normal((5, 3))
    u -= np.sum(u * w) / np.sum(w * w) * w  # tangent to the sphere at W
    eta = 0.4
    tx = project_to_hyperball(eta)
    p = jnp.asarray(w, jnp.float32)
    d, _ = _step(tx)(p, tx.init(p), jnp.asarray(u, jnp.float32))
    new = w + _f64(d)
    cos = np.sum(new * w) / (np.linalg.norm(new) * np.linalg.norm(w))
    np.testing.assert_allclose(np.arccos(np.clip(cos, -1, 1)), np.arctan(eta), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(new), np.linalg.norm(w), rtol=1e-6)


def test_adamh_matches_levanter_rule():
    """AdamH against Levanter's scale_by_adamh (Adam moments, then its projection) in float64, with AdamW (same
    moments, no decay) on the vector, as Levanter's ``adam`` group with adam_lr = lr."""
    rng = np.random.default_rng(2)
    params = _tree(rng, 0.5)
    grads_list = [_tree(rng) for _ in range(5)]
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8  # ADAMH's (Levanter's config sets b2 = 0.95: a parameter here)
    out, _ = _run(ADAMH, params, grads_list, ADAMH_STEP)
    w = {k: _f64(v) for k, v in params.items()}
    mu = {k: np.zeros(s) for k, s in SHAPES.items()}
    nu = {k: np.zeros(s) for k, s in SHAPES.items()}
    for t, g in enumerate(grads_list, start=1):
        for k in SHAPES:
            gk = _f64(g[k])
            mu[k] = b1 * mu[k] + (1 - b1) * gk
            nu[k] = b2 * nu[k] + (1 - b2) * gk**2
            u = (mu[k] / (1 - b1**t)) / (np.sqrt(nu[k] / (1 - b2**t)) + eps)
            w[k] = w[k] + (levanter_step(w[k], u, lr) if k != "b" else -lr * u)
            np.testing.assert_allclose(out[t - 1][k], w[k], rtol=2e-5, atol=2e-6, err_msg=f"step {t} {k}")


def test_muonh_matches_the_polar_factor_of_the_momentum():
    """MuonH (exact polar factor, EMA momentum): the direction is polar(Σ β^{t−s}(1 − β)·g_s); head → AdamH."""
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)}
    params["stack"] = jnp.asarray(rng.standard_normal((3, 5, 4)) * np.array([0.1, 1.0, 5.0])[:, None, None])
    grads_list = [{k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in params.items()}]
    grads_list += [{k: v * 0.5 + 0.1 for k, v in grads_list[0].items()}]  # another step, the same shapes
    lr, beta = 0.1, 0.9
    out, _ = _run(muonh(lr, beta=beta, nesterov=False, method="svd"), params, grads_list)
    w = {k: _f64(v) for k, v in params.items()}
    radius = {k: _fro(v) for k, v in w.items()}
    m = {k: np.zeros(v.shape) for k, v in w.items()}
    for t, g in enumerate(grads_list):
        for k in w:
            m[k] = beta * m[k] + (1 - beta) * _f64(g[k])
            u_, _, vt = np.linalg.svd(m[k], full_matrices=False)
            w[k] = w[k] + hyperball_reference(w[k], u_ @ vt, radius[k], lr)
            np.testing.assert_allclose(out[t][k], w[k], rtol=1e-4, atol=1e-5, err_msg=f"step {t} {k}")


def test_muonh_partition_follows_levanter():
    """Hidden → MuonH, output head → AdamH, embedding and vectors → AdamW (Levanter's create_mask)."""
    params = {
        "embed": {"embedding": jnp.ones((10, 4))},
        "layer": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)},
        "head": {"kernel": jnp.ones((4, 10))},
    }
    rows = normopt.describe(params, muonh(0.02), print_fn=None)
    assert {r["path"]: r["norm"] for r in rows} == {
        "embed/embedding": "adamw",
        "head/kernel": "adamh",
        "layer/bias": "adamw",
        "layer/kernel": "muonh",
    }
    rows = normopt.describe(params, adamh(0.02), print_fn=None)
    assert [r["norm"] for r in rows] == ["adamw", "adamh", "adamw", "adamh"]


# ------------------------------------------------------------------------------------------------ the sphere
def test_every_slice_keeps_its_own_norm_over_100_steps():
    rng = np.random.default_rng(4)
    params = _tree(rng)
    params["stack"] = params["stack"] * jnp.array([0.01, 1.0, 30.0])[:, None, None]  # three very different radii
    r0 = {k: _fro(_f64(params[k])) for k in ("w", "stack")}
    for tx, step in ((MUONH, MUONH_STEP), (ADAMH, ADAMH_STEP)):
        p, state = params, tx.init(params)
        for _ in range(100):
            u, state = step(p, state, _tree(rng))
            p = optax.apply_updates(p, u)
        for k in r0:
            np.testing.assert_allclose(_fro(_f64(p[k])), r0[k], rtol=3e-6, err_msg=k)
            moved = np.abs(_f64(p[k]) - _f64(params[k])).max(axis=_axes(p[k]))
            assert np.all(moved > 0.1 * np.abs(_f64(params[k])).max(axis=_axes(p[k]))), k  # each slice turned


def test_user_radius_is_reached_at_the_first_step():
    rng = np.random.default_rng(5)
    p = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
    tx = project_to_hyperball(0.1, radius=3.0)
    u, state = _step(tx)(p, tx.init(p), jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32))
    np.testing.assert_allclose(_fro(_f64(p + u)).ravel(), [3.0, 3.0], rtol=1e-6)
    np.testing.assert_array_equal(state.radius, np.full((2, 1, 1), 3.0))


# ------------------------------------------------------------------------------------------- zero, NaN, rank 1
@pytest.mark.parametrize("name", ["project_to_hyperball", "muonh", "adamh"])
def test_zero_gradient_gives_exactly_zero_step(name):
    params = _tree(np.random.default_rng(6))
    tx = {"muonh": MUONH, "adamh": ADAMH}.get(name) or project_to_hyperball(0.1)
    step = {"muonh": MUONH_STEP, "adamh": ADAMH_STEP}.get(name) or _step(tx)
    u, state = step(params, tx.init(params), jax.tree.map(jnp.zeros_like, params))
    for k in SHAPES:
        np.testing.assert_array_equal(u[k], np.zeros(SHAPES[k]), err_msg=k)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))


def test_a_zero_slice_of_the_direction_leaves_that_slice_alone():
    rng = np.random.default_rng(7)
    p = jnp.asarray(rng.standard_normal((2, 4, 3)), jnp.float32)
    g = np.asarray(rng.standard_normal((2, 4, 3)), np.float32)
    g[0] = 0
    tx = project_to_hyperball(0.2)
    u, _ = _step(tx)(p, tx.init(p), jnp.asarray(g))
    np.testing.assert_array_equal(u[0], 0)
    np.testing.assert_allclose(
        u[1], hyperball_reference(_f64(p[1:]), _f64(g[1:]), _fro(_f64(p[1:])), 0.2)[0], atol=1e-6
    )


def test_nan_gradient_stays_visible_and_rank_one_is_fine():
    rng = np.random.default_rng(8)
    params = _tree(rng)
    tx, step = MUONH, MUONH_STEP
    g = _tree(rng)
    g["w"] = g["w"].at[0, 0].set(jnp.nan)
    u, _ = step(params, tx.init(params), g)
    assert bool(jnp.isnan(u["w"]).any()) and bool(jnp.isfinite(u["stack"]).all())
    rank1 = {
        k: jnp.asarray(np.multiply.outer(rng.standard_normal(v.shape[:-1]), rng.standard_normal(v.shape[-1])))
        for k, v in params.items()
    }
    rank1 = jax.tree.map(lambda x: x.astype(jnp.float32), rank1)
    u, _ = step(params, tx.init(params), rank1)
    for k in ("w", "stack"):
        np.testing.assert_allclose(_fro(_f64(params[k] + u[k])), _fro(_f64(params[k])), rtol=1e-5)


# --------------------------------------------------------------------------------------------- low precision
@pytest.mark.parametrize("dtype", [jnp.bfloat16, pytest.param(jnp.float16, marks=pytest.mark.slow)])
def test_low_precision_params(dtype):
    rng = np.random.default_rng(9)
    params32 = _tree(rng)
    g32 = _tree(rng)
    params = jax.tree.map(lambda x: x.astype(dtype), params32)
    g = jax.tree.map(lambda x: x.astype(dtype), g32)
    u, _ = ADAMH_STEP(params, ADAMH.init(params), g)
    assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(dtype)}
    ref = hyperball_reference(_f64(params["stack"]), np.sign(_f64(g["stack"])), _fro(_f64(params["stack"])), 0.1)
    resolution = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(_f64(u["stack"]), ref, atol=4 * resolution * np.abs(_f64(params["stack"])).max())
    new = optax.apply_updates(params, u)
    np.testing.assert_allclose(_fro(_f64(new["stack"])), _fro(_f64(params["stack"])), rtol=2 * resolution)


# ------------------------------------------------------------------------------------------ optax plumbing
def test_inject_hyperparams_and_state_is_arrays():
    rng = np.random.default_rng(10)
    params = _tree(rng)
    tx = optax.inject_hyperparams(project_to_hyperball)(learning_rate=0.1, radius=2.0)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    u, state = step(params, state, _tree(rng))
    np.testing.assert_allclose(_fro(_f64(params["stack"] + u["stack"])).ravel(), [2.0] * 3, rtol=1e-6)
    state.hyperparams["radius"] = jnp.asarray(1.5, state.hyperparams["radius"].dtype)
    u, state = step(params, state, _tree(rng))
    np.testing.assert_allclose(_fro(_f64(params["w"] + u["w"])), 1.5, rtol=1e-6)
    assert step._cache_size() == 1
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    inner = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, HyperballState))
        if isinstance(s, HyperballState)
    ]
    assert inner and all(isinstance(x, jax.Array) for x in jax.tree.leaves(inner))


# --------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"radius": -1.0}, ValueError, "radius"),
        ({"radius": 0.0}, ValueError, "radius"),
        ({"learning_rate": -0.1}, ValueError, "learning_rate"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate"),
        ({"learning_rate": "0.1"}, TypeError, "learning_rate"),
    ],
)
@pytest.mark.parametrize("factory", [project_to_hyperball, muonh, adamh])
def test_bad_arguments_raise(factory, kwargs, error, match):
    kwargs = {"learning_rate": 0.1} | kwargs
    with pytest.raises(error, match=match):
        factory(kwargs.pop("learning_rate"), **kwargs)


def test_missing_params_zero_matrices_and_roles_raise():
    p = {"w": jnp.ones((4, 3))}
    tx = project_to_hyperball(0.1)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(p, tx.init(p))
    with pytest.raises(ValueError, match=r"stack .*norm 0"):
        muonh(0.1).init({"stack": jnp.zeros((2, 4, 3)).at[0].set(1.0)})
    project_to_hyperball(0.1, radius=1.0).init({"w": jnp.zeros((4, 3))})  # a radius given: fine
    muonh(0.1).init({"empty": jnp.zeros((0, 3))})  # an empty matrix has nothing to normalize
    with pytest.raises(ValueError, match="both"):
        muonh(0.1, fallback_roles=("head",))
    with pytest.raises(ValueError, match="adamh_roles"):
        muonh(0.1, adamh_roles=("bias",))
    with pytest.raises(ValueError, match="mu_dtype"):
        adamh(0.1, mu_dtype="int32")
