"""Property-based tests (hypothesis) of the norm identities and the transforms' invariants.

Shapes are fixed per strategy so that every example reuses the same compiled kernels; entries lie on a grid
(k/10, |k| ≤ 100) so that fp32 rounding cannot create or break ties — extreme magnitudes are
tests/test_adversarial.py's job. Runs are derandomized: the same examples on every run.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import normopt
from normopt import norms

PROFILE = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SHAPE = (6, 4)  # [fan_in, fan_out]
grid = st.integers(-100, 100).map(lambda k: k / 10)
matrices = arrays(np.float64, SHAPE, elements=grid)
scales = st.floats(-3, 3).map(lambda e: 10.0**e)
POLAR_EXPRESS_BAND = (0.84, 1.124)  # σ ≥ 1e-3·‖G‖_F after 5 steps (REFERENCES §2, safety 1.01), see test_adversarial


def exact(name: str) -> norms.Norm:
    """Each norm, with the exact (SVD) polar factor for the spectral family."""
    return norms.BY_NAME[name](method="svd") if name in ("spectral", "rms_to_rms") else norms.get(name)


def f32(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def inner(a, b) -> float:
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
@PROFILE
@given(g=matrices)
def test_dualization_identities(name, g):
    """⟨g, dualize(g)⟩ = ‖g‖*, ‖dualize(g)‖ = 1 for g ≠ 0, and dualize(0) = 0."""
    norm = exact(name)
    d = norm.dualize(f32(g))
    if not np.any(g):
        assert not np.any(np.asarray(d))
        return
    dual = float(norm.dual_norm(f32(g)))
    np.testing.assert_allclose(inner(g, d), dual, rtol=1e-4)
    np.testing.assert_allclose(float(norm.norm(d)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
@PROFILE
@given(x=matrices, y=matrices)
def test_hoelder_inequality(name, x, y):
    """|⟨x, y⟩| ≤ ‖x‖·‖y‖*."""
    norm = exact(name)
    bound = float(norm.norm(f32(x))) * float(norm.dual_norm(f32(y)))
    assert abs(inner(x, y)) <= bound * (1 + 1e-4) + 1e-4


@pytest.mark.parametrize("name", ["spectral", "rms_to_rms"])
@PROFILE
@given(g=matrices)
def test_default_spectral_dualization_within_its_guarantee(name, g):
    """Polar Express (5 steps): ‖dualize(g)‖ ≤ 1.124 and ⟨g, dualize(g)⟩ lies between 0.84·Σ_{σ ≥ 1e-3‖g‖_F} σ and
    1.124·Σ σ (times the shape factor c of rms_to_rms) — the accuracy it guarantees, not equality."""
    norm, reference = norms.get(name), exact(name)
    d = norm.dualize(f32(g))
    s = np.linalg.svd(g, compute_uv=False)
    c = math.sqrt(SHAPE[1] / SHAPE[0]) if name == "rms_to_rms" else 1.0
    assert float(reference.norm(d)) <= POLAR_EXPRESS_BAND[1] + 1e-3
    resolved = s[s >= 1e-3 * np.linalg.norm(g)]
    assert (
        c * POLAR_EXPRESS_BAND[0] * resolved.sum() - 1e-3 <= inner(g, d) <= c * POLAR_EXPRESS_BAND[1] * s.sum() + 1e-3
    )


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
@PROFILE
@given(g=matrices, c=scales)
def test_dualize_is_scale_invariant(name, g, c):
    """dualize(c·g) = dualize(g) for c > 0, with the default kernels."""
    norm = norms.get(name)
    a, b = np.asarray(norm.dualize(f32(c * g))), np.asarray(norm.dualize(f32(g)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


@PROFILE
@given(g=matrices, b=arrays(np.float64, (4,), elements=grid), c=scales)
def test_regularized_transform_is_one_homogeneous(g, b, c):
    """The regularized step ‖g‖*·dualize(g) is 1-homogeneous, the constrained one 0-homogeneous, leaf by leaf."""
    tree = {"kernel": f32(g), "bias": f32(b)}
    rule = {"kernel": norms.rms_to_rms(method="svd"), "bias": norms.rms()}
    for mode, power in (("regularized", 1), ("constrained", 0)):
        tx = normopt.dualize(rule, mode)
        u, _ = tx.update(tree, tx.init(tree))
        uc, _ = tx.update(jax.tree.map(lambda x: c * x, tree), tx.init(tree))
        for key in tree:
            want = c**power * np.asarray(u[key], np.float64)
            np.testing.assert_allclose(uc[key], want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


@PROFILE
@given(g=matrices)
def test_scale_rules(g):
    """rms_to_rms = √(fan_out/fan_in)·spectral for dualize (and the inverse for norm); the jordan and moonlight
    rules multiply the polar factor by √max(1, fan_out/fan_in) and 0.2·√max(fan_in, fan_out)."""
    fan_in, fan_out = SHAPE
    base = np.asarray(norms.spectral(method="svd").dualize(f32(g)), np.float64)
    factors = {
        "spectral": math.sqrt(fan_out / fan_in),
        "jordan": math.sqrt(max(1.0, fan_out / fan_in)),
        "moonlight": 0.2 * math.sqrt(max(fan_in, fan_out)),
    }
    for rule, factor in factors.items():
        got = norms.spectral(scale=rule, method="svd").dualize(f32(g))
        np.testing.assert_allclose(got, factor * base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms.rms_to_rms(method="svd").dualize(f32(g)), factors["spectral"] * base, rtol=1e-5)
    spectral_value = float(norms.spectral(method="svd").norm(f32(g)))
    np.testing.assert_allclose(
        float(norms.rms_to_rms(method="svd").norm(f32(g))), spectral_value / factors["spectral"], rtol=1e-5
    )


@PROFILE
@given(g=arrays(np.float64, (2, *SHAPE), elements=grid))
def test_stacked_matrices_dualize_slice_by_slice(g):
    """Leading axes are batch axes: dualize of a stack is the stack of dualizations; the dual norm adds up."""
    norm = norms.rms_to_rms(method="svd")
    stacked = norm.dualize(f32(g))
    for i in range(2):
        np.testing.assert_allclose(stacked[i], norm.dualize(f32(g[i])), rtol=1e-5, atol=1e-6)
    want = sum(float(norm.dual_norm(f32(g[i]))) for i in range(2))
    np.testing.assert_allclose(float(norm.dual_norm(f32(g))), want, rtol=1e-5)


def _orthogonal(seed: int, n: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("method", ["svd", "polar_express"])
@PROFILE
@given(g=matrices, seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)))
def test_spectral_dualization_is_orthogonally_equivariant(method, g, seeds):
    """dualize(Q₁ G Q₂) = Q₁ dualize(G) Q₂ for orthogonal Q₁, Q₂ (the polar factor of Q₁UΣVᵀQ₂ is Q₁UVᵀQ₂)."""
    s = np.linalg.svd(g, compute_uv=False)
    assume(s[-1] > 1e-3 * s[0])  # a rank cut-off at fp32 round-off level could flip between the two sides
    q1, q2 = _orthogonal(seeds[0], SHAPE[0]), _orthogonal(seeds[1], SHAPE[1])
    norm = norms.spectral(method=method)
    lhs = norm.dualize(f32(q1 @ g @ q2))
    rhs = q1 @ np.asarray(norm.dualize(f32(g)), np.float64) @ q2
    np.testing.assert_allclose(lhs, rhs, atol=1e-4 if method == "svd" else 1e-3)


@PROFILE
@given(g=matrices, b=arrays(np.float64, (4,), elements=grid), w=st.tuples(scales, scales))
def test_weighted_max_norm_identities(g, b, w):
    """‖W‖ = max_l w_l‖W_l‖: dual Σ_l ‖G_l‖*/w_l, dualize per leaf / w_l; ⟨G, dualize(G)⟩ = dual, ‖dualize(G)‖ = 1."""
    assume(np.any(g) or np.any(b))
    tree = {"kernel": f32(g), "bias": f32(b)}
    weighted = norms.weighted_max(
        {"kernel": norms.spectral(method="svd"), "bias": norms.l2()}, {"kernel": w[0], "bias": w[1]}
    )
    d = weighted.dualize(tree)
    dual = float(weighted.dual_norm(tree))
    np.testing.assert_allclose(inner(g, d["kernel"]) + inner(b, d["bias"]), dual, rtol=1e-4)
    np.testing.assert_allclose(float(weighted.norm(d)), 1.0, rtol=1e-4)
