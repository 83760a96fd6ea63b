"""Private numerics shared by every module: one copy each of the rules the whole package follows.

* :func:`compute_dtype`: arithmetic runs in ≥ fp32 (bf16/fp16 → fp32, fp64 stays fp64);
* :func:`safe_div`: x / d with d = 0 ↦ 0, NaN/inf kept visible;
* :func:`check_float` / :func:`check_float_leaves`: the one TypeError for a leaf that is not floating point;
* :func:`path_names` / :func:`path_str`: a jax key path as plain strings;
* :func:`on_auto_axes`: run a kernel with Explicit mesh axes switched to Auto;
* :func:`weight_decay`: decoupled weight decay that needs no params for a literal 0;
* :func:`check_range` / :func:`check_choice` / :func:`check_static`: constructor argument checks that let traced
  (``optax.inject_hyperparams``) values through.

Nothing here is public API; import it as ``from normopt import _numerics``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# ---------------------------------------------------------------------------------------------------------------
# dtypes and division


def compute_dtype(x: Any) -> jnp.dtype:
    """The dtype to compute in for ``x`` (an array or a dtype): float64 stays float64, anything else is float32."""
    dtype = x if isinstance(x, np.dtype) else jnp.result_type(x)
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def safe_div(x: jax.Array, d: jax.Array) -> jax.Array:
    """``x / d`` with 0 where ``d == 0``; NaN/inf in ``x`` or ``d`` stay NaN/inf (never a silent 0 step)."""
    zero = d == 0
    return jnp.where(zero, x * 0, x / jnp.where(zero, jnp.ones_like(d), d))


# ---------------------------------------------------------------------------------------------------------------
# paths and leaves


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """A jax key path (or a tuple of strings) as a tuple of plain strings, without the trailing ``.value`` of a
    Flax NNX Variable (so ``nnx.state(model)`` paths read like linen ones: ``("attn", "query", "kernel")``)."""
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return tuple(out)


def path_str(path: tuple[Any, ...]) -> str:
    """``path_names(path)`` joined by ``/`` (``<root>`` for the empty path)."""
    return "/".join(path_names(path)) or "<root>"


def check_float(path: tuple[Any, ...], leaf: Any) -> None:
    """Raises ``TypeError`` naming ``path`` (a key path or a tuple of strings) if ``leaf`` is not floating point."""
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{path_str(path)}: dtype {dtype} is not floating point and cannot be optimized; exclude it from the "
            "optimizer (optax.masked, optax.set_to_zero, or the norm None) or cast it to float"
        )


def check_float_leaves(tree: Any) -> None:
    """:func:`check_float` on every leaf of ``tree``, with its path."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        check_float(path, leaf)


# ---------------------------------------------------------------------------------------------------------------
# meshes


def on_auto_axes(f: Callable[[Any], Any], x: Any, out_sharding: Any = None) -> Any:
    """``f(x)`` with every Explicit mesh axis (of the context mesh or of ``x``'s leaves) switched to Auto inside.

    Matrix kernels contract and reshape sharded axes, which Explicit sharding rejects (``ShardingTypeError``), and
    sharding constraints may only name Auto axes; on Auto axes the compiler places the collectives. The result is
    sharded like ``x`` (unplaced leaves: replicated), or as ``out_sharding``: shardings, or a callable from the
    input shardings (a tree like ``x``) to them. Without Explicit axes: ``f(x)``."""
    context = jax.sharding.get_abstract_mesh()
    shardings = jax.tree.map(lambda a: jax.typeof(a).sharding, x)
    shardings = jax.tree.map(lambda s: NamedSharding(context, P()) if s.mesh.empty else s, shardings)
    explicit = set(context.explicit_axes).union(*(s.mesh.explicit_axes for s in jax.tree.leaves(shardings)))
    if not explicit:
        return f(x)
    out = shardings if out_sharding is None else out_sharding(shardings) if callable(out_sharding) else out_sharding
    return jax.sharding.auto_axes(f, axes=tuple(sorted(explicit)), out_sharding=out)(x)


# ---------------------------------------------------------------------------------------------------------------
# optax plumbing


def weight_decay(value: Any, mask: Any = None) -> Any:
    """``optax.add_decayed_weights(value, mask)`` (decoupled weight decay, Loshchilov & Hutter 2019), except that a
    literal 0 is ``optax.identity()``, so that ``update(g, state)`` works without params (optax.contrib.muon
    requires them). Traced values always decay."""
    import optax  # here, not at the top: norms/polar import this module and know nothing of optax

    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return optax.identity()
    return optax.add_decayed_weights(value, mask)


