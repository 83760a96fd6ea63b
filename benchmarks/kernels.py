"""Orthogonalization kernels side by side: normopt.orthogonalize vs optax's Newton–Schulz, exact SVD, one GEMM.

    python benchmarks/kernels.py            # full run, writes benchmarks/results/kernels.{json,md}
    python benchmarks/kernels.py --quick    # ~30 s smoke run (smaller shapes, fewer repeats)
    python benchmarks/kernels.py --dtype bfloat16

One process; every function is jitted and compiled once, called twice to warm up, then timed in interleaved
rounds (each round calls every candidate once, so machine noise hits all of them alike) with
``block_until_ready``; the median is reported (min in the JSON too). The exact SVD is timed in 3 rounds only.

* FLOPs: the nominal Newton–Schulz count per step, 4mn² + 2n³ on the short side (m ≥ n), times steps and batch
  (REFERENCES §2), for every iterative method alike. Kernels that need fewer FLOPs (symmetric products, Gram-NS)
  therefore show more GFLOP/s than they execute.
* GEMM: one (n×n) @ (n×m) product on the short side, 2n²m FLOPs (the B·X product of each NS step), same dtype.
  ``gemm_fraction`` = kernel GFLOP/s / GEMM GFLOP/s of the same run.
* optax: ``optax.contrib._muon.orthogonalize_via_newton_schulz`` with the Jordan quintic for 5 steps, both as
  optax.contrib.muon passes it by default (a (3,) array → unrolled fori_loop: ``optax_jordan``) and as a
  (5, 3) table (scan: ``optax_jordan_table``). ``vs_optax`` = time / optax_jordan time, ``vs_optax_table`` = time /
  optax_jordan_table time (optax's fastest configuration), ``vs_default`` = time / normopt's 5-step
  ``polar_express`` time (the default kernel).
* ``turbo``: AOL-preconditioned Polar Express, 4 steps (Turbo-Muon). Its output is the polar factor of D X, a
  row-rescaled X, and is scored like every other row against the exact U Vᵀ of X itself.
* Accuracy on U diag(s) Vᵀ with s log-spaced in [1e-3, 1] (random orthogonal U, V; exact polar factor U Vᵀ):
  worst |σ − 1| over the output's singular values, and ‖O − U Vᵀ‖_F / ‖U Vᵀ‖_F (worst over batch slices).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib._muon import MuonDimensionNumbers, orthogonalize_via_newton_schulz

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from normopt.polar import default_steps, orthogonalize  # noqa: E402

FULL_SHAPES = [(256, 256), (1024, 1024), (1024, 4096), (4096, 1024), (12, 768, 768)]
QUICK_SHAPES = [(128, 128), (128, 512), (4, 96, 96)]
METHODS = ["polar_express", "turbo", "gram_newton_schulz", "jordan", "you", "svd"]
JORDAN = (3.4445, -4.7750, 2.0315)


def test_matrix(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(X, U Vᵀ) in float64: each slice U diag(s) Vᵀ with s log-spaced in [1e-3, 1]."""
    rng = np.random.default_rng(seed)
    *batch, m, n = shape
    k = min(m, n)
    xs, ps = [], []
    for _ in range(int(np.prod(batch, dtype=int))):
        u = np.linalg.qr(rng.standard_normal((m, k)))[0]
        v = np.linalg.qr(rng.standard_normal((n, k)))[0]
        xs.append((u * np.logspace(-3, 0, k)) @ v.T)
        ps.append(u @ v.T)
    return np.stack(xs).reshape(shape), np.stack(ps).reshape(shape)


def candidates(shape: tuple[int, ...], methods: list[str], dtype: str) -> dict:
    dims = MuonDimensionNumbers(len(shape) - 2, len(shape) - 1) if len(shape) > 2 else None
    jordan, table = jnp.asarray(JORDAN), jnp.tile(jnp.asarray(JORDAN), (5, 1))
    fns = {
        "optax_jordan": jax.jit(lambda x: orthogonalize_via_newton_schulz(x, jordan, 5, dimension_numbers=dims)),
        "optax_jordan_table": jax.jit(lambda x: orthogonalize_via_newton_schulz(x, table, 5, dimension_numbers=dims)),
    }
    for m in methods:
        fns[m] = jax.jit(lambda x, m=m: orthogonalize(x, m, compute_dtype=None if m == "svd" else dtype))
    return fns


def _time(fns: dict, args: dict, repeats: int) -> dict:
    for name, f in fns.items():  # compile + warm up
        for _ in range(2):
            jax.block_until_ready(f(*args[name]))
    times = {name: [] for name in fns}
    for i in range(repeats):
        for name, f in fns.items():
            if name == "svd" and i >= 3:  # the slow exact reference: 3 repeats are plenty
                continue
            start = time.perf_counter()
            jax.block_until_ready(f(*args[name]))
            times[name].append(time.perf_counter() - start)
    return times


