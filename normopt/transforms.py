"""Optax GradientTransformations: momentum and dualization (steepest descent under a chosen norm).

Steepest descent under ‖·‖ (Bernstein & Newhouse 2024, "Old optimizer, new norm"):

* constrained step (a linear minimisation oracle): argmin_{‖Δ‖≤η} ⟨g, Δ⟩ = −η·dualize(g);
* regularized step: argmin_Δ ⟨g, Δ⟩ + (λ/2)‖Δ‖² = −(‖g‖*/λ)·dualize(g).

:func:`dualize` produces ``dualize(g)`` (constrained) or ``‖g‖*·dualize(g)`` (regularized); the learning rate
(η or 1/λ) and the sign come from ``optax.scale_by_learning_rate`` as usual.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import _describe, _numerics, layouts, partition
from normopt import norms as norms_lib

MODES = ("constrained", "regularized")


def _inner(g: jax.Array, d: jax.Array) -> jax.Array:
    """⟨g, d⟩ accumulated in ≥ fp32."""
    dtype = _numerics.compute_dtype(g)
    return jnp.sum(g.astype(dtype) * d.astype(dtype))


def tree_rule(spec: Any, tree: Any, layout: layouts.LayoutSpec = None, strict: bool = False) -> partition.Rule:
    """The rule ``(path, leaf) -> Norm | None`` that ``spec`` gives the leaves of ``tree``.

    Args:
      spec: a :data:`normopt.norms.NormSpec` (one norm, a pytree of norms, or a callable ``(path, leaf) -> Norm``).
      tree: the parameters (or gradients) whose leaves the rule covers.
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`); each norm reads its leaf so
        (:func:`normopt.norms.with_layout`).
      strict: raise for a ≥ 2-D leaf read only from its name.

    Returns:
      A function ``(path, leaf) -> Norm | None`` (None: the leaf is left unchanged).

    Raises:
      ValueError: naming the leaf, when a norm cannot act on its shape.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    resolved = treedef.flatten_up_to(norms_lib.resolve(spec, tree))  # None leaves of `tree` itself are no leaves
    chosen = {}
    for (p, x), n in zip(flat, resolved, strict=True):
        path = _numerics.path_names(p)
        if n is not None:
            try:
                n = norms_lib.with_layout(n, partition.read(path, x, layout, strict))
                n.check(tuple(jnp.shape(x)))
            except ValueError as e:
                raise ValueError(f"{_numerics.path_str(p)} (shape {tuple(jnp.shape(x))}): {e}") from None
        chosen[path] = n
    return lambda path, leaf: chosen[tuple(path)]


def dualize(
    norms: Any,
    mode: str = "constrained",
    sharding: Any = None,
    *,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
) -> optax.GradientTransformation:
    """Maps each gradient leaf g_l to its steepest-descent direction under the chosen norm.

        constrained:  u_l = dualize_l(g_l)                 (the unit-norm direction of steepest ascent)
        regularized:  u_l = ‖g_l‖*_l · dualize_l(g_l)

    For a :func:`normopt.norms.weighted_max` norm the regularized mode shares one factor ‖g‖* = Σ_l ‖g_l‖*_l / w_l
    across the tree (a global coupling of the layers' step lengths). The dual norm is computed as ⟨g, dualize(g)⟩,
    exact for exact dualizations and consistent with approximate ones. With l2 the regularized mode is plain
    gradient descent (Bernstein & Newhouse 2024, "Old optimizer, new norm").

    Args:
      norms: a :data:`normopt.norms.NormSpec` (one Norm or name, a pytree of Norms/None that is a prefix of the
        params, or a callable ``(path, leaf) -> Norm | None``), or a :class:`normopt.norms.WeightedMax`.
        Leaves whose norm is None pass through unchanged.
      mode: ``"constrained"`` or ``"regularized"``.
      sharding: None, or :func:`normopt.sharding.layer_sharded` to orthogonalize same-shape spectral leaves as
        stacks whose whole matrices are spread over a mesh (same values; see :mod:`normopt.sharding`).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`): matrix norms built without ``dims`` take
        the leaf's fan-in/fan-out axes from it, vector norms act on each slice of its stack axes. None: names.
      strict: raise (naming the leaf) when a leaf with ≥ 2 dimensions would be read only from its name.

    Returns:
      A stateless ``optax.GradientTransformation``; constrained updates keep each leaf's dtype, regularized ones
      are ≥ float32 (‖g‖*·dualize(g) can pass the fp16 maximum before the learning rate scales it down).

    Examples:
      >>> import jax.numpy as jnp, optax, normopt
      >>> tx = optax.chain(normopt.dualize(normopt.norms.spectral(method="svd")), optax.scale_by_learning_rate(0.1))
      >>> g = {"w": jnp.eye(3)}
      >>> u, _ = tx.update(g, tx.init(g))
      >>> [round(float(v), 4) for v in u["w"].diagonal()]
      [-0.1, -0.1, -0.1]
    """
    _numerics.check_choice("mode", mode, MODES, owner="dualize")
    layouts.check_spec(layout)
    combined = isinstance(norms, norms_lib.WeightedMax)
    spec = norms.norms if combined else norms

    def resolved(tree):
        rule = tree_rule(spec, tree, layout, strict)
        return jax.tree_util.tree_map_with_path(lambda p, x: rule(_numerics.path_names(p), x), tree), rule

    def init_fn(params):
        _, rule = resolved(params)  # fail at init, naming the leaf, rather than inside a jitted step
        _describe.record(rule, layout, params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        chosen, _ = resolved(updates)
        if sharding is not None:
            directions = sharding.dualize(chosen, updates)
        else:
            directions = norms_lib._map(lambda n, g: n.dualize(g), chosen, updates)
        if combined:
            directions = norms_lib._map(
                lambda n, d, w: d / jnp.asarray(w, d.dtype), chosen, directions, norms._weights(updates)
            )
        if mode == "regularized":
            if combined:
                total = sum(
                    _inner(g, d)
                    for n, g, d in zip(
                        jax.tree.leaves(chosen, is_leaf=lambda x: x is None),
                        jax.tree.leaves(updates),
                        jax.tree.leaves(directions),
                        strict=True,
                    )
                    if n is not None
                )
                directions = norms_lib._map(lambda n, d: d * total, chosen, directions)
            else:
                directions = norms_lib._map(lambda n, g, d: d * _inner(g, d), chosen, updates, directions)
        return directions, state

    return optax.GradientTransformation(init_fn, update_fn)


class MomentumState(NamedTuple):
    """State of :func:`momentum`.

    Attributes:
      count: shape ``()``, int32: the number of updates so far (for the bias correction).
      mu: like the params, dtype ``mu_dtype`` (default: the params'): the EMA of the gradients.
    """

    count: jax.Array  # shape=(), dtype=int32: number of updates so far
    mu: optax.Updates  # like the params, dtype mu_dtype (default: the params' dtype): the EMA of gradients


def momentum(
    beta: float = 0.9, *, nesterov: bool = False, debias: bool = True, mu_dtype: str | None = None
) -> optax.GradientTransformation:
    """Exponential moving average of gradients, optionally bias-corrected and Nesterov-style.

        m_t = β·m_{t−1} + (1 − β)·g_t,   u_t = m̂_t  or (Nesterov)  u_t = β·m̂_{t+1}' + (1 − β)·ĝ_t,

    where hats divide by (1 − β^t) when ``debias`` (the latter uses 1 − β^{t+1} for m, as optax.contrib.muon does,
    so normopt.muon reproduces its updates). β = 0 gives u_t = g_t. optax has ``trace`` (no (1 − β), no bias
    correction) and ``ema`` (no Nesterov); this is the combination Muon (Jordan 2024) and Scion use.

    Args:
      beta: decay rate in [0, 1); may be a traced hyperparameter.
      nesterov: use the Nesterov look-ahead (static).
      debias: divide by (1 − β^t) (static).
      mu_dtype: dtype name of the EMA (e.g. ``"float32"`` for bf16 params); default the params' dtype.

    The arithmetic and the returned updates are in ≥ float32 (float64 stays float64), so fp16 gradients near the
    fp16 maximum do not overflow; cast the final update back (the normopt aliases do) or let ``optax.apply_updates``.
    """
    _numerics.check_range("beta", beta, 0.0, 1.0, hi_open=True, owner="momentum")
    mu_dtype = _numerics.check_dtype("mu_dtype", mu_dtype, owner="momentum")

    def init_fn(params):
        _numerics.check_float_leaves(params)
        return MomentumState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params, dtype=mu_dtype))

    def update_fn(updates, state, params=None):
        del params
        # Arithmetic in ≥ fp32: in fp16 the debiased g/(1 − β) overflows for |g| > 3.3e3 (β = 0.95).
        grads = jax.tree.map(lambda g: g.astype(_numerics.compute_dtype(g)), updates)
        mu = optax.tree.update_moment(grads, state.mu, beta, 1)
        count = optax.safe_increment(state.count)
        if nesterov:
            m_next = optax.tree.bias_correction(mu, beta, optax.safe_increment(count)) if debias else mu
            g_hat = optax.tree.bias_correction(grads, beta, count) if debias else grads
            mu_hat = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, m_next, g_hat)
        else:
            mu_hat = optax.tree.bias_correction(mu, beta, count) if debias else mu
        # mu_hat stays in ≥ fp32: at t = 1 the Nesterov value is ≈1.5·g, past the fp16 range for |g| > 4.4e4. The
        # aliases cast each final update back to its gradient's dtype.
        # The state keeps its dtype (mu_dtype, else the params'), so a step never changes the jit signature.
        return mu_hat, MomentumState(count, jax.tree.map(lambda m, old: m.astype(old.dtype), mu, state.mu))

    return optax.GradientTransformation(init_fn, update_fn)
