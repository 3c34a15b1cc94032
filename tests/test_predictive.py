"""Predictive distributions of each method against sampling.

Ground truth: for a network with ONE hidden layer and a deterministic input, the CLT moments
are exact (the hidden pre-activations are independent Gaussians, the ReLU moments are exact,
and the output is a sum of independent products whose mean and variance the CLT formula
gives exactly). So the Monte Carlo predictive of BBB (weight samples) and of LR (pre-activation
samples, the same marginal per example) with the same parameters must agree with the CLT
predictive within 4 standard errors: SE(mean) = sd / sqrt(S) and
SE(var) = sqrt((m4 - var^2) / S), both estimated from the samples.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import BayesianMLP
from bayeslayers_jax import probit_softmax
from bayeslayers_jax import detect_mode, predictive, predictive_probs

S = 4000


def _models_and_variables(out_features=3):
    x = jnp.asarray(np.random.default_rng(0).uniform(-2, 2, (6, 3)), jnp.float64)
    models = {t: BayesianMLP(features=(16, out_features), layer_type=t, param_dtype=jnp.float64)
              for t in ("bbb", "lr", "clt")}
    variables = models["bbb"].init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    # Larger posterior stds than the initial exp(-4.6) ~ 0.01, so the variance is substantial.
    rho = jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.random.default_rng(2).uniform(-1.5, -0.5, a.shape), jnp.float64),
        {k: {n: v for n, v in layer.items() if n.endswith("rho")}
         for k, layer in variables["params"].items()})
    params = {k: {**layer, **rho[k]} for k, layer in variables["params"].items()}
    return models, {**variables, "params": params}, x


@pytest.fixture(scope="module")
def setup():
    return _models_and_variables()


def test_detect_mode(setup):
    models, variables, x = setup
    assert detect_mode(models["bbb"], variables, x) == "sample"
    assert detect_mode(models["lr"], variables, x) == "sample"
    assert detect_mode(models["clt"], variables, x) == "clt"


@pytest.mark.parametrize("layer_type", ["bbb", "lr"])
def test_sampled_predictive_matches_exact_clt_moments(setup, layer_type):
    models, variables, x = setup
    clt = predictive(models["clt"], variables, x, noise_var=0.3)
    assert clt.samples is None
    # Under jit (the documented way to reuse it: close over the model).
    pred = jax.jit(lambda v, k: predictive(models[layer_type], v, x, key=k, num_samples=S,
                                           noise_var=0.3))(variables, jax.random.key(7))
    samples = np.asarray(pred.samples)
    assert samples.shape == (S, 6, 3)
    mean, var = samples.mean(0), samples.var(0)
    np.testing.assert_allclose(np.asarray(pred.mean), mean, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(pred.epistemic_var), var, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(pred.total_var), var + 0.3, rtol=1e-12)
    se_mean = np.sqrt(var / S)
    m4 = ((samples - mean) ** 4).mean(0)
    se_var = np.sqrt((m4 - var**2) / S)
    assert np.all(np.abs(np.asarray(clt.mean) - mean) <= 4 * se_mean)
    assert np.all(np.abs(np.asarray(clt.epistemic_var) - var) <= 4 * se_var)
    # The variance is not negligible (so the comparison is not vacuous).
    assert np.all(var > 10 * se_var)
    np.testing.assert_allclose(np.asarray(clt.total_var), np.asarray(clt.epistemic_var) + 0.3, rtol=1e-14)


def test_map_predictive(setup):
    models, variables, x = setup
    for t in ("bbb", "clt"):
        pred = predictive(models[t], variables, x, mode="map", noise_var=0.5)
        out = models[t].apply(variables, x, map=True)
        out = out[0] if isinstance(out, tuple) else out
        np.testing.assert_array_equal(np.asarray(pred.mean), np.asarray(out))
        assert float(jnp.max(jnp.abs(pred.epistemic_var))) == 0.0
        np.testing.assert_array_equal(np.asarray(pred.total_var), 0.5)
        assert pred.samples is None


def test_errors(setup):
    models, variables, x = setup
    with pytest.raises(ValueError, match="key"):
        predictive(models["bbb"], variables, x)
    with pytest.raises(ValueError, match="mode"):
        predictive(models["bbb"], variables, x, mode="ensemble")
    with pytest.raises(ValueError, match="num_samples"):
        predictive(models["lr"], variables, x, key=jax.random.key(0), num_samples=1)
    with pytest.raises(ValueError, match="key"):
        predictive_probs(models["lr"], variables, x)


def test_predictive_probs(setup):
    models, variables, x = setup
    key = jax.random.key(3)
    # Sampling: the mean of the per-sample softmaxes of exactly the predictive's samples.
    sampled = predictive(models["bbb"], variables, x, key=key, num_samples=50)
    probs = predictive_probs(models["bbb"], variables, x, key=key, num_samples=50)
    expected = jax.nn.softmax(sampled.samples, axis=-1)
    np.testing.assert_allclose(np.asarray(probs.prob_samples), np.asarray(expected), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(probs.probs), np.asarray(expected.mean(0)), rtol=1e-12)
    # CLT: the probit approximation of the Gaussian logits; samples only with a key.
    mean, var = models["clt"].apply(variables, x)
    clt = predictive_probs(models["clt"], variables, x)
    np.testing.assert_allclose(np.asarray(clt.probs), np.asarray(probit_softmax(mean, var)), rtol=1e-12)
    assert clt.prob_samples is None
    clt_s = predictive_probs(models["clt"], variables, x, key=key, num_samples=4000)
    assert clt_s.prob_samples.shape == (4000, 6, 3)
    # Their mean estimates E[softmax] which the probit approximates (bound 0.06 for these
    # stds <= 1 and K = 3, see probit_log_softmax) within Monte Carlo error (<= 4 * 0.5/sqrt(S)).
    assert float(jnp.max(jnp.abs(clt_s.prob_samples.mean(0) - clt.probs))) <= 0.06 + 4 * 0.5 / math.sqrt(4000)
    # MAP: softmax of the mean network.
    mp = predictive_probs(models["clt"], variables, x, mode="map")
    np.testing.assert_allclose(
        np.asarray(mp.probs), np.asarray(jax.nn.softmax(models["clt"].apply(variables, x, map=True)[0])),
        rtol=1e-12)


# ----------------------------------------------------------------------------- ensembles
from bayeslayers_jax import Ensemble, member  # noqa: E402

M = 3


@pytest.fixture(scope="module")
def ensemble_setup():
    x = jnp.asarray(np.random.default_rng(0).uniform(-2, 2, (6, 3)), jnp.float64)
    modules = {t: BayesianMLP(features=(16, 3), layer_type=t, param_dtype=jnp.float64)
               for t in ("bbb", "lr", "clt")}
    ensembles = {t: Ensemble(m, M) for t, m in modules.items()}
    variables = ensembles["lr"].init(jax.random.key(0), x)
    rng = np.random.default_rng(2)
    variables["params"] = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.asarray(rng.uniform(-1.5, -0.5, a.shape), jnp.float64)
        if "rho" in jax.tree_util.keystr(p) else a, variables["params"])
    return modules, ensembles, variables, x


def _hand_mixture(means, variances):
    """The mixture's mean and variance by the law of total variance, member by member."""
    means, variances = np.asarray(means), np.asarray(variances)
    mean = sum(means) / len(means)
    second_moment = sum(v + m**2 for m, v in zip(means, variances)) / len(means)
    return mean, second_moment - mean**2


