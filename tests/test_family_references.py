"""Each reference convention that an option reproduces, pinned against a float64 numpy re-implementation written
from the paper (tests/references.py): Dion's ``power_iters``/``rank_multiple_of`` (Ahn et al. 2025 and
microsoft/dion), FAdam's ε placement (Hwang 2024), Shampoo's absolute ridge (Gupta et al. 2018), and the ℓ2-ball
projection at 1e±20. normopt runs in fp32; the tolerances bound the fp32 round-off, and each test also checks that
the conventions it separates differ by much more than that tolerance, so a silent switch fails."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref

import normopt


def _max_rel(a, b) -> float:
    """max |a − b| / max |b| (float64)."""
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def _run(tx, grads, params=None):
    state = tx.init(grads[0] if params is None else params)
    step = jax.jit(tx.update)
    out = []
    for g in grads:
        u, state = step(g, state, params)
        out.append(u)
    return out, state


# ------------------------------------------------------------------------------------------------ Dion
@pytest.mark.parametrize("power_iters", [1, 3])
@pytest.mark.parametrize("shape", [(24, 10), (6, 20)])
def test_dion_power_iters_and_rank_multiple_of_match_the_reference(power_iters, shape):
    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3)]
    tx = normopt.scale_by_dion(rank=0.25, rank_multiple_of=4, power_iters=power_iters, beta=0.9)
    q0 = np.asarray(tx.init(grads[0]).q)
    fan_in, fan_out = shape
    assert q0.shape == (min(shape), ref.dion_rank(0.25, fan_in, fan_out, 4)) == (min(shape), 4)  # ⌈2.5⌉ → 4
    updates, _ = _run(tx, grads)
    tall = fan_in > fan_out  # M is read on its long side
    expected = ref.dion([g if tall else g.T for g in grads], q0, mu=0.9, power_iters=power_iters)
    c = np.sqrt(fan_out / fan_in)
    for u, e in zip(updates, expected, strict=True):
        e = e if tall else e.T
        assert _max_rel(u, c * e) < 1e-4
    if power_iters > 1:  # the option changes the result by far more than the tolerance
        one = ref.dion([g if tall else g.T for g in grads], q0, mu=0.9, power_iters=1)
        assert _max_rel(one[-1], expected[-1]) > 1e-2


def test_dion_rank_rounding_is_capped_and_int_ranks_round_too():
    tx = normopt.scale_by_dion(rank=3, rank_multiple_of=4)
    assert tx.init(jnp.zeros((16, 8))).q.shape == (8, 4)
    assert tx.init(jnp.zeros((16, 2))).q.shape == (2, 2)  # capped at min(fan_in, fan_out)
    assert normopt.scale_by_dion(rank=5).init(jnp.zeros((16, 8))).q.shape == (8, 5)  # multiple 1: unchanged


# ------------------------------------------------------------------------------------------------ FAdam
@pytest.mark.parametrize("p", [0.5, 0.75, 1.0])
@pytest.mark.parametrize("placement", ["outside", "power", "inside"])
def test_fadam_eps_placement_matches_algorithm_1(placement, p):
    rng = np.random.default_rng(1)
    # small gradients and a large ε so that where ε goes matters in fp32
    grads = [jnp.asarray(0.05 * rng.standard_normal(16), jnp.float32) for _ in range(4)]
    kw = dict(b1=0.9, b2=0.99, eps=0.05, clip=1.0, p=p)
    updates, _ = _run(normopt.scale_by_fadam(**kw, eps_placement=placement), grads)
    expected = ref.fadam(grads, **kw, placement=placement)
    for u, e in zip(updates, expected, strict=True):
        assert _max_rel(u, e) < 1e-5
    same = {0.5: {"outside", "power"}, 1.0: {"power", "inside"}}.get(p, set())  # ε^{2p} = ε; (f + ε²)¹ = f + ε²
    for other in {"outside", "power", "inside"} - {placement} - (same if placement in same else set()):
        assert _max_rel(expected[-1], ref.fadam(grads, **kw, placement=other)[-1]) > 1e-3


def test_fadam_default_placement_is_outside():
    rng = np.random.default_rng(2)
    grads = [jnp.asarray(0.05 * rng.standard_normal(8), jnp.float32) for _ in range(2)]
    kw = dict(b1=0.9, b2=0.99, eps=0.05, p=1.0)
    default, _ = _run(normopt.scale_by_fadam(**kw), grads)
    outside, _ = _run(normopt.scale_by_fadam(**kw, eps_placement="outside"), grads)
    np.testing.assert_array_equal(default[-1], outside[-1])


# ------------------------------------------------------------------------------------------------ Shampoo
@pytest.mark.parametrize("shape", [(5, 3), (4, 4)])
def test_shampoo_absolute_ridge_is_the_papers_algorithm(shape):
    rng = np.random.default_rng(3)
    grads = [jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3)]
    updates, _ = _run(normopt.scale_by_shampoo(beta=1.0, eps=0.1, ridge="absolute"), grads)
    expected = ref.shampoo_absolute(grads, 0.1)
    for u, e in zip(updates, expected, strict=True):
        assert _max_rel(u, e) < 1e-5
    relative, _ = _run(normopt.scale_by_shampoo(beta=1.0, eps=0.1), grads)
    assert _max_rel(relative[-1], expected[-1]) > 1e-3  # the default (relative) ridge is a different convention


def test_shampoo_absolute_ridge_zero_gradient_is_zero():
    tx = normopt.scale_by_shampoo(eps=1e-4, ridge="absolute")
    g = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}
    u, _ = tx.update(g, tx.init(g))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))


# ------------------------------------------------------------------------------------------------ ℓ2 ball
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e20])
def test_project_l2_ball_is_scale_equivariant_in_fp32(scale):
    rng = np.random.default_rng(4)
    u = {"a": rng.standard_normal(5), "b": rng.standard_normal((2, 3))}
    flat = np.concatenate([u["a"], u["b"].ravel()])
    x = jax.tree.map(lambda v: jnp.zeros(v.shape, jnp.float32), u)
    tx = normopt.project_l2_ball(0.5 * scale)
    out, _ = tx.update(jax.tree.map(lambda v: jnp.asarray(v * scale, jnp.float32), u), tx.init(x), x)
    got = np.concatenate([np.asarray(out["a"], np.float64), np.asarray(out["b"], np.float64).ravel()]) / scale
    assert _max_rel(got, ref.project_l2_ball(flat, 0.5)) < 1e-6


# ------------------------------------------------------------------------------------------------ robustness
PROJECTIONS = {
    "l2": normopt.project_l2_ball,
    "linf": normopt.project_linf_ball,
    "l1": normopt.project_l1_ball,
    "simplex": normopt.project_simplex,
}


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_projections_reject_integer_and_boolean_leaves_naming_the_path(name, dtype):
    tx = PROJECTIONS[name]()
    with pytest.raises(TypeError, match="layer/steps"):
        tx.init({"layer": {"steps": jnp.ones(3, dtype)}, "w": jnp.ones(3)})


@pytest.mark.parametrize("bad", [jnp.inf, -jnp.inf, jnp.nan])
@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: normopt.mirror_descent(0.1, mirror_map="entropy"), jnp.asarray([0.5, 1.0, 2.0])),
        (lambda: normopt.mirror_descent(0.1, mirror_map=normopt.mirror.p_norm(1.5)), jnp.asarray([0.5, -1.0, 2.0])),
        (lambda: normopt.exponentiated_gradient(0.1), jnp.asarray([0.2, 0.3, 0.5])),
        (lambda: normopt.project_linf_ball(1.0), jnp.asarray([0.2, -0.3, 0.5])),
        (lambda: normopt.project_simplex(), jnp.asarray([0.2, 0.3, 0.5])),
        (lambda: normopt.project_l2_ball(1.0), jnp.asarray([0.2, -0.3, 0.5])),
        (lambda: normopt.project_l1_ball(1.0), jnp.asarray([0.2, -0.3, 0.5])),
    ],
)
def test_a_non_finite_gradient_gives_a_non_finite_update(make, x, bad):
    tx = make()
    g = jnp.asarray([0.1, bad, -0.2])
    u, _ = tx.update(g, tx.init(x), x)
    assert not np.all(np.isfinite(np.asarray(u)))
    good, _ = tx.update(jnp.asarray([0.1, 0.3, -0.2]), tx.init(x), x)
    assert np.all(np.isfinite(np.asarray(good)))


@pytest.mark.slow  # compiles the Kronecker Newton step (≈ 6 s)
def test_newton_kronecker_gives_an_empty_leaf_an_empty_update():
    params = {"w": jnp.asarray([[1.0, 2.0], [0.5, -1.0]]), "empty": jnp.zeros((0, 3))}
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["w"]) + jnp.sum(p["empty"])
    tx = normopt.newton(structure="kronecker", linesearch=None)
    g = jax.grad(loss)(params)
    u, _ = tx.update(g, tx.init(params), params, value_fn=loss)
    assert u["empty"].shape == (0, 3)
    np.testing.assert_allclose(u["w"], -(params["w"] + 0.5), rtol=1e-5)  # one Newton step solves the quadratic


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("factory", [normopt.scale_by_dion, lambda **kw: normopt.dion(0.1, **kw)])
@pytest.mark.parametrize("name", ["power_iters", "rank_multiple_of"])
def test_dion_static_int_options_are_validated(factory, name):
    for bad, error in ((0, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match=name):
            factory(**{name: bad})
    with pytest.raises(TypeError, match="static_args"):
        factory(**{name: jnp.asarray(2)})


@pytest.mark.parametrize(
    "factory, name",
    [
        (normopt.scale_by_fadam, "eps_placement"),
        (lambda **kw: normopt.fadam(0.1, **kw), "eps_placement"),
        (normopt.scale_by_shampoo, "ridge"),
        (lambda **kw: normopt.shampoo(0.1, **kw), "ridge"),
    ],
)
def test_string_options_list_the_valid_values(factory, name):
    with pytest.raises(ValueError, match=name):
        factory(**{name: "nowhere"})
