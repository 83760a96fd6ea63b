"""Tests for normopt.polar against independent references: the exact SVD polar factor (numpy float64), optax's
Newton–Schulz, and the published constants of REFERENCES.md §2."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from references import POLAR_EXPRESS_PUBLISHED, polar_factor, spectrum_matrix
from references import relative_error as rel_err

from normopt import polar
from normopt.polar import orthogonalize, polar_express_coefficients

# Published Polar Express table (REFERENCES §2: ℓ = 1e-3, degree 5, cushion 0.02407327424182761).
PUBLISHED = POLAR_EXPRESS_PUBLISHED
JORDAN = (3.4445, -4.7750, 2.0315)
ITERATIVE = ["polar_express", "gram_newton_schulz", "jordan", "you", "newton_schulz", "newton_schulz_quintic"]


def optax_jordan(x):
    """optax's 5-step Newton–Schulz with Jordan's coefficients, through its public API: scale_by_muon without
    momentum (β = 0, no Nesterov, so no bias correction either) returns the orthogonalized gradient itself."""
    tx = optax.contrib.scale_by_muon(ns_coeffs=JORDAN, ns_steps=5, beta=0.0, nesterov=False)
    return tx.update(x, tx.init(x))[0]


# ------------------------------------------------------------------------------------------------ coefficients
def test_generator_regenerates_published_table():
    table = polar_express_coefficients(8, lower=1e-3, safety=1.0)
    assert table.shape == (8, 3)
    np.testing.assert_allclose(table[:7], PUBLISHED, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(table[7], (15 / 8, -10 / 8, 3 / 8))
    np.testing.assert_allclose(polar.POLAR_EXPRESS_TABLE[:7], PUBLISHED, rtol=0, atol=0)


def test_generator_safety_and_options():
    plain, safe = polar_express_coefficients(10, safety=1.0), polar_express_coefficients(10, safety=1.01)
    np.testing.assert_allclose(safe[:-1], plain[:-1] / 1.01 ** np.array([1, 3, 5]), rtol=1e-14)
    np.testing.assert_array_equal(safe[-1], plain[-1])
    np.testing.assert_allclose(polar.COEFFICIENTS["polar_express"], polar_express_coefficients(8), atol=1e-9)
    cubic = polar_express_coefficients(20, degree=3, safety=1.0)
    assert np.all(cubic[:, 2] == 0) and np.allclose(cubic[-1], (1.5, -0.5, 0))
    # Each greedy row is the minimax polynomial: the composed map improves monotonically on [ℓ, 1].
    s = np.geomspace(1e-3, 1, 2001)
    errs = []
    for a, b, c in polar_express_coefficients(6, safety=1.0):
        s = a * s + b * s**3 + c * s**5
        errs.append(np.abs(s - 1).max())
    assert np.all(np.diff(errs) < 0) and errs[4] < 0.125 and errs[5] < 2e-3  # REFERENCES: 0.124, 1.2e-3
    for bad in ({"degree": 7}, {"lower": 0.0}, {"safety": 0.9}, {"steps": 0}):
        with pytest.raises(ValueError):
            polar_express_coefficients(**bad)


def test_default_steps():
    assert polar.default_steps("polar_express") == 5 and polar.default_steps("jordan") == 5
    assert polar.default_steps("svd") is None and polar.default_steps(np.zeros((3, 3))) == 3


# ---------------------------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (32, 128)])
def test_default_accuracy_on_log_spaced_spectra(shape):
    """Each singular value σ ↦ uᵢᵀ O vᵢ. Five safe (s = 1.01) Polar Express steps cannot reach 0.15 at exactly
    σ = 1e-3·σ_max (even with σ_max known exactly the composed map gives 0.846 there), so the 0.15 band is checked
    from 2e-3·σ_max up and the whole [1e-3, 1]·σ_max range within 0.25; Jordan's 5 steps do far worse."""
    x, u, v, s = spectrum_matrix(np.random.default_rng(0), *shape)
    out = np.asarray(orthogonalize(jnp.asarray(x, jnp.float32)), np.float64)
    mapped = np.einsum("mi,mn,ni->i", u, out, v)
    assert np.abs(mapped[s >= 2e-3] - 1).max() < 0.15
    assert np.abs(mapped - 1).max() < 0.25
    sv = np.linalg.svd(out, compute_uv=False)
    assert np.abs(sv - 1).max() < 0.25
    jordan = orthogonalize(jnp.asarray(x, jnp.float32), "jordan")
    assert rel_err(out, u @ v.T) < 0.6 * rel_err(jordan, u @ v.T)


