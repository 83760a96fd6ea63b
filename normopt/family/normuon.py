"""NorMuon (Li et al. 2025, arXiv:2510.05491, "NorMuon: Making Muon more efficient and scalable").

Muon's polar factor balances a matrix update's singular values but not its neurons: some output units still get
much larger steps than others. NorMuon keeps an Adam-style second moment per neuron of the dualized update O and
divides each neuron by its root, then restores O's Frobenius norm, so the step length stays Muon's::

    O = dualize(m)                                      (any normopt norm; Muon: c·U Vᵀ)
    v ← β₂·v + (1 − β₂)·mean_{fan_in}(O ⊙ O)            (one value per neuron: per fan-out unit)
    Ô = O / (√v + ε)                                     (v broadcast over fan_in)
    update = (‖O‖_F / ‖Ô‖_F)·Ô                           (per matrix: the norm O had)

Under normopt's ``[*batch, fan_in, fan_out]`` reading a neuron is one fan-out unit, so v has one entry per
column of a Flax ``Dense.kernel`` (its last axis). The authors' PyTorch code stores ``[out, in]`` and averages
over the last axis (``in``): the same neurons. Each slice of a stack (scanned layers, experts) is its own matrix
with its own v. Verified step by step against the authors' ``normuon_update`` (github.com/zichongli5/NorMuon,
``normuon.py`` at d45c9a4) in tests/test_normuon.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt import layouts, partition
from normopt._numerics import check_float, check_range, compute_dtype, on_auto_axes, path_names, safe_div
from normopt.alias import MUON_FALLBACK_ROLES, NormedTransformation, _muon
from normopt.dims import MatrixDims, matrix_layout, to_matrices


class ScaleByNeuronRMSState(NamedTuple):
    """State of :func:`scale_by_neuron_rms`.

    Attributes:
      nu: per matrix leaf, shape ``[*batch, fan_out]`` (the leaf's stack axes, then its fan-out units), dtype
        float32 (float64 for float64 leaves): the EMA of each neuron's mean square; ``optax.MaskedNode()`` for
        leaves read as vectors, which pass through unchanged.
    """

    nu: optax.Updates  # per matrix leaf shape=[*batch, fan_out], dtype ≥ float32: EMA of mean_{fan_in}(O²)


def _dims(path: Any, leaf: Any, layout: layouts.LayoutSpec, strict: bool) -> MatrixDims | None:
    """The leaf's matrix reading (as :func:`normopt.dualize` reads it with the same ``layout``); None: a vector."""
    check_float(path, leaf)
    return partition.read(path_names(path), leaf, layout, strict).dims


def _normalize(u: jax.Array, nu: jax.Array, dims: MatrixDims, b2: Any, eps: Any) -> tuple[jax.Array, jax.Array]:
    """One step on one leaf: the neuron-normalized update (≥ fp32, norm of ``u`` kept per matrix) and the new ν."""
    m, back = to_matrices(u.astype(nu.dtype), dims)  # [*batch, fan_in, fan_out]
    nu = b2 * nu + (1 - b2) * jnp.mean(m * m, axis=-2)
    scaled = m / (jnp.sqrt(nu)[..., None, :] + eps)
    frobenius = lambda x: jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))
    return back(scaled * safe_div(frobenius(m), frobenius(scaled))), nu


