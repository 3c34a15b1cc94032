"""Tests of BayesianMLP (bayeslayers_jax/mlp.py): structure, MAP, composition, the deep-CLT
versus sampling gap, training with optax, transformations, dtypes and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bayeslayers_jax import BayesianMLP, BBBLinear, CLTLinear, LRLinear, total_kl

F64 = jnp.float64
EPS64 = float(np.finfo(np.float64).eps)
TYPES = ["bbb", "lr", "clt", "cltdet"]


def _x(shape=(5, 3), seed=1, dtype=F64):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _set_rho(variables, std):
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.full_like(a, math.log(std)) if "rho" in str(path[-1]) else a,
        variables["params"],
    )
    return {**variables, "params": params}


def _np_forward(params, x, act, n):
    """NumPy MAP forward: dense layers with mean weights, act between them."""
    h = np.asarray(x)
    for i in range(n):
        p = params[f"layers_{i}"]
        h = h @ np.asarray(p["weight_mu"]) + np.asarray(p["bias_mu"])[None]
        if i < n - 1:
            h = np.maximum(h, 0) if act == "relu" else np.concatenate([np.maximum(h, 0), np.maximum(-h, 0)], -1)
    return h


@pytest.mark.parametrize("layer_type", TYPES)
@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_structure_and_map_equals_numpy_dense_network(layer_type, act):
    x = _x()
    model = BayesianMLP((8, 7, 2), layer_type=layer_type, act=act, param_dtype=F64)
    v = model.init(jax.random.key(0), x)
    widen = 2 if act == "crelu" else 1
    shapes = [v["params"][f"layers_{i}"]["weight_mu"].shape for i in range(3)]
    assert shapes == [(3, 8), (8 * widen, 7), (7 * widen, 2)]
    has_rho = layer_type != "cltdet"
    assert ("weight_rho" in v["params"]["layers_1"]) == has_rho and ("prior" in v) == has_rho
    if layer_type.startswith("clt"):
        bound = model.bind(v)
        flags = [(layer.is_input, layer.is_output, layer.act) for layer in bound.layers]
        assert flags == [(True, False, act), (False, False, act), (False, True, act)]
    expected = _np_forward(v["params"], x, act, 3)
    for out in (model.apply(v, x, map=True), BayesianMLP((8, 7, 2), layer_type, act, map=True, param_dtype=F64).apply(v, x)):
        if layer_type.startswith("clt"):
            assert out[1] is None
            out = out[0]
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=16 * EPS64)


@pytest.mark.parametrize("layer_type,cls", [("bbb", BBBLinear), ("lr", LRLinear)])
def test_sampling_mlp_equals_its_layers_with_split_keys(layer_type, cls):
    x = _x()
    model = BayesianMLP((6, 2), layer_type=layer_type, act="crelu", param_dtype=F64)
    v = _set_rho(model.init(jax.random.key(0), x), 0.2)
    key = jax.random.key(4)
    k0, k1 = jax.random.split(key, 2)
    sub = lambda i: {c: v[c][f"layers_{i}"] for c in v}  # noqa: E731
    h = cls(6, param_dtype=F64).apply(sub(0), x, rng=k0)
    h = jnp.concatenate([jax.nn.relu(h), jax.nn.relu(-h)], -1)
    expected = cls(2, param_dtype=F64).apply(sub(1), h, rng=k1)
    np.testing.assert_allclose(model.apply(v, x, rng=key), expected, rtol=1e-13, atol=1e-14)
    # The 'sample' stream works too, and the same key reproduces the output.
    a = model.apply(v, x, rngs={"sample": key})
    np.testing.assert_array_equal(a, model.apply(v, x, rngs={"sample": key}))
    with pytest.raises(ValueError, match="rng=key"):
        model.apply(v, x)


def test_clt_mlp_equals_its_layers_and_kl_sums():
    x = _x()
    model = BayesianMLP((6, 2), layer_type="clt", act="relu", param_dtype=F64)
    v = _set_rho(model.init(jax.random.key(0), x), 0.2)
    sub = lambda i: {c: v[c][f"layers_{i}"] for c in v}  # noqa: E731
    h, s = CLTLinear(6, is_input=True, param_dtype=F64).apply(sub(0), x)
    m, var = CLTLinear(2, is_output=True, param_dtype=F64).apply(sub(1), h, s)
    (mean, out_var), state = model.apply(v, x, mutable=["kl"])
    np.testing.assert_allclose(mean, m, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out_var, var, rtol=1e-13, atol=1e-15)
    kls = [CLTLinear(f, param_dtype=F64).apply(sub(i), method="kl") for i, f in enumerate((6, 2))]
    np.testing.assert_allclose(total_kl(state), kls[0] + kls[1], rtol=1e-14)
    # An input variance, when given, is propagated by the input layer too.
    m2, v2 = model.apply(v, x, 0.1 * jnp.ones_like(x))
    assert np.all(np.asarray(v2) > np.asarray(out_var))


@pytest.mark.slow  # 20000 Monte Carlo samples per activation: about 10 s of CPU in all
@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_deep_clt_mlp_is_close_to_sampling(act):
    """Depth-3 CLT network (widths 32, 32, 1; std 0.1) against N = 20000 exact samples.

    For one input, LR sampling has the same marginal as BBB (given the previous layer's
    output every pre-activation is exactly Gaussian), so it samples the true predictive.
    CLT is exact for the first layer's moments; after it, it drops the correlations between
    units that share inputs and treats sums as Gaussian. Measured with N = 100000 (MC SE of
    the mean 0.003 sd, of the variance ratio 0.0045) for std 0.01 to 0.2: mean gap <= 0.0096
    sd, variance ratio CLT / MC in [0.963, 1.021] (ReLU and CReLU). Tolerance: 0.03 sd for
    the mean and 8 % for the variance (3x and 2x the measured gaps) plus 4 MC standard errors.
    """
    n = 20000
    x = _x((8, 4))
    clt = BayesianMLP((32, 32, 1), layer_type="clt", act=act, param_dtype=F64)
    v = _set_rho(clt.init(jax.random.key(0), x), 0.1)
    mean, var = clt.apply(v, x)
    lr = BayesianMLP((32, 32, 1), layer_type="lr", act=act, param_dtype=F64)
    ys = np.asarray(jax.jit(jax.vmap(lambda k: lr.apply(v, x, rng=k)))(jax.random.split(jax.random.key(2), n)))
    m_mc, v_mc = ys.mean(0), ys.var(0, ddof=1)
    sd = np.sqrt(v_mc)
    np.testing.assert_array_less(np.abs(np.asarray(mean) - m_mc) / sd, 0.03 + 4 / math.sqrt(n))
    np.testing.assert_array_less(np.abs(np.asarray(var) / v_mc - 1), 0.08 + 4 * math.sqrt(2 / n))


# -------------------------------------------------------------------- training
def _regression_data():
    key = jax.random.key(0)
    x = jax.random.uniform(key, (64, 1), jnp.float32, -2.0, 2.0)
    y = jnp.sin(2.0 * x) + 0.05 * jax.random.normal(jax.random.key(1), (64, 1), jnp.float32)
    return x, y


@pytest.mark.slow  # 300 training steps per layer type: about 16 s of CPU in all
@pytest.mark.parametrize("layer_type", TYPES)
def test_each_type_trains_with_optax(layer_type):
    """300 Adam steps on y = sin(2x) + noise: every gradient finite, loss at least halves.

    Loss: MSE for BBB/LR (one weight sample per step) and 'cltdet'; the expected squared
    error under the CLT predictive, (y - m)^2 + v, for 'clt'; plus KL / 6400 (a 100x
    down-weighted ELBO for 64 points) for the Bayesian types.
    """
    x, y = _regression_data()
    act = "crelu" if layer_type in ("lr", "clt") else "relu"
    model = BayesianMLP((16, 16, 1), layer_type=layer_type, act=act)
    variables = model.init(jax.random.key(3), x)
    params, rest = variables["params"], {k: a for k, a in variables.items() if k != "params"}
    opt = optax.adam(1e-2)

    def loss_fn(params, key):
        out, state = model.apply({**rest, "params": params}, x, rng=key, mutable=["kl"])
        if layer_type == "clt":
            m, v = out
            data = jnp.mean((y - m) ** 2 + v)
        else:
            m = out[0] if layer_type == "cltdet" else out
            data = jnp.mean((y - m) ** 2)
        return data + total_kl(state) / 6400.0, data

    def step(carry, key):
        params, opt_state, finite = carry
        (loss, data), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
        finite = finite & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        # optax's Adam bias correction mixes int and float: standard promotion for it alone.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, finite), data

    run = jax.jit(lambda p, s, keys: jax.lax.scan(step, (p, s, jnp.array(True)), keys))
    (params, _, finite), losses = run(params, opt.init(params), jax.random.split(jax.random.key(4), 300))
    losses = np.asarray(losses)
    assert bool(finite) and np.all(np.isfinite(losses))
    assert losses[-20:].mean() < 0.5 * losses[:5].mean()


# ------------------------------------------------------------ transformations
@pytest.mark.parametrize(  # every layer type: tests/test_layers.py; bbb takes about 10 s of CPU
    "layer_type", [pytest.param("bbb", marks=pytest.mark.slow), "clt"]
)
def test_mlp_jit_vmap_grad(layer_type):
    x = _x()
    model = BayesianMLP((6, 2), layer_type=layer_type, param_dtype=F64)
    v = _set_rho(model.init(jax.random.key(0), x), 0.2)
    clt = layer_type.startswith("clt")
    def f(vv, k):
        if clt:
            m, var = model.apply(vv, x, 0.1 * jnp.ones_like(x))
            return jnp.concatenate([m, var], -1)
        return model.apply(vv, x, rng=k)

    key = jax.random.key(1)
    jf = jax.jit(f)
    ref = jf(v, key)
    np.testing.assert_allclose(ref, f(v, key), rtol=1e-12, atol=1e-14)  # jit == eager
    keys = jax.random.split(key, 4)
    samples = jax.jit(jax.vmap(lambda k: f(v, k)))(keys)
    assert samples.shape == (4,) + ref.shape
    np.testing.assert_allclose(samples[3], jf(v, keys[3]), rtol=1e-12, atol=1e-14)
    ens = jax.jit(jax.vmap(lambda k: model.init(k, x)))(jax.random.split(jax.random.key(5), 3))
    out = jax.jit(jax.vmap(lambda vv: f(vv, key)))(ens)
    np.testing.assert_allclose(out[2], jf(jax.tree.map(lambda a: a[2], ens), key), rtol=1e-12, atol=1e-14)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(f({**v, "params": p}, key) ** 2)))(v["params"])
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


@pytest.mark.parametrize("layer_type", ["lr", "clt"])  # every layer type: tests/test_layers.py
def test_mlp_dtypes(layer_type):
    clt = layer_type.startswith("clt")
    for dtype, param_dtype in ((jnp.float32, jnp.float32), (F64, F64), (jnp.bfloat16, jnp.float32)):
        x = _x(dtype=param_dtype)
        model = BayesianMLP((6, 2), layer_type=layer_type, act="crelu", dtype=dtype, param_dtype=param_dtype)
        v = model.init(jax.random.key(0), x)
        assert all(a.dtype == param_dtype for a in jax.tree.leaves(v))
        out = model.apply(v, x, jnp.ones_like(x) * 0.1)[1] if clt else model.apply(v, x, rng=jax.random.key(1))
        assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


# ---------------------------------------------------------------------- errors
def test_mlp_errors():
    with pytest.raises(ValueError, match=r"layer_type must be one of \('bbb', 'lr', 'clt', 'cltdet'\), got 'gp'"):
        BayesianMLP((4, 1), layer_type="gp")
    with pytest.raises(ValueError, match=r"act must be one of \('relu', 'crelu'\), got 'tanh'"):
        BayesianMLP((4, 1), act="tanh")
    with pytest.raises(ValueError, match="at least one width"):
        BayesianMLP(())
    with pytest.raises(ValueError, match="positive ints"):
        BayesianMLP((4, 0))
    with pytest.raises(TypeError, match="sequence"):
        BayesianMLP(4)
    with pytest.raises(ValueError, match="prior_std"):
        BayesianMLP((4, 1), prior_std=-1.0)
    x = _x()
    model = BayesianMLP((4, 1), layer_type="lr")
    v = model.init(jax.random.key(0), x.astype(jnp.float32))
    with pytest.raises(ValueError, match="var is only accepted by CLT"):
        model.apply(v, x.astype(jnp.float32), jnp.ones_like(x, jnp.float32), rng=jax.random.key(0))
    with pytest.raises(ValueError, match="initialized for 3"):
        model.apply(v, jnp.ones((2, 5), jnp.float32), map=True)


@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_clt_mlp_gradients_are_finite_at_extreme_scales(act):
    """Inputs from 1e-30 to 1e15, a zero input row, and weights with std exp(-60): no NaN/Inf anywhere."""
    model = BayesianMLP((8, 8, 1), layer_type="clt", act=act)
    x = jnp.asarray(np.array([[1e15, -1e15, 3.0], [1e-30, 0.0, -1e-30], [0.0, 0.0, 0.0]]), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    params = jax.tree_util.tree_map(lambda p: p, variables["params"])
    params["layers_1"]["weight_rho"] = jnp.full_like(params["layers_1"]["weight_rho"], -60.0)

    def loss(p):
        (mean, var), state = model.apply({**variables, "params": p}, x, mutable=["kl"])
        return jnp.sum(mean * 1e-20) + jnp.sum(var * 1e-40) + total_kl(state) * 1e-6

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    for g in jax.tree_util.tree_leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g)))


def test_per_layer_priors_and_rho_init():
    import math

    import flax.linen as nn

    x = jnp.ones((2, 3), jnp.float64)
    model = BayesianMLP((4, 5, 1), layer_type="bbb", prior_std=(1.0, 0.5, 0.1), prior_mean=[0.0, 0.2, -0.3],
                        bias_prior_std=2.0, param_dtype=jnp.float64,
                        weight_rho_init=nn.initializers.constant(math.log(0.2)),
                        bias_rho_init=nn.initializers.constant(math.log(0.05)))
    v = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    for i, (std, mean) in enumerate([(1.0, 0.0), (0.5, 0.2), (0.1, -0.3)]):
        prior = v["prior"][f"layers_{i}"]
        assert float(prior["weight_std"]) == std and float(prior["weight_mean"]) == mean
        assert float(prior["bias_std"]) == 2.0 and float(prior["bias_mean"]) == mean  # bias mean follows
        params = v["params"][f"layers_{i}"]
        np.testing.assert_allclose(jnp.exp(params["weight_rho"]), 0.2, rtol=1e-12)
        np.testing.assert_allclose(jnp.exp(params["bias_rho"]), 0.05, rtol=1e-12)
    # the same as update_prior after the fact: the KL matches a layer built with that prior alone
    with pytest.raises(ValueError, match=r"prior_std must be a scalar or hold one value per layer \(3"):
        BayesianMLP((4, 5, 1), prior_std=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"prior_std\[1\]"):
        BayesianMLP((4, 5, 1), prior_std=(1.0, -0.5, 1.0))
    with pytest.raises(ValueError, match="scalar or a sequence of scalars"):
        BayesianMLP((4, 1), prior_std=(np.ones(3), 1.0))
