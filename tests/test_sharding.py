"""Layer-sharded dualization and Dion on a mesh: 8 simulated CPU devices and two real processes, each run in a
subprocess (tests/sharded_checks.py, tests/multiprocess_worker.py) so this session keeps its single device."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a script folder, not installed

import normopt  # noqa: E402
from benchmarks.hlo import collectives  # noqa: E402
from normopt import sharding as nsh  # noqa: E402

TESTS = Path(__file__).parent
XLA_8 = "--xla_force_host_platform_device_count=8"


def run_checks(*args: str, timeout: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": XLA_8, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(TESTS / "sharded_checks.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def checks():
    return run_checks(timeout=400)


TRANSFORMS = [
    "sign_sgd",
    "normalized_sgd",
    "l1",
    "rms_regularized",
    "weighted_max",
    "muon",
    "dion",
    "scion_layer",
    "weighted_max_layer",
]
SHARDED = [f"fsdp/explicit/{t}" for t in TRANSFORMS] + [
    "fsdp/explicit/muon_layer",
    "fsdp/auto/muon_layer",
    "fsdp_tp/explicit/muon_layer",
    "fsdp/explicit/hlo/dion",
]


@pytest.mark.slow  # the `checks` fixture: an 8-device subprocess (tests/sharded_checks.py)
@pytest.mark.parametrize("name", SHARDED)
def test_sharded_run_equals_single_device_and_keeps_shardings(checks, name):
    """Two jitted steps on the mesh move the parameters as on one device (relative to the step size), and every
    parameter-shaped array in the new params and optimizer state has its parameter's sharding."""
    entry = checks[name]
    assert entry["rel_err"] <= 1e-5
    assert entry["specs_kept"]


# Bounds on rel_err, from the measured values (8 simulated CPU devices, 3 steps): the Muon-direction optimizers
# ~1e-6. AdamH 1–3e-5: Adam's m/(√v + ε) of the first step amplifies round-off where v is small, and the sphere
# step rescales it to the radius. SOAP ~4e-4: the same Adam division, in the eigenbasis of G Gᵀ whose smallest
# eigenvectors move with round-off. SPlus ~3e-3: sign(·) in the eigenbasis flips entries that round-off moves
# across 0 (a discrete step of one entry).
FRONTIER = {
    "normuon": 1e-5,
    "muonh": 1e-5,
    "polargrad": 1e-5,
    "muon_clip": 1e-5,
    "manifold_muon": 1e-5,
    "adamh": 1e-4,
    "soap": 2e-3,
    "splus": 1e-2,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FRONTIER))
def test_frontier_optimizer_on_explicit_mesh_equals_single_device(checks, name):
    """Three jitted steps on an explicit 8-device mesh (NorMuon, MuonH, PolarGrad and MuonClip layer-sharded; AdamH,
    manifold Muon, SOAP and SPlus on the sharded params, XLA placing the collectives) move the parameters as on one
    device, and the new params and every parameter-shaped state array keep the parameters' shardings."""
    entry = checks[f"frontier/explicit/{name}"]
    assert entry["rel_err"] <= FRONTIER[name]
    assert entry["specs_kept"]


@pytest.mark.slow
def test_layer_sharded_muon_exchanges_whole_matrices(checks):
    """Explicit mesh: one all-to-all in and one out per group of (matrix shape, source layout) — 4 groups here —
    and nothing else: no all-gather (no device sees the whole stack), no all-reduce (no Gram matrices)."""
    ops = checks["fsdp/explicit/muon_layer"]["collectives"]
    assert ops["all-to-all"]["count"] == 8
    assert all(ops[op]["count"] == 0 for op in ("all-gather", "all-reduce", "reduce-scatter"))


@pytest.mark.slow
def test_layer_sharded_muon_on_auto_mesh_and_two_axes(checks):
    auto = checks["fsdp/auto/muon_layer"]["collectives"]
    assert 2 <= auto["all-to-all"]["count"] <= 8
    two_axes = checks["fsdp_tp/explicit/muon_layer"]["collectives"]
    assert two_axes["all-to-all"]["count"] >= 2
    for ops in (auto, two_axes):
        assert all(ops[op]["count"] == 0 for op in ("all-gather", "all-reduce", "reduce-scatter"))