def scale_by_neuron_rms(
    b2: float = 0.95, eps: float = 1e-8, *, layout: layouts.LayoutSpec = None, strict: bool = False
) -> optax.GradientTransformation:
    """Divides each neuron of a matrix update by the root of its running mean square, keeping the matrix's norm.

        v ← β₂·v + (1 − β₂)·mean_{fan_in}(O ⊙ O);   O ← (‖O‖_F / ‖Ô‖_F)·Ô,   Ô = O / (√v + ε)

    per ``[fan_in, fan_out]`` slice of each leaf, v with one entry per fan-out unit (RMSprop, ``optax.scale_by_rms``,
    with one second moment per neuron instead of per entry). Place it after :func:`normopt.dualize`, with the same
    ``layout``, for any norm: the update keeps the Frobenius norm (hence the scale rule) the norm gave it, and only
    its distribution over neurons changes. v has no bias correction: the rescaling cancels any common factor.
    Leaves read as vectors pass through unchanged.

    Args:
      b2: decay β₂ ∈ [0, 1) of the per-neuron second moment (0: normalize each step's neurons on their own).
      eps: ε > 0 added to √v (outside the square root, as the reference code).
      layout: how leaves are read (:data:`normopt.layouts.LayoutSpec`), as given to :func:`normopt.dualize`.
      strict: raise for a ≥ 2-D leaf read only from its name.

    Returns:
      An ``optax.GradientTransformation`` with :class:`ScaleByNeuronRMSState`; updates come back in ≥ float32.

    Examples:
      >>> import jax.numpy as jnp, optax, normopt
      >>> from normopt.family.normuon import scale_by_neuron_rms
      >>> tx = optax.chain(normopt.dualize(normopt.norms.sign()), scale_by_neuron_rms(0.0))
      >>> g = {"w": jnp.array([[1.0, -2.0], [3.0, 4.0]])}
      >>> u, _ = tx.update(g, tx.init(g))
      >>> [[round(float(x), 4) for x in row] for row in u["w"]]  # sign(g)/2: every neuron already has rms 1/2
      [[0.5, -0.5], [0.5, 0.5]]

    References:
      Li et al., `NorMuon: Making Muon more efficient and scalable <https://arxiv.org/abs/2510.05491>`_, 2025.
    """
    owner = "scale_by_neuron_rms"
    check_range("b2", b2, 0.0, 1.0, hi_open=True, owner=owner)
    check_range("eps", eps, 0.0, lo_open=True, owner=owner)
    layouts.check_spec(layout)

    def init_fn(params):
        def zeros(path, leaf):
            dims = _dims(path, leaf, layout, strict)
            if dims is None:
                return optax.MaskedNode()
            lay = matrix_layout(jnp.shape(leaf), dims)
            batch = tuple(jnp.shape(leaf)[a] for a in lay.batch_axes)
            return jnp.zeros(batch + (lay.fan_out,), compute_dtype(leaf))

        return ScaleByNeuronRMSState(jax.tree_util.tree_map_with_path(zeros, params))

    def update_fn(updates, state, params=None):
        del params
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        out, nus = [], []
        for (path, u), nu in zip(flat, treedef.flatten_up_to(state.nu), strict=True):
            dims = _dims(path, u, layout, strict)
            if dims is not None and u.size:  # an empty matrix does not move (its mean square is 0/0)
                u, nu = on_auto_axes(lambda x, dims=dims: _normalize(*x, dims, b2, eps), (u, nu))
            out.append(u)
            nus.append(nu)
        return treedef.unflatten(out), ScaleByNeuronRMSState(treedef.unflatten(nus))

    return optax.GradientTransformation(init_fn, update_fn)


