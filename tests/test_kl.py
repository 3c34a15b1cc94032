"""kl_normal: closed form, Monte Carlo, and precision near q == p."""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from bayeslayers_jax import kl_normal

mp.mp.dps = 40


def _exact(mq, sq, mp_, sp):
    mq, sq, mp_, sp = (mp.mpf(float(v)) for v in (mq, sq, mp_, sp))
    return mp.log(sp / sq) + (sq**2 + (mq - mp_) ** 2) / (2 * sp**2) - mp.mpf(1) / 2


def test_matches_the_closed_form_at_high_precision():
    eps = float(np.finfo(np.float64).eps)
    cases = [(0.3, 0.01, 0.0, 1.0), (-2.0, 3.0, 1.0, 0.5), (5.0, 1e-6, -5.0, 1e3), (0.0, 1e-150, 0.0, 1e150)]
    for case in cases:
        got = float(kl_normal(*(jnp.float64(v) for v in case)))
        exact = _exact(*case)
        assert abs(got - exact) <= 1e-13 * abs(exact), (case, got, exact)
    # Near q == p the error is absolute: a few ulps of 1 + |log r| + r**2 + z**2 (the terms).
    for case in [(1e-9, 1.0 + 1e-9, 0.0, 1.0), (0.0, 2.0 * (1 + 1e-6), 0.0, 2.0), (1e-3, 0.5, 0.0, 0.5)]:
        got = float(kl_normal(*(jnp.float64(v) for v in case)))
        exact = _exact(*case)
        r, z = case[1] / case[3], (case[0] - case[2]) / case[3]
        assert abs(got - exact) <= 8 * eps * (1 + abs(np.log(r)) + r * r + z * z), (case, got, exact)
        assert got >= 0


def test_matches_a_monte_carlo_estimate_within_four_standard_errors():
    mq, sq, mp_, sp = 0.4, 0.7, -0.2, 1.3
    n = 200_000
    z = mq + sq * jax.random.normal(jax.random.key(0), (n,))
    log_q = -0.5 * ((z - mq) / sq) ** 2 - jnp.log(sq)
    log_p = -0.5 * ((z - mp_) / sp) ** 2 - jnp.log(sp)
    samples = log_q - log_p
    se = float(jnp.std(samples)) / np.sqrt(n)
    assert abs(float(jnp.mean(samples)) - float(kl_normal(mq, sq, mp_, sp))) <= 4 * se


def test_nonnegative_zero_at_equality_and_broadcasting():
    mu = jnp.linspace(-3, 3, 7)
    np.testing.assert_array_equal(kl_normal(mu, 2.0, mu, 2.0), 0.0)
    kl = kl_normal(jnp.zeros((4, 3)), jnp.ones((4, 3)), 0.5, jnp.full((1, 3), 2.0))
    assert kl.shape == (4, 3) and bool(jnp.all(kl > 0))
    with pytest.raises(ValueError, match="`mu_q`.*`std_q`"):
        kl_normal(jnp.zeros(3), jnp.ones(2), 0.0, 1.0)


def test_point_mass_prior_gives_inf_not_nan():
    """Issue 10: kl_normal(std_p=0) was NaN; the exact value is +inf (NaN inputs stay NaN)."""
    assert float(kl_normal(0.0, 1.0, 0.0, 0.0)) == np.inf
    assert float(kl_normal(1.0, 0.5, 0.0, 0.0)) == np.inf
    assert float(kl_normal(0.0, 0.0, 0.0, 1.0)) == np.inf  # a point-mass posterior
    assert np.isnan(float(kl_normal(np.nan, 1.0, 0.0, 0.0)))
    assert np.isnan(float(kl_normal(0.0, np.nan, 0.0, 1.0)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_kl_from_log_std_is_exact_where_the_std_underflows(dtype):
    from bayeslayers_jax import kl_normal_from_log_std

    eps = float(jnp.finfo(dtype).eps)
    for log_std, mq, sp in [(-90.0, 0.0, 1.0), (-800.0, 0.3, 2.0), (-4.6, -1.0, 0.5), (3.0, 2.0, 1.5)]:
        got = float(kl_normal_from_log_std(jnp.asarray(mq, dtype), jnp.asarray(log_std, dtype), jnp.asarray(0.0, dtype), jnp.asarray(sp, dtype)))
        exact = mp.log(mp.mpf(sp)) - mp.mpf(log_std) + (mp.exp(2 * mp.mpf(log_std)) + mp.mpf(mq) ** 2) / (2 * mp.mpf(sp) ** 2) - mp.mpf(1) / 2
        # A few ulps of the terms |log sp| + |log_std| + e^{2l} + z^2.
        scale = abs(np.log(sp)) + abs(log_std) + np.exp(2 * (log_std - np.log(sp))) + (mq / sp) ** 2 + 1
        assert abs(got - exact) <= 8 * eps * scale, (log_std, got, exact)
    # The value: kl_normal(0, exp(-90), 0, 1) is exactly 89.5 (in float32 too).
    assert float(kl_normal_from_log_std(0.0, jnp.asarray(-90.0, dtype), 0.0, 1.0)) == 89.5
    g = jax.grad(lambda r: kl_normal_from_log_std(0.0, r, 0.0, 1.0))(jnp.asarray(-90.0, dtype))
    assert float(g) == -1.0  # e^{2 rho} - 1
    # Agrees with kl_normal wherever the std is representable.
    log_std = jnp.linspace(-20.0, 5.0, 11, dtype=dtype)
    np.testing.assert_allclose(
        kl_normal_from_log_std(0.4, log_std, -0.1, 1.3), kl_normal(0.4, jnp.exp(log_std), -0.1, 1.3), rtol=16 * eps
    )
