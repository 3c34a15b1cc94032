"""Tests of ``bayesianize``: an existing ``flax.linen`` model made Bayesian by interception."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import bayeslayers_jax as bl
from bayeslayers_jax.linen._bayesianize import bayesianize

F64 = jnp.float64
EPS = float(np.finfo(np.float64).eps)


class MLP(nn.Module):
    """A plain MLP: Dense, relu, Dense."""

    hidden: int = 6
    out: int = 2

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(nn.Dense(self.hidden, param_dtype=F64)(x))
        return nn.Dense(self.out, param_dtype=F64)(x)


class NormMLP(nn.Module):
    """Dense, BatchNorm, relu, Dropout, Dense (the non-Dense modules must run unchanged)."""

    # float32 throughout: flax keeps BatchNorm's running statistics in float32, which a
    # float64 input cannot meet under strict dtype promotion.

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.5, deterministic=not train)(jax.nn.relu(x))
        return nn.Dense(3, name="head")(x)


class NoDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x * self.param("scale", nn.initializers.ones, (1, x.shape[-1]), F64)


class CNN(nn.Module):
    """Conv, BatchNorm, relu, Dropout, Conv (strided, grouped), mean pool, Dense (float32)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.3, deterministic=not train)(jax.nn.relu(x))
        x = jax.nn.relu(nn.Conv(4, (2, 2), strides=2, padding="VALID", feature_group_count=2)(x))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def _x(shape=(5, 4), seed=0, dtype=F64):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _layers(params):
    """``{path: layer params}`` of the layers that hold ``weight_mu``."""
    flat = traverse_util.flatten_dict(params)
    return {k[:-1]: traverse_util.unflatten_dict({kk[-1:]: v for kk, v in flat.items() if kk[:-1] == k[:-1]})
            for k in flat if k[-1] == "weight_mu"}


def _means_to_deterministic(vb, v0):
    """The deterministic variables whose kernels/biases are vb's means (other entries from v0)."""
    flat = traverse_util.flatten_dict(dict(v0))
    for path, layer in _layers(vb["params"]).items():
        flat[("params",) + path + ("kernel",)] = layer["weight_mu"]
        flat[("params",) + path + ("bias",)] = layer["bias_mu"]
    return traverse_util.unflatten_dict(flat)


@pytest.mark.parametrize("method", ["lr"])  # MAP mode is the same mean pass for every method
def test_map_equals_original_and_paths(method):
    x = _x()
    net = MLP()
    bnet = bayesianize(net, method, init_std=0.2)
    vb = bnet.init(jax.random.key(0), x)
    assert sorted(vb["params"]) == ["Dense_0", "Dense_1"]
    assert sorted(vb["params"]["Dense_0"]) == ["bias_mu", "bias_rho", "weight_mu", "weight_rho"]
    v0 = _means_to_deterministic(vb, net.init(jax.random.key(1), x))
    ref = net.apply(v0, x)
    out = bnet.apply(vb, x, map=True)
    assert out.dtype == F64
    # Same dot_general on the same numbers: equal up to float64 rounding.
    np.testing.assert_allclose(out, ref, rtol=0, atol=8 * EPS * float(jnp.max(jnp.abs(ref))))
    # A sample differs from the means; init_std sets rho = log(0.2).
    y = bnet.apply(vb, x, rngs={"sample": jax.random.key(2)})
    assert float(jnp.max(jnp.abs(y - ref))) > 1e-3
    np.testing.assert_allclose(vb["params"]["Dense_1"]["weight_rho"], np.log(0.2), rtol=1e-15)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_map_with_batchnorm_dropout(kind):
    x = _x((7, 4) if kind == "mlp" else (2, 6, 6, 2), dtype=jnp.float32)
    net = NormMLP() if kind == "mlp" else CNN()
    bnet = bayesianize(net, "lr")
    vb = bnet.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    assert sorted(vb) == ["batch_stats", "params", "prior"]
    v0 = _means_to_deterministic(vb, net.init(jax.random.key(3), x))
    v0 = {**v0, "params": {**v0["params"], "BatchNorm_0": vb["params"]["BatchNorm_0"]}}
    assert jax.tree_util.tree_structure(v0["params"]) == jax.tree_util.tree_structure(
        net.init(jax.random.key(3), x)["params"])
    ref = net.apply(v0, x)
    out = bnet.apply(vb, x, map=True)
    eps32 = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(out, ref, rtol=0, atol=16 * eps32 * float(jnp.max(jnp.abs(ref))))
    # Training mode: dropout and batch statistics still work through the wrapper.
    y, state = bnet.apply(vb, x, True, rngs={"sample": jax.random.key(4), "dropout": jax.random.key(5)},
                          mutable=["batch_stats", "kl"])
    assert y.shape == (x.shape[0], 3) and bool(jnp.all(jnp.isfinite(y)))
    assert sorted(state["kl"]) == (["Dense_0", "head"] if kind == "mlp" else ["Conv_0", "Conv_1", "Dense_0"])
    if kind == "cnn":
        assert vb["params"]["Conv_1"]["weight_mu"].shape == (2, 2, 2, 4)


