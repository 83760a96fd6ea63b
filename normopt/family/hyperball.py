"""Hyperball optimization: every weight matrix stays on the sphere of its initial Frobenius norm.

Wen, Dang, Lyu, Ma & Liang, "Fantastic pretraining optimizers and where to find them 2.1: hyperball
optimization" (2025), as in Marin/Levanter's MuonH and AdamH (``levanter/optim/muonh.py``, ``adamh.py``). Given a
direction U from any optimizer (Muon's polar factor, Adam's m̂/(√v̂ + ε), a sign), each matrix W of radius R takes

    W ← R · normalize(W − η·R·normalize(U)),     normalize(X) = X / ‖X‖_F  (normalize(0) = 0)

so ‖W‖_F = R after every step and η is the step length relative to the radius: the angle W turns by is about
η radians, whatever the scale of U, of the gradient or of W. Weight decay has no place on the sphere: it only
rescales W before the projection, which is a learning-rate change η → η/(1 − ηλ); Levanter's docstring sets
η_H = √(η·λ) of the decayed optimizer it replaces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import _numerics, layouts, partition, transforms
from normopt import norms as norms_lib
from normopt._numerics import check_range, path_names, safe_div
from normopt.alias import NormedTransformation, _in_fp32, adamw_fallback, with_rule


class HyperballState(NamedTuple):
    """State of :func:`project_to_hyperball`.

    Attributes:
      count: shape ``()``, int32: the number of updates so far (the step a learning-rate schedule reads).
      radius: per leaf, the radius R of each slice: the leaf's shape with its matrix (fan-in and fan-out) axes set
        to 1, float32 (float64 for float64 leaves); a shape-() zero for leaves read as vectors.
    """

    count: jax.Array  # shape=(), dtype=int32: number of updates so far
    radius: optax.Updates  # per leaf shape=[leaf shape, matrix axes → 1], dtype=float32 (float64 for float64): R;
    # shape=() zero for vectors (not on a sphere)


def _slice_norm(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """‖x‖_F of each slice over ``axes`` (kept as size-1 axes), in x's dtype."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def _check_learning_rate(owner: str, learning_rate: Any) -> None:
    if not callable(learning_rate):
        check_range("learning_rate", learning_rate, 0.0, owner=owner)


