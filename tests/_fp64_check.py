"""fp64 checks, run by tests/test_dtypes.py in a fresh interpreter (jax_enable_x64 must be set before jax starts).

Every optimizer keeps fp64 parameters in fp64 (updates and state) and the norms compute in fp64: the exact
spectral dualization matches numpy's SVD polar factor to 1e-12, the default (Polar Express) one is computed in
fp64, and the identities ⟨g, dualize(g)⟩ = ‖g‖* and ‖dualize(g)‖ = 1 hold to 1e-12 for the exact norms.
Prints "fp64 ok" on success; any failure raises.
"""

import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _hardening import FP32_STATE, OPTIMIZERS, grads, is_finite, small_params  # noqa: E402
from references import polar_factor  # noqa: E402

from normopt import norms  # noqa: E402


def main() -> None:
    params = small_params(jnp.float64)["dense"]  # a kernel and a bias: fewer shapes, faster compiles
    for name, factory in OPTIMIZERS.items():
        tx = factory()
        updates, state = jax.jit(tx.update)(grads(params, 0), tx.init(params), params)
        assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float64)}, name
        dtypes = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
        allowed = {jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)} if name in FP32_STATE else {jnp.dtype(jnp.float64)}
        assert dtypes <= allowed, (name, dtypes)
        assert is_finite(updates), name

    g = np.random.default_rng(0).standard_normal((8, 16))
    exact = norms.spectral(method="svd").dualize(jnp.asarray(g))
    assert exact.dtype == jnp.float64
    np.testing.assert_allclose(exact, polar_factor(g), atol=1e-12)
    default = norms.spectral().dualize(jnp.asarray(g))
    assert default.dtype == jnp.float64
    # Polar Express (5 steps) maps every singular value into [0.84, 1.124] (REFERENCES §2, with safety 1.01).
    sv = np.linalg.svd(np.asarray(default), compute_uv=False)
    assert 0.84 <= sv.min() and sv.max() <= 1.124, sv

    exact_norms = [norms.get(n) for n in ("l2", "rms", "linf", "l1", "l1_to_rms", "rms_to_linf")]
    exact_norms += [norms.spectral(method="svd"), norms.rms_to_rms(method="svd")]
    for norm in exact_norms:
        d = norm.dualize(jnp.asarray(g))
        assert d.dtype == jnp.float64 and norm.dual_norm(jnp.asarray(g)).dtype == jnp.float64
        np.testing.assert_allclose(jnp.sum(g * d), norm.dual_norm(jnp.asarray(g)), rtol=1e-12, err_msg=norm.name)
        np.testing.assert_allclose(norm.norm(d), 1.0, rtol=1e-12, err_msg=norm.name)
    print("fp64 ok")


if __name__ == "__main__":
    main()
