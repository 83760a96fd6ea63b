"""Equinox training loop with normopt: a small CNN on scikit-learn's digits, with the layout read from the model.

Equinox stores conv weights ``[out, in, kh, kw]`` and dense weights ``[out, in]``, so the optimizer is told how
each array is read by :func:`normopt.layouts.equinox`, which reads every array from the ``eqx.nn`` layer that owns
it and, given an example input, finds the output head (the last ``Linear`` called). Training is plain optax on
``eqx.filter(model, eqx.is_array)`` inside one ``eqx.filter_jit`` step.

    python examples/equinox_cnn.py                                  # normopt.muon, 300 steps
    python examples/equinox_cnn.py --optimizer scion --lr 0.05
    python examples/equinox_cnn.py --optimizer adamw --lr 3e-3      # the optax baseline
    python examples/equinox_cnn.py --steps 5                        # a smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import normopt

TEST_SIZE = 297  # the last 297 of the 1797 digits are held out


class CNN(eqx.Module):
    """One 1×8×8 image → 10 logits: two 3×3 convs (16, 32 channels, relu), flatten, 64-wide relu, linear head."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.fc = eqx.nn.Linear(32 * 8 * 8, 64, key=k3)
        self.head = eqx.nn.Linear(64, 10, key=k4)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        x = jax.nn.relu(self.fc(x.reshape(-1)))
        return self.head(x)


def make_optimizer(
    name: str, learning_rate: float, steps: int, layout: normopt.layouts.Layouts
) -> optax.GradientTransformation:
    """The optimizer called ``name``, with a cosine-decayed learning rate; normopt's read the model via ``layout``."""
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    if name == "muon":  # conv and hidden weights: polar factor ×√(fan_out/fan_in); head and biases: AdamW
        return normopt.muon(schedule, layout=layout)
    if name == "scion":  # per-role norms: rms_to_rms hidden, rms_to_linf head, rms biases
        return normopt.scion(schedule, layout=layout, head_radius=8.0)
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=1e-4)
    raise ValueError(f"--optimizer must be one of muon, scion, adamw; got {name!r}")


def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The 1797 digits as ``(N, 1, 8, 8)`` images in [0, 1]; the first 1500 train, the last 297 test."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return (x[:-TEST_SIZE], y[:-TEST_SIZE]), (x[-TEST_SIZE:], y[-TEST_SIZE:])


def loss_fn(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


@eqx.filter_jit
def accuracy(model: CNN, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == y)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="muon", choices=["muon", "scion", "adamw"])
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load()
    model = CNN(jax.random.key(args.seed))
    params = eqx.filter(model, eqx.is_array)
    # The model maps one (1, 8, 8) image to logits, so the example input is one image: x_train[0].
    layout = normopt.layouts.equinox(model, x_train[0])
    tx = make_optimizer(args.optimizer, args.lr, args.steps, layout)
    if args.optimizer != "adamw":
        normopt.describe(params, tx)  # which norm, fan-in/fan-out and scale each parameter gets
    opt_state = tx.init(params)

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    rng = np.random.default_rng(args.seed)
    losses = []
    for step in range(args.steps):
        idx = rng.choice(len(x_train), args.batch, replace=False)
        model, opt_state, loss = train_step(model, opt_state, x_train[idx], y_train[idx])
        losses.append(float(loss))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  train loss {losses[-1]:.4f}")
    result = {
        "first_loss": losses[0],
        "train_loss": float(eqx.filter_jit(loss_fn)(model, x_train, y_train)),
        "test_accuracy": float(accuracy(model, x_test, y_test)),
    }
    print(f"{args.optimizer}: full train loss {result['train_loss']:.4f}, test accuracy {result['test_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
