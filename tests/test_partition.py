"""Per-leaf norm choice from Flax paths and shapes, and describe()."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import normopt
from normopt import norms, partition
from normopt.dims import MatrixDims


class Block(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(50, 16)(tokens)
        x = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=16)(x)
        x = nn.Conv(8, (3,))(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(50, name="head")(x)


def test_flax_linen_block_is_read_as_documented():
    params = Block().init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    rows = {r["path"]: r for r in normopt.describe(params, normopt.scion(0.1), print_fn=None)}
    att = "params/MultiHeadDotProductAttention_0"
    assert rows["params/Embed_0/embedding"]["norm"] == "l1_to_rms"
    assert rows["params/head/kernel"]["norm"] == "rms_to_linf"
    assert rows["params/LayerNorm_0/scale"]["norm"] == "rms"
    q, out = rows[f"{att}/query/kernel"], rows[f"{att}/out/kernel"]
    assert (q["norm"], q["fan_in"], q["fan_out"]) == ("rms_to_rms", 16, 16)  # [features, heads, head_dim]
    assert (out["fan_in"], out["fan_out"]) == (16, 16)  # [heads, head_dim, features]
    conv = rows["params/Conv_0/kernel"]  # [window, in, out] → [3·16, 8]
    assert (conv["fan_in"], conv["fan_out"], conv["batch_axes"]) == (48, 8, "")


def test_layout_override_and_first_match_wins():
    path = ("params", "experts", "kernel")
    leaf = jnp.zeros((4, 8, 16))
    names_only = partition.read(path, leaf)  # last resort: leading axes are a stack
    assert (names_only.fan_in, names_only.fan_out, names_only.batch, names_only.source) == ((1,), (2,), (0,), "names")
    custom = {"experts": MatrixDims(fan_in=(0, 1), fan_out=(2,))}
    assert partition.read(path, leaf, custom).dims == MatrixDims(fan_in=(0, 1), fan_out=(2,))
    assert partition.first_match({"exp": 1, "experts": 2}, path) == 1
    assert partition.read(("bias",), jnp.zeros(3)).role == "vector"
    with pytest.raises(ValueError, match=r"params/experts/kernel \(shape \(4, 8, 16\)\): strict=True"):
        partition.read(path, leaf, strict=True)


def test_describe_accepts_norm_specs_and_raises_for_unhandled_leaves():
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    rows = normopt.describe(params, {"w": norms.spectral(), "b": None}, print_fn=None)
    assert [(r["path"], r["norm"]) for r in rows] == [("b", "identity"), ("w", "spectral")]
    with pytest.raises(ValueError, match=r"b \(shape \(3,\)\).*at least 2 dimensions"):
        normopt.describe(params, norms.rms_to_rms(), print_fn=None)
    printed = []
    normopt.describe(params, normopt.sign_sgd(0.1), print_fn=printed.append)
    assert "linf" in printed[0] and "path" in printed[0].splitlines()[0]
