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

from normopt import norms as norms_lib
from normopt._numerics import check_float_leaves, check_range


def _need_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(f"{name} acts on the parameters: call update(updates, state, params) with params")


def soft_threshold(x: jax.Array, threshold: Any) -> jax.Array:
    """Soft-thresholding, the prox of τ‖·‖₁ (elementwise).

        S_τ(x) = sign(x)·max(|x| − τ, 0) = argmin_z τ‖z‖₁ + ½‖z − x‖₂²

    Args:
      x: an array.
      threshold: τ ≥ 0 (a scalar or an array broadcasting against ``x``).

    Returns:
      S_τ(x), same shape and dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> from normopt.family.prox import soft_threshold
      >>> soft_threshold(jnp.array([-2.0, 0.3, 1.5]), 0.5)
      Array([-1.5,  0. ,  1. ], dtype=float32)

    References:
      Daubechies, Defrise & De Mol, An iterative thresholding algorithm for linear inverse problems with a sparsity
      constraint, Comm. Pure Appl. Math., 2004.
    """
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0).astype(x.dtype)


class ProxL1State(NamedTuple):
    """State of :func:`prox_l1`.

    Attributes:
      count: shape=(), int32: the number of updates so far (indexes a learning-rate schedule).
    """

    count: jax.Array  # shape=(), dtype=int32: number of updates so far (indexes a learning-rate schedule)