def test_more_steps_converge():
    x, u, v, _ = spectrum_matrix(np.random.default_rng(1), 48, 40)
    out = orthogonalize(jnp.asarray(x, jnp.float32), steps=10)  # rows 9, 10 repeat the Padé row
    assert rel_err(out, u @ v.T) < 1e-4
    np.testing.assert_allclose(orthogonalize(jnp.asarray(x), "svd"), u @ v.T, atol=1e-5)


@pytest.mark.parametrize("method", ["polar_express", "gram_newton_schulz"])
def test_bfloat16_compute_is_bounded(method):
    rng = np.random.default_rng(2)
    inputs = [
        spectrum_matrix(rng, 64, 64)[0],
        spectrum_matrix(rng, 32, 128, lo=1e-5)[0],
        np.linalg.qr(rng.standard_normal((64, 64)))[0],  # all σ equal: tightening puts them at 1/1.01
        np.outer(rng.standard_normal(48), rng.standard_normal(80)),
        1e4 * rng.standard_normal((40, 56)),
    ]
    for x in inputs:
        out = orthogonalize(jnp.asarray(x, jnp.float32), method, compute_dtype="bfloat16")
        assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
        assert np.linalg.svd(np.asarray(out, np.float64), compute_uv=False).max() < 1.2


def test_gram_newton_schulz_matches_standard_iteration():
    for shape in [(64, 64), (40, 40)]:  # square: "polar_express" runs standard NS with the same polynomial
        x = jnp.asarray(spectrum_matrix(np.random.default_rng(3), *shape)[0], jnp.float32)
        standard, gram = orthogonalize(x), orthogonalize(x, "gram_newton_schulz")
        assert float(jnp.abs(gram - standard).max()) < 2e-5
    assert float(jnp.abs(gram - standard).max()) > 0  # really a different code path


@pytest.mark.parametrize("shape", [(32, 32), (48, 24), (24, 48)])
def test_jordan_reproduces_optax(shape):
    x = jax.random.normal(jax.random.key(0), shape)
    expected = optax_jordan(x)
    # optax jitted vs eager differ by 5e-7 themselves (1-ulp changes amplified ~3.4⁵ by the iteration).
    assert float(jnp.abs(orthogonalize(x, "jordan") - expected).max()) <= 1.5e-6


# ------------------------------------------------------------------------------------------------ shapes, dtypes
@pytest.mark.slow  # every method on a batch
def test_batch_axes_are_independent_slices():
    assert bool(jnp.all(orthogonalize(jnp.zeros((3, 2, 16, 8))) == 0))
    x = jax.random.normal(jax.random.key(1), (3, 2, 16, 8))
    for method in ["polar_express", "svd"]:
        out = orthogonalize(x, method)
        per_slice = jnp.stack([orthogonalize(x[i, j], method) for i in range(3) for j in range(2)])
        np.testing.assert_allclose(out.reshape(6, 16, 8), per_slice, atol=2e-6)
    x = jax.random.normal(jax.random.key(1), (2, 72, 64))  # large slices run one at a time (lax.map)
    np.testing.assert_allclose(orthogonalize(x), jnp.stack([orthogonalize(x[0]), orthogonalize(x[1])]), atol=2e-6)


@pytest.mark.parametrize("method", ["polar_express", "jordan", "svd"])
def test_transpose_symmetry(method):
    x = jax.random.normal(jax.random.key(2), (24, 56))
    np.testing.assert_allclose(orthogonalize(x.T, method), orthogonalize(x, method).T, atol=2e-6)


