"""A checkpoint saved from one device layout restores, bit for bit, into another (Orbax).

Orbax (``orbax-checkpoint``, the checkpointing library Flax uses and installs) writes every
array with its global shape, whatever its sharding, and restores it into the shardings it is
asked for. On 4 simulated CPU devices (a fresh subprocess: the device count is fixed when JAX
starts) an ensemble's parameters are saved with the members split one per device
(``shard_ensemble`` on a ``(4, 1)`` mesh) and restored onto a ``(2, 2)`` mesh (two members per
shard) and fully replicated (the ``data_parallel_train_step`` layout). A restore only copies
bytes, so the values must be *equal* (tolerance 0), and the layouts must be the requested ones.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    import bayeslayers_jax as bl

    assert len(jax.devices()) == 4, jax.devices()
    ens = bl.Ensemble(bl.BayesianMLP((8, 1), layer_type="bbb", param_dtype=jnp.float64), 4)
    params = ens.init(jax.random.key(0), jnp.ones((2, 3)))["params"]
    saved = bl.shard_ensemble(params, bl.ensemble_mesh(4, 1))
    ckptr = ocp.StandardCheckpointer()
    path = sys.argv[1] + "/ckpt"
    ckptr.save(path, saved)
    ckptr.wait_until_finished()
    out = {}
    targets = {"2x2": NamedSharding(bl.ensemble_mesh(2, 2), P("members")),
               "replicated": NamedSharding(bl.batch_mesh(), P())}
    for name, sharding in targets.items():
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                                params)
        restored = ckptr.restore(path, abstract)
        leaves = jax.tree_util.tree_leaves(restored)
        out[name] = dict(
            diff=max(float(jnp.max(jnp.abs(a - b))) for a, b in
                     zip(jax.tree_util.tree_leaves(params), leaves)),
            same_structure=jax.tree.structure(restored) == jax.tree.structure(params),
            sharding_ok=all(a.sharding.is_equivalent_to(sharding, a.ndim) for a in leaves),
            rows=sorted({s.data.shape[0] for a in leaves for s in a.addressable_shards}),
            saved_rows=sorted({s.data.shape[0] for a in jax.tree_util.tree_leaves(saved)
                               for s in a.addressable_shards}))
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    pytest.importorskip("orbax.checkpoint", reason="orbax-checkpoint (installed with flax) is missing")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    tmp = tmp_path_factory.mktemp("ckpt")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow  # a fresh subprocess with 4 simulated devices and Orbax's async writer
@pytest.mark.parametrize("target,rows", [("2x2", 2), ("replicated", 4)])
def test_checkpoint_restores_into_another_layout(restored, target, rows):
    r = restored[target]
    assert r["saved_rows"] == [1]  # saved with one member per device
    assert r["rows"] == [rows]  # restored with 2 members per shard, or all 4 (replicated)
    assert r["sharding_ok"] and r["same_structure"]
    assert r["diff"] == 0.0
