"""normopt inside the optax and Flax ecosystem: chain, inject_hyperparams, MultiSteps, apply_if_finite,
masked/partition, Flax NNX and linen, vmap over models, buffer donation; no recompilation between steps."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _hardening import OPTIMIZERS, cases, grads, optimizer, small_params, update
from flax import nnx
from flax.training import train_state

import normopt

# sign_sgd and normalized_sgd are steepest_descent with a fixed norm: the same plumbing.
ALIASES = ("muon", "scion", "steepest_descent", "dion", "fadam", "shampoo", "normuon", "soap", "splus")


def _close(a, b, rtol=1e-5, atol=1e-7):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


def test_chain_applies_the_preceding_transform():
    """clip → regularized l2 steepest descent is SGD on the clipped gradient: −η·g·min(1, c/‖g‖)."""
    params, g = small_params(), grads(small_params(), 0)
    tx = optax.chain(optax.clip_by_global_norm(0.5), normopt.steepest_descent(0.1, "l2", mode="regularized"))
    updates, _ = jax.jit(tx.update)(g, tx.init(params), params)
    total = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(g)))
    _close(updates, jax.tree.map(lambda x: -0.1 * np.asarray(x, np.float64) * min(1.0, 0.5 / total), g))


@pytest.mark.parametrize("name", cases(ALIASES))
def test_inject_learning_rate_without_recompiling(name):
    """The update is linear in the injected learning rate, changed between jitted steps with one compilation."""
    tx = optax.inject_hyperparams(lambda learning_rate: OPTIMIZERS[name](learning_rate))(learning_rate=1.0)
    params = small_params()
    update = jax.jit(tx.update)
    lrs = [0.1, 0.05, 0.2]
    runs = []
    for schedule in (lrs, [1.0] * len(lrs)):
        state, out = tx.init(params), []
        for t, lr in enumerate(schedule):
            state.hyperparams["learning_rate"] = jnp.asarray(lr, state.hyperparams["learning_rate"].dtype)
            u, state = update(grads(params, t), state, params)  # grads that do not depend on the lr
            out.append(u)
        runs.append(out)
    assert update._cache_size() == 1
    for lr, u, unit in zip(lrs, *runs, strict=True):
        _close(u, jax.tree.map(lambda x: lr * x, unit), rtol=1e-6)


CONSTRAINED = ("muonh", "adamh", "manifold_muon")
"""Steps that land on a set (a sphere, the Stiefel manifold): not linear in the learning rate."""


@pytest.mark.slow
@pytest.mark.parametrize("name", CONSTRAINED)
def test_inject_learning_rate_of_constrained_optimizers(name):
    """An injected learning rate changed between jitted steps (one compilation) gives, at every step, the update of
    the optimizer built with that learning rate, from the same state."""
    tx = optax.inject_hyperparams(lambda learning_rate: OPTIMIZERS[name](learning_rate))(learning_rate=1.0)
    params = small_params()
    update = jax.jit(tx.update)
    state = tx.init(params)
    for t, lr in enumerate([0.1, 0.05, 0.2]):
        state.hyperparams["learning_rate"] = jnp.asarray(lr, state.hyperparams["learning_rate"].dtype)
        want, _ = jax.jit(OPTIMIZERS[name](lr).update)(grads(params, t), state.inner_state, params)
        u, state = update(grads(params, t), state, params)
        _close(u, want, rtol=1e-4, atol=1e-6)  # two programs: the polar kernels' fp32 round-off differs
    assert update._cache_size() == 1


def test_inject_beta_and_weight_decay_between_steps():
    """sign_sgd with β and λ changed at every step matches the float64 recurrence m ← βm + (1−β)g,
    u = −η·(sign(m) + λ·p) (debiasing divides by a positive number, so sign(m) is unaffected)."""
    tx = optax.inject_hyperparams(normopt.sign_sgd)(learning_rate=0.1, momentum=0.9, weight_decay=0.0)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 6)), jnp.float32)}
    update = jax.jit(tx.update)
    state, m = tx.init(params), 0.0
    for beta, wd in [(0.9, 0.0), (0.2, 0.5), (0.6, 0.1)]:
        state.hyperparams["momentum"] = jnp.asarray(beta, jnp.float32)
        state.hyperparams["weight_decay"] = jnp.asarray(wd, jnp.float32)
        g = rng.standard_normal((4, 6))
        m = beta * m + (1 - beta) * g
        u, state = update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        np.testing.assert_allclose(u["w"], -0.1 * (np.sign(m) + wd * np.asarray(params["w"])), rtol=1e-6)
    assert update._cache_size() == 1


def _polar_singular_values(u, params, lr=0.02, weight_decay=0.01):
    """Singular values of muon's polar factor in the dense kernel's update u = −η·(√(16/8)·polar + λ·p)."""
    polar = -(np.asarray(u["dense"]["kernel"]) / lr + weight_decay * np.asarray(params["dense"]["kernel"]))
    return np.linalg.svd(polar / np.sqrt(2), compute_uv=False)


def test_inject_steps_must_be_static():
    params, g = small_params(), grads(small_params(), 0)
    traced = optax.inject_hyperparams(normopt.muon)(learning_rate=0.1, steps=3)
    with pytest.raises(TypeError, match="static_args"):
        jax.jit(traced.update)(g, traced.init(params), params)

    # The default steps=None needs no static_args (test_inject_learning_rate_without_recompiling); five
    # Polar Express steps put every singular value near 1, one step leaves them spread: steps reached the kernel.
    u, _ = update("muon")(params, optimizer("muon").init(params), g)
    assert np.all(np.abs(_polar_singular_values(u, params) - 1) < 0.2)
    static = optax.inject_hyperparams(normopt.muon, static_args=("steps",))(
        learning_rate=0.02, steps=1, weight_decay=0.01
    )
    u, _ = jax.jit(static.update)(g, static.init(params), params)
    sv = _polar_singular_values(u, params)
    assert sv.max() - sv.min() > 0.2


def test_multi_steps_averages_micro_batches():
    """MultiSteps(k=2) equals the optimizer applied to the mean of each pair of gradients."""
    params = small_params()
    gs = [grads(params, t) for t in range(4)]
    multi = optax.MultiSteps(optimizer("sign_sgd"), every_k_schedule=2)
    multi_update = jax.jit(multi.update)
    p, state = params, multi.init(params)
    for g in gs:
        u, state = multi_update(g, state, p)
        p = optax.apply_updates(p, u)
    assert multi_update._cache_size() == 1
    q, state = params, optimizer("sign_sgd").init(params)
    for g1, g2 in (gs[:2], gs[2:]):
        u, state = update("sign_sgd")(q, state, jax.tree.map(lambda a, b: (a + b) / 2, g1, g2))
        q = optax.apply_updates(q, u)
    _close(p, q)


def test_apply_if_finite_skips_a_nan_step():
    """A NaN gradient is skipped (params and inner state untouched); training goes on as if it never came."""
    params = small_params()
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), grads(params, 1))
    tx = optax.apply_if_finite(optimizer("muon"), max_consecutive_errors=3)
    safe_update = jax.jit(tx.update)
    p, state = params, tx.init(params)
    for g in (grads(params, 0), bad, grads(params, 2)):
        u, state = safe_update(g, state, p)
        p = optax.apply_updates(p, u)
        if g is bad:
            assert int(state.notfinite_count) == 1 and not bool(state.last_finite)
            assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
    assert int(state.total_notfinite) == 1 and int(state.notfinite_count) == 0
    q, ref_state = params, optimizer("muon").init(params)
    for g in (grads(params, 0), grads(params, 2)):
        u, ref_state = update("muon")(q, ref_state, g)
        q = optax.apply_updates(q, u)
    _close(p, q, rtol=1e-6)
    _close(state.inner_state, ref_state, rtol=1e-6)


def test_partition_and_masked():
    params, g = small_params(), grads(small_params(), 0)
    labels = jax.tree.map(lambda x: "normed" if x.ndim >= 2 else "sgd", params)
    tx = optax.partition({"normed": normopt.sign_sgd(0.1), "sgd": optax.sgd(0.1)}, labels)
    u, _ = jax.jit(tx.update)(g, tx.init(params), params)
    _close(u, jax.tree.map(lambda x: -0.1 * (np.sign(x) if x.ndim >= 2 else np.asarray(x)), g))

    # optax.masked is the way to keep integer leaves (a step counter) away from normopt.
    params = {"w": params["dense"]["kernel"], "step": jnp.zeros((), jnp.int32)}
    tx = optax.masked(normopt.normalized_sgd(0.1), {"w": True, "step": False})
    g = {"w": g["dense"]["kernel"], "step": jnp.zeros((), jnp.int32)}
    u, _ = tx.update(g, tx.init(params), params)
    w = np.asarray(g["w"], np.float64)
    np.testing.assert_allclose(u["w"], -0.1 * w / np.linalg.norm(w), rtol=1e-5)
    assert u["step"].dtype == jnp.int32


def _data():
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.standard_normal((32, 8)), jnp.float32), jnp.asarray(
        rng.standard_normal((32, 4)), jnp.float32
    )


class _NNXModel(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(8, 16, rngs=rngs)
        self.head = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.dense(x)))


def test_flax_nnx_optimizer():
    x, y = _data()
    model = _NNXModel(nnx.Rngs(0))
    graphdef, params0 = nnx.split(model, nnx.Param)
    tx = normopt.muon(0.05)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rows = normopt.describe(nnx.state(model, nnx.Param), tx, print_fn=None)
    assert {r["path"]: r["norm"] for r in rows} == {
        "dense/bias": "adamw",
        "dense/kernel": "rms_to_rms",
        "head/bias": "adamw",
        "head/kernel": "adamw",  # Jordan's recipe: the output head goes to AdamW
    }

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    # Three steps on plain pytrees with optax first (split states share the model's Variables).
    def pure_loss(p):
        return loss_fn(nnx.merge(graphdef, p))

    @jax.jit
    def reference_step(p, state):
        u, state = tx.update(jax.grad(pure_loss)(p), state, p)
        return optax.apply_updates(p, u), state

    p, state = params0, tx.init(params0)
    for _ in range(3):
        p, state = reference_step(p, state)
    expected = jax.tree.map(np.asarray, p)

    @nnx.jit
    def train_step(model, optimizer):
        loss, g = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, g)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(3)]
    assert losses[-1] < losses[0]
    _close(nnx.state(model, nnx.Param), expected, rtol=1e-4, atol=1e-5)


class _LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="head")(nn.relu(nn.Dense(16)(x)))


def test_flax_linen_train_state():
    x, y = _data()
    model = _LinenModel()
    params = model.init(jax.random.key(0), x)["params"]
    tx = normopt.scion(0.05, head_radius=4.0)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    state = state.replace(step=jnp.asarray(0, jnp.int32))  # a Python int step would retrace once

    def loss_fn(p):
        return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    @jax.jit
    def train_step(state):
        loss, g = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=g), loss

    losses = []
    for _ in range(3):
        state, loss = train_step(state)
        losses.append(float(loss))
    assert train_step._cache_size() == 1
    assert losses[-1] < losses[0]

    @jax.jit
    def reference_step(p, opt_state):
        u, opt_state = tx.update(jax.grad(loss_fn)(p), opt_state, p)
        return optax.apply_updates(p, u), opt_state

    p, opt_state = params, tx.init(params)
    for _ in range(3):
        p, opt_state = reference_step(p, opt_state)
    _close(state.params, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["muon", "sign_sgd"])
@pytest.mark.slow  # extra compilations of muon
def test_vmap_over_a_batch_of_models(name):
    tx = optimizer(name)
    models = [small_params(seed=s) for s in range(3)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
    g_batch = jax.vmap(grads, in_axes=(0, None))(batch, 0.0)
    states = jax.vmap(tx.init)(batch)
    u_batch, _ = jax.jit(jax.vmap(tx.update))(g_batch, states, batch)
    for i, p in enumerate(models):
        u, _ = update(name)(p, tx.init(p), grads(p, 0.0))
        _close(jax.tree.map(lambda x: x[i], u_batch), u, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # extra compilations of muon
def test_donated_params_and_state():
    tx = optimizer("muon")

    def step(params, state, t):
        u, state = tx.update(grads(params, t), state, params)
        return optax.apply_updates(params, u), state

    donated = jax.jit(step, donate_argnums=(0, 1))
    params, state = small_params(), tx.init(small_params())
    u, ref_state = update("muon")(params, state, grads(params, 0.0))
    ref_params = optax.apply_updates(params, u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Some donated buffers were not usable" would fail here
        for t in range(3):
            old = jax.tree.leaves((params, state))
            params, state = donated(params, state, jnp.asarray(t, jnp.float32))
            assert all(x.is_deleted() for x in old)
            if t == 0:
                _close((params, state), (ref_params, ref_state), rtol=1e-6)
    assert donated._cache_size() == 1