def run_shape(shape: tuple[int, ...], methods: list[str], repeats: int = 5, dtype: str = "float32") -> list[dict]:
    """Time and score every candidate on one shape; returns one record per candidate."""
    x64, polar = test_matrix(shape)
    x = jnp.asarray(x64, dtype)
    *batch, m, n = shape
    batch, long, short = int(np.prod(batch, dtype=int)), max(m, n), min(m, n)
    step_flops = batch * (4 * long * short**2 + 2 * short**3)
    fns = candidates(shape, methods, dtype)
    bx = jnp.ones((*shape[:-2], short, short), dtype), jnp.ones((*shape[:-2], short, long), dtype)
    fns["gemm"] = jax.jit(lambda b, x: b @ x)
    args = {name: (x,) for name in fns} | {"gemm": bx}
    times = _time(fns, args, repeats)
    med = {name: float(np.median(t)) for name, t in times.items()}
    gemm_rate = 2 * batch * short**2 * long / med["gemm"]
    rows = []
    for name in fns:
        steps = 5 if name.startswith("optax") else (default_steps(name) if name in methods else None)
        row = {
            "shape": list(shape),
            "method": name,
            "dtype": dtype,
            "steps": steps,
            "ms": 1e3 * med[name],
            "ms_min": 1e3 * float(np.min(times[name])),
            "vs_optax": med[name] / med["optax_jordan"],
            "vs_optax_table": med[name] / med["optax_jordan_table"],
            "vs_default": med[name] / med["polar_express"] if "polar_express" in med else None,
        }
        if steps:
            row["gflops"] = steps * step_flops / med[name] / 1e9
            row["gemm_fraction"] = steps * step_flops / med[name] / gemm_rate
        elif name == "gemm":
            row["gflops"], row["gemm_fraction"] = gemm_rate / 1e9, 1.0
        if name != "gemm":
            out = np.asarray(fns[name](x), np.float64).reshape(batch, m, n)
            sv = np.linalg.svd(out, compute_uv=False)
            row["max_sigma_err"] = float(np.abs(sv - 1).max())
            err = np.linalg.norm(out - polar.reshape(batch, m, n), axis=(1, 2)) / np.sqrt(short)
            row["rel_fro_err"] = float(err.max())
        rows.append(row)
    return rows


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown"
    return f"{model}, {os.cpu_count()} cores"


def markdown(meta: dict, rows: list[dict]) -> str:
    head = (
        f"# Orthogonalization kernels ({meta['dtype']})\n\n`{meta['command']}` — {meta['date']}, jax "
        f"{meta['jax']}, optax {meta['optax']}, {meta['device']} ({meta['cpu']}); median of {meta['repeats']} "
        f"interleaved repeats; 1-min load average {meta['load_average_before']:.1f} → "
        f"{meta['load_average_after']:.1f} (other processes share the cores). GFLOP/s use the nominal 4mn²+2n³ "
        "per step; GEMM = one (n×n)@(n×m) product; "
        "σ-err = worst |σ−1|, fro-err = ‖O − UVᵀ‖_F/‖UVᵀ‖_F on a log-spaced spectrum in [1e-3, 1].\n\n"
        "| shape | method | steps | ms | GFLOP/s | of GEMM | vs optax | vs optax (table) | vs 5-step default | σ-err "
        "| fro-err |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    fmt = lambda v, f: "—" if v is None else format(v, f)
    body = "".join(
        f"| {'×'.join(map(str, r['shape']))} | {r['method']} | {fmt(r['steps'], 'd')} | {r['ms']:.1f} | "
        f"{fmt(r.get('gflops'), '.1f')} | {fmt(r.get('gemm_fraction'), '.0%')} | {r['vs_optax']:.2f} | "
        f"{r['vs_optax_table']:.2f} | {fmt(r.get('vs_default'), '.2f')} | "
        f"{fmt(r.get('max_sigma_err'), '.3f')} | {fmt(r.get('rel_fro_err'), '.3f')} |\n"
        for r in rows
    )
    return head + body + _target_lines(rows)


def _target_lines(rows: list[dict]) -> str:
    """Per shape: does ``turbo`` meet "≤ 0.85× the 5-step default's time at equal or better accuracy"?"""
    by_shape: dict[tuple, dict] = {}
    for r in rows:
        by_shape.setdefault(tuple(r["shape"]), {})[r["method"]] = r
    lines = []
    for shape, rs in by_shape.items():
        if "turbo" not in rs or "polar_express" not in rs:
            continue
        t, d = rs["turbo"], rs["polar_express"]
        fast = t["vs_default"] <= 0.85
        accurate = t["max_sigma_err"] <= d["max_sigma_err"] and t["rel_fro_err"] <= d["rel_fro_err"]
        verdict = "meets" if fast and accurate else "does not meet"
        lines.append(
            f"* {'×'.join(map(str, shape))}: turbo {verdict} the target — {t['vs_default']:.2f}× the default's time, "
            f"σ-err {t['max_sigma_err']:.3f} vs {d['max_sigma_err']:.3f}, "
            f"fro-err {t['rel_fro_err']:.3f} vs {d['rel_fro_err']:.3f}.\n"
        )
    head = "\nTarget (issue 16): turbo at ≤ 0.85× the 5-step default's time with equal or better accuracy.\n\n"
    return head + "".join(lines) if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repeats (~30 s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"), help="output folder")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    meta = {
        "command": "python benchmarks/kernels.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "cpu": _cpu(),
        "dtype": args.dtype,
        "repeats": repeats,
        "load_average_before": os.getloadavg()[0],
    }
    rows = []
    for shape in shapes:
        rows += run_shape(shape, args.methods, repeats, args.dtype)
        for r in rows[-len(args.methods) - 3 :]:
            print(
                f"{'×'.join(map(str, shape)):>12} {r['method']:>20} {r['ms']:9.1f} ms  "
                f"{r.get('gflops', float('nan')):6.1f} GFLOP/s  {r.get('gemm_fraction', float('nan')):5.0%} of GEMM  "
                f"{r['vs_optax']:5.2f}× optax  {r['vs_default'] or float('nan'):5.2f}× default  "
                f"σ-err {r.get('max_sigma_err', float('nan')):.3f}  "
                f"fro-err {r.get('rel_fro_err', float('nan')):.3f}",
                flush=True,
            )
    meta["load_average_after"] = os.getloadavg()[0]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "kernels" + ("_quick" if args.quick else "") + ("" if args.dtype == "float32" else f"_{args.dtype}")
    (out / f"{stem}.json").write_text(json.dumps({**meta, "results": rows}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(meta, rows))
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
