"""Damped Newton for small parameter vectors, with full, diagonal or Kronecker-factored curvature.

Newton's method is steepest descent under the local Hessian norm ‖Δ‖_H = √(Δᵀ H Δ) (Boyd & Vandenberghe 2004,
§9.5): the regularized step argmin_Δ ⟨g, Δ⟩ + ½‖Δ‖²_H is Δ = −H⁻¹g. "Damped" has its two classical meanings, both
available: Levenberg–Marquardt damping P = H + λI, and a step length t ≤ 1 from a backtracking line search
(Boyd & Vandenberghe's "damped Newton phase").

``structure`` chooses which part of the Hessian preconditions the gradient:

* ``"full"``: P = H + λI on all parameters raveled into one vector;
* ``"diagonal"``: P = diag(H) + λI (Becker & LeCun 1988);
* ``"kronecker"``: block-diagonal over leaves; a 2-D leaf W ∈ ℝ^{m×n} uses the nearest Kronecker product
  H_WW ≈ A ⊗ B in Frobenius norm (Van Loan & Pitsianis 1993), H[i,j,k,l] ≈ A[i,k]·B[j,l], and the step solves
  (A + √λI) D (B + √λI) = G (factored damping as in K-FAC, Martens & Grosse 2015); other leaves use their own
  full block. It is exact when the loss is ½ tr(Wᵀ A W B) + linear terms.

All three form the exact Hessian with :func:`jax.hessian` (cost and memory O(n²) for n parameters): this is for small
parameter vectors, and for seeing what each structure keeps. Inverses are pseudo-inverses, so a singular P gives the
minimum-norm step rather than inf/NaN.

The loss comes in as optax's L-BFGS and line searches take it: ``update(grads, state, params, value=...,
grad=..., value_fn=..., **extra_args)`` where ``value_fn(params, **extra_args)`` is the objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from normopt.partition import check_float_leaves

STRUCTURES = ("full", "diagonal", "kronecker")


def _nearest_kronecker(block: jax.Array, m: int, n: int) -> tuple[jax.Array, jax.Array]:
    """A (m×m), B (n×n) minimising ‖H − A ⊗ B‖_F for H[i,j,k,l] given as an (mn × mn) block, with ‖A‖_F = ‖B‖_F
    and tr(A) ≥ 0: the top singular pair of the rearrangement R[(i,k),(j,l)] = H[i,j,k,l]."""
    r = block.reshape(m, n, m, n).transpose(0, 2, 1, 3).reshape(m * m, n * n)
    u, s, vt = jnp.linalg.svd(r, full_matrices=False)
    a = jnp.sqrt(s[0]) * u[:, 0].reshape(m, m)
    b = jnp.sqrt(s[0]) * vt[0].reshape(n, n)
    sign = jnp.where(jnp.trace(a) < 0, -1.0, 1.0)
    a, b = sign * a, sign * b
    return 0.5 * (a + a.T), 0.5 * (b + b.T)


def _precondition(
    hess: jax.Array, grad: jax.Array, damping: Any, structure: str, shapes: list[tuple[int, ...]]
) -> jax.Array:
    """P⁺ g for the raveled Hessian ``hess`` (n×n) and gradient ``grad`` (n,)."""
    if structure == "full":
        eye = jnp.eye(hess.shape[0], dtype=hess.dtype)
        return jnp.linalg.pinv(hess + damping * eye, hermitian=True) @ grad
    if structure == "diagonal":
        d = jnp.diagonal(hess) + damping
        return jnp.where(d != 0, grad / jnp.where(d != 0, d, 1.0), 0.0)
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        block = hess[start : start + size, start : start + size]
        g = grad[start : start + size]
        if len(shape) == 2:
            m, n = shape
            a, b = _nearest_kronecker(block, m, n)
            root = jnp.sqrt(jnp.asarray(damping, hess.dtype))
            a_inv = jnp.linalg.pinv(a + root * jnp.eye(m, dtype=hess.dtype), hermitian=True)
            b_inv = jnp.linalg.pinv(b + root * jnp.eye(n, dtype=hess.dtype), hermitian=True)
            out.append((a_inv @ g.reshape(m, n) @ b_inv).reshape(-1))
        else:
            eye = jnp.eye(size, dtype=hess.dtype)
            out.append(jnp.linalg.pinv(block + damping * eye, hermitian=True) @ g)
        start += size
    return jnp.concatenate(out) if out else grad


def scale_by_newton(damping: Any = 0.0, structure: str = "full") -> optax.GradientTransformationExtraArgs:
    """Preconditions the gradient by the (structured, damped) Hessian of ``value_fn`` at ``params``: u ↦ P⁺u.

    Outputs the Newton direction P⁺g (a descent direction when P ≻ 0); follow it with ``optax.scale(-1)`` or a
    learning rate, and optionally a line search, as :func:`newton` does. Stateless.

    Args:
      damping: λ ≥ 0 added to the curvature (may be a traced hyperparameter).
      structure: ``"full"``, ``"diagonal"`` or ``"kronecker"`` (static; see the module docstring).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *, value_fn,
      **extra_args)`` needs ``params`` and ``value_fn``; ``extra_args`` other than ``value`` and ``grad`` are passed
      to ``value_fn`` as keyword arguments.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")
    if isinstance(damping, (int, float)) and damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")

    def update_fn(
        updates, state, params=None, *, value_fn: Callable[..., Any] | None = None, value=None, grad=None, **extra_args
    ):
        del value, grad
        if params is None or value_fn is None:
            raise ValueError(
                "scale_by_newton needs the loss: call update(grads, state, params, value_fn=loss, "
                "**loss_kwargs), as for optax.lbfgs"
            )
        flat, unravel = ravel_pytree(params)
        hess = jax.hessian(lambda x: value_fn(unravel(x), **extra_args))(flat)
        flat_updates, unravel_updates = ravel_pytree(updates)
        shapes = [tuple(jnp.shape(x)) for x in jax.tree.leaves(params)]
        direction = _precondition(hess, flat_updates.astype(hess.dtype), damping, structure, shapes)
        return unravel_updates(direction.astype(flat_updates.dtype)), state

    def init_fn(params):
        check_float_leaves(params)
        return optax.EmptyState()

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


BACKTRACKING = optax.scale_by_backtracking_linesearch(max_backtracking_steps=30, decrease_factor=0.5)
"""The default line search of :func:`newton`: Armijo backtracking, t ≤ 1 halved up to 30 times."""


def newton(
    learning_rate: optax.ScalarOrSchedule | None = None,
    *,
    damping: Any = 0.0,
    structure: str = "full",
    linesearch: optax.GradientTransformationExtraArgs | None = BACKTRACKING,
) -> optax.GradientTransformationExtraArgs:
    """Damped Newton: x ← x − t·η·P⁺∇f(x), P = H(x) + λI (or its diagonal / Kronecker structure), t from a
    backtracking (Armijo) line search starting at 1. Built like ``optax.lbfgs``:
    ``optax.chain(scale_by_newton(damping, structure), optax.scale_by_learning_rate(η) or optax.scale(-1),
    linesearch)``; ``linesearch=None`` takes the full step (pure Newton for η = 1).

    Call it like optax's L-BFGS: ``update(grad, state, params, value=f(params), grad=grad, value_fn=f)``.
    """
    scaling = optax.scale(-1.0) if learning_rate is None else optax.scale_by_learning_rate(learning_rate)
    return optax.chain(
        scale_by_newton(damping, structure), scaling, optax.identity() if linesearch is None else linesearch
    )
