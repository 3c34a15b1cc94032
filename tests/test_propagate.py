"""propagate_moments: the jaxpr moment interpreter against the CLT layers, quadrature and Monte Carlo.

Ground truths: :class:`bayeslayers_jax.BayesianMLP` ``(layer_type='clt')`` (an independent
implementation of the same mean-field propagation, to float rounding); ``scipy.integrate.quad``
of each elementwise unit written in NumPy (float64, relative 1e-7); Monte Carlo over sampled
weights for whole networks (the mean within 4 standard errors; the variance ratio
propagated / Monte Carlo inside the band measured and stated in the module docstring of
:mod:`bayeslayers_jax.core._propagate`).
"""

import inspect
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import integrate, special

import bayeslayers_jax as bl
from bayeslayers_jax.core._propagate import propagate_moments
from bayeslayers_jax.core._structure import max_moments

F64 = jnp.float64


# ------------------------------------------------------------------ equality with CLT layers
def _clt_pair(act, feats=(16, 16, 3), seed=0):
    model = bl.BayesianMLP(feats, layer_type="clt", act=act, param_dtype=F64)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(5, 4)))

    def draw(path, leaf):  # means N(0, 1/fan_in), rho U(-2.5, -1) (std 0.08 - 0.37), prior N(0, 1)
        name = jax.tree_util.keystr(path)
        if "prior" in name:
            return jnp.full(leaf.shape, float("std" in name), leaf.dtype)
        if "rho" in name:
            return jnp.asarray(rng.uniform(-2.5, -1.0, leaf.shape))
        return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(16 if "layers_0" not in name else 4))

    variables = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.key(0), x))

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, h):
            for i, f in enumerate(feats):
                h = nn.Dense(f, param_dtype=F64, name=f"layers_{i}")(h)
                if i < len(feats) - 1:
                    h = nn.relu(h) if act == "relu" else jnp.concatenate([nn.relu(h), nn.relu(-h)], -1)
            return h

    return model, variables, MLP(), x


def _to_dense(params):
    mu = {k: {"kernel": p["weight_mu"], "bias": p["bias_mu"]} for k, p in params.items()}
    var = {k: {"kernel": bl.rho_to_std(p["weight_rho"]) ** 2, "bias": bl.rho_to_std(p["bias_rho"]) ** 2}
           for k, p in params.items()}
    return mu, var


