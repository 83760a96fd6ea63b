"""Norms with their dual norms and dualizations (Bernstein & Newhouse 2024, "Old optimizer, new norm").

For a norm ‖·‖ with dual ‖g‖* = max_{‖t‖≤1} ⟨g, t⟩, the dualization is the maximiser

    dualize(g) = argmax_{‖t‖≤1} ⟨g, t⟩,   so ⟨g, dualize(g)⟩ = ‖g‖*  and  ‖dualize(g)‖ = 1  (g ≠ 0),

and ``dualize(0) = 0``. Steepest descent under ‖·‖ steps along −dualize(g). ⟨·,·⟩ is the Frobenius inner product.

Vector norms (``l2, rms, linf, l1``) read the whole leaf as one vector. Matrix norms (``spectral, rms_to_rms,
l1_to_rms, rms_to_linf``) read a leaf as ``[*batch, fan_in, fan_out]`` through :class:`~normopt.dims.MatrixDims`;
each batch slice is its own matrix, and the leaf's norm is the max over slices (dual: the sum; dualize: per slice).

bf16/fp16 inputs are computed in fp32 (fp64 stays fp64); ``dualize`` returns the input dtype, ``norm`` and
``dual_norm`` return the computation dtype. Every division is guarded: inputs are first divided by their largest
magnitude so that 1e-30 or 1e30 entries neither underflow nor overflow when squared.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from normopt import polar
from normopt._numerics import check_float, compute_dtype, on_auto_axes, path_names, path_str, safe_div
from normopt.dims import MatrixDims, MatrixLayout, matrix_layout, to_matrices

SCALE_RULES: dict[str, Callable[[int, int], float]] = {
    "none": lambda fan_in, fan_out: 1.0,
    "spectral": lambda fan_in, fan_out: math.sqrt(fan_out / fan_in),
    "jordan": lambda fan_in, fan_out: math.sqrt(max(1.0, fan_out / fan_in)),
    "moonlight": lambda fan_in, fan_out: 0.2 * math.sqrt(max(fan_in, fan_out)),
    "fan_out": lambda fan_in, fan_out: math.sqrt(fan_out),
}
"""Update scale rules for spectral dualization, ``(fan_in, fan_out) -> factor`` (REFERENCES §2):
``spectral`` √(fan_out/fan_in) (RMS→RMS), ``jordan`` √max(1, fan_out/fan_in) (KellerJordan/Muon, optax default),
``moonlight`` 0.2·√max(fan_in, fan_out) (Liu et al. 2025; matches AdamW's update RMS), ``fan_out`` √fan_out
(Scion's ``Spectral(normalized=False)``, for input layers)."""


def _compute_dtype(x: jax.Array) -> jnp.dtype:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"norms act on floating-point arrays, got dtype {x.dtype}")
    return compute_dtype(x)


def _prescale(x: jax.Array, axis: Any = None) -> tuple[jax.Array, jax.Array]:
    """Returns ``(x / s, s)`` with ``s = max|x|`` over ``axis`` (1 where x is all zero), in the compute dtype."""
    x = x.astype(_compute_dtype(x))
    s = jnp.max(jnp.abs(x), axis=axis, keepdims=True, initial=0.0)
    s = jnp.where(s > 0, s, jnp.ones_like(s))
    return x / s, s


def _l2(x: jax.Array, axis: Any = None) -> jax.Array:
    """‖x‖₂ over ``axis`` without overflow or underflow."""
    y, s = _prescale(x, axis)
    return jnp.squeeze(s * jnp.sqrt(jnp.sum(y * y, axis=axis, keepdims=True)), axis=axis)


def _unit(x: jax.Array, axis: Any = None) -> jax.Array:
    """x / ‖x‖₂ over ``axis`` in the compute dtype, with 0 ↦ 0."""
    y, _ = _prescale(x, axis)
    n = jnp.sqrt(jnp.sum(y * y, axis=axis, keepdims=True))
    return safe_div(y, n)


class Norm:
    """A norm on one parameter leaf: ``norm(x)``, ``dual_norm(g)`` and ``dualize(g)``."""

    name: str = "norm"

    def norm(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def dual_norm(self, g: jax.Array) -> jax.Array:
        raise NotImplementedError

    def dualize(self, g: jax.Array) -> jax.Array:
        raise NotImplementedError

    def check(self, shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` if this norm cannot act on arrays of ``shape``."""

    def describe(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """What ``normopt.describe`` prints for a leaf of ``shape``."""
        return {"norm": self.name, "fan_in": "", "fan_out": "", "batch_axes": "", "scale": ""}


@dataclasses.dataclass(frozen=True)
class L2(Norm):
    """Euclidean (Frobenius) norm: ‖x‖₂; dual ‖g‖₂; dualize g/‖g‖₂ (normalized SGD)."""

    name = "l2"

    def norm(self, x):
        return _l2(x)

    def dual_norm(self, g):
        return _l2(g)

    def dualize(self, g):
        return _unit(g).astype(g.dtype)


@dataclasses.dataclass(frozen=True)
class RMS(Norm):
    """RMS norm: ‖x‖₂/√n; dual √n·‖g‖₂; dualize √n·g/‖g‖₂ (entries of size O(1) at any width)."""

    name = "rms"

    def norm(self, x):
        return _l2(x) / math.sqrt(max(x.size, 1))

    def dual_norm(self, g):
        return _l2(g) * math.sqrt(g.size)

    def dualize(self, g):
        return (_unit(g) * math.sqrt(g.size)).astype(g.dtype)


@dataclasses.dataclass(frozen=True)
class Linf(Norm):
    """Max norm: maxᵢ|xᵢ|; dual ‖g‖₁; dualize sign(g) (sign descent)."""

    name = "linf"

    def norm(self, x):
        return jnp.max(jnp.abs(x.astype(_compute_dtype(x))), initial=0.0)

    def dual_norm(self, g):
        y, s = _prescale(g)
        return jnp.squeeze(s) * jnp.sum(jnp.abs(y))

    def dualize(self, g):
        _compute_dtype(g)
        return jnp.where(jnp.isfinite(g), jnp.sign(g), jnp.nan)  # sign(±inf) = ±1 would hide a broken gradient


@dataclasses.dataclass(frozen=True)
class L1(Norm):
    """ℓ1 norm: Σᵢ|xᵢ|; dual ‖g‖∞; dualize sign(g_k)·e_k with k = argmax|g| (first on ties)."""

    name = "l1"

    def norm(self, x):
        return Linf().dual_norm(x)

    def dual_norm(self, g):
        return Linf().norm(g)

    def dualize(self, g):
        _compute_dtype(g)
        if g.size == 0:
            return g

        def lmo(g):
            flat = g.reshape(-1)
            k = jnp.argmax(jnp.abs(flat))
            top = jnp.where(jnp.isfinite(flat[k]), jnp.sign(flat[k]), jnp.nan)  # NaN/inf stays visible
            return jnp.zeros_like(flat).at[k].set(top).reshape(g.shape)

        return on_auto_axes(lmo, g)


@dataclasses.dataclass(frozen=True)
class MatrixNorm(Norm):
    """Base of the matrix norms: per-slice values on ``[*batch, fan_in, fan_out]``, max/sum over slices.

    Attributes:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` (or takes the axes a layout gives, :func:`with_layout`).
    """

    dims: MatrixDims | None = None

    def check(self, shape):
        matrix_layout(shape, self.dims)

    def layout(self, shape: tuple[int, ...]) -> MatrixLayout:
        return matrix_layout(shape, self.dims)

    def scale(self, fan_in: int, fan_out: int) -> float:
        """The factor by which this norm's unit ball is larger than the base norm's."""
        return 1.0

    def _slice_norm(self, m: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _slice_dual(self, m: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _slice_dualize(self, m: jax.Array) -> jax.Array:
        raise NotImplementedError

    def norm(self, x):
        if x.size == 0:  # an empty matrix (a zero fan-in or fan-out) has norm 0 and does not move
            return jnp.zeros([], _compute_dtype(x))
        m, _ = to_matrices(x, self.dims)
        return jnp.max(self._slice_norm(m), initial=0.0)

    def dual_norm(self, g):
        if g.size == 0:
            return jnp.zeros([], _compute_dtype(g))
        m, _ = to_matrices(g, self.dims)
        return jnp.sum(self._slice_dual(m))

    def dualize(self, g):
        if g.size == 0:
            return g

        def lmo(g):
            m, back = to_matrices(g, self.dims)
            return back(self._slice_dualize(m)).astype(g.dtype)

        return on_auto_axes(lmo, g)

    def describe(self, shape):
        lay = self.layout(shape)
        return {
            "norm": self.name,
            "fan_in": lay.fan_in,
            "fan_out": lay.fan_out,
            "batch_axes": str(lay.batch_axes) if lay.batch_axes else "",
            "scale": f"{self.scale(lay.fan_in, lay.fan_out) if lay.fan_in and lay.fan_out else 0.0:.4g}",
        }


@dataclasses.dataclass(frozen=True)
class Spectral(MatrixNorm):
    """Scaled spectral norm: ‖A‖ = σ_max(A)/c; dual c·Σσᵢ(G) (nuclear); dualize c·U Vᵀ (G = U Σ Vᵀ reduced).

    ``scale`` picks c from the shape (:data:`SCALE_RULES`): ``"none"`` gives the spectral norm (spectral descent,
    Carlson et al. 2015), ``"spectral"`` gives c = √(fan_out/fan_in), the RMS→RMS operator norm
    √(fan_in/fan_out)·σ_max (Yang, Simon & Bernstein 2023). U Vᵀ comes from :func:`normopt.orthogonalize` with
    ``method``/``steps``/``compute_dtype``; ``norm`` and ``dual_norm`` use an exact SVD (for checks, not steps).
    Build it with :func:`spectral` or :func:`rms_to_rms`.

    Attributes:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` (or takes the axes a layout gives, :func:`with_layout`).
      scale_rule: the name of the rule for c in :data:`SCALE_RULES`.
      method: orthogonalization method for ``dualize`` (a name in ``normopt.polar.METHODS`` or a (steps, 3) table).
      steps: iteration steps for ``dualize``; ``None`` for the method's default.
      compute_dtype: dtype the iteration runs in; ``None`` for float32 (float64 for float64 input).
    """

    scale_rule: str = "none"
    method: Any = "polar_express"
    steps: int | None = None
    compute_dtype: str | None = None

    def __post_init__(self):
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"unknown scale rule {self.scale_rule!r}; choose one of {sorted(SCALE_RULES)}")
        polar.check_kernel(self.method, self.steps, self.compute_dtype)  # fails when built, not inside jit

    @property
    def name(self):
        return {"none": "spectral", "spectral": "rms_to_rms"}.get(self.scale_rule, f"spectral[{self.scale_rule}]")

    def scale(self, fan_in, fan_out):
        return SCALE_RULES[self.scale_rule](fan_in, fan_out)

    def _c(self, m):
        return self.scale(m.shape[-2], m.shape[-1])

    def _slice_norm(self, m):
        y, s = _prescale(m, axis=(-2, -1))
        return jnp.linalg.matrix_norm(y, ord=2) * s[..., 0, 0] / self._c(m)

    def _slice_dual(self, m):
        y, s = _prescale(m, axis=(-2, -1))
        return jnp.linalg.matrix_norm(y, ord="nuc") * s[..., 0, 0] * self._c(m)

    def _slice_dualize(self, m):
        y, _ = _prescale(m, axis=(-2, -1))
        u = polar.orthogonalize(y, self.method, self.steps, compute_dtype=self.compute_dtype)
        return u * self._c(m)


@dataclasses.dataclass(frozen=True)
class L1ToRMS(MatrixNorm):
    """ℓ1→RMS operator norm (embeddings): maxᵢ rms(A[i,:]); dual Σᵢ √d_out·‖G[i,:]‖₂; dualize row i ↦
    √d_out·G[i,:]/‖G[i,:]‖₂ (Bernstein & Newhouse 2024, "Modular duality in deep learning").

    Attributes:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` (or takes the axes a layout gives, :func:`with_layout`).
    """

    name = "l1_to_rms"

    def scale(self, fan_in, fan_out):
        return math.sqrt(fan_out)

    def _slice_norm(self, m):
        return jnp.max(_l2(m, axis=-1), axis=-1, initial=0.0) / math.sqrt(m.shape[-1])

    def _slice_dual(self, m):
        return jnp.sum(_l2(m, axis=-1), axis=-1) * math.sqrt(m.shape[-1])

    def _slice_dualize(self, m):
        return _unit(m, axis=-1) * math.sqrt(m.shape[-1])


@dataclasses.dataclass(frozen=True)
class RMSToLinf(MatrixNorm):
    """RMS→ℓ∞ operator norm (output heads): maxⱼ √d_in·‖A[:,j]‖₂; dual Σⱼ ‖G[:,j]‖₂/√d_in; dualize column j ↦
    G[:,j]/(√d_in·‖G[:,j]‖₂) (Bernstein & Newhouse 2024; Scion's "RowNorm", Pethick et al. 2025).

    Attributes:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` (or takes the axes a layout gives, :func:`with_layout`).
    """

    name = "rms_to_linf"

    def scale(self, fan_in, fan_out):
        return 1.0 / math.sqrt(fan_in)

    def _slice_norm(self, m):
        return jnp.max(_l2(m, axis=-2), axis=-1, initial=0.0) * math.sqrt(m.shape[-2])

    def _slice_dual(self, m):
        return jnp.sum(_l2(m, axis=-2), axis=-1) / math.sqrt(m.shape[-2])

    def _slice_dualize(self, m):
        return _unit(m, axis=-2) / math.sqrt(m.shape[-2])


@dataclasses.dataclass(frozen=True)
class Sign(MatrixNorm):
    """Scion's ``Sign`` output-layer norm: ‖A‖ = d_in·maxᵢⱼ |Aᵢⱼ|; dual Σᵢⱼ |Gᵢⱼ| / d_in; dualize sign(G)/d_in
    (``normalized=False``: d_in is replaced by 1, plain ℓ∞ on the entries) (Pethick et al. 2025).

    Attributes:
      dims: which axes of a leaf are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` (or takes the axes a layout gives, :func:`with_layout`).
      normalized: divide by d_in = fan_in (Scion's default).
    """

    normalized: bool = True
    name = "sign"

    def scale(self, fan_in, fan_out):
        return 1.0 / fan_in if self.normalized else 1.0

    def _slice_norm(self, m):
        return jnp.max(jnp.abs(m.astype(_compute_dtype(m))), axis=(-2, -1), initial=0.0) / self.scale(*m.shape[-2:])

    def _slice_dual(self, m):
        y, s = _prescale(m, axis=(-2, -1))  # Σ|g| of 1e30 entries would overflow fp32
        return s[..., 0, 0] * jnp.sum(jnp.abs(y), axis=(-2, -1)) * self.scale(*m.shape[-2:])

    def _slice_dualize(self, m):
        unit = jnp.where(jnp.isfinite(m), jnp.sign(m), jnp.nan)  # sign(±inf) = ±1 would hide a broken gradient
        return unit * self.scale(*m.shape[-2:])


@dataclasses.dataclass(frozen=True)
class Scaled(Norm):
    """A norm whose unit ball has radius ρ: ‖x‖/ρ; dual ρ·‖g‖*; dualize ρ·dualize(g) (Scion's radius).

    Attributes:
      base: the norm ‖·‖ being scaled.
      radius: ρ > 0, a float or a traced hyperparameter.
    """

    base: Norm
    radius: Any = 1.0

    @property
    def name(self):
        return self.base.name

    def check(self, shape):
        self.base.check(shape)

    def norm(self, x):
        return self.base.norm(x) / self.radius

    def dual_norm(self, g):
        return self.base.dual_norm(g) * self.radius

    def dualize(self, g):
        return (self.base.dualize(g) * self.radius).astype(g.dtype)

    def describe(self, shape):
        row = dict(self.base.describe(shape))
        try:
            factor = float(self.radius) * (float(row["scale"]) if row["scale"] != "" else 1.0)
            row["scale"] = f"{factor:.4g}"
        except TypeError:  # a traced radius (inside optax.inject_hyperparams)
            row["scale"] = f"{row['scale'] or 1}·ρ"
        return row


@dataclasses.dataclass(frozen=True)
class Stacked(Norm):
    """A norm applied to each slice along ``batch`` axes (stacked layers, experts): ‖x‖ = maxₛ ‖xₛ‖;
    dual Σₛ ‖gₛ‖*; dualize slice by slice — the max norm of the product space, so an ``(L, d)`` stack of vectors
    is L vectors and each slice's update is independent of L.

    Attributes:
      base: the norm of one slice.
      batch: the (non-negative) stack axes; each slice along them is one ``base``-normed array.
    """

    base: Norm
    batch: tuple[int, ...]

    @property
    def name(self):
        return self.base.name

    def check(self, shape):
        if any(not 0 <= a < len(shape) for a in self.batch):
            raise ValueError(f"stack axes {self.batch} are out of range for shape {shape}")
        self.base.check(tuple(d for a, d in enumerate(shape) if a not in self.batch))

    def _slices(self, x: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
        rest = tuple(a for a in range(x.ndim) if a not in self.batch)
        order = self.batch + rest
        moved = jnp.transpose(x, order)
        inverse = tuple(sorted(range(x.ndim), key=order.__getitem__))
        flat = moved.reshape((-1,) + moved.shape[len(self.batch) :])
        return flat, lambda y: jnp.transpose(y.reshape(moved.shape), inverse)

    def norm(self, x):
        return jnp.max(jax.vmap(self.base.norm)(self._slices(x)[0]), initial=0.0)

    def dual_norm(self, g):
        return jnp.sum(jax.vmap(self.base.dual_norm)(self._slices(g)[0]))

    def dualize(self, g):
        flat, back = self._slices(g)
        return back(jax.vmap(self.base.dualize)(flat))

    def describe(self, shape):
        return {
            **self.base.describe(tuple(d for a, d in enumerate(shape) if a not in self.batch)),
            "batch_axes": str(self.batch),
        }


def with_layout(norm: Norm, layout: Any) -> Norm:
    """``norm`` reading its leaf as ``layout`` says.

    A matrix norm without explicit dims takes the layout's fan-in/fan-out axes; a vector norm on a stacked vector
    (an ``(L, d)`` norm scale) acts on each of the L slices (:class:`Stacked`). A vector norm on a matrix leaf
    reads the whole leaf, as before. A :class:`Scaled` norm keeps its radius.

    Args:
      norm: the leaf's norm.
      layout: the leaf's reading, a :class:`normopt.layouts.Layout`.

    Returns:
      The norm adapted to the layout (``norm`` itself when nothing changes).

    Raises:
      ValueError: for a matrix norm without dims on a leaf the layout reads as a vector.
    """
    if isinstance(norm, Scaled):
        return Scaled(with_layout(norm.base, layout), norm.radius)
    if isinstance(norm, MatrixNorm):
        if norm.dims is not None:
            return norm
        if layout.dims is None:
            raise ValueError(
                f"the layout reads this leaf as a vector ({layout.source}), but its norm {norm.name!r} is a matrix "
                "norm; give it a vector norm (rms, l2, linf, l1) or a layout that reads it as a matrix"
            )
        return dataclasses.replace(norm, dims=layout.dims)
    if layout.role == "vector" and layout.batch and not isinstance(norm, Stacked):
        return Stacked(norm, tuple(layout.batch))
    return norm


def scaled(norm: Norm | str, radius: Any) -> Norm:
    """``norm`` with a unit ball of radius ρ: ‖x‖/ρ; dual ρ·‖g‖*; dualize ρ·dualize(g) (:class:`Scaled`).

    Args:
      norm: a :class:`Norm` or its name (``"spectral"``, ``"rms"``, ...).
      radius: ρ > 0; may be a traced hyperparameter (``optax.inject_hyperparams``).

    Returns:
      A :class:`Scaled` norm.

    Raises:
      ValueError: for an unknown norm name.
    """
    return Scaled(get(norm), radius)


def l2() -> Norm:
    """Euclidean / Frobenius norm (normalized SGD)."""
    return L2()


def rms() -> Norm:
    """RMS norm ‖x‖₂/√n (biases, gains)."""
    return RMS()


def linf() -> Norm:
    """ℓ∞ norm (sign descent)."""
    return Linf()


def l1() -> Norm:
    """ℓ1 norm (greedy coordinate descent)."""
    return L1()


def spectral(
    dims: MatrixDims | None = None,
    *,
    scale: str = "none",
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
) -> Norm:
    """Spectral norm σ_max(A)/c, c from a shape rule; dual c·Σσᵢ(G) (nuclear); dualize c·U Vᵀ (G = U Σ Vᵀ).

    With ``scale="none"`` (c = 1) steepest descent under it is spectral descent (Carlson et al. 2015);
    ``scale="spectral"`` is :func:`rms_to_rms`. ``dualize`` uses :func:`normopt.orthogonalize`, ``norm`` and
    ``dual_norm`` an exact SVD.

    Args:
      dims: which axes are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` or takes the axes of the leaf's layout.
      scale: the rule for c in :data:`SCALE_RULES`: ``"none"``, ``"spectral"`` √(fan_out/fan_in), ``"jordan"``
        √max(1, fan_out/fan_in) or ``"moonlight"`` 0.2·√max(fan_in, fan_out).
      method: orthogonalization method (a name in ``normopt.polar.METHODS`` or a (steps, 3) coefficient table).
      steps: iteration steps; ``None`` for the method's default.
      compute_dtype: dtype the iteration runs in (``"float32"``, ``"bfloat16"``); ``None`` for float32.

    Returns:
      A :class:`Spectral` norm.

    Raises:
      ValueError: for an unknown scale rule or an invalid ``method``/``steps``/``compute_dtype``.
      TypeError: for a ``steps`` that is not a Python int.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> g = jnp.array([[3.0, 0.0], [0.0, 4.0]])
      >>> n = norms.spectral(method="svd")  # exact U Vᵀ; the default "polar_express" approximates it
      >>> float(n.norm(g)), float(n.dual_norm(g))  # σ_max, Σσᵢ
      (4.0, 7.0)
      >>> n.dualize(g).tolist()
      [[1.0, 0.0], [0.0, 1.0]]

    References:
      Bernstein & Newhouse, `Old optimizer, new norm: an anthology <https://arxiv.org/abs/2409.20325>`_, 2024.

      Jordan et al., `Muon: an optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.
    """
    return Spectral(dims, scale, method, steps, compute_dtype)


def rms_to_rms(
    dims: MatrixDims | None = None,
    *,
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
) -> Norm:
    """RMS→RMS operator norm √(fan_in/fan_out)·σ_max(A); dual √(fan_out/fan_in)·Σσᵢ(G); dualize
    √(fan_out/fan_in)·U Vᵀ.

    The norm of hidden layers: ‖x @ A‖_rms ≤ ‖A‖·‖x‖_rms, so one learning rate carries across widths. The same as
    ``spectral(dims, scale="spectral")``.

    Args:
      dims: which axes are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` or takes the axes of the leaf's layout.
      method: orthogonalization method (a name in ``normopt.polar.METHODS`` or a (steps, 3) coefficient table).
      steps: iteration steps; ``None`` for the method's default.
      compute_dtype: dtype the iteration runs in (``"float32"``, ``"bfloat16"``); ``None`` for float32.

    Returns:
      A :class:`Spectral` norm with scale rule ``"spectral"``.

    Raises:
      ValueError: for an invalid ``method``/``steps``/``compute_dtype``.
      TypeError: for a ``steps`` that is not a Python int.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> n = norms.rms_to_rms(method="svd")
      >>> g = jnp.ones((4, 16))  # fan_in 4, fan_out 16, rank 1 with σ_max = 8
      >>> round(float(n.norm(g)), 4), round(float(n.dual_norm(g)), 4)  # √(4/16)·8, √(16/4)·8
      (4.0, 16.0)
      >>> print(n.dualize(g)[0, :4])  # √(16/4)·U Vᵀ = 2·(1/8)
      [0.25 0.25 0.25 0.25]

    References:
      Yang, Simon & Bernstein, `A spectral condition for feature learning <https://arxiv.org/abs/2310.17813>`_, 2023.

      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.
    """
    return Spectral(dims, "spectral", method, steps, compute_dtype)


def l1_to_rms(dims: MatrixDims | None = None) -> Norm:
    """ℓ1→RMS operator norm maxᵢ rms(A[i,:]); dual Σᵢ √d_out·‖G[i,:]‖₂; dualize row i ↦ √d_out·G[i,:]/‖G[i,:]‖₂.

    The norm of embeddings (one-hot inputs pick one row): every row's update has RMS 1.

    Args:
      dims: which axes are fan-in (rows, the vocabulary) and fan-out (:class:`~normopt.dims.MatrixDims`); ``None``
        reads ``[*batch, fan_in, fan_out]`` or takes the axes of the leaf's layout.

    Returns:
      An :class:`L1ToRMS` norm.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> n = norms.l1_to_rms()
      >>> g = jnp.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0]])
      >>> float(n.norm(g)), float(n.dual_norm(g))  # max row RMS; Σ √4·‖row‖₂
      (1.0, 8.0)
      >>> print(n.dualize(g))  # each row rescaled to RMS 1
      [[1. 1. 1. 1.]
       [0. 0. 0. 2.]]

    References:
      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.

      Pethick et al., `Training deep learning models with norm-constrained LMOs
      <https://arxiv.org/abs/2502.07529>`_ (Scion), 2025.
    """
    return L1ToRMS(dims)


def rms_to_linf(dims: MatrixDims | None = None) -> Norm:
    """RMS→ℓ∞ operator norm maxⱼ √d_in·‖A[:,j]‖₂; dual Σⱼ ‖G[:,j]‖₂/√d_in; dualize column j ↦
    G[:,j]/(√d_in·‖G[:,j]‖₂).

    The norm of output heads: it bounds every logit, ‖x @ A‖_∞ ≤ ‖A‖·‖x‖_rms (Scion's "RowNorm" in PyTorch's
    ``[out, in]`` layout).

    Args:
      dims: which axes are fan-in and fan-out (columns, the logits) (:class:`~normopt.dims.MatrixDims`); ``None``
        reads ``[*batch, fan_in, fan_out]`` or takes the axes of the leaf's layout.

    Returns:
      An :class:`RMSToLinf` norm.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> n = norms.rms_to_linf()
      >>> g = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 2.0]])  # fan_in 4, two columns of norm 2
      >>> float(n.norm(g)), float(n.dual_norm(g))  # max √4·‖col‖₂; Σ ‖col‖₂/√4
      (4.0, 2.0)
      >>> print(n.dualize(g))
      [[0.25 0.  ]
       [0.25 0.  ]
       [0.25 0.  ]
       [0.25 0.5 ]]

    References:
      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.

      Pethick et al., `Training deep learning models with norm-constrained LMOs
      <https://arxiv.org/abs/2502.07529>`_ (Scion), 2025.
    """
    return RMSToLinf(dims)


def sign(dims: MatrixDims | None = None, *, normalized: bool = True) -> Norm:
    """Scion's ``Sign`` norm for output layers: dualize sign(G)/d_in (see :class:`Sign`).

    Args:
      dims: which axes are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` reads
        ``[*batch, fan_in, fan_out]`` or takes the axes of the leaf's layout.
      normalized: divide by d_in = fan_in (Scion's default); False gives plain sign(G).

    Returns:
      A :class:`Sign` norm.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> norms.sign().dualize(jnp.array([[2.0, -1.0], [0.0, 3.0]])).tolist()  # fan_in 2
      [[0.5, -0.5], [0.0, 0.5]]

    References:
      Pethick et al., `Training deep learning models with norm-constrained LMOs
      <https://arxiv.org/abs/2502.07529>`_ (Scion), 2025.
    """
    return Sign(dims, normalized)


def spectral_conv(
    window: int,
    dims: MatrixDims | None = None,
    *,
    method: Any = "polar_express",
    steps: int | None = None,
    compute_dtype: str | None = None,
) -> Norm:
    """Scion's ``SpectralConv``: the polar factor of the flattened conv kernel scaled by √(out/in)/k², i.e.
    :func:`rms_to_rms` (√(fan_out/fan_in) = √(out/in)/k for fan_in = in·k²) times 1/√window, window = k².

    Args:
      window: the number of taps k² of the kernel window (e.g. 9 for 3×3); a positive int.
      dims: which axes are fan-in and fan-out (:class:`~normopt.dims.MatrixDims`); ``None`` takes the layout's.
      method: the polar kernel (:func:`normopt.orthogonalize`).
      steps: kernel iterations (static); None: the method's default.
      compute_dtype: dtype the kernel iterates in; None: float32.

    Returns:
      A norm whose dualization is √(out/in)/k² · U Vᵀ.

    Raises:
      ValueError: for a window that is not a positive int.

    References:
      Pethick et al., `Training deep learning models with norm-constrained LMOs
      <https://arxiv.org/abs/2502.07529>`_ (Scion), 2025.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"spectral_conv: window must be a positive int (k² taps, e.g. 9 for 3×3), got {window!r}")
    return Scaled(rms_to_rms(dims, method=method, steps=steps, compute_dtype=compute_dtype), 1.0 / math.sqrt(window))