def normuon(
    learning_rate: optax.ScalarOrSchedule,
    *,
    beta: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-8,
    nesterov: bool = True,
    debias: bool = True,
    weight_decay: float = 0.0,
    mask: Any = None,
    scale: str = "spectral",
    method: Any = "polar_express",
    steps: int | None = None,
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
    """NorMuon: Muon whose polar factor is normalized neuron by neuron (:func:`scale_by_neuron_rms`); AdamW elsewhere.

        m ← EMA_β(g) (Nesterov);  O = c(fan_in, fan_out)·polar(m);  v ← β₂·v + (1 − β₂)·mean_{fan_in}(O²)
        Ô = O / (√v + ε);   W ← W − η·((‖O‖_F / ‖Ô‖_F)·Ô + λ·W)

    The chain is :func:`normopt.muon`'s with :func:`scale_by_neuron_rms` after the polar factor: the same leaves
    (hidden matrices, stacks of them, conv kernels) get it, the same leaves go to AdamW, and the update has
    Muon's Frobenius norm, so Muon's learning rates carry over. With an exact polar factor (``method="svd"``):

    * ``normuon(lr, scale="jordan", debias=False, eps=1e-10)`` is the authors' ``SingleDeviceNorMuon`` /
      ``normuon_update`` (github.com/zichongli5/NorMuon, d45c9a4): they rescale by √max(1, out/in) after the
      normalization, which commutes with it here (their ε then acts as ε·c, a difference below 1e-9);
    * ``normuon(lr, scale="moonlight", debias=False, nesterov=False)`` is microsoft/dion's ``NorMuon`` with
      ``adjust_lr="rms_norm"``, and the paper's η̂ = 0.2·η·√(mn)/‖Ô‖_F (update RMS 0.2, AdamW's), since
      ‖polar‖_F = √min(m, n).

    Args:
      learning_rate: float or optax schedule η.
      beta: momentum decay β ∈ [0, 1).
      b2: decay β₂ ∈ [0, 1) of the per-neuron second moment.
      eps: ε > 0 added to √v.
      nesterov: Nesterov momentum for the matrices (and NAdam in the AdamW half unless ``adam_nesterov`` says
        otherwise).
      debias: divide the momentum by 1 − βᵗ (the authors' code does not: ``False``; it only matters for the
        Nesterov blend of the first steps, the polar factor being scale-free).
      weight_decay: decoupled weight decay λ ≥ 0 of the matrices (multiplied by η, as ``optax.adamw`` and the
        reference code's p ← (1 − ηλ)·p).
      mask: which leaves decay, in both halves (a pytree of bools or a callable, as ``optax.adamw``).
      scale: shape rule c in :data:`normopt.norms.SCALE_RULES` (see :func:`normopt.muon`): ``"spectral"``
        (default, as normopt.muon), ``"jordan"`` (the authors' code), ``"moonlight"`` (update RMS 0.2, the paper).
      method: the polar kernel (:func:`normopt.orthogonalize`).
      steps: kernel iterations (static); None: the method's default.
      compute_dtype: dtype the kernel iterates in; None: float32.
      mu_dtype: dtype the momentum and AdamW's first moment are stored in (default: the params'); v is always
        ≥ float32 (one value per neuron).
      layout: how each leaf is read (:data:`normopt.layouts.LayoutSpec`), e.g. ``normopt.layouts.nnx(model)``.
      strict: raise, naming the leaf, for any ≥ 2-D leaf that would be read only from its name.
      fallback: extra path regexes of matrices to send to AdamW (a sequence, not a bare string).
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      adam_b1: AdamW's first-moment decay.
      adam_b2: AdamW's second-moment decay.
      adam_eps: AdamW's ε added outside the square root.
      adam_eps_root: AdamW's ε added inside the square root.
      adam_weight_decay: AdamW's decoupled weight decay.
      adam_nesterov: NAdam in the AdamW half; None follows ``nesterov``.
      sharding: None, or :func:`normopt.sharding.layer_sharded` (the polar factor of whole matrices spread over a
        mesh; the normalization then runs where the update lies).

    Returns:
      A :class:`normopt.NormedTransformation`.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from normopt.family.normuon import normuon
      >>> params = {"w": jnp.ones((4, 8)), "b": jnp.zeros(8)}
      >>> tx = normuon(1e-2, weight_decay=0.01)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Li et al., `NorMuon: Making Muon more efficient and scalable <https://arxiv.org/abs/2510.05491>`_, 2025.
    """
    owner = "normuon"
    check_range("b2", b2, 0.0, 1.0, hi_open=True, owner=owner)
    check_range("eps", eps, 0.0, lo_open=True, owner=owner)
    return _muon(
        owner,
        scale_by_neuron_rms(b2, eps, layout=layout, strict=strict),
        learning_rate,
        method=method,
        steps=steps,
        beta=beta,
        nesterov=nesterov,
        debias=debias,
        weight_decay=weight_decay,
        mask=mask,
        scale=scale,
        mode="constrained",
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
