"""layouts.equinox, layouts.torch, layouts.logical and from_names on models built with the real libraries.

Every expected reading — (role, fan-in axes, fan-out axes, batch axes) — is written by hand from the layouts the
libraries document: Equinox and PyTorch store ``[out, in]`` weights and ``[out, in/groups, *window]`` conv weights,
embeddings ``[num, dim]``; Flax stores ``[in, out]``; Hugging Face's ``FlaxConv1D`` (GPT-2) stores its kernel as
``(features, in)`` = ``[out, in]`` and transposes it when called.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normopt import MatrixDims
from normopt import layouts as L

eqx = pytest.importorskip("equinox")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

V, T, D, H, NL = 13, 5, 8, 2, 3  # vocab, context, width, heads, stacked layers
VEC = ("vector", (), (), ())
HID = ("hidden", (1,), (0,), ())  # an [out, in] matrix
STACKED_VEC = ("vector", (), (), (0,))
STACKED_HID = ("hidden", (2,), (1,), (0,))  # (L, out, in)


def build(make, *args, **kwargs):
    """``make(...)`` traced abstractly, its arrays then zeros put on the device: no XLA compilation (fast tests)."""
    abstract = eqx.filter_eval_shape(make, *args, **kwargs)
    zeros = lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)) if isinstance(x, jax.ShapeDtypeStruct) else x
    return jax.tree.map(zeros, abstract, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


def readings(layouts):
    return {"/".join(path): (r.role, r.fan_in, r.fan_out, r.batch) for path, r in layouts.items()}


# --- Equinox ----------------------------------------------------------------------------------------------------


def test_equinox_mlp_reads_out_in_and_takes_the_last_layer_as_head():
    mlp = build(eqx.nn.MLP, 4, 3, 16, 2, key=jax.random.key(0))
    expected = {
        "layers/0/weight": HID,
        "layers/0/bias": VEC,
        "layers/1/weight": HID,
        "layers/1/bias": VEC,
        "layers/2/weight": ("head", (1,), (0,), ()),
        "layers/2/bias": VEC,
    }
    assert readings(L.equinox(mlp)) == expected
    assert readings(L.equinox(mlp, jax.ShapeDtypeStruct((4,), jnp.float32))) == expected


class CNN(eqx.Module):
    conv1: eqx.nn.Conv2d
    mlp: eqx.nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv1 = eqx.nn.Conv2d(1, 32, 3, key=k1)
        self.mlp = eqx.nn.MLP(32 * 6 * 6, 10, 128, 1, key=k2)

    def __call__(self, x):
        return self.mlp(jax.nn.relu(self.conv1(x)).reshape(-1))


def test_equinox_cnn_conv_weight_is_out_in_window():
    model = build(CNN, jax.random.key(0))
    layouts = L.equinox(model, jax.ShapeDtypeStruct((1, 8, 8), jnp.float32))
    assert readings(layouts) == {
        "conv1/weight": ("hidden", (1, 2, 3), (0,), ()),
        "conv1/bias": VEC,  # (32, 1, 1)
        "mlp/layers/0/weight": HID,
        "mlp/layers/0/bias": VEC,
        "mlp/layers/1/weight": ("head", (1,), (0,), ()),
        "mlp/layers/1/bias": VEC,
    }
    conv = layouts[("conv1", "weight")].describe((32, 1, 3, 3))
    head = layouts[("mlp", "layers", "1", "weight")].describe((10, 128))
    assert (conv["fan_in"], conv["fan_out"]) == (9, 32)
    assert (head["fan_in"], head["fan_out"]) == (128, 10)
    assert layouts[("conv1", "weight")].source == "equinox:Conv2d"


class Block(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(D), eqx.nn.LayerNorm(D)
        self.attn = eqx.nn.MultiheadAttention(H, D, use_output_bias=True, key=k1)
        self.mlp = eqx.nn.MLP(D, D, 4 * D, 1, key=k2)

    def __call__(self, x):
        y = jax.vmap(self.ln1)(x)
        x = x + self.attn(y, y, y)
        return x + jax.vmap(self.mlp)(jax.vmap(self.ln2)(x))


class GPT(eqx.Module):
    embed: eqx.nn.Embedding
    to_logits: eqx.nn.Linear  # declared before the blocks: last in the forward pass, not in the pytree
    blocks: Block
    ln_f: eqx.nn.RMSNorm

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embed = eqx.nn.Embedding(V, D, key=k1)
        self.to_logits = eqx.nn.Linear(D, V, use_bias=False, key=k2)
        self.blocks = eqx.filter_vmap(Block)(jax.random.split(k3, NL))
        self.ln_f = eqx.nn.RMSNorm(D)

    def __call__(self, tokens):
        x = jax.vmap(self.embed)(tokens)
        params, static = eqx.partition(self.blocks, eqx.is_array)
        x, _ = jax.lax.scan(lambda x, p: (eqx.combine(p, static)(x), None), x, params)
        return jax.vmap(self.to_logits)(jax.vmap(self.ln_f)(x))


def gpt_expected(head):
    out = {
        "embed/weight": ("embedding", (0,), (1,), ()),
        "to_logits/weight": HID,
        **{f"blocks/{ln}/{p}": STACKED_VEC for ln in ("ln1", "ln2") for p in ("weight", "bias")},
        **{f"blocks/attn/{proj}/weight": STACKED_HID for proj in ("query_proj", "key_proj", "value_proj")},
        "blocks/attn/output_proj/weight": STACKED_HID,
        "blocks/attn/output_proj/bias": STACKED_VEC,
        "blocks/mlp/layers/0/weight": STACKED_HID,
        "blocks/mlp/layers/0/bias": STACKED_VEC,
        "blocks/mlp/layers/1/weight": STACKED_HID,
        "blocks/mlp/layers/1/bias": STACKED_VEC,
        "ln_f/weight": VEC,
        "ln_f/bias": VEC,
    }
    out[head] = ("head", *out[head][1:])
    return out


def test_equinox_transformer_with_stacked_blocks():
    model = build(GPT, jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((T,), jnp.int32)
    linear_call = vars(eqx.nn.Linear)["__call__"]
    # forward order: the last Linear called (the stacked ones inside scan are slices, never taken)
    assert readings(L.equinox(model, tokens)) == gpt_expected("to_logits/weight")
    assert readings(L.equinox(model, head="to_logits")) == gpt_expected("to_logits/weight")
    # without inputs or a head name: the last Linear in pytree (field) order
    assert readings(L.equinox(model)) == gpt_expected("blocks/mlp/layers/1/weight")
    assert readings(L.equinox(model, tokens, head=())) == {**gpt_expected("to_logits/weight"), "to_logits/weight": HID}
    assert vars(eqx.nn.Linear)["__call__"] is linear_call  # the recording patch is gone


def test_equinox_conv_transpose_norms_and_head_by_name():
    model = build(
        lambda key: {
            "up": eqx.nn.ConvTranspose2d(4, 6, 3, groups=2, key=key),  # weight (6, 2, 3, 3)
            "gn": eqx.nn.GroupNorm(2, 6),
            "bn": eqx.nn.BatchNorm(6, "batch", mode="ema"),  # weight, bias and its initial state
            "ln": eqx.nn.LayerNorm((4, 6)),  # 2-D weight, still a vector
            "head": eqx.nn.Linear(6, 2, key=key),
            "tail": eqx.nn.Linear(2, 2, key=key),
        },
        jax.random.key(0),
    )
    expected = {
        "up/weight": ("hidden", (1, 2, 3), (0,), ()),
        "up/bias": VEC,
        **{f"gn/{p}": VEC for p in ("weight", "bias")},
        **{f"bn/{p}": VEC for p in ("weight", "bias", "ema_first_time_index/init")},
        **{f"bn/ema_state_index/init/{i}": VEC for i in ("0", "1")},
        **{f"ln/{p}": VEC for p in ("weight", "bias")},
        "head/weight": ("head", (1,), (0,), ()),  # named like a head, although "tail" comes later
        "head/bias": VEC,
        "tail/weight": HID,
        "tail/bias": VEC,
    }
    assert readings(L.equinox(model)) == expected


class Custom(eqx.Module):
    proj: eqx.nn.Linear
    w: jax.Array
    gain: jax.Array


def test_equinox_unknown_matrix_needs_an_override():
    model = Custom(build(eqx.nn.Linear, 3, 4, key=jax.random.key(0)), np.zeros((4, 5)), np.ones(5))
    with pytest.raises(ValueError, match=r"^w \(shape \(4, 5\)\).*overrides="):
        L.equinox(model)
    got = L.equinox(model, overrides={"^w$": MatrixDims(fan_in=1, fan_out=0)})
    assert readings(got) == {
        "proj/weight": ("head", (1,), (0,), ()),
        "proj/bias": VEC,
        "w": ("hidden", (1,), (0,), ()),
        "gain": VEC,
    }
    assert readings(L.equinox(model, overrides={"^w$": "hidden"}))["w"] == HID  # a role reads [out, in]
    with pytest.raises(ValueError, match="head='nope' matches no matrix"):
        L.equinox(model, head="nope", overrides={"^w$": "vector"})


# --- Hugging Face Flax GPT-2 and from_names ---------------------------------------------------------------------


def hf_flax_gpt2():
    """FlaxGPT2LMHeadModel's params (tied lm_head: no params of its own); FlaxConv1D kernels are (features, in)."""
    ln = lambda: {"scale": jnp.zeros(D), "bias": jnp.zeros(D)}
    conv1d = lambda n_in, n_out: {"kernel": jnp.zeros((n_out, n_in)), "bias": jnp.zeros(n_out)}
    block = {
        "ln_1": ln(),
        "attn": {"c_attn": conv1d(D, 3 * D), "c_proj": conv1d(D, D)},
        "ln_2": ln(),
        "mlp": {"c_fc": conv1d(D, 4 * D), "c_proj": conv1d(4 * D, D)},
    }
    return {
        "transformer": {
            "wte": {"embedding": jnp.zeros((V, D))},
            "wpe": {"embedding": jnp.zeros((T, D))},
            "h": {"0": block, "1": block},
            "ln_f": ln(),
        }
    }


