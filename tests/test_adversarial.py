"""Adversarial input, each case with the policy of docs/reliability.md: zero, rank-1, ill-conditioned, tiny and
huge, NaN/inf, empty and scalar, integer and boolean leaves, mismatched trees, unknown names."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import references
from _hardening import ADAMW_FALLBACK, DECAY, OPTIMIZERS, cases, grads, is_finite, optimizer, small_params, update
from references import random_matrix

import normopt
from normopt import norms

SCALE_FREE = ("muon", "scion", "steepest_descent", "sign_sgd", "normalized_sgd", "dion", "normuon")


def _exact(name):
    return norms.get(name) if name not in ("spectral", "rms_to_rms") else norms.BY_NAME[name](method="svd")


def _jit_step(tx):
    return jax.jit(lambda params, state, g: tx.update(g, state, params))


# ------------------------------------------------------------------------------------------------ zero gradients
@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_zero_gradients_give_a_zero_update(name):
    """A zero gradient moves only by weight decay: u = −η·λ·p exactly (0 without decay; the prox step for
    prox_l1), never NaN."""
    params = small_params()
    updates, state = update(name)(params, optimizer(name).init(params), jax.tree.map(jnp.zeros_like, params))
    for (path, u), p in zip(jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(params), strict=True):
        decayed = name in DECAY and not (name in ADAMW_FALLBACK and p.ndim < 2)  # AdamW fallback: no decay
        expected = -0.02 * DECAY[name] * np.asarray(p) if decayed else np.zeros(p.shape)
        if name == "prox_l1":  # the prox step alone: soft-thresholding by τ = η·λ, S_τ(p) − p
            q = np.asarray(p, np.float64)
            expected = np.sign(q) * np.maximum(np.abs(q) - 0.02 * 0.01, 0) - q
        atol = 1e-7 * float(np.abs(p).max()) if name == "prox_l1" else 0  # S_τ(p) − p rounds at fp32 eps·|p|
        np.testing.assert_allclose(u, expected, rtol=1e-6, atol=atol, err_msg=jax.tree_util.keystr(path))
    assert is_finite(state)


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_zero_dualizes_to_zero(name):
    for norm in (norms.get(name), _exact(name)):
        d = norm.dualize(jnp.zeros((2, 8, 4)))
        assert d.shape == (2, 8, 4) and bool(jnp.all(d == 0))
        assert float(norm.norm(jnp.zeros((8, 4)))) == 0 and float(norm.dual_norm(jnp.zeros((8, 4)))) == 0


# ------------------------------------------------------------------------------ rank-1 and ill-conditioned
POLAR_EXPRESS_BAND = (0.84, 1.124)
"""5 Polar Express steps map every singular value σ ≥ 1e-3·‖G‖_F into this band (REFERENCES §2: |σ − 1| ≤ 0.124,
widened below by the 1.01 safety factor), and all others into [0, 1.124]."""


def _mapped_singular_values(g: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(σ(G), diag(Uᵀ D V)): what an iteration acting on singular values made of each one (float64 SVD of g)."""
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    return s, np.diag(u.T @ np.asarray(d, np.float64) @ vt.T)


@pytest.mark.parametrize("method", ["polar_express", "svd"])
def test_rank_one_matrix(method):
    """dualize(u vᵀ) = u vᵀ / (‖u‖‖v‖) under the spectral norm: exact for svd; for Polar Express the same
    direction, with its one singular value inside the guaranteed band."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(16), rng.standard_normal(8)
    g = np.outer(u, v)
    d = np.asarray(norms.spectral(method=method).dualize(jnp.asarray(g, jnp.float32)), np.float64)
    unit = g / (np.linalg.norm(u) * np.linalg.norm(v))
    c = np.sum(d * unit)
    np.testing.assert_allclose(d, c * unit, atol=1e-5 if method == "svd" else 1e-4)
    if method == "svd":
        np.testing.assert_allclose(c, 1.0, rtol=1e-5)
    else:
        assert POLAR_EXPRESS_BAND[0] <= c <= POLAR_EXPRESS_BAND[1]


def test_ill_conditioned_matrix():
    """Condition number 1e6 in fp32: both methods are finite, act on singular values only, never exceed the
    band's top; svd maps every resolvable σ to 1, Polar Express every σ ≥ 1e-3·‖G‖_F into its band."""
    g = random_matrix(np.random.default_rng(1), 16, 8, cond=1e6)
    for method, low in (("svd", 1 - 1e-3), ("polar_express", POLAR_EXPRESS_BAND[0])):
        d = norms.spectral(method=method).dualize(jnp.asarray(g, jnp.float32))
        assert bool(jnp.all(jnp.isfinite(d)))
        s, mapped = _mapped_singular_values(g, d)
        assert np.linalg.norm(np.asarray(d, np.float64), 2) <= POLAR_EXPRESS_BAND[1] + 1e-3
        resolved = s >= (1e-3 if method != "svd" else 1e-4) * np.linalg.norm(g)
        assert np.all(mapped[resolved] >= low - 1e-3), (method, mapped)


