"""Likelihoods: Monte Carlo expected log-likelihoods against mpmath quadrature or a high-sample
float64 NumPy estimate, the heteroscedastic closed form against Monte Carlo, the Bernoulli NLL
against a hand computation, and their wiring into ``elbo_loss``.

Tolerances: a Monte Carlo estimate of S draws lies within 4 of its standard errors
(sd / sqrt(S), the sd from a high-sample reference) of the truth; the truth's own error
(mpmath: ~1e-15; NumPy with 4e6 draws: 2.5e-4 sd) is added where not negligible. Closed forms
by hand: 1e-12 relative in float64.
"""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from bayeslayers_jax import BayesianMLP, Ensemble, elbo_loss
from bayeslayers_jax import (
    DEFAULT_LOGIT_SAMPLES,
    bernoulli_nll_from_logits,
    expected_bernoulli_nll_mc,
    expected_categorical_nll_mc,
    expected_heteroscedastic_gaussian_nll,
    heteroscedastic_gaussian_nll,
    split_heteroscedastic,
)
from bayeslayers_jax import categorical_nll_from_logits, expected_categorical_nll_bound

mp.mp.dps = 30


def f64(x):
    return jnp.asarray(x, jnp.float64)


def _softplus_mp(z):
    return mp.log1p(mp.exp(z)) if z < 0 else z + mp.log1p(mp.exp(-z))


