"""FAdam: Adam read as natural gradient descent with a diagonal empirical Fisher (Hwang 2024, "FAdam: Adam is a
natural gradient optimizer using diagonal empirical Fisher information", arXiv:2405.12807, Algorithm 1).

Natural gradient is steepest descent under the Fisher metric ‖Δ‖_F = √(Δᵀ F Δ): the regularized step is
−η·F⁻¹g. FAdam takes F ≈ diag(f), f the bias-corrected EMA of g², and the power p (p = ½ is Adam's
denominator). Per leaf, at step t:

    f_t  = ρ_t·f_{t−1} + (1 − ρ_t)·g_t²,   ρ_t = β₂(1 − β₂^{t−1})/(1 − β₂^t)   (= Adam's ν_t / (1 − β₂^t))
    ε_t  = ε·min(1, rms(g_t))                                                   (adaptive epsilon)
    ḡ    = g_t / (f_t^p + ε_t),            ḡ ← ḡ / max(1, rms(ḡ)/c)             (natural gradient, clipped)
    m_t  = β₁·m_{t−1} + (1 − β₁)·ḡ                                               (momentum on the natural gradient)
    ḡ_w  = θ / (f_t^p + ε_t),              ḡ_w ← ḡ_w / max(1, rms(ḡ_w)/c)       (natural gradient of ½‖θ‖²)
    θ    ← θ − η·(m_t + λ·ḡ_w)

With β₁ = 0, c = ∞ and ε → 0 the first step is sign(g): steepest descent under ℓ∞, like Adam.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt._numerics import check_choice, check_float_leaves, check_range, safe_div

EPS_PLACEMENTS = ("outside", "power", "inside")
"""Where ``eps_placement`` puts the adaptive ε_t in FAdam's denominator (see :func:`scale_by_fadam`)."""


class ScaleByFAdamState(NamedTuple):
    """State of :func:`scale_by_fadam`.

    Attributes:
      count: shape=(), int32: the number of updates so far.
      mu: like the params: m_t, the EMA of clipped natural gradients (no bias correction).
      nu: like the params: Adam's ν_t, the EMA of g² (no bias correction); f_t = ν_t/(1 − β₂ᵗ).
    """

    count: jax.Array  # shape=(), dtype=int32: number of updates so far
    mu: optax.Updates  # like the params (shape and dtype): m_t, the EMA of clipped natural gradients (no bias corr.)
    nu: (
        optax.Updates
    )  # like the params (shape and dtype): Adam's ν_t = EMA of g², no bias correction; f_t = ν_t/(1−β₂^t)


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def _clip_rms(x: jax.Array, clip: Any) -> jax.Array:
    return x / jnp.maximum(1.0, _rms(x) / clip)


def _denominator(fisher: jax.Array, eps_t: jax.Array, p: Any, placement: str) -> jax.Array:
    """FAdam's denominator with the adaptive ε_t placed as ``placement`` (one of :data:`EPS_PLACEMENTS`)."""
    if placement == "outside":
        return fisher**p + eps_t
    if placement == "power":
        return fisher**p + eps_t ** (2 * p)
    return (fisher + eps_t * eps_t) ** p


def _check(
    owner: str, b1: Any, b2: Any, eps: Any, clip: Any, p: Any, weight_decay: Any, eps_placement: Any = "outside"
) -> None:
    check_choice("eps_placement", eps_placement, EPS_PLACEMENTS, owner=owner)
    check_range("b1", b1, 0, 1, hi_open=True, owner=owner)
    check_range("b2", b2, 0, 1, hi_open=True, owner=owner)
    check_range("eps", eps, 0, owner=owner)  # ε = 0 is allowed: the divisions are guarded
    check_range("clip", clip, 0, lo_open=True, owner=owner)
    check_range("p", p, 0, lo_open=True, owner=owner)
    check_range("weight_decay", weight_decay, 0, owner=owner)


