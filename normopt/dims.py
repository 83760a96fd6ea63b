"""Reading an array as a stack of matrices: fan-in axes, fan-out axes and batch axes.

A parameter ``A`` is an operator from ``fan_in`` inputs to ``fan_out`` outputs (Flax layout ``[fan_in, fan_out]``,
``y = x @ A``). :class:`MatrixDims` names which axes are fan-in and which are fan-out; every other axis is a batch
axis (scanned layers, stacked experts, heads), and each batch slice is its own matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MatrixDims(NamedTuple):
    """Axes that form the matrix: ``fan_in`` axes become rows, ``fan_out`` axes become columns.

    Negative axes count from the end. The default, ``fan_in=(-2,), fan_out=(-1,)``, reads a 2-D kernel as
    ``[fan_in, fan_out]`` and treats the leading axes of a ≥3-D leaf as batch axes.

    Attributes:
      fan_in: the axis or axes whose product of sizes is the fan-in (the rows).
      fan_out: the axis or axes whose product of sizes is the fan-out (the columns).
    """

    fan_in: Sequence[int] | int = (-2,)
    fan_out: Sequence[int] | int = (-1,)

    @classmethod
    def conv(cls, ndim: int) -> MatrixDims:
        """A Flax conv kernel ``[*window, in, out]`` read as the matrix ``[prod(window)·in, out]``."""
        return cls(fan_in=tuple(range(ndim - 1)), fan_out=(ndim - 1,))


class MatrixLayout(NamedTuple):
    """The resolved reading of one shape: non-negative axes and sizes (from :func:`matrix_layout`).

    Attributes:
      batch_axes: the axes that are neither fan-in nor fan-out, in order; each slice along them is one matrix.
      fan_in_axes: the fan-in axes, non-negative.
      fan_out_axes: the fan-out axes, non-negative.
      fan_in: the product of the sizes of the fan-in axes.
      fan_out: the product of the sizes of the fan-out axes.
    """

    batch_axes: tuple[int, ...]
    fan_in_axes: tuple[int, ...]
    fan_out_axes: tuple[int, ...]
    fan_in: int
    fan_out: int


def _as_axes(axes: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    if not axes:
        raise ValueError("MatrixDims needs at least one fan-in and one fan-out axis")
    bad = [a for a in axes if not -ndim <= a < ndim]
    if bad:
        raise ValueError(f"axes {bad} are out of range for an array with {ndim} dimensions")
    return tuple(a % ndim for a in axes)


def matrix_layout(shape: Sequence[int], dims: MatrixDims | None = None) -> MatrixLayout:
    """Resolves ``dims`` against ``shape``.

    Args:
      shape: the shape of a leaf.
      dims: which axes are fan-in and fan-out; ``None`` for ``MatrixDims()`` (``[*batch, fan_in, fan_out]``).

    Returns:
      The :class:`MatrixLayout` of ``shape``.

    Raises:
      ValueError: for fewer than 2 dimensions, axes out of range, an empty or repeated axis list, or an axis that is
        both fan-in and fan-out.

    Examples:
      >>> from normopt.dims import MatrixDims, matrix_layout
      >>> matrix_layout((3, 3, 16, 32), MatrixDims.conv(4))  # a conv kernel [*window, in, out]
      MatrixLayout(batch_axes=(), fan_in_axes=(0, 1, 2), fan_out_axes=(3,), fan_in=144, fan_out=32)
    """
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"a matrix norm needs an array with at least 2 dimensions, got shape {tuple(shape)}; "
            "use a vector norm (l2, rms, linf, l1) for it"
        )
    dims = MatrixDims() if dims is None else dims
    fan_in_axes = _as_axes(dims.fan_in, ndim)
    fan_out_axes = _as_axes(dims.fan_out, ndim)
    if set(fan_in_axes) & set(fan_out_axes) or len(set(fan_in_axes)) < len(fan_in_axes):
        raise ValueError(f"fan-in axes {fan_in_axes} and fan-out axes {fan_out_axes} must be distinct")
    batch_axes = tuple(a for a in range(ndim) if a not in fan_in_axes + fan_out_axes)
    return MatrixLayout(
        batch_axes,
        fan_in_axes,
        fan_out_axes,
        math.prod(shape[a] for a in fan_in_axes),
        math.prod(shape[a] for a in fan_out_axes),
    )


def to_matrices(x: jax.Array, dims: MatrixDims | None = None) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``x`` as a stack of matrices ``[*batch, fan_in, fan_out]``, and the function that maps such an array back.

    Args:
      x: the array to read.
      dims: which axes are fan-in and fan-out; ``None`` for ``MatrixDims()`` (``[*batch, fan_in, fan_out]``).

    Returns:
      ``(matrices, back)``: ``x`` transposed and reshaped to ``[*batch, fan_in, fan_out]``, and ``back`` mapping an
      array of that shape to the shape and axis order of ``x``.

    Raises:
      ValueError: when ``dims`` cannot read ``x`` as a matrix (:func:`matrix_layout`).
    """
    lay = matrix_layout(x.shape, dims)
    order = lay.batch_axes + lay.fan_in_axes + lay.fan_out_axes
    batch_shape = tuple(x.shape[a] for a in lay.batch_axes)
    moved_shape = tuple(x.shape[a] for a in order)
    inverse = tuple(sorted(range(x.ndim), key=order.__getitem__))
    matrices = jnp.transpose(x, order).reshape(batch_shape + (lay.fan_in, lay.fan_out))

    def back(y: jax.Array) -> jax.Array:
        return jnp.transpose(y.reshape(moved_shape), inverse)

    return matrices, back
