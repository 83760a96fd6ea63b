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

from normopt.norms import path_str
from normopt.partition import check_float_leaves


@dataclasses.dataclass(frozen=True)
class MirrorMap:
    """A mirror map on one leaf: ``potential`` ψ(x) → scalar, ``to_dual`` = ∇ψ, ``to_primal`` = ∇ψ* = (∇ψ)⁻¹.

    ``check`` raises ``ValueError`` (with a message) when a concrete leaf lies outside ψ's domain.
    """

    name: str
    potential: Callable[[jax.Array], jax.Array]
    to_dual: Callable[[jax.Array], jax.Array]
    to_primal: Callable[[jax.Array], jax.Array]
    check: Callable[[np.ndarray], None] = lambda x: None


def euclidean() -> MirrorMap:
    """ψ = ½‖x‖₂²; ∇ψ = ∇ψ* = identity; mirror descent is gradient descent, D_ψ(z, x) = ½‖z − x‖₂²."""
    return MirrorMap("euclidean", lambda x: 0.5 * jnp.sum(x * x), lambda x: x, lambda y: y)


def _check_positive(x: np.ndarray) -> None:
    if np.any(x <= 0):
        raise ValueError(f"entries must be > 0 (min {x.min():.3g}); initialize inside the positive orthant")


def entropy() -> MirrorMap:
    """ψ = Σ xᵢ log xᵢ − xᵢ on x > 0; ∇ψ = log x; ∇ψ* = exp; D_ψ(z, x) = Σ zᵢ log(zᵢ/xᵢ) − zᵢ + xᵢ."""
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
    """Negative entropy on the probability simplex (along the last axis): ∇ψ = log x; ∇ψ* = softmax (which
    includes the Bregman/KL projection onto the simplex); D_ψ(z, x) = KL(z ‖ x). Gives exponentiated gradient."""
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
    """ψ = ½‖x‖_p² (1 < p < ∞): ∇ψ(x) = sign(x)|x|^{p−1}/‖x‖_p^{p−2}, ∇ψ* the same with q = p/(p−1)
    (Grove, Littlestone & Schuurmans 2001; Gentile 2003). p = 2 is gradient descent; p → 1 approaches the ℓ1
    geometry of exponentiated gradient, for sparse targets."""
    if not isinstance(p, (int, float)) or not 1 < p < float("inf"):
        raise ValueError(f"p_norm: p must be a number with 1 < p < inf, got {p!r}")
    q = p / (p - 1)
    return MirrorMap(
        f"p_norm({p:g})",
        lambda x: 0.5 * jnp.sum(jnp.abs(x) ** p) ** (2.0 / p),
        lambda x: _p_norm_link(x, p),
        lambda y: _p_norm_link(y, q),
    )


def bregman_divergence(mirror_map: MirrorMap, z: jax.Array, x: jax.Array) -> jax.Array:
    """D_ψ(z, x) = ψ(z) − ψ(x) − ⟨∇ψ(x), z − x⟩ ≥ 0."""
    return mirror_map.potential(z) - mirror_map.potential(x) - jnp.sum(mirror_map.to_dual(x) * (z - x))


def mirror_step(mirror_map: MirrorMap) -> optax.GradientTransformation:
    """Applies the incoming update in the dual space: x⁺ = ∇ψ*(∇ψ(x) + u); returns x⁺ − x. Stateless.

    Put it last in a chain, after the learning rate (``u = −η·g``); momentum or any other transformation may come
    before it. ``init`` checks concrete params against ψ's domain and names the offending leaf.
    """

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
        new = jax.tree.map(
            lambda x, u: (mirror_map.to_primal(mirror_map.to_dual(x) + u) - x).astype(u.dtype), params, updates
        )
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def mirror_descent(
    learning_rate: optax.ScalarOrSchedule, mirror_map: MirrorMap | str = "euclidean"
) -> optax.GradientTransformation:
    """Mirror descent x⁺ = ∇ψ*(∇ψ(x) − η·g): ``optax.chain(optax.scale_by_learning_rate(η), mirror_step(ψ))``.

    ``mirror_map`` is a :class:`MirrorMap` or one of ``"euclidean"``, ``"entropy"``, ``"simplex"``.
    """
    if isinstance(mirror_map, str):
        if mirror_map not in MAPS:
            raise ValueError(f"unknown mirror map {mirror_map!r}; choose one of {sorted(MAPS)} or pass a MirrorMap")
        mirror_map = MAPS[mirror_map]()
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(f"mirror_map must be a MirrorMap or a name, got {type(mirror_map).__name__}")
    return optax.chain(optax.scale_by_learning_rate(learning_rate), mirror_step(mirror_map))


def exponentiated_gradient(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Exponentiated gradient on the simplex (Kivinen & Warmuth 1997): x⁺ = x ⊙ exp(−η·g) / Σ x ⊙ exp(−η·g),
    normalized along the last axis; mirror descent with the negative entropy. Params must lie in the simplex."""
    return mirror_descent(learning_rate, simplex())


MAPS: dict[str, Callable[[], MirrorMap]] = {"euclidean": euclidean, "entropy": entropy, "simplex": simplex}
