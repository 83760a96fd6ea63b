"""Choosing a norm for every leaf from its layout and role.

Each leaf is first *read* (:func:`read`): fan-in, fan-out and stack axes and a role (embedding, hidden, head,
vector) from the model's structure when the optimizer gets a ``layout`` from :mod:`normopt.layouts`, else from
its names (the last resort, :mod:`normopt.layouts._names`). An optimizer's rule then maps the reading to a
:class:`~normopt.norms.Norm`, or to a label such as ``"adamw"`` for the leaves a fallback optimizer takes.
Patterns (``fallback``, ``rules``, ``layout`` overrides) are regular expressions searched in the path joined by
``/`` (e.g. ``"params/Dense_0/kernel"``), case-insensitively; the first matching pattern wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from normopt import _numerics, layouts
from normopt import norms as norms_lib
from normopt.layouts import EMBEDDING, HEAD, LAST_RESORT, Layout

__all__ = ["EMBEDDING", "HEAD", "Rule", "first_match", "labels", "norms_of", "read", "role"]

Rule = Callable[[tuple[str, ...], Any], Any]
"""``(path, leaf) -> Norm | str | None``: a norm, a label such as ``"adamw"`` for a fallback optimizer, or None."""


def first_match(patterns: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """The value of the first pattern in ``patterns`` that matches ``path``, else None.

    Args:
      patterns: ``{regex: value}``, searched case-insensitively in order in the ``/``-joined path; None for none.
      path: the leaf's path, a tuple of strings such as ``("params", "Dense_0", "kernel")``.

    Returns:
      The value of the first matching pattern, or None.
    """
    joined = "/".join(path)
    for pattern, value in (patterns or {}).items():
        if re.search(pattern, joined, flags=re.IGNORECASE):
            return value
    return None


def check_patterns(patterns: Any, argument: str) -> tuple[str, ...]:
    """``patterns`` as a tuple of checked regexes; a bare string or non-string entry is a ``TypeError`` naming
    ``argument`` (a string would otherwise be read character by character).

    Args:
      patterns: a sequence of path regexes.
      argument: the argument's name, for error messages.

    Returns:
      The patterns as a tuple.

    Raises:
      TypeError: for a bare string or a non-string entry.
      ValueError: for an invalid regular expression.
    """
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence):
        raise TypeError(
            f"{argument} must be a sequence of path regexes, e.g. {argument}=({patterns!r},), got {patterns!r}"
        )
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"{argument} must contain path regexes (str), got {p!r}")
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"{argument}: {p!r} is not a valid regular expression: {e}") from None
    return tuple(patterns)


def read(path: tuple[str, ...], leaf: Any, layout: layouts.LayoutSpec = None, strict: bool = False) -> Layout:
    """The reading of one leaf (:func:`normopt.layouts.read`).

    Args:
      path: the leaf's path, a tuple of strings.
      leaf: the leaf (an array or anything with a shape).
      layout: a :data:`normopt.layouts.LayoutSpec` (the result of ``normopt.layouts.nnx(model)`` and the like, or
        ``{pattern: Layout | MatrixDims | role}``); None reads from the names alone.
      strict: refuse to read a leaf with ≥ 2 dimensions from its names alone.

    Returns:
      The leaf's :class:`~normopt.layouts.Layout` (fan-in, fan-out and stack axes, role, source).

    Raises:
      ValueError: naming the leaf, with ``strict`` when a leaf with ≥ 2 dimensions is read only from its names, or
        when ``layout`` does not fit the leaf.
    """
    shape = tuple(jnp.shape(leaf))
    lay = layouts.read(path, shape, layout)
    if strict and len(shape) >= 2 and lay.source == LAST_RESORT:
        raise ValueError(
            f"{'/'.join(path)} (shape {shape}): strict=True, and this leaf would be read only from its name "
            f"(as {lay.role}, fan-in axes {lay.fan_in}, fan-out axes {lay.fan_out}, stack axes {lay.batch}). Pass "
            "layout=normopt.layouts.nnx(model) / linen(module, x) / equinox(model) / torch(params) / "
            "logical(params), or layout={pattern: Layout | MatrixDims | role} covering it."
        )
    return lay


def role(path: tuple[str, ...], leaf: Any, layout: layouts.LayoutSpec = None) -> str:
    """The role of a leaf: ``"embedding"``, ``"hidden"``, ``"head"`` or ``"vector"``.

    Args:
      path: the leaf's path, a tuple of strings.
      leaf: the leaf (an array or anything with a shape).
      layout: a :data:`normopt.layouts.LayoutSpec`, as in :func:`read`; None reads from the names alone.

    Returns:
      The role of :func:`read`'s reading.
    """
    return read(path, leaf, layout).role


def labels(rule: Rule, tree: Any) -> Any:
    """The pytree of string labels for ``optax.partition``: the label a rule returns, or ``"normed"`` for a Norm.

    Args:
      rule: a :data:`Rule`, ``(path, leaf) -> Norm | str | None``.
      tree: the parameters.

    Returns:
      A pytree of the structure of ``tree`` with a string at every leaf.
    """

    def label(path, leaf):
        chosen = rule(_numerics.path_names(path), leaf)
        return chosen if isinstance(chosen, str) else "normed"

    return jax.tree_util.tree_map_with_path(label, tree)


def norms_of(rule: Rule) -> Rule:
    """The rule restricted to norms (labels become None), for :func:`normopt.dualize` inside a partition.

    Args:
      rule: a :data:`Rule`, ``(path, leaf) -> Norm | str | None``.

    Returns:
      A :data:`Rule` returning the Norm ``rule`` returns, or None for a label or None.
    """
    return lambda path, leaf: (lambda chosen: chosen if isinstance(chosen, norms_lib.Norm) else None)(rule(path, leaf))


def matrix_reader(
    layout: layouts.LayoutSpec, strict: bool, fallback: Any, fallback_roles: Any, owner: str
) -> Callable[[tuple[str, ...], Any], Layout | None]:
    """For Muon-style optimizers: checks ``fallback`` (path regexes) and ``fallback_roles`` when built, and
    returns ``(path, leaf) -> Layout | None``: the leaf's reading when the matrix optimizer takes it, None when it
    goes to the AdamW fallback (vectors, the ``fallback_roles``, paths matching ``fallback``). Non-float leaves
    raise ``TypeError`` naming the path.

    Args:
      layout: how leaves are read (:data:`normopt.layouts.LayoutSpec`, checked by the caller).
      strict: raise for a ≥ 2-D leaf read only from its name.
      fallback: a sequence of path regexes sent to AdamW.
      fallback_roles: roles sent to AdamW, from ``("embedding", "hidden", "head")``.
      owner: the optimizer's name, for error messages.

    Returns:
      The reader function.
    """
    patterns = dict.fromkeys(check_patterns(fallback, "fallback"), True)
    roles = check_patterns(fallback_roles, "fallback_roles")
    for r in roles:
        _numerics.check_choice("fallback_roles entry", r, layouts.ROLES[:3], owner=owner)

    def reader(path: tuple[str, ...], leaf: Any) -> Layout | None:
        _numerics.check_float(path, leaf)
        lay = read(path, leaf, layout, strict)
        if lay.role == "vector" or lay.role in roles or first_match(patterns, path):
            return None
        return lay

    return reader
