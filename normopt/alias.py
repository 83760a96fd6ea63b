"""Ready optimizers: thin ``optax.chain``s of public pieces, so any of them can be rebuilt by hand.

gradient ─► momentum ─► dualize (per-leaf norm) ─► weight decay ─► learning rate ─► update
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

from normopt import norms as norms_lib
from normopt import partition, transforms
from normopt.dims import MatrixDims
from normopt.transforms import dualize, momentum


class NormedTransformation(optax.GradientTransformationExtraArgs):
    """An optax transformation that also carries ``rule``, the ``(path, leaf) -> Norm | label`` it applies, so
    that :func:`normopt.describe` can print it."""


def _with_rule(tx: optax.GradientTransformation, rule: partition.Rule) -> NormedTransformation:
    tx = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        # Inner arithmetic runs in ≥ fp32 (normopt.momentum); each update comes back in its gradient's dtype.
        new, state = tx.update(updates, state, params, **extra_args)
        return jax.tree.map(lambda u, g: u.astype(g.dtype), new, updates), state

    out = NormedTransformation(tx.init, update_fn)
    out.rule = rule
    return out


def _state_in(dtype: str | None, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` fed gradients and params cast to ``dtype``, so that all of its state has that dtype
    (``optax.scale_by_adam`` keeps ν in the params' dtype, and g² overflows fp16 for |g| > 256)."""
    if dtype is None:
        return tx
    cast = lambda tree: None if tree is None else optax.tree.cast(tree, dtype)
    return optax.GradientTransformation(lambda p: tx.init(cast(p)), lambda u, s, p=None: tx.update(cast(u), s, cast(p)))


def _adamw_fallback(
    learning_rate: optax.ScalarOrSchedule,
    b1: Any,
    b2: Any,
    eps: Any,
    weight_decay: Any,
    mu_dtype: str | None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """``optax.adamw`` for the leaves Muon/Dion do not handle, except that a literal 0 weight decay needs no params
    and ``mu_dtype`` sets the dtype of both moments."""
    return _state_in(
        mu_dtype,
        optax.chain(
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov),
            _weight_decay(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
        ),
    )


def _weight_decay(weight_decay: Any) -> optax.GradientTransformation:
    # A literal 0 needs no params, so `update(g, state)` works without them (optax.contrib.muon requires them);
    # any other value, traced ones included, is decoupled weight decay (Loshchilov & Hutter 2019).
    if isinstance(weight_decay, (int, float)) and weight_decay == 0:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay)


def steepest_descent(
    learning_rate: optax.ScalarOrSchedule,
    norm: Any,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mode: str = "constrained",
    mu_dtype: str | None = None,
) -> NormedTransformation:
    """Steepest descent under ``norm``: W ← W − η·(dualize(m) + λ·W), m an EMA of gradients.

    ``mode="constrained"`` steps by η·dualize(m); ``mode="regularized"`` by η·‖m‖*·dualize(m) (with l2 this is
    SGD). ``norm`` is anything :func:`normopt.dualize` accepts. Equals
    ``optax.chain(normopt.momentum(momentum, nesterov=nesterov), normopt.dualize(norm, mode),
    optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate))``. ``mu_dtype``: dtype
    name of the momentum state (default: the params' dtype).
    """
    spec = norm.norms if isinstance(norm, norms_lib.WeightedMax) else norm
    tx = optax.chain(
        transforms.momentum(momentum, nesterov=nesterov, mu_dtype=mu_dtype),
        dualize(norm, mode),
        _weight_decay(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    return _with_rule(tx, lambda path, leaf: _rule_from_spec(spec, path, leaf))


def _rule_from_spec(spec: Any, path: tuple[str, ...], leaf: Any) -> Any:
    if callable(spec) and not isinstance(spec, norms_lib.Norm):
        return spec(path, leaf)
    if isinstance(spec, (norms_lib.Norm, str)) or spec is None:
        return norms_lib.get(spec) if spec is not None else None
    raise TypeError("describe needs the params to print a pytree of norms: call normopt.describe(params, norms)")


def sign_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mu_dtype: str | None = None,
) -> NormedTransformation:
    """Sign descent (Bernstein et al. 2018, signSGD): steepest descent under ℓ∞, W ← W − η·sign(m)."""
    return steepest_descent(
        learning_rate,
        norms_lib.linf(),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        mu_dtype=mu_dtype,
    )


def normalized_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mu_dtype: str | None = None,
) -> NormedTransformation:
    """Normalized SGD: steepest descent under ℓ2 per leaf, W ← W − η·m/‖m‖₂."""
    return steepest_descent(
        learning_rate,
        norms_lib.l2(),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        mu_dtype=mu_dtype,
    )


