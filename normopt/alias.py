"""Ready optimizers: thin ``optax.chain``s of public pieces, so any of them can be rebuilt by hand.

gradient ─► momentum ─► dualize (per-leaf norm) ─► weight decay ─► learning rate ─► update

Naming rule (every public optimizer): the learning rate comes first, every other hyperparameter is keyword-only,
and names follow optax where optax has the concept — ``momentum`` for the SGD-style EMA (as ``optax.sgd``),
``beta`` for the Muon-family EMA (as ``optax.contrib.muon``), ``b1``/``b2``/``eps``/``eps_root`` for Adam moments
(as ``optax.adam``; ``adam_``-prefixed for the AdamW half of Muon), ``weight_decay`` and its ``mask`` (as
``optax.adamw``), ``mu_dtype`` (the dtype the state is stored in; arithmetic runs in ≥ float32, as optax does).
Updates come back in each gradient's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

from normopt import _describe, _numerics, layouts, partition, transforms
from normopt import norms as norms_lib


class NormedTransformation(optax.GradientTransformationExtraArgs):
    """An optax transformation that also carries the rule it applies and the layout it reads leaves with.

    Attributes:
      init: ``init(params) -> state``, as in optax.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``, as in optax.
      rule: the ``(path, leaf) -> Norm | label`` it applies (None: an inner :func:`normopt.dualize` records it),
        printed by :func:`normopt.describe`.
      layout: the :data:`normopt.layouts.LayoutSpec` it reads leaves with.
    """


def with_rule(
    tx: optax.GradientTransformation, rule: partition.Rule | None, layout: layouts.LayoutSpec = None
) -> NormedTransformation:
    """``tx`` carrying ``rule`` for :func:`normopt.describe` (None: an inner :func:`normopt.dualize` records its
    own), with each update cast back to its gradient's dtype (inner arithmetic runs in ≥ float32)."""
    tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        if rule is not None:
            _describe.record(rule, layout, params)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        new, state = tx.update(updates, state, params, **extra_args)
        return jax.tree.map(lambda u, g: u.astype(g.dtype), new, updates), state

    out = NormedTransformation(init_fn, update_fn)
    out.rule = rule
    out.layout = layout
    return out


def _in_fp32(tx: optax.GradientTransformation, state_dtype: Any = None) -> optax.GradientTransformation:
    """``tx`` with its whole state stored in ``state_dtype`` (None: the params' dtype) and its arithmetic on
    ≥ float32 gradients (``mu_dtype`` semantics: storage only; with fp16 params ``state_dtype="float32"`` keeps
    ν = g² from overflowing for |g| > 256)."""

    def init_fn(params):
        return tx.init(params if state_dtype is None else optax.tree.cast(params, state_dtype))

    def update_fn(updates, state, params=None):
        grads = jax.tree.map(lambda g: g.astype(_numerics.compute_dtype(g)), updates)
        new, new_state = tx.update(grads, state, params)
        return new, jax.tree.map(lambda n, old: n.astype(old.dtype), new_state, state)

    return optax.GradientTransformation(init_fn, update_fn)


