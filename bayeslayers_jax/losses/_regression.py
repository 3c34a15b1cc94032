r"""Regression likelihoods: Gaussian (homoscedastic, expected under CLT outputs) and heteroscedastic.

Every function returns one value per example, shape ``(B,)``: the first axis is the batch
axis and every other axis is summed (see :mod:`bayeslayers_jax.losses`). Targets have exactly
the shape the likelihood expects; nothing is broadcast.
"""

from __future__ import annotations

import jax.numpy as jnp

from bayeslayers_jax._checks import as_float_array, check_concrete_real, check_same_shape, check_target_shape
from bayeslayers_jax.losses._common import float_array, per_example_sum

__all__ = [
    "gaussian_nll",
    "expected_gaussian_log_likelihood",
    "expected_gaussian_nll",
    "split_heteroscedastic",
    "heteroscedastic_gaussian_nll",
    "expected_heteroscedastic_gaussian_nll",
    "check_noise_var",
]


def check_noise_var(noise_var):
    if noise_var is None:
        raise ValueError("noise_var is required for a Gaussian likelihood, got None")
    check_concrete_real("noise_var", noise_var, "positive")


def _noise_var(noise_var, shape, dtype):
    check_noise_var(noise_var)
    noise_var = jnp.asarray(noise_var, dtype)
    try:
        return jnp.broadcast_to(noise_var, shape)
    except ValueError:
        raise ValueError(
            f"noise_var of shape {noise_var.shape} does not broadcast to the targets' shape {shape}"
        ) from None


def gaussian_nll(y, pred, noise_var):
    r"""Per-example Gaussian negative log-likelihood of a point (sampled or MAP) prediction.

    .. math::
        -\log\mathcal{N}(y \mid f, s^2) = \tfrac12\log(2\pi s^2) + \frac{(y - f)^2}{2 s^2},

    summed over every axis but the first.

    Args:
      y: targets, shape ``(B, ...)``.
      pred: network output ``f`` (one weight sample, or the MAP output), ``y``'s shape.
      noise_var: observation-noise variance ``s^2 > 0``, a scalar or broadcastable to ``y``.

    Returns:
      Array of shape ``(B,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> y, f = jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [0.0]])
      >>> print([round(float(e), 4) for e in gaussian_nll(y, f, noise_var=1.0)])  # 0.5 log(2 pi) + (y - f)^2 / 2
      [1.4189, 0.9189]
    """
    check_target_shape("y", y, "pred", pred)
    pred = float_array(pred)
    y = float_array(y, pred.dtype)
    s2 = _noise_var(noise_var, y.shape, pred.dtype)
    nll = 0.5 * jnp.log(2 * jnp.pi * s2) + 0.5 * jnp.square(y - pred) / s2
    return per_example_sum(nll)


def expected_gaussian_log_likelihood(y, mean, var, noise_var):
    r"""Closed-form expected Gaussian log-likelihood under a Gaussian output, per example.

    For a network output :math:`f \sim \mathcal{N}(m, v)` (the CLT moments) and observation
    noise :math:`y \mid f \sim \mathcal{N}(f, s^2)`,

    .. math::
        \mathbb{E}_{f\sim\mathcal{N}(m, v)}\left[\log\mathcal{N}(y\mid f, s^2)\right]
        = -\tfrac12\log(2\pi s^2) - \frac{(y - m)^2 + v}{2 s^2},

    exact (no approximation beyond the Gaussian output), summed over every axis but the first.
    With ``var = 0`` (or ``None``, MAP mode) it is the plain Gaussian log-likelihood.

    Args:
      y: targets, shape ``(B, ...)``.
      mean: output means ``m``, ``y``'s shape.
      var: output variances ``v >= 0``, ``y``'s shape, or ``None`` for zero.
      noise_var: ``s^2 > 0``, a scalar or broadcastable to ``y``.

    Returns:
      Array of shape ``(B,)``.

    References:
      Wu et al. 2019, "Deterministic Variational Inference for Robust Bayesian Neural
      Networks" (section 3, the Gaussian expected log-likelihood); Haussmann et al. 2019,
      "Sampling-Free Variational Inference of Bayesian Neural Networks by Variance
      Backpropagation".

    Examples:
      >>> import jax.numpy as jnp
      >>> y, m, v = jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[1.0]])
      >>> print([round(float(e), 4) for e in expected_gaussian_log_likelihood(y, m, v, noise_var=1.0)])  # -0.5 log(2 pi) - (1 + 1) / 2
      [-1.9189]
    """
    check_target_shape("y", y, "mean", mean)
    mean = float_array(mean)
    y = float_array(y, mean.dtype)
    if var is None:
        var = jnp.zeros_like(mean)
    else:
        check_same_shape(var=var, mean=mean)
        var = jnp.asarray(var, mean.dtype)
    s2 = _noise_var(noise_var, y.shape, mean.dtype)
    ell = -0.5 * jnp.log(2 * jnp.pi * s2) - 0.5 * (jnp.square(y - mean) + var) / s2
    return per_example_sum(ell)


def expected_gaussian_nll(y, mean, var, noise_var):
    """``-expected_gaussian_log_likelihood(y, mean, var, noise_var)`` (per example).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, m = jnp.array([[1.0]]), jnp.array([[0.0]])
      >>> print([round(float(e), 4) for e in expected_gaussian_nll(y, m, jnp.array([[1.0]]), noise_var=1.0)])
      [1.9189]
    """
    return -expected_gaussian_log_likelihood(y, mean, var, noise_var)