@pytest.mark.parametrize("method", [*ITERATIVE, "svd"])
def test_zero_and_rank_one(method):
    assert bool(jnp.all(orthogonalize(jnp.zeros((12, 20)), method) == 0))
    rng = np.random.default_rng(4)
    u, v = rng.standard_normal(12), rng.standard_normal(20)
    out = np.asarray(orthogonalize(jnp.asarray(3.0 * np.outer(u, v), jnp.float32), method), np.float64)
    assert np.all(np.isfinite(out))
    uv = np.outer(u, v) / np.linalg.norm(u) / np.linalg.norm(v)
    scale = np.sum(out * uv)  # out = scale · u vᵀ, with scale the image of the one singular value
    np.testing.assert_allclose(out, scale * uv, atol=1e-4)
    # 5 Polar Express steps equioscillate: |σ − 1| ≤ 0.124 everywhere on [ℓ, 1], including at σ_max.
    assert abs(scale - 1) < (0.35 if method in ("jordan", "newton_schulz") else 0.13)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_dtype_is_kept(dtype):
    x, u, v, _ = spectrum_matrix(np.random.default_rng(5), 32, 24, lo=0.1)
    out = orthogonalize(jnp.asarray(x, dtype), steps=8)
    assert out.dtype == dtype and out.shape == (32, 24)
    assert rel_err(out, u @ v.T) < (1e-5 if dtype == jnp.float32 else 1e-2)


def test_float64_input_iterates_in_float64():
    with jax.enable_x64(True):
        x, u, v, _ = spectrum_matrix(np.random.default_rng(6), 32, 24)
        out = orthogonalize(jnp.asarray(x), steps=10)
        assert out.dtype == jnp.float64 and rel_err(out, u @ v.T) < 1e-9


def test_coefficient_table_argument():
    x = jax.random.normal(jax.random.key(3), (20, 30))
    you = polar.COEFFICIENTS["you"]
    np.testing.assert_array_equal(orthogonalize(x, you.tolist()), orthogonalize(x, "you"))
    np.testing.assert_array_equal(orthogonalize(x, you, steps=3), orthogonalize(x, you[:3]))
    np.testing.assert_allclose(orthogonalize(x, "you", steps=6), orthogonalize(x, polar.COEFFICIENTS["you6"]))
    cubic = orthogonalize(x, [(1.5, -0.5, 0.0)] * 4)
    np.testing.assert_allclose(cubic, orthogonalize(x, "newton_schulz", steps=4), atol=1e-6)


def test_errors():
    x = jnp.ones((4, 6))
    with pytest.raises(ValueError, match="polar_express.*jordan.*svd"):
        orthogonalize(x, "muon")
    with pytest.raises(ValueError, match="shape"):
        orthogonalize(x, np.ones((3, 2)))
    with pytest.raises(ValueError, match="steps"):
        orthogonalize(x, "you", steps=7)  # 5-row table: too many steps (optax has this check inverted)
    with pytest.raises(ValueError, match="steps"):
        orthogonalize(x, np.ones((2, 3)), steps=3)
    with pytest.raises(ValueError):
        orthogonalize(jnp.ones(5))
    with pytest.raises(TypeError, match="static_args"):
        jax.jit(lambda x, k: orthogonalize(x, steps=k))(x, 5)


def test_compiled_once_per_shape():
    x = jax.random.normal(jax.random.key(4), (3, 16, 24))
    orthogonalize(x)
    before = polar._orthogonalize._cache_size()
    for k in range(3):
        orthogonalize(x + k)
    assert polar._orthogonalize._cache_size() == before


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([(6, 6), (9, 4), (3, 10)]), st.integers(0, 2**31 - 1))
def test_orthogonal_equivariance(shape, seed):
    """orth(Q₁ X Q₂) = Q₁ orth(X) Q₂ for orthogonal Q₁, Q₂ (the polar factor is equivariant)."""
    rng = np.random.default_rng(seed)
    (m, n), x = shape, rng.standard_normal(shape)
    q1, q2 = np.linalg.qr(rng.standard_normal((m, m)))[0], np.linalg.qr(rng.standard_normal((n, n)))[0]
    left = orthogonalize(jnp.asarray(q1 @ x @ q2, jnp.float32))
    right = q1 @ np.asarray(orthogonalize(jnp.asarray(x, jnp.float32)), np.float64) @ q2
    np.testing.assert_allclose(left, right, atol=5e-5)


