"""Density and distribution function of the normal distribution."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from bayeslayers_jax._checks import broadcast_floats

__all__ = ["normal_pdf", "normal_cdf"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _standardize(x, mu, sigma):
    x, mu, sigma = broadcast_floats(x=x, mu=mu, sigma=sigma)
    return (x - mu) / sigma, sigma


def normal_pdf(x: jax.Array, mu: jax.Array | float = 0.0, sigma: jax.Array | float = 1.0) -> jax.Array:
    r"""Density of :math:`\mathcal N(\mu, \sigma^2)` at ``x``.

    .. math:: \varphi(x; \mu, \sigma) = \frac{1}{\sigma\sqrt{2\pi}} e^{-(x-\mu)^2 / (2\sigma^2)}

    Evaluated as ``exp(-z**2/2 - log(sigma*sqrt(2*pi)))``, so it underflows to 0 only where
    the density itself is below the dtype's range.

    Args:
      x: points, any floating array.
      mu: mean, broadcastable against ``x``.
      sigma: standard deviation (> 0), broadcastable against ``x``.

    Returns:
      The density, of the broadcast shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from bayeslayers_jax import normal_pdf
      >>> print(round(float(normal_pdf(0.0)), 4))  # 1 / sqrt(2 pi)
      0.3989
      >>> print(round(float(normal_pdf(1.0, mu=1.0, sigma=2.0)), 4))
      0.1995
      >>> normal_pdf(jnp.zeros((2, 3)), sigma=jnp.ones(3)).shape
      (2, 3)
      >>> normal_pdf(jnp.zeros(3)).dtype
      dtype('float32')
    """
    z, sigma = _standardize(x, mu, sigma)
    return jnp.exp(-0.5 * z * z - _LOG_SQRT_2PI - jnp.log(sigma))


def normal_cdf(x: jax.Array, mu: jax.Array | float = 0.0, sigma: jax.Array | float = 1.0) -> jax.Array:
    r"""Distribution function of :math:`\mathcal N(\mu, \sigma^2)` at ``x``.

    .. math:: \Phi(x; \mu, \sigma) = \tfrac12 \operatorname{erfc}\!\big(-(x-\mu) / (\sigma\sqrt 2)\big)

    Uses ``jax.scipy.special.ndtr``, which goes through ``erfc`` in the lower tail, so small
    probabilities keep full relative precision (unlike ``0.5 * (1 + erf(z))``).

    Args:
      x: points, any floating array.
      mu: mean, broadcastable against ``x``.
      sigma: standard deviation (> 0), broadcastable against ``x``.

    Returns:
      The probability ``P[X <= x]``, of the broadcast shape.

    Examples:
      >>> from bayeslayers_jax import normal_cdf
      >>> print(float(normal_cdf(0.0)))
      0.5
      >>> print(round(float(normal_cdf(2.0, mu=1.0, sigma=0.5)), 4))  # z = 2
      0.9772
      >>> print(f"{float(normal_cdf(-10.0)):.4e}")  # the lower tail keeps its digits
      7.6199e-24
    """
    z, _ = _standardize(x, mu, sigma)
    return ndtr(z)
