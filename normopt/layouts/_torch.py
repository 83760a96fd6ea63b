"""Reading parameter trees ported from PyTorch state dicts (``weight`` is ``[out, in]``).

Also home of the helpers every ``[out, in]`` reader shares (:func:`choose_head`, :func:`settle`), which
:func:`normopt.layouts.equinox` uses too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from normopt.layouts import _names
from normopt.layouts._core import Layout, Layouts, as_layout, leaves_with_paths, matrix, vector

Path = tuple[str, ...]
Readings = dict[Path, Layout | None]
"""A reading per leaf; None for a leaf no rule reads (an error unless ``overrides`` names it)."""


def torch(
    params: Any, *, head: str | Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Layouts:
    """Reads a parameter tree ported from a PyTorch ``state_dict`` by the PyTorch conventions.

    ``params`` is a nested dict (``{"encoder": {"fc1": {"weight": w}}}``) or a flat dict with dotted keys
    (``{"encoder.layers.0.fc1.weight": w}``), or a mix. A leaf's path is the tuple of its keys; a dotted key is kept
    as given, as one path element, so ``head``/``overrides`` regexes (searched case-insensitively) see
    ``"encoder.layers.0.fc1.weight"`` (``.`` in a regex matches the dot). The rules below split dotted keys into
    names. Leaves are read, in the dict's own order, by their last name:

    * 1-D or 0-D leaves, ``bias`` (also ``*_bias``, ``bias_*``), and norm weights (a ``*norm*``/``ln_*`` module's
      ``weight``, any ``scale``/``gamma``): vectors;
    * 2-D ``weight`` (also ``*_weight`` such as ``nn.MultiheadAttention``'s ``in_proj_weight``, and ``weight_*``
      such as an RNN's ``weight_ih_l0``): ``nn.Linear``'s ``[out, in]``, so fan-in axis 1 and fan-out axis 0;
    * 2-D ``weight`` of a module named like an embedding (:data:`normopt.layouts.EMBEDDING`: ``wte``, ``wpe``,
      ``embed_tokens``, ``word_embeddings``, ``pos_emb``, ...): ``nn.Embedding``'s ``[num_embeddings, dim]``,
      role ``"embedding"``, fan-in axis 0, fan-out axis 1;
    * ≥ 3-D ``weight``: ``nn.Conv*d``'s ``[out, in/groups, *window]``, fan-in axes ``1..ndim-1``, fan-out axis 0.
      ``nn.ConvTranspose*d`` stores ``[in, out/groups, *window]`` instead; give those an override;
    * ``transformers``' ``Conv1D`` (PyTorch GPT-2's ``c_attn``, ``c_fc``, ``c_proj``) stores ``[in, out]`` under the
      name ``weight``; give those an override, e.g. ``{"c_(attn|fc|proj)[.]weight$": MatrixDims(fan_in=0,
      fan_out=1)}``;
    * any other leaf with ≥ 2 dimensions raises ``ValueError`` naming it unless ``overrides`` covers it.

    The head (role ``"head"``, the layer producing the model's output) is: the matrices whose path matches
    ``head`` (a regex or a sequence of regexes; ``head=()`` for none); else the last matrix whose names match
    :data:`normopt.layouts.HEAD` (``lm_head``, ``classifier``, ``head``, ``cls``, top-level ``fc_out``...); else the
    last 2-D ``weight`` in the dict's order that is not an embedding.

    Args:
      params: the parameter tree (arrays or anything with a ``shape``).
      head: regex(es) naming the head, overriding the guess above.
      overrides: ``{path regex: Layout | MatrixDims | role}`` applied last, first match wins. A role name keeps
        the reading above (for a leaf no rule reads: ``[..., out, in]`` with leading stack axes).

    Returns:
      The :class:`~normopt.layouts.Layouts` of every leaf, with source ``"torch"``.
    """
    pairs = list(_in_order(params))
    shapes = {path: tuple(leaf.shape) for path, leaf in pairs}
    readings = {path: _read(_split(path), shape) for path, shape in shapes.items()}
    chosen = _guess_head(readings, shapes) if head is None else matching(readings, head)
    return settle(choose_head(readings, chosen), shapes, "torch", overrides)


def _in_order(tree: Any, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """``(path, leaf)`` in the dict's insertion order (``jax.tree_util`` sorts dict keys)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _in_order(value, (*prefix, str(key)))
    else:
        for path, leaf in leaves_with_paths(tree):
            yield (*prefix, *path), leaf


def _split(path: Path) -> Path:
    return tuple(name for key in path for name in key.split("."))


def _read(names: Path, shape: tuple[int, ...]) -> Layout | None:
    """The PyTorch reading of the leaf called ``names`` (dotted keys split), or None if no rule reads it."""
    ndim, last = len(shape), names[-1].lower()
    if ndim < 2 or _is_named(last, "bias") or _names.is_norm_scale(names):
        return vector(ndim, source="torch")
    if not _is_named(last, "weight"):
        return None
    if ndim > 2:
        return matrix(range(1, ndim), (0,), source="torch")
    owner = names[-2] if len(names) >= 2 else ""
    if re.search(_names.EMBEDDING, owner, flags=re.IGNORECASE):
        return matrix((0,), (1,), role="embedding", source="torch")
    return matrix((1,), (0,), source="torch")


def _is_named(name: str, kind: str) -> bool:
    return name == kind or name.endswith(f"_{kind}") or name.startswith(f"{kind}_")


def _guess_head(readings: Readings, shapes: Mapping[Path, tuple[int, ...]]) -> list[Path]:
    last_2d = [p for p, r in readings.items() if r is not None and r.role == "hidden" and len(shapes[p]) == 2][-1:]
    return named_head(readings) or last_2d


def named_head(readings: Readings) -> list[Path]:
    """The last hidden matrix whose names (dotted keys split) match :data:`normopt.layouts.HEAD`, if any."""
    hidden = [p for p, r in readings.items() if r is not None and r.role == "hidden"]
    return [p for p in hidden if re.search(_names.HEAD, "/".join(_split(p)), flags=re.IGNORECASE)][-1:]


def matching(readings: Readings, head: str | Sequence[str]) -> list[Path]:
    """The matrices whose ``/``-joined path matches one of the ``head`` regexes; ``ValueError`` if none does."""
    patterns = (head,) if isinstance(head, str) else tuple(head)
    found = [
        path
        for path, reading in readings.items()
        if reading is not None
        and reading.role != "vector"
        and any(re.search(p, "/".join(path), flags=re.IGNORECASE) for p in patterns)
    ]
    if patterns and not found:
        some = ", ".join("/".join(p) for p, r in readings.items() if r is not None and r.role != "vector")
        raise ValueError(f"head={head!r} matches no matrix parameter; the matrices are: {some}")
    return found


def choose_head(readings: Readings, heads: Sequence[Path]) -> Readings:
    """``readings`` with role ``"head"`` for the matrices at ``heads``."""
    return {p: r._replace(role="head") if p in heads else r for p, r in readings.items()}


def settle(
    readings: Readings, shapes: Mapping[Path, tuple[int, ...]], framework: str, overrides: Mapping[str, Any] | None
) -> Layouts:
    """Applies ``overrides`` (first matching regex wins) and raises for any leaf still unread."""
    out = {}
    for path, reading in readings.items():
        joined, shape = "/".join(path), shapes[path]
        rule = _first_rule(overrides or {}, joined)
        if rule is not None:
            reading = as_layout(rule, reading or _out_in(len(shape)), shape)
        elif reading is None:
            raise ValueError(
                f"{joined} (shape {shape}): layouts.{framework}(...) has no rule for this {len(shape)}-D leaf, so its "
                f"fan-in and fan-out axes are unknown; pass overrides={{{re.escape(joined)!r}: Layout | MatrixDims | "
                "role}} (a role reads it as [..., out, in])"
            )
        out[path] = reading
    return Layouts(out, framework, shapes)


def _first_rule(overrides: Mapping[str, Any], joined: str) -> Any:
    return next((new for pattern, new in overrides.items() if re.search(pattern, joined, flags=re.IGNORECASE)), None)


def _out_in(ndim: int) -> Layout:
    """``[..., out, in]`` with leading stack axes: the reading a role override applies to an unread leaf."""
    return matrix((ndim - 1,), (ndim - 2,), batch=range(ndim - 2), source="user")