def _decays(mask: Any, params: Any) -> list[bool]:
    """Per leaf of ``params``: whether weight decay applies (an optax-style mask: pytree prefix or callable)."""
    if mask is None:
        return [True] * len(jax.tree.leaves(params))
    tree = mask(params) if callable(mask) else mask
    full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
    return jax.tree.leaves(full)


def scale_by_fadam(
    *,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    clip: Any = 1.0,
    p: Any = 0.5,
    weight_decay: Any = 0.0,
    mask: Any = None,
    eps_placement: str = "outside",
) -> optax.GradientTransformation:
    """FAdam's direction m_t + λ·ḡ_w: Adam read as natural gradient under a diagonal empirical Fisher.

    Per leaf, at step t (the module docstring has the derivation)::

        f_t = ν_t / (1 − β₂^t),   ν_t = β₂·ν_{t−1} + (1 − β₂)·g_t²,   ε_t = ε·min(1, rms(g_t))
        ḡ = clip_c(g_t / (f_t^p + ε_t)),   m_t = β₁·m_{t−1} + (1 − β₁)·ḡ
        u = m_t + λ·clip_c(θ / (f_t^p + ε_t)),   clip_c(x) = x / max(1, rms(x)/c)

    Divisions by f_t^p + ε_t = 0 (a leaf whose gradient is exactly 0 with ε = 0) give 0.

    Where ε goes. Public implementations place the adaptive ε_t three ways, chosen by ``eps_placement``:

    * ``"outside"`` (default): f_t^p + ε_t, with ε_t = ε·min(1, rms(g_t)): the author-endorsed implementation
      (lessw2020/FAdam_PyTorch, whose steps are numbered by the paper's Algorithm 1 lines, "8 - adaptive
      epsilon", "9 - compute natural gradient", in the commit "update adaptive epsilon per v3 paper algo") and
      pytorch-optimizer's ``FAdam`` (kozistr, v3.0.1 on);
    * ``"power"``: f_t^p + ε_t^{2p}: ε² taken on the Fisher's scale, then raised to p (the term the official code
      leaves in a comment, ``# **(2*pval)``, and a later pytorch-optimizer revision uses); equal to ``"outside"``
      for p = ½;
    * ``"inside"``: (f_t + ε_t²)^p: ε inside the root (optax's ``eps_root`` convention); for p = ½ it differs
      from ``"outside"`` by at most ε_t per entry.

    ``"outside"`` is what the official implementation takes Algorithm 1 (arXiv:2405.12807 v3, lines 8-9) to say;
    the paper's own text was not available to check when this option was added, so the default is unchanged.

    Args:
      b1: momentum decay β₁ ∈ [0, 1) of the natural gradient.
      b2: decay β₂ ∈ [0, 1) of the Fisher estimate.
      eps: ε ≥ 0, scaled per leaf by min(1, rms(g)).
      clip: c > 0, the largest RMS of the natural gradient and of the weight-decay term (``jnp.inf``: no clipping).
      p: the Fisher power p > 0 (½ as in Adam; 1 is the literal diagonal natural gradient F⁻¹g).
      weight_decay: λ ≥ 0 of the Fisher-preconditioned weight decay; a literal 0 needs no ``params``.
      mask: optax-style mask (a pytree of bools, a prefix of the params, or a callable of the params) of the leaves
        that decay; None: all.
      eps_placement: static; where ε_t enters the denominator: ``"outside"`` (default) f_t^p + ε_t, ``"power"``
        f_t^p + ε_t^{2p}, ``"inside"`` (f_t + ε_t²)^p (see above).

    All numeric arguments may be traced hyperparameters (``optax.inject_hyperparams``).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByFAdamState`; follow it with
      ``optax.scale_by_learning_rate``.

    Example:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.scale_by_fadam(b1=0.0, eps=0.0, clip=jnp.inf)
      >>> g = jnp.array([2.0, -0.5])
      >>> u, _ = tx.update(g, tx.init(g))
      >>> u.round(4)  # the first step is sign(g)
      Array([ 1., -1.], dtype=float32)
      >>> tx = normopt.scale_by_fadam(eps_placement="inside")  # (f_t + ε_t²)^p

    References:
      Hwang, `FAdam: Adam is a natural gradient optimizer using diagonal empirical Fisher information
      <https://arxiv.org/abs/2405.12807>`_, 2024 (Algorithm 1).
    """
    _check("scale_by_fadam", b1, b2, eps, clip, p, weight_decay, eps_placement)
    decay = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)

    def init_fn(params):
        check_float_leaves(params)  # a TypeError naming the leaf, not a silent step
        zeros = optax.tree.zeros_like(params)
        return ScaleByFAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        if decay and params is None:
            raise ValueError("fadam with weight_decay != 0 needs the params: call update(grads, state, params)")
        count = optax.safe_increment(state.count)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        fisher = optax.tree.bias_correction(nu, b2, count)
        denom = jax.tree.map(
            lambda f, g: _denominator(f, eps * jnp.minimum(1.0, _rms(g)), p, eps_placement), fisher, updates
        )
        natural = jax.tree.map(lambda g, d: _clip_rms(safe_div(g, d), clip), updates, denom)
        mu = optax.tree.update_moment(natural, state.mu, b1, 1)
        direction = mu
        if decay:
            treedef = jax.tree.structure(mu)
            direction = treedef.unflatten(
                [
                    m + weight_decay * _clip_rms(safe_div(x, d), clip) if keep else m
                    for m, x, d, keep in zip(
                        treedef.flatten_up_to(mu),
                        treedef.flatten_up_to(params),
                        treedef.flatten_up_to(denom),
                        _decays(mask, params),
                        strict=True,
                    )
                ]
            )
        direction = jax.tree.map(lambda u, g: u.astype(g.dtype), direction, updates)
        return direction, ScaleByFAdamState(
            count, optax.tree.cast_like(mu, state.mu), optax.tree.cast_like(nu, state.nu)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def fadam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    clip: Any = 1.0,
    p: Any = 0.5,
    weight_decay: Any = 0.0,
    mask: Any = None,
    eps_placement: str = "outside",
) -> optax.GradientTransformation:
    """FAdam: Adam as natural gradient descent with a diagonal empirical Fisher, θ ← θ − η·(m_t + λ·ḡ_w).

    ``optax.chain(scale_by_fadam(b1=b1, b2=b2, eps=eps, clip=clip, p=p, weight_decay=weight_decay, mask=mask),
    optax.scale_by_learning_rate(learning_rate))``; the formula is at :func:`scale_by_fadam`. The paper trains with
    weight decay (λ = 0.1 for its LLM runs); the default here is 0, as elsewhere in normopt.

    Args:
      learning_rate: float or optax schedule η.
      b1: momentum decay β₁ ∈ [0, 1) of the natural gradient.
      b2: decay β₂ ∈ [0, 1) of the Fisher estimate.
      eps: ε ≥ 0, scaled per leaf by min(1, rms(g)).
      clip: c > 0, the largest RMS of the natural gradient and of the weight-decay term.
      p: the Fisher power p > 0 (½ as in Adam).
      weight_decay: λ ≥ 0 of the Fisher-preconditioned weight decay.
      mask: optax-style mask of the leaves that decay; None: all.
      eps_placement: ``"outside"`` (default), ``"power"`` or ``"inside"``: where ε enters the denominator, see
        :func:`scale_by_fadam`.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = normopt.fadam(1e-3, weight_decay=0.1)
      >>> params = {"w": jnp.ones((2, 3))}
      >>> updates, state = opt.update(params, opt.init(params), params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Hwang, `FAdam: Adam is a natural gradient optimizer using diagonal empirical Fisher information
      <https://arxiv.org/abs/2405.12807>`_, 2024.
    """
    _check("fadam", b1, b2, eps, clip, p, weight_decay, eps_placement)
    return optax.chain(
        scale_by_fadam(
            b1=b1, b2=b2, eps=eps, clip=clip, p=p, weight_decay=weight_decay, mask=mask, eps_placement=eps_placement
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
