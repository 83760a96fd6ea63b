"""Manifold Muon (Bernstein, "Modular Manifolds", Thinking Machines Lab, 2025): Muon on the Stiefel manifold.

Each hidden matrix W (read ``[*batch, fan_in, fan_out]``, every batch slice its own matrix) lives on the Stiefel
manifold: all its min(fan_in, fan_out) singular values equal 1. On the tall orientation (W of shape m × n,
m ≥ n: the matrix itself when fan_in ≥ fan_out, else its transpose) that is WᵀW = I_n. The spectral norm, the
inner product and the manifold are all unchanged by a transpose, so the orientation only decides on which side
the n × n multiplier lives. A step is spectral-norm steepest descent inside the tangent space, then a retraction::

    D* = argmax_{D ∈ T_W, ‖D‖_op ≤ 1} ⟨M, D⟩,   T_W = {D : WᵀD + DᵀW = 0}
    W ← polar(W − η·D*)                                                   (polar(X) = U Vᵀ of X = U Σ Vᵀ)

D* is found by the dual ascent of the reference code (thinking-machines-lab/manifolds): on Ĝ = M / rms(M),
Λ₀ = −¼(WᵀĜ + ĜᵀW), then for k < K: D = msign(Ĝ + 2WΛ), H = WᵀD + DᵀW, Λ ← Λ − α(1 − k/K)·H, stopping early
once rms(H) < tol. The dual is min_Λ ‖Ĝ + 2WΛ‖_* (nuclear norm), and H is its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import layouts, partition, polar, transforms
from normopt._numerics import (
    check_dtype,
    check_range,
    check_static,
    compute_dtype,
    on_auto_axes,
    path_names,
    safe_div,
)
from normopt.alias import MUON_FALLBACK_ROLES, NormedTransformation, adamw_fallback, with_rule
from normopt.dims import to_matrices

DUAL_STEPS = 100
"""Dual-ascent iterations when ``dual_steps=None`` (the reference code's ``steps``)."""

POLAR_EXPRESS_STEPS = 10
"""Polar Express steps of every msign and of the retraction when ``steps=None`` (the reference's msign): 5 leave
|σ − 1| up to 0.12, which spoils the tangency test H = 0 and the retraction; 8 or more reach fp32 round-off."""


class ScaleByManifoldMuonState(NamedTuple):
    """State of :func:`scale_by_manifold_muon`.

    Attributes:
      count: steps taken, for a learning-rate schedule.
    """

    count: jax.Array  # shape=(), dtype=int32: steps taken (a schedule's argument)


def _t(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _check_static_int(name: str, value: Any, owner: str) -> None:
    if value is None:
        return
    check_static(name, value, owner=owner)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be a static int >= 1 (or None for the default), got {value!r}")
    check_range(name, value, 1, owner=owner)


def _kernel_steps(method: Any, steps: int | None) -> int | None:
    return POLAR_EXPRESS_STEPS if steps is None and isinstance(method, str) and method == "polar_express" else steps


def stiefel_direction(
    g: jax.Array,
    w: jax.Array,
    *,
    dual_steps: int | None = None,
    dual_lr: float = 0.3,
    tol: float = 1e-5,
    method: Any = "polar_express",
    steps: int | None = None,
) -> jax.Array:
    """The unit spectral-norm direction D ∈ T_W that best aligns with G, by dual ascent (one per matrix).

        D* = argmax ⟨G, D⟩  subject to  WᵀD + DᵀW = 0,  ‖D‖_op ≤ 1      (W, G tall m × n; a wide pair is transposed)

    With Ĝ = G / rms(G) (so that ``dual_lr`` does not depend on the gradient's scale) and msign the polar factor:
    Λ₀ = −¼(WᵀĜ + ĜᵀW); D = msign(Ĝ + 2WΛ), H = WᵀD + DᵀW, Λ ← Λ − α(1 − k/K)·H for k < K, until rms(H) < tol.
    The last D is then made exactly tangent, D ← D − ½·W·H (the orthogonal projection onto T_W when WᵀW = I), and
    scaled back into the unit ball if that pushed ‖D‖_op above 1, so the result is always feasible.

    Where the dual optimum Ĝ + 2WΛ* is rank-deficient (generic for 3 × 2, and for odd square matrices) the dual
    is not smooth there, the last iterate oscillates, and D falls short of the optimum (a few % of ⟨G, D*⟩
    after 100 steps on 3 × 2 / 5 × 3 problems); where it has full rank (e.g. 4 × 2) D matches to ~1e-6.

    Args:
      g: gradient (or momentum), shape (..., m, n), floating point; leading axes are batch axes.
      w: points on the Stiefel manifold, the shape of ``g``.
      dual_steps: static int K ≥ 1 of dual-ascent iterations (None: :data:`DUAL_STEPS`).
      dual_lr: dual step size α > 0, in units of the normalized Ĝ (may be traced).
      tol: stop once rms(H) < tol (≥ 0; 0 runs all K steps).
      method: the msign kernel, as :func:`normopt.orthogonalize` (``"svd"`` for the exact one).
      steps: the kernel's iterations (static; None: :data:`POLAR_EXPRESS_STEPS` for Polar Express, else the
        method's default).

    Returns:
      D, shape of ``g``, in ≥ float32 (float64 stays float64). ``g = 0`` gives exactly 0; NaN/inf give NaN.

    Examples:
      >>> import jax.numpy as jnp, normopt.family.manifold as mf
      >>> w = jnp.eye(3, 2)
      >>> g = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # its W-part is symmetric: not a tangent direction
      >>> mf.stiefel_direction(g, w, method="svd").round(4)  # only the normal part (row 3) is left
      Array([[0., 0.],
             [0., 0.],
             [1., 0.]], dtype=float32)

    References:
      Bernstein, `Modular Manifolds <https://thinkingmachines.ai/blog/modular-manifolds/>`_, Thinking Machines Lab,
      2025 (code: github.com/thinking-machines-lab/manifolds).
    """
    steps = _kernel_steps(method, steps)
    num = DUAL_STEPS if dual_steps is None else dual_steps
    dtype = compute_dtype(g)
    g, w = g.astype(dtype), w.astype(dtype)
    wide = g.shape[-2] < g.shape[-1]
    if wide:
        g, w = _t(g), _t(w)
    msign = lambda x: polar.orthogonalize(x, method, steps, compute_dtype=dtype.name)
    sym = lambda x: x + _t(x)
    rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(x), axis=(-2, -1), keepdims=True))
    g = safe_div(g, rms(g))  # scale-free; inf/NaN stay NaN
    lam = -0.25 * sym(_t(w) @ g)

    def direction(lam):
        d = msign(g + 2 * w @ lam)
        return d, sym(_t(w) @ d)

    def body(carry):
        k, lam, _, h = carry
        lam = lam - dual_lr * (1 - k / num) * h
        return (k + 1, lam, *direction(lam))

    def unfinished(carry):
        k, _, _, h = carry
        return (k < num) & jnp.any(rms(h) >= tol)  # stops at once on NaN: it is already in d

    _, _, d, h = jax.lax.while_loop(unfinished, body, (0, lam, *direction(lam)))
    d = d - 0.5 * w @ h
    spectral = jnp.sqrt(jnp.max(jnp.linalg.eigvalsh(_t(d) @ d), axis=-1))[..., None, None]
    d = safe_div(d, jnp.maximum(spectral, 1))
    return _t(d) if wide else d


