"""QK-Clip (Kimi K2, arXiv:2507.20534, §2.1): the logits are recomputed by a float64 numpy attention after the step.

Every check feeds a real Flax attention (NNX and linen, MHA and GQA) or an MLA-style parameter set whose query
kernels are scaled up so some heads exceed τ, and verifies against numpy: clipped heads land on τ, the others are
bit-for-bit unchanged, and the attention function records the same max logits numpy computes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx

import normopt
from normopt.family.qk_clip import QKHeads, max_logit_attention, max_logits, muon_clip, qk_clip

TAU = 10.0
B, T, D_IN, H, DH = 2, 5, 8, 4, 4


def np_logits(x, wq, wk, bq=None, bk=None):
    """Pre-softmax logits [H, B, T, T] of a Flax multi-head attention (kernels [in, heads, dh]), float64; a key
    head serves H / H_k consecutive query heads, as Flax groups them."""
    x, wq, wk = (np.asarray(a, np.float64) for a in (x, wq, wk))
    q = np.einsum("bti,ihd->bthd", x, wq) + (0 if bq is None else np.asarray(bq, np.float64))
    k = np.einsum("bti,ihd->bthd", x, wk) + (0 if bk is None else np.asarray(bk, np.float64))
    k = np.repeat(k, wq.shape[1] // wk.shape[1], axis=2)
    return np.einsum("bqhd,bkhd->hbqk", q, k) / np.sqrt(wq.shape[-1])


def np_max(logits):
    return logits.reshape(logits.shape[0], -1).max(axis=1)


def boost(kernel, heads, factor):
    """``kernel`` [in, heads, dh] with the listed heads multiplied by ``factor`` (pushes their logits above τ)."""
    kernel = np.array(kernel)
    kernel[:, heads] *= factor
    return jnp.asarray(kernel)


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).standard_normal((B, T, D_IN)), jnp.float32)


def fill(tree, seed=1):
    """Random float32 values (numpy RNG: no jax.random compile) for a tree of shapes: N(0, 1/fan-in) kernels."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape) / np.sqrt(D_IN), jnp.float32), tree)


