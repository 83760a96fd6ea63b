"""normopt.init: E‖x @ W‖_rms / ‖x‖_rms ≈ 1 (Xavier) and ‖W‖_{RMS→RMS} = 1 (spectral)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import normopt
from normopt.dims import MatrixDims


def rms(a, axis=-1):
    return np.sqrt(np.mean(np.square(a), axis=axis))


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (128, 128)])
def test_xavier_keeps_rms(shape):
    w = np.asarray(normopt.init.xavier()(jax.random.key(0), shape), np.float64)
    x = np.random.default_rng(0).standard_normal((512, shape[0]))
    ratio = np.mean(rms(x @ w) / rms(x))
    assert abs(ratio - 1) < 0.08


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (128, 128)])
def test_spectral_init_has_unit_rms_to_rms_norm(shape):
    fi, fo = shape
    w = np.asarray(normopt.init.spectral()(jax.random.key(1), shape), np.float64)
    sv = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(sv, np.sqrt(fo / fi), rtol=1e-5)  # every singular value: √(fan_out/fan_in)
    np.testing.assert_allclose(float(normopt.norms.rms_to_rms(method="svd").norm(jnp.asarray(w))), 1.0, rtol=1e-5)
    x = np.random.default_rng(0).standard_normal((512, fi))
    ratio = np.mean(rms(x @ w) / rms(x))
    # Random inputs keep their RMS when fan_out ≥ fan_in; otherwise only the row space does (ratio √(fo/fi)).
    np.testing.assert_allclose(ratio, min(1.0, np.sqrt(fo / fi)), rtol=0.08)


@pytest.mark.slow  # many initializer compilations
def test_batched_and_conv_layouts_and_dtype():
    w = normopt.init.spectral()(jax.random.key(2), (3, 16, 8), jnp.bfloat16)
    assert w.shape == (3, 16, 8) and w.dtype == jnp.bfloat16
    for i in range(3):
        sv = np.linalg.svd(np.asarray(w[i], np.float64), compute_uv=False)
        np.testing.assert_allclose(sv, np.sqrt(8 / 16), rtol=1e-2)
    k = normopt.init.xavier(MatrixDims.conv(4))(jax.random.key(3), (3, 3, 8, 16))
    np.testing.assert_allclose(float(jnp.std(k)), 1 / np.sqrt(72), rtol=0.1)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        normopt.init.xavier()(jax.random.key(0), (4,))