def scale_by_manifold_muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    dual_steps: int | None = None,
    dual_lr: float = 0.3,
    tol: float = 1e-5,
    method: Any = "polar_express",
    steps: int | None = None,
    layout: layouts.LayoutSpec = None,
) -> optax.GradientTransformation:
    """The manifold Muon step of every leaf: u = polar(W − η·D*) − W, D* from :func:`stiefel_direction`.

    Each leaf is read as a stack of matrices (``layout``), each slice a point W on the Stiefel manifold. A slice
    whose step −η·D* is exactly 0 (zero gradient, η = 0) is left where it is, so a zero gradient gives a zero
    update; any other step ends with the retraction, which also maps a W that is not on the manifold onto it.
    The update needs ``params`` and already contains η: do not follow it with a learning-rate scaling.

    Args:
      learning_rate: float or optax schedule η (the spectral length of the tangent step).
      dual_steps: see :func:`stiefel_direction` (static).
      dual_lr: see :func:`stiefel_direction`.
      tol: see :func:`stiefel_direction`.
      method: the polar kernel of the msigns and the retraction (:func:`normopt.orthogonalize`).
      steps: the kernel's iterations (static; see :func:`stiefel_direction`).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ScaleByManifoldMuonState`.

    Raises:
      ValueError: at ``update`` without ``params``.
    """

    def init_fn(params):
        del params
        return ScaleByManifoldMuonState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "manifold_muon needs the parameters: its update is polar(W − η·D) − W; call "
                "tx.update(grads, state, params)"
            )
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def step(g, p, dims):
            (m, back), (w, _) = to_matrices(g, dims), to_matrices(p, dims)
            dtype = compute_dtype(m)
            w = w.astype(dtype)
            d = stiefel_direction(m, w, dual_steps=dual_steps, dual_lr=dual_lr, tol=tol, method=method, steps=steps)
            x = w - eta * d
            moving = jnp.any(x != w, axis=(-2, -1), keepdims=True)  # NaN counts as moving: it stays visible
            new = polar.orthogonalize(x, method, _kernel_steps(method, steps), compute_dtype=dtype.name)
            return back(jnp.where(moving, new, w) - w)

        def leaf(path, g, p):
            if g.size == 0:
                return g
            dims = partition.read(path_names(path), p, layout).dims
            # Sharded leaves (FSDP, tensor parallel): the whole-matrix products run on Auto axes, where XLA places
            # the collectives; the update comes back sharded like the gradient.
            return on_auto_axes(lambda x: step(*x, dims), (g, p), out_sharding=lambda s: s[0])

        updates = jax.tree_util.tree_map_with_path(leaf, updates, params)
        return updates, ScaleByManifoldMuonState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def manifold_muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    nesterov: bool = True,
    dual_steps: int | None = None,
    dual_lr: float = 0.3,
    tol: float = 1e-5,
    method: Any = "polar_express",
    steps: int | None = None,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    fallback: Sequence[str] = (),
    fallback_roles: Sequence[str] = MUON_FALLBACK_ROLES,
    mask: Any = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> NormedTransformation:
    """Manifold Muon: Muon's spectral steepest descent inside the Stiefel manifold's tangent space, then a retraction.

        M ← EMA_β(G) (Nesterov);   D* = argmax_{D ∈ T_W, ‖D‖_op ≤ 1} ⟨M, D⟩;   W ← polar(W − η·D*)

    for every hidden matrix (every slice of a stack, conv kernels flattened to fan_in = window·in, as
    :func:`normopt.muon`); the matrices keep all their singular values at 1 (WᵀW = I on the tall side, see
    :mod:`normopt.family.manifold`), so there is no weight decay. D* comes from :func:`stiefel_direction`.
    Vectors, ``fallback_roles`` (embeddings, output head) and ``fallback`` paths get AdamW, as in :func:`normopt.muon`.

    Initialization: start from orthogonal matrices (``jax.nn.initializers.orthogonal()``). Any other W is mapped
    onto the manifold by the retraction of its first nonzero step (a jump of size ‖polar(W) − W‖, not η); no check
    runs at ``init`` (it may see abstract shapes under ``jax.eval_shape``). A zero gradient leaves W as it is.

    Sharded params (FSDP, tensor parallel; checked on Explicit mesh axes) work as they are: each leaf's solver runs on
    Auto axes, where XLA places the collectives, and the update keeps the gradient's sharding (same values as one
    device, tests/test_sharding.py). There is no ``sharding=``: the dual ascent is a ``while_loop`` over every
    slice of a leaf together, so layer sharding's whole-matrix batches do not fit it.

    Args:
      learning_rate: float or optax schedule η, the spectral length of each tangent step (the reference uses 0.1
        with a linear decay).
      beta: momentum decay β ∈ [0, 1) (0: the raw gradient, as the reference code).
      nesterov: Nesterov momentum (static).
      dual_steps: static int ≥ 1 of dual-ascent iterations (None: 100, the reference's); under
        ``optax.inject_hyperparams`` leave it None or list it in ``static_args``.
      dual_lr: dual step size α > 0 on the gradient normalized to unit RMS.
      tol: dual ascent stops once rms(WᵀD + DᵀW) < tol (≥ 0).
      method: the polar kernel of the msigns and the retraction (:func:`normopt.orthogonalize`; ``"svd"``: exact).
      steps: the kernel's iterations (static; None: 10 for Polar Express, else the method's default).
      mu_dtype: dtype the momentum and AdamW's moments are stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``.
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: extra path regexes of matrices to send to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      mask: which AdamW leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1: AdamW's β₁ ∈ [0, 1).
      adam_b2: AdamW's β₂ ∈ [0, 1).
      adam_eps: AdamW's ε > 0.
      adam_weight_decay: AdamW's decoupled weight decay ≥ 0.

    Returns:
      A :class:`normopt.NormedTransformation`; its ``update`` needs ``params``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from normopt.family.manifold import manifold_muon
      >>> params = {"w": jnp.eye(4, 2), "b": jnp.zeros(2)}
      >>> tx = manifold_muon(0.1, dual_steps=20)
      >>> grads = {"w": jnp.arange(8.0).reshape(4, 2), "b": jnp.ones(2)}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> w = optax.apply_updates(params, updates)["w"]
      >>> bool(jnp.allclose(w.T @ w, jnp.eye(2), atol=1e-5))
      True

    References:
      Bernstein, `Modular Manifolds <https://thinkingmachines.ai/blog/modular-manifolds/>`_, Thinking Machines Lab,
      2025 (code: github.com/thinking-machines-lab/manifolds).
    """
    owner = "manifold_muon"
    check_range("beta", beta, 0, 1, hi_open=True, owner=owner)
    _check_static_int("dual_steps", dual_steps, owner)
    check_range("dual_lr", dual_lr, 0, lo_open=True, owner=owner)
    check_range("tol", tol, 0, owner=owner)
    check_static("steps", steps, owner=owner)
    polar.check_kernel(method, _kernel_steps(method, steps), None)
    check_dtype("mu_dtype", mu_dtype, owner=owner)
    check_range("adam_b1", adam_b1, 0, 1, hi_open=True, owner=owner)
    check_range("adam_b2", adam_b2, 0, 1, hi_open=True, owner=owner)
    check_range("adam_eps", adam_eps, 0, lo_open=True, owner=owner)
    check_range("adam_weight_decay", adam_weight_decay, 0, owner=owner)
    layouts.check_spec(layout)
    reader = partition.matrix_reader(layout, strict, fallback, fallback_roles, owner)

    def rule(path, leaf):
        return "adamw" if reader(path, leaf) is None else "stiefel"

    matrices = optax.chain(
        transforms.momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
        scale_by_manifold_muon(
            learning_rate, dual_steps=dual_steps, dual_lr=dual_lr, tol=tol, method=method, steps=steps, layout=layout
        ),
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
        nesterov=nesterov,
    )
    tx = optax.partition({"stiefel": matrices, "adamw": adam}, lambda params: partition.labels(rule, params))
    return with_rule(tx, rule, layout)
