"""sample_weights and local_reparameterization: moments by Monte Carlo, keys, equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import local_reparameterization, sample_weights
from bayeslayers_jax.core import clt_conv_moments, clt_linear_moments
from bayeslayers_jax.core import flipout, flipout_conv, local_reparameterization_conv
from conv_montecarlo import CONV_CASES, assert_moments_within_4se, case_arrays, sample_outputs


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
    from bayeslayers_jax.core import safe_sqrt

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


def _draws(fn, n, key=1):
    """``n`` draws of ``fn(key)`` (one per key) as a NumPy array with a leading sample axis."""
    return np.asarray(jax.jit(lambda ks: jax.lax.map(fn, ks))(jax.random.split(jax.random.key(key), n)))


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_local_reparameterization_and_flipout_match_the_exact_moments(case):
    """Both samplers have, per output element, the moments of a fixed input under a kernel
    sample: the CLT moments with a deterministic input (themselves checked against Monte Carlo)."""
    _, _, k_mu, k_std, b_mu, b_std = case_arrays(case, np.random.default_rng(0))
    conv_args = CONV_CASES[case]["conv"]
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2,) + (4,) * (k_mu.ndim - 2) + (4,)))  # a batch of two
    mean, var = clt_conv_moments(x, None, k_mu, k_std**2, b_mu, b_std**2, **conv_args)
    for sampler in (local_reparameterization_conv, flipout_conv):
        y = _draws(lambda k: sampler(k, x, k_mu, k_std, b_mu, b_std, **conv_args), 20_000)
        assert y.shape[1:] == mean.shape
        assert_moments_within_4se(y, mean, var)


def _window_covariance(x, k_std, b_std):
    """Exact covariance of outputs 0 and 1 of a 1-D VALID convolution of one example under a
    kernel sample: sum over the kernel of x[k] x[1 + k] sigma^2, plus the shared bias variance."""
    ks = k_std.shape[0]
    return np.einsum("kc,kc,kco->o", x[:ks], x[1 : ks + 1], k_std**2) + b_std**2


def test_flipout_has_the_joint_law_of_bayes_by_backprop_within_each_example():
    """Flipout gives each example one kernel: neighbouring outputs keep BBB's covariance
    (local reparameterization makes them independent); examples are decorrelated."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(0.5, 1.5, (2, 6, 3)))
    k_mu, k_std = jnp.asarray(rng.normal(size=(3, 3, 2))), jnp.asarray(rng.uniform(0.3, 0.8, (3, 3, 2)))
    b_mu, b_std = jnp.asarray(rng.normal(size=2)), jnp.asarray(rng.uniform(0.3, 0.8, 2))
    n = 20_000
    fo = _draws(lambda k: flipout_conv(k, x, k_mu, k_std, b_mu, b_std, padding="VALID"), n)
    lr = _draws(lambda k: local_reparameterization_conv(k, x, k_mu, k_std, b_mu, b_std, padding="VALID"), n)
    bbb = sample_outputs(jax.random.key(2), n, x, None, k_mu, k_std, b_mu, b_std, dict(padding="VALID"))
    mean, var = clt_conv_moments(x, None, k_mu, k_std**2, b_mu, b_std**2, padding="VALID")
    assert_moments_within_4se(fo, mean, var)
    assert_moments_within_4se(bbb, mean, var)

    def cov_and_se(y, a, b):
        prod = (y[:, a[0], a[1]] - y[:, a[0], a[1]].mean(0)) * (y[:, b[0], b[1]] - y[:, b[0], b[1]].mean(0))
        return prod.mean(0), prod.std(0) / np.sqrt(n)

    exact = _window_covariance(np.asarray(x[0]), np.asarray(k_std), np.asarray(b_std))
    for y in (fo, bbb):  # outputs at positions 0 and 1 of example 0, both features
        c, se = cov_and_se(y, (0, 0), (0, 1))
        assert np.all(np.abs(c - exact) <= 4 * se), (c, exact, se)
    c, se = cov_and_se(lr, (0, 0), (0, 1))
    assert np.all(np.abs(c) <= 4 * se) and np.all(exact > 20 * se)  # LR: independent outputs
    # Across examples BBB's outputs share the kernel (covariance > 0), Flipout's do not.
    c_fo, se_fo = cov_and_se(fo, (0, 0), (1, 0))
    c_bbb, se_bbb = cov_and_se(bbb, (0, 0), (1, 0))
    assert np.all(np.abs(c_fo) <= 4 * se_fo) and np.all(c_bbb > 20 * se_bbb)


def test_flipout_dense_marginal_equals_bayes_by_backprop():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(3, 5)))
    w_mu, w_std = jnp.asarray(rng.normal(size=(5, 2))), jnp.asarray(rng.uniform(0.2, 0.6, (5, 2)))
    b_mu, b_std = jnp.asarray(rng.normal(size=2)), jnp.asarray(rng.uniform(0.2, 0.6, 2))
    mean, var = clt_linear_moments(x, None, w_mu, w_std**2, b_mu, b_std**2)
    fo = _draws(lambda k: flipout(k, x, w_mu, w_std, b_mu, b_std), 20_000)

    def bbb(k):
        kw, kb = jax.random.split(k)
        return x @ sample_weights(kw, w_mu, w_std) + sample_weights(kb, b_mu, b_std)[None, :]

    assert_moments_within_4se(fo, mean, var)
    assert_moments_within_4se(_draws(bbb, 20_000, key=2), mean, var)


