"""normal_pdf / normal_cdf against mpmath, including the far lower tail."""

import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from bayeslayers_jax import normal_cdf, normal_pdf

mp.mp.dps = 40


def test_pdf_and_cdf_match_mpmath_with_location_and_scale():
    x = np.linspace(-35, 8, 173)
    mu, sigma = 0.75, 1.5
    pdf = np.asarray(normal_pdf(jnp.asarray(x), mu, sigma))
    cdf = np.asarray(normal_cdf(jnp.asarray(x), mu, sigma))
    for xi, p, c in zip(x, pdf, cdf):
        exact_p = mp.npdf(mp.mpf(float(xi)), mu, sigma)
        exact_c = mp.ncdf(mp.mpf(float(xi)), mu, sigma)
        # (x - mu) / sigma is rounded once; the relative condition number of the tail is ~z**2.
        z2 = ((xi - mu) / sigma) ** 2
        assert abs(p - exact_p) <= (8 + 2 * z2) * 2.2e-16 * exact_p
        assert abs(c - exact_c) <= (8 + 2 * z2) * 2.2e-16 * exact_c  # ndtr, not 1 - ndtr


def test_broadcasting_and_shape_errors():
    out = normal_cdf(jnp.zeros((2, 3)), jnp.zeros((3,))[None, :], 1.0)
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out, 0.5)
    with pytest.raises(ValueError, match=r"`x` \(2, 3\).*`mu` \(2,\)"):
        normal_pdf(jnp.zeros((2, 3)), jnp.zeros((2,)))
