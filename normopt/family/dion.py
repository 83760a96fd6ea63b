"""Dion (Ahn et al. 2025, arXiv:2504.05295, "Dion: Distributed Orthonormalized Updates"), Algorithm 1.

Muon orthogonalizes the whole momentum matrix; Dion keeps a rank-r factor ``Q`` and does one step of power
iteration per update, with error feedback so that what the low-rank step leaves out stays in the momentum::

    M ← M + G                      (momentum buffer, no decay: β acts through the error feedback)
    P ← orthonormalize(M Q)        (QR; P is long side × r)
    R ← Mᵀ P                       (short side × r)
    M ← M − (1 − β)·P Rᵀ           (error feedback; β is the paper's μ)
    Q ← column-normalize(R)
    update ← c(fan_in, fan_out)·P Qᵀ,   W ← W − η·(update + λ·W)

``M`` is read on its long side (``Q`` sits on the short side), as in the reference code (microsoft/dion). Each
product only contracts one matrix side with a thin factor, so on a mesh nothing bigger than ``(m + n)·r``
values is communicated and no matrix is gathered; the QR runs on the thin ``P``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from normopt import layouts, partition
from normopt import norms as norms_lib
from normopt._numerics import (
    check_choice,
    check_dtype,
    check_float,
    check_range,
    check_static,
    compute_dtype,
    is_traced,
    on_auto_axes,
    path_mask,
    path_names,
    per_matrix,
    safe_div,
)
from normopt._numerics import weight_decay as _weight_decay
from normopt.alias import MUON_FALLBACK_ROLES, NormedTransformation, adamw_fallback, with_rule
from normopt.dims import matrix_layout, to_matrices


class DionState(NamedTuple):
    """State of :func:`scale_by_dion`: the momentum with error feedback and the right factor Q, per leaf.

    Attributes:
      momentum: M per leaf, like the params, stored in ``mu_dtype`` (default: the params').
      q: the column-normalized right factor Q per leaf, shape ``[*batch, short side, r]``, float32.
    """

    momentum: optax.Updates  # like the params, dtype mu_dtype (default: the params'): M, with error feedback
    q: optax.Updates  # per leaf shape=[*batch, short side, r], dtype=float32: the column-normalized right factor Q


def _check_rank(rank: Any, owner: str) -> None:
    """A static int ≥ 1, or a float fraction in (0, 1]."""
    check_static("rank", rank, owner=owner)
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise TypeError(f"{owner}: rank must be a static int >= 1 or a float fraction in (0, 1], got {rank!r}")
    if isinstance(rank, float):
        check_range("rank", rank, 0, 1, lo_open=True, owner=owner)
    else:
        check_range("rank", rank, 1, owner=owner)


def _check_static_int(name: str, value: Any, owner: str) -> None:
    """None (= 1) or a static Python int ≥ 1 (``power_iters``, ``rank_multiple_of``): they set shapes or loop
    counts. The default None, not 1, keeps ``optax.inject_hyperparams`` from tracing them."""
    if value is None:
        return
    check_static(name, value, owner=owner)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be a static int >= 1, got {value!r}")
    check_range(name, value, 1, owner=owner)


def _rank(rank: int | float, m: int, n: int, multiple: int = 1) -> int:
    """``rank`` as an int, or as a fraction of min(m, n) (rounded up), then rounded up to a multiple of
    ``multiple`` and capped at min(m, n) (as the reference code: r = k·⌈r/k⌉, r = min(r, m, n))."""
    r = max(1, math.ceil(rank * min(m, n))) if isinstance(rank, float) else rank
    return min(-(-r // multiple) * multiple, m, n)


def _step(m: jax.Array, q: jax.Array, beta: Any, power_iters: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Dion step on ``m`` = [*batch, long, short] (≥ fp32) with ``q`` = [*batch, short, r].

    ``power_iters`` steps of power iteration P = qr(M Q), R = Mᵀ P, Q ← R (unnormalized between steps: the QR
    of the next step ignores column scales), as the reference code's ``power_iteration``.

    Returns (P Qᵀ, the new momentum, the new Q). Columns of R that are 0 (M has no mass there) keep their old Q
    and contribute nothing to the update, so M = 0 gives the update 0."""
    t = lambda x: jnp.swapaxes(x, -1, -2)
    r = q
    for _ in range(power_iters):
        p, _ = per_matrix(jnp.linalg.qr, m @ r)  # one matrix per call: batched CPU QR can deadlock
        r = t(m) @ p
    m = m - (1 - beta) * (p @ t(r))
    norm = jnp.sqrt(jnp.sum(r * r, axis=-2, keepdims=True))
    q_dir = safe_div(r, norm)  # a NaN/inf column stays NaN (visible to apply_if_finite), never a silent zero step
    return p @ t(q_dir), m, jnp.where(norm == 0, q, q_dir)


def scale_by_dion(
    *,
    rank: int | float = 0.25,
    beta: float = 0.95,
    scale: str = "spectral",
    layout: layouts.LayoutSpec = None,
    seed: int = 0,
    mu_dtype: Any | None = None,
    power_iters: int | None = None,
    rank_multiple_of: int | None = None,
) -> optax.GradientTransformation:
    """Dion's direction ``c·P Qᵀ`` for every leaf, each read as a stack of matrices.

    Per matrix G (read on its long side, Q on the short side), with momentum M and the rank-r factor Q::

        M ← M + G;   P ← qr(M Q);   R ← Mᵀ P;   M ← M − (1 − β)·P Rᵀ;   Q ← R / ‖R‖_col;   u = c(fan_in, fan_out)·P Qᵀ

    With ``power_iters = k`` the two lines P ← qr(M Q), R ← Mᵀ P run k times (Q ← R between them, unnormalized)
    before the error feedback, as ``power_iteration`` of the reference code (microsoft/dion,
    ``dion_reference.py``); k = 1 is Algorithm 1 of the paper.

    Arithmetic runs in ≥ fp32; the momentum is stored in ``mu_dtype``, Q in fp32.

    Args:
      rank: static; an int r ≥ 1, or a float fraction in (0, 1] of min(fan_in, fan_out) (rounded up), capped at
        min(fan_in, fan_out). Under ``optax.inject_hyperparams`` list it in ``static_args``.
      beta: error-feedback factor β ∈ [0, 1) (the paper's momentum μ; may be traced): the part of M along
        P Rᵀ decays by β per step.
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES` (default √(fan_out/fan_in), as in the paper).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``.
      seed: seed of the Gaussian initial Q.
      mu_dtype: dtype of the momentum buffer (default: the params' dtype).
      power_iters: static int k ≥ 1, power-iteration steps per update (default None: 1, the paper's Algorithm 1;
        the reference's ``power_iters``). Each extra step costs two more thin products and a QR. Under
        ``optax.inject_hyperparams`` list it in ``static_args``.
      rank_multiple_of: static int ≥ 1 (default None: 1); the rank is rounded up to a multiple of it, then capped at
        min(fan_in, fan_out) (the reference's ``rank_multiple_of``: r = k·⌈r/k⌉, r = min(r, m, n)). Under
        ``optax.inject_hyperparams`` list it in ``static_args``.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`DionState`; follow it with
      ``optax.scale_by_learning_rate``.

    Example:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.scale_by_dion(rank=2)
      >>> params = {"w": jnp.ones((4, 3))}
      >>> u, state = tx.update({"w": jnp.eye(4, 3)}, tx.init(params))
      >>> u["w"].shape
      (4, 3)

    References:
      Ahn et al., `Dion: Distributed Orthonormalized Updates <https://arxiv.org/abs/2504.05295>`_, 2025
      (Algorithm 1).
    """
    owner = "scale_by_dion"
    _check_rank(rank, owner)
    _check_static_int("power_iters", power_iters, owner)
    _check_static_int("rank_multiple_of", rank_multiple_of, owner)
    power_iters = 1 if power_iters is None else power_iters
    rank_multiple_of = 1 if rank_multiple_of is None else rank_multiple_of
    check_range("beta", beta, 0, 1, hi_open=True, owner=owner)
    check_choice("scale", scale, norms_lib.SCALE_RULES, owner=owner)
    if not is_traced(seed) and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{owner}: seed must be an int, got {seed!r}")
    mu_dtype = check_dtype("mu_dtype", mu_dtype, owner=owner)
    layouts.check_spec(layout)

    def dims(path, leaf):
        check_float(path, leaf)
        names = path_names(path)
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"{'/'.join(names)}: Dion needs a matrix (>= 2 dims), got shape {jnp.shape(leaf)}; "
                "send vectors to another optimizer (normopt.dion does: AdamW)"
            )
        return partition.read(names, leaf, layout).dims

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves_with_path(params)
        keys = iter(jax.random.split(jax.random.key(seed), max(len(leaves), 1)))

        def q0(path, leaf):
            lay = matrix_layout(jnp.shape(leaf), dims(path, leaf))
            batch = tuple(jnp.shape(leaf)[a] for a in lay.batch_axes)
            shape = (*batch, min(lay.fan_in, lay.fan_out), _rank(rank, lay.fan_in, lay.fan_out, rank_multiple_of))
            return jax.random.normal(next(keys), shape, jnp.float32)

        return DionState(optax.tree.zeros_like(params, dtype=mu_dtype), jax.tree_util.tree_map_with_path(q0, params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(path, g, buf, q):
            if g.size == 0:  # an empty matrix has no direction (and a zero fan-in would divide by 0)
                return g, buf, q

            def f(args):
                g, buf, q_in = args
                dtype = compute_dtype(g)
                m, back = to_matrices(buf.astype(dtype) + g.astype(dtype), dims(path, g))
                fan_in, fan_out = m.shape[-2:]
                tall = fan_in > fan_out  # square: PyTorch layout [out, in], as the reference code
                m = m if tall else jnp.swapaxes(m, -1, -2)
                # QR and the column norms square entries: run on M / max|M| (the step is 0-homogeneous in M and the
                # error feedback linear), so that 1e-30 or 1e30 entries neither underflow nor overflow.
                s = jnp.max(jnp.abs(m), axis=(-2, -1), keepdims=True)
                s = jnp.where(s > 0, s, 1.0)
                d, m, q = _step(m / s, q_in.astype(dtype), beta, power_iters)
                m = m * s
                d, m = (d, m) if tall else (jnp.swapaxes(d, -1, -2), jnp.swapaxes(m, -1, -2))
                c = norms_lib.SCALE_RULES[scale](fan_in, fan_out)
                return (back(d) * c).astype(g.dtype), back(m).astype(buf.dtype), q.astype(q_in.dtype)

            # On a mesh: the update and momentum keep g's sharding, Q stays replicated (it is thin).
            out = lambda s: (s[0], s[0], NamedSharding(s[0].mesh, P()))
            return on_auto_axes(f, (g, buf, q), out_sharding=out)

        leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
        outs = [
            leaf(path, g, buf, q)
            for (path, g), buf, q in zip(
                leaves, treedef.flatten_up_to(state.momentum), treedef.flatten_up_to(state.q), strict=True
            )
        ]
        d, momentum, q = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
        return d, DionState(momentum, q)

    return optax.GradientTransformation(init_fn, update_fn)


def dion(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int | float = 0.25,
    beta: float = 0.95,
    weight_decay: float = 0.0,
    mask: Any = None,
    scale: str = "spectral",
    seed: int = 0,
    mu_dtype: Any | None = None,
    power_iters: int | None = None,
    rank_multiple_of: int | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    fallback: Sequence[str] = (),
    fallback_roles: Sequence[str] = MUON_FALLBACK_ROLES,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> NormedTransformation:
    """Dion: low-rank power iteration + QR with error feedback instead of Muon's full polar factor.

    For the matrices (≥ 2-D leaves, conv kernels flattened, leading axes batch axes, as in :func:`normopt.muon`)::

        W ← W − η·(c(fan_in, fan_out)·P Qᵀ + λ·W)      (P Qᵀ from :func:`scale_by_dion`)

    vectors, embeddings, the output head and ``fallback`` paths use AdamW, like ``normopt.muon``.

    Args:
      learning_rate: float or optax schedule.
      rank: static int r ≥ 1 or fraction in (0, 1] of min(fan_in, fan_out) (default 1/4, which matched full rank
        at 3B in the paper).
      beta: error-feedback factor β ∈ [0, 1) (the paper's momentum μ = 0.95).
      weight_decay: decoupled weight decay λ ≥ 0 of the matrices.
      mask: optax-style mask (a pytree of bools or a callable of the params) of the matrices that decay.
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES` (default √(fan_out/fan_in)).
      seed: seed of the Gaussian initial Q (see :func:`scale_by_dion`).
      mu_dtype: dtype the momentum and the AdamW moments are stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``.
      power_iters: static int ≥ 1, power-iteration steps per update (default None: 1); see :func:`scale_by_dion`.
      rank_multiple_of: static int ≥ 1 (default None: 1); the rank is rounded up to a multiple of it, capped at
        min(fan_in, fan_out); see :func:`scale_by_dion`.
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: extra path regexes of matrices to send to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW (default: embeddings and the output head, as :func:`normopt.muon`).
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1: AdamW's β₁ ∈ [0, 1).
      adam_b2: AdamW's β₂ ∈ [0, 1).
      adam_eps: AdamW's ε > 0.
      adam_weight_decay: AdamW's decoupled weight decay ≥ 0.

    Returns:
      A :class:`normopt.NormedTransformation` (an ``optax.GradientTransformationExtraArgs`` that
      :func:`normopt.describe` can print).

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = normopt.dion(0.02, rank=0.5)
      >>> opt_ref = normopt.dion(0.02, rank=0.25, rank_multiple_of=8, power_iters=2)  # the reference's options
      >>> params = {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Ahn et al., `Dion: Distributed Orthonormalized Updates <https://arxiv.org/abs/2504.05295>`_, 2025.
    """
    owner = "dion"
    _check_static_int("power_iters", power_iters, owner)
    _check_static_int("rank_multiple_of", rank_multiple_of, owner)
    check_range("weight_decay", weight_decay, 0, owner=owner)
    check_range("adam_b1", adam_b1, 0, 1, hi_open=True, owner=owner)
    check_range("adam_b2", adam_b2, 0, 1, hi_open=True, owner=owner)
    check_range("adam_eps", adam_eps, 0, lo_open=True, owner=owner)
    check_range("adam_weight_decay", adam_weight_decay, 0, owner=owner)
    layouts.check_spec(layout)
    reader = partition.matrix_reader(layout, strict, fallback, fallback_roles, owner)
    scaled = scale_by_dion(
        rank=rank,
        beta=beta,
        scale=scale,
        layout=layout,
        seed=seed,
        mu_dtype=mu_dtype,
        power_iters=power_iters,
        rank_multiple_of=rank_multiple_of,
    )

    def rule(path, leaf):
        if reader(path, leaf) is None:
            return "adamw"
        return "dion"

    matrices = optax.chain(
        scaled, _weight_decay(weight_decay, path_mask(mask)), optax.scale_by_learning_rate(learning_rate)
    )
    adam = adamw_fallback(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=0.0,
        weight_decay=adam_weight_decay,
        mask=mask,
        mu_dtype=mu_dtype,
        nesterov=False,
    )
    tx = optax.partition({"dion": matrices, "adamw": adam}, lambda params: partition.labels(rule, params))
    return with_rule(tx, rule, layout)
