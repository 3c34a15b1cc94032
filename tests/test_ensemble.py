"""Tests of ``Ensemble``: stacked variables, independent members, independent noise."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import BayesianMLP, Ensemble, ensemble_size, is_ensemble, member, total_kl

M = 3


def _x(batch=6, width=4, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, width), jnp.float64)


@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt", "cltdet"])
def test_every_collection_gets_a_member_axis(layer_type):
    mlp = BayesianMLP((8, 2), layer_type=layer_type, param_dtype=jnp.float64)
    ens = Ensemble(mlp, M)
    x = _x()
    v = ens.init(jax.random.key(0), x)
    v1 = mlp.init(jax.random.key(0), x)
    assert set(v) == set(v1)
    shapes = jax.tree.map(jnp.shape, v)
    expected = jax.tree.map(lambda a: (M,) + jnp.shape(a), v1)
    assert shapes == expected
    out, state = ens.apply(v, x, rngs={"sample": jax.random.key(1)}, mutable=["kl"])
    for leaf in jax.tree_util.tree_leaves(out):
        assert leaf.shape == (M, 6, 2)
    if layer_type != "cltdet":
        _, state1 = mlp.apply(member(v, 1), x, rngs={"sample": jax.random.key(1)}, mutable=["kl"])
        kl = total_kl(state, per_member=True)
        assert kl.shape == (M,)
        np.testing.assert_allclose(kl[1], total_kl(state1), rtol=1e-12)


@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt", "cltdet"])
def test_members_are_initialized_independently(layer_type):
    ens = Ensemble(BayesianMLP((8, 2), layer_type=layer_type, param_dtype=jnp.float64), M)
    w = ens.init(jax.random.key(0), _x())["params"]["layers_0"]["weight_mu"]
    for i in range(M):
        for j in range(i):
            assert not np.any(np.asarray(w[i]) == np.asarray(w[j]))


@pytest.mark.parametrize("layer_type", ["clt", "cltdet"])
@pytest.mark.parametrize("map_", [False, True])
def test_member_outputs_equal_the_member_alone(layer_type, map_):
    mlp = BayesianMLP((8, 2), layer_type=layer_type, param_dtype=jnp.float64)
    ens = Ensemble(mlp, M)
    x = _x()
    v = ens.init(jax.random.key(0), x)
    mean, var = ens.apply(v, x, map=map_)
    for i in range(M):
        m1, v1 = mlp.apply(member(v, i), x, map=map_)
        np.testing.assert_allclose(mean[i], m1, rtol=1e-13, atol=1e-15)
        if map_ or layer_type == "cltdet":
            assert var is None and v1 is None
        else:
            np.testing.assert_allclose(var[i], v1, rtol=1e-13, atol=1e-15)


def test_plain_flax_deep_ensemble():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1, param_dtype=jnp.float64)(nn.relu(nn.Dense(8, param_dtype=jnp.float64)(x)))

    ens = Ensemble(Net(), 4)
    x = _x()
    v = ens.init(jax.random.key(0), x)
    y = ens.apply(v, x)
    assert y.shape == (4, 6, 1)
    for i in range(4):
        np.testing.assert_allclose(y[i], Net().apply(member(v, i), x), rtol=1e-13, atol=1e-15)
    assert is_ensemble(ens) and not is_ensemble(Net())
    assert ensemble_size(ens) == 4 and ensemble_size(Net()) is None


@pytest.mark.parametrize("layer_type", ["bbb", "lr"])
def test_rng_argument_is_split_per_member(layer_type):
    mlp = BayesianMLP((8, 2), layer_type=layer_type, param_dtype=jnp.float64)
    ens = Ensemble(mlp, M)
    x = _x()
    v = ens.init(jax.random.key(0), x)
    key = jax.random.key(7)
    y = ens.apply(v, x, rng=key)
    keys = jax.random.split(key, M)
    for i in range(M):
        np.testing.assert_allclose(y[i], mlp.apply(member(v, i), x, rng=keys[i]), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("layer_type", ["bbb", "lr"])
@pytest.mark.parametrize("via", ["rngs", "rng"])
def test_member_noise_is_independent(layer_type, via):
    """With identical members, the noise of two members is uncorrelated.

    ``n`` independent draws of the first output of members 0 and 1 (all members given member
    0's parameters, a large std so the noise dominates): the sample correlation of two
    independent variables has standard error ``1/sqrt(n)``; identical noise would give 1.
    """
    mlp = BayesianMLP((8, 1), layer_type=layer_type, param_dtype=jnp.float64)
    ens = Ensemble(mlp, 2)
    x = _x(batch=1)
    v = ens.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: jnp.stack([a[0], a[0]]), v)
    v = {**v, "params": jax.tree.map(lambda a: a, v["params"])}
    v["params"] = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 3.0 if "rho" in jax.tree_util.keystr(p) else a, v["params"]
    )
    n = 2000
    keys = jax.random.split(jax.random.key(3), n)
    if via == "rngs":
        ys = jax.vmap(lambda k: ens.apply(v, x, rngs={"sample": k}))(keys)
    else:
        ys = jax.vmap(lambda k: ens.apply(v, x, rng=k))(keys)
    a, b = np.asarray(ys[:, 0, 0, 0]), np.asarray(ys[:, 1, 0, 0])
    assert np.std(a) > 0.1 and np.std(b) > 0.1
    r = np.corrcoef(a, b)[0, 1]
    assert abs(r) < 4.0 / np.sqrt(n)


def test_per_member_inputs_with_in_axes_zero():
    mlp = BayesianMLP((8, 2), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(mlp, M, in_axes=0)
    xs = jnp.stack([_x(seed=i) for i in range(M)])
    v = ens.init(jax.random.key(0), xs)
    mean, var = ens.apply(v, xs)
    for i in range(M):
        m1, v1 = mlp.apply(member(v, i), xs[i])
        np.testing.assert_allclose(mean[i], m1, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(var[i], v1, rtol=1e-13, atol=1e-15)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        Ensemble(nn.Dense(1), 0)
    with pytest.raises(ValueError, match="size"):
        Ensemble(nn.Dense(1), 2.0)
    with pytest.raises(TypeError, match="module"):
        Ensemble(lambda x: x, 2)
    with pytest.raises(ValueError, match="index"):
        member({"params": {"w": jnp.zeros((2, 3))}}, 2)


# ------------------------------------------------------------ update_prior and total_kl
from bayeslayers_jax import update_prior  # noqa: E402


@pytest.fixture(scope="module")
def ens_vars():
    mlp = BayesianMLP((8, 2), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(mlp, M)
    x = _x()
    return mlp, ens, ens.init(jax.random.key(0), x), x


def _member_kls(mlp, variables, x):
    return np.array([float(total_kl(mlp.apply(member(variables, m), x, mutable=["kl"])[1]))
                     for m in range(M)])


def test_update_prior_on_an_ensemble_scalar_for_all_members(ens_vars):
    mlp, ens, v, x = ens_vars
    new = update_prior(v, "layers_1", weight_std=0.5, bias_mean=0.1)
    np.testing.assert_array_equal(new["prior"]["layers_1"]["weight_std"], np.full(M, 0.5))
    np.testing.assert_array_equal(new["prior"]["layers_1"]["bias_mean"], np.full(M, 0.1))
    _, state = ens.apply(new, x, mutable=["kl"])  # the member axis is kept: vmapped call works
    alone = [float(total_kl(mlp.apply(update_prior(member(v, m), "layers_1", weight_std=0.5, bias_mean=0.1),
                                      x, mutable=["kl"])[1])) for m in range(M)]
    np.testing.assert_allclose(total_kl(state, per_member=True), alone, rtol=1e-12)


def test_update_prior_on_an_ensemble_per_member_values(ens_vars):
    mlp, ens, v, x = ens_vars
    stds = jnp.array([0.1, 1.0, 3.0], jnp.float64)
    for value in (stds, stds[:, None, None]):
        new = update_prior(v, "layers_0", weight_std=value)
        np.testing.assert_array_equal(new["prior"]["layers_0"]["weight_std"], stds)
        _, state = ens.apply(new, x, mutable=["kl"])
        alone = [float(total_kl(mlp.apply(update_prior(member(v, m), "layers_0", weight_std=float(stds[m])),
                                          x, mutable=["kl"])[1])) for m in range(M)]
        np.testing.assert_allclose(total_kl(state, per_member=True), alone, rtol=1e-12)


def test_update_prior_on_an_ensemble_arrays(ens_vars):
    mlp, ens, v, x = ens_vars
    shared = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, (8, 2)), jnp.float64)
    new = update_prior(v, "layers_1", weight_std=shared)
    assert new["prior"]["layers_1"]["weight_std"].shape == (M, 8, 2)
    for m in range(M):
        np.testing.assert_array_equal(new["prior"]["layers_1"]["weight_std"][m], shared)
    per = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, (M, 8, 2)), jnp.float64)
    new = update_prior(v, "layers_1", weight_std=per)
    _, state = ens.apply(new, x, mutable=["kl"])
    alone = [float(total_kl(mlp.apply(update_prior(member(v, m), "layers_1", weight_std=per[m]),
                                      x, mutable=["kl"])[1])) for m in range(M)]
    np.testing.assert_allclose(total_kl(state, per_member=True), alone, rtol=1e-12)


def test_update_prior_on_an_ensemble_rejects_other_shapes(ens_vars):
    _, _, v, _ = ens_vars
    with pytest.raises(ValueError, match=r"weight_std of an ensemble layer .*got shape \(2,\)"):
        update_prior(v, "layers_1", weight_std=jnp.ones(2))
    with pytest.raises(ValueError, match=r"got shape \(4, 8, 2\)"):
        update_prior(v, "layers_1", weight_std=jnp.ones((4, 8, 2)))
    with pytest.raises(ValueError, match="weight_std must be finite and > 0"):
        update_prior(v, "layers_1", weight_std=jnp.array([1.0, 0.0, 1.0]))


def test_update_prior_ambiguous_bias_shape_raises():
    """A bias of 3 features in an ensemble of 3: shape (3,) could mean either form."""
    ens = Ensemble(BayesianMLP((3,), layer_type="clt", param_dtype=jnp.float64), 3)
    v = ens.init(jax.random.key(0), _x())
    with pytest.raises(ValueError, match="ambiguous"):
        update_prior(v, "layers_0", bias_std=jnp.array([1.0, 2.0, 3.0]))
    new = update_prior(v, "layers_0", bias_std=jnp.array([[1.0], [2.0], [3.0]]))
    np.testing.assert_array_equal(new["prior"]["layers_0"]["bias_std"], [1.0, 2.0, 3.0])
    new = update_prior(v, "layers_0", bias_std=jnp.tile(jnp.array([1.0, 2.0, 3.0]), (3, 1)))
    assert new["prior"]["layers_0"]["bias_std"].shape == (3, 3)


def test_total_kl_per_member_errors():
    with pytest.raises(ValueError, match="empty"):
        total_kl({}, per_member=True)
    with pytest.raises(ValueError, match="leading member axis"):
        total_kl({"a": jnp.zeros(()), "b": jnp.zeros((3,))}, per_member=True)
    with pytest.raises(ValueError, match="leading member axis"):
        total_kl({"a": jnp.zeros((2,)), "b": jnp.zeros((3,))}, per_member=True)
    f = jnp.arange(3.0)
    np.testing.assert_allclose(total_kl({"a": f, "b": 2 * f}, per_member=True), 3 * f)


def test_keyword_array_inputs_are_shared_under_jit():
    mlp = BayesianMLP((8, 2), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(mlp, M)
    x = _x()
    v = ens.init(jax.random.key(0), x)
    var_in = 0.1 * jnp.ones_like(x)
    mean, var = jax.jit(lambda v, x, s: ens.apply(v, x, var=s))(v, x, var_in)
    for i in range(M):
        m1, v1 = mlp.apply(member(v, i), x, var_in)
        np.testing.assert_allclose(mean[i], m1, rtol=1e-13)
        np.testing.assert_allclose(var[i], v1, rtol=1e-13)
