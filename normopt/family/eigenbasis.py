"""SOAP and SPlus: a per-entry step taken in the eigenbasis of Shampoo's Kronecker factors.

For each matrix G ∈ ℝ^{fan_in × fan_out} (a leaf read through its layout, :mod:`normopt.layouts`: fan-in, fan-out
and stack axes, so a conv kernel ``[kh, kw, in, out]`` is one (kh·kw·in) × out matrix; each batch slice is its own
matrix, with its own basis), with Q_L, Q_R the eigenvectors of Shampoo's factors:

    M ← b1·M + (1 − b1)·G                       first moment, kept in the original basis
    M' = Q_Lᵀ M Q_R,   G' = Q_Lᵀ G Q_R          rotate into the eigenbasis
    D' = inner(M', G')                          a per-entry step: sign (SPlus) or Adam's diagonal (SOAP)
    u  = Q_L D' Q_Rᵀ                            rotate back
    L ← β·L + G Gᵀ,   R ← β·R + Gᵀ G            Shampoo's factors (normopt.family.shampoo)
    every ``frequency`` steps: Q_L, Q_R ← eigenvectors of L, R (the update above used the previous basis)

In the norm view: rotate into the eigenbasis, dualize there under a norm, rotate back. With sign inside (the ℓ∞
dualization) it is SPlus (Frans, Levine & Abbeel 2025); with Adam's m'/(√v' + ε) inside it is SOAP (Vyas et al.
2024). The factors are kept in Shampoo's form β·L + G Gᵀ, (1 − β)⁻¹ times the papers' EMA (1 − β)·Σ β^k G Gᵀ:
the same eigenvectors, and β = 1 sums. Sides larger than ``max_dim`` and the leaves the layout reads as vectors
(biases, norm scales, stacked or not) are not rotated (the inner step acts on them directly: Adam for SOAP, sign
for SPlus).

The inner step's state (SOAP's V) lives in the rotated coordinates and is never rotated when the basis changes,
as in SOAP's reference code. SOAP's refresh by one power-iteration step sorts the old columns by their Rayleigh
quotients, orthonormalizes L·Q_sorted by QR, and permutes V along; here the new columns are put back in the old
order instead, which pairs every column with the same entry of V, so the wrapper needs no hook into the inner
state and stays generic. A rank-deficient factor (the first G Gᵀ of a non-square G) has an eigenbasis that is
arbitrary on its null space; both methods inherit that (sign(·) depends on it until the next refresh).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import _describe, layouts, norms, partition
from normopt._numerics import (
    check_choice,
    check_float_leaves,
    check_range,
    check_static,
    compute_dtype,
    on_auto_axes,
    path_mask,
    path_names,
    per_matrix,
    safe_div,
)
from normopt._numerics import weight_decay as _weight_decay
from normopt.alias import NormedTransformation, with_rule
from normopt.dims import MatrixDims, matrix_layout, to_matrices
from normopt.family.shampoo import _accumulate, _factor_zeros
from normopt.layouts import Layout, Layouts

REFRESHES = ("eigh", "power")
"""How the basis is refreshed after the first time (always ``eigh``): an exact ``eigh``, or SOAP's one step of
power iteration with a QR."""


class EigenbasisState(NamedTuple):
    """State of :func:`scale_by_eigenbasis`.

    Attributes:
      count: gradients seen (the warm-up gradient included).
      mu: the first moment M per leaf, in the original basis.
      left: Shampoo's L per leaf; a shape-() placeholder for sides that are not rotated.
      right: Shampoo's R per leaf; a shape-() placeholder for sides that are not rotated.
      q_left: the basis Q_L per leaf (orthonormal columns); a placeholder like ``left``.
      q_right: the basis Q_R per leaf; a placeholder like ``right``.
      inner: the inner step's state, in the rotated coordinates.
    """

    count: jax.Array  # shape=(), dtype=int32: gradients seen
    mu: optax.Updates  # like the params, dtype=float32 (float64 for float64): M, original basis
    left: optax.Updates  # per leaf shape=[*batch, fan_in, fan_in], float32 (float64): L; shape=() if not rotated
    right: optax.Updates  # per leaf shape=[*batch, fan_out, fan_out], same dtype: R; shape=() if not rotated
    q_left: optax.Updates  # like left: Q_L, eigenvectors of L (columns)
    q_right: optax.Updates  # like right: Q_R, eigenvectors of R (columns)
    inner: optax.OptState  # the inner transformation's state (rotated coordinates)


class AdamDiagonalState(NamedTuple):
    """State of :func:`adam_diagonal`.

    Attributes:
      count: steps taken (for the bias correction).
      nu: V per leaf, the EMA of the squared rotated gradient.
    """

    count: jax.Array  # shape=(), dtype=int32: steps taken
    nu: optax.Updates  # like the params, dtype=float32 (float64 for float64): V = EMA of G'², rotated coordinates


class ParamsEMAState(NamedTuple):
    """State of SPlus's evaluation weights (see :func:`splus_eval_params`).

    Attributes:
      weight: Σ of the EMA's weights, 1 − r^t for a constant rate r (the bias correction).
      ema: the EMA of the parameters (taken before each update, as in the authors' code).
    """

    weight: jax.Array  # shape=(), dtype=float32 (float64 if a param is): 1 − r^t
    ema: optax.Updates  # like the params, dtype=float32 (float64 for float64): Σ (1 − r)·r^k·params_{t−k}


def _check_static_int(name: str, value: Any, lo: int, owner: str) -> None:
    check_static(name, value, owner=owner)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be a static Python int >= {lo}, got {value!r}")
    check_range(name, value, lo, owner=owner)


Reader = Callable[[tuple[str, ...], Any], Layout]
"""``(path, leaf) -> Layout``: how a leaf is read (its matrix axes and role)."""


def _reader(layout: layouts.LayoutSpec, strict: bool, dims: MatrixDims | None, owner: str) -> Reader:
    """Checks ``layout``, ``strict`` and ``dims`` and returns the per-leaf reading: ``dims`` (when given) reads every
    ≥ 2-D leaf as a hidden matrix and the rest as vectors; otherwise :func:`normopt.partition.read` with
    ``layout`` (the model's structure, else the names) and ``strict``."""
    layouts.check_spec(layout)
    if not isinstance(strict, bool):
        raise TypeError(f"{owner}: strict must be a bool, got {strict!r}")
    if dims is not None and not isinstance(dims, MatrixDims):
        raise TypeError(f"{owner}: dims must be None or a normopt.MatrixDims, got {dims!r}")
    if dims is not None and layout is not None:
        raise ValueError(
            f"{owner}: pass layout or dims, not both (dims reads every >= 2-D leaf the same way); to change the "
            "reading of some leaves, use layout={path regex: normopt.MatrixDims(...)}"
        )

    def read(path: tuple[str, ...], leaf: Any) -> Layout:
        shape = tuple(jnp.shape(leaf))
        if dims is None:
            return partition.read(path, leaf, layout, strict)
        if len(shape) < 2:
            return Layout("vector", (), (), tuple(range(len(shape) - 1)), "dims")
        try:
            lay = matrix_layout(shape, dims)
        except ValueError as e:
            raise ValueError(f"{'/'.join(path) or '<root>'} (shape {shape}): dims={dims}: {e}") from None
        return Layout("hidden", lay.fan_in_axes, lay.fan_out_axes, lay.batch_axes, "dims")

    return read


def _recorded(tx: optax.GradientTransformation, rule: Any, layout: Any, dims: Any, read: Reader) -> Any:
    """``with_rule(tx, rule, layout)``; with ``dims``, :func:`normopt.describe` is shown the ``dims`` reading."""
    if dims is None:
        return with_rule(tx, rule, layout)
    inner = with_rule(tx, None, layout)

    def init_fn(params):
        pairs = [(path_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]
        shapes = {p: tuple(jnp.shape(x)) for p, x in pairs}
        _describe.record(rule, Layouts({p: read(p, x) for p, x in pairs}, "dims", shapes), params)
        return inner.init(params)

    out = NormedTransformation(init_fn, inner.update)
    out.rule, out.layout = rule, layout
    return out


class _Reading:
    """One leaf's reading as an opaque pytree leaf (a :class:`Layout` is a tuple, which ``jax.tree`` would open)."""

    def __init__(self, layout: Layout, shape: tuple[int, ...]):
        self.dims, self.role, self.empty = layout.dims, layout.role, math.prod(shape) == 0
        self.matrix = None if layout.role == "vector" else matrix_layout(shape, self.dims)

    def rotated(self, max_dim: int) -> tuple[bool, bool]:
        """Whether the left and right sides are rotated (static): non-empty matrices, sides ≤ ``max_dim``."""
        if self.matrix is None or self.empty:
            return False, False
        return self.matrix.fan_in <= max_dim, self.matrix.fan_out <= max_dim


def _readings(read: Reader, tree: Any) -> Any:
    """The tree of :class:`_Reading` of every leaf of ``tree``."""
    return jax.tree_util.tree_map_with_path(lambda p, x: _Reading(read(path_names(p), x), tuple(jnp.shape(x))), tree)


def _rotate(x: jax.Array, q_left: jax.Array, q_right: jax.Array, dims: Any, back: bool = False) -> jax.Array:
    """Q_Lᵀ X Q_R (``back=True``: Q_L X Q_Rᵀ) on the matrices of leaf ``x``; placeholder sides are identities."""
    if q_left.ndim == 0 and q_right.ndim == 0:
        return x
    m, unread = to_matrices(x, dims)
    if q_left.ndim:
        m = (q_left if back else jnp.swapaxes(q_left, -1, -2)) @ m
    if q_right.ndim:
        m = m @ (jnp.swapaxes(q_right, -1, -2) if back else q_right)
    return unread(m)


def _eigh_basis(factor: jax.Array, q: jax.Array) -> jax.Array:
    """The eigenvectors of ``factor`` (the previous basis ``q`` is not needed)."""
    del q
    return per_matrix(jnp.linalg.eigh, factor)[1]  # one matrix per call: batched CPU eigh can deadlock


def _power_basis(factor: jax.Array, q: jax.Array) -> jax.Array:
    """SOAP's refresh (Vyas et al., Algorithm 4): sort the columns of Q by their Rayleigh quotients qᵢᵀ F qᵢ
    (descending), then Q ← QR(F·Q_sorted); the new columns are returned in the old order (see the module note)."""
    order = jnp.argsort(-jnp.sum(q * (factor @ q), axis=-2), axis=-1)
    q_new, _ = per_matrix(jnp.linalg.qr, factor @ jnp.take_along_axis(q, order[..., None, :], axis=-1))
    return jnp.take_along_axis(q_new, jnp.argsort(order, axis=-1)[..., None, :], axis=-1)


def scale_by_eigenbasis(
    inner: optax.GradientTransformation,
    *,
    b1: Any,
    beta: Any,
    frequency: int,
    refresh: str = "eigh",
    warmup: bool = False,
    max_dim: int = 10000,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    dims: MatrixDims | None = None,
) -> NormedTransformation:
    """A per-entry step ``inner`` taken in the eigenbasis of Shampoo's factors: u = Q_L inner(Q_Lᵀ M Q_R) Q_Rᵀ.

    For each matrix G (each batch slice of a leaf is its own matrix, with its own basis)::

        M ← b1·M + (1 − b1)·G,   D' = inner(Q_Lᵀ M Q_R; G' = Q_Lᵀ G Q_R),   u = Q_L D' Q_Rᵀ
        L ← β·L + G Gᵀ,   R ← β·R + Gᵀ G,   then every ``frequency`` steps Q_L, Q_R ← eigenvectors(L, R)

    The first gradient refreshes the basis by ``eigh`` after its update (which used Q = I); with ``warmup`` it only
    builds L, R and the basis, and the update is 0·G (SOAP). The t-th update after the warm-up (t ≥ 1, t = step
    count without warm-up) refreshes when t % frequency = 0. The refresh runs under ``lax.cond``: one compilation.

    Args:
      inner: a per-entry ``optax.GradientTransformation`` applied to the rotated first moment M' (leaf-shaped
        trees, fp32); it is called with the extra argument ``rotated_grads`` (G', the rotated gradient), which
        plain transformations ignore. Its state lives in the rotated coordinates and is not rotated on refresh.
      b1: EMA rate b1 ∈ [0, 1) of the first moment M (0: M = G).
      beta: β ∈ [0, 1] of Shampoo's factors (1 sums them).
      frequency: static int ≥ 1, steps between refreshes of the basis.
      refresh: static; how later refreshes are computed: ``"eigh"`` (exact) or ``"power"`` (SOAP's one step of
        power iteration from the previous basis, then QR).
      warmup: static; the first gradient only builds the basis (SOAP): its update is 0·G (NaN stays visible).
      max_dim: static; sides (fan_in or fan_out) larger than this are not rotated (no factor is stored).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``:
        fan-in, fan-out and stack axes (a conv kernel ``[*window, in, out]`` is one (window·in) × out matrix);
        leaves read as vectors are not rotated. None reads from the parameter names (the last resort).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      dims: instead of ``layout`` (kept for compatibility): every ≥ 2-D leaf is read as ``[*batch, fan_in,
        fan_out]`` through these :class:`~normopt.dims.MatrixDims`, < 2-D leaves as vectors. Passing both is a
        ``ValueError``; ``layout={path regex: MatrixDims(...)}`` changes the reading of some leaves.

    Returns:
      A :class:`normopt.alias.NormedTransformation` (``optax.GradientTransformationExtraArgs``) with state
      :class:`EigenbasisState`, labelling each leaf ``"eigenbasis"`` (a side rotated) or ``"inner"`` for
      :func:`normopt.describe`; updates in the gradient's dtype, factors, bases and moments in fp32 (fp64 for
      fp64).

    Example:
      >>> import jax.numpy as jnp, normopt
      >>> from normopt.family.eigenbasis import scale_by_eigenbasis
      >>> tx = scale_by_eigenbasis(normopt.dualize(normopt.norms.linf()), b1=0.0, beta=0.0, frequency=1)
      >>> g = jnp.array([[3.0, 0.0], [0.0, -0.5]])
      >>> state = tx.init(g)
      >>> u, state = tx.update(g, state)  # Q = I on the first step: sign(G)
      >>> u
      Array([[ 1.,  0.],
             [ 0., -1.]], dtype=float32)

    References:
      Vyas et al., `SOAP: improving and stabilizing Shampoo using Adam <https://arxiv.org/abs/2409.11321>`_, 2024;
      Frans, Levine & Abbeel, `A stable whitening optimizer for efficient neural network training
      <https://arxiv.org/abs/2506.07254>`_, 2025.
    """
    owner = "scale_by_eigenbasis"
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(f"{owner}: inner must be an optax.GradientTransformation, got {inner!r}")
    check_range("b1", b1, 0, 1, hi_open=True, owner=owner)
    check_range("beta", beta, 0, 1, owner=owner)
    _check_static_int("frequency", frequency, 1, owner)
    _check_static_int("max_dim", max_dim, 1, owner)
    check_choice("refresh", refresh, REFRESHES, owner=owner)
    if not isinstance(warmup, bool):
        raise TypeError(f"{owner}: warmup must be a static bool, got {warmup!r}")
    read = _reader(layout, strict, dims, owner)
    tx = _eigenbasis(inner, read, b1=b1, beta=beta, frequency=frequency, refresh=refresh, warmup=warmup,
                     max_dim=max_dim)  # fmt: skip

    def rule(path, leaf):
        return "eigenbasis" if any(_Reading(read(path, leaf), jnp.shape(leaf)).rotated(max_dim)) else "inner"

    return _recorded(tx, rule, layout, dims, read)


def _eigenbasis(
    inner: optax.GradientTransformation,
    read: Reader,
    *,
    b1: Any,
    beta: Any,
    frequency: int,
    refresh: str,
    warmup: bool,
    max_dim: int,
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_eigenbasis` with its arguments checked and each leaf read by ``read``."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        check_float_leaves(params)  # a TypeError naming the leaf, not a silent step
        readings = _readings(read, params)  # ValueError naming the leaf, e.g. with strict=True

        def factor(side):
            def one(x, r):
                rotated = r.rotated(max_dim)[side == "right"]
                return _factor_zeros(x, r.dims, side) if rotated else jnp.zeros((), compute_dtype(x))

            return jax.tree.map(one, params, readings)

        def eye(f):
            return f if f.ndim == 0 else jnp.broadcast_to(jnp.eye(f.shape[-1], dtype=f.dtype), f.shape)

        left, right = factor("left"), factor("right")
        mu = jax.tree.map(lambda x: jnp.zeros_like(x, compute_dtype(x)), params)  # sharded like x
        return EigenbasisState(
            jnp.zeros([], jnp.int32),
            mu,
            left,
            right,
            jax.tree.map(eye, left),
            jax.tree.map(eye, right),
            inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        # Sharded leaves: the rotations and factor products run on Auto axes (XLA places the collectives); the
        # updates and the state come back sharded as they came in.
        return on_auto_axes(lambda x: step(*x), (updates, state))

    def step(updates, state):
        count = optax.safe_increment(state.count)
        first = count == 1
        readings = _readings(read, updates)
        g32 = jax.tree.map(lambda g, m: g.astype(m.dtype), updates, state.mu)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, g32)
        qs = (state.q_left, state.q_right, readings)
        rotated_mu = jax.tree.map(lambda m, ql, qr, r: _rotate(m, ql, qr, r.dims), mu, *qs)
        rotated_g = jax.tree.map(lambda g, ql, qr, r: _rotate(g, ql, qr, r.dims), g32, *qs)
        direction, inner_state = inner.update(rotated_mu, state.inner, None, rotated_grads=rotated_g)
        new = jax.tree.map(lambda d, ql, qr, r, g: _rotate(d, ql, qr, r.dims, back=True).astype(g.dtype), direction,
                           *qs, updates)  # fmt: skip

        def accumulate(side):
            def one(f, g, r):
                return f if f.ndim == 0 else _accumulate(f, to_matrices(g, r.dims)[0], beta, side)

            return one

        left = jax.tree.map(accumulate("left"), state.left, g32, readings)
        right = jax.tree.map(accumulate("right"), state.right, g32, readings)
        if warmup:  # the first gradient only builds the basis: M and the inner state stay at their init
            new = jax.tree.map(lambda u, g: jnp.where(first, g * 0, u), new, updates)
            mu, inner_state = jax.tree.map(
                lambda a, b: jnp.where(first, a, b), (state.mu, state.inner), (mu, inner_state)
            )

        def refreshed(basis):
            def branch(operand):
                factors, qs = operand
                return jax.tree.map(lambda f, q: q if q.ndim == 0 else basis(f, q), factors, qs)

            return branch

        steps = count - 1 if warmup else count  # updates taken, the warm-up not counted
        due = steps % frequency == 0
        branches = [lambda operand: operand[1], refreshed(_eigh_basis)]  # keep, eigh
        if refresh == "eigh":
            index = (first | due).astype(jnp.int32)
        else:
            index, branches = jnp.where(first, 1, jnp.where(due, 2, 0)), [*branches, refreshed(_power_basis)]
        q_left, q_right = jax.lax.switch(index, branches, ((left, right), (state.q_left, state.q_right)))
        return new, EigenbasisState(count, mu, left, right, q_left, q_right, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adam_diagonal(*, b1: Any, b2: Any, eps: Any) -> optax.GradientTransformationExtraArgs:
    """Adam's per-entry step for a first moment M' computed outside (SOAP's inner step).

    With G' the extra argument ``rotated_grads`` (see :func:`scale_by_eigenbasis`) and t the step::

        V ← b2·V + (1 − b2)·G'²,   D' = √(1 − b2^t) / (1 − b1^t) · M' / (√V + ε)

    the bias correction of the SOAP reference code (ε is added to the uncorrected √V). 0/0 is 0.

    Args:
      b1: the first moment's EMA rate b1 ∈ [0, 1), for the bias correction 1 − b1^t.
      b2: the second moment's EMA rate b2 ∈ [0, 1).
      eps: ε ≥ 0 added to √V.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`AdamDiagonalState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from normopt.family.eigenbasis import adam_diagonal
      >>> tx = adam_diagonal(b1=0.9, b2=0.99, eps=0.0)
      >>> m = jnp.array([0.1, -0.2])  # (1 − b1)·g after one step, for g = (1, −2)
      >>> u, _ = tx.update(m, tx.init(m), rotated_grads=jnp.array([1.0, -2.0]))
      >>> u.round(4)  # bias-corrected m / √v = sign(g) on the first step
      Array([ 1., -1.], dtype=float32)

    References:
      Vyas et al., `SOAP: improving and stabilizing Shampoo using Adam <https://arxiv.org/abs/2409.11321>`_, 2024;
      Kingma & Ba, `Adam: a method for stochastic optimization <https://arxiv.org/abs/1412.6980>`_, 2015.
    """
    owner = "adam_diagonal"
    check_range("b1", b1, 0, 1, hi_open=True, owner=owner)
    check_range("b2", b2, 0, 1, hi_open=True, owner=owner)
    check_range("eps", eps, 0, owner=owner)

    def init_fn(params):
        return AdamDiagonalState(
            jnp.zeros([], jnp.int32), jax.tree.map(lambda x: jnp.zeros_like(x, compute_dtype(x)), params)
        )

    def update_fn(updates, state, params=None, *, rotated_grads, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g.astype(v.dtype)), state.nu, rotated_grads)

        def step(m, v):
            t = count.astype(v.dtype)
            correction = jnp.sqrt(1 - b2**t) / (1 - b1**t)
            return correction * safe_div(m.astype(v.dtype), jnp.sqrt(v) + eps)

        return jax.tree.map(step, updates, nu), AdamDiagonalState(count, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def soap(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: Any = 0.95,
    b2: Any = 0.95,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    mask: Any = None,
    precondition_frequency: int = 10,
    shampoo_beta: Any = None,
    max_precond_dim: int = 10000,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    dims: MatrixDims | None = None,
) -> NormedTransformation:
    """SOAP: Adam in the eigenbasis of Shampoo's factors (Vyas et al. 2024, Algorithm 3).

    For each matrix G, with t the step (the first gradient only builds the basis; its update is 0)::

        M ← b1·M + (1 − b1)·G,   G' = Q_Lᵀ G Q_R,   M' = Q_Lᵀ M Q_R,   V ← b2·V + (1 − b2)·G'²
        u = Q_L (√(1 − b2^t)/(1 − b1^t) · M' / (√V + ε)) Q_Rᵀ,   W ← W − η·(u + λ·W)
        L ← β·L + G Gᵀ,   R ← β·R + Gᵀ G;   every f steps Q ← QR(L·Q_sorted)  (one power-iteration step)

    The first basis is the exact ``eigh`` of the first G's factors. Each leaf is read through ``layout``
    (:mod:`normopt.layouts`): a conv kernel ``[*window, in, out]`` is one (window·in) × out matrix, stacked layers
    and experts are one matrix per slice, and embeddings and the output head are matrices like any other, as in
    the paper (its ``max_precond_dim`` = 10000 leaves a vocabulary side unrotated while the model side is).
    Sides larger than ``max_precond_dim`` and the leaves read as vectors (biases, norm scales) are not rotated
    (Adam). ``optax.chain(scale_by_eigenbasis(adam_diagonal(...), refresh="power", warmup=True, ...),
    add_decayed_weights, scale_by_learning_rate)``; :func:`normopt.describe` shows ``"soap"`` (a side rotated)
    or ``"adam"`` per leaf.

    Args:
      learning_rate: float or optax schedule η.
      b1: Adam's first-moment rate b1 ∈ [0, 1).
      b2: Adam's second-moment rate b2 ∈ [0, 1).
      eps: ε ≥ 0 added to √V.
      weight_decay: decoupled weight decay λ ≥ 0 (optax's W ← W − η·(u + λ·W); the reference code decays after
        the step, W ← (1 − ηλ)·(W − η·u), and not on the warm-up step).
      mask: optax-style mask of the leaves that decay.
      precondition_frequency: static int ≥ 1, the steps f between refreshes of the basis.
      shampoo_beta: β ∈ [0, 1] of Shampoo's factors; None for b2 (the reference code's default).
      max_precond_dim: static int; sides larger than this are not rotated.
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``;
        None reads from the parameter names (the last resort). The reference code instead keeps one factor per
        axis of a ≥ 3-D tensor (or merges axes up to ``max_precond_dim`` with ``merge_dims``).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      dims: instead of ``layout`` (kept for compatibility): every ≥ 2-D leaf read as ``[*batch, fan_in, fan_out]``
        through these :class:`~normopt.dims.MatrixDims`, < 2-D leaves as vectors; not together with ``layout``.

    Returns:
      A :class:`normopt.alias.NormedTransformation`: 2·fan_in² + 2·fan_out² + 2·fan_in·fan_out fp32 state per
      matrix.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from normopt.family.eigenbasis import soap
      >>> opt = soap(3e-3, precondition_frequency=10)
      >>> params = {"w": jnp.eye(3), "b": jnp.zeros(3)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params)
      >>> float(jnp.abs(updates["w"]).max())  # the first gradient only builds the basis
      0.0

    References:
      Vyas et al., `SOAP: improving and stabilizing Shampoo using Adam <https://arxiv.org/abs/2409.11321>`_, 2024
      (reference code: github.com/nikhilvyas/SOAP).
    """
    owner = "soap"
    check_range("b1", b1, 0, 1, hi_open=True, owner=owner)
    check_range("b2", b2, 0, 1, hi_open=True, owner=owner)
    check_range("eps", eps, 0, owner=owner)
    check_range("weight_decay", weight_decay, 0, owner=owner)
    if shampoo_beta is not None:
        check_range("shampoo_beta", shampoo_beta, 0, 1, owner=owner)
    _check_static_int("precondition_frequency", precondition_frequency, 1, owner)
    _check_static_int("max_precond_dim", max_precond_dim, 1, owner)
    read = _reader(layout, strict, dims, owner)
    tx = optax.chain(
        _eigenbasis(
            adam_diagonal(b1=b1, b2=b2, eps=eps),
            read,
            b1=b1,
            beta=b2 if shampoo_beta is None else shampoo_beta,
            frequency=precondition_frequency,
            refresh="power",
            warmup=True,
            max_dim=max_precond_dim,
        ),
        _weight_decay(weight_decay, path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
    )

    def rule(path, leaf):
        return "soap" if any(_Reading(read(path, leaf), jnp.shape(leaf)).rotated(max_precond_dim)) else "adam"

    return _recorded(tx, rule, layout, dims, read)


def _sign() -> optax.GradientTransformation:
    """sign(·) on every leaf (the ℓ∞ dualization, NaN for non-finite entries), stateless."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(norms.linf().dualize, updates))


def _params_ema(rate: Any) -> optax.GradientTransformation:
    """Passes updates through and keeps the EMA of the params (before the update) for :func:`splus_eval_params`."""

    def init_fn(params):
        ema = jax.tree.map(lambda x: jnp.zeros_like(x, compute_dtype(x)), params)
        return ParamsEMAState(jnp.zeros([], jnp.result_type(jnp.float32, *jax.tree.leaves(ema))), ema)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("splus: ema_rate needs params in update(grads, state, params); or pass ema_rate=None")
        ema = jax.tree.map(lambda e, p: rate * e + (1 - rate) * p.astype(e.dtype), state.ema, params)
        return updates, ParamsEMAState(rate * state.weight + (1 - rate), ema)

    return optax.GradientTransformation(init_fn, update_fn)


def _nonstandard(nonstandard: Any, read: Reader) -> Callable[[Any], Any]:
    """``params -> pytree of bools``: the leaves SPlus steps with its constant, from ``nonstandard`` (an optax-style
    mask) or, for None, the leaves read with role ``"embedding"``."""
    lookup = path_mask(nonstandard)
    if lookup is not None:
        return lookup
    return lambda tree: jax.tree_util.tree_map_with_path(lambda p, x: read(path_names(p), x).role == "embedding", tree)


def _shape_scale(
    nonstandard: Callable[[Any], Any], constant: Any, read: Reader, max_dim: int
) -> optax.GradientTransformation:
    """u·2/(fan_in + fan_out) for matrices, u·constant for vectors, ``nonstandard`` leaves and matrices with a
    side > ``max_dim`` (SPlus's shape scale)."""

    def update_fn(updates, state, params=None):
        del params
        readings = _readings(read, updates)

        def one(u, r, odd):
            if r.matrix is None or odd or max(r.matrix.fan_in, r.matrix.fan_out) > max_dim:
                return u * jnp.asarray(constant, u.dtype)
            return u * jnp.asarray(2 / (r.matrix.fan_in + r.matrix.fan_out), u.dtype)

        return jax.tree.map(one, updates, readings, nonstandard(updates)), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def splus(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: Any = 0.9,
    b2: Any = 0.999,
    weight_decay: Any = 0.0,
    mask: Any = None,
    precondition_frequency: int = 100,
    max_precond_dim: int = 9999,
    nonstandard: Any = None,
    nonstandard_constant: Any = 0.001,
    ema_rate: Any = 0.999,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    dims: MatrixDims | None = None,
) -> NormedTransformation:
    """SPlus: sign descent in the eigenbasis of Shampoo's factors, with a shape-scaled step (Frans et al. 2025).

    For each matrix G ∈ ℝ^{m × n} (m = fan-in, n = fan-out of the leaf's reading; s = 2/(m + n); s =
    ``nonstandard_constant`` for vectors, ``nonstandard`` leaves and matrices with a side > ``max_precond_dim``)::

        M ← b1·M + (1 − b1)·G,   u = Q_L sign(Q_Lᵀ M Q_R) Q_Rᵀ,   W ← W − η·s·(u + λ·W)
        L ← b2·L + G Gᵀ,   R ← b2·R + Gᵀ G;   Q_L, Q_R ← eigh(L), eigh(R) at step 1 and every k-th step

    sign(·) is the ℓ∞ dualization (the "instant sign" of the paper: Adam's normalization with no second-moment
    memory); the first step uses Q = I. The evaluation weights, the bias-corrected EMA of the params,
    are read with :func:`splus_eval_params`. ``optax.chain(scale_by_eigenbasis(dualize(norms.linf()), ...),
    params EMA, add_decayed_weights, scale_by_learning_rate, shape scale)``, the authors' order. Each leaf is read
    through ``layout`` (:mod:`normopt.layouts`): a conv kernel ``[*window, in, out]`` is one (window·in) × out
    matrix (the authors step every leaf that is not 2-D like a vector), biases and norm scales are vectors.
    :func:`normopt.describe` shows ``"splus"``, ``"splus (nonstandard)"`` (rotated, constant scale) or ``"sign
    (nonstandard)"`` (not rotated) per leaf.

    Args:
      learning_rate: float or optax schedule η (the authors suggest ≈ 0.2 for transformers, and Adam's η times
        twice the width).
      b1: momentum rate b1 ∈ [0, 1).
      b2: rate b2 ∈ [0, 1] of Shampoo's factors.
      weight_decay: decoupled weight decay λ ≥ 0 (scaled by s like the step; the authors' default is 1e-2).
      mask: optax-style mask of the leaves that decay.
      precondition_frequency: static int ≥ 1, the steps k between eigendecompositions (the authors'
        ``inverse_every``).
      max_precond_dim: static int; sides larger than this are not rotated (the authors' ``max_dim`` − 1: they
        rotate sides < max_dim).
      nonstandard: which matrices are stepped with ``nonstandard_constant`` instead of 2/(m + n). None: those the
        layout reads with role ``"embedding"`` (the authors mark paths containing "embed" or "layernorm"; norm
        scales are vectors here, which always take the constant). Or an optax-style mask (pytree of bools or a
        callable of the params) that replaces the role rule.
      nonstandard_constant: the scale s ≥ 0 of vectors and ``nonstandard`` leaves.
      ema_rate: rate r ∈ [0, 1) of the EMA of the params for evaluation; None keeps no EMA (and then
        ``update`` needs no params when ``weight_decay`` is 0).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``:
        fan-in, fan-out and stack axes, and the role ``nonstandard=None`` looks at; None reads from the parameter
        names (the last resort).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      dims: instead of ``layout`` (kept for compatibility): every ≥ 2-D leaf read as a hidden matrix
        ``[*batch, fan_in, fan_out]`` through these :class:`~normopt.dims.MatrixDims` (so no leaf is an
        embedding), < 2-D leaves as vectors; not together with ``layout``.

    Returns:
      A :class:`normopt.alias.NormedTransformation`: 2·fan_in² + 2·fan_out² + 2·fan_in·fan_out fp32 state per
      matrix (one fan_in·fan_out less with ``ema_rate=None``).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from normopt.family.eigenbasis import splus, splus_eval_params
      >>> opt = splus(0.2, precondition_frequency=10)
      >>> params = {"w": jnp.eye(3), "b": jnp.zeros(3)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> splus_eval_params(state)["w"].round(3)  # the bias-corrected EMA: the params before the step
      Array([[1., 0., 0.],
             [0., 1., 0.],
             [0., 0., 1.]], dtype=float32)

    References:
      Frans, Levine & Abbeel, `A stable whitening optimizer for efficient neural network training
      <https://arxiv.org/abs/2506.07254>`_, 2025 (reference code: github.com/kvfrans/splus, ``optax/splus.py``).
    """
    owner = "splus"
    check_range("b1", b1, 0, 1, hi_open=True, owner=owner)
    check_range("b2", b2, 0, 1, owner=owner)
    check_range("weight_decay", weight_decay, 0, owner=owner)
    check_range("nonstandard_constant", nonstandard_constant, 0, owner=owner)
    if ema_rate is not None:
        check_range("ema_rate", ema_rate, 0, 1, hi_open=True, owner=owner)
    _check_static_int("precondition_frequency", precondition_frequency, 1, owner)
    _check_static_int("max_precond_dim", max_precond_dim, 1, owner)
    read = _reader(layout, strict, dims, owner)
    odd = _nonstandard(nonstandard, read)
    tx = optax.chain(
        _eigenbasis(
            _sign(),
            read,
            b1=b1,
            beta=b2,
            frequency=precondition_frequency,
            refresh="eigh",
            warmup=False,
            max_dim=max_precond_dim,
        ),
        optax.identity() if ema_rate is None else _params_ema(ema_rate),
        _weight_decay(weight_decay, path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
        _shape_scale(odd, nonstandard_constant, read, max_precond_dim),
    )
    by_path = None  # a pytree mask, looked up leaf by leaf (a callable mask needs the whole tree)
    if nonstandard is not None and not callable(nonstandard):
        by_path = {path_names(p): m for p, m in jax.tree_util.tree_flatten_with_path(nonstandard)[0]}

    def rule(path, leaf):
        lay = read(path, leaf)
        r = _Reading(lay, jnp.shape(leaf))
        if r.matrix is None:
            return "sign (nonstandard)"
        name = "splus" if any(r.rotated(max_precond_dim)) else "sign"
        if max(r.matrix.fan_in, r.matrix.fan_out) > max_precond_dim:
            return f"{name} (nonstandard)"
        if nonstandard is None:
            odd = lay.role == "embedding"
        elif by_path is None:
            return f"{name} (scale by the nonstandard mask)"
        else:
            odd = bool(by_path.get(tuple(path), False))
        return f"{name} (nonstandard)" if odd else name

    return _recorded(tx, rule, layout, dims, read)


def splus_eval_params(opt_state: Any) -> Any:
    """SPlus's evaluation weights: the bias-corrected EMA of the params, ema / (1 − r^t), found in ``opt_state``.

    Args:
      opt_state: the state of :func:`splus` (also inside ``optax.chain``, ``inject_hyperparams``, ...).

    Returns:
      The params tree (fp32; fp64 for fp64 params); zeros before the first step.

    Raises:
      ValueError: when ``opt_state`` holds no (or several) SPlus EMA, e.g. for ``ema_rate=None``.
    """
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ParamsEMAState))
        if isinstance(s, ParamsEMAState)
    ]
    if len(found) != 1:
        raise ValueError(f"splus_eval_params: expected one SPlus EMA in the state, found {len(found)} (ema_rate=None?)")
    state = found[0]
    return jax.tree.map(lambda e: safe_div(e, state.weight.astype(e.dtype)), state.ema)