HF_GPT2_TRUE = {
    "transformer/wte/embedding": ("embedding", (0,), (1,), ()),
    "transformer/wpe/embedding": ("embedding", (0,), (1,), ()),
    **{f"transformer/ln_f/{p}": VEC for p in ("scale", "bias")},
    **{
        f"transformer/h/{i}/{name}": reading
        for i in ("0", "1")
        for name, reading in {
            **{f"{ln}/{p}": VEC for ln in ("ln_1", "ln_2") for p in ("scale", "bias")},
            **{
                f"{m}/{p}": HID if p == "kernel" else VEC
                for m in ("attn/c_attn", "attn/c_proj")
                for p in ("kernel", "bias")
            },
            **{
                f"{m}/{p}": HID if p == "kernel" else VEC
                for m in ("mlp/c_fc", "mlp/c_proj")
                for p in ("kernel", "bias")
            },
        }.items()
    },
}


def test_from_names_on_hf_flax_gpt2():
    got = readings(L.from_names(hf_flax_gpt2()))
    kernels = [p for p in HF_GPT2_TRUE if p.endswith("/kernel")]
    assert {p: r for p, r in got.items() if p not in kernels} == {
        p: r for p, r in HF_GPT2_TRUE.items() if p not in kernels
    }
    # The names fallback assumes Flax's [in, out]; FlaxConv1D stores [out, in], so its kernels need an override.
    assert {got[p] for p in kernels} == {("hidden", (0,), (1,), ())}
    fixed = L.from_names(hf_flax_gpt2()).override({r"/c_(attn|proj|fc)/kernel$": MatrixDims(fan_in=1, fan_out=0)})
    assert readings(fixed) == HF_GPT2_TRUE


