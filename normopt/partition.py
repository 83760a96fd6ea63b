"""Choosing a norm for every leaf from its path and shape (Flax naming), and ``describe``.

Paths are tuples of strings such as ``("params", "Dense_0", "kernel")``; patterns are regular expressions searched
in the path joined by ``/`` (e.g. ``"params/Dense_0/kernel"``), case-insensitively. The first matching pattern wins.

Default reading of leaves with ≥ 3 dimensions (printed by :func:`describe`, overridable with ``layout``):

* a path containing ``conv``: a Flax conv kernel ``[*window, in, out]`` read as ``[prod(window)·in, out]``;
* attention projections named ``query``/``key``/``value`` (Flax ``[features, heads, head_dim]``): fan-in is the
  axis before the last two, fan-out is ``heads·head_dim``; ``out`` projections ``[heads, head_dim, features]``:
  fan-in ``heads·head_dim``;
* anything else: the last two axes are ``[fan_in, fan_out]`` and leading axes are batch axes (scanned layers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from normopt import norms as norms_lib
from normopt.dims import MatrixDims

Rule = Callable[[tuple[str, ...], Any], Any]
"""``(path, leaf) -> Norm | str | None``: a norm, a label such as ``"adamw"`` for a fallback optimizer, or None."""

EMBEDDING = r"(^|/)(embedding|embed|embeddings|wte|wpe|tok_embeddings|token_embedding)(/|$)"
HEAD = r"(^|/)(head|lm_head|output|output_layer|readout|classifier|logits|unembed|unembedding)(/|$)"


def _search(pattern: str, path: tuple[str, ...]) -> bool:
    return re.search(pattern, "/".join(path), flags=re.IGNORECASE) is not None


def first_match(patterns: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """The value of the first pattern in ``patterns`` that matches ``path``, else None."""
    for pattern, value in (patterns or {}).items():
        if _search(pattern, path):
            return value
    return None


def default_dims(
    path: tuple[str, ...], shape: tuple[int, ...], layout: Mapping[str, MatrixDims] | None = None
) -> MatrixDims | None:
    """The :class:`MatrixDims` normopt reads a leaf with (None for leaves with fewer than 2 dimensions)."""
    chosen = first_match(layout, path)
    if chosen is not None or len(shape) < 2:
        return chosen
    ndim = len(shape)
    names = [p.lower() for p in path]
    if ndim >= 3 and any("conv" in p for p in names):
        return MatrixDims.conv(ndim)
    if ndim >= 3 and len(names) >= 2 and names[-1] == "kernel":
        if names[-2] in ("query", "key", "value"):
            return MatrixDims(fan_in=(-3,), fan_out=(-2, -1))
        if names[-2] == "out":
            return MatrixDims(fan_in=(-3, -2), fan_out=(-1,))
    return MatrixDims()


def role(path: tuple[str, ...], leaf: Any) -> str:
    """``"vector"`` (< 2 dims, or named ``bias``: Flax attention biases are ``[heads, head_dim]``), ``"embedding"``,
    ``"head"`` or ``"hidden"`` from Flax parameter names."""
    if jnp.ndim(leaf) < 2 or (path and path[-1].lower() == "bias"):
        return "vector"
    if _search(EMBEDDING, path):
        return "embedding"
    if _search(HEAD, path):
        return "head"
    return "hidden"


def check_float(path: tuple[str, ...], leaf: Any) -> None:
    """Raises ``TypeError`` naming ``path`` if ``leaf`` is not a floating-point array."""
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{'/'.join(path)}: dtype {dtype} is not floating point and cannot be optimized; "
            "exclude it from the optimizer (e.g. with optax.masked or optax.set_to_zero) or cast it to float"
        )


def check_float_leaves(tree: Any) -> None:
    """:func:`check_float` on every leaf of ``tree``, with its path."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        check_float(norms_lib.path_names(path), leaf)


def labels(rule: Rule, tree: Any) -> Any:
    """The pytree of string labels for ``optax.partition``: the label a rule returns, or ``"normed"`` for a Norm."""

    def label(path, leaf):
        chosen = rule(norms_lib.path_names(path), leaf)
        return chosen if isinstance(chosen, str) else "normed"

    return jax.tree_util.tree_map_with_path(label, tree)


def norms_of(rule: Rule) -> Rule:
    """The rule restricted to norms (labels become None), for :func:`normopt.dualize` inside a partition."""
    return lambda path, leaf: (lambda chosen: chosen if isinstance(chosen, norms_lib.Norm) else None)(rule(path, leaf))


def describe(
    params: Any, optimizer_or_rules: Any, *, print_fn: Callable[[str], None] | None = print
) -> list[dict[str, Any]]:
    """Prints (and returns) per leaf: path, shape, norm, fan-in/fan-out, batch axes and scale.

    ``optimizer_or_rules`` is a normopt optimizer (it carries its rule), a :data:`normopt.norms.NormSpec`, or a
    :class:`normopt.norms.WeightedMax`. Raises like the optimizer would for leaves without a valid rule.
    """
    rule = getattr(optimizer_or_rules, "rule", None)
    if rule is None:
        spec = optimizer_or_rules
        if isinstance(spec, norms_lib.WeightedMax):
            spec = spec.norms
        resolved = norms_lib.resolve(spec, params)
        chosen = jax.tree.leaves(resolved, is_leaf=lambda x: x is None)
    else:
        chosen = [rule(norms_lib.path_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]
    rows = []
    for (p, x), c in zip(jax.tree_util.tree_flatten_with_path(params)[0], chosen, strict=True):
        shape = tuple(jnp.shape(x))
        row = {"path": norms_lib.path_str(p), "shape": str(shape)}
        if isinstance(c, norms_lib.Norm):
            try:
                row.update(c.describe(shape))
            except ValueError as e:
                raise ValueError(f"{row['path']} (shape {shape}): {e}") from None
        else:
            row.update(
                {"norm": "identity" if c is None else c, "fan_in": "", "fan_out": "", "batch_axes": "", "scale": ""}
            )
        rows.append(row)
    if print_fn is not None:
        print_fn(_table(rows))
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["path", "shape", "norm", "fan_in", "fan_out", "batch_axes", "scale"]
    width = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)
