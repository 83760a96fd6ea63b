"""The family constructors check their arguments when called (before any jit), naming the argument, the value and
what is allowed; traced values (optax.inject_hyperparams) pass; static arguments given traced say so."""

import jax.numpy as jnp
import optax
import pytest

import normopt
from normopt import _numerics

BAD = [
    # (constructor, kwargs, error, message regex: the argument and the value)
    (normopt.dion, dict(learning_rate=0.1, beta=1.0), ValueError, r"dion: beta must lie in \[0, 1\), got 1.0"),
    (normopt.dion, dict(learning_rate=0.1, rank=0), ValueError, r"dion: rank must lie in \[1, inf\), got 0"),
    (normopt.dion, dict(learning_rate=0.1, rank=1.5), ValueError, r"rank must lie in \(0, 1\], got 1.5"),
    (normopt.dion, dict(learning_rate=0.1, rank="4"), TypeError, r"rank must be a static int.*'4'"),
    (normopt.dion, dict(learning_rate=0.1, weight_decay=-0.1), ValueError, r"weight_decay must lie in \[0, inf\)"),
    (normopt.dion, dict(learning_rate=0.1, adam_b2=1.5), ValueError, r"adam_b2 must lie in \[0, 1\), got 1.5"),
    (normopt.dion, dict(learning_rate=0.1, adam_eps=0.0), ValueError, r"adam_eps must lie in \(0, inf\), got 0.0"),
    (normopt.dion, dict(learning_rate=0.1, scale="big"), ValueError, r"unknown scale 'big'"),
    (normopt.dion, dict(learning_rate=0.1, mu_dtype="int8"), ValueError, r"mu_dtype='int8'"),
    (normopt.scale_by_dion, dict(seed=1.5), TypeError, r"seed must be an int, got 1.5"),
    (normopt.fadam, dict(learning_rate=0.1, b1=-0.1), ValueError, r"fadam: b1 must lie in \[0, 1\), got -0.1"),
    (normopt.fadam, dict(learning_rate=0.1, b2=1.0), ValueError, r"fadam: b2 must lie in \[0, 1\), got 1.0"),
    (normopt.fadam, dict(learning_rate=0.1, eps=-1e-8), ValueError, r"eps must lie in \[0, inf\)"),
    (normopt.fadam, dict(learning_rate=0.1, clip=0.0), ValueError, r"clip must lie in \(0, inf\), got 0.0"),
    (normopt.fadam, dict(learning_rate=0.1, p=0), ValueError, r"p must lie in \(0, inf\), got 0"),
    (normopt.fadam, dict(learning_rate=0.1, weight_decay=-1.0), ValueError, r"weight_decay must lie in \[0, inf\)"),
    (normopt.fadam, dict(learning_rate=0.1, b1="0.9"), TypeError, r"b1 must be a real number.*'0.9'"),
    (normopt.scale_by_fadam, dict(b1=float("nan")), ValueError, r"scale_by_fadam: b1 must lie in \[0, 1\), got nan"),
    (normopt.shampoo, dict(learning_rate=0.1, beta=1.5), ValueError, r"shampoo: beta must lie in \[0, 1\], got 1.5"),
    (normopt.shampoo, dict(learning_rate=0.1, eps=-1.0), ValueError, r"eps must lie in \[0, inf\), got -1.0"),
    (normopt.shampoo, dict(learning_rate=0.1, weight_decay=-1), ValueError, r"weight_decay must lie in \[0, inf\)"),
    (normopt.scale_by_shampoo, dict(dims=(0, 1)), TypeError, r"dims must be None or a normopt.MatrixDims"),
    (normopt.newton, dict(damping=-1.0), ValueError, r"newton: damping must lie in \[0, inf\), got -1.0"),
    (normopt.newton, dict(structure="block"), ValueError, r"newton: unknown structure 'block'"),
    (normopt.newton, dict(linesearch="armijo"), TypeError, r"linesearch must be an optax line search"),
    (normopt.scale_by_newton, dict(damping=-1e-3), ValueError, r"scale_by_newton: damping must lie in \[0, inf\)"),
    (normopt.mirror_descent, dict(learning_rate=0.1, mirror_map="kl"), ValueError, r"unknown mirror map 'kl'"),
    (normopt.mirror_descent, dict(learning_rate=0.1, mirror_map=3), TypeError, r"mirror_map must be a MirrorMap"),
    (normopt.mirror_step, dict(mirror_map="entropy"), TypeError, r"mirror_step: mirror_map must be a MirrorMap"),
    (normopt.prox_l1, dict(learning_rate=0.1, strength=-1.0), ValueError, r"strength must lie in \[0, inf\)"),
    (normopt.prox_l1, dict(learning_rate=-0.1, strength=1.0), ValueError, r"learning_rate must lie in \[0, inf\)"),
    (normopt.project_l2_ball, dict(radius=0.0), ValueError, r"project_l2_ball: radius must lie in \(0, inf\)"),
    (normopt.project_linf_ball, dict(radius=-1.0), ValueError, r"project_linf_ball: radius must lie in \(0, inf\)"),
    (normopt.project_l1_ball, dict(radius=0), ValueError, r"project_l1_ball: radius must lie in \(0, inf\), got 0"),
    (normopt.project_simplex, dict(scale=-2.0), ValueError, r"project_simplex: scale must lie in \(0, inf\)"),
    (normopt.project, dict(projection=1.0), TypeError, r"project: projection must be a callable"),
]