@pytest.mark.parametrize("act", ["relu", "crelu"])
def test_equals_clt_mlp_with_gradients(act):
    model, variables, mlp, x = _clt_pair(act)

    propagated = propagate_moments(mlp.apply)

    def loss(mean, var):
        return jnp.sum(mean * mean) + jnp.sum(var)

    @jax.jit
    def both(params, mu, var):
        clt = model.apply({**variables, "params": params}, x)
        prop = propagated(({"params": mu}, x), ({"params": var}, None))
        g_clt = jax.grad(lambda p: loss(*model.apply({**variables, "params": p}, x)))(params)
        g_prop = jax.grad(lambda a, b: loss(*propagated(({"params": a}, x), ({"params": b}, None))), argnums=(0, 1))(mu, var)
        return clt, prop, g_clt, g_prop

    params = variables["params"]
    mu, var = _to_dense(params)
    ((m1, v1), (m2, v2), g_clt, (g_mu, g_var)) = both(params, mu, var)
    np.testing.assert_allclose(m2, m1, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v2, v1, rtol=1e-13)
    for k, p in params.items():
        np.testing.assert_allclose(g_mu[k]["kernel"], g_clt[k]["weight_mu"], rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(g_mu[k]["bias"], g_clt[k]["bias_mu"], rtol=1e-11, atol=1e-14)
        # d/drho = d/dvar * dvar/drho, var = exp(2 rho)
        np.testing.assert_allclose(g_var[k]["kernel"] * 2 * jnp.exp(2 * p["weight_rho"]), g_clt[k]["weight_rho"], rtol=1e-11, atol=1e-14)


def test_nnx_module_through_split_merge_equals_clt_mlp():
    model, variables, _, x = _clt_pair("relu", feats=(8, 2))

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l0 = nnx.Linear(4, 8, rngs=rngs, param_dtype=F64)
            self.l1 = nnx.Linear(8, 2, rngs=rngs, param_dtype=F64)

        def __call__(self, h):
            return self.l1(nnx.relu(self.l0(h)))

    net = Net(nnx.Rngs(0))
    mu, var = _to_dense(variables["params"])

    def state_with(values):  # the NNX state holding `values` in place of the parameters
        for name, layer in (("l0", "layers_0"), ("l1", "layers_1")):
            for p in ("kernel", "bias"):
                getattr(getattr(net, name), p).set_value(values[layer][p])
        graphdef, state = nnx.split(net)
        return graphdef, jax.tree.map(jnp.copy, state)  # a snapshot (the state shares the module's)

    graphdef, state_mu = state_with(mu)
    _, state_var = state_with(var)
    mean, out_var = jax.jit(propagate_moments(lambda s, h: nnx.merge(graphdef, s)(h)))((state_mu, x), (state_var, None))
    m1, v1 = model.apply(variables, x)
    np.testing.assert_allclose(mean, m1, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out_var, v1, rtol=1e-13)


# ---------------------------------------------------------------- elementwise units: quadrature
def _np_sigmoid(x):
    return special.expit(x)


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _np_elu(x, a):
    return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


#: (name, jax function, the same function in NumPy, kinks for quad, linearizable at the means)
UNITS = [
    ("relu", jax.nn.relu, lambda x: np.maximum(x, 0), [0.0]),
    ("gelu_erf", lambda x: jax.nn.gelu(x, approximate=False), lambda x: x * special.ndtr(x), []),
    ("x_cdf", lambda x: x * jax.scipy.stats.norm.cdf(x), lambda x: x * special.ndtr(x), []),
    ("silu", jax.nn.silu, lambda x: x * _np_sigmoid(x), []),
    ("x_sigmoid", lambda x: x * jax.nn.sigmoid(x), lambda x: x * _np_sigmoid(x), []),
    ("softplus", jax.nn.softplus, lambda x: np.logaddexp(x, 0), []),
    ("log_sigmoid", jax.nn.log_sigmoid, lambda x: -np.logaddexp(-x, 0), []),
    ("elu", lambda x: jax.nn.elu(x, 0.7), lambda x: _np_elu(x, 0.7), [0.0]),
    ("celu", lambda x: jax.nn.celu(x, 1.3), lambda x: 1.3 * _np_elu(x / 1.3, 1.0), [0.0]),
    ("selu", jax.nn.selu, lambda x: 1.0507009873554805 * _np_elu(x, 1.6732632423543772), [0.0]),
    ("leaky_relu", lambda x: jax.nn.leaky_relu(x, 0.2), lambda x: np.where(x >= 0, x, 0.2 * x), [0.0]),
    ("tanh", jnp.tanh, np.tanh, []),
    ("sigmoid", jax.nn.sigmoid, _np_sigmoid, []),
    ("erf", jax.scipy.special.erf, special.erf, []),
    ("erfc", jax.scipy.special.erfc, special.erfc, []),
    ("exp", jnp.exp, np.exp, []),
    ("expm1", jnp.expm1, np.expm1, []),
    ("ndtr", jax.scipy.special.ndtr, special.ndtr, []),
    ("abs", jnp.abs, np.abs, [0.0]),
    ("max_c", lambda x: jnp.maximum(x, 0.5), lambda x: np.maximum(x, 0.5), [0.5]),
    ("min_c", lambda x: jnp.minimum(-0.3, x), lambda x: np.minimum(x, -0.3), [-0.3]),
    ("square", jnp.square, np.square, []),
    ("pow2", lambda x: x**2, np.square, []),
    ("x_times_x", lambda x: x * x, np.square, []),
]
POINTS = np.array([[-1.5, 0.7], [0.3, 1.2], [2.0, 0.4], [-0.2, 0.05]])


def _quad_moments(f, kinks, m, s):
    def expect(g):
        dens = lambda x: g(x) * math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
        pts = [p for p in kinks if m - 12 * s < p < m + 12 * s]
        return integrate.quad(dens, m - 12 * s, m + 12 * s, points=pts or None, epsabs=0, epsrel=1e-12, limit=200)[0]

    mean = expect(lambda x: float(f(np.float64(x))))
    return mean, expect(lambda x: (float(f(np.float64(x))) - mean) ** 2)


@pytest.fixture(scope="module")
def quadrature():
    return {name: np.array([_quad_moments(nf, kinks, m, s) for m, s in POINTS]) for name, _, nf, kinks in UNITS}


@pytest.mark.parametrize("unit", [pytest.param(u, marks=pytest.mark.slow if u[0] in ("celu", "selu") else ())
                                  for u in UNITS], ids=[u[0] for u in UNITS])
def test_elementwise_unit_matches_quadrature(unit, quadrature):
    name, f, _, _ = unit
    m, s = jnp.asarray(POINTS[:, 0]), jnp.asarray(POINTS[:, 1])
    mean, var = jax.jit(propagate_moments(f))((m,), (s * s,))
    np.testing.assert_allclose(mean, quadrature[name][:, 0], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(var, quadrature[name][:, 1], rtol=1e-7, atol=1e-14)


def test_tanh_gelu_gets_the_exact_gelu_moments_within_the_stated_difference(quadrature):
    m, s = jnp.asarray(POINTS[:, 0]), jnp.asarray(POINTS[:, 1])
    mean, var = jax.jit(propagate_moments(jax.nn.gelu))((m,), (s * s,))
    np.testing.assert_allclose(mean, quadrature["gelu_erf"][:, 0], rtol=1e-7)  # the exact GELU's
    truth = np.array([_quad_moments(_np_gelu_tanh, [], mi, si) for mi, si in POINTS])
    assert np.max(np.abs(mean - truth[:, 0])) < 4.8e-4  # max |gelu_tanh - gelu_exact| = 4.73e-4
    assert np.max(np.abs(np.sqrt(var) - np.sqrt(truth[:, 1])) / POINTS[:, 1]) < 8.8e-4


def test_linearized_is_f_and_squared_slope_times_var():
    m, s = POINTS[:, 0], POINTS[:, 1]
    every_unit = lambda x: tuple(f(x) for _, f, _, _ in UNITS)  # noqa: E731  (one compilation)
    means, variances = jax.jit(propagate_moments(every_unit, method="linearized"))((jnp.asarray(m),), (jnp.asarray(s * s),))
    h = 1e-5
    for (name, _, nf, _), mean, var in zip(UNITS, means, variances):
        slope = (nf(m + h) - nf(m - h)) / (2 * h)  # central difference of the NumPy function
        np.testing.assert_allclose(mean, nf(m), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(var, slope**2 * s * s, rtol=1e-8, atol=1e-14, err_msg=name)


def test_products_sums_and_maxima_of_independent_values():
    rng = np.random.default_rng(3)
    m1, m2 = jnp.asarray(rng.normal(size=5)), jnp.asarray(rng.normal(size=5))
    v1, v2 = jnp.asarray(rng.uniform(0.1, 2, 5)), jnp.asarray(rng.uniform(0.1, 2, 5))
    (prod, total, diff, mx, mn), (vp, vt, vd, vmx, vmn) = jax.jit(propagate_moments(
        lambda a, b: (a * b, a + b, a - 2 * b, jnp.maximum(a, b), jnp.minimum(a, b))
    ))((m1, m2), (v1, v2))
    # E[XY] = m1 m2, E[(XY)^2] = (v1 + m1^2)(v2 + m2^2) for independent X, Y
    np.testing.assert_allclose(prod, m1 * m2, rtol=1e-14)
    np.testing.assert_allclose(vp, (v1 + m1**2) * (v2 + m2**2) - (m1 * m2) ** 2, rtol=1e-12)
    np.testing.assert_allclose(vt, v1 + v2, rtol=1e-15)
    np.testing.assert_allclose(vd, v1 + 4 * v2, rtol=1e-15)
    np.testing.assert_allclose(np.stack([mx, vmx]), np.stack(max_moments(m1, v1, m2, v2)), rtol=1e-14)
    # min(X, Y) = -max(-X, -Y)
    ref = max_moments(-m1, v1, -m2, v2)
    np.testing.assert_allclose(np.stack([mn, vmn]), np.stack([-ref[0], ref[1]]), rtol=1e-14)
    # x + x is 2x (variance 4v), x - x is exactly 0
    (two, zero), (v_two, v_zero) = propagate_moments(lambda a: (a + a, a - a))((m1,), (v1,))
    np.testing.assert_allclose(v_two, 4 * v1, rtol=1e-15)
    assert v_zero is None and float(jnp.max(jnp.abs(zero))) == 0.0


def test_reduce_max_is_clarks_rule_pairwise():
    rng = np.random.default_rng(4)
    m, v = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.uniform(0.1, 1, (3, 4)))
    mean, var = jax.jit(propagate_moments(lambda a: jnp.max(a, axis=1)))((m,), (v,))
    a = max_moments(m[:, 0], v[:, 0], m[:, 2], v[:, 2])  # halves: (0, 1) against (2, 3)
    b = max_moments(m[:, 1], v[:, 1], m[:, 3], v[:, 3])
    ref = max_moments(a[0], a[1], b[0], b[1])
    np.testing.assert_allclose(mean, ref[0], rtol=1e-14)
    np.testing.assert_allclose(var, ref[1], rtol=1e-14)


def test_normalizers_option_for_a_hand_written_rms_norm():
    rng = np.random.default_rng(5)
    m, v = jnp.asarray(rng.normal(size=(2, 6))), jnp.asarray(rng.uniform(0.1, 0.5, (2, 6)))

    def rms_norm(x):
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5)

    with pytest.raises(NotImplementedError, match="normalizers='deterministic'"):
        propagate_moments(rms_norm)((m,), (v,))
    mean, var = jax.jit(propagate_moments(rms_norm, normalizers="deterministic"))((m,), (v,))
    # the normalizer at E[mean(x^2)] = mean(m^2 + v), a constant: the output's moments scale
    g2 = 1 / (np.mean(m * m + v, axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(mean, m * np.sqrt(g2), rtol=1e-13)
    np.testing.assert_allclose(var, v * g2, rtol=1e-13)


# --------------------------------------------------------------- whole networks: Monte Carlo
class _MLP(nn.Module):
    act: str

    @nn.compact
    def __call__(self, x):
        act = {"gelu": nn.gelu, "silu": nn.silu, "tanh": nn.tanh,
               "leaky_relu": lambda h: nn.leaky_relu(h, 0.1)}[self.act]
        for _ in range(2):
            x = act(nn.Dense(32, param_dtype=F64)(x))
        return nn.Dense(2, param_dtype=F64)(x)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), param_dtype=F64)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(2, param_dtype=F64)(x.reshape((x.shape[0], -1)))


class _LayerNormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.LayerNorm(param_dtype=F64, force_float32_reductions=False)(nn.Dense(32, param_dtype=F64)(x)))
        return nn.Dense(2, param_dtype=F64)(x)