def project_to_hyperball(
    learning_rate: optax.ScalarOrSchedule,
    *,
    radius: float | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
) -> optax.GradientTransformation:
    """A step of length η·R along the direction U on the sphere ‖W‖_F = R, then back onto it: the last transform.

        W_new = R · normalize(W − η·R·normalize(U)),   update = W_new − W

    where U is the incoming update (put a direction-producing transform before this one) and normalize(X) =
    X / ‖X‖_F, with normalize(0) = 0. Each leaf is read as ``[*batch, fan_in, fan_out]`` by ``layout`` (without it,
    from its names, :mod:`normopt.layouts`), and every batch slice (a scanned layer, an expert, a head) is its own
    sphere with its own R. Leaves read as vectors (biases, norm scales) are not on a sphere: they take the plain
    step −η·U, as ``optax.scale_by_learning_rate`` (Levanter leaves them to Adam; :func:`muonh` and :func:`adamh`
    send them to AdamW). A slice whose step η·U is zero does not move; NaN in U stays NaN in the update.

    R is each slice's Frobenius norm at ``init`` (Levanter re-measures ‖W‖ every step, the same radius up to
    round-off; the stored R keeps round-off, bf16 rounding included, from drifting it), or ``radius`` for every
    slice (then the first step also moves W onto that sphere). No weight decay: on the sphere it is only a
    learning-rate change (see the module docstring).

    Args:
      learning_rate: float or optax schedule η ≥ 0: the step length relative to R (about the angle turned, in
        radians). A schedule reads this transform's own step count, as ``optax.scale_by_learning_rate`` does.
      radius: R > 0 for every matrix slice; None (default): each slice's norm at init, which must be non-zero.
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`HyperballState`; its ``update`` needs ``params``.
      Updates come back in each incoming update's dtype (arithmetic in ≥ float32).

    Raises:
      ValueError: for a negative or NaN learning rate or a radius ≤ 0 (at construction); at init, naming the leaf,
        for a matrix slice of norm 0 when ``radius`` is None (a sphere of radius 0 cannot move); at update, when
        ``params`` is missing.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from normopt.family.hyperball import project_to_hyperball
      >>> params = {"w": jnp.array([[3.0, 0.0], [0.0, 4.0]])}  # ‖W‖_F = 5
      >>> tx = optax.chain(optax.scale_by_adam(), project_to_hyperball(0.1))
      >>> grads = {"w": jnp.array([[1.0, 2.0], [-1.0, 0.5]])}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> round(float(jnp.linalg.norm(optax.apply_updates(params, updates)["w"])), 4)
      5.0

    References:
      Wen, Dang, Lyu, Ma & Liang, `Fantastic pretraining optimizers and where to find them 2.1: hyperball
      optimization <https://tinyurl.com/muonh>`_, 2025; Marin/Levanter ``src/levanter/optim/adamh.py``.
    """
    owner = "project_to_hyperball"
    _check_learning_rate(owner, learning_rate)
    if radius is not None:
        check_range("radius", radius, 0.0, lo_open=True, owner=owner)
    layouts.check_spec(layout)

    def matrix_axes(path: Any, leaf: Any) -> tuple[int, ...] | None:
        lay = partition.read(path_names(path), leaf, layout, strict)
        return None if lay.role == "vector" else lay.fan_in + lay.fan_out

    def init_radius(path, w):
        axes = matrix_axes(path, w)
        dtype = _numerics.compute_dtype(w)
        if axes is None:
            return jnp.zeros([], dtype)
        if radius is not None:
            shape = tuple(1 if a in axes else n for a, n in enumerate(jnp.shape(w)))
            return jnp.full(shape, radius, dtype)
        r = _slice_norm(w.astype(dtype), axes)
        nonempty = math.prod(w.shape[a] for a in axes) > 0
        if nonempty and not isinstance(r, jax.core.Tracer) and bool(jnp.any(r == 0)):
            raise ValueError(
                f"{_numerics.path_str(path)} (shape {tuple(w.shape)}): a matrix (slice) has Frobenius norm 0 at "
                "init, and a sphere of radius 0 never moves; initialize it non-zero, pass radius=, or leave it out "
                "of the hyperball (fallback= in muonh/adamh, optax.partition)"
            )
        return r

    def init_fn(params):
        _numerics.check_float_leaves(params)
        radii = jax.tree_util.tree_map_with_path(init_radius, params)
        return HyperballState(jnp.zeros([], jnp.int32), radii)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(f"{owner}: update needs the params: call tx.update(updates, state, params)")
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def step(path, u, w, r):
            dtype = _numerics.compute_dtype(w)
            axes = matrix_axes(path, w)
            u32 = u.astype(dtype)
            if axes is None:
                return (-eta * u32).astype(u.dtype)
            w32 = w.astype(dtype)
            big_r = r if radius is None else jnp.asarray(radius, dtype)
            u_norm = _slice_norm(u32, axes)
            moved = w32 - (eta * big_r) * safe_div(u32, u_norm)
            delta = big_r * safe_div(moved, _slice_norm(moved, axes)) - w32
            # A zero step leaves W where it is (exactly: re-projecting W would round it by ~1 ulp).
            return jnp.where(eta * u_norm == 0, jnp.zeros_like(delta), delta).astype(u.dtype)

        new = jax.tree_util.tree_map_with_path(step, updates, params, state.radius)
        return new, HyperballState(optax.safe_increment(state.count), state.radius)

    return optax.GradientTransformation(init_fn, update_fn)


