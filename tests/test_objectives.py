"""Objectives: the ELBO normalization on a hand-computed case, the closed-form expected
log-likelihood against Monte Carlo, and the probit approximation's stated accuracy.

Tolerances: hand-computed float64 values to 1e-12 relative; Monte Carlo within 4 standard
errors (SE estimated from the samples); probit bounds as stated in
``bayeslayers_jax.objectives.probit_log_softmax`` (plus 4 Monte Carlo SE where the truth is
Monte Carlo).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax.mlp import BayesianMLP
from bayeslayers_jax.objectives import (
    categorical_nll_from_logits,
    elbo_loss,
    expected_categorical_nll_bound,
    expected_gaussian_log_likelihood,
    expected_gaussian_nll,
    gaussian_nll,
    make_elbo_loss_fn,
    neg_elbo,
    neg_log_prior,
    probit_categorical_nll,
    probit_log_softmax,
    probit_softmax,
)


def f64(x):
    return jnp.asarray(x, jnp.float64)


def test_neg_elbo_by_hand():
    # mean(1, 2, 3) + 0.5 * 10 / 5 = 2 + 1 = 3.
    assert abs(float(neg_elbo(f64([1.0, 2.0, 3.0]), f64(10.0), 5, kl_weight=0.5)) - 3.0) <= 1e-15
    with pytest.raises(ValueError, match="num_train_examples"):
        neg_elbo(f64([1.0]), f64(1.0), 0)
    with pytest.raises(ValueError, match="kl"):
        neg_elbo(f64([1.0]), f64([1.0, 2.0]), 3)


def test_gaussian_nll_by_hand():
    y = f64([[1.0, 0.0], [2.0, 2.0]])
    pred = f64([[0.0, 0.0], [2.0, 0.0]])
    got = gaussian_nll(y, pred, 4.0)
    c = 0.5 * math.log(8 * math.pi)
    expected = [c + 1 / 8 + c, c + c + 4 / 8]  # summed over the event axis
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="noise_var"):
        gaussian_nll(y, pred, None)
    with pytest.raises(ValueError, match="same shape"):
        gaussian_nll(y, pred[:, :1], 1.0)


def test_expected_log_likelihood_against_monte_carlo():
    m, v, y, s2 = f64([0.3, -1.2, 2.0]), f64([0.5, 2.0, 0.1]), f64([1.0, 0.0, 2.5]), 0.7
    n = 200_000

    @jax.jit
    def monte_carlo(key):
        f = m[None] + jnp.sqrt(v)[None] * jax.random.normal(key, (n, 3), jnp.float64)
        ll = -0.5 * jnp.log(2 * jnp.pi * s2) - 0.5 * (y[None] - f) ** 2 / s2
        return jnp.mean(ll, 0), jnp.std(ll, 0) / math.sqrt(n)

    mc, se = monte_carlo(jax.random.key(0))
    got = jax.vmap(lambda a, b, c: expected_gaussian_log_likelihood(a, b, c, s2))(y, m, v)
    assert np.all(np.abs(np.asarray(got - mc)) <= 4 * np.asarray(se))
    # Per example: summed over the event axis; var=None is the plain likelihood.
    two = expected_gaussian_nll(y[None], m[None], v[None], s2)
    assert two.shape == (1,) and abs(float(two[0]) + float(jnp.sum(got))) <= 1e-12
    plain = expected_gaussian_nll(y[None], m[None], None, s2)
    assert abs(float(plain[0]) - float(gaussian_nll(y[None], m[None], s2)[0])) <= 1e-12


def _single_clt_layer_case(layer_type):
    """A 2 -> 1 network of one layer with hand-set parameters (float64)."""
    model = BayesianMLP(features=(1,), layer_type=layer_type, param_dtype=jnp.float64)
    x = f64([[1.0, 2.0], [-0.5, 0.0], [0.3, -1.0], [2.0, 1.0]])
    y = f64([[0.0], [1.0], [-1.0], [0.5]])
    variables = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    w_mu, w_std = np.array([[0.5], [-1.0]]), np.array([[1.0], [0.5]])
    b_mu, b_std = np.array([0.2]), np.array([0.3])
    params = {"layers_0": {"weight_mu": f64(w_mu), "weight_rho": f64(np.log(w_std)),
                           "bias_mu": f64(b_mu), "bias_rho": f64(np.log(b_std))}}
    variables = {**variables, "params": params}
    # KL(N(mu, s^2) || N(0, 1)) = -log s + (s^2 + mu^2) / 2 - 1/2, summed over all 3 weights.
    kl = sum(-math.log(s) + (s * s + mu * mu) / 2 - 0.5
             for mu, s in zip([0.5, -1.0, 0.2], [1.0, 0.5, 0.3]))
    xn = np.asarray(x)
    mean = xn @ w_mu + b_mu
    var = (xn**2) @ (w_std**2) + b_std**2
    return model, variables, x, y, kl, mean, var


def test_elbo_scaling_clt_by_hand():
    model, variables, x, y, kl, mean, var = _single_clt_layer_case("clt")
    s2 = 0.25
    nll = 0.5 * np.log(2 * np.pi * s2) + ((np.asarray(y) - mean) ** 2 + var) / (2 * s2)
    # A batch of 4 out of N = 7 training examples: mean NLL over the batch + KL / 7.
    loss, aux = elbo_loss(model, variables, x, y, num_train_examples=7, noise_var=s2)
    assert abs(float(loss) - (nll.mean() + kl / 7)) <= 1e-12 * abs(float(loss))
    assert abs(float(aux["kl"]) - kl) <= 1e-12 * kl
    # Full batch (N = 4): N * loss = sum NLL + KL = -ELBO.
    full, _ = elbo_loss(model, variables, x, y, num_train_examples=4, noise_var=s2)
    assert abs(4 * float(full) - (nll.sum() + kl)) <= 1e-12 * (nll.sum() + kl)
    # KL annealing: beta = 0.1 removes 0.9 KL / N.
    annealed, _ = elbo_loss(model, variables, x, y, num_train_examples=7, noise_var=s2, kl_weight=0.1)
    assert abs(float(loss - annealed) - 0.9 * kl / 7) <= 1e-12
    # A stale 'kl' collection in the variables is ignored (no double counting).
    stale = {**variables, "kl": {"layers_0": {"kl": (f64(1e6),)}}}
    again, _ = elbo_loss(model, stale, x, y, num_train_examples=7, noise_var=s2)
    assert float(again) == float(loss)
    # The optimizer-ready closure gives the same value.
    fn = make_elbo_loss_fn(model, variables, num_train_examples=7, noise_var=s2)
    assert float(fn(variables["params"], (x, y), None)) == float(loss)


def test_elbo_sampled_and_map_by_hand():
    model, variables, x, y, kl, mean, _ = _single_clt_layer_case("bbb")
    key = jax.random.key(5)
    out = model.apply(variables, x, rngs={"sample": key})
    s2 = 0.5
    nll = 0.5 * np.log(2 * np.pi * s2) + (np.asarray(y) - np.asarray(out)) ** 2 / (2 * s2)
    loss, aux = elbo_loss(model, variables, x, y, key=key, num_train_examples=10, noise_var=s2)
    assert abs(float(loss) - (nll.mean() + kl / 10)) <= 1e-12 * abs(float(loss))
    # MAP: the means, and the Gaussian log prior sum(mu^2 / 2) (prior N(0, 1)) instead of the KL.
    prior_term = (0.5**2 + 1.0 + 0.2**2) / 2
    assert abs(float(neg_log_prior(variables["params"], variables["prior"])) - prior_term) <= 1e-14
    nll_map = 0.5 * np.log(2 * np.pi * s2) + (np.asarray(y) - mean) ** 2 / (2 * s2)
    loss_map, _ = elbo_loss(model, variables, x, y, num_train_examples=10, noise_var=s2, map=True)
    assert abs(float(loss_map) - (nll_map.mean() + prior_term / 10)) <= 1e-12
    with pytest.raises(ValueError, match="likelihood"):
        elbo_loss(model, variables, x, y, num_train_examples=10, likelihood="poisson")


def _gauss_hermite_sigmoid(m, s, n=200):
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / weights.sum()
    return (weights * (1 / (1 + np.exp(-(m[..., None] + s[..., None] * nodes))))).sum(-1)


def test_probit_binary_error_bound():
    # Two classes: 'pairwise' is MacKay's probit for the logit difference d ~ N(m1 - m2, v1 + v2).
    # Stated bound: |error| <= 0.02 (measured maximum 0.016) for m in [-10, 10], sd in [0, 10].
    m = np.linspace(-10, 10, 81)
    sd = np.linspace(0, 10, 41)
    mm, ss = np.meshgrid(m, sd, indexing="ij")
    # Split the difference over the two logits, and the variance unevenly.
    mean = f64(np.stack([mm / 2, -mm / 2], -1))
    var = f64(np.stack([0.3 * ss**2, 0.7 * ss**2], -1))
    approx = np.asarray(probit_softmax(mean, var))[..., 0]
    truth = _gauss_hermite_sigmoid(mm, ss)
    err = np.abs(approx - truth)
    assert err.max() <= 0.02
    assert err[:, 0].max() <= 1e-12  # exact without variance


@pytest.mark.parametrize("num_classes, bound_pairwise, bound_scaled", [(3, 0.02, 0.16), (10, 0.06, 0.15)])
def test_probit_multiclass_against_monte_carlo(num_classes, bound_pairwise, bound_scaled):
    # Stated (measured on 200 configurations): max error 0.016 (K = 3) and 0.056 (K = 10) for
    # 'pairwise', 0.16 and 0.14 for 'scaled', with means in [-5, 5] and stds in [0, 1].
    rng = np.random.default_rng(1)
    configs, n = 30, 20_000
    mean = f64(rng.uniform(-5, 5, (configs, num_classes)))
    std = f64(rng.uniform(0, 1, (configs, num_classes)))

    @jax.jit
    def monte_carlo(key):
        eps = jax.random.normal(key, (n, configs, num_classes), jnp.float64)
        probs = jax.nn.softmax(mean[None] + std[None] * eps, axis=-1)
        return jnp.mean(probs, 0), jnp.std(probs, 0) / math.sqrt(n)

    mc, se = monte_carlo(jax.random.key(2))
    for method, bound in (("pairwise", bound_pairwise), ("scaled", bound_scaled)):
        approx = jax.jit(probit_softmax, static_argnums=2)(mean, std**2, method)
        np.testing.assert_allclose(np.asarray(jnp.sum(approx, -1)), 1.0, rtol=1e-12)
        assert np.all(np.abs(np.asarray(approx - mc)) <= bound + 4 * np.asarray(se)), method


def test_probit_categorical_nll():
    mean = f64([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]])
    var = f64([[0.5, 1.0, 2.0], [0.1, 0.0, 3.0]])
    labels = jnp.asarray([2, 0])
    nll = probit_categorical_nll(labels, mean, var)
    expected = -np.log(np.asarray(probit_softmax(mean, var)))[[0, 1], [2, 0]]
    np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-12)
    # Zero variance: plain softmax cross-entropy, by hand.
    xent = [math.log(sum(math.exp(v) for v in row)) - row[lab]
            for row, lab in zip([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]], [2, 0])]
    for method in ("pairwise", "scaled"):
        np.testing.assert_allclose(
            np.asarray(probit_categorical_nll(labels, mean, jnp.zeros_like(var), method)), xent,
            rtol=1e-12)
    np.testing.assert_allclose(np.asarray(categorical_nll_from_logits(labels, mean)), xent, rtol=1e-12)
    with pytest.raises(ValueError, match="method"):
        probit_log_softmax(mean, var, "exact")
    with pytest.raises(TypeError, match="labels"):
        probit_categorical_nll(f64([2.0, 0.0]), mean, var)


def test_expected_categorical_nll_bound_brackets_the_monte_carlo_expectation():
    """lse(m) <= E[lse(f)] <= lse(m + v/2): the bound is above the expected NLL by at most max(v)/2."""
    rng = np.random.default_rng(3)
    n = 100_000
    for _ in range(4):
        mean = jnp.asarray(rng.normal(0, 2, (1, 5)))
        var = jnp.asarray(rng.uniform(0, 2, (1, 5)))
        label = jnp.asarray([int(rng.integers(5))])
        bound = float(expected_categorical_nll_bound(label, mean, var)[0])
        f = mean + jnp.sqrt(var) * jax.random.normal(jax.random.key(int(rng.integers(1 << 30))), (n, 5))
        nll = -jax.nn.log_softmax(f, axis=-1)[:, int(label[0])]
        mc, se = float(jnp.mean(nll)), float(jnp.std(nll)) / np.sqrt(n)
        assert mc - 4 * se <= bound <= mc + float(jnp.max(var)) / 2 + 4 * se, (mc, se, bound)
    # Zero variance: exactly the softmax cross-entropy.
    logits = jnp.asarray(rng.normal(size=(3, 4)))
    labels = jnp.asarray([0, 3, 1])
    np.testing.assert_allclose(
        expected_categorical_nll_bound(labels, logits, jnp.zeros_like(logits)),
        categorical_nll_from_logits(labels, logits),
        rtol=1e-14,
    )
    with pytest.raises(ValueError, match="`mean` and `var`"):
        expected_categorical_nll_bound(labels, logits, jnp.zeros((3, 5)))
