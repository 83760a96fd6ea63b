"""Dion (Ahn et al. 2025, arXiv:2504.05295, "Dion: Distributed Orthonormalized Updates"), Algorithm 1.

Muon orthogonalizes the whole momentum matrix; Dion keeps a rank-r factor ``Q`` and does one step of power
iteration per update, with error feedback so that what the low-rank step leaves out stays in the momentum::

    M ← M + G                      (momentum buffer, no decay: μ acts through the error feedback)
    P ← orthonormalize(M Q)        (QR; P is long side × r)
    R ← Mᵀ P                       (short side × r)
    M ← M − (1 − μ)·P Rᵀ           (error feedback)
    Q ← column-normalize(R)
    update ← c(fan_in, fan_out)·P Qᵀ,   W ← W − η·(update + λ·W)

``M`` is read on its long side (``Q`` sits on the short side), as in the reference code (microsoft/dion). Each
product only contracts one matrix side with a thin factor, so on a mesh nothing bigger than ``(m + n)·r``
values is communicated and no matrix is gathered; the QR runs on the thin ``P``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from normopt import norms as norms_lib
from normopt import partition
from normopt.alias import MUON_FALLBACK, NormedTransformation, _adamw_fallback, _weight_decay, _with_rule
from normopt.dims import MatrixDims, to_matrices
from normopt.dims import layout as matrix_layout


class DionState(NamedTuple):
    """State of :func:`scale_by_dion`."""

    momentum: optax.Updates  # like the params, dtype mu_dtype (default: the params'): M, with error feedback
    q: optax.Updates  # per leaf [*batch, short side, r], float32: the column-normalized right factor Q


def _rank(rank: int | float, m: int, n: int) -> int:
    """``rank`` as an int, or as a fraction of min(m, n) (rounded up), capped at min(m, n)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise TypeError(f"rank must be a static int or a float fraction in (0, 1], got {rank!r}")
    if isinstance(rank, float):
        if not 0 < rank <= 1:
            raise ValueError(f"a fractional rank must lie in (0, 1], got {rank}")
        return max(1, math.ceil(rank * min(m, n)))
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    return min(rank, m, n)


