"""clt_linear_moments equals the exact moments of an affine layer with Gaussian weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax import clt_linear_moments, sample_weights
from bayeslayers_jax.core import clt_conv_moments
from conv_montecarlo import CONV_CASES, assert_moments_within_4se, case_arrays, sample_outputs

N = 40_000


def _monte_carlo(key, mu, var, w_mu, w_std, b_mu, b_std):
    """Samples y = x W + b with x ~ N(mu, diag var), W and b Gaussian; returns (n, features)."""
    kx, kw, kb = jax.random.split(key, 3)
    noise = jax.random.normal(kx, (N,) + mu.shape)
    x = mu[None] + (0 if var is None else jnp.sqrt(var)[None] * noise)
    w = w_mu if w_std is None else jax.vmap(sample_weights, (0, None, None))(jax.random.split(kw, N), w_mu, w_std)
    y = jnp.einsum("ni,nij->nj", x, jnp.broadcast_to(w, (N,) + w_mu.shape))
    if b_mu is not None:
        b = b_mu if b_std is None else jax.vmap(sample_weights, (0, None, None))(jax.random.split(kb, N), b_mu, b_std)
        y = y + (b if b.ndim == 2 else b[None])
    return np.asarray(y)


@pytest.mark.parametrize("input_var", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("weight_var", [True, False])
def test_matches_monte_carlo_over_weights_within_4_standard_errors(input_var, bias, weight_var):
    rng = np.random.default_rng(0)
    mu = jnp.asarray(rng.normal(size=4))
    var = jnp.asarray(rng.uniform(0.1, 1.0, 4)) if input_var else None
    w_mu = jnp.asarray(rng.normal(size=(4, 3)))
    w_std = jnp.asarray(rng.uniform(0.2, 0.8, (4, 3))) if weight_var else None
    b_mu = jnp.asarray(rng.normal(size=3)) if bias else None
    b_std = jnp.asarray(rng.uniform(0.2, 0.8, 3)) if bias else None
    mean, out_var = clt_linear_moments(
        mu[None], None if var is None else var[None], w_mu, None if w_std is None else w_std**2, b_mu,
        None if b_std is None else b_std**2,
    )
    y = _monte_carlo(jax.random.key(1), mu, var, w_mu, w_std, b_mu, b_std)
    mean, out_var = np.asarray(mean)[0], np.asarray(out_var)[0]
    m, v = y.mean(0), y.var(0, ddof=1)
    fp = 1e-12 * (1 + np.abs(mean))  # the all-deterministic case differs by rounding only
    assert np.all(np.abs(m - mean) <= 4 * np.sqrt(out_var / N) + fp)
    # The output is not Gaussian (products of Gaussians): SE of the variance from the 4th moment.
    se_v = np.sqrt(np.maximum(((y - m) ** 4).mean(0) - v**2, 0) / N)
    assert np.all(np.abs(v - out_var) <= 4 * se_v + fp**2), (v, out_var, se_v)


def test_deterministic_input_and_weights_give_zero_variance_and_batch_shapes():
    mu = jnp.ones((2, 5, 4))
    mean, var = clt_linear_moments(mu, None, jnp.ones((4, 3)), None, jnp.zeros(3))
    assert mean.shape == var.shape == (2, 5, 3)
    np.testing.assert_array_equal(mean, 4.0)
    np.testing.assert_array_equal(var, 0.0)
    f = jax.jit(jax.vmap(lambda m: clt_linear_moments(m, m**2, jnp.ones((4, 3)), jnp.ones((4, 3)))))
    assert f(mu)[1].shape == (2, 5, 3)


def test_shape_errors_name_the_arguments():
    with pytest.raises(ValueError, match="`mu` and `var`"):
        clt_linear_moments(jnp.ones((2, 4)), jnp.ones((2, 3)), jnp.ones((4, 3)), None)
    with pytest.raises(ValueError, match=r"`mu` \(shape \(2, 5\)\).*`weight_mu`"):
        clt_linear_moments(jnp.ones((2, 5)), None, jnp.ones((4, 3)), None)
    with pytest.raises(ValueError, match="`weight_mu` and `weight_var`"):
        clt_linear_moments(jnp.ones((2, 4)), None, jnp.ones((4, 3)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="`bias_var` was given without `bias_mu`"):
        clt_linear_moments(jnp.ones((2, 4)), None, jnp.ones((4, 3)), None, None, jnp.ones(3))


def test_negative_variances_raise_when_concrete_and_are_nan_under_jit():
    """Issue 10: var = -1 returned a variance of -3."""
    mu, w = jnp.ones((2, 3)), jnp.ones((3, 2))
    var = jnp.ones((2, 3)).at[1, 0].set(-1.0)
    with pytest.raises(ValueError, match=r"`var` must be >= 0.*min -1\.0"):
        clt_linear_moments(mu, var, w, None)
    with pytest.raises(ValueError, match="`weight_var` must be >= 0"):
        clt_linear_moments(mu, None, w, -w)
    with pytest.raises(ValueError, match="`bias_var` must be >= 0"):
        clt_linear_moments(mu, None, w, w, jnp.zeros(2), jnp.array([1.0, -1.0]))
    _, out_var = jax.jit(clt_linear_moments)(mu, var, w, w)
    np.testing.assert_array_equal(out_var[0], 3.0 * (1.0 + 1.0) + 3.0)  # (var + mu^2) W_var + var W_mu^2
    assert bool(jnp.all(jnp.isnan(out_var[1])))
    # NaN variances are not an error: they propagate.
    _, out_var = clt_linear_moments(mu, var.at[1, 0].set(jnp.nan), w, None)
    assert bool(jnp.all(jnp.isnan(out_var[1]))) and bool(jnp.all(out_var[0] == 3.0))


def test_supported_range_of_the_mean_in_float32():
    """|mu| < sqrt(finfo.max) (1.8e19 in float32): accurate; beyond it the variance overflows to inf."""
    w_var = jnp.full((2, 1), 1e-20, jnp.float32)
    w = jnp.ones((2, 1), jnp.float32)
    for m in (1e19, 1.8e19):
        mean, var = clt_linear_moments(jnp.full((1, 2), m, jnp.float32), None, w, w_var)
        exact = 2 * float(np.float32(m)) ** 2 * float(np.float32(1e-20))
        assert abs(float(var[0, 0]) - exact) <= 4 * float(np.finfo(np.float32).eps) * exact
        assert float(mean[0, 0]) == 2 * float(np.float32(m))
    _, var = clt_linear_moments(jnp.full((1, 2), 1e20, jnp.float32), None, w, w_var)
    assert float(var[0, 0]) == np.inf  # documented overflow (exact 2e20), never NaN


def test_complex_inputs_raise():
    with pytest.raises(TypeError, match="`var` must be a real floating array"):
        clt_linear_moments(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.complex128), jnp.ones((3, 2)), None)


@pytest.mark.parametrize("input_var", [True, False])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_monte_carlo_over_input_and_kernel_within_4_standard_errors(case, input_var):
    """Strides, SAME/VALID/explicit/CIRCULAR/CAUSAL padding, both dilations, groups, 1-D and 2-D."""
    mu, var, k_mu, k_std, b_mu, b_std = case_arrays(case, np.random.default_rng(0), input_var=input_var)
    conv_args = CONV_CASES[case]["conv"]
    mean, out_var = clt_conv_moments(mu, var, k_mu, k_std**2, b_mu, b_std**2, **conv_args)
    y = sample_outputs(jax.random.key(1), 20_000, mu, var, k_mu, k_std, b_mu, b_std, conv_args)
    assert mean.shape == out_var.shape == y.shape[1:]
    assert_moments_within_4se(y, mean, out_var)


def test_conv_with_a_1x1_kernel_is_the_dense_function():
    """Dyadic values (exact in float64): equal bit for bit; random values: within rounding."""
    rng = np.random.default_rng(2)
    dyadic = lambda shape, lo=-8: jnp.asarray(rng.integers(lo, 9, shape) / 8.0)  # noqa: E731
    args = (dyadic((2, 3, 5, 6)), dyadic((2, 3, 5, 6), 0), dyadic((6, 4)), dyadic((6, 4), 0), dyadic(4), dyadic(4, 0))
    conv = clt_conv_moments(args[0], args[1], args[2][None, None], args[3][None, None], *args[4:])
    for c, d in zip(conv, clt_linear_moments(*args)):
        np.testing.assert_array_equal(c, d)
    # Random values: the two contractions may sum in different orders; the difference is
    # within the rounding bound of a length-6 dot product, 2 * 6 * eps * (|a| @ |b|).
    mu, var = jnp.asarray(rng.normal(size=(2, 3, 5, 6))), jnp.asarray(rng.uniform(size=(2, 3, 5, 6)))
    w, w_var = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.uniform(size=(6, 4)))
    conv = clt_conv_moments(mu, var, w[None, None], w_var[None, None])
    dense = clt_linear_moments(mu, var, w, w_var)
    scale = clt_linear_moments(jnp.abs(mu), var, jnp.abs(w), w_var)
    eps = np.finfo(np.float64).eps
    for c, d, s in zip(conv, dense, scale):
        assert np.all(np.abs(c - d) <= 12 * eps * (np.abs(s) + 1e-300))


def test_conv_batch_axes_dtypes_jit_vmap_grad():
    rng = np.random.default_rng(3)
    k_mu, k_var = jnp.asarray(rng.normal(size=(3, 3, 2, 5))), jnp.asarray(rng.uniform(size=(3, 3, 2, 5)))
    mu = jnp.asarray(rng.normal(size=(4, 3, 6, 6, 2)))
    mean, var = clt_conv_moments(mu, mu**2, k_mu, k_var, strides=2)
    assert mean.shape == var.shape == (4, 3, 3, 3, 5)  # several batch axes, as flax.linen.Conv
    single = clt_conv_moments(mu[0, 0], mu[0, 0] ** 2, k_mu, k_var, strides=2)  # no batch axis
    np.testing.assert_allclose(single[1], var[0, 0], rtol=1e-13)
    f = jax.jit(jax.vmap(lambda m: clt_conv_moments(m, m**2, k_mu, k_var, strides=2)))
    np.testing.assert_allclose(f(mu)[1], var, rtol=1e-13)
    g = jax.grad(lambda kv: clt_conv_moments(mu, None, k_mu, kv, padding="VALID")[1].sum())(k_var)
    # d/dK_v of sum(mu**2 * K_v): the sum of mu**2 over every window that uses that entry.
    assert g.shape == k_var.shape and np.all(np.isfinite(g)) and np.all(g > 0)
    f32 = clt_conv_moments(mu.astype(jnp.float32), None, k_mu.astype(jnp.float32), None)
    assert f32[0].dtype == f32[1].dtype == jnp.float32
    ints = clt_conv_moments(jnp.ones((1, 4, 4, 2), jnp.int32), None, k_mu, None)
    np.testing.assert_array_equal(ints[0], clt_conv_moments(jnp.ones((1, 4, 4, 2)), None, k_mu, None)[0])


def test_conv_errors_name_the_arguments_and_nan_propagates():
    k = jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"`kernel_mu` must be a convolution kernel.*\(2, 4\)"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), None, jnp.ones((2, 4)), None)
    with pytest.raises(ValueError, match=r"last axis of `mu` \(shape \(1, 5, 5, 3\)\).*`kernel_mu`"):
        clt_conv_moments(jnp.ones((1, 5, 5, 3)), None, k, None)
    with pytest.raises(ValueError, match=r"`mu` must have shape \(\*batch, 2 spatial axes"):
        clt_conv_moments(jnp.ones((5, 2)), None, k, None)
    with pytest.raises(ValueError, match="divisible by feature_group_count = 2"):
        clt_conv_moments(jnp.ones((1, 5, 5, 4)), None, jnp.ones((3, 3, 2, 3)), None, feature_group_count=2)
    with pytest.raises(ValueError, match="`feature_group_count` must be a positive integer, got 0"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), None, k, None, feature_group_count=0)
    with pytest.raises(ValueError, match="`kernel_mu` and `kernel_var`"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), None, k, jnp.ones((3, 3, 2, 3)))
    with pytest.raises(ValueError, match=r"`bias_var` must have shape \(4,\)"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), None, k, k, jnp.ones(4), jnp.ones(3))
    with pytest.raises(ValueError, match="`kernel_var` must be >= 0"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), None, k, -k)
    with pytest.raises(TypeError, match="`var` must be a real floating array"):
        clt_conv_moments(jnp.ones((1, 5, 5, 2)), jnp.ones((1, 5, 5, 2), jnp.complex64), k, None)
    # A NaN input variance at one pixel: NaN exactly in the outputs whose window holds it.
    var = jnp.zeros((1, 5, 5, 2)).at[0, 0, 0, 1].set(jnp.nan)
    mean, out_var = clt_conv_moments(jnp.ones((1, 5, 5, 2)), var, k, k, padding="VALID")
    nan = np.isnan(np.asarray(out_var))
    assert nan[0, 0, 0].all() and nan.sum() == 4 and np.all(np.isfinite(mean))
    _, out_var = jax.jit(clt_conv_moments)(jnp.ones((1, 5, 5, 2)), jnp.ones((1, 5, 5, 2)), k, -k)
    assert bool(jnp.all(jnp.isnan(out_var)))  # negative variance under jit: NaN, never < 0
