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

from normopt._numerics import check_choice, check_float_leaves, check_range, compute_dtype, per_matrix, safe_div
from normopt._numerics import weight_decay as _weight_decay
from normopt.dims import MatrixDims, matrix_layout, to_matrices


class ShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`: the Kronecker factors of each leaf.

    Attributes:
      left: L per leaf, shape ``[*batch, fan_in, fan_in]``, float32 (float64 for float64 leaves); for < 2-D leaves
        the diagonal analogue h = Σ g², shaped like the leaf.
      right: R per leaf, shape ``[*batch, fan_out, fan_out]``; a shape-() placeholder for < 2-D leaves.
    """

    left: optax.Updates  # per leaf shape=[*batch, fan_in, fan_in], dtype=float32 (float64 for float64): L;
    # for < 2-D leaves shape=[*leaf shape]: h = Σ g² (the diagonal analogue)
    right: optax.Updates  # per leaf shape=[*batch, fan_out, fan_out], same dtype: R; shape=() placeholder for < 2-D


RIDGES = ("relative", "absolute")
"""How Shampoo's ridge ε is read: ``"relative"`` ε·λ_max·I (normopt's default), ``"absolute"`` ε·I (the paper's)."""


def inverse_root(matrix: jax.Array, p: int, eps: Any = 0.0, *, ridge: str = "relative") -> jax.Array:
    """Inverse p-th root of a symmetric PSD matrix, as a pseudo-inverse, by ``eigh``.

    For M = Q diag(w) Qᵀ (batched over leading axes)::

        (M + ε·w_max·I)^{−1/p} = Q diag((w + ε·w_max)^{−1/p}) Qᵀ,

    with eigenvalues that are zero up to round-off (w ≤ w_max·n·machine-ε) mapped to 0, so M = 0 gives 0.
    With ``ridge="absolute"`` the ridge is ε·I: (M + ε·I)^{−1/p} (the same cut-off applies to w + ε).

    Args:
      matrix: array of shape (..., n, n), symmetric positive semi-definite.
      p: the root (4 for Shampoo).
      eps: ridge ε ≥ 0, relative to w_max (default) or absolute.
      ridge: ``"relative"`` (ε·w_max·I) or ``"absolute"`` (ε·I).

    Returns:
      The array (..., n, n) of the same dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from normopt.family.shampoo import inverse_root
      >>> inverse_root(jnp.diag(jnp.array([16.0, 1.0])), 4)
      Array([[0.5, 0. ],
             [0. , 1. ]], dtype=float32)

    References:
      Gupta, Koren & Singer, `Shampoo: preconditioned stochastic tensor optimization
      <https://arxiv.org/abs/1802.09568>`_, ICML 2018.
    """
    check_choice("ridge", ridge, RIDGES, owner="inverse_root")
    w, q = per_matrix(jnp.linalg.eigh, matrix)
    w = jnp.maximum(w, 0.0)
    w_max = jnp.max(w, axis=-1, keepdims=True)
    cutoff = w_max * matrix.shape[-1] * jnp.finfo(matrix.dtype).eps
    w = w + (eps * w_max if ridge == "relative" else eps)
    keep = (w > cutoff) & (w > 0)
    w_inv = jnp.where(keep, jnp.where(keep, w, 1.0) ** (-1.0 / p), 0.0)
    return (q * w_inv[..., None, :]) @ jnp.swapaxes(q, -1, -2)


def _diagonal_step(g: jax.Array, h: jax.Array, eps: Any, ridge: str = "relative") -> jax.Array:
    """(h + ε·max h)^{−1/2} ⊙ g (``ridge="absolute"``: (h + ε)^{−1/2} ⊙ g), the 1-D analogue of the inverse root
    (0 where the denominator is 0)."""
    shift = eps * jnp.max(h, initial=0.0) if ridge == "relative" else eps
    return safe_div(g, jnp.sqrt(h + shift)).astype(g.dtype)


def _factor_zeros(x: jax.Array, dims: MatrixDims | None, side: str) -> jax.Array:
    """A zero Kronecker factor of a ≥ 2-D leaf: L ``[*batch, fan_in, fan_in]`` (``side="left"``) or R
    ``[*batch, fan_out, fan_out]``, in fp32 (fp64 for fp64 leaves)."""
    lay = matrix_layout(x.shape, dims)
    n = lay.fan_in if side == "left" else lay.fan_out
    return jnp.zeros(tuple(x.shape[a] for a in lay.batch_axes) + (n, n), compute_dtype(x))


def _accumulate(factor: jax.Array, m: jax.Array, beta: Any, side: str) -> jax.Array:
    """β·L + M Mᵀ (``side="left"``) or β·R + Mᵀ M for matrices M ``[*batch, fan_in, fan_out]``."""
    mt = jnp.swapaxes(m, -1, -2)
    return beta * factor + (m @ mt if side == "left" else mt @ m)


def _check(owner: str, beta: Any, eps: Any, dims: Any, ridge: Any = "relative") -> None:
    check_choice("ridge", ridge, RIDGES, owner=owner)
    check_range("beta", beta, 0, 1, owner=owner)  # β = 1 is Shampoo's sum, β = 0 spectral descent
    check_range("eps", eps, 0, owner=owner)  # ε = 0 is allowed: pseudo-inverse roots
    if dims is not None and not isinstance(dims, MatrixDims):
        raise TypeError(f"{owner}: dims must be None or a normopt.MatrixDims, got {dims!r}")


def scale_by_shampoo(
    *, beta: Any = 1.0, eps: Any = 1e-6, dims: MatrixDims | None = None, ridge: str = "relative"
) -> optax.GradientTransformation:
    """Shampoo's preconditioned direction u = L^{−1/4} G R^{−1/4} for every matrix.

    For each matrix G ∈ ℝ^{fan_in × fan_out} (each batch slice of a leaf is its own matrix)::

        L ← β·L + G Gᵀ,   R ← β·R + Gᵀ G,   u = (L + ε·λ_max(L))^{−1/4} G (R + ε·λ_max(R))^{−1/4}

    and for < 2-D leaves the diagonal analogue u = g / (h + ε·max h)^{1/2}, h ← β·h + g². Factors are kept in fp32
    (fp64 for fp64 leaves). With β = 0, (G Gᵀ)^{−1/4} G (Gᵀ G)^{−1/4} = U Vᵀ: spectral descent.

    Args:
      beta: accumulation factor β ∈ [0, 1] of the Kronecker factors: 1 sums (Gupta et al.), 0 keeps only the
        current gradient (spectral descent). May be a traced hyperparameter.
      eps: ridge ε ≥ 0: each factor's root is taken of M + ε·λ_max(M)·I (``ridge="absolute"``: M + ε·I).
      dims: how ≥ 2-D leaves are read as ``[*batch, fan_in, fan_out]`` (default: the last two axes).
      ridge: static; ``"relative"`` (default) ε·λ_max(M)·I, which makes the update independent of the gradient's
        scale, or ``"absolute"`` ε·I, the paper's L_0 = ε·I_m, R_0 = ε·I_n (Algorithm 1 of Gupta et al.): with
        β = 1, (ε·I + Σ G Gᵀ)^{−1/4} G (ε·I + Σ Gᵀ G)^{−1/4} exactly. Vectors use (h + ε)^{−1/2}.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ShampooState` (follow it with
      ``optax.scale_by_learning_rate``): fan_in² + fan_out² floats per matrix, one float per entry of a vector.

    Example:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.scale_by_shampoo(beta=0.0, eps=0.0)
      >>> g = jnp.array([[3.0, 0.0], [0.0, 0.5]])
      >>> u, _ = tx.update(g, tx.init(g))
      >>> u.round(4)  # U Vᵀ of g
      Array([[1., 0.],
             [0., 1.]], dtype=float32)
      >>> tx = normopt.scale_by_shampoo(eps=1e-4, ridge="absolute")  # the paper's fixed ridge ε·I

    References:
      Gupta, Koren & Singer, `Shampoo: preconditioned stochastic tensor optimization
      <https://arxiv.org/abs/1802.09568>`_, ICML 2018; Bernstein & Newhouse, `Old optimizer, new norm: an anthology
      <https://arxiv.org/abs/2409.20325>`_, 2024 (β = 0 is spectral descent).
    """
    _check("scale_by_shampoo", beta, eps, dims, ridge)

    def init_fn(params):
        check_float_leaves(params)  # a TypeError naming the leaf, not a silent step

        def left(x):
            return jnp.zeros(x.shape, compute_dtype(x)) if x.ndim < 2 else _factor_zeros(x, dims, "left")

        def right(x):  # < 2-D: a placeholder (orbax cannot save size-0 arrays)
            return jnp.zeros((), compute_dtype(x)) if x.ndim < 2 else _factor_zeros(x, dims, "right")

        return ShampooState(jax.tree.map(left, params), jax.tree.map(right, params))

    def one(g, lft, rgt):
        if g.size == 0:  # an empty leaf has no direction (and eigh/max of nothing fail)
            return g, lft, rgt
        if g.ndim < 2:
            h = beta * lft + jnp.square(g.astype(lft.dtype))
            return _diagonal_step(g, h, eps, ridge), h, rgt
        m, back = to_matrices(g.astype(lft.dtype), dims)
        lft, rgt = _accumulate(lft, m, beta, "left"), _accumulate(rgt, m, beta, "right")
        u = inverse_root(lft, 4, eps, ridge=ridge) @ m @ inverse_root(rgt, 4, eps, ridge=ridge)
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
    mask: Any = None,
    ridge: str = "relative",
) -> optax.GradientTransformation:
    """Shampoo with decoupled weight decay: W ← W − η·(L^{−1/4} G R^{−1/4} + λ·W).

    ``optax.chain(scale_by_shampoo(beta=beta, eps=eps, dims=dims), optax.add_decayed_weights(weight_decay, mask),
    optax.scale_by_learning_rate(learning_rate))``; a literal ``weight_decay=0`` needs no params.

    Args:
      learning_rate: float or optax schedule η.
      beta: accumulation factor β ∈ [0, 1] of the Kronecker factors (1 sums, 0 is spectral descent).
      eps: ridge ε ≥ 0 (relative to λ_max unless ``ridge="absolute"``).
      dims: how ≥ 2-D leaves are read as ``[*batch, fan_in, fan_out]`` (default: the last two axes).
      weight_decay: decoupled weight decay λ ≥ 0.
      mask: optax-style mask of the leaves that decay (see ``optax.add_decayed_weights``).
      ridge: ``"relative"`` (default) or ``"absolute"`` (the paper's ε·I); see :func:`scale_by_shampoo`.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = normopt.shampoo(0.1, beta=0.0, eps=1e-12)  # spectral descent
      >>> params = {"w": jnp.eye(3)}
      >>> updates, state = opt.update(params, opt.init(params))
      >>> params = optax.apply_updates(params, updates)

    References:
      Gupta, Koren & Singer, `Shampoo: preconditioned stochastic tensor optimization
      <https://arxiv.org/abs/1802.09568>`_, ICML 2018.
    """
    _check("shampoo", beta, eps, dims, ridge)
    check_range("weight_decay", weight_decay, 0, owner="shampoo")
    return optax.chain(
        scale_by_shampoo(beta=beta, eps=eps, dims=dims, ridge=ridge),
        _weight_decay(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
