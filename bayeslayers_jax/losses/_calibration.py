r"""Recalibrating the observation noise on held-out data (the fix of the double-counting trap).

A noise level learned with the weights (:class:`~bayeslayers_jax.LearnedNoise`) absorbs the
training set's epistemic variance; the predictive then counts it twice. Refitting the noise
on a validation split against the full predictive (:func:`fit_noise_var`) removes that bias.

References:
  Kuleshov, Fenner & Ermon 2018, "Accurate Uncertainties for Deep Learning Using
  Calibrated Regression".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayeslayers_jax._checks import as_float_array, check_same_shape, check_target_shape

__all__ = ["fit_noise_var"]


def _fit_column(y, mean, var, num_iters):
    """Noise variance ``t >= 0`` minimizing sum 0.5 [log(v + t) + r^2 / (v + t)] for one column."""
    r2 = jnp.square(y - mean)

    def slope(t):  # d/dt of the NLL (times 2): sum (v + t - r^2) / (v + t)^2
        total = var + t
        return jnp.sum((total - r2) / jnp.square(total))

    hi = jnp.max(r2)  # every term's slope is >= 0 at t >= max r^2

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = slope(mid) > 0
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    lo, hi = jax.lax.fori_loop(0, num_iters, body, (jnp.zeros_like(hi), hi))
    t = 0.5 * (lo + hi)
    t = jnp.where(slope(jnp.zeros_like(hi)) >= 0, 0, t)  # the epistemic variance covers it already
    bad = jnp.isnan(jnp.sum(r2) + jnp.sum(var))
    return jnp.where(bad, jnp.nan, t)


def fit_noise_var(y, mean, epistemic_var, *, num_iters=100):
    r"""Noise variance that maximizes the likelihood of held-out data under the full predictive.

    For validation targets :math:`y_i`, predictive means :math:`\mu_i` and epistemic variances
    :math:`v_i` (e.g. ``predictive(..., noise_var=0.0)``'s ``mean`` and ``epistemic_var``),

    .. math::
        \hat s^2 = \arg\max_{s^2\ge 0}\sum_i \log\mathcal N\big(y_i \mid \mu_i, v_i + s^2\big),

    one value per output (the last axis; a 1-D ``y`` gives one scalar). The slope of the
    negative log-likelihood in :math:`t = s^2` is
    :math:`\tfrac12\sum_i (v_i + t - r_i^2)/(v_i + t)^2` with :math:`r_i = y_i - \mu_i`: it is
    ``>= 0`` for :math:`t \ge \max_i r_i^2`, so bisection on its sign over
    :math:`[0, \max_i r_i^2]` finds a minimum (the minimum when the ``v_i`` are equal, where
    :math:`\hat s^2 = \max(0, \overline{r^2} - v)`); ``num_iters = 100`` halvings reach the
    float precision. :math:`\hat s^2 = 0` when the epistemic variance alone already
    over-covers the residuals. This is the correct way to report intervals of a model trained
    with a learned noise (see the module docstring): use the result as ``noise_var`` of
    :func:`~bayeslayers_jax.predictive`.

    Args:
      y: validation targets, shape ``(n,)`` or ``(n, ..., D)``.
      mean: predictive means, ``y``'s shape.
      epistemic_var: epistemic variances ``>= 0``, ``y``'s shape.
      num_iters: bisection steps (a positive int).

    Returns:
      A scalar for 1-D ``y``, else shape ``(D,)``. NaN for a column holding a NaN.

    References:
      Kuleshov, Fenner & Ermon 2018, "Accurate Uncertainties for Deep Learning Using
      Calibrated Regression"; Laves et al. 2020, "Well-calibrated Regression Uncertainty in
      Medical Imaging with Deep Learning" (recalibrating the variance on validation data).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, mean = jnp.array([1.0, -1.0, 2.0, -2.0]), jnp.zeros(4)
      >>> print(round(float(fit_noise_var(y, mean, jnp.full(4, 0.5))), 4))  # mean r^2 - v = 2.5 - 0.5
      2.0
      >>> print(float(fit_noise_var(y, mean, jnp.full(4, 9.0))))  # already over-covered
      0.0
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive int, got {num_iters!r}")
    check_target_shape("y", y, "mean", mean)
    check_same_shape(mean=mean, epistemic_var=epistemic_var)
    y, mean, epistemic_var = (as_float_array(n, a) for n, a in
                              (("y", y), ("mean", mean), ("epistemic_var", epistemic_var)))
    dtype = jnp.result_type(y, mean, epistemic_var)
    y, mean, epistemic_var = (a.astype(dtype) for a in (y, mean, epistemic_var))
    if y.ndim == 0 or y.size == 0:
        raise ValueError(f"y must hold at least one example, got shape {y.shape}")
    if y.ndim == 1:
        return _fit_column(y, mean, epistemic_var, num_iters)
    cols = lambda a: jnp.reshape(a, (-1, a.shape[-1])).T  # noqa: E731
    return jax.vmap(_fit_column, in_axes=(0, 0, 0, None))(cols(y), cols(mean), cols(epistemic_var), num_iters)
