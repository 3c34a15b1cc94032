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
