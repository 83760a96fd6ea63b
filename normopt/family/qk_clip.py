"""QK-Clip (Kimi K2 technical report, Moonshot AI 2025, arXiv:2507.20534, §2.1 "MuonClip").

Muon lets attention logits grow without bound; QK-Clip caps them after every optimizer step by shrinking, per head,
the query and key weights that produced them. With S_h the largest pre-softmax logit of head h over the batch
(``q_h·k_h / √d`` as the model computes it) and threshold τ::

    γ_h = min(1, τ / S_h);   W_q^h ← √γ_h·W_q^h,   W_k^h ← √γ_h·W_k^h      (so q_h·k_h ← γ_h·q_h·k_h)

Heads with S_h ≤ τ are untouched. Under grouped-query attention a key head serves several query heads; we then scale
each query head by γ_h and leave the shared key alone, so every head is clipped exactly and no head below τ changes.
For MLA (the report's case) only the per-head parts are scaled: q_C and k_C by √γ_h, the rotary q_R by γ_h, and
the rotary key k_R, shared by all heads, not at all.

:func:`qk_clip` does this inside optax, at the end of a chain (after the learning rate), from the max logits passed
as an extra argument; :func:`max_logit_attention` records them in Flax (NNX and linen) and :func:`max_logits`
gathers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from normopt._numerics import check_range, check_static, compute_dtype, path_names, path_str
from normopt.layouts._core import normalize

MAX_LOGITS = "max_logits"  # the name the attention function sows its record under


class QKHeads(NamedTuple):
    """The parameter leaves (paths joined by ``/``) of one attention whose heads QK-Clip scales.

    Attributes:
      query: query leaves (kernels and biases; MLA: q_C), scaled by √γ_h, or by γ_h when ``key`` has fewer heads.
      key: key leaves with one head per query head (MLA: k_C), scaled by √γ_h; key leaves with fewer heads (GQA,
        MQA) are shared and left alone.
      query_rotary: MLA's rotary query leaves q_R, scaled by γ_h (the shared rotary key k_R is not listed).
    """

    query: Sequence[str]
    key: Sequence[str] = ()
    query_rotary: Sequence[str] = ()


def _flax_heads(params: Any) -> dict[str, QKHeads]:
    """Every Flax ``MultiHeadAttention`` / ``MultiHeadDotProductAttention`` in ``params``: a node with ``query``
    and ``key`` children holding a 3-D ``kernel`` [in, heads, head_dim] (and maybe a ``bias`` [heads, head_dim])."""
    leaves = {path_names(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    found: dict[str, QKHeads] = {}
    for names, leaf in leaves.items():
        if len(names) >= 2 and names[-2:] == ("query", "kernel") and jnp.ndim(leaf) == 3:
            node = names[:-2]
            if jnp.ndim(leaves.get((*node, "key", "kernel"), 0)) != 3:
                continue
            paths = {
                part: tuple("/".join((*node, part, p)) for p in ("kernel", "bias") if (*node, part, p) in leaves)
                for part in ("query", "key")
            }
            found["/".join(normalize(node))] = QKHeads(paths["query"], paths["key"])  # named as max_logits does
    return found


def _plan(params: Any, heads: Mapping[str, Any] | None, head_axis: int) -> tuple[dict[str, tuple], dict[str, int]]:
    """(leaf path → (attention name, exponent of γ)) and (attention name → query heads), validated against
    ``params``: ValueError naming the path for a missing leaf, a missing head axis or a head count that does not
    match."""
    if heads is None:
        heads = _flax_heads(params)
        if not heads:
            raise ValueError(
                "qk_clip: found no Flax MultiHeadAttention (query/kernel and key/kernel of shape [in, heads, dim]) "
                "in the params; pass heads={attention name: QKHeads(query=..., key=...)}"
            )
    shapes = {path_str(p): jnp.shape(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    plan: dict[str, tuple] = {}
    counts: dict[str, int] = {}
    for name, spec in heads.items():
        spec = QKHeads(*spec) if not isinstance(spec, QKHeads) else spec
        groups = {}
        for role, paths in zip(QKHeads._fields, spec, strict=True):
            if isinstance(paths, str):
                paths = (paths,)
            for path in paths:
                if path not in shapes:
                    raise ValueError(f"qk_clip: heads[{name!r}].{role} names {path!r}, which is not in the params")
                if path in plan:
                    raise ValueError(f"qk_clip: {path!r} is listed twice in heads (again under {name!r}.{role})")
                shape = shapes[path]
                if not -len(shape) <= head_axis < len(shape):
                    raise ValueError(f"qk_clip: {path} has shape {shape}, without a head axis {head_axis}")
                groups.setdefault(role, []).append((path, shape[head_axis]))
        if not groups.get("query"):
            raise ValueError(f"qk_clip: heads[{name!r}] lists no query leaf")
        n = groups["query"][0][1]
        for role, entries in groups.items():
            for path, h in entries:
                ok = h == n if role != "key" else h > 0 and n % h == 0
                if not ok:
                    want = f"{n} heads" if role != "key" else f"a divisor of {n} heads"
                    raise ValueError(f"qk_clip: {path} has {h} heads on axis {head_axis}, expected {want} ({name!r})")
        shared = any(h != n for _, h in groups.get("key", ()))
        for role, entries in groups.items():
            for path, h in entries:
                if role == "key" and h != n:
                    continue  # a key head shared by several query heads stays; its queries take all of γ
                power = 1.0 if role == "query_rotary" or (role == "query" and shared) else 0.5
                plan[path] = (name, power)
        counts[name] = n
    return plan, counts


def qk_clip(
    threshold: float = 100.0, *, heads: Mapping[str, Any] | None = None, head_axis: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """QK-Clip: shrink the query/key weights of every head whose max logit S_h exceeds τ, after the step.

        γ_h = τ / S_h if S_h > τ else 1;   update ← (W + u)·s − W = u·s + W·(s − 1)

    on the query/key leaves (s = γ_h^½ on W_q, W_k; s = γ_h on W_q when the key head is shared (GQA) and on MLA's
    rotary q_R; shared keys untouched), so that ``params + update`` holds the clipped weights and the logits of the
    next forward pass on the same batch are at most τ. Every other leaf, and every head with S_h ≤ τ, keeps its
    update bit for bit. Place it last in the chain, after the learning rate, and pass the max logits of the step's
    batch, a mapping from attention name to an array [heads] (:func:`max_logits` gathers them)::

        updates, state = tx.update(grads, state, params, max_logits=max_logits)

    ``optax.chain``, ``inject_hyperparams``, ``apply_if_finite`` and ``MultiSteps`` forward the extra argument
    (under ``MultiSteps`` pass the max over the accumulated micro-batches). A NaN or +inf max logit gives NaN
    updates on its heads' leaves, never a silent skip or a zeroed head (``apply_if_finite`` inspects the gradients,
    which a NaN forward pass has made NaN too); −inf (every position masked) is below τ.

    Args:
      threshold: τ > 0, the largest logit allowed (may be traced). The report uses τ = 100.
      heads: mapping from attention name (the key in ``max_logits``) to :class:`QKHeads` or a pair
        ``(query paths, key paths)``; paths are the params' key paths joined by ``/``, e.g.
        ``{"layer_0/attn": ("layer_0/attn/query/kernel", "layer_0/attn/key/kernel")}``. None: every Flax
        ``nnx.MultiHeadAttention`` / ``linen.MultiHeadDotProductAttention`` in the params, named by its path, its
        query/key kernels [in, heads, head_dim] and biases [heads, head_dim].
      head_axis: static int, the head axis of every listed leaf (None: −2, Flax's kernels and biases).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``optax.EmptyState``; its ``update`` needs ``params`` and
      ``max_logits``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax
      >>> from normopt.family.qk_clip import qk_clip
      >>> params = {"attn": {"query": {"kernel": jnp.ones((4, 2, 3))}, "key": {"kernel": jnp.ones((4, 2, 3))}}}
      >>> tx = optax.chain(optax.sgd(0.1), qk_clip(100.0))
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> u, _ = tx.update(grads, tx.init(params), params, max_logits={"attn": jnp.array([400.0, 50.0])})
      >>> new = optax.apply_updates(params, u)["attn"]["query"]["kernel"]
      >>> [float(new[0, h, 0]) for h in range(2)]  # head 0: √(100/400) = 0.5; head 1 below τ
      [0.5, 1.0]

    References:
      Kimi Team, `Kimi K2: Open Agentic Intelligence <https://arxiv.org/abs/2507.20534>`_, 2025 (§2.1, Algorithm 1).
    """
    owner = "qk_clip"
    check_range("threshold", threshold, 0.0, lo_open=True, owner=owner)
    check_static("head_axis", head_axis, owner=owner)
    if head_axis is not None and (isinstance(head_axis, bool) or not isinstance(head_axis, int)):
        raise TypeError(f"{owner}: head_axis must be a static int, got {head_axis!r}")
    if heads is not None and not isinstance(heads, Mapping):
        raise TypeError(f"{owner}: heads must be a mapping from attention name to QKHeads, got {type(heads)}")
    axis = -2 if head_axis is None else head_axis

    def init_fn(params):
        _plan(params, heads, axis)
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, max_logits=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params (the clip rescales the weights W + u)")
        if max_logits is None:
            raise ValueError(f"{owner}: pass the batch's max logits: tx.update(grads, state, params, max_logits=...)")
        plan, counts = _plan(params, heads, axis)
        given = {"/".join(path_names(p)): s for p, s in jax.tree_util.tree_flatten_with_path(max_logits)[0]}
        if set(given) != set(counts):
            raise ValueError(
                f"{owner}: max_logits has entries {sorted(given)}, the attentions are {sorted(counts)}; "
                "give one array [heads] per attention"
            )
        gamma = {}
        for name, s in given.items():
            if jnp.shape(s) != (counts[name],):
                raise ValueError(f"{owner}: max_logits[{name!r}] has shape {jnp.shape(s)}, expected ({counts[name]},)")
            s = jnp.asarray(s, jnp.float32)
            tau = jnp.asarray(threshold, jnp.float32)
            # S ≤ τ (−inf included): 1; S > τ: τ/S; NaN and +inf: NaN (a broken forward pass stays visible)
            gamma[name] = jnp.where(s <= tau, 1.0, jnp.where(s < jnp.inf, tau / s, jnp.nan))

        def leaf(path, u, w):
            key = path_str(path)
            if key not in plan:
                return u
            name, power = plan[key]
            dtype = compute_dtype(u)
            s = (jnp.sqrt(gamma[name]) if power == 0.5 else gamma[name]).astype(dtype)
            s = jnp.moveaxis(s.reshape(s.shape + (1,) * (u.ndim - 1)), 0, axis)
            return (u.astype(dtype) * s + w.astype(dtype) * (s - 1)).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(leaf, updates, params), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def muon_clip(
    learning_rate: optax.ScalarOrSchedule,
    *,
    threshold: float = 100.0,
    heads: Mapping[str, Any] | None = None,
    head_axis: int | None = None,
    **muon_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """MuonClip: :func:`normopt.muon` followed by :func:`qk_clip` (Kimi K2, Algorithm 1).

    Equals ``optax.chain(normopt.muon(learning_rate, **muon_kwargs), qk_clip(threshold, heads=heads,
    head_axis=head_axis))``; its ``update`` needs ``params`` and ``max_logits``.

    Args:
      learning_rate: float or optax schedule η.
      threshold: τ > 0 of :func:`qk_clip` (the report's 100).
      heads: the attentions to clip (:func:`qk_clip`; None: every Flax multi-head attention).
      head_axis: static head axis of the listed leaves (None: −2).
      **muon_kwargs: every other keyword of :func:`normopt.muon` (``beta``, ``weight_decay``, ``layout``, ...).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from normopt.family.qk_clip import muon_clip
      >>> params = {"attn": {"query": {"kernel": jnp.ones((4, 2, 3))}, "key": {"kernel": jnp.ones((4, 2, 3))}}}
      >>> tx = muon_clip(0.02, threshold=100.0)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> u, _ = tx.update(grads, tx.init(params), params, max_logits={"attn": jnp.array([400.0, 50.0])})

    References:
      Kimi Team, `Kimi K2: Open Agentic Intelligence <https://arxiv.org/abs/2507.20534>`_, 2025 (§2.1).
    """
    from normopt.alias import muon  # here: alias imports the family lazily too

    return optax.chain(muon(learning_rate, **muon_kwargs), qk_clip(threshold, heads=heads, head_axis=head_axis))


def max_logit_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    is_causal: bool = False,
    force_fp32_for_softmax: bool = False,
) -> jax.Array:
    """Dot-product attention that also records each head's largest logit: a drop-in ``attention_fn``.

        S_h = max over (batch, query, key kept by the mask) of q_h·k_h / √d       (before ``bias``)

    Computes ``softmax(q·kᵀ/√d + bias, masked)·v`` as ``flax.nnx.dot_product_attention`` /
    ``flax.linen.dot_product_attention`` do (grouped-query heads included), and, when the attention module passes
    itself as ``module`` (call it with ``sow_weights=True``), sows S_h as float32 [heads] under the name
    ``"max_logits"`` (``nnx.Intermediate`` / linen ``"intermediates"``), keeping the max over repeated calls,
    instead of the attention weights. :func:`max_logits` gathers the records for :func:`qk_clip`.

    Args:
      query: [batch..., q_length, heads, depth].
      key: [batch..., kv_length, kv_heads, depth], kv_heads dividing heads.
      value: [batch..., kv_length, kv_heads, v_depth].
      bias: added to the logits, broadcastable to [batch..., heads, q_length, kv_length].
      mask: boolean, broadcastable like ``bias``; False positions are excluded (and not recorded).
      broadcast_dropout: one dropout mask for the batch and head axes.
      dropout_rng: key of the attention dropout.
      dropout_rate: dropout probability of the attention weights.
      deterministic: no dropout.
      dtype: dtype of the computation (default: promoted from the inputs).
      precision: ``jax.lax.Precision`` of the two products.
      module: the Flax module (NNX or linen) to sow the record into; None records nothing.
      is_causal: add a causal mask.
      force_fp32_for_softmax: softmax in float32 (linen's option).

    Returns:
      [batch..., q_length, heads, v_depth].

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from normopt.family.qk_clip import max_logit_attention, max_logits
      >>> attn = nnx.MultiHeadAttention(2, 4, attention_fn=max_logit_attention, decode=False, rngs=nnx.Rngs(0))
      >>> forward = nnx.capture(lambda m, x: m(x, sow_weights=True), nnx.Intermediate)
      >>> y, inter = forward(attn, jnp.ones((1, 5, 4)))
      >>> max_logits(inter)[""].shape
      (2,)
    """
    dtype = dtype or jnp.result_type(query, key, value)
    query, key, value = (x.astype(dtype) for x in (query, key, value))
    *batch, q_len, n, depth = query.shape
    groups = n // key.shape[-2]
    q = (query / jnp.sqrt(depth).astype(dtype)).reshape(*batch, q_len, key.shape[-2], groups, depth)
    logits = jnp.einsum("...qhgd,...khd->...hgqk", q, key, precision=precision)
    logits = logits.reshape(*batch, n, q_len, key.shape[-3])
    keep = None if mask is None else jnp.broadcast_to(mask.astype(bool), logits.shape)
    if is_causal:
        causal = jnp.tril(jnp.ones(logits.shape[-2:], bool))  # as flax: query i sees keys j <= i
        keep = causal if keep is None else keep & causal
    if module is not None:
        kept = logits if keep is None else jnp.where(keep, logits, -jnp.inf)
        axes = tuple(a for a in range(logits.ndim) if a != logits.ndim - 3)
        record = jax.lax.stop_gradient(jnp.max(kept, axis=axes).astype(jnp.float32))
        init = lambda: jnp.full((n,), -jnp.inf, jnp.float32)
        if _is_linen(module):
            module.sow("intermediates", MAX_LOGITS, record, init_fn=init, reduce_fn=jnp.maximum)
        else:
            from flax import nnx

            module.sow(nnx.Intermediate, MAX_LOGITS, record, init_fn=init, reduce_fn=jnp.maximum)
    if bias is not None:
        logits = logits + bias
    if keep is not None:
        logits = jnp.where(keep, logits, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32) if force_fp32_for_softmax else logits).astype(dtype)
    if not deterministic and dropout_rate > 0.0:
        shape = (1,) * (weights.ndim - 2) + weights.shape[-2:] if broadcast_dropout else weights.shape
        keep_drop = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, shape)
        weights = weights * (keep_drop.astype(dtype) / jnp.asarray(1.0 - dropout_rate, dtype))
    weights = weights.reshape(*batch, key.shape[-2], groups, q_len, key.shape[-3])
    out = jnp.einsum("...hgqk,...khd->...qhgd", weights, value, precision=precision)
    return out.reshape(*batch, q_len, n, value.shape[-1])


def _is_linen(module: Any) -> bool:
    from flax import linen

    return isinstance(module, linen.Module)


def max_logits(intermediates: Any) -> dict[str, jax.Array]:
    """The records of :func:`max_logit_attention` as the mapping :func:`qk_clip` takes: attention path → [heads].

    Args:
      intermediates: what the forward pass collected: an ``nnx.State`` (``nnx.capture(..., nnx.Intermediate)`` or
        ``nnx.pop(model, nnx.Intermediate)``) or linen's mutable variables (``{"intermediates": ...}`` or the
        collection itself).

    Returns:
      ``{"layer_0/attn": array[heads], ...}``, keyed by each attention module's path (the root module: ``""``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt.family.qk_clip import max_logits
      >>> max_logits({"intermediates": {"attn": {"max_logits": jnp.array([3.0, 1.0])}}})
      {'attn': Array([3., 1.], dtype=float32)}
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
        names = path_names(path)
        if MAX_LOGITS not in names:
            continue
        node = names[: names.index(MAX_LOGITS)]
        node = node[1:] if node[:1] == ("intermediates",) else node
        out["/".join(node)] = leaf
    return out
