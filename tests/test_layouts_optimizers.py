"""The optimizers read leaves through normopt.layouts: one Muon step's per-leaf update RMS equals the RMS→RMS
prediction, stacks are stacks, Jordan's roles, strict mode, describe through optax wrappers, and errors at build.

RMS→RMS prediction (REFERENCES §1–2): for a full-rank gradient slice G (fan_in m, fan_out n), Muon with the
``spectral`` scale and the exact polar factor steps by η·√(n/m)·U Vᵀ, whose RMS is η·√(n/m)·√(min(m, n)/(m·n)) =
η·√min(m, n)/m — independent of the gradient and of how many slices the leaf stacks.
"""

from __future__ import annotations

import math

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import normopt
from normopt import layouts

LR = 0.1


def predicted_rms(fan_in: int, fan_out: int) -> float:
    return LR * math.sqrt(min(fan_in, fan_out)) / fan_in


def random_like(tree, seed=0):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves, strict=True)])


def zeros(tree):
    """Zero arrays in place of the abstract leaves (``jax.ShapeDtypeStruct``) of ``tree``."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype) if isinstance(s, jax.ShapeDtypeStruct) else s, tree)


def slice_rms(u: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
    """RMS of each slice along the ``batch`` axes."""
    rest = tuple(a for a in range(u.ndim) if a not in batch)
    return np.sqrt(np.mean(np.square(u), axis=rest))


def check_muon_step(params, layout):
    """Every Muon leaf's slices move by the predicted RMS; AdamW leaves (first step, β's ≠ 0) by ≈ η per entry."""
    tx = normopt.muon(LR, layout=layout, method="svd", beta=0.0, nesterov=False, strict=True)
    grads = random_like(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    rows = {r["path"]: r for r in normopt.describe(params, tx, print_fn=None)}
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    checked = 0
    for path, u in flat:
        names = normopt.partition._numerics.path_names(path)
        lay = layout.lookup(names, u.shape)
        u = np.asarray(u, np.float64)
        if rows["/".join(names)]["norm"] == "adamw":
            np.testing.assert_allclose(np.abs(u), LR, rtol=1e-3)  # Adam's first step: η·g/|g|
            continue
        m = math.prod(u.shape[a] for a in lay.fan_in)
        n = math.prod(u.shape[a] for a in lay.fan_out)
        np.testing.assert_allclose(slice_rms(u, lay.batch), predicted_rms(m, n), rtol=1e-4, err_msg=str(names))
        checked += 1
    assert checked >= 2


class EqxCNN(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, 6, 3, key=k[0])
        self.conv2 = eqx.nn.Conv2d(6, 4, 3, key=k[1])
        self.hidden = eqx.nn.Linear(4 * 4 * 4, 12, key=k[2])
        self.out = eqx.nn.Linear(12, 10, key=k[3])

    def __call__(self, x):
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.out(jax.nn.relu(self.hidden(x.reshape(-1))))


def test_equinox_cnn_muon_step_matches_rms_to_rms():
    model = zeros(eqx.filter_eval_shape(EqxCNN, jax.random.key(0)))  # no eager initialization: fast
    layout = layouts.equinox(model, jnp.zeros((1, 8, 8)))
    params = eqx.filter(model, eqx.is_array)
    # By hand, Equinox's [out, in, kh, kw]: conv1 fan-in 1·3·3 = 9, fan-out 6; conv2 fan-in 6·9 = 54, fan-out 4.
    conv1 = layout.lookup(("conv1", "weight"), (6, 1, 3, 3))
    assert (conv1.role, conv1.fan_in, conv1.fan_out) == ("hidden", (1, 2, 3), (0,))
    assert layout.lookup(("out", "weight"), (10, 12)).role == "head"
    check_muon_step(params, layout)


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.up = nnx.Linear(8, 16, rngs=rngs)
        self.down = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, x):
        return x + self.down(jax.nn.gelu(self.up(self.norm(x))))


class Stacked(nnx.Module):
    def __init__(self, depth, rngs):
        self.embed = nnx.Embed(11, 8, rngs=rngs)

        @nnx.vmap(in_axes=0, out_axes=0)
        def blocks(key):
            return Block(nnx.Rngs(key))

        self.blocks = blocks(jax.random.split(rngs.params(), depth))
        self.head = nnx.Linear(8, 11, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)

        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def run(block, x):
            return block(x)

        return self.head(run(self.blocks, x))


def test_nnx_stacked_transformer_muon_step_matches_rms_to_rms():
    model = nnx.eval_shape(lambda: Stacked(3, nnx.Rngs(0)))
    layout = layouts.nnx(model, jnp.zeros((2, 5), jnp.int32))
    params = zeros(nnx.state(model, nnx.Param))
    # By hand: the stack axis 0 of every block parameter is a batch axis; up is [3, 8, 16].
    up = layout.lookup(("blocks", "up", "kernel"), (3, 8, 16))
    assert (up.fan_in, up.fan_out, up.batch) == ((1,), (2,), (0,))
    scale = layout.lookup(("blocks", "norm", "scale"), (3, 8))
    assert (scale.role, scale.batch) == ("vector", (0,))
    check_muon_step(params, layout)


@pytest.mark.parametrize("optimizer", ["muon", "scion"])
def test_stacked_norm_scale_update_is_independent_of_depth(optimizer):
    """An (L, d) norm scale is L vectors: the update of each slice does not depend on L (the issue measured
    update RMS 0.88 / 0.68 / 0.37 for L = 1, 2, 8 when it was read as an L×d matrix)."""
    d, per_slice = 16, []
    g1 = jax.random.normal(jax.random.key(1), (d,))
    for depth in (1, 2, 8):
        params = {"blocks": {"LayerNorm_0": {"scale": jnp.ones((depth, d))}}}
        grads = {"blocks": {"LayerNorm_0": {"scale": jnp.tile(g1, (depth, 1))}}}
        tx = getattr(normopt, optimizer)(LR)
        u, _ = tx.update(grads, tx.init(params), params)
        per_slice.append(np.asarray(u["blocks"]["LayerNorm_0"]["scale"][0]))
    np.testing.assert_allclose(per_slice[1], per_slice[0], rtol=1e-6)
    np.testing.assert_allclose(per_slice[2], per_slice[0], rtol=1e-6)
    if optimizer == "scion":  # rms dualization: RMS exactly the radius · η
        np.testing.assert_allclose(np.sqrt(np.mean(per_slice[0] ** 2)), LR, rtol=1e-5)


def test_muon_sends_embeddings_and_head_to_adamw_by_role():
    params = {
        "tok": {"embedding": jnp.ones((11, 8))},
        "mid": {"kernel": jnp.ones((8, 8))},
        "lm": {"kernel": jnp.ones((8, 11))},
    }
    custom = {"tok": "embedding", "lm": "head"}  # roles given by the user, names that no heuristic knows
    rows = {r["path"]: r["norm"] for r in normopt.describe(params, normopt.muon(LR, layout=custom), print_fn=None)}
    assert rows == {"tok/embedding": "adamw", "mid/kernel": "rms_to_rms", "lm/kernel": "adamw"}
    rows = {
        r["path"]: r["norm"]
        for r in normopt.describe(params, normopt.muon(LR, layout=custom, fallback_roles=()), print_fn=None)
    }
    assert set(rows.values()) == {"rms_to_rms"}


def test_fallback_must_be_a_sequence_of_patterns():
    with pytest.raises(TypeError, match=r"fallback must be a sequence of path regexes.*\('head',\)"):
        normopt.muon(LR, fallback="head")
    with pytest.raises(TypeError, match="fallback must be a sequence"):
        normopt.dion(LR, fallback="head")
    with pytest.raises(ValueError, match="fallback_roles entry"):
        normopt.muon(LR, fallback_roles=("vectors",))


def test_strict_raises_for_name_only_matrices_and_names_the_leaf():
    params = {"blocks": {"w": jnp.ones((4, 8)), "b": jnp.ones(8)}}
    for build in (
        lambda: normopt.muon(LR, strict=True),
        lambda: normopt.scion(LR, strict=True),
        lambda: normopt.dion(LR, strict=True),
        lambda: optax.chain(normopt.dualize({"blocks": {"w": normopt.norms.spectral(), "b": None}}, strict=True)),
    ):
        tx = build()
        with pytest.raises(ValueError, match=r"blocks/w \(shape \(4, 8\)\).*strict=True"):
            tx.init(params)
    ok = normopt.muon(LR, strict=True, layout={"blocks/w": normopt.MatrixDims()})
    ok.init(params)  # a 1-D bias needs no reading


def test_describe_sees_through_optax_wrappers():
    params = {"Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)}, "head": {"kernel": jnp.ones((8, 3))}}
    direct = normopt.describe(params, normopt.muon(LR), print_fn=None)
    wrapped = [
        optax.chain(optax.clip_by_global_norm(1.0), normopt.muon(LR)),
        optax.inject_hyperparams(normopt.muon)(learning_rate=LR),
        optax.MultiSteps(normopt.muon(LR), 2),
        optax.apply_if_finite(normopt.muon(LR), 3),
        optax.masked(normopt.muon(LR), jax.tree.map(lambda _: True, params)),
    ]
    for tx in wrapped:
        assert normopt.describe(params, tx, print_fn=None) == direct
    masked = normopt.describe(params, optax.masked(normopt.muon(LR), {"Dense_0": True, "head": False}), print_fn=None)
    assert {r["path"]: r["norm"] for r in masked}["head/kernel"] == "-"
    with pytest.raises(ValueError, match="found no normopt optimizer"):
        normopt.describe(params, optax.adam(1e-3), print_fn=None)


def test_describe_flags_suspicious_readings():
    params = {
        "LayerNorm_0": {"scale": jnp.ones((4, 8))},  # 2-D leaf named like a norm scale
        "thin": {"kernel": jnp.ones((8, 1))},  # a side of length 1
        "stack": {"kernel": jnp.ones((4, 8, 8))},  # ≥3-D read by name only; its stack depth is 4
        "odd": {"kernel": jnp.ones((4, 8))},  # fan-in 4 equals the stack depth
    }
    notes = {r["path"]: r["note"] for r in normopt.describe(params, normopt.scion(LR), print_fn=None)}
    assert "norm scale" in notes["LayerNorm_0/scale"]
    assert "side of length 1" in notes["thin/kernel"]
    assert "read only from its name" in notes["stack/kernel"]
    assert "stack depth 4" in notes["odd/kernel"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "you", "steps": 7}, ValueError, r"steps=7 is out of range for method 'you'"),
        ({"method": "nope"}, ValueError, "Unknown orthogonalization method 'nope'"),
        ({"steps": 0}, ValueError, "steps=0"),
        ({"beta": 1.0}, ValueError, r"muon: beta must lie in \[0, 1\)"),
        ({"beta": 1.5}, ValueError, "beta"),
        ({"beta": -0.5}, ValueError, "beta"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"adam_eps": 0.0}, ValueError, "adam_eps"),
        ({"adam_b2": 1.0}, ValueError, "adam_b2"),
        ({"compute_dtype": "int32"}, ValueError, "compute_dtype"),
        ({"mu_dtype": "int8"}, ValueError, "mu_dtype"),
        ({"scale": "huge"}, ValueError, "unknown scale 'huge'"),
        ({"layout": ["w"]}, TypeError, "layout must be"),
    ],
)
def test_muon_validates_arguments_when_built(kwargs, error, message):
    with pytest.raises(error, match=message):
        normopt.muon(LR, **kwargs)


def test_scion_validates_arguments_when_built():
    with pytest.raises(ValueError, match="head_radius"):
        normopt.scion(LR, head_radius=0.0)
    with pytest.raises(ValueError, match="vector_norm"):
        normopt.scion(LR, vector_norm="l3")
    with pytest.raises(ValueError, match=r"rules: w: 'frobenius-ish'"):
        normopt.scion(LR, rules={"w": "frobenius-ish"})


def test_traced_static_argument_says_static_args():
    params = {"w": jnp.ones((4, 4))}
    tx = optax.inject_hyperparams(normopt.muon)(learning_rate=LR, steps=5)
    with pytest.raises(TypeError, match="static_args"):
        tx.init(params)
    tx = optax.inject_hyperparams(normopt.muon, static_args=("steps",))(learning_rate=LR, steps=5)
    tx.update(params, tx.init(params), params)


def test_orthogonalize_rejects_integers():
    with pytest.raises(TypeError, match="floating-point"):
        normopt.orthogonalize(jnp.ones((3, 3), jnp.int32))


def test_mu_dtype_is_storage_and_arithmetic_stays_fp32():
    """mu_dtype stores the state; the arithmetic runs in fp32 on the fp32 gradients. Reference: optax.adamw with
    fp32 state (the update differs only by the bf16 storage of μ and ν, ≤ 2⁻⁸ relative), not the bf16-rounded
    arithmetic that casting the gradients first would give."""
    params = {"bias": jnp.zeros(5)}
    grads = {"bias": jnp.array([1.0, -3.0, 0.25, 2.0, -0.5])}
    ours = normopt.muon(1.0, mu_dtype="bfloat16", nesterov=False, adam_b1=0.9, adam_b2=0.99)
    ref = optax.adamw(1.0, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0)
    s_ours, s_ref = ours.init(params), ref.init(params)
    assert {str(x.dtype) for x in jax.tree.leaves(s_ours) if x.shape == (5,)} == {"bfloat16"}
    for _ in range(3):
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_ref, s_ref = ref.update(grads, s_ref, params)
        assert u_ours["bias"].dtype == jnp.float32
        np.testing.assert_allclose(u_ours["bias"], u_ref["bias"], rtol=2**-8)
    assert {str(x.dtype) for x in jax.tree.leaves(s_ours) if x.shape == (5,)} == {"bfloat16"}


def test_mask_has_optax_semantics():
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 4))}
    zero = jax.tree.map(jnp.zeros_like, params)
    tx = normopt.muon(0.1, weight_decay=0.5, mask={"a": True, "b": False})
    u, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(u["a"], -0.05 * np.ones((4, 4)), rtol=1e-6)
    np.testing.assert_allclose(u["b"], 0.0)


def test_torch_tree_muon_step_matches_rms_to_rms():
    """A tree ported from a PyTorch state dict: Linear weights [out, in], conv [out, in, kh, kw]."""
    d, v = 8, 13
    params = {
        "tok_emb.weight": jnp.zeros((v, d)),
        "blocks.0.ln.weight": jnp.zeros(d),
        "blocks.0.fc1.weight": jnp.zeros((4 * d, d)),  # [out, in]: fan-in 8, fan-out 32
        "blocks.0.fc1.bias": jnp.zeros(4 * d),
        "blocks.0.fc2.weight": jnp.zeros((d, 4 * d)),
        "stem.conv.weight": jnp.zeros((d, 3, 3, 3)),  # [out, in, kh, kw]: fan-in 27, fan-out 8
        "lm_head.weight": jnp.zeros((v, d)),
    }
    layout = layouts.torch(params)
    fc1 = layout.lookup(("blocks.0.fc1.weight",), (4 * d, d))
    assert (fc1.fan_in, fc1.fan_out) == ((1,), (0,))
    assert layout.lookup(("lm_head.weight",), (v, d)).role == "head"
    assert layout.lookup(("tok_emb.weight",), (v, d)).role == "embedding"
    check_muon_step(params, layout)


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), name="block2")(x))  # a conv whose name says nothing
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.Dense(12, name="proj")(x.reshape(x.shape[0], -1))
        return nn.Dense(10, name="readout")(nn.relu(x))


def test_linen_cnn_with_custom_names_muon_step_matches_rms_to_rms():
    x = jnp.zeros((2, 6, 6, 3))
    layout = layouts.linen(LinenCNN(), x)
    params = zeros(jax.eval_shape(LinenCNN().init, jax.random.key(0), x)["params"])
    block2 = layout.lookup(("block2", "kernel"), (3, 3, 3, 6))  # [kh, kw, in, out]: fan-in 27, fan-out 6
    assert (block2.fan_in, block2.fan_out) == ((0, 1, 2), (3,))
    assert layout.lookup(("readout", "kernel"), (12, 10)).role == "head"
    check_muon_step(params, layout)