# --- PyTorch state dicts ----------------------------------------------------------------------------------------


def nanogpt_state_dict():
    """karpathy/nanoGPT's state-dict keys (nn.Linear everywhere, so [out, in]) with flat dotted keys."""
    shapes = {"transformer.wte.weight": (V, D), "transformer.wpe.weight": (T, D)}
    for i in range(2):
        b = f"transformer.h.{i}."
        shapes |= {b + "ln_1.weight": (D,), b + "ln_1.bias": (D,)}
        shapes |= {b + "attn.c_attn.weight": (3 * D, D), b + "attn.c_attn.bias": (3 * D,)}
        shapes |= {b + "attn.c_proj.weight": (D, D), b + "ln_2.weight": (D,)}
        shapes |= {b + "mlp.c_fc.weight": (4 * D, D), b + "mlp.c_proj.weight": (D, 4 * D)}
    shapes |= {"transformer.ln_f.weight": (D,), "lm_head.weight": (V, D)}
    return {k: jnp.zeros(s) for k, s in shapes.items()}


def nanogpt_expected():
    out = {k: HID if len(v.shape) == 2 else VEC for k, v in nanogpt_state_dict().items()}
    out["transformer.wte.weight"] = out["transformer.wpe.weight"] = ("embedding", (0,), (1,), ())
    out["lm_head.weight"] = ("head", (1,), (0,), ())
    return out


