"""Small models for the training benchmarks, with Flax names that normopt's roles read (``head``, ``embed``).

* :class:`MLP`: ReLU MLP ``in → width × depth → classes`` (Dense layers ``hidden_i`` and ``head``).
* :class:`CharTransformer`: pre-LayerNorm causal transformer (Vaswani et al. 2017; GPT-2 layout) over characters,
  learned position embeddings, ``nn.MultiHeadDotProductAttention`` (3-D query/key/value/out kernels).
* :func:`deep_linear_init` / :func:`deep_linear_loss`: the product W_1 ⋯ W_L fitted to an ill-conditioned target
  (Arora, Cohen & Hazan 2018 study this landscape); relative loss ‖W_1 ⋯ W_L − A‖²_F / ‖A‖²_F.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import normopt


class MLP(nn.Module):
    """ReLU MLP: ``len(widths)`` hidden Dense layers, then a Dense ``head`` with ``classes`` logits."""

    widths: Sequence[int]
    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
        return nn.Dense(self.classes, name="head")(x)


class Block(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)) with a 4× GELU hidden layer. With ``record_logits`` the attention
    records each head's largest pre-softmax logit (:func:`normopt.max_logit_attention`, for QK-Clip)."""

    dim: int
    heads: int
    record_logits: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        attention_fn = normopt.max_logit_attention if self.record_logits else nn.dot_product_attention
        attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, attention_fn=attention_fn, name="attn")
        x = x + attn(nn.LayerNorm()(x), mask=mask, sow_weights=self.record_logits)
        h = nn.gelu(nn.Dense(4 * self.dim, name="mlp_in")(nn.LayerNorm()(x)))
        return x + nn.Dense(self.dim, name="mlp_out")(h)


class CharTransformer(nn.Module):
    """Causal character model: ``tokens [batch, context] → logits [batch, context, vocab]``."""

    vocab: int
    context: int = 64
    dim: int = 128
    depth: int = 2
    heads: int = 4
    record_logits: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab, self.dim, name="embed")(tokens)
        pos = self.param("wpe", nn.initializers.normal(0.02), (self.context, self.dim))
        x = x + pos[: tokens.shape[1]]
        for i in range(self.depth):
            x = Block(self.dim, self.heads, self.record_logits, name=f"block_{i}")(x)
        return nn.Dense(self.vocab, name="head")(nn.LayerNorm()(x))


def ill_conditioned_target(dim: int, cond: float, seed: int = 1234) -> np.ndarray:
    """A = U diag(s) Vᵀ with random orthogonal U, V and singular values log-spaced from 1 to 1/cond."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    v, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return ((u * np.logspace(0, -np.log10(cond), dim)) @ v.T).astype(np.float32)


def deep_linear_init(key: jax.Array, dim: int, depth: int) -> dict[str, dict[str, jax.Array]]:
    """``depth`` square layers ``layer_i/kernel`` with N(0, 1/dim) entries (Xavier), so the product has RMS ~ 1."""
    keys = jax.random.split(key, depth)
    return {f"layer_{i}": {"kernel": jax.random.normal(k, (dim, dim)) / np.sqrt(dim)} for i, k in enumerate(keys)}


def deep_linear_loss(params: dict[str, dict[str, jax.Array]], target: jax.Array) -> jax.Array:
    """‖W_1 ⋯ W_L − A‖²_F / ‖A‖²_F."""
    product = params["layer_0"]["kernel"]
    for i in range(1, len(params)):
        product = product @ params[f"layer_{i}"]["kernel"]
    return jnp.sum((product - target) ** 2) / jnp.sum(target**2)