BY_NAME: dict[str, Callable[..., Norm]] = {
    "l2": l2,
    "rms": rms,
    "linf": linf,
    "l1": l1,
    "spectral": spectral,
    "rms_to_rms": rms_to_rms,
    "l1_to_rms": l1_to_rms,
    "rms_to_linf": rms_to_linf,
    "sign": sign,
}


def get(name: str | Norm) -> Norm:
    """The norm called ``name``, built with its defaults.

    Args:
      name: a key of :data:`BY_NAME` (``"l2"``, ``"rms"``, ``"linf"``, ``"l1"``, ``"spectral"``, ``"rms_to_rms"``,
        ``"l1_to_rms"``, ``"rms_to_linf"``), or a :class:`Norm`, returned as it is.

    Returns:
      A :class:`Norm`.

    Raises:
      ValueError: for an unknown name or something that is neither a string nor a Norm.
    """
    if isinstance(name, Norm):
        return name
    if not isinstance(name, str) or name not in BY_NAME:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(BY_NAME)} or pass a normopt.norms.Norm")
    return BY_NAME[name]()


# ---------------------------------------------------------------------------------------------------------------
# Norms over a parameter tree.

NormSpec = Any
"""One :class:`Norm` (or its name) for every leaf, a pytree of Norms/None that is a prefix of the parameters, or a
callable ``(path, leaf) -> Norm | None`` where ``path`` is a tuple of strings such as ``("params", "Dense_0",
"kernel")``. ``None`` leaves the leaf unchanged (identity)."""


