"""Initializers that match the norms, with the ``jax.nn.initializers`` signature ``(key, shape, dtype)``.

* :func:`xavier`: entries N(0, 1/fan_in), so E‖x @ W‖²_rms = ‖x‖²_rms for any x (Glorot & Bengio 2010).
* :func:`spectral`: a semi-orthogonal matrix times √(fan_out/fan_in), so ‖W‖_{RMS→RMS} = 1 exactly (Yang, Simon &
  Bernstein 2023, "A spectral condition for feature learning"): ‖x @ W‖_rms ≤ ‖x‖_rms with equality on the row
  space of W; for fan_out ≥ fan_in that is every x.

Leaves are read through :class:`~normopt.dims.MatrixDims` (default ``[..., fan_in, fan_out]``, leading axes are
batch axes; ``MatrixDims.conv(ndim)`` for conv kernels), and each batch slice gets its own matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normopt.dims import MatrixDims, layout

Initializer = Callable[..., jax.Array]


def _arrange(values: jax.Array, shape: tuple[int, ...], dims: MatrixDims | None) -> jax.Array:
    """Lays out ``values`` of shape ``[*batch, fan_in, fan_out]`` as an array of ``shape``."""
    lay = layout(shape, dims)
    order = lay.batch_axes + lay.fan_in_axes + lay.fan_out_axes
    moved = values.reshape(tuple(shape[a] for a in order))
    return jnp.transpose(moved, np.argsort(order))


def _matrix_shape(shape: tuple[int, ...], dims: MatrixDims | None) -> tuple[tuple[int, ...], int, int]:
    lay = layout(shape, dims)
    return tuple(shape[a] for a in lay.batch_axes), lay.fan_in, lay.fan_out


def xavier(dims: MatrixDims | None = None, gain: float = 1.0) -> Initializer:
    """W_ij ~ N(0, gain²/fan_in): keeps the RMS of activations, E‖x @ W‖_rms ≈ gain·‖x‖_rms."""

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        batch, fan_in, fan_out = _matrix_shape(shape, dims)
        w = jax.random.normal(key, batch + (fan_in, fan_out), jnp.float32) * (gain / np.sqrt(fan_in))
        return _arrange(w, shape, dims).astype(dtype)

    return init


def spectral(dims: MatrixDims | None = None, scale: float = 1.0) -> Initializer:
    """W = scale·√(fan_out/fan_in)·Q with Q semi-orthogonal (all singular values 1): ‖W‖_{RMS→RMS} = scale."""

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        batch, fan_in, fan_out = _matrix_shape(shape, dims)
        n = max(fan_in, fan_out)
        q = jax.random.orthogonal(key, n, batch, jnp.float32)[..., :fan_in, :fan_out]
        return _arrange(q * (scale * np.sqrt(fan_out / fan_in)), shape, dims).astype(dtype)

    return init
