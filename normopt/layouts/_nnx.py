"""Layouts of a Flax NNX model, read from its module graph.

Each parameter is read from the module that owns it (Flax conventions, kernels ``y = x @ W``):

* ``Linear`` kernel ``[in, out]``; ``LoRA`` ``lora_a [in, rank]`` and ``lora_b [rank, out]``;
* ``LinearGeneral`` kernel ``[*batch_axis, *in_features, *out_features]`` (``MultiHeadAttention``'s query/key/value
  ``[features, heads, head_dim]`` and out ``[heads, head_dim, features]``);
* ``Einsum`` kernel from ``einsum_str`` ``"x,kernel->out"``: kernel letters contracted away are fan-in, letters only
  in the kernel and the output are fan-out, letters in the input, kernel and output (an expert axis) are batch;
* ``Conv`` kernel ``[*window, in/groups, out]`` and ``ConvTranspose`` kernel ``[*window, in, out]`` (``[*window, out,
  in]`` with ``transpose_kernel``): fan-in the window and input axes;
* ``Embed.embedding`` ``[num_embeddings, features]``: role ``"embedding"``;
* biases and every parameter of ``LayerNorm``/``RMSNorm``/``BatchNorm``/``GroupNorm``/``InstanceNorm``: vectors.

Axes beyond those the module implies (blocks created under ``nnx.vmap``/``nnx.scan``) are stack (batch) axes and
are taken to be the *leading* axes: NNX keeps no record of the transform, so a stack created with ``out_axes != 0``
needs an override. A custom module's own ``nnx.Param`` is read as a vector when it has < 2 dimensions once the
stack axes of its siblings are removed; with ≥ 2 it must be given through ``overrides``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from normopt.layouts import _names
from normopt.layouts._core import Layout, Layouts, as_layout, leaves_with_paths, matrix, normalize, shifted, vector

Path = tuple[str, ...]
HeadSpec = str | Sequence[str] | None
Reading = tuple[int, Layout]
"""The number of dimensions a module gives a parameter (without stack axes) and its reading over those."""

_TAG = "_normopt_layout_path"


def nnx(
    model: Any,
    *example_args: Any,
    head: HeadSpec = None,
    overrides: Mapping[str, Any] | None = None,
    **example_kwargs: Any,
) -> Layouts:
    """The reading of every ``nnx.Param`` of ``model``, keyed as in ``nnx.state(model, nnx.Param)``.

    The role ``"head"`` (the layer producing the model's output) goes to the matrices of:

    1. the modules whose ``/``-joined path matches ``head`` (a regex or a sequence of regexes; ``head=()`` for no
       head), when given;
    2. else, when example inputs are given, the last ``Linear``/``LinearGeneral``/``Einsum`` called in the forward
       pass (traced abstractly with ``jax.eval_shape`` on a copy of the model; nothing is computed). If the last
       such call is ``Embed.attend`` (tied output embedding), or a stacked layer (inside ``nnx.scan``), there is no
       head and the embedding keeps its role;
    3. else the unstacked dense layers whose path matches :data:`normopt.layouts.HEAD` (``head``, ``lm_head``,
       ``classifier``, ...), or, if none does, the last unstacked dense layer in attribute definition order. This
       guess is wrong for models whose output layer is tied or defined early: pass example inputs or ``head=``.

    Args:
      model: an NNX module.
      *example_args: inputs for ``model(*example_args, **example_kwargs)`` (arrays or ``jax.ShapeDtypeStruct``);
        only used to find the forward order for the head rule.
      head: regex(es) over module paths naming the output layer(s); overrides the forward-order rule. ``()``
        means no head.
      overrides: ``{path regex: Layout | MatrixDims | role}`` applied (first match wins) before custom parameters
        with ≥ 2 dimensions are refused, as in :meth:`Layouts.override`.
      **example_kwargs: keyword inputs for the example call.

    Returns:
      A :class:`Layouts` with framework ``"nnx"``.

    Raises:
      ValueError: for a parameter of ≥ 2 dimensions no known module reads and no override covers, or a ``head``
        pattern matching no module.
    """
    from flax import nnx as fnnx

    shapes = {normalize(p): tuple(x.shape) for p, x in leaves_with_paths(fnnx.state(model, fnnx.Param))}
    owners = {tuple(map(str, p)): n for p, n in fnnx.iter_graph(model) if isinstance(n, fnnx.Module)}
    entries, unknown = read_all(shapes, {p: _read_nnx(owners.get(p[:-1]), p[-1]) for p in shapes}, "nnx")
    unstacked = lambda m: _unstacked(owners.get(m), shapes.get(m + ("kernel",)))
    if head is not None:
        heads = match_heads(head, entries)
    elif example_args or example_kwargs:
        heads = set(filter(unstacked, last_dense(_forward_events(model, example_args, example_kwargs))))
    else:
        heads = _guess_heads(model, [p for p in owners if isinstance(owners[p], _dense_classes()) and unstacked(p)])
    return finish(entries, shapes, unknown, heads, overrides, "nnx")


def read_all(
    shapes: Mapping[Path, tuple[int, ...]], readings: Mapping[Path, tuple[Reading | None, str]], framework: str
) -> tuple[dict[Path, Layout], set[Path]]:
    """Every leaf's layout (stack axes leading) and the paths of the ≥ 2-D leaves no module reads.

    Args:
      shapes: the shape of every leaf.
      readings: per leaf, the owning module's reading (None when unknown) and the owner's class name.
      framework: ``"nnx"`` or ``"linen"``, for the ``source`` of each reading.

    Returns:
      ``(layouts, unknown)``; an unknown leaf gets the name-based reading as a placeholder for role overrides.
    """
    extra = {p: len(shapes[p]) - r[0][0] for p, r in readings.items() if r[0] is not None}
    entries, unknown = {}, set()
    for path, (reading, owner) in readings.items():
        ndim = len(shapes[path])
        if reading is not None:
            entries[path] = shifted(reading[1], extra[path])
            continue
        depth = stack_depth(path, extra)
        if ndim - depth >= 2:
            unknown.add(path)
            entries[path] = _names.read(path, shapes[path])
        else:
            entries[path] = vector(ndim, batch=range(depth), source=f"{framework}:{owner}")
    return entries, unknown


def stack_depth(path: Path, extra: Mapping[Path, int]) -> int:
    """The stack axes of an unknown leaf: the fewest extra axes among known leaves of its nearest ancestor."""
    for n in range(len(path) - 1, -1, -1):
        found = [e for p, e in extra.items() if p[:n] == path[:n]]
        if found:
            return min(found)
    return 0


def match_heads(head: str | Sequence[str], entries: Mapping[Path, Layout]) -> set[Path]:
    """The modules owning a matrix whose ``/``-joined path matches one of the ``head`` regexes (none for ``()``).

    Args:
      head: a regex or a sequence of regexes; an empty sequence means no head.
      entries: the reading of every leaf, keyed by path.

    Returns:
      The paths of the matching modules.

    Raises:
      ValueError: when ``head`` has patterns but none matches a module owning a matrix.
    """
    patterns = [head] if isinstance(head, str) else list(head)
    owners = sorted({p[:-1] for p, lay in entries.items() if lay.role != "vector"})
    heads = {m for m in owners if any(re.search(pat, "/".join(m), flags=re.IGNORECASE) for pat in patterns)}
    if patterns and not heads:
        names = ", ".join("/".join(m) for m in owners)
        raise ValueError(f"head={head!r} matches no module owning a matrix; the modules are: {names}")
    return heads


def last_dense(events: Sequence[tuple[Path | None, str]]) -> set[Path]:
    """The head from forward order: the module of the last ``"dense"`` event, none if the last is ``"attend"``."""
    known = [(path, kind) for path, kind in events if path is not None]
    if not known or known[-1][1] != "dense":
        return set()
    return {known[-1][0]}


def finish(
    entries: Mapping[Path, Layout],
    shapes: Mapping[Path, tuple[int, ...]],
    unknown: set[Path],
    heads: set[Path],
    overrides: Mapping[str, Any] | None,
    framework: str,
) -> Layouts:
    """Marks the ``heads``' matrices, applies ``overrides`` and refuses the unknown leaves they leave out."""
    out = {}
    for path, layout in entries.items():
        joined = "/".join(path)
        if path[:-1] in heads and layout.role != "vector" and path not in unknown:
            layout = layout._replace(role="head")
        rule = next((new for pat, new in (overrides or {}).items() if re.search(pat, joined, re.IGNORECASE)), None)
        if rule is not None:
            layout = as_layout(rule, layout, shapes[path])
        elif path in unknown:
            raise ValueError(
                f"{joined} (shape {shapes[path]}): no known {framework} module owns this parameter, so its fan-in, "
                f"fan-out and stack axes are unknown; pass overrides={{{joined!r}: normopt.layouts.Layout(...) or "
                "normopt.MatrixDims(...)} (or .override(...) on the result of another model)"
            )
        out[path] = layout
    return Layouts(out, framework, shapes)


def dense_kernel(n_batch: int, n_in: int, n_out: int, source: str) -> Layout:
    """A kernel ``[*batch, *in, *out]``."""
    return matrix(
        range(n_batch, n_batch + n_in),
        range(n_batch + n_in, n_batch + n_in + n_out),
        batch=range(n_batch),
        source=source,
    )


def einsum_kernel(einsum_str: str, source: str) -> Layout:
    """The kernel of ``einsum(einsum_str, x, kernel)``: contracted letters are fan-in, letters kept only from the
    kernel fan-out, letters shared by input, kernel and output (experts) batch; without both, a vector."""
    operands, out = einsum_str.replace(" ", "").replace(".", "").split("->")
    x, kernel = operands.split(",")
    fan_in = [i for i, c in enumerate(kernel) if c not in out]
    fan_out = [i for i, c in enumerate(kernel) if c in out and c not in x]
    batch = [i for i, c in enumerate(kernel) if c in out and c in x]
    if not fan_in or not fan_out:
        return vector(len(kernel), source=source)
    return matrix(fan_in, fan_out, batch=batch, source=source)


def conv_kernel(ndim: int, transposed: bool, source: str) -> Layout:
    """A conv kernel ``[*window, in, out]`` (``[*window, out, in]`` when ``transposed``): fan-in window and in."""
    window = tuple(range(ndim - 2))
    if transposed:
        return matrix(window + (ndim - 1,), (ndim - 2,), source=source)
    return matrix(window + (ndim - 2,), (ndim - 1,), source=source)


def eval_abstract(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``jax.eval_shape(fn, *args, **kwargs)`` where the array leaves are abstract and other leaves (flags,
    functions, strings) are passed through unchanged."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, x in enumerate(leaves) if isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))]

    def call(*values: Any) -> Any:
        full = list(leaves)
        for i, value in zip(dynamic, values, strict=True):
            full[i] = value
        a, k = jax.tree.unflatten(treedef, full)
        return fn(*a, **k)

    return jax.eval_shape(call, *[leaves[i] for i in dynamic])


@functools.cache
def _dense_classes() -> tuple[type, ...]:
    from flax import nnx as fnnx

    return fnnx.Linear, fnnx.LinearGeneral, fnnx.Einsum


@functools.cache
def _readers() -> tuple[tuple[type, Callable[[Any, str], Reading | None]], ...]:
    from flax import nnx as fnnx

    norms = (fnnx.LayerNorm, fnnx.RMSNorm, fnnx.BatchNorm, fnnx.GroupNorm, fnnx.InstanceNorm)
    return (
        (fnnx.Linear, _read_linear),
        (fnnx.LinearGeneral, _read_linear_general),
        (fnnx.Einsum, _read_einsum),
        ((fnnx.Conv, fnnx.ConvTranspose), _read_conv),
        (fnnx.Embed, _read_embed),
        (fnnx.LoRA, _read_lora),
        (norms, lambda module, name: (1, vector(1, source=_source(module)))),
    )


def _source(module: Any) -> str:
    return f"nnx:{type(module).__name__}"


def _read_nnx(module: Any, name: str) -> tuple[Reading | None, str]:
    """The reading a known module gives its parameter ``name``, and the owner's class name."""
    for classes, read in _readers():
        if isinstance(module, classes):
            return read(module, name), type(module).__name__
    return None, type(module).__name__


def _read_linear(module: Any, name: str) -> Reading | None:
    if name == "kernel":
        return 2, dense_kernel(0, 1, 1, _source(module))
    return (1, vector(1, source=_source(module))) if name == "bias" else None


def _read_linear_general(module: Any, name: str) -> Reading | None:
    nb, ni, no = len(module.batch_axis), len(module.in_features), len(module.out_features)
    if name == "kernel":
        return nb + ni + no, dense_kernel(nb, ni, no, _source(module))
    return (nb + no, vector(nb + no, batch=range(nb), source=_source(module))) if name == "bias" else None


def _read_einsum(module: Any, name: str) -> Reading | None:
    if name == "kernel":
        return len(module.kernel_shape), einsum_kernel(module.einsum_str, _source(module))
    if name == "bias":
        return len(module.bias_shape), vector(len(module.bias_shape), source=_source(module))
    return None


def _read_conv(module: Any, name: str) -> Reading | None:
    ndim = len(module.kernel_shape)
    if name == "kernel":
        return ndim, conv_kernel(ndim, getattr(module, "transpose_kernel", False), _source(module))
    return (1, vector(1, source=_source(module))) if name == "bias" else None


def _read_embed(module: Any, name: str) -> Reading | None:
    return (2, matrix((0,), (1,), role="embedding", source=_source(module))) if name == "embedding" else None


def _read_lora(module: Any, name: str) -> Reading | None:
    return (2, dense_kernel(0, 1, 1, _source(module))) if name in ("lora_a", "lora_b") else None


def _unstacked(module: Any | None, kernel_shape: tuple[int, ...] | None) -> bool:
    """Whether ``module``'s kernel has no stack axes (a stacked layer is never the model's head)."""
    reading = _read_nnx(module, "kernel")[0]
    return reading is not None and kernel_shape is not None and len(kernel_shape) == reading[0]


def _guess_heads(model: Any, dense: Sequence[Path]) -> set[Path]:
    """Rule 3: dense layers named like a head, else the last dense layer in definition order."""
    named = {p for p in dense if re.search(_names.HEAD, "/".join(p), flags=re.IGNORECASE)}
    if named:
        return named
    ordered = [p for p in _definition_order(model) if p in set(dense)]
    return {ordered[-1]} if ordered else set()


def _definition_order(node: Any, path: Path = (), seen: set[int] | None = None) -> Iterator[Path]:
    """Module paths in attribute insertion order (``vars``), depth first; each module once."""
    from flax import nnx as fnnx

    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    if isinstance(node, fnnx.Pytree):
        seen.add(id(node))
        yield path
        children = [(k, v) for k, v in vars(node).items() if not k.startswith("_pytree__")]
    elif isinstance(node, (list, tuple)):
        children = list(enumerate(node))
    elif isinstance(node, dict):
        children = list(node.items())
    else:
        return
    for key, child in children:
        yield from _definition_order(child, path + (str(key),), seen)


def _forward_events(model: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[Path | None, str]]:
    """``(module path, "dense" | "attend")`` for each dense call and ``Embed.attend`` of an abstract forward pass.

    The pass runs on a copy of ``model`` merged from abstract state inside ``jax.eval_shape``; each module of the
    copy carries its path as a static attribute, which survives ``nnx.scan``/``nnx.vmap`` inside the model.
    """
    from flax import nnx as fnnx

    graphdef, state = fnnx.split(model)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "dtype") else x, state)
    events: list[tuple[Path | None, str]] = []

    def run(state: Any, *a: Any, **k: Any) -> None:
        copy = fnnx.merge(graphdef, state)
        for p, node in fnnx.iter_graph(copy):
            if isinstance(node, fnnx.Module):
                object.__setattr__(node, _TAG, tuple(map(str, p)))
        copy(*a, **k)

    with _recording(events):
        eval_abstract(run, abstract, *args, **kwargs)
    return events


@contextlib.contextmanager
def _recording(events: list[tuple[Path | None, str]]) -> Iterator[None]:
    """Patches ``__call__`` of the dense classes and ``Embed.attend`` to append to ``events``; restores them.
    Not thread-safe: other threads calling these classes meanwhile are recorded too."""
    from flax import nnx as fnnx

    targets = [(cls, "__call__", "dense") for cls in _dense_classes()] + [(fnnx.Embed, "attend", "attend")]
    originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in targets]
    for cls, name, kind in targets:
        setattr(cls, name, _recorder(cls.__dict__[name], kind, events))
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def _recorder(method: Callable[..., Any], kind: str, events: list[tuple[Path | None, str]]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        events.append((getattr(self, _TAG, None), kind))
        return method(self, *args, **kwargs)

    return wrapper
