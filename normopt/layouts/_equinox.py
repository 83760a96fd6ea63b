"""Reading an Equinox model: each array is read by the ``eqx.nn`` layer that owns it (weights are ``[out, in]``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from normopt.layouts._core import Layout, Layouts, key_names, leaves_with_paths, shifted, vector
from normopt.layouts._torch import Path, Readings, choose_head, matching, named_head, settle


def equinox(
    model: Any,
    *example_args: Any,
    head: str | Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Layouts:
    """Reads every array of an Equinox model from the ``eqx.nn`` layer that owns it.

    Paths are those of ``jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_array))`` as strings, e.g.
    ``("layers", "0", "weight")`` for ``eqx.nn.MLP``. The layers read (subclasses included):

    * ``Linear``: ``weight`` ``[out, in]``, fan-in axis 1, fan-out axis 0; ``bias`` a vector. ``MLP``,
      ``Sequential`` and ``MultiheadAttention`` (``query_proj``, ``key_proj``, ``value_proj``, ``output_proj``) are
      read through their ``Linear`` layers;
    * ``Conv``/``Conv1d``/``Conv2d``/``Conv3d`` and ``ConvTranspose*``: ``weight`` ``[out, in/groups, *window]``
      (``ConvTranspose`` stores the same layout), fan-in axes ``1..ndim-1``, fan-out axis 0; ``bias``
      ``(out, 1, ..., 1)`` a vector;
    * ``Embedding``: ``weight`` ``[num_embeddings, dim]``, role ``"embedding"``, fan-in axis 0, fan-out axis 1;
    * ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``BatchNorm``: every array (weight, bias, initial state) a vector;
    * any other array: a vector if it has < 2 dimensions, else ``ValueError`` naming it unless ``overrides``
      covers it.

    Stacked layers (``eqx.filter_vmap`` over keys, run with ``jax.lax.scan``) carry extra leading axes, which are
    batch axes: a stacked ``Linear`` weight ``(L, out, in)`` is L matrices, a stacked norm weight ``(L, d)`` is L
    vectors.

    The head (role ``"head"``, the layer producing the model's output, which ``muon`` hands to AdamW) is, in order:

    1. the matrices whose ``/``-joined path matches ``head`` (a regex or a sequence of regexes; ``head=()`` for
       none), e.g. for a model whose output is ``x @ embedding.weight.T``;
    2. with ``example_args``, the last ``eqx.nn.Linear`` called by ``model(*example_args)``, run under
       ``eqx.filter_eval_shape`` (no computation). Layers called inside ``jax.lax.scan``/``vmap`` over stacked
       weights are rebuilt from slices and never taken. ``eqx.nn.Linear.__call__`` is patched while it runs, so do
       not call Linear layers from another thread meanwhile;
    3. the last matrix whose path matches :data:`normopt.layouts.HEAD` (``head``, ``lm_head``, ``classifier``,
       ``unembed``, ``readout``, ``cls``, top-level ``out``/``output``...);
    4. the last ``Linear`` weight in the model's pytree order (field definition order): for ``eqx.nn.MLP``,
       ``layers[-1]``.

    Args:
      model: the Equinox model (a pytree of ``eqx.Module``).
      *example_args: optional inputs (arrays or ``jax.ShapeDtypeStruct``) with which ``model(*example_args)`` runs.
      head: regex(es) naming the head, overriding steps 2-4.
      overrides: ``{path regex: Layout | MatrixDims | role}`` applied last, first match wins. A role name keeps
        the reading above (for an array no layer reads: ``[..., out, in]`` with leading stack axes).

    Returns:
      The :class:`~normopt.layouts.Layouts` of every array, with sources such as ``"equinox:Linear"``.
    """
    import equinox as eqx
    import jax

    known = _known()
    nodes = jax.tree_util.tree_flatten_with_path(
        eqx.filter(model, eqx.is_array), is_leaf=lambda x: isinstance(x, known)
    )
    readings: Readings = {}
    shapes: dict[Path, tuple[int, ...]] = {}
    for path, node in nodes[0]:
        for sub, leaf, reading in _read_node(node, known):
            full = key_names(path) + sub
            readings[full], shapes[full] = reading, tuple(leaf.shape)
    chosen = matching(readings, head) if head is not None else _guess_head(model, example_args, readings)
    return settle(choose_head(readings, chosen), shapes, "equinox", overrides)


def _known() -> tuple[type, ...]:
    """The ``eqx.nn`` layers that own arrays (``MLP``, ``Sequential``, ``MultiheadAttention`` hold these)."""
    import equinox as eqx

    nn = eqx.nn
    return (nn.Linear, nn.Conv, nn.ConvTranspose, nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm)


def _read_node(node: Any, known: tuple[type, ...]) -> Iterator[tuple[Path, Any, Layout | None]]:
    """``(path within node, array, reading)`` for the arrays of one node of the filtered model."""
    if not isinstance(node, known):
        yield (), node, vector(node.ndim, source="equinox") if node.ndim < 2 else None
        return
    table = _table(node)
    arrays = leaves_with_paths(node)
    extra = next((leaf.ndim - table[p[0]][1] for p, leaf in arrays if p[0] in table), 0)
    source = f"equinox:{type(node).__name__}"
    for sub, leaf in arrays:
        base = table[sub[0]][0] if sub[0] in table else Layout("vector")
        yield sub, leaf, shifted(base, min(extra, leaf.ndim))._replace(source=source)


def _table(module: Any) -> dict[str, tuple[Layout, int]]:
    """``{field: (reading, ndim)}`` of a known layer's ``weight``/``bias`` before any stacking."""
    import equinox as eqx

    vec = Layout("vector")
    if isinstance(module, eqx.nn.Linear):
        return {"weight": (Layout("hidden", (1,), (0,)), 2), "bias": (vec, 1)}
    if isinstance(module, eqx.nn.Conv | eqx.nn.ConvTranspose):
        n = module.num_spatial_dims
        return {"weight": (Layout("hidden", tuple(range(1, n + 2)), (0,)), n + 2), "bias": (vec, n + 1)}
    if isinstance(module, eqx.nn.Embedding):
        return {"weight": (Layout("embedding", (0,), (1,)), 2)}
    ndim = len(module.shape) if isinstance(module, eqx.nn.LayerNorm | eqx.nn.RMSNorm) else 1
    return {"weight": (vec, ndim), "bias": (vec, ndim)}


def _guess_head(model: Any, example_args: tuple[Any, ...], readings: Readings) -> list[Path]:
    """Steps 2-4 of the head rule in :func:`equinox`."""
    import equinox as eqx
    import jax

    linears = jax.tree_util.tree_flatten_with_path(model, is_leaf=lambda x: isinstance(x, eqx.nn.Linear))[0]
    weights = {id(m): (*key_names(p), "weight") for p, m in linears if isinstance(m, eqx.nn.Linear)}
    called = []
    if example_args:
        with _recording_linear_calls() as calls:
            eqx.filter_eval_shape(lambda *args: model(*args), *example_args)
        called = [weights[i] for i in calls if i in weights]
    return called[-1:] or named_head(readings) or list(weights.values())[-1:]


@contextlib.contextmanager
def _recording_linear_calls() -> Iterator[list[int]]:
    """Records the ``id`` of every ``eqx.nn.Linear`` called inside the block, in call order."""
    import equinox as eqx

    original = vars(eqx.nn.Linear)["__call__"]
    calls: list[int] = []

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(id(self))
        return original(self, *args, **kwargs)

    eqx.nn.Linear.__call__ = recording
    try:
        yield calls
    finally:
        eqx.nn.Linear.__call__ = original