@pytest.mark.slow
def test_dion_never_gathers_a_matrix(checks):
    """Dion on FSDP-sharded matrices communicates only thin factors: every collective is smaller than the
    smallest matrix (32×32 fp32 = 4096 bytes)."""
    ops = checks["fsdp/explicit/hlo/dion"]["collectives"]
    assert ops["all-gather"]["count"] + ops["all-reduce"]["count"] > 0
    assert max(v["largest"] for v in ops.values()) < 32 * 32 * 4


@pytest.mark.slow
def test_every_transformation_on_auto_mesh():
    results = run_checks("--full", timeout=900)
    for t in TRANSFORMS:
        assert results[f"fsdp/auto/{t}"]["rel_err"] <= 1e-5
        assert results[f"fsdp/auto/{t}"]["specs_kept"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three processes joined by jax.distributed
def test_two_processes_train_like_one(tmp_path):
    """Two processes joined by jax.distributed (gloo, 2 CPU devices each) train an MLP for 3 steps with layer-sharded
    Muon on a 4-device mesh; the parameters equal a one-process, one-device run."""
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    worker = str(TESTS / "multiprocess_worker.py")
    outs = [tmp_path / "p0.npz", tmp_path / "p1.npz", tmp_path / "ref.npz"]
    commands = [
        [sys.executable, worker, "0", "2", str(port), str(outs[0])],
        [sys.executable, worker, "1", "2", str(port), str(outs[1])],
        [sys.executable, worker, "0", "1", "0", str(outs[2])],
    ]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands
    ]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    got, ref = np.load(outs[0]), np.load(outs[2])
    assert int(got["processes"]) == 2 and int(got["devices"]) == 4
    for k in ("w0", "w1", "w2", "b0"):
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- in this process


def test_layer_sharded_rejects_bad_arguments():
    mesh = jax.make_mesh((1,), ("x",))
    with pytest.raises(ValueError, match="axes"):
        nsh.layer_sharded(mesh, "y")
    with pytest.raises(TypeError, match="mesh"):
        nsh.layer_sharded("x")


@pytest.mark.slow  # compiles the layer-sharded path
def test_one_device_layer_sharding_is_the_plain_dualization():
    """With one device the strategy only stacks and pads: same numbers as dualizing each leaf."""
    rng = np.random.default_rng(0)
    g = {
        "a": rng.standard_normal((6, 4)),
        "b": rng.standard_normal((2, 6, 4)),
        "c": rng.standard_normal((4, 6)),
        "v": rng.standard_normal(5),
    }
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g)
    rule = lambda path, x: normopt.norms.rms_to_rms() if x.ndim >= 2 else normopt.norms.rms()
    mesh = jax.make_mesh((1,), ("x",))
    want = normopt.dualize(rule).update(g, None)[0]
    got = normopt.dualize(rule, sharding=nsh.layer_sharded(mesh)).update(g, None)[0]
    with jax.set_mesh(mesh):  # an Explicit context mesh, replicated inputs
        got_in_mesh = jax.jit(normopt.dualize(rule, sharding=nsh.layer_sharded(mesh)).update)(g, None)[0]
    for k in g:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(got_in_mesh[k]), np.asarray(want[k]), atol=1e-6)


def test_collectives_parser_reads_shapes_and_counts():
    hlo = "\n".join(
        [
            "  %all-to-all.1 = (f32[8,1,4]{2,1,0}, f32[8,1,4]{2,1,0}) all-to-all(%a, %b), channel_id=1",
            "  %gte = f32[8,1,4]{2,1,0} get-tuple-element(%all-to-all.1), index=0",
            "  %all-gather-start = bf16[64,32]{1,0} all-gather-start(%c), dimensions={0}",
            "  %all-gather-done = bf16[64,32]{1,0} all-gather-done(%all-gather-start)",
            "  %all-reduce = f32[] all-reduce(%d), to_apply=%add",
        ]
    )
    ops = collectives(hlo)
    assert ops["all-to-all"] == {"count": 1, "bytes": 2 * 8 * 4 * 4, "largest": 2 * 8 * 4 * 4}
    assert ops["all-gather"] == {"count": 1, "bytes": 64 * 32 * 2, "largest": 64 * 32 * 2}
    assert ops["all-reduce"] == {"count": 1, "bytes": 4, "largest": 4}
    assert ops["collective-permute"]["count"] == 0
