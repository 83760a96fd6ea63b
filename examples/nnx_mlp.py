"""Flax NNX training loop with normopt: an MLP on scikit-learn's digits, trained through ``nnx.Optimizer``.

normopt optimizers are optax transformations, so they plug into ``nnx.Optimizer(model, tx, wrt=nnx.Param)``
unchanged; ``normopt.layouts.nnx(model, x_example)`` tells them how each parameter is read (fan-in, fan-out, role:
the output head is the last ``Linear`` called). The hidden kernels start from :func:`normopt.init.spectral`
(‖W‖_{RMS→RMS} = 1), the geometry that Muon's ``scale="spectral"`` and Scion's ``rms_to_rms`` steps are measured in.

    python examples/nnx_mlp.py                                  # normopt.muon, 300 steps
    python examples/nnx_mlp.py --optimizer scion --lr 0.05
    python examples/nnx_mlp.py --optimizer adamw --lr 3e-3      # the optax baseline
    python examples/nnx_mlp.py --width 16 --steps 5             # a smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import normopt


class MLP(nnx.Module):
    """64 → width → width → 10, tanh; the last layer is called ``head`` so that Scion gives it its own norm."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        dense = lambda i, o: nnx.Linear(i, o, kernel_init=normopt.init.spectral(), rngs=rngs)
        self.layers = nnx.List([dense(64, width), dense(width, width)])
        self.head = dense(width, 10)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return self.head(x)


def make_optimizer(
    name: str, learning_rate: float, steps: int, layout: normopt.layouts.Layouts | None = None
) -> optax.GradientTransformation:
    """The optimizer called ``name``, with a cosine-decayed learning rate (an optax schedule).

    ``layout`` (from :func:`normopt.layouts.nnx`) tells the normopt optimizers how each parameter is read.
    """
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    if name == "muon":  # matrices: momentum + polar factor ×√(fan_out/fan_in); head and vectors: AdamW
        return normopt.muon(schedule, layout=layout)
    if name == "scion":  # per-role norms: rms_to_rms hidden, rms_to_linf head
        return normopt.scion(schedule, layout=layout, head_radius=8.0)
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=1e-4)
    raise ValueError(f"--optimizer must be one of muon, scion, adamw; got {name!r}")


def load(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The 1797 8×8 digits scaled to [0, 1], shuffled, split 1440 train / 357 test."""
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = (x[perm] / 16.0).astype(np.float32), y[perm]
    return (x[:1440], y[:1440]), (x[1440:], y[1440:])


def loss_fn(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="muon", choices=["muon", "scion", "adamw"])
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load(args.seed)
    model = nnx.jit(lambda: MLP(args.width, rngs=nnx.Rngs(args.seed)))()  # initialise in one compiled call
    layout = normopt.layouts.nnx(model, x_train[:1])  # each Param read from its module; the head: last Linear called
    tx = make_optimizer(args.optimizer, args.lr, args.steps, layout)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    if args.optimizer != "adamw":
        normopt.describe(nnx.state(model, nnx.Param), tx)  # which norm each parameter gets

    rng = np.random.default_rng(args.seed)
    losses = []
    for step in range(args.steps):
        idx = rng.choice(len(x_train), args.batch, replace=False)
        losses.append(float(train_step(model, optimizer, x_train[idx], y_train[idx])))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  train loss {losses[-1]:.4f}")
    result = {
        "first_loss": losses[0],
        "train_loss": float(loss_fn(model, x_train, y_train)),
        "test_accuracy": float(accuracy(model, x_test, y_test)),
    }
    print(f"{args.optimizer}: full train loss {result['train_loss']:.4f}, test accuracy {result['test_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
