"""normopt.layouts.nnx and normopt.layouts.linen on a zoo of real Flax models.

Every expected reading is written by hand from Flax's documented kernel layouts (``y = x @ W``):
``Linear``/``Dense`` ``[in, out]``; ``Conv`` ``[*window, in/groups, out]``; ``ConvTranspose`` ``[*window, in, out]``;
``Embed`` ``[num_embeddings, features]``; attention query/key/value ``[features, heads, head_dim]`` and out
``[heads, head_dim, features]``; ``nnx.vmap``/``nn.scan`` stacks add axes (leading unless ``variable_axes`` says
otherwise).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from normopt import layouts
from normopt.layouts import Layout
from normopt.layouts._core import leaves_with_paths

D, H, F, L, V, E = 8, 2, 16, 3, 11, 4  # width, heads, MLP width, layers, vocabulary, experts
DH = D // H


def mat(fan_in, fan_out, batch=(), role="hidden"):
    return (role, tuple(fan_in), tuple(fan_out), tuple(batch))


def vec(batch=()):
    return ("vector", (), (), tuple(batch))


def abstract(cls: type[nnx.Module]) -> nnx.Module:
    """The model with abstract parameters (``jax.ShapeDtypeStruct``): no eager initialization, fast tests."""
    return nnx.eval_shape(lambda: cls(nnx.Rngs(0)))


def check(got: layouts.Layouts, expected: dict[str, tuple], params) -> None:
    """``got`` reads every leaf of ``params`` (looked up by its own path) as ``expected`` says."""
    seen = {}
    for path, leaf in leaves_with_paths(params):
        lay = got.lookup(path, leaf.shape)
        key = path[1:] if path[0] == "params" else path  # linen's collection
        key = key[:-1] if key[-1] == "value" else key  # NNX's Variable
        seen["/".join(key)] = (lay.role, lay.fan_in, lay.fan_out, lay.batch)
    assert seen == expected
    assert len(got) == len(expected)


# ----------------------------------------------------------------------------------------------------------- NNX


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.List([nnx.Linear(4, D, rngs=rngs), nnx.Linear(D, D, rngs=rngs)])
        self.norm = nnx.LayerNorm(D, rngs=rngs)
        self.readout = nnx.Linear(D, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.readout(self.norm(x))


MLP_EXPECTED = {
    "hidden/0/kernel": mat([0], [1]),
    "hidden/0/bias": vec(),
    "hidden/1/kernel": mat([0], [1]),
    "hidden/1/bias": vec(),
    "norm/scale": vec(),
    "norm/bias": vec(),
    "readout/kernel": mat([0], [1], role="head"),
    "readout/bias": vec(),
}


def test_nnx_mlp():
    model = abstract(MLP)
    params = nnx.state(model, nnx.Param)
    check(layouts.nnx(model), MLP_EXPECTED, params)  # head from the name ``readout``
    check(layouts.nnx(model, jnp.ones((2, 4))), MLP_EXPECTED, params)  # head from forward order
    assert layouts.nnx(model)[("readout", "kernel")].source == "nnx:Linear"


def test_nnx_head_argument():
    model = abstract(MLP)
    got = layouts.nnx(model, head=["hidden/1"])
    assert got[("hidden", "1", "kernel")].role == "head"
    assert got[("readout", "kernel")].role == "hidden"
    with pytest.raises(ValueError, match="head='nowhere' matches no module.*readout"):
        layouts.nnx(model, head="nowhere")


def test_nnx_empty_head_means_no_head():
    model = abstract(MLP)
    no_head = {k: (mat([0], [1]) if v[0] == "head" else v) for k, v in MLP_EXPECTED.items()}
    params = nnx.state(model, nnx.Param)
    check(layouts.nnx(model, head=()), no_head, params)  # neither the name ``readout`` ...
    check(layouts.nnx(model, jnp.ones((2, 4)), head=[]), no_head, params)  # ... nor forward order picks a head


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 8, (3, 3), feature_group_count=2, rngs=rngs)
        self.up = nnx.ConvTranspose(8, 4, (2, 2), strides=(2, 2), rngs=rngs)
        self.fc = nnx.Linear(4, 10, rngs=rngs)

    def __call__(self, x):
        x = self.conv2(jax.nn.relu(self.bn(self.conv1(x))))
        return self.fc(self.up(x).mean(axis=(1, 2)))


CNN_EXPECTED = {
    "conv1/kernel": mat([0, 1, 2], [3]),  # [3, 3, 3, 4]
    "conv1/bias": vec(),
    "bn/scale": vec(),
    "bn/bias": vec(),
    "conv2/kernel": mat([0, 1, 2], [3]),  # [3, 3, 4/2, 8]
    "conv2/bias": vec(),
    "up/kernel": mat([0, 1, 2], [3]),  # [2, 2, 8, 4]
    "up/bias": vec(),
    "fc/kernel": mat([0], [1], role="head"),
    "fc/bias": vec(),
}


def test_nnx_cnn():
    model = abstract(CNN)
    params = nnx.state(model, nnx.Param)
    assert params["conv2"]["kernel"].shape == (3, 3, 2, 8)
    check(layouts.nnx(model), CNN_EXPECTED, params)  # head: the last dense layer defined
    check(layouts.nnx(model, jnp.ones((1, 6, 6, 3))), CNN_EXPECTED, params)
    assert layouts.nnx(model)[("up", "kernel")].source == "nnx:ConvTranspose"


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=H, in_features=D, decode=False, rngs=rngs)
        self.ln2 = nnx.RMSNorm(D, rngs=rngs)
        self.up = nnx.Linear(D, F, rngs=rngs)
        self.down = nnx.Linear(F, D, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))


class Transformer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(V, D, rngs=rngs)

        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs: nnx.Rngs) -> Block:
            return Block(rngs)

        self.blocks = blocks(rngs)
        self.ln_f = nnx.LayerNorm(D, rngs=rngs)
        self.head = nnx.Linear(D, V, use_bias=False, rngs=rngs)

    def __call__(self, ids):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)

        return self.head(self.ln_f(run(self.embed(ids), self.blocks)))


TRANSFORMER_EXPECTED = {
    "embed/embedding": mat([0], [1], role="embedding"),
    "blocks/ln1/scale": vec([0]),
    "blocks/ln1/bias": vec([0]),
    **{f"blocks/attn/{n}/kernel": mat([1], [2, 3], [0]) for n in ("query", "key", "value")},  # [L, D, H, DH]
    **{f"blocks/attn/{n}/bias": vec([0]) for n in ("query", "key", "value")},  # [L, H, DH]
    "blocks/attn/out/kernel": mat([1, 2], [3], [0]),  # [L, H, DH, D]
    "blocks/attn/out/bias": vec([0]),
    "blocks/ln2/scale": vec([0]),
    "blocks/up/kernel": mat([1], [2], [0]),
    "blocks/up/bias": vec([0]),
    "blocks/down/kernel": mat([1], [2], [0]),
    "blocks/down/bias": vec([0]),
    "ln_f/scale": vec(),
    "ln_f/bias": vec(),
    "head/kernel": mat([0], [1], role="head"),
}


def test_nnx_transformer_vmap_scan():
    model = abstract(Transformer)
    params = nnx.state(model, nnx.Param)
    assert params["blocks"]["attn"]["out"]["kernel"].shape == (L, H, DH, D)
    check(layouts.nnx(model), TRANSFORMER_EXPECTED, params)
    check(layouts.nnx(model, jnp.zeros((2, 5), jnp.int32)), TRANSFORMER_EXPECTED, params)
    assert model.blocks.up.kernel.shape == (L, D, F)  # the model is left as it was


class Tied(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(V, D, rngs=rngs)
        self.mix = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, ids):
        return self.embed.attend(self.mix(self.embed(ids)))


def test_nnx_tied_embedding_has_no_head():
    model = Tied(nnx.Rngs(0))  # a concrete model
    got = layouts.nnx(model, jnp.zeros((2, 5), jnp.int32))
    assert got[("mix", "kernel")].role == "hidden"
    assert got[("embed", "embedding")].role == "embedding"


class Experts(nnx.Module):
    """A custom module: ``w_down`` is a raw ``[E, F, D]`` parameter no Flax module reads."""

    def __init__(self, rngs: nnx.Rngs):
        self.w_up = nnx.Einsum("bed,edf->bef", (E, D, F), rngs=rngs)
        self.w_down = nnx.Param(jax.random.normal(rngs.params(), (E, F, D)))
        self.gain = nnx.Param(jnp.ones((D,)))

    def __call__(self, x):
        return jnp.einsum("bef,efd->bd", jax.nn.relu(self.w_up(x)), self.w_down[...]) * self.gain[...]


class MoE(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.router = nnx.Linear(D, E, use_bias=False, rngs=rngs)
        self.moe = Experts(rngs)
        self.out = nnx.Linear(D, 2, rngs=rngs)

    def __call__(self, x):
        gates = jax.nn.softmax(self.router(x))
        return self.out(self.moe(gates[..., None] * x[:, None, :]))


MOE_EXPECTED = {
    "router/kernel": mat([0], [1]),
    "moe/w_up/kernel": mat([1], [2], [0]),  # [E, D, F], e shared by input, kernel and output
    "moe/w_down": mat([1], [2], [0]),  # from the override
    "moe/gain": vec(),
    "out/kernel": mat([0], [1], role="head"),
    "out/bias": vec(),
}


def test_nnx_moe_expert_axis_and_overrides():
    model = abstract(MoE)
    with pytest.raises(ValueError, match=r"moe/w_down \(shape \(4, 16, 8\)\).*overrides") as raised:
        layouts.nnx(model)
    assert "normopt.MatrixDims(...)} (or" in str(raised.value)  # one closing brace for the one opened
    down = Layout("hidden", (1,), (2,), (0,))
    got = layouts.nnx(model, jnp.ones((2, D)), overrides={r"w_down$": down})
    check(got, MOE_EXPECTED, nnx.state(model, nnx.Param))
    assert got[("moe", "w_down")].source == "user"
    assert got[("moe", "gain")].source == "nnx:Experts"


def test_wrong_model_lookup_names_the_path():
    got = layouts.nnx(abstract(MLP))
    for path, leaf in leaves_with_paths(nnx.state(abstract(CNN), nnx.Param)):
        if path[0] == "conv1" and path[1] == "kernel":
            with pytest.raises(ValueError, match="conv1/kernel.*no parameter at this path"):
                got.lookup(path, leaf.shape)
    with pytest.raises(ValueError, match=r"readout/kernel.*shape \(8, 5\) differs"):
        got.lookup(("readout", "kernel"), (8, 5))


# --------------------------------------------------------------------------------------------------------- linen


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        x = x + nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D)(nn.LayerNorm()(x))
        h = nn.Dense(F)(nn.RMSNorm()(x))
        return x + nn.Dense(D)(jax.nn.gelu(h)), None


class LinenTransformer(nn.Module):
    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(V, D)(ids)
        scan = nn.scan(
            LinenBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=L, metadata_params={}
        )
        x, _ = scan(name="layers")(x, None)
        return nn.Dense(V, name="logits_dense")(nn.LayerNorm()(x))


LINEN_TRANSFORMER_EXPECTED = {
    "Embed_0/embedding": mat([0], [1], role="embedding"),
    "layers/LayerNorm_0/scale": vec([0]),
    "layers/LayerNorm_0/bias": vec([0]),
    **{f"layers/MultiHeadDotProductAttention_0/{n}/kernel": mat([1], [2, 3], [0]) for n in ("query", "key", "value")},
    **{f"layers/MultiHeadDotProductAttention_0/{n}/bias": vec([0]) for n in ("query", "key", "value")},
    "layers/MultiHeadDotProductAttention_0/out/kernel": mat([1, 2], [3], [0]),  # [L, H, DH, D]
    "layers/MultiHeadDotProductAttention_0/out/bias": vec([0]),
    "layers/RMSNorm_0/scale": vec([0]),
    "layers/Dense_0/kernel": mat([1], [2], [0]),
    "layers/Dense_0/bias": vec([0]),
    "layers/Dense_1/kernel": mat([1], [2], [0]),
    "layers/Dense_1/bias": vec([0]),
    "LayerNorm_0/scale": vec(),
    "LayerNorm_0/bias": vec(),
    "logits_dense/kernel": mat([0], [1], role="head"),  # not named like a head: found as the last dense call
    "logits_dense/bias": vec(),
}


def test_linen_scan_transformer():
    ids = jnp.zeros((2, 5), jnp.int32)
    params = jax.eval_shape(LinenTransformer().init, jax.random.key(0), ids)["params"]
    assert params["layers"]["MultiHeadDotProductAttention_0"]["out"]["kernel"].shape == (L, H, DH, D)
    check(layouts.linen(LinenTransformer(), ids), LINEN_TRANSFORMER_EXPECTED, params)
    check(layouts.linen(LinenTransformer(), jax.random.key(3), ids), LINEN_TRANSFORMER_EXPECTED, params)
    check(layouts.linen(LinenTransformer(), {"params": jax.random.key(3)}, ids), LINEN_TRANSFORMER_EXPECTED, params)


class Ensemble(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.vmap(
            nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0, axis_size=E
        )(D, name="members")(x)
        body = nn.scan(
            LinenBlock, variable_axes={"params": 1}, split_rngs={"params": True}, length=L, metadata_params={}
        )
        return body(name="deep")(x.mean(0), None)[0]


def test_linen_vmap_and_stack_axis_not_leading():
    x = jnp.ones((2, 5, 6))
    params = jax.eval_shape(Ensemble().init, jax.random.key(0), x)["params"]
    assert params["deep"]["Dense_0"]["kernel"].shape == (D, L, F)
    got = layouts.linen(Ensemble(), x)
    assert got[("members", "kernel")][:4] == mat([1], [2], [0])  # [E, 6, D]
    assert got[("deep", "Dense_0", "kernel")][:4] == mat([0], [2], [1])  # [D, L, F]
    assert {lay.role for lay in got.values()} == {"hidden", "vector"}  # the last dense call is stacked: no head
    assert got[("deep", "MultiHeadDotProductAttention_0", "out", "kernel")][:4] == mat([0, 2], [3], [1])
    assert got[("deep", "LayerNorm_0", "scale")][:4] == vec([1])  # [D, L]


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))  # Conv_0
        x = nn.relu(nn.Conv(8, (3, 3), name="block2")(x))
        x = nn.Conv(8, (3, 3), feature_group_count=2, use_bias=False)(x)  # Conv_1
        x = nn.BatchNorm(use_running_average=False)(x)
        x = nn.ConvTranspose(4, (2, 2), strides=(2, 2), transpose_kernel=True, name="up")(x)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


LINEN_CNN_EXPECTED = {
    "Conv_0/kernel": mat([0, 1, 2], [3]),  # [3, 3, 3, 4]
    "Conv_0/bias": vec(),
    "block2/kernel": mat([0, 1, 2], [3]),  # [3, 3, 4, 8]
    "block2/bias": vec(),
    "Conv_1/kernel": mat([0, 1, 2], [3]),  # [3, 3, 8/2, 8]
    "BatchNorm_0/scale": vec(),
    "BatchNorm_0/bias": vec(),
    "up/kernel": mat([0, 1, 3], [2]),  # transpose_kernel: [2, 2, out=4, in=8]
    "up/bias": vec(),
    "Dense_0/kernel": mat([0], [1], role="head"),
    "Dense_0/bias": vec(),
}


def test_linen_cnn_custom_names():
    x = jnp.ones((1, 6, 6, 3))
    params = jax.eval_shape(LinenCNN().init, jax.random.key(0), x)["params"]
    assert params["up"]["kernel"].shape == (2, 2, 4, 8)
    got = layouts.linen(LinenCNN(), jax.ShapeDtypeStruct(x.shape, x.dtype))
    check(got, LINEN_CNN_EXPECTED, params)
    assert got[("block2", "kernel")].source == "linen:Conv"


class NanodoAttention(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = lambda name: nn.DenseGeneral((H, DH), axis=-1, name=name)
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        y = nn.dot_product_attention(q, k, v)
        return nn.DenseGeneral(D, axis=(-2, -1), name="attn_out_proj")(y)


class Nanodo(nn.Module):
    pos: bool = False

    @nn.compact
    def __call__(self, ids):
        embed = nn.Embed(V, D, name="embed")
        x = embed(ids)
        if self.pos:
            x = x + self.param("pos_table", nn.initializers.normal(), (ids.shape[-1], D))
        x = x + NanodoAttention(name="attn")(nn.LayerNorm(name="ln")(x))
        return embed.attend(x)


NANODO_EXPECTED = {
    "embed/embedding": mat([0], [1], role="embedding"),
    "ln/scale": vec(),
    "ln/bias": vec(),
    **{f"attn/{n}/kernel": mat([0], [1, 2]) for n in ("query", "key", "value")},  # [D, H, DH]
    **{f"attn/{n}/bias": vec() for n in ("query", "key", "value")},
    "attn/attn_out_proj/kernel": mat([0, 1], [2]),  # [H, DH, D]
    "attn/attn_out_proj/bias": vec(),
}


def test_linen_nanodo_attention_tied_output():
    ids = jnp.zeros((2, 5), jnp.int32)
    params = jax.eval_shape(Nanodo().init, jax.random.key(0), ids)["params"]
    assert params["attn"]["attn_out_proj"]["kernel"].shape == (H, DH, D)
    check(layouts.linen(Nanodo(), ids), NANODO_EXPECTED, params)  # output through embed.attend: no head
    got = layouts.linen(Nanodo(), ids, head=r"attn_out_proj$")
    assert got[("attn", "attn_out_proj", "kernel")].role == "head"


def test_linen_custom_param_needs_override():
    ids = jnp.zeros((2, 5), jnp.int32)
    with pytest.raises(ValueError, match=r"pos_table \(shape \(5, 8\)\): no known linen module.*overrides"):
        layouts.linen(Nanodo(pos=True), ids)
    got = layouts.linen(Nanodo(pos=True), ids, overrides={"pos_table": Layout("embedding", (0,), (1,))})
    assert got[("pos_table",)][:4] == mat([0], [1], role="embedding")
    assert got[("attn", "query", "kernel")][:4] == mat([0], [1, 2])
