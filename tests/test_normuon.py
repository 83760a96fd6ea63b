"""NorMuon (normopt/family/normuon.py) against a float64 numpy re-implementation of the authors' update rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import normopt
from normopt.family.normuon import normuon, scale_by_neuron_rms


def _polar(x: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def _authors_steps(p, grads, *, lr, wd, beta=0.95, b2=0.95, nesterov=True, paper=False):
    """The authors' ``normuon_update`` + ``SingleDeviceNorMuon.step`` (github.com/zichongli5/NorMuon, normuon.py at
    d45c9a4) in float64 on one ``[out, in]`` matrix, the Newton–Schulz kernel replaced by the exact polar factor.
    ``paper=True``: the paper's learning rate η̂ = 0.2·η·√(mn)/‖Ô‖_F instead of the code's norm-preserving
    rescaling times √max(1, out/in). Returns the parameters after each step."""
    p = np.array(p, np.float64)
    m, v = np.zeros_like(p), np.zeros((p.shape[0], 1))
    out = []
    for g in grads:
        m = beta * m + (1 - beta) * g  # momentum.lerp_(grad, 1 − β)
        u = (1 - beta) * g + beta * m if nesterov else m  # grad.lerp_(momentum, β)
        o = _polar(u)
        norm = np.linalg.norm(o)
        v = b2 * v + (1 - b2) * np.mean(o * o, axis=-1, keepdims=True)  # per row of [out, in]: per output neuron
        o = o / (np.sqrt(v) + 1e-10)
        if paper:
            o = o * 0.2 * np.sqrt(o.size) / np.linalg.norm(o)
        else:
            o = o * norm / (np.linalg.norm(o) + 1e-10) * np.sqrt(max(1.0, p.shape[0] / p.shape[1]))
        p = p * (1 - lr * wd) - lr * o
        out.append(p)
    return out


def _run(tx, params, grads):
    """Our parameters after each step (one jit, reused)."""
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    state, out = tx.init(params), []
    for g in grads:
        u, state = step(params, state, g)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out, state


def _check_trajectory(ours, theirs, start):
    """Each step's change of the parameters matches the reference to 1e-5 of its largest entry."""
    prev, prev_ref = np.asarray(start, np.float64), np.asarray(start, np.float64)
    for t, (p, r) in enumerate(zip(ours, theirs, strict=True)):
        delta, delta_ref = np.asarray(p, np.float64) - prev, r - prev_ref
        err = np.max(np.abs(delta - delta_ref)) / np.max(np.abs(delta_ref))
        assert err < 1e-5, (t, err)
        prev, prev_ref = np.asarray(p, np.float64), r


CASES = {
    "code": (dict(scale="jordan", eps=1e-10), dict()),  # SingleDeviceNorMuon, nesterov=True
    "paper": (dict(scale="moonlight", eps=1e-10, nesterov=False), dict(paper=True, nesterov=False)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_authors_update_step_by_step(case):
    """4 steps on a non-square [fan_in=6, fan_out=10] kernel (their [out=10, in=6], so √max(1, out/in) ≠ 1 and
    the neurons are our columns), with weight decay: normuon(method="svd", debias=False, ...) equals the
    authors' rule on the transposed matrix."""
    ours_kw, ref_kw = CASES[case]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 10)) / 3
    grads = [rng.standard_normal((6, 10)) * rng.uniform(0.1, 3.0, size=10) for _ in range(4)]  # uneven neurons
    tx = normuon(0.05, weight_decay=0.1, method="svd", debias=False, **ours_kw)
    ours, state = _run(tx, {"w": jnp.asarray(w, jnp.float32)}, [{"w": jnp.asarray(g, jnp.float32)} for g in grads])
    theirs = _authors_steps(w.T, [g.T for g in grads], lr=0.05, wd=0.1, **ref_kw)
    _check_trajectory([p["w"] for p in ours], [r.T for r in theirs], w)
    nus = [x for x in jax.tree.leaves(state) if x.shape == (10,)]
    assert len(nus) == 1 and nus[0].dtype == jnp.float32  # one second moment per fan-out unit (neuron)


