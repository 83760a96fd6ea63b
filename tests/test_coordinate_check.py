"""Coordinate check (Yang & Hu 2021, µP; Yang, Simon & Bernstein 2023): one step, many widths.

An MLP ``x → W_in → tanh → W_hidden → tanh → W_head`` is initialised with :func:`normopt.init.spectral` and takes
one optimizer step of learning rate η on a fixed batch. We measure the RMS change of the hidden layer's
pre-activations ``h = tanh(x W_in) W_hidden`` divided by η, at widths 64, 256 and 1024.

RMS→RMS optimizers bound ‖ΔW‖_{RMS→RMS} by η for every layer, so ‖Δh‖_rms/η must not depend on the width.
AdamW's first step is ≈ η·sign(g): each entry moves by η, the RMS→RMS norm of the update grows like √width and the
pre-activations, which sum width aligned terms, move more and more.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt

pytestmark = pytest.mark.slow  # trains at five widths (≈ 30 s on 2 cores): run with the slow tests

WIDTHS = (64, 256, 1024)
D_IN, CLASSES, BATCH = 16, 10, 32
LR = 1e-3  # small: the one-step change is then the linear response, Δh/η, which is what µP reasons about


@functools.cache
def _setup(width: int) -> tuple[dict, dict, jax.Array]:
    """Spectral-init params, their gradient on the fixed batch and the hidden pre-activations, shared by all
    optimizers."""
    k_in, k_hidden, k_head = jax.random.split(jax.random.key(0), 3)
    init = normopt.init.spectral()
    params = {
        "input": {"kernel": init(k_in, (D_IN, width))},
        "hidden": {"kernel": init(k_hidden, (width, width))},
        "head": {"kernel": init(k_head, (width, CLASSES))},
    }
    x, y = _batch()
    return params, jax.jit(jax.grad(_loss))(params, x, y), _preactivations(params, x)


def _preactivations(params: dict, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params["input"]["kernel"]) @ params["hidden"]["kernel"]


def _loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = jnp.tanh(_preactivations(params, x)) @ params["head"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batch() -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (BATCH, D_IN)), jax.random.randint(ky, (BATCH,), 0, CLASSES)


def _one_step(tx: optax.GradientTransformation, width: int) -> tuple[float, np.ndarray]:
    """‖Δh‖_rms / η after one update, and the hidden layer's update as float64."""
    params, grads, h = _setup(width)

    @jax.jit
    def step(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates, _preactivations(optax.apply_updates(params, updates), _batch()[0])

    updates, h_new = step(params, grads)
    dh = np.asarray(h_new, np.float64) - np.asarray(h, np.float64)
    return float(np.sqrt(np.mean(dh**2))) / LR, np.asarray(updates["hidden"]["kernel"], np.float64)


OPTIMIZERS = {
    "muon_spectral": lambda: normopt.muon(LR, scale="spectral"),
    "scion": lambda: normopt.scion(LR),
    "adamw": lambda: optax.adamw(LR, weight_decay=0.0),
}


@pytest.fixture(scope="module")
def sweep() -> dict[str, list[tuple[float, np.ndarray]]]:
    return {name: [_one_step(make(), w) for w in WIDTHS] for name, make in OPTIMIZERS.items()}


@pytest.mark.parametrize("name", ["muon_spectral", "scion"])
def test_rms_to_rms_optimizers_are_width_independent(sweep, name):
    changes = [c for c, _ in sweep[name]]
    assert all(np.isfinite(changes)) and min(changes) > 0
    assert 0.5 <= max(changes) / min(changes) <= 2.0, f"{name}: ‖Δh‖_rms/η over widths {WIDTHS} = {changes}"


@pytest.mark.parametrize("name", ["muon_spectral", "scion"])
def test_hidden_update_has_rms_to_rms_norm_lr(sweep, name):
    # Why the curve is flat: ‖ΔW‖_{RMS→RMS} = √(d_in/d_out)·σ_max(ΔW) = η at every width (exact SVD in float64;
    # the hidden layer is square, so it is σ_max). Polar Express with 5 steps is approximate: 15 % tolerance.
    # Widths 64 and 256 only: a float64 SVD at 1024 would cost more than the whole sweep.
    for width, (_, update) in zip(WIDTHS[:2], sweep[name][:2], strict=True):
        sigma_max = np.linalg.svd(update, compute_uv=False)[0]
        np.testing.assert_allclose(sigma_max, LR, rtol=0.15, err_msg=f"width {width}")


def test_adamw_grows_with_width(sweep):
    changes = [c for c, _ in sweep["adamw"]]
    assert changes[0] < changes[1] < changes[2], changes
    assert changes[-1] / changes[0] >= 4.0, f"adamw: ‖Δh‖_rms/η over widths {WIDTHS} = {changes}"