def _is_norm_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (Norm, str))


def resolve(spec: NormSpec, tree: Any) -> Any:
    """The pytree of per-leaf Norms (or None) that ``spec`` assigns to ``tree``, checked leaf by leaf.

    Args:
      spec: a :data:`NormSpec`: one Norm or name for every leaf, a prefix pytree of Norms/names/None, or a callable
        ``(path, leaf) -> Norm | None``.
      tree: the parameters (or updates): a pytree of arrays.

    Returns:
      A pytree of the structure of ``tree`` with a :class:`Norm` or None at every leaf.

    Raises:
      ValueError: naming the leaf path, when the trees do not match, a name is unknown or a norm cannot act on a
        leaf's shape.
      TypeError: naming the leaf path, when a normed leaf is not floating point.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if callable(spec) and not isinstance(spec, Norm):
        norms = [spec(path_names(p), x) for p, x in leaves_with_path]
    elif _is_norm_leaf(spec):
        norms = [spec] * len(leaves_with_path)
    else:
        try:
            full = jax.tree.map(lambda n, sub: jax.tree.map(lambda _: n, sub), spec, tree, is_leaf=_is_norm_leaf)
        except (ValueError, TypeError) as e:
            raise ValueError(
                "the tree of norms does not match the parameter tree (it must be a prefix of it): "
                f"{e}. Give one Norm, a matching pytree, or a callable (path, leaf) -> Norm."
            ) from None
        norms = treedef.flatten_up_to(full)
    out = []
    for (p, x), n in zip(leaves_with_path, norms, strict=True):
        where = path_str(p)
        if n is None:
            out.append(None)
            continue
        try:
            n = get(n)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        check_float(p, x)
        try:
            n.check(tuple(jnp.shape(x)))
        except ValueError as e:
            raise ValueError(f"{where} (shape {tuple(jnp.shape(x))}): {e}") from None
        out.append(n)
    return treedef.unflatten(out)


def _map(f: Callable[..., Any], norms: Any, *trees: Any) -> Any:
    return jax.tree.map(lambda n, *xs: xs[0] if n is None else f(n, *xs), norms, *trees, is_leaf=lambda x: x is None)


@dataclasses.dataclass(frozen=True)
class WeightedMax:
    """The weighted max ("modular") norm of a tree: ‖W‖ = max_l w_l·‖W_l‖_l (Large et al. 2024, "Scalable
    optimization in the modular norm"); dual ‖G‖* = Σ_l ‖G_l‖*_l / w_l; dualize(G)_l = dualize_l(G_l) / w_l.

    Leaves whose norm is None do not take part. Build it with :func:`weighted_max`.

    Attributes:
      norms: a :data:`NormSpec` giving each leaf its norm ‖·‖_l.
      weights: None (all w_l = 1) or a pytree of positive floats that is a prefix of the parameters.
    """

    norms: NormSpec
    weights: Any = None

    def _weights(self, tree):
        if self.weights is None:
            return jax.tree.map(lambda _: 1.0, tree)
        try:
            return jax.tree.map(lambda w, sub: jax.tree.map(lambda _: w, sub), self.weights, tree)
        except (ValueError, TypeError) as e:
            raise ValueError(f"the tree of weights does not match the parameter tree: {e}") from None

    def _triples(self, tree):
        norms = jax.tree.leaves(resolve(self.norms, tree), is_leaf=lambda x: x is None)
        return [
            (n, x, w)
            for n, x, w in zip(norms, jax.tree.leaves(tree), jax.tree.leaves(self._weights(tree)), strict=True)
            if n is not None
        ]

    def norm(self, tree):
        return jnp.max(jnp.stack([n.norm(x) * w for n, x, w in self._triples(tree)]))

    def dual_norm(self, tree):
        return sum(n.dual_norm(g) / w for n, g, w in self._triples(tree))

    def dualize(self, tree):
        return _map(
            lambda n, g, w: n.dualize(g) / jnp.asarray(w, g.dtype), resolve(self.norms, tree), tree, self._weights(tree)
        )


def weighted_max(norms: NormSpec, weights: Any = None) -> WeightedMax:
    """The weighted max ("modular") norm of a tree: ‖W‖ = max_l w_l·‖W_l‖_l; dual Σ_l ‖G_l‖*_l / w_l; dualize
    per leaf, dualize(G)_l = dualize_l(G_l) / w_l.

    Args:
      norms: a :data:`NormSpec`: one Norm or name for every leaf, a prefix pytree of Norms/names/None, or a
        callable ``(path, leaf) -> Norm | None``. Leaves whose norm is None do not take part.
      weights: None (all 1) or a pytree of positive floats w_l that is a prefix of the parameters.

    Returns:
      A :class:`WeightedMax` with ``norm``, ``dual_norm`` and ``dualize`` over whole trees; a mismatched tree of
      ``weights`` raises ``ValueError`` when they are called.

    Examples:
      >>> import jax.numpy as jnp
      >>> from normopt import norms
      >>> tree = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([1.0, 0.0])}
      >>> m = norms.weighted_max("l2", weights={"a": 1.0, "b": 2.0})
      >>> float(m.norm(tree)), float(m.dual_norm(tree))  # max(1·5, 2·1); 5/1 + 1/2
      (5.0, 5.5)
      >>> d = m.dualize(tree)
      >>> print(d["a"], d["b"])
      [0.6 0.8] [0.5 0. ]

    References:
      Large et al., `Scalable optimization in the modular norm <https://arxiv.org/abs/2405.14813>`_, 2024.

      Bernstein & Newhouse, `Modular duality in deep learning <https://arxiv.org/abs/2410.21265>`_, 2024.
    """
    return WeightedMax(norms, weights)