def _expected_softplus_mp(m, v):
    """E[softplus(z)], z ~ N(m, v), by mpmath quadrature split at the kink."""
    s = mp.sqrt(v)
    f = lambda t: _softplus_mp(m + s * t) * mp.exp(-t * t / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
    pts = sorted({mp.mpf(-40), mp.mpf(-m) / s, mp.mpf(0), mp.mpf(40)})
    return float(mp.quad(f, [p for p in pts if -40 <= p <= 40]))


def _sd_softplus(m, v, n=2_000_000, seed=0):
    z = np.random.default_rng(seed).normal(m, math.sqrt(v), n)
    return float(np.std(np.logaddexp(0, z)))


# --- item 1: Monte Carlo over Gaussian logits -------------------------------------------

@pytest.mark.parametrize("m0,m1,v0,v1", [(2.0, 0.0, 1.0, 3.0), (-1.0, 4.0, 25.0, 0.0), (0.0, 0.0, 100.0, 100.0)])
def test_categorical_mc_two_classes_against_quadrature(m0, m1, v0, v1):
    # K = 2: -log softmax(z)_0 = softplus(z1 - z0), z1 - z0 ~ N(m1 - m0, v0 + v1).
    truth = _expected_softplus_mp(mp.mpf(m1 - m0), mp.mpf(v0 + v1))
    sd = _sd_softplus(m1 - m0, v0 + v1)
    S = 2048
    est = expected_categorical_nll_mc(jnp.array([0]), f64([[m0, m1]]), f64([[v0, v1]]),
                                      key=jax.random.key(3), num_samples=S)
    assert est.shape == (1,)
    assert abs(float(est[0]) - truth) < 4 * sd / math.sqrt(S)


def test_categorical_mc_five_classes_against_numpy_reference():
    rng = np.random.default_rng(1)
    mean = rng.uniform(-3, 3, (4, 5))
    var = rng.uniform(0, 9, (4, 5))
    labels = np.array([0, 2, 4, 1])
    n = 4_000_000
    truth, sd = [], []
    for i in range(4):
        z = rng.normal(mean[i], np.sqrt(var[i]), (n, 5))
        terms = np.logaddexp.reduce(z, axis=1) - z[:, labels[i]]
        truth.append(terms.mean())
        sd.append(terms.std())
    truth, sd = np.array(truth), np.array(sd)
    S = 4096
    est = np.asarray(expected_categorical_nll_mc(jnp.asarray(labels), f64(mean), f64(var),
                                                 key=jax.random.key(7), num_samples=S))
    se = sd / math.sqrt(S) + sd / math.sqrt(n)
    assert np.all(np.abs(est - truth) < 4 * se), (est, truth, se)
    # Jensen: the bound is above the expectation (by more than the Monte Carlo error here).
    bound = np.asarray(expected_categorical_nll_bound(jnp.asarray(labels), f64(mean), f64(var)))
    assert np.all(bound > truth)


def test_categorical_mc_zero_variance_is_cross_entropy_and_gradients_are_finite():
    labels = jnp.array([1, 0, 2])
    mean = f64(np.random.default_rng(2).normal(size=(3, 3)))
    zero = jnp.zeros_like(mean)
    np.testing.assert_allclose(
        expected_categorical_nll_mc(labels, mean, zero, key=jax.random.key(0)),
        categorical_nll_from_logits(labels, mean), rtol=1e-12)
    var = zero.at[0].set(2.0)  # some exact zeros, some positive variances
    g_m, g_v = jax.grad(lambda m, v: jnp.sum(expected_categorical_nll_mc(labels, m, v, key=jax.random.key(1))),
                        argnums=(0, 1))(mean, var)
    assert np.all(np.isfinite(g_m)) and np.all(np.isfinite(g_v))
    # At v = 0 the mean gradient is the cross-entropy's, softmax - one_hot.
    ce_grad = jax.nn.softmax(mean) - jax.nn.one_hot(labels, 3, dtype=mean.dtype)
    np.testing.assert_allclose(g_m[1:], ce_grad[1:], rtol=1e-12, atol=1e-15)


def test_categorical_mc_gradient_in_variance_is_unbiased():
    # K = 2, label 0: the loss is E[softplus(d)], d = mu + sqrt(v) eps. Its v-gradient per draw is
    # sigmoid(d) eps / (2 sqrt v) (pathwise); the truth is the derivative of the mpmath integral.
    mu, v, S = 1.0, 4.0, 100_000
    g = jax.grad(lambda var: expected_categorical_nll_mc(
        jnp.array([0]), f64([[0.0, mu]]), jnp.stack([jnp.zeros((), jnp.float64), var])[None],
        key=jax.random.key(5), num_samples=S)[0])(f64(v))
    h = mp.mpf("1e-6")
    truth = float((_expected_softplus_mp(mp.mpf(mu), v + h) - _expected_softplus_mp(mp.mpf(mu), v - h)) / (2 * h))
    eps = np.random.default_rng(0).normal(size=2_000_000)
    terms = eps / (2 * math.sqrt(v)) / (1 + np.exp(-(mu + math.sqrt(v) * eps)))
    assert abs(float(g) - truth) < 4 * terms.std() / math.sqrt(S)


def test_categorical_mc_needs_a_key_and_checks_num_samples():
    with pytest.raises(ValueError, match="PRNG key"):
        expected_categorical_nll_mc(jnp.array([0]), f64([[0.0, 1.0]]), f64([[1.0, 1.0]]), key=None)
    with pytest.raises(ValueError, match="num_samples"):
        expected_categorical_nll_mc(jnp.array([0]), f64([[0.0, 1.0]]), f64([[1.0, 1.0]]),
                                    key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="labels"):
        expected_categorical_nll_mc(jnp.array([2]), f64([[0.0, 1.0]]), f64([[1.0, 1.0]]), key=jax.random.key(0))


def test_nan_variance_propagates():
    out = expected_categorical_nll_mc(jnp.array([0, 0]), f64([[0.0, 1.0], [0.0, 1.0]]),
                                      f64([[jnp.nan, 1.0], [1.0, 1.0]]), key=jax.random.key(0))
    assert np.isnan(out[0]) and np.isfinite(out[1])
    out = expected_bernoulli_nll_mc(f64([[1.0], [0.0]]), f64([[0.0], [0.0]]), f64([[jnp.nan], [1.0]]),
                                    key=jax.random.key(0))
    assert np.isnan(out[0]) and np.isfinite(out[1])


# --- item 5: Bernoulli -----------------------------------------------------------------

def test_bernoulli_nll_by_hand_and_stable():
    y = f64([[1.0, 0.0], [0.0, 1.0]])
    z = f64([[2.0, -3.0], [800.0, -800.0]])
    expected = [float(mp.log1p(mp.exp(-2)) + mp.log1p(mp.exp(-3))), 1600.0]
    np.testing.assert_allclose(bernoulli_nll_from_logits(y, z), expected, rtol=1e-12)
    # integer and bool labels are accepted
    np.testing.assert_allclose(bernoulli_nll_from_logits(jnp.array([[1, 0], [0, 1]]), z), expected, rtol=1e-12)


def test_bernoulli_bad_labels_raise_or_nan():
    with pytest.raises(ValueError, match=r"y \(binary labels\) must be 0 or 1.*2\.0"):
        bernoulli_nll_from_logits(f64([[2.0]]), f64([[0.0]]))
    with pytest.raises(ValueError, match="must have the same shape"):
        bernoulli_nll_from_logits(f64([1.0, 0.0]), f64([[0.0], [0.0]]))
    out = jax.jit(bernoulli_nll_from_logits)(f64([[0.5], [1.0]]), f64([[0.0], [0.0]]))
    assert np.isnan(out[0]) and np.isfinite(out[1])


@pytest.mark.parametrize("m,v", [(0.0, 1.0), (3.0, 0.25), (-2.0, 30.0), (1.0, 400.0)])
def test_expected_bernoulli_against_quadrature(m, v):
    truth_softplus = _expected_softplus_mp(mp.mpf(m), mp.mpf(v))
    sd = _sd_softplus(m, v)
    S = 4096
    for y in (0.0, 1.0):
        est = expected_bernoulli_nll_mc(f64([[y]]), f64([[m]]), f64([[v]]), key=jax.random.key(11), num_samples=S)
        assert abs(float(est[0]) - (truth_softplus - y * m)) < 4 * sd / math.sqrt(S)


def test_expected_bernoulli_zero_variance_and_gradient():
    y, m = f64([[1.0], [0.0]]), f64([[0.3], [-1.2]])
    np.testing.assert_allclose(expected_bernoulli_nll_mc(y, m, jnp.zeros_like(m), key=jax.random.key(0)),
                               bernoulli_nll_from_logits(y, m), rtol=1e-12)
    g = jax.grad(lambda mm, vv: jnp.sum(expected_bernoulli_nll_mc(y, mm, vv, key=jax.random.key(0))),
                 argnums=(0, 1))(m, f64([[0.0], [2.0]]))
    assert all(np.all(np.isfinite(a)) for a in g)


# --- item 4: heteroscedastic Gaussian ---------------------------------------------------

def test_heteroscedastic_nll_by_hand():
    y = f64([[1.0, -2.0]])
    out = f64([[0.5, 0.0, math.log(2.0), -1.0]])  # means (0.5, 0), log-variances (log 2, -1)
    expected = (0.5 * math.log(2 * math.pi * 2.0) + 0.25 ** 2 / (2 * 2.0) * 4
                + 0.5 * math.log(2 * math.pi * math.exp(-1.0)) + 4.0 / (2 * math.exp(-1.0)))
    np.testing.assert_allclose(heteroscedastic_gaussian_nll(y, out), [expected], rtol=1e-12)


def test_expected_heteroscedastic_against_monte_carlo():
    rng = np.random.default_rng(3)
    B, D, n = 4, 2, 1_000_000
    mean = f64(rng.normal(size=(B, 2 * D)))
    var = f64(rng.uniform(0.0, 1.5, (B, 2 * D)))
    y = f64(rng.normal(size=(B, D)))
    closed = np.asarray(expected_heteroscedastic_gaussian_nll(y, mean, var))
    z = np.asarray(mean)[None] + np.sqrt(np.asarray(var))[None] * rng.normal(size=(n, B, 2 * D))
    m, s = z[..., :D], z[..., D:]
    terms = np.sum(0.5 * np.log(2 * np.pi) + 0.5 * s + 0.5 * (np.asarray(y)[None] - m) ** 2 * np.exp(-s), axis=-1)
    se = terms.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(closed - terms.mean(axis=0)) < 4 * se), (closed, terms.mean(axis=0), se)
    # var = 0: the point NLL
    np.testing.assert_allclose(expected_heteroscedastic_gaussian_nll(y, mean, jnp.zeros_like(var)),
                               heteroscedastic_gaussian_nll(y, mean), rtol=1e-12)