def test_ensemble_clt_predictive_is_the_mixture_of_members(ensemble_setup):
    modules, ensembles, variables, x = ensemble_setup
    pred = predictive(ensembles["clt"], variables, x, noise_var=0.2)
    members = [modules["clt"].apply(member(variables, m), x) for m in range(M)]
    mean, var = _hand_mixture([o[0] for o in members], [o[1] for o in members])
    assert pred.mean.shape == (6, 3) and pred.samples is None
    np.testing.assert_allclose(pred.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(pred.epistemic_var, var, rtol=1e-10)
    np.testing.assert_allclose(pred.total_var, var + 0.2, rtol=1e-10)
    # The spread between members is part of the epistemic variance.
    assert np.all(np.asarray(pred.epistemic_var) > np.mean([np.asarray(o[1]) for o in members], axis=0))


def test_ensemble_map_predictive_is_the_deep_ensemble(ensemble_setup):
    modules, ensembles, variables, x = ensemble_setup
    pred = predictive(ensembles["bbb"], variables, x, mode="map", noise_var=0.2)
    outs = np.stack([modules["bbb"].apply(member(variables, m), x, map=True) for m in range(M)])
    mean, var = _hand_mixture(outs, np.zeros_like(outs))
    np.testing.assert_allclose(pred.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(pred.epistemic_var, var, rtol=1e-10)
    np.testing.assert_allclose(pred.samples, outs, rtol=1e-14)


@pytest.mark.parametrize("layer_type", ["bbb", "lr"])
def test_ensemble_sampled_predictive_matches_the_exact_mixture(ensemble_setup, layer_type):
    """Pooled samples of every member against the mixture of the members' exact moments
    (one hidden layer: the CLT moments are exact for LR and BBB), within 4 standard errors."""
    modules, ensembles, variables, x = ensemble_setup
    pred = jax.jit(lambda v, k: predictive(ensembles[layer_type], v, x, key=k, num_samples=S))(
        variables, jax.random.key(5))
    samples = np.asarray(pred.samples)
    assert samples.shape == (S * M, 6, 3)
    members = [modules["clt"].apply(member(variables, m), x) for m in range(M)]
    mean, var = _hand_mixture([o[0] for o in members], [o[1] for o in members])
    n = S * M
    # Stratified sampling (S draws per member): the SE of the pooled mean is at most sqrt(var/n).
    se_mean = np.sqrt(var / n)
    m4 = ((samples - samples.mean(0)) ** 4).mean(0)
    se_var = np.sqrt((m4 - samples.var(0) ** 2) / n)
    assert np.all(np.abs(np.asarray(pred.mean) - mean) <= 4 * se_mean)
    assert np.all(np.abs(np.asarray(pred.epistemic_var) - var) <= 4 * se_var)


def test_ensemble_predictive_probs_average_the_members(ensemble_setup):
    modules, ensembles, variables, x = ensemble_setup
    members = [modules["clt"].apply(member(variables, m), x) for m in range(M)]
    hand = sum(np.asarray(probit_softmax(mu, v)) for mu, v in members) / M
    clt = predictive_probs(ensembles["clt"], variables, x, key=jax.random.key(1), num_samples=10,
                           clt_probs="probit")
    np.testing.assert_allclose(clt.probs, hand, rtol=1e-12)
    assert clt.prob_samples.shape == (10 * M, 6, 3)
    mc = predictive_probs(ensembles["clt"], variables, x, key=jax.random.key(1), num_samples=10)
    np.testing.assert_allclose(mc.probs, clt.prob_samples.mean(0), rtol=1e-12)  # the pooled samples' mean
    mapped = predictive_probs(ensembles["clt"], variables, x, mode="map")
    soft = np.stack([np.asarray(jax.nn.softmax(modules["clt"].apply(member(variables, m), x, map=True)[0]))
                     for m in range(M)])
    np.testing.assert_allclose(mapped.probs, soft.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mapped.prob_samples, soft, rtol=1e-12)
    sampled = predictive_probs(ensembles["lr"], variables, x, key=jax.random.key(1), num_samples=10)
    assert sampled.prob_samples.shape == (10 * M, 6, 3)
    np.testing.assert_allclose(sampled.probs, np.asarray(sampled.prob_samples).mean(0), rtol=1e-12)


@pytest.mark.parametrize("noise_var", [-5.0, -1e-12, float("nan")])
def test_negative_or_nan_noise_var_raises(setup, noise_var):
    models, variables, x = setup
    with pytest.raises(ValueError, match="noise_var"):
        predictive(models["clt"], variables, x, noise_var=noise_var)


# --- heteroscedastic models, learned noise, binary classifiers ---------------------------

@pytest.fixture(scope="module")
def het_setup():
    return _models_and_variables(out_features=4)  # 2 targets: 2 means, 2 log-variances


def test_heteroscedastic_predictive_matches_exact_clt_moments(het_setup):
    # One hidden layer, deterministic input: the CLT output moments are exact, so the sampled
    # mean head's mean/variance and the sampled E[exp(s)] agree with CLT within 4 SE.
    models, variables, x = het_setup
    clt = predictive(models["clt"], variables, x, likelihood="heteroscedastic")
    mean, var = models["clt"].apply(variables, x)
    np.testing.assert_allclose(clt.mean, mean[:, :2], rtol=1e-14)
    np.testing.assert_allclose(clt.epistemic_var, var[:, :2], rtol=1e-14)
    np.testing.assert_allclose(clt.total_var - clt.epistemic_var, jnp.exp(mean[:, 2:] + var[:, 2:] / 2), rtol=1e-12)
    pred = predictive(models["bbb"], variables, x, key=jax.random.key(7), num_samples=S, likelihood="heteroscedastic")
    raw = np.asarray(pred.samples)
    assert raw.shape == (S, 6, 4)
    m, s = raw[..., :2], raw[..., 2:]
    np.testing.assert_allclose(pred.epistemic_var, m.var(0), rtol=1e-12)
    np.testing.assert_allclose(pred.total_var, m.var(0) + np.exp(s).mean(0), rtol=1e-12)
    assert np.all(np.abs(np.asarray(clt.mean) - m.mean(0)) <= 4 * np.sqrt(m.var(0) / S))
    e = np.exp(s)
    assert np.all(np.abs(np.asarray(clt.total_var - clt.epistemic_var) - e.mean(0)) <= 4 * e.std(0) / math.sqrt(S))
    mp_ = predictive(models["clt"], variables, x, mode="map", likelihood="heteroscedastic")
    out = models["clt"].apply(variables, x, map=True)[0]
    np.testing.assert_allclose(mp_.total_var, jnp.exp(out[:, 2:]), rtol=1e-14)
    with pytest.raises(ValueError, match="noise_var=None"):
        predictive(models["clt"], variables, x, likelihood="heteroscedastic", noise_var=0.1)
    with pytest.raises(ValueError, match="likelihood"):
        predictive(models["clt"], variables, x, likelihood="poisson")


def test_heteroscedastic_ensemble_predictive_is_the_mixture(het_setup):
    from bayeslayers_jax import Ensemble, member

    models, _, x = het_setup
    ens = Ensemble(models["clt"], 3)
    v = ens.init(jax.random.key(0), x)
    p = predictive(ens, v, x, likelihood="heteroscedastic")
    parts = [predictive(models["clt"], member(v, i), x, likelihood="heteroscedastic") for i in range(3)]
    means = np.stack([q.mean for q in parts])
    np.testing.assert_allclose(p.mean, means.mean(0), rtol=1e-12)
    np.testing.assert_allclose(p.total_var, np.mean([q.total_var for q in parts], 0) + means.var(0), rtol=1e-12)


def test_predictive_adds_the_learned_noise(setup):
    from bayeslayers_jax import LearnedNoise

    models, variables, x = setup
    noisy = LearnedNoise(models["clt"], param_dtype=jnp.float64)
    params = {**variables["params"], "noise_log_std": jnp.log(jnp.asarray([0.1, 0.2, 0.3], jnp.float64))}
    v = {**variables, "params": params}
    p = predictive(noisy, v, x)
    base = predictive(models["clt"], variables, x)
    np.testing.assert_allclose(p.total_var, np.asarray(base.epistemic_var) + np.array([0.01, 0.04, 0.09]), rtol=1e-12)
    override = predictive(noisy, v, x, noise_var=0.5)  # e.g. a recalibrated noise
    np.testing.assert_allclose(override.total_var, base.epistemic_var + 0.5, rtol=1e-12)


def test_binary_predictive_probs(setup):
    models, variables, x = setup  # 3 independent Bernoulli outputs
    mean, var = models["clt"].apply(variables, x)
    clt = predictive_probs(models["clt"], variables, x, likelihood="bernoulli")
    assert clt.probs.shape == (6, 3, 2)
    p1 = 1 / (1 + np.exp(-np.asarray(mean) / np.sqrt(1 + np.pi * np.asarray(var) / 8)))  # MacKay
    np.testing.assert_allclose(clt.probs[..., 1], p1, rtol=1e-12)
    np.testing.assert_allclose(clt.probs.sum(-1), 1.0, rtol=1e-14)
    sampled = predictive(models["lr"], variables, x, key=jax.random.key(3), num_samples=50)
    probs = predictive_probs(models["lr"], variables, x, key=jax.random.key(3), num_samples=50, likelihood="bernoulli")
    np.testing.assert_allclose(probs.prob_samples[..., 1], jax.nn.sigmoid(sampled.samples), rtol=1e-12)
    np.testing.assert_allclose(probs.probs[..., 1], jax.nn.sigmoid(sampled.samples).mean(0), rtol=1e-12)
    mp_ = predictive_probs(models["clt"], variables, x, mode="map", likelihood="bernoulli")
    out = models["clt"].apply(variables, x, map=True)[0]
    np.testing.assert_allclose(mp_.probs[..., 1], jax.nn.sigmoid(out), rtol=1e-12)


def test_clt_probs_monte_carlo_or_probit(setup):
    models, variables, x = setup
    key = jax.random.key(4)
    mean, var = models["clt"].apply(variables, x)
    auto = predictive_probs(models["clt"], variables, x, key=key, num_samples=64)
    np.testing.assert_allclose(auto.probs, auto.prob_samples.mean(0), rtol=1e-12)  # with a key: MC by default
    probit = predictive_probs(models["clt"], variables, x, key=key, num_samples=64, clt_probs="probit")
    np.testing.assert_allclose(probit.probs, probit_softmax(mean, var), rtol=1e-12)
    np.testing.assert_array_equal(probit.prob_samples, auto.prob_samples)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        predictive_probs(models["clt"], variables, x, clt_probs="mc")
    with pytest.raises(ValueError, match="clt_probs"):
        predictive_probs(models["clt"], variables, x, clt_probs="exact")
