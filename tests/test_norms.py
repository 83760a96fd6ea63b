"""normopt.norms against float64 numpy closed forms (REFERENCES §1), brute force, and the duality identities."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references
from references import polar_factor, random_matrix

from normopt import norms
from normopt.dims import MatrixDims

X64 = jax.config.jax_enable_x64
DTYPES = [jnp.float64] if X64 else [jnp.float32, jnp.bfloat16, jnp.float16]
# Relative tolerance of the identities: round-off of the dtype the result is stored in.
RTOL = {jnp.float64: 1e-10, jnp.float32: 2e-5, jnp.bfloat16: 2e-2, jnp.float16: 4e-3}


# ---- float64 references: tests/references.py, written from the table in REFERENCES §1 ---------------------------
EPS = np.finfo(np.float64).eps if X64 else np.finfo(np.float32).eps


def ref(name: str, g: np.ndarray, eps: float = EPS):
    """(norm, dual_norm, dualize) of a 2-D float64 array read as [fan_in, fan_out] (vector norms: all entries).

    Singular values below max(shape)·eps·σ_max (eps of the computation dtype) are round-off and count as zero."""
    return references.closed_forms(name, g, rtol=max(g.shape) * eps)


EXACT = {
    name: (norms.get(name) if name not in ("spectral", "rms_to_rms") else norms.BY_NAME[name](method="svd"))
    for name in norms.BY_NAME
}


def inputs(rng):
    """Random and adversarial 6×4 float64 matrices (values representable in every tested dtype)."""
    g = rng.standard_normal((6, 4))
    u, v = rng.standard_normal(6), rng.standard_normal(4)
    return {
        "random": g,
        "rank1": np.outer(u, v),
        "ill_conditioned": random_matrix(rng, 6, 4, cond=1e4),
        "one_entry": np.eye(6, 4) * 3.0,
        "huge": g * (1e30 if not X64 else 1e150),
        "tiny": g * (1e-30 if not X64 else 1e-150),
    }


def _as(dtype, x):
    if dtype == jnp.float16:  # fp16 cannot hold 1e±30: use its own extremes (largest finite 65504, tiny 6e-8)
        s = np.abs(x).max()
        x = x / s * (1e4 if s > 1e10 else 1e-4 if s < 1e-10 else s)
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_matches_reference_and_identities(name, dtype, rng):
    n = EXACT[name]
    for kind, g64 in inputs(rng).items():
        g = _as(dtype, g64)
        gr = np.asarray(g.astype(jnp.float32), np.float64) if dtype != jnp.float64 else np.asarray(g)
        r_norm, r_dual, r_dir = ref(name, gr)
        d = n.dualize(g)
        assert d.dtype == g.dtype, kind
        assert not np.any(np.isnan(np.asarray(d, np.float64))), kind
        tol = RTOL[dtype] * (10 if kind == "ill_conditioned" else 1)
        np.testing.assert_allclose(float(n.norm(g)), r_norm, rtol=tol, err_msg=kind)
        np.testing.assert_allclose(float(n.dual_norm(g)), r_dual, rtol=tol, err_msg=kind)
        np.testing.assert_allclose(
            np.asarray(d, np.float64), r_dir, rtol=tol, atol=tol * np.abs(r_dir).max(), err_msg=kind
        )
        # Identities on the output: ⟨g, dualize(g)⟩ = ‖g‖*, ‖dualize(g)‖ = 1.
        d64 = np.asarray(d, np.float64)
        np.testing.assert_allclose(np.sum(gr * d64), r_dual, rtol=5 * tol, err_msg=kind)
        np.testing.assert_allclose(ref(name, d64)[0], 1.0, rtol=5 * tol, err_msg=kind)


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_zero_maps_to_zero(name):
    for dtype in DTYPES:
        z = jnp.zeros((5, 3), dtype)
        n = norms.get(name)
        assert np.all(np.asarray(n.dualize(z), np.float64) == 0)
        assert float(n.dual_norm(z)) == 0 and float(n.norm(z)) == 0


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_holder_inequality(name, rng):
    n = EXACT[name]
    for _ in range(5):
        x, y = rng.standard_normal((2, 5, 3))
        lhs = abs(np.sum(x * y))
        assert lhs <= float(n.norm(jnp.asarray(x))) * float(n.dual_norm(jnp.asarray(y))) * (1 + 1e-5)


# ---- brute force over the unit ball -------------------------------------------------------------------------------
def test_brute_force_vertices_linf_l1(rng):
    """linf ball: the max of ⟨g, t⟩ over its 2^n vertices; l1 ball: over ±e_k. dualize attains it."""
    g = rng.standard_normal((2, 3))
    verts = np.array(np.meshgrid(*[[-1, 1]] * 6)).reshape(6, -1).T
    best = verts[np.argmax(verts @ g.ravel())].reshape(2, 3)
    np.testing.assert_allclose(np.asarray(norms.linf().dualize(jnp.asarray(g))), best)
    signed = np.concatenate([np.eye(6), -np.eye(6)])
    best = signed[np.argmax(signed @ g.ravel())].reshape(2, 3)
    np.testing.assert_allclose(np.asarray(norms.l1().dualize(jnp.asarray(g))), best)


def _ball_samples(name, rng, k=3000, shape=(3, 2)):
    """Points on the unit sphere of ``name``, drawn near its extreme points (rows/columns each on their sphere)."""
    t = rng.standard_normal((k, *shape))
    if name == "linf":
        return np.sign(t)
    if name == "sign":  # the max-entry ball of radius 1/d_in
        return np.sign(t) / shape[0]
    if name == "l1_to_rms":
        return t / (np.linalg.norm(t, axis=2, keepdims=True) / np.sqrt(shape[1]))
    if name == "rms_to_linf":
        return t / (np.linalg.norm(t, axis=1, keepdims=True) * np.sqrt(shape[0]))
    if name in ("spectral", "rms_to_rms"):
        t = np.stack([polar_factor(x) for x in t])
    if name == "l1":
        t = t**9  # push samples towards the vertices ±e_k
    return t / np.array([ref(name, x)[0] for x in t])[:, None, None]


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
def test_brute_force_sampled_ball(name, rng):
    """No sampled t on the unit sphere beats ⟨g, dualize(g)⟩, and the best sample comes close to it."""
    g = rng.standard_normal((3, 2))
    values = np.einsum("kij,ij->k", _ball_samples(name, rng), g)
    attained = float(np.sum(g * np.asarray(EXACT[name].dualize(jnp.asarray(g)), np.float64)))
    assert values.max() <= attained * (1 + 1e-5)
    assert values.max() >= 0.9 * attained


def test_spectral_unit_ball_extreme_points(rng):
    """For square G the spectral ball's extreme points are the orthogonal matrices: none beats U Vᵀ."""
    g = rng.standard_normal((4, 4))
    best = max(np.sum(g * np.linalg.qr(rng.standard_normal((4, 4)))[0]) for _ in range(3000))
    attained = float(np.sum(g * np.asarray(EXACT["spectral"].dualize(jnp.asarray(g)), np.float64)))
    assert best <= attained + 1e-5
    np.testing.assert_allclose(attained, np.linalg.svd(g, compute_uv=False).sum(), rtol=1e-5)


