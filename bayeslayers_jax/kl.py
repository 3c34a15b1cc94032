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

    The second form (Distrax's) never squares a huge std;
    every term is computed to a few ulps, so the absolute error is a few ulps of
    :math:`1 + |\ell| + (\sigma_q/\sigma_p)^2 + z^2` (tested against mpmath). Only the
    *relative* precision of a single element is lost when ``q`` is within ~1e-4 of ``p``,
    where that element is below ~1e-8 and negligible in the summed KL. A Taylor series for that
    corner cost about 15% of a Bayes-by-Backprop train step on CPU (measured), so it is not used.
    Summing this over all weights and biases gives the KL term of Bayes by Backprop
    (Blundell et al., 2015, eq. 2).

    Args:
      mu_q, std_q: mean and std (> 0) of the approximate posterior.
      mu_p, std_p: mean and std (> 0) of the prior; all four broadcast together.

    Returns:
      The elementwise KL divergence (>= 0), of the broadcast shape.
    """
    mu_q, std_q, mu_p, std_p = broadcast_floats(mu_q=mu_q, std_q=std_q, mu_p=mu_p, std_p=std_p)
    log_ratio = jnp.log(std_q) - jnp.log(std_p)
    z = (mu_q - mu_p) / std_p
    # (e^{2l} - 1 - 2l >= 0; the max only removes a rounding-level negative value.)
    return 0.5 * jnp.maximum(jnp.expm1(2.0 * log_ratio) - 2.0 * log_ratio, 0.0) + 0.5 * z * z
