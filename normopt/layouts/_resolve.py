"""Resolving the ``layout=`` argument of the optimizers to one :class:`Layout` per leaf."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from normopt.dims import MatrixDims
from normopt.layouts import _names
from normopt.layouts._core import ROLES, Layout, Layouts, as_layout, leaves_with_paths

LayoutSpec = Layouts | Mapping[str, Layout | MatrixDims | str] | None
"""What ``layout=`` accepts: a :class:`Layouts` from one of the framework calls; or ``{pattern: Layout | MatrixDims |
role}`` overriding the name-based reading of the leaves whose ``/``-joined path matches the regex ``pattern``
(first match wins); or None (names only)."""


def check_spec(layout: Any, argument: str = "layout") -> None:
    """Raises ``TypeError`` naming ``argument`` unless ``layout`` is a :data:`LayoutSpec`.

    Args:
      layout: the value to check.
      argument: the argument's name, for the error message.

    Raises:
      TypeError: when ``layout`` is not a :data:`LayoutSpec` (or a key is not a string).
      re.error: when a key is not a valid regex.
    """
    if layout is None or isinstance(layout, Layouts):
        return
    if isinstance(layout, Mapping):
        for pattern, value in layout.items():
            if not isinstance(pattern, str):
                raise TypeError(f"{argument}: keys are path regexes (str), got {pattern!r}")
            if not (isinstance(value, (Layout, MatrixDims)) or value in ROLES):
                raise TypeError(
                    f"{argument}[{pattern!r}] must be a normopt.layouts.Layout, a normopt.MatrixDims or a role in "
                    f"{ROLES}, got {value!r}"
                )
            re.compile(pattern)
        return
    raise TypeError(
        f"{argument} must be a normopt.layouts.Layouts (from layouts.nnx/linen/equinox/torch/logical), a mapping "
        f"{{path regex: Layout | MatrixDims | role}}, or None; got {type(layout).__name__}"
    )


def read(path: tuple[str, ...], shape: tuple[int, ...], layout: LayoutSpec = None) -> Layout:
    """The reading of the leaf at ``path`` with ``shape`` under ``layout``.

    Args:
      path: the leaf's path, a tuple of strings.
      shape: the leaf's shape.
      layout: a :data:`LayoutSpec`: a :class:`Layouts` (looked up), a ``{regex: Layout | MatrixDims | role}``
        overriding the name-based reading of the matching leaves (first match wins), or None (names only).

    Returns:
      The leaf's :class:`Layout`.

    Raises:
      ValueError: when a :class:`Layouts` has no such leaf or a different shape for it.
    """
    if isinstance(layout, Layouts):
        return layout.lookup(path, shape)
    base = _names.read(path, tuple(shape))
    joined = "/".join(path)
    for pattern, new in (layout or {}).items():
        if re.search(pattern, joined, flags=re.IGNORECASE):
            try:
                chosen = as_layout(new, base, tuple(shape))
            except ValueError as e:
                raise ValueError(f"{joined} (shape {tuple(shape)}): layout[{pattern!r}]: {e}") from None
            chosen.check(joined, tuple(shape))
            return chosen
    return base


def from_names(params: Any) -> Layouts:
    """The last-resort reading of every leaf of ``params`` from its names (rules in ``normopt/layouts/_names.py``).

    Args:
      params: the parameter tree.

    Returns:
      A :class:`Layouts` with framework ``"from_names"``, every source ``"names"``.
    """
    pairs = leaves_with_paths(params)
    return Layouts(
        {p: _names.read(p, tuple(x.shape)) for p, x in pairs}, "from_names", {p: tuple(x.shape) for p, x in pairs}
    )