# ---------------------------------------------------------------------------------------------------------------
# argument checks at construction


def is_traced(value: Any) -> bool:
    """True for jax arrays and tracers (what ``optax.inject_hyperparams`` passes), which are not checked here."""
    return isinstance(value, (jax.Array, jax.core.Tracer))


def check_range(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    owner: str = "",
) -> None:
    """Raises ``ValueError`` unless the number ``value`` lies in the interval from ``lo`` to ``hi`` (closed unless
    ``lo_open``/``hi_open``; None: unbounded), ``TypeError`` if it is not a real number. Arrays and tracers
    (``optax.inject_hyperparams``) pass unchecked. ``owner`` prefixes the message (e.g. ``"fadam"``)."""
    if is_traced(value) or isinstance(value, np.ndarray):
        return
    prefix = f"{owner}: " if owner else ""
    interval = (
        ("(" if lo_open else "[")
        + ("-inf" if lo is None else f"{lo:g}")
        + ", "
        + ("inf" if hi is None else f"{hi:g}")
        + (")" if hi_open or hi is None else "]")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{prefix}{name} must be a real number in {interval}, got {value!r}")
    bad = value != value  # NaN
    bad |= lo is not None and (value <= lo if lo_open else value < lo)
    bad |= hi is not None and (value >= hi if hi_open else value > hi)
    if bad:
        raise ValueError(f"{prefix}{name} must lie in {interval}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any], *, owner: str = "") -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}unknown {name} {value!r}; choose one of {sorted(choices)}")


def check_static(name: str, value: Any, *, owner: str = "") -> None:
    """Raises ``TypeError`` if ``value`` is traced: ``name`` must be static (it sets shapes or Python control flow),
    and ``optax.inject_hyperparams`` has to be told so."""
    if is_traced(value):
        prefix = f"{owner}: " if owner else ""
        raise TypeError(
            f"{prefix}{name} must be a static Python value, got a traced/array value {value!r}; under "
            f"optax.inject_hyperparams list it in inject_hyperparams(..., static_args=({name!r},))"
        )


def path_mask(mask: Any) -> Any:
    """An optax weight-decay ``mask`` that also works on the sub-trees ``optax.partition`` hands each optimizer
    (non-selected leaves become empty ``MaskedNode``s): a pytree of bools becomes a callable that looks each leaf's
    value up by its path; a callable or None is returned as is."""
    if mask is None or callable(mask):
        return mask
    by_path = {path_names(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}

    def lookup(params: Any) -> Any:
        def one(path, _):
            names = path_names(path)
            if names not in by_path:
                raise ValueError(f"mask has no entry for {path_str(path)}; give a mask with the params' structure")
            return by_path[names]

        return jax.tree_util.tree_map_with_path(one, params)

    return lookup


def check_dtype(name: str, value: Any, *, owner: str = "") -> jnp.dtype | None:
    """``value`` (None or a floating dtype name/object) as a dtype; ``ValueError`` naming ``name`` otherwise."""
    if value is None:
        return None
    prefix = f"{owner}: " if owner else ""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"{prefix}{name}={value!r} is not a dtype; use e.g. 'float32' or 'bfloat16'") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{prefix}{name}={value!r} must be a floating dtype (float32, bfloat16, float16, float64)")
    return dtype


def per_matrix(decomposition: Callable[[jax.Array], Any], x: jax.Array) -> Any:
    """``decomposition`` (``jnp.linalg.eigh``, ``qr``, ...) of (..., m, n), one matrix per LAPACK call.

    On CPU, jaxlib's batched LAPACK kernels split a batch whose FLOP estimate passes ~2e5 into chunks on XLA's
    intra-op thread pool and block that pool's worker until they finish; when every worker is inside such a wait (two
    independent batched calls on a 2-thread pool) no thread is left to run the chunks and the step hangs forever,
    nondeterministically (jax 0.10). A single matrix always runs inline, so ``lax.map`` over the flattened batch
    cannot deadlock; distinct leaves' calls still run concurrently.
    """
    if x.ndim == 2:
        return decomposition(x)
    batch = x.shape[:-2]
    out = jax.lax.map(decomposition, x.reshape((-1, *x.shape[-2:])))
    return jax.tree.map(lambda y: y.reshape(batch + y.shape[1:]), out)