def nnx_attention(num_kv_heads=None):
    """A real nnx.MultiHeadAttention (built abstractly, filled from numpy), heads 0 and 2 pushed above τ."""
    attn = nnx.eval_shape(
        lambda: nnx.MultiHeadAttention(
            H, D_IN, H * DH, num_kv_heads=num_kv_heads, attention_fn=max_logit_attention, decode=False,
            rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    nnx.update(attn, fill(nnx.state(attn, nnx.Param)))
    attn.query.kernel.set_value(boost(attn.query.kernel.get_value(), [0, 2], 20.0))
    return attn


def record(attn, x):
    _, inter = nnx.capture(lambda m, x: m(x, sow_weights=True), nnx.Intermediate)(attn, x)
    return max_logits(inter)


@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_nnx_attention_clipped_to_tau_and_others_untouched(x, num_kv_heads):
    """Zero gradients: after one step the recomputed max logit of each clipped head is τ (the weights shrink by
    √γ, or γ on W_q when the key head is shared), every head below τ is unchanged bit for bit."""
    attn = nnx_attention(num_kv_heads)
    p = {k: v.get_value() for k, v in nnx.state(attn, nnx.Param).flat_state()}
    logits = np_logits(x, p[("query", "kernel")], p[("key", "kernel")], p[("query", "bias")], p[("key", "bias")])
    s = np_max(logits)
    assert (s[[0, 2]] > TAU).all() and (s[[1, 3]] < TAU).all()
    rec = record(attn, x)
    assert list(rec) == [""]
    np.testing.assert_allclose(rec[""], s, rtol=1e-5)

    params = nnx.state(attn, nnx.Param)
    tx = optax.chain(optax.sgd(0.1), qk_clip(TAU))
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params, max_logits=rec)
    new = optax.apply_updates(params, u)
    q = {k: v.get_value() for k, v in new.flat_state()}
    after = np_logits(x, q[("query", "kernel")], q[("key", "kernel")], q[("query", "bias")], q[("key", "bias")])
    np.testing.assert_allclose(np_max(after)[[0, 2]], TAU, rtol=1e-5)
    np.testing.assert_array_equal(after[[1, 3]], logits[[1, 3]])
    for name in ("query", "key"):
        for leaf in ("kernel", "bias"):
            old, now = np.asarray(p[(name, leaf)]), np.asarray(q[(name, leaf)])
            kept = [1, 3] if name == "query" or num_kv_heads is None else slice(None)  # shared keys stay
            np.testing.assert_array_equal(now[..., kept, :], old[..., kept, :])


def test_nnx_step_is_scaled_sgd_step(x, rng):
    """Nonzero gradients: the new weights are s·(W − η·g) per head (s = √(τ/S) on clipped heads, exactly W − η·g
    on the others), so the recomputed logits are γ·(the logits of the plain SGD step), under jit."""
    attn = nnx_attention()
    params = nnx.state(attn, nnx.Param)
    grads = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
    rec = record(attn, x)
    tx = optax.chain(optax.sgd(0.01), qk_clip(TAU))
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params, max_logits=rec)
    new = {k: np.asarray(v.get_value(), np.float64) for k, v in optax.apply_updates(params, u).flat_state()}
    old = {k: np.asarray(v.get_value(), np.float64) for k, v in params.flat_state()}
    g = {k: np.asarray(v.get_value(), np.float64) for k, v in grads.flat_state()}
    plain_sgd = optax.apply_updates(params, jax.tree.map(lambda a: -0.01 * a, grads))  # the step without the clip
    plain_sgd = {k: np.asarray(v.get_value()) for k, v in plain_sgd.flat_state()}
    s = np.asarray(rec[""], np.float64)
    scale = np.where(s > TAU, np.sqrt(TAU / s), 1.0)
    for k in old:
        sgd = old[k] - 0.01 * g[k]
        if k[0] in ("query", "key"):
            expected = sgd * scale[:, None]
            np.testing.assert_allclose(new[k], expected, rtol=2e-6, atol=1e-7)
            np.testing.assert_array_equal(new[k][..., [1, 3], :], plain_sgd[k][..., [1, 3], :])
        else:
            np.testing.assert_allclose(new[k], sgd, rtol=1e-6, atol=1e-7)
    plain = np_logits(x, *(old[(n, "kernel")] - 0.01 * g[(n, "kernel")] for n in ("query", "key")))
    after = np_logits(x, new[("query", "kernel")], new[("key", "kernel")])
    gamma = (scale**2)[:, None, None, None]
    np.testing.assert_allclose(after, gamma * plain, rtol=1e-4, atol=1e-5)


def test_linen_attention_records_and_clips(x):
    """linen.MultiHeadDotProductAttention with ``attention_fn=max_logit_attention``: the record (sown into
    ``intermediates``) matches numpy, its output matches Flax's own attention, and the clip lands on τ (jit)."""
    mha = linen.MultiHeadDotProductAttention(num_heads=H, qkv_features=H * DH, attention_fn=max_logit_attention)
    params = fill(jax.eval_shape(mha.init, jax.random.key(0), x)["params"])
    params["query"]["kernel"] = boost(params["query"]["kernel"], [1], 8.0)
    out, inter = mha.apply({"params": params}, x, sow_weights=True, mutable=["intermediates"])
    reference = linen.MultiHeadDotProductAttention(num_heads=H, qkv_features=H * DH).apply({"params": params}, x)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    rec = max_logits(inter)
    pq, pk = params["query"], params["key"]
    logits = np_logits(x, pq["kernel"], pk["kernel"], pq["bias"], pk["bias"])
    np.testing.assert_allclose(rec[""], np_max(logits), rtol=1e-5)
    assert np_max(logits)[1] > TAU and (np.delete(np_max(logits), 1) < TAU).all()

    tx = optax.chain(optax.sgd(0.1), qk_clip(TAU))
    u, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params, max_logits=rec)
    new = optax.apply_updates(params, u)
    nq, nk = new["query"], new["key"]
    after = np_logits(x, nq["kernel"], nk["kernel"], nq["bias"], nk["bias"])
    np.testing.assert_allclose(np_max(after)[1], TAU, rtol=1e-5)
    np.testing.assert_array_equal(np.delete(after, 1, axis=0), np.delete(logits, 1, axis=0))
    np.testing.assert_array_equal(new["value"]["kernel"], params["value"]["kernel"])


