"""Tests of ``bayesianize(method='clt')`` (moment propagation) and of ``nn.DenseGeneral`` conversion."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import bayeslayers_jax as bl
from bayeslayers_jax.core import propagate_moments
from bayeslayers_jax.linen._bayesianize import bayesianize

F64 = jnp.float64
EPS = float(np.finfo(np.float64).eps)


def relu_mlp():
    return nn.Sequential([nn.Dense(7, param_dtype=F64), nn.relu, nn.Dense(2, param_dtype=F64)])


class GeluMLP(nn.Module):
    """One hidden GELU layer: with a deterministic input the mean-field moments are exact
    (the hidden pre-activations are independent Gaussians, the output weights independent of
    them), so Monte Carlo checks both the mean and the variance."""

    @nn.compact
    def __call__(self, x):
        h = jax.nn.gelu(nn.Dense(8, param_dtype=F64)(x), approximate=False)
        return nn.DenseGeneral(2, param_dtype=F64, name="head")(h)


class GeneralNet(nn.Module):
    """Dense, DenseGeneral (2-D kernel, no bias), relu, Dense: the converted-layer mix."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(5, param_dtype=F64)(x)
        x = jax.nn.relu(nn.DenseGeneral(4, axis=-1, use_bias=False, param_dtype=F64)(x))
        return nn.DenseGeneral((3,), param_dtype=F64, name="out")(x)


X = jax.random.normal(jax.random.key(3), (5, 3), F64)


def _randomize(v, key, scale=0.4):
    """Means and rho drawn at random (rho around log 0.1) so that no test sees the init."""
    flat = traverse_util.flatten_dict(v["params"])
    keys = jax.random.split(key, len(flat))
    out = {}
    for k_, (path, a) in zip(keys, sorted(flat.items())):
        noise = jax.random.normal(k_, a.shape, a.dtype)
        out[path] = scale * noise if path[-1].endswith("_mu") else jnp.log(0.1) + 0.3 * noise
    return {**v, "params": traverse_util.unflatten_dict(out)}


@pytest.fixture(scope="module")
def relu_case():
    b = bayesianize(relu_mlp(), "clt")
    v = _randomize(b.init(jax.random.key(0), X), jax.random.key(1))
    return b, v


def _hand_moments(v, use_softplus=False):
    """propagate_moments of the plain model's apply, the variables assembled here."""
    std = (lambda r: jax.nn.softplus(r)) if use_softplus else jnp.exp
    means, variances = {}, {}
    for name, p in v["params"].items():
        means[name] = {"kernel": p["weight_mu"], "bias": p["bias_mu"]}
        variances[name] = {"kernel": std(p["weight_rho"]) ** 2, "bias": std(p["bias_rho"]) ** 2}
    return propagate_moments(relu_mlp().apply)(({"params": means}, X), ({"params": variances}, None))


def test_relu_mlp_equals_propagate_by_hand_and_bayesian_mlp(relu_case):
    b, v = relu_case
    mean, var = b.apply(v, X)
    hm, hv = _hand_moments(v)
    assert mean.shape == var.shape == (5, 2) and mean.dtype == F64
    np.testing.assert_allclose(mean, hm, rtol=0, atol=1e3 * EPS)
    np.testing.assert_allclose(var, hv, rtol=0, atol=1e3 * EPS)
    # The package's own CLT MLP on the same parameters (layers_2 of the Sequential is its layers_1).
    ref = bl.BayesianMLP(features=(7, 2), layer_type="clt", param_dtype=F64)
    rv = ref.init(jax.random.key(0), X)
    p = v["params"]
    rv = {**rv, "params": {"layers_0": p["layers_0"], "layers_1": p["layers_2"]}}
    rm, rvar = ref.apply(rv, X)
    scale = float(jnp.max(jnp.abs(rm)) + jnp.max(rvar))
    np.testing.assert_allclose(mean, rm, rtol=0, atol=1e3 * EPS * scale)
    np.testing.assert_allclose(var, rvar, rtol=0, atol=1e3 * EPS * scale)
    assert float(jnp.min(var)) > 0


def test_softplus_and_map_mode():
    b = bayesianize(relu_mlp(), "clt", use_softplus=True)
    v = _randomize(b.init(jax.random.key(0), X), jax.random.key(2))
    mean, var = b.apply(v, X)
    hm, hv = _hand_moments(v, use_softplus=True)
    np.testing.assert_allclose(var, hv, rtol=0, atol=1e3 * EPS)
    out, none = b.apply(v, X, map=True)
    assert none is None
    det = {"params": {k: {"kernel": p["weight_mu"], "bias": p["bias_mu"]} for k, p in v["params"].items()}}
    np.testing.assert_allclose(out, relu_mlp().apply(det, X), rtol=0, atol=10 * EPS)


def test_gradients_reach_every_mu_and_rho(relu_case):
    b, v = relu_case

    def loss(params):
        m, s2 = b.apply({**v, "params": params}, X)
        return jnp.sum(m) + jnp.sum(s2)

    g = traverse_util.flatten_dict(jax.jit(jax.grad(loss))(v["params"]))
    assert len(g) == 8
    for path, a in g.items():
        assert bool(jnp.all(jnp.isfinite(a))), path
        assert float(jnp.max(jnp.abs(a))) > 1e-8, path