class _Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(32, param_dtype=F64)(x)
        h = h + nn.Dense(32, param_dtype=F64)(nn.gelu(h))  # x + f(x): dependent summands
        return nn.Dense(2, param_dtype=F64)(nn.gelu(h))


class _PatchCNN(nn.Module):
    """Non-overlapping patches (stride = kernel): with a deterministic kernel and independent
    pixel noise, the conv outputs of a pooling window are independent, as max pooling assumes."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (2, 2), strides=(2, 2), padding="VALID", param_dtype=F64)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(2, param_dtype=F64)(x.reshape((x.shape[0], -1)))


#: name: (module, input shape, input variance, parameter scopes kept deterministic)
NETWORKS = {
    "gelu": (_MLP("gelu"), (8, 4), None, ()),
    "silu": (_MLP("silu"), (8, 4), None, ()),
    "tanh": (_MLP("tanh"), (8, 4), None, ()),
    "leaky_relu": (_MLP("leaky_relu"), (8, 4), None, ()),
    "layer_norm": (_LayerNormNet(), (8, 4), None, ()),
    "residual": (_Residual(), (8, 4), None, ()),
    "max_pool_patches": (_PatchCNN(), (4, 8, 8, 2), 0.25, ("Conv_0",)),
    "max_pool_cnn": (_CNN(), (4, 6, 6, 2), None, ()),
}
NUM_SAMPLES = 20_000
WEIGHT_STD = 0.1


def _init(module, x, rng):
    """Parameters of the flax init's shapes: kernels N(0, 1/fan_in), biases and means N(0, 0.1^2),
    scales 1 + N(0, 0.1^2), batch-statistics variances U(0.5, 1.5)."""
    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1])))
        if "'var'" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape))
        return jnp.asarray(("scale" in name) + 0.1 * rng.normal(size=leaf.shape))

    return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(module.init, jax.random.key(0), x))


def _network_moments(name, num_samples=NUM_SAMPLES, chunk=2000):
    """Monte Carlo over weights drawn from N(mean, WEIGHT_STD^2) (NumPy noise), and both methods."""
    module, shape, input_var, fixed = NETWORKS[name]
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=shape))
    variables = _init(module, x, rng)
    std = jax.tree_util.tree_map_with_path(
        lambda path, a: 0.0 if any(f in jax.tree_util.keystr(path) for f in fixed) else WEIGHT_STD, variables)
    var = jax.tree.map(lambda a, s: None if s == 0 else jnp.full(a.shape, s * s, F64), variables, std)
    x_var = None if input_var is None else jnp.full(shape, input_var, F64)
    sums = jax.jit(lambda p, xs: (lambda ys: (ys.sum(0), (ys * ys).sum(0)))(jax.vmap(module.apply)(p, xs)))
    total = total_sq = 0.0
    for _ in range(num_samples // chunk):
        noisy = jax.tree.map(lambda m, s: np.asarray(m)[None] + s * rng.standard_normal((chunk,) + m.shape), variables, std)
        xs = np.asarray(x)[None] + math.sqrt(input_var or 0.0) * rng.standard_normal((chunk,) + shape)
        s1, s2 = sums(noisy, xs)
        total, total_sq = total + s1, total_sq + s2
    mc_mean = total / num_samples
    mc_var = (total_sq / num_samples - mc_mean**2) * num_samples / (num_samples - 1)

    @jax.jit
    def both(variables, var, x_var):
        return tuple(propagate_moments(module.apply, method=m)((variables, x), (var, x_var)) for m in ("exact", "linearized"))

    exact, linear = both(variables, var, x_var)
    return np.asarray(mc_mean), np.asarray(mc_var), exact, linear


#: Variance ratio propagated / Monte Carlo, exact method: the measured range over the
#: 16 outputs (8 or 4 examples, 2 outputs), +-1% Monte Carlo noise at 20 000 samples.
RATIO_BANDS = {name: (0.93, 1.07) for name in NETWORKS}
RATIO_BANDS["max_pool_patches"] = (0.88, 1.0)  # Clark's pairwise rule: 2x2 of iid, 0.945


#: The networks whose compilation (or Monte Carlo) takes longer: run with the slow tests.
_SLOW = pytest.mark.slow  # each 2.5 - 4.5 s on 2 cores (the activation moments' compilation)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "layer_norm" else _SLOW)
                                  for n in NETWORKS if n != "max_pool_cnn"])
def test_network_matches_monte_carlo_over_weights(name):
    mc_mean, mc_var, (mean, var), (lin_mean, lin_var) = _network_moments(name)
    se = np.sqrt(mc_var / NUM_SAMPLES)
    print(f"{name}: mean {np.max(np.abs(mean - mc_mean) / se):.1f} SE, var ratio {np.min(var / mc_var):.3f}-{np.max(var / mc_var):.3f}")
    assert np.max(np.abs(mean - mc_mean) / se) < 4.0
    lo, hi = RATIO_BANDS[name]
    ratio = np.asarray(var) / mc_var
    assert lo < ratio.min() and ratio.max() < hi, (ratio.min(), ratio.max())
    # the first-order rule misses the curvature: its mean is further off than the exact one
    assert np.max(np.abs(lin_mean - mc_mean)) > 2 * np.max(np.abs(mean - mc_mean))


@_SLOW
def test_max_pool_of_correlated_conv_outputs_has_the_stated_mean_bias():
    """Neighbouring conv outputs share the kernel: treated as independent in a pooling window,
    the maximum's mean comes out high (max_pool_moments' caveat): measured 0.065 output std."""
    mc_mean, mc_var, (mean, var), _ = _network_moments("max_pool_cnn")
    err = np.abs(mean - mc_mean) / np.sqrt(mc_var)
    assert 4 * np.sqrt(1 / NUM_SAMPLES) < err.max() < 0.1  # beyond the noise, within the bound
    ratio = np.asarray(var) / mc_var
    assert 0.9 < ratio.min() and ratio.max() < 1.05


# ------------------------------------------------------------------------ errors and options
def test_unsupported_primitive_names_itself_and_the_source_line():
    line = inspect.currentframe().f_lineno + 1
    fn = lambda a: jnp.log(a) + 1.0  # noqa: E731
    with pytest.raises(NotImplementedError, match=rf"`log` at .*test_propagate.py:{line}"):
        propagate_moments(fn)((jnp.ones(3),), (jnp.ones(3),))
    with pytest.raises(NotImplementedError, match=r"`gt` .*random input"):
        propagate_moments(lambda a: jnp.where(a > 0, a, 0.1))((jnp.ones(3),), (jnp.ones(3),))


def test_products_of_dependent_random_values_raise():
    a, v = jnp.ones((2, 3)), jnp.ones((2, 3))
    for fn in (lambda x: x * jnp.exp(x), lambda x: jnp.exp(x) * jax.nn.relu(x), lambda x: x @ x.T):
        with pytest.raises(NotImplementedError, match="not independent"):
            propagate_moments(fn)((a,), (v,))
    with pytest.raises(NotImplementedError, match="division by a random value"):
        propagate_moments(lambda x: 1.0 / x)((a,), (v,))
    # products of independent values are fine: x and W depend on different inputs
    mean, var = propagate_moments(lambda x, w: x * w)((a, a), (v, v))
    np.testing.assert_allclose(var, 3.0)  # (1 + 1) 1 + 1 * 1


def test_inputs_are_checked():
    means = ({"w": jnp.ones(3), "b": jnp.ones(2)}, jnp.ones(3))
    with pytest.raises(ValueError, match=r"variances\[0\]\['w'\]"):
        propagate_moments(lambda p, x: p["w"] * x)(means, ({"w": jnp.ones(2), "b": None}, None))
    with pytest.raises(ValueError, match=">= 0"):
        propagate_moments(lambda p, x: p["w"] * x)(means, ({"w": -jnp.ones(3), "b": None}, None))
    with pytest.raises(ValueError, match="structure"):
        propagate_moments(lambda p, x: p["w"] * x)(means, ({"w": jnp.ones(3)}, None))
    with pytest.raises(TypeError, match="only floating"):
        propagate_moments(lambda i: i * 2)((jnp.arange(3),), (jnp.ones(3),))
    with pytest.raises(TypeError, match="tuple"):
        propagate_moments(lambda x: x)(jnp.ones(3), None)
    with pytest.raises(ValueError, match="method"):
        propagate_moments(lambda x: x, method="unscented")


def test_collections_pass_through_and_zero_variance_is_the_function_itself():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.BatchNorm(use_running_average=True, param_dtype=F64, force_float32_reductions=False)(nn.Dense(8, param_dtype=F64)(x))
            h = nn.Dropout(0.5, deterministic=True)(nn.leaky_relu(h, 0.2))
            return nn.Dense(2, param_dtype=F64)(jnp.concatenate([nn.relu(h), jax.scipy.special.erf(h)], -1)), x

    net, x = Net(), jnp.linspace(-1, 1, 12, dtype=F64).reshape(4, 3)
    variables = _init(net, x, np.random.default_rng(0))
    zeros = {"params": jax.tree.map(jnp.zeros_like, variables["params"]), "batch_stats": None}
    (y, x_out), (y_var, x_var) = jax.jit(propagate_moments(net.apply))((variables, x), (zeros, None))
    ref, _ = net.apply(variables, x)
    assert np.all(np.isfinite(ref))
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-14)
    assert float(jnp.max(y_var)) == 0.0 and x_var is None  # the deterministic output's var is None
    np.testing.assert_array_equal(x_out, x)


def test_composes_with_vmap_and_jit_and_closures():
    w, w_var = jnp.asarray(np.random.default_rng(1).normal(size=(3, 2))), jnp.full((3, 2), 0.1)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 3)))
    net = lambda w, x: jax.nn.relu(x @ w)  # noqa: E731
    batched = jax.jit(propagate_moments(net))((w, x), (w_var, None))
    per_example = jax.jit(jax.vmap(lambda xi: propagate_moments(net)((w, xi), (w_var, None))))(x)
    closure = jax.jit(lambda w, x: propagate_moments(lambda w: net(w, x))((w,), (w_var,)))(w, x)
    for got in (per_example, closure):
        np.testing.assert_allclose(got[0], batched[0], rtol=1e-13)
        np.testing.assert_allclose(got[1], batched[1], rtol=1e-13)


def test_layer_norm_with_a_random_scale_and_a_deterministic_input():
    x = jnp.asarray(np.random.default_rng(8).normal(size=(3, 5)))
    ln = nn.LayerNorm(param_dtype=F64, force_float32_reductions=False)
    variables = _init(ln, x, np.random.default_rng(9))
    scale_var = jnp.full((5,), 0.04, F64)
    mean, var = jax.jit(propagate_moments(ln.apply))((variables, x), ({"params": {"scale": scale_var, "bias": None}}, None))
    # y = n(x) * scale + bias with n(x) deterministic: Var[y] = n(x)^2 Var[scale]
    c = x - x.mean(-1, keepdims=True)
    normed = c / jnp.sqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(mean, ln.apply(variables, x), rtol=1e-12)
    np.testing.assert_allclose(var, normed**2 * 0.04, rtol=1e-10)