def test_kl_matches_closed_form():
    x = _x()
    bnet = bayesianize(MLP(), "bbb", prior_mean=0.1, prior_std=0.5, init_std=0.05)
    vb = bnet.init(jax.random.key(0), x)
    _, state = bnet.apply(vb, x, rngs={"sample": jax.random.key(1)}, mutable=["kl"])
    expected = 0.0
    for layer in _layers(vb["params"]).values():
        for kind in ("weight", "bias"):
            expected += float(jnp.sum(bl.kl_normal(layer[f"{kind}_mu"], jnp.exp(layer[f"{kind}_rho"]),
                                                   jnp.asarray(0.1, F64), jnp.asarray(0.5, F64))))
    np.testing.assert_allclose(float(bl.total_kl(state)), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["lr", "bbb", pytest.param("flipout", marks=pytest.mark.slow)])
def test_moments_match_weight_sampling(method):
    """Per-example output mean and variance: the bayesianized model vs Monte Carlo of the
    original model with sampled weights, within 4 standard errors."""
    n = 4000
    x = _x((3, 4))
    net = MLP(hidden=5, out=2)
    bnet = bayesianize(net, method, init_std=0.3)
    vb = bnet.init(jax.random.key(0), x)
    v0 = net.init(jax.random.key(1), x)
    layers = _layers(vb["params"])

    def sampled_original(key):
        flat = traverse_util.flatten_dict(dict(v0))
        for i, (path, layer) in enumerate(sorted(layers.items())):
            kw, kb = jax.random.split(jax.random.fold_in(key, i))
            for name, k in (("kernel", kw), ("bias", kb)):
                kind = "weight" if name == "kernel" else "bias"
                mu, rho = layer[f"{kind}_mu"], layer[f"{kind}_rho"]
                flat[("params",) + path + (name,)] = mu + jnp.exp(rho) * jax.random.normal(k, mu.shape, F64)
        return net.apply(traverse_util.unflatten_dict(flat), x)

    keys = jax.random.split(jax.random.key(7), n)
    ref = jax.jit(jax.vmap(sampled_original))(keys)
    out = jax.jit(jax.vmap(lambda k: bnet.apply(vb, x, rngs={"sample": k})))(jax.random.split(jax.random.key(8), n))

    def stats(s):
        m, v = s.mean(0), s.var(0, ddof=1)
        m4 = jnp.mean((s - m[None]) ** 4, axis=0)
        return m, v, jnp.sqrt(v / n), jnp.sqrt((m4 - v**2) / n)

    m1, v1, sem1, sev1 = stats(ref)
    m2, v2, sem2, sev2 = stats(out)
    assert float(jnp.min(v1)) > 1e-3  # the noise is not negligible
    z_mean = float(jnp.max(jnp.abs(m1 - m2) / jnp.sqrt(sem1**2 + sem2**2)))
    z_var = float(jnp.max(jnp.abs(v1 - v2) / jnp.sqrt(sev1**2 + sev2**2)))
    print(f"{method}: max |z| mean {z_mean:.2f}, var {z_var:.2f}")
    assert z_mean < 4.0 and z_var < 4.0


def test_gradients_reach_every_mu_and_rho():
    x, y = _x((16, 4)), _x((16, 2), seed=1)
    bnet = bayesianize(MLP(), "lr", init_std=0.1)
    vb = bnet.init(jax.random.key(0), x)
    grads = jax.grad(lambda p: bl.elbo_loss(bnet, {**vb, "params": p}, x, y, num_train_examples=100,
                                            noise_var=0.1, key=jax.random.key(1))[0])(vb["params"])
    for path, g in traverse_util.flatten_dict(grads).items():
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.max(jnp.abs(g))) > 0, path