def prox_l1(learning_rate: optax.ScalarOrSchedule, *, strength: Any) -> optax.GradientTransformation:
    """Soft-thresholding after the update: the proximal step of η_t·λ‖x‖₁.

        x⁺ = S_τ(x + u),   τ = η_t·λ,   S_τ(y) = sign(y)·max(|y| − τ, 0)

    Chained after ``optax.sgd(η)`` this is ISTA for ``f(x) + λ‖x‖₁``: coordinates whose value stays within τ of
    zero become exactly zero.

    Args:
      learning_rate: the step size η_t of the update it follows (float or optax schedule; the same as the
        optimizer before it), so that τ = η_t·λ.
      strength: the ℓ1 penalty λ ≥ 0 (may be a traced hyperparameter).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ProxL1State` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = optax.chain(optax.sgd(0.1), normopt.prox_l1(0.1, strength=1.0))  # ISTA
      >>> x = jnp.array([1.0, 0.05])
      >>> u, _ = opt.update(jnp.zeros(2), opt.init(x), x)
      >>> optax.apply_updates(x, u)
      Array([0.9, 0. ], dtype=float32)

    References:
      Beck & Teboulle, `A fast iterative shrinkage-thresholding algorithm for linear inverse problems
      <https://doi.org/10.1137/080716542>`_, SIAM J. Imaging Sciences, 2009.
    """
    check_range("strength", strength, 0, owner="prox_l1")
    if not callable(learning_rate):
        check_range("learning_rate", learning_rate, 0, owner="prox_l1")

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
    """Projected step for any projection of a parameter tree. Stateless.

        x⁺ = Π(x + u),   returns Π(x + u) − x

    Args:
      projection: a map from a parameter tree to a tree of the same structure, e.g. from :mod:`optax.projections`.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1), normopt.project(optax.projections.projection_non_negative))

    References:
      Bertsekas, Nonlinear Programming, 1999, §2.3 (gradient projection).
    """
    if not callable(projection):
        raise TypeError(f"project: projection must be a callable of the parameter tree, got {projection!r}")

    def update_fn(updates, state, params=None):
        _need_params(params, "project")
        target = projection(optax.apply_updates(params, updates))
        return jax.tree.map(lambda t, x, u: (t - x).astype(u.dtype), target, params, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _checked_projection(projection: Callable[[Any], Any]) -> optax.GradientTransformation:
    """:func:`project` for normopt's ball and simplex projections: ``init`` rejects integer and boolean leaves (a
    ``TypeError`` naming the leaf path), and a non-finite entry anywhere in x + u makes every entry of the result
    NaN (these projections couple the whole tree: clipping or renormalizing inf would hide it as a finite step)."""

    def guarded(tree):
        out = projection(tree)
        leaves = jax.tree.leaves(tree)
        if not leaves:
            return out
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        return jax.tree.map(lambda y: jnp.where(finite, y, jnp.full_like(y, jnp.nan)), out)

    tx = project(guarded)

    def init_fn(params):
        check_float_leaves(params)  # a TypeError naming the leaf, not a silent (rounded) step
        return tx.init(params)

    return optax.GradientTransformation(init_fn, tx.update)


def _l2_ball(tree: Any, radius: Any) -> Any:
    """Π_{‖x‖₂ ≤ r}(tree) = tree·min(1, r/‖tree‖₂), with ‖·‖₂ of the whole tree taken after dividing by max|x|
    (``normopt.norms``' ℓ2), so 1e±20 entries in fp32 neither overflow nor underflow."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    per_leaf = jnp.stack([norms_lib._l2(x) for x in leaves])  # ‖tree‖ = ‖(‖leaf‖)_leaves‖, each scale-safe
    total = norms_lib._l2(per_leaf)
    factor = jnp.minimum(1.0, radius / total)  # ‖x‖ = 0: r/0 = inf, factor 1
    return jax.tree.map(lambda x: (x * factor.astype(per_leaf.dtype)).astype(x.dtype), tree)


def project_l2_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """Projection onto the ℓ2 ball of the whole parameter tree.

        x⁺ = Π_{‖x‖₂ ≤ r}(x + u) = (x + u)·min(1, r/‖x + u‖₂)

    Args:
      radius: r > 0 (may be traced).

    Returns:
      An ``optax.GradientTransformation`` (the projection through :func:`project`; the norm is computed after
      dividing by max|x|, so it is scale-equivariant from 1e-30 to 1e30 in fp32). ``init`` raises a ``TypeError``
      naming any integer or boolean leaf; a NaN/inf anywhere gives a NaN update.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1), normopt.project_l2_ball(2.0))

    References:
      Bertsekas, Nonlinear Programming, 1999, §2.3.
    """
    check_range("radius", radius, 0, lo_open=True, owner="project_l2_ball")
    return _checked_projection(lambda tree: _l2_ball(tree, radius))


def project_linf_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """Projection onto the ℓ∞ ball of the whole parameter tree.

        x⁺ = clip(x + u, −r, r)

    Args:
      radius: r > 0 (may be traced).

    Returns:
      An ``optax.GradientTransformation`` (``optax.projections.projection_linf_ball`` through :func:`project`).
      ``init`` raises a ``TypeError`` naming any integer or boolean leaf; a NaN/inf anywhere gives a NaN update.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1), normopt.project_linf_ball(0.5))

    References:
      Bertsekas, Nonlinear Programming, 1999, §2.3.
    """
    check_range("radius", radius, 0, lo_open=True, owner="project_linf_ball")
    return _checked_projection(lambda tree: optax.projections.projection_linf_ball(tree, radius))


def project_l1_ball(radius: Any = 1.0) -> optax.GradientTransformation:
    """Projection onto the ℓ1 ball of the whole parameter tree.

        x⁺ = argmin_{‖z‖₁ ≤ r} ‖z − (x + u)‖₂

    Args:
      radius: r > 0 (may be traced).

    Returns:
      An ``optax.GradientTransformation`` (``optax.projections.projection_l1_ball`` through :func:`project`).
      ``init`` raises a ``TypeError`` naming any integer or boolean leaf; a NaN/inf anywhere gives a NaN update.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1), normopt.project_l1_ball(1.0))

    References:
      Duchi, Shalev-Shwartz, Singer & Chandra, `Efficient projections onto the l1-ball for learning in high
      dimensions <https://doi.org/10.1145/1390156.1390191>`_, ICML 2008.
    """
    check_range("radius", radius, 0, lo_open=True, owner="project_l1_ball")
    return _checked_projection(lambda tree: optax.projections.projection_l1_ball(tree, radius))


def project_simplex(scale: Any = 1.0) -> optax.GradientTransformation:
    """Projection onto the scaled probability simplex of the whole parameter tree.

        x⁺ = argmin_{p ≥ 0, Σp = s} ‖p − (x + u)‖₂

    Args:
      scale: s > 0, the sum of the entries (may be traced).

    Returns:
      An ``optax.GradientTransformation`` (``optax.projections.projection_simplex`` through :func:`project`).
      ``init`` raises a ``TypeError`` naming any integer or boolean leaf; a NaN/inf anywhere gives a NaN update.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1), normopt.project_simplex())

    References:
      Duchi, Shalev-Shwartz, Singer & Chandra, `Efficient projections onto the l1-ball for learning in high
      dimensions <https://doi.org/10.1145/1390156.1390191>`_, ICML 2008.
    """
    check_range("scale", scale, 0, lo_open=True, owner="project_simplex")
    return _checked_projection(lambda tree: optax.projections.projection_simplex(tree, scale))
