"""Mirror descent: gradient steps taken in the dual space of a mirror map (Nemirovski & Yudin 1983; Beck &
Teboulle 2003, "Mirror descent and nonlinear projected subgradient methods for convex optimization").

A mirror map is a strictly convex potential ψ with gradient ∇ψ (primal → dual) and inverse ∇ψ* (dual → primal,
the gradient of the convex conjugate). One step with update ``u = −η·g``:

    x⁺ = ∇ψ*(∇ψ(x) + u) = argmin_z  η⟨g, z⟩ + D_ψ(z, x),   D_ψ(z, x) = ψ(z) − ψ(x) − ⟨∇ψ(x), z − x⟩,

the steepest-descent step when distance is measured by the Bregman divergence D_ψ instead of ½‖·‖₂². Built-in maps:

* :func:`euclidean` ψ = ½‖x‖₂²: plain gradient descent;
* :func:`entropy` ψ = Σ xᵢ log xᵢ − xᵢ on x > 0: the multiplicative update x ⊙ exp(−ηg) (unnormalized EG);
* :func:`simplex` ψ = Σ xᵢ log xᵢ on the probability simplex (along the last axis): exponentiated gradient,
  x⁺ ∝ x ⊙ exp(−ηg) (Kivinen & Warmuth 1997), D_ψ = KL(z ‖ x);
* :func:`p_norm` ψ = ½‖x‖_p², 1 < p < ∞: the p-norm algorithm (Gentile 2003), the mirror map tied to the ℓp norm,
  with ∇ψ* the same map for the dual exponent q = p/(p − 1).

Every map acts on each leaf separately (the whole leaf for ``euclidean``/``entropy``/``p_norm``, each slice along
the last axis for ``simplex``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normopt._numerics import check_choice, check_float_leaves, path_str


@dataclasses.dataclass(frozen=True)
class MirrorMap:
    """A mirror map on one leaf: a strictly convex potential ψ with its gradient and the gradient's inverse.

    ``potential`` ψ(x) → scalar, ``to_dual`` = ∇ψ, ``to_primal`` = ∇ψ* = (∇ψ)⁻¹, so that one mirror step is
    x⁺ = ∇ψ*(∇ψ(x) + u). ``check`` raises ``ValueError`` (with a message) when a concrete leaf lies outside ψ's
    domain.

    Attributes:
      name: printed in error messages.
      potential: ψ on one leaf.
      to_dual: ∇ψ on one leaf.
      to_primal: ∇ψ* = (∇ψ)⁻¹ on one leaf.
      check: a domain check of a concrete (numpy) leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> from normopt.family.mirror import MirrorMap
      >>> euclid = MirrorMap("euclidean", lambda x: 0.5 * jnp.sum(x * x), lambda x: x, lambda y: y)

    References:
      Beck & Teboulle, Mirror descent and nonlinear projected subgradient methods for convex optimization,
      Operations Research Letters, 2003.
    """

    name: str
    potential: Callable[[jax.Array], jax.Array]
    to_dual: Callable[[jax.Array], jax.Array]
    to_primal: Callable[[jax.Array], jax.Array]
    check: Callable[[np.ndarray], None] = lambda x: None


def euclidean() -> MirrorMap:
    """The Euclidean mirror map, under which mirror descent is gradient descent.

        ψ(x) = ½‖x‖₂²,   ∇ψ = ∇ψ* = identity,   D_ψ(z, x) = ½‖z − x‖₂²

    Returns:
      A :class:`MirrorMap`.

    Example:
      >>> import normopt
      >>> opt = normopt.mirror_descent(0.1, mirror_map=normopt.mirror.euclidean())  # = optax.sgd(0.1)

    References:
      Beck & Teboulle 2003 (see :class:`MirrorMap`).
    """
    return MirrorMap("euclidean", lambda x: 0.5 * jnp.sum(x * x), lambda x: x, lambda y: y)


def _check_positive(x: np.ndarray) -> None:
    if np.any(x <= 0):
        raise ValueError(f"entries must be > 0 (min {x.min():.3g}); initialize inside the positive orthant")


def entropy() -> MirrorMap:
    """The (unnormalized) entropy on the positive orthant: mirror descent is the multiplicative update x ⊙ exp(u).

        ψ(x) = Σ xᵢ log xᵢ − xᵢ (x > 0),   ∇ψ = log,   ∇ψ* = exp,   D_ψ(z, x) = Σ zᵢ log(zᵢ/xᵢ) − zᵢ + xᵢ

    Returns:
      A :class:`MirrorMap` whose check rejects entries ≤ 0.

    Example:
      >>> import normopt
      >>> opt = normopt.mirror_descent(0.1, mirror_map="entropy")

    References:
      Kivinen & Warmuth, Exponentiated gradient versus gradient descent for linear predictors, Information and
      Computation, 1997.
    """
    return MirrorMap("entropy", lambda x: jnp.sum(x * jnp.log(x) - x), jnp.log, jnp.exp, _check_positive)


def _check_simplex(x: np.ndarray) -> None:
    _check_positive(x)
    sums = x.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-4 if x.dtype != np.float64 else 1e-10):
        raise ValueError(
            f"each slice along the last axis must sum to 1 (sums {sums.min():.6g}..{sums.max():.6g});"
            " initialize with e.g. jnp.full(n, 1/n)"
        )


def simplex() -> MirrorMap:
    """Negative entropy on the probability simplex (along the last axis): mirror descent is exponentiated gradient.

        ψ(x) = Σ xᵢ log xᵢ,   ∇ψ = log,   ∇ψ* = softmax (with the KL projection onto the simplex),   D_ψ = KL(z ‖ x)

    Returns:
      A :class:`MirrorMap` whose check rejects entries ≤ 0 and slices that do not sum to 1.

    Example:
      >>> import normopt
      >>> opt = normopt.mirror_descent(0.1, mirror_map=normopt.mirror.simplex())  # = exponentiated_gradient(0.1)

    References:
      Kivinen & Warmuth 1997 (see :func:`entropy`).
    """
    return MirrorMap(
        "simplex", lambda x: jnp.sum(x * jnp.log(x)), jnp.log, lambda y: jax.nn.softmax(y, axis=-1), _check_simplex
    )


def _p_norm_link(x: jax.Array, p: float) -> jax.Array:
    """∇(½‖x‖_p²) = sign(x)·|x|^{p−1} / ‖x‖_p^{p−2}, with 0 ↦ 0 (computed on x/max|x| to avoid overflow)."""
    s = jnp.max(jnp.abs(x), initial=0.0)
    s_safe = jnp.where(s > 0, s, 1.0)
    y = jnp.abs(x) / s_safe
    norm = jnp.sum(y**p) ** (1.0 / p)
    out = jnp.sign(x) * y ** (p - 1) * s_safe / jnp.where(norm > 0, norm, 1.0) ** (p - 2)
    return jnp.where(s > 0, out, jnp.zeros_like(x))


def p_norm(p: float) -> MirrorMap:
    """The p-norm mirror map, tied to the ℓp norm: the p-norm algorithm.

        ψ(x) = ½‖x‖_p²,   ∇ψ(x) = sign(x)·|x|^{p−1} / ‖x‖_p^{p−2},   ∇ψ* = the same map with q = p/(p − 1)

    p = 2 is gradient descent; p → 1 approaches the ℓ1 geometry of exponentiated gradient, for sparse targets.

    Args:
      p: the exponent, a static number with 1 < p < ∞.

    Returns:
      A :class:`MirrorMap`.

    Example:
      >>> import normopt
      >>> opt = normopt.mirror_descent(0.1, mirror_map=normopt.mirror.p_norm(1.5))

    References:
      Grove, Littlestone & Schuurmans, General convergence results for linear discriminant updates, Machine
      Learning, 2001; Gentile, The robustness of the p-norm algorithms, Machine Learning, 2003.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 < p < float("inf"):
        raise ValueError(f"p_norm: p must be a number with 1 < p < inf, got {p!r}")
    q = p / (p - 1)
    return MirrorMap(
        f"p_norm({p:g})",
        lambda x: 0.5 * jnp.sum(jnp.abs(x) ** p) ** (2.0 / p),
        lambda x: _p_norm_link(x, p),
        lambda y: _p_norm_link(y, q),
    )


