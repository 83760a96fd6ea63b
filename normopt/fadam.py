"""FAdam: Adam read as natural gradient descent with a diagonal empirical Fisher (Hwang 2024, "FAdam: Adam is a
natural gradient optimizer using diagonal empirical Fisher information", arXiv:2405.12807, Algorithm 1).

Natural gradient is steepest descent under the Fisher metric ‖Δ‖_F = √(Δᵀ F Δ): the regularized step is
−η·F⁻¹g. FAdam takes F ≈ diag(f), f the bias-corrected EMA of g², and the power p (p = ½ is Adam's
denominator). Per leaf, at step t:

    f_t  = ρ_t·f_{t−1} + (1 − ρ_t)·g_t²,   ρ_t = β₂(1 − β₂^{t−1})/(1 − β₂^t)   (= Adam's ν_t / (1 − β₂^t))
    ε_t  = ε·min(1, rms(g_t))                                                   (adaptive epsilon)
    ḡ    = g_t / (f_t^p + ε_t),            ḡ ← ḡ / max(1, rms(ḡ)/c)             (natural gradient, clipped)
    m_t  = β₁·m_{t−1} + (1 − β₁)·ḡ                                               (momentum on the natural gradient)
    ḡ_w  = θ / (f_t^p + ε_t),              ḡ_w ← ḡ_w / max(1, rms(ḡ_w)/c)       (natural gradient of ½‖θ‖²)
    θ    ← θ − η·(m_t + λ·ḡ_w)

With β₁ = 0, c = ∞ and ε → 0 the first step is sign(g): steepest descent under ℓ∞, like Adam.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import partition


class ScaleByFAdamState(NamedTuple):
    """State of :func:`scale_by_fadam`."""

    count: jax.Array  # shape=(), dtype=int32: number of updates so far
    mu: optax.Updates  # like the params: m_t, the EMA of clipped natural gradients (no bias correction)
    nu: optax.Updates  # like the params: Adam's ν_t = EMA of g² without bias correction; f_t = ν_t / (1 − β₂^t)


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def _clip_rms(x: jax.Array, clip: Any) -> jax.Array:
    return x / jnp.maximum(1.0, _rms(x) / clip)


def _div(x: jax.Array, d: jax.Array) -> jax.Array:
    """x / d with 0 where d = 0 (f = 0 and ε_t = 0 happen only where the whole leaf's gradient is 0)."""
    return jnp.where(d == 0, 0.0, x / jnp.where(d == 0, 1.0, d))  # NaN stays NaN (never a silent 0 step)


def scale_by_fadam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    clip: Any = 1.0,
    p: Any = 0.5,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformation:
    """FAdam's direction m_t + λ·ḡ_w (module docstring); follow with ``optax.scale_by_learning_rate``.

    Args:
      b1: momentum decay β₁ of the natural gradient.
      b2: decay β₂ of the Fisher estimate.
      eps: ε, scaled per leaf by min(1, rms(g)).
      clip: c, the largest RMS of the natural gradient and of the weight-decay term (``jnp.inf``: no clipping).
      p: the Fisher power (½ as in Adam; 1 is the literal diagonal natural gradient F⁻¹g).
      weight_decay: λ of the Fisher-preconditioned weight decay; a literal 0 needs no ``params``.

    All arguments may be traced hyperparameters.
    """
    decay = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)

    def init_fn(params):
        partition.check_float_leaves(params)  # a TypeError naming the leaf, not a silent step
        zeros = optax.tree.zeros_like(params)
        return ScaleByFAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        if decay and params is None:
            raise ValueError("fadam with weight_decay != 0 needs the params: call update(grads, state, params)")
        count = optax.safe_increment(state.count)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        fisher = optax.tree.bias_correction(nu, b2, count)
        denom = jax.tree.map(lambda f, g: f**p + eps * jnp.minimum(1.0, _rms(g)), fisher, updates)
        natural = jax.tree.map(lambda g, d: _clip_rms(_div(g, d), clip), updates, denom)
        mu = optax.tree.update_moment(natural, state.mu, b1, 1)
        direction = mu
        if decay:
            direction = jax.tree.map(lambda m, x, d: m + weight_decay * _clip_rms(_div(x, d), clip), mu, params, denom)
        direction = jax.tree.map(lambda u, g: u.astype(g.dtype), direction, updates)
        return direction, ScaleByFAdamState(
            count, optax.tree.cast_like(mu, state.mu), optax.tree.cast_like(nu, state.nu)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def fadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    clip: Any = 1.0,
    p: Any = 0.5,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformation:
    """FAdam (Hwang 2024): ``optax.chain(scale_by_fadam(...), optax.scale_by_learning_rate(learning_rate))``.

    The paper trains with weight decay (λ = 0.1 for its LLM runs); the default here is 0, as elsewhere in normopt.
    """
    return optax.chain(scale_by_fadam(b1, b2, eps, clip, p, weight_decay), optax.scale_by_learning_rate(learning_rate))
