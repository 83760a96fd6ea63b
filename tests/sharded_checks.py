"""Sharded-optimizer checks on 8 simulated CPU devices; run by tests/test_sharding.py in a subprocess.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_checks.py [--full] > results.json

Prints one JSON object ``{check: {...measurements...}}``; the test file holds the assertions, so a failing check
names itself. Every reference is computed on one device (no mesh) from the same inputs.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/ is a script folder

import normopt  # noqa: E402
from benchmarks.hlo import collectives  # noqa: E402
from normopt import sharding as nsh  # noqa: E402

MODES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}


def fsdp_params(rng):
    """Mixed shapes and shardings, uneven groups: 64×32 ×2 (FSDP- and TP-style), 32×32 ×(1 + 3 scanned), a conv
    kernel read as 72×16, a bias."""
    shapes = {
        "w_in": ((64, 32), P("x", None)),
        "w_in2": ((64, 32), P(None, "x")),
        "hidden": ((32, 32), P("x", None)),
        "scan": ((3, 32, 32), P(None, "x", None)),
        "conv": ((3, 3, 8, 16), P(None, None, None, "x")),
        "bias": ((32,), P("x")),
    }
    return shapes, {k: rng.standard_normal(s).astype(np.float32) for k, (s, _) in shapes.items()}


def fsdp_tp_params(rng):
    """FSDP × tensor parallelism on a ('data', 'model') mesh: matrices split over both axes, a replicated gain."""
    shapes = {
        "up": ((32, 64), P("data", "model")),
        "down": ((64, 32), P("model", "data")),
        "up2": ((32, 64), P("data", "model")),
        "scan": ((3, 64, 32), P(None, "model", "data")),
        "gain": ((32,), P()),
    }
    return shapes, {k: rng.standard_normal(s).astype(np.float32) for k, (s, _) in shapes.items()}


def put(mesh, shapes, values):
    return {k: jax.device_put(values[k], NamedSharding(mesh, shapes[k][1])) for k in values}


def loss(params):
    return sum(jnp.sum(jnp.sin(p) * p) for p in jax.tree.leaves(params))


def train(opts, params, steps=2, init_jit=False, extra=None):
    """``steps`` steps of every optimizer in ``opts`` ({name: tx}) from ``params``, all in one jitted function;
    ``extra`` ({name: {keyword: value}}) holds extra ``update`` arguments (QK-Clip's ``max_logits``).

    Returns ({name: final params}, {name: final state}, compiled HLO text)."""
    init = lambda p: {k: tx.init(p) for k, tx in opts.items()}
    states = jax.jit(init)(params) if init_jit else init(params)

    def step(ps, ss):
        out_p, out_s = {}, {}
        for k, tx in opts.items():
            u, out_s[k] = tx.update(jax.grad(loss)(ps[k]), ss[k], ps[k], **(extra or {}).get(k, {}))
            out_p[k] = optax.apply_updates(ps[k], u)
        return out_p, out_s

    ps = {k: params for k in opts}
    jitted = jax.jit(step)
    hlo = jitted.lower(ps, states).compile().as_text()
    for _ in range(steps):
        ps, states = jitted(ps, states)
    return ps, states, hlo


def rel_err(final, reference, start):
    """max |Δ − Δ_ref| / max |Δ_ref| over all leaves, Δ the change of the parameters."""
    leaves = lambda t: [np.asarray(x, np.float64) for x in jax.tree.leaves(t)]
    delta = [f - s for f, s in zip(leaves(final), leaves(start), strict=True)]
    ref = [r - s for r, s in zip(leaves(reference), leaves(start), strict=True)]
    return max(float(np.max(np.abs(d - r))) for d, r in zip(delta, ref, strict=True)) / max(
        float(np.max(np.abs(r))) for r in ref
    )


def specs_kept(params, tree):
    """True when every array in ``tree`` shaped like a param has that param's sharding (state included)."""
    by_shape = {}
    for p in jax.tree.leaves(params):
        by_shape.setdefault(p.shape, []).append(p.sharding)
    return all(
        any(x.sharding.is_equivalent_to(s, x.ndim) for s in by_shape[x.shape])
        for x in jax.tree.leaves(tree)
        if x.shape in by_shape
    )


KERNEL = {"method": "jordan"}  # one scan per kernel: the cheapest to compile (Gram-NS would add restarts)


def vector_or_matrix(path, leaf):
    return normopt.norms.rms_to_rms(**KERNEL) if leaf.ndim >= 2 else "rms"


def unsharded_transforms():
    """Every normopt alias without ``sharding=`` (Scion runs layer-sharded in :func:`sharded_transforms`)."""
    weighted = normopt.norms.weighted_max("linf")
    return {
        "sign_sgd": normopt.sign_sgd(0.1, momentum=0.9),
        "normalized_sgd": normopt.normalized_sgd(0.1),
        "l1": normopt.steepest_descent(0.1, "l1"),
        "rms_regularized": normopt.steepest_descent(1e-4, "rms", mode="regularized"),
        "weighted_max": normopt.steepest_descent(1e-3, weighted, mode="regularized"),
        "muon": normopt.muon(0.1, weight_decay=0.1, **KERNEL),
        "dion": normopt.dion(0.1, rank=4, weight_decay=0.1),
    }


def sharded_transforms(layer):
    """The transformations with a ``sharding=`` argument, layer-sharded, named like their references."""
    weighted = normopt.norms.weighted_max(vector_or_matrix, {k: 2.0 for k in fsdp_params(np.random.default_rng(0))[0]})
    return {
        "scion": normopt.scion(0.1, constrained=True, sharding=layer, **KERNEL),
        "weighted_max": optax.chain(normopt.dualize(weighted, "regularized", sharding=layer), optax.sgd(1e-3)),
    }


def reference_transforms():
    weighted = normopt.norms.weighted_max(vector_or_matrix, {k: 2.0 for k in fsdp_params(np.random.default_rng(0))[0]})
    return {
        "scion": normopt.scion(0.1, constrained=True, **KERNEL),
        "weighted_max": optax.chain(normopt.dualize(weighted, "regularized"), optax.sgd(1e-3)),
    }


def muon(layer):
    return {"muon": normopt.muon(0.05, weight_decay=0.1, sharding=layer, **KERNEL)}


def check(results, name, final, reference, start, params, state, hlo=None):
    for k in final:
        entry = {
            "rel_err": rel_err(final[k], reference[k], start),
            "specs_kept": specs_kept(params, (final[k], state[k])),
        }
        if hlo is not None:
            entry["collectives"] = collectives(hlo)
        results[f"{name}/{k}"] = entry


def frontier_params(rng):
    """The frontier optimizers' tree: FSDP- and TP-style 64×32 matrices, a scanned stack, a bias, and an attention's
    query/key kernels [in, heads, head_dim] (QK-Clip rescales their heads). No optimizer-state vector has a
    parameter's shape (NorMuon's per-neuron ν is (32,) or (2, 32), the bias (24,)), so :func:`specs_kept` cannot
    match a state vector to the wrong parameter."""
    shapes = {
        "w_in": ((64, 32), P("x", None)),
        "w_in2": ((64, 32), P(None, "x")),
        "scan": ((2, 64, 32), P(None, None, "x")),
        "bias": ((24,), P("x")),
        "attn": {
            "query": {"kernel": ((64, 4, 8), P("x", None, None))},
            "key": {"kernel": ((64, 4, 8), P(None, None, "x"))},
        },
    }
    is_spec = lambda x: isinstance(x, tuple) and isinstance(x[1], P)
    values = jax.tree.map(lambda s: rng.standard_normal(s[0]).astype(np.float32), shapes, is_leaf=is_spec)
    return jax.tree.map(lambda s: s[1], shapes, is_leaf=is_spec), values


MAX_LOGITS = {"attn": jnp.array([4.0, 0.5, 2.0, 1.0])}  # heads 0 and 2 above the threshold 1: clipped


def frontier_transforms(layer):
    """NorMuon, MuonH, PolarGrad and MuonClip layer-sharded (``layer``; None: the reference); AdamH, manifold Muon,
    SOAP and SPlus have no ``sharding=`` and run on the sharded params as they are. SOAP/SPlus rotate only sides
    ≤ 32, whose factors G Gᵀ have full rank here: a rank-deficient factor's null-space basis is arbitrary (and
    differs between compilations), which no sharded run could reproduce."""
    return {
        "normuon": normopt.normuon(0.05, weight_decay=0.1, sharding=layer, **KERNEL),
        "muonh": normopt.muonh(0.05, sharding=layer, **KERNEL),
        "adamh": normopt.adamh(0.05),
        "manifold_muon": normopt.manifold_muon(0.05, dual_steps=20),
        "soap": normopt.soap(0.01, precondition_frequency=2, max_precond_dim=32),
        "splus": normopt.splus(0.01, precondition_frequency=2, max_precond_dim=32),
        "polargrad": normopt.polargrad(0.01, sharding=layer, **KERNEL),
        "muon_clip": normopt.muon_clip(0.05, threshold=1.0, weight_decay=0.1, sharding=layer, **KERNEL),
    }


def frontier(results, mode: str):
    """Three steps (SOAP's first only builds its basis) of every frontier optimizer on an 8-device ``mode`` mesh."""
    specs, values = frontier_params(np.random.default_rng(2))
    start = jax.tree.map(jnp.asarray, values)
    extra = {"muon_clip": {"max_logits": MAX_LOGITS}}
    reference, _, _ = train(frontier_transforms(None), start, steps=3, extra=extra)
    mesh = jax.make_mesh((8,), ("x",), axis_types=(MODES[mode],))
    with jax.set_mesh(mesh):
        params = jax.tree.map(lambda v, s: jax.device_put(v, NamedSharding(mesh, s)), values, specs)
        txs = frontier_transforms(nsh.layer_sharded(mesh))
        final, state, _ = train(txs, params, steps=3, init_jit=mode == "explicit", extra=extra)
    check(results, f"frontier/{mode}", final, reference, start, params, state)


def main(full: bool):
    """``full`` also runs every transformation on the Auto mesh (slow: eager init of sharded state)."""
    results = {}
    shapes, values = fsdp_params(np.random.default_rng(0))
    start = jax.tree.map(jnp.asarray, values)
    reference, _, _ = train(
        {
            **unsharded_transforms(),
            **{f"{k}_layer": tx for k, tx in reference_transforms().items()},
            "muon_layer": muon(None)["muon"],
        },
        start,
    )
    for mode, axis_type in MODES.items():
        mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
        with jax.set_mesh(mesh):
            params = put(mesh, shapes, values)
            layer = nsh.layer_sharded(mesh)
            if mode == "explicit" or full:
                txs = {**unsharded_transforms(), **{f"{k}_layer": tx for k, tx in sharded_transforms(layer).items()}}
                final, state, _ = train(txs, params, init_jit=mode == "explicit")
                check(results, f"fsdp/{mode}", final, reference, start, params, state)
            final, state, hlo = train({"muon_layer": muon(layer)["muon"]}, params, init_jit=mode == "explicit")
            check(results, f"fsdp/{mode}", final, reference, start, params, state, hlo)
            if mode == "explicit":
                final, state, hlo = train({"dion": unsharded_transforms()["dion"]}, params, init_jit=True)
                check(results, "fsdp/explicit/hlo", final, reference, start, params, state, hlo)
    shapes, values = fsdp_tp_params(np.random.default_rng(1))
    start = jax.tree.map(jnp.asarray, values)
    reference, _, _ = train({"muon_layer": muon(None)["muon"]}, start)
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    with jax.set_mesh(mesh):
        params = put(mesh, shapes, values)
        final, state, hlo = train({"muon_layer": muon(nsh.layer_sharded(mesh))["muon"]}, params, init_jit=True)
        check(results, "fsdp_tp/explicit", final, reference, start, params, state, hlo)
    frontier(results, "explicit")
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main("--full" in sys.argv)