def test_elbo_training_decreases_loss():
    x = _x((32, 4))
    y = jnp.sin(x[:, :2])
    bnet = bayesianize(MLP(hidden=16), "lr")
    vb = bnet.init(jax.random.key(0), x)
    eval_key = jax.random.key(99)

    def loss(p, key):
        return bl.elbo_loss(bnet, {**vb, "params": p}, x, y, num_train_examples=32, noise_var=0.05, key=key)[0]

    def step(p, key):  # plain gradient descent
        g = jax.grad(loss)(p, key)
        return jax.tree_util.tree_map(lambda a, b: a - 5e-3 * b, p, g), None

    p0 = vb["params"]
    p1, _ = jax.jit(lambda p, k: jax.lax.scan(step, p, k))(p0, jax.random.split(jax.random.key(1), 100))
    before, after = float(loss(p0, eval_key)), float(loss(p1, eval_key))
    print(f"loss {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)
    # MAP training objective also runs (negative log prior from the 'prior' collection).
    map_loss, _ = bl.elbo_loss(bnet, vb, x, y, num_train_examples=32, noise_var=0.05, map=True)
    assert bool(jnp.isfinite(map_loss))


def test_include_exclude():
    x = _x()
    v = bayesianize(MLP(), exclude="Dense_1").init(jax.random.key(0), x)
    assert sorted(v["params"]["Dense_1"]) == ["bias", "kernel"]
    assert "weight_rho" in v["params"]["Dense_0"]
    v = bayesianize(NormMLP(), include="head").init(jax.random.key(0), x.astype(jnp.float32))
    assert sorted(v["params"]["Dense_0"]) == ["bias", "kernel"]
    assert "weight_mu" in v["params"]["head"]
    v = bayesianize(MLP(), include=nn.Dense).init(jax.random.key(0), x)
    assert len(_layers(v["params"])) == 2


def test_moped():
    x = _x((2, 6, 6, 2), dtype=jnp.float32)
    net = CNN()
    pre = net.init(jax.random.key(3), x)
    # Non-trivial running statistics, so copying them is checked.
    pre = {**pre, "batch_stats": jax.tree_util.tree_map(
        lambda a: a + jax.random.uniform(jax.random.key(4), a.shape, a.dtype), pre["batch_stats"])}
    bnet = bayesianize(net, "bbb", pretrained=pre)
    vb = bnet.init(jax.random.key(0), x)
    for name in ("Conv_0", "Conv_1", "Dense_0"):
        w, b = pre["params"][name]["kernel"], pre["params"][name]["bias"]
        p = vb["params"][name]
        np.testing.assert_array_equal(p["weight_mu"], w)
        np.testing.assert_array_equal(p["bias_mu"], b)
        np.testing.assert_allclose(jnp.exp(p["weight_rho"]), 0.1 * jnp.abs(w), rtol=1e-6)
        # Zero pretrained biases (zeros_init): the std floor, never rho = -inf.
        assert bool(jnp.all(jnp.isfinite(p["bias_rho"])))
    np.testing.assert_array_equal(bnet.apply(vb, x, map=True), net.apply(pre, x))
    # moped_prior: the prior is centred at the pretrained weights with std delta|w|, so the
    # initial KL is exactly 0.
    bnet = bayesianize(net, "bbb", pretrained=pre, moped_prior=True, moped_delta=0.2)
    vb = bnet.init(jax.random.key(0), x)
    np.testing.assert_array_equal(vb["prior"]["Conv_1"]["weight_mean"], pre["params"]["Conv_1"]["kernel"])
    np.testing.assert_allclose(vb["prior"]["Conv_1"]["weight_std"], 0.2 * jnp.abs(pre["params"]["Conv_1"]["kernel"]),
                               rtol=1e-7)
    _, state = bnet.apply(vb, x, rngs={"sample": jax.random.key(1)}, mutable=["kl"])
    assert abs(float(bl.total_kl(state))) < 1e-3  # float32 rounding of log(sigma_p / sigma_q)
    vb = bayesianize(net, pretrained=pre, moped_prior=True, moped_prior_std=2.0).init(jax.random.key(0), x)
    np.testing.assert_array_equal(vb["prior"]["Conv_0"]["weight_std"], 2.0)


def test_errors():
    x = _x()
    with pytest.raises(ValueError, match="no nn.Dense/nn.Conv layer to convert"):
        bayesianize(NoDense()).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="matches no nn.Dense/nn.Conv"):
        bayesianize(MLP(), include="Dense_9").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="matches no nn.Dense/nn.Conv"):
        bayesianize(MLP(), exclude="enc*").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="method"):
        bayesianize(MLP(), "mcmc")
    with pytest.raises(ValueError, match="prior_std"):
        bayesianize(MLP(), prior_std=-1.0)
    pre = MLP(hidden=7).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="shape"):
        bayesianize(MLP(), pretrained=pre).init(jax.random.key(0), x)
    pre = NormMLP().init(jax.random.key(0), x.astype(jnp.float32))
    with pytest.raises(ValueError, match="pretrained does not match"):
        bayesianize(MLP(hidden=8, out=3), pretrained=pre).init(jax.random.key(0), x)
    bnet = bayesianize(MLP())
    v = bnet.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="PRNG key"):
        bnet.apply(v, x)
