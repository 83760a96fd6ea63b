"""The ready optimizers: muon (incl. the optax.contrib.muon equivalence), scion, steepest_descent."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import polar_factor

import normopt


def params_2d(rng):
    return {
        "a": jnp.asarray(rng.standard_normal((32, 64)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((64, 16)), jnp.float32),
        "c": jnp.asarray(rng.standard_normal(16), jnp.float32),
    }


def test_reproduces_optax_contrib_muon(rng):
    """normopt.muon(lr, method="jordan", scale="jordan") == optax.contrib.muon(lr), matrices and AdamW leaves."""
    params = params_2d(rng)
    ours, theirs = normopt.muon(0.02, method="jordan", scale="jordan"), optax.contrib.muon(0.02)
    s1, s2 = ours.init(params), theirs.init(params)
    step1, step2 = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(4):
        g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
        u1, s1 = step1(g, s1, params)
        u2, s2 = step2(g, s2, params)
        for k in params:
            np.testing.assert_allclose(u1[k], u2[k], rtol=1e-5, atol=1e-5 * float(jnp.abs(u2[k]).max()))


def test_muon_update_is_scaled_polar_factor_of_momentum(rng):
    params = params_2d(rng)
    tx = normopt.muon(0.1, method="svd", beta=0.0)
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    u, _ = tx.update(g, tx.init(params))
    for k, (fi, fo) in {"a": (32, 64), "b": (64, 16)}.items():
        expect = -0.1 * np.sqrt(fo / fi) * polar_factor(np.asarray(g[k], np.float64))
        np.testing.assert_allclose(u[k], expect, rtol=1e-4, atol=1e-6)


def test_muon_handles_scanned_and_conv_leaves_and_falls_back_for_the_rest(rng):
    params = {
        "scan": {"kernel": jnp.ones((3, 8, 4))},
        "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))},
        "Embed_0": {"embedding": jnp.ones((10, 4))},
        "bias": jnp.ones(4),
    }
    rows = {r["path"]: r for r in normopt.describe(params, normopt.muon(0.1), print_fn=None)}
    assert rows["scan/kernel"]["norm"] == "rms_to_rms" and rows["scan/kernel"]["batch_axes"] == "(0,)"
    assert rows["Conv_0/kernel"]["fan_in"] == 18 and rows["Conv_0/kernel"]["fan_out"] == 4
    assert rows["Embed_0/embedding"]["norm"] == "adamw" and rows["bias"]["norm"] == "adamw"
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    u, _ = normopt.muon(1.0, method="svd", beta=0.0).update(g, normopt.muon(1.0).init(params))
    for i in range(3):  # each scanned slice is its own matrix
        np.testing.assert_allclose(
            u["scan"]["kernel"][i],
            -np.sqrt(4 / 8) * polar_factor(np.asarray(g["scan"]["kernel"][i])),
            rtol=1e-4,
            atol=1e-6,
        )
    flat = np.asarray(g["Conv_0"]["kernel"]).reshape(18, 4)
    np.testing.assert_allclose(
        np.asarray(u["Conv_0"]["kernel"]).reshape(18, 4), -np.sqrt(4 / 18) * polar_factor(flat), rtol=1e-4, atol=1e-6
    )


def test_scion_roles_and_radii(rng):
    params = {
        "Embed_0": {"embedding": jnp.ones((10, 8))},
        "Dense_0": {"kernel": jnp.ones((8, 16)), "bias": jnp.ones(16)},
        "head": {"kernel": jnp.ones((16, 4))},
    }
    tx = normopt.scion(0.5, head_radius=3.0, method="svd")
    rows = {r["path"]: r for r in normopt.describe(params, tx, print_fn=None)}
    assert [rows[p]["norm"] for p in ("Embed_0/embedding", "Dense_0/kernel", "Dense_0/bias", "head/kernel")] == [
        "l1_to_rms",
        "rms_to_rms",
        "rms",
        "rms_to_linf",
    ]
    assert rows["head/kernel"]["scale"] == f"{3.0 / 4.0:.4g}"
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    u, _ = tx.update(g, tx.init(params))
    h = np.asarray(g["head"]["kernel"], np.float64)
    np.testing.assert_allclose(u["head"]["kernel"], -0.5 * 3.0 * h / (4 * np.linalg.norm(h, axis=0)), rtol=1e-5)
    e = np.asarray(g["Embed_0"]["embedding"], np.float64)
    np.testing.assert_allclose(
        u["Embed_0"]["embedding"], -0.5 * np.sqrt(8) * e / np.linalg.norm(e, axis=1)[:, None], rtol=1e-5
    )


def test_scion_constrained_is_a_convex_combination(rng):
    """constrained=True: W ← (1 − η)·W − η·ρ·lmo(g)."""
    params = {"Dense_0": {"kernel": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)}}
    g = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)
    tx = normopt.scion(0.1, constrained=True, radius=2.0, method="svd", beta=0.0)
    new = optax.apply_updates(params, tx.update(g, tx.init(params), params)[0])
    w, gw = (np.asarray(t["Dense_0"]["kernel"], np.float64) for t in (params, g))
    np.testing.assert_allclose(new["Dense_0"]["kernel"], 0.9 * w - 0.1 * 2.0 * polar_factor(gw), rtol=1e-4, atol=1e-6)


def test_scion_rule_overrides_and_errors():
    params = {"Dense_0": {"kernel": jnp.ones((8, 16))}, "gain": jnp.ones(4), "steps": jnp.zeros(2, jnp.int32)}
    tx = normopt.scion(0.1, rules={"Dense_0": "head", "gain": "linf"})
    with pytest.raises(TypeError, match="steps.*int32"):
        tx.init(params)
    del params["steps"]
    rows = {r["path"]: r["norm"] for r in normopt.describe(params, tx, print_fn=None)}
    assert rows == {"Dense_0/kernel": "rms_to_linf", "gain": "linf"}
    with pytest.raises(ValueError, match="gain.*unknown norm 'sgn'"):
        normopt.scion(0.1, rules={"gain": "sgn"}).init(params)


@pytest.mark.parametrize(
    "make", [lambda lr: normopt.muon(lr), lambda lr: normopt.scion(lr), lambda lr: normopt.sign_sgd(lr, momentum=0.9)]
)
def test_schedules_and_no_params_needed(make, rng):
    params = params_2d(rng)
    tx = make(optax.linear_schedule(1.0, 0.0, 3))
    s = tx.init(params)
    g = jax.tree.map(jnp.ones_like, params)
    norms_by_step = []
    for _ in range(4):
        u, s = tx.update(g, s)  # weight decay 0: no params needed
        norms_by_step.append(float(optax.tree.norm(u)))
    assert norms_by_step[0] > norms_by_step[1] > norms_by_step[2] > norms_by_step[3] == 0.0


def test_weight_decay_needs_params_and_says_so(rng):
    params = params_2d(rng)
    tx = normopt.muon(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))