def split_heteroscedastic(out):
    r"""Splits a heteroscedastic output of width ``2 D`` into ``(mean, log_var)``, ``D`` each.

    The convention of this package: the first ``D`` outputs are the means, the last ``D`` the
    log-variances :math:`s = \log\sigma^2` of the observation noise,
    ``mean, log_var = out[..., :D], out[..., D:]``. A ``BayesianMLP((..., 2 * D))`` is a
    heteroscedastic regressor for ``D`` targets. Works for a CLT output's mean or variance
    alike (same split).

    Args:
      out: array of shape ``(..., 2 D)``.

    Returns:
      ``(out[..., :D], out[..., D:])``.

    Raises:
      ValueError: if the last axis is missing or odd (it must hold ``2 D`` entries).

    Examples:
      >>> import jax.numpy as jnp
      >>> m, s = split_heteroscedastic(jnp.array([[1.0, 2.0, -1.0, 0.0]]))
      >>> m.tolist(), s.tolist()
      ([[1.0, 2.0]], [[-1.0, 0.0]])
    """
    shape = jnp.shape(out)
    if len(shape) < 1 or shape[-1] % 2 != 0 or shape[-1] == 0:
        raise ValueError(
            "a heteroscedastic output must have an even, nonzero last axis (D means, then D "
            f"log-variances), got output shape {tuple(shape)}"
        )
    d = shape[-1] // 2
    return out[..., :d], out[..., d:]


def _check_heteroscedastic_target(y, out):
    shape = jnp.shape(out)
    split_heteroscedastic(out)
    expected = tuple(shape[:-1]) + (shape[-1] // 2,)
    if tuple(jnp.shape(y)) != expected:
        raise ValueError(
            f"y must have shape {expected} (the heteroscedastic output {tuple(shape)} holds "
            f"{shape[-1] // 2} means and {shape[-1] // 2} log-variances), got {tuple(jnp.shape(y))}; "
            "nothing is broadcast"
        )


def heteroscedastic_gaussian_nll(y, out):
    r"""Per-example Gaussian NLL of a heteroscedastic point output (sampled or MAP).

    With ``mean, log_var = split_heteroscedastic(out)`` (:math:`m`, :math:`s = \log\sigma^2`):

    .. math::
        -\log\mathcal N(y\mid m, e^{s}) = \tfrac12\log 2\pi + \tfrac12 s + \tfrac12 (y - m)^2 e^{-s},

    summed over every axis but the first.

    Args:
      y: targets, shape ``out.shape[:-1] + (D,)``.
      out: network output of width ``2 D`` (means, then log-variances).

    Returns:
      Array of shape ``(B,)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> nll = heteroscedastic_gaussian_nll(jnp.array([[1.0]]), jnp.array([[0.0, 0.0]]))
      >>> print(round(float(nll[0]), 4))  # 0.5 log(2 pi) + 1/2
      1.4189
    """
    _check_heteroscedastic_target(y, out)
    out = as_float_array("out", out)
    y = as_float_array("y", y).astype(out.dtype)
    m, s = split_heteroscedastic(out)
    nll = 0.5 * jnp.log(2 * jnp.pi) + 0.5 * s + 0.5 * jnp.square(y - m) * jnp.exp(-s)
    return per_example_sum(nll)


def expected_heteroscedastic_gaussian_nll(y, mean, var):
    r"""Closed-form expected heteroscedastic Gaussian NLL under Gaussian outputs (CLT).

    The mean head :math:`m \sim \mathcal N(\mu_m, v_m)` and the log-variance head
    :math:`s \sim \mathcal N(\mu_s, v_s)` are independent (the CLT output is diagonal), so with
    :math:`\mathbb E[e^{-s}] = e^{-\mu_s + v_s/2}` (log-normal mean):

    .. math::
        \mathbb E\big[-\log\mathcal N(y\mid m, e^{s})\big]
        = \tfrac12\log 2\pi + \tfrac12\mu_s + \tfrac12\big((y-\mu_m)^2 + v_m\big)\,e^{-\mu_s + v_s/2},

    exact, no sampling. ``mean`` and ``var`` are the CLT output moments of width ``2 D``, split
    as in :func:`split_heteroscedastic`. With ``var = None`` (MAP) it is
    :func:`heteroscedastic_gaussian_nll` of ``mean``.

    Args:
      y: targets, shape ``mean.shape[:-1] + (D,)``.
      mean: output means, width ``2 D``.
      var: output variances ``>= 0``, ``mean``'s shape, or ``None``.

    Returns:
      Array of shape ``(B,)``.

    References:
      Wu et al. 2019, "Deterministic Variational Inference for Robust Bayesian Neural
      Networks" (section 3.2, heteroscedastic regression).

    Examples:
      >>> import jax.numpy as jnp
      >>> y, m, v = jnp.array([[1.0]]), jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 2.0]])
      >>> print(round(float(expected_heteroscedastic_gaussian_nll(y, m, v)[0]), 4))  # 0.9189 + 0.5 (1 + 1) e^1
      3.6372
    """
    if var is None:
        return heteroscedastic_gaussian_nll(y, mean)
    _check_heteroscedastic_target(y, mean)
    mean = as_float_array("mean", mean)
    var = as_float_array("var", var).astype(mean.dtype)
    check_same_shape(mean=mean, var=var)
    y = as_float_array("y", y).astype(mean.dtype)
    mu_m, mu_s = split_heteroscedastic(mean)
    v_m, v_s = split_heteroscedastic(var)
    nll = 0.5 * jnp.log(2 * jnp.pi) + 0.5 * mu_s + 0.5 * (jnp.square(y - mu_m) + v_m) * jnp.exp(0.5 * v_s - mu_s)
    return per_example_sum(nll)
