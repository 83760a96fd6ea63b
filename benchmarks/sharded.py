"""Communication and step time of spectral optimizers on 8 simulated CPU devices (FSDP-sharded matrices).

    python benchmarks/sharded.py            # writes benchmarks/results/sharded.{json,md}

Rows: optax.contrib.muon on an Auto mesh (it raises on an Explicit mesh, recorded as such), normopt.muon with its
per-leaf kernel on an Auto mesh, normopt.muon with ``sharding=layer_sharded(mesh)`` on Explicit and Auto meshes,
and normopt.dion (rank 1/4). Muon rows use the same kernel as optax (Jordan's 5-step Newton–Schulz, its shape
scale), so they differ only in where the matrices are. Bytes are read from the compiled HLO: the result buffers of
every collective, per device per step (:func:`benchmarks.hlo.collectives`). The 8 "devices" share this machine's
CPU cores, so step times compare the programs' total work and copies, not a real network.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repo root
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import normopt  # noqa: E402
from benchmarks.hlo import collectives  # noqa: E402
from normopt import sharding as nsh  # noqa: E402

LAYERS = 4
SHAPES = {"attn_q": (256, 256), "attn_o": (256, 256), "mlp_in": (256, 1024), "mlp_out": (1024, 256)}
RESULTS = pathlib.Path(__file__).parent / "results"


def make_params(mesh):
    rng = np.random.default_rng(0)
    return {
        f"layer{i}": {
            k: jax.device_put(rng.standard_normal(s).astype(np.float32) / np.sqrt(s[0]), NamedSharding(mesh, P("x")))
            for k, s in SHAPES.items()
        }
        for i in range(LAYERS)
    }


def measure(name, make_opt, axis_type, repeats=10):
    mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
    row = {"optimizer": name, "mesh": axis_type.name}
    with jax.set_mesh(mesh):
        params = make_params(mesh)
        grads = jax.tree.map(lambda p: p * 0.5 + 0.1, params)
        opt = make_opt(mesh)
        try:
            state = opt.init(params)

            def step(p, s, g):
                u, s = opt.update(g, s, p)
                return optax.apply_updates(p, u), s

            jitted = jax.jit(step)
            t0 = time.perf_counter()
            compiled = jitted.lower(params, state, grads).compile()
            row["compile_s"] = round(time.perf_counter() - t0, 2)
        except Exception as e:  # a peer that cannot run here: record the error, as the README table shows it
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            return row
        ops = collectives(compiled.as_text())
        row["collectives"] = {k: v["count"] for k, v in ops.items() if v["count"]}
        row["bytes_per_step"] = sum(v["bytes"] for v in ops.values())
        row["largest_collective_bytes"] = max(v["largest"] for v in ops.values())
        jax.block_until_ready(compiled(params, state, grads))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(params, state, grads))
            times.append(time.perf_counter() - t0)
        row["step_ms"] = round(1e3 * statistics.median(times), 2)
    return row


def main():
    jordan = {"method": "jordan", "scale": "jordan"}
    cases = [
        ("optax.contrib.muon", lambda mesh: optax.contrib.muon(0.02), AxisType.Auto),
        ("optax.contrib.muon", lambda mesh: optax.contrib.muon(0.02), AxisType.Explicit),
        ("normopt.muon (per leaf)", lambda mesh: normopt.muon(0.02, **jordan), AxisType.Auto),
        ("normopt.muon (per leaf)", lambda mesh: normopt.muon(0.02, **jordan), AxisType.Explicit),
        (
            "normopt.muon (layer-sharded)",
            lambda mesh: normopt.muon(0.02, sharding=nsh.layer_sharded(mesh), **jordan),
            AxisType.Explicit,
        ),
        (
            "normopt.muon (layer-sharded)",
            lambda mesh: normopt.muon(0.02, sharding=nsh.layer_sharded(mesh), **jordan),
            AxisType.Auto,
        ),
        ("normopt.dion (rank 1/4)", lambda mesh: normopt.dion(0.02, rank=0.25), AxisType.Explicit),
    ]
    rows = []
    for case in cases:
        rows.append(measure(*case))
        print(rows[-1], flush=True)
    matrices = LAYERS * sum(a * b for a, b in SHAPES.values()) * 4
    header = {
        "devices": 8,
        "params_bytes": matrices,
        "layers": LAYERS,
        "shapes": SHAPES,
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "optax": optax.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharded.json").write_text(json.dumps({"setup": header, "rows": rows}, indent=2))
    base = next(r for r in rows if "step_ms" in r and r["optimizer"] == "optax.contrib.muon")
    lines = [
        f"{LAYERS} layers × {{256×256 ×2, 256×1024, 1024×256}} fp32 matrices ({matrices / 2**20:.1f} MiB), FSDP "
        "P('x', None) over 8 simulated CPU devices; bytes = per device per step, from the compiled HLO.",
        "",
        "| optimizer | mesh | collectives | bytes / step | largest op | step ms | vs optax |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['optimizer']} | {r['mesh']} | fails: `{r['error']}` | | | | |")
            continue
        ops = ", ".join(f"{k} ×{v}" for k, v in r["collectives"].items()) or "none"
        lines.append(
            f"| {r['optimizer']} | {r['mesh']} | {ops} | {r['bytes_per_step'] / 2**10:,.0f} KiB | "
            f"{r['largest_collective_bytes'] / 2**10:,.0f} KiB | {r['step_ms']:.1f} | "
            f"{r['step_ms'] / base['step_ms']:.2f}× |"
        )
    table = "\n".join(lines)
    (RESULTS / "sharded.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
