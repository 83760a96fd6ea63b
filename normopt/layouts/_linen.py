"""Layouts of a Flax linen model, read from the modules that create each parameter during ``init``.

``module.init`` runs under ``jax.eval_shape`` (nothing is computed) with ``nn.intercept_methods`` recording, for
every module, its class, its attributes, the shapes of the parameters it creates as it sees them, and the order of
the dense calls. Parameters are read by module class, whatever their names (Flax conventions, ``y = x @ W``):

* ``Dense`` kernel ``[in, out]``; ``DenseGeneral`` kernel ``[*batch_dims, *axis, *features]`` (attention's query/
  key/value ``[features, heads, head_dim]``, out ``[heads, head_dim, features]``);
* ``Einsum`` kernel from ``einsum_str`` ``"x,kernel->out"``: kernel letters contracted away are fan-in, letters
  only in the kernel and the output fan-out, letters in the input, kernel and output (an expert axis) batch;
* ``Conv`` kernel ``[*window, in/groups, out]`` and ``ConvTranspose`` kernel ``[*window, in, out]`` (``[*window,
  out, in]`` with ``transpose_kernel``): fan-in the window and input axes;
* ``Embed.embedding`` ``[num_embeddings, features]``: role ``"embedding"``;
* biases and every parameter of ``LayerNorm``/``RMSNorm``/``BatchNorm``/``GroupNorm``/``InstanceNorm``: vectors.

Axes the final parameter has beyond the shape its module saw (``nn.scan``/``nn.vmap`` stacks) are batch axes,
placed by matching the two shapes: ``variable_axes={"params": 1}`` gives a stack at axis 1. When the match is
ambiguous (equal sizes) the stack axes are taken to be the leading ones.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from normopt.layouts._core import Layout, Layouts, leaves_with_paths, matrix, normalize, vector
from normopt.layouts._nnx import (
    HeadSpec,
    Path,
    Reading,
    conv_kernel,
    dense_kernel,
    einsum_kernel,
    eval_abstract,
    finish,
    last_dense,
    match_heads,
    read_all,
)


@dataclass
class _Record:
    """What a module showed during ``init``: itself, its own parameters' shapes, the einsum string it was called
    with."""

    module: Any
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    einsum_str: str | None = None


def linen(
    module: Any,
    *init_args: Any,
    head: HeadSpec = None,
    overrides: Mapping[str, Any] | None = None,
    **init_kwargs: Any,
) -> Layouts:
    """The reading of every leaf of ``module.init(rngs, *init_args, **init_kwargs)["params"]``.

    The role ``"head"`` goes to the matrices of the modules whose ``/``-joined path matches ``head`` (a regex or a
    sequence of regexes) when given, else of the last ``Dense``/``DenseGeneral``/``Einsum`` called during ``init``;
    if the last such call is ``Embed.attend`` (tied output embedding) or a stacked layer (inside ``nn.scan``), there
    is no head.

    Args:
      module: a linen module.
      *init_args: the inputs to ``init``, arrays or ``jax.ShapeDtypeStruct``; they may start with the rngs (a key
        or a dict of keys), else ``{"params": key(0), "dropout": key(1)}`` is used. A raw ``uint32[2]`` key counts
        as rngs.
      head: regex(es) over module paths naming the output layer(s); overrides the forward-order rule.
      overrides: ``{path regex: Layout | MatrixDims | role}`` applied (first match wins) before parameters of
        ≥ 2 dimensions created by unknown modules (``self.param``) are refused, as in :meth:`Layouts.override`.
      **init_kwargs: keyword arguments for ``init`` (``train=False``, ``method=...``).

    Returns:
      A :class:`Layouts` with framework ``"linen"``, keyed by the paths inside ``variables["params"]``.

    Raises:
      ValueError: for a parameter of ≥ 2 dimensions no known module reads and no override covers, or a ``head``
        pattern matching no module.
    """
    import flax.linen as nn

    rngs, inputs = _split_rngs(init_args)
    records: dict[Path, _Record] = {}
    events: list[tuple[Path | None, str]] = []
    with nn.intercept_methods(functools.partial(_intercept, records, events)):
        variables = eval_abstract(lambda r, *a, **k: module.init(r, *a, **k), rngs, *inputs, **init_kwargs)
    shapes = {normalize(p): tuple(x.shape) for p, x in leaves_with_paths(variables.get("params", {}))}
    readings = {p: _reading(records.get(p[:-1]), p[-1]) for p in shapes}
    entries, unknown = read_all(shapes, readings, "linen")
    entries.update({p: _placed(entries[p], shapes[p], _inner(records, p)) for p, r in readings.items() if r[0]})
    if head is not None:
        heads = match_heads(head, entries)
    else:
        heads = {m for m in last_dense(events) if not _stacked(records[m], shapes, m)}
    return finish(entries, shapes, unknown, heads, overrides, "linen")


def _split_rngs(args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``(rngs, inputs)``: the leading key or dict of keys of ``args`` if there is one, else fresh keys."""
    first = args[0] if args else None
    if _is_key(first) or (isinstance(first, Mapping) and first and all(map(_is_key, first.values()))):
        return args[0], args[1:]
    return {"params": jax.random.key(0), "dropout": jax.random.key(1)}, args


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == np.uint32 and np.shape(x) == (2,))