def test_torch_flat_dotted_keys():
    layouts = L.torch(nanogpt_state_dict())
    assert readings(layouts) == nanogpt_expected()
    assert ("transformer.h.0.attn.c_attn.weight",) in layouts  # the dotted key is one path element
    assert readings(L.torch(nanogpt_state_dict(), head=r"c_proj"))["transformer.h.1.mlp.c_proj.weight"][0] == "head"


def test_torch_nested_dicts_read_the_same():
    nested = {}
    for key, value in nanogpt_state_dict().items():
        *parents, last = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    assert readings(L.torch(nested)) == {k.replace(".", "/"): r for k, r in nanogpt_expected().items()}


def test_torch_cnn_conv_and_head_in_dict_order():
    params = {
        "conv1.weight": jnp.zeros((32, 1, 3, 3)),
        "conv1.bias": jnp.zeros(32),
        "bn1.weight": jnp.zeros(32),
        "bn1.running_mean": jnp.zeros(32),
        "bn1.num_batches_tracked": jnp.zeros(()),
        "proj.weight": jnp.zeros((64, 1152)),
        "attn.in_proj_weight": jnp.zeros((3 * 64, 64)),
        "fc.weight": jnp.zeros((10, 64)),  # last 2-D weight in dict order ("proj" sorts last)
        "fc.bias": jnp.zeros(10),
    }
    assert readings(L.torch(params)) == {
        "conv1.weight": ("hidden", (1, 2, 3), (0,), ()),
        "conv1.bias": VEC,
        "bn1.weight": VEC,
        "bn1.running_mean": VEC,
        "bn1.num_batches_tracked": VEC,
        "proj.weight": HID,
        "attn.in_proj_weight": HID,
        "fc.weight": ("head", (1,), (0,), ()),
        "fc.bias": VEC,
    }


def test_torch_unknown_leaf_needs_an_override():
    params = {"pos_embed": jnp.zeros((1, T, D)), "head.weight": jnp.zeros((V, D))}
    with pytest.raises(ValueError, match=r"^pos_embed \(shape \(1, 5, 8\)\).*overrides="):
        L.torch(params)
    got = L.torch(params, overrides={"pos_embed": L.Layout("vector", batch=(0,))})
    assert readings(got) == {"pos_embed": ("vector", (), (), (0,)), "head.weight": ("head", (1,), (0,), ())}


# --- logical axis names -----------------------------------------------------------------------------------------

wlp = nn.with_logical_partitioning
normal = nn.initializers.normal(0.02)


