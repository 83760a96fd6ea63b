"""Reading parameters from their logical axis names (``nn.with_logical_partitioning``, ``nnx.with_partitioning``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from normopt.layouts._core import Layout, Layouts, key_names, matrix, vector

LOGICAL_RULES: dict[str, str] = {
    **dict.fromkeys(("layers", "layer", "stage", "expert", "experts", "exp"), "batch"),
    **dict.fromkeys(("heads", "kv_heads", "q_heads", "head_dim", "kv", "qkv"), "heads"),
    **dict.fromkeys(("window", "conv_window", "kernel_size", "spatial", "height", "width"), "window"),
}
"""The default kind of each logical axis name; any name not listed (``embed``, ``mlp``, ``vocab``, ``hidden``, ...)
is an ``"axis"``.

* ``"batch"``: ``layers``, ``layer``, ``stage``, ``expert``, ``experts``, ``exp`` (stacked layers, MoE experts);
* ``"heads"``: ``heads``, ``kv_heads``, ``q_heads``, ``head_dim``, ``kv``, ``qkv`` (adjacent ones form one side);
* ``"window"``: ``window``, ``conv_window``, ``kernel_size``, ``spatial``, ``height``, ``width`` (a conv window;
  joins the side after it).
"""

KINDS = ("batch", "heads", "window", "axis", "fan_in", "fan_out")


def logical(params: Any, rules: Mapping[str, str] | None = None) -> Layouts:
    """Reads every parameter from the logical names of its axes.

    Accepted trees: Flax linen params still boxed in ``nn.LogicallyPartitioned``/``nn.Partitioned`` (from
    ``nn.with_logical_partitioning`` or ``nn.with_partitioning``: ``variables["params"]`` as ``init`` returns them,
    before ``nn.unbox``), or ``variables`` itself; an NNX module (its ``nnx.Param`` state is read) or an
    ``nnx.State`` whose Variables carry names (``nnx.with_partitioning(init, names)``: the ``out_sharding``,
    ``sharding_names`` or ``sharding`` metadata).

    Each name has a kind, from :data:`LOGICAL_RULES` updated by ``rules``. The default mapping:

    * ``"batch"``: ``layers``, ``layer``, ``stage``, ``expert``, ``experts``, ``exp``;
    * ``"heads"``: ``heads``, ``kv_heads``, ``q_heads``, ``head_dim``, ``kv``, ``qkv``;
    * ``"window"``: ``window``, ``conv_window``, ``kernel_size``, ``spatial``, ``height``, ``width``;
    * ``"axis"``: every other name (``embed``, ``mlp``, ``vocab``, ``hidden``, ...).

    How the kinds read a leaf:

    * ``"batch"`` axes are stack axes (each slice its own matrix or vector) and are set aside;
    * the other axes form contiguous groups: each run of adjacent ``"heads"`` axes is one group, each ``"axis"``
      its own group, and ``"window"`` axes join the group after them (the last group if none follows). An axis
      named ``None`` (or by several mesh axes) is an ``"axis"``;
    * two groups: the first is the fan-in, the second the fan-out (Flax's ``[in, out]``), so
      ``("embed", "heads", "kv")`` is fan-in ``embed``, fan-out ``heads·kv``, and ``("layers", "embed", "mlp")`` is
      a stack of ``embed → mlp`` matrices. One group: a vector. Any other count raises ``ValueError``;
    * ``"fan_in"``/``"fan_out"`` (only through ``rules``) pin an axis to that side; then the one remaining group,
      if any, fills the side left empty.

    Roles: a matrix whose first non-batch axis is ``vocab`` is an ``"embedding"``, one whose last axis is ``vocab``
    the ``"head"``; other matrices are ``"hidden"``.

    Args:
      params: the boxed parameters, an NNX module or an ``nnx.State``.
      rules: ``{name: kind}`` overriding or extending :data:`LOGICAL_RULES`; kinds are ``"batch"``, ``"heads"``,
        ``"window"``, ``"axis"``, ``"fan_in"``, ``"fan_out"``.

    Returns:
      The :class:`~normopt.layouts.Layouts` of every leaf, with source ``"logical"``.

    Raises:
      ValueError: naming the leaf, when a leaf with ≥ 2 dimensions has no names, when it has a name count other
        than its number of dimensions, or when its names do not form one or two groups; or naming the rule when a
        kind in ``rules`` is unknown. Leaves with < 2 dimensions and no names are vectors.
    """
    kinds = _kinds(rules or {})
    entries, shapes = {}, {}
    for path, shape, names in _named_leaves(params):
        entries[path], shapes[path] = _read("/".join(path), shape, names, kinds), shape
    return Layouts(entries, "logical", shapes)


def _kinds(rules: Mapping[str, str]) -> dict[str, str]:
    for name, kind in rules.items():
        if kind not in KINDS:
            raise ValueError(f"rules[{name!r}] = {kind!r} is not a kind of logical axis; use one of {KINDS}")
    return {**LOGICAL_RULES, **rules}


def _named_leaves(params: Any) -> Iterator[tuple[tuple[str, ...], tuple[int, ...], Sequence[Any] | None]]:
    """``(path, shape, names or None)`` for every leaf, unboxing linen boxes and NNX Variables."""
    import jax
    from flax import nnx
    from flax.core import meta

    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    boxed = lambda x: isinstance(x, meta.Partitioned | nnx.Variable)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=boxed)[0]:
        if isinstance(leaf, meta.Partitioned):
            yield key_names(path), tuple(leaf.value.shape), leaf.names
        elif isinstance(leaf, nnx.Variable):
            yield key_names(path), tuple(leaf.get_value().shape), _variable_names(leaf)
        else:
            yield key_names(path), tuple(leaf.shape), None


def _variable_names(variable: Any) -> Sequence[Any] | None:
    metadata = variable.get_metadata()
    return next((metadata[k] for k in ("out_sharding", "sharding_names", "sharding") if metadata.get(k)), None)


def _read(where: str, shape: tuple[int, ...], names: Sequence[Any] | None, kinds: Mapping[str, str]) -> Layout:
    """The reading of the leaf at ``where`` whose axes are called ``names`` (see :func:`logical`)."""
    ndim = len(shape)
    if names is None:
        if ndim < 2:
            return vector(ndim, source="logical")
        raise ValueError(
            f"{where} (shape {shape}) has no logical axis names; create it with nn.with_logical_partitioning / "
            "nnx.with_partitioning(init, names), or read this model with another layouts.* call"
        )
    names = tuple(names)
    if len(names) != ndim:
        raise ValueError(f"{where}: {len(names)} axis names {names} for a {ndim}-D leaf of shape {shape}")
    kind = [kinds.get(n, "axis") if isinstance(n, str) else "axis" for n in names]
    batch = [a for a in range(ndim) if kind[a] == "batch"]
    groups = _groups([(a, kind[a]) for a in range(ndim) if kind[a] != "batch"])
    if len(groups) <= 1 and not {"fan_in", "fan_out"} & set(kind):
        return vector(ndim, batch=batch, source="logical")
    fan_in, fan_out = _sides(where, names, groups, kind)
    inner = [names[a] for a in range(ndim) if a not in batch]
    role = "embedding" if inner[0] == "vocab" else "head" if inner[-1] == "vocab" else "hidden"
    return matrix(fan_in, fan_out, role=role, batch=batch, source="logical")


def _groups(axes: Sequence[tuple[int, str]]) -> list[list[int]]:
    """Contiguous groups of axes: runs of the same ``heads``/``fan_in``/``fan_out`` kind join, ``window`` axes join
    the next group (or the last one)."""
    groups: list[list[int]] = []
    pending: list[int] = []
    previous = None
    for axis, kind in axes:
        if kind == "window":
            pending.append(axis)
            continue
        if groups and not pending and kind == previous and kind != "axis":
            groups[-1].append(axis)
        else:
            groups.append([*pending, axis])
        pending, previous = [], kind
    if pending:
        groups[-1:] = [[*(groups[-1] if groups else []), *pending]]
    return groups


def _sides(where: str, names: tuple[Any, ...], groups: list[list[int]], kind: list[str]) -> tuple[list[int], ...]:
    """The fan-in and fan-out axes from two or more ``groups``, honouring groups pinned to a side."""
    sides: dict[str, list[int]] = {"fan_in": [], "fan_out": []}
    free = []
    for group in groups:
        side = next((kind[a] for a in group if kind[a] in sides), None)
        if side:
            sides[side].extend(group)
        else:
            free.append(group)
    empty = [side for side, axes in sides.items() if not axes]
    if len(empty) == 2 and len(free) == 2:
        return free[0], free[1]
    if len(free) == len(empty) == 1:
        sides[empty[0]] = free[0]
    elif free or empty:
        raise ValueError(
            f"{where}: the axis names {names} do not split into one fan-in and one fan-out side; pass "
            f"rules={{name: kind}} with kinds in {KINDS} (e.g. 'batch' for a stack axis, 'fan_in'/'fan_out' to pin "
            "an axis to a side)"
        )
    return sorted(sides["fan_in"]), sorted(sides["fan_out"])