def _intercept(
    records: dict[Path, _Record],
    events: list[tuple[Path | None, str]],
    next_fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: Any,
) -> Any:
    """Records ``context.module``'s dense calls in ``events`` and its own parameter shapes in ``records``."""
    module = context.module
    if module.scope is None:
        return next_fun(*args, **kwargs)
    path = tuple(map(str, module.scope.path))
    kind = _event_kind(module, context.method_name)
    if kind:
        events.append((path, kind))
    out = next_fun(*args, **kwargs)
    record = records.setdefault(path, _Record(module))
    record.shapes.update(_own_shapes(module))
    if context.method_name == "__call__" and _is(module, "Einsum"):
        record.einsum_str = kwargs.get("einsum_str") or (args[1] if len(args) > 1 else None) or module.einsum_str
    return out


def _own_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    """The shapes of the parameters ``module`` holds itself (not its children's), as it sees them."""
    from flax.core import meta

    params = module.variables.get("params", {})
    return {k: tuple(np.shape(meta.unbox(v))) for k, v in params.items() if not isinstance(v, Mapping)}


def _is(module: Any, *names: str) -> bool:
    import flax.linen as nn

    return isinstance(module, tuple(getattr(nn, n) for n in names))


def _event_kind(module: Any, method: str) -> str | None:
    if method == "__call__" and _is(module, "Dense", "DenseGeneral", "Einsum"):
        return "dense"
    if method == "attend" and _is(module, "Embed"):
        return "attend"
    return None


def _stacked(record: _Record, shapes: Mapping[Path, tuple[int, ...]], module: Path) -> bool:
    """Whether the parameters of the module at ``module`` carry stack axes (``nn.scan``/``nn.vmap``)."""
    return any(shapes.get(module + (name,), inner) != inner for name, inner in record.shapes.items())


def _inner(records: Mapping[Path, _Record], path: Path) -> tuple[int, ...]:
    return records[path[:-1]].shapes[path[-1]]


def _reading(record: _Record | None, name: str) -> tuple[Reading | None, str]:
    """The reading a known module gives its parameter ``name`` (over the shape it saw; any module's parameter
    of < 2 dimensions is a vector), and the module's class name."""
    if record is None or name not in record.shapes:
        return None, type(record.module).__name__ if record else "unknown"
    module, ndim = record.module, len(record.shapes[name])
    source = f"linen:{type(module).__name__}"
    layout = _read_kernel(record, name, ndim, source)
    if layout is None and (ndim < 2 or name == "bias" and _is(module, *_BIASED) or _is(module, *_NORMS)):
        layout = vector(ndim, source=source)
    return ((ndim, layout) if layout is not None else None), type(module).__name__


_BIASED = ("Dense", "DenseGeneral", "Einsum", "Conv", "ConvTranspose")
_NORMS = ("LayerNorm", "RMSNorm", "BatchNorm", "GroupNorm", "InstanceNorm")


def _read_kernel(record: _Record, name: str, ndim: int, source: str) -> Layout | None:
    """The matrix reading of a known module's kernel or embedding; None for anything else."""
    module = record.module
    if name == "embedding" and _is(module, "Embed"):
        return matrix((0,), (1,), role="embedding", source=source)
    if name != "kernel":
        return None
    if _is(module, "Dense"):
        return dense_kernel(0, 1, 1, source)
    if _is(module, "DenseGeneral"):
        n_batch = len(module.batch_dims)
        n_out = len(module.features) if isinstance(module.features, (tuple, list)) else 1
        return dense_kernel(n_batch, ndim - n_batch - n_out, n_out, source)
    if _is(module, "Einsum") and record.einsum_str:
        return einsum_kernel(record.einsum_str, source)
    if _is(module, "Conv", "ConvTranspose"):
        return conv_kernel(ndim, getattr(module, "transpose_kernel", False), source)
    return None


def _placed(layout: Layout, shape: tuple[int, ...], inner: tuple[int, ...]) -> Layout:
    """``layout`` (stack axes leading) with the stack axes moved to where ``shape`` differs from ``inner``."""
    extra = len(shape) - len(inner)
    stack = next(
        (
            axes
            for axes in itertools.combinations(range(len(shape)), extra)
            if tuple(d for a, d in enumerate(shape) if a not in axes) == inner
        ),
        tuple(range(extra)),
    )
    rest = [a for a in range(len(shape)) if a not in stack]
    move = lambda axes: tuple(rest[a - extra] for a in axes if a >= extra)
    return Layout(
        layout.role, move(layout.fan_in), move(layout.fan_out), tuple(sorted(stack + move(layout.batch))), layout.source
    )
