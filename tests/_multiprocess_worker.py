"""Worker for ``tests/test_multiprocess.py``: trains BBB, LR and CLT models for 3 steps.

``python tests/_multiprocess_worker.py OUT PORT PROCESS_ID NUM_PROCESSES``. With
``NUM_PROCESSES > 1`` it joins a ``jax.distributed`` cluster on ``127.0.0.1:PORT`` (CPU
collectives over gloo) and trains with :func:`bayeslayers_jax.data_parallel_train_step` over
the global mesh of every process's devices, each process feeding only its own rows of the batch
(:func:`bayeslayers_jax.shard_batch` with ``process_local=True``); with ``NUM_PROCESSES == 1``
it trains on the local devices with the whole batch. The device count comes from
``XLA_FLAGS``. Process 0 (or the single process) writes the final parameters to ``OUT`` (npz).
"""

import sys

import jax
import numpy as np


def main(out: str, port: int, process_id: int, num_processes: int) -> None:
    jax.config.update("jax_enable_x64", True)
    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
            process_id=process_id, initialization_timeout=60,
        )
    import jax.numpy as jnp
    import optax

    import bayeslayers_jax as bl

    assert jax.device_count() == 4, jax.devices()
    mesh = bl.batch_mesh()
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (16, 3))
    y = np.sin(x).sum(-1, keepdims=True)
    if num_processes > 1:  # this process's rows only, as a real multi-host input pipeline
        rows = slice(process_id * 16 // num_processes, (process_id + 1) * 16 // num_processes)
        batch = bl.shard_batch((x[rows], y[rows]), mesh, process_local=True)
    else:
        batch = bl.shard_batch((jnp.asarray(x), jnp.asarray(y)), mesh)
    assert batch[0].shape == (16, 3), batch[0].shape
    result = {}
    for layer_type in ("bbb", "lr", "clt"):
        model = bl.BayesianMLP((8, 1), layer_type=layer_type, param_dtype=jnp.float64)
        variables = model.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, x[:2])
        loss_fn = bl.make_elbo_loss_fn(model, variables, num_train_examples=100, noise_var=0.1)
        opt = optax.adam(1e-2)
        step = bl.data_parallel_train_step(loss_fn, opt, mesh)
        params, opt_state = bl.replicate((variables["params"], opt.init(variables["params"])), mesh)
        for t in range(3):
            params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(jax.random.key(3), t))
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
            result[layer_type + jax.tree_util.keystr(path)] = np.asarray(leaf.addressable_data(0))
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
            result["init_" + layer_type + jax.tree_util.keystr(path)] = np.asarray(leaf)
        result["loss_" + layer_type] = np.asarray(loss.addressable_data(0))
    result["process_count"] = np.asarray(jax.process_count())
    result["local_devices"] = np.asarray(jax.local_device_count())
    result["batch_local_rows"] = np.asarray(sum(s.data.shape[0] for s in batch[0].addressable_shards))
    np.savez(f"{out}.{process_id}.npz", **result)
    if num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
