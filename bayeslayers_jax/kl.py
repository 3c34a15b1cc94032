"""Closed-form KL divergence between normal distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import broadcast_floats

__all__ = ["kl_normal"]


def kl_normal(mu_q: jax.Array, std_q: jax.Array, mu_p: jax.Array, std_p: jax.Array) -> jax.Array:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2))`.

    .. math::
       \mathrm{KL} = \log\frac{\sigma_p}{\sigma_q}
         + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{2\sigma_p^2} - \frac12
       = \tfrac12\big(e^{2\ell} - 1 - 2\ell\big) + \tfrac12\Big(\frac{\mu_q-\mu_p}{\sigma_p}\Big)^2,
       \quad \ell = \log(\sigma_q / \sigma_p)

    The second form keeps full relative precision when ``q`` is close to ``p``, where the
    first one cancels: near 1, ``l`` comes from ``log1p`` of the exact difference of the stds, and
    :math:`e^{2\ell} - 1 - 2\ell` from its Taylor series for :math:`|2\ell| < 0.1`.
    Summing this over all weights and biases gives the KL term of Bayes by Backprop
    (Blundell et al., 2015, eq. 2).

    Args:
      mu_q, std_q: mean and std (> 0) of the approximate posterior.
      mu_p, std_p: mean and std (> 0) of the prior; all four broadcast together.

    Returns:
      The elementwise KL divergence (>= 0), of the broadcast shape.
    """
    mu_q, std_q, mu_p, std_p = broadcast_floats(mu_q=mu_q, std_q=std_q, mu_p=mu_p, std_p=std_p)
    # log(std_q / std_p): log1p of the exact difference when q ~ p (full relative precision),
    # a difference of logs otherwise (no cancellation there, and no loss near ratio 0).
    rel_diff = (std_q - std_p) / std_p
    close = jnp.abs(rel_diff) < 0.5
    log_ratio = jnp.where(close, jnp.log1p(jnp.where(close, rel_diff, 0.0)), jnp.log(std_q) - jnp.log(std_p))
    z = (mu_q - mu_p) / std_p
    return 0.5 * _expm1_minus_identity(2.0 * log_ratio) + 0.5 * z * z


def _expm1_minus_identity(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` without cancellation: a Taylor series (Horner) for ``|x| < 0.1``."""
    small = jnp.abs(x) < 0.1
    xs = jnp.where(small, x, 0.0)
    series = jnp.ones_like(xs)
    for k in range(14, 2, -1):  # 1 + x/3 (1 + x/4 (... (1 + x/14))): truncation < 1e-17
        series = 1.0 + xs / k * series
    return jnp.where(small, 0.5 * xs * xs * series, jnp.expm1(x) - x)
