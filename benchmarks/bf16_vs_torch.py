"""bf16 round-off of normopt's polar kernels next to PyTorch re-implementations of the published code.

For each kernel the metric is ‖O_bf16 − O_fp32‖_F / ‖O_fp32‖_F (its bf16 result against its own fp32 result, same
code), mean over seeds, on Gaussian matrices; the ratio normopt/torch says how much more (>1) or less (<1) bf16
round-off normopt's kernel picks up than the reference does. References, written here in torch:

* Jordan: KellerJordan/Muon ``zeropower_via_newtonschulz5`` — X = G.bfloat16(); X /= X.norm() + 1e-7; transpose if
  tall; 5 × {A = X Xᵀ; B = b·A + c·A A; X = a·X + B X} with (a, b, c) = (3.4445, −4.7750, 2.0315).
* Polar Express: the authors' code — ``POLAR_EXPRESS_TABLE`` with safety 1.01 on all rows but the last
  (a/1.01, b/1.01³, c/1.01⁵), X = G.bfloat16(), transpose if tall, X /= 1.01·‖X‖_F + 1e-7 (norm of the bf16 X,
  as in their code), first 5 rows, same update.

The fp32 reference is the same code in float32. normopt: ``orthogonalize(x, "jordan")``,
``orthogonalize(x, "polar_express_reference")`` and the default ``orthogonalize(x, "polar_express")``, each with
``compute_dtype="bfloat16"`` against the fp32 default. The same float32 inputs go to both sides through .npy files;
the torch part runs as a subprocess of this file under a separate interpreter (torch is not a project dependency):

    .venv/bin/python benchmarks/bf16_vs_torch.py [--torch-python /tmp/tref/bin/python]
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "bf16_vs_torch.md"
WORK = Path("/tmp/bf16_vs_torch")
SHAPES = [(64, 64), (256, 256), (128, 512), (512, 128)]
SEEDS = [0, 1, 2, 3]
STEPS = 5
JORDAN = (3.4445, -4.7750, 2.0315)
SAFETY = 1.01


def _name(shape: tuple[int, int], seed: int) -> str:
    return f"{shape[0]}x{shape[1]}_s{seed}"


# ---------------------------------------------------------------- torch side (runs under the torch interpreter)


def _torch_main(work: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    table = np.load(work / "pe_table.npy")  # POLAR_EXPRESS_TABLE, float64, saved by the normopt side
    pe = [(float(a) / SAFETY, float(b) / SAFETY**3, float(c) / SAFETY**5) for a, b, c in table[:-1]]
    pe.append(tuple(float(v) for v in table[-1]))

    def muon_ns5(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # KellerJordan/Muon
        a, b, c = JORDAN
        x = g.to(dtype)
        if g.size(-2) > g.size(-1):
            x = x.mT
        x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        for _ in range(STEPS):
            A = x @ x.mT
            B = b * A + c * A @ A
            x = a * x + B @ x
        if g.size(-2) > g.size(-1):
            x = x.mT
        return x

    def polar_express(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # Amsel et al., authors' code
        x = g.to(dtype)
        if g.size(-2) > g.size(-1):
            x = x.mT
        # as in the authors' code: the norm of the bf16 X (‖G‖_F in fp32 would promote X to fp32 with keepdim)
        x = x / (x.norm(dim=(-2, -1), keepdim=True) * SAFETY + 1e-7)
        for a, b, c in pe[:STEPS]:
            A = x @ x.mT
            B = b * A + c * A @ A
            x = a * x + B @ x
        if g.size(-2) > g.size(-1):
            x = x.mT
        return x

    out = {}
    for shape in SHAPES:
        for seed in SEEDS:
            g = torch.from_numpy(np.load(work / f"{_name(shape, seed)}.npy"))
            for tag, fn in (("jordan", muon_ns5), ("pe", polar_express)):
                for dname, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                    y = fn(g, dtype)
                    assert y.dtype == dtype, (tag, dname, y.dtype)
                    out[f"{tag}_{dname}_{_name(shape, seed)}"] = y.float().numpy()
    np.savez(work / "torch_out.npz", **out)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)


# ---------------------------------------------------------------- normopt side


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="/tmp/tref/bin/python")
    parser.add_argument("--_torch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._torch:
        _torch_main(WORK)
        return

    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT))
    import normopt
    from normopt.polar import POLAR_EXPRESS_TABLE

    WORK.mkdir(parents=True, exist_ok=True)
    np.save(WORK / "pe_table.npy", POLAR_EXPRESS_TABLE)
    inputs = {}
    for shape in SHAPES:
        for seed in SEEDS:
            g = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
            np.save(WORK / f"{_name(shape, seed)}.npy", g)
            inputs[(shape, seed)] = g

    proc = subprocess.run(
        [args.torch_python, str(Path(__file__).resolve()), "--_torch"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"torch subprocess failed:\n{proc.stdout}\n{proc.stderr}")
    torch_info = proc.stdout.strip().splitlines()[-1]
    tout = np.load(WORK / "torch_out.npz")

    def ortho(x, method, dtype):
        return np.asarray(normopt.orthogonalize(jnp.asarray(x), method, compute_dtype=dtype))

    rows = []
    for shape in SHAPES:
        acc: dict[str, list[float]] = {}
        for seed in SEEDS:
            g, key = inputs[(shape, seed)], _name(shape, seed)
            res = {}
            for tag, method in (("jordan", "jordan"), ("ref", "polar_express_reference"), ("pe", "polar_express")):
                res[f"n_{tag}_bf16"] = ortho(g, method, "bfloat16")
                res[f"n_{tag}_fp32"] = ortho(g, method, None)
            for tag in ("jordan", "pe"):
                res[f"t_{tag}_bf16"] = tout[f"{tag}_bf16_{key}"]
                res[f"t_{tag}_fp32"] = tout[f"{tag}_fp32_{key}"]
            metrics = {
                "nj": _rel(res["n_jordan_bf16"], res["n_jordan_fp32"]),
                "tj": _rel(res["t_jordan_bf16"], res["t_jordan_fp32"]),
                "nr": _rel(res["n_ref_bf16"], res["n_ref_fp32"]),
                "np": _rel(res["n_pe_bf16"], res["n_pe_fp32"]),
                "tp": _rel(res["t_pe_bf16"], res["t_pe_fp32"]),
                # sanity: fp32 normopt vs fp32 torch (the references are the same algorithm)
                "xj": _rel(res["n_jordan_fp32"], res["t_jordan_fp32"]),
                "xr": _rel(res["n_ref_fp32"], res["t_pe_fp32"]),
                "xp": _rel(res["n_pe_fp32"], res["t_pe_fp32"]),
            }
            for k, v in metrics.items():
                acc.setdefault(k, []).append(v)
        m = {k: float(np.mean(v)) for k, v in acc.items()}
        rows.append((shape, m))

    def f(v: float) -> str:
        return f"{v:.2e}"

    header = (
        "| shape | Jordan normopt | Jordan torch | ratio | PE-ref normopt | PE torch | ratio "
        "| PE default normopt | ratio | fp32 Δ Jordan | fp32 Δ PE-ref | fp32 Δ PE default |"
    )
    lines = [header, "|" + "---|" * 12]
    for shape, m in rows:
        lines.append(
            f"| {shape[0]}×{shape[1]} | {f(m['nj'])} | {f(m['tj'])} | {m['nj'] / m['tj']:.2f} "
            f"| {f(m['nr'])} | {f(m['tp'])} | {m['nr'] / m['tp']:.2f} | {f(m['np'])} | {m['np'] / m['tp']:.2f} "
            f"| {f(m['xj'])} | {f(m['xr'])} | {f(m['xp'])} |"
        )
    table = "\n".join(lines)
    print(table)

    command = "python " + " ".join(["benchmarks/bf16_vs_torch.py", *sys.argv[1:]])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    text = f"""# bf16 vs fp32: normopt's polar kernels next to PyTorch references

