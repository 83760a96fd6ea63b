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

from normopt._numerics import check_choice, check_float_leaves, check_range, safe_div

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
        return safe_div(grad, jnp.diagonal(hess) + damping)
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        block = hess[start : start + size, start : start + size]
        g = grad[start : start + size]
        if size == 0:  # an empty leaf has no curvature and gets the empty update (as dualize(empty) = empty)
            out.append(g)
        elif len(shape) == 2:
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


def _check(owner: str, damping: Any, structure: Any) -> None:
    check_range("damping", damping, 0, owner=owner)
    check_choice("structure", structure, STRUCTURES, owner=owner)


def scale_by_newton(*, damping: Any = 0.0, structure: str = "full") -> optax.GradientTransformationExtraArgs:
    """Preconditions the gradient by the (structured, damped) Hessian of ``value_fn`` at ``params``: u ↦ P⁺u.

    With H the Hessian of ``value_fn`` at ``params`` (raveled) and λ the damping::

        full:       P = H + λI
        diagonal:   P = diag(H) + λI
        kronecker:  per 2-D leaf, H ≈ A ⊗ B and P = (A + √λI) ⊗ (B + √λI); other leaves their own block + λI

    and the output is the Newton direction P⁺u (a descent direction when P ≻ 0; pseudo-inverses, so a singular P
    gives the minimum-norm step). Follow it with ``optax.scale(-1)`` or a learning rate, and optionally a line
    search, as :func:`newton` does. Stateless.

    Args:
      damping: λ ≥ 0 added to the curvature (may be a traced hyperparameter).
      structure: ``"full"``, ``"diagonal"`` or ``"kronecker"`` (static; see the module docstring).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *, value_fn,
      **extra_args)`` needs ``params`` and ``value_fn``; ``extra_args`` other than ``value`` and ``grad`` are passed
      to ``value_fn`` as keyword arguments.

    Example:
      >>> import jax, jax.numpy as jnp, normopt
      >>> f = lambda x: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * x**2)
      >>> tx = normopt.scale_by_newton(structure="diagonal")
      >>> x = jnp.array([1.0, 1.0])
      >>> u, _ = tx.update(jax.grad(f)(x), tx.init(x), x, value_fn=f)
      >>> u  # H⁻¹g = x
      Array([1., 1.], dtype=float32)

    References:
      Boyd & Vandenberghe, Convex Optimization, 2004, §9.5; Martens & Grosse, `Optimizing neural networks with
      Kronecker-factored approximate curvature <https://arxiv.org/abs/1503.05671>`_, ICML 2015; Van Loan &
      Pitsianis, Approximation with Kronecker products, 1993.
    """
    _check("scale_by_newton", damping, structure)

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
    """Damped Newton: x ← x − t·η·P⁺∇f(x), P = H(x) + λI (or its diagonal / Kronecker structure).

    t comes from a backtracking (Armijo) line search starting at 1. Built like ``optax.lbfgs``:
    ``optax.chain(scale_by_newton(damping=damping, structure=structure), optax.scale_by_learning_rate(η) or
    optax.scale(-1), linesearch)``. Call it like optax's L-BFGS: ``update(grad, state, params, value=f(params),
    grad=grad, value_fn=f)``.

    Args:
      learning_rate: None (the full Newton step, η = 1), a float or an optax schedule η.
      damping: Levenberg–Marquardt damping λ ≥ 0.
      structure: ``"full"``, ``"diagonal"`` or ``"kronecker"`` (see :func:`scale_by_newton`).
      linesearch: an optax line search (default :data:`BACKTRACKING`), or None for the full step (pure Newton for
        η = 1).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax, jax.numpy as jnp, normopt, optax
      >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
      >>> opt, x = normopt.newton(linesearch=None), jnp.zeros(2)
      >>> u, _ = opt.update(jax.grad(f)(x), opt.init(x), x, value_fn=f)
      >>> optax.apply_updates(x, u)  # one step solves a quadratic
      Array([3., 3.], dtype=float32)

    References:
      Boyd & Vandenberghe, Convex Optimization, 2004, §9.5 (damped Newton); Nocedal & Wright, Numerical
      Optimization, 2006, §3.1 (backtracking).
    """
    _check("newton", damping, structure)
    if linesearch is not None and not isinstance(linesearch, optax.GradientTransformation):
        raise TypeError(f"newton: linesearch must be an optax line search or None, got {linesearch!r}")
    scaling = optax.scale(-1.0) if learning_rate is None else optax.scale_by_learning_rate(learning_rate)
    return optax.chain(
        scale_by_newton(damping=damping, structure=structure),
        scaling,
        optax.identity() if linesearch is None else linesearch,
    )
