"""Parity of the NNX FlipoutLinear, conv layers, LearnedNoise and BayesianCritic with linen.

Ground truth: the flax.linen twins with the same parameters (loaded with ``from_linen``) and
the same ``rng=`` key. Both front ends call the same pure functions of the layer core, so
outputs, MAP outputs and KLs agree to float64 rounding: asserted at 1e-12 (a few ulps of
O(1) values), in practice bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bayeslayers_jax as bl
from bayeslayers_jax import nnx as bnnx
from bayeslayers_jax.nnx._conv import BBBConv, CLTConv, CLTConvDet, FlipoutConv, LRConv
from bayeslayers_jax.nnx._linear import FlipoutLinear

F64 = jnp.float64
TOL = 1e-12


def _close(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=TOL)


def _randomized(variables, seed=7):
    """Random rho (std in [e^-3, e^-1]) so every term of the math is exercised."""
    keys = iter(jax.random.split(jax.random.key(seed), 64))

    def leaf(path, v):
        name = jax.tree_util.keystr(path)
        if "rho" in name:
            return jax.random.uniform(next(keys), v.shape, v.dtype, -3.0, -1.0)
        return v

    return jax.tree_util.tree_map_with_path(leaf, dict(variables))


def _x(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape, F64)


def _check_sampling(layer, linen, variables, x):
    key = jax.random.key(11)
    _close(layer(x, rng=key), linen.apply(variables, x, rng=key))
    _close(layer(x, map=True), linen.apply(variables, x, map=True))
    _close(layer.kl(), linen.apply(variables, method="kl"))


def _check_clt(layer, linen, variables, x, has_std=True):
    var = jnp.abs(_x(x.shape, seed=2))
    _close(layer(x, var), linen.apply(variables, x, var))
    _close(layer(x, map=True), linen.apply(variables, x, map=True))
    if has_std:
        _close(layer.kl(), linen.apply(variables, method="kl"))


# ------------------------------------------------------------------- FlipoutLinear
@pytest.mark.parametrize("kw", [{}, {"use_bias": False, "use_softplus": True, "prior_mean": 0.3, "prior_std": 0.5}])
def test_flipout_linear_equals_linen(kw):
    x = _x((5, 3))
    linen = bl.FlipoutLinear(4, param_dtype=F64, **kw)
    variables = _randomized(linen.init(jax.random.key(0), x))
    layer = bnnx.from_linen(FlipoutLinear(3, 4, param_dtype=F64, rngs=nnx.Rngs(0), **kw), variables)
    _check_sampling(layer, linen, variables, x)
    _close(bnnx.to_linen(layer), {k: variables[k] for k in ("params", "prior")})
    # the layer's own stream: decorrelated examples for identical inputs
    own = FlipoutLinear(3, 4, param_dtype=F64, rngs=nnx.Rngs(params=0, sample=1), **kw)
    y = own(jnp.ones((5, 3), F64))
    assert not bool(jnp.all(y == y[:1]))


# ------------------------------------------------------------------------- convs
CONV_CASES = [
    (BBBConv, bl.BBBConv, {"padding": "VALID", "strides": 2, "use_bias": False, "use_softplus": True}),
    (LRConv, bl.LRConv, {"kernel_dilation": 2, "prior_mean": 0.3, "prior_std": 0.5}),
    (FlipoutConv, bl.FlipoutConv, {"feature_group_count": 2, "padding": ((1, 0), (2, 1)), "strides": (1, 2)}),
    (CLTConv, bl.CLTConv, {"act": "crelu", "strides": 2}),
    (CLTConvDet, bl.CLTConvDet, {"feature_group_count": 2, "is_output": True}),
]


@pytest.mark.parametrize("nnx_cls,linen_cls,kw", CONV_CASES)
def test_conv_equals_linen(nnx_cls, linen_cls, kw):
    x = _x((2, 7, 6, 4))
    linen = linen_cls(6, kernel_size=(3, 2), param_dtype=F64, **kw)
    variables = linen.init(jax.random.key(0), x)
    if nnx_cls is not CLTConvDet:
        variables = _randomized(variables)
    layer = nnx_cls(4, 6, (3, 2), param_dtype=F64, rngs=nnx.Rngs(0), **kw)
    # same parameter names and shapes (from_linen checks both)
    bnnx.from_linen(layer, variables)
    _close(bnnx.to_linen(layer), {k: variables[k] for k in ("params", "prior") if k in variables})
    if nnx_cls in (CLTConv, CLTConvDet):
        _check_clt(layer, linen, variables, x, has_std=nnx_cls is CLTConv)
        if nnx_cls is CLTConvDet:
            _close(layer(x), linen.apply(variables, x))
    else:
        _check_sampling(layer, linen, variables, x)
    _close(layer.mean(), linen.apply(variables, method="mean"))


def test_conv_init_matches_linen_distribution_and_is_input_layer():
    """Kernel means U(+-1/sqrt(fan_in)), fan_in = prod(kernel_size) * in / groups; rho = -4.6."""
    layer = BBBConv(8, 64, (3, 3), feature_group_count=2, param_dtype=F64, rngs=nnx.Rngs(0))
    w = np.asarray(layer.weight_mu[...])
    assert w.shape == (3, 3, 4, 64)
    bound = 1 / np.sqrt(36)
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(np.asarray(layer.bias_mu[...])) <= bound)
    n = w.size
    assert abs(np.mean(w**2) - bound**2 / 3) < 5 * bound**2 * np.sqrt(4 / 45) / np.sqrt(n)
    assert np.all(np.asarray(layer.weight_rho[...]) == bl._layer_core.INIT_RHO)
    x = _x((2, 5, 5, 3))
    layer = CLTConv(3, 4, 3, is_input=True, param_dtype=F64, rngs=nnx.Rngs(0))
    linen = bl.CLTConv(4, kernel_size=3, is_input=True, param_dtype=F64)
    variables = bl.CLTConv(4, kernel_size=3, is_input=True, param_dtype=F64).init(jax.random.key(0), x)
    bnnx.from_linen(layer, variables)
    _close(layer(x), linen.apply(variables, x))


def test_conv_errors():
    with pytest.raises(ValueError, match="kernel_size"):
        BBBConv(3, 4, (0, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="feature_group_count"):
        BBBConv(3, 4, 3, feature_group_count=2, rngs=nnx.Rngs(0))
    layer = LRConv(3, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        layer(jnp.ones((2, 5, 2)), rng=jax.random.key(0))
    with pytest.raises(ValueError, match="sample"):
        layer(jnp.ones((2, 5, 3)))


@pytest.mark.slow
def test_conv_jit_and_grad():
    layer = FlipoutConv(3, 4, (3, 3), param_dtype=F64, rngs=nnx.Rngs(0))
    x = _x((2, 5, 5, 3))

    @nnx.jit
    def loss(m):
        return jnp.sum(m(x, rng=jax.random.key(0)) ** 2) + m.kl()

    grads = nnx.grad(loss)(layer)
    leaves = jax.tree_util.tree_leaves(nnx.to_pure_dict(grads))
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    np.testing.assert_allclose(float(loss(layer)), float(
        jnp.sum(layer(x, rng=jax.random.key(0)) ** 2) + layer.kl()), rtol=1e-13)


# ------------------------------------------------------------------ LearnedNoise
from bayeslayers_jax.nnx._noise import LearnedNoise, learned_noise_var  # noqa: E402


def _noisy_pair(layer_type="clt", init_std=0.5):
    x = _x((6, 3))
    linen = bl.LearnedNoise(bl.BayesianMLP((5, 2), layer_type=layer_type, param_dtype=F64),
                            init_std=init_std, param_dtype=F64)
    variables = _randomized(linen.init(jax.random.key(0), x))
    noise = variables["params"]["noise_log_std"] + jnp.asarray([0.1, -0.2], F64)
    variables["params"] = {**variables["params"], "noise_log_std": noise}
    model = LearnedNoise(bnnx.BayesianMLP(3, (5, 2), layer_type=layer_type, param_dtype=F64, rngs=nnx.Rngs(0)),
                         init_std=init_std, param_dtype=F64)
    assert model.noise_log_std.shape == (2,)
    # linen shares the model's scope; the NNX wrapper nests the model under 'model'
    params = dict(variables["params"])
    nested = {"params": {"model": {k: v for k, v in params.items() if k != "noise_log_std"},
                         "noise_log_std": params["noise_log_std"]},
              "prior": {"model": variables["prior"]}}
    bnnx.from_linen(model, nested)
    return model, linen, variables, x


def test_learned_noise_init_value_and_forward_equal_linen():
    model = LearnedNoise(bnnx.BayesianMLP(3, (5, 2), rngs=nnx.Rngs(0)), init_std=0.5, param_dtype=F64)
    np.testing.assert_allclose(np.asarray(learned_noise_var(model)), [0.25, 0.25], rtol=1e-15)
    model, linen, variables, x = _noisy_pair("clt")
    _close(model(x), linen.apply(variables, x))
    _close(model(x, map=True), linen.apply(variables, x, map=True))
    _close(learned_noise_var(model), bl.learned_noise_var(linen, variables))
    _close(bnnx.total_kl(model), bl.total_kl(linen.apply(variables, x, mutable=["kl"])[1]["kl"]))
    model, linen, variables, x = _noisy_pair("lr")
    key = jax.random.key(3)
    _close(model(x, rng=key), linen.apply(variables, x, rng=key))


@pytest.mark.parametrize("map_", [False, True])
def test_learned_noise_elbo_equals_linen_and_trains_the_noise(map_):
    model, linen, variables, x = _noisy_pair("clt")
    y = _x((6, 2), seed=5)
    loss, aux = bnnx.elbo_loss(model, x, y, num_train_examples=50, map=map_)
    ref, ref_aux = bl.elbo_loss(linen, variables, x, y, num_train_examples=50, map=map_)
    _close(loss, ref)
    _close(aux["kl"], ref_aux["kl"])
    grads = nnx.grad(lambda m: bnnx.elbo_loss(m, x, y, num_train_examples=50, map=map_)[0])(model)
    ref_grads = jax.grad(lambda p: bl.elbo_loss(linen, {**variables, "params": p}, x, y,
                                                num_train_examples=50, map=map_)[0])(variables["params"])
    _close(grads.noise_log_std[...], ref_grads["noise_log_std"])
    with pytest.raises(ValueError, match="noise_var=None"):
        bnnx.elbo_loss(model, x, y, num_train_examples=50, noise_var=0.1)
    with pytest.raises(ValueError, match="Gaussian"):
        bnnx.elbo_loss(model, x, jnp.zeros(6, int), num_train_examples=50, likelihood="categorical")


@pytest.mark.slow
def test_learned_noise_ensemble_elbo_uses_each_members_noise():
    ens = bnnx.Ensemble(lambda r: LearnedNoise(bnnx.BayesianMLP(3, (4, 1), layer_type="clt", param_dtype=F64, rngs=r),
                                               param_dtype=F64), 2, rngs=nnx.Rngs(0))
    ens.members.noise_log_std.set_value(jnp.asarray([[0.0], [-1.0]], F64))
    x, y = _x((6, 3)), _x((6, 1), seed=4)
    loss, aux = bnnx.elbo_loss(ens, x, y, num_train_examples=50)
    mean, var = ens(x)
    s2 = jnp.exp(jnp.asarray([0.0, -2.0], F64))
    # expected Gaussian NLL per example: 0.5 log(2 pi s2) + ((y - m)^2 + v) / (2 s2), averaged
    nll = jnp.mean(0.5 * jnp.log(2 * jnp.pi * s2[:, None, None]) + ((y[None] - mean) ** 2 + var) / (2 * s2[:, None, None]),
                   axis=(1, 2))
    np.testing.assert_allclose(np.asarray(aux["nll"]), np.asarray(nll), rtol=1e-12)
    with pytest.raises(TypeError, match="member"):
        LearnedNoise(ens, 1)


# ---------------------------------------------------------------- BayesianCritic
from bayeslayers_jax.nnx._critic import BayesianCritic  # noqa: E402


@pytest.mark.parametrize("layer_type,act", [("clt", "relu"), ("cltdet", "crelu"), ("bbb", "relu")])
def test_critic_equals_linen(layer_type, act):
    s, a = _x((5, 3)), _x((5, 2), seed=4)
    linen = bl.BayesianCritic((6, 4), layer_type=layer_type, act=act, param_dtype=F64)
    variables = linen.init(jax.random.key(0), s, a)
    if layer_type != "cltdet":
        variables = _randomized(variables)
    critic = BayesianCritic(3, 2, (6, 4), layer_type=layer_type, act=act, param_dtype=F64, rngs=nnx.Rngs(0))
    bnnx.from_linen(critic, variables)  # the same paths: layers_0, layers_1, layers_2
    assert critic.layers_2.weight_mu.shape == (8 if act == "crelu" else 4, 1)
    _close(bnnx.to_linen(critic), {k: variables[k] for k in ("params", "prior") if k in variables})
    if layer_type in ("clt", "cltdet"):
        _close(critic(s, a), linen.apply(variables, s, a))
    else:
        key = jax.random.key(9)
        _close(critic(s, a, rng=key), linen.apply(variables, s, a, rng=key))
    out_map = critic(s, a, map=True)
    _close(out_map, linen.apply(variables, s, a, map=True))
    if layer_type in ("clt", "cltdet"):
        assert bool(jnp.all(out_map[1] == 0))
    if layer_type != "cltdet":
        sown = linen.apply(variables, s, a, mutable=["kl"], rng=jax.random.key(1))[1]["kl"]
        _close(bnnx.total_kl(critic), bl.total_kl(sown))


def test_critic_errors_and_negative_values():
    critic = BayesianCritic(3, 1, (4,), param_dtype=F64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="leading"):
        critic(jnp.ones((5, 3), F64), jnp.ones((4, 1), F64))
    with pytest.raises(TypeError, match="sequence"):
        BayesianCritic(3, 1, 4, rngs=nnx.Rngs(0))
    # is_output on the last layer: a negative output bias gives a negative MAP value
    critic.layers_1.weight_mu.set_value(jnp.zeros((4, 1), F64))
    critic.layers_1.bias_mu.set_value(jnp.full((1,), -100.0, F64))
    mean, _ = critic(jnp.ones((2, 3), F64), jnp.ones((2, 1), F64), map=True)
    np.testing.assert_array_equal(np.asarray(mean), [-100.0, -100.0])