# -------------------------------------------------------------------------------------------- tiny and huge
@pytest.mark.parametrize("scale", [1e-30, 1e30])
@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_tiny_and_huge_gradients_in_fp32(name, scale):
    """Entries of size 1e-30 (squares underflow) or 1e30 (squares overflow) in fp32: the dualization is finite and
    equal to the float64 reference of the same direction; the dual norm scales exactly."""
    g = np.random.default_rng(2).standard_normal((16, 8))
    norm = _exact(name)
    d = norm.dualize(jnp.asarray(g * scale, jnp.float32))
    assert bool(jnp.all(jnp.isfinite(d)))
    np.testing.assert_allclose(d, references.dualize(name, g), rtol=1e-4, atol=1e-5)
    dual = float(norm.dual_norm(jnp.asarray(g * scale, jnp.float32)))
    np.testing.assert_allclose(dual / scale, np.sum(g * references.dualize(name, g)), rtol=1e-4)


@pytest.mark.parametrize("name", cases(SCALE_FREE))
def test_optimizers_are_scale_free_on_tiny_and_huge_gradients(name):
    """Constrained steepest descent is invariant to the gradient's scale: 1e±30 gradients give the update of
    the unit-scale gradient (momentum is linear, dualization 0-homogeneous, weight decay does not see g).
    The AdamW fallback of muon and dion is optax's Adam (ε-dependent, and ν = g² overflows fp32 above ~1e19):
    it is only required to stay finite. FAdam and Shampoo store squared gradients and are not scale-free."""
    params = small_params()
    g = grads(params, 0)
    state = optimizer(name).init(params)
    ref, _ = update(name)(params, state, g)
    for scale in (1e-30, 1e30):
        u, new_state = update(name)(params, state, jax.tree.map(lambda x: x * scale, g))
        assert is_finite(u)
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(u)[0], jax.tree.leaves(ref), strict=True):
            if name in ADAMW_FALLBACK and a.ndim < 2:
                continue
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5, err_msg=f"{scale} {jax.tree_util.keystr(path)}")


# ----------------------------------------------------------------------------------------------- NaN and inf
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_non_finite_gradients_propagate_through_every_norm(name, bad):
    """Policy: a NaN/±inf entry makes the leaf's update non-finite (never a silently finite step)."""
    g = jnp.asarray(np.random.default_rng(3).standard_normal((8, 4)), jnp.float32).at[2, 1].set(bad)
    for norm in (norms.get(name), _exact(name)):
        assert not bool(jnp.all(jnp.isfinite(norm.dualize(g)))), norm.name


@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_non_finite_gradients_propagate(name):
    """Policy: NaN/inf in a gradient leaf reaches that leaf's update (and the state), so that a NaN loss or
    optax.apply_if_finite notices; normopt never turns it into a finite step."""
    params = small_params()
    g = grads(params, 0)
    g["dense"]["kernel"] = g["dense"]["kernel"].at[0, 0].set(jnp.inf)
    g["dense"]["bias"] = g["dense"]["bias"].at[0].set(jnp.nan)
    u, _ = update(name)(params, optimizer(name).init(params), g)
    assert not bool(jnp.all(jnp.isfinite(u["dense"]["kernel"])))
    assert not bool(jnp.all(jnp.isfinite(u["dense"]["bias"])))


