"""Tests of the flax.linen Bayesian layers (bayeslayers_jax/layers.py).

Ground truths: the pure functions of the package (composition), NumPy re-implementations
(MAP = dense layer, closed-form KL), Monte Carlo over weights (tolerances of 4 standard
errors), finite differences (gradients) and float epsilons.
"""

import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import (
    BBBLinear,
    CLTLinear,
    CLTLinearDet,
    LRLinear,
    clt_linear_moments,
    crelu_moments,
    local_reparameterization,
    relu_moments,
    sample_weights,
    total_kl,
)

F64 = jnp.float64
EPS64 = float(np.finfo(np.float64).eps)
SAMPLING = [BBBLinear, LRLinear]
ALL = [BBBLinear, LRLinear, CLTLinear, CLTLinearDet]


def _x(shape=(4, 6), seed=1, dtype=F64):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _init(layer, x, *, w_std=None, b_std=None, seed=0):
    """Initializes ``layer`` and optionally sets random stds in [w_std/2, 2*w_std]."""
    v = layer.init(jax.random.key(seed), x)
    p = dict(v["params"])
    keys = jax.random.split(jax.random.key(seed + 100), 2)
    if w_std is not None and "weight_rho" in p:
        u = jax.random.uniform(keys[0], p["weight_rho"].shape, p["weight_rho"].dtype, -1.0, 1.0)
        p["weight_rho"] = math.log(w_std) + u * math.log(2.0)
    if b_std is not None and "bias_rho" in p:
        u = jax.random.uniform(keys[1], p["bias_rho"].shape, p["bias_rho"].dtype, -1.0, 1.0)
        p["bias_rho"] = math.log(b_std) + u * math.log(2.0)
    return {**v, "params": p}


def _np_relu(x):
    return np.maximum(x, 0.0)


def _np_crelu(x):
    return np.concatenate([_np_relu(x), _np_relu(-x)], axis=-1)


def _np_kl(m, s, mp, sp):
    """Closed-form KL(N(m, s^2) || N(mp, sp^2)) in NumPy float64 (textbook form)."""
    m, s, mp, sp = (np.asarray(a, np.float64) for a in (m, s, mp, sp))
    return np.log(sp / s) + (s**2 + (m - mp) ** 2) / (2 * sp**2) - 0.5


def _clt(cls, **kw):
    return cls(3, is_input=kw.pop("is_input", True), param_dtype=F64, **kw)


# ---------------------------------------------------------------------------- init
def test_initial_values_follow_the_reference():
    """weight_mu ~ U(+-1/sqrt(in)) (kaiming-uniform, a=sqrt(5)), bias_mu ~ U(+-1/sqrt(in)), rho = -4.6."""
    n_in, n_out = 400, 256
    v = BBBLinear(n_out).init(jax.random.key(0), jnp.ones((1, n_in), jnp.float32))
    p, prior = v["params"], v["prior"]
    bound = 1.0 / math.sqrt(n_in)
    w = np.asarray(p["weight_mu"], np.float64).ravel()
    assert p["weight_mu"].shape == (n_in, n_out) and p["weight_mu"].dtype == jnp.float32
    assert np.all(np.abs(w) <= bound)
    # U(-b, b): variance b^2/3, Var(X^2) = b^4/5 - b^4/9 = 4 b^4 / 45.
    n = w.size
    assert abs(w.mean()) <= 4 * math.sqrt(bound**2 / 3 / n)
    assert abs(np.mean(w**2) - bound**2 / 3) <= 4 * math.sqrt(4 * bound**4 / 45 / n)
    b = np.asarray(p["bias_mu"])
    assert b.shape == (n_out,) and np.all(np.abs(b) <= bound) and np.std(b) > bound / 4
    for name in ("weight_rho", "bias_rho"):
        assert np.all(np.asarray(p[name]) == np.float32(-4.6))
    assert {k: float(a) for k, a in prior.items()} == {
        "weight_mean": 0.0, "weight_std": 1.0, "bias_mean": 0.0, "bias_std": 1.0
    }


def test_no_bias_and_det_layer_parameters():
    x = _x()
    v = BBBLinear(3, use_bias=False, param_dtype=F64).init(jax.random.key(0), x)
    assert set(v["params"]) == {"weight_mu", "weight_rho"}
    assert set(v["prior"]) == {"weight_mean", "weight_std"}
    v = CLTLinearDet(3, param_dtype=F64).init(jax.random.key(0), x)
    assert set(v) == {"params"} and set(v["params"]) == {"weight_mu", "bias_mu"}