class ScanMLP(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        zeros = wlp(nn.initializers.zeros, ("mlp",))
        h = nn.Dense(4 * D, kernel_init=wlp(normal, ("embed", "mlp")), bias_init=zeros, name="up")(x)
        return nn.Dense(D, kernel_init=wlp(normal, ("mlp", "embed")), use_bias=False, name="down")(h), None


class LinenLM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(V, D, embedding_init=wlp(normal, ("vocab", "embed")), name="embed")(tokens)
        q = nn.DenseGeneral((H, D // H), kernel_init=wlp(normal, ("embed", "heads", "kv")), use_bias=False, name="q")
        o = nn.DenseGeneral(D, axis=(-2, -1), kernel_init=wlp(normal, ("heads", "kv", "embed")), use_bias=False)
        x = x + o(q(x))
        meta = {nn.PARTITION_NAME: "layers"}
        stack = nn.scan(
            ScanMLP, variable_axes={"params": 0}, split_rngs={"params": True}, length=NL, metadata_params=meta
        )
        x, _ = stack(name="mlp")(x, None)
        x = nn.LayerNorm(scale_init=wlp(nn.initializers.ones, ("embed",)), use_bias=False, name="ln_f")(x)
        return nn.Dense(V, kernel_init=wlp(normal, ("embed", "vocab")), use_bias=False, name="lm_head")(x)


def test_logical_linen():
    variables = jax.eval_shape(LinenLM().init, jax.random.key(0), jnp.zeros((1, T), jnp.int32))
    expected = {
        "embed/embedding": ("embedding", (0,), (1,), ()),  # (vocab, embed)
        "q/kernel": ("hidden", (0,), (1, 2), ()),  # (embed, heads, kv)
        "DenseGeneral_0/kernel": ("hidden", (0, 1), (2,), ()),  # (heads, kv, embed)
        "mlp/up/kernel": ("hidden", (1,), (2,), (0,)),  # (layers, embed, mlp)
        "mlp/up/bias": STACKED_VEC,  # (layers, mlp)
        "mlp/down/kernel": ("hidden", (1,), (2,), (0,)),  # (layers, mlp, embed)
        "ln_f/scale": VEC,
        "lm_head/kernel": ("head", (0,), (1,), ()),  # (embed, vocab)
    }
    assert readings(L.logical(variables["params"])) == expected
    assert readings(L.logical(variables)) == expected  # the "params" collection is dropped from paths


class NnxLM(nnx.Module):
    def __init__(self, rngs):
        wp, lecun = nnx.with_partitioning, nnx.initializers.lecun_normal()
        self.embed = nnx.Embed(V, D, embedding_init=wp(nnx.initializers.normal(), ("vocab", "embed")), rngs=rngs)
        zeros = wp(nnx.initializers.zeros, ("mlp",))
        self.fc = nnx.Linear(D, 4 * D, kernel_init=wp(lecun, ("embed", "mlp")), bias_init=zeros, rngs=rngs)
        self.norm = nnx.RMSNorm(4 * D, scale_init=wp(nnx.initializers.ones, ("mlp",)), rngs=rngs)
        self.out = nnx.Linear(4 * D, V, kernel_init=wp(lecun, ("mlp", "vocab")), use_bias=False, rngs=rngs)

        @nnx.split_rngs(splits=NL)
        @nnx.vmap(transform_metadata={nnx.PARTITION_NAME: "layers"})
        def stack(rngs):
            return nnx.Linear(4 * D, 4 * D, kernel_init=wp(lecun, ("mlp", "hidden")), use_bias=False, rngs=rngs)

        self.blocks = stack(rngs)


def test_logical_nnx_module_and_state():
    with nnx.use_eager_sharding(False):  # names without a mesh
        model = nnx.eval_shape(lambda: NnxLM(nnx.Rngs(0)))
    expected = {
        "embed/embedding": ("embedding", (0,), (1,), ()),
        "fc/kernel": ("hidden", (0,), (1,), ()),
        "fc/bias": VEC,
        "norm/scale": VEC,
        "out/kernel": ("head", (0,), (1,), ()),
        "blocks/kernel": ("hidden", (1,), (2,), (0,)),  # (layers, mlp, hidden)
    }
    assert readings(L.logical(model)) == expected
    assert readings(L.logical(nnx.state(model, nnx.Param))) == expected


def boxed(shape, names):
    return nn.LogicallyPartitioned(jnp.zeros(shape), names)


def test_logical_windows_and_rules():
    params = {
        "conv": boxed((3, 3, 4, 8), ("window", "window", "embed", "mlp")),  # Flax [*window, in, out]
        "moe": boxed((4, D, 16), ("exp", "embed", "mlp")),
        "odd": boxed((D, 2, 16), ("embed", "group", "mlp")),
        "bias": jnp.zeros(D),  # unnamed, but a 1-D leaf can only be a vector
    }
    with pytest.raises(ValueError, match=r"^odd: .*\('embed', 'group', 'mlp'\).*rules="):
        L.logical(params)
    assert readings(L.logical(params, rules={"group": "batch"})) == {
        "conv": ("hidden", (0, 1, 2), (3,), ()),
        "moe": ("hidden", (1,), (2,), (0,)),
        "odd": ("hidden", (0,), (2,), (1,)),
        "bias": VEC,
    }
    pinned = L.logical({"odd": params["odd"]}, rules={"group": "fan_out", "mlp": "fan_out"})
    assert readings(pinned) == {"odd": ("hidden", (0,), (1, 2), ())}
    flipped = L.logical({"w": boxed((D, 16), ("embed", "mlp"))}, rules={"embed": "fan_out"})
    assert readings(flipped) == {"w": ("hidden", (1,), (0,), ())}


@pytest.mark.parametrize(
    ("params", "rules", "message"),
    [
        ({"w": boxed((D, 16), ("embed", "mlp"))}, {"embed": "rows"}, "rules['embed'] = 'rows' is not a kind"),
        ({"w": boxed((D, 16), ("embed",))}, None, "w: 1 axis names ('embed',) for a 2-D leaf"),
        ({"blk": {"w": jnp.zeros((D, 16))}}, None, "blk/w (shape (8, 16)) has no logical axis names"),
        ({"w": boxed((D, 16), ("embed", "mlp"))}, {"embed": "fan_in", "mlp": "fan_in"}, "w: the axis names"),
    ],
)
def test_logical_errors_name_the_leaf(params, rules, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        L.logical(params, rules)
