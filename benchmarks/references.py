"""Reproducing the references: normopt side by side with small float64 numpy re-implementations.

For each published algorithm normopt names, run normopt (fp32) and the reference on the same parameters and
gradients for a few steps and print a markdown table (docs/references.md):

* "reproduced": max|Δ|/max|ref| over all steps and leaves with the reproduction options;
* "defaults": the same with those options dropped (the problem's own hyperparameters, lr, β, ε, …, kept), i.e.
  what normopt's defaults change.

The references are imported from the test suite (tests/test_reference_conventions.py, tests/test_family_references.py
via tests/references.py), so this script and the tests check against the same code; only Scion's optimizer loop and
its LMOs (LIONS-EPFL/scion ``scion.py``, in PyTorch's ``[out, in]`` layout) are written here, on top of the
tests' Newton–Schulz reference. The optax.contrib.muon row compares against optax itself (fp32).

    .venv/bin/python benchmarks/references.py        # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests import their helpers as top-level modules

import references as ref  # noqa: E402  (tests/references.py)
import test_family_references as tfr  # noqa: E402
import test_reference_conventions as trc  # noqa: E402

import normopt  # noqa: E402

STEPS = 4
ROWS: list[tuple[str, str, str, str]] = []
ABLATIONS: list[tuple[str, str, str]] = []  # (reference, option dropped, max rel per top-level leaf)


def max_rel(got, want) -> float:
    """max|got − want| / max|want| in float64."""
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def worst(got_seq, want_seq) -> float:
    """The largest max_rel over steps and leaves (pytrees of the same structure)."""
    out = 0.0
    for got, want in zip(got_seq, want_seq, strict=True):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            out = max(out, max_rel(g, w))
    return out


def run(tx, grads, params=None):
    """Updates of ``tx`` for the gradient sequence (params fixed, as the tests do)."""
    return tfr._run(tx, grads, params)[0]


def per_key(got_seq, want_seq) -> str:
    """max_rel over steps, per top-level key of the param dict."""
    return ", ".join(f"{k} {worst([g[k] for g in got_seq], [w[k] for w in want_seq]):.1e}" for k in want_seq[0])


def ablate(reference: str, make, repro: dict, grads, params, want) -> None:
    """Each reproduction option back to its default, one at a time."""
    for name, value in repro.items():
        kw = {k: v for k, v in repro.items() if k != name}
        ABLATIONS.append((reference, f"`{name}={value!r}`", per_key(run(make(**kw), grads, params), want)))


def fmt(x: float) -> str:
    return "—" if x is None else f"{x:.1e}"


def row(reference: str, call: str, reproduced: float, default: float | None) -> None:
    ROWS.append((reference, f"`{call}`", fmt(reproduced), fmt(default)))
    print(f"  {reference}: {reproduced:.2e} / {default if default is None else f'{default:.2e}'}", file=sys.stderr)


def f32(rng, shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


# ------------------------------------------------------------------------------------------------ Muon
def muon_rows() -> None:
    rng = np.random.default_rng(0)
    shapes = {"hidden": (40, 24), "bias": (24,)}  # fan_out < fan_in: the scale rules differ
    params = {k: f32(rng, s) for k, s in shapes.items()}
    grads = [{k: f32(rng, s) for k, s in shapes.items()} for _ in range(STEPS)]
    want = trc.jordan_muon(params, grads, 0.02)
    repro = dict(method="jordan", scale="jordan", debias=False, adam_nesterov=False)
    got = run(normopt.muon(0.02, **repro), grads, params)
    row(
        "KellerJordan/Muon (Jordan et al. 2024)",
        'normopt.muon(lr, method="jordan", scale="jordan", debias=False, adam_nesterov=False)',
        worst(got, want),
        worst(run(normopt.muon(0.02), grads, params), want),
    )
    ablate("KellerJordan/Muon", lambda **kw: normopt.muon(0.02, **kw), repro, grads, params, want)

    # optax.contrib.muon: the reference is optax itself (fp32, same gradients)
    params = {"a": f32(rng, (32, 64)), "b": f32(rng, (64, 16)), "c": f32(rng, (16,))}
    grads = [jax.tree.map(lambda x: f32(rng, x.shape), params) for _ in range(STEPS)]
    want = run(optax.contrib.muon(0.02), grads, params)
    row(
        "optax.contrib.muon (optax itself, fp32)",
        'normopt.muon(lr, method="jordan", scale="jordan", fallback_roles=())',
        worst(run(normopt.muon(0.02, method="jordan", scale="jordan", fallback_roles=()), grads, params), want),
        worst(run(normopt.muon(0.02), grads, params), want),
    )


# ------------------------------------------------------------------------------------------------ Polar Express
def _published_modded_nanogpt_table() -> np.ndarray:
    """The published table pinned in tests/test_reference_conventions.py (read from its source, not copied)."""
    tree = ast.parse(inspect.getsource(trc.test_generator_can_place_the_safety_factor_inside_the_recursion))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "published":
            return np.array(ast.literal_eval(node.value.args[0]))
    raise LookupError("published table not found")


def polar_express_rows() -> None:
    rng = np.random.default_rng(3)
    reproduced = default = 0.0
    for shape in [(32, 32), (24, 64), (80, 20)]:
        g = rng.standard_normal(shape)
        want = trc.authors_polar_express(g)
        x = jnp.asarray(g, jnp.float32)
        reproduced = max(reproduced, max_rel(normopt.orthogonalize(x, "polar_express_reference"), want))
        default = max(default, max_rel(normopt.orthogonalize(x), want))
    row(
        "Polar Express iteration (Amsel et al. 2025), 32², 24×64, 80×20",
        'normopt.orthogonalize(x, "polar_express_reference")',
        reproduced,
        default,
    )
    published = _published_modded_nanogpt_table()
    kw = dict(steps=5, lower=1e-3, safety=1.02, cushion=0.02)
    row(
        "Polar Express generator (authors' code; modded-nanogpt's 5-row table)",
        "polar.polar_express_coefficients(steps=5, lower=1e-3, safety=1.02, cushion=0.02, safety_in_recursion=True)",
        max_rel(normopt.polar.polar_express_coefficients(**kw, safety_in_recursion=True), published),
        max_rel(normopt.polar.polar_express_coefficients(**kw), published),
    )
    row(
        "Polar Express published table (ℓ = 1e-3, no safety)",
        "polar.polar_express_coefficients(safety=1.0)",
        max_rel(normopt.polar.polar_express_coefficients(safety=1.0), normopt.polar.POLAR_EXPRESS_TABLE),
        None,
    )


# ------------------------------------------------------------------------------------------------ Scion
# LIONS-EPFL/scion's LMOs on a PyTorch [out, in] gradient (float64; its Spectral runs Jordan's NS5).
def col_norm(g, normalized=False, transpose=False):
    g = g.T if transpose else g
    rms = np.sqrt(np.sum(g**2, axis=0, keepdims=True)) / np.sqrt(g.shape[0])
    rms = rms * g.shape[1] if normalized else rms
    g = g / (rms + 1e-8)
    return g.T if transpose else g


def row_norm(g, normalized=True):
    rms = np.sqrt(np.sum(g**2, axis=-1, keepdims=True))
    rms = rms * np.sqrt(g.shape[-1]) if normalized else rms
    return g / (rms + 1e-8)


def bias_rms(g):
    return g / (np.sqrt(np.mean(g**2, axis=0, keepdims=True)) + 1e-8)


def sign_lmo(g, normalized=True):
    return np.sign(g) / (g.shape[1] if normalized else 1)


def spectral_lmo(g, normalized=True, max_=False):
    d_out, d_in = g.shape
    scale = np.sqrt(d_out / d_in) if normalized else np.sqrt(d_out)
    scale = max(1.0, scale) if max_ else scale
    return scale * trc.jordan_newton_schulz(g)


def spectral_conv_lmo(g):
    out_c, in_c, k, _ = g.shape
    return trc.jordan_newton_schulz(g.reshape(out_c, -1)).reshape(g.shape) * np.sqrt(out_c / in_c) / k**2


def scion_reference(params, grads, lr, alpha, radii, light=False):
    """Scion (constrained, the default) or ScionLight on Flax-layout params; returns the per-step updates.

    Scion: buf ← (1 − α)·buf + α·g, W ← (1 − lr)·W − lr·ρ·lmo(buf). ScionLight keeps the un-normalized sum in the
    gradient buffer: G ← G + g, lmo(G), then G ← (1 − α)·G."""
    lmo = {  # Flax leaf -> torch layout -> LMO -> back
        ("Embed_0", "embedding"): lambda g: col_norm(g, transpose=True),  # nn.Embedding weight is [vocab, dim]
        ("Dense_0", "kernel"): lambda g: spectral_lmo(g.T).T,
        ("Dense_0", "bias"): bias_rms,
        ("head", "kernel"): lambda g: sign_lmo(g.T).T,
    }
    p = {k: np.asarray(v, np.float64) for k, v in flat(params).items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for grads_t in grads:
        upd = {}
        for k, g in flat(grads_t).items():
            g = np.asarray(g, np.float64)
            buf[k] = buf[k] + g if light else (1 - alpha) * buf[k] + alpha * g
            upd[k] = -lr * radii[k] * lmo[k](buf[k]) - lr * p[k]
            if light:
                buf[k] = (1 - alpha) * buf[k]
        out.append(unflat(upd))
    return out


def flat(tree):
    return {(a, b): v for a, sub in tree.items() for b, v in sub.items()}


def unflat(d):
    out: dict = {}
    for (a, b), v in d.items():
        out.setdefault(a, {})[b] = v
    return out


def scion_rows() -> None:
    rng = np.random.default_rng(2)
    shapes = {
        "Embed_0": {"embedding": (10, 8)},
        "Dense_0": {"kernel": (8, 16), "bias": (16,)},
        "head": {"kernel": (16, 4)},
    }
    params = jax.tree.map(lambda s: f32(rng, s), shapes, is_leaf=lambda s: isinstance(s, tuple))
    grads = [jax.tree.map(lambda x: f32(rng, x.shape), params) for _ in range(STEPS)]
    radii = {
        ("Embed_0", "embedding"): 1.5,
        ("Dense_0", "kernel"): 2.0,
        ("Dense_0", "bias"): 1.0,
        ("head", "kernel"): 3.0,
    }
    kw = dict(radius=2.0, embedding_radius=1.5, head_radius=3.0, beta=0.9)
    call = 'normopt.scion(lr, constrained=True, head_norm="sign", method="jordan", beta=1 − momentum, radius=ρ, …)'
    got = run(normopt.scion(0.1, constrained=True, head_norm="sign", method="jordan", **kw), grads, params)
    default = run(normopt.scion(0.1, **kw), grads, params)
    for light, name in ((False, "Scion"), (True, "ScionLight")):
        want = scion_reference(params, grads, 0.1, 0.1, radii, light=light)
        if not light:
            repro = dict(constrained=True, head_norm="sign", method="jordan")
            ablate("Scion", lambda **o: normopt.scion(0.1, **o, **kw), repro, grads, params, want)
        row(
            f"{name} (Pethick et al. 2025), nanoGPT recipe: Sign head, constrained",
            call,
            worst(got, want),
            worst(default, want),
        )

    # The LMOs one at a time: Flax [fan_in, fan_out] gradient G, PyTorch G.T.
    n = normopt.norms
    g = rng.standard_normal((12, 20))
    cases = [
        (
            "ColNorm (embedding, transpose=True)",
            "norms.l1_to_rms()",
            n.l1_to_rms(),
            n.l1_to_rms(),
            col_norm(g, transpose=True),
        ),
        ("RowNorm", "norms.rms_to_linf()", n.rms_to_linf(), n.rms_to_linf(), row_norm(g.T).T),
        ("Sign", 'norms.sign()  (scion(head_norm="sign"))', n.sign(), n.rms_to_linf(), sign_lmo(g.T).T),
        (
            "Spectral()",
            'norms.rms_to_rms(method="jordan")',
            n.rms_to_rms(method="jordan"),
            n.rms_to_rms(),
            spectral_lmo(g.T).T,
        ),
        (
            "Spectral(normalized=False)",
            'norms.spectral(scale="fan_out", method="jordan")',
            n.spectral(scale="fan_out", method="jordan"),
            n.rms_to_rms(),
            spectral_lmo(g.T, normalized=False).T,
        ),
        (
            "Spectral(max=True)",
            'norms.spectral(scale="jordan", method="jordan")',
            n.spectral(scale="jordan", method="jordan"),
            n.rms_to_rms(),
            spectral_lmo(g, max_=True).T,  # on the 20×12 Flax gradient g.T: d_out 12 < d_in 20, max(1, ·) acts
        ),
        ("BiasRMS", "norms.rms()", n.rms(), n.rms(), bias_rms(g[0])),
    ]
    for name, call, norm, default_norm, want in cases:
        x = jnp.asarray(g[0] if name == "BiasRMS" else g.T if "max" in name else g, jnp.float32)
        row(f"Scion LMO {name}", call, max_rel(norm.dualize(x), want), max_rel(default_norm.dualize(x), want))

    k, cin, cout = 3, 4, 5
    kernel = rng.standard_normal((k, k, cin, cout))  # Flax [kh, kw, in, out]
    want = np.transpose(spectral_conv_lmo(np.transpose(kernel, (3, 2, 0, 1))), (2, 3, 1, 0))
    lay = normopt.layouts.Layout("hidden", (0, 1, 2), (3,))
    x = jnp.asarray(kernel, jnp.float32)
    got = n.with_layout(n.spectral_conv(window=k * k, method="jordan"), lay).dualize(x)
    default = n.with_layout(n.rms_to_rms(), lay).dualize(x)  # what muon/scion give a conv kernel by default
    row(
        "Scion LMO SpectralConv (3×3)",
        'norms.spectral_conv(window=9, method="jordan")',
        max_rel(got, want),
        max_rel(default, want),
    )


# ------------------------------------------------------------------------------------------------ family
def dion_rows() -> None:
    rng = np.random.default_rng(0)
    shape = (24, 10)
    grads = [f32(rng, shape) for _ in range(STEPS)]
    c = np.sqrt(shape[1] / shape[0])

    def reference_of(tx):
        q0 = np.asarray(tx.init(grads[0]).q)
        return [c * e for e in ref.dion(grads, q0, mu=0.9, power_iters=3)], q0

    tx = normopt.scale_by_dion(rank=0.25, rank_multiple_of=4, power_iters=3, beta=0.9)
    want, _ = reference_of(tx)
    row(
        "Dion (Ahn et al. 2025; microsoft/dion options), 24×10",
        "normopt.scale_by_dion(rank=0.25, rank_multiple_of=4, power_iters=3, beta=0.9)",
        worst(run(tx, grads), want),
        worst(run(normopt.scale_by_dion(rank=0.25, beta=0.9), grads), want),
    )


def fadam_rows() -> None:
    rng = np.random.default_rng(1)
    grads = [jnp.asarray(0.05 * rng.standard_normal(16), jnp.float32) for _ in range(STEPS)]
    kw = dict(b1=0.9, b2=0.99, eps=0.05, clip=1.0, p=0.75)  # small gradients, large ε: the placement matters
    default = run(normopt.scale_by_fadam(**kw), grads)
    for placement in ("outside", "power", "inside"):
        want = ref.fadam(grads, **kw, placement=placement)
        got = run(normopt.scale_by_fadam(**kw, eps_placement=placement), grads)
        row(
            f'FAdam (Hwang 2024), ε placement "{placement}", p = 0.75',
            f'normopt.scale_by_fadam(eps_placement="{placement}")',
            worst(got, want),
            worst(default, want),
        )


def shampoo_rows() -> None:
    rng = np.random.default_rng(3)
    grads = [f32(rng, (5, 3)) for _ in range(STEPS)]
    want = ref.shampoo_absolute(grads, 0.1)
    row(
        "Shampoo (Gupta et al. 2018), L₀ = ε·I, ε = 0.1",
        'normopt.scale_by_shampoo(beta=1.0, eps=0.1, ridge="absolute")',
        worst(run(normopt.scale_by_shampoo(beta=1.0, eps=0.1, ridge="absolute"), grads), want),
        worst(run(normopt.scale_by_shampoo(beta=1.0, eps=0.1), grads), want),
    )


# ------------------------------------------------------------------------------------------------ bf16 kernel
def bf16_rows() -> list[tuple[str, str, str]]:
    """‖bf16 − fp32‖_F / ‖fp32‖_F of the kernel, mean over 4 seeds of 64×64 Gaussians (as the test)."""
    before = {"jordan": 0.051, "polar_express": 0.083}  # bf16 coefficients, measured before the fix
    out = []
    for method in ("jordan", "polar_express"):
        errors = []
        for seed in range(4):
            x = jnp.asarray(np.random.default_rng(seed).standard_normal((64, 64)), jnp.float32)
            hi = normopt.orthogonalize(x, method)
            lo = normopt.orthogonalize(x, method, compute_dtype="bfloat16")
            errors.append(float(jnp.linalg.norm(lo - hi) / jnp.linalg.norm(hi)))
        out.append((method, f"{np.mean(errors):.3f}", f"{before[method]:.3f}"))
        print(f"  bf16 {method}: {np.mean(errors):.4f}", file=sys.stderr)
    return out


def main() -> None:
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}, {STEPS} steps", file=sys.stderr
    )
    for part in (muon_rows, polar_express_rows, scion_rows, dion_rows, fadam_rows, shampoo_rows):
        part()
    bf16 = bf16_rows()
    print("| reference | normopt call | reproduced | defaults |")
    print("|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print()
    print("| reference | reproduction option put back to its default | max rel. difference per leaf |")
    print("|---|---|---|")
    for r in ABLATIONS:
        print("| " + " | ".join(r) + " |")
    print()
    print(
        "| bf16 kernel, 64×64 Gaussians | bf16 vs fp32 now (fp32 coefficients) | before the fix (bf16 coefficients) |"
    )
    print("|---|---|---|")
    for method, now, before in bf16:
        print(f'| `orthogonalize(x, "{method}", compute_dtype="bfloat16")` | {now} | {before} |')


if __name__ == "__main__":
    main()
