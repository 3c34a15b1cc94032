"""Data-parallel training on 4 simulated CPU devices reproduces the single-device run.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` only acts before JAX initializes its
backend, so the comparison runs in a fresh Python subprocess. Everything there is float64:
the sharded step differs from the single-device one only in the order of the cross-device
sums (relative round-off ~1e-16 per reduction), and with Adam (updates ``lr * m / (sqrt(v) +
1e-8)``, lr = 1e-2) over 5 steps the parameters then agree to far better than the tolerance
used, 1e-9 absolute (losses 1e-12 relative). A different weight or noise draw per device
(the bug this would catch) changes them by ~1e-3 or more.
"""

import textwrap

import jax
import jax.numpy as jnp
import pytest

from bayeslayers_jax.parallel import batch_mesh, shard_batch

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    # Not strict dtype promotion here: optax.adam's bias correction (float ** int32 count)
    # is rejected by it; our own code runs under strict promotion in the other tests.
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from bayeslayers_jax import BayesianMLP, make_elbo_loss_fn
    from bayeslayers_jax import (batch_mesh, data_parallel_train_step, replicate,
                                 shard_batch, train_step)

    assert len(jax.devices()) == 4, jax.devices()
    mesh = batch_mesh()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-2, 2, (16, 3)))
    y = jnp.asarray(np.sin(np.asarray(x)).sum(-1, keepdims=True))
    out = {}
    for layer_type in ("bbb", "lr", "clt"):
        model = BayesianMLP(features=(8, 1), layer_type=layer_type, param_dtype=jnp.float64)
        variables = model.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, x)
        loss_fn = make_elbo_loss_fn(model, variables, num_train_examples=100, noise_var=0.1)
        opt = optax.adam(1e-2)
        single = jax.jit(train_step(loss_fn, opt))
        sharded = data_parallel_train_step(loss_fn, opt, mesh)
        p1 = p4 = variables["params"]
        s1 = s4 = opt.init(p1)
        p4, s4 = replicate((p4, s4), mesh)
        batch4 = shard_batch((x, y), mesh)
        n_dev = len(batch4[0].sharding.device_set)
        shard_rows = sorted({s.data.shape[0] for s in batch4[0].addressable_shards})
        l1s, l4s = [], []
        for t in range(5):
            key = jax.random.fold_in(jax.random.key(3), t)
            p1, s1, l1 = single(p1, s1, (x, y), key)
            p4, s4, l4 = sharded(p4, s4, batch4, key)
            l1s.append(float(l1)); l4s.append(float(l4))
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)))
        moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(variables["params"])))
        out[layer_type] = dict(diff=diff, moved=moved, l1=l1s, l4=l4s, n_dev=n_dev,
                               shard_rows=shard_rows,
                               out_devices=len(jax.tree_util.tree_leaves(p4)[0].sharding.device_set))
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_results(run_on_cpu_devices):
    return run_on_cpu_devices(SCRIPT, n_devices=4)


@pytest.mark.slow  # a fresh subprocess with 4 simulated devices: about 20 s of CPU
@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt"])
def test_sharded_training_matches_single_device(sharded_results, layer_type):
    r = sharded_results[layer_type]
    # The batch really is split over 4 devices (4 rows each) and the parameters stay replicated.
    assert r["n_dev"] == 4
    assert r["shard_rows"] == [4]
    assert r["out_devices"] == 4
    # Training moved the parameters (so the comparison is not vacuous) ...
    assert r["moved"] > 1e-3
    # ... and the sharded run agrees with the single-device run to round-off.
    assert r["diff"] <= 1e-9
    for l1, l4 in zip(r["l1"], r["l4"]):
        assert abs(l1 - l4) <= 1e-12 * abs(l1)


def test_shard_batch_rejects_indivisible_batch():
    mesh = batch_mesh(jax.devices()[:1])
    assert shard_batch(jnp.ones((3, 2)), mesh).shape == (3, 2)
    with pytest.raises(ValueError, match="divisible"):
        shard_batch(jnp.ones(()), mesh)
    with pytest.raises(ValueError, match="not an axis"):
        shard_batch(jnp.ones((2,)), mesh, axis_name="model")