def bregman_divergence(mirror_map: MirrorMap, z: jax.Array, x: jax.Array) -> jax.Array:
    """The Bregman divergence of ψ between two leaves: the distance mirror descent measures steps with.

        D_ψ(z, x) = ψ(z) − ψ(x) − ⟨∇ψ(x), z − x⟩ ≥ 0

    Args:
      mirror_map: the :class:`MirrorMap` ψ.
      z, x: two arrays of the same shape in ψ's domain.

    Returns:
      A scalar array.

    Example:
      >>> import jax.numpy as jnp
      >>> from normopt.family.mirror import bregman_divergence, euclidean
      >>> bregman_divergence(euclidean(), jnp.array([1.0, 2.0]), jnp.zeros(2))  # ½‖z − x‖²
      Array(2.5, dtype=float32)

    References:
      Bregman, The relaxation method of finding the common point of convex sets, 1967.
    """
    return mirror_map.potential(z) - mirror_map.potential(x) - jnp.sum(mirror_map.to_dual(x) * (z - x))


def mirror_step(mirror_map: MirrorMap) -> optax.GradientTransformation:
    """Applies the incoming update in the dual space of a mirror map; returns the resulting update. Stateless.

        x⁺ = ∇ψ*(∇ψ(x) + u),   returns x⁺ − x

    Put it last in a chain, after the learning rate (``u = −η·g``); momentum or any other transformation may come
    before it. A non-finite entry of ``u`` is returned as is (inf stays inf, NaN stays NaN), never mapped to a
    finite step. ``init`` checks concrete params against ψ's domain and names the offending leaf.

    Args:
      mirror_map: a :class:`MirrorMap`.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import optax, normopt
      >>> opt = optax.chain(optax.sgd(0.1, momentum=0.9), normopt.mirror_step(normopt.mirror.entropy()))

    References:
      Nemirovski & Yudin, Problem complexity and method efficiency in optimization, 1983; Beck & Teboulle 2003.
    """
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(f"mirror_step: mirror_map must be a MirrorMap, got {type(mirror_map).__name__}")

    def init_fn(params):
        check_float_leaves(params)
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
            if isinstance(x, jax.core.Tracer):
                continue
            try:
                mirror_map.check(np.asarray(x))
            except ValueError as e:
                raise ValueError(f"mirror map {mirror_map.name}: {path_str(path)}: {e}") from None
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("mirror_step acts on the parameters: call update(updates, state, params) with params")

        def step(x, u):
            out = (mirror_map.to_primal(mirror_map.to_dual(x) + u) - x).astype(u.dtype)
            # exp(−∞) = 0 and softmax would turn an infinite update into a finite step: keep it visible instead
            # (docs/reliability.md, "NaN / inf propagate"); optax.apply_if_finite can then skip the step.
            return jnp.where(jnp.isfinite(u), out, u)

        return jax.tree.map(step, params, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def mirror_descent(
    learning_rate: optax.ScalarOrSchedule, *, mirror_map: MirrorMap | str = "euclidean"
) -> optax.GradientTransformation:
    """Mirror descent: a gradient step taken in the dual space of the mirror map ψ.

        x⁺ = ∇ψ*(∇ψ(x) − η·g) = argmin_z η⟨g, z⟩ + D_ψ(z, x)

    ``optax.chain(optax.scale_by_learning_rate(learning_rate), mirror_step(mirror_map))``.

    Args:
      learning_rate: float or optax schedule η.
      mirror_map: a :class:`MirrorMap`, or one of ``"euclidean"``, ``"entropy"``, ``"simplex"``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = normopt.mirror_descent(0.5, mirror_map="entropy")
      >>> x = jnp.array([1.0, 2.0])
      >>> u, _ = opt.update(jnp.array([1.0, 0.0]), opt.init(x), x)
      >>> optax.apply_updates(x, u)  # x ⊙ exp(−η·g)
      Array([0.60653067, 2.        ], dtype=float32)

    References:
      Nemirovski & Yudin, Problem complexity and method efficiency in optimization, 1983; Beck & Teboulle,
      Mirror descent and nonlinear projected subgradient methods for convex optimization, 2003.
    """
    if isinstance(mirror_map, str):
        check_choice("mirror map", mirror_map, MAPS, owner="mirror_descent")
        mirror_map = MAPS[mirror_map]()
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(
            f"mirror_descent: mirror_map must be a MirrorMap or a name in {sorted(MAPS)}, got {mirror_map!r}"
        )
    return optax.chain(optax.scale_by_learning_rate(learning_rate), mirror_step(mirror_map))


def exponentiated_gradient(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Exponentiated gradient on the probability simplex (along the last axis).

        x⁺ = x ⊙ exp(−η·g) / Σ x ⊙ exp(−η·g)

    Mirror descent with the negative entropy (:func:`simplex`); params must lie in the simplex.

    Args:
      learning_rate: float or optax schedule η.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, normopt, optax
      >>> opt = normopt.exponentiated_gradient(1.0)
      >>> x = jnp.full(2, 0.5)
      >>> u, _ = opt.update(jnp.array([0.0, jnp.log(3.0)]), opt.init(x), x)
      >>> optax.apply_updates(x, u).round(4)
      Array([0.75, 0.25], dtype=float32)

    References:
      Kivinen & Warmuth, Exponentiated gradient versus gradient descent for linear predictors, Information and
      Computation, 1997.
    """
    return mirror_descent(learning_rate, mirror_map=simplex())


MAPS: dict[str, Callable[[], MirrorMap]] = {"euclidean": euclidean, "entropy": entropy, "simplex": simplex}