def test_attention_function_matches_flax(rng):
    """Outputs equal flax.nnx.dot_product_attention with a mask, causal masking, a bias, GQA and dropout (same
    key: Flax's non-fused path draws the same Bernoulli mask); the record excludes masked positions."""
    q, k, v = (jnp.asarray(rng.standard_normal((2, 5, h, 4)), jnp.float32) for h in (4, 2, 2))
    mask = jnp.asarray(rng.random((2, 1, 5, 5)) > 0.3)
    bias = jnp.asarray(rng.standard_normal((1, 4, 5, 5)), jnp.float32)
    configs = (
        dict(mask=mask, bias=bias),
        dict(is_causal=True),
        dict(dropout_rate=0.3, dropout_rng=jax.random.key(1), mask=mask),
    )
    pairs = lambda: [(max_logit_attention(q, k, v, **kw), nnx.dot_product_attention(q, k, v, **kw)) for kw in configs]
    both = jax.jit(pairs)
    for ours, theirs in both():
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)

    class Probe(nnx.Module):
        def __call__(self, q, k, v, mask):
            return max_logit_attention(q, k, v, mask=mask, module=self)

    _, inter = nnx.capture(Probe(), nnx.Intermediate)(q, k, v, mask)
    full = np.einsum("bqhd,bkhd->hbqk", np.asarray(q, np.float64), np.repeat(np.asarray(k, np.float64), 2, 2)) / 2
    kept = np.where(np.broadcast_to(np.asarray(mask).transpose(1, 0, 2, 3), full.shape), full, -np.inf)
    np.testing.assert_allclose(max_logits(inter)[""], np_max(kept), rtol=1e-5)


def test_mla_explicit_mapping(rng):
    """MLA: logits (q_C·k_C + q_R·k_R)/√d with a rotary key shared by all heads; q_C and k_C scale by √γ, q_R by
    γ, k_R stays, so the clipped head's max logit is exactly τ and the others are untouched."""
    dc, dr = 4, 2
    p = {
        "q_c": rng.standard_normal((D_IN, H, dc)),
        "k_c": rng.standard_normal((D_IN, H, dc)),
        "q_r": rng.standard_normal((D_IN, H, dr)),
        "k_r": rng.standard_normal((D_IN, dr)),
    }
    p = {k: 0.3 * v for k, v in p.items()}
    p["q_c"][:, 3] *= 6.0
    p["q_r"][:, 3] *= 6.0
    xs = rng.standard_normal((B, T, D_IN))

    def logits(p):
        qc, kc, qr = (np.einsum("bti,ihd->bthd", xs, np.asarray(p[n], np.float64)) for n in ("q_c", "k_c", "q_r"))
        kr = xs @ np.asarray(p["k_r"], np.float64)
        return (np.einsum("bqhd,bkhd->hbqk", qc, kc) + np.einsum("bqhd,bkd->hbqk", qr, kr)) / np.sqrt(dc + dr)

    s = np_max(logits(p))
    assert s[3] > TAU and (s[:3] < TAU).all()
    params = {"mla": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}
    heads = {"mla": QKHeads(query=("mla/q_c",), key=("mla/k_c",), query_rotary=("mla/q_r",))}
    tx = optax.chain(optax.sgd(1.0), qk_clip(TAU, heads=heads))
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params, max_logits={"mla": s})
    new = optax.apply_updates(params, u)["mla"]
    after = logits(new)
    np.testing.assert_allclose(np_max(after)[3], TAU, rtol=1e-5)
    np.testing.assert_allclose(after[:3], logits(params["mla"])[:3], rtol=0, atol=0)
    np.testing.assert_array_equal(new["k_r"], params["mla"]["k_r"])
    np.testing.assert_allclose(new["q_r"][:, 3], params["mla"]["q_r"][:, 3] * (TAU / s[3]), rtol=1e-6)