def _step(m: jax.Array, q: jax.Array, mu: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Dion step on ``m`` = [*batch, long, short] (fp32) with ``q`` = [*batch, short, r].

    Returns (P Qᵀ, the new momentum, the new Q). Columns of R that are 0 (M has no mass there) keep their old Q
    and contribute nothing to the update, so M = 0 gives the update 0."""
    t = lambda x: jnp.swapaxes(x, -1, -2)
    p, _ = jnp.linalg.qr(m @ q)
    r = t(m) @ p
    m = m - (1 - mu) * (p @ t(r))
    norm = jnp.sqrt(jnp.sum(r * r, axis=-2, keepdims=True))
    dead = norm == 0  # a NaN/inf column stays NaN (visible to apply_if_finite), never a silent zero step
    q_dir = jnp.where(dead, 0.0, r / jnp.where(dead, 1.0, norm))
    return p @ t(q_dir), m, jnp.where(dead, q, q_dir)


def _on_mesh(f: Any, g: jax.Array, buf: jax.Array, q: jax.Array) -> Any:
    """``f(g, buf, q)`` with Explicit mesh axes switched to Auto inside: the update and momentum keep ``g``'s sharding
    and Q stays replicated (it is thin)."""
    sharding = jax.typeof(g).sharding
    if not sharding.mesh.explicit_axes:
        return f(g, buf, q)
    replicated = NamedSharding(sharding.mesh, P())
    return jax.sharding.auto_axes(f, axes=sharding.mesh.explicit_axes, out_sharding=(sharding, sharding, replicated))(
        g, buf, q
    )


def scale_by_dion(
    rank: int | float = 0.25,
    *,
    mu: float = 0.95,
    scale: str = "spectral",
    layout: Mapping[str, MatrixDims] | None = None,
    seed: int = 0,
    mu_dtype: str | None = None,
) -> optax.GradientTransformation:
    """Dion's direction ``c·P Qᵀ`` for every leaf, each read as a stack of matrices (see module docstring).

    Args:
      rank: static; an int r, or a float fraction of min(fan_in, fan_out) (rounded up), capped at min(fan_in,
        fan_out).
      mu: error-feedback factor μ (may be traced): the part of M along P Rᵀ decays by μ per step.
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES` (default √(fan_out/fan_in), as in the paper).
      layout: ``{pattern: MatrixDims}`` overriding :func:`normopt.partition.default_dims`.
      seed: seed of the Gaussian initial Q.
      mu_dtype: dtype name of the momentum buffer (default: the params' dtype).
    """
    if scale not in norms_lib.SCALE_RULES:
        raise ValueError(f"unknown scale rule {scale!r}; choose one of {sorted(norms_lib.SCALE_RULES)}")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def dims(path, leaf):
        names = norms_lib.path_names(path)
        partition.check_float(names, leaf)
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"{'/'.join(names)}: Dion needs a matrix (>= 2 dims), got shape {jnp.shape(leaf)}; "
                "send vectors to another optimizer (normopt.dion does: AdamW)"
            )
        return partition.default_dims(names, tuple(jnp.shape(leaf)), layout)

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves_with_path(params)
        keys = iter(jax.random.split(jax.random.key(seed), max(len(leaves), 1)))

        def q0(path, leaf):
            lay = matrix_layout(jnp.shape(leaf), dims(path, leaf))
            batch = tuple(jnp.shape(leaf)[a] for a in lay.batch_axes)
            shape = (*batch, min(lay.fan_in, lay.fan_out), _rank(rank, lay.fan_in, lay.fan_out))
            return jax.random.normal(next(keys), shape, jnp.float32)

        return DionState(optax.tree.zeros_like(params, dtype=mu_dtype), jax.tree_util.tree_map_with_path(q0, params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(path, g, buf, q):
            if g.size == 0:  # an empty matrix has no direction (and a zero fan-in would divide by 0)
                return g, buf, q

            def f(g, buf, q):
                m, back = to_matrices(buf.astype(jnp.float32) + g.astype(jnp.float32), dims(path, g))
                fan_in, fan_out = m.shape[-2:]
                tall = fan_in > fan_out  # square: PyTorch layout [out, in], as the reference code
                m = m if tall else jnp.swapaxes(m, -1, -2)
                # QR and the column norms square entries: run on M / max|M| (the step is 0-homogeneous in M and the
                # error feedback linear), so that 1e-30 or 1e30 entries neither underflow nor overflow.
                s = jnp.max(jnp.abs(m), axis=(-2, -1), keepdims=True)
                s = jnp.where(s > 0, s, 1.0)
                d, m, q = _step(m / s, q, mu)
                m = m * s
                d, m = (d, m) if tall else (jnp.swapaxes(d, -1, -2), jnp.swapaxes(m, -1, -2))
                c = norms_lib.SCALE_RULES[scale](fan_in, fan_out)
                return (back(d) * c).astype(g.dtype), back(m).astype(buf.dtype), q

            return _on_mesh(f, g, buf, q)

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
    mu: float = 0.95,
    weight_decay: float = 0.0,
    scale: str = "spectral",
    seed: int = 0,
    mu_dtype: str | None = None,
    fallback: Sequence[str] = MUON_FALLBACK,
    layout: Mapping[str, MatrixDims] | None = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> NormedTransformation:
    """Dion (Ahn et al. 2025): low-rank power iteration + QR with error feedback instead of Muon's full polar
    factor; W ← W − η·(c·P Qᵀ + λ·W). Matrices as in :func:`normopt.muon` (≥ 2-D leaves, conv kernels flattened,
    leading axes batch axes); vectors and ``fallback`` paths (default: embeddings) use AdamW like ``muon``.

    Args:
      learning_rate: float or optax schedule.
      rank: static int r or fraction of min(fan_in, fan_out) (default 1/4, which matched full rank at 3B in the
        paper).
      mu: error-feedback factor μ (the paper's momentum, 0.95).
      weight_decay: decoupled weight decay λ of the matrices.
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES` (default √(fan_out/fan_in)).
      seed, mu_dtype, layout: see :func:`scale_by_dion`.
      fallback, adam_*: the AdamW fallback, as in :func:`normopt.muon`.
    """
    fallback = tuple(fallback)

    def rule(path, leaf):
        partition.check_float(path, leaf)
        return "adamw" if len(leaf.shape) < 2 or partition.first_match({p: True for p in fallback}, path) else "dion"

    matrices = optax.chain(
        scale_by_dion(rank, mu=mu, scale=scale, layout=layout, seed=seed, mu_dtype=mu_dtype),
        _weight_decay(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam = _adamw_fallback(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        adam_b1,
        adam_b2,
        adam_eps,
        adam_weight_decay,
        mu_dtype,
    )
    tx = optax.partition({"dion": matrices, "adamw": adam}, lambda params: partition.labels(rule, params))
    return _with_rule(tx, rule)
