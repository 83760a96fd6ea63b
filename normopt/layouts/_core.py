"""The reading of one leaf (:class:`Layout`), a model's readings (:class:`Layouts`), and how a leaf is looked up.

A layout says how a parameter acts in the model: which axes are the operator's fan-in and fan-out (the leaf is
the map ``x ↦ x @ A`` from ``fan_in`` inputs to ``fan_out`` outputs once those axes are flattened), which axes are
batch axes (stacked layers from ``scan``/``vmap``, MoE experts: each slice is its own matrix or vector), and the
role of the parameter: ``"embedding"`` (reads one-hot inputs), ``"hidden"``, ``"head"`` (produces the model's
output) or ``"vector"`` (biases, norm scales, anything that is not an operator).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from normopt._numerics import path_names as key_names
from normopt.dims import MatrixDims, matrix_layout

ROLES = ("embedding", "hidden", "head", "vector")
LAST_RESORT = "names"
"""The ``source`` of a reading guessed from parameter names alone (see :mod:`normopt.layouts._names`)."""


class Layout(NamedTuple):
    """How one parameter leaf is read.

    Attributes:
      role: ``"embedding"``, ``"hidden"``, ``"head"`` or ``"vector"``.
      fan_in: the input axes of the operator (non-negative; empty for a vector).
      fan_out: the output axes of the operator (non-negative; empty for a vector).
      batch: stack axes (scanned/vmapped layers, experts); each slice is its own matrix or vector.
      source: where the reading comes from, e.g. ``"nnx:Linear"``, ``"linen:Conv"``, ``"equinox:Linear"``,
        ``"torch"``, ``"logical"``, ``"user"``, or ``"names"`` for the last-resort name heuristics.
    """

    role: str
    fan_in: tuple[int, ...] = ()
    fan_out: tuple[int, ...] = ()
    batch: tuple[int, ...] = ()
    source: str = "user"

    @property
    def dims(self) -> MatrixDims | None:
        """The :class:`~normopt.dims.MatrixDims` of a matrix reading; None for a vector."""
        if not self.fan_in or not self.fan_out:
            return None
        return MatrixDims(fan_in=self.fan_in, fan_out=self.fan_out)

    def check(self, where: str, shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` naming ``where`` when this reading does not fit ``shape``."""
        ndim = len(shape)
        axes = self.fan_in + self.fan_out + self.batch
        if self.role not in ROLES:
            raise ValueError(f"{where}: unknown role {self.role!r}; roles are {ROLES}")
        if any(not 0 <= a < ndim for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(
                f"{where} (shape {shape}): layout {self} names axes out of range or twice for a {ndim}-D leaf"
            )
        if self.role == "vector":
            if self.fan_in or self.fan_out:
                raise ValueError(f"{where}: a vector has no fan-in/fan-out axes, got {self}")
        elif not self.fan_in or not self.fan_out:
            raise ValueError(f"{where} (shape {shape}): role {self.role!r} needs fan-in and fan-out axes, got {self}")

    def describe(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """The columns :func:`normopt.describe` prints for this reading."""
        size = lambda axes: int(np.prod([shape[a] for a in axes])) if axes else ""
        return {
            "role": self.role,
            "fan_in": size(self.fan_in),
            "fan_out": size(self.fan_out),
            "batch_axes": str(self.batch) if self.batch else "",
            "source": self.source,
        }


def vector(ndim: int, *, batch: Sequence[int] = (), source: str = "user") -> Layout:
    """A vector reading (bias, gain, norm scale) of a leaf with ``ndim`` axes, of which ``batch`` are stack axes.

    Args:
      ndim: the leaf's number of dimensions.
      batch: the stack axes (each slice its own vector).
      source: where the reading comes from (the ``source`` column of :func:`normopt.describe`).

    Returns:
      A :class:`Layout` with role ``"vector"``.
    """
    del ndim
    return Layout("vector", (), (), tuple(batch), source)


def matrix(
    fan_in: Sequence[int], fan_out: Sequence[int], *, role: str = "hidden", batch: Sequence[int] = (), source: str
) -> Layout:
    """A matrix reading (or a stack of matrices) with the given axes.

    Args:
      fan_in: the input axes (flattened into the matrix's rows).
      fan_out: the output axes (flattened into its columns).
      role: ``"embedding"``, ``"hidden"`` or ``"head"``.
      batch: the stack axes (each slice its own matrix).
      source: where the reading comes from (the ``source`` column of :func:`normopt.describe`).

    Returns:
      A :class:`Layout`.

    Examples:
      >>> from normopt.layouts import matrix
      >>> matrix((1, 2, 3), (0,), source="user").fan_in  # an [out, in, kh, kw] conv weight
      (1, 2, 3)
    """
    return Layout(role, tuple(fan_in), tuple(fan_out), tuple(batch), source)


def shifted(layout: Layout, extra: int) -> Layout:
    """``layout`` for the same parameter stacked ``extra`` times in front (``nnx.vmap``/``nn.scan`` axes)."""
    move = lambda axes: tuple(a + extra for a in axes)
    return Layout(
        layout.role, move(layout.fan_in), move(layout.fan_out), tuple(range(extra)) + move(layout.batch), layout.source
    )


def normalize(path: Sequence[str]) -> tuple[str, ...]:
    """A path without the leading ``params`` collection of linen variables, so that ``variables`` and
    ``variables["params"]`` find the same leaves (the ``.value`` of NNX Variables is already dropped by
    :func:`key_names`)."""
    path = tuple(str(p) for p in path)
    return path[1:] if path and path[0] == "params" else path


class Layouts(Mapping):
    """The reading of every parameter of one model, keyed by its path (a tuple of strings, see :func:`normalize`).

    Built by :func:`normopt.layouts.nnx`, :func:`~normopt.layouts.linen`, :func:`~normopt.layouts.equinox`,
    :func:`~normopt.layouts.torch` or :func:`~normopt.layouts.logical`, and accepted as ``layout=`` by
    :func:`normopt.muon`, :func:`normopt.scion`, :func:`normopt.dion`, :func:`normopt.dualize` and
    :func:`normopt.describe`. Looking up a leaf the model does not have raises ``ValueError`` naming it.
    ``layouts.override({pattern: Layout | MatrixDims | role})`` returns a copy with some readings replaced.

    Args:
      entries: the reading of each leaf, keyed by its path.
      framework: the name of the builder (``"nnx"``, ``"linen"``, ...), used in error messages.
      shapes: the shape of each leaf, keyed by its path; each reading is checked against it.

    Raises:
      ValueError: naming the leaf, when a reading does not fit its shape.
    """

    def __init__(
        self,
        entries: Mapping[tuple[str, ...], Layout],
        framework: str,
        shapes: Mapping[tuple[str, ...], tuple[int, ...]],
    ):
        self._entries = {normalize(k): v for k, v in entries.items()}
        self._shapes = {normalize(k): tuple(v) for k, v in shapes.items()}
        self.framework = framework
        for key, layout in self._entries.items():
            layout.check("/".join(key), self._shapes[key])

    def shape(self, path: tuple[str, ...]) -> tuple[int, ...]:
        """The shape the model gives the leaf at ``path``."""
        return self._shapes[normalize(path)]

    def __getitem__(self, path: tuple[str, ...]) -> Layout:
        return self._entries[normalize(path)]

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        rows = "\n".join(f"  {'/'.join(k)}: {v}" for k, v in self._entries.items())
        return f"Layouts({self.framework}, {len(self)} leaves)\n{rows}"

    def lookup(self, path: tuple[str, ...], shape: tuple[int, ...]) -> Layout:
        """The reading of the leaf at ``path``; ``ValueError`` if the model has no such leaf or its shape differs."""
        where = "/".join(path) or "<root>"
        key = normalize(path)
        if key not in self._entries:
            known = ", ".join("/".join(k) for k in list(self._entries)[:6])
            raise ValueError(
                f"{where}: the layout from layouts.{self.framework}(...) has no parameter at this path (it has "
                f"{known}{', ...' if len(self) > 6 else ''}). Build the layout from the same model whose "
                "parameters the optimizer sees."
            )
        if tuple(shape) != self._shapes[key]:
            raise ValueError(
                f"{where}: shape {tuple(shape)} differs from the model's {self._shapes[key]} in the layout from "
                f"layouts.{self.framework}(...); build the layout from the same model whose parameters the optimizer "
                "sees"
            )
        return self._entries[key]

    def override(self, rules: Mapping[str, Any]) -> Layouts:
        """A copy in which every path matching a regex in ``rules`` (searched in the ``/``-joined path) gets the
        given :class:`Layout`, :class:`~normopt.dims.MatrixDims` (role kept) or role name (axes kept)."""
        out = dict(self._entries)
        for path, layout in out.items():
            for pattern, new in rules.items():
                if re.search(pattern, "/".join(path), flags=re.IGNORECASE):
                    out[path] = as_layout(new, layout, self._shapes[path])
                    break
        return Layouts(out, self.framework, self._shapes)


def as_layout(new: Any, old: Layout, shape: tuple[int, ...]) -> Layout:
    """``new`` (a Layout, MatrixDims or role name) applied over the reading ``old`` of a leaf of ``shape``."""
    if isinstance(new, Layout):
        return new
    if isinstance(new, MatrixDims):
        lay = matrix_layout(shape, new)
        return Layout(
            "hidden" if old.role == "vector" else old.role, lay.fan_in_axes, lay.fan_out_axes, lay.batch_axes, "user"
        )
    if isinstance(new, str) and new in ROLES:
        if new == "vector":
            return Layout("vector", (), (), old.batch, "user")
        if not old.fan_in:
            raise ValueError(f"role {new!r} needs matrix axes, but this leaf is read as a vector; give a Layout")
        return old._replace(role=new, source="user")
    raise TypeError(f"a layout rule must be a Layout, a MatrixDims or a role in {ROLES}, got {new!r}")


def leaves_with_paths(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    """``(path as strings, leaf)`` for every leaf of ``tree``."""
    return [(key_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