MUON_FALLBACK = (partition.EMBEDDING,)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    method: Any = "polar_express",
    steps: int | None = None,
    beta: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    scale: str = "spectral",
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    fallback: Sequence[str] = MUON_FALLBACK,
    layout: Mapping[str, MatrixDims] | None = None,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    sharding: Any = None,
) -> NormedTransformation:
    """Muon (Jordan et al. 2024): momentum, then the polar factor U Vᵀ of each matrix, scaled by a shape rule.

        m ← EMA_β(g) (Nesterov, bias-corrected);  W ← W − η·(c(fan_in, fan_out)·polar(m) + λ·W)

    Every leaf with ≥ 2 dimensions is a matrix (or a stack of matrices: scanned 3-D leaves, attention projections,
    conv kernels flattened to ``[prod(window)·in, out]``; see :mod:`normopt.partition`). Leaves with < 2 dimensions
    or named ``bias`` (attention biases are ``[heads, head_dim]``), and leaves whose path matches a pattern in
    ``fallback`` (default: embeddings, as Jordan recommends), use AdamW (``optax.adamw`` with ``nesterov``),
    exactly as ``optax.contrib.muon`` does for its non-2-D leaves.
    ``normopt.muon(lr, method="jordan", scale="jordan")`` reproduces ``optax.contrib.muon(lr)`` on 2-D leaves.

    Args:
      learning_rate: float or optax schedule.
      method, steps, compute_dtype: the polar kernel (:func:`normopt.orthogonalize`); ``steps`` is static (under
        ``optax.inject_hyperparams`` list it in ``static_args``); ``compute_dtype="bfloat16"`` for TPU speed.
      beta, nesterov: momentum (:func:`normopt.momentum`).
      weight_decay: decoupled weight decay λ of the matrices (multiplied by the learning rate, like optax).
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES`: ``"spectral"`` √(fan_out/fan_in) (RMS→RMS,
        default), ``"jordan"`` √max(1, fan_out/fan_in) (optax default), ``"moonlight"`` 0.2·√max(fan_in, fan_out).
      mu_dtype: dtype name of the state: the momentum and both AdamW moments (``"float32"`` for fp16 params,
        whose AdamW ν = g² overflows for |g| > 256); default the params' dtype.
      fallback: path patterns of matrices to send to AdamW instead.
      layout: ``{pattern: MatrixDims}`` overriding how matching leaves are read as matrices.
      adam_*: the AdamW fallback (learning rate defaults to ``learning_rate``).
      sharding: None, or :func:`normopt.sharding.layer_sharded` (whole matrices spread over a mesh).
    """
    fallback = tuple(fallback)

    def rule(path, leaf):
        partition.check_float(path, leaf)
        if partition.role(path, leaf) == "vector" or partition.first_match({p: True for p in fallback}, path):
            return "adamw"
        dims = partition.default_dims(path, tuple(leaf.shape), layout)
        return norms_lib.spectral(dims, scale=scale, method=method, steps=steps, compute_dtype=compute_dtype)

    matrices = optax.chain(
        momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
        dualize(partition.norms_of(rule), sharding=sharding),
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
        nesterov,
    )
    tx = optax.partition({"normed": matrices, "adamw": adam}, lambda params: partition.labels(rule, params))
    return _with_rule(tx, rule)


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
    weight_decay: float = 0.0,
    rules: Mapping[str, Any] | None = None,
    layout: Mapping[str, MatrixDims] | None = None,
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
    mu_dtype: str | None = None,
    sharding: Any = None,
) -> NormedTransformation:
    """Scion (Pethick et al. 2025, "Training deep learning models with norm-constrained LMOs"): one norm per layer
    by its role, each ball with its own radius ρ.

        embeddings l1_to_rms · hidden matrices rms_to_rms · output head rms_to_linf · vectors rms (or linf = sign)

    Unconstrained (default): W ← W − η·ρ·lmo(m). ``constrained=True``: W ← (1 − η)·W − η·ρ·lmo(m), which keeps
    ‖W‖ ≤ ρ (the paper's default; it is decoupled weight decay with λ = 1). ``m`` is an EMA with decay ``beta``
    (the paper's momentum 0.1 is β = 0.9). Roles come from Flax names (:func:`normopt.partition.role`); ``rules``
    maps path patterns to a role name (``"embedding"``, ``"hidden"``, ``"head"``, ``"vector"``), a norm name or a
    Norm, overriding the defaults. ``describe(params, scion(...))`` prints the result. ``sharding``: None, or
    :func:`normopt.sharding.layer_sharded` (whole matrices spread over a mesh).
    """
    if vector_norm not in ("rms", "linf"):
        raise ValueError(f"vector_norm must be 'rms' or 'linf', got {vector_norm!r}")
    radii = {"embedding": embedding_radius, "hidden": radius, "head": head_radius, "vector": vector_radius}

    def rule(path, leaf):
        partition.check_float(path, leaf)
        chosen = partition.first_match(rules, path)
        what = partition.role(path, leaf) if chosen is None else chosen
        if isinstance(what, norms_lib.Norm):
            return what
        if what in radii:
            if what == "vector":
                base = norms_lib.get(vector_norm)
            else:
                dims = partition.default_dims(path, tuple(leaf.shape), layout)
                base = (
                    SCION_NORMS[what](dims, method=method, steps=steps, compute_dtype=compute_dtype)
                    if what == "hidden"
                    else SCION_NORMS[what](dims)
                )
            return norms_lib.scaled(base, radii[what])
        try:
            return norms_lib.get(what)
        except ValueError as e:
            raise ValueError(f"{'/'.join(path)}: rule {what!r}: {e}; roles are {sorted(radii)}") from None

    tx = optax.chain(
        momentum(beta, nesterov=nesterov, mu_dtype=mu_dtype),
        dualize(rule, sharding=sharding),
        _weight_decay(1.0) if constrained else optax.identity(),
        _weight_decay(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    return _with_rule(tx, rule)
