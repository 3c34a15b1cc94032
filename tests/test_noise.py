"""Learned observation noise and its recalibration.

Tolerances:
* recovery: on N = 2000 examples of ``y = 2 x - 1 + eps``, ``eps ~ N(0, 0.3^2)``, the maximum
  likelihood noise std has standard error sigma / sqrt(2 N) (1.6% of sigma). A linear model
  (one layer) trained to convergence must land within 4 of those of the true sigma; the
  epistemic variance it adds on the training set is of order sigma^2 * (parameters / N), a
  0.05% bias, and the optimizer's last-iterate error is made negligible by training long.
* ``fit_noise_var`` against SciPy's bounded scalar minimizer of the same float64 likelihood:
  1e-6 relative (the minimizer's xatol).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize_scalar

from bayeslayers_jax import (
    BayesianMLP,
    Ensemble,
    LearnedNoise,
    calibrated_noise_var,
    elbo_loss,
    fit,
    fit_noise_var,
    has_learned_noise,
    learned_noise_var,
    predictive,
)

SIGMA = 0.3
N = 2000


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (N, 1))
    y = 2 * x - 1 + SIGMA * rng.normal(size=(N, 1))
    return jnp.asarray(x), jnp.asarray(y)


def test_learned_noise_tree_and_errors():
    x = jnp.ones((3, 2), jnp.float64)
    model = LearnedNoise(BayesianMLP((4, 2), layer_type="lr", param_dtype=jnp.float64),
                         init_std=0.5, param_dtype=jnp.float64)
    v = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    assert set(v["params"]) == {"layers_0", "layers_1", "noise_log_std"}
    np.testing.assert_allclose(learned_noise_var(model, v), [0.25, 0.25], rtol=1e-12)
    assert has_learned_noise(model) and not has_learned_noise(model.model)
    assert learned_noise_var(model.model, v) is None
    ens = Ensemble(model, 3)
    ve = ens.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x)
    assert learned_noise_var(ens, ve).shape == (3, 2)
    with pytest.raises(TypeError, match="wrap the member"):
        LearnedNoise(Ensemble(BayesianMLP((1,)), 2))
    with pytest.raises(ValueError, match="init_std"):
        LearnedNoise(BayesianMLP((1,)), init_std=0.0)
    with pytest.raises(ValueError, match="noise_var=None"):
        elbo_loss(model, v, x, jnp.zeros((3, 2)), num_train_examples=3, key=jax.random.key(0), noise_var=1.0)
    with pytest.raises(ValueError, match="LearnedNoise"):
        elbo_loss(model, v, x, jnp.zeros(3, int), num_train_examples=3, key=jax.random.key(0),
                  likelihood="categorical")


@pytest.mark.parametrize("layer_type,map_", [("clt", False), ("bbb", True), ("lr", False)])
def test_learned_noise_recovers_the_true_level(layer_type, map_):
    x, y = _data()
    model = LearnedNoise(BayesianMLP((1,), layer_type=layer_type, param_dtype=jnp.float64),
                         param_dtype=jnp.float64)
    v = model.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, x)
    sched = optax.exponential_decay(0.05, transition_steps=400, decay_rate=0.3)
    res = fit(model, v, x, y, epochs=400, batch_size=500, optimizer=optax.adam(sched),
              key=jax.random.key(3), map=map_)
    std = float(jnp.sqrt(learned_noise_var(model, {**v, "params": res.params})[0]))
    assert abs(std - SIGMA) < 4 * SIGMA / math.sqrt(2 * N), std


def test_ensemble_members_learn_their_own_noise():
    x, y = _data(1)
    x, y = x[:400], y[:400]
    module = LearnedNoise(BayesianMLP((1,), layer_type="clt", param_dtype=jnp.float64), param_dtype=jnp.float64)
    ens = Ensemble(module, 2)
    v = ens.init(jax.random.key(0), x)
    v = {**v, "params": {**v["params"], "noise_log_std": v["params"]["noise_log_std"].at[1].set(1.0)}}
    res = fit(ens, v, x, y, epochs=300, batch_size=400, optimizer=optax.adam(0.05), key=jax.random.key(1))
    stds = np.sqrt(np.asarray(learned_noise_var(ens, {**v, "params": res.params}))[:, 0])
    # both members reach the 400-example estimate of sigma (SE 0.3 / sqrt(800) = 0.011)
    assert np.all(np.abs(stds - SIGMA) < 4 * SIGMA / math.sqrt(2 * 400)), stds
    p = predictive(ens, {**v, "params": res.params}, x[:5])
    np.testing.assert_allclose(p.total_var - p.epistemic_var, np.full((5, 1), np.mean(stds ** 2)), rtol=1e-10)


def _nll(t, y, mean, var):
    total = var + t
    return 0.5 * np.sum(np.log(total) + (y - mean) ** 2 / total)


def test_fit_noise_var_against_scipy():
    rng = np.random.default_rng(4)
    n = 300
    var = rng.uniform(0.0, 0.5, (n, 2))
    mean = rng.normal(size=(n, 2))
    true_noise = np.array([0.4, 0.05])
    y = mean + rng.normal(size=(n, 2)) * np.sqrt(var + true_noise)
    got = np.asarray(fit_noise_var(jnp.asarray(y), jnp.asarray(mean), jnp.asarray(var)))
    assert got.shape == (2,)
    for d in range(2):
        hi = float(np.max((y[:, d] - mean[:, d]) ** 2))
        ref = minimize_scalar(_nll, bounds=(0.0, hi), args=(y[:, d], mean[:, d], var[:, d]),
                              method="bounded", options={"xatol": 1e-12}).x
        np.testing.assert_allclose(got[d], ref, rtol=1e-6)
    # 1-D input gives a scalar; NaN propagates; over-covered gives exactly 0
    assert fit_noise_var(jnp.asarray(y[:, 0]), jnp.asarray(mean[:, 0]), jnp.asarray(var[:, 0])).shape == ()
    assert np.isnan(fit_noise_var(jnp.asarray(y[:, 0]).at[3].set(jnp.nan), jnp.asarray(mean[:, 0]),
                                  jnp.asarray(var[:, 0])))
    assert float(fit_noise_var(jnp.asarray(y[:, 0]), jnp.asarray(mean[:, 0]), jnp.asarray(var[:, 0]) + 100.0)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        fit_noise_var(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4))


def test_calibrated_noise_var_fixes_the_double_counting():
    # A CLT model with a large posterior variance: the noise learned on the training set absorbs
    # the epistemic variance (the trap), so train-noise + epistemic over-covers; the noise refitted
    # on validation data gives held-out intervals whose coverage is nominal within its binomial SE.
    from bayeslayers_jax import interval_coverage

    x, y = _data(5)
    xt, yt, xv, yv, xs, ys = x[:100], y[:100], x[100:1000], y[100:1000], x[1000:], y[1000:]
    model = LearnedNoise(BayesianMLP((1,), layer_type="clt", param_dtype=jnp.float64, prior_std=1.0),
                         param_dtype=jnp.float64)
    v = model.init(jax.random.key(0), xt)
    sched = optax.exponential_decay(0.02, transition_steps=500, decay_rate=0.1)
    res = fit(model, v, xt, yt, epochs=3000, batch_size=100, optimizer=optax.adam(sched), key=jax.random.key(1))
    v = {**v, "params": res.params}
    learned = float(learned_noise_var(model, v)[0])
    p_train = predictive(model, v, xt, noise_var=0.0)
    # At the optimum of the expected log-likelihood, the learned noise is the training residual
    # PLUS the training epistemic variance (the trap); converged to the optimizer's precision.
    resid = float(jnp.mean(jnp.square(yt - p_train.mean)))
    epi = float(jnp.mean(p_train.epistemic_var))
    assert epi > 0
    np.testing.assert_allclose(learned, resid + epi, rtol=1e-4)
    s2 = calibrated_noise_var(model, v, xv, yv)
    p = predictive(model, v, xs, noise_var=s2)
    cov = float(interval_coverage(ys, p.mean, p.total_var, 0.95))
    # Binomial SE of the coverage of 1000 test points (0.0069), combined with the effect of the
    # noise estimated on 900 validation points (relative std error sqrt(1/(2*900)) = 2.4%, times
    # d coverage / d log std = 2 * 1.96 * phi(1.96) = 0.23: 0.0055).
    se = math.hypot(math.sqrt(0.95 * 0.05 / xs.shape[0]), 0.23 * math.sqrt(1 / (2 * 900)))
    assert abs(cov - 0.95) < 4 * se, cov