# ---- the default (approximate) spectral dualization ----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 64)])
def test_default_spectral_close_to_exact_polar(shape, rng):
    g = random_matrix(rng, *shape, cond=100)
    d = np.asarray(norms.spectral().dualize(jnp.asarray(g, jnp.float32)), np.float64)
    p = polar_factor(g)
    sv = np.linalg.svd(d, compute_uv=False)
    assert np.all(np.abs(sv - 1) < 0.15)  # Polar Express, 5 steps: σ ∈ [1e-3, 1]·σ_max maps within 0.124 of 1
    assert np.linalg.norm(d - p, 2) < 0.15
    np.testing.assert_allclose(np.sum(g * d), np.linalg.svd(g, compute_uv=False).sum(), rtol=0.15)


# ---- dims: batch axes, conv kernels, custom axes -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spectral", "rms_to_rms", "l1_to_rms", "rms_to_linf"])
def test_batch_axes_are_independent_matrices(name, rng):
    n = EXACT[name]
    g = rng.standard_normal((3, 5, 4))
    d = np.asarray(n.dualize(jnp.asarray(g, jnp.float32)))
    for i in range(3):
        np.testing.assert_allclose(d[i], ref(name, g[i])[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(n.norm(jnp.asarray(g))), max(ref(name, gi)[0] for gi in g), rtol=1e-5)
    np.testing.assert_allclose(float(n.dual_norm(jnp.asarray(g))), sum(ref(name, gi)[1] for gi in g), rtol=1e-5)


def test_conv_kernel_is_flattened(rng):
    k = rng.standard_normal((3, 3, 4, 8))
    n = norms.rms_to_rms(MatrixDims.conv(4), method="svd")
    d = np.asarray(n.dualize(jnp.asarray(k, jnp.float32)))
    np.testing.assert_allclose(d.reshape(36, 8), ref("rms_to_rms", k.reshape(36, 8))[2], rtol=1e-4, atol=1e-5)
    assert n.describe(k.shape)["fan_in"] == 36


def test_custom_dims_read_transposed_layout(rng):
    """A PyTorch-style [out, in] kernel with dims (fan_in=1, fan_out=0) equals the Flax reading of its transpose."""
    w = rng.standard_normal((5, 3))
    torch_style = norms.rms_to_linf(MatrixDims(fan_in=1, fan_out=0))
    np.testing.assert_allclose(np.asarray(torch_style.dualize(jnp.asarray(w))).T, ref("rms_to_linf", w.T)[2], rtol=1e-5)


# ---- the weighted max norm over a tree ------------------------------------------------------------------------------
def test_weighted_max_norm(rng):
    tree = {"w": jnp.asarray(rng.standard_normal((4, 3))), "b": jnp.asarray(rng.standard_normal(3))}
    spec = {"w": norms.rms_to_rms(method="svd"), "b": norms.rms()}
    wm = norms.weighted_max(spec, {"w": 2.0, "b": 0.5})
    rw, rb = ref("rms_to_rms", np.asarray(tree["w"])), ref("rms", np.asarray(tree["b"])[None])
    np.testing.assert_allclose(float(wm.norm(tree)), max(2 * rw[0], 0.5 * rb[0]), rtol=1e-5)
    np.testing.assert_allclose(float(wm.dual_norm(tree)), rw[1] / 2 + rb[1] / 0.5, rtol=1e-5)
    d = wm.dualize(tree)
    np.testing.assert_allclose(np.asarray(d["w"]), rw[2] / 2, rtol=1e-5)
    np.testing.assert_allclose(float(wm.norm(d)), 1.0, rtol=1e-5)
    inner = sum(float(jnp.vdot(tree[k], d[k])) for k in tree)
    np.testing.assert_allclose(inner, float(wm.dual_norm(tree)), rtol=1e-5)


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown norm 'frobenius'.*l1_to_rms"):
        norms.get("frobenius")
    with pytest.raises(ValueError, match="params/bias.*at least 2 dimensions"):
        norms.resolve(norms.spectral(), {"params": {"bias": jnp.zeros(3)}})
    with pytest.raises(TypeError, match="step.*int32.*not floating point"):
        norms.resolve(norms.l2(), {"step": jnp.zeros(3, jnp.int32)})
    with pytest.raises(ValueError, match="does not match the parameter tree"):
        norms.resolve({"a": norms.l2(), "c": norms.l2()}, {"a": jnp.zeros(3), "b": jnp.zeros(3)})
    with pytest.raises(ValueError, match="unknown scale rule"):
        norms.spectral(scale="muon")
    with pytest.raises(ValueError, match="out of range"):
        norms.resolve(norms.spectral(MatrixDims(fan_in=0, fan_out=5)), {"w": jnp.zeros((3, 3))})


@pytest.mark.slow  # compiles every norm under jit and vmap
def test_jit_and_vmap():
    g = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 4)), jnp.float32)
    for name in norms.BY_NAME:
        n = norms.get(name)
        np.testing.assert_allclose(jax.jit(n.dualize)(g[0]), n.dualize(g[0]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(jax.vmap(n.dualize)(g)[1], n.dualize(g[1]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a fresh interpreter with jax_enable_x64
@pytest.mark.skipif(X64, reason="this test launches the float64 run")
def test_float64_in_subprocess():
    """The reference and identity tests again with jax_enable_x64 (float64 arrays, 1e-10 tolerances)."""
    env = dict(os.environ, JAX_ENABLE_X64="1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            "reference or zero or weighted or holder",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
