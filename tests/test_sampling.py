"""sample_weights and local_reparameterization: moments by Monte Carlo, keys, equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import local_reparameterization, sample_weights


def _within_4se(samples, mean, var):
    """Sample mean and variance of axis 0 agree with (mean, var) within 4 standard errors."""
    n = samples.shape[0]
    m = samples.mean(0)
    v = samples.var(0, ddof=1)
    se_mean = np.sqrt(var / n)
    # SE of the sample variance of Gaussian samples: var * sqrt(2 / (n - 1)).
    se_var = var * np.sqrt(2.0 / (n - 1))
    assert np.all(np.abs(m - mean) <= 4 * se_mean), np.max(np.abs(m - mean) / se_mean)
    assert np.all(np.abs(v - var) <= 4 * se_var), np.max(np.abs(v - var) / se_var)


def test_sample_weights_has_the_right_moments_and_is_keyed():
    mu = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    std = jnp.array([[0.1, 1.0], [0.3, 2.0]])
    keys = jax.random.split(jax.random.key(0), 20_000)
    w = np.asarray(jax.vmap(sample_weights, in_axes=(0, None, None))(keys, mu, std))
    # 4 cells x 2 statistics: a 4-SE bound fails by chance with probability < 1e-3.
    _within_4se(w, np.asarray(mu), np.asarray(std) ** 2)
    k = jax.random.key(7)
    np.testing.assert_array_equal(sample_weights(k, mu, std), sample_weights(k, mu, std))
    assert not np.array_equal(sample_weights(k, mu, std), sample_weights(jax.random.key(8), mu, std))
    assert sample_weights(k, mu.astype(jnp.float32), std.astype(jnp.float32)).dtype == jnp.float32


def test_local_reparameterization_matches_bayes_by_backprop_for_one_row():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 5)))
    w_mu, w_std = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.uniform(0.1, 0.5, (5, 3)))
    b_mu, b_std = jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.uniform(0.1, 0.5, 3))
    n = 20_000
    keys = jax.random.split(jax.random.key(1), n)
    lr = jax.vmap(lambda k: local_reparameterization(k, x, w_mu, w_std, b_mu, b_std)[0])(keys)

    def bbb(k):
        kw, kb = jax.random.split(k)
        return (x @ sample_weights(kw, w_mu, w_std) + sample_weights(kb, b_mu, b_std)[None, :])[0]

    bbb_samples = jax.vmap(bbb)(jax.random.split(jax.random.key(2), n))
    exact_mean = np.asarray(x @ w_mu + b_mu[None, :])[0]
    exact_var = np.asarray((x**2) @ w_std**2 + (b_std**2)[None, :])[0]
    _within_4se(np.asarray(lr), exact_mean, exact_var)
    _within_4se(np.asarray(bbb_samples), exact_mean, exact_var)


def test_local_reparameterization_keys_batches_and_zero_variance_gradient():
    x = jnp.ones((4, 2, 3))
    w_mu, w_std = jnp.ones((3, 5)), jnp.full((3, 5), 0.1)
    k = jax.random.key(3)
    y = local_reparameterization(k, x, w_mu, w_std)
    assert y.shape == (4, 2, 5)
    np.testing.assert_array_equal(y, local_reparameterization(k, x, w_mu, w_std))
    # Independent noise per example: identical rows get different outputs.
    assert not np.allclose(y[0, 0], y[0, 1])
    # Zero input and no bias: zero variance, and the gradient is finite (safe sqrt).
    g = jax.grad(lambda s: local_reparameterization(k, jnp.zeros((2, 3)), w_mu, s).sum())(w_std)
    assert np.all(np.isfinite(g))


def test_errors_name_the_arguments():
    w = jnp.ones((3, 5))
    with pytest.raises(ValueError, match="PRNG key"):
        local_reparameterization(None, jnp.ones((2, 3)), w, w)
    with pytest.raises(ValueError, match=r"`x` \(shape \(2, 4\)\).*`weight_mu`"):
        local_reparameterization(jax.random.key(0), jnp.ones((2, 4)), w, w)
    with pytest.raises(ValueError, match="`weight_mu` and `weight_std`"):
        local_reparameterization(jax.random.key(0), jnp.ones((2, 3)), w, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="`bias_mu` must have shape \\(5,\\)"):
        local_reparameterization(jax.random.key(0), jnp.ones((2, 3)), w, w, jnp.ones(4))
    with pytest.raises(ValueError, match="`mu` and `std`"):
        sample_weights(jax.random.key(0), jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="PRNG key"):
        sample_weights(None, jnp.ones(3), jnp.ones(3))


def test_safe_sqrt_propagates_nan_and_negative_with_a_zero_gradient_at_zero():
    from bayeslayers_jax.sampling import safe_sqrt

    v = jnp.array([4.0, 0.0, -1.0, np.nan])
    out = safe_sqrt(v)
    np.testing.assert_array_equal(out[:2], [2.0, 0.0])
    assert bool(jnp.all(jnp.isnan(out[2:])))
    g = jax.vmap(jax.grad(safe_sqrt))(v)
    np.testing.assert_array_equal(g[:2], [0.25, 0.0])
    assert bool(jnp.all(jnp.isnan(g[2:])))


def test_nan_weight_std_gives_nan_samples_not_zero_noise():
    """Issue 10: weight_std = nan returned [[3, 3], [3, 3]] (the NaN variance became 0 noise)."""
    x, w = jnp.ones((2, 3)), jnp.ones((3, 2))
    y = local_reparameterization(jax.random.key(0), x, w, jnp.full((3, 2), np.nan))
    assert bool(jnp.all(jnp.isnan(y)))
    y = local_reparameterization(jax.random.key(0), x, w, w, jnp.zeros(2), jnp.array([np.nan, 1.0]))
    assert bool(jnp.all(jnp.isnan(y[:, 0]))) and bool(jnp.all(jnp.isfinite(y[:, 1])))
    assert bool(jnp.all(jnp.isnan(sample_weights(jax.random.key(0), w, jnp.full((3, 2), np.nan)))))


def test_complex_inputs_raise_and_integers_are_cast():
    w = jnp.ones((3, 2))
    with pytest.raises(TypeError, match="`x` must be a real floating array"):
        local_reparameterization(jax.random.key(0), jnp.ones((2, 3), jnp.complex128), w, w)
    with pytest.raises(TypeError, match="`std` must be a real floating array"):
        sample_weights(jax.random.key(0), w, w.astype(jnp.complex128))
    y_int = local_reparameterization(jax.random.key(0), jnp.ones((2, 3), jnp.int32), w, w)
    np.testing.assert_array_equal(y_int, local_reparameterization(jax.random.key(0), jnp.ones((2, 3)), w, w))
