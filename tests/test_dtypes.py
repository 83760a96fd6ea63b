"""dtypes: fp32, bf16 and fp16 parameters (fp64 in a subprocess under jax_enable_x64); updates keep the
parameter's dtype, the state dtype is ``mu_dtype`` (default: the params'), and fp16 does not overflow."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _hardening import (
    ADAMW_FALLBACK,
    FP32_STATE,
    OPTIMIZERS,
    cases,
    grads,
    is_finite,
    optimizer,
    small_params,
    update,
)

from normopt import norms

# The raw transforms compute in ≥ fp32 and return that (the aliases cast back to the gradient's dtype).
PROMOTING = ("momentum", "dualize")
# ‖u_low − u_fp32‖ / ‖u_fp32‖ per leaf: a few units of the dtype's resolution (sign SGD may flip a few tiny entries).
TOLERANCE = {jnp.bfloat16: 0.08, jnp.float16: 0.02}
# FAdam keeps and computes ν = EMA(g²) in the params' dtype (like optax.adam): in fp16 the small squares lose
# precision to subnormals (documented in docs/reliability.md).
FP16_TOLERANCE = {"fadam": 0.1}


def _subset(tree):
    """The kernel, bias and conv kernel of small_params (the stack adds compile time, not a dtype path); every
    optimizer here treats leaves independently, so their updates equal those of the full tree."""
    return {k: tree[k] for k in ("dense", "conv")}


def _float_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def _step(tx):
    return jax.jit(lambda params, state, g: tx.update(g, state, params))


@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_updates_keep_the_parameter_dtype(name):
    tx = optimizer(name)
    reference = None
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        params = small_params(dtype)
        g = jax.tree.map(lambda x, p: x.astype(p.dtype), grads(small_params(), 0), params)
        if dtype == jnp.float32:
            step = update(name)  # the fp32 compilation other tests share, on the full tree
        else:
            step, params, g = _step(tx), _subset(params), _subset(g)
        state = tx.init(params)
        # Default state dtype: the params' (Kronecker factors and Dion's Q are fp32 by design).
        allowed = {jnp.dtype(dtype), jnp.dtype(jnp.float32)} if name in FP32_STATE else {jnp.dtype(dtype)}
        assert {x.dtype for x in _float_leaves(state)} <= allowed
        updates, state = step(params, state, g)
        want = jnp.promote_types(dtype, jnp.float32) if name in PROMOTING else jnp.dtype(dtype)
        assert {x.dtype for x in jax.tree.leaves(updates)} == {want}
        assert {x.dtype for x in _float_leaves(state)} <= allowed
        assert is_finite(updates) and is_finite(state)
        if reference is None:
            reference = _subset(updates)
        else:
            for (path, u), r in zip(
                jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(reference), strict=True
            ):
                u, r = np.asarray(u, np.float64), np.asarray(r, np.float64)
                err = np.linalg.norm(u - r) / np.linalg.norm(r)
                tol = FP16_TOLERANCE.get(name, TOLERANCE[dtype]) if dtype == jnp.float16 else TOLERANCE[dtype]
                assert err < tol, f"{name} {jnp.dtype(dtype).name} {jax.tree_util.keystr(path)}: {err}"
        if dtype == jnp.float16:
            # Entries near the fp16 maximum (65504): momentum and dualization run in fp32 and do not overflow.
            big = jax.tree.map(lambda x: jnp.where(x >= 0, 6e4, -6e4).astype(x.dtype), g)
            updates, _ = step(params, tx.init(params), big)
            if name in ADAMW_FALLBACK:  # optax.scale_by_adam keeps ν = g² in fp16: use mu_dtype (below)
                updates = {k: v for k, v in updates.items() if k != "dense"}
            assert is_finite(updates)


# scion, sign_sgd, … use the same normopt.momentum
@pytest.mark.parametrize("name", cases(["momentum", *ADAMW_FALLBACK]))
def test_state_dtype_option(name):
    """mu_dtype="float32" with fp16 params: the whole state is fp32, updates stay fp16, 6e4 gradients are fine."""
    tx = OPTIMIZERS[name](mu_dtype="float32")
    params = _subset(small_params(jnp.float16))
    state = tx.init(params)
    assert {x.dtype for x in _float_leaves(state)} == {jnp.dtype(jnp.float32)}
    big = jax.tree.map(lambda x: jnp.full_like(x, 6e4), params)
    updates, state = _step(tx)(params, state, big)
    assert {x.dtype for x in _float_leaves(state)} == {jnp.dtype(jnp.float32)}
    want = jnp.float32 if name in PROMOTING else jnp.float16
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(want)}
    assert is_finite(updates) and is_finite(state)


@pytest.mark.parametrize("name", sorted(norms.BY_NAME))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_norms_in_low_precision(name, dtype):
    """dualize returns the input dtype; norm and dual norm are fp32 and match the fp32 computation."""
    norm = norms.get(name)
    g = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16)), dtype)
    d = norm.dualize(g)
    assert d.dtype == dtype
    assert norm.norm(g).dtype == jnp.float32 and norm.dual_norm(g).dtype == jnp.float32
    g32 = g.astype(jnp.float32)
    np.testing.assert_allclose(norm.dual_norm(g), norm.dual_norm(g32), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d, np.float32), norm.dualize(g32), atol=2e-2 * float(jnp.abs(d).max()))


@pytest.mark.slow  # a fresh interpreter with jax_enable_x64
def test_float64_in_a_subprocess():
    """fp64 needs jax_enable_x64, which must be set before jax starts: run the checks in a fresh interpreter."""
    script = pathlib.Path(__file__).with_name("_fp64_check.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fp64 ok" in result.stdout
