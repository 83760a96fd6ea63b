"""Proximal and projection steps, usable after any update (proximal gradient / projected gradient descent).

A proximal step replaces ``x⁺ = x + u`` (``u`` the update of any optimizer, learning rate included) by

    x⁺ = prox_{τ h}(x + u) = argmin_z  h(z)·τ + ½‖z − (x + u)‖₂²,

and returns the update ``x⁺ − x``. With ``u = −η·g`` and ``τ = η·λ`` this is proximal gradient descent on
``f + λ·h`` (ISTA for the lasso, Daubechies, Defrise & De Mol 2004; Beck & Teboulle 2009). A projection is the prox
of the indicator of a convex set C: ``x⁺ = Π_C(x + u)`` (projected gradient descent). In the norm view, the prox of
the ℓ1 norm is soft-thresholding, and projecting onto a norm ball keeps ``‖x‖ ≤ r`` (compare Scion's constrained
mode, which reaches the ball by a convex combination instead).

The projections are optax's own (:mod:`optax.projections`); they act on the whole parameter tree as one vector (one
ball, one simplex). For one ball per leaf, project each leaf: ``project(lambda p: jax.tree.map(lambda x:
optax.projections.projection_l2_ball(x, r), p))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt.partition import check_float_leaves


def _need_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(f"{name} acts on the parameters: call update(updates, state, params) with params")


def soft_threshold(x: jax.Array, threshold: Any) -> jax.Array:
    """S_τ(x) = sign(x)·max(|x| − τ, 0), the prox of τ‖·‖₁ (elementwise)."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0).astype(x.dtype)


class ProxL1State(NamedTuple):
    """State of :func:`prox_l1`."""

    count: jax.Array  # shape=(), dtype=int32: number of updates so far (indexes a learning-rate schedule)


def prox_l1(strength: Any, learning_rate: optax.ScalarOrSchedule = 1.0) -> optax.GradientTransformation:
    """Soft-thresholding after the update: x⁺ = S_τ(x + u) with τ = η_t·λ, i.e. the prox of η_t·λ‖x‖₁.

    Chained after ``optax.sgd(η)`` this is ISTA for ``f(x) + λ‖x‖₁`` (Beck & Teboulle 2009, "A fast iterative
    shrinkage-thresholding algorithm"): coordinates whose value stays within τ of zero become exactly zero.

    Args:
      strength: the ℓ1 penalty λ ≥ 0 (may be a traced hyperparameter).
      learning_rate: the step size η_t of the update it follows (float or optax schedule), so that τ = η_t·λ.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    if isinstance(strength, (int, float)) and strength < 0:
        raise ValueError(f"prox_l1: strength must be >= 0, got {strength}")

    def init_fn(params):
        check_float_leaves(params)
        return ProxL1State(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        _need_params(params, "prox_l1")
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        tau = eta * strength
        new = jax.tree.map(lambda x, u: (soft_threshold(x + u, tau) - x).astype(u.dtype), params, updates)
        return new, ProxL1State(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def project(projection: Callable[[Any], Any]) -> optax.GradientTransformation:
    """Projected step: x⁺ = Π(x + u) for any projection ``Π`` of a parameter tree (e.g. from
    :mod:`optax.projections`); returns the update ``Π(x + u) − x``. Stateless."""

    def update_fn(updates, state, params=None):
        _need_params(params, "project")
        target = projection(optax.apply_updates(params, updates))
        return jax.tree.map(lambda t, x, u: (t - x).astype(u.dtype), target, params, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def project_l2_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """x⁺ = Π_{‖x‖₂ ≤ r}(x + u) = (x + u)·min(1, r/‖x + u‖₂) (``optax.projections.projection_l2_ball``)."""
    return project(lambda tree: optax.projections.projection_l2_ball(tree, radius))


def project_linf_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """x⁺ = clip(x + u, −r, r), the projection onto ‖x‖∞ ≤ r (``optax.projections.projection_linf_ball``)."""
    return project(lambda tree: optax.projections.projection_linf_ball(tree, radius))


def project_l1_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """x⁺ = Π_{‖x‖₁ ≤ r}(x + u) (Duchi et al. 2008; ``optax.projections.projection_l1_ball``)."""
    return project(lambda tree: optax.projections.projection_l1_ball(tree, radius))


def project_simplex(scale: Any = 1.0) -> optax.GradientTransformation:
    """x⁺ = argmin_{p ≥ 0, Σp = s} ‖p − (x + u)‖₂ (Duchi et al. 2008; ``optax.projections.projection_simplex``)."""
    return project(lambda tree: optax.projections.projection_simplex(tree, scale))
