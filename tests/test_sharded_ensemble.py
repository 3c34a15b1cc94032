"""An ``Ensemble`` with its member axis sharded over devices equals the unsharded ensemble.

Run on 4 simulated CPU devices in a fresh subprocess (``--xla_force_host_platform_device_count``
only acts before JAX starts), in float64, on two meshes: ``(members=2, batch=2)`` (two members
per device pair, the batch split too) and ``(members=4, batch=1)`` (one member per device, the
batch replicated). Sharding changes only where each member's arithmetic runs and, with the batch
split, the order of the batch sums (relative round-off ~1e-16 per sum): outputs and gradients
must agree to 1e-12 (relative to the largest entry), the parameters after 3 Adam steps
(lr 1e-2) to 1e-12 absolute. A member computed with another member's weights or noise (the bug
this would catch) differs by O(1). The LR noise is drawn with the same key either way
(``jax_threefry_partitionable``: a sharded draw has the unsharded values).
"""

import textwrap

import jax
import jax.numpy as jnp
import pytest

from bayeslayers_jax.parallel import ensemble_mesh, shard_ensemble

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    from flax import nnx
    import bayeslayers_jax as bl
    import bayeslayers_jax.nnx as bnx

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-2, 2, (16, 3)))
    y = jnp.asarray(np.sin(np.asarray(x)).sum(-1, keepdims=True))
    leaves = jax.tree_util.tree_leaves

    def rel(a, b):
        la, lb = leaves(a), leaves(b)
        assert len(la) == len(lb)
        return max(float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(u))) for u, v in zip(la, lb))

    def absdiff(a, b):
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(leaves(a), leaves(b)))

    def layout(tree):  # sharded leaves: the spec's first entry and the member rows per shard
        big = [a for a in leaves(tree) if a.ndim and a.shape[0] == 4]
        return dict(specs=sorted({str(a.sharding.spec[0]) if len(a.sharding.spec) else 'None'
                                  for a in big}),
                    rows=sorted({s.data.shape[0] for a in big for s in a.addressable_shards}),
                    devices=sorted({len(a.sharding.device_set) for a in big}))

    out = {}
    ens = bl.Ensemble(bl.BayesianMLP((8, 1), layer_type="lr", param_dtype=jnp.float64), 4)
    variables = ens.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, x)
    loss_fn = bl.make_elbo_loss_fn(ens, variables, num_train_examples=100, noise_var=0.1)
    opt = optax.adam(1e-2)
    step = jax.jit(bl.train_step(loss_fn, opt))
    fwd = jax.jit(lambda v, x, k: ens.apply(v, x, rngs={"sample": k}))
    grad = jax.jit(jax.grad(loss_fn))
    key = jax.random.key(3)
    y1, g1 = fwd(variables, x, key), grad(variables["params"], (x, y), key)
    for members, batch in ((2, 2), (4, 1)):
        mesh = bl.ensemble_mesh(members, batch)
        vs = bl.shard_ensemble(variables, mesh)
        xs, ys = bl.shard_batch((x, y), mesh, axis_name="batch")
        y4, g4 = fwd(vs, xs, key), grad(vs["params"], (xs, ys), key)
        p1 = variables["params"]; s1 = opt.init(p1)
        p4, s4 = bl.shard_ensemble((vs["params"], opt.init(vs["params"])), mesh, size=4)
        for t in range(3):
            k = jax.random.fold_in(key, t)
            p1, s1, l1 = step(p1, s1, (x, y), k)
            p4, s4, l4 = step(p4, s4, (xs, ys), k)
        out[f"linen_{members}x{batch}"] = dict(
            out=rel(y1, y4), grad=rel(g1, g4), params=absdiff(p1, p4),
            loss=abs(float(l1) - float(l4)) / abs(float(l1)),
            moved=absdiff(p1, variables["params"]),
            members_differ=float(jnp.min(jnp.abs(y1[0] - y1[1]))),
            vars=layout(vs), out_layout=layout(y4), grad_layout=layout(g4), step_layout=layout(p4),
            count_replicated=bool(s4[0].count.sharding.is_fully_replicated))

    # NNX: the same on the ensemble's state (nnx.split / nnx.merge), one member per device.
    ens_n = bnx.Ensemble(lambda rngs: bnx.BayesianMLP(3, (8, 1), layer_type="lr",
                                                      param_dtype=jnp.float64, rngs=rngs),
                         4, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(ens_n, nnx.Param, ...)

    @jax.jit
    def nnx_loss(params, rest, x, y, k):
        mean = nnx.merge(graphdef, params, rest)(x, rng=k)
        return jnp.mean((mean - y) ** 2), mean

    gfun = jax.jit(jax.grad(nnx_loss, has_aux=True))
    g1, m1 = gfun(params, rest, x, y, key)
    mesh = bl.ensemble_mesh(4, 1)
    ss, rs = bl.shard_ensemble((params, rest), mesh, size=4)
    g4, m4 = gfun(ss, rs, bl.shard_batch(x, mesh, axis_name="batch"),
                  bl.shard_batch(y, mesh, axis_name="batch"), key)
    out["nnx_4x1"] = dict(out=rel(m1, m4), grad=rel(g1, g4), vars=layout(ss),
                          out_layout=layout(m4), grad_layout=layout(g4),
                          members_differ=float(jnp.min(jnp.abs(m1[0] - m1[1]))))
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def results(run_on_cpu_devices):
    return run_on_cpu_devices(SCRIPT, n_devices=4)


@pytest.mark.slow  # a fresh subprocess with 4 simulated devices
@pytest.mark.parametrize("case,rows", [("linen_2x2", 2), ("linen_4x1", 1), ("nnx_4x1", 1)])
def test_sharded_ensemble_equals_unsharded(results, case, rows):
    r = results[case]
    # The member axis really is split: 4 members over the mesh's member axis, `rows` per shard,
    # for the variables, the outputs and the gradients.
    for name in ("vars", "out_layout", "grad_layout"):
        assert r[name]["specs"] == ["members"], (name, r[name])
        assert r[name]["rows"] == [rows], (name, r[name])
        assert r[name]["devices"] == [4], (name, r[name])
    # The members differ (so a member mix-up would show) ...
    assert r["members_differ"] > 1e-6
    # ... and outputs and gradients equal the unsharded ensemble's to float64 rounding.
    assert r["out"] <= 1e-12
    assert r["grad"] <= 1e-12
    if case.startswith("linen"):
        assert r["moved"] > 1e-3
        assert r["params"] <= 1e-12
        assert r["loss"] <= 1e-12
        assert r["step_layout"]["specs"] == ["members"] and r["step_layout"]["rows"] == [rows]
        assert r["count_replicated"]  # the step count has no member axis


def test_shard_ensemble_checks_its_arguments():
    mesh = ensemble_mesh(1)
    tree = {"w": jnp.ones((3, 2)), "b": jnp.ones((3,))}
    assert shard_ensemble(tree, mesh)["w"].sharding.spec[0] == "members"
    mixed = {"w": jnp.ones((3, 2)), "count": jnp.zeros((), jnp.int32)}
    with pytest.raises(ValueError, match="leading member axis"):
        shard_ensemble(mixed, mesh)
    assert shard_ensemble(mixed, mesh, size=3)["count"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match="not an axis"):
        shard_ensemble(tree, mesh, member_axis="model")
    with pytest.raises(ValueError, match="size"):
        shard_ensemble(tree, mesh, size=0)
    with pytest.raises(ValueError, match="members must be a positive int"):
        ensemble_mesh(0)
    with pytest.raises(ValueError, match="devices"):
        ensemble_mesh(len(jax.devices()) + 1)