def adamw_fallback(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    weight_decay: Any,
    mask: Any,
    mu_dtype: Any,
    nesterov: bool,
) -> optax.GradientTransformation:
    """``optax.adamw`` for the leaves Muon/Dion do not handle: arithmetic in ≥ float32 as optax, both moments
    stored in ``mu_dtype`` (optax stores ν in the params' dtype), and a literal-0 weight decay that needs no
    params."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov)
    return optax.chain(
        _in_fp32(adam, mu_dtype),
        _numerics.weight_decay(weight_decay, _numerics.path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
    )


def _check_common(owner: str, *, weight_decay: Any = 0.0, mu_dtype: Any = None, layout: Any = None) -> None:
    _numerics.check_range("weight_decay", weight_decay, 0.0, owner=owner)
    _numerics.check_dtype("mu_dtype", mu_dtype, owner=owner)
    layouts.check_spec(layout)


def steepest_descent(
    learning_rate: optax.ScalarOrSchedule,
    norm: Any,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
    mode: str = "constrained",
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
) -> NormedTransformation:
    """Steepest descent under ``norm``: W ← W − η·(dualize(m) + λ·W), m an EMA of gradients.

        constrained:  W ← W − η·(dualize(m) + λ·W)
        regularized:  W ← W − η·(‖m‖*·dualize(m) + λ·W)        (with l2 this is SGD)

    Equals ``optax.chain(normopt.momentum(momentum, nesterov=nesterov), normopt.dualize(norm, mode,
    layout=layout), optax.add_decayed_weights(weight_decay, mask), optax.scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: float or optax schedule η.
      norm: anything :func:`normopt.dualize` accepts (a Norm or name, a pytree of them, a callable, a WeightedMax).
      momentum: EMA decay β ∈ [0, 1) of the gradients (0: none).
      nesterov: Nesterov look-ahead.
      weight_decay: decoupled weight decay λ ≥ 0 (multiplied by η, as ``optax.adamw``).
      mask: which leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      mode: ``"constrained"`` or ``"regularized"``.
      mu_dtype: dtype the momentum is stored in (default: the params').
      layout: how leaves are read (:data:`normopt.layouts.LayoutSpec`).
      strict: raise for a ≥ 2-D leaf read only from its name.

    Returns:
      A :class:`NormedTransformation`.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.steepest_descent(0.1, "linf")
      >>> g = {"w": jnp.array([0.5, -2.0])}
      >>> [round(float(u), 4) for u in tx.update(g, tx.init(g))[0]["w"]]
      [-0.1, 0.1]

    References:
      Bernstein & Newhouse, "Old optimizer, new norm: an anthology", 2024 (arXiv:2409.20325).
    """
    _check_common("steepest_descent", weight_decay=weight_decay, mu_dtype=mu_dtype, layout=layout)
    tx = optax.chain(
        transforms.momentum(momentum, nesterov=nesterov, mu_dtype=mu_dtype),
        transforms.dualize(norm, mode, layout=layout, strict=strict),
        _numerics.weight_decay(weight_decay, _numerics.path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
    )
    return with_rule(tx, None, layout)  # the inner dualize records its rule for describe


def sign_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
    mu_dtype: str | None = None,
) -> NormedTransformation:
    """Sign descent: steepest descent under ℓ∞, W ← W − η·(sign(m) + λ·W).

    Equals :func:`steepest_descent` with ``norm=normopt.norms.linf()``.

    Args:
      learning_rate: float or optax schedule η.
      momentum: EMA decay β ∈ [0, 1) of the gradients (0: none).
      nesterov: Nesterov look-ahead.
      weight_decay: decoupled weight decay λ ≥ 0 (multiplied by η, as ``optax.adamw``).
      mask: which leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      mu_dtype: dtype the momentum is stored in (default: the params').

    Returns:
      A :class:`NormedTransformation`.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.sign_sgd(0.01)
      >>> g = {"w": jnp.array([3.0, -1e-6])}
      >>> [round(float(u), 4) for u in tx.update(g, tx.init(g))[0]["w"]]
      [-0.01, 0.01]

    References:
      Bernstein et al., "signSGD: compressed optimisation for non-convex problems", ICML 2018.
    """
    return steepest_descent(
        learning_rate,
        norms_lib.linf(),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        mask=mask,
        mu_dtype=mu_dtype,
    )


def normalized_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
) -> NormedTransformation:
    """Normalized SGD: steepest descent under ℓ2 per leaf (per slice of a stack), W ← W − η·(m/‖m‖₂ + λ·W).

    Equals :func:`steepest_descent` with ``norm=normopt.norms.l2()``.

    Args:
      learning_rate: float or optax schedule η.
      momentum: EMA decay β ∈ [0, 1) of the gradients (0: none).
      nesterov: Nesterov look-ahead.
      weight_decay: decoupled weight decay λ ≥ 0 (multiplied by η, as ``optax.adamw``).
      mask: which leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      mu_dtype: dtype the momentum is stored in (default: the params').
      layout: how leaves are read (:data:`normopt.layouts.LayoutSpec`): which axes of a stack are separate vectors.

    Returns:
      A :class:`NormedTransformation`.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.normalized_sgd(1.0)
      >>> g = {"w": jnp.array([3.0, 4.0])}
      >>> [round(float(u), 4) for u in tx.update(g, tx.init(g))[0]["w"]]
      [-0.6, -0.8]

    References:
      Hazan, Levy & Shalev-Shwartz, "Beyond convexity: stochastic quasi-convex optimization", NeurIPS 2015.
    """
    return steepest_descent(
        learning_rate,
        norms_lib.l2(),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        mask=mask,
        mu_dtype=mu_dtype,
        layout=layout,
    )


MUON_FALLBACK_ROLES = ("embedding", "head")
"""Roles Muon leaves to AdamW besides vectors, as Jordan's recipe does (KellerJordan/Muon README)."""


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    method: Any = "polar_express",
    steps: int | None = None,
    beta: float = 0.95,
    nesterov: bool = True,
    debias: bool = True,
    weight_decay: float = 0.0,
    mask: Any = None,
    scale: str = "spectral",
    mode: str = "constrained",
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    fallback: Sequence[str] = (),
    fallback_roles: Sequence[str] = MUON_FALLBACK_ROLES,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_nesterov: bool | None = None,
    sharding: Any = None,
) -> NormedTransformation:
    """Muon: momentum, then the polar factor U Vᵀ of each hidden matrix, scaled by a shape rule; AdamW elsewhere.

        m ← EMA_β(g) (Nesterov, bias-corrected);  W ← W − η·(c(fan_in, fan_out)·polar(m) + λ·W)

    Each leaf is read by ``layout`` (:mod:`normopt.layouts`; without it, from its names): hidden matrices, stacks
    of them (scanned layers, experts: each slice its own matrix), attention projections and conv kernels
    (flattened to ``fan_in = window·in``) get Muon. Vectors (biases, norm scales, stacked or not) and the roles in
    ``fallback_roles`` (default: embeddings and the output head, as in Jordan's recipe), plus leaves whose path
    matches a pattern in ``fallback``, get AdamW (``optax.adamw``, with ``nesterov``).
    ``normopt.muon(lr, method="jordan", scale="jordan", fallback_roles=())`` reproduces
    ``optax.contrib.muon(lr)`` on 2-D leaves.

    Args:
      learning_rate: float or optax schedule η.
      method: the polar kernel (:func:`normopt.orthogonalize`): a name in :data:`normopt.polar.METHODS` or a
        coefficient table of shape (steps, 3).
      steps: kernel iterations (static: under ``optax.inject_hyperparams`` list it in ``static_args``); None: the
        method's default.
      beta: momentum decay β ∈ [0, 1).
      nesterov: Nesterov momentum for the matrices (and NAdam in the AdamW half unless ``adam_nesterov`` says
        otherwise).
      debias: divide the momentum by 1 − βᵗ (optax.contrib.muon does; KellerJordan/Muon does not: ``False``).
      weight_decay: decoupled weight decay λ ≥ 0 of the matrices (multiplied by η, as ``optax.adamw``).
      mask: which leaves decay, in both halves (a pytree of bools or a callable, as ``optax.adamw``).
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES`: ``"spectral"`` √(fan_out/fan_in) (RMS→RMS,
        default), ``"jordan"`` √max(1, fan_out/fan_in) (optax default), ``"moonlight"`` 0.2·√max(fan_in, fan_out)
        (optax's ``consistent_rms``).
      mode: ``"constrained"`` (Muon: c·polar(m)) or ``"regularized"`` (‖m‖*·c·polar(m), the nuclear-norm-scaled
        step of :func:`polargrad`).
      compute_dtype: dtype the kernel iterates in (``"bfloat16"`` for TPU speed); None: float32.
      mu_dtype: dtype the momentum and AdamW's first moment are stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``.
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: extra path regexes of matrices to send to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1: AdamW's first-moment decay (``b1`` of ``optax.adamw``).
      adam_b2: AdamW's second-moment decay (``b2`` of ``optax.adamw``).
      adam_eps: AdamW's ε added outside the square root (``eps`` of ``optax.adamw``).
      adam_eps_root: AdamW's ε added inside the square root (``eps_root`` of ``optax.adamw``; as
        ``optax.contrib.muon``'s ``adam_eps_root``).
      adam_weight_decay: AdamW's decoupled weight decay (``weight_decay`` of ``optax.adamw``).
      adam_nesterov: NAdam in the AdamW half; None follows ``nesterov`` (KellerJordan/Muon pairs Nesterov Muon
        with plain Adam: ``False``).
      sharding: None, or :func:`normopt.sharding.layer_sharded` (whole matrices spread over a mesh).

    Returns:
      A :class:`NormedTransformation` (an ``optax.GradientTransformationExtraArgs``).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, normopt
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = normopt.muon(1e-2)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024;
      Amsel et al., "The Polar Express", 2025 (arXiv:2505.16932);
      Liu et al., "Muon is scalable for LLM training", 2025 (arXiv:2502.16982).
    """
    return _muon(
        "muon",
        None,
        learning_rate,
        method=method,
        steps=steps,
        beta=beta,
        nesterov=nesterov,
        debias=debias,
        weight_decay=weight_decay,
        mask=mask,
        scale=scale,
        mode=mode,
        compute_dtype=compute_dtype,
        mu_dtype=mu_dtype,
        layout=layout,
        strict=strict,
        fallback=fallback,
        fallback_roles=fallback_roles,
        adam_learning_rate=adam_learning_rate,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_eps=adam_eps,
        adam_eps_root=adam_eps_root,
        adam_weight_decay=adam_weight_decay,
        adam_nesterov=adam_nesterov,
        sharding=sharding,
    )


def _muon(
    owner: str,
    post_dualize: optax.GradientTransformation | None,
    learning_rate: optax.ScalarOrSchedule,
    *,
    method: Any,
    steps: int | None,
    beta: float,
    nesterov: bool,
    debias: bool,
    weight_decay: float,
    mask: Any,
    scale: str,
    mode: str,
    compute_dtype: str | None,
    mu_dtype: str | None,
    layout: layouts.LayoutSpec,
    strict: bool,
    fallback: Sequence[str],
    fallback_roles: Sequence[str],
    adam_learning_rate: optax.ScalarOrSchedule | None,
    adam_b1: float,
    adam_b2: float,
    adam_eps: float,
    adam_eps_root: float,
    adam_weight_decay: float,
    adam_nesterov: bool | None,
    sharding: Any,
) -> NormedTransformation:
    """:func:`muon` with ``post_dualize`` applied to the matrices' updates right after the polar factor (before
    weight decay and the learning rate; None: nothing, so muon's state keeps its structure); ``owner`` names the
    optimizer in error messages. :func:`normopt.family.normuon.normuon` passes its neuron-wise normalisation."""
    _check_common(owner, weight_decay=weight_decay, mu_dtype=mu_dtype, layout=layout)
    _numerics.check_range("beta", beta, 0.0, 1.0, hi_open=True, owner=owner)
    _numerics.check_range("adam_b1", adam_b1, 0.0, 1.0, hi_open=True, owner=owner)
    _numerics.check_range("adam_b2", adam_b2, 0.0, 1.0, hi_open=True, owner=owner)
    _numerics.check_range("adam_eps", adam_eps, 0.0, lo_open=True, owner=owner)
    _numerics.check_range("adam_eps_root", adam_eps_root, 0.0, owner=owner)
    _numerics.check_range("adam_weight_decay", adam_weight_decay, 0.0, owner=owner)
    _numerics.check_choice("scale", scale, norms_lib.SCALE_RULES, owner=owner)
    _numerics.check_choice("mode", mode, transforms.MODES, owner=owner)
    reader = partition.matrix_reader(layout, strict, fallback, fallback_roles, owner)
    kernel = norms_lib.spectral(scale=scale, method=method, steps=steps, compute_dtype=compute_dtype)

    def rule(path, leaf):
        lay = reader(path, leaf)
        return "adamw" if lay is None else norms_lib.with_layout(kernel, lay)

    matrices = optax.chain(
        transforms.momentum(beta, nesterov=nesterov, debias=debias, mu_dtype=mu_dtype),
        transforms.dualize(partition.norms_of(rule), mode, sharding=sharding),
        *([] if post_dualize is None else [post_dualize]),
        _numerics.weight_decay(weight_decay, _numerics.path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
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
        nesterov=nesterov if adam_nesterov is None else adam_nesterov,
    )
    tx = optax.partition({"normed": matrices, "adamw": adam}, lambda params: partition.labels(rule, params))
    return with_rule(tx, rule, layout)


def polargrad(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    weight_decay: float = 0.0,
    mask: Any = None,
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    sharding: Any = None,
) -> NormedTransformation:
    """PolarGrad: the polar factor of the momentum scaled by its nuclear norm, AdamW elsewhere.

        M ← β·M + (1 − β)·G;   U H = polar(M);   W ← W − η·(tr(H)·U + λ·W),   tr(H) = ‖M‖_* = ⟨M, U⟩

    In the norm view this is *regularized* steepest descent under the spectral norm: argmin_Δ ⟨M, Δ⟩ +
    (1/2η)‖Δ‖²_op = −η·‖M‖_*·U Vᵀ, the step :func:`normopt.dualize` takes with ``mode="regularized"``. It equals
    ``normopt.muon(lr, scale="none", mode="regularized", debias=False, nesterov=False, ...)``; leaves that are not
    hidden matrices go to AdamW as in :func:`muon`.

    Args:
      learning_rate: float or optax schedule η (the nuclear norm scales the step: smaller than Muon's).
      beta: momentum decay β ∈ [0, 1) (an EMA without bias correction, momentum-first as in the paper).
      weight_decay: decoupled weight decay λ ≥ 0 (multiplied by η).
      mask: which leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      method: the polar kernel (:func:`normopt.orthogonalize`).
      steps: kernel iterations (static); None: the method's default.
      compute_dtype: dtype the kernel iterates in; None: float32.
      mu_dtype: dtype the state is stored in (default: the params').
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`).
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      sharding: None, or :func:`normopt.sharding.layer_sharded`.

    Returns:
      A :class:`NormedTransformation`.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> tx = normopt.polargrad(0.1, beta=0.0, method="svd")
      >>> g = {"w": jnp.diag(jnp.array([3.0, 1.0]))}
      >>> [round(float(u), 4) for u in tx.update(g, tx.init(g), g)[0]["w"].diagonal()]  # −η·‖G‖_*·UVᵀ = −0.1·4·I
      [-0.4, -0.4]

    References:
      Lau, Long & Su, `PolarGrad: a class of matrix-gradient optimizers from a unifying preconditioning perspective
      <https://arxiv.org/abs/2505.21799>`_, 2025.
    """
    return muon(
        learning_rate,
        method=method,
        steps=steps,
        beta=beta,
        nesterov=False,
        debias=False,
        weight_decay=weight_decay,
        mask=mask,
        scale="none",
        mode="regularized",
        compute_dtype=compute_dtype,
        mu_dtype=mu_dtype,
        layout=layout,
        strict=strict,
        sharding=sharding,
    )


SCION_NORMS = {
    "embedding": norms_lib.l1_to_rms,
    "hidden": norms_lib.rms_to_rms,
    "head": norms_lib.rms_to_linf,
}


def scion(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.9,
    nesterov: bool = False,
    constrained: bool = False,
    radius: float = 1.0,
    embedding_radius: float = 1.0,
    head_radius: float = 1.0,
    vector_radius: float = 1.0,
    vector_norm: str = "rms",
    head_norm: str = "rms_to_linf",
    weight_decay: float = 0.0,
    mask: Any = None,
    rules: Mapping[str, Any] | None = None,
    layout: layouts.LayoutSpec = None,
    strict: bool = False,
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    sharding: Any = None,
) -> NormedTransformation:
    """Scion: one norm per layer by its role, each ball with its own radius ρ.

        embeddings l1_to_rms · hidden matrices rms_to_rms · output head rms_to_linf · vectors rms (or linf = sign)

    Unconstrained (default): W ← W − η·ρ·lmo(m). ``constrained=True``: W ← (1 − η)·W − η·ρ·lmo(m), which keeps
    ‖W‖ ≤ ρ (the paper's default; it is decoupled weight decay with λ = 1). ``m`` is an EMA with decay ``beta``
    (the paper's momentum 0.1 is β = 0.9). Stacked leaves (scanned layers, experts) are read slice by slice.

    Args:
      learning_rate: float or optax schedule η.
      beta: momentum decay β ∈ [0, 1).
      nesterov: Nesterov momentum.
      constrained: the paper's constrained variant (decay with λ = 1).
      radius: ρ > 0 of the hidden matrices' ball.
      embedding_radius: ρ > 0 of the embeddings' ball.
      head_radius: ρ > 0 of the output head's ball.
      vector_radius: ρ > 0 of the vectors' ball.
      vector_norm: ``"rms"`` or ``"linf"`` (sign) for vectors.
      head_norm: ``"rms_to_linf"`` (Scion's ``RowNorm``) or ``"sign"`` (Scion's ``Sign``, sign(G)/d_in, its
        nanoGPT recipe) for the output head.
      weight_decay: extra decoupled weight decay λ ≥ 0.
      mask: which leaves decay (a pytree of bools or a callable, as ``optax.adamw``).
      rules: ``{path regex: role | norm name | Norm}`` overriding the role-based choice.
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.equinox(model)``.
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      method: the polar kernel of the hidden layers (see :func:`muon`).
      steps: the kernel's iterations (static; None: the method's default).
      compute_dtype: dtype the kernel iterates in (None: float32).
      mu_dtype: dtype the momentum is stored in (default: the params').
      sharding: None, or :func:`normopt.sharding.layer_sharded`.

    Returns:
      A :class:`NormedTransformation`.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> params = {"embed": {"embedding": jnp.ones((10, 4))}, "w": jnp.ones((4, 4))}
      >>> tx = normopt.scion(0.1)
      >>> updates, _ = tx.update(params, tx.init(params))

    References:
      Pethick et al., "Training deep learning models with norm-constrained LMOs", ICML 2025 (arXiv:2502.07529).
    """
    owner = "scion"
    _check_common(owner, weight_decay=weight_decay, mu_dtype=mu_dtype, layout=layout)
    _numerics.check_range("beta", beta, 0.0, 1.0, hi_open=True, owner=owner)
    radii = {"embedding": embedding_radius, "hidden": radius, "head": head_radius, "vector": vector_radius}
    for role_name, value in radii.items():
        name = "radius" if role_name == "hidden" else f"{role_name}_radius"
        _numerics.check_range(name, value, 0.0, lo_open=True, owner=owner)
    _numerics.check_choice("vector_norm", vector_norm, ("rms", "linf"), owner=owner)
    _numerics.check_choice("head_norm", head_norm, ("rms_to_linf", "sign"), owner=owner)
    if rules is not None and not isinstance(rules, Mapping):
        raise TypeError(f"scion: rules must be a mapping {{path regex: role | norm}}, got {type(rules).__name__}")
    for pattern, what in (rules or {}).items():
        if not isinstance(what, norms_lib.Norm) and what not in radii:
            try:
                norms_lib.get(what)
            except ValueError as e:
                raise ValueError(f"scion: rules: {pattern}: {what!r}: {e}; roles are {sorted(radii)}") from None
    hidden = norms_lib.rms_to_rms(method=method, steps=steps, compute_dtype=compute_dtype)
    base = {"embedding": norms_lib.l1_to_rms(), "hidden": hidden, "head": norms_lib.get(head_norm)}
    base["vector"] = norms_lib.get(vector_norm)

    def rule(path, leaf):
        _numerics.check_float(path, leaf)
        lay = partition.read(path, leaf, layout, strict and partition.first_match(rules, path) is None)
        what = partition.first_match(rules, path) or lay.role
        if isinstance(what, norms_lib.Norm) or what not in radii:
            return norms_lib.with_layout(norms_lib.get(what), lay)
        if lay.role == "vector" and what != "vector":
            raise ValueError(f"{'/'.join(path)}: rules give it the role {what!r}, but it is read as a vector")
        return norms_lib.scaled(norms_lib.with_layout(base[what], lay), radii[what])

    tx = optax.chain(
        transforms.momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
        transforms.dualize(rule, sharding=sharding),
        _numerics.weight_decay(1.0) if constrained else optax.identity(),
        _numerics.weight_decay(weight_decay, _numerics.path_mask(mask)),
        optax.scale_by_learning_rate(learning_rate),
    )
    return with_rule(tx, rule, layout)