def test_neurons_are_the_fan_out_units():
    """Columns of a [fan_in, fan_out] update scaled by 1, 10, 100: with β₂ = 0 every column (neuron) comes out
    with the same RMS, while the rows keep their differences; ν holds each column's mean square."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 3))
    o = base * np.array([1.0, 10.0, 100.0])
    tx = scale_by_neuron_rms(0.0)
    u, state = tx.update({"w": jnp.asarray(o, jnp.float32)}, tx.init({"w": jnp.zeros((5, 3))}))
    u = np.asarray(u["w"], np.float64)
    np.testing.assert_allclose(state.nu["w"], np.mean(o * o, axis=0), rtol=1e-6)
    col_rms = np.sqrt(np.mean(u * u, axis=0))
    np.testing.assert_allclose(col_rms, col_rms[0], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(u), np.linalg.norm(o), rtol=1e-5)  # the Frobenius norm is kept
    expected = base / np.sqrt(np.mean(base * base, axis=0))
    np.testing.assert_allclose(u, expected * np.linalg.norm(o) / np.linalg.norm(expected), rtol=1e-5)


def test_stack_is_separate_matrices_each_with_its_own_second_moment():
    """A (3, 6, 4) stack: each slice follows the reference on its own (ν of shape (3, 4)), although the slices'
    gradients differ in scale by 100×."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 6, 4)) / 3
    grads = [rng.standard_normal((3, 6, 4)) * np.array([0.1, 1.0, 10.0])[:, None, None] for _ in range(3)]
    tx = normuon(0.02, weight_decay=0.1, method="svd", debias=False, scale="jordan", eps=1e-10)
    ours, state = _run(
        tx, {"stack": jnp.asarray(w, jnp.float32)}, [{"stack": jnp.asarray(g, jnp.float32)} for g in grads]
    )
    assert [x.shape for x in jax.tree.leaves(state) if x.ndim == 2] == [(3, 4)]
    for i in range(3):
        theirs = _authors_steps(w[i].T, [g[i].T for g in grads], lr=0.02, wd=0.1)
        _check_trajectory([p["stack"][i] for p in ours], [r.T for r in theirs], w[i])


def test_follows_dualize_under_another_norm():
    """chain(dualize(sign), scale_by_neuron_rms(0.9)) over 3 steps, against numpy: O = sign(g)/fan_in, then the
    per-column EMA of mean squares and the norm-preserving rescaling; a vector leaf passes through."""
    rng = np.random.default_rng(3)
    tx = optax.chain(normopt.dualize(normopt.norms.sign()), scale_by_neuron_rms(0.9, eps=1e-3))
    step = jax.jit(tx.update)
    state = tx.init({"w": jnp.zeros((4, 6))})
    v = np.zeros(6)
    for _ in range(3):
        g = rng.standard_normal((4, 6)) * np.arange(1, 7)
        u, state = step({"w": jnp.asarray(g, jnp.float32)}, state)
        o = np.sign(g) / 4
        v = 0.9 * v + 0.1 * np.mean(o * o, axis=0)
        hat = o / (np.sqrt(v) + 1e-3)
        np.testing.assert_allclose(u["w"], hat * np.linalg.norm(o) / np.linalg.norm(hat), rtol=1e-5, atol=1e-7)
    tx = scale_by_neuron_rms()
    b = {"b": jnp.arange(3.0)}
    assert bool(jnp.all(tx.update(b, tx.init(b))[0]["b"] == b["b"]))


def test_fan_out_over_several_axes():
    """A (4, 2, 3) leaf read with fan_out axes (1, 2) has 6 neurons: the same update as the (4, 6) matrix."""
    rng = np.random.default_rng(4)
    g = jnp.asarray(rng.standard_normal((4, 2, 3)), jnp.float32)
    tx = scale_by_neuron_rms(0.5, layout={"w": normopt.MatrixDims(fan_in=0, fan_out=(1, 2))})
    u, state = tx.update({"w": g}, tx.init({"w": g}))
    assert state.nu["w"].shape == (6,)
    flat = scale_by_neuron_rms(0.5)
    ref, _ = flat.update({"w": g.reshape(4, 6)}, flat.init({"w": g.reshape(4, 6)}))
    np.testing.assert_allclose(u["w"].reshape(4, 6), ref["w"], rtol=1e-6)


