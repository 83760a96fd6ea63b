"""Reading compiled HLO: which collectives a jitted step runs and how many bytes each device receives.

Test and benchmark tooling (tests/test_sharding.py, tests/sharded_checks.py, benchmarks/sharded.py), not part of
the library::

    from benchmarks.hlo import collectives
    ops = collectives(jax.jit(step).lower(*args).compile().as_text())
"""

from __future__ import annotations

import math
import re

COLLECTIVES = ("all-to-all", "all-gather", "all-reduce", "reduce-scatter", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "c64": 8,
    "c128": 16,
}
_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Counts the collectives in compiled HLO (``jitted.lower(...).compile().as_text()``) and the bytes each
    device receives from them: ``{op: {"count": k, "bytes": b, "largest": l}}``, where b sums the ops' result
    shapes (the per-device buffer; for an all-to-all or all-gather that is what crosses the network, up to the
    local 1/D) and l is the largest single op's.
    """
    out = {op: {"count": 0, "bytes": 0, "largest": 0} for op in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if match is None:
            continue
        op = match.group(2)
        size = sum(
            _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
            for dtype, dims in _SHAPE.findall(match.group(1))
        )
        out[op]["count"] += 1
        out[op]["bytes"] += size
        out[op]["largest"] = max(out[op]["largest"], size)
    return out
