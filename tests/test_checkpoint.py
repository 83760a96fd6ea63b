"""Optimizer states are pytrees of arrays, and an orbax save/restore mid-training continues bit-for-bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from _hardening import OPTIMIZERS, cases, grads, optimizer, small_params, update

STEPS_BEFORE, STEPS_AFTER = 3, 3


def _train(step_fn, params, state, start, n):
    for t in range(start, start + n):
        updates, state = step_fn(params, state, grads(params, t))
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", cases(sorted(OPTIMIZERS)))
def test_restore_continues_bit_for_bit(name, tmp_path):
    tx, step_fn = optimizer(name), update(name)
    params0 = small_params()
    state0 = tx.init(params0)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state0)[0]:
        assert isinstance(leaf, jax.Array), f"{jax.tree_util.keystr(path)} is a {type(leaf).__name__}, not an array"

    ref_params, ref_state = _train(step_fn, params0, state0, 0, STEPS_BEFORE + STEPS_AFTER)
    compiled = step_fn._cache_size()

    params, state = _train(step_fn, params0, state0, 0, STEPS_BEFORE)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    del params, state
    # Restore into a fresh init's structure (what a restarted job has), with abstract leaves only.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params0, "opt_state": tx.init(params0)})
    restored = checkpointer.restore(tmp_path / "ckpt", abstract)
    checkpointer.close()
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state0)
    # orbax returns device-committed arrays, which jit caches apart from uncommitted ones (a jax property, not
    # normopt's); uncommit them, bits unchanged, to check that the restored avals need no recompilation.
    restored = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), restored)

    params, state = _train(step_fn, restored["params"], restored["opt_state"], STEPS_BEFORE, STEPS_AFTER)
    assert step_fn._cache_size() == compiled  # the restored state has the same avals: no recompilation
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path((ref_params, ref_state))[0],
        jax.tree.leaves((params, state)),
        strict=True,
    ):
        assert a.dtype == b.dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    # The run really trained: the checkpoint was taken from a state that had moved away from init.
    assert not np.array_equal(np.asarray(ref_params["dense"]["kernel"]), np.asarray(params0["dense"]["kernel"]))