def test_flipout_gradient_variance_across_the_batch_matches_theory():
    """Squared loss of a dense layer over a fixed batch of B examples; gradient in W_mu.

    With G = x^T x, the variance of ``dL/dW_mu[i, j] = (2/B) sum_n x_ni (y_nj - t_nj)`` is
    ``(4/B^2) sum_k G_ik^2 sigma_kj^2`` for one shared weight sample (BBB), and
    ``(4/B^2) sum_n x_ni^2 sum_k x_nk^2 sigma_kj^2`` for Flipout: the random output signs of two
    examples are independent with mean zero, so their cross terms vanish, exactly as for
    independent weight samples per example. For B = 64 and 4 features the expected reduction
    is about (B + 3) / 4 (the diagonal of G grows like B^2, the rest like B).
    """
    rng = np.random.default_rng(6)
    b, d_in, d_out = 64, 4, 2
    x, t = jnp.asarray(rng.normal(size=(b, d_in))), jnp.asarray(rng.normal(size=(b, d_out)))
    w_mu, w_std = jnp.asarray(rng.normal(size=(d_in, d_out)) / 2), jnp.asarray(rng.uniform(0.2, 0.5, (d_in, d_out)))

    def grads(forward):
        loss = lambda w, k: jnp.mean(jnp.sum((forward(k, w) - t) ** 2, -1))  # noqa: E731
        return _draws(lambda k: jax.grad(loss)(w_mu, k), 20_000)

    g_bbb = grads(lambda k, w: x @ sample_weights(k, w, w_std))
    g_fo = grads(lambda k, w: flipout(k, x, w, w_std))
    xn, s2 = np.asarray(x), np.asarray(w_std) ** 2
    gram = xn.T @ xn
    var_bbb = 4 / b**2 * np.einsum("ik,kj->ij", gram**2, s2)
    var_fo = 4 / b**2 * np.einsum("ni,nk,kj->ij", xn**2, xn**2, s2)
    for g, exact in ((g_bbb, var_bbb), (g_fo, var_fo)):
        m, v = g.mean(0), g.var(0, ddof=1)
        se_v = np.sqrt(np.maximum(((g - m) ** 4).mean(0) - v**2, 0) / g.shape[0])
        assert np.all(np.abs(v - exact) <= 4 * se_v), (v, exact, se_v)
    assert var_bbb.sum() / var_fo.sum() > 10  # the reduction this batch gets (about 16)


def test_flipout_keys_shapes_errors_and_nan():
    x, w = jnp.ones((4, 2, 3)), jnp.ones((3, 5))
    k = jax.random.key(3)
    y = flipout(k, x, w, 0.1 * w)
    assert y.shape == (4, 2, 5)
    np.testing.assert_array_equal(y, flipout(k, x, w, 0.1 * w))
    assert not np.allclose(y[0, 0], y[0, 1])  # identical rows, different signs
    y1 = flipout_conv(k, jnp.ones((5, 5, 3)), jnp.ones((3, 3, 3, 2)), jnp.full((3, 3, 3, 2), 0.1))
    assert y1.shape == (5, 5, 2)  # a single example without a batch axis, as flax.linen.Conv
    with pytest.raises(ValueError, match="PRNG key"):
        flipout(None, x, w, w)
    with pytest.raises(ValueError, match="`weight_mu` and `weight_std`"):
        flipout(k, x, w, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"`bias_std` must have shape \(2,\)"):
        flipout_conv(k, jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), jnp.ones((3, 3, 3, 2)), jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match=r"last axis of `x`.*`kernel_mu`"):
        local_reparameterization_conv(k, jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 3, 2)), jnp.ones((3, 3, 3, 2)))
    with pytest.raises(TypeError, match="`kernel_std` must be a real floating array"):
        flipout_conv(k, jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 2)), jnp.ones((3, 3, 3, 2), jnp.complex64))
    # A NaN std at one kernel entry: every output of the perturbed map is NaN; the mean path is not.
    y = flipout(k, x, w, (0.1 * w).at[0, 0].set(jnp.nan))
    assert bool(jnp.all(jnp.isnan(y[..., 0]))) and bool(jnp.all(jnp.isfinite(y[..., 1:])))
    y = local_reparameterization_conv(k, jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2)),
                                      jnp.full((3, 3, 3, 2), jnp.nan), padding="VALID")
    assert bool(jnp.all(jnp.isnan(y)))
    g = jax.grad(lambda s: flipout(k, jnp.zeros((2, 3)), w, s).sum())(w)
    assert np.all(np.isfinite(g))
