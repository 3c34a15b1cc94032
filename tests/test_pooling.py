"""avg_pool_moments and flatten_moments: exact against Monte Carlo and flax.linen.avg_pool."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayeslayers_jax.core import avg_pool_moments, flatten_moments
from conv_montecarlo import assert_moments_within_4se


@pytest.mark.parametrize(
    "pool", [dict(window_shape=(2, 2), strides=(2, 2)), dict(window_shape=(3, 2), strides=(1, 2), padding="SAME",
                                                             count_include_pad=False)]
)
def test_average_pooling_of_independent_inputs_matches_monte_carlo(pool):
    rng = np.random.default_rng(0)
    mean, var = jnp.asarray(rng.normal(size=(2, 4, 4, 3))), jnp.asarray(rng.uniform(0.1, 2.0, (2, 4, 4, 3)))
    n = 20_000
    x = mean[None] + jnp.sqrt(var)[None] * jax.random.normal(jax.random.key(1), (n,) + mean.shape)
    args = {k: v for k, v in pool.items() if k != "window_shape"}
    with jax.numpy_dtype_promotion("standard"):  # flax.linen.avg_pool divides by an integer
        samples = np.asarray(jax.vmap(lambda s: nn.avg_pool(s, pool["window_shape"], **args))(x))
        flax_mean = nn.avg_pool(mean, pool["window_shape"], **args)
    m, v = avg_pool_moments(mean, var, **pool)
    assert_moments_within_4se(samples, m, v)
    # The mean is flax's average pooling of the means, to rounding.
    np.testing.assert_allclose(m, flax_mean, rtol=1e-14)


def test_border_windows_divide_by_their_own_count():
    """SAME padding without counting the pad: a 2x2 corner window of a 3x3 window holds 4 inputs."""
    m, v = avg_pool_moments(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4, 1)), (3, 3), padding="SAME",
                            count_include_pad=False)
    assert float(m[0, 0, 0, 0]) == 1.0 and float(v[0, 0, 0, 0]) == 1 / 4 and float(v[0, 1, 1, 0]) == 1 / 9
    m, v = avg_pool_moments(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4, 1)), (3, 3), padding="SAME")
    assert float(m[0, 0, 0, 0]) == 4 / 9 and float(v[0, 0, 0, 0]) == 4 / 81


def test_gradients_jit_and_float32():
    """The pooled moments are linear in the inputs: the gradient of their sum is window counts / k."""
    mean, var = jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4, 1))
    g_mean, g_var = jax.grad(lambda m, v: sum(jnp.sum(a) for a in avg_pool_moments(m, v, (2, 2))), (0, 1))(mean, var)
    uses = np.array([1, 2, 2, 1])[:, None] * np.array([1, 2, 2, 1])[None, :]  # windows per input (VALID, stride 1)
    np.testing.assert_allclose(g_mean[0, :, :, 0], uses / 4, rtol=1e-15)
    np.testing.assert_allclose(g_var[0, :, :, 0], uses / 16, rtol=1e-15)
    m, v = jax.jit(avg_pool_moments, static_argnums=2)(mean.astype(jnp.float32), var.astype(jnp.float32), (2, 2))
    assert m.dtype == v.dtype == jnp.float32


def test_none_variance_batch_axes_nan_and_errors():
    m, v = avg_pool_moments(jnp.ones((5, 4, 4, 2)), None, (2, 2))
    assert v is None and m.shape == (5, 3, 3, 2)
    m, v = avg_pool_moments(jnp.ones((4, 4, 2)), jnp.ones((4, 4, 2)), (2, 2))  # no batch axis
    assert m.shape == v.shape == (3, 3, 2)
    var = jnp.ones((1, 4, 4, 1)).at[0, 0, 0, 0].set(jnp.nan)
    _, v = avg_pool_moments(jnp.ones((1, 4, 4, 1)), var, (2, 2))
    assert np.isnan(v[0, 0, 0, 0]) and np.isnan(v).sum() == 1
    _, v = jax.jit(avg_pool_moments, static_argnums=2)(jnp.ones((1, 4, 4, 1)), -jnp.ones((1, 4, 4, 1)), (2, 2))
    assert bool(jnp.all(jnp.isnan(v)))
    with pytest.raises(ValueError, match="`var` must be >= 0"):
        avg_pool_moments(jnp.ones((1, 4, 4, 1)), -jnp.ones((1, 4, 4, 1)), (2, 2))
    with pytest.raises(ValueError, match="`mean` and `var`"):
        avg_pool_moments(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4, 2)), (2, 2))
    with pytest.raises(ValueError, match=r"`window_shape` must be .* got \(2, 0\)"):
        avg_pool_moments(jnp.ones((1, 4, 4, 1)), None, (2, 0))
    with pytest.raises(ValueError, match=r"`mean` must have shape \(\*batch, 2 spatial axes"):
        avg_pool_moments(jnp.ones((4, 1)), None, (2, 2))
    with pytest.raises(TypeError, match="`mean` must be a real floating array"):
        avg_pool_moments(jnp.ones((1, 4, 4, 1), jnp.complex64), None, (2, 2))


def test_flatten_moments():
    mean, var = jnp.arange(24.0).reshape(2, 3, 4), jnp.arange(24.0).reshape(2, 3, 4) + 1
    m, v = flatten_moments(mean, var)
    np.testing.assert_array_equal(m, mean.reshape(2, 12))
    np.testing.assert_array_equal(v, var.reshape(2, 12))
    m, v = flatten_moments(mean, None, batch_dims=0)
    assert m.shape == (24,) and v is None
    with pytest.raises(ValueError, match=r"`batch_dims` must be an integer in \[0, 3\].*got 4"):
        flatten_moments(mean, var, batch_dims=4)
    with pytest.raises(ValueError, match="`mean` and `var`"):
        flatten_moments(mean, var[0])