def test_heteroscedastic_shapes():
    with pytest.raises(ValueError, match="even"):
        split_heteroscedastic(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"y must have shape \(2, 1\)"):
        heteroscedastic_gaussian_nll(jnp.zeros((2,)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="even"):
        expected_heteroscedastic_gaussian_nll(jnp.zeros((2, 1)), jnp.zeros((2, 3)), jnp.zeros((2, 3)))


# --- wiring into elbo_loss ---------------------------------------------------------------

X = jax.random.normal(jax.random.key(0), (6, 3), jnp.float64)


def _init(model, x=X):
    return model.init(jax.random.key(1), x)


def test_elbo_clt_categorical_default_is_monte_carlo_and_needs_a_key():
    model = BayesianMLP((8, 4), layer_type="clt", param_dtype=jnp.float64)
    v = _init(model)
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    with pytest.raises(ValueError, match="PRNG key"):
        elbo_loss(model, v, X, labels, num_train_examples=10, likelihood="categorical")
    key = jax.random.key(2)
    loss, aux = elbo_loss(model, v, X, labels, num_train_examples=10, likelihood="categorical", key=key)
    mean, var = model.apply(v, X)
    logit_key = jax.random.fold_in(key, 0x10617)
    direct = expected_categorical_nll_mc(labels, mean, var, key=logit_key, num_samples=DEFAULT_LOGIT_SAMPLES)
    np.testing.assert_allclose(aux["nll"], jnp.mean(direct), rtol=1e-12)
    for name in ("bound", "probit"):  # deterministic options stay selectable, no key needed
        loss_b, _ = elbo_loss(model, v, X, labels, num_train_examples=10, likelihood="categorical",
                              clt_categorical=name)
        assert np.isfinite(loss_b)
    g = jax.grad(lambda p: elbo_loss(model, {**v, "params": p}, X, labels, num_train_examples=10,
                                     likelihood="categorical", key=key)[0])(v["params"])
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(g))
    with pytest.raises(ValueError, match="clt_categorical"):
        elbo_loss(model, v, X, labels, num_train_examples=10, likelihood="categorical", clt_categorical="x")


