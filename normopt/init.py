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

from normopt.dims import MatrixDims, matrix_layout

Initializer = Callable[..., jax.Array]


def _arrange(values: jax.Array, shape: tuple[int, ...], dims: MatrixDims | None) -> jax.Array:
    """Lays out ``values`` of shape ``[*batch, fan_in, fan_out]`` as an array of ``shape``."""
    lay = matrix_layout(shape, dims)
    order = lay.batch_axes + lay.fan_in_axes + lay.fan_out_axes
    moved = values.reshape(tuple(shape[a] for a in order))
    return jnp.transpose(moved, np.argsort(order))


def _matrix_shape(shape: tuple[int, ...], dims: MatrixDims | None) -> tuple[tuple[int, ...], int, int]:
    lay = matrix_layout(shape, dims)
    return tuple(shape[a] for a in lay.batch_axes), lay.fan_in, lay.fan_out


def xavier(dims: MatrixDims | None = None, gain: float = 1.0) -> Initializer:
    """W_ij ~ N(0, gain²/fan_in): keeps the RMS of activations, E‖x @ W‖²_rms = gain²·‖x‖²_rms.

    Args:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]``, each batch slice its own matrix.
      gain: factor on the standard deviation 1/√fan_in.

    Returns:
      An initializer ``init(key, shape, dtype=jnp.float32)`` (the ``jax.nn.initializers`` signature); it raises
      ``ValueError`` for a shape ``dims`` cannot read as a matrix.

    Examples:
      >>> import jax
      >>> from normopt import init
      >>> w = init.xavier()(jax.random.key(0), (256, 64))  # fan_in 256: standard deviation 1/16
      >>> w.shape, round(float(w.std()) * 16, 1)
      ((256, 64), 1.0)

    References:
      Glorot & Bengio, `Understanding the difficulty of training deep feedforward neural networks
      <https://proceedings.mlr.press/v9/glorot10a.html>`_, 2010.

      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.
    """

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        batch, fan_in, fan_out = _matrix_shape(shape, dims)
        w = jax.random.normal(key, batch + (fan_in, fan_out), jnp.float32) * (gain / np.sqrt(fan_in))
        return _arrange(w, shape, dims).astype(dtype)

    return init


def spectral(dims: MatrixDims | None = None, scale: float = 1.0) -> Initializer:
    """W = scale·√(fan_out/fan_in)·Q with Q semi-orthogonal (all singular values 1): ‖W‖_{RMS→RMS} = scale.

    Args:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]``, each batch slice its own (independent) matrix.
      scale: the RMS→RMS norm of every matrix.

    Returns:
      An initializer ``init(key, shape, dtype=jnp.float32)`` (the ``jax.nn.initializers`` signature); it raises
      ``ValueError`` for a shape ``dims`` cannot read as a matrix.

    Examples:
      >>> import jax
      >>> from normopt import init, norms
      >>> w = init.spectral()(jax.random.key(0), (4, 64, 256))  # 4 stacked [64, 256] matrices
      >>> round(float(norms.rms_to_rms(method="svd").norm(w)), 4)
      1.0

    References:
      Yang, Simon & Bernstein, `A spectral condition for feature learning <https://arxiv.org/abs/2310.17813>`_, 2023.

      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.
    """

    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(shape)
        batch, fan_in, fan_out = _matrix_shape(shape, dims)
        n = max(fan_in, fan_out)
        q = jax.random.orthogonal(key, n, batch, jnp.float32)[..., :fan_in, :fan_out]
        return _arrange(q * (scale * np.sqrt(fan_out / fan_in)), shape, dims).astype(dtype)

    return init