@pytest.mark.slow  # benchmark smoke test: compiles and times every candidate
def test_benchmark_smoke():
    """benchmarks/kernels.py runs, and the accuracy it reports is the one of REFERENCES §2: normopt's Jordan
    iteration is optax's (same σ-err), Polar Express lands within its guaranteed band and beats both."""
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("kernels_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {r["method"]: r for r in module.run_shape((32, 48), ["polar_express", "jordan"], repeats=1)}
    assert set(rows) == {"polar_express", "jordan", "optax_jordan", "optax_jordan_table", "gemm"}
    assert rows["optax_jordan"]["vs_optax"] == 1.0 and rows["gemm"]["gemm_fraction"] == 1.0
    assert rows["jordan"]["max_sigma_err"] == pytest.approx(rows["optax_jordan"]["max_sigma_err"], abs=1e-4)
    assert rows["optax_jordan_table"]["max_sigma_err"] == pytest.approx(rows["optax_jordan"]["max_sigma_err"], abs=1e-4)
    assert rows["polar_express"]["max_sigma_err"] < 0.25  # 5 safe PE steps: σ ∈ [1e-3, 1]·σ_max ↦ within 0.25 of 1
    assert rows["polar_express"]["max_sigma_err"] < rows["optax_jordan"]["max_sigma_err"]
    assert rows["polar_express"]["rel_fro_err"] < rows["optax_jordan"]["rel_fro_err"]


# ------------------------------------------------------------------------------------- turbo (AOL preconditioning)
def aol_rescaled(x):
    """float64 reference: D X on the short side, D = diag(Σⱼ|Aᵢⱼ|)^(−1/2), A = X Xᵀ (Prach & Lampert 2022)."""
    tall = x.shape[0] > x.shape[1]
    y = x.T if tall else x
    rows = np.abs(y @ y.T).sum(axis=1)
    d = np.where(rows > 0, 1 / np.sqrt(np.where(rows > 0, rows, 1)), 0)
    y = d[:, None] * y
    return y.T if tall else y


def turbo_reference(x, steps):
    """float64 reference of what "turbo" computes: U p(α·Σ) Vᵀ for D X = U Σ Vᵀ, p = ``steps`` rows of the
    ℓ = 3e-3 Polar Express schedule, α = 1/(1.01·min(1, ‖D X‖_S8)) (AOL guarantees σ_max(D X) ≤ 1)."""
    u, s, vt = np.linalg.svd(aol_rescaled(x), full_matrices=False)
    assert s.max() <= 1 + 1e-12  # the AOL bound itself
    s8 = np.sum(s**8) ** 0.125
    s = s / (1.01 * min(1.0, s8)) if s8 > 0 else s
    for a, b, c in polar_express_coefficients(8, lower=3e-3)[:steps]:
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vt


def row_scaled(rng, m, n, spread=1.0, lo=1e-2):
    return np.exp(rng.normal(0, spread, m))[:, None] * spectrum_matrix(rng, m, n, lo=lo)[0]


def test_turbo_defaults():
    assert polar.default_steps("turbo") == 4 and "turbo" in polar.METHODS
    polar.check_kernel("turbo", 7, None)  # repeats its last row (the Padé quintic)
    np.testing.assert_allclose(polar.COEFFICIENTS["turbo"][-1], (15 / 8, -10 / 8, 3 / 8), atol=1e-6)


@pytest.mark.parametrize("shape", [(48, 40), (40, 64)])
def test_turbo_is_polar_express_on_aol_rescaled_input(shape):
    """Log-spaced spectra (cond 100), rows rescaled by e^N(0,1): the output is U p(αΣ) Vᵀ of D X exactly (the
    reference composes the scalar polynomials), and with 8 steps it converges to polar(D X) — not to polar(X)."""
    x = row_scaled(np.random.default_rng(7), *shape)
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(orthogonalize(xj, "turbo"), turbo_reference(x, 4), atol=2e-4)
    out8 = np.asarray(orthogonalize(xj, "turbo", steps=8), np.float64)
    target, exact = polar_factor(aol_rescaled(x)), polar_factor(x)
    assert rel_err(out8, target) < 1e-4
    gap = rel_err(target, exact)  # the direction AOL changes: a real difference on row-scaled inputs
    assert gap > 0.05 and rel_err(out8, exact) == pytest.approx(gap, abs=1e-4)


def test_turbo_on_the_benchmark_spectrum():
    """σ log-spaced in [1e-3, 1] with random singular vectors (the benchmark's family): D barely changes the
    spectrum, so 4 steps are the 4-step map of the reference and are measurably *less* accurate than the 5-step
    default (the issue's target is not reachable here: 4 optimal quintic steps cannot match 5 on [1e-3, 1])."""
    x, u, v, _ = spectrum_matrix(np.random.default_rng(8), 64, 64)
    xj, exact = jnp.asarray(x, jnp.float32), u @ v.T
    out = np.asarray(orthogonalize(xj, "turbo"), np.float64)
    reference = turbo_reference(x, 4)
    np.testing.assert_allclose(out, reference, atol=2e-4)
    sv = np.linalg.svd(reference, compute_uv=False)
    np.testing.assert_allclose(np.linalg.svd(out, compute_uv=False), sv, atol=2e-4)
    assert rel_err(out, exact) == pytest.approx(rel_err(reference, exact), abs=1e-4)
    default = np.asarray(orthogonalize(xj), np.float64)
    assert rel_err(out, exact) > 2 * rel_err(default, exact)
    assert np.abs(sv - 1).max() > np.abs(np.linalg.svd(default, compute_uv=False) - 1).max()


def test_turbo_zero_rank_one_and_nan():
    x = np.zeros((12, 20))
    assert bool(jnp.all(orthogonalize(jnp.asarray(x, jnp.float32), "turbo") == 0))
    x[:4] = np.random.default_rng(9).standard_normal((4, 20))  # zero rows: D is 0 there, no NaN
    out = np.asarray(orthogonalize(jnp.asarray(x, jnp.float32), "turbo"), np.float64)
    assert np.all(np.isfinite(out)) and np.all(out[4:] == 0)
    rng = np.random.default_rng(10)
    u, v = rng.standard_normal(12), rng.standard_normal(20)
    x = 3.0 * np.outer(u, v)
    out = np.asarray(orthogonalize(jnp.asarray(x, jnp.float32), "turbo"), np.float64)
    target = polar_factor(aol_rescaled(x))  # (D u)vᵀ/(‖D u‖‖v‖): same v, direction of u rescaled
    scale = np.sum(out * target)
    np.testing.assert_allclose(out, scale * target, atol=1e-4)
    sigma = 1 / 1.01  # one σ: the Schatten-8 bound is exact, σ starts at 1/1.01 ...
    for a, b, c in polar_express_coefficients(8, lower=3e-3)[:4]:
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    assert scale == pytest.approx(sigma, abs=1e-4) and abs(sigma - 1) < 0.2  # ... and ends at the top of the band
    np.testing.assert_allclose(out, turbo_reference(x, 4), atol=1e-4)
    assert bool(jnp.all(jnp.isnan(orthogonalize(jnp.full((12, 20), jnp.nan), "turbo"))))


def test_turbo_batched_and_low_precision():
    rng = np.random.default_rng(11)
    x = np.stack([row_scaled(rng, 40, 64) for _ in range(3)])  # aspect 1.6: the Gram-NS route
    out = orthogonalize(jnp.asarray(x, jnp.float32), "turbo")
    per_slice = [orthogonalize(jnp.asarray(s, jnp.float32), "turbo") for s in x]
    np.testing.assert_allclose(out, jnp.stack(per_slice), atol=2e-6)
    inputs = (x[0], 1e4 * rng.standard_normal((40, 64)), row_scaled(rng, 40, 64, spread=2.0))
    for xs in inputs:
        low = orthogonalize(jnp.asarray(xs, jnp.bfloat16), "turbo")
        assert low.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(low)))
        low64, reference = np.asarray(low, np.float64), turbo_reference(xs, 4)
        top = np.linalg.svd(reference, compute_uv=False).max()  # the 4-step map's band reaches ≈ 1.19
        assert np.linalg.svd(low64, compute_uv=False).max() < top + 0.05
        assert rel_err(low64, reference) < 0.05
    half = orthogonalize(jnp.asarray(x[0], jnp.float16), "turbo")  # fp16: AOL without Schatten-8
    assert half.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(half)))