# ------------------------------------------------------------ pure composition
@pytest.mark.parametrize("use_softplus", [False, True])
def test_bbb_equals_pure_composition(use_softplus):
    x = _x()
    layer = BBBLinear(3, use_softplus=use_softplus, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    key = jax.random.key(7)
    p = v["params"]
    std = (lambda r: np.log1p(np.exp(r))) if use_softplus else np.exp
    # One draw: the bias is the kernel's last row.
    wb = sample_weights(
        key,
        np.concatenate([p["weight_mu"], p["bias_mu"][None]]),
        std(np.concatenate([p["weight_rho"], p["bias_rho"][None]])),
    )
    w, b = wb[:-1], wb[-1]
    expected = np.asarray(x) @ np.asarray(w) + np.asarray(b)[None, :]
    np.testing.assert_allclose(layer.apply(v, x, rng=key), expected, rtol=1e-13, atol=1e-13)


def test_lr_equals_pure_composition():
    x = _x()
    layer = LRLinear(3, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    p, key = v["params"], jax.random.key(7)
    expected = local_reparameterization(
        key, x, p["weight_mu"], jnp.exp(p["weight_rho"]), p["bias_mu"], jnp.exp(p["bias_rho"])
    )
    np.testing.assert_allclose(layer.apply(v, x, rng=key), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ["relu", "crelu"])
@pytest.mark.parametrize("is_input,is_output", [(True, False), (False, False), (False, True), (True, True)])
def test_clt_equals_pure_composition(act, is_input, is_output):
    x = _x()
    var_in = None if is_input else jnp.abs(_x(seed=2)) * 0.5
    layer = CLTLinear(3, act=act, is_input=is_input, is_output=is_output, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    p = v["params"]
    m, s2 = clt_linear_moments(
        x, var_in, p["weight_mu"], jnp.exp(p["weight_rho"]) ** 2, p["bias_mu"], jnp.exp(p["bias_rho"]) ** 2
    )
    if not is_output:
        m, s2 = (relu_moments if act == "relu" else crelu_moments)(m, jnp.sqrt(s2))
    mean, var = layer.apply(v, x, var_in)
    assert mean.shape == ((4, 6) if act == "crelu" and not is_output else (4, 3))
    np.testing.assert_allclose(mean, m, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(var, s2, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_clt_det_equals_pure_composition(act):
    x, var_in = _x(), jnp.abs(_x(seed=2))
    layer = CLTLinearDet(3, act=act, param_dtype=F64)
    v = _init(layer, x)
    p = v["params"]
    m, s2 = clt_linear_moments(x, var_in, p["weight_mu"], None, p["bias_mu"], None)
    m, s2 = (relu_moments if act == "relu" else crelu_moments)(m, jnp.sqrt(s2))
    mean, var = layer.apply(v, x, var_in)
    np.testing.assert_allclose(mean, m, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(var, s2, rtol=1e-13, atol=1e-15)
    # Without an input variance it is a deterministic dense layer with activation.
    mean, var = layer.apply(v, x)
    act_np = _np_relu if act == "relu" else _np_crelu
    expected = act_np(np.asarray(x) @ np.asarray(p["weight_mu"]) + np.asarray(p["bias_mu"])[None])
    assert var is None
    np.testing.assert_allclose(mean, expected, rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------- MAP
MAP_CASES = [(BBBLinear, None, True), (LRLinear, None, True)] + [
    (cls, act, is_output)
    for cls in (CLTLinear, CLTLinearDet)
    for act, is_output in (("relu", False), ("crelu", False), ("relu", True))
]


@pytest.mark.parametrize("cls,act,is_output", MAP_CASES)
def test_map_equals_dense_with_mean_weights(cls, act, is_output):
    x = _x()
    clt = cls in (CLTLinear, CLTLinearDet)
    kw = dict(act=act, is_output=is_output) if clt else {}
    layer = cls(3, param_dtype=F64, **kw)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    p = v["params"]
    dense = np.asarray(x) @ np.asarray(p["weight_mu"]) + np.asarray(p["bias_mu"])[None]
    if clt and not is_output:
        dense = (_np_relu if act == "relu" else _np_crelu)(dense)
    out_call = layer.apply(v, x, map=True)
    out_field = cls(3, param_dtype=F64, map=True, **kw).apply(v, x)
    for out in (out_call, out_field):
        if clt:
            assert out[1] is None
            out = out[0]
        np.testing.assert_allclose(out, dense, rtol=4 * EPS64, atol=4 * EPS64)


def test_map_given_twice_is_an_error():
    x = _x()
    layer = BBBLinear(3, map=True, param_dtype=F64)
    v = layer.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="map"):
        layer.apply(v, x, map=False)


# -------------------------------------------------------------------------- keys
@pytest.mark.parametrize("cls", SAMPLING)
def test_same_key_same_noise_and_streams(cls):
    x = _x()
    layer = cls(3, param_dtype=F64)
    v = _init(layer, x, w_std=0.3)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a, b, c = (layer.apply(v, x, rng=k) for k in (k1, k1, k2))
    np.testing.assert_array_equal(a, b)  # manual_reset: same key, same noise
    assert np.min(np.abs(np.asarray(a) - np.asarray(c))) > 0
    s1 = layer.apply(v, x, rngs={"sample": k1})
    s2 = layer.apply(v, x, rngs={"sample": k1})
    np.testing.assert_array_equal(s1, s2)
    custom = cls(3, param_dtype=F64, rng_collection="noise")
    np.testing.assert_array_equal(custom.apply(v, x, rngs={"noise": k1}), s1)


class _KeyProbe(flax.linen.Module):
    """Returns the key a top-level module draws from the ``'sample'`` stream."""

    @flax.linen.compact
    def __call__(self):
        return self.make_rng("sample")


class _Twin(flax.linen.Module):
    """Two layers of one class, ``a`` and ``b``, applied to the same input."""

    cls: type

    @flax.linen.compact
    def __call__(self, x, rng=None):
        return (self.cls(3, param_dtype=F64, name="a")(x, rng=rng),
                self.cls(3, param_dtype=F64, name="b")(x, rng=rng))


@pytest.mark.parametrize("cls", SAMPLING)
def test_rng_argument_and_stream_give_the_documented_noise(cls):
    """``rng=key`` uses the key as given; ``rngs={'sample': key}`` uses
    ``self.make_rng('sample')``, the key Flax derives from ``key`` for the layer's position,
    so the two differ, the stream is reproducible and differs between layers."""
    x = _x()
    layer = cls(3, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    key = jax.random.key(3)
    direct = np.asarray(layer.apply(v, x, rng=key))
    stream = np.asarray(layer.apply(v, x, rngs={"sample": key}))
    derived = _KeyProbe().apply({}, rngs={"sample": key})
    np.testing.assert_array_equal(stream, layer.apply(v, x, rng=derived))
    assert np.min(np.abs(stream - direct)) > 0
    # Two layers with identical variables: the stream gives each its own noise, rng= the same.
    twin = _Twin(cls)
    tv = {c: {"a": v[c], "b": v[c]} for c in ("params", "prior")}
    a, b = (np.asarray(o) for o in twin.apply(tv, x, rngs={"sample": key}))
    assert np.min(np.abs(a - b)) > 0
    for again, first in zip(twin.apply(tv, x, rngs={"sample": key}), (a, b)):
        np.testing.assert_array_equal(again, first)
    a, b = twin.apply(tv, x, rng=key)
    np.testing.assert_array_equal(a, direct)
    np.testing.assert_array_equal(b, direct)


@pytest.mark.parametrize("cls", SAMPLING)
def test_missing_key_is_an_error_never_a_fallback(cls):
    x = _x()
    layer = cls(3, param_dtype=F64, rng_collection="noise")
    v = layer.init(jax.random.key(0), x)  # init needs no sampling key
    for rngs in (None, {"params": jax.random.key(0)}, {"sample": jax.random.key(0)}):
        with pytest.raises(ValueError, match=r"rngs=\{'noise': key\}.*rng=key"):
            layer.apply(v, x, rngs=rngs)
    layer.apply(v, x, map=True)  # MAP never asks for a key


# ------------------------------------------------------------------- Monte Carlo
def _mc_check(samples, mean, var):
    """Sample mean and variance within 4 standard errors of (mean, var).

    SE(mean) = sqrt(var / N); for the unbiased sample variance s^2,
    Var(s^2) = (mu_4 - var^2 (N - 3) / (N - 1)) / N, with mu_4 estimated from the samples.
    """
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    mean, var = np.asarray(mean), np.asarray(var)
    m_hat = samples.mean(0)
    s2 = samples.var(0, ddof=1)
    mu4 = np.mean((samples - m_hat) ** 4, axis=0)
    se_var = np.sqrt((mu4 - s2**2 * (n - 3) / (n - 1)) / n)
    np.testing.assert_array_less(np.abs(m_hat - mean), 4 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(s2 - var), 4 * se_var)


N_MC = 20000


@pytest.mark.parametrize("act", [None, "relu", "crelu"])
def test_monte_carlo_single_layer_matches_clt(act):
    """BBB and LR sampling of one layer vs the CLT moments (exact for a deterministic input)."""
    x = _x((4, 6))
    clt = CLTLinear(3, act=act or "relu", is_input=True, is_output=act is None, param_dtype=F64)
    v = _init(clt, x, w_std=0.3, b_std=0.2)
    mean, var = clt.apply(v, x)
    post = {None: lambda y: y, "relu": jax.nn.relu, "crelu": lambda y: jnp.concatenate([jax.nn.relu(y), jax.nn.relu(-y)], -1)}[act]
    keys = jax.random.split(jax.random.key(11), N_MC)
    for cls in SAMPLING:
        layer = cls(3, param_dtype=F64)
        samples = jax.jit(jax.vmap(lambda k: post(layer.apply(v, x, rng=k))))(keys)
        _mc_check(samples, mean, var)


def test_monte_carlo_hidden_clt_layer_with_random_input():
    """Random independent inputs h ~ N(mu, var) and BBB weights: the CLT moments are exact."""
    mu_in, var_in = _x((4, 6)), 0.5 * jnp.abs(_x((4, 6), seed=3))
    clt = CLTLinear(3, is_output=True, param_dtype=F64)
    v = _init(clt, mu_in, w_std=0.3, b_std=0.2)
    mean, var = clt.apply(v, mu_in, var_in)
    bbb = BBBLinear(3, param_dtype=F64)

    def draw(key):
        hk, wk = jax.random.split(key)
        h = mu_in + jnp.sqrt(var_in) * jax.random.normal(hk, mu_in.shape, F64)
        return bbb.apply(v, h, rng=wk)

    _mc_check(jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(5), N_MC)), mean, var)


# ------------------------------------------------------------------------ KL
def test_kl_closed_form_sown_and_total():
    x = _x()
    layer = BBBLinear(3, prior_mean=0.1, prior_std=0.5, bias_prior_mean=-0.2, bias_prior_std=2.0, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    p = {k: np.asarray(a) for k, a in v["params"].items()}
    expected = _np_kl(p["weight_mu"], np.exp(p["weight_rho"]), 0.1, 0.5).sum() + _np_kl(
        p["bias_mu"], np.exp(p["bias_rho"]), -0.2, 2.0
    ).sum()
    kl = layer.apply(v, method="kl")
    assert abs(float(kl) - expected) <= 1e-12 * expected
    for map_ in (False, True):
        _, state = layer.apply(v, x, rng=jax.random.key(0), map=map_, mutable=["kl"])
        assert float(total_kl(state)) == float(kl) == float(total_kl(state["kl"]))


def test_update_prior_by_replacing_the_prior_subtree():
    x = _x()
    layer = LRLinear(3, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    rng = np.random.default_rng(0)
    new_prior = {
        "weight_mean": rng.normal(size=(6, 3)),
        "weight_std": rng.uniform(0.5, 2.0, size=(6, 3)),
        "bias_mean": rng.normal(size=(3,)),
        "bias_std": rng.uniform(0.5, 2.0, size=(3,)),
    }
    v2 = {**v, "prior": jax.tree.map(jnp.asarray, new_prior)}
    p = {k: np.asarray(a) for k, a in v["params"].items()}
    expected = _np_kl(p["weight_mu"], np.exp(p["weight_rho"]), new_prior["weight_mean"], new_prior["weight_std"]).sum()
    expected += _np_kl(p["bias_mu"], np.exp(p["bias_rho"]), new_prior["bias_mean"], new_prior["bias_std"]).sum()
    assert abs(float(layer.apply(v2, method="kl")) - expected) <= 1e-12 * expected
    _, state = layer.apply(v2, x, rng=jax.random.key(0), mutable=["kl"])
    assert abs(float(total_kl(state)) - expected) <= 1e-12 * expected
    # A weight-shaped prior given as a field, with its own bias prior.
    shaped = LRLinear(3, prior_mean=new_prior["weight_mean"], prior_std=new_prior["weight_std"],
                      bias_prior_mean=new_prior["bias_mean"], bias_prior_std=new_prior["bias_std"], param_dtype=F64)
    init_prior = shaped.init(jax.random.key(0), x)["prior"]
    for k in new_prior:
        np.testing.assert_array_equal(init_prior[k], new_prior[k])


def test_mean_std_var_methods():
    x = _x()
    for use_softplus in (False, True):
        layer = CLTLinear(3, use_softplus=use_softplus, is_input=True, param_dtype=F64)
        v = _init(layer, x, w_std=0.3, b_std=0.2)
        p = {k: np.asarray(a) for k, a in v["params"].items()}
        f = (lambda r: np.log1p(np.exp(r))) if use_softplus else np.exp
        w_std, b_std = layer.apply(v, method="std")
        np.testing.assert_allclose(w_std, f(p["weight_rho"]), rtol=4 * EPS64)
        np.testing.assert_allclose(b_std, f(p["bias_rho"]), rtol=4 * EPS64)
        w_var, b_var = layer.apply(v, method="var")
        np.testing.assert_allclose(w_var, f(p["weight_rho"]) ** 2, rtol=8 * EPS64)
        np.testing.assert_allclose(b_var, f(p["bias_rho"]) ** 2, rtol=8 * EPS64)
        w_mu, b_mu = layer.apply(v, method="mean")
        np.testing.assert_array_equal(w_mu, p["weight_mu"])
        np.testing.assert_array_equal(b_mu, p["bias_mu"])


def test_clt_det_has_no_std_and_no_kl():
    x = _x()
    layer = CLTLinearDet(3, param_dtype=F64)
    v = layer.init(jax.random.key(0), x)
    for method in ("std", "var", "kl"):
        with pytest.raises(ValueError, match="deterministic weights"):
            layer.apply(v, method=method)
    _, state = layer.apply(v, x, jnp.ones_like(x), mutable=["kl"])
    assert state == {}  # nothing sown
    assert float(total_kl(state)) == 0.0


# ----------------------------------------------------------- transformations
def _call(layer, v, x, key):
    if isinstance(layer, CLTLinear):
        return layer.apply(v, x, jnp.abs(x))[1]
    return layer.apply(v, x, rng=key)


@pytest.mark.parametrize("cls", ALL)
def test_jit_vmap_keys_vmap_params_and_grad(cls):
    x = _x()
    layer = cls(3, param_dtype=F64)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    key = jax.random.key(3)
    eager = _call(layer, v, x, key)
    call = jax.jit(lambda v, k: _call(layer, v, x, k))
    np.testing.assert_allclose(call(v, key), eager, rtol=1e-12, atol=1e-14)
    # vmap over keys: Monte Carlo samples, each equal to its own call.
    keys = jax.random.split(key, 5)
    batch = jax.jit(jax.vmap(lambda k: _call(layer, v, x, k)))(keys)
    assert batch.shape == (5,) + eager.shape
    np.testing.assert_allclose(batch[2], call(v, keys[2]), rtol=1e-12, atol=1e-14)
    # vmap over parameter sets: an ensemble of 3 initializations.
    ens = jax.jit(jax.vmap(lambda k: layer.init(k, x)))(jax.random.split(jax.random.key(9), 3))
    out = jax.jit(jax.vmap(lambda vv: _call(layer, vv, x, key)))(ens)
    member = jax.tree.map(lambda a: a[1], ens)
    np.testing.assert_allclose(out[1], call(member, key), rtol=1e-12, atol=1e-14)
    assert np.min(np.abs(np.asarray(out[0] - out[1]))) > 0
    # grad: finite, and along a random direction d equal to the central difference
    # (f(p + h d) - f(p - h d)) / 2h, whose error is O(h^2 f3) + O(eps |f| / h) ~ 1e-10 here.
    loss = jax.jit(lambda params: jnp.sum(jnp.sin(_call(layer, {**v, "params": params}, x, key))))
    grads = jax.jit(jax.grad(loss))(v["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    leaves, tree = jax.tree.flatten(v["params"])
    d = jax.tree.unflatten(tree, [jax.random.normal(jax.random.key(i), a.shape, F64) for i, a in enumerate(leaves)])
    h = 1e-5
    shifted = lambda sign: jax.tree.map(lambda a, b: a + sign * h * b, v["params"], d)
    fd = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * h)
    ad = sum(jnp.vdot(g, b) for g, b in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    assert abs(float(fd - ad)) <= 1e-6 * (1.0 + abs(float(ad)))


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_float32_and_float64(cls, dtype):
    x = _x(dtype=dtype)
    layer = cls(3, param_dtype=dtype)
    v = layer.init(jax.random.key(0), x)
    assert all(a.dtype == dtype for a in jax.tree.leaves(v))
    out = _call(layer, v, x, jax.random.key(1))
    assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out)))
    _, state = layer.apply(v, x, jnp.abs(x), mutable=["kl"]) if cls in (CLTLinear, CLTLinearDet) else layer.apply(
        v, x, rng=jax.random.key(1), mutable=["kl"]
    )
    assert all(a.dtype == dtype for a in jax.tree.leaves(state))


@pytest.mark.parametrize("cls", ALL)
def test_bfloat16_compute_with_float32_params(cls):
    """bf16 has unit roundoff u = 2^-8; inputs, weights and the output are each rounded once
    and products accumulate over 6 terms, so |y_bf16 - y_f32| <= 8 u (|x| @ |W| + |b| + 1)
    (squared for a CLT variance). LR draws its noise in the compute dtype, so its reference
    uses the same bf16 noise, cast to float64."""
    x = _x(dtype=jnp.float32)
    v = _init(cls(3), x, w_std=0.3, b_std=0.2)
    layer16 = cls(3, dtype=jnp.bfloat16)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(layer16.init(jax.random.key(0), x)))
    key = jax.random.key(1)
    out16 = _call(layer16, v, x, key)
    assert out16.dtype == jnp.bfloat16
    p = {k: np.asarray(a, np.float64) for k, a in v["params"].items()}
    xn = np.asarray(x, np.float64)
    if cls is LRLinear:
        eps = np.asarray(jax.random.normal(key, (4, 3), jnp.bfloat16), np.float64)
        m = xn @ p["weight_mu"] + p["bias_mu"][None]
        s2 = xn**2 @ np.exp(2 * p["weight_rho"]) + np.exp(2 * p["bias_rho"])[None]
        ref = m + np.sqrt(s2) * eps
    else:
        ref = np.asarray(_call(cls(3), v, x, key), np.float64)
    w_abs = np.abs(p["weight_mu"]) + (5 * np.exp(p["weight_rho"]) if "weight_rho" in p else 0)
    scale = np.abs(xn) @ w_abs + np.abs(p["bias_mu"])[None] + 1.0
    if cls in (CLTLinear, CLTLinearDet):
        scale = scale**2  # a variance
    u = 2.0**-8
    np.testing.assert_array_less(np.abs(np.asarray(out16, np.float64) - ref), 8 * u * scale)


def test_checkpoint_round_trip_is_exact():
    x = _x(dtype=jnp.float32)
    layer = BBBLinear(3, prior_std=0.7)
    v = _init(layer, x, w_std=0.3, b_std=0.2)
    restored = flax.serialization.from_bytes(layer.init(jax.random.key(42), x), flax.serialization.to_bytes(v))
    assert jax.tree.structure(restored) == jax.tree.structure(v)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(v)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    state = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(flax.serialization.to_state_dict(v)))
    np.testing.assert_array_equal(layer.apply(state, x, rng=jax.random.key(0)), layer.apply(v, x, rng=jax.random.key(0)))


# ------------------------------------------------------------------------ errors
def test_wrong_input_width_is_an_error():
    layer = LRLinear(3)
    v = layer.init(jax.random.key(0), jnp.ones((2, 5), jnp.float32))
    with pytest.raises(ValueError, match="x has 4 features.*initialized for 5"):
        layer.apply(v, jnp.ones((2, 4), jnp.float32), map=True)
    clt = CLTLinear(3, is_input=True)
    v = clt.init(jax.random.key(0), jnp.ones((2, 5), jnp.float32))
    with pytest.raises(ValueError, match="mu has 4 features.*initialized for 5"):
        clt.apply(v, jnp.ones((2, 4), jnp.float32))


def test_clt_missing_variance_and_bad_variance():
    x = _x()
    layer = CLTLinear(3, param_dtype=F64)
    v = layer.init(jax.random.key(0), x, map=True)
    with pytest.raises(ValueError, match="needs the input variance"):
        layer.apply(v, x)
    mean, var = layer.apply(v, x, map=True)  # MAP needs no variance
    assert var is None and mean.shape == (4, 3)
    with pytest.raises(ValueError, match="var must have mu's shape"):
        layer.apply(v, x, jnp.ones((4, 5), F64))


@pytest.mark.parametrize("kwargs,match", [
    (dict(prior_std=0.0), "prior_std"),
    (dict(prior_std=-1.0), "prior_std"),
    (dict(prior_std=np.array([[1.0, -0.5]])), "prior_std"),
    (dict(bias_prior_std=0.0), "bias_prior_std"),
    (dict(prior_mean=float("nan")), "prior_mean"),
    (dict(prior_mean=np.zeros((6, 3))), "bias_prior_mean"),
])
@pytest.mark.parametrize("cls", [BBBLinear, LRLinear, CLTLinear])
def test_bad_priors_raise_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(3, **kwargs)


def test_weight_shaped_prior_of_the_wrong_shape():
    layer = BBBLinear(3, prior_mean=np.zeros((5, 3)), bias_prior_mean=0.0)
    with pytest.raises(ValueError, match=r"prior_mean must be a scalar or have shape \(6, 3\)"):
        layer.init(jax.random.key(0), _x())


def test_bad_fields():
    with pytest.raises(ValueError, match="act must be one of"):
        CLTLinear(3, act="tanh")
    with pytest.raises(ValueError, match="features"):
        BBBLinear(0)
    with pytest.raises(TypeError, match="features"):
        LRLinear(2.5)


def test_update_prior_replaces_one_layer_and_changes_the_kl_as_computed_by_hand():
    from bayeslayers_jax import BayesianMLP, update_prior

    model = BayesianMLP((4, 2), layer_type="bbb")
    x = jnp.ones((3, 5), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    new = update_prior(variables, "layers_1", weight_std=0.5, bias_mean=jnp.arange(2.0))
    assert new["prior"]["layers_0"] is variables["prior"]["layers_0"]  # untouched
    p = new["params"]["layers_1"]
    w_std = np.exp(np.asarray(p["weight_rho"], np.float64))
    b_std = np.exp(np.asarray(p["bias_rho"], np.float64))
    w_mu, b_mu = np.asarray(p["weight_mu"], np.float64), np.asarray(p["bias_mu"], np.float64)
    by_hand = np.sum(np.log(0.5 / w_std) + (w_std**2 + w_mu**2) / (2 * 0.25) - 0.5) + np.sum(
        -np.log(b_std) + (b_std**2 + (b_mu - np.arange(2.0)) ** 2) / 2 - 0.5
    )
    layer_kl = LRLinear(2).apply({"params": p, "prior": new["prior"]["layers_1"]}, method="kl")
    np.testing.assert_allclose(float(layer_kl), by_hand, rtol=1e-5)
    # A weight-shaped prior must have the weight's shape; a std must be > 0; names are checked.
    with pytest.raises(ValueError, match="weight_std must be a scalar or have shape \\(4, 2\\)"):
        update_prior(variables, "layers_1", weight_std=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="weight_std must be finite and > 0"):
        update_prior(variables, "layers_1", weight_std=-1.0)
    with pytest.raises(ValueError, match="unknown prior entry 'std'"):
        update_prior(variables, "layers_1", std=1.0)
    with pytest.raises(ValueError, match="layer 'layers_7' has no prior"):
        update_prior(variables, "layers_7", weight_std=1.0)


# ------------------------------------------------------------------ issue 10: no silent garbage


def test_nan_std_is_nan_output_never_zero_noise():
    from bayeslayers_jax import BayesianMLP

    x = _x((3, 4), dtype=jnp.float32)
    # The reproduction: an LR MLP with one NaN rho gave finite outputs.
    model = BayesianMLP((4, 1), layer_type="lr")
    v = model.init(jax.random.key(0), x)
    p = jax.tree_util.tree_map(lambda a: a, v["params"])
    p["layers_0"]["weight_rho"] = p["layers_0"]["weight_rho"].at[0, 0].set(jnp.nan)
    y = model.apply({**v, "params": p}, x, rng=jax.random.key(1))
    assert bool(jnp.all(jnp.isnan(y)))
    x = _x((3, 4))
    # A CLT layer with a NaN rho: NaN mean and variance after the moment matching.
    layer = _clt(CLTLinear)
    v = layer.init(jax.random.key(0), x)
    v = {**v, "params": {**v["params"], "weight_rho": v["params"]["weight_rho"].at[0, 0].set(jnp.nan)}}
    for out in layer.apply(v, x):  # weight (0, 0) feeds output feature 0 only
        assert bool(jnp.all(jnp.isnan(out[:, 0]))) and bool(jnp.all(jnp.isfinite(out[:, 1:])))


@pytest.mark.parametrize("cls", [CLTLinear, CLTLinearDet])
def test_clt_nan_input_variance_gives_nan_outputs(cls):
    layer = cls(3, param_dtype=F64)
    x = _x((2, 4))
    v = layer.init(jax.random.key(0), x, jnp.ones_like(x))
    var = jnp.ones_like(x).at[0, 1].set(jnp.nan)
    mean, out_var = layer.apply(v, x, var)
    assert bool(jnp.all(jnp.isnan(out_var[0]))) and bool(jnp.all(jnp.isnan(mean[0])))
    assert bool(jnp.all(jnp.isfinite(out_var[1])))  # the other row does not depend on it


@pytest.mark.parametrize("cls", [CLTLinear, CLTLinearDet])
def test_negative_input_variance_raises_or_is_nan_under_jit(cls):
    layer = cls(3, is_output=True, param_dtype=F64)
    x = _x((2, 4))
    v = layer.init(jax.random.key(0), x, jnp.ones_like(x))
    var = jnp.ones_like(x).at[1, 2].set(-1.0)
    with pytest.raises(ValueError, match="`var` must be >= 0"):
        layer.apply(v, x, var)
    _, out_var = jax.jit(layer.apply)(v, x, var)
    assert bool(jnp.all(jnp.isfinite(out_var[0]))) and bool(jnp.all(jnp.isnan(out_var[1])))


@pytest.mark.parametrize("use_softplus", [False, True])
def test_kl_stays_exact_and_finite_where_the_std_underflows(use_softplus):
    """rho = -90 (-200 with softplus): exp(rho) is 0 in float32, the KL is not infinite."""
    rho = -200.0 if use_softplus else -90.0
    layer = BBBLinear(3, use_softplus=use_softplus, weight_rho_init=nn_constant(rho), bias_rho_init=nn_constant(rho))
    x = jnp.ones((2, 4), jnp.float32)
    v = layer.init(jax.random.key(0), x)
    p = v["params"]
    kl, grads = jax.value_and_grad(lambda q: layer.apply({**v, "params": q}, method="kl"))(p)
    # Exact: each element contributes (e^{2 rho} - 1 - 2 rho) / 2 + mu^2 / 2 = (-1 - 2 rho) / 2 + mu^2 / 2.
    n = p["weight_mu"].size + p["bias_mu"].size
    exact = n * (-1.0 - 2.0 * rho) / 2 + 0.5 * float(np.sum(np.square(p["weight_mu"])) + np.sum(np.square(p["bias_mu"])))
    assert abs(float(kl) - exact) <= 4 * float(np.finfo(np.float32).eps) * exact
    # d KL / d rho = e^{2 rho} - 1 = -1 (exactly, in float32).
    np.testing.assert_array_equal(grads["weight_rho"], -1.0)
    np.testing.assert_array_equal(grads["bias_rho"], -1.0)
    # kl_weight = 0 switches the term off: 0 * KL is 0 and its gradient is 0, not NaN.
    zero = jax.grad(lambda q: 0.0 * layer.apply({**v, "params": q}, method="kl"))(p)
    for g in jax.tree_util.tree_leaves(zero):
        np.testing.assert_array_equal(g, 0.0)


def nn_constant(value):
    import flax.linen as nn

    return nn.initializers.constant(value)


@pytest.mark.parametrize("cls", ALL)
def test_complex_inputs_raise_and_integers_are_cast(cls):
    # float64 parameters: under x64 the default float dtype that int/bool are cast to is float64.
    layer = cls(3, param_dtype=F64) if cls in SAMPLING else cls(3, is_input=True, param_dtype=F64)
    x = jnp.ones((2, 4), F64)
    v = layer.init(jax.random.key(0), x)
    z = x.astype(jnp.complex128)
    name = "x" if cls in SAMPLING else "mu"
    with pytest.raises(TypeError, match=f"`{name}` must be a real floating array"):
        layer.apply(v, z, map=True)
    if cls in SAMPLING:
        with pytest.raises(TypeError, match="`x` must be a real floating array"):
            layer.apply(v, z, rng=jax.random.key(1))
    else:
        with pytest.raises(TypeError, match="`var` must be a real floating array"):
            layer.apply(v, x, jnp.ones((2, 4), jnp.complex128))
        with pytest.raises(TypeError, match="`mu` must be a real floating array"):
            layer.apply(v, z, jnp.ones((2, 4), F64))
    # int and bool inputs are cast to the default float dtype (float64 here: x64 is on).
    y_int = layer.apply(v, jnp.ones((2, 4), jnp.int32), map=True)
    y_float = layer.apply(v, jnp.ones((2, 4), jnp.result_type(float)), map=True)
    y_bool = layer.apply(v, jnp.ones((2, 4), bool), map=True)
    first = lambda y: y[0] if isinstance(y, tuple) else y  # noqa: E731
    np.testing.assert_array_equal(first(y_int), first(y_float))
    np.testing.assert_array_equal(first(y_bool), first(y_float))


@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_cltdet_mlp_hessian_vector_product_is_finite_with_zero_input_variance(act):
    """Hessian-vector products (Laplace, natural gradient) of a 'cltdet' MLP: finite at var = 0."""
    from bayeslayers_jax import BayesianMLP

    model = BayesianMLP((8, 8, 1), layer_type="cltdet", act=act, param_dtype=F64)
    x = _x((5, 3))
    v = model.init(jax.random.key(0), x, jnp.zeros_like(x))
    params = v["params"]

    def loss(p):
        mean, var = model.apply({**v, "params": p}, x, jnp.zeros_like(x))
        return jnp.sum(jnp.square(mean - 1.0) / (1.0 + var))

    direction = jax.tree_util.tree_map(jnp.ones_like, params)
    grads, hvp = jax.jvp(jax.grad(loss), (params,), (direction,))
    for leaf in jax.tree_util.tree_leaves((grads, hvp)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    # The same product by central differences of the gradient (float64, step 1e-5): the
    # truncation error is O(h^2) ~ 1e-10 and the rounding error about eps / h ~ 1e-11.
    h = 1e-5
    plus = jax.grad(loss)(jax.tree_util.tree_map(lambda a, d: a + h * d, params, direction))
    minus = jax.grad(loss)(jax.tree_util.tree_map(lambda a, d: a - h * d, params, direction))
    for hv, gp, gm in zip(*(jax.tree_util.tree_leaves(t) for t in (hvp, plus, minus))):
        fd = (gp - gm) / (2 * h)
        np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(fd))))