def test_zero_gradient_gives_only_weight_decay_and_nan_stays_visible():
    params = {"w": jnp.asarray(np.random.default_rng(5).standard_normal((6, 10)), jnp.float32), "b": jnp.ones(10)}
    tx = normuon(0.1, weight_decay=0.5, method="svd")
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    state = tx.init(params)
    u, new_state = step(params, state, jax.tree.map(jnp.zeros_like, params))
    np.testing.assert_allclose(u["w"], -0.1 * 0.5 * params["w"], rtol=1e-6)
    assert bool(jnp.all(u["b"] == 0))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state))
    bad = {"w": jnp.ones((6, 10)).at[2, 3].set(jnp.nan), "b": jnp.ones(10)}
    u, _ = step(params, state, bad)
    assert not bool(jnp.all(jnp.isfinite(u["w"])))


def test_hyperparameters_may_be_traced():
    """Under optax.inject_hyperparams b2 and eps arrive as arrays; the result equals the static construction."""
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.standard_normal((6, 10)), jnp.float32)}
    g = {"w": jnp.asarray(rng.standard_normal((6, 10)), jnp.float32)}
    injected = optax.inject_hyperparams(normuon, static_args=("method",))(0.1, b2=0.5, eps=1e-6, method="svd")
    u, _ = jax.jit(injected.update)(g, injected.init(params), params)
    static = normuon(0.1, b2=0.5, eps=1e-6, method="svd")
    ref, _ = jax.jit(static.update)(g, static.init(params), params)
    np.testing.assert_allclose(u["w"], ref["w"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(b2=1.0), "b2"),
        (dict(b2=-0.1), "b2"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-8), "eps"),
        (dict(beta=1.0), "beta"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(scale="rms"), "scale"),
        (dict(adam_b2=1.5), "adam_b2"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"normuon: .*{name}"):
        normuon(0.1, **kwargs)
    if set(kwargs) <= {"b2", "eps"}:
        with pytest.raises(ValueError, match=rf"scale_by_neuron_rms: {name}"):
            scale_by_neuron_rms(**kwargs)
    with pytest.raises(TypeError, match="b2"):
        scale_by_neuron_rms(b2="0.9")


SHARDED_CHECK = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]
import jax, jax.numpy as jnp, numpy as np
import sharded_checks as sc
from normopt import sharding as nsh
from normopt.family.normuon import normuon
shapes, values = sc.fsdp_params(np.random.default_rng(0))
start = jax.tree.map(jnp.asarray, values)
make = lambda layer: normuon(0.05, weight_decay=0.1, sharding=layer, **sc.KERNEL)
reference, _, _ = sc.train({"n": make(None)}, start)
mesh = jax.make_mesh((8,), ("x",), axis_types=(sc.AxisType.Explicit,))
with jax.set_mesh(mesh):
    params = sc.put(mesh, shapes, values)
    final, _, _ = sc.train({"n": make(nsh.layer_sharded(mesh))}, params, init_jit=True)
    print(json.dumps([sc.rel_err(final["n"], reference["n"], start), sc.specs_kept(params, final["n"])]))
"""


@pytest.mark.slow  # 8 simulated devices in a subprocess (tests/sharded_checks.py's FSDP tree)
def test_layer_sharded_run_equals_single_device():
    """Two jitted steps of layer-sharded NorMuon on an explicit 8-device mesh move the parameters as on one device
    (the per-neuron means then reduce over sharded fan-in axes) and keep every parameter's sharding."""
    import json
    import pathlib
    import subprocess
    import sys

    tests = str(pathlib.Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", SHARDED_CHECK, tests], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rel_err, kept = json.loads(result.stdout.strip().splitlines()[-1])
    assert rel_err <= 1e-5 and kept
