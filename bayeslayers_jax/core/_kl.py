r"""Closed-form KL divergence between normal distributions, from a std or from its log.

Accuracy (tested against mpmath): every term is computed to a few ulps, so the absolute error
is a few ulps of :math:`1 + |\ell| + (\sigma_q/\sigma_p)^2 + z^2`. Relative to the KL this is
about 1e-13 (float64) while :math:`\sigma_q/\sigma_p` stays within about
:math:`[10^{-4}, 10^{2}]` (2.7e-14 measured) and degrades slowly outside it, as :math:`\ell`
itself is only known to relative precision (1.3e-13 measured for stds near
:math:`10^{\pm150}` in float64); in float32, once :math:`\sigma_q` or :math:`\sigma_p` is
beyond about 1e13, :math:`\sigma_q^2` and the squares overflow or round: use
:func:`kl_normal_from_log_std`, or float64. Near :math:`q = p` a single element loses its
*relative* precision (it is below about 1e-8 there and negligible in a summed KL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayeslayers_jax._checks import broadcast_floats, concrete_value

__all__ = ["kl_normal", "kl_normal_from_log_std"]


def _check_std(name, std):
    """Raises ``ValueError`` naming ``name`` for a concrete negative std (NaN passes through)."""
    concrete = concrete_value(std)
    if concrete is not None and np.any(concrete < 0):
        negative = concrete < 0
        raise ValueError(
            f"{name} must be >= 0 (a standard deviation), got {int(negative.sum())} negative "
            f"entries (min {float(concrete[negative].min())}) in shape {concrete.shape}"
        )


def _kl(mu_q, log_std_q, mu_p, std_p):
    """The KL from ``log(std_q)``; ``std_p = 0`` (a point-mass prior) gives ``+inf``."""
    log_ratio = log_std_q - jnp.log(std_p)
    z = (mu_q - mu_p) / std_p
    # (e^{2l} - 1 - 2l >= 0; the max only removes a rounding-level negative value.)
    kl = 0.5 * jnp.maximum(jnp.expm1(2.0 * log_ratio) - 2.0 * log_ratio, 0.0) + 0.5 * z * z
    # std_p = 0: log(std_p) = -inf makes e^{2l} - 2l = inf - inf; the limit is +inf (NaNs stay).
    point_prior = (std_p == 0) & ~jnp.isnan(mu_q + mu_p + log_std_q)
    return jnp.where(point_prior, jnp.inf, kl)


def kl_normal(mu_q: jax.Array, std_q: jax.Array, mu_p: jax.Array, std_p: jax.Array) -> jax.Array:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2))`.

    .. math::
       \mathrm{KL} = \log\frac{\sigma_p}{\sigma_q}
         + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{2\sigma_p^2} - \frac12
       = \tfrac12\big(e^{2\ell} - 1 - 2\ell\big) + \tfrac12\Big(\frac{\mu_q-\mu_p}{\sigma_p}\Big)^2,
       \quad \ell = \log(\sigma_q / \sigma_p)

    The second form (Distrax's) never squares a huge std. Accuracy: see the module
    docstring (a few ulps of the terms; about 1e-13 relative in float64 for std ratios in
    ``[1e-4, 1e2]``). A Taylor series for the corner ``q ~ p`` cost about 15% of a Bayes by
    Backprop train step on CPU (measured), so it is not used. Summing this over all weights
    and biases gives the KL term of Bayes by Backprop (Blundell et al., 2015, eq. 2).

    Limits: ``std_q = 0`` or ``std_p = 0`` (with the other > 0) give ``+inf``, the exact
    value; a NaN anywhere gives NaN. When the std is ``exp(rho)`` or ``softplus(rho)``, use
    :func:`kl_normal_from_log_std`, which stays finite when the std underflows.

    Args:
      mu_q, std_q: mean and std (>= 0) of the approximate posterior.
      mu_p, std_p: mean and std (>= 0) of the prior; all four broadcast together. A concrete
        negative ``std_q`` or ``std_p`` raises ``ValueError``; a traced one gives NaN.

    Returns:
      The elementwise KL divergence (>= 0), of the broadcast shape.

    References:
      Blundell, Cornebise, Kavukcuoglu, Wierstra (2015). Weight Uncertainty in Neural Networks.

    Examples:
      >>> print(round(float(kl_normal(0.0, 0.5, 0.0, 1.0)), 4))  # log 2 + 1/8 - 1/2
      0.3181
      >>> print(float(kl_normal(0.0, 1.0, 0.0, 0.0)))
      inf
    """
    mu_q, std_q, mu_p, std_p = broadcast_floats(mu_q=mu_q, std_q=std_q, mu_p=mu_p, std_p=std_p)
    _check_std("std_q", std_q)
    _check_std("std_p", std_p)
    return _kl(mu_q, jnp.log(std_q), mu_p, std_p)


def kl_normal_from_log_std(
    mu_q: jax.Array, log_std_q: jax.Array, mu_p: jax.Array, std_p: jax.Array
) -> jax.Array:
    r""":func:`kl_normal` with the posterior std given by its logarithm.

    .. math::
       \mathrm{KL} = \tfrac12\big(e^{2\ell} - 1 - 2\ell\big)
         + \tfrac12\Big(\frac{\mu_q-\mu_p}{\sigma_p}\Big)^2,
       \quad \ell = \log\sigma_q - \log\sigma_p

    A layer with ``std = exp(rho)`` passes ``log_std_q = rho`` (and with ``softplus``,
    :func:`~bayeslayers_jax.rho_to_log_std`): no ``log(exp(rho))`` round trip,
    so the KL and its gradient ``d KL / d rho = e^{2\ell} - 1`` stay exact and finite where
    ``exp(rho)`` underflows (``rho < -87.3`` in float32, where :func:`kl_normal` of the
    underflowed std is ``+inf``), and a KL term weighted by 0 is 0.

    Args:
      mu_q: posterior means.
      log_std_q: log of the posterior stds (any real number).
      mu_p, std_p: prior mean and std (>= 0; ``std_p = 0`` gives ``+inf``); all four
        broadcast together. A concrete negative ``std_p`` raises ``ValueError``; a traced
        one gives NaN.

    Returns:
      The elementwise KL divergence (>= 0), of the broadcast shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> print(float(kl_normal_from_log_std(0.0, jnp.float32(-90.0), 0.0, 1.0)))  # (e^-180 - 1 + 180) / 2
      89.5
    """
    mu_q, log_std_q, mu_p, std_p = broadcast_floats(mu_q=mu_q, log_std_q=log_std_q, mu_p=mu_p, std_p=std_p)
    _check_std("std_p", std_p)
    return _kl(mu_q, log_std_q, mu_p, std_p)
