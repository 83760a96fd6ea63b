"""Shampoo: Kronecker-factored preconditioning (Gupta, Koren & Singer 2018, "Shampoo: preconditioned stochastic
tensor optimization").

For each matrix G ∈ ℝ^{fan_in × fan_out} (a leaf read through :class:`~normopt.dims.MatrixDims`; each batch slice
is its own matrix):

    L ← β·L + G Gᵀ,   R ← β·R + Gᵀ G,   u = L^{−1/4} G R^{−1/4}

β = 1 is the original accumulation (L_t = Σ_s G_s G_sᵀ), 0 < β < 1 an EMA. With accumulation switched off
(β = 0) the factors are the current G Gᵀ and Gᵀ G, and for G = U Σ Vᵀ

    (G Gᵀ)^{−1/4} G (Gᵀ G)^{−1/4} = U Σ^{−1/2} Σ Σ^{−1/2} Vᵀ = U Vᵀ,

the dualization of G under the spectral norm: Shampoo without accumulation is spectral descent (Bernstein &
Newhouse 2024, "Old optimizer, new norm"). Leaves with fewer than 2 dimensions use the diagonal analogue
u = g / (h + ε·max h)^{1/2} with h ← β·h + g² (AdaGrad for β = 1; sign descent, ℓ∞, for β = 0).

Inverse roots: M^{−1/4} = Q diag(w^{−1/4}) Qᵀ from ``eigh`` (fp32, fp64 for fp64), with the ridge ε·w_max added to
every eigenvalue (relative, so the update does not depend on the gradient's scale) and eigenvalues below
w_max·n·machine-ε treated as zero (a pseudo-inverse root, as ``np.linalg.pinv`` cuts off rank). optax's
``matrix_inverse_pth_root`` (coupled Newton iteration) only approximates the root and needs a positive ridge;
eigh is exact for the small factors this module is meant for, and handles the rank-deficient G Gᵀ of the β = 0 check.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import partition
from normopt.dims import MatrixDims, to_matrices


class ShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`; ``left``/``right`` are per leaf."""

    left: optax.Updates  # per leaf [*batch, fan_in, fan_in] fp32 (fp64 for fp64); [*shape] (Σ g²) for < 2-D leaves
    right: optax.Updates  # per leaf [*batch, fan_out, fan_out]; shape () placeholder for < 2-D leaves


def _dtype(x: jax.Array) -> jnp.dtype:
    return jnp.float64 if x.dtype == jnp.float64 else jnp.float32


def inverse_root(matrix: jax.Array, p: int, eps: Any = 0.0) -> jax.Array:
    """(M + ε·w_max·I)^{−1/p} for symmetric PSD M (batched over leading axes) via ``eigh``; eigenvalues that are
    zero up to round-off map to 0 (pseudo-inverse root), so M = 0 gives 0."""
    w, q = jnp.linalg.eigh(matrix)
    w = jnp.maximum(w, 0.0)
    w_max = jnp.max(w, axis=-1, keepdims=True)
    cutoff = w_max * matrix.shape[-1] * jnp.finfo(matrix.dtype).eps
    w = w + eps * w_max
    keep = (w > cutoff) & (w > 0)
    w_inv = jnp.where(keep, jnp.where(keep, w, 1.0) ** (-1.0 / p), 0.0)
    return (q * w_inv[..., None, :]) @ jnp.swapaxes(q, -1, -2)


def _diagonal_step(g: jax.Array, h: jax.Array, eps: Any) -> jax.Array:
    """(h + ε·max h)^{−1/2} ⊙ g, the 1-D analogue of the inverse root (0 where h + ε·max h = 0)."""
    d = jnp.sqrt(h + eps * jnp.max(h, initial=0.0))
    return jnp.where(d == 0, 0.0, g / jnp.where(d == 0, 1.0, d)).astype(g.dtype)  # NaN stays NaN, never a 0 step


def scale_by_shampoo(beta: Any = 1.0, eps: Any = 1e-6, dims: MatrixDims | None = None) -> optax.GradientTransformation:
    """Shampoo's preconditioned direction u = L^{−1/4} G R^{−1/4} per matrix (module docstring).

    Args:
      beta: accumulation factor β of the Kronecker factors: 1 sums (Gupta et al.), 0 keeps only the current
        gradient (spectral descent). May be a traced hyperparameter.
      eps: relative ridge ε: each factor's root is taken of M + ε·λ_max(M)·I.
      dims: how ≥ 2-D leaves are read as ``[*batch, fan_in, fan_out]`` (default: the last two axes).

    Returns:
      An ``optax.GradientTransformation`` (follow with ``optax.scale_by_learning_rate``). State: fan_in² + fan_out²
      floats per matrix, one float per entry of a vector.
    """

    def init_fn(params):
        partition.check_float_leaves(params)  # a TypeError naming the leaf, not a silent step

        def left(x):
            if x.ndim < 2:
                return jnp.zeros(x.shape, _dtype(x))
            m, _ = to_matrices(x, dims)
            return jnp.zeros(m.shape[:-1] + m.shape[-2:-1], _dtype(x))

        def right(x):
            if x.ndim < 2:
                return jnp.zeros((), _dtype(x))  # a placeholder: orbax cannot save size-0 arrays
            m, _ = to_matrices(x, dims)
            return jnp.zeros(m.shape[:-2] + m.shape[-1:] * 2, _dtype(x))

        return ShampooState(jax.tree.map(left, params), jax.tree.map(right, params))

    def one(g, lft, rgt):
        if g.size == 0:  # an empty leaf has no direction (and eigh/max of nothing fail)
            return g, lft, rgt
        if g.ndim < 2:
            h = beta * lft + jnp.square(g.astype(lft.dtype))
            return _diagonal_step(g, h, eps), h, rgt
        m, back = to_matrices(g.astype(lft.dtype), dims)
        mt = jnp.swapaxes(m, -1, -2)
        lft = beta * lft + m @ mt
        rgt = beta * rgt + mt @ m
        u = inverse_root(lft, 4, eps) @ m @ inverse_root(rgt, 4, eps)
        return back(u).astype(g.dtype), lft, rgt

    def update_fn(updates, state, params=None):
        del params
        out = jax.tree.map(one, updates, state.left, state.right)
        treedef = jax.tree.structure(updates)
        triples = treedef.flatten_up_to(out)
        new = treedef.unflatten([t[0] for t in triples])
        return new, ShampooState(treedef.unflatten([t[1] for t in triples]), treedef.unflatten([t[2] for t in triples]))

    return optax.GradientTransformation(init_fn, update_fn)


def shampoo(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: Any = 1.0,
    eps: Any = 1e-6,
    dims: MatrixDims | None = None,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformation:
    """Shampoo: W ← W − η·(L^{−1/4} G R^{−1/4} + λ·W), as ``optax.chain(scale_by_shampoo(beta, eps, dims),
    optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate))``."""
    decay = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)
    return optax.chain(
        scale_by_shampoo(beta, eps, dims),
        optax.add_decayed_weights(weight_decay) if decay else optax.identity(),
        optax.scale_by_learning_rate(learning_rate),
    )