`{command}` — {now}, jax {jax.__version__} ({jax.default_backend()}), {torch_info}; torch run as a subprocess
with `{args.torch_python}`.

Each entry is ‖O_bf16 − O_fp32‖_F / ‖O_fp32‖_F — a kernel's bf16 result against the same kernel's fp32 result —
mean over seeds {SEEDS} of float32 Gaussian inputs (numpy `default_rng(seed).standard_normal`, the same arrays fed
to both libraries), {STEPS} steps. "ratio" = normopt / torch (> 1: normopt's bf16 kernel strays further from its own
fp32 result than the reference does). References: Jordan = KellerJordan/Muon `zeropower_via_newtonschulz5`
(bf16 norm, no safety); PE torch = Polar Express authors' code (table with 1.01 safety on all rows but the last,
X = G.bfloat16() / (1.01·‖X‖_F + 1e-7), norm of the bf16 X as in their code). normopt columns:
`orthogonalize(x, "jordan")`, `orthogonalize(x, "polar_express_reference")`, default
`orthogonalize(x, "polar_express")` (its ratio is against PE torch), each with `compute_dtype="bfloat16"` vs the
fp32 default. The last three columns are a sanity check, ‖normopt fp32 − torch fp32‖/‖torch fp32‖ (PE default
against PE torch differs by design: Schatten-8 rescale, Gram-NS on the 1:4 shapes).

{table}
"""
    RESULT.write_text(text)
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
