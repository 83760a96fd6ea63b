"""``normopt.describe``: which norm, reading and scale every leaf gets, found through any optax wrapper.

Every normopt optimizer (and :func:`normopt.dualize`) records its rule when its ``init`` runs. :func:`describe`
runs the given transformation's ``init`` abstractly (``jax.eval_shape``, no computation) and collects what was
recorded, so it sees through ``optax.chain``, ``inject_hyperparams``, ``MultiSteps``, ``masked``, ``partition``,
``apply_if_finite`` and any wrapper that initializes its inner transformation.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from normopt import _numerics, layouts, partition
from normopt import norms as norms_lib
from normopt.layouts import LAST_RESORT, _names

_RECORDS: contextvars.ContextVar[list | None] = contextvars.ContextVar("normopt_describe", default=None)
COLUMNS = ("path", "shape", "role", "norm", "fan_in", "fan_out", "batch_axes", "scale", "source", "note")


def record(rule: partition.Rule, layout: layouts.LayoutSpec, params: Any) -> None:
    """Called by ``init`` of normopt transformations: remembers which leaves ``rule`` acts on (while describing)."""
    found = _RECORDS.get()
    if found is not None:
        paths = {_numerics.path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
        found.append((rule, layout, paths))


@contextlib.contextmanager
def _recording() -> Iterator[list]:
    found: list = []
    token = _RECORDS.set(found)
    try:
        yield found
    finally:
        _RECORDS.reset(token)


def describe(
    params: Any,
    optimizer_or_norms: Any,
    *,
    layout: layouts.LayoutSpec = None,
    print_fn: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Prints (and returns) per leaf: path, shape, role, norm, fan-in/fan-out, stack axes, scale, where the reading
    comes from, and a note on suspicious readings.

    Args:
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``s; an NNX ``nnx.State`` works).
      optimizer_or_norms: a normopt optimizer or any optax transformation wrapping one or more of them
        (``optax.chain``, ``inject_hyperparams``, ``MultiSteps``, ``masked``, ...), or a
        :data:`normopt.norms.NormSpec` / :class:`normopt.norms.WeightedMax` (read with ``layout``).
      layout: only for a NormSpec: how leaves are read (see :data:`normopt.layouts.LayoutSpec`).
      print_fn: where the table goes (None: only return the rows).

    Returns:
      One dict per leaf with the keys in :data:`COLUMNS`. The note flags a side of length 1, a fan-in equal to a
      stack depth of the model, a 2-D leaf named like a norm scale, and a ≥ 3-D leaf read only from its name.
      Leaves no normopt rule covers (e.g. masked out) show the norm ``"-"``.

    Raises:
      ValueError / TypeError: as the optimizer's ``init`` would, naming the leaf.

    Examples:
      >>> import jax.numpy as jnp, normopt
      >>> rows = normopt.describe({"w": jnp.zeros((4, 8))}, normopt.muon(1e-2), print_fn=None)
      >>> rows[0]["norm"], rows[0]["fan_in"], rows[0]["fan_out"]
      ('rms_to_rms', 4, 8)
    """
    if hasattr(optimizer_or_norms, "init") and hasattr(optimizer_or_norms, "update"):
        with _recording() as found:
            jax.eval_shape(optimizer_or_norms.init, params)
        if not found:
            raise ValueError(
                "describe found no normopt optimizer inside this transformation (its init never initialized one); "
                "pass a normopt optimizer, a transformation that wraps one, or a norm spec"
            )
    else:
        from normopt.transforms import tree_rule  # transforms imports this module

        spec = optimizer_or_norms
        if isinstance(spec, norms_lib.WeightedMax):
            spec = spec.norms
        found = [(tree_rule(spec, params, layout), layout, None)]
    flat = [(_numerics.path_names(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]
    rows = [_row(path, x, found) for path, x in flat]
    depths = {int(r.pop("_depth")) for r in rows if r.get("_depth")}
    for r in rows:
        r.pop("_depth", None)
        if r["fan_in"] in depths and not r["batch_axes"] and "" != r["fan_out"]:
            r["note"] = _join(r["note"], f"fan-in equals the stack depth {r['fan_in']}: a stack read as one matrix?")
    if print_fn is not None:
        print_fn(table(rows))
    return rows


def _row(path: tuple[str, ...], x: Any, found: list) -> dict[str, Any]:
    shape = tuple(jnp.shape(x))
    where = "/".join(path) or "<root>"
    row = {c: "" for c in COLUMNS} | {"path": where, "shape": str(shape), "norm": "-"}
    for rule, layout, paths in found:
        if paths is not None and path not in paths:
            continue
        lay = layouts.read(path, shape, layout)
        row.update(lay.describe(shape))
        chosen = rule(path, x)
        if isinstance(chosen, norms_lib.Norm):
            try:
                row.update(chosen.describe(shape))
            except ValueError as e:
                raise ValueError(f"{where} (shape {shape}): {e}") from None
        else:
            row["norm"] = "identity" if chosen is None else chosen
        row["note"] = _notes(path, shape, lay)
        row["_depth"] = shape[lay.batch[0]] if lay.batch else 0
        break
    return row


def _notes(path: tuple[str, ...], shape: tuple[int, ...], lay: layouts.Layout) -> str:
    notes = []
    size = lambda axes: int(jnp.prod(jnp.array([shape[a] for a in axes]))) if axes else 0
    if lay.fan_in and 1 in (size(lay.fan_in), size(lay.fan_out)):
        notes.append("a side of length 1: a vector read as a matrix?")
    if len(shape) == 2 and lay.source == LAST_RESORT and _names.is_norm_scale(path):
        notes.append("2-D leaf named like a norm scale: read as a stack of vectors?")
    if len(shape) >= 3 and lay.source == LAST_RESORT:
        notes.append("≥3-D leaf read only from its name: pass a layout from normopt.layouts")
    return "; ".join(notes)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (empty columns dropped)."""
    cols = [c for c in COLUMNS if any(str(r[c]) for r in rows) or c in ("path", "norm")]
    width = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)