def small():
    """A tiny attention's q/k kernels [in=3, heads=2, dh=2] and a dense leaf that is never touched."""
    w = np.random.default_rng(3).standard_normal((3, 2, 2))
    return {"attn": {"query": {"kernel": jnp.asarray(w, jnp.float32)}, "key": {"kernel": jnp.asarray(w, jnp.float32)}},
            "out": jnp.ones((2, 2))}  # fmt: skip


def test_zero_grads_below_tau_zero_update_and_nan_visible():
    params = small()
    tx = optax.chain(optax.sgd(0.1), qk_clip(TAU))
    zeros = jax.tree.map(jnp.zeros_like, params)
    u, _ = tx.update(zeros, tx.init(params), params, max_logits={"attn": jnp.array([TAU, -jnp.inf])})
    assert all(np.array_equal(a, np.zeros_like(a)) for a in jax.tree.leaves(u))
    for bad in (jnp.nan, jnp.inf):  # a broken forward pass: the heads' leaves become NaN, not silently kept/zeroed
        u, _ = tx.update(zeros, tx.init(params), params, max_logits={"attn": jnp.array([bad, 1.0])})
        assert np.isnan(u["attn"]["query"]["kernel"][:, 0]).all()
        assert np.isfinite(u["attn"]["query"]["kernel"][:, 1]).all() and np.isfinite(u["out"]).all()
    nan_grads = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), params)
    u, _ = tx.update(nan_grads, tx.init(params), params, max_logits={"attn": jnp.array([2 * TAU, 1.0])})
    assert all(np.isnan(a).all() for a in jax.tree.leaves(u))


@pytest.mark.slow  # four wrappers, four compilations
def test_wrappers_inject_multisteps_apply_if_finite():
    """``inject_hyperparams`` (τ changed in the state, no recompile), ``MultiSteps`` (the clip acts on the emitted
    step), ``apply_if_finite`` (NaN gradients skip the step)."""
    params = small()
    zeros = jax.tree.map(jnp.zeros_like, params)
    s = {"attn": jnp.array([4 * TAU, 1.0])}
    w = params["attn"]["query"]["kernel"]

    tx = optax.chain(optax.sgd(0.1), optax.inject_hyperparams(qk_clip)(threshold=TAU))
    state = tx.init(params)
    step = jax.jit(tx.update)
    u, _ = step(zeros, state, params, max_logits=s)
    np.testing.assert_allclose(u["attn"]["query"]["kernel"][:, 0], -0.5 * w[:, 0], rtol=1e-6)
    state[1].hyperparams["threshold"] = state[1].hyperparams["threshold"] / 4  # γ = 1/16, s = 1/4
    u, _ = step(zeros, state, params, max_logits=s)
    np.testing.assert_allclose(u["attn"]["query"]["kernel"][:, 0], -0.75 * w[:, 0], rtol=1e-6)
    assert step._cache_size() == 1

    ms = optax.MultiSteps(optax.chain(optax.sgd(0.1), qk_clip(TAU)), every_k_schedule=2)
    state = ms.init(params)
    u, state = ms.update(zeros, state, params, max_logits=s)
    assert not np.any(u["attn"]["query"]["kernel"])
    u, state = ms.update(zeros, state, params, max_logits=s)
    np.testing.assert_allclose(u["attn"]["query"]["kernel"][:, 0], -0.5 * w[:, 0], rtol=1e-6)

    safe = optax.apply_if_finite(optax.chain(optax.sgd(0.1), qk_clip(TAU)), max_consecutive_errors=3)
    state = safe.init(params)
    nan_grads = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), params)  # apply_if_finite inspects the gradients
    u, state = safe.update(nan_grads, state, params, max_logits=s)
    assert int(state.notfinite_count) == 1 and not any(np.any(a) for a in jax.tree.leaves(u))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", pytest.param("float64", marks=pytest.mark.slow)])