def test_kl_sow_equals_closed_forms():
    b = bayesianize(relu_mlp(), "clt", prior_mean=0.1, prior_std=0.5)
    v = _randomize(b.init(jax.random.key(0), X), jax.random.key(4))
    (mean, var), state = b.apply(v, X, mutable=["kl"])
    expected = 0.0
    for p in v["params"].values():
        for w in ("weight", "bias"):
            mu, s = np.asarray(p[f"{w}_mu"]), np.exp(np.asarray(p[f"{w}_rho"]))
            expected += np.sum(np.log(0.5 / s) + (s**2 + (mu - 0.1) ** 2) / (2 * 0.25) - 0.5)
    np.testing.assert_allclose(float(bl.total_kl(state["kl"])), expected, rtol=1e-12)
    assert sorted(state["kl"]) == ["layers_0", "layers_2"]


def test_elbo_loss_takes_the_moments(relu_case):
    b, v = relu_case
    y = jax.random.normal(jax.random.key(5), (5, 2), F64)
    loss, aux = bl.elbo_loss(b, v, X, y, num_train_examples=100, noise_var=0.3)
    mean, var = b.apply(v, X)
    (_, _), state = b.apply(v, X, mutable=["kl"])
    nll = np.sum(0.5 * np.log(2 * np.pi * 0.3) + ((y - mean) ** 2 + var) / (2 * 0.3), axis=-1)
    expected = np.mean(nll) + float(bl.total_kl(state["kl"])) / 100
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)
    np.testing.assert_allclose(float(aux["nll"]), np.mean(nll), rtol=1e-12)


def test_gelu_mlp_matches_monte_carlo_of_weight_draws():
    """4 000 weight draws; mean and variance within 4 Monte Carlo standard errors."""
    b = bayesianize(GeluMLP(), "clt", init_std=0.3)
    v = b.init(jax.random.key(0), X)
    mean, var = b.apply(v, X)
    p = v["params"]
    n = 4_000
    keys = jax.random.split(jax.random.key(6), 4)

    def draw(k, name, w):
        mu, rho = p[name][f"{w}_mu"], p[name][f"{w}_rho"]
        return mu[None] + jnp.exp(rho)[None] * jax.random.normal(k, (n,) + mu.shape, F64)

    params = {
        "Dense_0": {"kernel": draw(keys[0], "Dense_0", "weight"), "bias": draw(keys[1], "Dense_0", "bias")},
        "head": {"kernel": draw(keys[2], "head", "weight"), "bias": draw(keys[3], "head", "bias")},
    }
    ys = jax.jit(jax.vmap(lambda q: GeluMLP().apply({"params": q}, X)))(params)
    mc_mean, mc_var = jnp.mean(ys, 0), jnp.var(ys, 0)
    se_mean = jnp.sqrt(mc_var / n)
    se_var = jnp.sqrt(jnp.var((ys - mc_mean[None]) ** 2, 0) / n)
    assert float(jnp.max(jnp.abs(mean - mc_mean) / se_mean)) < 4
    assert float(jnp.max(jnp.abs(var - mc_var) / se_var)) < 4


@pytest.mark.parametrize("method", ["bbb", "lr", "flipout", "clt"])
def test_dense_general_map_equals_original(method):
    net = GeneralNet()
    pre = net.init(jax.random.key(0), X)
    b = bayesianize(net, method, pretrained=pre)
    v = b.init(jax.random.key(1), X)
    assert sorted(v["params"]["DenseGeneral_0"]) == ["weight_mu", "weight_rho"]
    assert v["params"]["out"]["weight_mu"].shape == (4, 3)
    out = b.apply(v, X, map=True)
    if method == "clt":
        out, none = out
        assert none is None
        mean, var = b.apply(v, X)
        assert mean.shape == var.shape == (5, 3) and float(jnp.min(var)) > 0
    else:
        y = b.apply(v, X, rngs={"sample": jax.random.key(2)})
        assert y.shape == (5, 3) and bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(out, net.apply(pre, X), rtol=0, atol=10 * EPS)


class WideGeneral(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.DenseGeneral((2, 3), param_dtype=F64, name="wide")(x)


def test_dense_general_with_a_higher_rank_kernel_raises():
    with pytest.raises(ValueError, match="'wide'.*2-D kernel|2-D kernel.*'wide'"):
        bayesianize(WideGeneral(), "lr").init(jax.random.key(0), jnp.ones((2, 3)))
    # Excluding it is the remedy the message names; with nothing else to convert, that is an error too.
    with pytest.raises(ValueError, match="no nn.Dense"):
        bayesianize(WideGeneral(), "lr", exclude="wide").init(jax.random.key(0), jnp.ones((2, 3)))


class SmallCNN(nn.Module):
    """Strided conv, relu, max pool, Dense: the convolution's moments through propagate_moments."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(nn.Conv(3, (3, 3), strides=2, param_dtype=F64)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(2, param_dtype=F64)(x.reshape((x.shape[0], -1)))


def test_cnn_equals_propagate_by_hand():
    xi = jax.random.normal(jax.random.key(7), (2, 8, 8, 1), F64)
    b = bayesianize(SmallCNN(), "clt")
    v = _randomize(b.init(jax.random.key(0), xi), jax.random.key(8))
    mean, var = jax.jit(b.apply)(v, xi)
    p = v["params"]
    means = {k: {"kernel": q["weight_mu"], "bias": q["bias_mu"]} for k, q in p.items()}
    variances = {k: {"kernel": jnp.exp(2 * q["weight_rho"]), "bias": jnp.exp(2 * q["bias_rho"])} for k, q in p.items()}
    hm, hv = propagate_moments(SmallCNN().apply)(({"params": means}, xi), ({"params": variances}, None))
    np.testing.assert_allclose(mean, hm, rtol=1e-12, atol=1e3 * EPS)
    np.testing.assert_allclose(var, hv, rtol=1e-12, atol=1e3 * EPS)
    assert float(jnp.min(var)) > 0