@pytest.mark.parametrize("factory, kwargs, error, message", BAD, ids=[f"{f.__name__}-{m}" for f, _, _, m in BAD])
def test_bad_argument_raises_at_construction_naming_it(factory, kwargs, error, message):
    with pytest.raises(error, match=message):
        factory(**kwargs)


@pytest.mark.parametrize(
    "factory, args, kwargs",
    [
        (normopt.dion, (0.1,), dict(rank=2, beta=0.9, weight_decay=0.1, mu_dtype="float32", adam_eps=1e-6)),
        (normopt.fadam, (0.1,), dict(b1=0.0, eps=0.0, clip=jnp.inf, p=1.0)),
        (normopt.shampoo, (0.1,), dict(beta=1.0, eps=0.0)),
        (normopt.newton, (), dict(damping=0.0, structure="kronecker", linesearch=None)),
        (normopt.prox_l1, (0.1,), dict(strength=0.0)),
    ],
)
def test_edge_values_are_accepted(factory, args, kwargs):
    factory(*args, **kwargs)


def test_hyperparameters_are_keyword_only():
    with pytest.raises(TypeError):
        normopt.fadam(0.1, 0.9)  # b1 positional
    with pytest.raises(TypeError):
        normopt.mirror_descent(0.1, "entropy")
    with pytest.raises(TypeError):
        normopt.prox_l1(0.1, 0.5)
    with pytest.raises(TypeError):
        normopt.scale_by_dion(4)


@pytest.mark.slow  # builds every family optimizer under inject_hyperparams
def test_traced_hyperparameters_pass_the_checks():
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    grads = {"w": jnp.full((4, 3), 0.5), "b": jnp.ones(3)}
    for tx in (
        optax.inject_hyperparams(normopt.fadam)(learning_rate=0.1, b1=0.9, b2=0.99, weight_decay=0.1),
        optax.inject_hyperparams(normopt.shampoo)(learning_rate=0.1, beta=0.5, weight_decay=0.1),
        optax.inject_hyperparams(normopt.dion, static_args=("rank",))(learning_rate=0.1, rank=2, beta=0.9),
    ):
        updates, _ = tx.update(grads, tx.init(params), params)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in updates.values())


def test_static_rank_given_traced_says_to_list_it_in_static_args():
    with pytest.raises(TypeError, match=r"rank must be a static.*static_args=\('rank',\)"):
        optax.inject_hyperparams(normopt.dion)(learning_rate=0.1, rank=2).init({"w": jnp.ones((4, 3))})
    with pytest.raises(TypeError, match=r"scale_by_dion: rank .*static_args"):
        normopt.scale_by_dion(rank=jnp.asarray(2))


def test_check_range_ignores_arrays_and_tracers():
    _numerics.check_range("beta", jnp.asarray(5.0), 0, 1)  # inject_hyperparams passes arrays: not checked here


def test_weight_decay_mask_follows_optax():
    params = {"w": jnp.linspace(-1.0, 1.0, 9).reshape(3, 3), "b": jnp.linspace(1.0, 2.0, 3)}
    grads = {"w": jnp.eye(3), "b": jnp.ones(3)}
    mask = {"w": True, "b": False}

    def step(tx):
        return tx.update(grads, tx.init(params), params)[0]

    for factory, kw in (
        (normopt.shampoo, {}),
        (normopt.fadam, dict(clip=jnp.inf)),
        (normopt.dion, dict(rank=1)),
    ):
        plain = step(factory(1.0, **kw))
        masked = step(factory(1.0, weight_decay=0.5, mask=mask, **kw))
        assert not bool(jnp.allclose(masked["w"], plain["w"])), factory  # decays
        assert bool(jnp.array_equal(masked["b"], plain["b"])), factory  # masked out
        by_callable = step(factory(1.0, weight_decay=0.5, mask=lambda p: {"w": False, "b": True}, **kw))
        assert bool(jnp.array_equal(by_callable["w"], plain["w"])), factory
        if factory is not normopt.dion:  # dion's vectors go to AdamW, which decays by adam_weight_decay
            assert not bool(jnp.allclose(by_callable["b"], plain["b"])), factory


def test_family_states_are_exported():
    for name in ("DionState", "ScaleByFAdamState", "ShampooState", "ProxL1State"):
        assert hasattr(normopt, name) and name in normopt.__all__
    import normopt.family.dion as module

    assert normopt.dion is module.dion and normopt.DionState is module.DionState
    assert normopt.prox.__name__ == "normopt.family.prox" and normopt.mirror.__name__ == "normopt.family.mirror"