def test_dtypes(dtype):
    """Updates come back in the gradient's dtype; W + update is s·(W + u) to the dtype's precision."""
    with jax.enable_x64(dtype == "float64"):
        params = jax.tree.map(lambda a: a.astype(dtype), small())
        grads = jax.tree.map(lambda a: jnp.full_like(a, 0.5), params)
        tx = optax.chain(optax.sgd(0.1), qk_clip(TAU))
        u, _ = tx.update(grads, tx.init(params), params, max_logits={"attn": jnp.array([4 * TAU, 1.0])})
        assert all(a.dtype == jnp.dtype(dtype) for a in jax.tree.leaves(u))
        new = np.asarray(optax.apply_updates(params, u)["attn"]["key"]["kernel"], np.float64)
        w = np.asarray(params["attn"]["key"]["kernel"], np.float64) - 0.05
        tol = {"float32": 1e-6, "float64": 1e-12}.get(dtype, 1e-2)
        np.testing.assert_allclose(new[:, 0], 0.5 * w[:, 0], rtol=tol, atol=tol)
        np.testing.assert_allclose(new[:, 1], w[:, 1], rtol=tol, atol=tol)


def test_muon_clip_is_muon_then_clip():
    params = small()
    grads = jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(4).standard_normal(a.shape), a.dtype), params)
    s = {"attn": jnp.array([4 * TAU, 1.0])}
    tx = muon_clip(0.02, threshold=TAU, method="svd")  # the exact polar factor: one op, cheap to run eagerly
    u, _ = tx.update(grads, tx.init(params), params, max_logits=s)
    plain = normopt.muon(0.02, method="svd")
    m, _ = plain.update(grads, plain.init(params), params)
    for name in ("query", "key"):
        w, mu = params["attn"][name]["kernel"], m["attn"][name]["kernel"]
        new = w + u["attn"][name]["kernel"]
        np.testing.assert_allclose(new[:, 0], 0.5 * (w + mu)[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(u["attn"][name]["kernel"][:, 1], mu[:, 1])
    np.testing.assert_array_equal(u["out"], m["out"])


def test_validation():
    params = small()
    with pytest.raises(ValueError, match="threshold"):
        qk_clip(0.0)
    with pytest.raises(TypeError, match="threshold"):
        qk_clip("100")
    with pytest.raises(TypeError, match="head_axis"):
        qk_clip(head_axis=1.0)
    with pytest.raises(TypeError, match="heads"):
        qk_clip(heads=["attn/query/kernel"])
    with pytest.raises(ValueError, match="attn/query/bias"):
        qk_clip(heads={"attn": ("attn/query/bias", "attn/key/kernel")}).init(params)
    with pytest.raises(ValueError, match="out.*2 heads.*expected a divisor of 2|out.*expected"):
        qk_clip(heads={"attn": ("attn/query/kernel", "out")}, head_axis=0).init(params)
    bad = {"attn": {"query": {"kernel": jnp.ones((3, 4, 2))}, "key": {"kernel": jnp.ones((3, 3, 2))}}}
    with pytest.raises(ValueError, match="attn/key/kernel has 3 heads"):
        qk_clip().init(bad)
    with pytest.raises(ValueError, match="no Flax MultiHeadAttention"):
        qk_clip().init({"w": jnp.ones((3, 3))})
    tx = qk_clip(TAU)
    state = tx.init(params)
    with pytest.raises(ValueError, match="max_logits"):
        tx.update(params, state, params)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, state, max_logits={"attn": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"\['attn'\]"):
        tx.update(params, state, params, max_logits={"layer": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        tx.update(params, state, params, max_logits={"attn": jnp.ones(3)})