@pytest.mark.parametrize("layer_type", ["bbb", "lr", "clt"])
def test_elbo_heteroscedastic_and_bernoulli(layer_type):
    het = BayesianMLP((8, 4), layer_type=layer_type, param_dtype=jnp.float64)  # 2 targets
    v = _init(het)
    y = jax.random.normal(jax.random.key(3), (6, 2), jnp.float64)
    key = jax.random.key(4)
    loss, aux = elbo_loss(het, v, X, y, num_train_examples=10, likelihood="heteroscedastic", key=key)
    out = het.apply(v, X, rngs={"sample": key})
    if layer_type == "clt":
        expected = expected_heteroscedastic_gaussian_nll(y, *out)
    else:
        expected = heteroscedastic_gaussian_nll(y, out)
    np.testing.assert_allclose(aux["nll"], jnp.mean(expected), rtol=1e-12)
    with pytest.raises(ValueError, match=r"y must have shape \(6, 2\)"):
        elbo_loss(het, v, X, y[:, :1], num_train_examples=10, likelihood="heteroscedastic", key=key)
    odd = BayesianMLP((8, 3), layer_type=layer_type, param_dtype=jnp.float64)
    with pytest.raises(ValueError, match="even"):
        elbo_loss(odd, _init(odd), X, y, num_train_examples=10, likelihood="heteroscedastic", key=key)
    with pytest.raises(ValueError, match="noise_var is only used"):
        elbo_loss(het, v, X, y, num_train_examples=10, likelihood="heteroscedastic", key=key, noise_var=1.0)

    binary = BayesianMLP((8, 1), layer_type=layer_type, param_dtype=jnp.float64)
    vb = _init(binary)
    yb = jnp.array([[0], [1], [1], [0], [1], [0]])
    loss, aux = elbo_loss(binary, vb, X, yb, num_train_examples=10, likelihood="bernoulli", key=key)
    assert np.isfinite(loss)
    with pytest.raises(ValueError, match=r"y \(binary labels\)"):
        elbo_loss(binary, vb, X, yb * 2, num_train_examples=10, likelihood="bernoulli", key=key)


def test_elbo_ensemble_monte_carlo_members_draw_independently():
    module = BayesianMLP((8, 3), layer_type="clt", param_dtype=jnp.float64)
    ens = Ensemble(module, 2)
    v = ens.init(jax.random.key(1), X)
    # identical members: only the logit draws can differ
    v = {**v, "params": jax.tree.map(lambda a: jnp.stack([a[0], a[0]]), v["params"])}
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    _, aux = elbo_loss(ens, v, X, labels, num_train_examples=10, likelihood="categorical", key=jax.random.key(0))
    assert aux["nll"].shape == (2,) and float(aux["nll"][0]) != float(aux["nll"][1])
    _, aux = elbo_loss(ens, v, X, labels, num_train_examples=10, likelihood="categorical", clt_categorical="bound")
    np.testing.assert_allclose(aux["nll"][0], aux["nll"][1], rtol=1e-12)


def test_dtype_rule():
    # integer inputs are cast to the default float; complex ones raise TypeError naming the argument
    ints = heteroscedastic_gaussian_nll(jnp.array([[1]]), jnp.array([[0, 0]]))
    assert ints.dtype == jnp.result_type(float)
    with pytest.raises(TypeError, match="out"):
        heteroscedastic_gaussian_nll(f64([[1.0]]), jnp.array([[0j, 0j]]))
    with pytest.raises(TypeError, match="logits"):
        bernoulli_nll_from_logits(f64([[1.0]]), jnp.array([[1j]]))
    with pytest.raises(TypeError, match="y"):
        bernoulli_nll_from_logits(jnp.array([[1j]]), f64([[1.0]]))
    with pytest.raises(TypeError, match="var"):
        expected_categorical_nll_mc(jnp.array([0]), f64([[0.0, 1.0]]), jnp.array([[1j, 1j]]), key=jax.random.key(0))