@pytest.mark.parametrize("name", ["sign_sgd"])  # muon: tests/test_integrations.py
def test_apply_if_finite_skips_non_finite_gradients(name):
    """The other half of the policy: wrapped in optax.apply_if_finite the step is skipped, state untouched."""
    params = small_params()
    g = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), grads(params, 0))
    safe = optax.apply_if_finite(optimizer(name), max_consecutive_errors=5)
    state = safe.init(params)
    u, new_state = jax.jit(safe.update)(g, state, params)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    assert int(new_state.notfinite_count) == 1
    for a, b in zip(jax.tree.leaves(new_state.inner_state), jax.tree.leaves(state.inner_state), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------- empty and scalar leaves
@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_empty_and_scalar_leaves(name):
    """Size-0 leaves (vectors, matrices, a stack of empty matrices) give size-0 updates; scalars are vectors."""
    params = {
        "w": jnp.ones((4, 3)),
        "empty_vector": jnp.zeros((0,)),
        "empty_rows": jnp.zeros((0, 3)),
        "empty_cols": jnp.zeros((3, 0)),
        "empty_stack": jnp.zeros((2, 0, 3)),
        "scalar": jnp.asarray(1.5),
    }
    tx = OPTIMIZERS[name]()
    g = jax.tree.map(lambda x: x * 0.5 + 0.25, params)
    updates, state = _jit_step(tx)(params, tx.init(params), g)
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
    assert is_finite(updates) and is_finite(state)
    if hasattr(tx, "rule"):
        rows = normopt.describe(params, tx, print_fn=None)
        assert [r["path"] for r in rows] == sorted(params)


# ------------------------------------------------------------------------------------- integer and bool leaves
@pytest.mark.parametrize("bad", [jnp.zeros((3,), jnp.int32), jnp.zeros((4, 4), jnp.bool_)])
@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_integer_and_boolean_leaves_raise_naming_the_path(name, bad):
    params = {"layer": {"kernel": jnp.ones((4, 4)), "counter": bad}}
    with pytest.raises(TypeError) as info:
        OPTIMIZERS[name]().init(params)
    message = str(info.value)
    assert "layer/counter" in message and str(bad.dtype) in message and "optax.masked" in message


# ------------------------------------------------------------------------------------------- mismatched trees
def test_mismatched_norm_tree_raises():
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones(4)}
    for spec in ({"a": "spectral", "c": "rms"}, {"a": "spectral"}, ["spectral", "rms"]):
        with pytest.raises(ValueError, match="does not match the parameter tree") as info:
            normopt.dualize(spec).init(params)
        assert "callable" in str(info.value)  # says what to do
    with pytest.raises(ValueError, match="weights does not match"):
        norms.weighted_max("l2", {"a": 1.0, "c": 2.0}).dual_norm(params)


def test_matrix_norm_on_a_vector_names_the_leaf():
    params = {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}}
    with pytest.raises(ValueError, match=r"dense/bias \(shape \(4,\)\).*use a vector norm"):
        normopt.steepest_descent(0.1, "spectral").init(params)
    with pytest.raises(ValueError, match=r"w \(shape \(4, 4\)\).*out of range"):
        normopt.muon(0.1, layout={"w": normopt.MatrixDims(fan_in=5)}).init({"w": jnp.ones((4, 4))})


# ------------------------------------------------------------------------------------------------ unknown names
def test_unknown_names_list_the_valid_ones():
    params = {"w": jnp.ones((4, 4))}
    cases = [
        (lambda: norms.get("spectal"), ["spectral", "rms_to_rms", "l1_to_rms"]),
        (lambda: normopt.dualize({"w": "spectal"}).init(params), ["w:", "spectral"]),
        (lambda: normopt.dualize("l2", mode="constraint"), ["constrained", "regularized"]),
        (lambda: normopt.muon(0.1, method="polar_expres").init(params), ["polar_express", "jordan", "svd"]),
        (lambda: normopt.muon(0.1, scale="spectal").init(params), ["spectral", "jordan", "moonlight"]),
        (lambda: normopt.scion(0.1, rules={"w": "hiden"}).init(params), ["w:", "hidden", "embedding", "head"]),
        (lambda: normopt.scion(0.1, vector_norm="l3"), ["rms", "linf"]),
        (lambda: normopt.orthogonalize(jnp.ones((4, 4)), method="newton"), ["newton_schulz", "polar_express"]),
    ]
    for make, words in cases:
        with pytest.raises(ValueError) as info:
            make()
        for word in words:
            assert word in str(info.value), (word, str(info.value))


# ------------------------------------------------- optimizers with their own calling conventions or domains
def _newton_loss(p):
    return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(p["w"] ** 4)


@pytest.mark.slow  # compiles Newton and EG with bad inputs (≈ 4 s)
def test_newton_and_exponentiated_gradient_policy():
    """Integer leaves raise naming the leaf; NaN gradients propagate; a zero gradient does not move (EG: up to
    fp32 round-off of exp/log on the simplex)."""
    newton, eg = normopt.newton(), normopt.exponentiated_gradient(0.1)
    for tx, good in ((newton, jnp.asarray([0.5, -0.3, 0.2])), (eg, jnp.asarray([0.2, 0.3, 0.5]))):
        with pytest.raises(TypeError, match="layer/counter: dtype int32 is not floating point"):
            tx.init({"layer": {"w": good, "counter": jnp.zeros(2, jnp.int32)}})
    p = {"w": jnp.asarray([0.5, -0.3, 0.2])}
    nan = {"w": jnp.asarray([jnp.nan, 0.0, 1.0])}
    u, _ = newton.update(nan, newton.init(p), p, value=_newton_loss(p), grad=nan, value_fn=_newton_loss)
    assert not is_finite(u)
    q = {"w": jnp.asarray([0.2, 0.3, 0.5])}
    u, _ = eg.update(nan, eg.init(q), q)
    assert not is_finite(u)
    u, _ = eg.update(jax.tree.map(jnp.zeros_like, q), eg.init(q), q)
    np.testing.assert_allclose(u["w"], 0.0, atol=1e-7)
