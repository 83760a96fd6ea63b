"""Layer-sharded orthogonalization over a ``jax.sharding.Mesh``: each device orthogonalizes whole matrices.

A polar factor ``U Vᵀ`` needs a whole matrix. Under FSDP or tensor parallelism every matrix is split over the
devices, so a per-leaf kernel either all-gathers it or all-reduces a Gram matrix every Newton–Schulz step.
Layer sharding (as in MaxText and microsoft/dion's Muon) moves whole matrices instead::

    leaves with the same matrix shape (m, n)      ──►  stack [L, m, n], zero-pad L to a multiple of D devices
    stack, any sharding  ── all-to-all ──►  [L/D, m, n] on each device (device d owns matrices d·L/D …)
    local, batched kernel:  U Vᵀ of every owned matrix (normopt.orthogonalize on [L/D, m, n], in shard_map)
    [L/D, m, n] per device ── all-to-all ──►  each leaf back in its own sharding

Each matrix crosses the network twice (m·n·(D−1)/D elements per device per direction), independent of the number
of Newton–Schulz steps; no device ever holds the full stack. Use it through ``sharding=`` of
:func:`normopt.dualize`, :func:`normopt.muon` and :func:`normopt.scion`. Works on Auto and Explicit mesh axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from normopt import norms as norms_lib
from normopt._numerics import on_auto_axes
from normopt.dims import matrix_layout, to_matrices


def _spectral(norm: Any) -> tuple[norms_lib.Spectral, Any] | None:
    """``(spectral base, radius)`` for a Spectral norm or a Scaled Spectral norm, else None."""
    if isinstance(norm, norms_lib.Spectral):
        return norm, None
    if isinstance(norm, norms_lib.Scaled) and isinstance(norm.base, norms_lib.Spectral):
        return norm.base, norm.radius
    return None


def _kernel_key(norm: norms_lib.Spectral) -> tuple[Any, ...]:
    method = norm.method if isinstance(norm.method, str) else ("table", np.asarray(norm.method).tobytes())
    return norm.scale_rule, method, norm.steps, norm.compute_dtype


@dataclasses.dataclass(frozen=True)
class LayerSharded:
    """Dualizes spectral leaves as stacks of same-shape matrices, each matrix owned by one device of ``axes``.

    Other norms (and leaves without a norm) are dualized leaf by leaf, exactly as without sharding. Build it with
    :func:`layer_sharded`.

    Attributes:
      mesh: the device mesh.
      axes: the mesh axes the stacks are split over (their product is :attr:`size`).
    """

    mesh: Mesh
    axes: tuple[str, ...]

    @property
    def size(self) -> int:
        """D, the number of devices the stacks are split over."""
        return math.prod(self.mesh.shape[a] for a in self.axes)

    def dualize(self, norms: Any, updates: Any) -> Any:
        """The tree of ``norm.dualize(g)``, spectral leaves computed layer-sharded (same values, up to round-off)."""
        norm_leaves = jax.tree.leaves(norms, is_leaf=lambda x: x is None)
        leaves, treedef = jax.tree.flatten(updates)
        out = [g if n is None or _spectral(n) else n.dualize(g) for n, g in zip(norm_leaves, leaves, strict=True)]
        picked = [i for i, n in enumerate(norm_leaves) if n is not None and _spectral(n)]
        if picked:
            norms_picked = [norm_leaves[i] for i in picked]
            sources = [_matrix_spec(leaves[i], _spectral(n)[0].dims) for i, n in zip(picked, norms_picked, strict=True)]
            spectral = on_auto_axes(
                lambda gs: self._dualize_spectral(norms_picked, sources, gs), [leaves[i] for i in picked]
            )
            for i, d in zip(picked, spectral, strict=True):
                out[i] = d
        return treedef.unflatten(out)

    def _dualize_spectral(
        self, norms: Sequence[Any], sources: Sequence[Any], leaves: Sequence[jax.Array]
    ) -> list[jax.Array]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        mats, backs = [], []
        for i, (n, g) in enumerate(zip(norms, leaves, strict=True)):
            base, _ = _spectral(n)
            m, back = to_matrices(g, base.dims)
            m = m.reshape((-1,) + m.shape[-2:])
            mats.append(m)
            backs.append(back)
            groups.setdefault((m.shape[-2:], m.dtype, _kernel_key(base), sources[i]), []).append(i)
        out: list[Any] = [None] * len(leaves)
        for (*_, source), members in groups.items():
            base, _ = _spectral(norms[members[0]])
            results = self.orthogonalize_stack([mats[i] for i in members], base._slice_dualize, source)
            for i, r in zip(members, results, strict=True):
                _, radius = _spectral(norms[i])
                d = backs[i](r.reshape(mats[i].shape[:1] + r.shape[-2:]))
                out[i] = (d if radius is None else d * radius).astype(leaves[i].dtype)
        return out

    def _route(self, source: tuple[tuple[str, ...], ...] | None) -> list[tuple[tuple[str, ...], ...]]:
        """Stack layouts ``(stack axes, row axes, column axes)`` from ``source`` to whole matrices per device:
        one mesh axis moves to the stack axis per hop (an all-to-all, or a local slice if it was unused), a
        route XLA partitions without replicating. Unknown source (Auto axes): one hop, the compiler's choice."""
        if source is None:
            return [(self.axes, (), ())]
        lead, rows, cols = (), source[1], source[2]
        route = [((), rows, cols)]
        for a in self.axes:
            lead, rows, cols = lead + (a,), tuple(x for x in rows if x != a), tuple(x for x in cols if x != a)
            route.append((lead, rows, cols))
        return route

    def orthogonalize_stack(self, mats: Sequence[jax.Array], kernel: Any, source: Any = None) -> list[jax.Array]:
        """Applies ``kernel`` (a batched map ``[k, m, n] -> [k, m, n]``) to the matrices ``mats`` (each
        ``[b_i, m, n]``, laid out as ``source`` = (stack, row, column) mesh axes, or None if unknown) with whole
        matrices spread over the devices: stack, pad, exchange, compute, exchange back.
        """
        current = jax.sharding.get_abstract_mesh()  # inside auto_axes: the mesh with these axes switched to Auto
        mesh = (
            current
            if not current.empty
            else Mesh(self.mesh.devices, self.mesh.axis_names, axis_types=(AxisType.Auto,) * len(self.mesh.axis_names))
        )

        def place(x, hop):
            return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*(a or None for a in hop))))

        stack = jnp.concatenate(mats, axis=0)
        total = stack.shape[0]
        padded = -(-total // self.size) * self.size
        stack = jnp.pad(stack, ((0, padded - total), (0, 0), (0, 0)))  # zero matrices map to zero
        route = self._route(source)
        for hop in route[1:] if source is not None else route:
            stack = place(stack, hop)
        # The kernel runs per device on its own [L'/D, m, n] block (shard_map over ``axes``): XLA's sharding
        # propagation cannot lose the stack axis inside the kernel's loop and gather the stack.
        local = jax.shard_map(
            kernel, mesh=mesh, in_specs=P(self.axes), out_specs=P(self.axes), axis_names=set(self.axes), check_vma=False
        )
        result = place(local(stack), route[-1])
        for hop in reversed(route[:-1]):
            result = place(result, hop)
        offsets = np.cumsum([0] + [m.shape[0] for m in mats])
        return [result[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _axis_names(entry: Any) -> tuple[str, ...]:
    return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def _matrix_spec(g: jax.Array, dims: Any) -> tuple[tuple[str, ...], ...] | None:
    """Mesh axes of ``to_matrices(g)`` as (batch, rows, columns), read from an Explicit sharding; None on Auto axes."""
    sharding = jax.typeof(g).sharding
    if not sharding.mesh.explicit_axes:
        return None
    spec = tuple(sharding.spec) + (None,) * (g.ndim - len(sharding.spec))
    lay = matrix_layout(g.shape, dims)
    return tuple(
        tuple(a for d in axes for a in _axis_names(spec[d]))
        for axes in (lay.batch_axes, lay.fan_in_axes, lay.fan_out_axes)
    )


def layer_sharded(mesh: Mesh, axes: str | Sequence[str] | None = None) -> LayerSharded:
    """Layer-sharded dualization over ``axes`` of ``mesh``; pass it as ``sharding=``.

    Same-shape spectral leaves are stacked ``[L, m, n]``, padded to a multiple of the D devices of ``axes``,
    exchanged (all-to-all) so that each device holds L/D whole matrices, orthogonalized locally and exchanged back:
    m·n·(D−1)/D elements per device per direction and matrix, independent of the number of iteration steps.

    Args:
      mesh: a ``jax.sharding.Mesh`` (``jax.make_mesh``); Auto and Explicit axes both work.
      axes: a mesh axis name or a sequence of them; ``None`` for all the mesh's axes.

    Returns:
      A :class:`LayerSharded` for ``sharding=`` of :func:`normopt.dualize`, :func:`normopt.muon` and
      :func:`normopt.scion`.

    Raises:
      TypeError: when ``mesh`` is not a ``jax.sharding.Mesh``.
      ValueError: when ``axes`` is empty or names an axis the mesh does not have.

    Examples:
      >>> import jax
      >>> import normopt
      >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
      >>> sharded = normopt.sharding.layer_sharded(mesh)
      >>> sharded.axes, sharded.size == jax.device_count()
      (('data',), True)
      >>> optimizer = normopt.muon(1e-2, sharding=sharded)

    References:
      Jordan et al., `Muon: an optimizer for hidden layers in neural networks
      <https://kellerjordan.github.io/posts/muon/>`_, 2024.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"layer_sharded: mesh must be a jax.sharding.Mesh (jax.make_mesh), got {type(mesh).__name__}")
    axes = tuple(mesh.axis_names) if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    unknown = [a for a in axes if a not in mesh.axis_names]
    if unknown or not axes:
        raise ValueError(f"layer_sharded: axes {axes} must be a non-empty subset of the mesh axes {mesh.axis_names}")
    return LayerSharded(mesh, axes)