def _adam_direction(b1: Any, b2: Any, eps: Any, eps_root: Any, mu_dtype: Any, nesterov: bool) -> Any:
    """Adam's m̂/(√v̂ + ε), arithmetic in ≥ float32 and state in ``mu_dtype`` (as the AdamW fallback)."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov)
    return _in_fp32(adam, mu_dtype)


def _check_adam(owner: str, *, b1: Any, b2: Any, eps: Any, eps_root: Any, weight_decay: Any, prefix: str) -> None:
    check_range(f"{prefix}b1", b1, 0.0, 1.0, hi_open=True, owner=owner)
    check_range(f"{prefix}b2", b2, 0.0, 1.0, hi_open=True, owner=owner)
    check_range(f"{prefix}eps", eps, 0.0, lo_open=True, owner=owner)
    check_range(f"{prefix}eps_root", eps_root, 0.0, owner=owner)
    check_range(f"{prefix}weight_decay", weight_decay, 0.0, owner=owner)


def muonh(
    learning_rate: optax.ScalarOrSchedule,
    *,
    radius: float | None = None,
    method: Any = "polar_express",
    steps: int | None = None,
    beta: float = 0.95,
    nesterov: bool = True,
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    fallback: Sequence[str] = (),
    fallback_roles: Sequence[str] = ("embedding",),
    adamh_roles: Sequence[str] = ("head",),
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool = False,
    mask: Any = None,
    sharding: Any = None,
) -> NormedTransformation:
    """MuonH: Muon's polar factor as the direction, each hidden matrix kept on the sphere of its initial norm.

        m ← EMA_β(g) (Nesterov);   W ← R · normalize(W − η·R·normalize(polar(m)))      (R = ‖W₀‖_F per slice)

    As Levanter's MuonH: hidden matrices (each slice of a stack its own sphere) take the Muon direction, the roles
    in ``adamh_roles`` (default: the output head) Adam's direction on their sphere (AdamH), and vectors, the roles
    in ``fallback_roles`` (default: embeddings) and paths matching ``fallback`` plain AdamW (Levanter: Adam
    without decay). No weight decay on the spheres (only a learning-rate change there, see
    :func:`project_to_hyperball`). Muon's shape scale is irrelevant: the direction is normalized.

    Args:
      learning_rate: float or optax schedule η ≥ 0 of the spheres: each step turns W by about η radians.
      radius: R > 0 of every sphere; None: each matrix slice's norm at init.
      method: the polar kernel (:func:`normopt.orthogonalize`).
      steps: kernel iterations (static); None: the method's default.
      beta: momentum decay β ∈ [0, 1).
      nesterov: Nesterov momentum for the Muon direction.
      compute_dtype: dtype the kernel iterates in; None: float32.
      mu_dtype: dtype the momentum and Adam's moments are stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: path regexes of matrices sent to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      adamh_roles: roles that take Adam's direction on their sphere, from ``("embedding", "hidden", "head")``.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``; Levanter uses a separate, smaller one).
      adam_b1: Adam's first-moment decay (AdamW and AdamH leaves).
      adam_b2: Adam's second-moment decay (AdamW and AdamH leaves).
      adam_eps: Adam's ε outside the square root.
      adam_eps_root: Adam's ε inside the square root.
      adam_weight_decay: AdamW's decoupled weight decay (the fallback leaves only).
      adam_nesterov: NAdam for the Adam directions (Levanter: plain Adam).
      mask: which fallback leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      sharding: None, or :func:`normopt.sharding.layer_sharded` (the polar factor of whole matrices spread over a
        mesh; the projection onto the sphere then runs where the update lies).

    Returns:
      A :class:`normopt.alias.NormedTransformation`; ``update`` needs ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from normopt.family.hyperball import muonh
      >>> params = {"w": jnp.eye(4) * 2.0, "b": jnp.zeros(4)}  # ‖W‖_F = 4
      >>> tx = muonh(0.05)
      >>> grads = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> round(float(jnp.linalg.norm(optax.apply_updates(params, updates)["w"])), 4)
      4.0

    References:
      Wen, Dang, Lyu, Ma & Liang, `Fantastic pretraining optimizers and where to find them 2.1: hyperball
      optimization <https://tinyurl.com/muonh>`_, 2025; Jordan et al., "Muon: an optimizer for hidden layers in
      neural networks", 2024.
    """
    owner = "muonh"
    _check_learning_rate(owner, learning_rate)
    _numerics.check_dtype("mu_dtype", mu_dtype, owner=owner)
    _numerics.check_dtype("compute_dtype", compute_dtype, owner=owner)
    check_range("beta", beta, 0.0, 1.0, hi_open=True, owner=owner)
    _check_adam(
        owner,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=adam_eps_root,
        weight_decay=adam_weight_decay,
        prefix="adam_",
    )
    kernel = norms_lib.spectral(scale="none", method=method, steps=steps, compute_dtype=compute_dtype)
    rule, reader = _rule(owner, layout, strict, fallback, fallback_roles, adamh_roles, "muonh")
    sphere = project_to_hyperball(learning_rate, radius=radius, layout=layout, strict=strict)
    muon_h = optax.chain(
        transforms.momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
        transforms.dualize(lambda path, leaf: norms_lib.with_layout(kernel, reader(path, leaf)), sharding=sharding),
        sphere,
    )
    adam_h = optax.chain(
        _adam_direction(adam_b1, adam_b2, adam_eps, adam_eps_root, mu_dtype, adam_nesterov),
        sphere,
    )
    adam = adamw_fallback(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=adam_eps,
        eps_root=adam_eps_root,
        weight_decay=adam_weight_decay,
        mask=mask,
        mu_dtype=mu_dtype,
        nesterov=adam_nesterov,
    )
    groups = {"muonh": muon_h, "adamh": adam_h, "adamw": adam}
    tx = optax.partition(groups, lambda params: partition.labels(rule, params))
    return with_rule(tx, rule, layout)


def adamh(
    learning_rate: optax.ScalarOrSchedule,
    *,
    radius: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    nesterov: bool = False,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    fallback: Sequence[str] = (),
    fallback_roles: Sequence[str] = ("embedding",),
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_weight_decay: float = 0.0,
    mask: Any = None,
) -> NormedTransformation:
    """AdamH: Adam's direction, each matrix kept on the sphere of its initial norm; AdamW elsewhere.

        u = m̂/(√v̂ + ε);   W ← R · normalize(W − η·R·normalize(u))      (R = ‖W₀‖_F per slice)

    As Levanter's AdamH: every matrix (hidden layers and the output head; each slice of a stack its own sphere)
    is on its sphere; vectors, the roles in ``fallback_roles`` (default: embeddings) and paths matching
    ``fallback`` take AdamW with the same moments' hyperparameters. No weight decay on the spheres.

    Args:
      learning_rate: float or optax schedule η ≥ 0 of the spheres: each step turns W by about η radians.
      radius: R > 0 of every sphere; None: each matrix slice's norm at init.
      b1: first-moment decay (as ``optax.adam``).
      b2: second-moment decay (as ``optax.adam``; Levanter's config uses 0.95).
      eps: ε outside the square root.
      eps_root: ε inside the square root.
      nesterov: NAdam.
      mu_dtype: dtype both moments are stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: path regexes of matrices sent to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``; Levanter uses a separate, smaller one).
      adam_weight_decay: AdamW's decoupled weight decay (the fallback leaves only).
      mask: which fallback leaves decay (a pytree of bools or a callable, as ``optax.adamw``).

    Returns:
      A :class:`normopt.alias.NormedTransformation`; ``update`` needs ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> from normopt.family.hyperball import adamh
      >>> params = {"w": jnp.eye(4) * 2.0, "b": jnp.zeros(4)}
      >>> tx = adamh(0.05)
      >>> grads = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> round(float(jnp.linalg.norm(optax.apply_updates(params, updates)["w"])), 4)
      4.0

    References:
      Wen, Dang, Lyu, Ma & Liang, `Fantastic pretraining optimizers and where to find them 2.1: hyperball
      optimization <https://tinyurl.com/muonh>`_, 2025; Kingma & Ba, "Adam: a method for stochastic
      optimization", ICLR 2015 (arXiv:1412.6980).
    """
    owner = "adamh"
    _check_learning_rate(owner, learning_rate)
    _numerics.check_dtype("mu_dtype", mu_dtype, owner=owner)
    _check_adam(owner, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=adam_weight_decay, prefix="")
    rule, _ = _rule(owner, layout, strict, fallback, fallback_roles, (), "adamh")
    adam_h = optax.chain(
        _adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov),
        project_to_hyperball(learning_rate, radius=radius, layout=layout, strict=strict),
    )
    adam = adamw_fallback(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        weight_decay=adam_weight_decay,
        mask=mask,
        mu_dtype=mu_dtype,
        nesterov=nesterov,
    )
    tx = optax.partition({"adamh": adam_h, "adamw": adam}, lambda params: partition.labels(rule, params))
    return with_rule(tx, rule, layout)


def _rule(
    owner: str, layout: Any, strict: bool, fallback: Any, fallback_roles: Any, adamh_roles: Any, label: str
) -> tuple[partition.Rule, Any]:
    """The labelling rule (``label`` / ``"adamh"`` / ``"adamw"`` per leaf) and the matrix reader behind it."""
    layouts.check_spec(layout)
    reader = partition.matrix_reader(layout, strict, fallback, fallback_roles, owner)
    on_adam = partition.check_patterns(adamh_roles, "adamh_roles")
    for r in on_adam:
        _numerics.check_choice("adamh_roles entry", r, layouts.ROLES[:3], owner=owner)
    both = set(on_adam) & set(fallback_roles)
    if both:
        raise ValueError(f"{owner}: roles {sorted(both)} are in both fallback_roles and adamh_roles; pick one")

    def rule(path, leaf):
        lay = reader(path, leaf)
        return "adamw" if lay is None else "adamh" if lay.role in on_adam else label

    return rule, reader
