"""softplus / inv_softplus / rho_to_std: exact inverses, no overflow."""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from bayeslayers_jax import inv_softplus, rho_to_std, softplus

mp.mp.dps = 40


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_matches_mpmath_and_never_overflows(dtype):
    x = np.concatenate([np.linspace(-100, 100, 401), [-1e4, 1e4, float(np.finfo(dtype).max)]]).astype(dtype)
    got = np.asarray(jax.jit(softplus)(jnp.asarray(x)), np.float64)
    assert np.all(np.isfinite(got))
    eps = float(np.finfo(dtype).eps)
    for xi, gi in zip(x, got):
        exact = mp.log1p(mp.exp(mp.mpf(float(xi))))
        if exact > mp.mpf(float(np.finfo(dtype).tiny)):
            assert abs(gi - exact) <= 4 * eps * exact, (xi, gi, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inv_softplus_inverts_softplus_over_the_std_range(dtype):
    # A std parameter spans from ~1e-30 (collapsed) to ~1e4; both directions to float precision.
    std = jnp.asarray(np.geomspace(1e-30, 1e4, 500), dtype)
    eps = float(np.finfo(dtype).eps)
    back = softplus(inv_softplus(std))
    # softplus(x) ~ exp(x) for x << 0 has relative condition number |x|: the rounding of
    # inv_softplus's output (|x| <= 70 here) is amplified by that much, and no more.
    cond = 8 + np.abs(np.asarray(inv_softplus(std)))
    np.testing.assert_array_less(np.abs(np.asarray(back) - np.asarray(std)), cond * eps * np.asarray(std))
    rho = jnp.asarray(np.linspace(-60, 60, 241), dtype)
    np.testing.assert_allclose(inv_softplus(softplus(rho)), rho, rtol=8 * eps, atol=8 * eps)
    assert np.all(np.isfinite(jax.grad(lambda y: inv_softplus(y).sum())(std)))


def test_rho_to_std_both_parameterizations_and_bad_flag():
    rho = jnp.array([-4.6, 0.0, 3.0])
    np.testing.assert_allclose(rho_to_std(rho), np.exp(np.array([-4.6, 0.0, 3.0])), rtol=1e-15)
    np.testing.assert_allclose(rho_to_std(rho, use_softplus=True), np.log1p(np.exp(np.array([-4.6, 0.0, 3.0]))), rtol=1e-15)
    with pytest.raises(TypeError, match="use_softplus"):
        rho_to_std(rho, use_softplus="yes")
    with pytest.raises(TypeError, match="`rho`"):
        rho_to_std(jnp.array([1 + 2j]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rho_to_log_std_matches_mpmath_and_never_underflows(dtype):
    from bayeslayers_jax import rho_to_log_std

    rho = np.array([-1000.0, -200.0, -90.0, -40.0, -16.0, -15.0, -5.0, -1.0, 0.0, 0.5, 3.0, 30.0], dtype)
    got = np.asarray(rho_to_log_std(jnp.asarray(rho), use_softplus=True), np.float64)
    eps = float(np.finfo(dtype).eps)
    for r, g in zip(rho, got):
        exact = mp.log(mp.log1p(mp.exp(mp.mpf(float(r)))))
        assert abs(g - exact) <= 4 * eps * abs(exact), (r, g, exact)
    np.testing.assert_array_equal(rho_to_log_std(jnp.asarray(rho)), rho)  # exp: log std = rho
    grads = jax.vmap(jax.grad(lambda r: rho_to_log_std(r, use_softplus=True)))(jnp.asarray(rho))
    assert bool(jnp.all(jnp.isfinite(grads)))
    assert bool(jnp.isnan(rho_to_log_std(jnp.asarray(np.nan, dtype), use_softplus=True)))
